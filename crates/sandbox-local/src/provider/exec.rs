//! Running a process in a sandbox: stdio pipes passed to init, output read (and capped)
//! as it comes, the timeout enforced by asking init to kill the process group.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use quantbox_sandbox::{
    ExecCommand, ExecOutcome, ExecRequest, ExecUser, OUTPUT_CAP_BYTES, OutputSink, ProviderError,
    SandboxId, Stream,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::{Inner, Sandbox, io_err};
use crate::client::{self, ExecEvent};
use crate::protocol::{Creds, IdMode, ToInit};
use crate::template::{self, USER_HOME, USER_UID};

/// The environment every process starts with (the sandbox's and the request's
/// variables are laid over it).
fn base_env(user: ExecUser) -> Vec<(String, String)> {
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

/// Runs `req` in sandbox `sb` and waits for it (or its timeout).
pub(super) async fn run(
    inner: &Inner,
    id: &SandboxId,
    sb: &Sandbox,
    req: &ExecRequest,
    sink: OutputSink,
) -> Result<ExecOutcome, ProviderError> {
    let creds = match (req.user, &inner.ids) {
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
    let mut env: BTreeMap<String, String> = base_env(req.user).into_iter().collect();
    env.extend(req.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let cwd = req.cwd.clone().unwrap_or_else(|| {
        if req.user == ExecUser::Root {
            "/root".into()
        } else {
            USER_HOME.into()
        }
    });
    // On a terminal, the terminal is stdin, stdout and stderr; its master side is read
    // as stdout, written as input, and resized.
    let term = match req.control.as_ref().and_then(|c| c.pty) {
        Some((cols, rows)) => Some(open_pty(cols, rows).map_err(io_err("opening a terminal"))?),
        None => None,
    };
    let (out_r, out_w) = match &term {
        Some(t) => (
            t.master.try_clone().map_err(io_err("dup"))?,
            t.slave.try_clone().map_err(io_err("dup"))?,
        ),
        None => pipe_pair().map_err(io_err("pipe"))?,
    };
    let (err_r, err_w) = pipe_pair().map_err(io_err("pipe"))?;
    // Input comes whole (`req.stdin`) or piece by piece (`control`), or not at all.
    let live_stdin = req.stdin.is_none()
        && req
            .control
            .as_ref()
            .is_some_and(|c| c.stdin || c.pty.is_some());
    let (input_tx, input_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    if let Some(data) = &req.stdin {
        let _ = input_tx.send(data.clone());
    }
    let mut input_tx = live_stdin.then_some(input_tx);
    // (the process's end, ours, the input): for a terminal, both ends of its stdin are
    // the terminal's.
    let stdin = match &term {
        Some(t) => Some((
            t.slave.try_clone().map_err(io_err("dup"))?,
            t.master.try_clone().map_err(io_err("dup"))?,
            input_rx,
        )),
        None if req.stdin.is_some() || live_stdin => {
            let (r, w) = pipe_pair().map_err(io_err("pipe"))?;
            Some((r, w, input_rx))
        }
        None => None,
    };
    // What resizes the terminal.
    let resize = match &term {
        Some(t) => Some(t.master.try_clone().map_err(io_err("dup"))?),
        None => None,
    };
    let mut commands = req.control.as_ref().and_then(|c| c.take_commands());
    let oom_kills = || {
        sb.cgroup
            .as_ref()
            .and_then(|c| c.oom_kills().ok())
            .unwrap_or(0)
    };
    let oom_before = oom_kills();
    let exec_id = inner.exec_seq.fetch_add(1, Ordering::Relaxed);
    let msg = ToInit::Exec {
        id: exec_id,
        argv: req.argv.clone(),
        env: env.into_iter().collect(),
        cwd,
        creds,
        stdin: stdin.is_some(),
        tty: term.is_some(),
    };
    // A terminal's process writes its errors to the terminal too; the stderr pipe then
    // stays empty.
    let err_w_for_init = if term.is_some() { &out_w } else { &err_w };
    let mut fds: Vec<&OwnedFd> = vec![&out_w, err_w_for_init];
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
    // Only the process holds the terminal's side now: its end shows as EOF/EIO on ours.
    drop(term);
    let stdin_writer = stdin.map(|(r, w, mut input)| {
        drop(r);
        tokio::spawn(async move {
            let Ok(w) = client::async_socket(w) else {
                return;
            };
            // Until the input ends (its sender dropped) or the process stops reading.
            while let Some(data) = input.recv().await {
                if write_all(&w, &data).await.is_err() {
                    break;
                }
            }
        })
    });
    let pid = match events.recv().await {
        Some(ExecEvent::Started(pid)) => {
            if let Some(c) = &req.control {
                (c.on_start)(i64::from(pid));
            }
            pid
        }
        Some(ExecEvent::StartFailed(e)) => return Err(ProviderError::Invalid(e)),
        Some(ExecEvent::Exited { .. }) | None => {
            return Err(ProviderError::NotRunning(id.clone()));
        }
    };
    let (exit_tx, exit_rx) = watch::channel(false);
    let keep = req.capture_output;
    let deadline = tokio::time::Instant::now() + req.timeout;
    let mut cancel = req.cancel.clone();
    let wait = async {
        let mut timed_out = false;
        let mut cancelled = false;
        let ended = loop {
            let ev = if timed_out || cancelled {
                tokio::time::timeout(Duration::from_secs(10), events.recv())
                    .await
                    .ok()
                    .flatten()
            } else {
                let cancelled_now = async {
                    match &mut cancel {
                        Some(c) => {
                            // A dropped sender is no request to cancel.
                            if c.wait_for(|v| *v).await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending().await,
                    }
                };
                let command = async {
                    match commands.as_mut() {
                        Some(c) => c.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let got = tokio::select! {
                    cmd = command => {
                        match cmd {
                            Some(ExecCommand::Input(data)) => {
                                if let Some(tx) = &input_tx {
                                    let _ = tx.send(data);
                                }
                            }
                            Some(ExecCommand::CloseInput) => input_tx = None,
                            Some(ExecCommand::Signal(signal)) => {
                                let _ = sb
                                    .client
                                    .send(&ToInit::Signal { id: exec_id, signal })
                                    .await;
                            }
                            Some(ExecCommand::Resize(cols, rows)) => {
                                if let Some(fd) = &resize {
                                    let _ = crate::sys::set_window_size(fd.as_raw_fd(), cols, rows);
                                }
                            }
                            // The caller is gone: the process runs on to its end.
                            None => commands = None,
                        }
                        continue;
                    }
                    r = tokio::time::timeout_at(deadline, events.recv()) => match r {
                        Ok(ev) => Some(ev),
                        Err(_) => {
                            timed_out = true;
                            None
                        }
                    },
                    () = cancelled_now => {
                        cancelled = true;
                        None
                    }
                };
                match got {
                    Some(ev) => ev,
                    None => {
                        // Out of time or cancelled: kill the process group, then wait
                        // for its exit a little longer.
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
        (ended, timed_out, cancelled)
    };
    let (out, err, (ended, timed_out, cancelled)) = tokio::join!(
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
    let oom_after = oom_kills();
    Ok(ExecOutcome {
        pid: i64::from(pid),
        exit_code,
        signal,
        timed_out,
        cancelled,
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

/// A new terminal (close-on-exec on both sides, from the start: the server spawns
/// helpers from other threads) of `cols` × `rows`.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn open_pty(cols: u16, rows: u16) -> io::Result<Pty> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let master = OwnedFd::from(master);
    crate::sys::set_window_size(master.as_raw_fd(), cols, rows)?;
    Ok(Pty { master, slave })
}

/// Writes all of `data` to a non-blocking fd registered with tokio.
async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| Ok(nix::unistd::write(inner.get_ref(), data)?)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}
