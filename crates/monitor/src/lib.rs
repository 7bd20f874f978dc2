//! The monitor: a background collector that reads the host (CPU, memory, disks,
//! network, GPUs) every interval on a thread of its own, keeps the last hour of
//! readings in memory and one-minute aggregates in the store (seven days), and answers
//! from what it has: no query ever waits for a fresh reading. It also renders the
//! Prometheus exposition: host gauges, every active sandbox's last usage sample (read by
//! the manager's sampler, never per scrape), lifecycle counters and the front ends'
//! latency histograms.
//!
//! Must never: read cgroups itself (sandbox usage is the manager's), block a query on
//! the collector, or decide anything about sandboxes.

pub mod gpu;
pub mod history;
pub mod host;
pub mod prometheus;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use quantbox_sandbox::{Manager, SandboxStatus, StoreError, Timestamp};

pub use gpu::{GpuDevice, GpuReading};
pub use history::{Metric, MinuteAgg, Summary};
pub use host::{HostInfo, HostReading};
use prometheus::{Encoder, HistogramVec, Kind};

/// Where minute aggregates are kept (the store implements it).
pub trait MetricStore: Send + Sync {
    /// Writes aggregates; one that exists for the same metric and minute is merged.
    fn put_minutes(&self, rows: &[(Metric, MinuteAgg)]) -> Result<(), StoreError>;
    /// Aggregates of `metric` with `from_s <= minute < to_s`, oldest first.
    fn minutes(&self, metric: Metric, from_s: i64, to_s: i64)
    -> Result<Vec<MinuteAgg>, StoreError>;
    /// Removes aggregates of minutes before `before_s`; returns how many.
    fn prune_minutes(&self, before_s: i64) -> Result<u64, StoreError>;
}

#[derive(Clone, Debug)]
pub struct MonitorConfig {
    /// Between two readings of the host.
    pub interval: Duration,
    /// Readings kept in memory at full resolution.
    pub window: Duration,
    /// Minute aggregates kept in the store.
    pub retention: Duration,
    /// Reported as `quantbox_build_info{version}`.
    pub version: String,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            window: Duration::from_secs(3600),
            retention: Duration::from_secs(7 * 86_400),
            version: String::new(),
        }
    }
}

/// Shortest interval: CPU usage needs readings at least this far apart.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("starting the metrics collector: {0}")]
    Start(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The collector's last reading.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken_at: Timestamp,
    pub reading: HostReading,
    pub gpu: GpuReading,
    /// Readings taken so far (1 = only the priming one: no CPU usage, no rates yet).
    pub seq: u64,
}

/// A metric's history over a range.
#[derive(Clone, Debug)]
pub struct HistoryAnswer {
    pub metric: Metric,
    pub from: Timestamp,
    pub to: Timestamp,
    pub summary: Summary,
    /// Why there is nothing, when there is nothing.
    pub note: Option<String>,
}

/// What the collector itself costs.
#[derive(Clone, Copy, Debug)]
pub struct CollectorCost {
    pub readings: u64,
    /// CPU time of the collector thread.
    pub cpu: Duration,
    /// How long the collector has run.
    pub running_for: Duration,
}

struct Shared {
    config: MonitorConfig,
    info: HostInfo,
    started_at: Timestamp,
    started: Instant,
    latest: RwLock<Arc<Snapshot>>,
    history: Mutex<History>,
    store: Option<Arc<dyn MetricStore>>,
    manager: Option<Manager>,
    cpu_ns: AtomicU64,
    readings: AtomicU64,
    stop: Mutex<Option<Sender<()>>>,
    /// What earlier runs stored of the minute this one started in (the readings in
    /// memory cover only its rest, until that minute leaves memory).
    carry: Vec<(Metric, MinuteAgg)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    http: HistogramVec,
    tools: HistogramVec,
}

use history::History;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Cheap to clone; all clones share one collector.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Shared>,
}

