//! The trading domain: what a strategy did (its returns or equity, orders, fills, closed
//! trades, its data feed's heartbeats) and the market data it ran on, with the port
//! through which they are stored. Imports of users' files and, later, agents running in
//! sandboxes produce the same records, so the analytics see one shape.
//!
//! Must never: do I/O other than reading the market data compiled into the binary, or
//! compute metrics (that is `quantbox-analytics`, pure).

pub mod date;
pub mod import;
pub mod market;
pub mod model;
pub mod store;

pub use date::Day;
pub use import::ImportError;
pub use market::{BundledSymbol, DEFAULT_BENCHMARK};
pub use model::*;
pub use store::TradingStore;
