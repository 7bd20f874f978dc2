//! `quantbox bench --suite e2b`: what E2B's own SDK pays against quantbox's E2B API.
//!
//! The engine and the E2B API (control plane and envd on one port, the router `quantbox
//! serve` mounts) run in this process on loopback; E2B's official Python SDK, in a child
//! Python, times `Sandbox.create()` (then `kill()`, untimed) and `commands.run("true")`
//! on one sandbox, as a user's code would call them. The same two calls are also timed
//! with a plain HTTP client (`POST /v2/sandboxes`; `process.Process/Start` read to its
//! end), which shows what is the server's and what is the SDK's.
//!
//! The Python must have `e2b` installed (the tests pin `e2b==2.63.0` in
//! `tests/python/requirements-e2b.txt`; their virtualenv is `target/qb-e2b-pyenv`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench::{BenchArgs, Engine, Stats, ms};

/// The SDK's side, run by the child Python: JSON with the samples (ms) on stdout.
const SCRIPT: &str = r#"
import json, os, sys, time
import e2b
from e2b import Sandbox
n = int(sys.argv[1])
create, run_true, kill = [], [], []
Sandbox.create().kill()  # warm the SDK's imports and connection pool
for _ in range(n):
    t = time.perf_counter(); sb = Sandbox.create(); create.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter(); sb.kill(); kill.append((time.perf_counter() - t) * 1000)
sb = Sandbox.create()
sb.commands.run("true")
for _ in range(n):
    t = time.perf_counter(); sb.commands.run("true"); run_true.append((time.perf_counter() - t) * 1000)
sb.kill()
import importlib.metadata as md
print(json.dumps({"version": md.version("e2b"), "create": create, "run_true": run_true, "kill": kill}))
"#;

const KEY: &str = "e2b_00000000000000000000000000000000bec4c400";

pub(crate) struct E2bBench {
    sdk_version: String,
    sdk_create: Stats,
    sdk_run_true: Stats,
    sdk_kill: Stats,
    http_create: Stats,
    http_run_true: Stats,
}

pub(crate) async fn run(a: &BenchArgs) -> Result<E2bBench> {
    let python = a.python.clone();
    let probe = tokio::process::Command::new(&python)
        .args(["-c", "import e2b"])
        .output()
        .await
        .with_context(|| format!("running {python} (--python)"))?;
    if !probe.status.success() {
        bail!(
            "{python} cannot import e2b: install E2B's SDK (pip install -r tests/python/requirements-e2b.txt) or pass --python target/qb-e2b-pyenv/bin/python (made by `cargo test --test e2b_python_sdk`)"
        );
    }
    let n = a.iterations();
    let engine = Engine::open(a, "e2b", a.warm_pool).await?;
    let result = measure(a, &engine, &python, n).await;
    engine.close().await;
    result
}

