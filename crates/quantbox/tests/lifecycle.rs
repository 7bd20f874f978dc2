//! Lifecycle: termination leaves nothing behind (also 50 at once), graceful and forced
//! termination, a crash is noticed and cleaned up, and after a server crash living
//! sandboxes are adopted again while dead ones are cleaned up and recorded as lost.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Engine, eventually, require_root};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sandboxes_leave_nothing_behind() {
    if !require_root("fifty_concurrent_sandboxes_leave_nothing_behind") {
        return;
    }
    let e = Engine::start().await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let ops = e.app().ops.clone();
        set.spawn(async move {
            let out = ops
                .call(
                    "create_e2b_sandbox",
                    json!({"name": format!("c{i}"), "memory_mb": 64}),
                )
                .await?;
            let id = out["sandbox_id"].as_str().unwrap().to_owned();
            // Something running in the background, so termination has processes to kill.
            let r = ops
                .call(
                    "execute_e2b_process",
                    json!({"sandbox_id": id, "command": "sleep 100 >/dev/null 2>&1 & echo $!"}),
                )
                .await?;
            assert_eq!(r["exit_code"], 0);
            ops.call(
                "terminate_e2b_sandbox",
                json!({"sandbox_id": id, "force": i % 2 == 0}),
            )
            .await?;
            Ok::<_, quantbox_ops::OpError>(id)
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.push(r.unwrap().unwrap());
    }
    assert_eq!(ids.len(), 50);
    let left = e.leftovers();
    assert!(
        left.is_empty(),
        "after 50 concurrent create/terminate: {left:#?}"
    );
    let list = e
        .call("list_e2b_sandboxes", json!({"status_filter": "stopped"}))
        .await
        .unwrap();
    assert_eq!(list["total_count"], 50);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_termination_waits_for_the_grace_period_and_force_does_not() {
    if !require_root("graceful_termination_waits_for_the_grace_period_and_force_does_not") {
        return;
    }
    // No warm pool: a slot the pool is starting in the background is not parked yet, so
    // the check for leftovers right after a termination would count it.
    let e = Engine::start_with(|c| {
        c.terminate_grace = Duration::from_secs(1);
        c.warm_pool = 0;
    })
    .await;
    // `sleep` exists only once the trap is set: wait for it before terminating.
    let stubborn = "nohup sh -c \"trap '' TERM; exec sleep 100\" >/dev/null 2>&1 & \
        for i in $(seq 100); do pgrep -x sleep >/dev/null && break; sleep 0.02; done; \
        grep SigIgn /proc/$(pgrep -x sleep)/status";
    // Processes that obey SIGTERM end at once: termination does not wait the grace.
    let polite = e.create(json!({})).await;
    e.ok(&polite, "nohup sleep 100 >/dev/null 2>&1 & echo started")
        .await;
    let t = Instant::now();
    e.call("terminate_e2b_sandbox", json!({"sandbox_id": polite}))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "graceful termination of an obedient sandbox took {:?}",
        t.elapsed()
    );

    let g = e.create(json!({})).await;
    e.ok(&g, stubborn).await;
    let t = Instant::now();
    let out = e
        .call("terminate_e2b_sandbox", json!({"sandbox_id": g}))
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "graceful: {took:?}"
    );
    assert_eq!(out["status"], "terminated");

    let f = e.create(json!({})).await;
    e.ok(&f, stubborn).await;
    let t = Instant::now();
    e.call(
        "terminate_e2b_sandbox",
        json!({"sandbox_id": f, "force": true}),
    )
    .await
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "forced: {:?}",
        t.elapsed()
    );
    assert!(e.leftovers().is_empty(), "{:?}", e.leftovers());
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_sandbox_is_noticed_and_cleaned_up() {
    if !require_root("a_crashed_sandbox_is_noticed_and_cleaned_up") {
        return;
    }
    let e = Engine::start().await;
    let id = e.create(json!({})).await;
    e.ok(&id, "nohup sleep 100 >/dev/null 2>&1 & echo started")
        .await;
    let pid = e.init_pid(&id).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut st = Value::Null;
    for _ in 0..100 {
        st = e.status(&id).await;
        if st["status"] == "stopped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(st["stop_reason"], "crashed", "{st}");
    assert_eq!(st["health"]["status"], "unhealthy", "{st}");
    assert!(
        st["recent_logs"]
            .to_string()
            .contains("crashed: its init was killed by signal 9"),
        "{st}"
    );
    assert!(
        eventually(Duration::from_secs(3), || e.leftovers().is_empty()).await,
        "{:?}",
        e.leftovers()
    );
    e.shutdown().await;
}

/// A `quantbox serve` process.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data_dir: &std::path::Path, parent: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quantbox"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--e2b-listen",
                "off",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("QUANTBOX_CGROUP_PARENT", parent)
            .env("QUANTBOX_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let url = common::serving_url(&mut child);
        Self { child, url }
    }

    async fn call(&self, tool: &str, args: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}/api/v1/tools/{tool}", self.url))
            .json(&args)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, as a service manager stops it; waits for it to exit.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the server exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The slot (host directory and cgroup name) the server recorded for a sandbox.
fn slot_of(data_dir: &std::path::Path, id: &str) -> String {
    use quantbox_sandbox::SandboxStore;
    let store = quantbox_store::SqliteStore::open(&data_dir.join("quantbox.db")).unwrap();
    let rec = store
        .get_sandbox(&quantbox_sandbox::SandboxId::parse(id).unwrap())
        .unwrap()
        .unwrap();
    rec.runtime["slot"].as_str().unwrap().to_owned()
}

/// Host pid of a sandbox's init, from the runtime state the server recorded for it.
fn find_init(data_dir: &std::path::Path, id: &str) -> Option<i32> {
    use quantbox_sandbox::SandboxStore;
    let store = quantbox_store::SqliteStore::open(&data_dir.join("quantbox.db")).ok()?;
    let rec = store
        .get_sandbox(&quantbox_sandbox::SandboxId::parse(id).ok()?)
        .ok()??;
    let pid = rec.runtime["init_pid"].as_i64()? as i32;
    let started = rec.runtime["init_start_time"].as_u64()?;
    // The same pid with the same start time, not a zombie: the same living process.
    quantbox_sandbox_local::sys::process_alive(pid, started).then_some(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_crash_living_sandboxes_are_adopted_and_dead_ones_cleaned_up() {
    if !require_root("after_a_server_crash_living_sandboxes_are_adopted_and_dead_ones_cleaned_up") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("qbt")
        .tempdir_in("/tmp")
        .unwrap();
    let parent = format!("qbtest-restart-{}", std::process::id());
    let a = Server::start(dir.path(), &parent);
    let id = |v: &Value| v["sandbox_id"].as_str().unwrap().to_owned();
    let keep = id(&a
        .call(
            "create_e2b_sandbox",
            json!({"name": "keep", "memory_mb": 64}),
        )
        .await);
    let die = id(&a
        .call(
            "create_e2b_sandbox",
            json!({"name": "die", "memory_mb": 64}),
        )
        .await);
    let expire = id(&a
        .call(
            "create_e2b_sandbox",
            json!({"name": "expire", "memory_mb": 64, "timeout": 2}),
        )
        .await);
    let r = a.call("execute_e2b_process", json!({"sandbox_id": keep, "command": "echo kept > /home/user/state; nohup sleep 300 >/dev/null 2>&1 &"})).await;
    assert_eq!(r["exit_code"], 0, "{r}");
    let keep_pid = find_init(dir.path(), &keep).expect("init of keep");
    let die_pid = find_init(dir.path(), &die).expect("init of die");

    // Let the first server park its warm sandboxes, so that the crash leaves some.
    let slots = || {
        std::fs::read_dir(dir.path().join("local/sandboxes"))
            .unwrap()
            .count()
    };
    assert!(
        common::eventually(Duration::from_secs(10), || slots() >= 5).await,
        "the warm pool never filled"
    );
    a.crash();
    let owned: Vec<String> = [&keep, &die, &expire]
        .iter()
        .map(|id| slot_of(dir.path(), id))
        .collect();
    let parked_by_a: Vec<String> = std::fs::read_dir(dir.path().join("local/sandboxes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|s| !owned.contains(s))
        .collect();
    assert_eq!(parked_by_a.len(), 2, "{parked_by_a:?}");
    // While the server is down: one sandbox dies, another outlives its lifetime.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(die_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        std::path::Path::new(&format!("/proc/{keep_pid}")).exists(),
        "keep died with the server"
    );

    let b = Server::start(dir.path(), &parent);
    let st = b
        .call("get_e2b_sandbox_status", json!({"sandbox_id": keep}))
        .await;
    assert_eq!(st["status"], "running", "{st}");
    assert!(
        st["recent_logs"]
            .to_string()
            .contains("adopted again after a server restart"),
        "{st}"
    );
    let r = b.call("execute_e2b_process", json!({"sandbox_id": keep, "command": "cat /home/user/state; pgrep -x sleep >/dev/null && echo sleeping"})).await;
    assert_eq!(r["stdout"], "kept\nsleeping\n", "{r}");
    let st = b
        .call("get_e2b_sandbox_status", json!({"sandbox_id": die}))
        .await;
    assert_eq!(
        (st["status"].as_str(), st["stop_reason"].as_str()),
        (Some("stopped"), Some("lost")),
        "{st}"
    );
    assert!(
        st["recent_logs"]
            .to_string()
            .contains("lost while the server was down"),
        "{st}"
    );
    let st = b
        .call("get_e2b_sandbox_status", json!({"sandbox_id": expire}))
        .await;
    assert_eq!(
        (st["status"].as_str(), st["stop_reason"].as_str()),
        (Some("stopped"), Some("expired")),
        "{st}"
    );
    assert!(find_init(dir.path(), &die).is_none() && find_init(dir.path(), &expire).is_none());
    let slot_dir = |sid: &str| {
        dir.path()
            .join("local/sandboxes")
            .join(slot_of(dir.path(), sid))
    };
    assert!(
        !slot_dir(&die).exists() && !slot_dir(&expire).exists(),
        "files of dead sandboxes are left"
    );
    assert!(slot_dir(&keep).exists());
    // The crashed server's parked (warm) sandboxes were swept at the restart.
    for slot in &parked_by_a {
        assert!(
            !dir.path().join("local/sandboxes").join(slot).exists(),
            "parked slot {slot} survived"
        );
    }

    let r = b
        .call("terminate_e2b_sandbox", json!({"sandbox_id": keep}))
        .await;
    assert_eq!(r["status"], "terminated", "{r}");
    // Stopped gracefully, the server ends its warm pool: nothing is left at all.
    b.stop();
    let cgroups = quantbox_sandbox_local::cgroup::Cgroups::detect(&parent).unwrap();
    let left = common::leftovers(dir.path(), &parent, &cgroups.children());
    assert!(left.is_empty(), "{left:#?}");
    let _ = cgroups.remove_parents();
    for ctrl in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{ctrl}/{parent}"));
    }
}

/// Zombie children of this process (an init nobody reaped would be one).
fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let mut f = rest.split_whitespace();
            let (state, ppid) = (f.next()?, f.next()?);
            (state == "Z" && ppid == me).then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_fails_to_start_leaves_nothing_behind() {
    if !require_root("a_sandbox_that_fails_to_start_leaves_nothing_behind") {
        return;
    }
    // An init binary that is not quantbox: the helper exits before it says anything.
    let e = Engine::start_with(|c| {
        c.init_exe = Some("/bin/false".into());
        c.warm_pool = 0;
    })
    .await;
    let err = e
        .call(
            "create_e2b_sandbox",
            json!({"name": "doomed", "memory_mb": 64}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "internal");
    assert!(
        err.message.contains("init exited during setup"),
        "{}",
        err.message
    );
    let list = e.call("list_e2b_sandboxes", json!({})).await.unwrap();
    assert_eq!(
        list["sandboxes"][0]["stop_reason"], "start_failed",
        "{list}"
    );
    assert!(
        eventually(Duration::from_secs(3), || e.leftovers().is_empty()).await,
        "{:?}",
        e.leftovers()
    );
    assert!(
        eventually(Duration::from_secs(3), || zombie_children().is_empty()).await,
        "{:?}",
        zombie_children()
    );
    e.shutdown().await;
}
