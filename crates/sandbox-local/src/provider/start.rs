//! The cold path: make a slot (writable layers on disk, a cgroup, a control socket) and
//! start its init by re-executing the quantbox binary. Whatever fails, nothing of the
//! slot is left.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket, socketpair,
};
use quantbox_sandbox::{ProviderError, Timestamp};

use super::{Inner, Instance, cleanup, io_err, mkdir_private};
use crate::cgroup::{Cgroup, CgroupLimits};
use crate::client::{self, InitClient};
use crate::init::INIT_ARG;
use crate::protocol::{FromInit, IdMode, InitConfig, ToInit};
use crate::sys;
use crate::template::Template;

/// How long init may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The writable layers: one upper and work directory for the root, and one for /usr.
fn make_dirs(inner: &Inner, dir: &Path) -> io::Result<()> {
    mkdir_private(dir)?;
    for d in ["upper-root", "upper-usr", "work-root", "work-usr"] {
        std::fs::create_dir(dir.join(d))?;
    }
    for d in ["upper-root", "upper-usr"] {
        let p = dir.join(d);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        // The merged root and /usr take the owner of their upper directory: the
        // sandbox's root, like the layers below.
        if let IdMode::Mapped { host_base, .. } = inner.ids {
            std::os::unix::fs::chown(&p, Some(host_base), Some(host_base))?;
        }
    }
    Ok(())
}

/// Makes a slot for `tpl` under `limits` and starts its init.
pub(super) async fn prepare(
    inner: &Arc<Inner>,
    slot: String,
    tpl: &Template,
    limits: &CgroupLimits,
    deadline: Timestamp,
) -> Result<Instance, ProviderError> {
    let dir = inner.slot_dir(&slot);
    let t0 = Instant::now();
    if let Err(e) = make_dirs(inner, &dir) {
        let _ = cleanup::remove_slot(inner, &slot, None);
        return Err(ProviderError::io(
            format!("preparing the files of slot {slot}"),
            e,
        ));
    }
    let t1 = Instant::now();
    let cgroup = match &inner.cgroups {
        Ok(c) => match c.create(&slot, limits) {
            Ok(cg) => Some(cg),
            Err(e) => {
                let _ = cleanup::remove_slot(inner, &slot, None);
                return Err(ProviderError::Internal(format!("creating the cgroup: {e}")));
            }
        },
        Err(_) => None,
    };
    let t2 = Instant::now();
    match start_init(inner, &slot, tpl, &dir, cgroup.as_ref(), deadline).await {
        Ok((pidfd, init_pid, client, steps)) => {
            let us = |d: Duration| d.as_micros() as u64;
            let mut setup_steps = vec![
                ("host: files".to_owned(), us(t1 - t0)),
                ("host: cgroup".to_owned(), us(t2 - t1)),
            ];
            setup_steps.extend(steps);
            setup_steps.push(("total".to_owned(), us(t0.elapsed())));
            tracing::debug!(slot, ?setup_steps, "slot started");
            Ok(Instance {
                slot,
                template: tpl.name.clone(),
                dir,
                pidfd,
                init_pid,
                client,
                cgroup,
                setup_steps,
            })
        }
        Err(e) => {
            let e = with_log(e, &dir);
            let inner = inner.clone();
            let _ = tokio::task::spawn_blocking(move || {
                cleanup::remove_slot(&inner, &slot, cgroup.as_ref())
            })
            .await;
            Err(e)
        }
    }
}

