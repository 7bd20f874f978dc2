//! `run_e2b_agent`: a trading agent run inside a sandbox. A built-in strategy runs as
//! the quantbox binary (bound read-only into every sandbox) replaying bundled daily bars;
//! a `custom` agent is any program in the sandbox. Either prints the agent event
//! protocol (docs/agent-protocol.md) on stdout; the server parses the stream while it
//! runs (malformed lines are counted, never fatal) and stores orders, fills, equity and
//! feed heartbeats under the strategy's name, so the analytics tools see the run.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quantbox_analytics as an;
use quantbox_sandbox::{ExecParams, ExecUser, OutputSink, Stream};
use quantbox_trading::protocol::{DoneStatus, Event, StreamParser};
use quantbox_trading::{
    Fill, Heartbeat, Order, OrderState, SeriesKind, SeriesPoint, TradingStore, market,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Ops;
use crate::error::{ErrorCode, OpError};
use crate::report::check_strategy;

/// Where the quantbox binary is inside a local sandbox.
pub const TOOLS_EXE: &str = "/run/quantbox/quantbox";

/// The built-in strategies and `custom`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AgentType {
    Momentum,
    MeanReversion,
    Pairs,
    Trend,
    BuyAndHold,
    Custom,
}

impl AgentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Momentum => "momentum",
            Self::MeanReversion => "mean_reversion",
            Self::Pairs => "pairs",
            Self::Trend => "trend",
            Self::BuyAndHold => "buy_and_hold",
            Self::Custom => "custom",
        }
    }
}

/// Arguments of `run_e2b_agent`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentInput {
    /// The running sandbox to run the agent in.
    pub sandbox_id: String,
    /// `momentum`, `mean_reversion`, `pairs`, `trend`, `buy_and_hold`, or `custom` (a
    /// program in the sandbox named by `strategy_params.command`).
    pub agent_type: AgentType,
    /// Symbols to trade, at least one (`pairs` needs exactly two): bundled ones (AAPL,
    /// IBM, MSFT, GOOG, FB, SPX, IXIC).
    pub symbols: Vec<String>,
    /// Strategy parameters (object, or a string holding one) with documented defaults,
    /// plus `strategy_name` (default: the agent type), `start` and `end` (YYYY-MM-DD;
    /// default: the symbols' common data), `initial_capital` (default 100000), `timeout`
    /// (seconds, default 300), `mode` (`backtest`, default, or `paper`: bars replayed at
    /// `pace_ms` per bar, default 100), `command` (custom agents).
    #[serde(default)]
    pub strategy_params: Option<Value>,
    /// Ask for a GPU (the built-in agents run on the CPU; the answer says why).
    #[serde(default)]
    pub use_gpu: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentResults {
    pub bars_processed: u64,
    pub orders: u64,
    pub fills: u64,
    pub rejects: u64,
    /// Closed round trips.
    pub trades: u64,
    pub final_equity: Option<f64>,
    pub total_return: Option<f64>,
    pub sharpe_ratio: Option<f64>,
    pub max_drawdown: Option<f64>,
    /// Lines of stdout that were not protocol events (logged and skipped).
    pub malformed_lines: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GpuOut {
    pub requested: bool,
    pub used: bool,
    pub reason: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentOutput {
    pub execution_id: String,
    pub sandbox_id: String,
    pub agent_type: String,
    pub strategy_name: String,
    /// `completed`, `failed` or `timed_out`.
    pub status: String,
    /// Why it failed or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub results: AgentResults,
    /// The last lines of the agent's log events and unparsed stdout.
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub execution_time_ms: i64,
    pub gpu: GpuOut,
    /// The records are simulated (a paper broker), not a venue's.
    pub simulated: bool,
}

/// An agent run checked and ready to start.
struct Prepared {
    started: Instant,
    id: quantbox_sandbox::SandboxId,
    c: Control,
    strategy_name: String,
    command: String,
    params: Value,
    input: AgentInput,
}

/// A run's events as they arrive (shared with whoever watches its progress).
#[derive(Clone)]
pub struct Live(Arc<Mutex<(Ingest, StreamParser)>>);

impl Live {
    fn new(strategy: &str) -> Self {
        Self(Arc::new(Mutex::new((
            Ingest::new(strategy),
            StreamParser::new(),
        ))))
    }

    /// Counts so far: bars, orders, fills, rejects, malformed lines, last equity.
    pub fn progress(&self) -> Progress {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let ing = &g.0;
        Progress {
            bars_processed: ing.bars,
            orders: ing.order_seq.len() as u64,
            fills: ing.n_fills,
            rejects: ing.rejects,
            malformed_lines: ing.malformed,
            last_event: ing
                .last_beat
                .map(|t| quantbox_sandbox::Timestamp::from_unix_ms(t).to_rfc3339()),
            equity: ing.equity.last().map(|p| p.value).or(ing.last_equity_value),
        }
    }
}

/// A running agent's progress.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Progress {
    pub bars_processed: u64,
    pub orders: u64,
    pub fills: u64,
    pub rejects: u64,
    pub malformed_lines: u64,
    /// When the latest bar or heartbeat arrived.
    pub last_event: Option<String>,
    /// The latest equity.
    pub equity: Option<f64>,
}

/// What `strategy_params` holds besides the strategy's own parameters.
#[derive(Debug)]
struct Control {
    strategy_name: Option<String>,
    start: Option<quantbox_trading::Day>,
    end: Option<quantbox_trading::Day>,
    initial_capital: f64,
    timeout_s: u64,
    mode: String,
    pace_ms: u64,
    command: Option<String>,
    params: serde_json::Map<String, Value>,
}

fn take_str(p: &mut serde_json::Map<String, Value>, k: &str) -> Result<Option<String>, OpError> {
    match p.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(OpError::invalid(
            &format!("strategy_params.{k}"),
            format!("must be a string, not {}", crate::args::kind(&v)),
        )),
    }
}

