//! `quantbox bench --suite agents`: what a trading agent run costs. Two targets:
//!
//! 1. A ten-year daily backtest of five symbols inside a running sandbox: the built-in
//!    momentum agent (`quantbox agent run`, the binary bound into every sandbox) over the
//!    bundled AAPL, IBM, MSFT, SPX and IXIC bars from 2003-03-03 to 2013-03-01, its output
//!    thrown away. Timed three ways: the whole `execute_e2b_process` (process start to
//!    exit, seen from the server), the same command timed inside the sandbox with
//!    `date +%s%N` around it (so the cost of starting a process in the sandbox shows),
//!    and the same backtest in this process (no process at all). Then a full
//!    `run_e2b_agent` of the same backtest, its events parsed and stored in SQLite.
//! 2. Event ingestion into SQLite, in this process and without a sandbox: the events of
//!    the same backtest as protocol lines, through the server's own ingestion path
//!    ([`quantbox_ops::agents::ingest_output`]: [`StreamParser`] over 64 KiB chunks, the
//!    records `run_e2b_agent` keeps, written in batches of up to 20,000), into a fresh
//!    SQLite file opened as the server opens its database. Parsing alone and the store
//!    writes alone (the same rows written directly) are timed as well.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use quantbox_trading::backtest::{self, DEFAULT_START_EQUITY};
use quantbox_trading::protocol::Event;
use quantbox_trading::{
    BrokerConfig, Day, Fill, Order, OrderState, SeriesKind, SeriesPoint, Strategy, StreamParser,
    TradingStore, market,
};
use serde_json::{Value, json};

use crate::bench::{BenchArgs, Engine, Stats, call, ms};

const SYMBOLS: [&str; 5] = ["AAPL", "IBM", "MSFT", "SPX", "IXIC"];
const START: &str = "2003-03-03";
const END: &str = "2013-03-01";
const STRATEGY: &str = "momentum";
/// The sandbox's path of the quantbox binary.
const EXE: &str = quantbox_ops::agents::TOOLS_EXE;
/// What the sandbox hands the server per read of a process's stdout.
const CHUNK: usize = 64 * 1024;
/// Full `run_e2b_agent` runs.
const AGENT_RUNS: usize = 10;

pub(crate) struct AgentsBench {
    common_dates: usize,
    /// Protocol events (= lines) the backtest prints, by type.
    by_type: BTreeMap<&'static str, u64>,
    events: u64,
    stream_bytes: usize,
    /// `execute_e2b_process` of the backtest, seen from the server.
    exec_whole: Stats,
    /// The same command timed inside the sandbox (`date +%s%N` before and after).
    inside: Stats,
    /// The `date +%s%N` pair alone, inside the sandbox.
    inside_timer: Stats,
    /// `quantbox --version` timed inside the sandbox: starting the binary.
    inside_version: Stats,
    /// `execute_e2b_process` of `true > /dev/null` (the same path: through `/bin/sh -c`).
    exec_true: Stats,
    /// The same backtest in this process: bundled data, backtest, lines into memory.
    in_process: Stats,
    /// Of which: decompressing the bundled data and selecting the bars.
    in_process_load: Stats,
    /// Of which: the backtest, its events not written.
    in_process_compute: Stats,
    /// Full `run_e2b_agent`.
    agent: Stats,
    agent_results: Value,
    /// Ingestion without a sandbox: `ingest_output`, parsing alone, the writes alone.
    ingest: Stats,
    parse: Stats,
    store: Stats,
    rows: Rows,
}

/// The rows a run's events make.
#[derive(Clone, Copy, Default, Debug)]
struct Rows {
    orders: usize,
    fills: usize,
    equity: usize,
    trades: usize,
}

fn symbols() -> Vec<String> {
    SYMBOLS.iter().map(|s| (*s).to_owned()).collect()
}

fn day(s: &str) -> Day {
    Day::parse(s).expect("a valid date")
}

/// The agent's command line, as a user would type it in the sandbox.
fn agent_command() -> String {
    format!(
        "{EXE} agent run --strategy {STRATEGY} --symbols {} --start {START} --end {END}",
        SYMBOLS.join(",")
    )
}

