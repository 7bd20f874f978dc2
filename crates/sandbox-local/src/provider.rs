//! The `local` provider: the server side of the engine. It prepares a sandbox's
//! directories and cgroup, starts init by re-executing the quantbox binary, watches init
//! with a pidfd, talks to it over the control socket, and removes everything the sandbox
//! had on the host when init ends, however it ends.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket, socketpair,
};
use quantbox_sandbox::{
    Adoption, Counters, ExecOutcome, ExecRequest, ExecUser, LimitSupport, OUTPUT_CAP_BYTES,
    OutputSink, Provider, ProviderError, ProviderInfo, ResourceUsage, SandboxId, SandboxSpec,
    Stream, Termination, Timestamp, UnexpectedExit,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use crate::cgroup::{Cgroup, CgroupLimits, Cgroups};
use crate::client::{self, ExecEvent, InitClient};
use crate::init::INIT_ARG;
use crate::protocol::{Creds, FromInit, IdMode, InitConfig, ToInit};
use crate::sys;
use crate::template::{self, Template, USER_HOME, USER_UID};

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
        }
    }
}

/// Provider state persisted with the sandbox record, to find it again after a restart.
#[derive(Debug, Serialize, Deserialize)]
struct Runtime {
    init_pid: i32,
    init_start_time: u64,
}

/// One running sandbox.
struct Sandbox {
    dir: PathBuf,
    pidfd: Arc<OwnedFd>,
    client: InitClient,
    cgroup: Option<Cgroup>,
    init_pid: i32,
    resources: quantbox_sandbox::Resources,
    /// Set when termination was asked for: the exit that follows is expected.
    terminating: AtomicBool,
    /// Becomes true once init has exited and everything on the host is removed.
    gone: watch::Receiver<bool>,
    setup_steps: Vec<(String, u64)>,
}

struct Registration {
    id: SandboxId,
    dir: PathBuf,
    pidfd: OwnedFd,
    client: InitClient,
    cgroup: Option<Cgroup>,
    init_pid: i32,
    resources: quantbox_sandbox::Resources,
    setup_steps: Vec<(String, u64)>,
}

struct Inner {
    cfg: LocalConfig,
    ids: IdMode,
    cgroups: Result<Cgroups, String>,
    templates: BTreeMap<String, Template>,
    sandboxes: Mutex<HashMap<SandboxId, Arc<Sandbox>>>,
    exits: OnceLock<mpsc::UnboundedSender<UnexpectedExit>>,
    exec_seq: AtomicU64,
    host_memory_bytes: u64,
    host_cpus: f64,
}

