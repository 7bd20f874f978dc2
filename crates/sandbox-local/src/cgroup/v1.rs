//! cgroup v1: one directory per hierarchy (memory, cpu, cpuacct, pids, freezer; co-mounted
//! controllers share one).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::detect::{self, CgroupMount, ProcCgroup};
use super::{
    CPU_PERIOD_US, CgroupError, CgroupLimits, CgroupStats, FREEZE_TIMEOUT, Kernel, Support,
    count_tasks, fs, read_keyed, read_num, stats,
};

/// The v1 controllers used, each in the hierarchy that carries it.
pub(crate) const ROLES: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

/// A group's directory in each hierarchy; `None` where that controller is unavailable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dirs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuacct: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freezer: Option<PathBuf>,
}

impl Dirs {
    fn slot(&mut self, role: &str) -> &mut Option<PathBuf> {
        match role {
            "memory" => &mut self.memory,
            "cpu" => &mut self.cpu,
            "cpuacct" => &mut self.cpuacct,
            "pids" => &mut self.pids,
            _ => &mut self.freezer,
        }
    }

    fn all(&self) -> [&Option<PathBuf>; 5] {
        [
            &self.memory,
            &self.cpu,
            &self.cpuacct,
            &self.pids,
            &self.freezer,
        ]
    }

    fn map(&self, f: impl Fn(&Path) -> Option<PathBuf>) -> Dirs {
        let g = |d: &Option<PathBuf>| d.as_deref().and_then(&f);
        Dirs {
            memory: g(&self.memory),
            cpu: g(&self.cpu),
            cpuacct: g(&self.cpuacct),
            pids: g(&self.pids),
            freezer: g(&self.freezer),
        }
    }

    /// The same group's `name` child in each hierarchy.
    pub fn child(&self, name: &str) -> Dirs {
        self.map(|d| Some(d.join(name)))
    }

    /// Only the directories that exist.
    pub fn existing(&self) -> Dirs {
        self.map(|d| d.is_dir().then(|| d.to_owned()))
    }

    /// Each distinct directory once, in role order.
    pub fn unique(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for d in self.all().into_iter().flatten() {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        out
    }
}

/// Makes `<own>/<parent_name>` in every hierarchy used and works out what is supported.
pub(crate) fn setup(
    mounts: &[CgroupMount],
    procs: &[ProcCgroup],
    prefix: Option<&Path>,
    parent_name: &str,
    kernel: &Kernel,
) -> Result<(Dirs, Support), CgroupError> {
    let mut dirs = Dirs::default();
    let mut why: Vec<(&str, String)> = Vec::new();
    for role in ROLES {
        let parent = match detect::locate_v1(mounts, procs, role, prefix) {
            Ok(own) => own.join(parent_name),
            Err(reason) => {
                why.push((role, reason));
                continue;
            }
        };
        let made = kernel
            .mkdir(&parent, true)
            .and_then(|_| inherit_cpuset(&parent));
        match made {
            Ok(()) => *dirs.slot(role) = Some(parent),
            Err(e) => why.push((role, format!("not delegated / not writable: {e}"))),
        }
    }
    if dirs.unique().is_empty() {
        let all: Vec<String> = why.iter().map(|(r, w)| format!("{r}: {w}")).collect();
        return Err(CgroupError::NotAvailable(all.join("; ")));
    }
    let check = |role: &str, dir: &Option<PathBuf>, file: &str| -> Result<(), String> {
        match dir {
            None => Err(why
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, w)| w.clone())
                .unwrap_or_default()),
            Some(d) if d.join(file).exists() => Ok(()),
            Some(d) => Err(format!("{} missing", d.join(file).display())),
        }
    };
    let memory = check("memory", &dirs.memory, "memory.limit_in_bytes");
    let memory_swap = match &memory {
        Err(_) => Err("needs the memory controller".to_owned()),
        Ok(()) => check("memory", &dirs.memory, "memory.memsw.limit_in_bytes").map_err(|_| {
            "memory.memsw.* missing: swap accounting is off (swapaccount=0)".to_owned()
        }),
    };
    let freezer = check("freezer", &dirs.freezer, "freezer.state");
    let kill = freezer.clone().map_err(|e| {
        format!("no freezer ({e}): kill_all falls back to an unfrozen kill loop that races fork()")
    });
    let support = Support {
        memory,
        memory_swap,
        cpu: check("cpu", &dirs.cpu, "cpu.cfs_quota_us"),
        cpuacct: check("cpuacct", &dirs.cpuacct, "cpuacct.usage"),
        pids: check("pids", &dirs.pids, "pids.max"),
        freezer,
        kill,
    };
    Ok((dirs, support))
}

