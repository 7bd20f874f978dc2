//! The messages between the server and a sandbox's init, over a `SOCK_SEQPACKET` unix
//! socket: one JSON document per packet (message boundaries for free), file
//! descriptors (a command's stdio pipes) passed alongside with `SCM_RIGHTS`.
//!
//! The order of a connection's life: the server sends [`ToInit::Config`] (with the
//! listening socket for later reconnections); the outer helper answers
//! [`FromInit::Spawned`] with init's host pid; init answers [`FromInit::Ready`] or
//! [`FromInit::SetupFailed`]. After that the server sends requests and init sends
//! replies and [`FromInit::Exited`] notices at any time.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

/// Largest packet either side sends or accepts.
pub const MAX_PACKET: usize = 192 * 1024;
/// Most file descriptors in one packet.
pub const MAX_FDS: usize = 4;

/// How the sandbox's ids map to the host's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum IdMode {
    /// Running as root: a user namespace maps sandbox ids `0..size` to host ids
    /// `host_base..host_base+size`; template layers are idmapped the same way.
    Mapped { host_base: u32, size: u32 },
    /// Running unprivileged: the only id we have (`outside_uid`/`outside_gid`) is the
    /// sandbox user's 1000; there is no root inside.
    Rootless { outside_uid: u32, outside_gid: u32 },
}

/// Everything init needs to build the sandbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitConfig {
    /// The slot this init serves (also its hostname).
    pub slot: String,
    pub hostname: String,
    /// An empty host directory, the same for every sandbox: init mounts a tmpfs on it in
    /// its own mount namespace and makes its mount points and per-sandbox files there,
    /// so none of them touch the host's disk or need cleaning up.
    pub scratch: PathBuf,
    /// Template layers of the root, topmost first.
    pub root_layers: Vec<PathBuf>,
    /// Layers of `/usr`, topmost first (the host's `/usr` last, for `base`).
    pub usr_layers: Vec<PathBuf>,
    pub upper_root: PathBuf,
    pub work_root: PathBuf,
    pub upper_usr: PathBuf,
    pub work_usr: PathBuf,
    pub ids: IdMode,
    /// `cgroup.procs` files to join before the namespaces are made.
    pub cgroup_procs: Vec<PathBuf>,
    pub tmp_size_bytes: u64,
    pub shm_size_bytes: u64,
    /// Backstop: init ends the sandbox this long after its deadline if the server has not.
    pub deadline_unix_ms: i64,
    pub deadline_grace_ms: i64,
    pub nofile_limit: u64,
    /// The quantbox binary, bound read-only at [`TOOLS_EXE`] inside (agents run it).
    #[serde(default)]
    pub tools_exe: Option<PathBuf>,
    /// Host device nodes (NVIDIA GPUs) bound into `/dev` under their own names.
    #[serde(default)]
    pub gpu_devices: Vec<PathBuf>,
}

/// Where the quantbox binary is inside every sandbox: on a small tmpfs over `/run`, so
/// nothing of it touches the sandbox's writable layer (or an exported template).
pub const TOOLS_EXE: &str = "/run/quantbox/quantbox";

/// What a command runs as, inside.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToInit {
    /// First message; carries the listening socket as its one fd.
    Config(Box<InitConfig>),
    /// Start a process. fds: stdout, stderr, and stdin when `stdin` is true.
    Exec {
        id: u64,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: String,
        creds: Creds,
        stdin: bool,
        /// The stdio fds are a terminal's: make it the process's controlling terminal.
        #[serde(default)]
        tty: bool,
    },
    /// Signal the process group of execution `id` (if it still runs).
    Signal {
        id: u64,
        signal: i32,
    },
    Ping {
        seq: u64,
    },
    SetDeadline {
        unix_ms: i64,
    },
    /// SIGTERM to everything, then end the sandbox after `grace_ms` or when all is gone.
    Shutdown {
        grace_ms: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromInit {
    /// From the outer helper: init's pid on the host, and the helper's own timings
    /// (`started_ns`: CLOCK_MONOTONIC when its `main` began; steps in microseconds).
    Spawned {
        init_pid: i32,
        started_ns: u64,
        steps: Vec<(String, u64)>,
    },
    /// Setup done; microseconds per step.
    Ready {
        steps: Vec<(String, u64)>,
    },
    SetupFailed {
        step: String,
        error: String,
    },
    Started {
        id: u64,
        pid: i32,
    },
    StartFailed {
        id: u64,
        error: String,
    },
    Exited {
        id: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
    Pong {
        seq: u64,
    },
}

/// Sends one message with `fds` attached. Blocking or not depends on the socket.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[RawFd]) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_PACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("message of {} bytes exceeds {MAX_PACKET}", bytes.len()),
        ));
    }
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One received packet: `Ok(None)` at end of stream.
pub fn recv_raw(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let res = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let msg = match res {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS just installed these fds in our table; we are
                    // their only owner.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "packet or its fds truncated",
            ));
        }
        let n = msg.bytes;
        if n == 0 && fds.is_empty() {
            return Ok(None);
        }
        return Ok(Some((n, fds)));
    }
}

/// Receives and decodes one message.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    match recv_raw(sock, buf)? {
        None => Ok(None),
        Some((n, fds)) => {
            let msg = serde_json::from_slice(&buf[..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Ok(Some((msg, fds)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::AsFd;

    #[test]
    fn messages_and_fds_cross_a_seqpacket_pair() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let file = tempfile::tempfile().unwrap();
        send(
            a.as_fd(),
            &ToInit::Signal { id: 7, signal: 9 },
            &[file.as_raw_fd()],
        )
        .unwrap();
        send(a.as_fd(), &ToInit::Ping { seq: 1 }, &[]).unwrap();
        let mut buf = vec![0u8; MAX_PACKET];
        let (m, fds) = recv::<ToInit>(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(matches!(m, ToInit::Signal { id: 7, signal: 9 }));
        assert_eq!(fds.len(), 1);
        let (m, fds) = recv::<ToInit>(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(matches!(m, ToInit::Ping { seq: 1 }));
        assert!(fds.is_empty());
        drop(a);
        assert!(recv::<ToInit>(b.as_fd(), &mut buf).unwrap().is_none());
    }

    #[test]
    fn oversized_messages_are_refused_before_sending() {
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let msg = ToInit::Exec {
            id: 1,
            argv: vec!["x".repeat(MAX_PACKET)],
            env: vec![],
            cwd: "/".into(),
            creds: Creds {
                uid: 1000,
                gid: 1000,
            },
            stdin: false,
            tty: false,
        };
        let err = send(a.as_fd(), &msg, &[]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
