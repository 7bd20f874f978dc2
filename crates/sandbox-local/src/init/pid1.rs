//! Init's life after setup: a single-threaded poll loop over the control connection,
//! the listening socket (a restarted server reconnects through it) and a signalfd for
//! SIGCHLD. It starts commands (fork is safe here: this process has one thread), reaps
//! every zombie in the sandbox, and reports the exits of the commands it started.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::Pid;

use crate::protocol::{self, Creds, FromInit, IdMode, InitConfig, ToInit};
use crate::seccomp::Filter;
use crate::sys::{self, Forked, WaitStatus};

use super::{StepError, Timings, rootfs};

/// A command's stdio as received from the server.
struct Stdio {
    stdout: OwnedFd,
    stderr: OwnedFd,
    stdin: Option<OwnedFd>,
    /// stdin is a terminal to make the controlling one.
    tty: bool,
}

struct Init {
    conn: Option<OwnedFd>,
    listen: OwnedFd,
    sigfd: SignalFd,
    filter: Filter,
    rootless: bool,
    nofile: u64,
    /// Execution id → pid of its process (until it is reaped).
    running: HashMap<u64, i32>,
    /// pid → execution id.
    by_pid: HashMap<i32, u64>,
    deadline_ms: i64,
    deadline_grace_ms: i64,
    shutdown_at: Option<Instant>,
    buf: Vec<u8>,
}

pub(super) fn run(cfg: InitConfig, ctl: OwnedFd, listen: OwnedFd, userns: Option<OwnedFd>) -> ! {
    sys::set_name(c"quantbox-init");
    let mut timings = Timings::new();
    let init = match setup(&cfg, ctl, listen, userns, &mut timings) {
        Ok(init) => init,
        Err((ctl, e)) => super::fail(ctl.as_fd(), e),
    };
    if let Some(conn) = &init.conn {
        let _ = protocol::send(
            conn.as_fd(),
            &FromInit::Ready {
                steps: timings.steps,
            },
            &[],
        );
    }
    init.serve()
}

