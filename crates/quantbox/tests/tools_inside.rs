//! The quantbox binary inside every sandbox (agents run it there): present at
//! `/run/quantbox/quantbox`, runnable by the sandbox user, and read-only to everyone in
//! the sandbox, root included; it lives on a tmpfs, so it never lands in the writable
//! layer or in an exported template.

mod common;

use common::{Engine, require_root};
use serde_json::json;

const EXE: &str = "/run/quantbox/quantbox";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quantbox_binary_is_inside_read_only() {
    if !require_root("the_quantbox_binary_is_inside_read_only") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let id = e.create(json!({"name": "tools"})).await;
    let v = e.ok(&id, &format!("{EXE} --version")).await;
    assert_eq!(v.trim(), format!("quantbox {}", env!("CARGO_PKG_VERSION")));
    for user in ["user", "root"] {
        let r = e
            .sh_as(
                &id,
                &format!("echo x > {EXE}; echo rc=$?; touch /run/quantbox/new; echo rc=$?"),
                user,
            )
            .await;
        let out = r["stdout"].as_str().unwrap();
        assert!(!out.contains("rc=0"), "{user} could write: {r}");
    }
    // As root inside: the bind cannot be undone (mounts are refused) or replaced.
    let r = e
        .sh_as(&id, &format!("umount {EXE}; echo rc=$?"), "root")
        .await;
    assert!(!r["stdout"].as_str().unwrap().contains("rc=0"), "{r}");
    // /run is a tmpfs: the mount point is not in the writable layer.
    let upper = e.sandbox_dir(&id).join("upper-root");
    assert!(!upper.join("run/quantbox").exists());
    let mounts = e.ok(&id, "grep ' /run ' /proc/self/mounts").await;
    assert!(mounts.contains("tmpfs"), "{mounts}");
    e.terminate(&id).await;
    e.shutdown().await;
}

/// GPU passthrough, with the closest real thing this machine has: NVIDIA-named links to
/// real character devices (`/dev/null`, `/dev/zero`) in the directory the server looks
/// in. They appear in the sandbox's `/dev` as the devices they are, and
/// `run_e2b_agent` says what it can about GPU use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvidia_device_nodes_are_passed_into_sandboxes() {
    if !require_root("nvidia_device_nodes_are_passed_into_sandboxes") {
        return;
    }
    let devs = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/null", devs.path().join("nvidia0")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", devs.path().join("nvidiactl")).unwrap();
    let dir = devs.path().to_path_buf();
    let e = Engine::start_with(|c| {
        c.warm_pool = 0;
        c.gpu_device_dir = Some(dir);
    })
    .await;
    let id = e.create(json!({"name": "gpu"})).await;
    let ls = e
        .ok(&id, "stat -c '%F %t:%T' /dev/nvidia0 /dev/nvidiactl")
        .await;
    assert_eq!(
        ls.trim(),
        "character special file 1:3\ncharacter special file 1:5"
    );
    assert_eq!(
        e.ok(
            &id,
            "echo x > /dev/nvidia0 && head -c 3 /dev/nvidiactl | od -An -tx1"
        )
        .await
        .trim(),
        "00 00 00"
    );
    let r = e
        .call(
            "run_e2b_agent",
            json!({"sandbox_id": id, "agent_type": "buy_and_hold", "symbols": ["AAPL"], "use_gpu": true,
                   "strategy_params": {"start": "2012-01-01", "end": "2012-03-01"}}),
        )
        .await
        .unwrap();
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["gpu"]["requested"], true);
    assert_eq!(r["gpu"]["used"], false);
    let why = r["gpu"]["reason"].as_str().unwrap();
    assert!(
        why.contains("/dev/nvidia0") && why.contains("built-in agents compute on the CPU"),
        "{why}"
    );
    e.terminate(&id).await;
    e.shutdown().await;

    // Without passthrough there is no such node.
    let e = Engine::start_with(|c| {
        c.warm_pool = 0;
        c.gpu_device_dir = None;
    })
    .await;
    let id = e.create(json!({"name": "nogpu"})).await;
    let r = e.sh(&id, "ls /dev/nvidia0").await;
    assert_ne!(r["exit_code"], 0, "{r}");
    e.terminate(&id).await;
    e.shutdown().await;
}