impl Monitor {
    /// Takes a first reading and starts the collector thread.
    pub fn start(
        mut config: MonitorConfig,
        manager: Option<Manager>,
        store: Option<Arc<dyn MetricStore>>,
    ) -> Result<Self, MonitorError> {
        config.interval = config.interval.max(MIN_INTERVAL);
        let mut sampler = host::HostSampler::new().map_err(MonitorError::Start)?;
        let gpu = gpu::GpuSampler::new();
        let first = Snapshot {
            taken_at: Timestamp::now(),
            reading: sampler.read(),
            gpu: gpu.read(),
            seq: 1,
        };
        let window_ms = i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX);
        let minute = first.taken_at.unix_ms().div_euclid(60_000) * 60;
        let mut carry = Vec::new();
        if let Some(store) = &store {
            for m in Metric::ALL {
                carry.extend(
                    store
                        .minutes(m, minute, minute + 60)?
                        .into_iter()
                        .map(|a| (m, a)),
                );
            }
        }
        let shared = Arc::new(Shared {
            info: host::HostSampler::info(),
            started_at: first.taken_at,
            started: Instant::now(),
            latest: RwLock::new(Arc::new(first.clone())),
            history: Mutex::new(History::new(window_ms)),
            store,
            manager,
            cpu_ns: AtomicU64::new(0),
            readings: AtomicU64::new(1),
            stop: Mutex::new(None),
            carry,
            thread: Mutex::new(None),
            http: HistogramVec::new(
                "quantbox_http_request_duration_seconds",
                "Time to answer an HTTP request (REST under /api/v1, MCP at /mcp, /metrics), by method, matched route and status code.",
                &["method", "route", "status"],
            ),
            tools: HistogramVec::new(
                "quantbox_mcp_tool_call_duration_seconds",
                "Time to answer an MCP tools/call, by tool, transport (stdio or http) and outcome (ok or the error code).",
                &["tool", "transport", "outcome"],
            ),
            config,
        });
        record(&shared, &first);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        *lock(&shared.stop) = Some(tx);
        // The thread holds the state weakly: when the last handle goes (without a
        // shutdown), the stop channel closes and the thread ends.
        let weak = Arc::downgrade(&shared);
        let handle = std::thread::Builder::new()
            .name("quantbox-monitor".into())
            .spawn(move || collect(&weak, sampler, gpu, rx))
            .map_err(|e| MonitorError::Start(format!("starting its thread: {e}")))?;
        *lock(&shared.thread) = Some(handle);
        Ok(Self { inner: shared })
    }

    /// Stops the collector and writes the minutes in progress to the store. Idempotent.
    pub fn shutdown(&self) {
        drop(lock(&self.inner.stop).take());
        if let Some(t) = lock(&self.inner.thread).take() {
            let _ = t.join();
        }
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.inner.config
    }

    pub fn host_info(&self) -> &HostInfo {
        &self.inner.info
    }

    pub fn started_at(&self) -> Timestamp {
        self.inner.started_at
    }

    /// The last reading (never waits for a new one).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn manager(&self) -> Option<&Manager> {
        self.inner.manager.as_ref()
    }

    /// Latency of HTTP requests, fed by the server's middleware.
    pub fn http_latency(&self) -> &HistogramVec {
        &self.inner.http
    }

    /// Latency of MCP tool calls, fed by the MCP front end.
    pub fn tool_latency(&self) -> &HistogramVec {
        &self.inner.tools
    }

    pub fn cost(&self) -> CollectorCost {
        CollectorCost {
            readings: self.inner.readings.load(Ordering::Relaxed),
            cpu: Duration::from_nanos(self.inner.cpu_ns.load(Ordering::Relaxed)),
            running_for: self.inner.started.elapsed(),
        }
    }

    /// Adds readings recorded elsewhere (a benchmark's hour of history, say) before the
    /// collector's own; see [`History::prepend`].
    pub fn prepend_readings(&self, metric: Metric, readings: &[(i64, f64)]) {
        lock(&self.inner.history).prepend(metric, readings);
    }

    /// Readings of `metric` in memory over the last `range`.
    pub fn readings(&self, metric: Metric, range: Duration) -> Vec<(i64, f64)> {
        let to = Timestamp::now().unix_ms();
        let range_ms = i64::try_from(range.as_millis()).unwrap_or(i64::MAX / 2);
        lock(&self.inner.history).readings(metric, to - range_ms, to)
    }

    /// `metric` over the last `range`: readings in memory, minute aggregates from the
    /// store for the time before them.
    pub fn history(&self, metric: Metric, range: Duration) -> Result<HistoryAnswer, MonitorError> {
        let to = Timestamp::now();
        let range_ms = i64::try_from(range.as_millis()).unwrap_or(i64::MAX / 2);
        let from = Timestamp::from_unix_ms(to.unix_ms() - range_ms);
        let (readings, first_ms) = {
            let h = lock(&self.inner.history);
            (
                h.readings(metric, from.unix_ms(), to.unix_ms()),
                h.first_ms(metric),
            )
        };
        let from_s = from.unix_ms().div_euclid(60_000) * 60;
        // Minutes before the one the oldest reading in memory falls in (memory holds
        // whole minutes, but for this run's first).
        let until_s = first_ms.unwrap_or(to.unix_ms()).div_euclid(60_000) * 60;
        let mut minutes = match &self.inner.store {
            Some(store) if until_s > from_s => store.minutes(metric, from_s, until_s)?,
            _ => Vec::new(),
        };
        // This run's first minute: what earlier runs stored of it, before the readings.
        minutes.extend(
            self.inner
                .carry
                .iter()
                .filter(|(m, a)| *m == metric && a.minute >= until_s.max(from_s))
                .map(|(_, a)| *a),
        );
        let summary = history::summarize(&readings, &minutes, from.unix_ms(), to.unix_ms());
        let note = (summary.samples == 0).then(|| self.why_empty(metric, from, to));
        Ok(HistoryAnswer {
            metric,
            from,
            to,
            summary,
            note,
        })
    }

    /// [`Monitor::history`] of several metrics.
    pub fn histories(
        &self,
        metrics: &[Metric],
        range: Duration,
    ) -> Result<Vec<HistoryAnswer>, MonitorError> {
        metrics.iter().map(|&m| self.history(m, range)).collect()
    }

    fn why_empty(&self, metric: Metric, from: Timestamp, to: Timestamp) -> String {
        if metric == Metric::Gpu
            && let GpuReading::Unavailable { reason } = &self.snapshot().gpu
        {
            return format!("no GPU readings: {reason}");
        }
        let interval = self.inner.config.interval.as_secs_f64();
        format!(
            "no readings of {} between {from} and {to}: this collector started at {} and reads every {interval} s; readings older than an hour come from the store, which keeps one-minute aggregates for {} days",
            metric.name(),
            self.inner.started_at,
            self.inner.config.retention.as_secs() / 86_400,
        )
    }

    /// The Prometheus text exposition of everything the server measures.
    pub fn render_prometheus(&self) -> String {
        let snap = self.snapshot();
        let mut e = Encoder::with_capacity(64 * 1024);
        e.family(
            "quantbox_build_info",
            "quantbox version (always 1).",
            Kind::Gauge,
        );
        e.sample(
            "quantbox_build_info",
            &[("version", &self.inner.config.version)],
            1.0,
        );
        host_metrics(&mut e, &snap, &self.inner.info);
        let cost = self.cost();
        e.single(
            "quantbox_collector_readings_total",
            "Readings of the host the collector took.",
            Kind::Counter,
            cost.readings as f64,
        );
        e.single(
            "quantbox_collector_cpu_seconds_total",
            "CPU time the collector thread used.",
            Kind::Counter,
            cost.cpu.as_secs_f64(),
        );
        e.single(
            "quantbox_collector_last_reading_timestamp_seconds",
            "When the last reading of the host was taken, Unix seconds.",
            Kind::Gauge,
            snap.taken_at.unix_ms() as f64 / 1000.0,
        );
        if let Some(m) = &self.inner.manager {
            sandbox_metrics(&mut e, m);
        }
        self.inner.http.encode(&mut e);
        self.inner.tools.encode(&mut e);
        e.finish()
    }
}

