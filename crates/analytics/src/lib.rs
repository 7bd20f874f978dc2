//! Performance, benchmark, trade, execution and strategy-health metrics, as pure
//! functions.
//!
//! # Why this crate exists
//!
//! Strategies run in quantbox sandboxes produce returns, trades, orders and fills;
//! the operations, the CLI and `quantbox bench` need the same numbers from them, and the
//! reference libraries (empyrical, quantstats, pyfolio, ffn) disagree on a few
//! definitions. This crate is the one place those numbers are defined: each metric is
//! one function whose doc comment gives its formula, the reference behaviour it follows
//! and any deviation, as fixed by `shared/spec/metrics.md`. Every metric has a unit test
//! whose expected value was computed independently with numpy/pandas (the Python
//! expression is in a comment next to the literal).
//!
//! # Rules
//!
//! - **Pure**: no I/O, no store, no async runtime, no clock (the current time is an
//!   argument where it matters, see [`health`]), no JSON. Result structs derive
//!   `serde::Serialize` so callers can render them.
//! - **Validated input**: dated series go through [`series`] once (sorted, unique
//!   dates; finite values or NaN for a missing observation) and errors name the index and
//!   the dates involved.
//! - **Missing data** (NaN) is skipped by means and deviations, compounds as 0, and
//!   still counts in `n` for annualisation (empyrical's convention).
//! - **Undefined is explicit**: the single-metric functions return NaN/±inf where the
//!   mathematics does; the [`report::Report`] turns every non-finite figure into `None`
//!   with a reason, so nothing non-finite reaches a serialiser.
//! - **Fast**: a full report over 10 years of daily returns is two passes plus an O(n)
//!   selection; [`report::report_many`] splits a batch over two threads; execution
//!   statistics are one pass over the fills without per-fill allocation.
//!
//! # Example
//!
//! ```
//! use quantbox_analytics::{Date, ReportConfig, equity_to_returns, report};
//!
//! let day = |d| Date::from_ymd(2024, 1, d).unwrap();
//! let equity = [(day(2), 100.0), (day(3), 101.0), (day(4), 99.5), (day(5), 102.0)];
//! let returns = equity_to_returns(&equity).unwrap();
//! let r = report(&returns, None, &ReportConfig::default()).unwrap();
//! assert_eq!(r.observations, 3);
//! assert!(r.max_drawdown.unwrap() < 0.0);
//! assert_eq!(r.max_drawdown_duration_days, 2); // peak on the 3rd, recovered on the 5th
//! assert!(r.skewness.is_some());
//! assert!(r.kurtosis.is_none()); // needs 4 observations
//! assert!(r.reasons.contains_key("kurtosis"));
//! ```
//!
//! # Map
//!
//! - [`date`]: [`Date`], a day number with civil-date conversions.
//! - [`series`]: validation ([`Returns`]), [`equity_to_returns`], [`align`].
//! - [`returns`]: period-return metrics (total, CAGR, volatility, Sharpe, Sortino, VaR…).
//! - [`drawdown`]: max/current drawdown and durations.
//! - [`benchmark`]: beta, alpha, correlation, tracking error, information ratio.
//! - [`trades`]: round-trip statistics.
//! - [`execution`]: fill rates, slippage, latency over orders and fills.
//! - [`health`]: the strategy-health score.
//! - [`mod@report`]: every period metric of a series at once.
//! - [`synthetic`]: deterministic inputs for `quantbox bench` and timing.
//!
//! # Timing
//!
//! What `quantbox bench` can time: [`report()`] on one series, [`report_many`] on a
//! batch, [`execution_stats`] on orders and fills, each on [`synthetic`] data.
//! `cargo run --release -p quantbox-analytics --example timing` prints those timings.

pub mod benchmark;
pub mod date;
pub mod drawdown;
pub mod execution;
pub mod health;
pub mod report;
pub mod returns;
pub mod series;
pub mod synthetic;
pub mod trades;

pub use benchmark::{
    BenchmarkStats, alpha, benchmark_stats, beta, correlation, information_ratio, tracking_error,
};
pub use date::{Date, DateError};
pub use drawdown::{
    DrawdownStats, current_drawdown, drawdown_stats, max_drawdown, max_drawdown_duration_days,
};
pub use execution::{
    ExecutionError, ExecutionStats, Fill, LatencyStats, Order, OrderState, OrderType, Side,
    SlippageStats, StateCounts, SymbolStats, execution_stats,
};
pub use health::{
    Alert, Check, CheckStatus, ExecutionFacts, FeedFacts, Health, HealthInputs, HealthRules,
    HealthStatus, Severity, strategy_health,
};
pub use report::{
    ConfigError, Report, ReportConfig, report, report_many, report_many_with_threads,
};
pub use returns::{
    annualized_return, calmar, cvar_95, downside_deviation, kurtosis, risk_free_per_period, sharpe,
    skewness, sortino, total_return, var_95, volatility,
};
pub use series::{Aligned, Returns, SeriesError, align, equity_to_returns};
pub use trades::{TradeError, TradeStats, trade_stats};
