//! cgroup management for sandboxes, on cgroup v1, hybrid and v2 hosts.
//!
//! Each sandbox's process tree lives in its own group, which enforces hard limits (memory
//! without swap, with OOM kill; CPU quota; pids), reports usage, and can be frozen, thawed and
//! killed as a whole. Groups are made under `<this process's own group>/<parent_name>/` in
//! every hierarchy used, so the server process is never inside a sandbox's group.
//!
//! [`Cgroups::detect`] reads `/proc/self/mountinfo` and `/proc/self/cgroup` and picks:
//! - **v2** when the cgroup2 group this process is in offers the `memory` controller;
//! - **v1** when `memory` is on a v1 hierarchy (pure v1, or hybrid with a cgroup2 mount that
//!   has no controllers that matter). v1 uses the `memory`, `cpu`, `cpuacct`, `pids` and
//!   `freezer` hierarchies; co-mounted ones (`cpu,cpuacct`) share a directory.
//!
//! [`DetectOptions`] makes the proc root and the mount points injectable (fixture trees) and
//! can force a version (e.g. v2 on a hybrid host's `/sys/fs/cgroup/unified`, where only the
//! core features — join, freeze, kill, cpu usage — work; [`Cgroups::support`] then reports
//! memory/cpu/pids unavailable, and [`Cgroups::create`] refuses limits it cannot enforce
//! while accepting [`CgroupLimits::unlimited`]).

mod detect;
mod fs;
mod stats;
mod v1;
mod v2;

#[cfg(test)]
mod tests_fixture;
#[cfg(test)]
mod tests_host;

use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How long [`Cgroup::freeze`] waits for the kernel to report the group frozen.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Cgroup::kill_all`] keeps killing before it gives up.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Cgroup::remove`] retries `EBUSY` while the last tasks exit.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Hard limits for one sandbox. `u64::MAX` means "no limit" for the byte and pid counts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// Memory limit in bytes; swap is not allowed beyond it. Exceeding it OOM-kills.
    pub memory_bytes: u64,
    /// CPU quota in cores (0.5 = half a core per 100 ms period); `None` = unthrottled.
    /// At least 0.01 when set.
    pub cpu_quota: Option<f64>,
    /// Maximum number of tasks (processes and threads).
    pub pids_max: u64,
}

impl CgroupLimits {
    /// No limits at all: such a group can be made even where the memory, cpu and pids
    /// controllers are unavailable (only membership, stats, freeze and kill then work).
    pub const fn unlimited() -> Self {
        Self {
            memory_bytes: u64::MAX,
            cpu_quota: None,
            pids_max: u64::MAX,
        }
    }

    fn validate(&self) -> Result<(), CgroupError> {
        if let Some(c) = self.cpu_quota
            && !(c.is_finite() && c >= 0.01)
        {
            return Err(CgroupError::InvalidLimit(format!(
                "cpu_quota must be at least 0.01 cores, got {c}"
            )));
        }
        Ok(())
    }

    /// The CFS quota in microseconds per [`CPU_PERIOD_US`], `None` when unthrottled.
    fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu_quota
            .map(|c| (c * CPU_PERIOD_US as f64).round() as u64)
    }
}

/// The CFS period written alongside every quota, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup version a [`Cgroups`] (and its groups) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Version {
    /// Legacy hierarchies, one per controller (or per set of co-mounted controllers).
    V1,
    /// The unified hierarchy.
    V2,
}

/// The monotonic counters of one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupCounters {
    pub cpu_usage_ns: u64,
    pub oom_kills: u64,
    pub pids_limit_hits: u64,
}

/// A snapshot of one group's usage. Values a missing controller cannot provide are 0 (counts)
/// or `u64::MAX` (limits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupStats {
    /// CPU time used by all tasks, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, minus the inactive file cache (the "working set").
    pub memory_bytes: u64,
    /// The memory limit (`u64::MAX` = none).
    pub memory_limit_bytes: u64,
    /// The highest memory usage seen, where the kernel records it.
    pub memory_peak_bytes: Option<u64>,
    /// Tasks in the group now.
    pub pids: u64,
    /// The task limit (`u64::MAX` = none).
    pub pids_max: u64,
    /// How many forks failed because of the task limit.
    pub pids_limit_hits: u64,
    /// How many processes the OOM killer killed in this group.
    pub oom_kills: u64,
}