fn setup(
    cfg: &InitConfig,
    ctl: OwnedFd,
    listen: OwnedFd,
    userns: Option<OwnedFd>,
    timings: &mut Timings,
) -> Result<Init, (OwnedFd, StepError)> {
    let r = (|| {
        // Nothing in the sandbox may read init's memory or attach to it.
        sys::set_dumpable(false).map_err(|e| StepError::new("set non-dumpable", e))?;
        rootfs::build(cfg, userns.as_ref(), timings)?;
        nix::unistd::sethostname(&cfg.hostname)
            .map_err(|e| StepError::new("set hostname", e.into()))?;
        sys::loopback_up().map_err(|e| StepError::new("bring up loopback", e))?;
        timings.mark("net");
        if let Some(ns) = &userns {
            // From here on init is root of the sandbox's user namespace only: it can
            // start processes as any sandbox user, and can no longer mount anything.
            sys::setns(ns, libc::CLONE_NEWUSER)
                .map_err(|e| StepError::new("join user namespace", e))?;
            let root = nix::unistd::Uid::from_raw(0);
            let rootg = nix::unistd::Gid::from_raw(0);
            nix::unistd::setresgid(rootg, rootg, rootg)
                .map_err(|e| StepError::new("become sandbox root", e.into()))?;
            nix::unistd::setresuid(root, root, root)
                .map_err(|e| StepError::new("become sandbox root", e.into()))?;
            nix::unistd::setgroups(&[rootg]).map_err(|e| StepError::new("set groups", e.into()))?;
            sys::set_dumpable(false).map_err(|e| StepError::new("set non-dumpable", e))?;
        }
        drop(userns);
        timings.mark("userns");
        let filter = Filter::sandbox();
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(|e| StepError::new("block SIGCHLD", e.into()))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| StepError::new("signalfd", e.into()))?;
        // A vanished server must not kill init.
        sys::ignore_sigpipe();
        timings.mark("signals");
        Ok((filter, sigfd))
    })();
    match r {
        Err(e) => Err((ctl, e)),
        Ok((filter, sigfd)) => Ok(Init {
            conn: Some(ctl),
            listen,
            sigfd,
            filter,
            rootless: matches!(cfg.ids, IdMode::Rootless { .. }),
            nofile: cfg.nofile_limit,
            running: HashMap::new(),
            by_pid: HashMap::new(),
            deadline_ms: cfg.deadline_unix_ms,
            deadline_grace_ms: cfg.deadline_grace_ms,
            shutdown_at: None,
            buf: vec![0u8; protocol::MAX_PACKET],
        }),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Init {
    fn serve(mut self) -> ! {
        loop {
            let backstop = self.deadline_ms.saturating_add(self.deadline_grace_ms);
            let mut wait_ms = backstop.saturating_sub(now_ms()).max(0);
            if let Some(at) = self.shutdown_at {
                wait_ms =
                    wait_ms.min(at.saturating_duration_since(Instant::now()).as_millis() as i64);
            }
            if wait_ms == 0 {
                // A request already waiting (a new deadline after a resume, say) comes
                // first: the deadline may have moved.
                if self.request_waiting() {
                    self.handle_request();
                    continue;
                }
                // The server did not end the sandbox in time (or a graceful shutdown's
                // grace ran out): leaving takes every process with us.
                sys::exit_now(0);
            }
            let timeout =
                PollTimeout::try_from(wait_ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX);
            let (conn_ready, listen_ready, sig_ready) = {
                let mut fds = vec![
                    PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.listen.as_fd(), PollFlags::POLLIN),
                ];
                if let Some(c) = &self.conn {
                    fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => sys::exit_now(1),
                }
                let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                (
                    fds.get(2).is_some_and(ready),
                    ready(&fds[1]),
                    ready(&fds[0]),
                )
            };
            if sig_ready {
                self.reap();
            }
            if listen_ready {
                self.accept();
            }
            if conn_ready {
                self.handle_request();
            }
        }
    }

    /// Whether the control connection has a message waiting.
    fn request_waiting(&self) -> bool {
        let Some(c) = &self.conn else { return false };
        let mut fds = [PollFd::new(c.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// A new connection (a restarted server) replaces the old one. Only processes
    /// outside this pid namespace (whose pid reads as 0 here) may connect.
    fn accept(&mut self) {
        let Ok(fd) = sys::accept(&self.listen) else {
            return;
        };
        match getsockopt(&fd, PeerCredentials) {
            Ok(cred) if cred.pid() == 0 => self.conn = Some(fd),
            _ => drop(fd),
        }
    }

    fn reply(&mut self, msg: &FromInit) {
        if let Some(c) = &self.conn
            && protocol::send(c.as_fd(), msg, &[]).is_err()
        {
            self.conn = None;
        }
    }

    fn handle_request(&mut self) {
        let Some(conn) = &self.conn else { return };
        let msg = match protocol::recv::<ToInit>(conn.as_fd(), &mut self.buf) {
            Ok(Some(m)) => m,
            // The server went away (or sent garbage): wait for the next one.
            Ok(None) | Err(_) => {
                self.conn = None;
                return;
            }
        };
        match msg {
            (
                ToInit::Exec {
                    id,
                    argv,
                    env,
                    cwd,
                    creds,
                    stdin,
                    tty,
                },
                mut fds,
            ) => {
                let stdin_fd = if stdin { fds.pop() } else { None };
                let (Some(stderr), Some(stdout)) = (fds.pop(), fds.pop()) else {
                    self.reply(&FromInit::StartFailed {
                        id,
                        error: "stdio pipes missing".into(),
                    });
                    return;
                };
                let stdio = Stdio {
                    stdout,
                    stderr,
                    stdin: stdin_fd,
                    tty,
                };
                let reply = match self.spawn(&argv, &env, &cwd, creds, stdio) {
                    Ok(pid) => {
                        self.running.insert(id, pid);
                        self.by_pid.insert(pid, id);
                        FromInit::Started { id, pid }
                    }
                    Err(error) => FromInit::StartFailed { id, error },
                };
                self.reply(&reply);
            }
            (ToInit::Signal { id, signal }, _) => {
                if let Some(&pid) = self.running.get(&id) {
                    // The process leads its own group (setsid); the group takes its
                    // children with it.
                    // pid is an unreaped child of ours, so it cannot have been reused.
                    if let Ok(sig) = Signal::try_from(signal) {
                        let _ = nix::sys::signal::killpg(Pid::from_raw(pid), sig);
                        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                    }
                }
            }
            (ToInit::Ping { seq }, _) => self.reply(&FromInit::Pong { seq }),
            (ToInit::SetDeadline { unix_ms }, _) => self.deadline_ms = unix_ms,
            (ToInit::Shutdown { grace_ms }, _) => {
                // kill(-1) from pid 1 signals every other process in the namespace.
                let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGTERM);
                self.shutdown_at = Some(Instant::now() + Duration::from_millis(grace_ms));
                self.reap();
            }
            (ToInit::Config(_), _) => {}
        }
    }

    /// Reaps every exited child (commands and orphans that were reparented to us).
    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        loop {
            match sys::reap_any() {
                Ok(Some((pid, status))) => {
                    if let Some(id) = self.by_pid.remove(&pid) {
                        self.running.remove(&id);
                        let (code, signal) = match status {
                            WaitStatus::Exited(c) => (Some(c), None),
                            WaitStatus::Signaled(s) => (None, Some(s)),
                        };
                        self.reply(&FromInit::Exited { id, code, signal });
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // ECHILD is Ok(None); anything else: nothing more to reap now.
                    break;
                }
            }
        }
        if self.shutdown_at.is_some() && !sys::has_children() {
            sys::exit_now(0);
        }
    }

    /// Forks and execs one command. Returns its pid, or why it could not start.
    fn spawn(
        &mut self,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
        creds: Creds,
        stdio: Stdio,
    ) -> Result<i32, String> {
        let prepared = Prepared::new(argv, env, cwd)?;
        let (err_rx, err_tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        // SAFETY: init is single-threaded.
        match unsafe { sys::clone_process(0) } {
            Err(e) => Err(format!("fork: {e}")),
            Ok(Forked::Child) => {
                drop(err_rx);
                let (stage, err) = self.child(&prepared, creds, &stdio, err_tx.as_raw_fd());
                let mut msg = [0u8; 64];
                msg[..4].copy_from_slice(&err.raw_os_error().unwrap_or(0).to_le_bytes());
                let s = stage.as_bytes();
                let n = s.len().min(60);
                msg[4..4 + n].copy_from_slice(&s[..n]);
                let _ = (&std::fs::File::from(err_tx)).write(&msg[..4 + n]);
                sys::exit_now(127)
            }
            Ok(Forked::Parent(pid)) => {
                drop(err_tx);
                drop(stdio);
                let mut msg = Vec::new();
                let _ = std::fs::File::from(err_rx).read_to_end(&mut msg);
                if msg.len() < 4 {
                    return Ok(pid);
                }
                let errno = i32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
                let stage = String::from_utf8_lossy(&msg[4..]).into_owned();
                let err = io::Error::from_raw_os_error(errno);
                Err(match stage.as_str() {
                    "exec" => format!(
                        "cannot execute `{}`: {err}{}",
                        argv[0],
                        if argv[0].contains('/') {
                            String::new()
                        } else {
                            format!(" (searched PATH={})", prepared.path_var)
                        }
                    ),
                    "chdir" => format!("cannot change directory to `{cwd}`: {err}"),
                    _ => format!("{stage}: {err}"),
                })
            }
        }
    }

    /// In the forked child: set up and exec. Returns only on failure.
    fn child(
        &self,
        p: &Prepared,
        creds: Creds,
        stdio: &Stdio,
        err_fd: RawFd,
    ) -> (&'static str, io::Error) {
        sys::reset_signals();
        if let Err(e) = nix::unistd::setsid() {
            return ("setsid", e.into());
        }
        let stdin_fd = match &stdio.stdin {
            Some(fd) => fd.as_raw_fd(),
            None => match nix::fcntl::open(
                c"/dev/null",
                nix::fcntl::OFlag::O_RDONLY,
                nix::sys::stat::Mode::empty(),
            ) {
                Ok(fd) => {
                    let raw = fd.as_raw_fd();
                    std::mem::forget(fd);
                    raw
                }
                Err(e) => return ("open /dev/null", e.into()),
            },
        };
        for (from, to) in [
            (stdin_fd, 0),
            (stdio.stdout.as_raw_fd(), 1),
            (stdio.stderr.as_raw_fd(), 2),
        ] {
            if let Err(e) = sys::dup2(from, to) {
                return ("dup2", e);
            }
        }
        // A new session has no controlling terminal: take the one on stdin.
        if stdio.tty
            && let Err(e) = sys::set_controlling_tty(0)
        {
            return ("controlling terminal", e);
        }
        // Close everything else but the error pipe (close-on-exec: exec success closes it).
        sys::close_range(3, (err_fd - 1) as u32);
        sys::close_range((err_fd + 1) as u32, u32::MAX);
        use nix::sys::resource::{Resource, setrlimit};
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, self.nofile, self.nofile)
            .and_then(|()| setrlimit(Resource::RLIMIT_CORE, 0, 0))
        {
            return ("setrlimit", e.into());
        }
        // The user gets no capabilities at all; root keeps a small set, valid only in the
        // sandbox's user namespace.
        let caps: &[u32] = if creds.uid == 0 {
            sys::SANDBOX_ROOT_CAPS
        } else {
            &[]
        };
        if let Err(e) = sys::restrict_bounding_set(caps) {
            return ("drop capabilities", e);
        }
        let gid = nix::unistd::Gid::from_raw(creds.gid);
        let uid = nix::unistd::Uid::from_raw(creds.uid);
        if !self.rootless
            && let Err(e) = nix::unistd::setgroups(&[gid])
        {
            return ("setgroups", e.into());
        }
        if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
            return ("setgid", e.into());
        }
        if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
            return ("setuid", e.into());
        }
        // setuid away from root clears capabilities, but a rootless init already had
        // uid 1000 (nothing changed), and root keeps its own: set them explicitly.
        if let Err(e) = sys::set_capabilities(caps) {
            return ("drop capabilities", e);
        }
        if let Err(e) = nix::unistd::chdir(p.cwd.as_c_str()) {
            return ("chdir", e.into());
        }
        if let Err(e) = sys::set_no_new_privs() {
            return ("no_new_privs", e);
        }
        if let Err(e) = self.filter.install() {
            return ("seccomp", e);
        }
        let mut last = io::Error::from_raw_os_error(libc::ENOENT);
        let mut saw_eacces = false;
        for cand in &p.candidates {
            let e = sys::execve(cand, &p.argv_ptrs, &p.env_ptrs);
            match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => {}
                Some(libc::EACCES) => saw_eacces = true,
                _ => return ("exec", e),
            }
            last = e;
        }
        if saw_eacces {
            last = io::Error::from_raw_os_error(libc::EACCES);
        }
        ("exec", last)
    }
}