async fn measure(a: &BenchArgs, engine: &Engine, python: &str, n: usize) -> Result<E2bBench> {
    let app = engine.app();
    let tokens =
        quantbox_e2b::envd::AccessTokens::load_or_create(&app.data_dir.join("e2b-token.key"))
            .context("the envd token secret")?;
    let router = quantbox_e2b::router(
        app.ops.clone(),
        quantbox_e2b::server::ApiKeys::AnyWellFormed,
        Arc::new(tokens),
        |r| r,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    use axum::serve::ListenerExt as _;
    // As `quantbox serve` does.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let progress = |what: &str| {
        if !a.json() {
            eprintln!("· {what}");
        }
    };

    progress(&format!(
        "E2B's Python SDK: {n} × Sandbox.create(), {n} × commands.run(\"true\")"
    ));
    let out = tokio::process::Command::new(python)
        .args(["-c", SCRIPT, &n.to_string()])
        .env("E2B_API_KEY", KEY)
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_DOMAIN")
        .output()
        .await
        .context("running the SDK script")?;
    if !out.status.success() {
        bail!(
            "the SDK script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).context("reading the SDK script's output")?;
    let samples = |k: &str| -> Stats {
        Stats::new(
            v[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .collect(),
        )
    };

    progress(&format!(
        "plain HTTP: {n} × POST /v2/sandboxes, {n} × process.Process/Start `true`"
    ));
    let http = reqwest::Client::new();
    let mut create = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = http
            .post(format!("{url}/v2/sandboxes"))
            .header("X-API-Key", KEY)
            .json(&json!({"templateID": "base", "metadata": {}, "envVars": {}}))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        create.push(ms(t.elapsed()));
        if status.as_u16() != 201 {
            bail!("POST /v2/sandboxes answered {status}: {body}");
        }
        let id = body["sandboxID"].as_str().unwrap_or_default().to_owned();
        http.delete(format!("{url}/sandboxes/{id}"))
            .header("X-API-Key", KEY)
            .send()
            .await?;
        ids.push(id);
    }
    let r = http
        .post(format!("{url}/v2/sandboxes"))
        .header("X-API-Key", KEY)
        .json(&json!({"templateID": "base"}))
        .send()
        .await?;
    let body: Value = r.json().await?;
    let id = body["sandboxID"].as_str().unwrap_or_default().to_owned();
    let token = body["envdAccessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let start = |http: &reqwest::Client| {
        let req =
            json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "true"]}, "stdin": false});
        let payload = serde_json::to_vec(&req).expect("JSON");
        http.post(format!("{url}/process.Process/Start"))
            .header("Content-Type", "application/connect+json")
            .header("E2b-Sandbox-Id", &id)
            .header("X-Access-Token", &token)
            .body(quantbox_e2b::connect::encode_envelope(0, &payload))
    };
    let mut run_true = Vec::with_capacity(n);
    for i in 0..=n {
        let t = Instant::now();
        let body = start(&http).send().await?.bytes().await?;
        let took = ms(t.elapsed());
        if !body.windows(6).any(|w| w == b"\"end\":") {
            bail!("process.Process/Start ended without an end event");
        }
        if i > 0 {
            run_true.push(took);
        }
    }
    http.delete(format!("{url}/sandboxes/{id}"))
        .header("X-API-Key", KEY)
        .send()
        .await?;
    server.abort();
    Ok(E2bBench {
        sdk_version: v["version"].as_str().unwrap_or("?").to_owned(),
        sdk_create: samples("create"),
        sdk_run_true: samples("run_true"),
        sdk_kill: samples("kill"),
        http_create: Stats::new(create),
        http_run_true: Stats::new(run_true),
    })
}

impl E2bBench {
    pub(crate) fn json(&self) -> Value {
        json!({
            "sdk": format!("e2b {} (Python)", self.sdk_version),
            "sdk_sandbox_create": self.sdk_create.json(),
            "sdk_commands_run_true": self.sdk_run_true.json(),
            "sdk_kill": self.sdk_kill.json(),
            "http_create": self.http_create.json(),
            "http_process_start_true": self.http_run_true.json(),
        })
    }
}

pub(crate) fn print(a: &BenchArgs, m: &E2bBench) -> Result<()> {
    if a.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"e2b": m.json()}))?
        );
        return Ok(());
    }
    println!(
        "\nE2B API on loopback (E2B's Python SDK e2b {}; warm pool {})",
        m.sdk_version, a.warm_pool
    );
    println!("{:<44} {:>9} {:>9} {:>9}", "", "p50 ms", "p95 ms", "target");
    let row = |name: &str, s: &Stats, target: &str| {
        println!(
            "{name:<44} {:>9.2} {:>9.2} {:>9}",
            s.pct(0.5),
            s.pct(0.95),
            target
        );
    };
    row("SDK Sandbox.create()", &m.sdk_create, "≤ 30");
    row("SDK commands.run(\"true\")", &m.sdk_run_true, "≤ 10");
    row("SDK kill()", &m.sdk_kill, "");
    row("HTTP POST /v2/sandboxes", &m.http_create, "");
    row(
        "HTTP process.Process/Start `true` (to end)",
        &m.http_run_true,
        "",
    );
    Ok(())
}
