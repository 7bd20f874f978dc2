//! What quantbox records about trading, whatever produced it: a CSV a user imported, or
//! (a later issue) an agent running in a sandbox. One shape for both, so that the
//! analytics see the same data either way. Every record says whether it was simulated.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::date::Day;

/// A strategy's performance series: period returns, or an equity curve (returns are
/// derived from it). A strategy has one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    Returns,
    Equity,
}

impl SeriesKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Returns => "returns",
            Self::Equity => "equity",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "returns" => Some(Self::Returns),
            "equity" => Some(Self::Equity),
            _ => None,
        }
    }
}

/// One point of a series: a daily point is stamped at 00:00 UTC of its date.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesPoint {
    pub t_ms: i64,
    pub value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }

    /// `buy`/`sell`, also `b`/`s`, `long`/`short`, any case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "buy" | "b" | "long" | "bot" | "bought" => Some(Self::Buy),
            "sell" | "s" | "short" | "sld" | "sold" => Some(Self::Sell),
            _ => None,
        }
    }
}

/// How an order ended (or that it has not yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Open,
    Filled,
    PartiallyFilled,
    Cancelled,
    Rejected,
    Failed,
}

impl OrderState {
    pub const ALL: [OrderState; 6] = [
        Self::Open,
        Self::Filled,
        Self::PartiallyFilled,
        Self::Cancelled,
        Self::Rejected,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Filled => "filled",
            Self::PartiallyFilled => "partially_filled",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    /// The names above, plus common broker spellings (`canceled`, `partial`, `done`…).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        Some(match s.as_str() {
            "open" | "new" | "pending" | "working" | "submitted" | "accepted" => Self::Open,
            "filled" | "done" | "complete" | "completed" | "executed" => Self::Filled,
            "partially_filled" | "partial" | "partial_fill" | "partiallyfilled" => {
                Self::PartiallyFilled
            }
            "cancelled" | "canceled" | "expired" => Self::Cancelled,
            "rejected" => Self::Rejected,
            "failed" | "error" => Self::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub strategy: String,
    pub id: String,
    pub symbol: String,
    pub side: Side,
    pub quantity: f64,
    /// `market`, `limit`, … as the source says.
    pub order_type: String,
    pub limit_price: Option<f64>,
    /// The reference (arrival) price when the order was decided: slippage is measured
    /// against it.
    pub arrival_price: Option<f64>,
    pub decision_ms: i64,
    pub submit_ms: i64,
    pub ack_ms: Option<i64>,
    pub state: OrderState,
    pub reject_reason: Option<String>,
    /// Made by a simulation (a paper broker), not a real venue.
    pub simulated: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fill {
    pub strategy: String,
    pub order_id: String,
    pub t_ms: i64,
    pub quantity: f64,
    pub price: f64,
    pub fee: f64,
    pub simulated: bool,
}

/// A closed round trip.
#[derive(Clone, Debug, PartialEq)]
pub struct Trade {
    pub strategy: String,
    pub id: String,
    pub symbol: String,
    /// `buy` = long, `sell` = short.
    pub side: Side,
    pub quantity: f64,
    pub entry_ms: i64,
    pub exit_ms: i64,
    pub entry_price: f64,
    pub exit_price: f64,
    /// Realised profit and loss, fees deducted.
    pub pnl: f64,
    pub fees: f64,
    pub simulated: bool,
}

/// One daily bar of a symbol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    pub day: Day,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Close adjusted for splits and dividends (returns across splits use it).
    pub adj_close: f64,
    pub volume: f64,
}

/// A sign of life of a strategy's data feed: a bar it received, or a heartbeat.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    pub strategy: String,
    pub t_ms: i64,
    /// `bar` or `heartbeat`.
    pub kind: String,
}

/// A strategy as the store knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrategyInfo {
    pub name: String,
    /// `import` or `agent`.
    pub source: String,
    pub series_kind: Option<SeriesKind>,
    pub points: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub orders: u64,
    pub fills: u64,
    pub trades: u64,
    /// How often its feed should give a bar or heartbeat (for the data-feed check).
    pub feed_interval_ms: Option<i64>,
}

/// Where a symbol's prices came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SymbolInfo {
    pub symbol: String,
    pub bars: u64,
    pub first: Day,
    pub last: Day,
    /// `bundled` or `import`.
    pub source: String,
}
