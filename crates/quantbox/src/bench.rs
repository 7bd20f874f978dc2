//! `quantbox bench`: measures what the sandbox engine costs on this machine, through
//! the operations layer (the same calls MCP, REST and the CLI make, minus transport):
//! create + run `true`, run a command in a running sandbox, terminate, the host memory
//! of idle sandboxes, pause/resume, exporting 100 MB of changes as a template, and
//! scaling a deployment from 0 to 50 instances and back. Where bubblewrap is installed, it is timed in the same run
//! for comparison.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::app::{App, EngineConfig};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Iterations of each latency measurement.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Sandboxes kept idle at once for the memory measurement.
    #[arg(long, default_value_t = 200)]
    idle: usize,
    /// Data directory to use [default: a fresh temporary directory, removed afterwards].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Size of the warm pool (0 measures the cold path: every sandbox started from scratch).
    #[arg(long, default_value_t = 2)]
    pub(crate) warm_pool: usize,
    /// What to measure: the sandbox engine, the monitoring (metrics, history,
    /// Prometheus), the trading analytics, agent runs (a backtest in a sandbox, event
    /// ingestion into SQLite), or all of them.
    #[arg(long, value_enum, default_value_t = Suite::All)]
    pub(crate) suite: Suite,
    /// Seconds the metrics collector's own CPU use is measured over.
    #[arg(long, default_value_t = 30)]
    pub(crate) collector_seconds: u64,
    /// Python with E2B's SDK installed, for `--suite e2b`.
    #[arg(long, default_value = "python3")]
    pub(crate) python: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Suite {
    Engine,
    Metrics,
    Analytics,
    Agents,
    /// E2B's API through E2B's own Python SDK (not part of `all`: it needs the SDK).
    E2b,
    All,
}

impl BenchArgs {
    pub(crate) fn iterations(&self) -> usize {
        self.iterations.max(1)
    }
    pub(crate) fn idle(&self) -> usize {
        self.idle
    }
    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

#[derive(Clone)]
pub(crate) struct Stats {
    samples: Vec<f64>,
}

impl Stats {
    pub(crate) fn new(mut samples: Vec<f64>) -> Self {
        samples.sort_by(|a, b| a.total_cmp(b));
        Self { samples }
    }
    pub(crate) fn pct(&self, p: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.samples.len() - 1) as f64 * p).round() as usize;
        self.samples[idx]
    }
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }
    pub(crate) fn mean(&self) -> f64 {
        self.samples.iter().sum::<f64>() / self.samples.len().max(1) as f64
    }
    pub(crate) fn json(&self) -> Value {
        json!({"n": self.samples.len(), "p50_ms": r3(self.pct(0.5)), "p95_ms": r3(self.pct(0.95)), "mean_ms": r3(self.mean()), "min_ms": r3(self.pct(0.0))})
    }
}

pub(crate) fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) async fn call(app: &App, tool: &str, args: Value) -> Result<Value> {
    app.ops
        .call(tool, args)
        .await
        .map_err(|e| anyhow::anyhow!("{tool}: {}", e.message))
}

/// Force-terminates `ids` concurrently; fails on the first error.
pub(crate) async fn terminate_all(ops: &quantbox_ops::Ops, ids: Vec<String>) -> Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let ops = ops.clone();
        set.spawn(async move {
            ops.call(
                "terminate_e2b_sandbox",
                json!({"sandbox_id": id, "force": true}),
            )
            .await
        });
    }
    while let Some(r) = set.join_next().await {
        r?.map_err(|e| anyhow::anyhow!(e.message))?;
    }
    Ok(())
}

pub(crate) async fn create(app: &App, name: &str) -> Result<String> {
    let out = call(
        app,
        "create_e2b_sandbox",
        json!({"name": name, "memory_mb": 128, "timeout": 3600}),
    )
    .await?;
    Ok(out["sandbox_id"].as_str().unwrap_or_default().to_owned())
}

