//! cgroup v2: one directory per group in the unified hierarchy.

use std::path::{Path, PathBuf};

use super::stats::{self, has_word};
use super::{
    CPU_PERIOD_US, CgroupError, CgroupLimits, CgroupStats, FREEZE_TIMEOUT, Kernel, Support,
    count_tasks, fs, read_keyed, read_num,
};

/// The controllers enabled for sandbox groups (freeze, kill and cpu.stat are core features).
pub(crate) const WANTED: [&str; 3] = ["memory", "cpu", "pids"];

type Outcome<'a> = Vec<(&'a str, Result<(), String>)>;

/// Enables the controllers from `own` down to `<own>/<parent_name>`, makes that parent group
/// and works out what is supported.
pub(crate) fn setup(
    own: &Path,
    parent_name: &str,
    kernel: &Kernel,
) -> Result<(PathBuf, Support), CgroupError> {
    // A server that already sits in the leaf made by an earlier detect (it re-exec'd, say)
    // keeps using the same parent: its own group is the leaf's parent.
    let leaf_name = format!("{parent_name}-server");
    let own = match own.parent() {
        Some(up) if own.file_name().is_some_and(|n| *n == *leaf_name) => up,
        _ => own,
    };
    let offered = fs::read_opt(&own.join("cgroup.controllers"))?.unwrap_or_default();
    let wanted: Vec<&str> = kernel
        .v2_controllers()
        .iter()
        .copied()
        .filter(|c| has_word(&offered, c))
        .collect();
    let at_own = enable(own, &wanted, Some((parent_name, kernel)));
    let parent = own.join(parent_name);
    kernel.mkdir(&parent, true)?;
    let enabled: Vec<&str> = at_own
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(c, _)| *c)
        .collect();
    let at_parent = enable(&parent, &enabled, None);

    let controller = |c: &str| -> Result<(), String> {
        if !has_word(&offered, c) {
            return Err(format!(
                "{c} is not in {}: not delegated to this group",
                own.join("cgroup.controllers").display()
            ));
        }
        for (name, r) in at_own.iter().chain(&at_parent) {
            if *name == c {
                r.clone()?;
            }
        }
        Ok(())
    };
    let has = |f: &str| parent.join(f).exists();
    let memory = controller("memory");
    let memory_swap = match &memory {
        Err(_) => Err("needs the memory controller".to_owned()),
        Ok(()) if has("memory.swap.max") => Ok(()),
        Ok(()) => Err(
            "memory.swap.max missing: swap accounting is off (swapaccount=0) or no swap support"
                .to_owned(),
        ),
    };
    let freezer = if has("cgroup.freeze") {
        Ok(())
    } else {
        Err("cgroup.freeze missing (kernel older than 5.2)".to_owned())
    };
    let kill = if has("cgroup.kill") || freezer.is_ok() {
        Ok(())
    } else {
        Err("neither cgroup.kill (5.14) nor cgroup.freeze (5.2): kill_all races fork()".to_owned())
    };
    let support = Support {
        memory,
        memory_swap,
        cpu: controller("cpu"),
        cpuacct: if has("cpu.stat") {
            Ok(())
        } else {
            Err(format!("{} missing", parent.join("cpu.stat").display()))
        },
        pids: controller("pids"),
        freezer,
        kill,
    };
    Ok((parent, support))
}

