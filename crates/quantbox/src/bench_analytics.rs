//! `quantbox bench --suite analytics`: what the trading analytics cost. A full report
//! over ten years of real daily returns (the bundled AAPL prices, 2003–2013) against the
//! S&P 500; a thousand ten-year series at once on both cores (the AAPL returns rotated,
//! so each series is real data in a different order); execution statistics over a
//! million fills (a fixed-seed synthetic order book: no public fill data of that size
//! exists); and, in the same run, quantstats' full metrics report on the same AAPL
//! returns where its Python environment is available, with the ratio.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use quantbox_analytics::{self as an, Date, ReportConfig, Returns};
use serde_json::{Value, json};

use crate::bench::{BenchArgs, Stats, r3};

/// Ten years of daily returns.
const TEN_YEARS: usize = 2520;

pub(crate) struct AnalyticsBench {
    report_us: Stats,
    report_bench_us: Stats,
    many_ms: Stats,
    fills_ms: Stats,
    quantstats_s: Result<f64, String>,
    first: Date,
    last: Date,
}

fn aapl_and_spx() -> Result<(Returns, Returns)> {
    let data = quantbox_trading::market::bundled().context("reading the bundled market data")?;
    let series = |sym: &str| -> Result<Returns> {
        let b = data
            .iter()
            .find(|b| b.symbol == sym)
            .with_context(|| format!("{sym} is not in the bundled data"))?;
        let pts: Vec<(Date, f64)> = b
            .bars
            .windows(2)
            .map(|w| {
                (
                    Date::from_unix_millis(w[1].day.start_ms()).expect("a valid day"),
                    w[1].adj_close / w[0].adj_close - 1.0,
                )
            })
            .collect();
        Returns::new(&pts).context("bundled returns")
    };
    let aapl = series("AAPL")?;
    let n = aapl.len();
    if n < TEN_YEARS {
        bail!("AAPL has {n} returns, fewer than ten years");
    }
    let from = n - TEN_YEARS;
    let aapl = Returns::from_parts(
        aapl.dates()[from..].to_vec(),
        aapl.values()[from..].to_vec(),
    )?;
    Ok((aapl, series("SPX")?))
}

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// The Python with quantstats: `QUANTBOX_ANALYTICS_PYTHON`, or the virtualenv the
/// reference test builds (`target/qb-anenv`).
fn quantstats_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QUANTBOX_ANALYTICS_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let here = std::env::current_dir().ok()?;
    here.ancestors()
        .map(|d| d.join("target/qb-anenv/bin/python"))
        .find(|p| p.exists())
}

const QUANTSTATS_TIMING: &str = r#"
import sys, time, statistics, warnings
warnings.filterwarnings("ignore")
import pandas as pd
import quantstats as qs
r = pd.read_csv(sys.argv[1], index_col=0, parse_dates=True)["return"]
b = pd.read_csv(sys.argv[2], index_col=0, parse_dates=True)["return"]
runs = int(sys.argv[3])
qs.reports.metrics(r, benchmark=b, rf=0.0, mode="full", display=False, periods_per_year=252)
times = []
for _ in range(runs):
    # quantstats caches prepared returns: every run does the whole work.
    qs.utils._PREPARE_RETURNS_CACHE.clear()
    t = time.perf_counter()
    qs.reports.metrics(r, benchmark=b, rf=0.0, mode="full", display=False, periods_per_year=252)
    times.append(time.perf_counter() - t)
print(statistics.median(times))
"#;

