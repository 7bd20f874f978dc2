//! `quantbox metrics` against a real `quantbox serve`: the human view and `--json` show
//! what the server reports, the server's errors and clap's refusals exit non-zero,
//! `--watch` off a terminal prints one refresh after another and ends with status 0 on
//! SIGINT, and a server that is not there fails at once.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Served;
use serde_json::Value;

/// A `quantbox serve` (see [`common::Served`]) without a warm pool (these tests start no
/// sandbox unless they ask), reading the host every 0.25 s, on a private data directory
/// and cgroup parent.
fn serve() -> Served {
    Served::start(
        "cm",
        &[
            ("QUANTBOX_WARM_POOL", "0"),
            ("QUANTBOX_METRICS_INTERVAL_S", "0.25"),
        ],
    )
}

/// `GET path`, which must succeed; returns the JSON.
async fn get(srv: &Served, path: &str) -> Value {
    let (status, v) = srv.rest("GET", path, None).await;
    assert!((200..300).contains(&status), "GET {path}: {status}");
    v
}

fn quantbox(url: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_quantbox"));
    cmd.arg("metrics")
        .args(["--url", url])
        .args(args)
        .env_remove("QUANTBOX_URL")
        .env_remove("QUANTBOX_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `quantbox metrics --url URL ARGS`: (exit code, stdout, stderr).
async fn metrics(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), quantbox(url, args).output())
        .await
        .unwrap_or_else(|_| panic!("quantbox metrics {args:?} did not finish in 30 s"))
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_command_against_a_real_server() {
    let srv = serve();

    // The human view: every part, and the server's own memory total.
    let (code, out, err) = metrics(&srv.url, &[]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let v = get(&srv, "/api/v1/metrics?metrics=memory").await;
    let total = v["metrics"]["memory"]["total_mb"].as_f64().unwrap();
    assert!(
        out.contains(&format!("/ {total:.1} MB used")),
        "memory total {total} not in:\n{out}"
    );
    for label in [
        "host",
        "read at",
        "CPU",
        "memory",
        "swap",
        "disk",
        "network",
        "GPU",
        "sandboxes",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(label)),
            "no {label} line in:\n{out}"
        );
    }

    // --json: the server's JSON, with every metric by default.
    let (code, out, err) = metrics(&srv.url, &["--json"]).await;
    assert_eq!(code, 0, "stderr: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(v["metrics"]["cpu"].is_object(), "{v}");
    for m in ["memory", "disk", "network", "gpu", "sandboxes"] {
        assert!(!v["metrics"][m].is_null(), "no {m} in {v}");
    }
    assert!(v.get("history").is_none(), "{v}");

    // A chosen list and a history summary.
    let (code, out, err) = metrics(&srv.url, &["--metrics", "cpu, memory", "--history", "5"]).await;
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("METRIC  UNIT"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("memory  percent")),
        "{out}"
    );
    assert!(!out.lines().any(|l| l.starts_with("disk")), "{out}");

    // The server's error, as other commands print them.
    let (code, out, err) = metrics(&srv.url, &["--metrics", "bogus"]).await;
    assert_ne!(code, 0, "stdout: {out}");
    assert!(err.contains("metrics[0]: unknown metric"), "{err}");
    assert!(err.starts_with("error: invalid_argument: "), "{err}");

    // clap refuses a refresh period out of range.
    let (code, _, err) = metrics(&srv.url, &["--interval", "0.1", "--watch"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("between 0.25 and 3600"), "{err}");
    let (code, _, err) = metrics(&srv.url, &["--history", "0"]).await;
    assert_eq!(code, 2, "{err}");
    // A refresh period means nothing without --watch: refused, not ignored.
    let (code, _, err) = metrics(&srv.url, &["--interval", "1"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--watch"), "{err}");

    // --watch off a terminal: refreshes separated by a blank line, until SIGINT (exit 0).
    for (json, per_refresh) in [(false, "refreshing every 0.5 s"), (true, "\"metrics\"")] {
        let mut args = vec!["--watch", "--interval", "0.5"];
        if json {
            args.push("--json");
        }
        let child = quantbox(&srv.url, &args).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
            .await
            .expect("--watch ends on SIGINT")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let refreshes = stdout.matches(per_refresh).count();
        assert!(refreshes >= 2, "{refreshes} refresh(es):\n{stdout}");
        assert!(!stdout.contains('\x1b'), "no screen control off a terminal");
        if json {
            for line in stdout.lines() {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(v["metrics"]["cpu"].is_object(), "{v}");
            }
        } else {
            assert!(stdout.contains("\n\nrefreshing every 0.5 s"), "{stdout}");
        }
    }

    // With root, a sandbox shows in the per-sandbox table.
    if nix::unistd::geteuid().is_root() {
        per_sandbox_table(&srv).await;
    }

    // No server there: fails at once, with or without --watch.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for args in [&[][..], &["--watch"][..]] {
        let started = Instant::now();
        let (code, out, err) = metrics(&closed, args).await;
        assert_eq!(code, 1, "{args:?}: stdout: {out}\nstderr: {err}");
        assert!(
            err.contains("cannot reach the quantbox server"),
            "{args:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
    }
}

async fn per_sandbox_table(srv: &Served) {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/sandboxes", srv.url))
        .json(&serde_json::json!({"name": "metricsbot", "memory_mb": 128}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["sandbox_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The manager samples each sandbox every second.
    let mut out = String::new();
    for _ in 0..50 {
        let (code, o, err) = metrics(&srv.url, &["--metrics", "sandboxes"]).await;
        assert_eq!(code, 0, "{err}");
        out = o;
        if out.contains(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(out.contains("ID    ") || out.contains("ID  "), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not in:\n{out}"));
    assert!(
        row.contains("metricsbot") && row.contains("running"),
        "{row}"
    );
    assert!(row.contains("/ 128 MB"), "{row}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("sandboxes  1 running, 0 paused")),
        "{out}"
    );
    let r = http
        .delete(format!("{}/api/v1/sandboxes/{id}?force=true", srv.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}
