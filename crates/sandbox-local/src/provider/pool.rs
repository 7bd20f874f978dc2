//! The warm pool: a few sandboxes of the `base` template started ahead of demand and
//! parked under tight limits (64 MB, a tenth of a core, 32 processes) and a far deadline.
//! `create` claims one by writing the user's limits into its cgroup and telling its init
//! the real deadline, which takes well under a millisecond instead of a cold start's
//! several. A background task refills the pool after each claim. Parked sandboxes have
//! no record: at start-up `ready` sweeps any a crashed server left, and `shutdown`
//! removes them.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use quantbox_sandbox::Timestamp;
use std::os::fd::AsFd;
use tokio::sync::Notify;

use super::{Inner, Instance, cleanup, lock, start};
use crate::cgroup::CgroupLimits;
use crate::protocol::ToInit;
use crate::sys;

/// Limits of a parked sandbox (raised to the user's on claim; 64 MB is the smallest
/// `memory_mb`, so a claim never lowers memory below what is in use).
const PARKED: CgroupLimits = CgroupLimits {
    memory_bytes: 64 << 20,
    cpu_quota: Some(0.1),
    pids_max: 32,
};

/// How long a parked sandbox may wait; it is replaced before that.
const PARKED_LIFETIME_MS: i64 = 24 * 3600 * 1000;

pub(super) struct Pool {
    target: usize,
    items: Mutex<Vec<Instance>>,
    /// Slot being started for the pool, if any.
    starting: Mutex<Option<String>>,
    wake: Notify,
    started: std::sync::atomic::AtomicBool,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Pool {
    pub(super) fn new(target: usize) -> Self {
        Self {
            target,
            items: Mutex::new(Vec::new()),
            starting: Mutex::new(None),
            wake: Notify::new(),
            started: std::sync::atomic::AtomicBool::new(false),
            task: Mutex::new(None),
        }
    }

    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(super) fn parked(&self) -> usize {
        lock(&self.items).len()
    }

    pub(super) fn slots(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.items).iter().map(|i| i.slot.clone()).collect();
        v.extend(lock(&self.starting).clone());
        v
    }
}

fn alive(inst: &Instance) -> bool {
    // A pidfd is readable once its process has exited.
    let mut fds = [PollFd::new(inst.pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

/// A parked sandbox of `template`, given `limits` and `deadline`; `None` when there is
/// none (the caller starts one cold).
pub(super) async fn claim(
    inner: &Arc<Inner>,
    template: &str,
    limits: &CgroupLimits,
    deadline: Timestamp,
) -> Option<Instance> {
    loop {
        let inst = {
            let mut items = lock(&inner.pool.items);
            let pos = items.iter().position(|i| i.template == template)?;
            items.swap_remove(pos)
        };
        let t = Instant::now();
        let ok = alive(&inst)
            && inst
                .cgroup
                .as_ref()
                .is_none_or(|c| c.set_limits(limits).is_ok())
            && inst
                .client
                .send(&ToInit::SetDeadline {
                    unix_ms: deadline.unix_ms(),
                })
                .await
                .is_ok();
        if ok {
            let mut inst = inst;
            inst.setup_steps = vec![(
                "claim from the warm pool".to_owned(),
                t.elapsed().as_micros() as u64,
            )];
            return Some(inst);
        }
        tracing::warn!(slot = %inst.slot, "a parked sandbox was unusable; discarding it");
        discard(inner, inst).await;
    }
}

/// Kills a parked sandbox's init and removes its slot.
async fn discard(inner: &Arc<Inner>, inst: Instance) {
    let _ = sys::pidfd_send_signal(&inst.pidfd, libc::SIGKILL);
    // It is our child (or was adopted by nobody): wait for it to exit, then reap.
    if let Ok(afd) = crate::client::register(inst.pidfd, tokio::io::Interest::READABLE) {
        let _ = tokio::time::timeout(Duration::from_secs(10), afd.readable()).await;
        let _ = sys::pidfd_reap(afd.get_ref());
    }
    let inner = inner.clone();
    let slot = inst.slot;
    let cg = inst.cgroup;
    let removed = tokio::task::spawn_blocking(move || {
        let r = cleanup::remove_slot(&inner, &slot, cg.as_ref());
        (slot, r)
    })
    .await;
    match removed {
        Ok((slot, Ok(()))) => tracing::debug!(slot, "parked sandbox removed"),
        Ok((slot, Err(e))) => {
            tracing::warn!(slot, error = %e, "could not remove a parked sandbox; the next start sweeps it")
        }
        Err(e) => tracing::warn!(error = %e, "removing a parked sandbox failed"),
    }
}

/// Starts the refill task (once).
pub(super) fn start(inner: &Arc<Inner>) {
    if inner.pool.target == 0
        || inner
            .pool
            .started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return;
    }
    let task = tokio::spawn(refill(Arc::downgrade(inner)));
    *lock(&inner.pool.task) = Some(task);
}

async fn refill(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if !inner.pool.started.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Some(tpl) = inner.templates.get("base") else {
            return;
        };
        let missing = inner
            .pool
            .target
            .saturating_sub(lock(&inner.pool.items).len());
        let mut failed = false;
        for _ in 0..missing {
            let deadline = Timestamp::now().plus_ms(PARKED_LIFETIME_MS);
            let slot = quantbox_sandbox::SandboxId::generate().to_string();
            *lock(&inner.pool.starting) = Some(slot.clone());
            let res = start::prepare(&inner, slot, &tpl, &PARKED, deadline).await;
            *lock(&inner.pool.starting) = None;
            match res {
                Ok(inst) => {
                    if inner.pool.started.load(std::sync::atomic::Ordering::SeqCst) {
                        lock(&inner.pool.items).push(inst);
                    } else {
                        // Drained meanwhile (shutting down).
                        discard(&inner, inst).await;
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not start a warm sandbox; retrying later");
                    failed = true;
                    break;
                }
            }
        }
        let wait = if failed {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(3600)
        };
        let wake = async { inner.pool.wake.notified().await };
        let _ = tokio::time::timeout(wait, wake).await;
        // Replace parked sandboxes before their far deadline comes near.
        let stale: Vec<Instance> = {
            let mut items = lock(&inner.pool.items);
            let (old, fresh): (Vec<_>, Vec<_>) = std::mem::take(&mut *items)
                .into_iter()
                .partition(|i| parked_for(i) > Duration::from_secs(12 * 3600));
            *items = fresh;
            old
        };
        for inst in stale {
            discard(&inner, inst).await;
        }
        drop(inner);
    }
}

/// How long a parked sandbox has existed, from its init's start time.
fn parked_for(inst: &Instance) -> Duration {
    let ticks = sys::process_start_time(inst.init_pid).unwrap_or(0);
    let hz = sys::clock_ticks_per_second();
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Duration::from_secs_f64((uptime - ticks as f64 / hz as f64).max(0.0))
}

/// Ends every parked sandbox and stops refilling (waiting for a start in progress).
pub(super) async fn drain(inner: &Arc<Inner>) {
    inner
        .pool
        .started
        .store(false, std::sync::atomic::Ordering::SeqCst);
    inner.pool.wake();
    let task = lock(&inner.pool.task).take();
    if let Some(task) = task {
        let _ = task.await;
    }
    let items = std::mem::take(&mut *lock(&inner.pool.items));
    for inst in items {
        discard(inner, inst).await;
    }
}