fn host_metrics(e: &mut Encoder, snap: &Snapshot, info: &HostInfo) {
    let r = &snap.reading;
    e.family(
        "quantbox_host_info",
        "The host quantbox runs on (always 1).",
        Kind::Gauge,
    );
    e.sample(
        "quantbox_host_info",
        &[
            ("hostname", &info.hostname),
            ("os", &info.os),
            ("kernel", &info.kernel),
        ],
        1.0,
    );
    e.single(
        "quantbox_host_uptime_seconds",
        "Time since the host booted.",
        Kind::Gauge,
        r.uptime_s as f64,
    );
    e.single(
        "quantbox_host_cpu_cores",
        "Logical CPUs of the host.",
        Kind::Gauge,
        r.cores as f64,
    );
    if let Some(cpu) = &r.cpu {
        e.single(
            "quantbox_host_cpu_usage_ratio",
            "Busy share of all CPUs over the last collector interval (0-1).",
            Kind::Gauge,
            cpu.usage_percent / 100.0,
        );
        e.family(
            "quantbox_host_cpu_core_usage_ratio",
            "Busy share of one CPU over the last collector interval (0-1).",
            Kind::Gauge,
        );
        for (i, u) in cpu.per_core.iter().enumerate() {
            e.sample(
                "quantbox_host_cpu_core_usage_ratio",
                &[("core", &i.to_string())],
                u / 100.0,
            );
        }
    }
    e.family(
        "quantbox_host_load_average",
        "Load average over 1, 5 and 15 minutes.",
        Kind::Gauge,
    );
    for (w, v) in ["1m", "5m", "15m"].iter().zip(r.load_avg) {
        e.sample("quantbox_host_load_average", &[("window", w)], v);
    }
    let m = &r.memory;
    for (name, help, v) in [
        (
            "quantbox_host_memory_total_bytes",
            "Physical memory.",
            m.total_bytes,
        ),
        (
            "quantbox_host_memory_available_bytes",
            "Memory available for new work without swapping (MemAvailable).",
            m.available_bytes,
        ),
        (
            "quantbox_host_memory_used_bytes",
            "Memory in use: total - available.",
            m.used_bytes,
        ),
        (
            "quantbox_host_swap_total_bytes",
            "Swap space.",
            m.swap_total_bytes,
        ),
        (
            "quantbox_host_swap_used_bytes",
            "Swap space in use.",
            m.swap_used_bytes,
        ),
    ] {
        e.single(name, help, Kind::Gauge, v as f64);
    }
    for (name, help, get) in [
        (
            "quantbox_host_disk_total_bytes",
            "Size of a real filesystem.",
            (|d: &host::DiskReading| d.total_bytes) as fn(&host::DiskReading) -> u64,
        ),
        (
            "quantbox_host_disk_available_bytes",
            "Space an unprivileged user can still write.",
            |d: &host::DiskReading| d.available_bytes,
        ),
        (
            "quantbox_host_disk_used_bytes",
            "Space in use: total - free (as df says).",
            |d: &host::DiskReading| d.used_bytes,
        ),
    ] {
        e.family(name, help, Kind::Gauge);
        for d in &r.disks {
            e.sample(
                name,
                &[
                    ("mount_point", &d.mount_point),
                    ("filesystem", &d.filesystem),
                    ("device", &d.device),
                ],
                get(d) as f64,
            );
        }
    }
    for (name, help, rx) in [
        (
            "quantbox_host_network_receive_bytes_total",
            "Bytes received by an interface.",
            true,
        ),
        (
            "quantbox_host_network_transmit_bytes_total",
            "Bytes sent by an interface.",
            false,
        ),
    ] {
        e.family(name, help, Kind::Counter);
        for n in &r.network {
            let v = if rx {
                n.rx_bytes_total
            } else {
                n.tx_bytes_total
            };
            e.sample(name, &[("interface", &n.interface)], v as f64);
        }
    }
    match &snap.gpu {
        GpuReading::Unavailable { .. } => {
            e.single(
                "quantbox_gpu_devices",
                "NVIDIA GPUs NVML reports (0 when NVML is not available).",
                Kind::Gauge,
                0.0,
            );
        }
        GpuReading::Devices(devs) => {
            e.single(
                "quantbox_gpu_devices",
                "NVIDIA GPUs NVML reports (0 when NVML is not available).",
                Kind::Gauge,
                devs.len() as f64,
            );
            type Get = fn(&GpuDevice) -> Option<f64>;
            let gauges: [(&str, &str, Get); 5] = [
                (
                    "quantbox_gpu_utilization_ratio",
                    "Share of the last sample period a kernel ran on the GPU (0-1).",
                    |d| d.utilization_percent.map(|u| u / 100.0),
                ),
                ("quantbox_gpu_memory_total_bytes", "GPU memory.", |d| {
                    d.memory_total_bytes.map(|b| b as f64)
                }),
                (
                    "quantbox_gpu_memory_used_bytes",
                    "GPU memory allocated.",
                    |d| d.memory_used_bytes.map(|b| b as f64),
                ),
                (
                    "quantbox_gpu_temperature_celsius",
                    "GPU die temperature.",
                    |d| d.temperature_c,
                ),
                ("quantbox_gpu_power_watts", "GPU power draw.", |d| d.power_w),
            ];
            for (name, help, get) in gauges {
                e.family(name, help, Kind::Gauge);
                for d in devs {
                    if let Some(v) = get(d) {
                        e.sample(name, &[("gpu", &d.index.to_string()), ("name", &d.name)], v);
                    }
                }
            }
        }
    }
}