fn take_num(p: &mut serde_json::Map<String, Value>, k: &str) -> Result<Option<f64>, OpError> {
    match p.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(v) => Err(OpError::invalid(
            &format!("strategy_params.{k}"),
            format!("must be a number, not {}", crate::args::kind(&v)),
        )),
    }
}

fn control(v: Option<Value>) -> Result<Control, OpError> {
    let mut p = match v {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(o)) => o,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(o)) => o,
            Ok(other) => {
                return Err(OpError::invalid(
                    "strategy_params",
                    format!(
                        "must be a JSON object (or a string holding one); the string holds {}",
                        crate::args::kind(&other)
                    ),
                ));
            }
            Err(e) => {
                return Err(OpError::invalid(
                    "strategy_params",
                    format!("the string is not JSON: {e}"),
                ));
            }
        },
        Some(other) => {
            return Err(OpError::invalid(
                "strategy_params",
                format!(
                    "must be a JSON object (or a string holding one), not {}",
                    crate::args::kind(&other)
                ),
            ));
        }
    };
    let day = |p: &mut serde_json::Map<String, Value>, k: &str| -> Result<_, OpError> {
        take_str(p, k)?
            .map(|s| {
                quantbox_trading::Day::parse(&s).ok_or_else(|| {
                    OpError::invalid(
                        &format!("strategy_params.{k}"),
                        format!("`{s}` is not a date (YYYY-MM-DD)"),
                    )
                })
            })
            .transpose()
    };
    let strategy_name = take_str(&mut p, "strategy_name")?;
    if let Some(n) = &strategy_name {
        check_strategy(n).map_err(|e| {
            OpError::invalid(
                "strategy_params.strategy_name",
                e.message.replace("strategy: ", ""),
            )
        })?;
    }
    let start = day(&mut p, "start")?;
    let end = day(&mut p, "end")?;
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(OpError::invalid(
            "strategy_params.end",
            format!("{e} is before start {s}"),
        ));
    }
    let initial_capital = take_num(&mut p, "initial_capital")?.unwrap_or(100_000.0);
    if !(initial_capital.is_finite() && initial_capital > 0.0 && initial_capital <= 1e12) {
        return Err(OpError::invalid(
            "strategy_params.initial_capital",
            format!("must be greater than 0 and at most 1e12, got {initial_capital}"),
        ));
    }
    let timeout = take_num(&mut p, "timeout")?.unwrap_or(300.0);
    if !(timeout.fract() == 0.0 && (1.0..=86_400.0).contains(&timeout)) {
        return Err(OpError::invalid(
            "strategy_params.timeout",
            format!("must be a whole number of seconds from 1 to 86400, got {timeout}"),
        ));
    }
    let mode = take_str(&mut p, "mode")?.unwrap_or_else(|| "backtest".into());
    if !matches!(mode.as_str(), "backtest" | "paper") {
        return Err(OpError::invalid(
            "strategy_params.mode",
            format!("must be `backtest` or `paper`, got `{mode}`"),
        ));
    }
    let pace = take_num(&mut p, "pace_ms")?.unwrap_or(100.0);
    if !(pace.fract() == 0.0 && (0.0..=60_000.0).contains(&pace)) {
        return Err(OpError::invalid(
            "strategy_params.pace_ms",
            format!("must be a whole number of milliseconds from 0 to 60000, got {pace}"),
        ));
    }
    let command = take_str(&mut p, "command")?;
    Ok(Control {
        strategy_name,
        start,
        end,
        initial_capital,
        timeout_s: timeout as u64,
        mode,
        pace_ms: pace as u64,
        command,
        params: p,
    })
}

/// Quotes `s` for `/bin/sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The stored order of an agent's `order` event (open until acks, fills or a reject
/// say more; simulated).
pub fn order_record(strategy: &str, o: &quantbox_trading::protocol::OrderEvent) -> Order {
    Order {
        strategy: strategy.to_owned(),
        id: o.id.clone(),
        symbol: o.symbol.clone(),
        side: o.side,
        quantity: o.quantity,
        order_type: o.order_type.clone(),
        limit_price: o.limit_price,
        arrival_price: Some(o.arrival_price),
        decision_ms: o.decision_ms,
        submit_ms: o.t_ms,
        ack_ms: None,
        state: OrderState::Open,
        reject_reason: None,
        simulated: true,
    }
}

