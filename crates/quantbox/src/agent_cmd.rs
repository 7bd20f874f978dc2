//! `quantbox agent run`: the agent runtime. Inside a sandbox (the binary is bound there
//! read-only) it replays the bundled daily bars of the requested symbols and dates
//! through a built-in strategy and the paper broker, and prints the agent event protocol
//! (docs/agent-protocol.md) on stdout, one JSON object per line. `run_e2b_agent` starts
//! it; it also runs anywhere by hand.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use quantbox_trading::backtest::{self, DEFAULT_START_EQUITY};
use quantbox_trading::protocol::Event;
use quantbox_trading::{BrokerConfig, Day, Strategy, market};

#[derive(Subcommand)]
pub enum AgentVerb {
    /// Run a built-in strategy over bundled daily bars and print its events (JSON lines).
    Run(RunArgs),
    /// Print bundled daily bars as protocol `bar` events (prices adjusted for splits and
    /// dividends, as the built-in agents see them): a feed for custom agents.
    Bars(BarsArgs),
}

#[derive(Args)]
pub struct BarsArgs {
    /// Comma-separated symbols of the bundled data.
    #[arg(long, value_delimiter = ',', required = true)]
    symbols: Vec<String>,
    /// First date (YYYY-MM-DD).
    #[arg(long)]
    start: Option<String>,
    /// Last date (YYYY-MM-DD).
    #[arg(long)]
    end: Option<String>,
}

#[derive(Args)]
pub struct RunArgs {
    /// momentum, mean_reversion, pairs, trend or buy_and_hold.
    #[arg(long)]
    strategy: String,
    /// Comma-separated symbols of the bundled data (AAPL, IBM, MSFT, GOOG, FB, SPX, IXIC).
    #[arg(long, value_delimiter = ',', required = true)]
    symbols: Vec<String>,
    /// First date (YYYY-MM-DD) [default: the symbols' first common date].
    #[arg(long)]
    start: Option<String>,
    /// Last date (YYYY-MM-DD) [default: their last common date].
    #[arg(long)]
    end: Option<String>,
    /// Starting cash.
    #[arg(long, default_value_t = DEFAULT_START_EQUITY)]
    capital: f64,
    /// Strategy parameters as a JSON object (see docs/agent-protocol.md).
    #[arg(long, default_value = "{}")]
    params: String,
    /// Paper broker settings as a JSON object (spread, impact, fees, latency, seed).
    #[arg(long, default_value = "{}")]
    broker: String,
    /// `backtest` (as fast as possible) or `paper` (one date every --pace-ms, with the
    /// output flushed as it goes).
    #[arg(long, default_value = "backtest")]
    mode: String,
    /// Milliseconds per date in paper mode.
    #[arg(long, default_value_t = 100)]
    pace_ms: u64,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

fn day(s: &Option<String>, what: &str) -> Result<Option<Day>, String> {
    s.as_deref()
        .map(|v| Day::parse(v).ok_or_else(|| format!("--{what}: `{v}` is not a date (YYYY-MM-DD)")))
        .transpose()
}

fn bars_main(a: BarsArgs) -> ExitCode {
    let (start, end) = match (day(&a.start, "start"), day(&a.end, "end")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let bundled = match market::bundled() {
        Ok(b) => b,
        Err(e) => return fail(format!("the bundled market data: {e}")),
    };
    let mut events = Vec::new();
    for s in &a.symbols {
        let Some(b) = bundled.iter().find(|b| &b.symbol == s) else {
            return fail(format!("unknown symbol `{s}`"));
        };
        for x in &b.bars {
            if start.is_some_and(|d| x.day < d) || end.is_some_and(|d| x.day > d) {
                continue;
            }
            let f = x.adj_close / x.close;
            events.push(Event::Bar(quantbox_trading::protocol::BarEvent {
                t_ms: x.day.start_ms() + backtest::CLOSE_OFFSET_MS,
                symbol: s.clone(),
                open: x.open * f,
                high: x.high * f,
                low: x.low * f,
                close: x.adj_close,
                volume: x.volume / f,
            }));
        }
    }
    events.sort_by_key(|e| e.t_ms());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for e in &events {
        if writeln!(out, "{}", e.to_line()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

pub fn main(verb: AgentVerb) -> ExitCode {
    let a = match verb {
        AgentVerb::Run(a) => a,
        AgentVerb::Bars(b) => return bars_main(b),
    };
    let (start, end) = match (day(&a.start, "start"), day(&a.end, "end")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    if !matches!(a.mode.as_str(), "backtest" | "paper") {
        return fail(format!(
            "--mode: `{}` is neither backtest nor paper",
            a.mode
        ));
    }
    let params: serde_json::Value = match serde_json::from_str(&a.params) {
        Ok(v) => v,
        Err(e) => return fail(format!("--params: not JSON: {e}")),
    };
    let strategy = match Strategy::new(&a.strategy, &params, &a.symbols) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let broker = match serde_json::from_str::<serde_json::Value>(&a.broker)
        .map_err(|e| format!("not JSON: {e}"))
        .and_then(|v| BrokerConfig::from_json(&v).map_err(|e| e.to_string()))
    {
        Ok(b) => b,
        Err(e) => return fail(format!("--broker: {e}")),
    };
    let bundled = match market::bundled() {
        Ok(b) => b,
        Err(e) => return fail(format!("the bundled market data: {e}")),
    };
    let mut bars = Vec::new();
    for s in &a.symbols {
        let Some(b) = bundled.iter().find(|b| &b.symbol == s) else {
            return fail(format!(
                "unknown symbol `{s}`; the bundled ones are {}",
                bundled
                    .iter()
                    .map(|b| b.symbol.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let sel: Vec<_> = b
            .bars
            .iter()
            .filter(|x| start.is_none_or(|d| x.day >= d) && end.is_none_or(|d| x.day <= d))
            .copied()
            .collect();
        if sel.is_empty() {
            return fail(format!(
                "{s} has no bars between {} and {} (its data: {} to {})",
                start.map_or("its start".into(), |d| d.to_string()),
                end.map_or("its end".into(), |d| d.to_string()),
                b.bars[0].day,
                b.bars[b.bars.len() - 1].day
            ));
        }
        bars.push((s.clone(), sel));
    }
    let paper = a.mode == "paper";
    let pace = Duration::from_millis(a.pace_ms);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut last_day: Option<i64> = None;
    let mut write_err = None;
    let mut emit = |e: &Event| {
        if write_err.is_some() {
            return;
        }
        if paper && let Event::Bar(b) = e {
            let d = b.t_ms.div_euclid(86_400_000);
            if last_day.is_some_and(|l| l != d) {
                // A new date: what the previous one did is out, then wait.
                let _ = out.flush();
                std::thread::sleep(pace);
            }
            last_day = Some(d);
        }
        let mut line = e.to_line();
        line.push('\n');
        if let Err(err) = out.write_all(line.as_bytes()) {
            write_err = Some(err);
        }
    };
    let r = backtest::run(&bars, &strategy, &broker, a.capital, &mut emit);
    let flushed = out.flush();
    match (r, write_err, flushed) {
        (Err(e), _, _) => fail(e),
        (_, Some(e), _) | (_, _, Err(e)) => fail(format!("writing the events: {e}")),
        (Ok(_), None, Ok(())) => ExitCode::SUCCESS,
    }
}
