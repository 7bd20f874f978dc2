//! A daily backtest: a [`Strategy`] trading through the [`PaperBroker`] over bars, told as
//! protocol [`Event`]s, exactly as an agent would print them.
//!
//! - **Dates.** The symbols are replayed on the dates they all have (an inner join),
//!   oldest first; each symbol's bars must be in strictly ascending date order.
//! - **Prices.** Bars are adjusted for splits and dividends before anything else: with
//!   `f = adj_close / close`, open, high, low and close are multiplied by `f` and the
//!   volume divided by it. Signals, fills, equity and the `bar` events all use adjusted
//!   prices, so a split is not a loss. Prices must be finite and positive, volumes finite
//!   and not negative (0 = unknown, see [`crate::broker`]).
//! - **Times.** A daily bar opens at 14:30 UTC and closes at 21:00 UTC of its date (New
//!   York's session in winter; daylight saving time is ignored). Events of a date: fills
//!   or rejects of the orders decided the day before (at the open), then a `bar` per
//!   symbol, the `equity` and the new `order`s (at the close), each order's `ack` (the
//!   close plus the broker's latency). A `log` event opens the run and `done` ends it.
//! - **Rebalancing.** After each bar's close the strategy gives target weights. When a
//!   symbol's weight changes (or its last order did not fill completely) its target
//!   becomes `trunc(weight · equity / close)` whole shares, equity marked at that close;
//!   otherwise the target stays, so holdings drift with prices and there is no daily
//!   churn. The difference between target and position is sent as a market order, which
//!   executes at the next bar's open. Sells execute before buys. No decision is made at
//!   the last date; positions still open at the end are marked at the last close.
//! - **Shorts.** Only `pairs` may go short, each leg up to `position_fraction` of the
//!   equity marked at the open; no interest is charged or paid.
//! - **Round trips** follow from the fills: [`round_trips`] matches them first in, first
//!   out per symbol.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::broker::{Account, BrokerConfig, BrokerError, Execution, PaperBroker};
use crate::date::Day;
use crate::model::{Bar, Side, Trade};
pub use crate::protocol::Summary;
use crate::protocol::{
    AckEvent, BarEvent, DoneEvent, DoneStatus, EquityEvent, Event, FillEvent, LogEvent, LogLevel,
    OrderEvent, RejectEvent,
};
use crate::strategy::{Strategy, StrategyError};

/// The equity a backtest starts with unless told otherwise.
pub const DEFAULT_START_EQUITY: f64 = 100_000.0;

/// When a daily bar opens and closes, ms after 00:00 UTC of its date.
pub const OPEN_OFFSET_MS: i64 = (14 * 60 + 30) * 60_000;
pub const CLOSE_OFFSET_MS: i64 = 21 * 3_600_000;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BacktestError {
    #[error("no symbols to trade")]
    NoSymbols,
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("start_equity must be a finite number greater than 0, not {0}")]
    StartEquity(f64),
    #[error("{symbol}: {reason}")]
    Bars { symbol: String, reason: String },
    #[error("the symbols have no date in common")]
    NoCommonDates,
}