/// Spawns the helper, sends it the config and waits until init is ready.
async fn start_init(
    inner: &Inner,
    slot: &str,
    tpl: &Template,
    dir: &Path,
    cgroup: Option<&Cgroup>,
    deadline: Timestamp,
) -> Result<(OwnedFd, i32, InitClient, Vec<(String, u64)>), ProviderError> {
    let sock_path = inner.socket_path(slot);
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
    let spawn_ns = sys::monotonic_ns();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&inner.cfg.init_exe)
        .arg(INIT_ARG)
        .env_clear()
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::from(log))
        .stderr(std::process::Stdio::from(log2))
        .spawn()
        .map_err(io_err(format!("starting {}", inner.cfg.init_exe.display())))?;
    let afd = client::async_socket(ours).map_err(io_err("control socket"))?;
    let cfg = InitConfig {
        slot: slot.to_owned(),
        hostname: slot.to_owned(),
        scratch: inner.cfg.data_dir.join("scratch"),
        root_layers: tpl.root_layers(),
        usr_layers: tpl.usr_layers(),
        upper_root: dir.join("upper-root"),
        work_root: dir.join("work-root"),
        upper_usr: dir.join("upper-usr"),
        work_usr: dir.join("work-usr"),
        ids: inner.ids.clone(),
        cgroup_procs: cgroup.map(|c| c.procs_files()).unwrap_or_default(),
        tmp_size_bytes: inner.cfg.tmp_size_mb << 20,
        shm_size_bytes: inner.cfg.shm_size_mb << 20,
        deadline_unix_ms: deadline.unix_ms(),
        deadline_grace_ms: inner.cfg.deadline_grace.as_millis() as i64,
        nofile_limit: inner.cfg.nofile_limit,
        tools_exe: inner.tools_exe.clone(),
        gpu_devices: inner.gpu_devices.clone(),
    };
    // init's pidfd once the helper has reported it, so that a failure or a timeout can
    // still kill and reap it (init is our child: unreaped, it would stay a zombie).
    let init = std::sync::Mutex::new(None::<(OwnedFd, i32)>);
    let handshake = async {
        client::send_async(
            &afd,
            &ToInit::Config(Box::new(cfg)),
            &[listener.as_raw_fd()],
        )
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                ProviderError::Internal("the sandbox init exited during setup".into())
            }
            _ => ProviderError::io("sending the sandbox config", e),
        })?;
        drop(listener);
        let mut buf = vec![0u8; 64 * 1024];
        // Spawned (from the helper) and Ready or SetupFailed (from init) come over the
        // same socket from two processes: under load either may arrive first.
        let mut helper_steps = Vec::new();
        let mut ready: Option<Vec<(String, u64)>> = None;
        let mut failed: Option<String> = None;
        loop {
            let have_pid = super::lock(&init).is_some();
            if have_pid && let Some(init_steps) = ready.take() {
                let mut steps = helper_steps;
                steps.extend(init_steps);
                return Ok(steps);
            }
            if have_pid && let Some(f) = failed.take() {
                return Err(ProviderError::Internal(format!(
                    "setting up the sandbox failed at {f}"
                )));
            }
            match client::recv_async(&afd, &mut buf).await {
                Ok(Some(FromInit::Spawned {
                    init_pid,
                    started_ns,
                    steps: helper,
                })) => {
                    // init is our child (CLONE_PARENT) and stays a zombie until we reap
                    // it, so its pid cannot be reused before this.
                    let fd = sys::pidfd_open(init_pid).map_err(io_err("pidfd of init"))?;
                    *super::lock(&init) = Some((fd, init_pid));
                    helper_steps.push((
                        "host: start helper".to_owned(),
                        started.elapsed().as_micros() as u64,
                    ));
                    helper_steps.push((
                        "helper: exec".to_owned(),
                        started_ns.saturating_sub(spawn_ns) / 1000,
                    ));
                    helper_steps.extend(helper);
                }
                Ok(Some(FromInit::Ready { steps })) => ready = Some(steps),
                Ok(Some(FromInit::SetupFailed { step, error })) => {
                    failed = Some(format!("{step}: {error}"));
                }
                Ok(Some(_)) => {}
                Err(e) if e.kind() != std::io::ErrorKind::ConnectionReset => {
                    return Err(ProviderError::io("reading from the sandbox init", e));
                }
                // End of stream; a peer that exits with our message unread resets the
                // connection instead.
                Ok(None) | Err(_) => {
                    return Err(ProviderError::Internal(match failed {
                        Some(f) => format!("setting up the sandbox failed at {f}"),
                        None => "the sandbox init exited during setup".into(),
                    }));
                }
            }
        }
    };
    let res = tokio::time::timeout(READY_TIMEOUT, handshake).await;
    // The outer helper exits right after cloning init; reap it in the background.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let init = super::lock(&init).take();
    match (res, init) {
        (Ok(Ok(steps)), Some((pidfd, pid))) => Ok((pidfd, pid, InitClient::start(afd), steps)),
        (res, init) => {
            if let Some((pidfd, _)) = init {
                let _ = sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
                reap_later(pidfd);
            }
            Err(match res {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => ProviderError::Internal("init was ready but never reported".into()),
                Err(_) => ProviderError::Internal(format!(
                    "the sandbox init did not become ready within {} s",
                    READY_TIMEOUT.as_secs()
                )),
            })
        }
    }
}

/// Reaps an init of ours once it has exited (it was killed), in the background.
pub(super) fn reap_later(pidfd: OwnedFd) {
    tokio::spawn(async move {
        if let Ok(afd) = client::register(pidfd, tokio::io::Interest::READABLE) {
            let _ = tokio::time::timeout(Duration::from_secs(30), afd.readable()).await;
            let _ = sys::pidfd_reap(afd.get_ref());
        }
    });
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