/// The run's records as they arrive, written in batches.
struct Ingest {
    strategy: String,
    orders: HashMap<String, (Order, f64)>,
    order_seq: Vec<String>,
    dirty: Vec<String>,
    fills: Vec<Fill>,
    equity: Vec<SeriesPoint>,
    last_equity_ms: Option<i64>,
    /// The latest equity, also after its point was written.
    last_equity_value: Option<f64>,
    last_beat: Option<i64>,
    beats_written: Option<i64>,
    /// Orders and fills, for the round trips at the end.
    trade_events: Vec<Event>,
    bars: u64,
    n_fills: u64,
    rejects: u64,
    done: Option<(DoneStatus, quantbox_trading::protocol::Summary)>,
    log_tail: VecDeque<String>,
    malformed: u64,
}

const TAIL_LINES: usize = 20;

impl Ingest {
    fn new(strategy: &str) -> Self {
        Self {
            strategy: strategy.to_owned(),
            orders: HashMap::new(),
            order_seq: Vec::new(),
            dirty: Vec::new(),
            fills: Vec::new(),
            equity: Vec::new(),
            last_equity_ms: None,
            last_equity_value: None,
            last_beat: None,
            beats_written: None,
            trade_events: Vec::new(),
            bars: 0,
            n_fills: 0,
            rejects: 0,
            done: None,
            log_tail: VecDeque::new(),
            malformed: 0,
        }
    }

    fn tail(&mut self, line: String) {
        if self.log_tail.len() == TAIL_LINES {
            self.log_tail.pop_front();
        }
        self.log_tail.push_back(line);
    }

    /// One line's outcome: an event, or a malformed line, counted, logged and kept in
    /// the tail.
    fn line(&mut self, r: Result<Event, quantbox_trading::protocol::Malformed>) {
        match r {
            Ok(e) => self.event(e),
            Err(m) => {
                self.malformed += 1;
                tracing::debug!(strategy = %self.strategy, "agent line is not an event: {m}");
                self.tail(format!("not an event: {m}"));
            }
        }
    }

    /// Enough records wait to be written as one batch.
    fn batch_full(&self) -> bool {
        self.fills.len() + self.equity.len() + self.dirty.len() > 20_000
    }

    fn event(&mut self, e: Event) {
        match &e {
            // The feed's sign of life is when a bar or heartbeat arrived (a replayed
            // bar carries its historical date).
            Event::Bar(_) => {
                self.bars += 1;
                self.last_beat = Some(quantbox_sandbox::Timestamp::now().unix_ms());
            }
            Event::Heartbeat(_) => {
                self.last_beat = Some(quantbox_sandbox::Timestamp::now().unix_ms());
            }
            Event::Order(o) => {
                if !self.orders.contains_key(&o.id) {
                    self.order_seq.push(o.id.clone());
                }
                let order = order_record(&self.strategy, o);
                self.orders.insert(o.id.clone(), (order, 0.0));
                self.dirty.push(o.id.clone());
                self.trade_events.push(e.clone());
            }
            Event::Ack(a) => {
                if let Some((o, _)) = self.orders.get_mut(&a.order_id) {
                    o.ack_ms = Some(a.t_ms);
                    self.dirty.push(a.order_id.clone());
                }
            }
            Event::Fill(f) => {
                self.n_fills += 1;
                if let Some((o, filled)) = self.orders.get_mut(&f.order_id) {
                    *filled += f.quantity;
                    o.state = if *filled + 1e-9 * o.quantity >= o.quantity {
                        OrderState::Filled
                    } else {
                        OrderState::PartiallyFilled
                    };
                    self.dirty.push(f.order_id.clone());
                    self.fills.push(Fill {
                        strategy: self.strategy.clone(),
                        order_id: f.order_id.clone(),
                        t_ms: f.t_ms,
                        quantity: f.quantity,
                        price: f.price,
                        fee: f.fee,
                        simulated: true,
                    });
                    self.trade_events.push(e.clone());
                } else {
                    self.tail(format!("fill of unknown order {} skipped", f.order_id));
                }
            }
            Event::Reject(r) => {
                self.rejects += 1;
                if let Some((o, _)) = self.orders.get_mut(&r.order_id) {
                    o.state = OrderState::Rejected;
                    o.reject_reason = Some(r.reason.clone());
                    self.dirty.push(r.order_id.clone());
                }
            }
            Event::Equity(q) => {
                self.last_equity_value = Some(q.equity);
                // One point per time: a later equity at the same time replaces it.
                if self.last_equity_ms.is_some_and(|t| q.t_ms <= t) {
                    if let Some(last) = self.equity.last_mut()
                        && last.t_ms == q.t_ms
                    {
                        last.value = q.equity;
                    }
                } else if q.equity > 0.0 {
                    self.equity.push(SeriesPoint {
                        t_ms: q.t_ms,
                        value: q.equity,
                    });
                    self.last_equity_ms = Some(q.t_ms);
                }
            }
            Event::Log(l) => self.tail(format!("{:?}: {}", l.level, l.message)),
            Event::Done(d) => self.done = Some((d.status, d.summary.clone())),
        }
    }