/// A new group in a hierarchy that also carries cpuset starts with empty `cpuset.cpus` and
/// `cpuset.mems`, which makes joining fail; copy the parent's.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if let Some(own) = fs::read_opt(&dir.join(file))?
            && own.trim().is_empty()
        {
            let value = fs::read(&parent.join(file))?;
            fs::write(&dir.join(file), value.trim())?;
        }
    }
    Ok(())
}

/// Writes the limits into a freshly made group. Only controllers `support` says are usable
/// are written (`create` has already refused limits that need a missing one).
pub(crate) fn apply_limits(
    dirs: &Dirs,
    limits: &CgroupLimits,
    support: &Support,
) -> Result<(), CgroupError> {
    for d in dirs.unique() {
        inherit_cpuset(&d)?;
    }
    if let (Ok(()), Some(d)) = (&support.memory, &dirs.memory) {
        let value = match limits.memory_bytes {
            u64::MAX => "-1".to_owned(),
            v => v.to_string(),
        };
        // The memory limit first: memsw must never be below it.
        fs::write(&d.join("memory.limit_in_bytes"), &value)?;
        if support.memory_swap.is_ok() {
            fs::write(&d.join("memory.memsw.limit_in_bytes"), &value)?;
        }
    }
    if let (Ok(()), Some(d)) = (&support.cpu, &dirs.cpu) {
        fs::write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        let quota = match limits.cpu_quota_us() {
            Some(q) => q.to_string(),
            None => "-1".to_owned(),
        };
        fs::write(&d.join("cpu.cfs_quota_us"), &quota)?;
    }
    if let (Ok(()), Some(d)) = (&support.pids, &dirs.pids) {
        let value = match limits.pids_max {
            u64::MAX => "max".to_owned(),
            v => v.to_string(),
        };
        fs::write(&d.join("pids.max"), &value)?;
    }
    Ok(())
}

/// New limits for an existing group. Raising memory needs memsw first, lowering needs the
/// memory limit first: try one order and fall back to the other.
pub(crate) fn set_limits(dirs: &Dirs, limits: &CgroupLimits) -> Result<(), CgroupError> {
    if let Some(d) = &dirs.memory {
        let value = match limits.memory_bytes {
            u64::MAX => "-1".to_owned(),
            v => v.to_string(),
        };
        let mem = d.join("memory.limit_in_bytes");
        let memsw = d.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            if fs::write(&memsw, &value).is_ok() {
                fs::write(&mem, &value)?;
            } else {
                fs::write(&mem, &value)?;
                fs::write(&memsw, &value)?;
            }
        } else {
            fs::write(&mem, &value)?;
        }
    }
    if let Some(d) = &dirs.cpu {
        let quota = match limits.cpu_quota_us() {
            Some(q) => q.to_string(),
            None => "-1".to_owned(),
        };
        fs::write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        fs::write(&d.join("cpu.cfs_quota_us"), &quota)?;
    }
    if let Some(d) = &dirs.pids {
        let value = match limits.pids_max {
            u64::MAX => "max".to_owned(),
            v => v.to_string(),
        };
        fs::write(&d.join("pids.max"), &value)?;
    }
    Ok(())
}