/// Runs `strategy` over `bars_by_symbol` (each symbol's bars oldest first) with a paper
/// broker of `broker`'s rules, starting with `start_equity` in cash, and hands every
/// event to `emit` in time order. Returns what the `done` event says.
pub fn run(
    bars_by_symbol: &[(String, Vec<Bar>)],
    strategy: &Strategy,
    broker: &BrokerConfig,
    start_equity: f64,
    emit: &mut dyn FnMut(&Event),
) -> Result<Summary, BacktestError> {
    if bars_by_symbol.is_empty() {
        return Err(BacktestError::NoSymbols);
    }
    let symbols: Vec<String> = bars_by_symbol.iter().map(|(s, _)| s.clone()).collect();
    strategy.check_symbol_count(symbols.len())?;
    for (i, s) in symbols.iter().enumerate() {
        if symbols[..i].contains(s) {
            return Err(StrategyError::Symbols(format!("`{s}` is listed twice")).into());
        }
    }
    strategy.validate()?;
    let mut broker = PaperBroker::new(broker.clone())?;
    if !(start_equity.is_finite() && start_equity > 0.0) {
        return Err(BacktestError::StartEquity(start_equity));
    }
    let table = align(bars_by_symbol)?;
    let n_sym = symbols.len();
    let n_dates = table.len() / n_sym;
    let bar = |i: usize, k: usize| &table[i * n_sym + k];

    let mut summary = Summary {
        bars: 0,
        orders: 0,
        fills: 0,
        rejects: 0,
        final_equity: start_equity,
        total_return: 0.0,
    };
    let (first, last) = (bar(0, 0).day, bar(n_dates - 1, 0).day);
    emit(&Event::Log(LogEvent {
        t_ms: first.start_ms() + OPEN_OFFSET_MS,
        level: LogLevel::Info,
        message: format!(
            "backtest {} {} on {}: {n_dates} dates from {first} to {last}, start equity {start_equity}, prices adjusted for splits and dividends",
            strategy.name(),
            Value::to_string(&strategy.params()),
            symbols.join(", "),
        ),
    }));

    let fraction = strategy.position_fraction();
    let mut signals = strategy.signals(n_sym);
    let mut cash = start_equity;
    let mut position = vec![0.0_f64; n_sym];
    // The weight each target was computed for; `None` = compute it at the next close.
    let mut traded_weight: Vec<Option<f64>> = vec![None; n_sym];
    let mut target = vec![0.0_f64; n_sym];
    let mut pending: Vec<Pending> = Vec::new();
    let mut closes = vec![0.0_f64; n_sym];
    let mut next_id = 1_u64;

    for i in 0..n_dates {
        let day = bar(i, 0).day;
        // The open: yesterday's orders, sells first.
        if !pending.is_empty() {
            let open_ms = day.start_ms() + OPEN_OFFSET_MS;
            let equity_open = cash
                + (0..n_sym)
                    .map(|k| position[k] * bar(i, k).open)
                    .sum::<f64>();
            let max_short_value = if strategy.allows_short() {
                (fraction * equity_open).max(0.0)
            } else {
                0.0
            };
            pending.sort_by_key(|p| p.side == Side::Buy);
            for p in pending.drain(..) {
                let account = Account {
                    cash,
                    position: position[p.k],
                    max_short_value,
                };
                match broker.execute(p.side, p.quantity, bar(i, p.k), &account) {
                    Execution::Filled(f) => {
                        cash += f.cash_flow(p.side);
                        position[p.k] += match p.side {
                            Side::Buy => f.quantity,
                            Side::Sell => -f.quantity,
                        };
                        if f.quantity < p.quantity {
                            traded_weight[p.k] = None;
                        }
                        summary.fills += 1;
                        emit(&Event::Fill(FillEvent {
                            t_ms: open_ms,
                            order_id: p.id,
                            quantity: f.quantity,
                            price: f.price,
                            fee: f.fee,
                        }));
                    }
                    Execution::Rejected(reason) => {
                        traded_weight[p.k] = None;
                        summary.rejects += 1;
                        emit(&Event::Reject(RejectEvent {
                            t_ms: open_ms,
                            order_id: p.id,
                            reason,
                        }));
                    }
                }
            }
        }

        // The close: bars, equity, decisions.
        let close_ms = day.start_ms() + CLOSE_OFFSET_MS;
        let mut positions_value = 0.0;
        for k in 0..n_sym {
            let b = bar(i, k);
            closes[k] = b.close;
            positions_value += position[k] * b.close;
            summary.bars += 1;
            emit(&Event::Bar(BarEvent {
                t_ms: close_ms,
                symbol: symbols[k].clone(),
                open: b.open,
                high: b.high,
                low: b.low,
                close: b.close,
                volume: b.volume,
            }));
        }
        let equity = cash + positions_value;
        summary.final_equity = equity;
        emit(&Event::Equity(EquityEvent {
            t_ms: close_ms,
            equity,
            cash,
            positions_value,
        }));
        let weights = signals.next(&closes);
        if i + 1 == n_dates {
            break;
        }
        for k in 0..n_sym {
            let w = weights[k];
            if traded_weight[k] != Some(w) {
                // A blown-up account (equity ≤ 0) only closes positions.
                target[k] = if equity > 0.0 {
                    (w * equity / closes[k]).trunc()
                } else {
                    0.0
                };
                traded_weight[k] = Some(w);
            }
            let delta = target[k] - position[k];
            if delta.abs() < 1.0 {
                continue;
            }
            let side = if delta > 0.0 { Side::Buy } else { Side::Sell };
            let id = format!("o{next_id}");
            next_id += 1;
            summary.orders += 1;
            emit(&Event::Order(OrderEvent {
                t_ms: close_ms,
                id: id.clone(),
                symbol: symbols[k].clone(),
                side,
                quantity: delta.abs(),
                order_type: "market".to_owned(),
                limit_price: None,
                arrival_price: closes[k],
                decision_ms: close_ms,
            }));
            emit(&Event::Ack(AckEvent {
                t_ms: close_ms + broker.ack_latency_ms(),
                order_id: id.clone(),
            }));
            pending.push(Pending {
                id,
                k,
                side,
                quantity: delta.abs(),
            });
        }
    }

    summary.total_return = summary.final_equity / start_equity - 1.0;
    emit(&Event::Done(DoneEvent {
        t_ms: last.start_ms() + CLOSE_OFFSET_MS,
        status: DoneStatus::Completed,
        summary: summary.clone(),
    }));
    Ok(summary)
}

