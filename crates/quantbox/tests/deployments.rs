//! Deployments: setup steps run in order, a failing step leaves nothing behind, scaling
//! makes exactly the instances asked for, the auto-scaler follows the CPU load and
//! replaces dead instances, and fleet health reflects the sandboxes.

mod common;

use std::time::Duration;

use common::{Engine, eventually, require_root};
use serde_json::{Value, json};

/// Running sandboxes of a deployment, by the manager's records.
fn running(e: &Engine, dep: &str) -> Vec<String> {
    let list = e
        .app()
        .ops
        .manager()
        .list(&quantbox_sandbox::ListFilter {
            status: Some(quantbox_sandbox::StatusFilter::Running),
            deployment_id: Some(dep.to_owned()),
            ..Default::default()
        })
        .unwrap();
    list.into_iter().map(|r| r.id.to_string()).collect()
}

async fn deploy(e: &Engine, config: Value) -> Result<Value, quantbox_ops::OpError> {
    e.call(
        "deploy_e2b_template",
        json!({"template_name": "base", "category": "trading", "configuration": config}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_writes_files_and_runs_its_setup_in_order() {
    if !require_root("a_deployment_writes_files_and_runs_its_setup_in_order") {
        return;
    }
    let e = Engine::start().await;
    // The configuration as a string holding JSON, as older callers send it.
    let config = json!({
        "memory_mb": 128,
        "env_vars": {"STRATEGY": "momentum"},
        "files": {"agent/config.json": "{\"lookback\": 20}", "/tmp/abs.txt": "absolute"},
        "setup_commands": [
            "echo one >> /home/user/order.log",
            "python3 -c \"import json; print(json.load(open('agent/config.json'))['lookback'])\" >> /home/user/order.log",
            "echo $STRATEGY >> /home/user/order.log"
        ],
        "metadata": {"team": "quant"}
    });
    let out = deploy(&e, Value::String(config.to_string())).await.unwrap();
    assert_eq!(out["status"], "deployed");
    assert_eq!(out["category"], "trading");
    let dep = out["deployment_id"].as_str().unwrap();
    assert!(dep.starts_with("dep_") && dep.len() == 20, "{dep}");
    let sb = out["sandbox_id"].as_str().unwrap();
    assert_eq!(
        e.ok(sb, "cat /home/user/order.log").await,
        "one\n20\nmomentum\n"
    );
    assert_eq!(
        e.ok(sb, "cat /home/user/agent/config.json /tmp/abs.txt")
            .await,
        "{\"lookback\": 20}absolute"
    );
    assert_eq!(
        e.ok(sb, "stat -c %U /home/user/agent/config.json").await,
        "user\n"
    );
    let list = e
        .call("list_e2b_sandboxes", json!({"deployment_id": dep}))
        .await
        .unwrap();
    assert_eq!(list["total_count"], 1);
    assert_eq!(list["sandboxes"][0]["metadata"]["team"], "quant");
    assert_eq!(list["sandboxes"][0]["resources"]["memory_mb"], 128);
    let view = e.app().ops.get_deployment(dep, 50).unwrap();
    assert_eq!(view["events"][0]["kind"], "deployed", "{view}");
    e.app().ops.delete_deployment(dep).await.unwrap();
    assert!(running(&e, dep).is_empty());
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_step_fails_the_deployment_and_leaves_nothing() {
    if !require_root("a_failing_setup_step_fails_the_deployment_and_leaves_nothing") {
        return;
    }
    let e = Engine::start().await;
    let err = deploy(
        &e,
        json!({"setup_commands": ["echo first ran", "echo broken >&2; exit 3", "echo never"]}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code.as_str(), "failed_precondition");
    assert!(
        err.message.contains("setup_commands[1]") && err.message.contains("exited with 3"),
        "{}",
        err.message
    );
    let d = err.details.unwrap();
    assert_eq!(
        (d["step"].as_str(), d["exit_code"].as_i64()),
        (Some("setup_commands[1]"), Some(3)),
        "{d}"
    );
    assert_eq!(d["stderr"], "broken\n");
    // The instance it made is gone, and so is the deployment.
    let sb = d["sandbox_id"].as_str().unwrap();
    assert_eq!(e.status(sb).await["status"], "stopped");
    assert!(
        eventually(Duration::from_secs(3), || e.leftovers().is_empty()).await,
        "{:?}",
        e.leftovers()
    );
    let list = e.app().ops.list_deployments(false).unwrap();
    assert_eq!(list["total_count"], 0, "{list}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_zero_five_two_zero_leaves_exactly_the_right_sandboxes() {
    if !require_root("scaling_zero_five_two_zero_leaves_exactly_the_right_sandboxes") {
        return;
    }
    let e = Engine::start().await;
    let out = deploy(&e, json!({"memory_mb": 64, "setup_commands": ["true"]}))
        .await
        .unwrap();
    let dep = out["deployment_id"].as_str().unwrap().to_owned();
    let scale = |n: i64| {
        e.call(
            "scale_e2b_deployment",
            json!({"deployment_id": dep, "instance_count": n}),
        )
    };
    let r = scale(0).await.unwrap();
    assert_eq!(
        (r["running_instances"].as_i64(), r["failed_count"].as_i64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert!(running(&e, &dep).is_empty());
    let r = scale(5).await.unwrap();
    assert_eq!(
        (r["running_instances"].as_i64(), r["failed_count"].as_i64()),
        (Some(5), Some(0)),
        "{r}"
    );
    let five = running(&e, &dep);
    assert_eq!(five.len(), 5);
    // Down to two: the newest go first.
    let mut by_age: Vec<(String, String)> = Vec::new();
    for id in &five {
        let st = e.status(id).await;
        by_age.push((st["expires_at"].as_str().unwrap().to_owned(), id.clone()));
    }
    by_age.sort();
    let r = scale(2).await.unwrap();
    assert_eq!(r["running_instances"], 2, "{r}");
    let mut kept = running(&e, &dep);
    kept.sort();
    let mut oldest: Vec<String> = by_age[..2].iter().map(|(_, id)| id.clone()).collect();
    oldest.sort();
    assert_eq!(kept, oldest, "scaling down did not keep the oldest");
    let terminated: Vec<&Value> = r["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "terminated")
        .collect();
    assert_eq!(terminated.len(), 3);
    // Nothing else on the host than the two instances (and the warm pool).
    let slots: Vec<String> = kept
        .iter()
        .filter_map(|id| {
            e.app()
                .local
                .slot(&quantbox_sandbox::SandboxId::parse(id).unwrap())
        })
        .collect();
    let left: Vec<String> = e
        .leftovers()
        .into_iter()
        .filter(|l| !slots.iter().any(|s| l.contains(s.as_str())))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
    let r = scale(0).await.unwrap();
    assert_eq!(r["running_instances"], 0);
    assert!(
        eventually(Duration::from_secs(3), || e.leftovers().is_empty()).await,
        "{:?}",
        e.leftovers()
    );
    let view = e.app().ops.get_deployment(&dep, 50).unwrap();
    let kinds: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deployed", "scaled", "scaled", "scaled", "scaled"]);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_scaler_follows_the_load_and_replaces_dead_instances() {
    if !require_root("the_auto_scaler_follows_the_load_and_replaces_dead_instances") {
        return;
    }
    let e = Engine::start_with(|c| c.autoscale_interval = Duration::from_millis(400)).await;
    let out = deploy(&e, json!({"memory_mb": 64, "cpu_count": 0.5}))
        .await
        .unwrap();
    let dep = out["deployment_id"].as_str().unwrap().to_owned();
    let first = out["sandbox_id"].as_str().unwrap().to_owned();
    let r = e
        .call("scale_e2b_deployment", json!({"deployment_id": dep, "instance_count": 3, "auto_scale": true, "min_instances": 1}))
        .await
        .unwrap();
    assert_eq!(
        r["auto_scale"],
        json!({"enabled": true, "min_instances": 1, "max_instances": 3, "target_cpu_percent": 70.0})
    );
    assert_eq!(r["running_instances"], 1);
    // A CPU-bound load in the one instance: 100 % of its quota, above the 70 % target.
    e.ok(
        &first,
        "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $! > /tmp/load.pid",
    )
    .await;
    assert!(
        eventually(Duration::from_secs(15), || running(&e, &dep).len() == 2).await,
        "no instance was added"
    );
    // Two instances, one busy: a mean of 50 %, between half the target and the target.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        running(&e, &dep).len(),
        2,
        "the auto-scaler did not hold at two"
    );
    // The load stops: below 35 % it removes the newest, down to the minimum.
    e.ok(&first, "kill $(cat /tmp/load.pid)").await;
    assert!(
        eventually(Duration::from_secs(15), || running(&e, &dep).len() == 1).await,
        "no instance was removed"
    );
    assert_eq!(
        running(&e, &dep),
        vec![first.clone()],
        "the oldest instance must stay"
    );
    // An instance that dies is replaced.
    let pid = e.init_pid(&first).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = running(&e, &dep);
            r.len() == 1 && r[0] != first
        })
        .await,
        "the dead instance was not replaced"
    );
    let view = e.app().ops.get_deployment(&dep, 100).unwrap();
    let events = view["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["autoscale_up", "autoscale_down", "replaced"] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    let up = events.iter().find(|e| e["kind"] == "autoscale_up").unwrap();
    assert!(
        up["details"]["mean_cpu_percent"].as_f64().unwrap() > 70.0,
        "{up}"
    );
    e.app().ops.delete_deployment(&dep).await.unwrap();
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_bad_input_gets_clear_errors() {
    if !require_root("deployment_bad_input_gets_clear_errors") {
        return;
    }
    let e = Engine::start().await;
    let cases = [
        (
            "scale_e2b_deployment",
            json!({"deployment_id": "dep_aaaaaaaaaaaaaaaa", "instance_count": 1}),
            "not_found",
            "dep_aaaaaaaaaaaaaaaa",
        ),
        (
            "scale_e2b_deployment",
            json!({"deployment_id": "nope", "instance_count": 1}),
            "invalid_argument",
            "deployment_id",
        ),
        (
            "scale_e2b_deployment",
            json!({"deployment_id": "dep_aaaaaaaaaaaaaaaa", "instance_count": -1}),
            "invalid_argument",
            "instance_count",
        ),
        (
            "scale_e2b_deployment",
            json!({"deployment_id": "dep_aaaaaaaaaaaaaaaa", "instance_count": 1, "min_instances": 1}),
            "invalid_argument",
            "min_instances",
        ),
        (
            "deploy_e2b_template",
            json!({"template_name": "base", "category": "trading", "configuration": 5}),
            "invalid_argument",
            "configuration",
        ),
        (
            "deploy_e2b_template",
            json!({"template_name": "base", "category": "trading", "configuration": "[1]"}),
            "invalid_argument",
            "configuration",
        ),
        (
            "deploy_e2b_template",
            json!({"template_name": "base", "category": "trading", "configuration": "{oops"}),
            "invalid_argument",
            "configuration",
        ),
        (
            "deploy_e2b_template",
            json!({"template_name": "base", "category": "trading", "configuration": {"memory_mb": 1}}),
            "invalid_argument",
            "configuration.memory_mb",
        ),
        (
            "deploy_e2b_template",
            json!({"template_name": "base", "category": "trading", "configuration": {"nope": 1}}),
            "invalid_argument",
            "configuration.nope",
        ),
        (
            "deploy_e2b_template",
            json!({"template_name": "a/b", "category": "trading"}),
            "invalid_argument",
            "template_name",
        ),
        (
            "deploy_e2b_template",
            json!({"template_name": "missing", "category": "trading"}),
            "not_found",
            "template_name",
        ),
        (
            "deploy_e2b_template",
            json!({"template_name": "base", "category": "gambling"}),
            "invalid_argument",
            "category",
        ),
    ];
    for (tool, args, code, field) in cases {
        let err = e.call(tool, args.clone()).await.unwrap_err();
        assert_eq!(err.code.as_str(), code, "{tool} {args}: {}", err.message);
        assert!(
            err.message.contains(field),
            "{tool} {args}: {} does not name {field}",
            err.message
        );
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_health_counts_healthy_sandboxes_and_names_the_issues() {
    if !require_root("fleet_health_counts_healthy_sandboxes_and_names_the_issues") {
        return;
    }
    let e = Engine::start().await;
    let empty = e.call("monitor_e2b_health", json!({})).await.unwrap();
    assert_eq!(
        (
            empty["health_score"].as_f64(),
            empty["overall_health"].as_str()
        ),
        (Some(100.0), Some("healthy")),
        "{empty}"
    );
    assert_eq!(empty["average_cpu"], Value::Null);
    assert_eq!(empty["providers"]["local"]["status"], "available");
    let ok = e.create(json!({"name": "fine"})).await;
    let sick = e.create(json!({"name": "oom", "memory_mb": 64})).await;
    let r = e.sh(&sick, "python3 -c \"x = b'a' * (256 * 2**20)\"").await;
    assert_eq!(r["oom_killed"], true, "{r}");
    let h = e
        .call("monitor_e2b_health", json!({"include_all_sandboxes": true}))
        .await
        .unwrap();
    assert_eq!(h["total_sandboxes"], 2);
    assert_eq!(h["running_sandboxes"], 2);
    assert_eq!(h["health_score"], 50.0, "{h}");
    assert_eq!(h["overall_health"], "unhealthy");
    assert!(
        h["average_cpu"].is_number() && h["average_memory"].is_number(),
        "{h}"
    );
    let issues = h["issues"].to_string();
    assert!(
        issues.contains(&sick) && issues.contains("memory limit killed"),
        "{issues}"
    );
    assert!(!issues.contains(&ok), "{issues}");
    let all = h["sandboxes"].as_array().unwrap();
    assert_eq!(all.len(), 2);
    // A crash counts as a failure of the last hour.
    let pid = e.init_pid(&ok).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h = e.call("monitor_e2b_health", json!({})).await.unwrap();
    assert_eq!(
        (
            h["failed_sandboxes"].as_i64(),
            h["total_sandboxes"].as_i64()
        ),
        (Some(1), Some(1)),
        "{h}"
    );
    assert!(
        h["issues"]
            .to_string()
            .contains("stopped unexpectedly (crashed)"),
        "{h}"
    );
    assert!(h.get("sandboxes").is_none());
    e.shutdown().await;
}
