//! The `local` provider: the server side of the engine.
//!
//! Every sandbox lives in a *slot*: a directory with its writable layers, a cgroup and a
//! control socket, all named by a random slot id (not the sandbox id, because warm
//! sandboxes are made before anyone asks for them). [`start`] makes a slot and starts
//! its init by re-executing the quantbox binary (the cold path); [`pool`] keeps a few
//! slots started and parked under tight limits, and `create` claims one when it can;
//! [`exec`] runs processes; [`cleanup`] removes a slot from the host. Once a sandbox is
//! given out, a task watches its init through a pidfd and removes everything the slot had
//! when init ends, however it ends.

mod cleanup;
mod exec;
mod pool;
mod start;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use quantbox_sandbox::{
    Adoption, Counters, ExecOutcome, ExecRequest, LimitSupport, OutputSink, Provider,
    ProviderError, ProviderInfo, ResourceUsage, Resources, SandboxId, SandboxSpec, Termination,
    Timestamp, UnexpectedExit,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::cgroup::{Cgroup, CgroupLimits, Cgroups};
use crate::client::{self, InitClient};
use crate::protocol::{IdMode, ToInit};
use crate::sys;
use crate::template;

/// Configuration of the local provider.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Where templates, sandboxes' writable layers and control sockets live.
    pub data_dir: PathBuf,
    /// The quantbox binary to re-execute as init (default `/proc/self/exe`).
    pub init_exe: PathBuf,
    /// First host uid/gid of the range sandbox ids 0..65536 map to (root mode).
    pub uid_base: u32,
    /// Name of the cgroup under which sandboxes' groups are made.
    pub cgroup_parent: String,
    /// RLIMIT_NOFILE of sandbox processes.
    pub nofile_limit: u64,
    /// How long init waits past its deadline for the server before ending the sandbox
    /// itself.
    pub deadline_grace: Duration,
    /// Sandboxes of the `base` template kept started and parked, so that `create` only
    /// has to give one its limits (0 turns the pool off).
    pub warm_pool: usize,
    /// Size of each sandbox's `/tmp` tmpfs (its pages count against the memory limit).
    pub tmp_size_mb: u64,
    /// Size of each sandbox's `/dev/shm`.
    pub shm_size_mb: u64,
    /// Where NVIDIA device nodes are looked for (`/dev`); `None` passes no GPU in.
    pub gpu_device_dir: Option<PathBuf>,
}

impl LocalConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            init_exe: PathBuf::from("/proc/self/exe"),
            uid_base: 1_000_000,
            cgroup_parent: "quantbox".into(),
            nofile_limit: 4096,
            deadline_grace: Duration::from_secs(30),
            warm_pool: 2,
            tmp_size_mb: 1024,
            shm_size_mb: 64,
            gpu_device_dir: Some(PathBuf::from("/dev")),
        }
    }
}

