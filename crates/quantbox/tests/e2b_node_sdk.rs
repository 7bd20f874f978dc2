//! quantbox's E2B API through E2B's official JavaScript SDK: runs
//! `tests/node/test_e2b_sdk.mjs` with the SDK pinned in `tests/node/package.json` and
//! `package-lock.json` (`e2b@2.51.0`) against a real `quantbox serve --e2b-listen`.
//!
//! The node modules live in `target/qb-node`; they are (re)installed with `npm ci` when
//! missing or when `package.json`, `package-lock.json` or the Node version changed (a
//! stamp file records them), under the file lock `target/qb-node.lock` so that concurrent
//! test runs do not install them twice.
//!
//! Needs root (sandboxes) and, the first time, `node`, `npm` and network (the npm
//! registry). Without them the test says why and passes — unless
//! `QUANTBOX_REQUIRE_ALL_TESTS=1` (CI), where it fails.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde_json::Value;

use common::{Served, fnv1a, skip, wait_with_deadline};

/// The script's own checks time out sooner; this only guards against a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where the pinned node modules are installed, under `target/`.
const NODE_DIR: &str = "qb-node";
const STAMP: &str = ".qb-node-stamp";

/// Why the node modules are not there.
enum NodeError {
    /// They cannot be installed here (no node or npm, no network): a skip.
    Unavailable(String),
    /// They were installed but are wrong, or the pins are broken: always a failure.
    Broken(anyhow::Error),
}

