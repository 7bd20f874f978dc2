//! `quantbox metrics`: the host's and the sandboxes' current figures as the server's
//! collector last read them (`GET /api/v1/metrics`), for a person at a terminal. It is
//! a module of its own because, unlike the other client verbs, it renders a whole
//! multi-part view and can keep refreshing it (`--watch`), which needs a loop, a
//! screen-clearing mode for terminals and a Ctrl-C exit — more than `cli.rs`'s
//! one-call-one-answer verbs.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use crate::cli::{CallError, Client, ClientArgs, fail, seg};

/// Every metric the server knows, in the order they are shown.
const ALL_METRICS: &str = "cpu,memory,disk,network,gpu,sandboxes";

/// Width of the label column of the view.
const LABEL: usize = 10;

#[derive(Args)]
pub struct MetricsArgs {
    /// Refresh the figures in place until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between two refreshes with --watch (0.25 to 3600).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 2.0,
        value_parser = crate::cli::parse_interval_s,
        requires = "watch"
    )]
    pub interval: f64,
    /// Which metrics, comma-separated: cpu, memory, disk, network, gpu, sandboxes.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = ALL_METRICS
    )]
    pub metrics: Vec<String>,
    /// Also show each metric's min/avg/max/p95 over the last MINUTES (1 to 10080).
    #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(i64).range(1..=10_080))]
    pub history: Option<i64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl MetricsArgs {
    /// The route with the metrics and history asked for.
    fn path(&self) -> String {
        let names: Vec<String> = self.metrics.iter().map(|m| seg(m.trim())).collect();
        let mut p = format!("/api/v1/metrics?metrics={}", names.join(","));
        if let Some(min) = self.history {
            p.push_str(&format!("&include_history=true&time_range_minutes={min}"));
        }
        p
    }
}

