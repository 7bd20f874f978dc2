//! Provider `e2b` against a real E2B-compatible cloud: quantbox's own (`quantbox serve`
//! with its E2B port, which serves E2B's control plane and envd over its local
//! sandboxes). Nothing is mocked: an in-process engine whose provider `e2b` points
//! E2B_API_URL and E2B_SANDBOX_URL at that server runs every sandbox tool with
//! `provider: "e2b"`, and the cloud's own API is asked what it holds.
//!
//! Also: no key (unavailable, naming E2B_API_KEY), a wrong key (E2B's 401 as the auth
//! error), and retries against the cloud's real 429 (its sandbox cap): given up after the
//! policy's attempts with E2B's message, or successful once capacity frees up.

mod common;

use std::time::{Duration, Instant};

use common::{Engine, Served, require_root};
use quantbox_e2b::client::Config;
use serde_json::{Value, json};

const KEY: &str = "e2b_53ae1fed82754c17ad8077fbc8bcdd90";
const WRONG_KEY: &str = "e2b_00000000000000000000000000000000deadbeef";

/// A `quantbox serve` playing E2B's cloud, accepting only [`KEY`].
fn cloud(tag: &str, extra: &[(&str, &str)]) -> (Served, String) {
    let mut env = vec![
        ("QUANTBOX_E2B_LISTEN", "127.0.0.1:0"),
        ("QUANTBOX_E2B_API_KEY", KEY),
    ];
    env.extend_from_slice(extra);
    let served = Served::start(tag, &env);
    let url = served
        .e2b_url
        .clone()
        .expect("the server prints its E2B API's URL");
    (served, url)
}

/// The cloud's own API, as E2B's SDKs call it: (status, JSON body).
async fn remote(url: &str, method: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{url}{path}"),
        )
        .header("X-API-KEY", KEY)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The cloud's sandboxes (running and paused) whose metadata names quantbox sandbox `id`.
async fn remote_of(url: &str, id: &str) -> Vec<Value> {
    let (st, list) = remote(url, "GET", "/v2/sandboxes").await;
    assert_eq!(st, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["metadata"]["quantbox_id"] == id)
        .cloned()
        .collect()
}

async fn exec(e: &Engine, args: Value) -> Value {
    e.call("execute_e2b_process", args)
        .await
        .unwrap_or_else(|err| panic!("exec failed: {err}"))
}