fn write_csv(path: &Path, r: &Returns) -> Result<()> {
    let mut s = String::from("date,return\n");
    for (d, v) in r.dates().iter().zip(r.values()) {
        s.push_str(&format!("{d},{v:?}\n"));
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn time_quantstats(aapl: &Returns, spx: &Returns, runs: usize) -> Result<f64, String> {
    let python = quantstats_python().ok_or_else(|| {
        "no Python with quantstats: run `cargo test -p quantbox --test analytics_reference` once (it builds target/qb-anenv) or set QUANTBOX_ANALYTICS_PYTHON".to_owned()
    })?;
    let dir = std::env::temp_dir().join(format!("quantbox-bench-qs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (a, b) = (dir.join("aapl.csv"), dir.join("spx.csv"));
    write_csv(&a, aapl).map_err(|e| e.to_string())?;
    write_csv(&b, spx).map_err(|e| e.to_string())?;
    let out = Command::new(&python)
        .args(["-c", QUANTSTATS_TIMING])
        .arg(&a)
        .arg(&b)
        .arg(runs.to_string())
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!(
            "quantstats failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("quantstats printed no timing: {e}"))
}

pub(crate) fn run(a: &BenchArgs) -> Result<AnalyticsBench> {
    let n = a.iterations();
    let progress = |what: &str| {
        if !a.json() {
            eprintln!("· {what}");
        }
    };
    let (aapl, spx) = aapl_and_spx()?;
    let cfg = ReportConfig::default();
    progress(&format!(
        "a full report over {TEN_YEARS} daily returns of AAPL, {n} times"
    ));
    let (mut alone, mut with_bench) = (Vec::new(), Vec::new());
    for _ in 0..n.max(100) {
        let t = Instant::now();
        std::hint::black_box(an::report(&aapl, None, &cfg)?);
        alone.push(us(t));
        let t = Instant::now();
        std::hint::black_box(an::report(&aapl, Some(&spx), &cfg)?);
        with_bench.push(us(t));
    }
    progress("1,000 strategies × 10 years, both cores");
    let many: Vec<Returns> = (0..1000)
        .map(|i| {
            let k = (i * 7) % TEN_YEARS;
            let mut v = aapl.values().to_vec();
            v.rotate_left(k);
            Returns::from_parts(aapl.dates().to_vec(), v).expect("same dates")
        })
        .collect();
    let mut many_ms = Vec::new();
    for _ in 0..(n / 10).max(10) {
        let t = Instant::now();
        std::hint::black_box(an::report_many(&many, Some(&spx), &cfg)?);
        many_ms.push(us(t) / 1000.0);
    }
    progress("execution statistics over 1,000,000 fills");
    let (orders, fills) = an::synthetic::orders_and_fills(1_000_000, 42);
    let mut fills_ms = Vec::new();
    for _ in 0..(n / 20).max(5) {
        let t = Instant::now();
        std::hint::black_box(an::execution_stats(&orders, &fills)?);
        fills_ms.push(us(t) / 1000.0);
    }
    progress("quantstats' full metrics report on the same AAPL returns (Python)");
    let quantstats_s = time_quantstats(&aapl, &spx, 5);
    Ok(AnalyticsBench {
        report_us: Stats::new(alone),
        report_bench_us: Stats::new(with_bench),
        many_ms: Stats::new(many_ms),
        fills_ms: Stats::new(fills_ms),
        quantstats_s,
        first: aapl.first_date(),
        last: aapl.last_date(),
    })
}

impl AnalyticsBench {
    fn ratio(&self) -> Option<f64> {
        self.quantstats_s
            .as_ref()
            .ok()
            .map(|q| q * 1e6 / self.report_bench_us.pct(0.5))
    }

    pub(crate) fn json(&self) -> Value {
        let st = |s: &Stats, unit: &str| json!({"n": s.len(), format!("p50_{unit}"): r3(s.pct(0.5)), format!("p95_{unit}"): r3(s.pct(0.95)), format!("mean_{unit}"): r3(s.mean())});
        json!({
            "data": format!("AAPL daily returns {} to {} ({TEN_YEARS}), SPX benchmark", self.first, self.last),
            "report_10y": st(&self.report_us, "us"),
            "report_10y_with_benchmark": st(&self.report_bench_us, "us"),
            "report_1000_strategies_10y": st(&self.many_ms, "ms"),
            "execution_1m_fills": st(&self.fills_ms, "ms"),
            "quantstats_full_report_s": match &self.quantstats_s {
                Ok(s) => json!(s),
                Err(why) => json!({"available": false, "reason": why}),
            },
            "quantstats_over_quantbox": self.ratio(),
        })
    }
}

pub(crate) fn print(a: &BenchArgs, m: &AnalyticsBench) -> Result<()> {
    if a.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"analytics": m.json()}))?
        );
        return Ok(());
    }
    let row = |name: &str, s: &Stats, unit: &str, target: &str| {
        println!(
            "{name:<48} {:>8.1} {:>8.1} {:>8.1} {unit:<3} {target}",
            s.pct(0.5),
            s.pct(0.95),
            s.mean()
        );
    };
    println!(
        "\n{:<48} {:>8} {:>8} {:>8}",
        "analytics", "p50", "p95", "mean"
    );
    row(
        "full report, 10 years of daily returns",
        &m.report_us,
        "µs",
        "p50 <= 100 µs",
    );
    row(
        "  with the S&P 500 as benchmark",
        &m.report_bench_us,
        "µs",
        "",
    );
    row(
        "1,000 strategies × 10 years (2 cores)",
        &m.many_ms,
        "ms",
        "p50 <= 100 ms",
    );
    row(
        "execution analytics, 1,000,000 fills",
        &m.fills_ms,
        "ms",
        "p50 <= 200 ms",
    );
    match (&m.quantstats_s, m.ratio()) {
        (Ok(q), Some(ratio)) => println!(
            "quantstats 0.0.86 full metrics report on the same data: {:.1} ms (median of 5) — {ratio:.0}× the quantbox report with benchmark",
            q * 1000.0
        ),
        (Err(why), _) => println!("quantstats: not measured: {why}"),
        (Ok(_), None) => {}
    }
    println!(
        "data: AAPL daily returns {} to {} ({TEN_YEARS} returns), SPX; the 1,000 series are its returns rotated; the fills are synthetic (fixed seed)",
        m.first, m.last
    );
    Ok(())
}