/// Everything that can go wrong. I/O errors name the path, and writes the value written.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy was found.
    #[error("no usable cgroup hierarchy: {0}")]
    NotAvailable(String),
    /// Reading a file failed.
    #[error("reading {path}: {source}", path = .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing a value to an interface file failed.
    #[error("writing {value:?} to {path}: {source}", path = .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The cause.
        source: io::Error,
    },
    /// Making a group directory failed.
    #[error("creating {path}: {source}", path = .path.display())]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Removing a group directory failed (`EBUSY` after retrying: tasks are still in it).
    #[error("removing {path}: {source}", path = .path.display())]
    Rmdir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A group to be created exists already ([`Cgroups::open`] adopts existing ones).
    #[error("cgroup {path} already exists", path = .path.display())]
    Exists {
        /// The directory.
        path: PathBuf,
    },
    /// An interface file held something unexpected.
    #[error("parsing {path}: unexpected content {content:?}", path = .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// A limit or operation needs a controller or feature this host does not offer us.
    #[error("cannot use {what}: {reason}")]
    Unsupported {
        /// The feature, as named by [`Cgroups::support`].
        what: &'static str,
        /// Why it is unavailable.
        reason: String,
    },
    /// A group name that is not a single plain path component.
    #[error("invalid cgroup name {0:?}: must be a non-empty single path component")]
    InvalidName(String),
    /// A limit out of range.
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// A pid that must not be moved.
    #[error("refusing to move pid {pid}: {reason}")]
    InvalidPid {
        /// The pid.
        pid: i32,
        /// Why.
        reason: &'static str,
    },
    /// The kernel did not reach the expected state in time.
    #[error("timed out after {waited:?} waiting for {what} ({path}): {detail}", path = .path.display())]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The group directory or file concerned.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// The last state seen.
        detail: String,
    },
    /// Sending a signal failed (other than to an already-gone process).
    #[error("kill({pid}, SIGKILL): {source}")]
    Signal {
        /// The target.
        pid: i32,
        /// The cause.
        source: Errno,
    },
}

/// Test-only hooks; empty (and doing nothing) in non-test builds.
/// - `populate` stands in for what cgroupfs does by itself in fixture trees: filling a new
///   directory with its interface files (and letting `rmdir` remove a directory holding them);
/// - `v2_controllers` replaces the controllers v2 enables (memory, cpu, pids), so that the
///   `EBUSY` path can be exercised on a host whose cgroup2 mount offers only others.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Kernel {
    #[cfg(test)]
    populate: Option<fn(&Path)>,
    #[cfg(test)]
    v2_controllers: Option<&'static [&'static str]>,
}

impl Kernel {
    fn mkdir(&self, path: &Path, exist_ok: bool) -> Result<bool, CgroupError> {
        let made = fs::mkdir(path, exist_ok)?;
        #[cfg(test)]
        if made && let Some(populate) = self.populate {
            populate(path);
        }
        Ok(made)
    }

    fn v2_controllers(&self) -> &[&str] {
        #[cfg(test)]
        if let Some(c) = self.v2_controllers {
            return c;
        }
        &v2::WANTED
    }
}

/// What each optional feature's availability is; see [`Cgroups::support`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Support {
    memory: Result<(), String>,
    memory_swap: Result<(), String>,
    cpu: Result<(), String>,
    cpuacct: Result<(), String>,
    pids: Result<(), String>,
    freezer: Result<(), String>,
    kill: Result<(), String>,
}

/// The directories of a group (or of the parent of all sandbox groups).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Dirs {
    V1(v1::Dirs),
    V2(PathBuf),
}

impl Dirs {
    fn child(&self, name: &str) -> Dirs {
        match self {
            Dirs::V1(d) => Dirs::V1(d.child(name)),
            Dirs::V2(d) => Dirs::V2(d.join(name)),
        }
    }