/// The NVIDIA device nodes in `dir` (the driver's `nvidia0…`, `nvidiactl`,
/// `nvidia-uvm`, `nvidia-uvm-tools`, `nvidia-modeset`): character devices only, sorted.
pub fn nvidia_devices(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let known = matches!(
                name.as_ref(),
                "nvidiactl" | "nvidia-uvm" | "nvidia-uvm-tools" | "nvidia-modeset"
            ) || name
                .strip_prefix("nvidia")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            // Follows links: a device node may be reached through one.
            known && std::fs::metadata(e.path()).is_ok_and(|m| m.file_type().is_char_device())
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Provider state persisted with the sandbox record, to find it again after a restart.
#[derive(Debug, Serialize, Deserialize)]
struct Runtime {
    slot: String,
    /// The template it was made from (empty for sandboxes made before this was kept).
    #[serde(default)]
    template: String,
    init_pid: i32,
    init_start_time: u64,
}

/// A slot whose init runs: what a sandbox has on the host.
struct Instance {
    slot: String,
    template: String,
    dir: PathBuf,
    pidfd: OwnedFd,
    init_pid: i32,
    client: InitClient,
    cgroup: Option<Cgroup>,
    /// Microseconds per setup step (for the benchmark).
    setup_steps: Vec<(String, u64)>,
}

/// A sandbox given out.
struct Sandbox {
    slot: String,
    template: String,
    dir: PathBuf,
    pidfd: Arc<OwnedFd>,
    client: InitClient,
    cgroup: Option<Cgroup>,
    init_pid: i32,
    resources: Resources,
    /// Set when termination was asked for: the exit that follows is expected.
    terminating: AtomicBool,
    /// Frozen by `pause`.
    paused: AtomicBool,
    /// Becomes true once init has exited and everything on the host is removed.
    gone: watch::Receiver<bool>,
    setup_steps: Vec<(String, u64)>,
}

struct Inner {
    cfg: LocalConfig,
    ids: IdMode,
    cgroups: Result<Cgroups, String>,
    templates: template::Registry,
    sandboxes: Mutex<HashMap<SandboxId, Arc<Sandbox>>>,
    pool: pool::Pool,
    exits: OnceLock<mpsc::UnboundedSender<UnexpectedExit>>,
    exec_seq: AtomicU64,
    host_memory_bytes: u64,
    host_cpus: f64,
    /// The quantbox binary as a host path, bound read-only into every sandbox.
    tools_exe: Option<PathBuf>,
    /// NVIDIA device nodes found on the host, bound into every sandbox's `/dev`.
    gpu_devices: Vec<PathBuf>,
}

pub struct LocalProvider {
    inner: Arc<Inner>,
}

/// init's backstop deadline while its sandbox is paused (the lifetime clock stops).
const PAUSED_DEADLINE_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ProviderError {
    let context = context.into();
    move |e| ProviderError::io(context, e)
}

fn mkdir_private(p: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
}

fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn limits_of(r: &Resources) -> CgroupLimits {
    CgroupLimits {
        memory_bytes: r.memory_mb * 1024 * 1024,
        cpu_quota: Some(r.cpu_count),
        pids_max: r.pids_max,
    }
}

impl Inner {
    fn slot_dir(&self, slot: &str) -> PathBuf {
        self.cfg.data_dir.join("sandboxes").join(slot)
    }

    fn socket_path(&self, slot: &str) -> PathBuf {
        self.cfg.data_dir.join("run").join(format!("{slot}.sock"))
    }
}

impl LocalProvider {
    /// Prepares the data directory (building the `base` template on first use) and
    /// detects what this host allows.
    pub fn new(cfg: LocalConfig) -> Result<Self, ProviderError> {
        let euid = nix::unistd::geteuid().as_raw();
        let ids = if euid == 0 {
            IdMode::Mapped {
                host_base: cfg.uid_base,
                size: 65536,
            }
        } else {
            IdMode::Rootless {
                outside_uid: euid,
                outside_gid: nix::unistd::getegid().as_raw(),
            }
        };
        for d in ["", "sandboxes", "run", "templates", "scratch"] {
            mkdir_private(&cfg.data_dir.join(d)).map_err(io_err(format!(
                "creating {}",
                cfg.data_dir.join(d).display()
            )))?;
        }
        let sock = cfg
            .data_dir
            .join("run")
            .join(format!("{}.sock", "x".repeat(SandboxId::LEN)));
        if sock.as_os_str().len() >= 108 {
            return Err(ProviderError::Invalid(format!(
                "the data directory {} is too deep: control sockets under it would exceed the 107-byte limit of unix socket paths",
                cfg.data_dir.display()
            )));
        }
        let owner = match ids {
            IdMode::Mapped { .. } => None,
            IdMode::Rootless {
                outside_uid,
                outside_gid,
            } => Some((outside_uid, outside_gid)),
        };
        let templates = template::Registry::open(
            &cfg.data_dir.join("templates"),
            &cfg.data_dir.join("layers"),
            owner,
        )
        .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let cgroups = Cgroups::detect(&cfg.cgroup_parent)
            .map_err(|e| e.to_string())
            .and_then(|c| writable(&c).map(|()| c));
        if let Err(e) = &cgroups {
            tracing::warn!(error = %e, "cgroups unavailable: sandboxes' limits cannot be enforced");
        }
        let host_cpus = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
        let pool = pool::Pool::new(cfg.warm_pool);
        // `/proc/self/exe` means "this binary": bind its real path (the link would
        // resolve to the helper inside the new namespaces).
        let tools_exe = if cfg.init_exe == Path::new("/proc/self/exe") {
            std::fs::read_link("/proc/self/exe").ok()
        } else {
            Some(cfg.init_exe.clone())
        }
        .filter(|p| p.is_file());
        let gpu_devices = cfg
            .gpu_device_dir
            .as_deref()
            .map(nvidia_devices)
            .unwrap_or_default();
        if !gpu_devices.is_empty() {
            tracing::info!(devices = ?gpu_devices, "NVIDIA devices are passed into sandboxes");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                gpu_devices,
                tools_exe,
                cfg,
                ids,
                cgroups,
                templates,
                sandboxes: Mutex::new(HashMap::new()),
                pool,
                exits: OnceLock::new(),
                exec_seq: AtomicU64::new(1),
                host_memory_bytes: host_memory_bytes(),
                host_cpus,
            }),
        })
    }

    /// Host memory, bytes (the upper bound of `memory_mb`).
    pub fn host_memory_bytes(&self) -> u64 {
        self.inner.host_memory_bytes
    }

    /// Host CPUs (the upper bound of `cpu_count`).
    pub fn host_cpus(&self) -> f64 {
        self.inner.host_cpus
    }

    /// Whether this provider runs without root (user namespaces only).
    pub fn rootless(&self) -> bool {
        matches!(self.inner.ids, IdMode::Rootless { .. })
    }

    fn get(&self, id: &SandboxId) -> Result<Arc<Sandbox>, ProviderError> {
        lock(&self.inner.sandboxes)
            .get(id)
            .cloned()
            .ok_or_else(|| ProviderError::NotRunning(id.clone()))
    }

    /// Microseconds per setup step of a sandbox (for the benchmark).
    pub fn setup_steps(&self, id: &SandboxId) -> Option<Vec<(String, u64)>> {
        self.get(id).ok().map(|s| s.setup_steps.clone())
    }

    /// Host pid of a sandbox's init (for tests and diagnostics).
    pub fn init_pid(&self, id: &SandboxId) -> Option<i32> {
        self.get(id).ok().map(|s| s.init_pid)
    }

    /// The host directory of a running sandbox's writable layers.
    pub fn sandbox_dir(&self, id: &SandboxId) -> Option<PathBuf> {
        self.get(id).ok().map(|s| s.dir.clone())
    }

    /// A running sandbox's cgroup.
    pub fn cgroup(&self, id: &SandboxId) -> Option<Cgroup> {
        self.get(id).ok().and_then(|s| s.cgroup.clone())
    }

    /// The cgroup hierarchy in use, if any.
    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.inner.cgroups.as_ref().ok()
    }

    /// Slot ids of the warm sandboxes in the pool, parked or being started.
    pub fn pooled_slots(&self) -> Vec<String> {
        self.inner.pool.slots()
    }

    /// How many warm sandboxes are parked, ready to be claimed.
    pub fn parked(&self) -> usize {
        self.inner.pool.parked()
    }

    /// Slot id of a running sandbox.
    pub fn slot(&self, id: &SandboxId) -> Option<String> {
        self.get(id).ok().map(|s| s.slot.clone())
    }

    /// Names of the cgroups of sandboxes (given out or warm) on the host now.
    pub fn cgroup_children(&self) -> Vec<String> {
        self.inner
            .cgroups
            .as_ref()
            .map(|c| c.children())
            .unwrap_or_default()
    }

    /// Ends the warm sandboxes and removes them (tests; `shutdown`).
    pub async fn drain_pool(&self) {
        pool::drain(&self.inner).await;
    }

    fn limit_support(&self) -> Vec<LimitSupport> {
        let mut out = Vec::new();
        match &self.inner.cgroups {
            Ok(c) => {
                let support: HashMap<&str, Result<(), String>> = c.support().into_iter().collect();
                for limit in ["memory", "cpu", "pids", "freezer"] {
                    let r = support
                        .get(limit)
                        .cloned()
                        .unwrap_or_else(|| Err("not detected".into()));
                    out.push(LimitSupport {
                        limit,
                        enforced: r.is_ok(),
                        reason: r.err(),
                    });
                }
            }
            Err(e) => {
                for limit in ["memory", "cpu", "pids", "freezer"] {
                    out.push(LimitSupport {
                        limit,
                        enforced: false,
                        reason: Some(format!("no usable cgroups: {e}")),
                    });
                }
            }
        }
        out.push(LimitSupport {
            limit: "lifetime",
            enforced: true,
            reason: None,
        });
        out
    }

    /// Gives `inst` to sandbox `id` and starts watching its init: when init ends,
    /// everything the slot had on the host is removed, and an end nobody asked for is
    /// reported.
    fn register(
        &self,
        id: SandboxId,
        inst: Instance,
        resources: Resources,
    ) -> Result<Arc<Sandbox>, ProviderError> {
        let pidfd = Arc::new(inst.pidfd);
        let (gone_tx, gone_rx) = watch::channel(false);
        let watch_fd = client::register(
            pidfd
                .as_fd()
                .try_clone_to_owned()
                .map_err(io_err("pidfd"))?,
            tokio::io::Interest::READABLE,
        )
        .map_err(io_err("watching init"))?;
        let sb = Arc::new(Sandbox {
            slot: inst.slot.clone(),
            template: inst.template.clone(),
            dir: inst.dir,
            pidfd: pidfd.clone(),
            client: inst.client,
            cgroup: inst.cgroup,
            init_pid: inst.init_pid,
            resources,
            terminating: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            gone: gone_rx,
            setup_steps: inst.setup_steps,
        });
        lock(&self.inner.sandboxes).insert(id.clone(), sb.clone());
        let inner = self.inner.clone();
        let weak_sb = Arc::downgrade(&sb);
        let slot = inst.slot;
        tokio::spawn(async move {
            // A pidfd becomes readable when its process exits.
            let _ = watch_fd.readable().await;
            let status = sys::pidfd_reap(&pidfd).ok().flatten();
            let sb = weak_sb.upgrade();
            let cgroup = sb.as_ref().and_then(|s| s.cgroup.clone());
            let expected = sb
                .as_ref()
                .is_none_or(|s| s.terminating.load(Ordering::SeqCst));
            drop(sb);
            let inner2 = inner.clone();
            let slot2 = slot.clone();
            match tokio::task::spawn_blocking(move || {
                cleanup::remove_slot(&inner2, &slot2, cgroup.as_ref())
            })
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(sandbox = %id, error = %e, "cleanup after the sandbox ended failed")
                }
                Err(e) => tracing::error!(sandbox = %id, error = %e, "cleanup task failed"),
            }
            lock(&inner.sandboxes).remove(&id);
            let _ = gone_tx.send(true);
            if !expected {
                let detail = match status {
                    Some(sys::WaitStatus::Exited(c)) => format!("its init exited with status {c}"),
                    Some(sys::WaitStatus::Signaled(s)) => {
                        format!("its init was killed by signal {s}")
                    }
                    None => "its init ended".to_owned(),
                };
                if let Some(tx) = inner.exits.get() {
                    let _ = tx.send(UnexpectedExit { id, detail });
                }
            }
        });
        Ok(sb)
    }
}

