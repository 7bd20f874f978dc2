//! Limits, proven by exceeding them: memory (OOM kill, reported), processes (a fork
//! bomb is contained and the host stays responsive), CPU quota, and the lifetimes of a
//! command and of a sandbox. CPU-heavy tests take a lock so they do not skew each other.

mod common;

use std::time::{Duration, Instant};

use common::{Engine, eventually, require_root};
use serde_json::json;

static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_beyond_the_limit_is_oom_killed_and_reported() {
    if !require_root("memory_beyond_the_limit_is_oom_killed_and_reported") {
        return;
    }
    let e = Engine::start().await;
    let id = e.create(json!({"memory_mb": 128})).await;
    let before = e.status(&id).await;
    assert_eq!(before["oom_kills"], 0);
    assert_eq!(before["resource_usage"]["memory_limit_mb"], 128.0);
    // 512 MB, every page touched.
    let r = e
        .call("execute_e2b_process", json!({"sandbox_id": id, "command": "python3", "args": ["-c", "x = b'a' * (512 * 2**20); print('survived')"]}))
        .await
        .unwrap();
    assert_eq!(r["exit_code"], serde_json::Value::Null, "{r}");
    assert_eq!(r["signal"], "SIGKILL", "{r}");
    assert_eq!(r["oom_killed"], true, "{r}");
    assert!(!r["stdout"].as_str().unwrap().contains("survived"));
    let st = e.status(&id).await;
    assert!(st["oom_kills"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["health"]["status"], "degraded", "{st}");
    assert!(
        st["health"]["reasons"].to_string().contains("memory limit"),
        "{st}"
    );
    assert!(
        st["recent_logs"]
            .to_string()
            .contains("killed by the memory limit"),
        "{st}"
    );
    // Within the limit, the same sandbox works on.
    let (code, out) = e.py(&id, "x = b'a' * (64 * 2**20); print(len(x))").await;
    assert_eq!((code, out.trim()), (0, "67108864"));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_contained_and_the_host_stays_responsive() {
    if !require_root("a_fork_bomb_is_contained_and_the_host_stays_responsive") {
        return;
    }
    let _heavy = HEAVY.lock().await;
    let e = Engine::start_with(|c| c.pids_max = 256).await;
    let bomb = e.create(json!({"name": "bomb", "memory_mb": 512})).await;
    let calm = e.create(json!({"name": "calm"})).await;
    let ops = e.app().ops.clone();
    let bomb_id = bomb.clone();
    let task = tokio::spawn(async move {
        ops.call(
            "execute_e2b_process",
            json!({"sandbox_id": bomb_id, "command": "bash", "args": ["-c", ":(){ :|:& };:; sleep 30"], "timeout": 8}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // While the bomb runs: the server answers, another sandbox runs commands, and the
    // bomb is pinned at its limit.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let out = e.ok(&calm, "echo responsive").await;
        assert_eq!(out, "responsive\n");
        e.call("list_e2b_sandboxes", json!({})).await.unwrap();
        worst = worst.max(t.elapsed());
        let st = e.status(&bomb).await;
        let pids = st["resource_usage"]["pids"].as_u64().unwrap();
        assert!(pids <= 256, "the bomb exceeded its pids limit: {pids}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        worst < Duration::from_secs(5),
        "the host stalled for {worst:?} during the fork bomb"
    );
    let st = e.status(&bomb).await;
    assert_eq!(st["health"]["status"], "degraded", "{st}");
    assert!(st["health"]["reasons"].to_string().contains("256"), "{st}");
    let r = task.await.unwrap().unwrap();
    assert_eq!(r["timed_out"], true, "{r}");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_core_quota_gives_about_half_a_core() {
    if !require_root("a_half_core_quota_gives_about_half_a_core") {
        return;
    }
    let _heavy = HEAVY.lock().await;
    let e = Engine::start().await;
    let id = e.create(json!({"cpu_count": 0.5})).await;
    // Two busy processes for 3 s: together they may use half a core.
    let code = "import os, time\n\
        def spin():\n    t = time.time()\n    while time.time() - t < 3: pass\n\
        pids = []\n\
        for _ in range(2):\n    p = os.fork()\n    if p == 0:\n        spin(); os._exit(0)\n    pids.append(p)\n\
        t0 = time.time()\n\
        for p in pids: os.waitpid(p, 0)\n\
        wall = time.time() - t0\n\
        c = os.times()\n\
        print((c.children_user + c.children_system) / wall)";
    let (status_during, (code_out, out)) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(2200)).await;
            e.status(&id).await
        },
        e.py(&id, code)
    );
    assert_eq!(code_out, 0, "{out}");
    let ratio: f64 = out.trim().parse().unwrap();
    // At most half a core, whatever else runs; about half when the machine is quiet.
    assert!(
        (0.4..=0.6).contains(&ratio),
        "CPU share with a 0.5 quota: {ratio}"
    );
    // The kernel throttled the group: direct evidence that the quota is what held it.
    let cg = e
        .app()
        .local
        .cgroup(&quantbox_sandbox::SandboxId::parse(&id).unwrap())
        .unwrap();
    let throttled: u64 = cg
        .dirs()
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cpu.stat")).ok())
        .flat_map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>())
        .find_map(|l| l.strip_prefix("nr_throttled ").and_then(|v| v.parse().ok()))
        .expect("cpu.stat has nr_throttled");
    assert!(
        throttled > 5,
        "the quota never throttled the sandbox ({throttled} periods)"
    );
    let pct = status_during["resource_usage"]["cpu_percent"]
        .as_f64()
        .unwrap();
    assert!(
        (30.0..=65.0).contains(&pct),
        "status reported {pct}% while at a 50% quota"
    );
    // Control: without the quota the same work gets well beyond the 0.6 cap.
    let free = e.create(json!({"cpu_count": 2})).await;
    let (_, out) = e.py(&free, code).await;
    let free_ratio: f64 = out.trim().parse().unwrap();
    assert!(
        free_ratio > 0.8,
        "two busy processes on two cores only got {free_ratio}"
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_timeout_kills_the_command_and_its_children() {
    if !require_root("a_command_timeout_kills_the_command_and_its_children") {
        return;
    }
    let e = Engine::start().await;
    let id = e.create(json!({})).await;
    let t = Instant::now();
    let r = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "sleep 31 & sleep 32; wait", "timeout": 1}),
        )
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["exit_code"], serde_json::Value::Null);
    assert_eq!(r["signal"], "SIGKILL");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    let left = e.sh(&id, "pgrep -f 'sleep 3[12]'").await;
    assert_ne!(
        left["exit_code"], 0,
        "children survived the timeout: {left}"
    );
    // A command that ends in time is not marked.
    let r = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "sleep 0.2", "timeout": 5}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r["timed_out"].clone(), r["exit_code"].clone()),
        (json!(false), json!(0))
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_ends_when_its_lifetime_runs_out() {
    if !require_root("a_sandbox_ends_when_its_lifetime_runs_out") {
        return;
    }
    let e = Engine::start().await;
    let t0 = Instant::now();
    let id = e.create(json!({"timeout": 2})).await;
    let pid = e.init_pid(&id).unwrap();
    let ops = e.app().ops.clone();
    let id2 = id.clone();
    let running = tokio::spawn(async move {
        let r = ops
            .call(
                "execute_e2b_process",
                json!({"sandbox_id": id2, "command": "sleep 60", "timeout": 60}),
            )
            .await;
        (r, Instant::now())
    });
    let (r, ended) = running.await.unwrap();
    let r = r.unwrap();
    let lived = ended - t0;
    assert!(
        lived >= Duration::from_millis(1900) && lived < Duration::from_secs(6),
        "lived {lived:?}"
    );
    assert_eq!(r["signal"], "SIGKILL", "{r}");
    assert!(r["error"].as_str().unwrap().contains("expired"), "{r}");
    let st = e.status(&id).await;
    assert_eq!(
        (st["status"].as_str(), st["stop_reason"].as_str()),
        (Some("stopped"), Some("expired")),
        "{st}"
    );
    assert!(
        st["recent_logs"]
            .to_string()
            .contains("expired after its lifetime of 2 s"),
        "{st}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "init {pid} survived expiry"
    );
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
    // It cannot be used any more, and says why.
    let err = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "true"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "failed_precondition");
    assert!(err.message.contains("expired"), "{}", err.message);
    assert!(eventually(Duration::from_secs(1), || e.leftovers().is_empty()).await);
    e.shutdown().await;
}