fn rfc3339_ms(v: &Value) -> i64 {
    quantbox_sandbox::Timestamp::parse_rfc3339(v.as_str().unwrap())
        .unwrap()
        .unix_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2b_provider_runs_every_sandbox_tool_in_the_cloud() {
    if !require_root("e2b_provider_runs_every_sandbox_tool_in_the_cloud") {
        return;
    }
    let (_cloud, url) = cloud("e2bcloud", &[]);
    let e = Engine::start_configured(
        |c| c.warm_pool = 0,
        Config::single_server(Some(KEY.into()), &url),
    )
    .await;

    let info = e
        .app()
        .ops
        .manager()
        .provider("e2b")
        .expect("provider e2b is registered")
        .info();
    assert_eq!(info.status, "available", "{info:?}");

    // Create.
    let out = e
        .call(
            "create_e2b_sandbox",
            json!({"name": "cloudy", "provider": "e2b", "timeout": 600, "memory_mb": 256,
                   "env_vars": {"GREETING": "hello"}, "metadata": {"suite": "e2b-provider"}}),
        )
        .await
        .expect("create in the cloud");
    assert_eq!(out["provider"], "e2b", "{out}");
    assert_eq!(out["status"], "running");
    let id = out["sandbox_id"].as_str().unwrap().to_owned();

    // The cloud holds it, under its own id, labelled with quantbox's.
    let held = remote_of(&url, &id).await;
    assert_eq!(held.len(), 1, "{held:?}");
    let rid = held[0]["sandboxID"].as_str().unwrap().to_owned();
    assert_ne!(rid, id, "quantbox's id and E2B's are different ids");
    assert_eq!(held[0]["metadata"]["suite"], "e2b-provider");
    assert_eq!(held[0]["state"], "running");
    // Its lifetime there: ours plus the backstop.
    let (st, detail) = remote(&url, "GET", &format!("/sandboxes/{rid}")).await;
    assert_eq!(st, 200, "{detail}");
    let left = (rfc3339_ms(&detail["endAt"]) - quantbox_sandbox::Timestamp::now().unix_ms()) / 1000;
    assert!((600..=640).contains(&left), "E2B lifetime {left} s");

    // Execute: stdout, stderr and a non-zero exit, through the shell.
    let r = exec(
        &e,
        json!({"sandbox_id": id, "command": "echo out; echo err >&2; exit 3", "timeout": 60}),
    )
    .await;
    assert_eq!(r["exit_code"], 3, "{r}");
    assert_eq!(r["stdout"], "out\n");
    assert_eq!(r["stderr"], "err\n");
    assert_eq!(r["timed_out"], false);
    // Directly, with arguments; environment from the sandbox and the request.
    let r = exec(
        &e,
        json!({"sandbox_id": id, "command": "/bin/sh", "args": ["-c", "echo \"$GREETING $EXTRA\"; pwd"],
               "env": {"EXTRA": "world"}, "cwd": "/tmp", "timeout": 60}),
    )
    .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["stdout"], "hello world\n/tmp\n");
    // As root.
    let r = exec(
        &e,
        json!({"sandbox_id": id, "command": "id -u", "user": "root", "timeout": 60}),
    )
    .await;
    assert_eq!(
        (r["exit_code"].as_i64(), r["stdout"].as_str()),
        (Some(0), Some("0\n")),
        "{r}"
    );
    // stdin.
    let r = exec(
        &e,
        json!({"sandbox_id": id, "command": "tr a-z A-Z", "stdin": "shout\n", "timeout": 60}),
    )
    .await;
    assert_eq!(
        (r["exit_code"].as_i64(), r["stdout"].as_str()),
        (Some(0), Some("SHOUT\n")),
        "{r}"
    );
    // Input a process never reads is dropped, as with a pipe.
    let r = exec(
        &e,
        json!({"sandbox_id": id, "command": "echo ignored", "stdin": "x".repeat(300_000), "timeout": 60}),
    )
    .await;
    assert_eq!(
        (r["exit_code"].as_i64(), r["stdout"].as_str()),
        (Some(0), Some("ignored\n")),
        "{r}"
    );
    // A program that does not exist.
    let err = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "/no/such/program", "args": ["x"], "timeout": 60}),
        )
        .await;
    match err {
        Err(err) => assert_eq!(err.code.as_str(), "invalid_argument", "{err}"),
        Ok(r) => assert_ne!(r["exit_code"], 0, "{r}"),
    }

    // A timeout kills the process in the cloud, and says so.
    let t0 = Instant::now();
    let r = exec(
        &e,
        json!({"sandbox_id": id, "command": "echo started; sleep 47; echo never", "timeout": 2}),
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["stdout"], "started\n");
    assert_ne!(r["exit_code"], 0, "{r}");
    let r = exec(
        &e,
        json!({"sandbox_id": id, "timeout": 60, "command":
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 47' || true"}),
    )
    .await;
    assert_eq!(r["stdout"], "0\n", "the timed-out process still runs: {r}");

    // Cancelled by its caller (a background run stopped): killed in the cloud at once.
    let mgr = e.app().ops.manager().clone();
    let sid = quantbox_sandbox::SandboxId::parse(&id).unwrap();
    let params = |command: &str| quantbox_sandbox::ExecParams {
        command: command.into(),
        args: Vec::new(),
        env: Default::default(),
        cwd: None,
        user: quantbox_sandbox::ExecUser::User,
        stdin: None,
        timeout: Duration::from_secs(60),
        capture_output: true,
        on_output: None,
        cancel: None,
        control: None,
    };
    let (stop, cancel) = tokio::sync::watch::channel(false);
    let running = {
        let (mgr, sid) = (mgr.clone(), sid.clone());
        let p = quantbox_sandbox::ExecParams {
            cancel: Some(cancel),
            ..params("echo go; sleep 45")
        };
        tokio::spawn(async move { mgr.exec(&sid, p).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t0 = Instant::now();
    stop.send(true).unwrap();
    let rec = running
        .await
        .unwrap()
        .expect("the cancelled exec is recorded");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(
        rec.outcome.cancelled && !rec.outcome.timed_out,
        "{:?}",
        rec.outcome
    );
    assert_eq!(rec.outcome.signal, Some(9), "{:?}", rec.outcome);
    assert_eq!(rec.outcome.stdout, b"go\n");

    // Live control (what envd over this sandbox needs): the pid at start, input piece
    // by piece, end of input.
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let (control, commands) = quantbox_sandbox::ExecControl::new(true, move |pid| {
        let _ = pid_tx.send(pid);
    });
    let p = quantbox_sandbox::ExecParams {
        control: Some(control),
        ..params("cat; echo done")
    };
    let running = {
        let (mgr, sid) = (mgr.clone(), sid.clone());
        tokio::spawn(async move { mgr.exec(&sid, p).await })
    };
    let pid = tokio::task::spawn_blocking(move || pid_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the pid is reported at start");
    commands
        .send(quantbox_sandbox::ExecCommand::Input(b"piece 1, ".to_vec()))
        .unwrap();
    commands
        .send(quantbox_sandbox::ExecCommand::Input(b"piece 2\n".to_vec()))
        .unwrap();
    commands
        .send(quantbox_sandbox::ExecCommand::CloseInput)
        .unwrap();
    let rec = running.await.unwrap().unwrap();
    assert_eq!(rec.outcome.pid, pid);
    assert_eq!(rec.outcome.exit_code, Some(0), "{:?}", rec.outcome);
    assert_eq!(rec.outcome.stdout, b"piece 1, piece 2\ndone\n");

    // Status and list.
    let st = e.status(&id).await;
    assert_eq!(st["status"], "running", "{st}");
    let list = e
        .call("list_e2b_sandboxes", json!({"status_filter": "running"}))
        .await
        .unwrap();
    let mine: Vec<&Value> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["sandbox_id"] == id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{list}");
    assert_eq!(mine[0]["provider"], "e2b");

    // A lifetime change reaches the cloud.
    e.app()
        .ops
        .set_sandbox_timeout(
            serde_json::from_value(json!({"sandbox_id": id, "timeout": 120})).unwrap(),
        )
        .await
        .expect("set timeout");
    let (_, detail) = remote(&url, "GET", &format!("/sandboxes/{rid}")).await;
    let left = (rfc3339_ms(&detail["endAt"]) - quantbox_sandbox::Timestamp::now().unix_ms()) / 1000;
    assert!(
        (120..=160).contains(&left),
        "E2B lifetime after the change {left} s"
    );

    // Pause and resume are the cloud's.
    let p = e.app().ops.pause_sandbox(&id).await.expect("pause");
    assert_eq!(p.status, "paused");
    let (_, detail) = remote(&url, "GET", &format!("/sandboxes/{rid}")).await;
    assert_eq!(detail["state"], "paused", "{detail}");
    let r = e.app().ops.resume_sandbox(&id).await.expect("resume");
    assert_eq!(r.status, "running");
    let (_, detail) = remote(&url, "GET", &format!("/sandboxes/{rid}")).await;
    assert_eq!(detail["state"], "running", "{detail}");
    let r = exec(
        &e,
        json!({"sandbox_id": id, "command": "echo back", "timeout": 60}),
    )
    .await;
    assert_eq!(r["stdout"], "back\n", "{r}");

    // Terminate: gone from the cloud.
    e.terminate(&id).await;
    assert!(remote_of(&url, &id).await.is_empty());
    let (st, _) = remote(&url, "GET", &format!("/sandboxes/{rid}")).await;
    assert_eq!(st, 404);
    let st = e.status(&id).await;
    assert_eq!(st["status"], "stopped", "{st}");

    // An unknown sandbox.
    let err = e
        .call(
            "get_e2b_sandbox_status",
            json!({"sandbox_id": "zzzzzzzzzzzzzzzzzzzz"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "not_found", "{err}");

    // Killed behind quantbox's back: the next look finds it gone.
    let id2 = e.create(json!({"provider": "e2b"})).await;
    let rid2 = remote_of(&url, &id2).await[0]["sandboxID"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = remote(&url, "DELETE", &format!("/sandboxes/{rid2}")).await;
    assert_eq!(st, 204);
    let err = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id2, "command": "true", "timeout": 60}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "failed_precondition", "{err}");
    let st = e.status(&id2).await;
    assert_eq!(st["status"], "stopped", "{st}");
    assert_eq!(st["stop_reason"], "crashed", "{st}");

    // A wrong key: E2B's 401, as the auth error.
    let wrong = Engine::start_configured(
        |c| c.warm_pool = 0,
        Config::single_server(Some(WRONG_KEY.into()), &url),
    )
    .await;
    let err = wrong
        .call(
            "create_e2b_sandbox",
            json!({"name": "nope", "provider": "e2b"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "unavailable", "{err}");
    assert!(
        err.message
            .contains("E2B rejected the API key (E2B_API_KEY)"),
        "{err}"
    );
    assert!(err.message.contains("401"), "{err}");
    wrong.shutdown().await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2b_provider_without_a_key_is_unavailable() {
    if !require_root("e2b_provider_without_a_key_is_unavailable") {
        return;
    }
    let e = Engine::start_configured(|c| c.warm_pool = 0, Config::from_lookup(|_| None)).await;
    let info = e.app().ops.manager().provider("e2b").unwrap().info();
    assert_eq!(info.status, "not_configured");
    assert!(info.detail.contains("E2B_API_KEY"), "{}", info.detail);
    // Not configured is not a fault: the fleet's health lists no issue for it.
    let health = e.call("monitor_e2b_health", json!({})).await.unwrap();
    let issues = health["issues"].to_string();
    assert!(!issues.contains("e2b"), "{health}");
    let err = e
        .call(
            "create_e2b_sandbox",
            json!({"name": "nokey", "provider": "e2b"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "unavailable", "{err}");
    assert!(
        err.message
            .contains("E2B_API_KEY is not set: set it (and optionally E2B_DOMAIN or E2B_API_URL)"),
        "{err}"
    );
    // Nothing was recorded.
    let list = e
        .call("list_e2b_sandboxes", json!({"status_filter": "all"}))
        .await
        .unwrap();
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 0, "{list}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2b_provider_retries_the_clouds_429() {
    if !require_root("e2b_provider_retries_the_clouds_429") {
        return;
    }
    // The cloud runs one sandbox at most: a second create is its real 429.
    let (_cloud, url) = cloud("e2bcap", &[("QUANTBOX_MAX_SANDBOXES", "1")]);
    let e = Engine::start_configured(
        |c| c.warm_pool = 0,
        Config::single_server(Some(KEY.into()), &url),
    )
    .await;
    let first = e.create(json!({"name": "first", "provider": "e2b"})).await;

    // Three retries (the SDK's policy), then E2B's message.
    let t0 = Instant::now();
    let err = e
        .call(
            "create_e2b_sandbox",
            json!({"name": "second", "provider": "e2b"}),
        )
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err.code.as_str(), "resource_exhausted", "{err}");
    assert!(err.message.contains("E2B answered 429"), "{err}");
    assert!(err.message.contains("after 4 attempts"), "{err}");
    assert!(
        err.message.contains("at most 1 sandboxes"),
        "E2B's own message is kept: {err}"
    );
    // Backoff 0.1, 0.2, 0.4 s, each jittered to at least half.
    assert!(took >= Duration::from_millis(350), "{took:?}");

    // With more retries, a create waits out the cap: the first sandbox ends meanwhile.
    let mut cfg = Config::single_server(Some(KEY.into()), &url);
    cfg.retry.max_retries = 8;
    let patient = Engine::start_configured(|c| c.warm_pool = 0, cfg).await;
    let creating = {
        let ops = patient.app().ops.clone();
        tokio::spawn(async move {
            ops.call(
                "create_e2b_sandbox",
                json!({"name": "patient", "provider": "e2b"}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!creating.is_finished(), "the create is still retrying");
    e.terminate(&first).await;
    let out = creating
        .await
        .unwrap()
        .expect("the create succeeds once the cloud has room");
    let id = out["sandbox_id"].as_str().unwrap();
    assert_eq!(remote_of(&url, id).await.len(), 1);
    patient.terminate(id).await;
    patient.shutdown().await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2b_sandboxes_are_adopted_after_a_restart() {
    if !require_root("e2b_sandboxes_are_adopted_after_a_restart") {
        return;
    }
    let (_cloud, url) = cloud("e2badopt", &[]);
    let e2b = Config::single_server(Some(KEY.into()), &url);
    let mut e = Engine::start_configured(|c| c.warm_pool = 0, e2b.clone()).await;
    let keep = e.create(json!({"name": "keep", "provider": "e2b"})).await;
    let lost = e.create(json!({"name": "lost", "provider": "e2b"})).await;
    let r = exec(
        &e,
        json!({"sandbox_id": keep, "command": "echo kept > /home/user/state", "timeout": 60}),
    )
    .await;
    assert_eq!(r["exit_code"], 0, "{r}");

    // The server stops (its sandboxes keep running in the cloud) ...
    let app = e.app.take().unwrap();
    app.stop().await;
    drop(app);
    // ... and one of them ends in the cloud meanwhile.
    let rid = remote_of(&url, &lost).await[0]["sandboxID"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        remote(&url, "DELETE", &format!("/sandboxes/{rid}")).await.0,
        204
    );

    let mut cfg = common::config(e.dir.path(), &e.cgroup_parent);
    cfg.warm_pool = 0;
    e.app = Some(
        quantbox::app::App::open_with(&cfg, e2b)
            .await
            .expect("the engine starts again"),
    );
    let st = e.status(&keep).await;
    assert_eq!(st["status"], "running", "{st}");
    assert!(
        st["recent_logs"].to_string().contains("adopted again"),
        "{st}"
    );
    let r = exec(
        &e,
        json!({"sandbox_id": keep, "command": "cat /home/user/state", "timeout": 60}),
    )
    .await;
    assert_eq!(r["stdout"], "kept\n", "{r}");
    let st = e.status(&lost).await;
    assert_eq!(
        (st["status"].as_str(), st["stop_reason"].as_str()),
        (Some("stopped"), Some("lost")),
        "{st}"
    );
    e.terminate(&keep).await;
    assert!(remote_of(&url, &keep).await.is_empty());
    e.shutdown().await;
}
