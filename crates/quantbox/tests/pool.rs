//! The warm pool: a parked sandbox (64 MB, a tenth of a core, 32 processes) claimed by
//! `create` must run under exactly the limits its user asked for, and the pool refills.

mod common;

use std::time::Duration;

use common::{Engine, eventually, require_root};
use quantbox_sandbox::SandboxId;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_warm_sandbox_gets_its_users_limits_and_the_pool_refills() {
    if !require_root("a_claimed_warm_sandbox_gets_its_users_limits_and_the_pool_refills") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 1).await;
    let local = &e.app().local;
    assert!(
        eventually(Duration::from_secs(10), || local.parked() == 1).await,
        "the pool never filled"
    );
    let parked = local.pooled_slots();
    let id = e.create(json!({"memory_mb": 200, "cpu_count": 0.5})).await;
    let sid = SandboxId::parse(&id).unwrap();
    assert_eq!(
        local.slot(&sid).as_deref(),
        Some(parked[0].as_str()),
        "create did not claim the parked sandbox"
    );
    assert_eq!(
        local.setup_steps(&sid).unwrap()[0].0,
        "claim from the warm pool"
    );
    let cg = local.cgroup(&sid).unwrap();
    let stats = cg.stats().unwrap();
    assert_eq!(stats.memory_limit_bytes, 200 << 20);
    assert_eq!(stats.pids_max, 512);
    let quota: Vec<String> = cg
        .dirs()
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cpu.cfs_quota_us")).ok())
        .collect();
    assert_eq!(quota, vec!["50000\n".to_owned()]);
    // The limits hold: 150 MB fits (the parked 64 MB would not), 300 MB does not.
    let (code, out) = e.py(&id, "x = b'a' * (150 * 2**20); print(len(x))").await;
    assert_eq!((code, out.trim()), (0, "157286400"));
    let r = e.call("execute_e2b_process", json!({"sandbox_id": id, "command": "python3", "args": ["-c", "x = b'a' * (300 * 2**20)"]})).await.unwrap();
    assert_eq!(r["oom_killed"], true, "{r}");
    // 100 processes fit (the parked 32 would not).
    let out = e
        .ok(
            &id,
            "for i in $(seq 100); do sleep 5 & done; sleep 0.5; pgrep -c sleep",
        )
        .await;
    assert_eq!(out.trim(), "100");
    // Its hostname is its own; the pool parks a new one.
    let host = e.ok(&id, "hostname").await;
    assert_eq!(host.trim(), parked[0]);
    assert!(
        eventually(Duration::from_secs(10), || local.parked() == 1).await,
        "the pool did not refill"
    );
    assert_ne!(local.pooled_slots(), parked);
    e.shutdown().await;
}