    /// Writes what arrived since the last flush.
    fn flush(&mut self, store: &dyn TradingStore) -> Result<(), OpError> {
        if !self.dirty.is_empty() {
            self.dirty.sort();
            self.dirty.dedup();
            let orders: Vec<Order> = self
                .dirty
                .drain(..)
                .filter_map(|id| self.orders.get(&id).map(|(o, _)| o.clone()))
                .collect();
            store.put_orders(&orders)?;
        }
        if !self.fills.is_empty() {
            store.put_fills(&std::mem::take(&mut self.fills))?;
        }
        if !self.equity.is_empty() {
            // Keep the last point back: a later equity at its time may still replace it.
            let keep = self.equity.pop();
            if !self.equity.is_empty() {
                store.append_series(&self.strategy, "agent", SeriesKind::Equity, &self.equity)?;
                self.equity.clear();
            }
            self.equity.extend(keep);
        }
        if self.last_beat != self.beats_written
            && let Some(t) = self.last_beat
        {
            store.put_heartbeats(&[Heartbeat {
                strategy: self.strategy.clone(),
                t_ms: t,
                kind: "bar".into(),
            }])?;
            self.beats_written = Some(t);
        }
        Ok(())
    }

    /// The last writes: the held-back equity point, orders still open (the run ended:
    /// cancelled), and the closed round trips.
    fn finish(&mut self, store: &dyn TradingStore) -> Result<u64, OpError> {
        for id in &self.order_seq {
            if let Some((o, _)) = self.orders.get_mut(id)
                && o.state == OrderState::Open
            {
                o.state = OrderState::Cancelled;
                self.dirty.push(id.clone());
            }
        }
        self.flush(store)?;
        if !self.equity.is_empty() {
            store.append_series(&self.strategy, "agent", SeriesKind::Equity, &self.equity)?;
            self.equity.clear();
        }
        let trades = quantbox_trading::backtest::round_trips(&self.trade_events, &self.strategy);
        let mut trades = trades;
        for t in &mut trades {
            t.simulated = true;
        }
        store.put_trades(&trades)?;
        Ok(trades.len() as u64)
    }
}

impl Ops {
    pub async fn run_e2b_agent(&self, input: AgentInput) -> Result<AgentOutput, OpError> {
        let p = self.prepare_agent(input).await?;
        let live = Live::new(&p.strategy_name);
        self.execute_agent(p, live, None).await
    }