type Bars = Vec<(String, Vec<quantbox_trading::Bar>)>;

/// The bundled data decompressed and the bars of the symbols and dates selected, as
/// `quantbox agent run` does it.
fn load_bars() -> Result<Bars> {
    let bundled = market::bundled().context("reading the bundled market data")?;
    let (start, end) = (day(START), day(END));
    let mut bars = Vec::new();
    for s in symbols() {
        let b = bundled
            .iter()
            .find(|b| b.symbol == s)
            .with_context(|| format!("{s} is not in the bundled data"))?;
        let sel: Vec<_> = b
            .bars
            .iter()
            .filter(|x| x.day >= start && x.day <= end)
            .copied()
            .collect();
        bars.push((s, sel));
    }
    Ok(bars)
}

/// The backtest over `bars` with `quantbox agent run`'s defaults (parameters `{}`,
/// broker `{}`, the default capital); with `write`, every event as a line (returned).
fn run_backtest(bars: &Bars, write: bool) -> Result<Vec<u8>> {
    let strategy = Strategy::new(STRATEGY, &json!({}), &symbols())?;
    let broker = BrokerConfig::from_json(&json!({}))?;
    let mut out = Vec::with_capacity(if write { 4 << 20 } else { 0 });
    backtest::run(bars, &strategy, &broker, DEFAULT_START_EQUITY, &mut |e| {
        if write {
            out.extend_from_slice(e.to_line().as_bytes());
            out.push(b'\n');
        } else {
            std::hint::black_box(e);
        }
    })?;
    Ok(out)
}

/// What `quantbox agent run` does after starting: load, run, write lines.
fn backtest_lines() -> Result<Vec<u8>> {
    run_backtest(&load_bars()?, true)
}

/// Dates on which all five symbols have a bar, between START and END.
fn common_dates() -> Result<usize> {
    let bundled = market::bundled()?;
    let (start, end) = (day(START), day(END));
    let mut count: HashMap<Day, usize> = HashMap::new();
    for s in SYMBOLS {
        let b = bundled
            .iter()
            .find(|b| b.symbol == s)
            .with_context(|| format!("{s} is not in the bundled data"))?;
        for x in b.bars.iter().filter(|x| x.day >= start && x.day <= end) {
            *count.entry(x.day).or_default() += 1;
        }
    }
    Ok(count.values().filter(|&&c| c == SYMBOLS.len()).count())
}

/// Parses `lines` in sandbox-sized chunks; fails on a malformed line.
fn parse_all(lines: &[u8]) -> Result<Vec<Event>> {
    let mut parser = StreamParser::new();
    let mut events = Vec::with_capacity(32 * 1024);
    for chunk in lines.chunks(CHUNK) {
        for r in parser.push(chunk) {
            events.push(r.map_err(|m| anyhow::anyhow!("malformed line: {m}"))?);
        }
    }
    if let Some(r) = parser.finish() {
        events.push(r.map_err(|m| anyhow::anyhow!("malformed line: {m}"))?);
    }
    Ok(events)
}

/// The rows the events make as the run ends: each order in its last state (open ones
/// cancelled), the fills, one equity point per time, the round trips.
struct Records {
    orders: Vec<Order>,
    fills: Vec<Fill>,
    equity: Vec<SeriesPoint>,
    trades: Vec<quantbox_trading::Trade>,
}

impl Records {
    fn rows(&self) -> Rows {
        Rows {
            orders: self.orders.len(),
            fills: self.fills.len(),
            equity: self.equity.len(),
            trades: self.trades.len(),
        }
    }
}

