//! Shared test harness: an in-process engine on a private data directory and cgroup
//! parent, helpers to run commands in sandboxes, a real `quantbox serve` child to call
//! over REST, checks that nothing of a sandbox is left on the host, and the pinned Python
//! virtualenvs of the tests that run Python scripts.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use nix::fcntl::{Flock, FlockArg};
use quantbox::app::{App, EngineConfig};
use quantbox_ops::OpError;
use serde_json::{Value, json};

/// True when the test may run (root). Without root it prints why it skips and returns
/// false — unless QUANTBOX_REQUIRE_ALL_TESTS=1 (CI), where skipping is a failure.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("QUANTBOX_REQUIRE_ALL_TESTS").as_deref() == Ok("1") {
        panic!("{test} needs root, and QUANTBOX_REQUIRE_ALL_TESTS=1 forbids skipping it");
    }
    eprintln!("skipped {test}: sandboxes with enforced limits need root");
    false
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub struct Engine {
    pub app: Option<App>,
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
    /// The provider [`Engine::create`] asks for; `None`: the default (`local`).
    pub provider: Option<&'static str>,
    /// The E2B-compatible server provider `e2b` talks to, when [`Engine::start_e2b`]
    /// started one.
    pub cloud: Option<Served>,
}

pub fn config(dir: &Path, parent: &str) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        max_sandboxes: 1000,
        pids_max: 512,
        terminate_grace: Duration::from_secs(5),
        init_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_quantbox"))),
        cgroup_parent: parent.to_owned(),
        warm_pool: 2,
        autoscale_interval: Duration::from_millis(500),
        metrics_interval: Duration::from_secs(1),
        gpu_device_dir: Some(PathBuf::from("/dev")),
    }
}