fn template_info(t: &template::Template) -> quantbox_sandbox::TemplateInfo {
    quantbox_sandbox::TemplateInfo {
        name: t.name.clone(),
        id: t.layers.first().map(|l| l.id.clone()).unwrap_or_default(),
        provider: "local".into(),
        builtin: t.builtin,
        layers: t.layers.len(),
        size_bytes: t.size_bytes,
        files_count: t.files_count,
        source: t.source.clone(),
        parent: t
            .source
            .split_once("(template ")
            .map(|(_, p)| p.trim_end_matches(')').to_owned()),
        created_at: Timestamp::from_unix_ms(t.created_at_ms),
        defaults: t.defaults.clone(),
    }
}

/// The sandbox's cgroup, whose freezer `what` needs.
fn freezer_of(sb: &Sandbox, what: &str) -> Result<Cgroup, ProviderError> {
    sb.cgroup.clone().ok_or_else(|| {
        ProviderError::Unavailable(format!(
            "{what} needs the cgroup freezer, and this host gives quantbox no cgroups"
        ))
    })
}

/// Freezes (`true`) or thaws a sandbox's cgroup, off the async threads.
async fn set_frozen(cg: Cgroup, frozen: bool, id: &SandboxId) -> Result<(), ProviderError> {
    let (verb, r) = if frozen {
        (
            "freezing",
            tokio::task::spawn_blocking(move || cg.freeze()).await,
        )
    } else {
        (
            "thawing",
            tokio::task::spawn_blocking(move || cg.thaw()).await,
        )
    };
    r.map_err(|e| ProviderError::Internal(e.to_string()))?
        .map_err(|e| ProviderError::Internal(format!("{verb} sandbox {id}: {e}")))
}

