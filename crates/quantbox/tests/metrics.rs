//! `get_system_metrics`, the collector behind it and the Prometheus exposition, held to
//! the kernel's own figures:
//!
//! - every host figure agrees with `/proc` and statvfs(2) read at the same moment
//!   (memory, cores, CPU busy share over a window, load, network counters, the root
//!   filesystem);
//! - a collector that has read the host only once reports CPU usage as null with a
//!   reason, never a first refresh's 0 %, and an empty CPU history with a note;
//! - the history survives a graceful restart of `quantbox serve` (the minute in
//!   progress is written to the store and read back);
//! - a sandbox burning CPU shows up with its usage and limits, in the tool and in the
//!   Prometheus text, with the lifecycle counters;
//! - bad arguments, through `Ops::call` (what MCP uses), the REST tool route and the
//!   REST query route, are `invalid_argument` errors that name the field; the range's
//!   boundaries are accepted.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Engine, Served, require_root};
use quantbox_sandbox::Timestamp;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------
// Reading the kernel's figures.

/// The `cpu` line of /proc/stat as (busy, total) ticks, and the number of `cpuN` lines.
/// Busy is user + nice + system + irq + softirq + steal; total adds idle and iowait
/// (guest time is already inside user and nice, so it is not added again).
fn proc_stat() -> (u64, u64, usize) {
    let text = std::fs::read_to_string("/proc/stat").unwrap();
    let mut agg = None;
    let mut cores = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("cpu") => {
                let v: Vec<u64> = words.map(|w| w.parse().unwrap()).collect();
                let (user, nice, system, idle, iowait, irq, softirq) =
                    (v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
                let steal = v.get(7).copied().unwrap_or(0);
                let busy = user + nice + system + irq + softirq + steal;
                agg = Some((busy, busy + idle + iowait));
            }
            Some(w) if w.starts_with("cpu") && w[3..].parse::<u32>().is_ok() => cores += 1,
            _ => {}
        }
    }
    let (busy, total) = agg.expect("/proc/stat has a cpu line");
    (busy, total, cores)
}

/// A field of /proc/meminfo, kB.
fn meminfo_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("/proc/meminfo has no {field}"))
}

fn loadavg_1m() -> f64 {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// Received and sent bytes per interface, from /proc/net/dev.
fn net_dev() -> BTreeMap<String, (u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap();
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|w| w.parse().unwrap())
                .collect();
            Some((name.trim().to_owned(), (f[0], f[8])))
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Helpers.

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn ms_of(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    Timestamp::parse_rfc3339(s)
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {s}"))
        .unix_ms()
}

/// Waits (polling every millisecond, so that what is read next is read within a
/// millisecond or two of the collector's reading) until the collector's reading number
/// `seq` exists; returns its time, Unix ms.
async fn reading(m: &quantbox_monitor::Monitor, seq: u64, within: Duration) -> i64 {
    let end = Instant::now() + within;
    loop {
        let s = m.snapshot();
        if s.seq >= seq {
            assert_eq!(
                s.seq, seq,
                "polling missed a reading: the CPU window would be misaligned"
            );
            return s.taken_at.unix_ms();
        }
        assert!(
            Instant::now() < end,
            "the collector took no reading {seq} in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Busy-loops on `n` threads until the returned flag is set.
fn burn(n: usize) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..10_000u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                }
            })
        })
        .collect();
    (stop, threads)
}