    fn unique(&self) -> Vec<PathBuf> {
        match self {
            Dirs::V1(d) => d.unique(),
            Dirs::V2(d) => vec![d.clone()],
        }
    }

    fn version(&self) -> Version {
        match self {
            Dirs::V1(_) => Version::V1,
            Dirs::V2(_) => Version::V2,
        }
    }
}

/// Options for [`Cgroups::detect_with`]: where to read from, and what to force.
#[derive(Clone, Debug)]
pub struct DetectOptions {
    parent_name: String,
    proc_root: PathBuf,
    mount_prefix: Option<PathBuf>,
    force: Option<Version>,
    kernel: Kernel,
}

impl DetectOptions {
    /// Defaults: `/proc`, mount points as found, version chosen automatically.
    pub fn new(parent_name: &str) -> Self {
        Self {
            parent_name: parent_name.to_owned(),
            proc_root: PathBuf::from("/proc"),
            mount_prefix: None,
            force: None,
            kernel: Kernel::default(),
        }
    }

    /// Reads `self/mountinfo` and `self/cgroup` under `proc_root` instead of `/proc`.
    pub fn proc_root(mut self, proc_root: impl Into<PathBuf>) -> Self {
        self.proc_root = proc_root.into();
        self
    }

    /// Prepends `prefix` to every mount point from mountinfo (a fixture tree posing as
    /// `/sys/fs/cgroup`).
    pub fn mount_prefix(mut self, prefix: impl Into<PathBuf>) -> Self {
        self.mount_prefix = Some(prefix.into());
        self
    }

    /// Uses `version` whatever the controllers say: `V2` takes the cgroup2 mount even when it
    /// lacks memory/cpu/pids (a hybrid host's unified mount), `V1` the v1 hierarchies.
    pub fn force(mut self, version: Version) -> Self {
        self.force = Some(version);
        self
    }

    #[cfg(test)]
    fn fake_kernel(mut self, populate: fn(&Path)) -> Self {
        self.kernel.populate = Some(populate);
        self
    }

    #[cfg(test)]
    fn v2_controllers(mut self, controllers: &'static [&'static str]) -> Self {
        self.kernel.v2_controllers = Some(controllers);
        self
    }
}

/// What was detected, and where sandboxes' groups go.
#[derive(Clone, Debug)]
pub struct Cgroups {
    parent_name: String,
    parents: Dirs,
    support: Support,
    kernel: Kernel,
}

impl Cgroups {
    /// Detects the hierarchy. Sandbox groups go under `<this process's own cgroup>/<parent_name>/`
    /// in each hierarchy used (e.g. `/sys/fs/cgroup/memory/process_api/<hash>/quantbox/<sandbox>`,
    /// `/sys/fs/cgroup/pids/quantbox/<sandbox>`); `parent_name` is normally `"quantbox"`.
    ///
    /// Creates the parent groups; on v2 also enables memory, cpu and pids (those offered) in
    /// `cgroup.subtree_control` of our own group and of the parent. When our own v2 group holds
    /// processes and is not the root, that fails with `EBUSY` ("no internal processes"); then
    /// every process in it, this one first, is moved into the leaf
    /// `<own>/<parent_name>-server` (logged at info) and the write is retried.
    ///
    /// Fails only when nothing usable was found; missing pieces are reported by
    /// [`support`](Self::support).
    pub fn detect(parent_name: &str) -> Result<Self, CgroupError> {
        Self::detect_with(&DetectOptions::new(parent_name))
    }