impl Engine {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut EngineConfig)) -> Self {
        Self::start_configured(tweak, quantbox_e2b::client::Config::from_env()).await
    }

    /// An engine whose sandboxes ([`Engine::create`]) run on provider `e2b`, over the wire,
    /// in a real E2B-compatible cloud: a `quantbox serve` with its E2B API on, started
    /// here and stopped with the engine.
    pub async fn start_e2b() -> Self {
        const KEY: &str = "e2b_0123456789abcdef0123456789abcdef0c10ed00";
        let cloud = Served::start(
            "e2bcloud",
            &[
                ("QUANTBOX_E2B_LISTEN", "127.0.0.1:0"),
                ("QUANTBOX_E2B_API_KEY", KEY),
            ],
        );
        let url = cloud.e2b_url.clone().expect("the cloud prints its E2B URL");
        let cfg = quantbox_e2b::client::Config::single_server(Some(KEY.into()), &url);
        let mut e = Self::start_configured(|c| c.warm_pool = 0, cfg).await;
        e.provider = Some("e2b");
        e.cloud = Some(cloud);
        e
    }

    /// An engine whose provider `e2b` is configured by `e2b`, not by the environment.
    pub async fn start_configured(
        tweak: impl FnOnce(&mut EngineConfig),
        e2b: quantbox_e2b::client::Config,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("qbt")
            .tempdir_in("/tmp")
            .unwrap();
        let parent = format!(
            "qbtest-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut cfg = config(dir.path(), &parent);
        tweak(&mut cfg);
        let app = App::open_with(&cfg, e2b).await.expect("engine starts");
        Self {
            app: Some(app),
            dir,
            cgroup_parent: parent,
            provider: None,
            cloud: None,
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().unwrap()
    }

    pub async fn call(&self, tool: &str, args: Value) -> Result<Value, OpError> {
        self.app().ops.call(tool, args).await
    }

    /// Creates a sandbox (128 MB unless `args` says otherwise) and returns its id.
    pub async fn create(&self, args: Value) -> String {
        let mut a = json!({"name": "t", "memory_mb": 128});
        if let Some(p) = self.provider {
            a["provider"] = json!(p);
        }
        for (k, v) in args.as_object().cloned().unwrap_or_default() {
            a[k] = v;
        }
        let out = self
            .call("create_e2b_sandbox", a)
            .await
            .expect("sandbox is created");
        out["sandbox_id"].as_str().unwrap().to_owned()
    }

    /// Runs a shell line as `user` (`"user"` or `"root"`) and returns the whole result.
    pub async fn sh_as(&self, id: &str, cmd: &str, user: &str) -> Value {
        self.call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": cmd, "timeout": 60, "user": user}),
        )
        .await
        .unwrap_or_else(|e| panic!("exec of {cmd:?} as {user} failed: {e}"))
    }

    /// Runs a shell line as `user` that must succeed and returns its stdout.
    pub async fn ok_as(&self, id: &str, cmd: &str, user: &str) -> String {
        let r = self.sh_as(id, cmd, user).await;
        assert_eq!(r["exit_code"], 0, "{cmd:?} as {user} failed: {r:#}");
        r["stdout"].as_str().unwrap().to_owned()
    }

    /// Runs python code as `user`; returns (exit code, stdout + stderr).
    pub async fn py_as(&self, id: &str, code: &str, user: &str) -> (i64, String) {
        let r = self
            .call(
                "execute_e2b_process",
                json!({"sandbox_id": id, "command": "python3", "args": ["-c", code], "timeout": 60, "user": user}),
            )
            .await
            .unwrap_or_else(|e| panic!("python failed to start: {e}"));
        (
            r["exit_code"].as_i64().unwrap_or(-1),
            format!(
                "{}{}",
                r["stdout"].as_str().unwrap(),
                r["stderr"].as_str().unwrap()
            ),
        )
    }

    /// Runs a shell line as the sandbox user and returns the whole result.
    pub async fn sh(&self, id: &str, cmd: &str) -> Value {
        self.sh_as(id, cmd, "user").await
    }

    /// Runs a shell line as the sandbox user that must succeed and returns its stdout.
    pub async fn ok(&self, id: &str, cmd: &str) -> String {
        self.ok_as(id, cmd, "user").await
    }

    /// Runs python code as the sandbox user; returns (exit code, stdout + stderr).
    pub async fn py(&self, id: &str, code: &str) -> (i64, String) {
        self.py_as(id, code, "user").await
    }

    pub async fn terminate(&self, id: &str) {
        self.call(
            "terminate_e2b_sandbox",
            json!({"sandbox_id": id, "force": true}),
        )
        .await
        .expect("terminate");
    }

    pub async fn status(&self, id: &str) -> Value {
        self.call("get_e2b_sandbox_status", json!({"sandbox_id": id}))
            .await
            .expect("status")
    }

    pub fn init_pid(&self, id: &str) -> Option<i32> {
        self.app()
            .local
            .init_pid(&quantbox_sandbox::SandboxId::parse(id).unwrap())
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.app()
            .local
            .sandbox_dir(&quantbox_sandbox::SandboxId::parse(id).unwrap())
            .expect("the sandbox runs")
    }

    /// Everything of any sandbox still on the host: cgroups, directories, sockets,
    /// processes in our cgroups, and mount namespaces that still show our files.
    pub fn leftovers(&self) -> Vec<String> {
        let pooled = self.app().local.pooled_slots();
        leftovers(
            self.dir.path(),
            &self.cgroup_parent,
            &self.app().local.cgroup_children(),
        )
        .into_iter()
        .filter(|l| !pooled.iter().any(|p| l.contains(p.as_str())))
        .collect()
    }

    /// Terminates every active sandbox and asserts nothing is left.
    /// Terminates every active sandbox, ends the warm pool, and asserts nothing is left.
    pub async fn shutdown(mut self) {
        let list = self
            .call("list_e2b_sandboxes", json!({"status_filter": "running"}))
            .await
            .unwrap();
        for sb in list["sandboxes"].as_array().unwrap() {
            self.terminate(sb["sandbox_id"].as_str().unwrap()).await;
        }
        self.app().local.drain_pool().await;
        let left = self.leftovers();
        assert!(left.is_empty(), "left on the host: {left:#?}");
        self.cleanup();
        self.app = None;
    }

    fn cleanup(&self) {
        if let Some(app) = &self.app
            && let Some(cg) = app.local.cgroups()
        {
            clean(cg);
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Best effort after a failed test: kill what is left and remove our cgroups.
        self.cleanup();
    }
}

pub fn leftovers(data_dir: &Path, cgroup_parent: &str, cgroups: &[String]) -> Vec<String> {
    let mut out: Vec<String> = cgroups.iter().map(|c| format!("cgroup {c}")).collect();
    for sub in ["local/sandboxes", "local/run"] {
        if let Ok(rd) = std::fs::read_dir(data_dir.join(sub)) {
            for e in rd.flatten() {
                out.push(format!("file {}", e.path().display()));
            }
        }
    }
    let needle = data_dir.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let parent = format!("/{cgroup_parent}/");
        if let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            && let Some(line) = cg.lines().find(|l| l.contains(&parent))
        {
            out.push(format!("process {pid} in cgroup {line}"));
            continue;
        }
        if let Ok(mi) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            && let Some(line) = mi.lines().find(|l| l.contains(&needle))
        {
            out.push(format!("process {pid} has a mount of our files: {line}"));
        }
    }
    out
}