struct Pending {
    id: String,
    /// The symbol's index.
    k: usize,
    side: Side,
    quantity: f64,
}

/// The adjusted bars of the common dates, date-major: `table[date · n + symbol]`.
fn align(bars_by_symbol: &[(String, Vec<Bar>)]) -> Result<Vec<Bar>, BacktestError> {
    for (symbol, bars) in bars_by_symbol {
        if bars.is_empty() {
            return Err(BacktestError::Bars {
                symbol: symbol.clone(),
                reason: "no bars".into(),
            });
        }
        if let Some(w) = bars.windows(2).find(|w| w[0].day >= w[1].day) {
            return Err(BacktestError::Bars {
                symbol: symbol.clone(),
                reason: format!("{} follows {}: dates must ascend", w[1].day, w[0].day),
            });
        }
    }
    let mut common: Vec<Day> = bars_by_symbol[0].1.iter().map(|b| b.day).collect();
    for (_, bars) in &bars_by_symbol[1..] {
        common.retain(|d| bars.binary_search_by_key(d, |b| b.day).is_ok());
    }
    if common.is_empty() {
        return Err(BacktestError::NoCommonDates);
    }
    let n = bars_by_symbol.len();
    let mut table = Vec::with_capacity(common.len() * n);
    let mut next = vec![0_usize; n];
    for &day in &common {
        for (k, (symbol, bars)) in bars_by_symbol.iter().enumerate() {
            while bars[next[k]].day < day {
                next[k] += 1;
            }
            table.push(adjusted(symbol, &bars[next[k]])?);
        }
    }
    Ok(table)
}

fn adjusted(symbol: &str, b: &Bar) -> Result<Bar, BacktestError> {
    for (name, x) in [
        ("open", b.open),
        ("high", b.high),
        ("low", b.low),
        ("close", b.close),
        ("adjusted close", b.adj_close),
    ] {
        if !(x.is_finite() && x > 0.0) {
            return Err(BacktestError::Bars {
                symbol: symbol.to_owned(),
                reason: format!("{}: the {name} {x} is not a positive number", b.day),
            });
        }
    }
    if !(b.volume.is_finite() && b.volume >= 0.0) {
        return Err(BacktestError::Bars {
            symbol: symbol.to_owned(),
            reason: format!("{}: the volume {} is not a number ≥ 0", b.day, b.volume),
        });
    }
    let f = b.adj_close / b.close;
    Ok(Bar {
        day: b.day,
        open: b.open * f,
        high: b.high * f,
        low: b.low * f,
        close: b.adj_close,
        adj_close: b.adj_close,
        volume: b.volume / f,
    })
}