    /// [`detect`](Self::detect) with injectable roots and a forced version.
    pub fn detect_with(opts: &DetectOptions) -> Result<Self, CgroupError> {
        validate_name(&opts.parent_name)?;
        let mountinfo = fs::read(&opts.proc_root.join("self/mountinfo"))?;
        let own_cgroups = fs::read(&opts.proc_root.join("self/cgroup"))?;
        let mounts = detect::parse_mountinfo(&mountinfo);
        let procs = detect::parse_proc_cgroup(&own_cgroups);
        let prefix = opts.mount_prefix.as_deref();
        let v2_own = detect::locate_v2(&mounts, &procs, prefix);
        let v2_controllers = match &v2_own {
            Ok(own) => Some(fs::read_opt(&own.join("cgroup.controllers"))?.unwrap_or_default()),
            Err(_) => None,
        };
        let version = match opts.force {
            Some(v) => v,
            None => {
                detect::choose_version(&mounts, v2_controllers.as_deref()).ok_or_else(|| {
                    CgroupError::NotAvailable("no cgroup or cgroup2 mount in mountinfo".into())
                })?
            }
        };
        let (parents, support) = match version {
            Version::V2 => {
                let own = v2_own.map_err(CgroupError::NotAvailable)?;
                let (parent, support) = v2::setup(&own, &opts.parent_name, &opts.kernel)?;
                (Dirs::V2(parent), support)
            }
            Version::V1 => {
                let (dirs, support) =
                    v1::setup(&mounts, &procs, prefix, &opts.parent_name, &opts.kernel)?;
                (Dirs::V1(dirs), support)
            }
        };
        tracing::debug!(?version, parents = ?parents.unique(), "cgroups detected");
        Ok(Self {
            parent_name: opts.parent_name.clone(),
            parents,
            support,
            kernel: opts.kernel,
        })
    }

    /// The version in use.
    pub fn version(&self) -> Version {
        self.parents.version()
    }

    /// The name of the parent group (as given to [`detect`](Self::detect)).
    pub fn parent_name(&self) -> &str {
        &self.parent_name
    }

    /// The parent group's directories (one per v1 hierarchy used, or one on v2).
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        self.parents.unique()
    }

    /// Which of `memory`, `memory_swap`, `cpu`, `cpuacct` (cpu usage), `pids`, `freezer` and
    /// `kill` are usable, in that order, with the reason when one is not. `kill` is usable when
    /// there is `cgroup.kill` or a freezer (for the freeze-kill-thaw loop).
    pub fn support(&self) -> Vec<(&'static str, Result<(), String>)> {
        let s = &self.support;
        vec![
            ("memory", s.memory.clone()),
            ("memory_swap", s.memory_swap.clone()),
            ("cpu", s.cpu.clone()),
            ("cpuacct", s.cpuacct.clone()),
            ("pids", s.pids.clone()),
            ("freezer", s.freezer.clone()),
            ("kill", s.kill.clone()),
        ]
    }

    /// Makes the group `name` and applies `limits`. A limit other than "none" whose controller
    /// is unavailable is [`CgroupError::Unsupported`]; swap is capped (v1 `memsw` = the memory
    /// limit, v2 `memory.swap.max` = 0) where swap accounting exists. If any step fails,
    /// everything made is removed again. An existing group is [`CgroupError::Exists`].
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<Cgroup, CgroupError> {
        validate_name(name)?;
        limits.validate()?;
        let s = &self.support;
        let need = |what: &'static str, r: &Result<(), String>| {
            r.clone()
                .map_err(|reason| CgroupError::Unsupported { what, reason })
        };
        if limits.memory_bytes != u64::MAX {
            need("memory", &s.memory)?;
        }
        if limits.cpu_quota.is_some() {
            need("cpu", &s.cpu)?;
        }
        if limits.pids_max != u64::MAX {
            need("pids", &s.pids)?;
        }
        let cg = Cgroup {
            name: name.to_owned(),
            dirs: self.parents.child(name),
        };
        let mut made = Vec::new();
        let mut result = Ok(());
        for dir in cg.dirs.unique() {
            match self.kernel.mkdir(&dir, false) {
                Ok(_) => made.push(dir),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = match &cg.dirs {
                Dirs::V1(d) => v1::apply_limits(d, limits, s),
                Dirs::V2(d) => v2::apply_limits(d, limits, s),
            };
        }
        if let Err(e) = result {
            for dir in made.iter().rev() {
                if let Err(undo) = fs::rmdir(dir, REMOVE_TIMEOUT) {
                    tracing::warn!(error = %undo, "cleanup after failed cgroup create");
                }
            }
            return Err(e);
        }
        tracing::debug!(name, ?limits, "cgroup created");
        Ok(cg)
    }

    /// An existing group, for re-adoption after a restart; `None` if absent. On v1 it holds
    /// the directories that exist (a partly removed group can still be removed).
    pub fn open(&self, name: &str) -> Option<Cgroup> {
        validate_name(name).ok()?;
        let dirs = match self.parents.child(name) {
            Dirs::V1(d) => Dirs::V1(d.existing()),
            Dirs::V2(d) => Dirs::V2(d),
        };
        let any = dirs.unique().iter().any(|d| d.is_dir());
        any.then(|| Cgroup {
            name: name.to_owned(),
            dirs,
        })
    }

    /// Names of the existing sandbox groups under the parent, sorted.
    pub fn children(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .parents
            .unique()
            .iter()
            .flat_map(|d| fs::subdirs(d))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Removes the parent groups themselves (they must have no children left), e.g. when a
    /// test is done. A v2 `<parent_name>-server` leaf holding this process stays.
    pub fn remove_parents(&self) -> Result<(), CgroupError> {
        for dir in self.parents.unique() {
            fs::rmdir(&dir, REMOVE_TIMEOUT)?;
        }
        Ok(())
    }
}