fn sandbox_metrics(e: &mut Encoder, m: &Manager) {
    let samples = m.samples();
    let (mut running, mut paused, mut creating) = (0, 0, 0);
    for s in &samples {
        match s.record.status {
            SandboxStatus::Running => running += 1,
            SandboxStatus::Paused => paused += 1,
            SandboxStatus::Creating => creating += 1,
            SandboxStatus::Stopped => {}
        }
    }
    e.family(
        "quantbox_sandboxes",
        "Active sandboxes by status.",
        Kind::Gauge,
    );
    for (st, n) in [
        ("running", running),
        ("paused", paused),
        ("creating", creating),
    ] {
        e.sample("quantbox_sandboxes", &[("status", st)], f64::from(n));
    }
    let c = m.counts();
    for (name, help, v) in [
        (
            "quantbox_sandboxes_created_total",
            "Sandboxes created since the server started.",
            c.created,
        ),
        (
            "quantbox_sandboxes_terminated_total",
            "Sandboxes terminated on request since the server started.",
            c.terminated,
        ),
        (
            "quantbox_sandboxes_expired_total",
            "Sandboxes ended by their lifetime since the server started.",
            c.expired,
        ),
        (
            "quantbox_sandboxes_crashed_total",
            "Sandboxes whose init ended unexpectedly since the server started.",
            c.crashed,
        ),
        (
            "quantbox_sandboxes_start_failed_total",
            "Sandbox creations that failed since the server started.",
            c.start_failed,
        ),
        (
            "quantbox_executions_total",
            "Processes run in sandboxes since the server started.",
            c.executions,
        ),
        (
            "quantbox_oom_kills_total",
            "Processes killed by a sandbox's memory limit since the server started.",
            c.oom_kills,
        ),
    ] {
        e.single(name, help, Kind::Counter, v as f64);
    }
    type Get = fn(&quantbox_sandbox::UsageSample) -> f64;
    let per: [(&str, &str, Kind, Get); 8] = [
        (
            "quantbox_sandbox_cpu_seconds_total",
            "CPU time used by a sandbox's processes.",
            Kind::Counter,
            |s| s.usage.cpu_usage_ns as f64 / 1e9,
        ),
        (
            "quantbox_sandbox_cpu_usage_ratio",
            "CPU used by a sandbox over the last sampling interval, in cores (1 = one full core).",
            Kind::Gauge,
            |s| s.cpu_percent / 100.0,
        ),
        (
            "quantbox_sandbox_memory_bytes",
            "Memory a sandbox uses (page cache that can be dropped excluded).",
            Kind::Gauge,
            |s| s.usage.memory_bytes as f64,
        ),
        (
            "quantbox_sandbox_memory_limit_bytes",
            "A sandbox's memory limit.",
            Kind::Gauge,
            |s| s.usage.memory_limit_bytes as f64,
        ),
        (
            "quantbox_sandbox_pids",
            "Processes and threads in a sandbox, its init included.",
            Kind::Gauge,
            |s| s.usage.pids as f64,
        ),
        (
            "quantbox_sandbox_pids_limit",
            "A sandbox's limit on processes and threads.",
            Kind::Gauge,
            |s| s.usage.pids_max as f64,
        ),
        (
            "quantbox_sandbox_disk_bytes",
            "Bytes a sandbox's writable layer holds.",
            Kind::Gauge,
            |s| s.usage.disk_bytes as f64,
        ),
        (
            "quantbox_sandbox_oom_kills_total",
            "Processes a sandbox's memory limit killed.",
            Kind::Counter,
            |s| s.usage.oom_kills as f64,
        ),
    ];
    for (name, help, kind, get) in per {
        e.family(name, help, kind);
        for s in &samples {
            if let Some(u) = &s.sample {
                e.sample(
                    name,
                    &[
                        ("sandbox_id", s.record.id.as_str()),
                        ("name", &s.record.name),
                    ],
                    get(u),
                );
            }
        }
    }
}

