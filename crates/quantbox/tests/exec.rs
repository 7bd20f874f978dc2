//! What `execute_e2b_process` and `get_e2b_sandbox_status` promise beyond isolation:
//! shell and direct forms, stdin, environment layering, working directory, output caps,
//! capture on and off, start failures, and the recent log. The execution tests run twice:
//! on provider `local`, and on provider `e2b` over the wire (its cloud a real
//! E2B-compatible server, quantbox's own).

mod common;

use common::{Engine, require_root};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_and_direct_forms_stdin_env_and_cwd() {
    if require_root("shell_and_direct_forms_stdin_env_and_cwd") {
        forms_stdin_env_and_cwd(Engine::start().await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_and_direct_forms_stdin_env_and_cwd_on_e2b() {
    if require_root("shell_and_direct_forms_stdin_env_and_cwd_on_e2b") {
        forms_stdin_env_and_cwd(Engine::start_e2b().await).await;
    }
}

async fn forms_stdin_env_and_cwd(e: Engine) {
    let id = e
        .create(json!({"env_vars": {"FROM_SANDBOX": "s", "OVERRIDE": "sandbox"}}))
        .await;
    // Direct form: arguments reach the program verbatim, no shell interprets them.
    let r = e
        .call("execute_e2b_process", json!({"sandbox_id": id, "command": "printf", "args": ["%s|", "$HOME", "a b", "*", "; true"]}))
        .await
        .unwrap();
    assert_eq!(r["stdout"], "$HOME|a b|*|; true|", "{r}");
    // Shell form: a shell line.
    let r = e.sh(&id, "echo $HOME | tr a-z A-Z; exit 7").await;
    assert_eq!(
        (r["stdout"].as_str(), r["exit_code"].as_i64()),
        (Some("/HOME/USER\n"), Some(7))
    );
    // stdin, env layering (exec env over sandbox env over defaults), cwd.
    let r = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "cat; echo; echo $FROM_SANDBOX $OVERRIDE $EXTRA $USER; pwd",
                   "stdin": "line one\nline two", "env": {"OVERRIDE": "exec", "EXTRA": "x"}, "cwd": "/tmp"}),
        )
        .await
        .unwrap();
    assert_eq!(
        r["stdout"], "line one\nline two\ns exec x user\n/tmp\n",
        "{r}"
    );
    // A missing program or directory is a clear error, not a mystery exit code.
    let err = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "no-such-program", "args": ["x"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "invalid_argument");
    assert!(
        err.message
            .contains("cannot execute `no-such-program`: No such file or directory"),
        "{}",
        err.message
    );
    let err = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "true", "cwd": "/nowhere"}),
        )
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("cannot change directory to `/nowhere`"),
        "{}",
        err.message
    );
    let err = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "/etc/passwd", "args": ["x"]}),
        )
        .await
        .unwrap_err();
    assert!(err.message.contains("Permission denied"), "{}", err.message);
    // Through the shell the same mistake is the shell's exit status 127.
    let r = e.sh(&id, "no-such-program").await;
    assert_eq!(r["exit_code"], 127);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_at_one_mebibyte_and_capture_can_be_off() {
    if require_root("output_is_capped_at_one_mebibyte_and_capture_can_be_off") {
        capped_output(Engine::start().await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_at_one_mebibyte_and_capture_can_be_off_on_e2b() {
    if require_root("output_is_capped_at_one_mebibyte_and_capture_can_be_off_on_e2b") {
        capped_output(Engine::start_e2b().await).await;
    }
}

async fn capped_output(e: Engine) {
    let id = e.create(json!({})).await;
    let r = e
        .sh(&id, "head -c 3000000 /dev/zero | tr '\\0' a; echo err >&2")
        .await;
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(r["stdout_truncated"], true);
    assert_eq!(
        (r["stderr"].as_str(), r["stderr_truncated"].as_bool()),
        (Some("err\n"), Some(false))
    );
    assert_eq!(
        r["exit_code"], 0,
        "the writer must not be blocked by the cap"
    );
    // Binary output is returned as text, lossily.
    let r = e.sh(&id, "printf 'ok\\377\\n'").await;
    assert_eq!(r["stdout"], "ok\u{fffd}\n");
    // Not captured: the result has no output, the sandbox's log still has it.
    let r = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "echo visible-in-logs", "capture_output": false}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r["stdout"].as_str(), r["exit_code"].as_i64()),
        (Some(""), Some(0))
    );
    let st = e
        .call(
            "get_e2b_sandbox_status",
            json!({"sandbox_id": id, "log_lines": 3}),
        )
        .await
        .unwrap();
    let logs = st["recent_logs"].as_array().unwrap();
    assert_eq!(logs.len(), 3);
    assert_eq!(logs[2]["line"], "visible-in-logs");
    assert_eq!(logs[2]["stream"], "stdout");
    let st = e
        .call(
            "get_e2b_sandbox_status",
            json!({"sandbox_id": id, "log_lines": 0}),
        )
        .await
        .unwrap();
    assert_eq!(st["recent_logs"], json!([]));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_listing_of_running_and_stopped_sandboxes() {
    if !require_root("status_and_listing_of_running_and_stopped_sandboxes") {
        return;
    }
    let e = Engine::start().await;
    let a = e
        .create(json!({"name": "alpha", "metadata": {"team": "quant", "env": "prod"}}))
        .await;
    let b = e
        .create(json!({"name": "beta", "metadata": {"team": "quant"}}))
        .await;
    e.ok(
        &a,
        "head -c 5000000 /dev/urandom > /home/user/blob; nohup sleep 100 >/dev/null 2>&1 &",
    )
    .await;
    let st = e.status(&a).await;
    assert_eq!(st["status"], "running");
    assert_eq!(st["health"]["status"], "healthy", "{st}");
    let u = &st["resource_usage"];
    assert!(
        u["disk_mb"].as_f64().unwrap() >= 4.5,
        "the 5 MB file is not counted: {u}"
    );
    assert_eq!(u["memory_limit_mb"], 128.0);
    assert_eq!(st["processes_running"], 1, "{st}");
    assert!(st["uptime_s"].as_f64().unwrap() > 0.0);
    let list = e
        .call(
            "list_e2b_sandboxes",
            json!({"metadata": {"team": "quant", "env": "prod"}}),
        )
        .await
        .unwrap();
    assert_eq!(list["total_count"], 1);
    assert_eq!(list["sandboxes"][0]["sandbox_id"], a.as_str());
    e.terminate(&b).await;
    let running = e
        .call("list_e2b_sandboxes", json!({"status_filter": "running"}))
        .await
        .unwrap();
    assert_eq!(running["total_count"], 1);
    let stopped = e
        .call("list_e2b_sandboxes", json!({"status_filter": "stopped"}))
        .await
        .unwrap();
    assert_eq!(stopped["sandboxes"][0]["sandbox_id"], b.as_str());
    assert_eq!(stopped["sandboxes"][0]["stop_reason"], "terminated");
    let st = e.status(&b).await;
    assert_eq!(st["resource_usage"], serde_json::Value::Null);
    assert!(
        st["resource_usage_reason"]
            .as_str()
            .unwrap()
            .contains("stopped")
    );
    assert_eq!(
        st["health"]["status"], "healthy",
        "a sandbox stopped on request is not unhealthy"
    );
    assert!(
        st["recent_logs"]
            .to_string()
            .contains("terminated on request")
    );
    let r = e
        .call("terminate_e2b_sandbox", json!({"sandbox_id": b}))
        .await
        .unwrap();
    assert!(
        r["message"].as_str().unwrap().contains("already stopped"),
        "{r}"
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_memory_pressure_and_an_unresponsive_init() {
    if !require_root("health_reports_memory_pressure_and_an_unresponsive_init") {
        return;
    }
    let e = Engine::start().await;
    let id = e.create(json!({"memory_mb": 64})).await;
    assert_eq!(e.status(&id).await["health"]["status"], "healthy");
    // ~61 of 64 MB held by a background process.
    e.ok(
        &id,
        "nohup python3 -c \"import time; x = b'a' * (59 * 2**20); open('/tmp/held', 'w').close(); time.sleep(60)\" >/dev/null 2>&1 & \
         for i in $(seq 100); do [ -e /tmp/held ] && break; sleep 0.05; done",
    )
    .await;
    let st = e.status(&id).await;
    assert_eq!(st["health"]["status"], "degraded", "{st}");
    assert!(
        st["health"]["reasons"]
            .to_string()
            .contains("above 90 % of its limit of 64 MB"),
        "{st}"
    );
    e.ok(&id, "pkill -x python3; sleep 0.3").await;
    assert_eq!(e.status(&id).await["health"]["status"], "healthy");
    // A frozen sandbox's init cannot answer: unhealthy until it thaws.
    let cg = e
        .app()
        .local
        .cgroup(&quantbox_sandbox::SandboxId::parse(&id).unwrap())
        .unwrap();
    cg.freeze().unwrap();
    let st = e.status(&id).await;
    cg.thaw().unwrap();
    assert_eq!(st["health"]["status"], "unhealthy", "{st}");
    assert!(
        st["health"]["reasons"]
            .to_string()
            .contains("its init does not answer"),
        "{st}"
    );
    assert_eq!(e.status(&id).await["health"]["status"], "healthy");
    e.shutdown().await;
}
