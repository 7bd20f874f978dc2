//! Pause, resume and lifetime changes: a paused sandbox uses no CPU, keeps its memory
//! and files, cannot run commands, and its lifetime clock stands still; a lifetime can be
//! extended or shortened.

mod common;

use std::time::{Duration, Instant};

use common::{Engine, eventually, require_root};
use quantbox_sandbox::SandboxId;
use serde_json::json;

fn sid(id: &str) -> SandboxId {
    SandboxId::parse(id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sandbox_uses_no_cpu_and_keeps_its_memory_and_files() {
    if !require_root("a_paused_sandbox_uses_no_cpu_and_keeps_its_memory_and_files") {
        return;
    }
    let e = Engine::start().await;
    let ops = &e.app().ops;
    let id = e.create(json!({"cpu_count": 0.5})).await;
    e.ok(
        &id,
        "echo kept > /home/user/f; nohup python3 -c \"import time; x = b'm' * (20 * 2**20); \
         open('/tmp/ready', 'w').close()\nwhile True: pass\" >/dev/null 2>&1 & \
         for i in $(seq 100); do [ -e /tmp/ready ] && break; sleep 0.05; done",
    )
    .await;
    let cg = e.app().local.cgroup(&sid(&id)).unwrap();
    let cpu = || cg.counters().unwrap().cpu_usage_ns;
    let c0 = cpu();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cpu() > c0,
        "the busy loop is not running, so the test proves nothing"
    );
    let mem_before = cg.stats().unwrap().memory_bytes;

    let out = ops.pause_sandbox(&id).await.unwrap();
    assert_eq!(out.status, "paused");
    let c1 = cpu();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cpu(), c1, "a paused sandbox used CPU");
    let mem_paused = cg.stats().unwrap().memory_bytes;
    assert!(
        mem_paused + (2 << 20) >= mem_before,
        "memory was lost: {mem_before} → {mem_paused}"
    );
    // Seen as paused, healthy, and it cannot run commands.
    let list = e
        .call("list_e2b_sandboxes", json!({"status_filter": "paused"}))
        .await
        .unwrap();
    assert_eq!(list["sandboxes"][0]["sandbox_id"], id.as_str());
    let st = e.status(&id).await;
    assert_eq!(
        (st["status"].as_str(), st["health"]["status"].as_str()),
        (Some("paused"), Some("healthy")),
        "{st}"
    );
    assert_eq!(st["resource_usage"]["cpu_percent"], 0.0);
    let err = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "true"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "failed_precondition");
    assert!(err.message.contains("paused"), "{}", err.message);
    let err = ops.pause_sandbox(&id).await.unwrap_err();
    assert_eq!(err.code.as_str(), "failed_precondition");

    let out = ops.resume_sandbox(&id).await.unwrap();
    assert_eq!(out.status, "running");
    let c2 = cpu();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cpu() > c2, "the resumed sandbox does not run");
    assert_eq!(
        e.ok(&id, "cat /home/user/f; pgrep -c python3").await,
        "kept\n1\n"
    );
    let err = ops.resume_sandbox(&id).await.unwrap_err();
    assert!(err.message.contains("not paused"), "{}", err.message);
    // A paused sandbox can be terminated, leaving nothing.
    ops.pause_sandbox(&id).await.unwrap();
    e.terminate(&id).await;
    assert!(
        eventually(Duration::from_secs(3), || e.leftovers().is_empty()).await,
        "{:?}",
        e.leftovers()
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifetime_clock_stops_while_paused() {
    if !require_root("the_lifetime_clock_stops_while_paused") {
        return;
    }
    let e = Engine::start().await;
    let ops = &e.app().ops;
    let t0 = Instant::now();
    let id = e.create(json!({"timeout": 3})).await;
    let expires0 = e.status(&id).await["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    ops.pause_sandbox(&id).await.unwrap();
    // Paused for longer than its whole lifetime: it must not expire.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let st = e.status(&id).await;
    assert_eq!(st["status"], "paused", "it expired while paused: {st}");
    let out = ops.resume_sandbox(&id).await.unwrap();
    assert!(
        out.expires_at > expires0,
        "expiry did not move: {} vs {expires0}",
        out.expires_at
    );
    assert_eq!(e.ok(&id, "echo alive").await, "alive\n");
    // The rest of its lifetime (~3 s less the time before the pause) still applies.
    assert!(
        eventually(Duration::from_secs(6), || {
            futures_lite_status(&e, &id) == "stopped"
        })
        .await
    );
    let st = e.status(&id).await;
    assert_eq!(st["stop_reason"], "expired", "{st}");
    assert!(
        t0.elapsed() >= Duration::from_secs(6),
        "it expired too early: {:?}",
        t0.elapsed()
    );
    e.shutdown().await;
}

/// The stored status of a sandbox, read synchronously (for `eventually`).
fn futures_lite_status(e: &Engine, id: &str) -> String {
    e.app()
        .ops
        .manager()
        .get(&sid(id))
        .map(|r| r.status.as_str().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_can_be_shortened_and_extended() {
    if !require_root("a_lifetime_can_be_shortened_and_extended") {
        return;
    }
    let e = Engine::start().await;
    let ops = &e.app().ops;
    let short = e.create(json!({"timeout": 300})).await;
    let long = e.create(json!({"timeout": 2})).await;
    let t0 = Instant::now();
    let out = ops
        .set_sandbox_timeout(quantbox_ops::sandboxes::TimeoutInput {
            sandbox_id: short.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    assert!(out.message.contains("1 s"), "{}", out.message);
    ops.set_sandbox_timeout(quantbox_ops::sandboxes::TimeoutInput {
        sandbox_id: long.clone(),
        timeout: 30,
    })
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(4), || futures_lite_status(&e, &short)
            == "stopped")
        .await
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    // Past its original 2 s, the extended one lives on.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(t0.elapsed())).await;
    assert_eq!(e.ok(&long, "echo alive").await, "alive\n");
    // Bad values and stopped sandboxes are refused.
    let err = ops
        .set_sandbox_timeout(quantbox_ops::sandboxes::TimeoutInput {
            sandbox_id: long.clone(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.message, "timeout: must be between 1 and 86400, got 0");
    let err = ops
        .set_sandbox_timeout(quantbox_ops::sandboxes::TimeoutInput {
            sandbox_id: short.clone(),
            timeout: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "failed_precondition");
    e.shutdown().await;
}