impl From<anyhow::Error> for NodeError {
    fn from(e: anyhow::Error) -> Self {
        Self::Broken(e)
    }
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

/// The version a tool prints for `--version`, or why it cannot run.
fn tool_version(tool: &str) -> Result<String, NodeError> {
    match run_quiet(Command::new(tool).arg("--version")) {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Ok(o) => Err(NodeError::Unavailable(format!(
            "`{tool} --version` failed: {}",
            output_text(&o)
        ))),
        Err(e) => Err(NodeError::Unavailable(format!("no {tool}: {e:#}"))),
    }
}

/// An `npm ci` failure that comes from the network rather than from the pins.
fn is_network_failure(text: &str) -> bool {
    [
        "ENOTFOUND",
        "EAI_AGAIN",
        "ECONNREFUSED",
        "ECONNRESET",
        "ETIMEDOUT",
        "ENETUNREACH",
        "EHOSTUNREACH",
        "network",
        "socket hang up",
        "certificate",
        "proxy",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Makes sure `target/qb-node` holds exactly what `tests/node/package-lock.json` pins;
/// returns that directory (its `node_modules` resolves `e2b`).
fn ensure_node_modules(root: &Path) -> Result<PathBuf, NodeError> {
    let src = root.join("tests/node");
    let manifest = fs::read(src.join("package.json")).context("reading tests/node/package.json")?;
    let lock = fs::read(src.join("package-lock.json"))
        .context("reading tests/node/package-lock.json (generate it with `npm install --package-lock-only` in tests/node)")?;
    let pinned: Value =
        serde_json::from_slice(&manifest).context("tests/node/package.json is not JSON")?;
    let want = pinned["dependencies"]["e2b"]
        .as_str()
        .ok_or_else(|| anyhow!("tests/node/package.json has no dependency on e2b"))?
        .to_owned();
    if !want.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(anyhow!("tests/node/package.json must pin e2b exactly, not {want:?}").into());
    }

    let _lock = common::target_lock(root, NODE_DIR)?;
    let target = root.join("target");

    let node = tool_version("node")?;
    let npm = tool_version("npm")?;
    let dir = target.join(NODE_DIR);
    let installed = dir.join("node_modules/e2b/package.json");
    let stamp = format!(
        "package.json fnv1a64 {:016x}\npackage-lock.json fnv1a64 {:016x}\nnode {node}\n",
        fnv1a(&manifest),
        fnv1a(&lock)
    );
    if installed.exists() && fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == stamp) {
        return Ok(dir);
    }

    let t = Instant::now();
    eprintln!(
        "installing e2b@{want} into {} (node {node}, npm {npm})",
        dir.display()
    );
    if dir.exists() {
        fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the stale {}", dir.display()))?;
    }
    let made = (|| -> Result<(), NodeError> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("package.json"), &manifest).context("copying package.json")?;
        fs::write(dir.join("package-lock.json"), &lock).context("copying package-lock.json")?;
        let o = run_quiet(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel", "error"])
                .current_dir(&dir)
                .env("npm_config_update_notifier", "false"),
        )
        .map_err(|e| NodeError::Unavailable(format!("{e:#}")))?;
        if !o.status.success() {
            let text = output_text(&o);
            return Err(if is_network_failure(&text) {
                NodeError::Unavailable(format!("`npm ci` failed (no network?): {text}"))
            } else {
                NodeError::Broken(anyhow!(
                    "`npm ci` in {} failed: {text}\n(is tests/node/package-lock.json in step with package.json? \
                     regenerate it with `npm install --package-lock-only` in tests/node)",
                    dir.display()
                ))
            });
        }
        let got: Value = serde_json::from_slice(
            &fs::read(&installed).with_context(|| format!("reading {}", installed.display()))?,
        )
        .context("the installed e2b/package.json is not JSON")?;
        if got["version"].as_str() != Some(want.as_str()) {
            return Err(anyhow!(
                "npm installed e2b {} but tests/node/package.json pins {want}",
                got["version"]
            )
            .into());
        }
        // `npm ci` never rewrites the lock; if it did, the pins would not be reproducible.
        if fs::read(dir.join("package-lock.json")).context("re-reading the lock")? != lock {
            return Err(anyhow!(
                "`npm ci` changed package-lock.json: the lock is not reproducible"
            )
            .into());
        }
        fs::write(dir.join(STAMP), &stamp).context("writing the stamp")?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    eprintln!(
        "installed {} in {:.1} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// `e2b_` and 32 random hex digits.
fn random_key() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("e2b_{hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2b_js_sdk_against_quantbox() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (sandboxes)");
        return;
    }
    let root = common::workspace_root();
    let t = Instant::now();
    let node_dir = match tokio::task::spawn_blocking({
        let root = root.clone();
        move || ensure_node_modules(&root)
    })
    .await
    .unwrap()
    {
        Ok(dir) => dir,
        Err(NodeError::Unavailable(reason)) => {
            skip(&format!(
                "cannot install the pinned E2B JS SDK into target/{NODE_DIR}: {reason}"
            ));
            return;
        }
        Err(NodeError::Broken(e)) => panic!("the node modules in target/{NODE_DIR}: {e:#}"),
    };
    let install_s = t.elapsed().as_secs_f64();

    // The server takes only `key`: the script also sees a well-formed other key refused.
    let key = random_key();
    let wrong = random_key();
    let t = Instant::now();
    let mut served = Served::start(
        "nodesdk",
        &[
            ("QUANTBOX_E2B_LISTEN", "127.0.0.1:0"),
            ("QUANTBOX_E2B_API_KEY", &key),
        ],
    );
    let start_s = t.elapsed().as_secs_f64();
    let e2b_url = served
        .e2b_url
        .clone()
        .expect("the server prints its E2B API URL");

    let scratch = tempfile::Builder::new()
        .prefix("qb-nodesdk-")
        .tempdir()
        .expect("creating a scratch directory");
    let log_path = scratch.path().join("script-output.txt");
    let log = File::create(&log_path).expect("creating the output file");
    let script = root.join("tests/node/test_e2b_sdk.mjs");
    let t = Instant::now();
    let mut child = {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .current_dir(&node_dir)
            .env("NODE_PATH", node_dir.join("node_modules"))
            .env("E2B_API_KEY", &key)
            .env("E2B_API_URL", &e2b_url)
            .env("E2B_SANDBOX_URL", &e2b_url)
            .env("QB_REST_URL", &served.url)
            .env("QB_WRONG_API_KEY", &wrong)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("E2B_DEBUG")
            .env_remove("E2B_DOMAIN")
            .env_remove("E2B_ACCESS_TOKEN")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating a file handle"))
            .stderr(log)
            .process_group(0);
        cmd.spawn()
            .unwrap_or_else(|e| panic!("starting node {}: {e}", script.display()))
    };
    let status =
        tokio::task::spawn_blocking(move || wait_with_deadline(&mut child, SCRIPT_TIMEOUT))
            .await
            .unwrap()
            .expect("waiting for the script");
    let script_s = t.elapsed().as_secs_f64();
    let output = fs::read_to_string(&log_path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", log_path.display()));
    println!("{output}");
    println!(
        "node modules ready in {install_s:.1} s; server started in {start_s:.1} s; script ran {script_s:.1} s"
    );
    match status {
        Some(s) if s.success() => {}
        other => {
            let why = match other {
                Some(s) => format!("exited with {s}"),
                None => format!("ran past {SCRIPT_TIMEOUT:?} and was killed"),
            };
            panic!("{} {why}; its output is above", script.display());
        }
    }

    // The script killed every sandbox it made: E2B's list is empty.
    let resp = served
        .http
        .get(format!("{e2b_url}/v2/sandboxes"))
        .header("X-API-Key", &key)
        .send()
        .await
        .expect("GET /v2/sandboxes");
    assert_eq!(resp.status().as_u16(), 200);
    let left: Value = resp.json().await.expect("a JSON list");
    assert_eq!(
        left,
        serde_json::json!([]),
        "sandboxes left after the script"
    );
    served.stop();
}

#[test]
fn network_failures_are_told_apart_from_broken_pins() {
    assert!(is_network_failure(
        "npm error code ENOTFOUND\nnpm error network request to https://registry.npmjs.org/e2b failed"
    ));
    assert!(is_network_failure("npm error code EAI_AGAIN"));
    assert!(!is_network_failure(
        "npm error `npm ci` can only install packages when your package.json and package-lock.json are in sync"
    ));
    assert!(random_key().starts_with("e2b_"));
    assert_eq!(random_key().len(), 4 + 32);
    assert_ne!(random_key(), random_key());
}