/// `true` executed directly (one ignored argument makes the contract skip the shell).
fn run_true(id: &str) -> Value {
    json!({"sandbox_id": id, "command": "true", "args": ["bench"]})
}

pub(crate) fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Memory the host cannot give to others: MemTotal - MemAvailable, KiB.
pub(crate) fn host_used_kib() -> u64 {
    meminfo("MemTotal:").saturating_sub(meminfo("MemAvailable:"))
}

fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One engine on a fresh data directory, removed when dropped.
pub(crate) struct Engine {
    app: Option<App>,
    dir: PathBuf,
    keep_dir: bool,
}

impl Engine {
    pub(crate) async fn open(a: &BenchArgs, tag: &str, warm_pool: usize) -> Result<Self> {
        let (dir, keep_dir) = match &a.data_dir {
            Some(d) => (d.join(tag), true),
            None => (
                std::env::temp_dir().join(format!("quantbox-bench-{}-{tag}", std::process::id())),
                false,
            ),
        };
        let cfg = EngineConfig {
            data_dir: dir.clone(),
            max_sandboxes: a.idle.max(a.iterations).max(SCALE_TO) + 16,
            pids_max: 512,
            terminate_grace: Duration::from_secs(5),
            init_exe: None,
            cgroup_parent: format!("quantbox-bench-{}-{tag}", std::process::id()),
            warm_pool,
            autoscale_interval: Duration::from_secs(10),
            metrics_interval: Duration::from_secs(1),
            gpu_device_dir: Some(PathBuf::from("/dev")),
        };
        let app = App::open(&cfg).await.context("starting the engine")?;
        Ok(Self {
            app: Some(app),
            dir,
            keep_dir,
        })
    }

    pub(crate) fn app(&self) -> &App {
        self.app.as_ref().expect("engine is open")
    }