/// Template errors as the contract's codes see them.
fn template_error(e: template::TemplateError) -> ProviderError {
    use template::TemplateError as T;
    match e {
        T::InvalidName(m) => ProviderError::Invalid(format!("template_name: {m}")),
        T::Exists(n) => ProviderError::Exists(format!(
            "template_name: a template named `{n}` exists already"
        )),
        T::NotFound(n) => ProviderError::NotFound(format!("no template named `{n}`")),
        T::Builtin(n) => {
            ProviderError::Precondition(format!("template `{n}` is built in and cannot be deleted"))
        }
        T::InUse(n) => ProviderError::Precondition(format!(
            "template `{n}` is in use by a sandbox or a deployment; terminate or delete them first"
        )),
        e @ (T::UnsafeArchive { .. } | T::BadSource(_)) => ProviderError::Invalid(e.to_string()),
        e @ T::NotMergedUsr(_) => ProviderError::Unavailable(e.to_string()),
        e @ T::Io { .. } => ProviderError::Internal(e.to_string()),
    }
}

/// "memory, cpu and pids (reason)": the limits among `which` that are not enforced,
/// grouped by reason; empty when all are.
fn unenforced(limits: &[LimitSupport], which: &[&str]) -> String {
    let mut by_reason: Vec<(String, Vec<&str>)> = Vec::new();
    for l in limits
        .iter()
        .filter(|l| !l.enforced && which.contains(&l.limit))
    {
        let reason = l.reason.clone().unwrap_or_default();
        match by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, names)) => names.push(l.limit),
            None => by_reason.push((reason, vec![l.limit])),
        }
    }
    by_reason
        .into_iter()
        .map(|(reason, names)| format!("{} ({reason})", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Without root, cgroups are usable only where they were delegated to this user: the
/// sandboxes' parent groups must be writable (and searchable) by it.
fn writable(c: &Cgroups) -> Result<(), String> {
    use nix::unistd::{AccessFlags, access};
    for dir in c.parent_dirs() {
        if access(&dir, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
            return Err(format!(
                "{} is not writable by uid {} (no delegated cgroup)",
                dir.display(),
                nix::unistd::geteuid()
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn info(&self) -> ProviderInfo {
        let limits = self.limit_support();
        let missing = unenforced(&limits, &["memory", "cpu", "pids"]);
        let mode = if self.rootless() {
            "rootless (user namespaces)"
        } else {
            "root"
        };
        let (status, detail) = if missing.is_empty() {
            (
                "available",
                format!("Linux namespaces, {mode}; all limits enforced"),
            )
        } else {
            (
                "degraded",
                format!(
                    "Linux namespaces, {mode}; cannot enforce {missing}; sandboxes asking for these limits are refused"
                ),
            )
        };
        ProviderInfo {
            name: "local",
            status,
            detail,
            limits,
        }
    }

    fn gpu_devices(&self) -> Vec<String> {
        self.inner
            .gpu_devices
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }

    fn templates(&self) -> Vec<String> {
        self.inner.templates.names()
    }

    fn check(&self, spec: &SandboxSpec) -> Result<(), ProviderError> {
        let unenforceable = unenforced(&self.limit_support(), &["memory", "cpu", "pids"]);
        if !unenforceable.is_empty() {
            return Err(ProviderError::Precondition(format!(
                "this host cannot enforce the limits sandbox `{}` asks for: {unenforceable}; run quantbox as root, or give it a delegated cgroup subtree",
                spec.name,
            )));
        }
        if spec.resources.memory_mb * 1024 * 1024 > self.inner.host_memory_bytes {
            return Err(ProviderError::Invalid(format!(
                "memory_mb: {} is more than this host's {} MB",
                spec.resources.memory_mb,
                self.inner.host_memory_bytes / (1024 * 1024)
            )));
        }
        if spec.resources.cpu_count > self.inner.host_cpus {
            return Err(ProviderError::Invalid(format!(
                "cpu_count: {} is more than this host's {} cores",
                spec.resources.cpu_count, self.inner.host_cpus
            )));
        }
        Ok(())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<serde_json::Value, ProviderError> {
        let tpl = self.inner.templates.get(&spec.template).ok_or_else(|| {
            ProviderError::Invalid(format!("template: unknown template `{}`", spec.template))
        })?;
        let limits = limits_of(&spec.resources);
        let inst = match pool::claim(&self.inner, &spec.template, &limits, spec.expires_at).await {
            Some(inst) => inst,
            None => {
                let slot = SandboxId::generate().to_string();
                start::prepare(&self.inner, slot, &tpl, &limits, spec.expires_at).await?
            }
        };
        let runtime = Runtime {
            slot: inst.slot.clone(),
            template: spec.template.clone(),
            init_pid: inst.init_pid,
            init_start_time: sys::process_start_time(inst.init_pid).unwrap_or(0),
        };
        self.register(spec.id.clone(), inst, spec.resources.clone())?;
        self.inner.pool.wake();
        Ok(serde_json::to_value(runtime).expect("plain struct serialises"))
    }

    async fn exec(
        &self,
        id: &SandboxId,
        req: &ExecRequest,
        sink: OutputSink,
    ) -> Result<ExecOutcome, ProviderError> {
        let sb = self.get(id)?;
        exec::run(&self.inner, id, &sb, req, sink).await
    }

    async fn terminate(&self, id: &SandboxId, how: Termination) -> Result<(), ProviderError> {
        let Ok(sb) = self.get(id) else {
            // Not running here: nothing of it is left (a slot nobody owns is swept).
            return Ok(());
        };
        sb.terminating.store(true, Ordering::SeqCst);
        if sb.paused.swap(false, Ordering::SeqCst)
            && let Some(cg) = sb.cgroup.clone()
        {
            // Frozen processes cannot act on signals: thaw first.
            let _ = tokio::task::spawn_blocking(move || cg.thaw()).await;
        }
        let wait_gone = |within: Duration| {
            let mut gone = sb.gone.clone();
            async move {
                tokio::time::timeout(within, gone.wait_for(|g| *g))
                    .await
                    .is_ok()
            }
        };
        if let Termination::Graceful { grace } = how
            && sb
                .client
                .send(&ToInit::Shutdown {
                    grace_ms: grace.as_millis() as u64,
                })
                .await
                .is_ok()
            && wait_gone(grace + Duration::from_secs(1)).await
        {
            return Ok(());
        }
        if let Err(e) = sys::pidfd_send_signal(&sb.pidfd, libc::SIGKILL)
            && e.raw_os_error() != Some(libc::ESRCH)
        {
            return Err(ProviderError::io("killing the sandbox init", e));
        }
        if wait_gone(Duration::from_secs(30)).await {
            Ok(())
        } else {
            Err(ProviderError::Internal(format!(
                "sandbox {id} did not end within 30 s of SIGKILL"
            )))
        }
    }

    async fn usage(&self, id: &SandboxId, disk: bool) -> Result<ResourceUsage, ProviderError> {
        let sb = self.get(id)?;
        let dir = sb.dir.clone();
        let cgroup = sb.cgroup.clone();
        let resources = sb.resources.clone();
        tokio::task::spawn_blocking(move || {
            let mut u = ResourceUsage {
                disk_bytes: if disk {
                    cleanup::disk_usage(&dir.join("upper-root"))
                        + cleanup::disk_usage(&dir.join("upper-usr"))
                } else {
                    0
                },
                memory_limit_bytes: resources.memory_mb * 1024 * 1024,
                pids_max: resources.pids_max,
                ..ResourceUsage::default()
            };
            if disk && let Ok(fs) = nix::sys::statvfs::statvfs(&dir) {
                u.disk_total_bytes = fs.blocks() * fs.fragment_size();
            }
            if let Some(cg) = cgroup {
                let s = cg.stats().map_err(|e| {
                    ProviderError::Internal(format!("reading cgroup statistics: {e}"))
                })?;
                u.cpu_usage_ns = s.cpu_usage_ns;
                u.memory_bytes = s.memory_bytes;
                u.memory_limit_bytes = s.memory_limit_bytes;
                u.memory_peak_bytes = s.memory_peak_bytes;
                u.pids = s.pids;
                u.pids_max = s.pids_max;
                u.pids_limit_hits = s.pids_limit_hits;
                u.oom_kills = s.oom_kills;
            }
            Ok(u)
        })
        .await
        .map_err(|e| ProviderError::Internal(e.to_string()))?
    }

    async fn counters(&self, id: &SandboxId) -> Result<Counters, ProviderError> {
        let sb = self.get(id)?;
        let Some(cg) = &sb.cgroup else {
            return Ok(Counters::default());
        };
        let c = cg
            .counters()
            .map_err(|e| ProviderError::Internal(format!("reading cgroup counters: {e}")))?;
        Ok(Counters {
            cpu_usage_ns: c.cpu_usage_ns,
            oom_kills: c.oom_kills,
            pids_limit_hits: c.pids_limit_hits,
        })
    }

    async fn ping(&self, id: &SandboxId, timeout: Duration) -> Result<Duration, ProviderError> {
        let sb = self.get(id)?;
        sb.client
            .ping(timeout)
            .await
            .map_err(|e| ProviderError::Unavailable(format!("init of sandbox {id}: {e}")))
    }

    async fn set_deadline(
        &self,
        id: &SandboxId,
        expires_at: Timestamp,
    ) -> Result<(), ProviderError> {
        let sb = self.get(id)?;
        sb.client
            .send(&ToInit::SetDeadline {
                unix_ms: expires_at.unix_ms(),
            })
            .await
            .map_err(|_| ProviderError::NotRunning(id.clone()))
    }

    fn template_info(&self) -> Vec<quantbox_sandbox::TemplateInfo> {
        self.inner
            .templates
            .list()
            .iter()
            .map(template_info)
            .collect()
    }

    async fn import_template(
        &self,
        name: &str,
        source: &Path,
        defaults: quantbox_sandbox::TemplateDefaults,
        progress: quantbox_sandbox::CopyProgress,
    ) -> Result<quantbox_sandbox::TemplateInfo, ProviderError> {
        let inner = self.inner.clone();
        let (name, source) = (name.to_owned(), source.to_owned());
        let t = tokio::task::spawn_blocking(move || {
            inner
                .templates
                .import(&name, &source, defaults, &|s: template::CopyStats| {
                    progress(s.bytes, s.files)
                })
        })
        .await
        .map_err(|e| ProviderError::Internal(e.to_string()))?
        .map_err(template_error)?;
        Ok(template_info(&t))
    }

    async fn export_template(
        &self,
        id: &SandboxId,
        name: &str,
        include_data: bool,
        defaults: quantbox_sandbox::TemplateDefaults,
        progress: quantbox_sandbox::CopyProgress,
    ) -> Result<quantbox_sandbox::TemplateInfo, ProviderError> {
        let sb = self.get(id)?;
        template::Registry::validate_name(name).map_err(template_error)?;
        if self.inner.templates.get(name).is_some() {
            return Err(ProviderError::Exists(format!(
                "template_name: a template named `{name}` exists already"
            )));
        }
        let parent = self.inner.templates.get(&sb.template).ok_or_else(|| {
            ProviderError::Precondition(format!(
                "sandbox {id} was made from template `{}`, which is gone; it cannot be exported",
                sb.template
            ))
        })?;
        let cg = freezer_of(&sb, "a consistent export")?;
        // Frozen while its files are copied, so the copy is consistent; a sandbox the
        // user paused stays paused.
        let froze = !sb.paused.load(Ordering::SeqCst);
        if froze {
            set_frozen(cg.clone(), true, id).await?;
        }
        let mut exclude = vec![PathBuf::from("tmp")];
        if !include_data {
            exclude.push(PathBuf::from(template::USER_HOME.trim_start_matches('/')));
        }
        let opts = template::CopyOptions {
            uid_shift: match self.inner.ids {
                IdMode::Mapped { host_base, .. } => host_base,
                IdMode::Rootless { .. } => 0,
            },
            exclude,
        };
        let inner = self.inner.clone();
        let (name2, dir) = (name.to_owned(), sb.dir.clone());
        let source = format!("export of sandbox {id} (template {})", parent.name);
        let copied = tokio::task::spawn_blocking(move || {
            inner.templates.add_layer(
                &name2,
                &parent,
                &dir.join("upper-root"),
                &dir.join("upper-usr"),
                &opts,
                defaults,
                source,
                &|s: template::CopyStats| progress(s.bytes, s.files),
            )
        })
        .await;
        if froze {
            set_frozen(cg, false, id).await?;
        }
        let t = copied
            .map_err(|e| ProviderError::Internal(e.to_string()))?
            .map_err(template_error)?;
        Ok(template_info(&t))
    }

    async fn delete_template(&self, name: &str, in_use: &[String]) -> Result<(), ProviderError> {
        let inner = self.inner.clone();
        let (name, in_use) = (name.to_owned(), in_use.to_vec());
        tokio::task::spawn_blocking(move || {
            inner
                .templates
                .delete(&name, &|n: &str| in_use.iter().any(|u| u == n))
        })
        .await
        .map_err(|e| ProviderError::Internal(e.to_string()))?
        .map_err(template_error)
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), ProviderError> {
        let sb = self.get(id)?;
        let cg = freezer_of(&sb, "pausing")?;
        // While paused the lifetime stops: take init's own backstop deadline out of the
        // way first (the ping makes sure init has applied it before it freezes).
        let far = Timestamp::now().plus_ms(PAUSED_DEADLINE_MS);
        sb.client
            .send(&ToInit::SetDeadline {
                unix_ms: far.unix_ms(),
            })
            .await
            .map_err(|_| ProviderError::NotRunning(id.clone()))?;
        sb.client
            .ping(Duration::from_secs(2))
            .await
            .map_err(|e| ProviderError::Unavailable(format!("init of sandbox {id}: {e}")))?;
        set_frozen(cg, true, id).await?;
        sb.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), ProviderError> {
        let sb = self.get(id)?;
        let cg = freezer_of(&sb, "resuming")?;
        set_frozen(cg, false, id).await?;
        sb.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn adopt(
        &self,
        id: &SandboxId,
        runtime: &serde_json::Value,
        paused: bool,
    ) -> Result<Adoption, ProviderError> {
        let Ok(rt) = serde_json::from_value::<Runtime>(runtime.clone()) else {
            // Its slot, if any was made, is swept by `ready`.
            return Ok(Adoption::Gone {
                detail: "its creation never finished".into(),
            });
        };
        let inner = self.inner.clone();
        let gone = |detail: String| {
            let inner = inner.clone();
            let slot = rt.slot.clone();
            async move {
                tokio::task::spawn_blocking(move || cleanup::remove_slot(&inner, &slot, None))
                    .await
                    .map_err(|e| ProviderError::Internal(e.to_string()))??;
                Ok(Adoption::Gone { detail })
            }
        };
        let same = || sys::process_alive(rt.init_pid, rt.init_start_time);
        if !same() {
            return gone("its init had exited".into()).await;
        }
        let Ok(pidfd) = sys::pidfd_open(rt.init_pid) else {
            return gone("its init had exited".into()).await;
        };
        // The pid could have been reused between the check and pidfd_open: check again
        // now that the pidfd pins the process.
        if !same() {
            return gone("its init had exited".into()).await;
        }
        let connected = (|| {
            let fd = socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            let addr = UnixAddr::new(&self.inner.socket_path(&rt.slot))?;
            connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
            Ok::<_, nix::Error>(fd)
        })();
        let client = match connected
            .map_err(io::Error::from)
            .and_then(client::async_socket)
        {
            Ok(afd) => InitClient::start(afd),
            Err(e) => {
                let _ = sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
                return gone(format!("its init could not be reached ({e}); killed it")).await;
            }
        };
        if !paused && let Err(e) = client.ping(Duration::from_secs(2)).await {
            let _ = sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
            return gone(format!("its init did not answer ({e}); killed it")).await;
        }
        let cgroup = self
            .inner
            .cgroups
            .as_ref()
            .ok()
            .and_then(|c| c.open(&rt.slot));
        let stats = cgroup.as_ref().and_then(|c| c.stats().ok());
        let resources = Resources {
            memory_mb: stats
                .as_ref()
                .map_or(0, |s| s.memory_limit_bytes / (1024 * 1024)),
            cpu_count: 0.0,
            pids_max: stats.as_ref().map_or(0, |s| s.pids_max),
        };
        let inst = Instance {
            slot: rt.slot.clone(),
            template: rt.template.clone(),
            dir: self.inner.slot_dir(&rt.slot),
            pidfd,
            init_pid: rt.init_pid,
            client,
            cgroup,
            setup_steps: Vec::new(),
        };
        let sb = self.register(id.clone(), inst, resources)?;
        sb.paused.store(paused, Ordering::SeqCst);
        Ok(Adoption::Adopted)
    }

    fn watch_exits(&self, tx: mpsc::UnboundedSender<UnexpectedExit>) {
        let _ = self.inner.exits.set(tx);
    }

    async fn ready(&self) -> Result<(), ProviderError> {
        let inner = self.inner.clone();
        let keep: Vec<String> = lock(&inner.sandboxes)
            .values()
            .map(|s| s.slot.clone())
            .collect();
        let removed = tokio::task::spawn_blocking(move || cleanup::sweep(&inner, &keep))
            .await
            .map_err(|e| ProviderError::Internal(e.to_string()))?;
        if removed > 0 {
            tracing::info!(
                count = removed,
                "removed leftovers of sandboxes no record owns"
            );
        }
        if self.inner.cgroups.is_ok() {
            pool::start(&self.inner);
        }
        Ok(())
    }

    async fn shutdown(&self) {
        pool::drain(&self.inner).await;
    }
}

#[cfg(test)]
mod gpu_tests {
    use super::*;

    #[test]
    fn nvidia_device_nodes_are_found_by_name_and_kind() {
        let d = tempfile::tempdir().unwrap();
        for name in [
            "nvidia0",
            "nvidia12",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-caps",
            "nvidiax",
            "null",
        ] {
            std::os::unix::fs::symlink("/dev/null", d.path().join(name)).unwrap();
        }
        // A regular file of a device's name is not a device.
        std::fs::write(d.path().join("nvidia1"), b"").unwrap();
        let names: Vec<String> = nvidia_devices(d.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["nvidia-uvm", "nvidia0", "nvidia12", "nvidiactl"]);
        assert!(nvidia_devices(Path::new("/nonexistent")).is_empty());
    }
}