fn records(events: &[Event], strategy: &str) -> Records {
    let mut orders: Vec<Order> = Vec::new();
    let mut index: HashMap<&str, (usize, f64)> = HashMap::new();
    let (mut fills, mut equity) = (Vec::new(), Vec::<SeriesPoint>::new());
    for e in events {
        match e {
            Event::Order(o) => {
                index.insert(&o.id, (orders.len(), 0.0));
                orders.push(quantbox_ops::agents::order_record(strategy, o));
            }
            Event::Ack(a) => {
                if let Some(&(i, _)) = index.get(a.order_id.as_str()) {
                    orders[i].ack_ms = Some(a.t_ms);
                }
            }
            Event::Fill(f) => {
                if let Some((i, filled)) = index.get_mut(f.order_id.as_str()) {
                    let o = &mut orders[*i];
                    *filled += f.quantity;
                    o.state = if *filled + 1e-9 * o.quantity >= o.quantity {
                        OrderState::Filled
                    } else {
                        OrderState::PartiallyFilled
                    };
                    fills.push(Fill {
                        strategy: strategy.to_owned(),
                        order_id: f.order_id.clone(),
                        t_ms: f.t_ms,
                        quantity: f.quantity,
                        price: f.price,
                        fee: f.fee,
                        simulated: true,
                    });
                }
            }
            Event::Reject(r) => {
                if let Some(&(i, _)) = index.get(r.order_id.as_str()) {
                    orders[i].state = OrderState::Rejected;
                    orders[i].reject_reason = Some(r.reason.clone());
                }
            }
            Event::Equity(q) => match equity.last_mut() {
                Some(last) if q.t_ms == last.t_ms => last.value = q.equity,
                Some(last) if q.t_ms < last.t_ms => {}
                _ if q.equity > 0.0 => equity.push(SeriesPoint {
                    t_ms: q.t_ms,
                    value: q.equity,
                }),
                _ => {}
            },
            _ => {}
        }
    }
    for o in &mut orders {
        if o.state == OrderState::Open {
            o.state = OrderState::Cancelled;
        }
    }
    let mut trades = backtest::round_trips(events, strategy);
    for t in &mut trades {
        t.simulated = true;
    }
    Records {
        orders,
        fills,
        equity,
        trades,
    }
}

struct Ingestion {
    ingest: Stats,
    parse: Stats,
    store: Stats,
    rows: Rows,
}

/// Ingestion without a sandbox, `n` times each (after one untimed round): the server's
/// path, `ingest_output`, from the bytes; parsing alone; the rows written alone. Each
/// starts from an empty strategy (the reset of the previous round is not timed).
fn ingestion(lines: &[u8], events: u64, n: usize, dir: &std::path::Path) -> Result<Ingestion> {
    std::fs::create_dir_all(dir)?;
    let store = quantbox_store::SqliteStore::open(&dir.join("ingest.db"))?;
    let store: &dyn TradingStore = &store;
    let name = "bench-ingest";
    let parsed = parse_all(lines)?;
    if parsed.len() as u64 != events {
        bail!(
            "parsed {} events, the backtest printed {events}",
            parsed.len()
        );
    }
    let rec = records(&parsed, name);
    let rows = rec.rows();
    let (mut ingest, mut parse, mut store_ms) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 1 {
        store.reset_strategy(name, "agent", None)?;
        let t = Instant::now();
        let (stored, malformed) = quantbox_ops::agents::ingest_output(store, name, lines)
            .map_err(|e| anyhow::anyhow!("ingest_output: {}", e.message))?;
        let ingest_ms = ms(t.elapsed());
        if stored != events || malformed != 0 {
            bail!(
                "ingest_output read {stored} events and {malformed} malformed lines, expected {events} events"
            );
        }
        let held = store.fills(Some(name), i64::MIN, i64::MAX)?.len();
        if held != rows.fills {
            bail!(
                "the store holds {held} fills of the run, its events have {}",
                rows.fills
            );
        }

        let t = Instant::now();
        let ev = parse_all(lines)?;
        let parse_ms = ms(t.elapsed());
        std::hint::black_box(ev);

        store.reset_strategy(name, "agent", None)?;
        let t = Instant::now();
        store.put_orders(&rec.orders)?;
        store.put_fills(&rec.fills)?;
        store.append_series(name, "agent", SeriesKind::Equity, &rec.equity)?;
        store.put_trades(&rec.trades)?;
        let write_ms = ms(t.elapsed());
        if i > 0 {
            ingest.push(ingest_ms);
            parse.push(parse_ms);
            store_ms.push(write_ms);
        }
    }
    Ok(Ingestion {
        ingest: Stats::new(ingest),
        parse: Stats::new(parse),
        store: Stats::new(store_ms),
        rows,
    })
}

