//! The trading verbs of the CLI: `quantbox import` (CSV files into the server's store),
//! `quantbox report` (a strategy's performance report and HTML tearsheet, from the
//! server or offline from a returns file), `quantbox analytics execution`,
//! `quantbox strategy list|health` and `quantbox market symbols`.
//!
//! Like `cli.rs`'s verbs they are a thin REST client of a running server (`--url`,
//! `--api-key`, `--json`; errors as `error: <code>: <message>` with exit status 1),
//! except `report --returns FILE`, which computes the report here with the same code
//! the server runs ([`quantbox_ops::report::offline_report`]) and needs no server.
//! Human output: percentages with 2 decimals, ratios with 3, `n/a` for a null figure.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use crate::cli::{CallError, Client, ClientArgs, fail, seg, show};

/// The trading verbs, flattened into the top-level commands.
#[derive(Subcommand)]
pub enum TradingCommand {
    /// Import a CSV file (returns, orders, fills, closed trades, daily prices) into the
    /// server's store.
    ///
    /// The file is read here and sent to the server, which parses it whole: one bad row
    /// refuses the file (its line and reason are printed) and nothing of it is written.
    Import(ImportArgs),
    /// A strategy's performance report (or, offline, a returns file's); --html also
    /// writes the HTML tearsheet.
    ///
    /// Period, performance, risk, trades and, on request, figures against a benchmark.
    /// With STRATEGY the server computes it from what it has stored. With --returns FILE
    /// it is computed here from the file, without a server, by the same code.
    Report(ReportArgs),
    /// Analytics of the stored trading records.
    Analytics(AnalyticsArgs),
    /// The strategies the server knows: list them, or check one's health.
    Strategy(StrategyArgs),
    /// Market data the server has (bundled and imported daily prices).
    Market(MarketArgs),
}

/// Runs a trading verb.
pub async fn run(cmd: TradingCommand) -> ExitCode {
    match cmd {
        TradingCommand::Import(a) => import(a).await,
        TradingCommand::Report(a) => report(a).await,
        TradingCommand::Analytics(a) => analytics(a).await,
        TradingCommand::Strategy(a) => strategy(a).await,
        TradingCommand::Market(a) => market(a).await,
    }
}

// ---------------------------------------------------------------------------------------
// import

#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    what: ImportWhat,
    #[command(flatten)]
    client: ClientArgs,
}

/// The file and the renaming of its columns.
#[derive(Args)]
struct FileArgs {
    /// The CSV file (comma-separated, header line first; read on this machine).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Take our column OURS from the file's column THEIRS (e.g. order_id=OrderRef), for
    /// a broker's export; repeatable, or comma-separated.
    #[arg(
        long = "map",
        value_name = "OURS=THEIRS",
        value_delimiter = ',',
        value_parser = parse_map
    )]
    map: Vec<(String, String)>,
}

#[derive(Subcommand)]
enum ImportWhat {
    /// A strategy's returns or equity curve (columns `date` and `return`, a fraction
    /// with 0.01 = 1 %, or `equity`), replacing the series it had.
    Returns {
        #[command(flatten)]
        file: FileArgs,
        /// The strategy it belongs to: 1 to 64 characters of [A-Za-z0-9._-].
        #[arg(long)]
        strategy: String,
    },
    /// Orders (columns strategy, order_id, symbol, side, quantity, submit_time, state;
    /// optional order_type, limit_price, arrival_price, decision_time, ack_time,
    /// reject_reason); orders with the same strategy and id are replaced.
    Orders {
        #[command(flatten)]
        file: FileArgs,
        /// The strategy of rows without one (or without a strategy column).
        #[arg(long)]
        strategy: Option<String>,
    },
    /// Fills of stored orders (columns strategy, order_id, time, quantity, price;
    /// optional fee). Import the orders first.
    Fills {
        #[command(flatten)]
        file: FileArgs,
        /// The strategy of rows without one (or without a strategy column).
        #[arg(long)]
        strategy: Option<String>,
    },
    /// Closed trades (columns strategy, trade_id, symbol, side, quantity, entry_time,
    /// exit_time, entry_price, exit_price; optional pnl, fees), for the win rate and
    /// trade statistics of the report.
    Trades {
        #[command(flatten)]
        file: FileArgs,
        /// The strategy of rows without one (or without a strategy column).
        #[arg(long)]
        strategy: Option<String>,
    },
    /// Daily prices, e.g. Yahoo's download as it is (Date, Open, High, Low, Close, Adj
    /// Close, Volume), replacing the symbol's price history; usable as a benchmark.
    Prices {
        #[command(flatten)]
        file: FileArgs,
        /// The symbol of a file without a symbol column (1 to 32 characters of
        /// [A-Za-z0-9._-^=]); without it, the file's symbol column names each row's.
        #[arg(long)]
        symbol: Option<String>,
    },
}

