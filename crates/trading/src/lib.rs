//! The trading domain: what a strategy did (its returns or equity, orders, fills, closed
//! trades, its data feed's heartbeats) and the market data it ran on, with the port
//! through which they are stored. Imports of users' files and, later, agents running in
//! sandboxes produce the same records, so the analytics see one shape.
//!
//! Must never: do I/O other than reading the market data compiled into the binary, or
//! compute metrics (that is `quantbox-analytics`, pure).

pub mod backtest;
pub mod broker;
pub mod date;
pub mod import;
pub mod market;
pub mod model;
pub mod protocol;
pub mod store;
pub mod strategy;

pub use backtest::{BacktestError, Summary};
pub use broker::{BrokerConfig, PaperBroker};
pub use date::Day;
pub use import::ImportError;
pub use market::{BundledSymbol, DEFAULT_BENCHMARK};
pub use model::*;
pub use protocol::{Event, PROTOCOL_VERSION, ProtocolError, StreamParser, parse_line};
pub use store::TradingStore;
pub use strategy::{Strategy, StrategyError};