async fn exec(app: &crate::app::App, id: &str, command: &str) -> Result<Value> {
    let out = call(
        app,
        "execute_e2b_process",
        json!({"sandbox_id": id, "command": command, "timeout": 120}),
    )
    .await?;
    if out["exit_code"] != json!(0) {
        bail!("`{command}` failed in the sandbox: {out}");
    }
    Ok(out)
}

/// Runs a shell `body` inside the sandbox between two `date +%s%N`; returns the ms.
async fn inside_ms(app: &crate::app::App, id: &str, body: &str) -> Result<f64> {
    let cmd = format!("s=$(date +%s%N); {body}; e=$(date +%s%N); echo $((e - s))");
    let out = exec(app, id, &cmd).await?;
    let ns: f64 = out["stdout"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .parse()
        .with_context(|| format!("the sandbox printed no timing: {out}"))?;
    Ok(ns / 1e6)
}

fn count_types(lines: &[u8]) -> Result<BTreeMap<&'static str, u64>> {
    let mut by_type = BTreeMap::new();
    for e in parse_all(lines)? {
        *by_type.entry(e.type_name()).or_default() += 1;
    }
    Ok(by_type)
}

pub(crate) async fn run(a: &BenchArgs) -> Result<AgentsBench> {
    let n = a.iterations().max(20);
    let progress = |what: &str| {
        if !a.json() {
            eprintln!("· {what}");
        }
    };
    progress(&format!(
        "{STRATEGY} over {} from {START} to {END}, in this process, {n} times",
        SYMBOLS.join(", ")
    ));
    let common = common_dates()?;
    let lines = backtest_lines()?;
    let by_type = count_types(&lines)?;
    let events: u64 = by_type.values().sum();
    if by_type.get("bar").copied().unwrap_or(0) != (common * SYMBOLS.len()) as u64 {
        bail!(
            "the backtest printed {:?} bars, expected {common} dates × {}",
            by_type.get("bar"),
            SYMBOLS.len()
        );
    }
    let (mut in_process, mut load, mut compute) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 2 {
        let t = Instant::now();
        std::hint::black_box(backtest_lines()?);
        let whole = ms(t.elapsed());
        let t = Instant::now();
        let bars = std::hint::black_box(load_bars()?);
        let loaded = ms(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(run_backtest(&bars, false)?);
        if i >= 2 {
            in_process.push(whole);
            load.push(loaded);
            compute.push(ms(t.elapsed()));
        }
    }

    progress(&format!(
        "ingestion of its {events} events into SQLite, no sandbox, {n} times"
    ));
    let dir = std::env::temp_dir().join(format!("quantbox-bench-{}-ingest", std::process::id()));
    let ing = {
        let (lines, dir) = (lines.clone(), dir.clone());
        tokio::task::spawn_blocking(move || ingestion(&lines, events, n, &dir)).await?
    };
    let _ = std::fs::remove_dir_all(&dir);
    let ing = ing?;

    let e = Engine::open(a, "agents", 0).await?;
    let app = e.app();
    let id = call(
        app,
        "create_e2b_sandbox",
        json!({"name": "agents", "memory_mb": 512, "timeout": 3600}),
    )
    .await?["sandbox_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let cmd = agent_command();
    progress("checking the run in the sandbox (bar and line counts)");
    let sid = id.as_str();
    let count = |filter: &str| {
        let c = format!("{cmd} | {filter}");
        async move {
            let out = exec(app, sid, &c).await?;
            out["stdout"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .parse::<u64>()
                .with_context(|| format!("`{c}` printed no count: {out}"))
        }
    };
    let bars_in_sandbox = count("grep -c '\"type\":\"bar\"'").await?;
    let lines_in_sandbox = count("wc -l").await?;
    if bars_in_sandbox != (common * SYMBOLS.len()) as u64 || lines_in_sandbox != events {
        bail!(
            "in the sandbox the run printed {bars_in_sandbox} bars and {lines_in_sandbox} lines; in this process {} bars and {events} lines",
            common * SYMBOLS.len()
        );
    }

    let quiet = format!("{cmd} > /dev/null");
    progress(&format!(
        "the backtest in a running sandbox, {n} times (whole exec, timed inside, `true`)"
    ));
    for _ in 0..3 {
        exec(app, &id, &quiet).await?;
    }
    let (mut whole, mut inside, mut timer, mut version, mut truth) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        exec(app, &id, &quiet).await?;
        whole.push(ms(t.elapsed()));
        inside.push(inside_ms(app, &id, &quiet).await?);
        timer.push(inside_ms(app, &id, ":").await?);
        version.push(inside_ms(app, &id, &format!("{EXE} --version > /dev/null")).await?);
        let t = Instant::now();
        exec(app, &id, "true > /dev/null").await?;
        truth.push(ms(t.elapsed()));
    }

    progress(&format!(
        "run_e2b_agent of the same backtest, events stored in SQLite, {AGENT_RUNS} times"
    ));
    let args = json!({
        "sandbox_id": id,
        "agent_type": STRATEGY,
        "symbols": SYMBOLS,
        "strategy_params": {"start": START, "end": END},
    });
    let mut agent = Vec::new();
    let mut agent_results = Value::Null;
    for i in 0..AGENT_RUNS + 1 {
        let t = Instant::now();
        let out = call(app, "run_e2b_agent", args.clone()).await?;
        let took = ms(t.elapsed());
        if out["status"] != json!("completed")
            || out["results"]["bars_processed"] != json!(common * SYMBOLS.len())
            || out["results"]["malformed_lines"] != json!(0)
        {
            bail!("run_e2b_agent did not store the whole run: {out}");
        }
        if i > 0 {
            agent.push(took);
        }
        agent_results = out["results"].clone();
    }
    call(
        app,
        "terminate_e2b_sandbox",
        json!({"sandbox_id": id, "force": true}),
    )
    .await?;
    e.close().await;

    Ok(AgentsBench {
        common_dates: common,
        by_type,
        events,
        stream_bytes: lines.len(),
        exec_whole: Stats::new(whole),
        inside: Stats::new(inside),
        inside_timer: Stats::new(timer),
        inside_version: Stats::new(version),
        exec_true: Stats::new(truth),
        in_process: Stats::new(in_process),
        in_process_load: Stats::new(load),
        in_process_compute: Stats::new(compute),
        agent: Stats::new(agent),
        agent_results,
        ingest: ing.ingest,
        parse: ing.parse,
        store: ing.store,
        rows: ing.rows,
    })
}

impl AgentsBench {
    /// Events per second at a time of `ms`.
    fn rate(&self, ms: f64) -> f64 {
        self.events as f64 / (ms / 1000.0)
    }

    /// A throughput: the time's figures and the events per second at its p50, at its p95
    /// (95 % of the runs were at least this fast) and at its mean.
    fn rate_json(&self, s: &Stats) -> Value {
        let mut v = s.json();
        v["events"] = json!(self.events);
        v["events_per_s_p50"] = json!(self.rate(s.pct(0.5)).round());
        v["events_per_s_at_p95_time"] = json!(self.rate(s.pct(0.95)).round());
        v["events_per_s_mean"] = json!(self.rate(s.mean()).round());
        v
    }

    pub(crate) fn json(&self) -> Value {
        let r = &self.rows;
        json!({
            "backtest": {
                "strategy": STRATEGY,
                "symbols": SYMBOLS,
                "start": START,
                "end": END,
                "common_dates": self.common_dates,
                "events": self.events,
                "events_by_type": self.by_type,
                "stream_bytes": self.stream_bytes,
                "command": format!("{} > /dev/null", agent_command()),
            },
            "backtest_in_sandbox": {
                "target_ms": 50,
                "exec_whole": self.exec_whole.json(),
                "inside_sandbox": self.inside.json(),
                "inside_timer_alone": self.inside_timer.json(),
                "inside_quantbox_version": self.inside_version.json(),
                "exec_true_via_sh": self.exec_true.json(),
                "in_process_no_sandbox": self.in_process.json(),
                "in_process_load_bundled_data": self.in_process_load.json(),
                "in_process_backtest_without_lines": self.in_process_compute.json(),
            },
            "run_e2b_agent": {
                "latency": self.rate_json(&self.agent),
                "results": self.agent_results,
            },
            "ingestion_in_process": {
                "target_events_per_s": 200_000,
                "path": "quantbox_ops::agents::ingest_output (StreamParser over 64 KiB chunks, run_e2b_agent's records, batches of up to 20,000)",
                "store": "a fresh SQLite file, opened as the server opens its database (WAL, synchronous=NORMAL)",
                "ingest_output": self.rate_json(&self.ingest),
                "parse_only": self.rate_json(&self.parse),
                "store_writes_only": self.rate_json(&self.store),
                "rows": {"orders": r.orders, "fills": r.fills, "equity_points": r.equity, "trades": r.trades},
            },
        })
    }
}

pub(crate) fn print(a: &BenchArgs, m: &AgentsBench) -> Result<()> {
    if a.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"agents": m.json()}))?
        );
        return Ok(());
    }
    let row = |name: &str, p50: f64, p95: f64, mean: f64, unit: &str, target: &str| {
        println!("{name:<52} {p50:>10.2} {p95:>10.2} {mean:>10.2} {unit:<8} {target}");
    };
    let lat = |name: &str, s: &Stats, target: &str| {
        row(name, s.pct(0.5), s.pct(0.95), s.mean(), "ms", target);
    };
    let thr = |name: &str, s: &Stats, target: &str| {
        row(
            name,
            m.rate(s.pct(0.5)),
            m.rate(s.pct(0.95)),
            m.rate(s.mean()),
            "events/s",
            target,
        );
    };
    println!(
        "\n{:<52} {:>10} {:>10} {:>10} {:<8} target",
        "agents", "p50", "p95", "mean", "unit"
    );
    lat(
        "backtest in a running sandbox (whole exec)",
        &m.exec_whole,
        "p50 <= 50 ms",
    );
    lat("  the command timed inside the sandbox", &m.inside, "");
    lat("  the inside timer alone (two `date`)", &m.inside_timer, "");
    lat(
        "  `quantbox --version` inside (binary start)",
        &m.inside_version,
        "",
    );
    lat("  exec `true > /dev/null` (via sh)", &m.exec_true, "");
    lat(
        "  the same backtest in process (no sandbox)",
        &m.in_process,
        "",
    );
    lat("    loading the bundled data", &m.in_process_load, "");
    lat(
        "    the backtest, no lines written",
        &m.in_process_compute,
        "",
    );
    lat(
        "run_e2b_agent, same backtest, stored (end to end)",
        &m.agent,
        "",
    );
    thr("  its events per second", &m.agent, "");
    thr(
        "ingestion into SQLite, in process (ingest_output)",
        &m.ingest,
        ">= 200,000 events/s",
    );
    lat("  the same, whole stream", &m.ingest, "");
    thr("  parsing only (StreamParser)", &m.parse, "");
    thr("  store writes only (the same rows)", &m.store, "");
    let r = &m.rows;
    println!(
        "\nbacktest: {STRATEGY}, {} from {START} to {END}: {} common dates, {} events ({}) in {} bytes of lines",
        SYMBOLS.join(", "),
        m.common_dates,
        m.events,
        m.by_type
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        m.stream_bytes
    );
    println!(
        "events/s rows: the event count over the p50, p95 and mean time (the p95 column: 95 % of runs were at least this fast)"
    );
    println!(
        "ingestion: quantbox_ops::agents::ingest_output into a fresh SQLite file ({} orders, {} fills, {} equity points, {} round trips); each round starts from an empty strategy",
        r.orders, r.fills, r.equity, r.trades
    );
    Ok(())
}
