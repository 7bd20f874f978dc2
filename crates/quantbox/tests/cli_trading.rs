//! The trading verbs of the CLI against a real `quantbox serve`: `import` (and a bad row
//! that changes nothing), `report` in server mode (its JSON is the route's, `--html`
//! writes the tearsheet) and offline (`--returns FILE`: the same figures with no server),
//! `analytics execution` over imported orders and fills, `strategy health|list`,
//! `market symbols`, and the refusals (clap's, and the server's `not_found`).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::Served;
use serde_json::Value;

/// Runs `quantbox ARGS` (no inherited URL or key): (exit code, stdout, stderr).
async fn quantbox(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_quantbox"))
            .args(args)
            .env_remove("QUANTBOX_URL")
            .env_remove("QUANTBOX_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("quantbox {args:?} did not finish in 60 s"))
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `quantbox ARGS --url URL`, which must succeed; returns stdout.
async fn ok(url: &str, args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.extend(["--url", url]);
    let (code, out, err) = quantbox(&a).await;
    assert_eq!(code, 0, "quantbox {a:?}\nstdout: {out}\nstderr: {err}");
    out
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// 300 daily returns from 2020-01-01, deterministic, between -0.6 % and +0.8 %.
fn returns_csv() -> String {
    let mut s = String::from("date,return\n");
    let start = 18_262; // 2020-01-01 in days since the epoch
    for i in 0..300i64 {
        let (y, m, d) = civil(start + i);
        let r = 0.001 * (((i * 7) % 15) - 6) as f64;
        s.push_str(&format!("{y:04}-{m:02}-{d:02},{r}\n"));
    }
    s
}

/// Days since 1970-01-01 as (year, month, day).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn without_elapsed(mut v: Value) -> Value {
    v["compute"]
        .as_object_mut()
        .expect("a compute object")
        .remove("elapsed_ms")
        .expect("compute.elapsed_ms");
    v
}

const ORDERS: &str = "\
order_id,symbol,side,quantity,order_type,limit_price,arrival_price,submit_time,ack_time,state,reject_reason
o1,AAPL,buy,100,market,,150.00,2024-01-02T14:30:00Z,2024-01-02T14:30:00.020Z,filled,
o2,AAPL,sell,50,limit,151.00,150.50,2024-01-02T15:00:00Z,2024-01-02T15:00:00.035Z,filled,
o3,MSFT,buy,10,market,,300.00,2024-01-02T15:30:00Z,,rejected,insufficient buying power
o4,MSFT,buy,20,market,,301.00,2024-01-02T16:00:00Z,2024-01-02T16:00:00.050Z,partially_filled,
";

const FILLS: &str = "\
order_id,time,quantity,price,fee
o1,2024-01-02T14:30:01Z,60,150.02,0.50
o1,2024-01-02T14:30:02Z,40,150.05,0.40
o2,2024-01-02T15:00:05Z,50,151.00,0.30
o4,2024-01-02T16:00:01Z,5,301.10,0.10
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trading_commands_against_a_real_server() {
    if !common::require_root("trading_commands_against_a_real_server") {
        return;
    }
    let srv = Served::start("ctr", &[("QUANTBOX_WARM_POOL", "0")]);
    let url = srv.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let name = "alpha";
    let returns = write(dir.path(), "alpha.csv", &returns_csv());

    // Import: the server's message with the row count.
    let out = ok(url, &["import", "returns", &returns, "--strategy", name]).await;
    assert!(out.contains("imported 300 returns point(s)"), "{out}");
    assert!(out.contains("from 2020-01-01 to 2020-10-26"), "{out}");
    let out = ok(
        url,
        &["import", "returns", &returns, "--strategy", name, "--json"],
    )
    .await;
    let v = json(&out);
    assert_eq!(v["rows"], 300, "{v}");
    assert_eq!(v["written_to"][0], name, "{v}");

    // A bad row refuses the whole file, naming its line; the strategy keeps its series.
    let bad_text = "date,return\n2020-02-27,0.01\n2020-02-28,0.01\n2020-02-30,0.01\n";
    let bad = write(dir.path(), "bad.csv", bad_text);
    let (code, out, err) =
        quantbox(&["import", "returns", &bad, "--strategy", name, "--url", url]).await;
    assert_ne!(code, 0, "stdout: {out}");
    assert!(err.starts_with("error: invalid_argument: "), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("bad.csv"), "the file's name: {err}");
    // An unreadable file is named, and nothing is sent.
    let missing = dir.path().join("missing.csv");
    let (code, _, err) = quantbox(&[
        "import",
        "returns",
        missing.to_str().unwrap(),
        "--strategy",
        name,
        "--url",
        url,
    ])
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");

    // The report's JSON is the route's (but for the time it took).
    let cli = json(&ok(url, &["report", name, "--period-days", "0", "--json"]).await);
    assert_eq!(
        cli["period"]["observations"], 300,
        "unchanged by the bad file: {cli}"
    );
    let (status, rest) = srv
        .rest(
            "GET",
            &format!("/api/v1/strategies/{name}/report?period_days=0"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(without_elapsed(cli.clone()), without_elapsed(rest.clone()));

    // The human report: every section, percentages and ratios as documented.
    let out = ok(url, &["report", name, "--period-days", "0"]).await;
    for section in ["Period", "Performance", "Risk", "Trades", "Benchmark"] {
        assert!(out.lines().any(|l| l == section), "no {section} in:\n{out}");
    }
    let total = rest["performance"]["total_return"].as_f64().unwrap();
    assert!(
        out.contains(&format!("{:.2}%", total * 100.0)),
        "total return {total} not in:\n{out}"
    );
    let sharpe = rest["performance"]["sharpe_ratio"].as_f64().unwrap();
    assert!(out.contains(&format!("{sharpe:.3}")), "{out}");
    assert!(out.contains("300 (0 missing)"), "{out}");
    assert!(
        out.contains("null because: performance.win_rate"),
        "no trades, so no win rate:\n{out}"
    );
    assert!(out.contains("compute: cpu"), "{out}");
    // The default period is the last 30 days.
    let v = json(&ok(url, &["report", name, "--json"]).await);
    assert_eq!(v["period"]["period_days"], 30, "{v}");
    assert_eq!(v["period"]["observations"], 30, "{v}");
    // A benchmark symbol of the server.
    let out = ok(url, &["report", name, "--benchmark", "SPX", "--use-gpu"]).await;
    assert!(out.contains("symbol                 SPX"), "{out}");
    assert!(
        out.contains("GPU"),
        "the compute note says there is none:\n{out}"
    );

    // --html writes the tearsheet.
    let html = dir.path().join("out.html");
    let out = ok(
        url,
        &[
            "report",
            name,
            "--period-days",
            "0",
            "--html",
            html.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.contains(&format!("wrote the tearsheet to {}", html.display())),
        "{out}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..100]);
    assert!(page.contains("<svg"));

    // Offline: the same figures from the same file, and no server is asked.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let offline = json(&ok(&closed, &["report", "--returns", &returns, "--json"]).await);
    for part in ["period", "performance", "risk", "trades", "reasons"] {
        assert_eq!(offline[part], rest[part], "{part} differs");
    }
    assert_eq!(without_elapsed(offline), without_elapsed(rest));
    let html2 = dir.path().join("offline.html");
    let out = ok(
        &closed,
        &[
            "report",
            "--returns",
            &returns,
            "--benchmark",
            &returns,
            "--html",
            html2.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.contains("symbol                 alpha"), "{out}");
    assert!(out.contains("correlation            1.000"), "{out}");
    assert!(
        std::fs::read_to_string(&html2)
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );
    let (code, _, err) = quantbox(&["report", "--returns", &bad, "--url", &closed]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("line 4"), "{err}");

    // clap: STRATEGY and --returns are one or the other, and one is needed.
    let (code, _, err) = quantbox(&["report", name, "--returns", &returns]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, _, err) = quantbox(&["report"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = quantbox(&["report", "--returns", &returns, "--include-benchmark"]).await;
    assert_eq!(code, 2, "{err}");

    // Orders and fills, then the execution analytics shows them.
    let orders = write(dir.path(), "orders.csv", ORDERS);
    let fills = write(dir.path(), "fills.csv", FILLS);
    let out = ok(url, &["import", "orders", &orders, "--strategy", name]).await;
    assert!(out.contains("imported 4 order(s)"), "{out}");
    let out = ok(url, &["import", "fills", &fills, "--strategy", name]).await;
    assert!(out.contains("imported 4 fill(s)"), "{out}");
    let v = json(
        &ok(
            url,
            &[
                "analytics",
                "execution",
                "--period",
                "all",
                "--strategy",
                name,
                "--json",
            ],
        )
        .await,
    );
    let o = &v["orders"];
    assert_eq!(
        (
            &o["total"],
            &o["filled"],
            &o["rejected"],
            &o["partially_filled"]
        ),
        (&4.into(), &2.into(), &1.into(), &1.into()),
        "{v}"
    );
    assert_eq!(v["executions"], 4, "{v}");
    let out = ok(
        url,
        &[
            "analytics",
            "execution",
            "--period",
            "all",
            "--strategy",
            name,
        ],
    )
    .await;
    assert!(
        out.contains("4 total: 2 filled, 1 partially filled, 0 cancelled, 1 rejected"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("AAPL")), "{out}");
    assert!(out.contains("insufficient buying power (1)"), "{out}");
    // The default window (24 h) holds none of these 2024 orders: the note says so.
    let out = ok(url, &["analytics", "execution", "--strategy", name]).await;
    assert!(out.contains("0 total"), "{out}");
    assert!(out.contains("note: "), "{out}");
    let (code, _, err) = quantbox(&["analytics", "execution", "--period", "2d"]).await;
    assert_eq!(code, 2, "{err}");

    // Health.
    let out = ok(url, &["strategy", "health", name]).await;
    let h = json(&ok(url, &["strategy", "health", name, "--json"]).await);
    let status = h["status"].as_str().unwrap();
    assert!(
        out.lines()
            .any(|l| l.starts_with("status") && l.contains(status)),
        "{status} not in:\n{out}"
    );
    for check in h["checks"].as_object().unwrap().keys() {
        assert!(
            out.lines().any(|l| l.starts_with(check.as_str())),
            "{check} not in:\n{out}"
        );
    }

    // Lists.
    let out = ok(url, &["strategy", "list"]).await;
    let row = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} not in:\n{out}"));
    assert!(
        row.contains("2020-01-01") && row.contains("2020-10-26"),
        "{row}"
    );
    assert!(row.contains("import"), "{row}");
    let v = json(&ok(url, &["strategy", "list", "--json"]).await);
    let s = v["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap();
    assert_eq!(
        (&s["points"], &s["orders"], &s["fills"]),
        (&300.into(), &4.into(), &4.into())
    );
    let out = ok(url, &["market", "symbols"]).await;
    assert!(out.starts_with("SYMBOL"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("SPX")), "{out}");
    let v = json(&ok(url, &["market", "symbols", "--json"]).await);
    assert!(
        v["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["symbol"] == "SPX")
    );

    // Unknown strategies.
    for args in [
        &["report", "nosuch"][..],
        &["strategy", "health", "nosuch"][..],
        &["report", "nosuch", "--html", "/nonexistent/x.html"][..],
    ] {
        let mut a = args.to_vec();
        a.extend(["--url", url]);
        let (code, out, err) = quantbox(&a).await;
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.starts_with("error: not_found: "), "{args:?}: {err}");
    }
}