/// One sandbox's group: one directory per v1 hierarchy used, or one on v2. It serializes to
/// its name and directories, so it can be persisted or handed to another process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    name: String,
    dirs: Dirs,
}

impl Cgroup {
    /// The group's name (its directory name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version of its hierarchy.
    pub fn version(&self) -> Version {
        self.dirs.version()
    }

    /// Its directories (one per v1 hierarchy used, co-mounted ones once; one on v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.unique()
    }

    /// The `cgroup.procs` files a process writes its pid into to join (used by a separate
    /// re-exec'd helper process, which writes its own pid into each).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Moves process `pid` (all its threads) into the group by writing it to every
    /// [`procs_files`](Self::procs_files) entry. Refuses this (server) process and pids <= 0.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid {
                pid,
                reason: "not a process id",
            });
        }
        if u32::try_from(pid) == Ok(std::process::id()) {
            return Err(CgroupError::InvalidPid {
                pid,
                reason: "the server process must never be inside a sandbox's cgroup",
            });
        }
        let value = pid.to_string();
        for file in self.procs_files() {
            fs::write(&file, &value)?;
        }
        Ok(())
    }

    /// The processes in the group (on v1 the union over its hierarchies), sorted.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = Vec::new();
        for file in self.procs_files() {
            all.extend(stats::parse_pids(&fs::read(&file)?));
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// A snapshot of usage and limits.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        for dir in self.dirs() {
            std::fs::metadata(&dir).map_err(|source| CgroupError::Read { path: dir, source })?;
        }
        match &self.dirs {
            Dirs::V1(d) => v1::stats(d),
            Dirs::V2(d) => v2::stats(d),
        }
    }

    /// Freezes every task; returns once the kernel reports the group frozen (v1
    /// `freezer.state` FROZEN, v2 `cgroup.events` `frozen 1`). If that does not happen within
    /// [`FREEZE_TIMEOUT`], the group is thawed again and [`CgroupError::Timeout`] returned.
    /// Changes the limits of an existing group (a warm sandbox given its user's limits).
    /// On v1 the memory and memory+swap limits are written in the order the kernel
    /// accepts (memsw may never be below the memory limit).
    pub fn set_limits(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        limits.validate()?;
        match &self.dirs {
            Dirs::V1(d) => v1::set_limits(d, limits),
            Dirs::V2(d) => v2::set_limits(d, limits),
        }
    }

    /// The monotonic counters only (CPU time, OOM kills, refused forks): three small
    /// reads, for sampling many groups often.
    pub fn counters(&self) -> Result<CgroupCounters, CgroupError> {
        match &self.dirs {
            Dirs::V1(d) => v1::counters(d),
            Dirs::V2(d) => v2::counters(d),
        }
    }

    /// Processes the memory limit has killed (cheaper than [`Cgroup::stats`]).
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        match &self.dirs {
            Dirs::V1(d) => v1::oom_kills(d),
            Dirs::V2(d) => v2::oom_kills(d),
        }
    }

    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.dirs {
            Dirs::V1(d) => v1::freeze(d),
            Dirs::V2(d) => v2::freeze(d),
        }
    }

    /// Thaws the group; returns once the kernel reports it thawed.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.dirs {
            Dirs::V1(d) => v1::thaw(d),
            Dirs::V2(d) => v2::thaw(d),
        }
    }

    /// SIGKILLs every process in the group and returns once it is empty: v2 `cgroup.kill`
    /// where present; otherwise freeze (if possible), kill each pid, thaw, and repeat, for at
    /// most [`KILL_TIMEOUT`]. Leaves the group thawed.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let Dirs::V2(d) = &self.dirs
            && v2::kill(d)?
        {
            self.wait_empty()?;
            return match v2::thaw(d) {
                Err(CgroupError::Unsupported { .. }) => Ok(()),
                other => other,
            };
        }
        let start = Instant::now();
        loop {
            let left = self.pids()?;
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= KILL_TIMEOUT {
                return Err(self.not_empty(left));
            }
            let frozen = match self.freeze() {
                Ok(()) => true,
                Err(CgroupError::Unsupported { .. }) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "kill_all: freezing failed; killing unfrozen");
                    false
                }
            };
            let killed = self
                .pids()
                .and_then(|pids| pids.into_iter().try_for_each(sigkill));
            if frozen {
                self.thaw()?;
            }
            killed?;
            sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until no process is left.
    fn wait_empty(&self) -> Result<(), CgroupError> {
        let mut left = Vec::new();
        if fs::poll_until(KILL_TIMEOUT, || {
            left = self.pids()?;
            Ok(left.is_empty())
        })? {
            return Ok(());
        }
        Err(self.not_empty(left))
    }

    fn not_empty(&self, left: Vec<i32>) -> CgroupError {
        CgroupError::Timeout {
            what: "the group to become empty after SIGKILL",
            path: self.dirs().swap_remove(0),
            waited: KILL_TIMEOUT,
            detail: format!("pids left: {left:?}"),
        }
    }

    /// Removes every directory (`rmdir`), retrying `EBUSY` for [`REMOVE_TIMEOUT`] while the
    /// last tasks exit. Idempotent: missing directories are fine. Call
    /// [`kill_all`](Self::kill_all) first.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            fs::rmdir(&dir, REMOVE_TIMEOUT)?;
        }
        Ok(())
    }
}

