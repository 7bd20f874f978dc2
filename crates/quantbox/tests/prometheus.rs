//! `GET /metrics` of a real `quantbox serve` is Prometheus text exposition that the real
//! Prometheus tools accept: `promtool check metrics` finds nothing to lint in it after a
//! sandbox was created and ran a process (so per-sandbox gauges, lifecycle counters and
//! the HTTP latency histogram all have samples), and a real Prometheus server scrapes it
//! (`up` is 1) and stores the same values the server itself reports.
//!
//! Both tests need the Debian package `prometheus` (`promtool` and `prometheus`); without
//! it they skip, unless QUANTBOX_REQUIRE_ALL_TESTS=1 (CI), where skipping is a failure.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Served, require_root};
use serde_json::{Value, json};

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// True when `tool` is installed. Without it, prints why the test skips and returns false
/// — unless QUANTBOX_REQUIRE_ALL_TESTS=1 (CI), where skipping is a failure.
fn require_tool(test: &str, tool: &str) -> bool {
    if Path::new(tool).is_file() {
        return true;
    }
    if std::env::var("QUANTBOX_REQUIRE_ALL_TESTS").as_deref() == Ok("1") {
        panic!(
            "{test} needs {tool} (Debian: apt-get install prometheus), and \
             QUANTBOX_REQUIRE_ALL_TESTS=1 forbids skipping it"
        );
    }
    eprintln!("skipped {test}: {tool} is missing (Debian: apt-get install prometheus)");
    false
}

/// A `quantbox serve` (see [`common::Served`]) reading the host every second, on a
/// private data directory and the cgroup parent `qbtest-prom-{tag}-{pid}`.
fn serve(tag: &str) -> Served {
    Served::start(
        &format!("prom-{tag}"),
        &[("QUANTBOX_METRICS_INTERVAL_S", "1")],
    )
}

/// `host:port` the server listens on.
fn addr(srv: &Served) -> &str {
    srv.url
        .strip_prefix("http://")
        .unwrap()
        .trim_end_matches('/')
}

/// `GET /metrics`: (HTTP status, content type, body).
async fn metrics(srv: &Served) -> (u16, String, String) {
    srv.rest_raw("GET", "/metrics", None).await
}

/// A child process killed (and reaped) when dropped, also when the test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the unlabelled sample `name` in exposition text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| {
            v.split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|e| panic!("{name}: not a number ({e}): {v:?}"))
        })
}

/// Percent-encodes a query string value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_metrics() {
    let test = "promtool_accepts_metrics";
    if !require_root(test) || !require_tool(test, PROMTOOL) {
        return;
    }
    let srv = serve("lint");

    // A sandbox, made and used through REST, so every family has samples.
    let (status, v) = srv
        .rest(
            "POST",
            "/api/v1/sandboxes",
            Some(json!({"name": "prom", "memory_mb": 128})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let id = v["sandbox_id"].as_str().unwrap().to_owned();
    let (status, v) = srv
        .rest(
            "POST",
            &format!("/api/v1/sandboxes/{id}/exec"),
            Some(json!({"command": "echo hi", "timeout": 60})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(v["stdout"], "hi\n", "{v}");

    // The sampler reads the sandbox once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let memory_line = format!("quantbox_sandbox_memory_bytes{{sandbox_id=\"{id}\"");
    let end = Instant::now() + Duration::from_secs(10);
    let (ctype, text) = loop {
        let (status, ctype, text) = metrics(&srv).await;
        assert_eq!(status, 200, "{text}");
        if text.lines().any(|l| l.starts_with(&memory_line)) || Instant::now() > end {
            break (ctype, text);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        ctype.starts_with("text/plain; version=0.0.4"),
        "content type: {ctype:?}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(&memory_line)),
        "no {memory_line} line:\n{text}"
    );
    let bucket = "quantbox_http_request_duration_seconds_bucket{method=\"POST\",\
                  route=\"/api/v1/sandboxes\",status=\"201\",le=\"+Inf\"} ";
    assert!(
        text.lines().any(|l| l.starts_with(bucket)),
        "no {bucket:?} line:\n{text}"
    );
    let created = sample(&text, "quantbox_sandboxes_created_total")
        .unwrap_or_else(|| panic!("no quantbox_sandboxes_created_total:\n{text}"));
    assert!(created >= 1.0, "quantbox_sandboxes_created_total {created}");

    // promtool finds nothing to lint.
    let mut promtool = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let lint = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && lint.trim().is_empty(),
        "promtool check metrics: {}\n{lint}",
        out.status
    );

    let (status, v) = srv
        .rest(
            "DELETE",
            &format!("/api/v1/sandboxes/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_quantbox() {
    let test = "prometheus_scrapes_quantbox";
    if !require_root(test) || !require_tool(test, PROMETHEUS) {
        return;
    }
    let srv = serve("scrape");
    let tmp = tempfile::Builder::new()
        .prefix("qbprom")
        .tempdir_in("/tmp")
        .unwrap();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: quantbox\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['{}']\n",
            addr(&srv)
        ),
    )
    .unwrap();
    let port = free_port();
    let prom = KillOnDrop(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Waits for the first scrape to be queryable.
    let query = |q: &'static str| {
        let http = srv.http.clone();
        async move {
            let resp = http
                .get(format!(
                    "http://127.0.0.1:{port}/api/v1/query?query={}",
                    url_encode(q)
                ))
                .send()
                .await
                .ok()?;
            let v: Value = resp.json().await.ok()?;
            let r = v["data"]["result"].as_array()?.clone();
            (!r.is_empty()).then_some(r)
        }
    };
    let end = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Some(r) = query("quantbox_host_memory_total_bytes").await {
            break r;
        }
        assert!(
            Instant::now() < end,
            "prometheus stored no quantbox_host_memory_total_bytes in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(result.len(), 1, "{result:?}");
    let stored: f64 = result[0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("{result:?}"))
        .parse()
        .unwrap();
    let (status, _, text) = metrics(&srv).await;
    assert_eq!(status, 200, "{text}");
    let own = sample(&text, "quantbox_host_memory_total_bytes")
        .unwrap_or_else(|| panic!("no quantbox_host_memory_total_bytes:\n{text}"));
    assert_eq!(
        stored, own,
        "prometheus stored {stored}, quantbox says {own}"
    );
    assert_eq!(result[0]["metric"]["job"], "quantbox", "{result:?}");

    let up = query("up{job=\"quantbox\"}")
        .await
        .expect("prometheus has an up series for the quantbox job");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "the scrape failed: {up:?}");
    drop(prom);
}