/// The value of the Prometheus sample written exactly as `series` (name and labels).
fn prom(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

// ---------------------------------------------------------------------------------
// 1. The host's figures agree with the kernel's.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_figures_agree_with_proc() {
    if !require_root("host_figures_agree_with_proc") {
        return;
    }
    let e = Engine::start_with(|c| {
        c.warm_pool = 0;
        c.metrics_interval = Duration::from_secs(1);
    })
    .await;
    let m = e.app().ops.monitor_handle().expect("a collector").clone();

    // CPU: a steady load on half the cores, so that the expected share is neither 0
    // nor 100 (either would hide a figure taken per core, or over the wrong interval).
    let (_, _, cores) = proc_stat();
    let (stop, burners) = burn((cores / 2).max(1));
    // One whole interval of the load before the window opens.
    let first = m.snapshot().seq;
    reading(&m, first + 1, Duration::from_secs(5)).await;
    // The window: from right after reading S to right after reading S+3, so that the
    // three readings S+1..S+3 cover exactly the /proc/stat delta taken here.
    let s = first + 2;
    let t_a = reading(&m, s, Duration::from_secs(5)).await;
    let stat_a = proc_stat();
    let net_before = net_dev();
    let t_b = reading(&m, s + 3, Duration::from_secs(5)).await;
    let stat_b = proc_stat();
    let mem_available_kb = meminfo_kb("MemAvailable");
    let load = loadavg_1m();
    let out = e
        .call(
            "get_system_metrics",
            json!({"metrics": ["cpu", "memory", "disk", "network"], "include_history": true, "time_range_minutes": 1}),
        )
        .await
        .expect("get_system_metrics");
    let net_after = net_dev();
    let vfs = nix::sys::statvfs::statvfs("/").unwrap();
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    let mx = &out["metrics"];

    // Memory.
    let total_mb = meminfo_kb("MemTotal") as f64 / 1024.0;
    assert!(
        (f(&mx["memory"]["total_mb"]) - total_mb).abs() <= 0.01 + 1e-9,
        "total_mb {} vs MemTotal {total_mb} MB",
        mx["memory"]["total_mb"]
    );
    let avail_mb = mem_available_kb as f64 / 1024.0;
    let got = f(&mx["memory"]["available_mb"]);
    assert!(
        (got - avail_mb).abs() <= 0.05 * avail_mb,
        "available_mb {got} vs MemAvailable {avail_mb} MB (more than 5 % apart)"
    );
    let used = f(&mx["memory"]["used_mb"]);
    assert!(
        (used + got - f(&mx["memory"]["total_mb"])).abs() <= 0.02,
        "used + available is not total: {}",
        mx["memory"]
    );

    // Cores, load.
    assert_eq!(mx["cpu"]["cores"], cores, "{}", mx["cpu"]);
    assert_eq!(
        mx["cpu"]["per_core"].as_array().unwrap().len(),
        cores,
        "{}",
        mx["cpu"]
    );
    let l1 = f(&mx["cpu"]["load_avg"][0]);
    assert!(
        (l1 - load).abs() <= 0.5,
        "load_avg[0] {l1} vs /proc/loadavg {load}"
    );

    // CPU over the window. The tolerance (15 points) covers: the millisecond or two
    // between the collector's read of /proc/stat and ours at each edge, the 10 ms
    // tick granularity of /proc/stat, points being rounded bucket means, sysinfo's own
    // accounting (it clamps at 100 % and counts guest time in the total), and other
    // work on a shared machine starting or ending right at an edge. A figure taken
    // per core, over the wrong interval, or a first refresh's 0 % is far outside it.
    let busy = (stat_b.0 - stat_a.0) as f64;
    let total = (stat_b.1 - stat_a.1) as f64;
    let expected = busy / total * 100.0;
    let h = &out["history"]["cpu"];
    assert_eq!(h["resolution_s"], 1, "{h}");
    // Bucket b (1 s wide) holds the readings taken in [b, b+1) s: the buckets after
    // reading S's and up to reading S+3's hold exactly S+1..S+3.
    let (from_s, to_s) = (t_a.div_euclid(1000), t_b.div_euclid(1000));
    let inside: Vec<f64> = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let b = ms_of(&p["t"]).div_euclid(1000);
            b > from_s && b <= to_s
        })
        .map(|p| f(&p["value"]))
        .collect();
    assert!(
        inside.len() >= 2,
        "too few history points in the window {t_a}..{t_b}: {h}"
    );
    let mean = inside.iter().sum::<f64>() / inside.len() as f64;
    assert!(
        (mean - expected).abs() <= 15.0,
        "CPU history over the window {mean:.1} % vs /proc/stat {expected:.1} % ({inside:?})"
    );
    let now = f(&mx["cpu"]["usage_percent"]);
    assert!((0.0..=100.0).contains(&now), "{}", mx["cpu"]);

    // Network: each counter lies between a reading before the collector's and one
    // after the call (counters only grow).
    let nets = mx["network"].as_array().unwrap();
    let mut checked = 0;
    for (name, (rx0, tx0)) in &net_before {
        let Some((rx1, tx1)) = net_after.get(name) else {
            continue;
        };
        let n = nets
            .iter()
            .find(|n| n["interface"] == name.as_str())
            .unwrap_or_else(|| panic!("interface {name} is missing: {nets:#?}"));
        let (rx, tx) = (
            n["rx_bytes_total"].as_u64().unwrap(),
            n["tx_bytes_total"].as_u64().unwrap(),
        );
        assert!(
            (*rx0..=*rx1).contains(&rx),
            "{name}: rx {rx} outside {rx0}..={rx1}"
        );
        assert!(
            (*tx0..=*tx1).contains(&tx),
            "{name}: tx {tx} outside {tx0}..={tx1}"
        );
        checked += 1;
    }
    assert!(checked >= 1, "no interface checked: {nets:#?}");

    // The root filesystem.
    let disks = mx["disk"].as_array().unwrap();
    let root = disks
        .iter()
        .find(|d| d["mount_point"] == "/")
        .unwrap_or_else(|| panic!("no disk entry for /: {disks:#?}"));
    let fr = vfs.fragment_size() as f64;
    let gib = 1024.0 * 1024.0 * 1024.0;
    let total_gb = vfs.blocks() as f64 * fr / gib;
    let used_gb = (vfs.blocks() - vfs.blocks_free()) as f64 * fr / gib;
    let avail_gb = vfs.blocks_available() as f64 * fr / gib;
    assert!(
        (f(&root["total_gb"]) - total_gb).abs() <= 0.01,
        "total_gb {} vs statvfs {total_gb}",
        root["total_gb"]
    );
    assert!(
        (f(&root["used_gb"]) - used_gb).abs() <= 0.01 * used_gb,
        "used_gb {} vs statvfs {used_gb} (more than 1 % apart)",
        root["used_gb"]
    );
    let pct = used_gb / (used_gb + avail_gb) * 100.0;
    assert!(
        (f(&root["usage_percent"]) - pct).abs() <= 1.0,
        "usage_percent {} vs statvfs {pct}",
        root["usage_percent"]
    );
    e.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 2. One reading: no CPU figure, and the history says why.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_is_null_with_a_reason_until_the_second_reading() {
    if !require_root("cpu_is_null_with_a_reason_until_the_second_reading") {
        return;
    }
    let e = Engine::start_with(|c| {
        c.warm_pool = 0;
        c.metrics_interval = Duration::from_secs(3600);
    })
    .await;
    let out = e
        .call(
            "get_system_metrics",
            json!({"metrics": ["cpu", "memory"], "include_history": true, "time_range_minutes": 1}),
        )
        .await
        .expect("get_system_metrics");
    let cpu = &out["metrics"]["cpu"];
    assert!(cpu["usage_percent"].is_null(), "{cpu}");
    let reason = cpu["reason"].as_str().unwrap_or("");
    assert!(!reason.is_empty(), "no reason for a null CPU figure: {cpu}");
    assert_eq!(cpu["per_core"], json!([]), "{cpu}");
    assert!(cpu["cores"].as_u64().unwrap() >= 1, "{cpu}");

    let h = &out["history"]["cpu"];
    assert_eq!(h["samples"], 0, "{h}");
    assert_eq!(h["points"], json!([]), "{h}");
    for k in ["min", "avg", "max", "p95"] {
        assert!(h[k].is_null(), "{k} of an empty history: {h}");
    }
    assert!(
        !h["note"].as_str().unwrap_or("").is_empty(),
        "an empty history without a note: {h}"
    );

    // Memory needs one reading only.
    let mem = &out["metrics"]["memory"];
    assert!(f(&mem["total_mb"]) > 0.0, "{mem}");
    assert!(f(&mem["available_mb"]) > 0.0, "{mem}");
    let u = f(&mem["usage_percent"]);
    assert!(u > 0.0 && u <= 100.0, "{mem}");
    let hm = &out["history"]["memory"];
    assert_eq!(hm["samples"], 1, "{hm}");
    assert!(hm["note"].is_null(), "{hm}");

    // Nor does the exposition show a CPU figure.
    let text = e.app().ops.monitor_handle().unwrap().render_prometheus();
    assert!(
        !text.contains("\nquantbox_host_cpu_usage_ratio "),
        "the exposition shows a CPU figure after one reading"
    );
    assert!(text.contains("\nquantbox_host_memory_total_bytes "));
    e.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 3. History survives a restart.

/// A `quantbox serve` (see [`common::Served`]) on a given data directory and cgroup
/// parent, without a warm pool, reading the host every 0.25 s.
fn serve(dir: &Path, parent: &str) -> Served {
    Served::start_in(
        dir,
        parent,
        &[
            ("QUANTBOX_WARM_POOL", "0"),
            ("QUANTBOX_METRICS_INTERVAL_S", "0.25"),
        ],
    )
}

/// The memory history over an hour.
async fn memory_history(srv: &Served) -> Value {
    let (status, v) = srv
        .rest(
            "GET",
            "/api/v1/metrics?metrics=memory&include_history=true&time_range_minutes=60",
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_graceful_restart() {
    if !require_root("history_survives_a_graceful_restart") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("qbt")
        .tempdir_in("/tmp")
        .unwrap();
    let parent = format!("qbtest-metrics-{}", std::process::id());
    struct Clean<'a>(&'a str);
    impl Drop for Clean<'_> {
        fn drop(&mut self) {
            common::clean_cgroups(self.0);
        }
    }
    let _clean = Clean(&parent);

    // Both servers within one minute (the usual restart, and the case where the
    // minute in progress is split between the store and the new collector's memory):
    // too late in the minute, wait for the next one.
    let second_of_minute = Timestamp::now().unix_ms().rem_euclid(60_000);
    if second_of_minute >= 48_000 {
        tokio::time::sleep(Duration::from_millis((60_100 - second_of_minute) as u64)).await;
    }
    let mut first = serve(dir.path(), &parent);
    // At least 4 readings, and the first server's first reading in an earlier history
    // bucket (10 s over an hour) than anything the second server can read, so that a
    // point of it is recognisably older than the second collector.
    let end = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let v = memory_history(&first).await;
        let h = &v["history"]["memory"];
        let res_ms = h["resolution_s"].as_i64().unwrap() * 1000;
        let started = ms_of(&v["collector"]["started_at"]);
        let now = Timestamp::now().unix_ms();
        if h["samples"].as_u64().unwrap() >= 4
            && now.div_euclid(res_ms) > started.div_euclid(res_ms)
        {
            break v;
        }
        assert!(Instant::now() < end, "the first server's history: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let samples_before = before["history"]["memory"]["samples"].as_u64().unwrap();
    let started_before = ms_of(&before["collector"]["started_at"]);
    first.stop();

    let mut second = serve(dir.path(), &parent);
    let after = memory_history(&second).await;
    second.stop();
    let h = &after["history"]["memory"];
    let started_after = ms_of(&after["collector"]["started_at"]);
    assert!(started_after > started_before, "{after}");
    assert!(
        h["samples"].as_u64().unwrap() >= samples_before,
        "the second server's hour of memory history has fewer samples ({}) than the first \
         server had seen ({samples_before}): the first server's minute did not come back \
         from the store.\nbefore: {before}\nafter: {after}",
        h["samples"]
    );
    let res_ms = h["resolution_s"].as_i64().unwrap() * 1000;
    let older = h["points"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| ms_of(&p["t"]) + res_ms <= started_after);
    assert!(
        older,
        "no point before the second collector started ({}): {h}",
        after["collector"]["started_at"]
    );
    for k in ["min", "avg", "max", "p95"] {
        assert!(h[k].is_number(), "{k}: {h}");
    }

    let cgroups = quantbox_sandbox_local::cgroup::Cgroups::detect(&parent).unwrap();
    let left = common::leftovers(dir.path(), &parent, &cgroups.children());
    assert!(left.is_empty(), "left on the host: {left:#?}");
}

// ---------------------------------------------------------------------------------
// Lifecycle counters: each counts exactly what happened.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_counters_count_exactly_what_happened() {
    if !require_root("lifecycle_counters_count_exactly_what_happened") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let m = e.app().ops.monitor_handle().unwrap().clone();
    let counter = |name: &str| prom(&m.render_prometheus(), name).unwrap_or(-1.0);
    assert_eq!(counter("quantbox_sandboxes_created_total"), 0.0);
    assert_eq!(counter("quantbox_oom_kills_total"), 0.0);

    // One that expires, one terminated after two processes, one whose process the
    // memory limit kills.
    let short = e.create(json!({"name": "cexp", "timeout": 1})).await;
    let kept = e.create(json!({"name": "cterm"})).await;
    e.ok(&kept, "true").await;
    e.ok(&kept, "true").await;
    e.terminate(&kept).await;
    let hog = e.create(json!({"name": "chog", "memory_mb": 64})).await;
    let r = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": hog, "command": "python3", "args": ["-c", "x = b'a' * (256 * 2**20)"]}),
        )
        .await
        .unwrap();
    assert_eq!(r["oom_killed"], true, "{r}");
    let expired = common::eventually(Duration::from_secs(10), || {
        counter("quantbox_sandboxes_expired_total") == 1.0
    })
    .await;
    assert!(expired, "sandbox {short} did not count as expired");
    assert_eq!(counter("quantbox_sandboxes_created_total"), 3.0);
    assert_eq!(counter("quantbox_sandboxes_terminated_total"), 1.0);
    assert_eq!(counter("quantbox_sandboxes_crashed_total"), 0.0);
    assert_eq!(counter("quantbox_executions_total"), 3.0);
    assert_eq!(counter("quantbox_oom_kills_total"), 1.0);
    // The sandbox's own counter says the same.
    let text = m.render_prometheus();
    let own = format!("quantbox_sandbox_oom_kills_total{{sandbox_id=\"{hog}\",name=\"chog\"}}");
    let sampled = common::eventually(Duration::from_secs(5), || {
        prom(&m.render_prometheus(), &own) == Some(1.0)
    })
    .await;
    assert!(sampled, "{own} is not 1:\n{text}");
    e.terminate(&hog).await;
    assert_eq!(counter("quantbox_sandboxes_terminated_total"), 2.0);
    e.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 4. Sandboxes: usage in the tool, series and counters in the exposition.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sandbox_shows_in_the_tool_and_the_exposition() {
    if !require_root("a_busy_sandbox_shows_in_the_tool_and_the_exposition") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let name = "mburn";
    let id = e.create(json!({"name": name, "memory_mb": 128})).await;
    let ops = e.app().ops.clone();
    let burner = {
        let id = id.clone();
        tokio::spawn(async move {
            ops.call(
                "execute_e2b_process",
                json!({"sandbox_id": id, "command": "while :; do :; done", "timeout": 30}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The sampler reads every second; allow a few more for a loaded machine.
    let end = Instant::now() + Duration::from_secs(6);
    let (out, entry) = loop {
        let out = e
            .call("get_system_metrics", json!({"metrics": ["sandboxes"]}))
            .await
            .expect("get_system_metrics");
        let entry = out["metrics"]["sandboxes"]["per_sandbox"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sandbox_id"] == id.as_str())
            .cloned();
        let busy = entry
            .as_ref()
            .is_some_and(|s| f(&s["cpu_percent"]) > 50.0 && s["pids"].as_u64() >= Some(2));
        if busy || Instant::now() >= end {
            break (out, entry);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let sb = &out["metrics"]["sandboxes"];
    let entry = entry.unwrap_or_else(|| panic!("the sandbox is not in per_sandbox: {sb:#}"));
    assert!(sb["running"].as_u64().unwrap() >= 1, "{sb:#}");
    assert_eq!(entry["name"], name, "{entry}");
    assert_eq!(entry["status"], "running", "{entry}");
    assert!(f(&entry["cpu_percent"]) > 50.0, "not busy: {entry}");
    assert!(f(&entry["memory_mb"]) > 0.0, "{entry}");
    assert_eq!(f(&entry["memory_limit_mb"]), 128.0, "{entry}");
    assert!(
        entry["pids"].as_u64().unwrap() >= 2,
        "init and the shell: {entry}"
    );
    assert!(
        f(&sb["cpu_percent"]) >= f(&entry["cpu_percent"]) - 0.01,
        "the total is below one sandbox: {sb:#}"
    );

    let m = e.app().ops.monitor_handle().unwrap();
    let text = m.render_prometheus();
    let series = format!("quantbox_sandbox_memory_bytes{{sandbox_id=\"{id}\",name=\"{name}\"}}");
    let mem = prom(&text, &series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert!(mem > 0.0, "{series} {mem}");
    let limit =
        format!("quantbox_sandbox_memory_limit_bytes{{sandbox_id=\"{id}\",name=\"{name}\"}}");
    assert_eq!(prom(&text, &limit), Some(128.0 * 1024.0 * 1024.0), "{text}");
    let created = prom(&text, "quantbox_sandboxes_created_total").unwrap_or(0.0);
    assert!(created >= 1.0, "quantbox_sandboxes_created_total {created}");
    let execs = prom(&text, "quantbox_executions_total").unwrap_or(0.0);
    assert!(execs >= 1.0, "quantbox_executions_total {execs}");

    e.terminate(&id).await;
    let done = tokio::time::timeout(Duration::from_secs(15), burner)
        .await
        .expect("the burner's execution ended with its sandbox");
    done.unwrap().ok();
    // Gone from the tool and the exposition.
    let out = e
        .call("get_system_metrics", json!({"metrics": ["sandboxes"]}))
        .await
        .unwrap();
    let per = &out["metrics"]["sandboxes"]["per_sandbox"];
    assert!(
        !per.as_array()
            .unwrap()
            .iter()
            .any(|s| s["sandbox_id"] == id.as_str()),
        "a terminated sandbox is still listed: {per}"
    );
    let text = m.render_prometheus();
    assert!(
        !text.contains(&series),
        "a terminated sandbox's series remains"
    );
    assert!(prom(&text, "quantbox_sandboxes_terminated_total").unwrap_or(0.0) >= 1.0);
    e.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 5. Bad input, through every door.

/// A REST front end on the engine's operations, on a loopback port.
async fn rest_server(e: &Engine) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = quantbox::rest::router(quantbox::rest::RestState {
        ops: e.app().ops.clone(),
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, v)
}

/// Requires a 400 with the contract's error shape and a message starting with `prefix`.
fn bad_request(what: &str, (status, v): (u16, Value), prefix: &str) {
    assert_eq!(status, 400, "{what}: {v}");
    assert_eq!(v["error"]["code"], "invalid_argument", "{what}: {v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(prefix),
        "{what}: expected a message starting with {prefix:?}, got {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_invalid_argument_naming_the_field() {
    if !require_root("bad_arguments_are_invalid_argument_naming_the_field") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let url = rest_server(&e).await;
    let http = reqwest::Client::new();
    let range = "time_range_minutes: must be between 1 and 10080";
    let cases: [(Value, &str, &str); 8] = [
        (
            json!({"metrics": ["cpu", "bogus"]}),
            "metrics[1]: unknown metric `bogus`",
            "metrics[1]",
        ),
        (json!({"metrics": []}), "metrics: ", "metrics"),
        (json!({"metrics": "cpu"}), "metrics: ", "metrics"),
        (
            json!({"time_range_minutes": 0}),
            "time_range_minutes: must be between 1 and 10080, got 0",
            "time_range_minutes",
        ),
        (
            json!({"time_range_minutes": 10081}),
            "time_range_minutes: must be between 1 and 10080, got 10081",
            "time_range_minutes",
        ),
        (
            json!({"time_range_minutes": "60"}),
            "time_range_minutes: invalid type: string",
            "time_range_minutes",
        ),
        (
            json!({"include_history": "true"}),
            "include_history: invalid type: string",
            "include_history",
        ),
        (
            json!({"metrcs": ["cpu"]}),
            "metrcs: unknown field",
            "metrcs",
        ),
    ];
    for (args, prefix, field) in cases {
        // Ops::call: what MCP calls.
        let err = e
            .call("get_system_metrics", args.clone())
            .await
            .expect_err(&format!("{args} was accepted"));
        assert_eq!(err.code.as_str(), "invalid_argument", "{args}: {err:?}");
        assert!(
            err.message.starts_with(prefix),
            "{args}: expected {prefix:?}, got {:?}",
            err.message
        );
        assert_eq!(
            err.details.as_ref().map(|d| d["field"].clone()),
            Some(json!(field)),
            "{args}: {err:?}"
        );
        // REST, the tool route.
        let r = send(
            http.post(format!("{url}/api/v1/tools/get_system_metrics"))
                .json(&args),
        )
        .await;
        bad_request(&format!("POST {args}"), r.clone(), prefix);
        assert_eq!(r.1["error"]["message"], err.message.as_str(), "{args}");
    }

    // REST, the query route.
    for (query, prefix) in [
        ("metrics=cpu,nope", "metrics[1]: unknown metric `nope`"),
        ("include_history=yes", "include_history: "),
        ("include_history=1", "include_history: "),
        ("time_range_minutes=0", range),
        ("time_range_minutes=10081", range),
        ("time_range_minutes=sixty", "time_range_minutes: "),
        ("metric=cpu", "metric: "),
    ] {
        let r = send(http.get(format!("{url}/api/v1/metrics?{query}"))).await;
        bad_request(&format!("GET ?{query}"), r, prefix);
    }

    // The boundaries are accepted, by every door.
    for minutes in [1, 10080] {
        let args = json!({"metrics": ["cpu", "memory"], "time_range_minutes": minutes, "include_history": true});
        let out = e
            .call("get_system_metrics", args.clone())
            .await
            .unwrap_or_else(|err| panic!("{args}: {err:?}"));
        let h = &out["history"]["memory"];
        let span = ms_of(&h["to"]) - ms_of(&h["from"]);
        assert_eq!(span, minutes * 60_000, "{h}");
        let (status, v) = send(
            http.post(format!("{url}/api/v1/tools/get_system_metrics"))
                .json(&args),
        )
        .await;
        assert_eq!(status, 200, "POST {args}: {v}");
        let (status, v) = send(http.get(format!(
            "{url}/api/v1/metrics?metrics=cpu,memory&time_range_minutes={minutes}&include_history=true"
        )))
        .await;
        assert_eq!(status, 200, "GET {minutes}: {v}");
        let keys: Vec<&String> = v["metrics"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["cpu", "memory"], "{v}");
        let hk: Vec<&String> = v["history"].as_object().unwrap().keys().collect();
        assert_eq!(hk, ["cpu", "memory"], "{v}");
    }
    e.shutdown().await;
}