/// Puts a reading's figures into the history.
fn record(shared: &Shared, snap: &Snapshot) {
    let t = snap.taken_at.unix_ms();
    let r = &snap.reading;
    let running = shared.manager.as_ref().map(|m| {
        m.samples()
            .iter()
            .filter(|s| s.record.status == SandboxStatus::Running)
            .count() as f64
    });
    let disk = r
        .disks
        .iter()
        .map(host::DiskReading::usage_percent)
        .reduce(f64::max);
    let net: Option<f64> = {
        let rates: Vec<f64> = r
            .network
            .iter()
            .filter(|n| n.interface != "lo")
            .filter_map(|n| Some(n.rx_bytes_per_s? + n.tx_bytes_per_s?))
            .collect();
        (!rates.is_empty()).then(|| rates.iter().sum())
    };
    let mut h = lock(&shared.history);
    for (metric, v) in [
        (Metric::Cpu, r.cpu.as_ref().map(|c| c.usage_percent)),
        (Metric::Memory, Some(r.memory.usage_percent())),
        (Metric::Disk, disk),
        (Metric::Network, net),
        (Metric::Gpu, snap.gpu.mean_utilization()),
        (Metric::Sandboxes, running),
    ] {
        if let Some(v) = v {
            h.push(metric, t, v);
        }
    }
}