    /// Checks the arguments and builds the command, before anything runs.
    async fn prepare_agent(&self, input: AgentInput) -> Result<Prepared, OpError> {
        let started = Instant::now();
        let id = crate::sandboxes::parse_id(&input.sandbox_id)?;
        let c = control(input.strategy_params.clone())?;
        if input.symbols.is_empty() {
            return Err(OpError::invalid("symbols", "must name at least one symbol"));
        }
        if input.symbols.len() > 20 {
            return Err(OpError::invalid("symbols", "at most 20 symbols"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in input.symbols.iter().enumerate() {
            if !seen.insert(s.as_str()) {
                return Err(OpError::invalid(
                    &format!("symbols[{i}]"),
                    format!("`{s}` is listed twice"),
                ));
            }
        }
        let strategy_name = c
            .strategy_name
            .clone()
            .unwrap_or_else(|| input.agent_type.as_str().to_owned());
        let params = Value::Object(c.params.clone());
        let mode_flags = if c.mode == "paper" {
            format!(" --mode paper --pace-ms {}", c.pace_ms)
        } else {
            String::new()
        };
        let dates = format!(
            "{}{}",
            c.start.map(|d| format!(" --start {d}")).unwrap_or_default(),
            c.end.map(|d| format!(" --end {d}")).unwrap_or_default()
        );
        let command = match input.agent_type {
            AgentType::Custom => {
                let cmd = c.command.clone().ok_or_else(|| {
                    OpError::invalid(
                        "strategy_params.command",
                        "a custom agent needs `command`: the program in the sandbox that prints the agent event protocol",
                    )
                })?;
                if cmd.trim().is_empty() {
                    return Err(OpError::invalid(
                        "strategy_params.command",
                        "must not be empty",
                    ));
                }
                cmd
            }
            t => {
                if c.command.is_some() {
                    return Err(OpError::invalid(
                        "strategy_params.command",
                        "only custom agents take a command",
                    ));
                }
                // Checked here, so a bad parameter is an error before anything runs.
                if t == AgentType::Pairs && input.symbols.len() != 2 {
                    return Err(OpError::invalid(
                        "symbols",
                        format!(
                            "pairs trades the spread of exactly 2 symbols, got {}",
                            input.symbols.len()
                        ),
                    ));
                }
                quantbox_trading::strategy::Strategy::new(t.as_str(), &params, &input.symbols)
                    .map_err(|e| OpError::invalid("strategy_params", e.to_string()))?;
                check_symbols(&input.symbols, c.start, c.end)?;
                format!(
                    "exec {TOOLS_EXE} agent run --strategy {} --symbols {} --capital {}{dates}{mode_flags} --params {}",
                    t.as_str(),
                    sh_quote(&input.symbols.join(",")),
                    c.initial_capital,
                    sh_quote(&params.to_string())
                )
            }
        };
        // The arguments are sound: now the sandbox.
        let record = self.manager.get(&id)?;
        if record.provider != "local" {
            return Err(OpError::new(
                ErrorCode::Unavailable,
                format!(
                    "agents run in local sandboxes only for now; sandbox {id} is on provider `{}`",
                    record.provider
                ),
            ));
        }
        Ok(Prepared {
            started,
            id,
            c,
            strategy_name,
            command,
            params,
            input,
        })
    }

    /// Runs a prepared agent, its events going into `ingest` (and the store) as they
    /// come; `cancel` stops it.
    async fn execute_agent(
        &self,
        p: Prepared,
        ingest: Live,
        cancel: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<AgentOutput, OpError> {
        let Prepared {
            started,
            id,
            c,
            strategy_name,
            command,
            params,
            input,
        } = p;
        let ingest = ingest.0;
        let store = self.trading()?.clone();
        {
            let store = store.clone();
            let name = strategy_name.clone();
            // Paper mode has a live feed: a bar every pace_ms, written at least every
            // 200 ms, so the expected interval is the pace but no less than 250 ms.
            let feed = (c.mode == "paper").then_some(c.pace_ms.max(250) as i64);
            tokio::task::spawn_blocking(move || store.reset_strategy(&name, "agent", feed))
                .await
                .map_err(|e| OpError::internal(format!("resetting the strategy: {e}")))??;
        }
        // The stream: parsed and written while the agent runs.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let sink: OutputSink = Arc::new(move |stream, chunk| {
            if stream == Stream::Stdout {
                let _ = tx.send(chunk.to_vec());
            }
        });
        let writer = {
            let ingest = ingest.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let mut last = Instant::now();
                let mut failure: Option<OpError> = None;
                while let Some(chunk) = rx.recv().await {
                    let due = {
                        let mut g = ingest.lock().unwrap_or_else(|e| e.into_inner());
                        let (ing, parser) = &mut *g;
                        for r in parser.push(&chunk) {
                            ing.line(r);
                        }
                        last.elapsed() >= Duration::from_millis(200) || ing.batch_full()
                    };
                    if due && failure.is_none() {
                        last = Instant::now();
                        let ingest = ingest.clone();
                        let store = store.clone();
                        let r = tokio::task::spawn_blocking(move || {
                            let mut g = ingest.lock().unwrap_or_else(|e| e.into_inner());
                            g.0.flush(store.as_ref())
                        })
                        .await;
                        match r {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => failure = Some(e),
                            Err(e) => failure = Some(OpError::internal(e.to_string())),
                        }
                    }
                }
                failure
            })
        };
        let mut env = BTreeMap::new();
        env.insert("QUANTBOX_AGENT_SYMBOLS".into(), input.symbols.join(","));
        env.insert("QUANTBOX_AGENT_STRATEGY".into(), strategy_name.clone());
        env.insert(
            "QUANTBOX_AGENT_CAPITAL".into(),
            c.initial_capital.to_string(),
        );
        env.insert("QUANTBOX_AGENT_PARAMS".into(), params.to_string());
        env.insert("QUANTBOX_AGENT_MODE".into(), c.mode.clone());
        if let Some(d) = c.start {
            env.insert("QUANTBOX_AGENT_START".into(), d.to_string());
        }
        if let Some(d) = c.end {
            env.insert("QUANTBOX_AGENT_END".into(), d.to_string());
        }
        let rec = self
            .manager
            .exec(
                &id,
                ExecParams {
                    command,
                    args: Vec::new(),
                    env,
                    cwd: None,
                    user: ExecUser::User,
                    stdin: None,
                    timeout: Duration::from_secs(c.timeout_s),
                    capture_output: true,
                    on_output: Some(sink),
                    cancel,
                    control: None,
                },
            )
            .await;
        // The sink (and its sender) went with the exec: the writer drains and ends.
        let write_failure = writer
            .await
            .map_err(|e| OpError::internal(format!("storing the agent's events: {e}")))?;
        let rec = rec?;
        let (trades, mut ing) = {
            let ingest = ingest.clone();
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let mut g = ingest.lock().unwrap_or_else(|e| e.into_inner());
                let (ing, parser) = &mut *g;
                if let Some(r) = parser.finish() {
                    ing.line(r);
                }
                let trades = ing.finish(store.as_ref());
                let taken = std::mem::replace(ing, Ingest::new(""));
                (trades, taken)
            })
            .await
            .map_err(|e| OpError::internal(format!("storing the agent's events: {e}")))?
        };
        if let Some(e) = write_failure {
            return Err(e);
        }
        let trades = trades?;
        // Figures of the stored equity curve, as performance_report computes them.
        let (sharpe, max_dd, final_equity, total_return) = {
            let store = store.clone();
            let name = strategy_name.clone();
            let capital = c.initial_capital;
            tokio::task::spawn_blocking(move || -> Result<_, OpError> {
                let Some((kind, points)) = store.series(&name)? else {
                    return Ok((None, None, None, None));
                };
                let last = points.last().map(|p| p.value);
                let r = crate::report::daily_returns(kind, &points)?;
                let finite = |x: f64| x.is_finite().then_some(x);
                Ok((
                    r.as_ref()
                        .and_then(|r| finite(an::sharpe(r.values(), 252.0, 0.0))),
                    r.as_ref()
                        .and_then(|r| finite(an::max_drawdown(r.values()))),
                    last,
                    last.map(|l| l / capital - 1.0),
                ))
            })
            .await
            .map_err(|e| OpError::internal(e.to_string()))??
        };
        let o = &rec.outcome;
        let (status, reason) = if o.cancelled {
            ("stopped", Some("stopped on request".to_owned()))
        } else if o.timed_out {
            (
                "timed_out",
                Some(format!(
                    "the agent ran past its timeout of {} s and was killed",
                    c.timeout_s
                )),
            )
        } else if o.oom_killed {
            (
                "failed",
                Some("the agent was killed by the sandbox's memory limit".to_owned()),
            )
        } else if let Some(err) = &rec.error {
            ("failed", Some(err.clone()))
        } else if o.exit_code != Some(0) {
            (
                "failed",
                Some(match (o.exit_code, &o.signal) {
                    (Some(code), _) => format!("the agent exited with status {code}"),
                    (None, Some(sig)) => format!("the agent was killed by signal {sig}"),
                    _ => "the agent ended abnormally".to_owned(),
                }),
            )
        } else {
            match &ing.done {
                Some((DoneStatus::Completed, _)) => ("completed", None),
                Some((DoneStatus::Failed, _)) => (
                    "failed",
                    Some("the agent reported failure in its `done` event".to_owned()),
                ),
                None => (
                    "failed",
                    Some("the agent exited without a `done` event".to_owned()),
                ),
            }
        };
        let tail = |b: &[u8]| -> String {
            let s = String::from_utf8_lossy(b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
        };
        let orders = ing.order_seq.len() as u64;
        let stdout_tail = std::mem::take(&mut ing.log_tail)
            .into_iter()
            .collect::<Vec<_>>()
            .join("\n");
        Ok(AgentOutput {
            execution_id: rec.id.to_string(),
            sandbox_id: id.to_string(),
            agent_type: input.agent_type.as_str().to_owned(),
            strategy_name,
            status: status.to_owned(),
            reason,
            results: AgentResults {
                bars_processed: ing.bars,
                orders,
                fills: ing.n_fills,
                rejects: ing.rejects,
                trades,
                final_equity,
                total_return,
                sharpe_ratio: sharpe,
                max_drawdown: max_dd,
                malformed_lines: ing.malformed,
            },
            stdout_tail,
            stderr_tail: tail(&o.stderr),
            execution_time_ms: started.elapsed().as_millis() as i64,
            gpu: self.gpu_answer(&id, input.use_gpu, input.agent_type),
            simulated: true,
        })
    }
}

