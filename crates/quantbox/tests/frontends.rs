//! The REST routes and CLI verbs of pause/resume/lifetime, export, templates,
//! deployments and fleet health, against a real `quantbox serve`: each route and verb
//! once for success and once for a clear error.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Served, require_root};
use serde_json::{Value, json};

/// A `quantbox serve` on a private data directory and cgroup parent, autoscaling every
/// 0.5 s (see [`common::Served`]), with the CLI run against it.
struct Server(Served);

impl std::ops::Deref for Server {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Served {
        &mut self.0
    }
}

impl Server {
    fn start() -> Self {
        Self(Served::start(
            "fe",
            &[("QUANTBOX_AUTOSCALE_INTERVAL_S", "0.5")],
        ))
    }

    /// Runs the CLI with `--url` after its first word: (exit code, stdout, stderr).
    async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_in(None, args).await
    }

    async fn cli_in(&self, cwd: Option<&Path>, args: &[&str]) -> (i32, String, String) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_quantbox"));
        cmd.arg(args[0])
            .args(["--url", &self.url])
            .args(&args[1..])
            .env_remove("QUANTBOX_URL")
            .env_remove("QUANTBOX_API_KEY")
            .stdin(Stdio::null());
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("quantbox {args:?} did not finish in 120 s"))
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the CLI and requires success; returns stdout.
    async fn cli_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.cli(args).await;
        assert_eq!(
            code, 0,
            "quantbox {args:?} failed:\nstdout: {out}\nstderr: {err}"
        );
        out
    }

    /// Runs the CLI with `--json` and requires success; returns the JSON.
    async fn cli_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.cli_ok(&a).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("quantbox {a:?}: {e}: {out}"))
    }

    /// Runs the CLI and requires exit status 1 with `error: <code>: ` on stderr; returns
    /// stderr.
    async fn cli_err(&self, args: &[&str], code: &str) -> String {
        let (status, out, err) = self.cli(args).await;
        assert_eq!(
            status, 1,
            "quantbox {args:?} should have failed:\nstdout: {out}\nstderr: {err}"
        );
        assert!(
            err.contains(&format!("error: {code}: ")),
            "quantbox {args:?}: expected {code}, got stderr: {err}"
        );
        err
    }

    /// Runs a shell line in a sandbox through the tools route; returns the result.
    async fn sh(&self, id: &str, cmd: &str) -> Value {
        let (status, v) = self
            .rest(
                "POST",
                "/api/v1/tools/execute_e2b_process",
                Some(json!({"sandbox_id": id, "command": cmd, "timeout": 60})),
            )
            .await;
        assert_eq!(status, 200, "{cmd}: {v}");
        v
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// A directory tree the template importer accepts (it needs a /bin/sh).
fn tiny_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::copy("/bin/sh", dir.join("bin/sh")).unwrap();
    std::fs::write(dir.join("etc/motd"), "tiny\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_routes_and_cli_verbs_drive_the_operations() {
    if !require_root("rest_routes_and_cli_verbs_drive_the_operations") {
        return;
    }
    let mut srv = Server::start();
    pause_resume_and_lifetime(&srv).await;
    export_and_templates(&srv).await;
    deployments(&srv).await;
    fleet_health(&srv).await;
    clients_that_go_away(&srv).await;

    // End every sandbox, stop the server, and nothing is left.
    let list = srv.cli_json(&["sandbox", "list"]).await;
    for sb in list["sandboxes"].as_array().unwrap() {
        if sb["status"] != "stopped" {
            srv.cli_ok(&["sandbox", "terminate", &s(&sb["sandbox_id"]), "--force"])
                .await;
        }
    }
    srv.stop();
    let cgroups = quantbox_sandbox_local::cgroup::Cgroups::detect(&srv.cgroup_parent).unwrap();
    let left = common::leftovers(&srv.data_dir, &srv.cgroup_parent, &cgroups.children());
    assert!(left.is_empty(), "left on the host: {left:#?}");
}

async fn pause_resume_and_lifetime(srv: &Server) {
    let out = srv
        .cli_json(&["sandbox", "create", "pz", "--memory-mb", "128"])
        .await;
    let id = s(&out["sandbox_id"]);

    // Pause: seen as paused, and it cannot run commands.
    let out = srv.cli_ok(&["sandbox", "pause", &id]).await;
    assert!(out.contains("paused"), "{out}");
    let out = srv.cli_ok(&["sandbox", "list", "--status", "paused"]).await;
    assert!(out.contains(&id), "{out}");
    let err = srv
        .cli_err(&["sandbox", "exec", &id, "true"], "failed_precondition")
        .await;
    assert!(err.contains("paused"), "{err}");
    // Pausing it again is refused, by the CLI and by REST.
    srv.cli_err(&["sandbox", "pause", &id], "failed_precondition")
        .await;
    let (status, v) = srv
        .rest("POST", &format!("/api/v1/sandboxes/{id}/pause"), None)
        .await;
    assert_eq!(status, 412, "{v}");
    assert_eq!(v["error"]["code"], "failed_precondition", "{v}");

    // Resume, through REST, then the CLI refuses to resume a running one.
    let (status, v) = srv
        .rest("POST", &format!("/api/v1/sandboxes/{id}/resume"), None)
        .await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("running")),
        "{v}"
    );
    srv.cli_err(&["sandbox", "resume", &id], "failed_precondition")
        .await;
    assert_eq!(srv.sh(&id, "echo back").await["stdout"], "back\n");
    // An unknown id is a clear error.
    let (status, v) = srv.rest("POST", "/api/v1/sandboxes/nope/pause", None).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sandbox_id"),
        "{v}"
    );

    // Lifetime: bad values are refused; 5 s moves the expiry and the sandbox expires.
    let (status, v) = srv
        .rest(
            "POST",
            &format!("/api/v1/sandboxes/{id}/timeout"),
            Some(json!({"timeout": "5"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("timeout"),
        "{v}"
    );
    let (status, v) = srv
        .rest(
            "POST",
            &format!("/api/v1/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 5, "sandbox_id": "aaaaaaaaaaaaaaaaaaaa"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    srv.cli_err(&["sandbox", "timeout", &id, "0"], "invalid_argument")
        .await;
    let (_, before) = srv
        .rest("GET", &format!("/api/v1/sandboxes/{id}"), None)
        .await;
    let out = srv.cli_json(&["sandbox", "timeout", &id, "5"]).await;
    let (new, old) = (s(&out["expires_at"]), s(&before["expires_at"]));
    assert!(new < old, "the expiry did not move earlier: {old} → {new}");
    let (_, after) = srv
        .rest("GET", &format!("/api/v1/sandboxes/{id}"), None)
        .await;
    assert_eq!(after["expires_at"], out["expires_at"], "{after}");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, st) = srv
            .rest("GET", &format!("/api/v1/sandboxes/{id}"), None)
            .await;
        if st["status"] == "stopped" {
            assert_eq!(st["stop_reason"], "expired", "{st}");
            break;
        }
        assert!(Instant::now() < end, "never expired: {st}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn export_and_templates(srv: &Server) {
    let out = srv
        .cli_json(&["sandbox", "create", "src", "--memory-mb", "128"])
        .await;
    let src = s(&out["sandbox_id"]);
    let r = srv
        .sh(&src, "echo written-before-export > /home/user/before.txt")
        .await;
    assert_eq!(r["exit_code"], 0, "{r}");

    // Export through the CLI: progress on stderr, the summary on stdout.
    let (code, out, err) = srv
        .cli(&["sandbox", "export", &src, "fe-tpl", "--include-data"])
        .await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("exporting: "), "no progress line: {err}");
    assert!(
        out.contains(&format!("exported sandbox {src} as template fe-tpl: "))
            && out.contains("(base template base)"),
        "{out}"
    );
    let out = srv.cli_ok(&["template", "list"]).await;
    assert!(
        out.lines().next().unwrap().starts_with("NAME")
            && out.lines().any(|l| l.starts_with("fe-tpl ")),
        "{out}"
    );
    // A sandbox from it sees the file written before the export.
    let out = srv
        .cli_json(&["sandbox", "create", "x", "--template", "fe-tpl"])
        .await;
    let x = s(&out["sandbox_id"]);
    assert_eq!(
        srv.sh(&x, "cat /home/user/before.txt").await["stdout"],
        "written-before-export\n"
    );
    // The same name again, or from an unknown sandbox: clear errors.
    srv.cli_err(&["sandbox", "export", &src, "fe-tpl"], "already_exists")
        .await;
    srv.cli_err(
        &["sandbox", "export", "aaaaaaaaaaaaaaaaaaaa", "other"],
        "not_found",
    )
    .await;

    // The NDJSON stream: progress lines, then a last result line.
    let (status, ctype, text) = srv
        .rest_raw(
            "POST",
            &format!("/api/v1/sandboxes/{src}/export?progress=true"),
            Some(json!({"template_name": "fe-tpl2"})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("application/x-ndjson"), "{ctype}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let (last, progress) = lines.split_last().expect("at least one line");
    assert_eq!(last["result"]["template_name"], "fe-tpl2", "{text}");
    assert_eq!(last["result"]["sandbox_id"], src.as_str(), "{text}");
    for p in progress {
        assert!(
            p["progress"]["bytes"].is_u64() && p["progress"]["files"].is_u64(),
            "{text}"
        );
    }
    // An error found before the stream starts is an ordinary error response.
    let (status, ctype, text) = srv
        .rest_raw(
            "POST",
            &format!("/api/v1/sandboxes/{src}/export?progress=true"),
            Some(json!({"template_name": "bad/name"})),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    assert!(text.contains("template_name"), "{text}");
    let (status, v) = srv
        .rest(
            "POST",
            &format!("/api/v1/sandboxes/{src}/export?progress=yes"),
            Some(json!({"template_name": "fe-tpl3"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("progress"),
        "{v}"
    );
    // Without progress: the plain result.
    let (status, v) = srv
        .rest(
            "POST",
            &format!("/api/v1/sandboxes/{src}/export"),
            Some(json!({"template_name": "fe-tpl3"})),
        )
        .await;
    assert_eq!(
        (status, v["template_name"].as_str()),
        (200, Some("fe-tpl3")),
        "{v}"
    );

    // Deletion: refused while in use, done when not.
    let err = srv
        .cli_err(&["template", "delete", "fe-tpl"], "failed_precondition")
        .await;
    assert!(err.contains("fe-tpl"), "{err}");
    let out = srv.cli_ok(&["template", "delete", "fe-tpl2"]).await;
    assert!(out.contains("fe-tpl2"), "{out}");
    let (status, v) = srv.rest("DELETE", "/api/v1/templates/fe-tpl3", None).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = srv.rest("DELETE", "/api/v1/templates/fe-tpl3", None).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = srv.rest("GET", "/api/v1/templates", None).await;
    assert_eq!(status, 200, "{v}");
    let names: Vec<&str> = v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"fe-tpl") && !names.contains(&"fe-tpl2") && !names.contains(&"fe-tpl3"),
        "{names:?}"
    );
    let (status, v) = srv.rest("GET", "/api/v1/templates?all=true", None).await;
    assert_eq!(status, 400, "{v}");

    // Import: a missing path is refused on the client, naming it; a relative one is
    // made absolute.
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("no-such-rootfs");
    let err = srv
        .cli_err(
            &["template", "import", "fe-imp", missing.to_str().unwrap()],
            "invalid_argument",
        )
        .await;
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    tiny_rootfs(&work.path().join("rootfs"));
    let (code, out, err) = srv
        .cli_in(
            Some(work.path()),
            &[
                "template",
                "import",
                "fe-imp",
                "rootfs",
                "--memory-mb",
                "96",
                "--env",
                "A=b",
                "--category",
                "ml",
            ],
        )
        .await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.starts_with("imported template fe-imp from /"), "{out}");
    let (_, v) = srv.rest("GET", "/api/v1/templates", None).await;
    let t = v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fe-imp")
        .unwrap_or_else(|| panic!("not listed: {v}"))
        .clone();
    assert_eq!(
        (t["layers"].as_i64(), t["defaults"]["memory_mb"].as_i64()),
        (Some(1), Some(96)),
        "{t}"
    );
    // Over REST: a relative source is refused; with progress, a stream ending in the result.
    let (status, v) = srv
        .rest(
            "POST",
            "/api/v1/templates",
            Some(json!({"name": "fe-imp2", "source": "rootfs"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("source"),
        "{v}"
    );
    let rootfs = work.path().join("rootfs");
    let (status, ctype, text) = srv
        .rest_raw(
            "POST",
            "/api/v1/templates?progress=true",
            Some(json!({"name": "fe-imp2", "source": rootfs.to_str().unwrap()})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("application/x-ndjson"), "{ctype}");
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"]["name"], "fe-imp2", "{text}");
    let (status, v) = srv
        .rest(
            "POST",
            "/api/v1/templates",
            Some(json!({"name": "fe-imp3", "source": rootfs.to_str().unwrap()})),
        )
        .await;
    assert_eq!((status, v["name"].as_str()), (201, Some("fe-imp3")), "{v}");
    // A name taken already is refused, naming the import's own field.
    let (status, v) = srv
        .rest(
            "POST",
            "/api/v1/templates",
            Some(json!({"name": "fe-imp3", "source": rootfs.to_str().unwrap()})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("already_exists")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("name: a template named `fe-imp3` exists already"),
        "{v}"
    );
    for t in ["fe-imp", "fe-imp2", "fe-imp3"] {
        srv.cli_ok(&["template", "delete", t]).await;
    }
}

async fn deployments(srv: &Server) {
    let config = json!({
        "memory_mb": 128,
        "setup_commands": ["echo set-up > /home/user/setup.txt"],
    })
    .to_string();
    // Errors first: a bad category (CLI), an unknown template (REST).
    srv.cli_err(
        &["deployment", "create", "base", "--category", "nope"],
        "invalid_argument",
    )
    .await;
    let (status, v) = srv
        .rest(
            "POST",
            "/api/v1/deployments",
            Some(json!({"template_name": "nope", "category": "ml"})),
        )
        .await;
    assert_eq!(status, 404, "{v}");

    let out = srv
        .cli_json(&[
            "deployment",
            "create",
            "base",
            "--category",
            "trading",
            "--config",
            &config,
        ])
        .await;
    let dep = s(&out["deployment_id"]);
    let first = s(&out["sandbox_id"]);
    assert_eq!(
        srv.sh(&first, "cat /home/user/setup.txt").await["stdout"],
        "set-up\n"
    );
    let out = srv.cli_ok(&["deployment", "list"]).await;
    let row = out
        .lines()
        .find(|l| l.starts_with(&dep))
        .unwrap_or_else(|| panic!("{dep} not listed: {out}"));
    assert!(row.contains("trading") && row.contains("1/1"), "{row}");
    let (status, v) = srv.rest("GET", "/api/v1/deployments", None).await;
    assert_eq!((status, v["total_count"].as_i64()), (200, Some(1)), "{v}");

    // Scale to 3, then look at it.
    let out = srv.cli_ok(&["deployment", "scale", &dep, "3"]).await;
    assert!(out.contains("3 running, 0 failed"), "{out}");
    let out = srv.cli_ok(&["deployment", "show", &dep]).await;
    let running_rows = out
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("running"))
        .count();
    assert_eq!(running_rows, 3, "{out}");
    assert!(out.contains("scaled"), "{out}");
    let (status, v) = srv
        .rest("GET", &format!("/api/v1/deployments/{dep}?events=10"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["running_instances"], 3, "{v}");
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "scaled"),
        "{v}"
    );
    let (status, v) = srv
        .rest(
            "GET",
            &format!("/api/v1/deployments/{dep}?events=ten"),
            None,
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events"),
        "{v}"
    );
    let (status, v) = srv
        .rest(
            "GET",
            &format!("/api/v1/deployments/{dep}?events=1001"),
            None,
        )
        .await;
    assert_eq!(status, 400, "{v}");
    srv.cli_err(&["deployment", "show", "dep_aaaaaaaaaaaaaaaa"], "not_found")
        .await;

    // Scale errors: an unknown deployment, a body that names another one.
    srv.cli_err(
        &["deployment", "scale", "dep_aaaaaaaaaaaaaaaa", "1"],
        "not_found",
    )
    .await;
    let (status, v) = srv
        .rest(
            "POST",
            "/api/v1/deployments/dep_aaaaaaaaaaaaaaaa/scale",
            Some(json!({"instance_count": 1})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (status, v) = srv
        .rest(
            "POST",
            &format!("/api/v1/deployments/{dep}/scale"),
            Some(json!({"instance_count": 1, "deployment_id": "dep_aaaaaaaaaaaaaaaa"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");

    // Scale to 0 over REST, delete, and it is listed as deleted only with --all.
    let (status, v) = srv
        .rest(
            "POST",
            &format!("/api/v1/deployments/{dep}/scale"),
            Some(json!({"instance_count": 0})),
        )
        .await;
    assert_eq!(
        (status, v["running_instances"].as_i64()),
        (200, Some(0)),
        "{v}"
    );
    let out = srv.cli_ok(&["deployment", "delete", &dep]).await;
    assert!(out.contains(&dep), "{out}");
    srv.cli_err(
        &["deployment", "delete", "dep_aaaaaaaaaaaaaaaa"],
        "not_found",
    )
    .await;
    let (status, v) = srv
        .rest("DELETE", "/api/v1/deployments/not-an-id", None)
        .await;
    assert_eq!(status, 400, "{v}");
    let out = srv.cli_ok(&["deployment", "list", "--all"]).await;
    let row = out
        .lines()
        .find(|l| l.starts_with(&dep))
        .unwrap_or_else(|| panic!("{dep} not listed with --all: {out}"));
    assert!(row.contains("deleted"), "{row}");
    let out = srv.cli_ok(&["deployment", "list"]).await;
    assert!(!out.contains(&dep), "{out}");
    let (status, v) = srv
        .rest("GET", "/api/v1/deployments?include_deleted=yes", None)
        .await;
    assert_eq!(status, 400, "{v}");
}

async fn fleet_health(srv: &Server) {
    let list = srv
        .cli_json(&["sandbox", "list", "--status", "running"])
        .await;
    let running: Vec<String> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sb| s(&sb["sandbox_id"]))
        .collect();
    assert!(!running.is_empty(), "{list}");
    let out = srv.cli_ok(&["health", "--all"]).await;
    assert!(out.starts_with("overall"), "{out}");
    for id in &running {
        assert!(out.contains(id.as_str()), "{id} not in:\n{out}");
    }
    let (status, v) = srv.rest("GET", "/api/v1/fleet/health", None).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["overall_health"].is_string(), "{v}");
    assert!(v.get("sandboxes").is_none(), "{v}");
    let (status, v) = srv.rest("GET", "/api/v1/fleet/health?all=true", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["sandboxes"].as_array().unwrap().len(),
        running.len(),
        "{v}"
    );
    let (status, v) = srv.rest("GET", "/api/v1/fleet/health?all=1", None).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().starts_with("all"),
        "{v}"
    );
}

/// A client that disconnects does not cut an operation off: a command it started runs to
/// its end, and creations it gave up on end as whole sandboxes, never half-made ones.
async fn clients_that_go_away(srv: &Server) {
    let (status, v) = srv
        .rest(
            "POST",
            "/api/v1/sandboxes",
            Some(json!({"name": "gone", "memory_mb": 128})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let id = s(&v["sandbox_id"]);
    let impatient = |ms: u64| {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(ms))
            .build()
            .unwrap()
    };
    let gave_up = impatient(300)
        .post(format!("{}/api/v1/sandboxes/{id}/exec", srv.url))
        .json(&json!({"command": "sleep 1; echo finished > /home/user/gone.txt"}))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client should have timed out: {gave_up:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, out) = srv
        .rest(
            "POST",
            &format!("/api/v1/sandboxes/{id}/exec"),
            Some(json!({"command": "cat /home/user/gone.txt"})),
        )
        .await;
    assert_eq!(
        out["stdout"], "finished\n",
        "the command should have run to its end: {out}"
    );
    // Creations abandoned after a few milliseconds, some mid-start.
    for ms in 1..=8 {
        let _ = impatient(ms)
            .post(format!("{}/api/v1/sandboxes", srv.url))
            .json(&json!({"name": format!("gone{ms}"), "memory_mb": 128}))
            .send()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, list) = srv.rest("GET", "/api/v1/sandboxes", None).await;
    for sb in list["sandboxes"].as_array().unwrap() {
        assert_ne!(sb["status"], "creating", "a half-made sandbox: {sb}");
    }
}
