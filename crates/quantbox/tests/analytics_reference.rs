//! quantbox's performance report against the Python reference libraries: computes the
//! report of the bundled AAPL daily returns (benchmark SPX) in-process, exactly as
//! `quantbox report --returns FILE --benchmark FILE` would, and runs
//! `tests/python/test_analytics_reference.py`, which recomputes every figure that
//! `empyrical-reloaded` and `quantstats` (pinned in `tests/python/requirements-analytics.txt`)
//! define the same way as `shared/spec/metrics.md` and requires agreement to 1e-9. The
//! script prints a table (metric, ours, library and function, its value, difference,
//! verdict, or why the definitions differ) and quantstats' full-report time as
//! `quantstats_full_report_seconds=<x>`; run with `-- --nocapture` to see them.
//!
//! The virtualenv lives in `target/qb-anenv` (apart from the MCP SDK's `target/qb-pyenv`);
//! it is (re)built when it is missing or when the requirements file or the Python version
//! changed (a stamp file records both), under a file lock so that concurrent test runs do
//! not build it twice (`common::python_venv`).
//!
//! Needs python3 and, the first time, network (pip); no root. Without them the test says
//! why and passes — unless `QUANTBOX_REQUIRE_ALL_TESTS=1` (CI), where it fails.

mod common;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fnv1a, normalize};
use quantbox_ops::report::{ReportParams, offline_report};
use quantbox_trading::Bar;

/// The script takes seconds (most of it timing quantstats); this only guards against a hang.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const REQUIREMENTS: &str = "tests/python/requirements-analytics.txt";
const VENV: &str = "qb-anenv";

/// `date,return` of a symbol's adjusted close: `adj_close[i] / adj_close[i-1] - 1`, dated at
/// day i, each value with Rust's shortest round-trip formatting (parses back bit for bit).
fn returns_csv(bars: &[Bar]) -> String {
    let mut csv = String::from("date,return\n");
    for w in bars.windows(2) {
        let r = w[1].adj_close / w[0].adj_close - 1.0;
        assert!(r.is_finite(), "a non-finite return on {}", w[1].day);
        writeln!(csv, "{},{r:?}", w[1].day).expect("writing to a String");
    }
    csv
}

fn bundled_returns(symbol: &str) -> String {
    let all = quantbox_trading::market::bundled().expect("the bundled market data");
    let s = all
        .iter()
        .find(|s| s.symbol == symbol)
        .unwrap_or_else(|| panic!("no bundled symbol {symbol}"));
    assert!(s.bars.len() > 1000, "{symbol} has {} bars", s.bars.len());
    returns_csv(&s.bars)
}

#[test]
fn report_agrees_with_empyrical_and_quantstats() {
    let root = common::workspace_root();

    // Ours first: it needs no Python, and a failure here is ours whatever the venv does.
    let (aapl, spx) = (bundled_returns("AAPL"), bundled_returns("SPX"));
    let params = ReportParams {
        period_days: 0,
        periods_per_year: 252.0,
        risk_free_rate: 0.0,
        use_gpu: false,
    };
    let ours = offline_report("AAPL", &aapl, Some(("SPX", &spx)), &params)
        .unwrap_or_else(|e| panic!("our report of the bundled AAPL returns: {e:?}"))
        .report;
    assert_eq!(
        ours.period.missing, 0,
        "the bundled AAPL returns have no gaps"
    );
    assert!(ours.benchmark.is_some(), "the report has the SPX figures");
    let ours_json = serde_json::to_string_pretty(&ours).expect("serialising the report");

    let t = Instant::now();
    let Some(python) = common::python_venv(VENV, REQUIREMENTS) else {
        return;
    };
    let venv_s = t.elapsed().as_secs_f64();

    let mut scratch = tempfile::Builder::new()
        .prefix("qb-anref-")
        .tempdir()
        .expect("creating a scratch directory");
    let dir = scratch.path().to_path_buf();
    for (name, text) in [
        ("aapl.csv", aapl.as_str()),
        ("spx.csv", spx.as_str()),
        ("ours.json", ours_json.as_str()),
    ] {
        fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }
    let log_path = dir.join("script-output.txt");
    let log = File::create(&log_path).expect("creating the output file");
    let script = root.join("tests/python/test_analytics_reference.py");
    let t = Instant::now();
    let mut child = Command::new(&python)
        .arg("-u")
        .arg(&script)
        .arg("--returns")
        .arg(dir.join("aapl.csv"))
        .arg("--benchmark")
        .arg(dir.join("spx.csv"))
        .arg("--ours")
        .arg(dir.join("ours.json"))
        // No plotting backend, no cache or config written into $HOME.
        .env("MPLBACKEND", "Agg")
        .env("MPLCONFIGDIR", dir.join("mpl"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating a file handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} {}: {e}", python.display(), script.display()));
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the script") {
            break Some(s);
        }
        if t.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = fs::read_to_string(&log_path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", log_path.display()));
    eprintln!("{output}");
    eprintln!(
        "venv ready in {venv_s:.1} s; script ran {:.1} s",
        t.elapsed().as_secs_f64()
    );
    match status {
        Some(s) if s.success() => {}
        other => {
            scratch.disable_cleanup(true);
            let why = match other {
                Some(s) => format!("exited with {s}"),
                None => format!("ran past {SCRIPT_TIMEOUT:?} and was killed"),
            };
            panic!(
                "{} {why}: quantbox's report disagrees with the reference libraries, or the \
                 script failed; its output is above (the inputs and output are kept in {})",
                script.display(),
                dir.display()
            );
        }
    }
}

#[test]
fn csv_round_trips_and_helpers() {
    let day = |d| quantbox_trading::Day::from_ymd(2024, 1, d).unwrap();
    let bar = |d, adj: f64| Bar {
        day: day(d),
        open: adj,
        high: adj,
        low: adj,
        close: adj,
        adj_close: adj,
        volume: 0.0,
    };
    let csv = returns_csv(&[bar(2, 3.0), bar(3, 3.1), bar(4, 2.9)]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("date,return"));
    let (d, v) = lines.next().unwrap().split_once(',').unwrap();
    assert_eq!(d, "2024-01-03");
    assert_eq!(
        v.parse::<f64>().unwrap().to_bits(),
        (3.1f64 / 3.0 - 1.0).to_bits()
    );
    assert_eq!(lines.count(), 1);

    assert_eq!(
        normalize("typing_extensions==4.16.0"),
        normalize("typing-extensions==4.16.0")
    );
    assert_eq!(normalize("Bottleneck==1.6.0"), "bottleneck==1.6.0");
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}