/// Enables `ctrls` in `dir/cgroup.subtree_control` (those not enabled yet). With `leaf`, an
/// `EBUSY` (processes in `dir`, which is not the root) moves them into
/// `<dir>/<parent_name>-server` and retries. Returns each controller's outcome.
fn enable<'a>(dir: &Path, ctrls: &[&'a str], leaf: Option<(&str, &Kernel)>) -> Outcome<'a> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_opt(&file).ok().flatten().unwrap_or_default();
    let missing: Vec<&str> = ctrls
        .iter()
        .copied()
        .filter(|c| !has_word(&current, c))
        .collect();
    let mut out: Outcome<'a> = ctrls.iter().map(|c| (*c, Ok(()))).collect();
    if missing.is_empty() {
        return out;
    }
    let value = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut result = fs::write(&file, &value);
    if let Err(e) = &result
        && fs::is_errno(e, libc::EBUSY)
        && let Some((parent_name, kernel)) = leaf
    {
        result = move_to_leaf(dir, parent_name, kernel).and_then(|()| fs::write(&file, &value));
    }
    let Err(first) = result else {
        return out;
    };
    // One at a time, so that one refusal does not cost the others.
    for (c, r) in out.iter_mut().filter(|(c, _)| missing.contains(c)) {
        *r = fs::write(&file, &format!("+{c}"))
            .map_err(|e| format!("not delegated / not writable: {e} (first try: {first})"));
    }
    out
}

