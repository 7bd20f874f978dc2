//! quantbox through E2B's official Python SDK, unchanged: runs
//! `tests/python/test_e2b_sdk.py` (SDK pinned in `tests/python/requirements-e2b.txt`,
//! virtualenv `target/qb-e2b-pyenv`) against two real `quantbox serve` processes with
//! their E2B API on — one accepting any key of E2B's form (loopback, no key configured),
//! one accepting exactly one key — pointed at by `E2B_API_URL` and `E2B_SANDBOX_URL`.
//!
//! Needs root (sandboxes) and, the first time, network (pip). Without them the test says
//! why and passes — unless `QUANTBOX_REQUIRE_ALL_TESTS=1` (CI), where it fails.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Served, skip, wait_with_deadline};

/// The script's checks have their own timeouts; this only guards against a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

#[test]
fn e2b_python_sdk_against_quantbox() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (sandboxes)");
        return;
    }
    let Some(python) = common::python_venv("qb-e2b-pyenv", "tests/python/requirements-e2b.txt")
    else {
        return;
    };
    let keyed_key = "e2b_0123456789abcdef0123456789abcdef01234567";
    let open = Served::start("e2bpy", &[("QUANTBOX_E2B_LISTEN", "127.0.0.1:0")]);
    let keyed = Served::start(
        "e2bpyk",
        &[
            ("QUANTBOX_E2B_LISTEN", "127.0.0.1:0"),
            ("QUANTBOX_E2B_API_KEY", keyed_key),
        ],
    );
    let script = common::workspace_root().join("tests/python/test_e2b_sdk.py");
    let mut child = Command::new(&python)
        .arg("-u")
        .arg(&script)
        .env("QB_E2B_URL", open.e2b_url.as_deref().unwrap())
        .env("QB_REST_URL", &open.url)
        .env("QB_KEYED_E2B_URL", keyed.e2b_url.as_deref().unwrap())
        .env("QB_KEYED_KEY", keyed_key)
        .env_remove("E2B_API_KEY")
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting python");
    let status = wait_with_deadline(&mut child, SCRIPT_TIMEOUT).unwrap();
    drop(keyed);
    drop(open);
    match status {
        Some(s) => assert!(
            s.success(),
            "E2B's Python SDK checks failed ({s}); see above"
        ),
        None => panic!("the E2B SDK script ran past {SCRIPT_TIMEOUT:?}"),
    }
}
