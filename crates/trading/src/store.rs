//! The persistence port of the trading data (the store crate implements it). Writes of
//! one call are one transaction: an import either lands whole or not at all.

use quantbox_sandbox::StoreError;

use crate::date::Day;
use crate::model::{
    Bar, Fill, Heartbeat, Order, SeriesKind, SeriesPoint, StrategyInfo, SymbolInfo, Trade,
};

pub trait TradingStore: Send + Sync {
    /// Replaces `strategy`'s series with `points` (creating the strategy, recording
    /// where it came from: `import` or `agent`).
    fn replace_series(
        &self,
        strategy: &str,
        source: &str,
        kind: SeriesKind,
        points: &[SeriesPoint],
    ) -> Result<(), StoreError>;

    /// Adds points after the last one (an agent's equity as it runs).
    fn append_series(
        &self,
        strategy: &str,
        source: &str,
        kind: SeriesKind,
        points: &[SeriesPoint],
    ) -> Result<(), StoreError>;

    /// The strategy's series, oldest first; `None` when it has none.
    fn series(&self, strategy: &str) -> Result<Option<(SeriesKind, Vec<SeriesPoint>)>, StoreError>;

    fn strategies(&self) -> Result<Vec<StrategyInfo>, StoreError>;

    /// Removes everything stored under `strategy` (its series, orders and their fills,
    /// trades, heartbeats) and records it anew from `source`, with `feed_interval_ms`:
    /// an agent run starts so, replacing the previous run of the same name.
    fn reset_strategy(
        &self,
        strategy: &str,
        source: &str,
        feed_interval_ms: Option<i64>,
    ) -> Result<(), StoreError>;

    fn strategy(&self, name: &str) -> Result<Option<StrategyInfo>, StoreError>;

    /// Inserts or replaces orders (by strategy and id), creating their strategies.
    fn put_orders(&self, orders: &[Order]) -> Result<(), StoreError>;

    /// Inserts fills; each must belong to a stored order of its strategy.
    fn put_fills(&self, fills: &[Fill]) -> Result<(), StoreError>;

    /// Inserts or replaces closed trades (by strategy and id).
    fn put_trades(&self, trades: &[Trade]) -> Result<(), StoreError>;

    /// Orders submitted in `[from_ms, to_ms]`, of one strategy or all, by submit time.
    fn orders(
        &self,
        strategy: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Order>, StoreError>;

    /// The fills of the orders submitted in `[from_ms, to_ms]`, by time.
    fn fills(
        &self,
        strategy: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Fill>, StoreError>;

    /// Ids of `strategy`'s stored orders among `ids` (for checking fills before writing).
    fn known_orders(&self, strategy: &str, ids: &[&str]) -> Result<Vec<String>, StoreError>;

    /// Closed trades, by exit time.
    fn trades(&self, strategy: &str) -> Result<Vec<Trade>, StoreError>;

    fn put_heartbeats(&self, beats: &[Heartbeat]) -> Result<(), StoreError>;

    /// The latest bar or heartbeat of the strategy's feed.
    fn last_heartbeat(&self, strategy: &str) -> Result<Option<i64>, StoreError>;

    /// Replaces `symbol`'s daily bars (`source`: `bundled` or `import`).
    fn replace_bars(&self, symbol: &str, source: &str, bars: &[Bar]) -> Result<(), StoreError>;

    /// Bars of `symbol` with `from <= day <= to`, oldest first.
    fn bars(&self, symbol: &str, from: Day, to: Day) -> Result<Vec<Bar>, StoreError>;

    fn symbols(&self) -> Result<Vec<SymbolInfo>, StoreError>;
}
