//! The sandbox's first process: quantbox itself, re-executed (never a fork of the
//! multi-threaded server) with the hidden argument [`INIT_ARG`].
//!
//! Two processes run this code, in order:
//! 1. the *outer helper*, in the host's namespaces: reads [`InitConfig`] from the
//!    control socket (fd 0), joins the sandbox's cgroups, makes the user namespace
//!    (root mode: through a short-lived holder child whose id maps it writes as host
//!    root), unshares the mount, uts, ipc, net, cgroup and pid namespaces, and clones
//!    init with `CLONE_PARENT` so that init is the *server's* child (the server watches
//!    it with a pidfd); it reports init's host pid and exits;
//! 2. *init*, pid 1 of the new pid namespace: builds the root filesystem
//!    ([`rootfs`]), sets the hostname, brings up loopback, joins the user namespace
//!    and becomes root of it (it can no longer mount anything: the mount namespace
//!    belongs to the host's user namespace), then serves requests ([`pid1`]): starts
//!    commands, reaps every zombie, reports exits, and holds the sandbox alive between
//!    commands. Killing it ends the sandbox and everything in it.

mod pid1;
mod rootfs;

use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Instant;

use crate::protocol::{self, FromInit, IdMode, ToInit};
use crate::sys::{self, Forked};

/// argv[1] that selects the init helper in the quantbox binary.
pub const INIT_ARG: &str = "__sandbox-init";

/// A setup step that failed, and why.
#[derive(Debug)]
pub(crate) struct StepError {
    step: &'static str,
    error: io::Error,
}

impl StepError {
    pub(crate) fn new(step: &'static str, error: io::Error) -> Self {
        Self { step, error }
    }
}

/// Microseconds spent per setup step, reported to the server (the benchmark prints
/// them).
pub(crate) struct Timings {
    last: Instant,
    steps: Vec<(String, u64)>,
}

impl Timings {
    fn new() -> Self {
        Self {
            last: Instant::now(),
            steps: Vec::new(),
        }
    }
    pub(crate) fn mark(&mut self, name: &str) {
        let now = Instant::now();
        self.steps.push((
            name.to_owned(),
            now.duration_since(self.last).as_micros() as u64,
        ));
        self.last = now;
    }
}

fn fail(ctl: BorrowedFd<'_>, e: StepError) -> ! {
    let _ = protocol::send(
        ctl,
        &FromInit::SetupFailed {
            step: e.step.to_owned(),
            error: e.error.to_string(),
        },
        &[],
    );
    eprintln!("quantbox init: {}: {}", e.step, e.error);
    sys::exit_now(1)
}

/// Entry point of the helper: never returns. The caller (the binary's `main`) must call
/// it before starting any thread.
pub fn main() -> ! {
    let started_ns = sys::monotonic_ns();
    let mut timings = Timings::new();
    // SAFETY: fd 0 is the control socket the server passed as stdin; this process owns it.
    let ctl = unsafe { OwnedFd::from_raw_fd(0) };
    let mut buf = vec![0u8; protocol::MAX_PACKET];
    let (cfg, mut fds) = match protocol::recv::<ToInit>(ctl.as_fd(), &mut buf) {
        Ok(Some((ToInit::Config(cfg), fds))) => (*cfg, fds),
        Ok(_) => fail(
            ctl.as_fd(),
            StepError::new("read config", io::Error::other("expected a config message")),
        ),
        Err(e) => fail(ctl.as_fd(), StepError::new("read config", e)),
    };
    drop(buf);
    let Some(listen) = fds.pop() else {
        fail(
            ctl.as_fd(),
            StepError::new(
                "read config",
                io::Error::other("no listening socket passed"),
            ),
        )
    };

    timings.mark("helper: read config");
    let pid = std::process::id();
    for f in &cfg.cgroup_procs {
        if let Err(e) = fs::write(f, pid.to_string()) {
            fail(
                ctl.as_fd(),
                StepError::new(
                    "join cgroup",
                    io::Error::new(e.kind(), format!("{}: {e}", f.display())),
                ),
            );
        }
    }

    timings.mark("helper: join cgroups");
    let userns = match &cfg.ids {
        IdMode::Mapped { host_base, size } => match mapped_userns(*host_base, *size) {
            Ok(fd) => Some(fd),
            Err(e) => fail(ctl.as_fd(), StepError::new("create user namespace", e)),
        },
        IdMode::Rootless {
            outside_uid,
            outside_gid,
        } => {
            if let Err(e) = enter_rootless_userns(*outside_uid, *outside_gid) {
                fail(ctl.as_fd(), StepError::new("create user namespace", e));
            }
            None
        }
    };

    timings.mark("helper: user namespace");
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWPID;
    if let Err(e) = sys::unshare(flags) {
        fail(ctl.as_fd(), StepError::new("unshare namespaces", e));
    }
    timings.mark("helper: unshare");
    // SAFETY: this helper is single-threaded (the binary calls us before anything else).
    match unsafe { sys::clone_process(libc::CLONE_PARENT as libc::c_ulong) } {
        Err(e) => fail(ctl.as_fd(), StepError::new("clone init", e)),
        Ok(Forked::Child) => pid1::run(cfg, ctl, listen, userns),
        Ok(Forked::Parent(init_pid)) => {
            timings.mark("helper: clone init");
            let spawned = FromInit::Spawned {
                init_pid,
                started_ns,
                steps: timings.steps,
            };
            let _ = protocol::send(ctl.as_fd(), &spawned, &[]);
            sys::exit_now(0)
        }
    }
}

/// Root mode: a user namespace mapping sandbox ids `0..size` to host
/// `host_base..host_base+size`. A holder child creates it; we (host root) write its id
/// maps through the host's /proc, keep a handle on the namespace, and let the holder go.
fn mapped_userns(host_base: u32, size: u32) -> io::Result<OwnedFd> {
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: single-threaded helper (see `main`).
    match unsafe { sys::clone_process(libc::CLONE_NEWUSER as libc::c_ulong)? } {
        Forked::Child => {
            drop(tx);
            let mut b = [0u8; 1];
            let _ = fs::File::from(rx).read(&mut b);
            sys::exit_now(0)
        }
        Forked::Parent(holder) => {
            drop(rx);
            let map = format!("0 {host_base} {size}\n");
            let res = (|| {
                fs::write(format!("/proc/{holder}/uid_map"), &map)?;
                fs::write(format!("/proc/{holder}/gid_map"), &map)?;
                let f = fs::File::open(format!("/proc/{holder}/ns/user"))?;
                Ok(OwnedFd::from(f))
            })();
            drop(tx);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(holder), None);
            res
        }
    }
}

/// Rootless: enter a new user namespace where our own uid/gid are the sandbox user's
/// 1000 (the only ids an unprivileged process may map).
fn enter_rootless_userns(uid: u32, gid: u32) -> io::Result<()> {
    sys::unshare(libc::CLONE_NEWUSER)?;
    fs::write("/proc/self/setgroups", "deny")?;
    fs::write("/proc/self/uid_map", format!("1000 {uid} 1\n"))?;
    fs::write("/proc/self/gid_map", format!("1000 {gid} 1\n"))?;
    Ok(())
}