/// Runs `quantbox metrics`: one reading, or with `--watch` a reading every interval
/// until Ctrl-C (exit 0). A failure of the first reading ends it with status 1; later
/// failures are reported on stderr and the next refresh tries again.
pub async fn run(a: MetricsArgs) -> ExitCode {
    let client = Client::new(&a.client);
    let path = a.path();
    if !a.watch {
        return match client.call(Method::GET, &path, None).await {
            Ok(v) => {
                if a.client.json {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                } else {
                    emit(&render(&v, None));
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let tty = std::io::stdout().is_terminal();
    let period = Duration::from_secs_f64(a.interval);
    // A server that accepts but never answers must not freeze the view for good.
    let patience = period.max(Duration::from_secs(30));
    let watch = async {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shown = 0u64;
        loop {
            ticks.tick().await;
            let r =
                match tokio::time::timeout(patience, client.call(Method::GET, &path, None)).await {
                    Ok(r) => r,
                    Err(_) => Err(CallError::Transport(format!(
                        "the quantbox server at {} did not answer within {} s",
                        a.client.url,
                        patience.as_secs()
                    ))),
                };
            match r {
                Ok(v) => {
                    let frame = if a.client.json {
                        format!("{}\n", serde_json::to_string(&v).unwrap_or_default())
                    } else {
                        let header = format!(
                            "refreshing every {} s — Ctrl-C to stop · read at {}",
                            a.interval,
                            s(&v["collector"]["reading_at"])
                        );
                        let body = render(&v, Some(&header));
                        if tty {
                            format!("\x1b[H\x1b[2J{body}")
                        } else if shown > 0 {
                            format!("\n{body}")
                        } else {
                            body
                        }
                    };
                    emit(&frame);
                    shown += 1;
                }
                Err(e) if shown == 0 => return fail(e),
                Err(CallError::Api { code, message }) => {
                    eprintln!("error: {code}: {message} (retrying every {} s)", a.interval)
                }
                Err(CallError::Transport(m)) => {
                    eprintln!("error: {m} (retrying every {} s)", a.interval)
                }
            }
        }
    };
    tokio::select! {
        code = watch => code,
        _ = tokio::signal::ctrl_c() => {
            if tty && !a.client.json {
                println!();
            }
            ExitCode::SUCCESS
        }
    }
}

/// Writes a whole frame at once (a view drawn line by line flickers).
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// `12.3%`, or `-` when missing.
fn pct(v: &Value) -> String {
    num(v).map_or_else(|| "-".into(), |x| format!("{x:.1}%"))
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`.
fn bytes(n: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = n;
    let mut i = 0;
    while x.abs() >= 1024.0 && i + 1 < UNITS.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{x:.0} {}", UNITS[0])
    } else {
        format!("{x:.1} {}", UNITS[i])
    }
}

/// A rate in binary units per second, or `-` while the collector has one reading.
fn rate(v: &Value) -> String {
    num(v).map_or_else(|| "-".into(), |x| format!("{}/s", bytes(x)))
}

fn uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h) {
        (0, 0) => format!("{m}m {}s", secs % 60),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

/// Rows as aligned columns, two spaces apart; `align` has an `r` for each column set
/// flush right (numbers) and an `l` for each set flush left. A row shorter than the
/// headers ends in free text (a note) that does not widen the columns it spills over.
fn table(out: &mut String, headers: Option<&[&str]>, align: &str, rows: &[Vec<String>]) {
    let cols = headers.map_or_else(
        || rows.iter().map(Vec::len).max().unwrap_or(0),
        <[&str]>::len,
    );
    let mut widths = vec![0usize; cols];
    for (i, h) in headers.into_iter().flatten().enumerate() {
        widths[i] = h.chars().count();
    }
    for r in rows {
        let counted = if r.len() < cols {
            r.len().saturating_sub(1)
        } else {
            r.len()
        };
        for (w, c) in widths.iter_mut().zip(&r[..counted]) {
            *w = (*w).max(c.chars().count());
        }
    }
    let right: Vec<bool> = align.chars().map(|a| a == 'r').collect();
    let mut line = |cells: &[String], spill: bool| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = widths.get(i).copied().unwrap_or(0);
                if spill && i + 1 == cells.len() {
                    c.clone()
                } else if right.get(i).copied().unwrap_or(false) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    if let Some(h) = headers {
        // Each header aligned like its column.
        line(
            &h.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
            false,
        );
    }
    for r in rows {
        line(r, r.len() < cols);
    }
}

/// One `label  text` line of the view.
fn kv(out: &mut String, label: &str, text: &str) {
    let _ = writeln!(out, "{label:<LABEL$} {text}");
}

/// The human view of a `GET /api/v1/metrics` answer; `header` (the watch line) replaces
/// the line that says when the figures were read.
pub fn render(v: &Value, header: Option<&str>) -> String {
    let mut out = String::new();
    let o = &mut out;
    if let Some(h) = header {
        let _ = writeln!(o, "{h}");
    }
    let host = &v["host"];
    kv(
        o,
        "host",
        &format!(
            "{} ({}, kernel {}), up {}",
            s(&host["hostname"]),
            s(&host["os"]),
            s(&host["kernel"]),
            host["uptime_s"].as_u64().map_or_else(|| "-".into(), uptime)
        ),
    );
    if header.is_none() {
        kv(
            o,
            "read at",
            &format!(
                "{} (collector every {} s)",
                s(&v["collector"]["reading_at"]),
                num(&v["collector"]["interval_s"]).map_or_else(|| "-".into(), |x| x.to_string())
            ),
        );
    }
    let m = &v["metrics"];
    if let Some(cpu) = m.get("cpu") {
        cpu_lines(o, cpu);
    }
    if let Some(mem) = m.get("memory") {
        kv(
            o,
            "memory",
            &format!(
                "{:.1} / {:.1} MB used ({}), {:.1} MB available",
                num(&mem["used_mb"]).unwrap_or(0.0),
                num(&mem["total_mb"]).unwrap_or(0.0),
                pct(&mem["usage_percent"]),
                num(&mem["available_mb"]).unwrap_or(0.0)
            ),
        );
        let total = num(&mem["swap_total_mb"]).unwrap_or(0.0);
        let swap = if total > 0.0 {
            let used = num(&mem["swap_used_mb"]).unwrap_or(0.0);
            format!(
                "{used:.1} / {total:.1} MB used ({:.1}%)",
                used / total * 100.0
            )
        } else {
            "none".into()
        };
        kv(o, "swap", &swap);
    }
    if let Some(disks) = m.get("disk").and_then(Value::as_array) {
        // Used and total right-aligned each, so that the slashes line up.
        let gb = |d: &Value, k: &str| format!("{:.1}", num(&d[k]).unwrap_or(0.0));
        let width = |k: &str| disks.iter().map(|d| gb(d, k).len()).max().unwrap_or(0);
        let (uw, tw) = (width("used_gb"), width("total_gb"));
        section(o, "disk", disks, "llrr", |d| {
            vec![
                s(&d["mount_point"]),
                s(&d["filesystem"]),
                format!("{:>uw$} / {:>tw$} GB", gb(d, "used_gb"), gb(d, "total_gb")),
                pct(&d["usage_percent"]),
            ]
        });
    }
    if let Some(nics) = m.get("network").and_then(Value::as_array) {
        section(o, "network", nics, "llrlrlrlr", |n| {
            vec![
                s(&n["interface"]),
                "rx".into(),
                rate(&n["rx_bytes_per_s"]),
                "tx".into(),
                rate(&n["tx_bytes_per_s"]),
                "total rx".into(),
                bytes(num(&n["rx_bytes_total"]).unwrap_or(0.0)),
                "tx".into(),
                bytes(num(&n["tx_bytes_total"]).unwrap_or(0.0)),
            ]
        });
    }
    if let Some(gpu) = m.get("gpu") {
        gpu_lines(o, gpu);
    }
    if let Some(sb) = m.get("sandboxes") {
        sandbox_lines(o, sb);
    }
    if let Some(h) = v.get("history").and_then(Value::as_object) {
        // In the view's order, then any metric this client does not know.
        let order = |name: &str| ALL_METRICS.split(',').position(|m| m == name);
        let mut entries: Vec<(&String, &Value)> = h.iter().collect();
        entries.sort_by_key(|(name, _)| order(name).unwrap_or(usize::MAX));
        let rows: Vec<Vec<String>> = entries
            .into_iter()
            .map(|(name, e)| {
                let mut row = vec![name.clone(), s(&e["unit"]), s(&e["samples"])];
                match (e["note"].as_str(), e["min"].is_null()) {
                    (Some(note), true) => row.push(note.to_owned()),
                    _ => {
                        for k in ["min", "avg", "max", "p95"] {
                            row.push(history_value(&e[k], e["unit"].as_str()));
                        }
                    }
                }
                row
            })
            .collect();
        let _ = writeln!(o);
        let range = h
            .values()
            .next()
            .map(|e| format!(" from {} to {}", s(&e["from"]), s(&e["to"])))
            .unwrap_or_default();
        let _ = writeln!(o, "history{range}:");
        table(
            o,
            Some(&["METRIC", "UNIT", "SAMPLES", "MIN", "AVG", "MAX", "P95"]),
            "llrrrrr",
            &rows,
        );
    }
    out
}

/// A summary figure: a rate in binary units for bytes per second, else one decimal.
fn history_value(v: &Value, unit: Option<&str>) -> String {
    match (num(v), unit) {
        (None, _) => "-".into(),
        (Some(x), Some("bytes_per_s")) => format!("{}/s", bytes(x)),
        (Some(x), _) => format!("{x:.1}"),
    }
}

/// Lines of aligned columns, the first one after `label`, or `label  none`.
fn section(
    o: &mut String,
    label: &str,
    items: &[Value],
    align: &str,
    row: impl Fn(&Value) -> Vec<String>,
) {
    if items.is_empty() {
        kv(o, label, "none");
        return;
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    let mut block = String::new();
    table(&mut block, None, align, &rows);
    for (i, line) in block.lines().enumerate() {
        kv(o, if i == 0 { label } else { "" }, line);
    }
}

fn cpu_lines(o: &mut String, cpu: &Value) {
    let load: Vec<String> = cpu["load_avg"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{:.2}", num(x).unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    let load = format!("load {} (1, 5, 15 min)", load.join(" "));
    let cores = s(&cpu["cores"]);
    match num(&cpu["usage_percent"]) {
        Some(u) => kv(o, "CPU", &format!("{u:.1}% of {cores} cores; {load}")),
        None => {
            kv(o, "CPU", &format!("{cores} cores; {load}"));
            kv(o, "", &s(&cpu["reason"]));
        }
    }
    let per: Vec<String> = cpu["per_core"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{:>5.1}", num(x).unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    const PER_LINE: usize = 8;
    for (i, chunk) in per.chunks(PER_LINE).enumerate() {
        let first = i * PER_LINE;
        let range = format!("{first}-{}:", first + chunk.len() - 1);
        kv(
            o,
            if i == 0 { "per core" } else { "" },
            &format!("{range:<8}{}", chunk.join(" ")),
        );
    }
}

fn gpu_lines(o: &mut String, gpu: &Value) {
    let Some(devices) = gpu.as_array() else {
        kv(o, "GPU", &format!("not available: {}", s(&gpu["reason"])));
        return;
    };
    section(o, "GPU", devices, "llrrrr", |d| {
        let mb = |k: &str| num(&d[k]).map_or_else(|| "-".into(), |x| format!("{x:.0}"));
        vec![
            format!("#{}", s(&d["index"])),
            s(&d["name"]),
            format!("{} busy", pct(&d["utilization_percent"])),
            format!("{} / {} MB", mb("memory_used_mb"), mb("memory_total_mb")),
            num(&d["temperature_c"]).map_or_else(|| "-".into(), |t| format!("{t:.0} °C")),
            num(&d["power_w"]).map_or_else(|| "-".into(), |p| format!("{p:.1} W")),
        ]
    });
}

fn sandbox_lines(o: &mut String, sb: &Value) {
    kv(
        o,
        "sandboxes",
        &format!(
            "{} running, {} paused; CPU {} of a core, memory {:.1} MB",
            s(&sb["running"]),
            s(&sb["paused"]),
            pct(&sb["cpu_percent"]),
            num(&sb["memory_mb"]).unwrap_or(0.0)
        ),
    );
    let Some(list) = sb["per_sandbox"].as_array().filter(|l| !l.is_empty()) else {
        return;
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            vec![
                s(&u["sandbox_id"]),
                s(&u["name"]),
                s(&u["status"]),
                pct(&u["cpu_percent"]),
                format!(
                    "{:.1} / {:.0} MB",
                    num(&u["memory_mb"]).unwrap_or(0.0),
                    num(&u["memory_limit_mb"]).unwrap_or(0.0)
                ),
                s(&u["pids"]),
                format!("{:.1} MB", num(&u["disk_mb"]).unwrap_or(0.0)),
                s(&u["oom_kills"]),
            ]
        })
        .collect();
    let _ = writeln!(o);
    let headers = [
        "ID",
        "NAME",
        "STATUS",
        "CPU",
        "MEMORY",
        "PIDS",
        "DISK",
        "OOM KILLS",
    ];
    table(o, Some(&headers), "lllrrrrr", &rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "timestamp": "2025-01-01T00:00:02Z",
            "host": {"hostname": "box", "os": "Debian 12", "kernel": "6.1.0", "uptime_s": 93_784},
            "metrics": {
                "cpu": {"usage_percent": 12.5, "per_core": [10.0, 15.0, 100.0, 0.0], "cores": 4, "load_avg": [0.5, 0.25, 0.75]},
                "memory": {"total_mb": 16000.0, "used_mb": 4000.0, "available_mb": 12000.0, "usage_percent": 25.0, "swap_total_mb": 0.0, "swap_used_mb": 0.0},
                "disk": [
                    {"mount_point": "/", "filesystem": "ext4", "total_gb": 100.0, "used_gb": 40.0, "available_gb": 60.0, "usage_percent": 40.0},
                    {"mount_point": "/boot/efi", "filesystem": "vfat", "total_gb": 0.5, "used_gb": 0.01, "available_gb": 0.49, "usage_percent": 2.0}
                ],
                "network": [{"interface": "eth0", "rx_bytes_per_s": 1536.0, "tx_bytes_per_s": null, "rx_bytes_total": 5_368_709_120u64, "tx_bytes_total": 100}],
                "gpu": {"available": false, "reason": "no NVIDIA driver"},
                "sandboxes": {"running": 1, "paused": 0, "cpu_percent": 3.5, "memory_mb": 20.0, "per_sandbox": [
                    {"sandbox_id": "sb_1", "name": "bot", "status": "running", "cpu_percent": 3.5, "memory_mb": 20.0, "memory_limit_mb": 128.0, "disk_mb": 1.0, "pids": 3, "oom_kills": 0, "sampled_at": "x"}
                ]}
            },
            "history": {
                "cpu": {"series": "s", "unit": "percent", "from": "a", "to": "b", "resolution_s": 10, "samples": 5, "points": [], "min": 1.0, "avg": 2.0, "max": 3.0, "p95": 3.0},
                "gpu": {"series": "s", "unit": "percent", "from": "a", "to": "b", "resolution_s": 10, "samples": 0, "points": [], "min": null, "avg": null, "max": null, "p95": null, "note": "no GPU readings in this range"}
            },
            "collector": {"interval_s": 1.0, "started_at": "2025-01-01T00:00:00Z", "reading_at": "2025-01-01T00:00:01Z"}
        })
    }

    #[test]
    fn the_view_shows_every_part() {
        let text = render(&sample(), None);
        for want in [
            "host       box (Debian 12, kernel 6.1.0), up 1d 2h 3m",
            "read at    2025-01-01T00:00:01Z (collector every 1 s)",
            "CPU        12.5% of 4 cores; load 0.50 0.25 0.75 (1, 5, 15 min)",
            "per core   0-3:     10.0  15.0 100.0   0.0",
            "memory     4000.0 / 16000.0 MB used (25.0%), 12000.0 MB available",
            "swap       none",
            "disk       /          ext4  40.0 / 100.0 GB  40.0%",
            "           /boot/efi  vfat   0.0 /   0.5 GB   2.0%",
            "network    eth0  rx  1.5 KiB/s  tx  -  total rx  5.0 GiB  tx  100 B",
            "GPU        not available: no NVIDIA driver",
            "sandboxes  1 running, 0 paused; CPU 3.5% of a core, memory 20.0 MB",
            "sb_1  bot   running  3.5%  20.0 / 128 MB     3  1.0 MB          0",
            "cpu     percent        5  1.0  2.0  3.0  3.0",
            "gpu     percent        0  no GPU readings in this range",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }

    #[test]
    fn a_null_cpu_shows_the_reason_and_the_watch_header_replaces_the_reading_line() {
        let mut v = sample();
        v["metrics"]["cpu"] = json!({"usage_percent": null, "reason": "needs two readings", "per_core": [], "cores": 4, "load_avg": [1.0, 1.0, 1.0]});
        let text = render(&v, Some("refreshing every 2 s"));
        assert!(text.starts_with("refreshing every 2 s\n"), "{text}");
        assert!(!text.contains("read at"), "{text}");
        assert!(
            text.contains("CPU        4 cores; load 1.00 1.00 1.00"),
            "{text}"
        );
        assert!(text.contains("           needs two readings\n"), "{text}");
        assert!(!text.contains("per core"), "{text}");
    }

    #[test]
    fn sizes_and_intervals() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert_eq!(uptime(59), "0m 59s");
        assert_eq!(uptime(3661), "1h 1m");
        assert!(crate::cli::parse_interval_s("0.25").is_ok());
        assert!(crate::cli::parse_interval_s("3600").is_ok());
        assert!(
            crate::cli::parse_interval_s("0.1")
                .unwrap_err()
                .contains("between 0.25 and 3600")
        );
        assert!(crate::cli::parse_interval_s("soon").is_err());
        assert!(crate::cli::parse_interval_s("NaN").is_err());
    }
}