fn parse_map(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((ours, theirs)) if !ours.trim().is_empty() && !theirs.trim().is_empty() => {
            Ok((ours.trim().to_owned(), theirs.trim().to_owned()))
        }
        _ => Err(format!(
            "expected OURS=THEIRS (our column name, then the file's header), e.g. order_id=OrderRef; got {s:?}"
        )),
    }
}

/// The import route with its query: `?strategy=&symbol=&file=&map=`.
fn import_path(
    kind: &str,
    strategy: Option<&str>,
    symbol: Option<&str>,
    file: &Path,
    map: &[(String, String)],
) -> String {
    let mut q: Vec<String> = Vec::new();
    if let Some(s) = strategy {
        q.push(format!("strategy={}", seg(s)));
    }
    if let Some(s) = symbol {
        q.push(format!("symbol={}", seg(s)));
    }
    if let Some(name) = file.file_name() {
        q.push(format!("file={}", seg(&name.to_string_lossy())));
    }
    if !map.is_empty() {
        let pairs: Vec<String> = map.iter().map(|(o, t)| format!("{o}={t}")).collect();
        q.push(format!("map={}", seg(&pairs.join(","))));
    }
    if q.is_empty() {
        format!("/api/v1/import/{kind}")
    } else {
        format!("/api/v1/import/{kind}?{}", q.join("&"))
    }
}

/// A local file's bytes, or the error naming it.
fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, CallError> {
    std::fs::read(path).map_err(|e| CallError::Api {
        code: "invalid_argument".into(),
        message: format!("cannot read the {what} file {}: {e}", path.display()),
    })
}

async fn import(a: ImportArgs) -> ExitCode {
    let (kind, file, strategy, symbol) = match &a.what {
        ImportWhat::Returns { file, strategy } => ("returns", file, Some(strategy), None),
        ImportWhat::Orders { file, strategy } => ("orders", file, strategy.as_ref(), None),
        ImportWhat::Fills { file, strategy } => ("fills", file, strategy.as_ref(), None),
        ImportWhat::Trades { file, strategy } => ("trades", file, strategy.as_ref(), None),
        ImportWhat::Prices { file, symbol } => ("prices", file, None, symbol.as_ref()),
    };
    let bytes = match read_file(kind, &file.file) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let path = import_path(
        kind,
        strategy.map(String::as_str),
        symbol.map(String::as_str),
        &file.file,
        &file.map,
    );
    let client = Client::new(&a.client);
    let r = async {
        let req = client
            .request(Method::POST, &path)
            .header(reqwest::header::CONTENT_TYPE, "text/csv")
            .body(bytes);
        let resp = client.execute(req).await?;
        client.decode(resp).await
    }
    .await;
    show(&a.client, r, |v| print!("{}", render_import(v)))
}

fn render_import(v: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", s(&v["message"]));
    if let (Some(first), Some(last)) = (v["first"].as_str(), v["last"].as_str()) {
        let _ = writeln!(o, "from {first} to {last}");
    }
    o
}