/// Moves every process of `own` (this one first) into the leaf `<own>/<parent_name>-server`.
fn move_to_leaf(own: &Path, parent_name: &str, kernel: &Kernel) -> Result<(), CgroupError> {
    let leaf = own.join(format!("{parent_name}-server"));
    kernel.mkdir(&leaf, true)?;
    let procs = leaf.join("cgroup.procs");
    let me = std::process::id() as i32;
    let mut pids = stats::parse_pids(&fs::read(&own.join("cgroup.procs"))?);
    pids.retain(|p| *p != me);
    pids.insert(0, me);
    let mut moved = Vec::new();
    for pid in pids {
        match fs::write(&procs, &pid.to_string()) {
            Ok(()) => moved.push(pid),
            Err(e) if fs::is_errno(&e, libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    tracing::info!(
        leaf = %leaf.display(),
        ?moved,
        "moved the processes of our own cgroup into a leaf so that controllers can be \
         enabled for sandboxes (cgroup v2 no-internal-processes rule)"
    );
    Ok(())
}

/// Writes the limits into a freshly made group (only controllers `support` says are usable).
pub(crate) fn apply_limits(
    dir: &Path,
    limits: &CgroupLimits,
    support: &Support,
) -> Result<(), CgroupError> {
    if support.memory.is_ok() {
        let value = match limits.memory_bytes {
            u64::MAX => "max".to_owned(),
            v => v.to_string(),
        };
        fs::write(&dir.join("memory.max"), &value)?;
        if support.memory_swap.is_ok() {
            fs::write(&dir.join("memory.swap.max"), "0")?;
        }
    }
    if support.cpu.is_ok() {
        let value = match limits.cpu_quota_us() {
            Some(q) => format!("{q} {CPU_PERIOD_US}"),
            None => format!("max {CPU_PERIOD_US}"),
        };
        fs::write(&dir.join("cpu.max"), &value)?;
    }
    if support.pids.is_ok() {
        let value = match limits.pids_max {
            u64::MAX => "max".to_owned(),
            v => v.to_string(),
        };
        fs::write(&dir.join("pids.max"), &value)?;
    }
    Ok(())
}

/// New limits for an existing group (v2 has no ordering constraint between them).
pub(crate) fn set_limits(dir: &Path, limits: &CgroupLimits) -> Result<(), CgroupError> {
    if dir.join("memory.max").exists() {
        let value = match limits.memory_bytes {
            u64::MAX => "max".to_owned(),
            v => v.to_string(),
        };
        fs::write(&dir.join("memory.max"), &value)?;
    }
    if dir.join("cpu.max").exists() {
        let value = match limits.cpu_quota_us() {
            Some(q) => format!("{q} {CPU_PERIOD_US}"),
            None => format!("max {CPU_PERIOD_US}"),
        };
        fs::write(&dir.join("cpu.max"), &value)?;
    }
    if dir.join("pids.max").exists() {
        let value = match limits.pids_max {
            u64::MAX => "max".to_owned(),
            v => v.to_string(),
        };
        fs::write(&dir.join("pids.max"), &value)?;
    }
    Ok(())
}

/// CPU time, OOM kills and refused forks.
pub(crate) fn counters(dir: &Path) -> Result<super::CgroupCounters, CgroupError> {
    let cpu = fs::read_opt(&dir.join("cpu.stat"))?
        .and_then(|t| stats::keyed(&t, "usage_usec"))
        .unwrap_or(0);
    Ok(super::CgroupCounters {
        cpu_usage_ns: cpu.saturating_mul(1000),
        oom_kills: oom_kills(dir)?,
        pids_limit_hits: read_keyed(&dir.join("pids.events"), "max")?,
    })
}

/// The `oom_kill` count of memory.events.
pub(crate) fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    if dir.join("memory.events").exists() {
        read_keyed(&dir.join("memory.events"), "oom_kill")
    } else {
        Ok(0)
    }
}

/// Usage from cpu.stat, memory.* and pids.*.
pub(crate) fn stats(dir: &Path) -> Result<CgroupStats, CgroupError> {
    let usage = read_num(&dir.join("memory.current"), stats::parse_u64)?.unwrap_or(0);
    let stat = fs::read_opt(&dir.join("memory.stat"))?.unwrap_or_default();
    let (pids, pids_max) = match read_num(&dir.join("pids.current"), stats::parse_u64)? {
        Some(n) => (
            n,
            read_num(&dir.join("pids.max"), stats::parse_limit)?.unwrap_or(u64::MAX),
        ),
        None => (count_tasks(&dir.join("cgroup.threads"))?, u64::MAX),
    };
    Ok(CgroupStats {
        cpu_usage_ns: read_keyed(&dir.join("cpu.stat"), "usage_usec")?.saturating_mul(1000),
        memory_bytes: stats::working_set(usage, &stat),
        memory_limit_bytes: read_num(&dir.join("memory.max"), stats::parse_limit)?
            .unwrap_or(u64::MAX),
        memory_peak_bytes: read_num(&dir.join("memory.peak"), stats::parse_u64)?,
        pids,
        pids_max,
        pids_limit_hits: read_keyed(&dir.join("pids.events"), "max")?,
        oom_kills: read_keyed(&dir.join("memory.events"), "oom_kill")?,
    })
}

/// Writes `cgroup.freeze` and waits until `cgroup.events` reports `frozen <target>`.
fn set_frozen(dir: &Path, target: u64) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.freeze");
    if !file.exists() {
        return Err(CgroupError::Unsupported {
            what: "freezer",
            reason: format!("{} missing (kernel older than 5.2)", file.display()),
        });
    }
    fs::write(&file, &target.to_string())?;
    let events = dir.join("cgroup.events");
    let mut last = String::new();
    if fs::poll_until(FREEZE_TIMEOUT, || {
        last = fs::read(&events)?;
        Ok(stats::keyed(&last, "frozen") == Some(target))
    })? {
        return Ok(());
    }
    if target == 1 {
        // Do not leave it half frozen.
        let _ = fs::write(&file, "0");
    }
    Err(CgroupError::Timeout {
        what: if target == 1 {
            "cgroup.events frozen 1"
        } else {
            "cgroup.events frozen 0"
        },
        path: events,
        waited: FREEZE_TIMEOUT,
        detail: last.trim().replace('\n', ", "),
    })
}

/// Freezes via cgroup.freeze.
pub(crate) fn freeze(dir: &Path) -> Result<(), CgroupError> {
    set_frozen(dir, 1)
}

/// Thaws via cgroup.freeze.
pub(crate) fn thaw(dir: &Path) -> Result<(), CgroupError> {
    set_frozen(dir, 0)
}

/// SIGKILLs everything via cgroup.kill; `Ok(false)` when the kernel lacks it.
pub(crate) fn kill(dir: &Path) -> Result<bool, CgroupError> {
    let file = dir.join("cgroup.kill");
    if !file.exists() {
        return Ok(false);
    }
    fs::write(&file, "1")?;
    Ok(true)
}