    pub(crate) async fn close(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
            if let Some(c) = app.local.cgroups() {
                let _ = c.remove_parents();
            }
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Ends whatever a failed run left: every process in the engine's cgroups, the cgroups
    /// and (unless kept) the data directory.
    fn kill_all(&mut self) {
        if let Some(app) = self.app.take()
            && let Some(cg) = app.local.cgroups()
        {
            for name in cg.children() {
                if let Some(c) = cg.open(&name) {
                    let _ = c.kill_all();
                    let _ = c.remove();
                }
            }
            let _ = cg.remove_parents();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Waits until the warm pool is full again (it refills in the background).
    async fn pool_full(&self, target: usize) {
        let end = Instant::now() + Duration::from_secs(30);
        while self.app().local.pooled_slots().len() < target && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // `close` takes the app; it is still here only when a step failed.
        if self.app.is_some() {
            self.kill_all();
        }
    }
}

type Steps = std::collections::BTreeMap<String, Vec<f64>>;

/// Creates a sandbox and runs `true` in it; returns (create ms, create + true ms, id).
async fn create_and_true(app: &App, name: &str, steps: &mut Steps) -> Result<(f64, f64, String)> {
    let t0 = Instant::now();
    let id = create(app, name).await?;
    let t1 = Instant::now();
    let out = call(app, "execute_e2b_process", run_true(&id)).await?;
    let t2 = Instant::now();
    if out["exit_code"] != json!(0) {
        bail!("`true` failed in sandbox {id}: {out}");
    }
    if let Some(s) = quantbox_sandbox::SandboxId::parse(&id)
        .ok()
        .and_then(|sid| app.local.setup_steps(&sid))
    {
        for (k, us) in s {
            steps.entry(k).or_default().push(us as f64 / 1000.0);
        }
    }
    Ok((ms(t1 - t0), ms(t2 - t0), id))
}

pub async fn run(a: BenchArgs) -> Result<()> {
    if a.suite == Suite::Analytics {
        // Pure computation: no sandbox, no root needed.
        let m = tokio::task::spawn_blocking(move || {
            let r = crate::bench_analytics::run(&a);
            (a, r)
        })
        .await?;
        return crate::bench_analytics::print(&m.0, &m.1?);
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark starts sandboxes with all limits, which needs root");
    }
    if a.suite == Suite::Agents {
        let m = crate::bench_agents::run(&a).await?;
        return crate::bench_agents::print(&a, &m);
    }
    if a.suite == Suite::E2b {
        let m = crate::bench_e2b::run(&a).await?;
        return crate::bench_e2b::print(&a, &m);
    }
    let metrics = match a.suite {
        Suite::Engine => None,
        Suite::Metrics | Suite::All => Some(crate::bench_metrics::run(&a).await?),
        Suite::Analytics | Suite::Agents | Suite::E2b => None,
    };
    if a.suite == Suite::Metrics {
        return crate::bench_metrics::print(&a, metrics.as_ref().expect("measured"));
    }
    let report = engine(&a).await?;
    let analytics = crate::bench_analytics::run(&a)?;
    let agents = match a.suite {
        Suite::All => Some(crate::bench_agents::run(&a).await?),
        _ => None,
    };
    if a.json {
        let mut report = report.unwrap_or(Value::Null);
        if let Some(m) = &metrics {
            report["metrics"] = m.json();
        }
        report["analytics"] = analytics.json();
        if let Some(m) = &agents {
            report["agents"] = m.json();
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(m) = &metrics {
            crate::bench_metrics::print(&a, m)?;
        }
        crate::bench_analytics::print(&a, &analytics)?;
        if let Some(m) = &agents {
            crate::bench_agents::print(&a, m)?;
        }
    }
    Ok(())
}

/// The sandbox engine's figures; prints them as a table unless `--json`, where it returns
/// them instead.
async fn engine(a: &BenchArgs) -> Result<Option<Value>> {
    let n = a.iterations.max(1);
    let progress = |what: &str| {
        if !a.json {
            eprintln!("· {what}");
        }
    };

    // Cold: no warm pool, every sandbox started from scratch.
    let cold = Engine::open(a, "cold", 0).await?;
    progress("warming up");
    for i in 0..5 {
        let id = create(cold.app(), &format!("warm{i}")).await?;
        call(cold.app(), "execute_e2b_process", run_true(&id)).await?;
        call(
            cold.app(),
            "terminate_e2b_sandbox",
            json!({"sandbox_id": id}),
        )
        .await?;
    }
    progress(&format!("cold: create + run `true`, {n} times"));
    let (mut cold_create, mut cold_true, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut cold_steps = Steps::new();
    for i in 0..n {
        let (c, t, id) = create_and_true(cold.app(), &format!("b{i}"), &mut cold_steps).await?;
        cold_create.push(c);
        cold_true.push(t);
        ids.push(id);
    }
    progress(&format!(
        "run `true` in a running sandbox, {n} times (direct exec and through /bin/sh)"
    ));
    let (mut exec_direct, mut exec_shell) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        call(cold.app(), "execute_e2b_process", run_true(&ids[0])).await?;
        exec_direct.push(ms(t.elapsed()));
        let t = Instant::now();
        call(
            cold.app(),
            "execute_e2b_process",
            json!({"sandbox_id": ids[0], "command": "true"}),
        )
        .await?;
        exec_shell.push(ms(t.elapsed()));
    }
    progress(&format!("terminate, {n} times"));
    let mut term = Vec::new();
    for id in &ids {
        let t = Instant::now();
        call(
            cold.app(),
            "terminate_e2b_sandbox",
            json!({"sandbox_id": id}),
        )
        .await?;
        term.push(ms(t.elapsed()));
    }

    progress(&format!("{} idle sandboxes at once", a.idle));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = host_used_kib();
    let mut idle_ids = Vec::new();
    for i in 0..a.idle {
        idle_ids.push(create(cold.app(), &format!("idle{i}")).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = host_used_kib();
    let mut pss = 0u64;
    let mut cg_mem = 0u64;
    for id in &idle_ids {
        let sid = quantbox_sandbox::SandboxId::parse(id)?;
        if let Some(pid) = cold.app().local.init_pid(&sid) {
            pss += pss_kib(pid);
        }
        let st = call(
            cold.app(),
            "get_e2b_sandbox_status",
            json!({"sandbox_id": id, "log_lines": 0}),
        )
        .await?;
        cg_mem += (st["resource_usage"]["memory_mb"].as_f64().unwrap_or(0.0) * 1024.0) as u64;
    }
    let t = Instant::now();
    terminate_all(&cold.app().ops, idle_ids.clone()).await?;
    let teardown_all = t.elapsed();
    let per_kib = (after.saturating_sub(before)) as f64 / a.idle.max(1) as f64;
    cold.close().await;

    // Warm: the pool refills between creates, as it does at any rate below one
    // create per cold start time.
    let pool = a.warm_pool;
    let mut warm = None;
    let mut fleet = None;
    if pool > 0 {
        let w = Engine::open(a, "warm", pool).await?;
        progress(&format!(
            "warm pool of {pool}: create + run `true`, {n} times"
        ));
        let (mut wc, mut wt, mut wids) = (Vec::new(), Vec::new(), Vec::new());
        let mut warm_steps = Steps::new();
        for i in 0..n {
            w.pool_full(pool).await;
            let (c, t, id) = create_and_true(w.app(), &format!("w{i}"), &mut warm_steps).await?;
            wc.push(c);
            wt.push(t);
            wids.push(id);
            call(
                w.app(),
                "terminate_e2b_sandbox",
                json!({"sandbox_id": wids.pop().unwrap()}),
            )
            .await?;
        }
        fleet = Some(fleet_bench(&w, pool, n, &progress).await?);
        w.close().await;
        warm = Some((Stats::new(wc), Stats::new(wt), warm_steps));
    }

    let bwrap = bwrap_bench(n);

    let cold_create = Stats::new(cold_create);
    let cold_true = Stats::new(cold_true);
    let exec_direct = Stats::new(exec_direct);
    let exec_shell = Stats::new(exec_shell);
    let term = Stats::new(term);
    let steps_json = |steps: &Steps| -> Vec<Value> {
        steps
            .iter()
            .map(|(k, v)| {
                let st = Stats::new(v.clone());
                json!({"step": k, "p50_ms": r3(st.pct(0.5)), "mean_ms": r3(st.mean())})
            })
            .collect()
    };
    let report = json!({
        "machine": {"cpus": std::thread::available_parallelism().map_or(1, |n| n.get()), "kernel": kernel()},
        "cold": {
            "create_and_run_true": cold_true.json(),
            "create_only": cold_create.json(),
            "setup_steps": steps_json(&cold_steps),
        },
        "warm": warm.as_ref().map_or(Value::Null, |(c, t, s)| json!({
            "pool": pool,
            "create_and_run_true": t.json(),
            "create_only": c.json(),
            "setup_steps": steps_json(s),
        })),
        "exec_true_direct": exec_direct.json(),
        "exec_true_via_sh": exec_shell.json(),
        "terminate": term.json(),
        "idle": {
            "sandboxes": a.idle,
            "host_memory_per_sandbox_mib": r3(per_kib / 1024.0),
            "init_pss_per_sandbox_mib": r3(pss as f64 / a.idle.max(1) as f64 / 1024.0),
            "cgroup_memory_per_sandbox_mib": r3(cg_mem as f64 / a.idle.max(1) as f64 / 1024.0),
            "terminate_all_concurrently_ms": r3(ms(teardown_all)),
        },
        "fleet": fleet.as_ref().map_or(Value::Null, Fleet::json),
        "bwrap_true": bwrap.as_ref().map_or(json!({"available": false, "reason": "bwrap is not installed (Debian package bubblewrap)"}), |s| s.json()),
    });
    if a.json {
        return Ok(Some(report));
    }
    let row = |name: &str, s: &Stats, target: &str| {
        println!(
            "{name:<40} {:>8.2} {:>8.2} {:>8.2}   {target}",
            s.pct(0.5),
            s.pct(0.95),
            s.mean()
        );
    };
    println!(
        "\n{:<40} {:>8} {:>8} {:>8}   target",
        "latency (ms)", "p50", "p95", "mean"
    );
    if let Some((c, t, _)) = &warm {
        row(
            &format!("create + run `true` (warm pool of {pool})"),
            t,
            "p50 <= 15, at least as fast as bwrap",
        );
        row("  create only (warm)", c, "");
    }
    row("create + run `true` (cold start)", &cold_true, "");
    row("  create only (cold)", &cold_create, "");
    row("run `true` in a running sandbox", &exec_direct, "p50 <= 3");
    row("  through /bin/sh -c", &exec_shell, "");
    row("terminate (graceful, idle)", &term, "<= 10");
    match &bwrap {
        Some(b) => row("bwrap: start `true` (same namespaces)", b, "reference"),
        None => println!("bwrap: not installed (apt-get install bubblewrap) — no reference timing"),
    }
    if let Some(f) = &fleet {
        row("pause a running sandbox", &f.pause, "<= 10");
        row("resume it", &f.resume, "<= 10");
        row(
            &format!("export {} MB of changes", EXPORT_MB),
            &f.export,
            "<= 2000",
        );
        row(
            &format!("scale a deployment 0 -> {SCALE_TO}"),
            &f.scale_up,
            "<= 1500",
        );
        row(&format!("scale it {SCALE_TO} -> 0"), &f.scale_down, "");
    }
    let print_steps = |title: &str, steps: &Steps| {
        println!("\n{title:<40} {:>8} {:>8}", "p50", "mean");
        for (k, v) in steps {
            let st = Stats::new(v.clone());
            println!("  {k:<38} {:>8.3} {:>8.3}", st.pct(0.5), st.mean());
        }
    };
    print_steps("cold start steps (ms)", &cold_steps);
    if let Some((_, _, s)) = &warm {
        print_steps("warm create steps (ms)", s);
    }
    println!(
        "\n{} idle sandboxes: {:.2} MiB of host memory each (MemTotal-MemAvailable delta; target <= 2), init PSS {:.2} MiB, cgroup-charged {:.2} MiB; all terminated concurrently in {:.0} ms",
        a.idle,
        per_kib / 1024.0,
        pss as f64 / a.idle.max(1) as f64 / 1024.0,
        cg_mem as f64 / a.idle.max(1) as f64 / 1024.0,
        ms(teardown_all)
    );
    Ok(None)
}

/// Megabytes written into a sandbox before it is exported.
const EXPORT_MB: usize = 100;
/// Instances a deployment is scaled to.
const SCALE_TO: usize = 50;

/// Timings of the lifecycle and fleet operations.
struct Fleet {
    pause: Stats,
    resume: Stats,
    export: Stats,
    export_size_mb: f64,
    scale_up: Stats,
    scale_down: Stats,
}

impl Fleet {
    fn json(&self) -> Value {
        json!({
            "pause": self.pause.json(),
            "resume": self.resume.json(),
            "export": {"changes_mb": EXPORT_MB, "layer_size_mb": self.export_size_mb, "latency": self.export.json()},
            "scale_up": {"from": 0, "to": SCALE_TO, "latency": self.scale_up.json()},
            "scale_down": {"from": SCALE_TO, "to": 0, "latency": self.scale_down.json()},
        })
    }
}

/// Pause/resume, export of a sandbox with `EXPORT_MB` of changes, and a deployment
/// scaled from 0 to `SCALE_TO` instances and back, on the warm engine.
async fn fleet_bench(w: &Engine, pool: usize, n: usize, progress: &impl Fn(&str)) -> Result<Fleet> {
    let app = w.app();
    let ops = &app.ops;
    let op = |e: quantbox_ops::OpError| anyhow::anyhow!("{}", e.message);

    progress(&format!("pause and resume a running sandbox, {n} times"));
    let id = create(app, "pause").await?;
    let (mut pause, mut resume) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        ops.pause_sandbox(&id).await.map_err(op)?;
        pause.push(ms(t.elapsed()));
        let t = Instant::now();
        ops.resume_sandbox(&id).await.map_err(op)?;
        resume.push(ms(t.elapsed()));
    }
    call(app, "terminate_e2b_sandbox", json!({"sandbox_id": id})).await?;

    let exports = 3;
    progress(&format!(
        "export a sandbox with {EXPORT_MB} MB of changes, {exports} times"
    ));
    let id = call(
        app,
        "create_e2b_sandbox",
        json!({"name": "export", "memory_mb": 512, "timeout": 3600}),
    )
    .await?["sandbox_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Incompressible files of 1 MB each, written as root outside the home directory so
    // that the export takes them.
    let write = call(
        app,
        "execute_e2b_process",
        json!({"sandbox_id": id, "user": "root", "timeout": 300,
               "command": format!("mkdir -p /opt/bench && for i in $(seq 1 {EXPORT_MB}); do head -c 1048576 /dev/urandom > /opt/bench/f$i || exit 1; done")}),
    )
    .await?;
    if write["exit_code"] != json!(0) {
        bail!("writing {EXPORT_MB} MB in the sandbox failed: {write}");
    }
    let (mut export, mut export_size_mb) = (Vec::new(), 0.0);
    for i in 0..exports {
        let name = format!("bench-export-{i}");
        let t = Instant::now();
        let out = call(
            app,
            "export_e2b_template",
            json!({"sandbox_id": id, "template_name": name}),
        )
        .await?;
        export.push(ms(t.elapsed()));
        export_size_mb = out["size_mb"].as_f64().unwrap_or(0.0);
        ops.delete_template(&name).await.map_err(op)?;
    }
    call(app, "terminate_e2b_sandbox", json!({"sandbox_id": id})).await?;

    let cycles = 3;
    progress(&format!(
        "scale a deployment 0 -> {SCALE_TO} -> 0, {cycles} times"
    ));
    let dep = call(
        app,
        "deploy_e2b_template",
        json!({"template_name": "base", "category": "custom",
               "configuration": {"memory_mb": 128, "cpu_count": 0.5}}),
    )
    .await?["deployment_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let scale = |count: usize| {
        call(
            app,
            "scale_e2b_deployment",
            json!({"deployment_id": dep, "instance_count": count}),
        )
    };
    scale(0).await?;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..cycles {
        w.pool_full(pool).await;
        let t = Instant::now();
        let out = scale(SCALE_TO).await?;
        up.push(ms(t.elapsed()));
        if out["running_instances"] != json!(SCALE_TO) {
            bail!(
                "scaling to {SCALE_TO} left {} running: {out}",
                out["running_instances"]
            );
        }
        let t = Instant::now();
        scale(0).await?;
        down.push(ms(t.elapsed()));
    }
    ops.delete_deployment(&dep).await.map_err(op)?;
    Ok(Fleet {
        pause: Stats::new(pause),
        resume: Stats::new(resume),
        export: Stats::new(export),
        export_size_mb,
        scale_up: Stats::new(up),
        scale_down: Stats::new(down),
    })
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// bubblewrap starting `true` with the same namespaces and a comparable root.
fn bwrap_bench(n: usize) -> Option<Stats> {
    let bwrap = ["/usr/bin/bwrap", "/bin/bwrap"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let args = [
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "true",
    ];
    let mut v = Vec::new();
    for i in 0..n + 5 {
        let t = Instant::now();
        let ok = std::process::Command::new(bwrap)
            .args(args)
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        if i >= 5 {
            v.push(ms(t.elapsed()));
        }
    }
    Some(Stats::new(v))
}