fn sigkill(pid: i32) -> Result<(), CgroupError> {
    match kill(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(CgroupError::Signal { pid, source }),
    }
}

fn validate_name(name: &str) -> Result<(), CgroupError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.contains(['/', '\0', '\n']);
    if bad {
        Err(CgroupError::InvalidName(name.to_owned()))
    } else {
        Ok(())
    }
}

/// Reads an optional numeric file: `Ok(None)` when missing, [`CgroupError::Parse`] when not
/// understood by `parse`.
fn read_num(path: &Path, parse: fn(&str) -> Option<u64>) -> Result<Option<u64>, CgroupError> {
    match fs::read_opt(path)? {
        None => Ok(None),
        Some(text) => parse(&text).map(Some).ok_or_else(|| CgroupError::Parse {
            path: path.to_owned(),
            content: text,
        }),
    }
}

/// Reads an optional flat-keyed file and returns `key`'s value (0 when the file or key is
/// missing).
fn read_keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    Ok(fs::read_opt(path)?
        .and_then(|t| stats::keyed(&t, key))
        .unwrap_or(0))
}

/// The number of tasks listed in a `tasks` / `cgroup.threads` file (fallback without pids).
fn count_tasks(path: &Path) -> Result<u64, CgroupError> {
    Ok(fs::read_opt(path)?
        .map(|t| stats::parse_pids(&t).len() as u64)
        .unwrap_or(0))
}
