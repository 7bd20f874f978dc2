//! `quantbox bench --suite metrics`: what monitoring costs. The collector thread's own
//! CPU time at its 1 s interval; `get_system_metrics` with an hour of history answered
//! over REST (a real HTTP server on loopback, the same router `serve` mounts); and the
//! Prometheus exposition rendered with many sandboxes running.
//!
//! An hour of history cannot be waited for in a benchmark: the readings this run took
//! while measuring the collector are repeated back over the hour (real values,
//! timestamps one second apart), which gives the query the same amount of work as an
//! hour of uptime. The output says so.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use quantbox_monitor::Metric;
use serde_json::{Value, json};

use crate::bench::{BenchArgs, Engine, Stats, call, create, ms, r3};
use crate::rest::{self, RestState};

pub(crate) struct MetricsBench {
    collector_window: Duration,
    collector_readings: u64,
    collector_cpu: Duration,
    process_cpu_idle: Duration,
    history_readings: usize,
    history: Stats,
    history_bytes: usize,
    history_in_process: Stats,
    plain: Stats,
    sandboxes: usize,
    prom_http: Stats,
    prom_render: Stats,
    prom_bytes: usize,
    prom_lines: usize,
    process_cpu_sandboxes: Duration,
    sandboxes_window: Duration,
}

fn pct_of_core(cpu: Duration, wall: Duration) -> f64 {
    cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9) * 100.0
}

impl MetricsBench {
    pub(crate) fn json(&self) -> Value {
        json!({
            "collector": {
                "interval_s": 1,
                "window_s": self.collector_window.as_secs_f64(),
                "readings": self.collector_readings,
                "cpu_ms": r3(ms(self.collector_cpu)),
                "percent_of_one_core": r3(pct_of_core(self.collector_cpu, self.collector_window)),
                "ms_per_reading": r3(ms(self.collector_cpu) / self.collector_readings.max(1) as f64),
                "whole_process_percent_of_one_core": r3(pct_of_core(self.process_cpu_idle, self.collector_window)),
            },
            "get_system_metrics_rest": {
                "history_minutes": 60,
                "history_readings_per_metric": self.history_readings,
                "history_note": "the readings of this run repeated back over the hour, 1 s apart",
                "response_bytes": self.history_bytes,
                "with_history": self.history.json(),
                "with_history_in_process": self.history_in_process.json(),
                "without_history": self.plain.json(),
            },
            "prometheus": {
                "sandboxes": self.sandboxes,
                "response_bytes": self.prom_bytes,
                "lines": self.prom_lines,
                "get_metrics_rest": self.prom_http.json(),
                "render_in_process": self.prom_render.json(),
                "whole_process_percent_of_one_core_with_sandboxes": r3(pct_of_core(self.process_cpu_sandboxes, self.sandboxes_window)),
            },
        })
    }
}

fn process_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
        };
        t(u.user_time()) + t(u.system_time())
    })
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(f64, usize)> {
    let t = Instant::now();
    let resp = client.get(url).send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let took = ms(t.elapsed());
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((took, body.len()))
}