// ---------------------------------------------------------------------------------------
// report

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["strategy", "returns"])))]
pub struct ReportArgs {
    /// The strategy on the server (as imported or as an agent named it). Or --returns.
    strategy: Option<String>,
    /// Instead of a STRATEGY on the server: report this returns (or equity) CSV file
    /// here, without a server (columns as for `quantbox import returns`).
    #[arg(long, value_name = "FILE")]
    returns: Option<PathBuf>,
    /// The last N calendar days of the data; 0 = all of it (0 to 36500) [default: 30
    /// with a STRATEGY, 0 with --returns].
    #[arg(long, value_name = "N")]
    period_days: Option<i64>,
    /// The benchmark. With a STRATEGY: a SYMBOL the server has prices of (bundled SPX,
    /// IXIC, AAPL, … or imported with `quantbox import prices`); it implies
    /// --include-benchmark. With --returns: a FILE, daily prices (Yahoo's download) or a
    /// returns/equity CSV.
    #[arg(long, value_name = "SYMBOL|FILE")]
    benchmark: Option<String>,
    /// Compare with a benchmark: --benchmark's symbol, or SPX (the S&P 500) without it.
    /// With a STRATEGY only (with --returns, give --benchmark FILE).
    #[arg(long, conflicts_with = "returns")]
    include_benchmark: bool,
    /// Annual risk-free rate as a fraction, 0.03 = 3 % (-0.5 to 1) [default: 0].
    #[arg(long = "risk-free", value_name = "RATE", allow_negative_numbers = true)]
    risk_free: Option<f64>,
    /// Periods per year of the series: 252 daily, 52 weekly, 12 monthly, 365 crypto (1
    /// to 366) [default: 252].
    #[arg(long, value_name = "N")]
    periods_per_year: Option<f64>,
    /// Ask for GPU computation. There is no GPU code path: the report is computed on the
    /// CPU and its compute note says so.
    #[arg(long)]
    use_gpu: bool,
    /// Also write the HTML tearsheet (figures and charts) to FILE, created or
    /// overwritten.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

impl ReportArgs {
    /// The query of the report and tearsheet routes: only what was given, so the
    /// server's defaults apply to the rest (period_days always: the CLI's default is
    /// the server's, 30).
    fn query(&self) -> String {
        let mut q = vec![format!("period_days={}", self.period_days.unwrap_or(30))];
        if self.include_benchmark {
            q.push("include_benchmark=true".into());
        }
        if let Some(b) = &self.benchmark {
            q.push(format!("benchmark={}", seg(b)));
        }
        if let Some(r) = self.risk_free {
            q.push(format!("risk_free_rate={r}"));
        }
        if let Some(p) = self.periods_per_year {
            q.push(format!("periods_per_year={p}"));
        }
        if self.use_gpu {
            q.push("use_gpu=true".into());
        }
        q.join("&")
    }
}

async fn report(a: ReportArgs) -> ExitCode {
    match (&a.strategy, &a.returns) {
        (_, Some(file)) => offline(&a, file),
        (Some(name), None) => online(&a, name).await,
        // clap's group requires one of them.
        (None, None) => fail(CallError::Api {
            code: "invalid_argument".into(),
            message: "name a STRATEGY or give --returns FILE".into(),
        }),
    }
}

async fn online(a: &ReportArgs, name: &str) -> ExitCode {
    let client = Client::new(&a.client);
    let base = format!("/api/v1/strategies/{}", seg(name));
    let query = a.query();
    let code = show(
        &a.client,
        client
            .call(Method::GET, &format!("{base}/report?{query}"), None)
            .await,
        |v| print!("{}", render_report(v)),
    );
    if code != ExitCode::SUCCESS {
        return code;
    }
    let Some(out) = &a.html else {
        return code;
    };
    let r = async {
        let resp = client
            .execute(client.request(Method::GET, &format!("{base}/tearsheet?{query}")))
            .await?;
        if !resp.status().is_success() {
            return Err(match client.decode(resp).await {
                Err(e) => e,
                Ok(_) => CallError::Transport("the server refused the tearsheet".into()),
            });
        }
        resp.text().await.map_err(|e| {
            CallError::Transport(format!(
                "the tearsheet from {} broke off: {e}",
                a.client.url
            ))
        })
    }
    .await;
    match r {
        Ok(html) => write_html(a, out, &html),
        Err(e) => fail(e),
    }
}

/// Writes the tearsheet and says where (on stderr with --json, so stdout stays JSON).
fn write_html(a: &ReportArgs, out: &Path, html: &str) -> ExitCode {
    if let Err(e) = std::fs::write(out, html) {
        return fail(CallError::Api {
            code: "invalid_argument".into(),
            message: format!("cannot write the tearsheet to {}: {e}", out.display()),
        });
    }
    let note = format!(
        "wrote the tearsheet to {} ({} bytes)",
        out.display(),
        html.len()
    );
    if a.client.json {
        eprintln!("{note}");
    } else {
        println!("{note}");
    }
    ExitCode::SUCCESS
}

/// `--returns FILE`: the report computed here; the server is not asked anything.
fn offline(a: &ReportArgs, file: &Path) -> ExitCode {
    let text = |what: &str, p: &Path| {
        read_file(what, p).and_then(|b| {
            String::from_utf8(b).map_err(|e| CallError::Api {
                code: "invalid_argument".into(),
                message: format!(
                    "the {what} file {} is not UTF-8 text (byte {})",
                    p.display(),
                    e.utf8_error().valid_up_to()
                ),
            })
        })
    };
    let stem = |p: &Path| {
        p.file_stem().map_or_else(
            || p.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    };
    let returns = match text("returns", file) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let bench = match &a.benchmark {
        Some(b) => {
            let p = Path::new(b);
            match text("benchmark", p) {
                Ok(t) => Some((stem(p), t)),
                Err(e) => return fail(e),
            }
        }
        None => None,
    };
    let params = quantbox_ops::report::ReportParams {
        period_days: a.period_days.unwrap_or(0),
        periods_per_year: a.periods_per_year.unwrap_or(252.0),
        risk_free_rate: a.risk_free.unwrap_or(0.0),
        use_gpu: a.use_gpu,
    };
    let rws = match quantbox_ops::report::offline_report(
        &stem(file),
        &returns,
        bench.as_ref().map(|(s, t)| (s.as_str(), t.as_str())),
        &params,
    ) {
        Ok(r) => r,
        Err(e) => {
            return fail(CallError::Api {
                code: e.code.as_str().to_owned(),
                message: e.message,
            });
        }
    };
    let v = match serde_json::to_value(&rws.report) {
        Ok(v) => v,
        Err(e) => {
            return fail(CallError::Api {
                code: "internal".into(),
                message: format!("the report could not be encoded: {e}"),
            });
        }
    };
    let code = show(&a.client, Ok(v), |v| print!("{}", render_report(v)));
    match &a.html {
        Some(out) => match crate::tearsheet::from_report(
            &rws,
            &quantbox_sandbox::Timestamp::now().to_rfc3339(),
        ) {
            Ok(html) => write_html(a, out, &html),
            Err(e) => fail(CallError::Api {
                code: "failed_precondition".into(),
                message: format!("no tearsheet: {e}"),
            }),
        },
        None => code,
    }
}

/// Label column of the report's sections.
const KEY: usize = 22;

fn render_report(r: &Value) -> String {
    let mut o = String::new();
    let section = |o: &mut String, title: &str, rows: Vec<(&str, String)>| {
        let _ = writeln!(o, "{title}");
        for (k, v) in rows {
            let _ = writeln!(o, "  {k:<KEY$} {v}");
        }
    };
    let _ = writeln!(o, "strategy {}", s(&r["strategy"]));
    let p = &r["period"];
    let dates = match (p["start"].as_str(), p["end"].as_str()) {
        (Some(a), Some(b)) => format!("{a} to {b}"),
        _ => "n/a (no returns in the period)".into(),
    };
    let window = match p["period_days"].as_i64() {
        Some(0) => "all of the data".to_owned(),
        Some(n) => format!("the last {n} calendar days"),
        None => "n/a".into(),
    };
    section(
        &mut o,
        "Period",
        vec![
            ("dates", dates),
            ("window", window),
            (
                "observations",
                format!(
                    "{} ({} missing)",
                    int(&p["observations"]),
                    int(&p["missing"])
                ),
            ),
            (
                "annualization",
                format!(
                    "{} periods per year, risk-free rate {}",
                    r["periods_per_year"]
                        .as_f64()
                        .map_or_else(|| "n/a".into(), |x| x.to_string()),
                    pct(&r["risk_free_rate"])
                ),
            ),
        ],
    );
    let f = &r["performance"];
    section(
        &mut o,
        "Performance",
        vec![
            ("total return", pct(&f["total_return"])),
            ("annualized return", pct(&f["annualized_return"])),
            ("sharpe ratio", ratio(&f["sharpe_ratio"])),
            ("sortino ratio", ratio(&f["sortino_ratio"])),
            ("calmar ratio", ratio(&f["calmar_ratio"])),
            ("max drawdown", pct(&f["max_drawdown"])),
            (
                "max drawdown duration",
                f["max_drawdown_duration_days"]
                    .as_i64()
                    .map_or_else(|| "n/a".into(), |d| format!("{d} days")),
            ),
            ("win rate", pct(&f["win_rate"])),
            ("profit factor", ratio(&f["profit_factor"])),
        ],
    );
    let k = &r["risk"];
    section(
        &mut o,
        "Risk",
        vec![
            ("volatility", pct(&k["volatility"])),
            ("VaR 95%", pct(&k["var_95"])),
            ("CVaR 95%", pct(&k["cvar_95"])),
            ("skewness", ratio(&k["skewness"])),
            ("kurtosis", ratio(&k["kurtosis"])),
        ],
    );
    let t = &r["trades"];
    section(
        &mut o,
        "Trades",
        vec![
            (
                "closed trades",
                format!(
                    "{} ({} winning, {} losing, {} breakeven)",
                    int(&t["total"]),
                    int(&t["winning"]),
                    int(&t["losing"]),
                    int(&t["breakeven"])
                ),
            ),
            ("average win", money(&t["average_win"])),
            ("average loss", money(&t["average_loss"])),
            ("largest win", money(&t["largest_win"])),
            ("largest loss", money(&t["largest_loss"])),
        ],
    );
    let b = &r["benchmark"];
    if b.is_object() {
        section(
            &mut o,
            "Benchmark",
            vec![
                ("symbol", s(&b["symbol"])),
                ("total return", pct(&b["total_return"])),
                ("alpha (annual)", pct(&b["alpha"])),
                ("beta", ratio(&b["beta"])),
                ("correlation", ratio(&b["correlation"])),
                ("tracking error", pct(&b["tracking_error"])),
                ("information ratio", ratio(&b["information_ratio"])),
                ("common dates", int(&b["common_dates"])),
            ],
        );
    } else {
        section(
            &mut o,
            "Benchmark",
            vec![("none", "(ask with --benchmark)".to_owned())],
        );
    }
    if let Some(reasons) = r["reasons"].as_object().filter(|m| !m.is_empty()) {
        let width = reasons.keys().map(|k| k.len()).max().unwrap_or(0);
        for (path, why) in reasons {
            let _ = writeln!(o, "null because: {path:<width$}  {}", s(why));
        }
    }
    let c = &r["compute"];
    let _ = writeln!(
        o,
        "compute: {} in {} ms; {}",
        s(&c["device"]),
        c["elapsed_ms"]
            .as_f64()
            .map_or_else(|| "n/a".into(), |ms| format!("{ms:.3}")),
        s(&c["note"])
    );
    o
}

// ---------------------------------------------------------------------------------------
// analytics, strategy, market

#[derive(Args)]
pub struct AnalyticsArgs {
    #[command(subcommand)]
    verb: AnalyticsVerb,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum AnalyticsVerb {
    /// Execution quality of the stored orders and fills: counts by final state, fill
    /// rates, slippage against the arrival price, submit-to-acknowledgement latency and
    /// a table by symbol.
    Execution {
        /// The window, ending now: 1h, 24h, 7d, 30d or all; orders count by their submit
        /// time.
        #[arg(
            long,
            value_name = "PERIOD",
            default_value = "24h",
            value_parser = ["1h", "24h", "7d", "30d", "all"]
        )]
        period: String,
        /// Only this strategy's orders [default: every strategy's].
        #[arg(long)]
        strategy: Option<String>,
    },
}

async fn analytics(a: AnalyticsArgs) -> ExitCode {
    let client = Client::new(&a.client);
    match a.verb {
        AnalyticsVerb::Execution { period, strategy } => {
            let mut path = format!("/api/v1/analytics/execution?time_period={}", seg(&period));
            if let Some(s) = &strategy {
                path.push_str(&format!("&strategy={}", seg(s)));
            }
            show(
                &a.client,
                client.call(Method::GET, &path, None).await,
                |v| print!("{}", render_execution(v)),
            )
        }
    }
}

fn render_execution(v: &Value) -> String {
    let mut o = String::new();
    let whose = v["strategy"]
        .as_str()
        .map_or_else(|| "all strategies".to_owned(), |s| format!("strategy {s}"));
    let window = match v["from"].as_str() {
        Some(from) => format!("{} (from {from} to {})", s(&v["time_period"]), s(&v["to"])),
        None => format!("{} (up to {})", s(&v["time_period"]), s(&v["to"])),
    };
    let n = &v["orders"];
    let fr = &v["fill_rate"];
    let sl = &v["slippage"];
    let l = &v["latency_ms"];
    let rejects: Vec<String> = v["reject_reasons"]
        .as_object()
        .map(|m| m.iter().map(|(k, c)| format!("{k} ({c})")).collect())
        .unwrap_or_default();
    let rows = [
        ("execution", format!("{whose}, period {window}")),
        (
            "orders",
            format!(
                "{} total: {} filled, {} partially filled, {} cancelled, {} rejected, {} failed, {} open",
                int(&n["total"]),
                int(&n["filled"]),
                int(&n["partially_filled"]),
                int(&n["cancelled"]),
                int(&n["rejected"]),
                int(&n["failed"]),
                int(&n["open"])
            ),
        ),
        (
            "fill rate",
            format!(
                "{} by quantity, {} by orders",
                pct(&fr["by_quantity"]),
                pct(&fr["by_orders"])
            ),
        ),
        (
            "fills",
            format!(
                "{} executions; {} partial fill(s), {} failure(s); filled notional {}, fees {}",
                int(&v["executions"]),
                int(&v["partial_fills"]),
                int(&v["failures"]),
                money(&v["filled_notional"]),
                money(&v["fees"])
            ),
        ),
        (
            "slippage",
            format!(
                "mean {}, notional-weighted {}, max {}; {} adverse, {} improved, {} zero of {} measured fill(s) ({} without an arrival price)",
                bps(&sl["avg_bps"]),
                bps(&sl["notional_weighted_bps"]),
                bps(&sl["max_bps"]),
                int(&sl["adverse_count"]),
                int(&sl["improved_count"]),
                int(&sl["zero_count"]),
                int(&sl["measured_fills"]),
                int(&sl["skipped_no_arrival_price"])
            ),
        ),
        (
            "latency",
            format!(
                "submit to ack over {} order(s): avg {}, p50 {}, p95 {}, p99 {}, max {}",
                int(&l["count"]),
                ms(&l["avg"]),
                ms(&l["p50"]),
                ms(&l["p95"]),
                ms(&l["p99"]),
                ms(&l["max"])
            ),
        ),
        (
            "rejects",
            if rejects.is_empty() {
                "none".to_owned()
            } else {
                rejects.join(", ")
            },
        ),
        ("simulated", s(&v["simulated"])),
    ];
    for (k, val) in rows {
        let _ = writeln!(o, "{k:<10} {val}");
    }
    let symbols: Vec<Vec<String>> = v["by_symbol"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    vec![
                        s(&x["symbol"]),
                        int(&x["orders"]),
                        int(&x["filled_orders"]),
                        int(&x["partial_fills"]),
                        int(&x["failures"]),
                        pct(&x["fill_rate_by_quantity"]),
                        pct(&x["fill_rate_by_orders"]),
                        int(&x["executions"]),
                        bps(&x["avg_slippage_bps"]),
                        money(&x["filled_notional"]),
                        money(&x["fees"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !symbols.is_empty() {
        let _ = writeln!(o);
        table(
            &mut o,
            &[
                "SYMBOL",
                "ORDERS",
                "FILLED",
                "PARTIAL",
                "FAILED",
                "FILL QTY",
                "FILL ORDERS",
                "FILLS",
                "SLIPPAGE",
                "NOTIONAL",
                "FEES",
            ],
            "lrrrrrrrrrr",
            &symbols,
        );
    }
    if let Some(note) = v["note"].as_str() {
        let _ = writeln!(o, "note: {note}");
    }
    o
}

#[derive(Args)]
pub struct StrategyArgs {
    #[command(subcommand)]
    verb: StrategyVerb,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum StrategyVerb {
    /// The strategies with what is stored of each: series, orders, fills, trades.
    List,
    /// A strategy's health: score 0 to 100, status (healthy, warning, critical or
    /// no_data), each check with its value against its threshold, and the alerts.
    Health {
        /// The strategy.
        strategy: String,
    },
}

async fn strategy(a: StrategyArgs) -> ExitCode {
    let client = Client::new(&a.client);
    match a.verb {
        StrategyVerb::List => show(
            &a.client,
            client.call(Method::GET, "/api/v1/strategies", None).await,
            |v| print!("{}", render_strategies(v)),
        ),
        StrategyVerb::Health { strategy } => show(
            &a.client,
            client
                .call(
                    Method::GET,
                    &format!("/api/v1/strategies/{}/health", seg(&strategy)),
                    None,
                )
                .await,
            |v| print!("{}", render_health(v)),
        ),
    }
}

fn render_strategies(v: &Value) -> String {
    let list = v["strategies"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|x| {
            vec![
                s(&x["name"]),
                s(&x["source"]),
                s(&x["series_kind"]),
                int(&x["points"]),
                when(&x["first_ms"]),
                when(&x["last_ms"]),
                int(&x["orders"]),
                int(&x["fills"]),
                int(&x["trades"]),
                x["feed_interval_ms"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |ms| format!("{} s", ms / 1000.0)),
            ]
        })
        .collect();
    let mut o = String::new();
    table(
        &mut o,
        &[
            "NAME", "SOURCE", "SERIES", "POINTS", "FIRST", "LAST", "ORDERS", "FILLS", "TRADES",
            "FEED",
        ],
        "lllrllrrrr",
        &rows,
    );
    let _ = writeln!(o, "{} strateg{}", list.len(), plural_y(list.len()));
    o
}

fn plural_y(n: usize) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

/// A check's value or threshold in its unit: drawdown and fill rate are fractions.
fn check_figure(check: &str, v: &Value) -> String {
    match check {
        "drawdown" | "execution_quality" => pct(v),
        _ => ratio(v),
    }
}

fn render_health(h: &Value) -> String {
    let mut o = String::new();
    let score = h["health_score"]
        .as_u64()
        .map_or_else(|| "n/a".into(), |x| format!("{x}/100"));
    let _ = writeln!(o, "{:<12} {}", "strategy", s(&h["strategy"]));
    let _ = writeln!(o, "{:<12} {} (score {score})", "status", s(&h["status"]));
    let _ = writeln!(o, "{:<12} {}", "last update", s(&h["last_update"]));
    let rows: Vec<Vec<String>> = h["checks"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, c)| {
                    vec![
                        name.clone(),
                        s(&c["status"]),
                        check_figure(name, &c["value"]),
                        check_figure(name, &c["threshold"]),
                        int(&c["penalty"]),
                        s(&c["detail"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(o);
    table(
        &mut o,
        &["CHECK", "STATUS", "VALUE", "THRESHOLD", "PENALTY", "DETAIL"],
        "llrrrl",
        &rows,
    );
    let alerts = h["alerts"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(o);
    if alerts.is_empty() {
        let _ = writeln!(o, "alerts: none");
    } else {
        let _ = writeln!(o, "alerts:");
        for a in &alerts {
            let _ = writeln!(
                o,
                "  {:<8} {}: {}",
                s(&a["severity"]),
                s(&a["check"]),
                s(&a["message"])
            );
        }
    }
    o
}

#[derive(Args)]
pub struct MarketArgs {
    #[command(subcommand)]
    verb: MarketVerb,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum MarketVerb {
    /// The symbols with daily prices: bars, first and last day, source (bundled or
    /// import).
    Symbols,
}

async fn market(a: MarketArgs) -> ExitCode {
    let client = Client::new(&a.client);
    match a.verb {
        MarketVerb::Symbols => show(
            &a.client,
            client
                .call(Method::GET, "/api/v1/market/symbols", None)
                .await,
            |v| print!("{}", render_symbols(v)),
        ),
    }
}

fn render_symbols(v: &Value) -> String {
    let list = v["symbols"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|x| {
            vec![
                s(&x["symbol"]),
                int(&x["bars"]),
                s(&x["first"]),
                s(&x["last"]),
                s(&x["source"]),
            ]
        })
        .collect();
    let mut o = String::new();
    table(
        &mut o,
        &["SYMBOL", "BARS", "FIRST", "LAST", "SOURCE"],
        "lrlll",
        &rows,
    );
    let _ = writeln!(o, "{} symbol(s)", list.len());
    o
}

// ---------------------------------------------------------------------------------------
// formatting

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `x` with `decimals`, never `-0.00`; `n/a` for null.
fn fixed(v: &Value, decimals: usize, scale: f64, unit: &str) -> String {
    match v.as_f64() {
        Some(x) => {
            let t = format!("{:.decimals$}", x * scale);
            match t.strip_prefix('-') {
                Some(abs) if abs.bytes().all(|b| b == b'0' || b == b'.') => format!("{abs}{unit}"),
                _ => format!("{t}{unit}"),
            }
        }
        None => "n/a".into(),
    }
}

/// A fraction as a percentage with 2 decimals (`0.1234` → `12.34%`), `n/a` for null.
fn pct(v: &Value) -> String {
    fixed(v, 2, 100.0, "%")
}

/// A ratio with 3 decimals, `n/a` for null.
fn ratio(v: &Value) -> String {
    fixed(v, 3, 1.0, "")
}

/// An amount of money with 2 decimals, `n/a` for null.
fn money(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".into(), |x| format!("{x:.2}"))
}

fn bps(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".into(), |x| format!("{x:.2} bps"))
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or_else(
        || "n/a".into(),
        |x| {
            if x.fract() == 0.0 {
                format!("{x:.0} ms")
            } else {
                format!("{x:.2} ms")
            }
        },
    )
}

/// A count, `n/a` for null.
fn int(v: &Value) -> String {
    match v {
        Value::Null => "n/a".into(),
        other => s(other),
    }
}

/// Unix milliseconds as a date (midnight UTC, as imported series are stamped) or an
/// RFC 3339 time; `-` for null.
fn when(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) => {
            let t = quantbox_sandbox::Timestamp::from_unix_ms(ms).to_rfc3339();
            match t.strip_suffix("T00:00:00.000Z") {
                Some(day) => day.to_owned(),
                None => t,
            }
        }
        None => "-".into(),
    }
}

/// Rows as aligned columns two spaces apart; `align` has an `r` for each column set
/// flush right (numbers) and an `l` for each set flush left. The last column is never
/// padded.
fn table(out: &mut String, headers: &[&str], align: &str, rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let right: Vec<bool> = align.chars().map(|a| a == 'r').collect();
    let mut line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = widths.get(i).copied().unwrap_or(0);
                if right.get(i).copied().unwrap_or(false) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for r in rows {
        line(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_are_formatted_by_kind() {
        assert_eq!(pct(&json!(0.123456)), "12.35%");
        assert_eq!(pct(&json!(-0.05)), "-5.00%");
        assert_eq!(pct(&Value::Null), "n/a");
        assert_eq!(ratio(&json!(1.23456)), "1.235");
        assert_eq!(ratio(&Value::Null), "n/a");
        assert_eq!(ratio(&json!(-0.0001)), "0.000");
        assert_eq!(pct(&json!(-0.00001)), "0.00%");
        assert_eq!(int(&json!(7)), "7");
        assert_eq!(int(&Value::Null), "n/a");
        assert_eq!(when(&json!(1_577_836_800_000_i64)), "2020-01-01");
        assert_eq!(
            when(&json!(1_577_836_801_000_i64)),
            "2020-01-01T00:00:01.000Z"
        );
    }

    #[test]
    fn maps_are_ours_then_theirs() {
        assert_eq!(
            parse_map("order_id = OrderRef").unwrap(),
            ("order_id".to_owned(), "OrderRef".to_owned())
        );
        assert!(parse_map("order_id").is_err());
        assert!(parse_map("=x").is_err());
    }

    #[test]
    fn the_import_query_is_encoded() {
        let p = import_path(
            "orders",
            Some("alpha 1"),
            None,
            Path::new("/tmp/my orders.csv"),
            &[
                ("order_id".into(), "Ref#".into()),
                ("time".into(), "T".into()),
            ],
        );
        assert_eq!(
            p,
            "/api/v1/import/orders?strategy=alpha%201&file=my%20orders.csv&map=order_id%3DRef%23%2Ctime%3DT"
        );
        assert_eq!(
            import_path("prices", None, None, Path::new("/"), &[]),
            "/api/v1/import/prices"
        );
    }

    #[test]
    fn the_report_names_every_section_and_null() {
        let r = json!({
            "strategy": "s",
            "period": {"start": "2020-01-01", "end": "2020-12-31", "observations": 252, "missing": 0, "period_days": 0},
            "performance": {"total_return": 0.1, "sharpe_ratio": 1.5, "max_drawdown": -0.2, "max_drawdown_duration_days": 12, "win_rate": null},
            "risk": {"volatility": 0.15},
            "trades": {"total": 0, "winning": 0, "losing": 0, "breakeven": 0},
            "reasons": {"performance.win_rate": "no closed trades"},
            "periods_per_year": 252.0,
            "risk_free_rate": 0.0,
            "compute": {"device": "cpu", "note": "computed on the CPU", "elapsed_ms": 0.25}
        });
        let out = render_report(&r);
        for s in [
            "Period\n",
            "Performance\n",
            "Risk\n",
            "Trades\n",
            "Benchmark\n",
            "  total return           10.00%\n",
            "  sharpe ratio           1.500\n",
            "  max drawdown           -20.00%\n",
            "  win rate               n/a\n",
            "null because: performance.win_rate  no closed trades\n",
            "compute: cpu in 0.250 ms; computed on the CPU\n",
        ] {
            assert!(out.contains(s), "{s:?} not in:\n{out}");
        }
    }
}
