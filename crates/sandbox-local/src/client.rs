//! The server's end of a sandbox's control connection: sends requests to init and
//! routes its replies (by execution id or ping sequence) to whoever waits for them.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{self, FromInit, ToInit};

/// What init reports about one execution.
#[derive(Debug)]
pub enum ExecEvent {
    Started(i32),
    StartFailed(String),
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

#[derive(Default)]
struct Routes {
    execs: HashMap<u64, mpsc::UnboundedSender<ExecEvent>>,
    pings: HashMap<u64, oneshot::Sender<()>>,
    closed: bool,
}

pub struct InitClient {
    fd: Arc<AsyncFd<OwnedFd>>,
    routes: Arc<Mutex<Routes>>,
    ping_seq: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Registers an owned fd with tokio's reactor.
pub fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open for as long as it lives and always returns the same
    // fd; the AsyncFd owns it, so it stays open for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

/// Makes a socket or pipe non-blocking and registers it with tokio.
pub fn async_socket(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(&fd)?;
    register(fd, Interest::READABLE | Interest::WRITABLE)
}

/// Sends one message, waiting while the socket's buffer is full.
pub async fn send_async(fd: &AsyncFd<OwnedFd>, msg: &ToInit, fds: &[RawFd]) -> io::Result<()> {
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| protocol::send(inner.get_ref().as_fd(), msg, fds)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// Receives one message; `Ok(None)` at end of stream.
pub async fn recv_async(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<Option<FromInit>> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| protocol::recv_raw(inner.get_ref().as_fd(), buf)) {
            Ok(Ok(None)) => return Ok(None),
            Ok(Ok(Some((n, _fds)))) => {
                return serde_json::from_slice(&buf[..n])
                    .map(Some)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

impl InitClient {
    /// Starts routing replies arriving on `fd` (after the handshake).
    pub fn start(fd: AsyncFd<OwnedFd>) -> Self {
        let fd = Arc::new(fd);
        let routes = Arc::new(Mutex::new(Routes::default()));
        tokio::spawn(route(fd.clone(), routes.clone()));
        Self {
            fd,
            routes,
            ping_seq: std::sync::atomic::AtomicU64::new(1),
        }
    }

    pub async fn send(&self, msg: &ToInit) -> io::Result<()> {
        send_async(&self.fd, msg, &[]).await
    }

    /// Registers execution `id` and sends its request with its fds; events follow on the
    /// returned channel, which closes if init goes away.
    pub async fn exec(
        &self,
        id: u64,
        msg: &ToInit,
        fds: &[&OwnedFd],
    ) -> io::Result<mpsc::UnboundedReceiver<ExecEvent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut r = lock(&self.routes);
            if r.closed {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "init is gone"));
            }
            r.execs.insert(id, tx);
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        if let Err(e) = send_async(&self.fd, msg, &raw).await {
            lock(&self.routes).execs.remove(&id);
            return Err(e);
        }
        Ok(rx)
    }

    /// Round trip to init.
    pub async fn ping(&self, timeout: Duration) -> io::Result<Duration> {
        let seq = self
            .ping_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut r = lock(&self.routes);
            if r.closed {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the control connection is closed",
                ));
            }
            r.pings.insert(seq, tx);
        }
        let start = std::time::Instant::now();
        let res = tokio::time::timeout(timeout, async {
            self.send(&ToInit::Ping { seq }).await?;
            rx.await.map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the control connection closed")
            })
        })
        .await;
        lock(&self.routes).pings.remove(&seq);
        match res {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} ms", timeout.as_millis()),
            )),
        }
    }
}

async fn route(fd: Arc<AsyncFd<OwnedFd>>, routes: Arc<Mutex<Routes>>) {
    let mut buf = vec![0u8; protocol::MAX_PACKET];
    loop {
        let msg = match recv_async(&fd, &mut buf).await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(error = %e, "undecodable message from a sandbox init");
                continue;
            }
            Err(_) => break,
        };
        let mut r = lock(&routes);
        match msg {
            FromInit::Started { id, pid } => send_exec(&mut r, id, ExecEvent::Started(pid), false),
            FromInit::StartFailed { id, error } => {
                send_exec(&mut r, id, ExecEvent::StartFailed(error), true)
            }
            FromInit::Exited { id, code, signal } => {
                send_exec(&mut r, id, ExecEvent::Exited { code, signal }, true)
            }
            FromInit::Pong { seq } => {
                if let Some(tx) = r.pings.remove(&seq) {
                    let _ = tx.send(());
                }
            }
            FromInit::Spawned { .. } | FromInit::Ready { .. } | FromInit::SetupFailed { .. } => {}
        }
    }
    // Dropping the senders tells every waiter that init is gone.
    let mut r = lock(&routes);
    r.closed = true;
    r.execs.clear();
    r.pings.clear();
}

fn send_exec(r: &mut Routes, id: u64, ev: ExecEvent, last: bool) {
    if last {
        if let Some(tx) = r.execs.remove(&id) {
            let _ = tx.send(ev);
        }
    } else if let Some(tx) = r.execs.get(&id) {
        let _ = tx.send(ev);
    }
}
