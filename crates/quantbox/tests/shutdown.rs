//! `quantbox mcp` and `quantbox serve` end cleanly however they are ended: stdin closed
//! after or before the client initialized, SIGTERM mid-session, or SIGTERM at once, while
//! the warm pool is still filling. The warm pool is drained each time: no cgroup,
//! process, directory or socket of a sandbox is left on the host.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use quantbox_sandbox_local::cgroup::Cgroups;

/// How the session ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// The client initializes, then closes stdin.
    AfterInitialize,
    /// The client closes stdin without a word.
    BeforeInitialize,
    /// The process is sent SIGTERM mid-session.
    Sigterm,
    /// The process is sent SIGTERM as soon as the first parked sandbox's cgroup exists.
    EarlySigterm,
}

/// Which server.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Mcp,
    Serve,
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn session(mode: Mode, end: End) {
    let dir = tempfile::Builder::new()
        .prefix("qbmcp")
        .tempdir_in("/tmp")
        .unwrap();
    let parent = format!("qbtest-shutdown-{}-{mode:?}-{end:?}", std::process::id());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quantbox"));
    match mode {
        Mode::Mcp => cmd.arg("mcp"),
        Mode::Serve => cmd.args(["serve", "--listen", "127.0.0.1:0", "--e2b-listen", "off"]),
    };
    let mut child = cmd
        .arg("--data-dir")
        .arg(dir.path())
        .env("QUANTBOX_CGROUP_PARENT", &parent)
        .env("QUANTBOX_WARM_POOL", "2")
        .env_remove("QUANTBOX_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cgroups = Cgroups::detect(&parent).unwrap();
    // The pool is filling (one parked sandbox's cgroup) or full (two).
    let want = if matches!(end, End::EarlySigterm) {
        1
    } else {
        2
    };
    let end_by = Instant::now() + Duration::from_secs(30);
    while cgroups.children().len() < want && Instant::now() < end_by {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        cgroups.children().len() >= want,
        "{mode:?} {end:?}: the warm pool did not fill"
    );
    let mut stdin = child.stdin.take().unwrap();
    match end {
        End::AfterInitialize => {
            let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
            writeln!(stdin, "{init}").unwrap();
            writeln!(
                stdin,
                r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
            )
            .unwrap();
            drop(stdin);
        }
        End::BeforeInitialize => drop(stdin),
        End::Sigterm | End::EarlySigterm => {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
            // stdin stays open: only the signal ends the session.
            std::mem::forget(stdin);
        }
    }
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let left = common::leftovers(dir.path(), &parent, &cgroups.children());
    // Clean up before asserting, so that a failure leaves nothing either.
    for name in cgroups.children() {
        if let Some(c) = cgroups.open(&name) {
            let _ = c.kill_all();
            let _ = c.remove();
        }
    }
    let _ = cgroups.remove_parents();
    let status =
        status.unwrap_or_else(|| panic!("{mode:?} {end:?}: quantbox did not exit in 20 s"));
    match end {
        End::BeforeInitialize => assert!(
            !status.success(),
            "a client gone before initializing is an error"
        ),
        _ => assert!(status.success(), "{mode:?} {end:?}: exit {status}"),
    }
    assert!(
        left.is_empty(),
        "{mode:?} {end:?}: left on the host: {left:#?}"
    );
}

#[test]
fn mcp_stdio_drains_its_warm_pool_however_the_session_ends() {
    if !common::require_root("mcp_stdio_drains_its_warm_pool_however_the_session_ends") {
        return;
    }
    for end in [
        End::AfterInitialize,
        End::BeforeInitialize,
        End::Sigterm,
        End::EarlySigterm,
    ] {
        session(Mode::Mcp, end);
    }
}

#[test]
fn serve_drains_its_warm_pool_on_sigterm_even_at_once() {
    if !common::require_root("serve_drains_its_warm_pool_on_sigterm_even_at_once") {
        return;
    }
    session(Mode::Serve, End::Sigterm);
    // The early signal races the server's start-up; a few rounds make a regression show.
    for _ in 0..5 {
        session(Mode::Serve, End::EarlySigterm);
    }
}