pub(crate) async fn run(a: &BenchArgs) -> Result<MetricsBench> {
    let n = a.iterations();
    let progress = |what: &str| {
        if !a.json() {
            eprintln!("· {what}");
        }
    };
    let e = Engine::open(a, "metrics", 0).await?;
    let ops = e.app().ops.clone();
    let monitor = ops
        .monitor_handle()
        .cloned()
        .context("the engine runs no metrics collector")?;

    let window = Duration::from_secs(a.collector_seconds.max(5));
    progress(&format!(
        "metrics collector alone, {} s at a 1 s interval",
        window.as_secs()
    ));
    let (c0, p0, t0) = (monitor.cost(), process_cpu(), Instant::now());
    tokio::time::sleep(window).await;
    let (c1, p1, wall) = (monitor.cost(), process_cpu(), t0.elapsed());

    progress("an hour of history, then get_system_metrics over REST");
    let mut history_readings = 0;
    for m in [Metric::Cpu, Metric::Memory, Metric::Disk, Metric::Network] {
        let taken = monitor.readings(m, Duration::from_secs(3600));
        let Some(&(first, _)) = taken.first() else {
            bail!(
                "the collector took no {} readings in {} s",
                m.name(),
                window.as_secs()
            );
        };
        let older: Vec<(i64, f64)> = (1..=3600 - taken.len().min(3599))
            .map(|k| (first - k as i64 * 1000, taken[k % taken.len()].1))
            .collect();
        monitor.prepend_readings(m, &older);
        history_readings = monitor.readings(m, Duration::from_secs(3600)).len();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = rest::timed(rest::router(RestState { ops: ops.clone() }), &ops);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let with = format!("http://{addr}/api/v1/metrics?include_history=true&time_range_minutes=60");
    let without = format!("http://{addr}/api/v1/metrics");
    let check: Value = client.get(&with).send().await?.json().await?;
    let samples = check["history"]["cpu"]["samples"].as_u64().unwrap_or(0);
    if samples < 3000 {
        bail!("the history query saw {samples} cpu readings, expected about 3600: {check}");
    }
    for _ in 0..20 {
        get(&client, &with).await?;
    }
    let (mut hist, mut plain, mut history_bytes) = (Vec::new(), Vec::new(), 0);
    let mut in_process = Vec::new();
    let args = json!({"include_history": true, "time_range_minutes": 60});
    for _ in 0..n {
        let (t, b) = get(&client, &with).await?;
        hist.push(t);
        history_bytes = b;
        plain.push(get(&client, &without).await?.0);
        let t = Instant::now();
        let v = call(e.app(), "get_system_metrics", args.clone()).await?;
        in_process.push(ms(t.elapsed()));
        std::hint::black_box(v);
    }

    let count = a.idle();
    progress(&format!(
        "{count} sandboxes, then GET /metrics over REST, {n} times"
    ));
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(create(e.app(), &format!("m{i}")).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let manager = ops.manager().clone();
    while manager.samples().iter().any(|s| s.sample.is_none()) {
        if Instant::now() > deadline {
            bail!("the sampler did not read all {count} sandboxes within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let prom = format!("http://{addr}/metrics");
    for _ in 0..10 {
        get(&client, &prom).await?;
    }
    let (mut prom_http, mut prom_render, mut prom_bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..n {
        let (t, b) = get(&client, &prom).await?;
        prom_http.push(t);
        prom_bytes = b;
        let t = Instant::now();
        let text = monitor.render_prometheus();
        prom_render.push(ms(t.elapsed()));
        std::hint::black_box(text);
    }
    let text = monitor.render_prometheus();
    let prom_lines = text.lines().count();
    let missing = ids
        .iter()
        .filter(|id| !text.contains(&format!("sandbox_id=\"{id}\"")))
        .count();
    if missing > 0 {
        bail!("{missing} of {count} sandboxes are missing from /metrics");
    }
    progress(&format!("whole process with {count} idle sandboxes, 10 s"));
    let (p2, t2) = (process_cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (p3, sandboxes_window) = (process_cpu(), t2.elapsed());

    crate::bench::terminate_all(&ops, ids).await?;
    server.abort();
    e.close().await;
    Ok(MetricsBench {
        collector_window: wall,
        collector_readings: c1.readings - c0.readings,
        collector_cpu: c1.cpu - c0.cpu,
        process_cpu_idle: p1 - p0,
        history_readings,
        history: Stats::new(hist),
        history_bytes,
        history_in_process: Stats::new(in_process),
        plain: Stats::new(plain),
        sandboxes: count,
        prom_http: Stats::new(prom_http),
        prom_render: Stats::new(prom_render),
        prom_bytes,
        prom_lines,
        process_cpu_sandboxes: p3 - p2,
        sandboxes_window,
    })
}

pub(crate) fn print(a: &BenchArgs, m: &MetricsBench) -> Result<()> {
    if a.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"metrics": m.json()}))?
        );
        return Ok(());
    }
    let row = |name: &str, s: &Stats, target: &str| {
        println!(
            "{name:<48} {:>8.3} {:>8.3} {:>8.3}   {target}",
            s.pct(0.5),
            s.pct(0.95),
            s.mean()
        );
    };
    println!(
        "\n{:<48} {:>8} {:>8} {:>8}   target",
        "monitoring latency (ms)", "p50", "p95", "mean"
    );
    row(
        &format!(
            "get_system_metrics, 60 min history ({} readings)",
            m.history_readings
        ),
        &m.history,
        "p50 <= 1",
    );
    row(
        "  the operation only (in process)",
        &m.history_in_process,
        "",
    );
    row("get_system_metrics, no history", &m.plain, "");
    row(
        &format!("GET /metrics with {} sandboxes", m.sandboxes),
        &m.prom_http,
        "p50 <= 5",
    );
    row("  rendering only (in process)", &m.prom_render, "");
    println!(
        "\ncollector: {:.3} % of one core over {:.0} s ({} readings, {:.3} ms CPU each; target <= 1 %); whole process {:.3} % with no sandboxes, {:.3} % with {} idle sandboxes sampled every second",
        pct_of_core(m.collector_cpu, m.collector_window),
        m.collector_window.as_secs_f64(),
        m.collector_readings,
        ms(m.collector_cpu) / m.collector_readings.max(1) as f64,
        pct_of_core(m.process_cpu_idle, m.collector_window),
        pct_of_core(m.process_cpu_sandboxes, m.sandboxes_window),
        m.sandboxes,
    );
    println!(
        "history response {} bytes (4 metrics, at most 360 points each); /metrics {} bytes, {} lines; the hour of history repeats this run's readings back over the hour",
        m.history_bytes, m.prom_bytes, m.prom_lines
    );
    Ok(())
}
