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