fn thread_cpu_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Writes minute aggregates; on failure keeps them for the next attempt (at most a
/// day's worth, then the oldest are dropped with a warning).
fn persist(shared: &Shared, pending: &mut Vec<(Metric, MinuteAgg)>) {
    let Some(store) = &shared.store else {
        pending.clear();
        return;
    };
    if pending.is_empty() {
        return;
    }
    match store.put_minutes(pending) {
        Ok(()) => pending.clear(),
        Err(e) => {
            tracing::warn!(error = %e, minutes = pending.len(), "could not store metric aggregates; will retry");
            let cap = 6 * 1440;
            if pending.len() > cap {
                let excess = pending.len() - cap;
                pending.drain(..excess);
            }
        }
    }
}

/// The collector thread.
fn collect(
    weak: &std::sync::Weak<Shared>,
    mut sampler: host::HostSampler,
    gpu: gpu::GpuSampler,
    stop: std::sync::mpsc::Receiver<()>,
) {
    let Some((interval, retention)) = weak
        .upgrade()
        .map(|s| (s.config.interval.max(MIN_INTERVAL), s.config.retention))
    else {
        return;
    };
    let retention_s = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let mut pending = Vec::new();
    let mut next = Instant::now() + interval;
    let mut last_prune: Option<Instant> = None;
    let mut seq = 1;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
        let Some(shared) = weak.upgrade() else { return };
        let shared = &*shared;
        let cpu0 = thread_cpu_ns();
        seq += 1;
        let snap = Snapshot {
            taken_at: Timestamp::now(),
            reading: sampler.read(),
            gpu: gpu.read(),
            seq,
        };
        record(shared, &snap);
        *shared.latest.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
        pending.extend(lock(&shared.history).take_completed());
        persist(shared, &mut pending);
        if let Some(store) = &shared.store
            && last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
        {
            last_prune = Some(Instant::now());
            let before = Timestamp::now().unix_ms() / 1000 - retention_s;
            match store.prune_minutes(before) {
                Ok(n) if n > 0 => tracing::debug!(removed = n, "pruned old metric aggregates"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not prune metric aggregates"),
            }
        }
        shared.readings.fetch_add(1, Ordering::Relaxed);
        shared
            .cpu_ns
            .fetch_add(thread_cpu_ns().saturating_sub(cpu0), Ordering::Relaxed);
        next += interval;
        let now = Instant::now();
        if next < now {
            // Fell behind (the machine was suspended, say): start again from now.
            next = now + interval;
        }
    }
    if let Some(shared) = weak.upgrade() {
        pending.extend(lock(&shared.history).take_all());
        persist(&shared, &mut pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct MemStore(Mutex<Vec<(Metric, MinuteAgg)>>);

    impl MetricStore for MemStore {
        fn put_minutes(&self, rows: &[(Metric, MinuteAgg)]) -> Result<(), StoreError> {
            lock(&self.0).extend_from_slice(rows);
            Ok(())
        }
        fn minutes(
            &self,
            metric: Metric,
            from_s: i64,
            to_s: i64,
        ) -> Result<Vec<MinuteAgg>, StoreError> {
            Ok(lock(&self.0)
                .iter()
                .filter(|(m, a)| *m == metric && a.minute >= from_s && a.minute < to_s)
                .map(|(_, a)| *a)
                .collect())
        }
        fn prune_minutes(&self, _before_s: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    /// A restart within a minute: what the earlier run stored of that minute comes back
    /// with the readings of this run, counted once.
    #[test]
    fn the_stored_part_of_the_first_minute_is_counted_once() {
        let store = Arc::new(MemStore::default());
        let now_min = Timestamp::now().unix_ms().div_euclid(60_000) * 60;
        let earlier = |minute| MinuteAgg {
            minute,
            min: 0.0,
            avg: 2.0,
            max: 3.0,
            count: 100,
        };
        // This minute and the next: the run starts in one of them.
        store
            .put_minutes(&[
                (Metric::Memory, earlier(now_min)),
                (Metric::Memory, earlier(now_min + 60)),
            ])
            .unwrap();
        let m = Monitor::start(
            MonitorConfig::default(),
            None,
            Some(store.clone() as Arc<dyn MetricStore>),
        )
        .unwrap();
        let h = m.history(Metric::Memory, Duration::from_secs(180)).unwrap();
        let readings = m.readings(Metric::Memory, Duration::from_secs(180)).len() as u64;
        assert!(readings >= 1);
        assert!(
            h.summary.samples == 100 + readings || h.summary.samples == 200 + readings,
            "{} samples, {readings} readings",
            h.summary.samples
        );
        assert_eq!(h.summary.min, Some(0.0));
        m.shutdown();
    }

    #[test]
    fn the_thread_ends_with_the_last_handle() {
        let m = Monitor::start(
            MonitorConfig {
                interval: MIN_INTERVAL,
                ..MonitorConfig::default()
            },
            None,
            None,
        )
        .unwrap();
        let handle = lock(&m.inner.thread).take().unwrap();
        let weak = Arc::downgrade(&m.inner);
        drop(m);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !handle.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the collector outlived its monitor"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        handle.join().unwrap();
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn collects_answers_and_flushes_at_shutdown() {
        let store = Arc::new(MemStore::default());
        let m = Monitor::start(
            MonitorConfig {
                interval: MIN_INTERVAL,
                ..MonitorConfig::default()
            },
            None,
            Some(store.clone() as Arc<dyn MetricStore>),
        )
        .unwrap();
        // The priming reading: memory yes, CPU not yet.
        let first = m.snapshot();
        assert_eq!(first.seq, 1);
        assert!(first.reading.cpu.is_none());
        assert!(first.reading.memory.total_bytes > 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.snapshot().seq < 3 {
            assert!(Instant::now() < deadline, "the collector took no readings");
            std::thread::sleep(Duration::from_millis(50));
        }
        let snap = m.snapshot();
        let cpu = snap
            .reading
            .cpu
            .as_ref()
            .expect("a CPU figure after two readings");
        assert!((0.0..=100.0).contains(&cpu.usage_percent));
        let h = m.history(Metric::Cpu, Duration::from_secs(60)).unwrap();
        assert!(h.summary.samples >= 2, "{h:?}");
        assert!(h.note.is_none());
        let gpu = m.history(Metric::Gpu, Duration::from_secs(60)).unwrap();
        if matches!(snap.gpu, GpuReading::Unavailable { .. }) {
            assert_eq!(gpu.summary.samples, 0);
            assert!(gpu.note.unwrap().starts_with("no GPU readings"));
        }
        let text = m.render_prometheus();
        assert!(
            text.contains("\nquantbox_host_memory_total_bytes "),
            "{text}"
        );
        assert!(text.contains("quantbox_host_cpu_usage_ratio "));
        assert!(m.cost().readings >= 3);
        m.shutdown();
        m.shutdown();
        let stored = lock(&store.0).clone();
        assert!(
            stored
                .iter()
                .any(|(metric, a)| *metric == Metric::Memory && a.count >= 3),
            "{stored:?}"
        );
        assert!(
            stored
                .iter()
                .all(|(metric, _)| *metric != Metric::Sandboxes)
        );
    }
}
