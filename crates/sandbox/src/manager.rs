//! The manager: the one place that knows every sandbox. It validates requests against
//! providers, keeps durable records, enforces lifetimes, collects output lines and
//! lifecycle events, and adopts or cleans up sandboxes after a restart.
//!
//! Invariants:
//! - a sandbox is in `entries` exactly while its record is not `stopped`;
//! - the record is written before host resources are made, and marked `stopped` only
//!   after the provider reports that nothing of the sandbox is left;
//! - lifetimes are enforced here (a timer per sandbox); the provider's own deadline is a
//!   backstop for when the manager is gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::health::{self, Health};
use crate::id::{ExecutionId, SandboxId};
use crate::logs::LineSplitter;
use crate::model::{
    ExecOutcome, ExecRequest, ExecStatus, ExecUser, ExecutionRecord, ListFilter, LogLine,
    Resources, SandboxRecord, SandboxSpec, SandboxStatus, StopReason, Stream,
};
use crate::provider::{Adoption, OutputSink, Provider, ProviderError, Termination, UnexpectedExit};
use crate::store::{SandboxStore, StoreError};
use crate::time::Timestamp;
use crate::usage_history::{UsageHistory, UsagePoint};

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub default_provider: String,
    /// Most sandboxes active at once.
    pub max_sandboxes: usize,
    pub default_pids_max: u64,
    /// Grace between SIGTERM and SIGKILL of a graceful termination.
    pub terminate_grace: Duration,
    /// Output lines kept per sandbox for `recent_logs`.
    pub log_keep: usize,
    /// How often running sandboxes' CPU, OOM and pids counters are sampled.
    pub sample_interval: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            default_provider: "local".into(),
            max_sandboxes: 1000,
            default_pids_max: 512,
            terminate_grace: Duration::from_secs(5),
            log_keep: 1000,
            sample_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("no sandbox with id `{0}`; list_e2b_sandboxes shows the known ones")]
    NotFound(SandboxId),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to create (validated by the caller for form; the manager checks it against
/// providers and limits).
#[derive(Clone, Debug)]
pub struct CreateParams {
    pub name: String,
    pub template: String,
    pub timeout: Duration,
    pub memory_mb: u64,
    pub cpu_count: f64,
    pub env_vars: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub provider: Option<String>,
    pub deployment_id: Option<String>,
}

#[derive(Clone)]
pub struct ExecParams {
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub user: ExecUser,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    pub capture_output: bool,
    /// Also receives the output as it is read. With it, stdout is not kept as log
    /// lines (it is a data stream: an agent's events); stderr still is.
    pub on_output: Option<OutputSink>,
    /// Becomes `true` to kill the process and its children.
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
    /// Live control while it runs (pid at start, input, signals).
    pub control: Option<crate::model::ExecControl>,
}

#[derive(Clone, Debug)]
pub struct TerminateOutcome {
    pub record: SandboxRecord,
    /// It was stopped before this call.
    pub already_stopped: bool,
}

#[derive(Clone, Debug)]
pub struct UsageReport {
    /// Percent of one core (100 = one full core), over the last sampling interval.
    pub cpu_percent: f64,
    pub memory_mb: f64,
    pub memory_limit_mb: f64,
    pub disk_mb: f64,
    pub pids: u64,
}

/// One active sandbox's health, for the fleet view.
#[derive(Clone, Debug)]
pub struct SandboxHealth {
    pub record: SandboxRecord,
    /// `None` when usage could not be read.
    pub usage: Option<UsageReport>,
    pub health: Health,
}

/// Every active sandbox's health, and the sandboxes that stopped unexpectedly in the
/// last hour.
#[derive(Clone, Debug)]
pub struct FleetHealth {
    pub sandboxes: Vec<SandboxHealth>,
    pub failed: Vec<SandboxRecord>,
}

#[derive(Clone, Debug)]
pub struct StatusReport {
    pub record: SandboxRecord,
    pub uptime_s: f64,
    /// `None` when the sandbox is not running (nothing to measure).
    pub usage: Option<UsageReport>,
    pub processes_running: u64,
    pub oom_kills: u64,
    pub health: Health,
    pub recent_logs: Vec<LogLine>,
}

/// Counters seen by the sampler, to turn totals into rates and recent events.
#[derive(Default)]
struct Samples {
    cpu: Option<(Instant, u64)>,
    /// The sampler's last full reading, for the monitor (never read live per scrape).
    latest: Option<UsageSample>,
    oom_count: u64,
    oom_last_increase: Option<Instant>,
    pids_hits: u64,
    pids_last_hit: Option<Instant>,
    /// One reading per five seconds, the last hour (E2B's per-sandbox metrics).
    history: UsageHistory,
}

struct Entry {
    provider: Arc<dyn Provider>,
    record: Mutex<SandboxRecord>,
    /// Set once a termination has started; exits after that are expected.
    stopping: AtomicBool,
    /// Serialises terminations of this sandbox.
    stop_lock: tokio::sync::Mutex<()>,
    timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Output lines not yet written to the store.
    pending_logs: Mutex<Vec<LogLine>>,
    samples: Mutex<Samples>,
}

impl Entry {
    fn record(&self) -> SandboxRecord {
        lock(&self.record).clone()
    }
    fn id(&self) -> SandboxId {
        lock(&self.record).id.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    config: ManagerConfig,
    providers: BTreeMap<String, Arc<dyn Provider>>,
    store: Arc<dyn SandboxStore>,
    entries: Mutex<HashMap<SandboxId, Arc<Entry>>>,
    counts: Counts,
}

/// Lifecycle counters since this process started (Prometheus counters reset with the
/// process; its `rate()` handles that).
#[derive(Default)]
struct Counts {
    created: AtomicU64,
    /// Indexed by [`stop_index`].
    stopped: [AtomicU64; 5],
    executions: AtomicU64,
    oom_kills: AtomicU64,
}

fn stop_index(r: StopReason) -> usize {
    match r {
        StopReason::Terminated => 0,
        StopReason::Expired => 1,
        StopReason::Crashed => 2,
        StopReason::Lost => 3,
        StopReason::StartFailed => 4,
    }
}

/// What the manager counted since this process started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LifecycleCounts {
    pub created: u64,
    pub terminated: u64,
    pub expired: u64,
    pub crashed: u64,
    pub lost: u64,
    pub start_failed: u64,
    /// Processes run in sandboxes (finished or not).
    pub executions: u64,
    /// Processes killed by a sandbox's memory limit, as seen by the sampler and by
    /// executions that ended that way.
    pub oom_kills: u64,
}

/// The sampler's last reading of one active sandbox.
#[derive(Clone, Debug)]
pub struct UsageSample {
    pub sampled_at: Timestamp,
    /// Percent of one core over the last sampling interval (0 while paused).
    pub cpu_percent: f64,
    pub usage: crate::model::ResourceUsage,
}

/// One active sandbox as the monitor sees it: its record and the last sample.
#[derive(Clone, Debug)]
pub struct SandboxSample {
    pub record: SandboxRecord,
    /// `None` until the sampler has read it once (or when reading failed).
    pub sample: Option<UsageSample>,
}

/// Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

/// How far back a sandbox that stopped unexpectedly counts as a failure of the fleet.
pub const FAILED_WINDOW_MS: i64 = 3600 * 1000;

impl Manager {
    /// Starts the manager: adopts or cleans up what an earlier run left, then starts the
    /// sampler. Must be called inside a tokio runtime.
    pub async fn start(
        config: ManagerConfig,
        providers: Vec<Arc<dyn Provider>>,
        store: Arc<dyn SandboxStore>,
    ) -> Result<Self, ManagerError> {
        let providers: BTreeMap<String, Arc<dyn Provider>> = providers
            .into_iter()
            .map(|p| (p.name().to_owned(), p))
            .collect();
        if !providers.contains_key(&config.default_provider) {
            return Err(ManagerError::Invalid(format!(
                "the default provider `{}` is not configured (configured: {})",
                config.default_provider,
                providers.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let mgr = Self {
            inner: Arc::new(Inner {
                config,
                providers,
                store,
                entries: Mutex::new(HashMap::new()),
                counts: Counts::default(),
            }),
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for p in mgr.inner.providers.values() {
            p.watch_exits(tx.clone());
        }
        tokio::spawn(watch_exits(Arc::downgrade(&mgr.inner), rx));
        mgr.recover().await?;
        for p in mgr.inner.providers.values() {
            if let Err(e) = p.ready().await {
                tracing::error!(provider = p.name(), error = %e, "provider could not finish starting");
            }
        }
        tokio::spawn(sampler(Arc::downgrade(&mgr.inner)));
        Ok(mgr)
    }

    /// Stops background work of the providers; running sandboxes keep running.
    pub async fn shutdown(&self) {
        for p in self.inner.providers.values() {
            p.shutdown().await;
        }
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.inner.providers.values()
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.inner.providers.get(name)
    }

    /// Number of sandboxes not stopped.
    pub fn active_count(&self) -> usize {
        lock(&self.inner.entries).len()
    }

    /// Lifecycle counters since this process started.
    pub fn counts(&self) -> LifecycleCounts {
        let c = &self.inner.counts;
        let stopped = |r| c.stopped[stop_index(r)].load(Ordering::Relaxed);
        LifecycleCounts {
            created: c.created.load(Ordering::Relaxed),
            terminated: stopped(StopReason::Terminated),
            expired: stopped(StopReason::Expired),
            crashed: stopped(StopReason::Crashed),
            lost: stopped(StopReason::Lost),
            start_failed: stopped(StopReason::StartFailed),
            executions: c.executions.load(Ordering::Relaxed),
            oom_kills: c.oom_kills.load(Ordering::Relaxed),
        }
    }

    /// Every active sandbox with the sampler's last reading of it. Reads no cgroup:
    /// cheap enough for every scrape of `/metrics`.
    pub fn samples(&self) -> Vec<SandboxSample> {
        let entries: Vec<Arc<Entry>> = lock(&self.inner.entries).values().cloned().collect();
        entries
            .iter()
            .map(|e| SandboxSample {
                record: e.record(),
                sample: lock(&e.samples).latest.clone(),
            })
            .collect()
    }

    /// The usage history of a sandbox, oldest first: one point per five seconds over the
    /// last hour, kept while it is active. A stopped sandbox has none left (empty); one
    /// that never existed is `NotFound`. Reads no cgroup.
    pub fn usage_history(&self, id: &SandboxId) -> Result<Vec<UsagePoint>, ManagerError> {
        match self.entry(id) {
            Some(e) => Ok(lock(&e.samples).history.points()),
            None => self.stored(id).map(|_| Vec::new()),
        }
    }

    /// Notes a sandbox's OOM-kill and refused-fork totals; new OOM kills are counted.
    fn note_counters(&self, s: &mut Samples, oom: u64, pids_hits: u64, now: Instant) {
        if oom > s.oom_count {
            self.inner
                .counts
                .oom_kills
                .fetch_add(oom - s.oom_count, Ordering::Relaxed);
        }
        note_counters(s, oom, pids_hits, now);
    }

    pub async fn create(&self, p: CreateParams) -> Result<SandboxRecord, ManagerError> {
        let provider_name = p
            .provider
            .clone()
            .unwrap_or_else(|| self.inner.config.default_provider.clone());
        let provider = self
            .inner
            .providers
            .get(&provider_name)
            .cloned()
            .ok_or_else(|| {
                ManagerError::Unavailable(format!(
                    "provider `{provider_name}` is not configured on this server (configured: {})",
                    self.inner
                        .providers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if !provider.templates().contains(&p.template) {
            return Err(ManagerError::Invalid(format!(
                "template: unknown template `{}` (known: {})",
                p.template,
                provider.templates().join(", ")
            )));
        }
        let active = self.active_count();
        if active >= self.inner.config.max_sandboxes {
            return Err(ManagerError::Exhausted(format!(
                "this server runs at most {} sandboxes at once and {active} are active; terminate some first",
                self.inner.config.max_sandboxes
            )));
        }
        let now = Timestamp::now();
        let timeout_ms = i64::try_from(p.timeout.as_millis()).unwrap_or(i64::MAX);
        let spec = SandboxSpec {
            id: SandboxId::generate(),
            name: p.name,
            template: p.template,
            resources: Resources {
                memory_mb: p.memory_mb,
                cpu_count: p.cpu_count,
                pids_max: self.inner.config.default_pids_max,
            },
            timeout: p.timeout,
            env_vars: p.env_vars,
            metadata: p.metadata,
            deployment_id: p.deployment_id,
            expires_at: now.plus_ms(timeout_ms),
        };
        provider.check(&spec)?;
        let mut record = SandboxRecord {
            id: spec.id.clone(),
            name: spec.name.clone(),
            template: spec.template.clone(),
            provider: provider_name,
            status: SandboxStatus::Creating,
            stop_reason: None,
            resources: spec.resources.clone(),
            timeout_s: p.timeout.as_secs(),
            env_vars: spec.env_vars.clone(),
            metadata: spec.metadata.clone(),
            deployment_id: spec.deployment_id.clone(),
            created_at: now,
            expires_at: spec.expires_at,
            stopped_at: None,
            paused_at: None,
            runtime: serde_json::Value::Null,
        };
        // Written first, so a crash during creation is found and cleaned up on restart.
        self.inner.store.put_sandbox(&record)?;
        match provider.create(&spec).await {
            Ok(runtime) => {
                record.runtime = runtime;
                record.status = SandboxStatus::Running;
                self.inner.store.put_sandbox(&record)?;
                self.inner.counts.created.fetch_add(1, Ordering::Relaxed);
                let entry = self.insert_entry(provider, record.clone());
                self.event(
                    &entry,
                    format!(
                        "created from template `{}` ({} MB, {} CPU, {} pids, lifetime {} s)",
                        record.template,
                        record.resources.memory_mb,
                        record.resources.cpu_count,
                        record.resources.pids_max,
                        record.timeout_s
                    ),
                );
                Ok(record)
            }
            Err(e) => {
                record.status = SandboxStatus::Stopped;
                record.stop_reason = Some(StopReason::StartFailed);
                record.stopped_at = Some(Timestamp::now());
                self.inner.store.put_sandbox(&record)?;
                self.inner.counts.stopped[stop_index(StopReason::StartFailed)]
                    .fetch_add(1, Ordering::Relaxed);
                self.store_event(&record.id, format!("failed to start: {e}"));
                Err(e.into())
            }
        }
    }

    fn insert_entry(&self, provider: Arc<dyn Provider>, record: SandboxRecord) -> Arc<Entry> {
        let id = record.id.clone();
        let expires_at = record.expires_at;
        let entry = Arc::new(Entry {
            provider,
            record: Mutex::new(record),
            stopping: AtomicBool::new(false),
            stop_lock: tokio::sync::Mutex::new(()),
            timer: Mutex::new(None),
            pending_logs: Mutex::new(Vec::new()),
            samples: Mutex::new(Samples::default()),
        });
        let running = lock(&entry.record).status == SandboxStatus::Running;
        lock(&self.inner.entries).insert(id.clone(), entry.clone());
        // A paused sandbox's lifetime clock stands still: no timer until it resumes.
        if running {
            self.arm_timer(&entry, id, expires_at);
        }
        entry
    }

    fn arm_timer(&self, entry: &Arc<Entry>, id: SandboxId, expires_at: Timestamp) {
        let weak = Arc::downgrade(&self.inner);
        let wait = Duration::from_millis(
            u64::try_from(expires_at.ms_since(Timestamp::now())).unwrap_or(0),
        );
        let handle = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            // The stop runs in its own task: stopping aborts this timer task.
            tokio::spawn(async move {
                if let Some(inner) = weak.upgrade() {
                    let mgr = Manager { inner };
                    if let Some(entry) = mgr.entry(&id)
                        && let Err(e) = mgr
                            .stop_entry(&entry, StopReason::Expired, Termination::Force)
                            .await
                    {
                        tracing::error!(sandbox = %id, error = %e, "could not stop an expired sandbox");
                    }
                }
            });
        });
        if let Some(old) = lock(&entry.timer).replace(handle) {
            old.abort();
        }
    }

    fn entry(&self, id: &SandboxId) -> Option<Arc<Entry>> {
        lock(&self.inner.entries).get(id).cloned()
    }

    /// The stored record of a sandbox, or `NotFound`.
    fn stored(&self, id: &SandboxId) -> Result<SandboxRecord, ManagerError> {
        self.inner
            .store
            .get_sandbox(id)?
            .ok_or_else(|| ManagerError::NotFound(id.clone()))
    }

    /// The record of any sandbox, active or stopped.
    pub fn get(&self, id: &SandboxId) -> Result<SandboxRecord, ManagerError> {
        if let Some(e) = self.entry(id) {
            return Ok(e.record());
        }
        self.stored(id)
    }

    pub fn list(&self, filter: &ListFilter) -> Result<Vec<SandboxRecord>, ManagerError> {
        Ok(self.inner.store.list_sandboxes(filter)?)
    }

    /// An active, running sandbox, or the error that says why it is not one.
    fn running_entry(&self, id: &SandboxId) -> Result<Arc<Entry>, ManagerError> {
        match self.entry(id) {
            Some(e) => {
                let status = lock(&e.record).status;
                match status {
                    SandboxStatus::Running => Ok(e),
                    other => Err(ManagerError::Precondition(format!(
                        "sandbox {id} is {}, not running",
                        other.as_str()
                    ))),
                }
            }
            None => match self.inner.store.get_sandbox(id)? {
                Some(r) => Err(ManagerError::Precondition(format!(
                    "sandbox {id} is stopped ({}); create a new one",
                    r.stop_reason.map_or("stopped", StopReason::as_str)
                ))),
                None => Err(ManagerError::NotFound(id.clone())),
            },
        }
    }

    pub async fn exec(
        &self,
        id: &SandboxId,
        p: ExecParams,
    ) -> Result<ExecutionRecord, ManagerError> {
        let entry = self.running_entry(id)?;
        // The sandbox's own variables first, the request's over them.
        let mut env = lock(&entry.record).env_vars.clone();
        env.extend(p.env);
        let req = ExecRequest {
            id: ExecutionId::generate(),
            argv: ExecRequest::argv_for(&p.command, &p.args),
            command: p.command,
            args: p.args,
            env,
            cwd: p.cwd,
            user: p.user,
            stdin: p.stdin,
            timeout: p.timeout,
            capture_output: p.capture_output,
            cancel: p.cancel.clone(),
            control: p.control.clone(),
        };
        let mut rec = ExecutionRecord {
            id: req.id.clone(),
            sandbox_id: id.clone(),
            command: req.command.clone(),
            args: req.args.clone(),
            cwd: req.cwd.clone(),
            user: req.user,
            status: ExecStatus::Running,
            outcome: ExecOutcome::default(),
            error: None,
            started_at: Timestamp::now(),
            finished_at: None,
        };
        self.inner.store.put_execution(&rec)?;
        self.inner.counts.executions.fetch_add(1, Ordering::Relaxed);

        let splitter = Arc::new(Mutex::new(LineSplitter::default()));
        let sink: OutputSink = {
            let splitter = splitter.clone();
            let entry = Arc::downgrade(&entry);
            let keep = self.inner.config.log_keep;
            let tap = p.on_output.clone();
            Arc::new(move |stream, chunk| {
                if let Some(tap) = &tap {
                    tap(stream, chunk);
                    if stream == Stream::Stdout {
                        return;
                    }
                }
                let mut lines = Vec::new();
                lock(&splitter).feed(stream, chunk, &mut lines);
                if let (false, Some(entry)) = (lines.is_empty(), entry.upgrade()) {
                    push_pending(&entry, lines, keep);
                }
            })
        };
        let result = entry.provider.exec(id, &req, sink).await;
        let mut tail = Vec::new();
        lock(&splitter).finish(&mut tail);
        push_pending(&entry, tail, self.inner.config.log_keep);
        rec.finished_at = Some(Timestamp::now());

        let outcome = match result {
            Ok(mut outcome) => {
                if !req.capture_output {
                    outcome.stdout.clear();
                    outcome.stderr.clear();
                }
                rec.status = ExecStatus::Finished;
                if outcome.sandbox_ended {
                    let why = self.stop_reason_after_end(&entry).await;
                    rec.error = Some(format!(
                        "the sandbox stopped while the process ran ({why}); the process was killed"
                    ));
                }
                outcome
            }
            Err(ProviderError::Invalid(msg)) => {
                rec.status = ExecStatus::StartFailed;
                rec.error = Some(msg.clone());
                self.inner.store.put_execution(&rec)?;
                self.flush_logs(&entry);
                return Err(ManagerError::Invalid(msg));
            }
            Err(ProviderError::NotRunning(_)) => {
                // The sandbox ended before the process could start.
                let why = self.stop_reason_after_end(&entry).await;
                rec.status = ExecStatus::Interrupted;
                rec.error = Some(format!(
                    "the sandbox stopped ({why}) before the process started"
                ));
                self.inner.store.put_execution(&rec)?;
                self.flush_logs(&entry);
                return Err(ManagerError::Precondition(format!(
                    "sandbox {id} stopped ({why}) before the process started"
                )));
            }
            Err(e) => {
                rec.status = ExecStatus::Interrupted;
                rec.error = Some(e.to_string());
                self.inner.store.put_execution(&rec)?;
                self.flush_logs(&entry);
                return Err(e.into());
            }
        };
        if outcome.oom_killed {
            // Counted now: the sandbox may be gone before the sampler's next look.
            if let Ok(c) = entry.provider.counters(id).await {
                let mut s = lock(&entry.samples);
                self.note_counters(&mut s, c.oom_kills, c.pids_limit_hits, Instant::now());
            }
            self.event(
                &entry,
                format!(
                    "process {} ({}) was killed by the memory limit ({} MB)",
                    outcome.pid,
                    short(&rec.command),
                    lock(&entry.record).resources.memory_mb
                ),
            );
        }
        if outcome.timed_out {
            self.event(
                &entry,
                format!(
                    "process {} ({}) ran past its timeout of {} s and was killed",
                    outcome.pid,
                    short(&rec.command),
                    req.timeout.as_secs()
                ),
            );
        }
        rec.outcome = outcome;
        self.inner.store.put_execution(&rec)?;
        self.flush_logs(&entry);
        Ok(rec)
    }

    /// Freezes a running sandbox: no CPU, memory and files kept, and its lifetime clock
    /// stops until it resumes.
    pub async fn pause(&self, id: &SandboxId) -> Result<SandboxRecord, ManagerError> {
        let entry = self.running_entry(id)?;
        let _serial = entry.stop_lock.lock().await;
        if lock(&entry.record).status != SandboxStatus::Running {
            return Err(ManagerError::Precondition(format!(
                "sandbox {id} is not running"
            )));
        }
        entry.provider.pause(id).await?;
        if let Some(t) = lock(&entry.timer).take() {
            t.abort();
        }
        let record = {
            let mut r = lock(&entry.record);
            r.status = SandboxStatus::Paused;
            r.paused_at = Some(Timestamp::now());
            r.clone()
        };
        self.inner.store.put_sandbox(&record)?;
        let left = record.expires_at.ms_since(Timestamp::now()).max(0) / 1000;
        self.event(&entry, format!("paused with {left} s of its lifetime left"));
        Ok(record)
    }

    /// Thaws a paused sandbox; its expiry moves on by the time it was paused.
    pub async fn resume(&self, id: &SandboxId) -> Result<SandboxRecord, ManagerError> {
        let entry = self.active_entry(id)?;
        let _serial = entry.stop_lock.lock().await;
        let paused_at = {
            let r = lock(&entry.record);
            match (r.status, r.paused_at) {
                (SandboxStatus::Paused, Some(at)) => at,
                (other, _) => {
                    return Err(ManagerError::Precondition(format!(
                        "sandbox {id} is {}, not paused",
                        other.as_str()
                    )));
                }
            }
        };
        entry.provider.resume(id).await?;
        let now = Timestamp::now();
        let record = {
            let mut r = lock(&entry.record);
            r.status = SandboxStatus::Running;
            r.expires_at = r.expires_at.plus_ms(now.ms_since(paused_at).max(0));
            r.paused_at = None;
            r.clone()
        };
        self.inner.store.put_sandbox(&record)?;
        entry.provider.set_deadline(id, record.expires_at).await?;
        self.arm_timer(&entry, id.clone(), record.expires_at);
        self.event(
            &entry,
            format!(
                "resumed after {} s paused; it now expires at {}",
                now.ms_since(paused_at).max(0) / 1000,
                record.expires_at
            ),
        );
        Ok(record)
    }

    /// Sets the rest of a sandbox's lifetime to `timeout` from now (extending or
    /// shortening it). For a paused sandbox the time starts when it resumes.
    pub async fn set_timeout(
        &self,
        id: &SandboxId,
        timeout: Duration,
    ) -> Result<SandboxRecord, ManagerError> {
        let entry = self.active_entry(id)?;
        let _serial = entry.stop_lock.lock().await;
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let record = {
            let mut r = lock(&entry.record);
            if r.status == SandboxStatus::Stopped {
                return Err(ManagerError::Precondition(format!(
                    "sandbox {id} is stopped"
                )));
            }
            r.expires_at = match r.paused_at {
                Some(at) => at.plus_ms(ms),
                None => Timestamp::now().plus_ms(ms),
            };
            r.timeout_s = timeout.as_secs();
            r.clone()
        };
        self.inner.store.put_sandbox(&record)?;
        if record.status == SandboxStatus::Running {
            entry.provider.set_deadline(id, record.expires_at).await?;
            self.arm_timer(&entry, id.clone(), record.expires_at);
        }
        self.event(
            &entry,
            format!(
                "lifetime set to {} s from now (expires at {})",
                timeout.as_secs(),
                record.expires_at
            ),
        );
        Ok(record)
    }

    /// Makes template `name` from an active sandbox (see
    /// [`Provider::export_template`]); the new template's defaults are the sandbox's
    /// resources and environment.
    pub async fn export_template(
        &self,
        id: &SandboxId,
        name: &str,
        include_data: bool,
        progress: crate::template::CopyProgress,
    ) -> Result<crate::template::TemplateInfo, ManagerError> {
        let entry = self.active_entry(id)?;
        let record = entry.record();
        let parent = entry
            .provider
            .template_info()
            .into_iter()
            .find(|t| t.name == record.template);
        let defaults = crate::template::TemplateDefaults {
            memory_mb: Some(record.resources.memory_mb),
            cpu_count: Some(record.resources.cpu_count),
            timeout_s: None,
            env_vars: record.env_vars.clone(),
            start_command: parent
                .as_ref()
                .and_then(|p| p.defaults.start_command.clone()),
            metadata: parent
                .as_ref()
                .map(|p| p.defaults.metadata.clone())
                .unwrap_or_default(),
            category: parent.and_then(|p| p.defaults.category),
        };
        let info = entry
            .provider
            .export_template(id, name, include_data, defaults, progress)
            .await?;
        self.event(
            &entry,
            format!(
                "exported as template `{name}` ({:.1} MB, {} files{})",
                info.size_bytes as f64 / (1024.0 * 1024.0),
                info.files_count,
                if include_data {
                    ", home directory included"
                } else {
                    ""
                }
            ),
        );
        Ok(info)
    }

    /// Templates that active sandboxes were made from.
    pub fn templates_in_use(&self) -> Vec<String> {
        lock(&self.inner.entries)
            .values()
            .map(|e| lock(&e.record).template.clone())
            .collect()
    }

    /// An active (running or paused) sandbox, or the error that says why it is not one.
    fn active_entry(&self, id: &SandboxId) -> Result<Arc<Entry>, ManagerError> {
        match self.entry(id) {
            Some(e) => Ok(e),
            None => {
                let r = self.stored(id)?;
                Err(ManagerError::Precondition(format!(
                    "sandbox {id} is stopped ({}); create a new one",
                    r.stop_reason.map_or("stopped", StopReason::as_str)
                )))
            }
        }
    }

    /// Why a sandbox whose init is gone stopped, once the stop is recorded (a
    /// termination holds `stop_lock` until it is; a crash is recorded by `watch_exits`).
    async fn stop_reason_after_end(&self, entry: &Arc<Entry>) -> &'static str {
        for _ in 0..100 {
            {
                let _serial = entry.stop_lock.lock().await;
                if let Some(r) = lock(&entry.record).stop_reason {
                    return r.as_str();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        "it stopped"
    }

    pub async fn terminate(
        &self,
        id: &SandboxId,
        force: bool,
    ) -> Result<TerminateOutcome, ManagerError> {
        let Some(entry) = self.entry(id) else {
            let record = self.stored(id)?;
            return Ok(TerminateOutcome {
                record,
                already_stopped: true,
            });
        };
        let how = if force {
            Termination::Force
        } else {
            Termination::Graceful {
                grace: self.inner.config.terminate_grace,
            }
        };
        self.stop_entry(&entry, StopReason::Terminated, how).await
    }

    async fn stop_entry(
        &self,
        entry: &Arc<Entry>,
        reason: StopReason,
        how: Termination,
    ) -> Result<TerminateOutcome, ManagerError> {
        let _serial = entry.stop_lock.lock().await;
        if lock(&entry.record).status == SandboxStatus::Stopped {
            return Ok(TerminateOutcome {
                record: entry.record(),
                already_stopped: true,
            });
        }
        let id = entry.id();
        entry.stopping.store(true, Ordering::SeqCst);
        if let Err(e) = entry.provider.terminate(&id, how).await {
            entry.stopping.store(false, Ordering::SeqCst);
            self.event(entry, format!("termination failed: {e}"));
            return Err(e.into());
        }
        self.finish_stop(entry, reason, None);
        Ok(TerminateOutcome {
            record: entry.record(),
            already_stopped: false,
        })
    }

    /// Records a stop whose host side is already gone.
    fn finish_stop(&self, entry: &Arc<Entry>, reason: StopReason, detail: Option<String>) {
        if let Some(t) = lock(&entry.timer).take() {
            t.abort();
        }
        let record = {
            let mut r = lock(&entry.record);
            r.status = SandboxStatus::Stopped;
            r.stop_reason = Some(reason);
            r.stopped_at = Some(Timestamp::now());
            r.clone()
        };
        self.inner.counts.stopped[stop_index(reason)].fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.inner.store.put_sandbox(&record) {
            tracing::error!(sandbox = %record.id, error = %e, "could not record a stopped sandbox");
        }
        let what = match reason {
            StopReason::Terminated => "terminated on request".to_owned(),
            StopReason::Expired => format!("expired after its lifetime of {} s", record.timeout_s),
            StopReason::Crashed => "crashed".to_owned(),
            StopReason::Lost => "lost".to_owned(),
            StopReason::StartFailed => "failed to start".to_owned(),
        };
        let msg = match detail {
            Some(d) => format!("{what}: {d}"),
            None => what,
        };
        self.event(entry, msg);
        self.flush_logs(entry);
        lock(&self.inner.entries).remove(&record.id);
    }

    /// Status, usage, health and recent logs of one sandbox.
    pub async fn status(
        &self,
        id: &SandboxId,
        log_lines: usize,
    ) -> Result<StatusReport, ManagerError> {
        let Some(entry) = self.entry(id) else {
            let record = self.stored(id)?;
            let end = record.stopped_at.unwrap_or(record.created_at);
            let health = health::evaluate(&health::Inputs {
                stopped: Some(record.stop_reason.unwrap_or(StopReason::Lost)),
                ..health::Inputs::default()
            });
            return Ok(StatusReport {
                uptime_s: end.ms_since(record.created_at).max(0) as f64 / 1000.0,
                usage: None,
                processes_running: 0,
                oom_kills: 0,
                health,
                recent_logs: self.inner.store.recent_logs(id, log_lines)?,
                record,
            });
        };
        let (record, usage, health) = self.measure(&entry).await;
        let mut logs = self.inner.store.recent_logs(id, log_lines)?;
        logs.extend(lock(&entry.pending_logs).iter().cloned());
        logs.sort_by_key(|l| l.at);
        let skip = logs.len().saturating_sub(log_lines);
        logs.drain(..skip);
        let (processes, oom_kills) = usage
            .as_ref()
            .map_or((0, 0), |(_, u)| (u.pids.saturating_sub(1), u.oom_kills));
        Ok(StatusReport {
            uptime_s: Timestamp::now().ms_since(record.created_at).max(0) as f64 / 1000.0,
            usage: usage.map(|(r, _)| r),
            processes_running: processes,
            oom_kills,
            health,
            recent_logs: logs,
            record,
        })
    }

    /// Reads an active sandbox's usage and asks its init for a sign of life (not when
    /// paused: it is frozen), then applies the health rules.
    async fn measure(
        &self,
        entry: &Arc<Entry>,
    ) -> (
        SandboxRecord,
        Option<(UsageReport, crate::model::ResourceUsage)>,
        Health,
    ) {
        let record = entry.record();
        let id = &record.id;
        let paused = record.status == SandboxStatus::Paused;
        let usage = entry.provider.usage(id, true).await;
        let ping = if paused {
            None
        } else {
            Some(
                entry
                    .provider
                    .ping(id, Duration::from_secs(2))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            )
        };
        let now = Instant::now();
        let recent = Duration::from_secs(health::RECENT_SECS);
        let facts = match &usage {
            Ok(u) => {
                let mut s = lock(&entry.samples);
                self.note_counters(&mut s, u.oom_kills, u.pids_limit_hits, now);
                Some(Ok(health::UsageFacts {
                    memory_bytes: u.memory_bytes,
                    memory_limit_bytes: u.memory_limit_bytes,
                    pids: u.pids,
                    pids_max: u.pids_max,
                    oom_kills: u.oom_kills,
                    oom_kill_recent: s
                        .oom_last_increase
                        .is_some_and(|t| now.duration_since(t) < recent),
                    pids_limit_hit_recent: s
                        .pids_last_hit
                        .is_some_and(|t| now.duration_since(t) < recent),
                }))
            }
            Err(e) => Some(Err(e.to_string())),
        };
        let health = health::evaluate(&health::Inputs {
            stopped: None,
            paused,
            usage: facts,
            init_answer: ping,
        });
        let report = usage.ok().map(|u| {
            let cpu_percent = {
                let s = lock(&entry.samples);
                match s.cpu {
                    Some((at, ns)) if now.duration_since(at) >= Duration::from_millis(100) => {
                        pct(u.cpu_usage_ns.saturating_sub(ns), now.duration_since(at))
                    }
                    // Younger than one sampling interval: its average so far.
                    _ => {
                        let age = Timestamp::now().ms_since(record.created_at).max(1);
                        pct(u.cpu_usage_ns, Duration::from_millis(age as u64))
                    }
                }
            };
            (
                UsageReport {
                    cpu_percent: if paused { 0.0 } else { cpu_percent },
                    memory_mb: mb(u.memory_bytes),
                    memory_limit_mb: mb(u.memory_limit_bytes),
                    disk_mb: mb(u.disk_bytes),
                    pids: u.pids,
                },
                u,
            )
        });
        (record, report, health)
    }

    /// The health of every active sandbox and of the fleet.
    pub async fn fleet_health(&self) -> Result<FleetHealth, ManagerError> {
        let entries: Vec<Arc<Entry>> = lock(&self.inner.entries).values().cloned().collect();
        let mut set = tokio::task::JoinSet::new();
        for entry in entries {
            let mgr = self.clone();
            set.spawn(async move { mgr.measure(&entry).await });
        }
        let mut sandboxes = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok((record, usage, health)) = r {
                sandboxes.push(SandboxHealth {
                    record,
                    usage: usage.map(|(r, _)| r),
                    health,
                });
            }
        }
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.record.created_at));
        let since = Timestamp::now().plus_ms(-(FAILED_WINDOW_MS));
        let failed: Vec<SandboxRecord> = self
            .inner
            .store
            .list_sandboxes(&ListFilter {
                status: Some(crate::model::StatusFilter::Stopped),
                ..ListFilter::default()
            })?
            .into_iter()
            .filter(|r| {
                r.stop_reason.is_some_and(|x| !x.is_normal())
                    && r.stopped_at.is_some_and(|t| t >= since)
            })
            .collect();
        Ok(FleetHealth { sandboxes, failed })
    }

    fn event(&self, entry: &Entry, msg: String) {
        let id = entry.id();
        self.store_event(&id, msg);
    }

    fn store_event(&self, id: &SandboxId, msg: String) {
        tracing::info!(sandbox = %id, "{msg}");
        let line = LogLine {
            at: Timestamp::now(),
            stream: Stream::Event,
            line: msg,
        };
        if let Err(e) = self
            .inner
            .store
            .append_logs(id, &[line], self.inner.config.log_keep)
        {
            tracing::error!(sandbox = %id, error = %e, "could not store an event");
        }
    }

    fn flush_logs(&self, entry: &Entry) {
        let lines = std::mem::take(&mut *lock(&entry.pending_logs));
        if lines.is_empty() {
            return;
        }
        let id = entry.id();
        if let Err(e) = self
            .inner
            .store
            .append_logs(&id, &lines, self.inner.config.log_keep)
        {
            tracing::error!(sandbox = %id, error = %e, "could not store output lines");
        }
    }

    /// Adopts what survived a restart; cleans up and records what did not.
    async fn recover(&self) -> Result<(), ManagerError> {
        let interrupted = self.inner.store.interrupt_executions(None)?;
        if interrupted > 0 {
            tracing::warn!(
                count = interrupted,
                "executions were running when the server stopped; marked interrupted"
            );
        }
        for mut record in self.inner.store.active_sandboxes()? {
            let Some(provider) = self.inner.providers.get(&record.provider).cloned() else {
                tracing::warn!(sandbox = %record.id, provider = %record.provider, "provider not configured; sandbox left as recorded");
                continue;
            };
            let id = record.id.clone();
            let adoption = if record.status == SandboxStatus::Creating {
                // Creation never finished: whatever was made goes.
                provider.adopt(&id, &serde_json::Value::Null, false).await
            } else {
                provider
                    .adopt(&id, &record.runtime, record.status == SandboxStatus::Paused)
                    .await
            };
            match adoption {
                Ok(Adoption::Adopted) => {
                    let expired = record.status == SandboxStatus::Running
                        && record.expires_at <= Timestamp::now();
                    let entry = self.insert_entry(provider, record.clone());
                    self.event(&entry, "adopted again after a server restart".into());
                    if expired
                        && let Err(e) = self
                            .stop_entry(&entry, StopReason::Expired, Termination::Force)
                            .await
                    {
                        tracing::error!(sandbox = %id, error = %e, "could not stop an expired sandbox");
                    }
                }
                Ok(Adoption::Gone { detail }) => {
                    let was_creating = record.status == SandboxStatus::Creating;
                    record.status = SandboxStatus::Stopped;
                    record.stop_reason = Some(if was_creating {
                        StopReason::StartFailed
                    } else {
                        StopReason::Lost
                    });
                    record.stopped_at = Some(Timestamp::now());
                    self.inner.store.put_sandbox(&record)?;
                    self.store_event(&id, format!("lost while the server was down: {detail}"));
                }
                Err(e) => {
                    tracing::error!(sandbox = %id, error = %e, "could not adopt or clean up a sandbox; left as recorded");
                }
            }
        }
        Ok(())
    }
}

fn push_pending(entry: &Entry, lines: Vec<LogLine>, keep: usize) {
    if lines.is_empty() {
        return;
    }
    let mut pending = lock(&entry.pending_logs);
    pending.extend(lines);
    if pending.len() > keep {
        let excess = pending.len() - keep;
        pending.drain(..excess);
    }
}

fn note_counters(s: &mut Samples, oom: u64, pids_hits: u64, now: Instant) {
    if oom > s.oom_count {
        s.oom_last_increase = Some(now);
    }
    s.oom_count = s.oom_count.max(oom);
    if pids_hits > s.pids_hits {
        s.pids_last_hit = Some(now);
    }
    s.pids_hits = s.pids_hits.max(pids_hits);
}

fn pct(cpu_ns: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    ((cpu_ns as f64 / 1e9) / secs * 1000.0).round() / 10.0
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

fn short(command: &str) -> String {
    let mut s: String = command.chars().take(60).collect();
    if s.len() < command.len() {
        s.push('…');
    }
    s
}

/// Records sandboxes that ended on their own.
async fn watch_exits(
    inner: Weak<Inner>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<UnexpectedExit>,
) {
    while let Some(exit) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let mgr = Manager { inner };
        let Some(entry) = mgr.entry(&exit.id) else {
            continue;
        };
        if entry.stopping.load(Ordering::SeqCst) {
            continue;
        }
        let _serial = entry.stop_lock.lock().await;
        if lock(&entry.record).status != SandboxStatus::Stopped {
            mgr.finish_stop(&entry, StopReason::Crashed, Some(exit.detail));
        }
    }
}

/// The sampler measures writable layers every this many ticks.
const DISK_EVERY: u64 = 10;

/// Reads the usage of active sandboxes (CPU, memory, pids, disk, OOM kills) and flushes
/// their pending output lines. The readings feed health, the auto-scaler and the monitor.
async fn sampler(inner: Weak<Inner>) {
    let interval = match inner.upgrade() {
        Some(i) => i.config.sample_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let Some(inner) = inner.upgrade() else { return };
        let mgr = Manager { inner };
        let entries: Vec<Arc<Entry>> = lock(&mgr.inner.entries).values().cloned().collect();
        for entry in entries {
            // The writable layer's size takes a walk of its files: every tenth tick, and
            // at a sandbox's first reading.
            let last_disk = lock(&entry.samples)
                .latest
                .as_ref()
                .map(|l| l.usage.disk_bytes);
            let disk = last_disk.is_none() || ticks.is_multiple_of(DISK_EVERY);
            let (id, status, created_at) = {
                let r = lock(&entry.record);
                (r.id.clone(), r.status, r.created_at)
            };
            if matches!(status, SandboxStatus::Running | SandboxStatus::Paused)
                && let Ok(mut u) = entry.provider.usage(&id, disk).await
            {
                if !disk {
                    u.disk_bytes = last_disk.unwrap_or(0);
                    if u.disk_total_bytes == 0 {
                        u.disk_total_bytes = lock(&entry.samples)
                            .latest
                            .as_ref()
                            .map_or(0, |l| l.usage.disk_total_bytes);
                    }
                }
                let now = Instant::now();
                let mut s = lock(&entry.samples);
                let cpu_percent = match s.cpu {
                    _ if status == SandboxStatus::Paused => 0.0,
                    Some((at, ns)) if now > at => {
                        pct(u.cpu_usage_ns.saturating_sub(ns), now.duration_since(at))
                    }
                    Some(_) => s.latest.as_ref().map_or(0.0, |l| l.cpu_percent),
                    // First reading: its average since it was created.
                    None => {
                        let age = Timestamp::now().ms_since(created_at).max(1);
                        pct(u.cpu_usage_ns, Duration::from_millis(age as u64))
                    }
                };
                s.cpu = Some((now, u.cpu_usage_ns));
                mgr.note_counters(&mut s, u.oom_kills, u.pids_limit_hits, now);
                let sample = UsageSample {
                    sampled_at: Timestamp::now(),
                    cpu_percent,
                    usage: u,
                };
                s.history.offer(&sample);
                s.latest = Some(sample);
            }
            mgr.flush_logs(&entry);
        }
    }
}