/// Waits until `f` is true, polling, for at most `within`.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Reads the first line a started `quantbox serve` prints and returns its URL.
pub fn serving_url(child: &mut std::process::Child) -> String {
    serving_urls(child, false).0
}

/// The URLs a started `quantbox serve` prints: REST's, and with `e2b` the E2B API's
/// (its second line).
pub fn serving_urls(child: &mut std::process::Child, e2b: bool) -> (String, Option<String>) {
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut url_of = |what: &str| {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("the server did not start ({what}): {line:?}"))
            .to_owned()
    };
    let url = url_of("REST");
    let e2b_url = e2b.then(|| url_of("E2B API"));
    (url, e2b_url)
}

/// Kills whatever is left in the cgroups under `parent` and removes them.
pub fn clean_cgroups(parent: &str) {
    if let Ok(cg) = quantbox_sandbox_local::cgroup::Cgroups::detect(parent) {
        clean(&cg);
    }
}

fn clean(cg: &quantbox_sandbox_local::cgroup::Cgroups) {
    for name in cg.children() {
        if let Some(c) = cg.open(&name) {
            let _ = c.kill_all();
            let _ = c.remove();
        }
    }
    let _ = cg.remove_parents();
}

/// A real `quantbox serve` child listening on `127.0.0.1:0`, on a data directory and
/// cgroup parent of its own; stopped with SIGTERM by [`Served::stop`], or, after a
/// failure, by its drop, which also kills what is left in its cgroups.
pub struct Served {
    child: Option<Child>,
    /// `http://host:port`, as the server printed it.
    pub url: String,
    /// The E2B API's `http://host:port`, when `env` set `QUANTBOX_E2B_LISTEN`.
    pub e2b_url: Option<String>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub cgroup_parent: String,
    pub http: reqwest::Client,
}

impl Served {
    /// A server on a new temporary data directory and the cgroup parent
    /// `qbtest-{tag}-{pid}`; `env` is set on top of what [`Served::start_in`] sets.
    pub fn start(tag: &str, env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("qbt")
            .tempdir_in("/tmp")
            .unwrap();
        let parent = format!("qbtest-{tag}-{}", std::process::id());
        let mut served = Self::start_in(tmp.path(), &parent, env);
        served._tmp = Some(tmp);
        served
    }