impl Ops {
    /// Whether a GPU was used, and if not why: the host's GPUs as the monitor reads
    /// them, and what the sandbox's provider passes in.
    fn gpu_answer(
        &self,
        id: &quantbox_sandbox::SandboxId,
        requested: bool,
        t: AgentType,
    ) -> GpuOut {
        let devices = self
            .manager
            .get(id)
            .ok()
            .and_then(|r| self.manager.provider(&r.provider).map(|p| p.gpu_devices()))
            .unwrap_or_default();
        let host = match self.monitor_handle().map(|m| m.snapshot().gpu.clone()) {
            Some(quantbox_monitor::GpuReading::Unavailable { reason }) => Some(reason),
            _ => None,
        };
        let reason = match (requested, devices.is_empty(), t) {
            (false, _, _) => "not requested".to_owned(),
            (true, true, _) => match host {
                Some(why) => format!("ran on the CPU: {why}"),
                None => "ran on the CPU: the sandbox's provider passes no GPU in (quantbox serve --gpus auto on a host with NVIDIA devices does)".to_owned(),
            },
            (true, false, AgentType::Custom) => format!(
                "the sandbox has /dev/{}; whether the custom agent used them is up to the agent (quantbox cannot tell)",
                devices.join(", /dev/")
            ),
            (true, false, _) => format!(
                "the sandbox has /dev/{}, but the built-in agents compute on the CPU",
                devices.join(", /dev/")
            ),
        };
        GpuOut {
            requested,
            used: false,
            reason,
        }
    }
}

