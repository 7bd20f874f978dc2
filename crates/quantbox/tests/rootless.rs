//! Without root: the server runs rootless on user namespaces. Where no cgroup was
//! delegated to its user it says which limits it cannot enforce and refuses sandboxes
//! that ask for them; where one was delegated (here by root, as a system administrator
//! or systemd would), sandboxes run with every limit enforced. The tests start the
//! server as `nobody`, so they need root to set that up.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::require_root;
use serde_json::{Value, json};

const NOBODY: u32 = 65534;

struct Rootless {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Rootless {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `quantbox serve` as nobody, with its own copy of the binary (the build tree may
/// not be readable by nobody) and a data directory nobody owns.
fn start(cgroup_parent: &str) -> Rootless {
    let dir = tempfile::Builder::new()
        .prefix("qbr")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("quantbox");
    std::fs::copy(env!("CARGO_BIN_EXE_quantbox"), &bin).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--e2b-listen",
        "off",
        "--data-dir",
    ])
    .arg(&data)
    .env_clear()
    .env("QUANTBOX_CGROUP_PARENT", cgroup_parent)
    .env("QUANTBOX_LOG", "warn")
    .uid(NOBODY)
    .gid(NOBODY)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    // A test running beside this one may fork while the copy's write descriptor is open
    // (the child keeps it until it execs): exec then fails with ETXTBSY for a moment.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.unwrap(),
        }
    };
    let url = common::serving_url(&mut child);
    Rootless {
        child,
        url,
        _dir: dir,
    }
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// This process's cgroup directory in each v1 hierarchy the engine uses (the server we
/// start inherits them), or the v2 one.
fn own_cgroup_dirs() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        for c in ctrls.split(',') {
            if ["memory", "cpu", "cpuacct", "pids", "freezer"].contains(&c) {
                out.push(
                    Path::new("/sys/fs/cgroup")
                        .join(c)
                        .join(path.trim_start_matches('/')),
                );
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_delegated_cgroup_rootless_refuses_limits_it_cannot_enforce() {
    if !require_root("without_a_delegated_cgroup_rootless_refuses_limits_it_cannot_enforce") {
        return;
    }
    let s = start(&format!("qbtest-nodeleg-{}", std::process::id()));
    let h = get(&format!("{}/api/v1/health", s.url)).await;
    let p = local_provider(&h);
    assert_eq!(p["status"], "degraded", "{h}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("rootless") && detail.contains("cannot enforce memory, cpu, pids"),
        "{detail}"
    );
    for l in p["limits"].as_array().unwrap() {
        if l["limit"] != "lifetime" {
            assert_eq!(l["enforced"], false, "{l}");
            let reason = l["reason"].as_str().unwrap();
            assert!(
                reason.contains("Permission denied") || reason.contains("not writable"),
                "{l}"
            );
        }
    }
    let (status, body) = post(&format!("{}/api/v1/sandboxes", s.url), json!({"name": "x"})).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["code"], "failed_precondition");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("cannot enforce")
            && msg.contains("memory")
            && msg.contains("delegated cgroup"),
        "{msg}"
    );
    // Refused before anything was made: no record, no files.
    let list = get(&format!("{}/api/v1/sandboxes", s.url)).await;
    assert_eq!(list["total_count"], 0, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_delegated_cgroup_rootless_sandboxes_run_under_every_limit() {
    if !require_root("with_a_delegated_cgroup_rootless_sandboxes_run_under_every_limit") {
        return;
    }
    let parent = format!("qbtest-deleg-{}", std::process::id());
    let dirs: Vec<PathBuf> = own_cgroup_dirs()
        .into_iter()
        .map(|d| d.join(&parent))
        .collect();
    assert!(!dirs.is_empty(), "no v1 hierarchies found");
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
        for e in std::iter::once(d.clone())
            .chain(std::fs::read_dir(d).unwrap().flatten().map(|e| e.path()))
        {
            std::os::unix::fs::chown(&e, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
    let s = start(&parent);
    let h = get(&format!("{}/api/v1/health", s.url)).await;
    assert_eq!(local_provider(&h)["status"], "available", "{h}");
    let (status, out) = post(
        &format!("{}/api/v1/sandboxes", s.url),
        json!({"name": "r", "memory_mb": 128}),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let id = out["sandbox_id"].as_str().unwrap().to_owned();
    let exec = |cmd: &str| {
        let url = format!("{}/api/v1/sandboxes/{id}/exec", s.url);
        let body = json!({"command": cmd});
        async move { post(&url, body).await.1 }
    };
    let r = exec(
        "id -u; cat /proc/self/uid_map; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
    )
    .await;
    let out = r["stdout"].as_str().unwrap();
    assert!(out.starts_with("1000\n"), "{r}");
    assert!(
        out.contains("1000      65534          1"),
        "sandbox user is not nobody outside: {out}"
    );
    assert!(
        out.contains("CapEff:\t0000000000000000")
            && out.contains("NoNewPrivs:\t1")
            && out.contains("Seccomp:\t2"),
        "{out}"
    );
    // Through the shell: the shell reports its OOM-killed child as exit status 137.
    let r = exec("python3 -c \"x = b'a' * (512 * 2**20)\"").await;
    assert_eq!(
        (r["exit_code"].as_i64(), r["oom_killed"].as_bool()),
        (Some(137), Some(true)),
        "{r}"
    );
    for cmd in [
        "unshare -U true",
        "mount -t tmpfs none /mnt",
        "cat /etc/shadow",
    ] {
        let r = exec(cmd).await;
        assert_ne!(r["exit_code"], 0, "{cmd}: {r}");
    }
    let r = reqwest::Client::new()
        .delete(format!("{}/api/v1/sandboxes/{id}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Stopped the way a service manager stops it, the server also ends its warm pool.
    let mut s = s;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(s.child.wait().unwrap().success());
    for d in &dirs {
        let children: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .collect();
        assert!(
            children.is_empty(),
            "cgroups left in {}: {children:?}",
            d.display()
        );
    }
    drop(s);
    for d in &dirs {
        let _ = std::fs::remove_dir(d.join("quantbox-server"));
        let _ = std::fs::remove_dir(d);
    }
}

/// Provider `local` in a `GET /api/v1/health` answer (provider `e2b` is listed too).
fn local_provider(h: &Value) -> &Value {
    h["providers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "local"))
        .unwrap_or_else(|| panic!("no provider local in {h}"))
}