/// The closed round trips of a run's events: fills matched first in, first out per
/// symbol (a fill that closes more than the open lots opens a position the other way).
/// Each match of a lot is one trade; fees are shared per share between the trades of a
/// fill. `pnl` = direction · (exit − entry) · quantity − fees. Fills of unknown orders are
/// skipped.
pub fn round_trips(events: &[Event], strategy: &str) -> Vec<Trade> {
    struct Lot {
        /// Signed: > 0 long.
        quantity: f64,
        price: f64,
        t_ms: i64,
        fee_per_share: f64,
    }
    let mut orders: HashMap<&str, (&str, Side)> = HashMap::new();
    let mut lots: HashMap<&str, VecDeque<Lot>> = HashMap::new();
    let mut trades = Vec::new();
    for event in events {
        match event {
            Event::Order(o) => {
                orders.insert(&o.id, (&o.symbol, o.side));
            }
            Event::Fill(f) => {
                let Some(&(symbol, side)) = orders.get(f.order_id.as_str()) else {
                    continue;
                };
                let sign = if side == Side::Buy { 1.0 } else { -1.0 };
                let fee_per_share = f.fee / f.quantity;
                let mut left = f.quantity;
                let book = lots.entry(symbol).or_default();
                while left > 0.0 {
                    let Some(lot) = book.front_mut() else { break };
                    if lot.quantity * sign > 0.0 {
                        break;
                    }
                    let q = left.min(lot.quantity.abs());
                    let direction = lot.quantity.signum();
                    let fees = q * (lot.fee_per_share + fee_per_share);
                    trades.push(Trade {
                        strategy: strategy.to_owned(),
                        id: format!("{symbol}-{}", trades.len() + 1),
                        symbol: symbol.to_owned(),
                        side: if direction > 0.0 {
                            Side::Buy
                        } else {
                            Side::Sell
                        },
                        quantity: q,
                        entry_ms: lot.t_ms,
                        exit_ms: f.t_ms,
                        entry_price: lot.price,
                        exit_price: f.price,
                        pnl: direction * (f.price - lot.price) * q - fees,
                        fees,
                        simulated: true,
                    });
                    lot.quantity -= direction * q;
                    left -= q;
                    if lot.quantity == 0.0 {
                        book.pop_front();
                    }
                }
                if left > 0.0 {
                    book.push_back(Lot {
                        quantity: sign * left,
                        price: f.price,
                        t_ms: f.t_ms,
                        fee_per_share,
                    });
                }
            }
            _ => {}
        }
    }
    trades
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::market;

    fn day(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    /// Bars from (open, close) pairs on consecutive days from 2020-01-06.
    fn bars(oc: &[(f64, f64)], volume: f64) -> Vec<Bar> {
        oc.iter()
            .enumerate()
            .map(|(i, &(open, close))| Bar {
                day: Day(day("2020-01-06").0 + i as i32),
                open,
                high: open.max(close),
                low: open.min(close),
                close,
                adj_close: close,
                volume,
            })
            .collect()
    }

    fn strategy(name: &str, params: Value, n: usize) -> Strategy {
        let symbols: Vec<String> = (0..n).map(|i| format!("S{i}")).collect();
        Strategy::new(name, &params, &symbols).unwrap()
    }

    fn run_collect(
        data: &[(String, Vec<Bar>)],
        s: &Strategy,
        config: &BrokerConfig,
    ) -> (Summary, Vec<Event>) {
        let mut events = Vec::new();
        let summary = run(data, s, config, DEFAULT_START_EQUITY, &mut |e| {
            events.push(e.clone())
        })
        .unwrap();
        (summary, events)
    }

    fn last_equity(events: &[Event]) -> f64 {
        events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Equity(q) => Some(q.equity),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn buy_and_hold_ends_at_the_exact_expected_equity() {
        let oc = [
            (100.0, 100.0),
            (101.0, 102.0),
            (103.0, 104.0),
            (105.0, 106.0),
            (107.0, 110.0),
        ];
        let data = vec![("S0".to_owned(), bars(&oc, 1_000_000.0))];
        let s = strategy("buy_and_hold", json!({}), 1);
        let (summary, events) = run_collect(&data, &s, &BrokerConfig::default());

        // Day 0's close: trunc(0.95 · 100,000 / 100) = 950 shares, bought at day 1's open
        // 101 plus 5 bps half spread plus 10 bps · 950 / 1,000,000 impact.
        let price = 101.0 * (1.0 + (5.0 + 10.0 * 950.0 / 1_000_000.0) / 10_000.0);
        let fee = f64::max(1.0, 950.0 * price * 1e-4);
        let cash = 100_000.0 - 950.0 * price - fee;
        let expected = cash + 950.0 * 110.0;
        assert!(
            (summary.final_equity - expected).abs() < 1e-9,
            "{summary:?}"
        );
        // = the start plus 950 shares' rise from the open they were bought at (101) to the
        // last close (110), less about 6 bps (spread and fee) of the 95,950 bought.
        assert!((expected - (100_000.0 + 950.0 * 9.0 - 95_950.0 * 6e-4)).abs() < 0.1);
        assert!((summary.total_return - (expected / 100_000.0 - 1.0)).abs() < 1e-15);
        assert_eq!(
            (summary.bars, summary.orders, summary.fills, summary.rejects),
            (5, 1, 1, 0)
        );

        let types: Vec<&str> = events.iter().map(Event::type_name).collect();
        assert_eq!(
            types,
            [
                "log", "bar", "equity", "order", "ack", "fill", "bar", "equity", "bar", "equity",
                "bar", "equity", "bar", "equity", "done"
            ]
        );
        assert!(events.windows(2).all(|w| w[0].t_ms() <= w[1].t_ms()));
        let Event::Order(o) = &events[3] else {
            panic!()
        };
        assert_eq!(
            (o.side, o.quantity, o.arrival_price),
            (Side::Buy, 950.0, 100.0)
        );
        assert_eq!(o.t_ms, day("2020-01-06").start_ms() + CLOSE_OFFSET_MS);
        let Event::Ack(a) = &events[4] else { panic!() };
        let latency = PaperBroker::new(BrokerConfig::default())
            .unwrap()
            .ack_latency_ms();
        assert_eq!(a.t_ms, o.t_ms + latency);
        let Event::Fill(f) = &events[5] else { panic!() };
        assert_eq!((f.quantity, f.price, f.fee), (950.0, price, fee));
        assert_eq!(f.t_ms, day("2020-01-07").start_ms() + OPEN_OFFSET_MS);
        let Event::Done(d) = events.last().unwrap() else {
            panic!()
        };
        assert_eq!((d.status, &d.summary), (DoneStatus::Completed, &summary));
        // Every event survives its line (serde_json reads a float to within an ulp).
        for e in &events {
            let back = crate::protocol::parse_line(&e.to_line()).unwrap();
            assert_eq!((back.type_name(), back.t_ms()), (e.type_name(), e.t_ms()));
            if let (Event::Fill(a), Event::Fill(b)) = (&back, e) {
                assert!((a.price - b.price).abs() <= 1e-12 * b.price);
            }
        }
    }

    #[test]
    fn momentum_on_bundled_aapl_2010_to_2012() {
        let aapl = market::bundled()
            .unwrap()
            .into_iter()
            .find(|s| s.symbol == "AAPL")
            .unwrap();
        let bars: Vec<Bar> = aapl
            .bars
            .into_iter()
            .filter(|b| b.day >= day("2010-01-01") && b.day <= day("2012-12-31"))
            .collect();
        assert_eq!(bars.len(), 754);
        let data = vec![("AAPL".to_owned(), bars)];
        let s = Strategy::new("momentum", &json!({}), &["AAPL".to_owned()]).unwrap();
        let (summary, events) = run_collect(&data, &s, &BrokerConfig::default());
        let count = |t: &str| events.iter().filter(|e| e.type_name() == t).count() as u64;
        assert_eq!(summary.bars, 754);
        assert!(summary.orders > 10, "{summary:?}");
        assert_eq!(count("order"), summary.orders);
        assert_eq!(count("ack"), summary.orders);
        assert_eq!(count("fill"), summary.fills);
        assert_eq!(count("reject"), summary.rejects);
        assert_eq!(count("equity"), 754);
        assert!(summary.fills > 10);
        assert_eq!(summary.fills + summary.rejects, summary.orders);
        for e in &events {
            if let Event::Equity(q) = e {
                assert!(
                    q.equity.is_finite() && q.cash.is_finite() && q.positions_value.is_finite()
                );
                assert!(q.cash >= 0.0, "{q:?}");
                assert!((q.equity - q.cash - q.positions_value).abs() < 1e-6);
            }
            assert_eq!(e.validate(), Ok(()));
        }
        let Event::Done(d) = events.last().unwrap() else {
            panic!()
        };
        assert_eq!(d.summary.final_equity, last_equity(&events));
        assert_eq!(d.summary, summary);
        assert!(summary.final_equity > 50_000.0 && summary.final_equity < 300_000.0);

        // The cash accounting is the fills' (cost and fees) and nothing else.
        let mut side = HashMap::new();
        let (mut held, mut spent) = (0.0, 0.0);
        for e in &events {
            match e {
                Event::Order(o) => {
                    side.insert(o.id.clone(), o.side);
                }
                Event::Fill(f) => {
                    let sign = if side[&f.order_id] == Side::Buy {
                        1.0
                    } else {
                        -1.0
                    };
                    held += sign * f.quantity;
                    spent += sign * f.quantity * f.price + f.fee;
                }
                _ => {}
            }
        }
        let last_close = data[0].1.last().unwrap().adj_close;
        let gain = summary.final_equity - DEFAULT_START_EQUITY;
        assert!((held * last_close - spent - gain).abs() < 1e-6);

        // Round trips follow from the fills: closing what is still held at the last close
        // (without a fee), their P&L adds up to the whole gain.
        let mut closed = events.clone();
        if held != 0.0 {
            let t_ms = events.last().unwrap().t_ms();
            closed.push(Event::Order(OrderEvent {
                t_ms,
                id: "close".into(),
                symbol: "AAPL".into(),
                side: Side::Sell,
                quantity: held,
                order_type: "market".into(),
                limit_price: None,
                arrival_price: last_close,
                decision_ms: t_ms,
            }));
            closed.push(Event::Fill(FillEvent {
                t_ms,
                order_id: "close".into(),
                quantity: held,
                price: last_close,
                fee: 0.0,
            }));
        }
        let trades = round_trips(&closed, "momentum");
        assert!(trades.len() >= 5);
        assert!(
            trades
                .iter()
                .all(|t| t.side == Side::Buy && t.exit_ms >= t.entry_ms)
        );
        let pnl: f64 = trades.iter().map(|t| t.pnl).sum();
        assert!((pnl - gain).abs() < 1e-6, "{pnl} {gain}");
    }

    #[test]
    fn partial_fills_and_rejects_are_retried_at_the_next_close() {
        // Volume 5,000: at most 500 shares a day.
        let oc = [
            (100.0, 100.0),
            (100.0, 100.0),
            (100.0, 100.0),
            (100.0, 100.0),
        ];
        let data = vec![("S0".to_owned(), bars(&oc, 5_000.0))];
        let s = strategy("buy_and_hold", json!({}), 1);
        let (summary, events) = run_collect(&data, &s, &BrokerConfig::default());
        let orders: Vec<f64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Order(o) => Some(o.quantity),
                _ => None,
            })
            .collect();
        let fills: Vec<f64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Fill(f) => Some(f.quantity),
                _ => None,
            })
            .collect();
        // 950 ordered, 500 filled; the rest re-ordered (the target recomputed from the
        // equity after costs: 949); then 449 fill.
        assert_eq!(orders, [950.0, 449.0]);
        assert_eq!(fills, [500.0, 449.0]);
        assert_eq!(summary.rejects, 0);

        // A 10 % gap up makes 950 shares unaffordable: rejected, then 863 at the new close.
        let oc = [(100.0, 100.0), (110.0, 110.0), (110.0, 110.0)];
        let data = vec![("S0".to_owned(), bars(&oc, 1e9))];
        let (summary, events) = run_collect(&data, &s, &BrokerConfig::default());
        let rejects: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Reject(r) => Some(r.reason.as_str()),
                _ => None,
            })
            .collect();
        // 950 · 110 · 1.0005 = 104,552.25 plus a fee of 10.46.
        assert_eq!(
            rejects,
            ["insufficient cash: need 104562.71, have 100000.00"]
        );
        assert_eq!((summary.orders, summary.fills, summary.rejects), (2, 1, 1));
        let Some(Event::Order(o)) = events.iter().filter(|e| e.type_name() == "order").nth(1)
        else {
            panic!()
        };
        assert_eq!(o.quantity, (0.95_f64 * 100_000.0 / 110.0).trunc());
    }

    #[test]
    fn a_split_is_not_a_loss() {
        // A 2:1 split between day 1 and day 2: raw prices halve, the adjusted close does
        // not move.
        let mut b = bars(
            &[(100.0, 100.0), (100.0, 100.0), (50.0, 50.0), (50.0, 50.0)],
            1e9,
        );
        for bar in &mut b[..2] {
            bar.adj_close = bar.close / 2.0;
        }
        let data = vec![("S0".to_owned(), b)];
        let s = strategy("buy_and_hold", json!({}), 1);
        let (summary, events) = run_collect(&data, &s, &BrokerConfig::default());
        // trunc(0.95 · 100,000 / 50) = 1,900 adjusted shares; the only loss is the costs.
        let Some(Event::Order(o)) = events.iter().find(|e| e.type_name() == "order") else {
            panic!()
        };
        assert_eq!(o.quantity, 1_900.0);
        assert!(summary.final_equity > 99_900.0 && summary.final_equity < 100_000.0);
    }

    fn random_walks(n_sym: usize, n_days: usize, seed: u64) -> Vec<(String, Vec<Bar>)> {
        let mut x = seed;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_001) as f64 / 10_000.0 - 0.5
        };
        (0..n_sym)
            .map(|k| {
                let mut close = 50.0 + 10.0 * k as f64;
                let bars = (0..n_days)
                    .map(|i| {
                        let open = close * (1.0 + rand() * 0.01);
                        close = open * (1.0 + rand() * 0.04);
                        Bar {
                            day: Day(14_000 + i as i32),
                            open,
                            high: open.max(close),
                            low: open.min(close),
                            close,
                            adj_close: close,
                            volume: 1e6 * (1.5 + rand()),
                        }
                    })
                    .collect();
                (format!("S{k}"), bars)
            })
            .collect()
    }

    #[test]
    fn pairs_goes_short_within_its_limit() {
        // B a random walk, A = 1.5 · B plus a mean-reverting wobble.
        let mut data = random_walks(2, 500, 99);
        let (a, b) = data.split_at_mut(1);
        for (i, (ba, bb)) in a[0].1.iter_mut().zip(&b[0].1).enumerate() {
            let wobble = 1.0 + 0.02 * ((i as f64) * 0.7).sin();
            ba.open = bb.open * 1.5 * wobble;
            ba.close = bb.close * 1.5 * wobble;
            ba.adj_close = ba.close;
            ba.high = ba.open.max(ba.close);
            ba.low = ba.open.min(ba.close);
        }
        let s = strategy("pairs", json!({"lookback": 30, "entry_z": 1.5}), 2);
        let (summary, events) = run_collect(&data, &s, &BrokerConfig::default());
        assert!(summary.fills > 10, "{summary:?}");
        assert_eq!(summary.rejects, 0, "{events:?}");
        let trades = round_trips(&events, "pairs");
        assert!(trades.iter().any(|t| t.side == Side::Sell));
        assert!(trades.iter().any(|t| t.side == Side::Buy));
        assert!(summary.final_equity.is_finite());
        // Long-only strategies never sell short.
        let s = strategy("momentum", json!({"lookback": 5}), 2);
        let (_, events) = run_collect(&data, &s, &BrokerConfig::default());
        assert!(
            round_trips(&events, "m")
                .iter()
                .all(|t| t.side == Side::Buy)
        );
    }

    #[test]
    fn refuses_bad_input() {
        let s = strategy("pairs", json!({}), 2);
        let one = vec![("A".to_owned(), bars(&[(1.0, 1.0)], 1.0))];
        let e = run(&one, &s, &BrokerConfig::default(), 1.0, &mut |_| {}).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`symbols`: pairs needs exactly 2"),
            "{e}"
        );
        let s = strategy("momentum", json!({}), 1);
        let e = run(&one, &s, &BrokerConfig::default(), 0.0, &mut |_| {}).unwrap_err();
        assert_eq!(e, BacktestError::StartEquity(0.0));
        let mut bad = bars(&[(1.0, 1.0), (1.0, 1.0)], 1.0);
        bad[1].close = f64::NAN;
        let e = run(
            &[("A".to_owned(), bad)],
            &s,
            &BrokerConfig::default(),
            1.0,
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "A: 2020-01-07: the close NaN is not a positive number"
        );
        let mut late = bars(&[(1.0, 1.0)], 1.0);
        late[0].day = Day(0);
        let two = vec![one[0].clone(), ("B".to_owned(), late)];
        let e = run(&two, &s, &BrokerConfig::default(), 1.0, &mut |_| {}).unwrap_err();
        assert_eq!(e, BacktestError::NoCommonDates);
    }

    #[test]
    fn common_dates_only() {
        let mut a = bars(&[(10.0, 10.0); 6], 1e6);
        let b = bars(&[(20.0, 20.0); 6], 1e6);
        a.remove(2);
        let data = vec![("A".to_owned(), a), ("B".to_owned(), b[1..].to_vec())];
        let s = strategy("buy_and_hold", json!({}), 2);
        let (summary, events) = run_collect(&data, &s, &BrokerConfig::default());
        assert_eq!(summary.bars, 8); // days 1, 3, 4, 5
        let days: Vec<Day> = events
            .iter()
            .filter_map(|e| match e {
                Event::Equity(q) => Some(Day::from_ms(q.t_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(days.len(), 4);
        assert_eq!(days[0], b[1].day);
        assert_eq!(days[1], b[3].day);
    }

    /// `cargo test --release -p quantbox-trading -- --ignored --nocapture timing`
    #[test]
    #[ignore]
    fn timing_ten_years_of_five_symbols() {
        let data = random_walks(5, 2_520, 7);
        for (name, params) in [
            ("momentum", json!({})),
            ("trend", json!({})),
            ("mean_reversion", json!({})),
            ("buy_and_hold", json!({})),
        ] {
            let s = strategy(name, params, 5);
            let mut best = f64::MAX;
            let mut best_lines = f64::MAX;
            let mut events = 0_u64;
            let mut bytes = 0_usize;
            for _ in 0..5 {
                let t = Instant::now();
                events = 0;
                run(&data, &s, &BrokerConfig::default(), 1e5, &mut |_| {
                    events += 1
                })
                .unwrap();
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                bytes = 0;
                run(&data, &s, &BrokerConfig::default(), 1e5, &mut |e| {
                    bytes += e.to_line().len() + 1
                })
                .unwrap();
                best_lines = best_lines.min(t.elapsed().as_secs_f64() * 1e3);
            }
            println!(
                "{name}: 2520 x 5 bars, {events} events: {best:.2} ms; written as lines ({bytes} bytes): {best_lines:.2} ms"
            );
            assert!(best < 50.0);
        }
    }
}
