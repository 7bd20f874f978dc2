//! quantbox through the official MCP Python SDK, over stdio and streamable HTTP: runs
//! `tests/python/test_mcp_sdk.py` with the SDK pinned in `tests/python/requirements.txt`.
//!
//! The virtualenv lives in `target/qb-pyenv`; it is (re)built when it is missing or when
//! `requirements.txt` or the Python version changed (a stamp file records both), under a
//! file lock so that concurrent test runs do not build it twice (`common::python_venv`).
//!
//! Needs root (sandboxes) and, the first time, network (pip). Without them the test says
//! why and passes — unless `QUANTBOX_REQUIRE_ALL_TESTS=1` (CI), where it fails.

mod common;

use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fnv1a, normalize, skip, wait_with_deadline};

/// The script's own timeouts are shorter; this only guards against a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[test]
fn mcp_python_sdk_over_stdio_and_http() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (sandboxes)");
        return;
    }
    let root = common::workspace_root();
    let t = Instant::now();
    let Some(python) = common::python_venv("qb-pyenv", "tests/python/requirements.txt") else {
        return;
    };
    let venv_s = t.elapsed().as_secs_f64();

    let mut scratch = tempfile::Builder::new()
        .prefix("qb-pysdk-")
        .tempdir()
        .expect("creating a scratch directory");
    let log_path = scratch.path().join("script-output.txt");
    let log = File::create(&log_path).expect("creating the output file");
    let script = root.join("tests/python/test_mcp_sdk.py");
    let cgroup_parent = format!("qbtest-pysdk-{}", std::process::id());
    let t = Instant::now();
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(&python)
            .arg("-u")
            .arg(&script)
            .arg(env!("CARGO_BIN_EXE_quantbox"))
            .arg(scratch.path().join("work"))
            .env("QUANTBOX_CGROUP_PARENT", &cgroup_parent)
            .env_remove("QUANTBOX_DATA_DIR")
            .env_remove("QUANTBOX_API_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating a file handle"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {}: {e}", python.display(), script.display()))
    };
    let status = wait_with_deadline(&mut child, SCRIPT_TIMEOUT).expect("waiting for the script");
    let output = fs::read_to_string(&log_path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", log_path.display()));
    let script_s = t.elapsed().as_secs_f64();
    println!("{output}");
    println!("venv ready in {venv_s:.1} s; script ran {script_s:.1} s");
    match status {
        Some(s) if s.success() => {}
        other => {
            scratch.disable_cleanup(true);
            let why = match other {
                Some(s) => format!("exited with {s}"),
                None => format!("ran past {SCRIPT_TIMEOUT:?} and was killed"),
            };
            panic!(
                "{} {why}; its output is above (and in {}; the scratch directory is kept)",
                script.display(),
                log_path.display()
            );
        }
    }
}

#[test]
fn normalize_compares_like_pip() {
    assert_eq!(normalize("PyJWT==2.15.1"), "pyjwt==2.15.1");
    assert_eq!(
        normalize("typing_extensions==4.16.0"),
        normalize("typing-extensions==4.16.0")
    );
    assert_ne!(normalize("mcp==2.3.0"), normalize("mcp==2.3.1"));
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}