    /// A server on `data_dir` (which outlives it) and `cgroup_parent`. It logs warnings
    /// only, and inherits no API key, data directory or metrics interval, unless `env`
    /// sets them.
    pub fn start_in(data_dir: &Path, cgroup_parent: &str, env: &[(&str, &str)]) -> Self {
        let e2b = env.iter().any(|(k, _)| *k == "QUANTBOX_E2B_LISTEN");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quantbox"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if !e2b {
            cmd.args(["--e2b-listen", "off"]);
        }
        cmd.arg("--data-dir")
            .arg(data_dir)
            .env("QUANTBOX_CGROUP_PARENT", cgroup_parent)
            .env("QUANTBOX_LOG", "warn")
            .env_remove("QUANTBOX_API_KEY")
            .env_remove("QUANTBOX_DATA_DIR")
            .env_remove("QUANTBOX_METRICS_INTERVAL_S");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (url, e2b_url) = serving_urls(&mut child, e2b);
        Self {
            child: Some(child),
            url,
            e2b_url,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            cgroup_parent: cgroup_parent.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A REST call: (HTTP status, JSON body).
    pub async fn rest(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, _, text) = self.rest_raw(method, path, body).await;
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
        (status, v)
    }

    /// A REST call: (HTTP status, content type, body text).
    pub async fn rest_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String, String) {
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.url),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (status, ctype, resp.text().await.unwrap())
    }

    /// SIGTERM, as a service manager stops it; waits for it and requires success.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("the server runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "the server exited with {status}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let end = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Sandboxes outlive the server: after a failed test, end them here.
        clean_cgroups(&self.cgroup_parent);
    }
}

