//! quantbox through the official MCP Python SDK, over stdio and streamable HTTP: runs
//! `tests/python/test_mcp_sdk.py` with the SDK pinned in `tests/python/requirements.txt`.
//!
//! The virtualenv lives in `target/qb-pyenv`; it is (re)built when it is missing or when
//! `requirements.txt` or the Python version changed (a stamp file records both), under a
//! file lock so that concurrent test runs do not build it twice.
//!
//! Needs root (sandboxes) and, the first time, network (pip). Without them the test says
//! why and passes — unless `QUANTBOX_REQUIRE_ALL_TESTS=1` (CI), where it fails.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// The script's own timeouts are shorter; this only guards against a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const STAMP: &str = ".qb-requirements-stamp";

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn require_all() -> bool {
    std::env::var("QUANTBOX_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1")
}

/// Skips the test, or fails it where every test must run.
fn skip(reason: &str) {
    if require_all() {
        panic!("QUANTBOX_REQUIRE_ALL_TESTS=1, but this test cannot run: {reason}");
    }
    println!("skipped: {reason}");
}

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
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn output_text(o: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))
}

/// Package names as pip compares them (PEP 503).
fn normalize(req: &str) -> String {
    let (name, version) = req.split_once("==").unwrap_or((req, ""));
    let name: String = name
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect();
    format!("{name}=={}", version.trim())
}

/// Makes sure `target/qb-pyenv` holds exactly the pinned requirements; returns its python.
fn ensure_venv(root: &Path) -> Result<PathBuf, VenvError> {
    let requirements = root.join("tests/python/requirements.txt");
    let reqs = fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let target = root.join("target");
    fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let venv = target.join("qb-pyenv");
    let python = venv.join("bin/python");

    let lock_path = target.join("qb-pyenv.lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", lock_path.display()))?;

    let version = match run(Command::new("python3").arg("--version")) {
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
        "requirements.txt fnv1a64 {:016x}\n{version}\n",
        fnv1a(reqs.as_bytes())
    );
    if python.exists() && fs::read_to_string(venv.join(STAMP)).is_ok_and(|s| s == stamp) {
        return Ok(python);
    }

    let t = Instant::now();
    println!(
        "building {} ({version}) from {}",
        venv.display(),
        requirements.display()
    );
    if venv.exists() {
        fs::remove_dir_all(&venv)
            .with_context(|| format!("removing the stale {}", venv.display()))?;
    }
    let made = (|| -> Result<(), VenvError> {
        let o = run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .map_err(|e| VenvError::Unavailable(format!("{e:#}")))?;
        if !o.status.success() {
            return Err(VenvError::Unavailable(format!(
                "`python3 -m venv` failed: {}",
                output_text(&o)
            )));
        }
        let o = run(Command::new(&python)
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
            .arg(&requirements))
        .map_err(|e| VenvError::Unavailable(format!("{e:#}")))?;
        if !o.status.success() {
            return Err(VenvError::Unavailable(format!(
                "`pip install -r {}` failed (no network?): {}",
                requirements.display(),
                output_text(&o)
            )));
        }
        // Every installed package must be one of the pins: a requirements.txt that misses a
        // transitive dependency would let pip pick its version.
        let o = run(Command::new(&python).args([
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
        fs::write(venv.join(STAMP), &stamp).context("writing the stamp")?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&venv);
        return Err(e);
    }
    println!(
        "built {} in {:.1} s",
        venv.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(python)
}

/// Waits for `child` until `deadline`; then SIGINT (the script cleans up), and SIGKILL to
/// its process group a minute later.
fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
) -> Result<Option<std::process::ExitStatus>> {
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

#[test]
fn mcp_python_sdk_over_stdio_and_http() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root (sandboxes)");
        return;
    }
    let root = workspace_root();
    let t = Instant::now();
    let python = match ensure_venv(&root) {
        Ok(p) => p,
        Err(VenvError::Unavailable(reason)) => {
            skip(&format!(
                "cannot create the Python virtualenv target/qb-pyenv: {reason}"
            ));
            return;
        }
        Err(VenvError::Broken(e)) => panic!("the Python virtualenv target/qb-pyenv: {e:#}"),
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