/// CPU time, OOM kills and refused forks.
pub(crate) fn counters(dirs: &Dirs) -> Result<super::CgroupCounters, CgroupError> {
    let mut c = super::CgroupCounters::default();
    if let Some(d) = &dirs.cpuacct {
        c.cpu_usage_ns = read_num(&d.join("cpuacct.usage"), stats::parse_u64)?.unwrap_or(0);
    }
    c.oom_kills = oom_kills(dirs)?;
    if let Some(d) = &dirs.pids {
        c.pids_limit_hits = read_keyed(&d.join("pids.events"), "max")?;
    }
    Ok(c)
}

/// The `oom_kill` count of memory.oom_control.
pub(crate) fn oom_kills(dirs: &Dirs) -> Result<u64, CgroupError> {
    match &dirs.memory {
        Some(d) => read_keyed(&d.join("memory.oom_control"), "oom_kill"),
        None => Ok(0),
    }
}

/// Usage from cpuacct, memory and pids.
pub(crate) fn stats(dirs: &Dirs) -> Result<CgroupStats, CgroupError> {
    let mut s = CgroupStats {
        memory_limit_bytes: u64::MAX,
        pids_max: u64::MAX,
        ..CgroupStats::default()
    };
    if let Some(d) = &dirs.cpuacct {
        s.cpu_usage_ns = read_num(&d.join("cpuacct.usage"), stats::parse_u64)?.unwrap_or(0);
    }
    if let Some(d) = &dirs.memory {
        let usage = read_num(&d.join("memory.usage_in_bytes"), stats::parse_u64)?.unwrap_or(0);
        let stat = fs::read_opt(&d.join("memory.stat"))?.unwrap_or_default();
        s.memory_bytes = stats::working_set(usage, &stat);
        s.memory_limit_bytes =
            read_num(&d.join("memory.limit_in_bytes"), stats::parse_limit)?.unwrap_or(u64::MAX);
        s.memory_peak_bytes = read_num(&d.join("memory.max_usage_in_bytes"), stats::parse_u64)?;
        s.oom_kills = read_keyed(&d.join("memory.oom_control"), "oom_kill")?;
    }
    match &dirs.pids {
        Some(d) if d.join("pids.current").exists() => {
            s.pids = read_num(&d.join("pids.current"), stats::parse_u64)?.unwrap_or(0);
            s.pids_max = read_num(&d.join("pids.max"), stats::parse_limit)?.unwrap_or(u64::MAX);
            s.pids_limit_hits = read_keyed(&d.join("pids.events"), "max")?;
        }
        _ => {
            if let Some(d) = dirs.unique().first() {
                s.pids = count_tasks(&d.join("tasks"))?;
            }
        }
    }
    Ok(s)
}

fn freezer_state(dirs: &Dirs) -> Result<PathBuf, CgroupError> {
    match &dirs.freezer {
        Some(d) => Ok(d.join("freezer.state")),
        None => Err(CgroupError::Unsupported {
            what: "freezer",
            reason: "no v1 freezer hierarchy".to_owned(),
        }),
    }
}

/// Writes `target` to freezer.state and waits until it reads back.
fn set_state(dirs: &Dirs, target: &'static str) -> Result<(), CgroupError> {
    let file = freezer_state(dirs)?;
    fs::write(&file, target)?;
    let mut last = String::new();
    if fs::poll_until(FREEZE_TIMEOUT, || {
        last = fs::read(&file)?.trim().to_owned();
        Ok(last == target)
    })? {
        return Ok(());
    }
    if target == "FROZEN" {
        // Do not leave it half frozen.
        let _ = fs::write(&file, "THAWED");
    }
    Err(CgroupError::Timeout {
        what: if target == "FROZEN" {
            "freezer.state FROZEN"
        } else {
            "freezer.state THAWED"
        },
        path: file,
        waited: FREEZE_TIMEOUT,
        detail: format!("state is {last}"),
    })
}

/// Freezes via the v1 freezer.
pub(crate) fn freeze(dirs: &Dirs) -> Result<(), CgroupError> {
    set_state(dirs, "FROZEN")
}

/// Thaws via the v1 freezer.
pub(crate) fn thaw(dirs: &Dirs) -> Result<(), CgroupError> {
    set_state(dirs, "THAWED")
}