pub struct LocalProvider {
    inner: Arc<Inner>,
}

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
        for d in ["", "sandboxes", "run", "templates"] {
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
        let templates = template::load(&cfg.data_dir.join("templates"), owner)
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        let cgroups = Cgroups::detect(&cfg.cgroup_parent)
            .map_err(|e| e.to_string())
            .and_then(|c| writable(&c).map(|()| c));
        if let Err(e) = &cgroups {
            tracing::warn!(error = %e, "cgroups unavailable: sandboxes' limits cannot be enforced");
        }
        let host_cpus = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                ids,
                cgroups,
                templates,
                sandboxes: Mutex::new(HashMap::new()),
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

    /// Microseconds per setup step of a sandbox's init (for the benchmark).
    pub fn setup_steps(&self, id: &SandboxId) -> Option<Vec<(String, u64)>> {
        lock(&self.inner.sandboxes)
            .get(id)
            .map(|s| s.setup_steps.clone())
    }

    /// Host pid of a sandbox's init (for tests and diagnostics).
    pub fn init_pid(&self, id: &SandboxId) -> Option<i32> {
        lock(&self.inner.sandboxes).get(id).map(|s| s.init_pid)
    }

    /// Directory of a sandbox's writable layer and mount points on the host.
    pub fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.inner.cfg.data_dir.join("sandboxes").join(id.as_str())
    }

    fn socket_path(&self, id: &SandboxId) -> PathBuf {
        self.inner
            .cfg
            .data_dir
            .join("run")
            .join(format!("{}.sock", id.as_str()))
    }

    /// The cgroup hierarchy in use, if any.
    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.inner.cgroups.as_ref().ok()
    }

    /// Names of the cgroups of sandboxes that exist on the host now.
    pub fn cgroup_children(&self) -> Vec<String> {
        self.inner
            .cgroups
            .as_ref()
            .map(|c| c.children())
            .unwrap_or_default()
    }

    fn get(&self, id: &SandboxId) -> Result<Arc<Sandbox>, ProviderError> {
        lock(&self.inner.sandboxes)
            .get(id)
            .cloned()
            .ok_or_else(|| ProviderError::NotRunning(id.clone()))
    }

    fn limit_support(&self) -> Vec<LimitSupport> {
        let mut out = Vec::new();
        match &self.inner.cgroups {
            Ok(c) => {
                let support: HashMap<&str, Result<(), String>> = c.support().into_iter().collect();
                for (limit, key) in [
                    ("memory", "memory"),
                    ("cpu", "cpu"),
                    ("pids", "pids"),
                    ("freezer", "freezer"),
                ] {
                    let r = support
                        .get(key)
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

    /// Removes whatever is left of a sandbox on the host: processes in its cgroup, the
    /// cgroup, its directory and its control socket.
    fn remove_leftovers(
        inner: &Inner,
        id: &SandboxId,
        cgroup: Option<&Cgroup>,
    ) -> Result<(), ProviderError> {
        let opened;
        let cgroup = match cgroup {
            Some(c) => Some(c),
            None => {
                opened = inner
                    .cgroups
                    .as_ref()
                    .ok()
                    .and_then(|c| c.open(id.as_str()));
                opened.as_ref()
            }
        };
        if let Some(cg) = cgroup {
            cg.kill_all().map_err(|e| {
                ProviderError::Internal(format!("killing what was left in sandbox {id}: {e}"))
            })?;
            cg.remove().map_err(|e| {
                ProviderError::Internal(format!("removing the cgroup of sandbox {id}: {e}"))
            })?;
        }
        let _ = std::fs::remove_file(
            inner
                .cfg
                .data_dir
                .join("run")
                .join(format!("{}.sock", id.as_str())),
        );
        remove_tree(&inner.cfg.data_dir.join("sandboxes").join(id.as_str()))
            .map_err(io_err(format!("removing the files of sandbox {id}")))?;
        Ok(())
    }

    fn prepare_dirs(&self, spec: &SandboxSpec, tpl: &Template) -> io::Result<PathBuf> {
        let dir = self.sandbox_dir(&spec.id);
        mkdir_private(&dir)?;
        for d in ["root", "upper/root", "upper/usr", "work/root", "work/usr"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        for i in 0..tpl.root_layers.len() + tpl.usr_layers.len() {
            std::fs::create_dir_all(dir.join("staging").join(i.to_string()))?;
        }
        let etc = dir.join("upper/root/etc");
        std::fs::create_dir_all(&etc)?;
        std::fs::write(etc.join("hostname"), format!("{}\n", spec.id))?;
        std::fs::write(
            etc.join("hosts"),
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{id}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                id = spec.id
            ),
        )?;
        for d in ["upper/root", "upper/usr"] {
            std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755))?;
        if let IdMode::Mapped { host_base, .. } = self.inner.ids {
            // The merged root and /usr take the owner of their upper directories: make
            // them the sandbox's root, as the layers below are.
            for p in [
                "upper/root",
                "upper/usr",
                "upper/root/etc",
                "upper/root/etc/hostname",
                "upper/root/etc/hosts",
            ] {
                std::os::unix::fs::chown(dir.join(p), Some(host_base), Some(host_base))?;
            }
        }
        Ok(dir)
    }

    async fn start_init(
        &self,
        spec: &SandboxSpec,
        tpl: &Template,
        dir: &Path,
        cgroup: Option<&Cgroup>,
    ) -> Result<(OwnedFd, i32, InitClient, Vec<(String, u64)>), ProviderError> {
        let sock_path = self.socket_path(&spec.id);
        let _ = std::fs::remove_file(&sock_path);
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| ProviderError::io("control socket", e.into()))?;
        let addr = UnixAddr::new(&sock_path)
            .map_err(|e| ProviderError::io("control socket path", e.into()))?;
        bind(listener.as_raw_fd(), &addr)
            .map_err(|e| ProviderError::io("binding the control socket", e.into()))?;
        listen(&listener, Backlog::new(4).expect("small backlog is valid"))
            .map_err(|e| ProviderError::io("listening on the control socket", e.into()))?;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| ProviderError::io("control socket pair", e.into()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("init.log"))
            .map_err(io_err("opening init.log"))?;
        let log2 = log.try_clone().map_err(io_err("opening init.log"))?;
        let ts = std::time::Instant::now();
        let mut child = tokio::process::Command::new(&self.inner.cfg.init_exe)
            .arg(INIT_ARG)
            .env_clear()
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::from(log))
            .stderr(std::process::Stdio::from(log2))
            .spawn()
            .map_err(io_err(format!(
                "starting {}",
                self.inner.cfg.init_exe.display()
            )))?;
        let afd = client::async_socket(ours).map_err(io_err("control socket"))?;

        let cfg = InitConfig {
            sandbox_id: spec.id.to_string(),
            hostname: spec.id.to_string(),
            rootfs: dir.join("root"),
            root_layers: tpl.root_layers.clone(),
            usr_layers: tpl.usr_layers.clone(),
            upper_root: dir.join("upper/root"),
            work_root: dir.join("work/root"),
            upper_usr: dir.join("upper/usr"),
            work_usr: dir.join("work/usr"),
            staging: dir.join("staging"),
            ids: self.inner.ids.clone(),
            cgroup_procs: cgroup.map(|c| c.procs_files()).unwrap_or_default(),
            tmp_size_bytes: spec.resources.memory_mb * 1024 * 1024,
            shm_size_bytes: (spec.resources.memory_mb * 1024 * 1024 / 2).max(1 << 20),
            deadline_unix_ms: spec.expires_at.unix_ms(),
            deadline_grace_ms: self.inner.cfg.deadline_grace.as_millis() as i64,
            nofile_limit: self.inner.cfg.nofile_limit,
        };
        let handshake = async {
            client::send_async(
                &afd,
                &ToInit::Config(Box::new(cfg)),
                &[listener.as_raw_fd()],
            )
            .await
            .map_err(io_err("sending the sandbox config"))?;
            drop(listener);
            let mut buf = vec![0u8; 64 * 1024];
            let mut init_pid = None;
            let mut pidfd = None;
            let mut spawned_after = Duration::ZERO;
            loop {
                match client::recv_async(&afd, &mut buf).await {
                    Ok(Some(FromInit::Spawned { init_pid: pid })) => {
                        spawned_after = ts.elapsed();
                        // init is our child (CLONE_PARENT) and stays a zombie until we
                        // reap it, so the pid cannot be reused before this.
                        pidfd = Some(sys::pidfd_open(pid).map_err(io_err("pidfd of init"))?);
                        init_pid = Some(pid);
                    }
                    Ok(Some(FromInit::Ready { steps })) => {
                        let (Some(pid), Some(fd)) = (init_pid, pidfd) else {
                            return Err(ProviderError::Internal(
                                "init was ready before it was spawned".into(),
                            ));
                        };
                        let mut all = vec![(
                            "host: start helper".to_owned(),
                            spawned_after.as_micros() as u64,
                        )];
                        all.extend(steps);
                        return Ok((fd, pid, all));
                    }
                    Ok(Some(FromInit::SetupFailed { step, error })) => {
                        return Err((pidfd, format!("{step}: {error}"))).map_err(|(fd, msg)| {
                            if let Some(fd) = fd {
                                let _ = sys::pidfd_send_signal(&fd, libc::SIGKILL);
                            }
                            ProviderError::Internal(format!(
                                "setting up the sandbox failed at {msg}"
                            ))
                        });
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        if let Some(fd) = &pidfd {
                            let _ = sys::pidfd_send_signal(fd, libc::SIGKILL);
                        }
                        return Err(ProviderError::Internal(
                            "the sandbox init exited during setup".into(),
                        ));
                    }
                    Err(e) => return Err(ProviderError::io("reading from the sandbox init", e)),
                }
            }
        };
        let res = tokio::time::timeout(Duration::from_secs(20), handshake).await;
        // The outer helper exits right after cloning init; reap it in the background.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        match res {
            Ok(Ok((pidfd, pid, steps))) => Ok((pidfd, pid, InitClient::start(afd), steps)),
            Ok(Err(e)) => Err(with_log(e, dir)),
            Err(_) => Err(with_log(
                ProviderError::Internal("the sandbox init did not become ready within 20 s".into()),
                dir,
            )),
        }
    }

    /// Starts watching a sandbox whose init runs: when init ends, everything the sandbox
    /// had on the host is removed, and an end nobody asked for is reported.
    fn register(&self, r: Registration) -> Result<Arc<Sandbox>, ProviderError> {
        let id = r.id;
        let pidfd = Arc::new(r.pidfd);
        let (gone_tx, gone_rx) = watch::channel(false);
        let sb = Arc::new(Sandbox {
            dir: r.dir,
            pidfd: pidfd.clone(),
            client: r.client,
            cgroup: r.cgroup,
            init_pid: r.init_pid,
            resources: r.resources,
            terminating: AtomicBool::new(false),
            gone: gone_rx,
            setup_steps: r.setup_steps,
        });
        lock(&self.inner.sandboxes).insert(id.clone(), sb.clone());
        let watch_fd = client::register(
            pidfd
                .as_fd()
                .try_clone_to_owned()
                .map_err(io_err("pidfd"))?,
            tokio::io::Interest::READABLE,
        )
        .map_err(io_err("watching init"))?;
        let inner = self.inner.clone();
        let weak_sb = Arc::downgrade(&sb);
        tokio::spawn(async move {
            // A pidfd becomes readable when its process exits.
            let _ = watch_fd.readable().await;
            let status = sys::pidfd_reap(&pidfd).ok().flatten();
            let sb = weak_sb.upgrade();
            let cgroup = sb.as_ref().and_then(|s| s.cgroup.clone());
            let expected = sb
                .as_ref()
                .is_none_or(|s| s.terminating.load(Ordering::SeqCst));
            let inner2 = inner.clone();
            let id2 = id.clone();
            let cleanup = tokio::task::spawn_blocking(move || {
                LocalProvider::remove_leftovers(&inner2, &id2, cgroup.as_ref())
            })
            .await;
            match cleanup {
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

    fn base_env(&self, user: ExecUser) -> Vec<(String, String)> {
        let (home, name) = match user {
            ExecUser::User => (USER_HOME, template::USER_NAME),
            ExecUser::Root => ("/root", "root"),
        };
        vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOME".into(), home.into()),
            ("USER".into(), name.into()),
            ("LOGNAME".into(), name.into()),
            ("SHELL".into(), "/bin/bash".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ]
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

/// Appends the tail of init.log (what init printed before failing) to an error.
fn with_log(e: ProviderError, dir: &Path) -> ProviderError {
    let log = std::fs::read(dir.join("init.log")).unwrap_or_default();
    let tail = String::from_utf8_lossy(&log[log.len().saturating_sub(2000)..])
        .trim()
        .to_owned();
    if tail.is_empty() {
        e
    } else {
        ProviderError::Internal(format!("{e} (init said: {tail})"))
    }
}

/// `rm -rf`, also for trees whose directories lost their permissions (overlay's work
/// directory).
fn remove_tree(p: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            fix_perms(p);
            std::fs::remove_dir_all(p)
        }
        Err(e) => Err(e),
    }
}

fn fix_perms(p: &Path) {
    if let Ok(m) = p.symlink_metadata()
        && m.is_dir()
    {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                fix_perms(&e.path());
            }
        }
    }
}

/// Bytes a directory tree holds on disk.
fn disk_usage(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = p.symlink_metadata() else {
        return 0;
    };
    let mut total = m.blocks() * 512;
    if m.is_dir()
        && let Ok(rd) = std::fs::read_dir(p)
    {
        for e in rd.flatten() {
            total += disk_usage(&e.path());
        }
    }
    total
}

/// Captured output of one stream.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, chunk: &[u8], keep: bool) {
        if !keep {
            return;
        }
        let room = OUTPUT_CAP_BYTES.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// Reads a pipe until end of file, or until the process has exited and the pipe holds
/// nothing more (a background child may keep it open forever).
async fn read_stream(
    fd: OwnedFd,
    stream: Stream,
    sink: OutputSink,
    keep: bool,
    mut exited: watch::Receiver<bool>,
) -> Capture {
    let mut cap = Capture::default();
    let afd = match client::async_socket(fd) {
        Ok(a) => a,
        Err(_) => return cap,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut read_now = |afd: &AsyncFd<OwnedFd>, cap: &mut Capture| -> io::Result<bool> {
        // true = end of file
        loop {
            match nix::unistd::read(afd.get_ref(), &mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    sink(stream, &buf[..n]);
                    cap.push(&buf[..n], keep);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    };
    loop {
        tokio::select! {
            guard = afd.readable() => {
                let Ok(mut guard) = guard else { return cap };
                match read_now(&afd, &mut cap) {
                    Ok(true) | Err(_) => return cap,
                    Ok(false) => guard.clear_ready(),
                }
            }
            changed = exited.changed() => {
                if changed.is_err() || *exited.borrow() {
                    let _ = read_now(&afd, &mut cap);
                    return cap;
                }
            }
        }
    }
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
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

    fn templates(&self) -> Vec<String> {
        self.inner.templates.keys().cloned().collect()
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
        let tpl = self
            .inner
            .templates
            .get(&spec.template)
            .cloned()
            .ok_or_else(|| {
                ProviderError::Invalid(format!("template: unknown template `{}`", spec.template))
            })?;
        let t0 = std::time::Instant::now();
        let dir = match self.prepare_dirs(spec, &tpl) {
            Ok(d) => d,
            Err(e) => {
                let _ = Self::remove_leftovers(&self.inner, &spec.id, None);
                return Err(ProviderError::io(
                    format!("preparing the files of sandbox {}", spec.id),
                    e,
                ));
            }
        };
        let t1 = std::time::Instant::now();
        let cgroup = match &self.inner.cgroups {
            Ok(c) => {
                let limits = CgroupLimits {
                    memory_bytes: spec.resources.memory_mb * 1024 * 1024,
                    cpu_quota: Some(spec.resources.cpu_count),
                    pids_max: spec.resources.pids_max,
                };
                match c.create(spec.id.as_str(), &limits) {
                    Ok(cg) => Some(cg),
                    Err(e) => {
                        let _ = Self::remove_leftovers(&self.inner, &spec.id, None);
                        return Err(ProviderError::Internal(format!("creating the cgroup: {e}")));
                    }
                }
            }
            Err(_) => None,
        };
        let t2 = std::time::Instant::now();
        let (pidfd, init_pid, client, steps) =
            match self.start_init(spec, &tpl, &dir, cgroup.as_ref()).await {
                Ok(x) => x,
                Err(e) => {
                    let inner = self.inner.clone();
                    let id = spec.id.clone();
                    let cg = cgroup.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        Self::remove_leftovers(&inner, &id, cg.as_ref())
                    })
                    .await;
                    return Err(e);
                }
            };
        let t3 = std::time::Instant::now();
        let us = |d: Duration| d.as_micros() as u64;
        let mut timings = vec![
            ("host: files".to_owned(), us(t1 - t0)),
            ("host: cgroup".to_owned(), us(t2 - t1)),
        ];
        timings.extend(steps);
        timings.push(("total".to_owned(), us(t3 - t0)));
        tracing::debug!(sandbox = %spec.id, ?timings, "sandbox created");
        let start_time = sys::process_start_time(init_pid).unwrap_or(0);
        self.register(Registration {
            id: spec.id.clone(),
            dir,
            pidfd,
            client,
            cgroup,
            init_pid,
            resources: spec.resources.clone(),
            setup_steps: timings,
        })?;
        Ok(serde_json::to_value(Runtime {
            init_pid,
            init_start_time: start_time,
        })
        .expect("plain struct serialises"))
    }

    async fn exec(
        &self,
        id: &SandboxId,
        req: &ExecRequest,
        sink: OutputSink,
    ) -> Result<ExecOutcome, ProviderError> {
        let sb = self.get(id)?;
        let creds = match (req.user, &self.inner.ids) {
            (ExecUser::User, _) => Creds {
                uid: USER_UID,
                gid: USER_UID,
            },
            (ExecUser::Root, IdMode::Rootless { .. }) => {
                return Err(ProviderError::Precondition(
                    "user: root is not available in a rootless sandbox (no id range to map)".into(),
                ));
            }
            (ExecUser::Root, IdMode::Mapped { .. }) => Creds { uid: 0, gid: 0 },
        };
        // The manager has merged the sandbox's own variables into `req.env`.
        let mut env: BTreeMap<String, String> = self.base_env(req.user).into_iter().collect();
        env.extend(req.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let cwd = req.cwd.clone().unwrap_or_else(|| {
            if req.user == ExecUser::Root {
                "/root".into()
            } else {
                USER_HOME.into()
            }
        });
        let (out_r, out_w) = pipe_pair().map_err(io_err("pipe"))?;
        let (err_r, err_w) = pipe_pair().map_err(io_err("pipe"))?;
        let stdin = match &req.stdin {
            Some(data) => {
                let (r, w) = pipe_pair().map_err(io_err("pipe"))?;
                Some((r, w, data.clone()))
            }
            None => None,
        };
        let oom_before = sb
            .cgroup
            .as_ref()
            .and_then(|c| c.stats().ok())
            .map_or(0, |s| s.oom_kills);
        let exec_id = self.inner.exec_seq.fetch_add(1, Ordering::Relaxed);
        let msg = ToInit::Exec {
            id: exec_id,
            argv: req.argv.clone(),
            env: env.into_iter().collect(),
            cwd,
            creds,
            stdin: stdin.is_some(),
        };
        let mut fds: Vec<&OwnedFd> = vec![&out_w, &err_w];
        if let Some((r, _, _)) = &stdin {
            fds.push(r);
        }
        let mut events = sb
            .client
            .exec(exec_id, &msg, &fds)
            .await
            .map_err(|_| ProviderError::NotRunning(id.clone()))?;
        drop(fds);
        drop(out_w);
        drop(err_w);
        let stdin_writer = stdin.map(|(r, w, data)| {
            drop(r);
            tokio::spawn(async move {
                if let Ok(tx) = tokio::net::unix::pipe::Sender::from_owned_fd(w) {
                    use tokio::io::AsyncWriteExt;
                    let mut tx = tx;
                    let _ = tx.write_all(&data).await;
                }
            })
        });
        let pid = match events.recv().await {
            Some(ExecEvent::Started(pid)) => pid,
            Some(ExecEvent::StartFailed(e)) => return Err(ProviderError::Invalid(e)),
            Some(ExecEvent::Exited { .. }) | None => {
                return Err(ProviderError::NotRunning(id.clone()));
            }
        };
        let (exit_tx, exit_rx) = watch::channel(false);
        let keep = req.capture_output;
        let deadline = tokio::time::Instant::now() + req.timeout;
        let wait = async {
            let mut timed_out = false;
            let ended = loop {
                let ev = if timed_out {
                    tokio::time::timeout(Duration::from_secs(10), events.recv())
                        .await
                        .ok()
                        .flatten()
                } else {
                    match tokio::time::timeout_at(deadline, events.recv()).await {
                        Ok(ev) => ev,
                        Err(_) => {
                            timed_out = true;
                            let _ = sb
                                .client
                                .send(&ToInit::Signal {
                                    id: exec_id,
                                    signal: libc::SIGKILL,
                                })
                                .await;
                            continue;
                        }
                    }
                };
                match ev {
                    Some(ExecEvent::Exited { code, signal }) => break Some((code, signal)),
                    Some(_) => continue,
                    None => break None,
                }
            };
            let _ = exit_tx.send(true);
            (ended, timed_out)
        };
        let (out, err, (ended, timed_out)) = tokio::join!(
            read_stream(out_r, Stream::Stdout, sink.clone(), keep, exit_rx.clone()),
            read_stream(err_r, Stream::Stderr, sink, keep, exit_rx),
            wait
        );
        if let Some(w) = stdin_writer {
            w.abort();
        }
        // No exit status means init went away: the whole sandbox ended, and the
        // process was killed with it.
        let sandbox_ended = ended.is_none();
        let (exit_code, signal) = ended.unwrap_or((None, Some(libc::SIGKILL)));
        let oom_after = sb
            .cgroup
            .as_ref()
            .and_then(|c| c.stats().ok())
            .map_or(0, |s| s.oom_kills);
        Ok(ExecOutcome {
            pid: i64::from(pid),
            exit_code,
            signal,
            timed_out,
            sandbox_ended,
            // Killed by SIGKILL while the sandbox's OOM counter moved; through a shell
            // the kill shows as exit status 128 + 9.
            oom_killed: (signal == Some(libc::SIGKILL) || exit_code == Some(128 + libc::SIGKILL))
                && oom_after > oom_before,
            stdout: out.bytes,
            stderr: err.bytes,
            stdout_truncated: out.truncated,
            stderr_truncated: err.truncated,
        })
    }

    async fn terminate(&self, id: &SandboxId, how: Termination) -> Result<(), ProviderError> {
        let Ok(sb) = self.get(id) else {
            // Not running: make sure nothing of it is left.
            let inner = self.inner.clone();
            let id = id.clone();
            return tokio::task::spawn_blocking(move || Self::remove_leftovers(&inner, &id, None))
                .await
                .map_err(|e| ProviderError::Internal(e.to_string()))?;
        };
        sb.terminating.store(true, Ordering::SeqCst);
        let mut gone = sb.gone.clone();
        let wait_gone = |gone: &mut watch::Receiver<bool>, within: Duration| {
            let mut gone = gone.clone();
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
            && wait_gone(&mut gone, grace + Duration::from_secs(1)).await
        {
            return Ok(());
        }
        if let Err(e) = sys::pidfd_send_signal(&sb.pidfd, libc::SIGKILL)
            && e.raw_os_error() != Some(libc::ESRCH)
        {
            return Err(ProviderError::io("killing the sandbox init", e));
        }
        if wait_gone(&mut gone, Duration::from_secs(30)).await {
            Ok(())
        } else {
            Err(ProviderError::Internal(format!(
                "sandbox {id} did not end within 30 s of SIGKILL"
            )))
        }
    }

    async fn usage(&self, id: &SandboxId) -> Result<ResourceUsage, ProviderError> {
        let sb = self.get(id)?;
        let dir = sb.dir.clone();
        let cgroup = sb.cgroup.clone();
        let resources = sb.resources.clone();
        tokio::task::spawn_blocking(move || {
            let disk = disk_usage(&dir.join("upper"));
            let mut u = ResourceUsage {
                disk_bytes: disk,
                memory_limit_bytes: resources.memory_mb * 1024 * 1024,
                pids_max: resources.pids_max,
                ..ResourceUsage::default()
            };
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
        let s = cg
            .stats()
            .map_err(|e| ProviderError::Internal(format!("reading cgroup statistics: {e}")))?;
        Ok(Counters {
            cpu_usage_ns: s.cpu_usage_ns,
            oom_kills: s.oom_kills,
            pids_limit_hits: s.pids_limit_hits,
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

    async fn adopt(
        &self,
        id: &SandboxId,
        runtime: &serde_json::Value,
    ) -> Result<Adoption, ProviderError> {
        let cleanup = |detail: String| {
            let inner = self.inner.clone();
            let id = id.clone();
            async move {
                tokio::task::spawn_blocking(move || Self::remove_leftovers(&inner, &id, None))
                    .await
                    .map_err(|e| ProviderError::Internal(e.to_string()))??;
                Ok(Adoption::Gone { detail })
            }
        };
        let Ok(rt) = serde_json::from_value::<Runtime>(runtime.clone()) else {
            return cleanup("its creation never finished; removed what was made".into()).await;
        };
        let alive = sys::process_start_time(rt.init_pid).is_ok_and(|t| t == rt.init_start_time);
        if !alive {
            return cleanup("its init had exited".into()).await;
        }
        let Ok(pidfd) = sys::pidfd_open(rt.init_pid) else {
            return cleanup("its init had exited".into()).await;
        };
        // The pid could have been reused between the check and pidfd_open: check again
        // now that the pidfd pins the process.
        if !sys::process_start_time(rt.init_pid).is_ok_and(|t| t == rt.init_start_time) {
            return cleanup("its init had exited".into()).await;
        }
        let connected = async {
            let fd = socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            let addr = UnixAddr::new(&self.socket_path(id))?;
            connect(fd.as_raw_fd(), &addr)?;
            Ok::<_, nix::Error>(fd)
        }
        .await;
        let client = match connected
            .map_err(io::Error::from)
            .and_then(client::async_socket)
        {
            Ok(afd) => InitClient::start(afd),
            Err(e) => {
                let _ = sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
                return cleanup(format!("its init could not be reached ({e}); killed it")).await;
            }
        };
        if let Err(e) = client.ping(Duration::from_secs(2)).await {
            let _ = sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
            return cleanup(format!("its init did not answer ({e}); killed it")).await;
        }
        let cgroup = self
            .inner
            .cgroups
            .as_ref()
            .ok()
            .and_then(|c| c.open(id.as_str()));
        let resources = quantbox_sandbox::Resources {
            memory_mb: cgroup
                .as_ref()
                .and_then(|c| c.stats().ok())
                .map_or(0, |s| s.memory_limit_bytes / (1024 * 1024)),
            cpu_count: 0.0,
            pids_max: cgroup
                .as_ref()
                .and_then(|c| c.stats().ok())
                .map_or(0, |s| s.pids_max),
        };
        self.register(Registration {
            id: id.clone(),
            dir: self.sandbox_dir(id),
            pidfd,
            client,
            cgroup,
            init_pid: rt.init_pid,
            resources,
            setup_steps: Vec::new(),
        })?;
        Ok(Adoption::Adopted)
    }

    fn watch_exits(&self, tx: mpsc::UnboundedSender<UnexpectedExit>) {
        let _ = self.inner.exits.set(tx);
    }
}