/// Every symbol is in the bundled data and the dates overlap it.
fn check_symbols(
    symbols: &[String],
    start: Option<quantbox_trading::Day>,
    end: Option<quantbox_trading::Day>,
) -> Result<(), OpError> {
    // The bundled symbols' date ranges, read once per process (decompressing the data
    // takes milliseconds; every run asks).
    type Ranges = Vec<(String, quantbox_trading::Day, quantbox_trading::Day)>;
    static RANGES: std::sync::OnceLock<Result<Ranges, String>> = std::sync::OnceLock::new();
    let ranges = RANGES
        .get_or_init(|| {
            market::bundled()
                .map(|all| {
                    all.into_iter()
                        .map(|b| (b.symbol, b.bars[0].day, b.bars[b.bars.len() - 1].day))
                        .collect()
                })
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| OpError::internal(format!("the bundled market data: {e}")))?;
    for (i, s) in symbols.iter().enumerate() {
        let Some((_, first, last)) = ranges.iter().find(|r| &r.0 == s) else {
            return Err(OpError::invalid(
                &format!("symbols[{i}]"),
                format!(
                    "unknown symbol `{s}`; agents replay the bundled data: {}",
                    market::SYMBOLS.join(", ")
                ),
            ));
        };
        if start.is_some_and(|d| d > *last) || end.is_some_and(|d| d < *first) {
            return Err(OpError::invalid(
                "strategy_params.start",
                format!("{s} has data from {first} to {last}; the dates asked for are outside it"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_keys_are_checked_and_the_rest_are_parameters() {
        let c = control(Some(
            serde_json::json!({"lookback": 5, "start": "2010-01-04", "timeout": 60}),
        ))
        .unwrap();
        assert_eq!(c.timeout_s, 60);
        assert_eq!(c.start.unwrap().to_string(), "2010-01-04");
        assert_eq!(c.params.len(), 1);
        assert_eq!(c.params["lookback"], 5);
        let c = control(Some(Value::String("{\"mode\": \"paper\"}".into()))).unwrap();
        assert_eq!(c.mode, "paper");
        for (v, field) in [
            (
                serde_json::json!({"start": "2010-13-01"}),
                "strategy_params.start",
            ),
            (
                serde_json::json!({"timeout": "60"}),
                "strategy_params.timeout",
            ),
            (serde_json::json!({"timeout": 0}), "strategy_params.timeout"),
            (
                serde_json::json!({"initial_capital": -1}),
                "strategy_params.initial_capital",
            ),
            (serde_json::json!({"mode": "live"}), "strategy_params.mode"),
            (
                serde_json::json!({"start": "2012-01-02", "end": "2011-01-02"}),
                "strategy_params.end",
            ),
            (serde_json::json!([1]), "strategy_params"),
            (Value::String("[1]".into()), "strategy_params"),
        ] {
            let e = control(Some(v.clone())).unwrap_err();
            assert!(e.message.starts_with(field), "{v}: {}", e.message);
        }
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }
}

/// Agent runs started in the background (`POST /api/v1/agents/runs`), by run id. The
/// finished ones are kept (the newest 100) so that their result can be read.
#[derive(Clone, Default)]
pub struct AgentRuns(Arc<Mutex<Vec<Arc<RunEntry>>>>);

pub struct RunEntry {
    run_id: String,
    sandbox_id: String,
    agent_type: &'static str,
    strategy_name: String,
    started_at: quantbox_sandbox::Timestamp,
    live: Live,
    cancel: tokio::sync::watch::Sender<bool>,
    /// The outcome once the run has ended.
    result: Mutex<Option<Result<Value, OpError>>>,
    ended: tokio::sync::watch::Sender<bool>,
}

/// A background run as `GET /api/v1/agents/runs/{id}` shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunStatus {
    pub run_id: String,
    pub sandbox_id: String,
    pub agent_type: String,
    pub strategy_name: String,
    /// `running`, then `completed`, `failed`, `timed_out`, `stopped`, or `error` (the
    /// run could not be carried out: see `error`).
    pub status: String,
    pub started_at: String,
    pub progress: Progress,
    /// `run_e2b_agent`'s answer, once the run has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

const KEEP_FINISHED_RUNS: usize = 100;

impl RunEntry {
    fn status(&self) -> RunStatus {
        let result = self
            .result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (status, result, error) = match result {
            None => ("running".to_owned(), None, None),
            Some(Ok(v)) => (
                v["status"].as_str().unwrap_or("completed").to_owned(),
                Some(v),
                None,
            ),
            Some(Err(e)) => ("error".to_owned(), None, Some(e.to_json()["error"].clone())),
        };
        RunStatus {
            run_id: self.run_id.clone(),
            sandbox_id: self.sandbox_id.clone(),
            agent_type: self.agent_type.to_owned(),
            strategy_name: self.strategy_name.clone(),
            status,
            started_at: self.started_at.to_rfc3339(),
            progress: self.live.progress(),
            result,
            error,
        }
    }
}

impl Ops {
    fn run_entry(&self, run_id: &str) -> Result<Arc<RunEntry>, OpError> {
        self.runs
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.run_id == run_id)
            .cloned()
            .ok_or_else(|| {
                OpError::not_found(format!(
                    "no agent run `{run_id}`; GET /api/v1/agents/runs lists them"
                ))
            })
    }

    /// Starts `run_e2b_agent` in the background: the arguments are checked now (an
    /// error is returned at once), the run goes on after this returns.
    pub async fn start_agent(&self, input: AgentInput) -> Result<RunStatus, OpError> {
        let p = self.prepare_agent(input).await?;
        let live = Live::new(&p.strategy_name);
        let (cancel, cancel_rx) = tokio::sync::watch::channel(false);
        let (ended, _) = tokio::sync::watch::channel(false);
        let entry = Arc::new(RunEntry {
            run_id: format!(
                "run_{}",
                quantbox_sandbox::ExecutionId::generate()
                    .as_str()
                    .trim_start_matches("ex_")
            ),
            sandbox_id: p.id.to_string(),
            agent_type: p.input.agent_type.as_str(),
            strategy_name: p.strategy_name.clone(),
            started_at: quantbox_sandbox::Timestamp::now(),
            live: live.clone(),
            cancel,
            result: Mutex::new(None),
            ended,
        });
        {
            let mut runs = self.runs.0.lock().unwrap_or_else(|e| e.into_inner());
            runs.push(entry.clone());
            // Forget the oldest finished runs beyond the limit.
            let finished: Vec<usize> = runs
                .iter()
                .enumerate()
                .filter(|(_, r)| r.result.lock().unwrap_or_else(|e| e.into_inner()).is_some())
                .map(|(i, _)| i)
                .collect();
            if finished.len() > KEEP_FINISHED_RUNS {
                let drop: Vec<usize> = finished[..finished.len() - KEEP_FINISHED_RUNS].to_vec();
                let mut i = 0;
                runs.retain(|_| {
                    let keep = !drop.contains(&i);
                    i += 1;
                    keep
                });
            }
        }
        let ops = self.clone();
        let e = entry.clone();
        tokio::spawn(async move {
            let r = ops
                .execute_agent(p, live, Some(cancel_rx))
                .await
                .and_then(crate::to_value);
            *e.result.lock().unwrap_or_else(|x| x.into_inner()) = Some(r);
            let _ = e.ended.send(true);
        });
        Ok(entry.status())
    }

    /// A background run's state and progress (its result once it has ended).
    pub fn agent_run(&self, run_id: &str) -> Result<RunStatus, OpError> {
        Ok(self.run_entry(run_id)?.status())
    }

    /// Every background run, newest first.
    pub fn agent_runs(&self) -> Vec<RunStatus> {
        let runs: Vec<Arc<RunEntry>> = self
            .runs
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        runs.iter().rev().map(|r| r.status()).collect()
    }

    /// Stops a background run (its process is killed; what it did so far stays stored)
    /// and returns its final state. Stopping a run that has ended says so.
    pub async fn stop_agent(&self, run_id: &str) -> Result<RunStatus, OpError> {
        let e = self.run_entry(run_id)?;
        let mut ended = e.ended.subscribe();
        if !*ended.borrow() {
            let _ = e.cancel.send(true);
            if tokio::time::timeout(Duration::from_secs(30), ended.wait_for(|v| *v))
                .await
                .is_err()
            {
                return Err(OpError::new(
                    ErrorCode::DeadlineExceeded,
                    format!("agent run {run_id} did not stop within 30 s"),
                ));
            }
        }
        Ok(e.status())
    }
}

/// Parses an agent's output and stores it under `strategy` exactly as `run_e2b_agent`
/// does while a run goes on (the same parser, the same records, batches of up to 20,000
/// records), replacing what the strategy had. For replays and `quantbox bench`. Returns
/// the events stored and the malformed lines skipped.
pub fn ingest_output(
    store: &dyn TradingStore,
    strategy: &str,
    output: &[u8],
) -> Result<(u64, u64), OpError> {
    store.reset_strategy(strategy, "agent", None)?;
    let mut ing = Ingest::new(strategy);
    let mut parser = StreamParser::new();
    // Pipe-sized pieces, as a sandbox's stdout arrives.
    for chunk in output.chunks(64 * 1024) {
        for r in parser.push(chunk) {
            ing.line(r);
        }
        if ing.batch_full() {
            ing.flush(store)?;
        }
    }
    if let Some(r) = parser.finish() {
        ing.line(r);
    }
    ing.finish(store)?;
    Ok((parser.events(), ing.malformed))
}
