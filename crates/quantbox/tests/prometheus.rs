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

use common::require_root;
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

/// A `quantbox serve` on a private data directory and cgroup parent; stopped with
/// SIGTERM by its drop, which also kills what is left in its cgroups.
struct Server {
    child: Option<Child>,
    url: String,
    _dir: tempfile::TempDir,
    parent: String,
    http: reqwest::Client,
}

impl Server {
    fn start(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("qbt")
            .tempdir_in("/tmp")
            .unwrap();
        let parent = format!("qbtest-prom-{tag}-{}", std::process::id());
        let mut child = Command::new(env!("CARGO_BIN_EXE_quantbox"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("QUANTBOX_CGROUP_PARENT", &parent)
            .env("QUANTBOX_METRICS_INTERVAL_S", "1")
            .env("QUANTBOX_LOG", "warn")
            .env_remove("QUANTBOX_API_KEY")
            .env_remove("QUANTBOX_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let url = common::serving_url(&mut child);
        Self {
            child: Some(child),
            url,
            _dir: dir,
            parent,
            http: reqwest::Client::new(),
        }
    }

    /// `host:port` the server listens on.
    fn addr(&self) -> &str {
        self.url
            .strip_prefix("http://")
            .unwrap()
            .trim_end_matches('/')
    }

    /// A REST call: (HTTP status, JSON body).
    async fn rest(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.url),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
        (status, v)
    }

    /// `GET /metrics`: (HTTP status, content type, body).
    async fn metrics(&self) -> (u16, String, String) {
        let resp = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, ctype, resp.text().await.unwrap())
    }

    /// Kills whatever is left in our cgroups and removes them.
    fn clean_cgroups(&self) {
        if let Ok(cg) = quantbox_sandbox_local::cgroup::Cgroups::detect(&self.parent) {
            for name in cg.children() {
                if let Some(c) = cg.open(&name) {
                    let _ = c.kill_all();
                    let _ = c.remove();
                }
            }
            let _ = cg.remove_parents();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let end = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.clean_cgroups();
    }
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
    let srv = Server::start("lint");

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
        let (status, ctype, text) = srv.metrics().await;
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
    let srv = Server::start("scrape");
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
            srv.addr()
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
    let (status, _, text) = srv.metrics().await;
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