/// The workspace root, where `target/` and `tests/python/` are.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Skips the test, or fails it where every test must run (QUANTBOX_REQUIRE_ALL_TESTS=1).
pub fn skip(reason: &str) {
    if std::env::var("QUANTBOX_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1") {
        panic!("QUANTBOX_REQUIRE_ALL_TESTS=1, but this test cannot run: {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// The python of `target/{venv}`, a virtualenv that holds exactly the packages pinned in
/// `requirements` (a path relative to the workspace root). It is (re)built when it is
/// missing or when the requirements file or the Python version changed (a stamp file in it
/// records both), under the file lock `target/{venv}.lock` so that concurrent test runs do
/// not build it twice; a build that fails is removed.
///
/// `None` when it cannot be made here (no python3, no venv module, no network): the test
/// was [`skip`]ped and must return, or, under QUANTBOX_REQUIRE_ALL_TESTS=1, it failed.
/// A virtualenv that was made but is wrong (say, the requirements file does not pin a
/// transitive dependency) always fails the test.
pub fn python_venv(venv: &str, requirements: &str) -> Option<PathBuf> {
    match ensure_venv(&workspace_root(), venv, requirements) {
        Ok(python) => Some(python),
        Err(VenvError::Unavailable(reason)) => {
            skip(&format!(
                "cannot create the Python virtualenv target/{venv}: {reason}"
            ));
            None
        }
        Err(VenvError::Broken(e)) => panic!("the Python virtualenv target/{venv}: {e:#}"),
    }
}

const VENV_STAMP: &str = ".qb-requirements-stamp";

/// Why the virtualenv is not there.
enum VenvError {
    /// It cannot be made here (no python3, no venv module, no network): a skip.
    Unavailable(String),
    /// It was made but is wrong: always a failure.
    Broken(anyhow::Error),
}

impl From<anyhow::Error> for VenvError {
    fn from(e: anyhow::Error) -> Self {
        Self::Broken(e)
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Package names as pip compares them (PEP 503).
pub fn normalize(req: &str) -> String {
    let (name, version) = req.split_once("==").unwrap_or((req, ""));
    let name: String = name
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect();
    format!("{name}=={}", version.trim())
}

fn output_text(o: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_quiet(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))
}

/// Makes sure `target/{venv}` holds exactly the pinned requirements; returns its python.
/// The file lock `target/{name}.lock`, held while `target/{name}` is checked or built, so
/// that concurrent test runs do not build it twice.
pub fn target_lock(root: &Path, name: &str) -> anyhow::Result<Flock<fs::File>> {
    let target = root.join("target");
    fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let lock_path = target.join(format!("{name}.lock"));
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", lock_path.display()))
}

fn ensure_venv(root: &Path, venv: &str, requirements: &str) -> Result<PathBuf, VenvError> {
    let requirements = root.join(requirements);
    let reqs = fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let _lock = target_lock(root, venv)?;
    let venv = root.join("target").join(venv);
    let python = venv.join("bin/python");

    let version = match run_quiet(Command::new("python3").arg("--version")) {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Ok(o) => {
            return Err(VenvError::Unavailable(format!(
                "`python3 --version` failed: {}",
                output_text(&o)
            )));
        }
        Err(e) => return Err(VenvError::Unavailable(format!("no python3: {e:#}"))),
    };
    let stamp = format!(
        "{} fnv1a64 {:016x}\n{version}\n",
        requirements
            .file_name()
            .unwrap_or(requirements.as_os_str())
            .to_string_lossy(),
        fnv1a(reqs.as_bytes())
    );
    if python.exists() && fs::read_to_string(venv.join(VENV_STAMP)).is_ok_and(|s| s == stamp) {
        return Ok(python);
    }

    let t = Instant::now();
    eprintln!(
        "building {} ({version}) from {}",
        venv.display(),
        requirements.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv)
            .with_context(|| format!("removing the stale {}", venv.display()))?;
    }
    let made = (|| -> Result<(), VenvError> {
        let o = run_quiet(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .map_err(|e| VenvError::Unavailable(format!("{e:#}")))?;
        if !o.status.success() {
            return Err(VenvError::Unavailable(format!(
                "`python3 -m venv` failed: {}",
                output_text(&o)
            )));
        }
        let o = run_quiet(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--progress-bar",
                    "off",
                    "-q",
                    "-r",
                ])
                .arg(&requirements),
        )
        .map_err(|e| VenvError::Unavailable(format!("{e:#}")))?;
        if !o.status.success() {
            return Err(VenvError::Unavailable(format!(
                "`pip install -r {}` failed (no network?): {}",
                requirements.display(),
                output_text(&o)
            )));
        }
        // Every installed package must be one of the pins: a requirements file that misses
        // a transitive dependency would let pip pick its version.
        let o = run_quiet(Command::new(&python).args([
            "-m",
            "pip",
            "freeze",
            "--disable-pip-version-check",
        ]))?;
        if !o.status.success() {
            return Err(anyhow!("`pip freeze` failed: {}", output_text(&o)).into());
        }
        let pinned: Vec<String> = reqs
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(normalize)
            .collect();
        let unpinned: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter(|l| !pinned.contains(&normalize(l)))
            .map(str::to_owned)
            .collect();
        if !unpinned.is_empty() {
            return Err(anyhow!(
                "{} does not pin everything that got installed (with {version}): {unpinned:?}; \
                 regenerate it from `pip freeze` of a fresh venv",
                requirements.display()
            )
            .into());
        }
        fs::write(venv.join(VENV_STAMP), &stamp).context("writing the stamp")?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&venv);
        return Err(e);
    }
    eprintln!(
        "built {} in {:.1} s",
        venv.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(python)
}

/// Waits for a script `child` until `timeout`; then SIGINT (a script cleans up), and
/// SIGKILL to its process group a minute later. `None` when it had to be stopped.
pub fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let start = Instant::now();
    let pid = Pid::from_raw(child.id() as i32);
    let mut interrupted = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((!interrupted).then_some(status));
        }
        let elapsed = start.elapsed();
        if elapsed > timeout && !interrupted {
            eprintln!("the script ran past {timeout:?}; interrupting it");
            let _ = kill(pid, Signal::SIGINT);
            interrupted = true;
        }
        if elapsed > timeout + Duration::from_secs(60) {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