/// Everything the child needs, allocated before the fork.
struct Prepared {
    _argv: Vec<CString>,
    _env: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    env_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    candidates: Vec<CString>,
    path_var: String,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Prepared {
    fn new(argv: &[String], env: &[(String, String)], cwd: &str) -> Result<Self, String> {
        let nul = |what: &str| format!("{what} contains a NUL byte");
        if argv.is_empty() || argv[0].is_empty() {
            return Err("empty command".into());
        }
        let argv_c: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| nul("an argument")))
            .collect::<Result<_, _>>()?;
        let env_c: Vec<CString> = env
            .iter()
            .map(|(k, v)| {
                CString::new(format!("{k}={v}")).map_err(|_| nul("an environment variable"))
            })
            .collect::<Result<_, _>>()?;
        let path_var = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH.to_owned(), |(_, v)| v.clone());
        let candidates = if argv[0].contains('/') {
            vec![argv_c[0].clone()]
        } else {
            path_var
                .split(':')
                .map(|d| if d.is_empty() { "." } else { d })
                .filter_map(|d| {
                    let mut p = std::path::PathBuf::from(d);
                    p.push(&argv[0]);
                    CString::new(p.as_os_str().as_bytes()).ok()
                })
                .collect()
        };
        let mut argv_ptrs: Vec<_> = argv_c.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<_> = env_c.iter().map(|c| c.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());
        Ok(Self {
            _argv: argv_c,
            _env: env_c,
            argv_ptrs,
            env_ptrs,
            cwd: CString::new(cwd).map_err(|_| nul("cwd"))?,
            candidates,
            path_var,
        })
    }
}
