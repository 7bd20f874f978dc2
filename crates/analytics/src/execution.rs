//! Execution quality over orders and their fills (metrics.md, "Execution quality").
//!
//! - **Slippage** per fill, side-signed so that positive = cost:
//!   `s * (fill_price - arrival_price) / arrival_price * 10_000` bps, s = +1 buy, -1 sell.
//!   `arrival_price` is the reference mid when the order was decided; fills of orders
//!   without one are skipped and counted. Reported: simple mean, notional-weighted mean
//!   (weights `quantity * fill_price`), max, and the adverse (> 0) / improved (< 0) /
//!   zero counts.
//! - **Fill rate** by quantity `sum(filled) / sum(ordered)` and by orders
//!   `Filled orders / all orders`; every order passed in is a submitted order, so
//!   rejects, cancels, failures and still-open orders all count in both denominators.
//! - A **partial fill** is an order that ended with `0 < filled < ordered` (by its
//!   fills, whatever its state), quantities compared with a relative tolerance of
//!   [`QUANTITY_TOLERANCE`] so that float sums of fills do not make a full fill partial.
//! - **Latency** is submit → ack in milliseconds over orders with an ack; percentiles are
//!   **nearest rank** (the smallest observation whose empirical CDF is ≥ p, as
//!   HdrHistogram), so p50/p95/p99 are always real observations.
//! - **Failures** are orders that ended `Rejected` or `Failed`.
//!
//! Two passes over the orders and one over the fills, without allocation per fill. Order
//! ids are indexed by a direct table when they are dense (sequential ids), else by a
//! hash map; a million fills over half a million orders take about 45 ms (dense ids) or
//! 65 ms (ids spread over the whole `u64` range) on one core of the 2-core dev machine.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

/// Relative tolerance when comparing a filled quantity with the ordered one.
pub const QUANTITY_TOLERANCE: f64 = 1e-9;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// +1 for a buy, -1 for a sell: the sign that makes slippage positive for a cost.
    pub fn sign(self) -> f64 {
        match self {
            Side::Buy => 1.0,
            Side::Sell => -1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    Market,
    Limit,
    Stop,
    StopLimit,
}

/// How an order ended (or that it is still working).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Filled,
    PartiallyFilled,
    Cancelled,
    Rejected,
    Failed,
    Open,
}

/// A submitted order. Times are Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Unique among the orders passed together (callers intern broker ids).
    pub id: u64,
    pub symbol: String,
    pub side: Side,
    /// Ordered quantity, positive.
    pub quantity: f64,
    pub order_type: OrderType,
    pub limit_price: Option<f64>,
    /// The reference mid when the order was decided: slippage is measured against it.
    pub arrival_price: Option<f64>,
    pub decision_ms: i64,
    pub submit_ms: i64,
    /// When the venue acknowledged the order, if it did.
    pub ack_ms: Option<i64>,
    pub final_state: OrderState,
    pub reject_reason: Option<String>,
}

/// One execution against an order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fill {
    pub order_id: u64,
    pub time_ms: i64,
    /// Positive.
    pub quantity: f64,
    /// Positive.
    pub price: f64,
    /// Finite (a rebate is negative).
    pub fee: f64,
}

/// Why orders or fills were refused. Indexes are 0-based positions in the input slices.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ExecutionError {
    #[error("{0} orders are more than the {max} this function indexes", max = u32::MAX - 1)]
    TooManyOrders(usize),
    #[error("order {index} repeats the id {id} of order {first}")]
    DuplicateOrderId { index: usize, first: usize, id: u64 },
    #[error("order {index} (id {id}) has quantity {value}; it must be positive and finite")]
    OrderQuantity { index: usize, id: u64, value: f64 },
    #[error("order {index} (id {id}) has {field} {value}; it must be positive and finite")]
    OrderPrice {
        index: usize,
        id: u64,
        field: &'static str,
        value: f64,
    },
    #[error(
        "fill {index} (order {order_id}) has {field} {value}; it must be {}",
        if *field == "fee" { "finite" } else { "positive and finite" }
    )]
    FillValue {
        index: usize,
        order_id: u64,
        field: &'static str,
        value: f64,
    },
}

/// Orders by final state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub filled: u64,
    pub partially_filled: u64,
    pub cancelled: u64,
    pub rejected: u64,
    pub failed: u64,
    pub open: u64,
}

/// Slippage of fills against their order's arrival price, in basis points
/// (positive = cost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SlippageStats {
    /// Fills measured (their order has an arrival price).
    pub measured_fills: u64,
    /// Fills skipped because their order has no arrival price.
    pub skipped_no_arrival: u64,
    pub mean_bps: Option<f64>,
    /// Weighted by fill notional (`quantity * price`).
    pub notional_weighted_bps: Option<f64>,
    /// The worst (largest) slippage.
    pub max_bps: Option<f64>,
    /// Fills with slippage > 0.
    pub adverse: u64,
    /// Fills with slippage < 0.
    pub improved: u64,
    /// Fills with slippage exactly 0.
    pub zero: u64,
}

/// Submit → ack latency in milliseconds over the orders with an ack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    pub count: u64,
    /// Orders without an ack (not in the figures).
    pub missing_ack: u64,
    pub avg_ms: Option<f64>,
    pub max_ms: Option<i64>,
    /// Nearest-rank percentiles (always observed values).
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    pub p99_ms: Option<i64>,
}

/// One symbol's share of [`ExecutionStats`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SymbolStats {
    pub orders: u64,
    pub filled_orders: u64,
    pub partial_fills: u64,
    pub failures: u64,
    pub ordered_quantity: f64,
    pub filled_quantity: f64,
    pub fill_rate_by_quantity: Option<f64>,
    pub fill_rate_by_orders: Option<f64>,
    pub executions: u64,
    pub filled_notional: f64,
    pub fees: f64,
    pub slippage: SlippageStats,
}

/// Execution quality of a set of orders and fills.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ExecutionStats {
    /// Orders passed in (all count as submitted).
    pub orders: u64,
    pub by_state: StateCounts,
    pub ordered_quantity: f64,
    /// Sum of the quantities of the fills matched to an order.
    pub filled_quantity: f64,
    /// `filled_quantity / ordered_quantity`; `None` without orders.
    pub fill_rate_by_quantity: Option<f64>,
    /// `Filled orders / orders`; `None` without orders.
    pub fill_rate_by_orders: Option<f64>,
    /// Fills matched to an order.
    pub executions: u64,
    /// Fills whose order id is not among the orders (left out of every figure).
    pub unmatched_fills: u64,
    /// Orders that ended with `0 < filled < ordered`.
    pub partial_fills: u64,
    /// Orders that ended `Rejected` or `Failed`.
    pub failures: u64,
    /// Failures by reject reason (`"unspecified"` when none was given).
    pub reject_reasons: BTreeMap<String, u64>,
    /// Sum of matched fills' `quantity * price`.
    pub filled_notional: f64,
    pub fees: f64,
    pub slippage: SlippageStats,
    pub latency: LatencyStats,
    pub by_symbol: BTreeMap<String, SymbolStats>,
}

/// A multiplicative hasher for `u64` order ids (rustc-hash's scheme: fold, multiply,
/// rotate so the well-mixed high bits pick the bucket): one multiply per lookup instead
/// of SipHash's rounds. Order ids are the caller's own records, not attacker-chosen
/// keys.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fold the high half in so ids that differ only in high bits still spread.
        self.0 = (n ^ (n >> 32)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Order id → position in the orders slice. Ids that are dense enough (their range at
/// most [`DENSE_SPREAD`] times the number of orders, as sequential ids are) get a direct
/// table; any others a hash map.
enum OrderIndex {
    Dense { min: u64, table: Vec<u32> },
    Hashed(IdMap<u32>),
}

/// How sparse ids may be for the direct table (4 bytes per possible id).
const DENSE_SPREAD: u64 = 8;

impl OrderIndex {
    /// Indexes the ids (in order position order; fewer than `u32::MAX` of them).
    fn build(ids: &[u64]) -> Result<OrderIndex, ExecutionError> {
        let duplicate = |index: usize, first: u32, id: u64| ExecutionError::DuplicateOrderId {
            index,
            first: first as usize,
            id,
        };
        let n = ids.len() as u64;
        let min = ids.iter().copied().min().unwrap_or(0);
        let max = ids.iter().copied().max().unwrap_or(0);
        let span = max - min;
        if n > 0 && span < n.saturating_mul(DENSE_SPREAD) && span < u64::from(u32::MAX) {
            let mut table = vec![u32::MAX; span as usize + 1];
            for (i, &id) in ids.iter().enumerate() {
                let slot = &mut table[(id - min) as usize];
                if *slot != u32::MAX {
                    return Err(duplicate(i, *slot, id));
                }
                *slot = i as u32;
            }
            return Ok(OrderIndex::Dense { min, table });
        }
        let mut map = IdMap::with_capacity_and_hasher(ids.len(), Default::default());
        for (i, &id) in ids.iter().enumerate() {
            if let Some(first) = map.insert(id, i as u32) {
                return Err(duplicate(i, first, id));
            }
        }
        Ok(OrderIndex::Hashed(map))
    }

    #[inline]
    fn get(&self, id: u64) -> Option<u32> {
        match self {
            OrderIndex::Dense { min, table } => {
                let i = *table.get(usize::try_from(id.checked_sub(*min)?).ok()?)?;
                (i != u32::MAX).then_some(i)
            }
            OrderIndex::Hashed(map) => map.get(&id).copied(),
        }
    }
}

/// Per-order state of the fill loop.
struct Slot {
    /// The arrival price, NaN when the order has none.
    arrival: f64,
    filled: f64,
    sym: u32,
    side: Side,
}

#[derive(Clone, Copy, Default)]
struct SlipAcc {
    n: u64,
    skipped: u64,
    sum: f64,
    weighted: f64,
    weight: f64,
    max: f64,
    adverse: u64,
    improved: u64,
    zero: u64,
}

impl SlipAcc {
    #[inline]
    fn add(&mut self, bps: f64, notional: f64) {
        if self.n == 0 || bps > self.max {
            self.max = bps;
        }
        self.n += 1;
        self.sum += bps;
        self.weighted += bps * notional;
        self.weight += notional;
        if bps > 0.0 {
            self.adverse += 1;
        } else if bps < 0.0 {
            self.improved += 1;
        } else {
            self.zero += 1;
        }
    }

    fn stats(&self) -> SlippageStats {
        let some = |v: f64| (self.n > 0 && v.is_finite()).then_some(v);
        SlippageStats {
            measured_fills: self.n,
            skipped_no_arrival: self.skipped,
            mean_bps: some(self.sum / self.n as f64),
            notional_weighted_bps: some(self.weighted / self.weight),
            max_bps: some(self.max),
            adverse: self.adverse,
            improved: self.improved,
            zero: self.zero,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct SymbolAcc {
    orders: u64,
    filled_orders: u64,
    partial: u64,
    failures: u64,
    ordered: f64,
    filled: f64,
    executions: u64,
    notional: f64,
    fees: f64,
    slip: SlipAcc,
}

/// `num / den` when the denominator is positive and the result finite.
fn ratio(num: f64, den: f64) -> Option<f64> {
    Some(num / den).filter(|v| den > 0.0 && v.is_finite())
}

/// Nearest-rank percentile (`percent` in 1..=100) of `values`: the value at rank
/// `ceil(percent / 100 * n)` in ascending order. Reorders `values`; `None` when empty.
pub fn nearest_rank(values: &mut [i64], percent: u32) -> Option<i64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let percent = percent.clamp(1, 100) as usize;
    let rank = (percent * n).div_ceil(100); // 1..=n
    let (_, v, _) = values.select_nth_unstable(rank - 1);
    Some(*v)
}

/// Slippage of one fill in bps, positive = cost: `s * (price - arrival) / arrival * 1e4`.
#[inline]
pub fn slippage_bps(side: Side, fill_price: f64, arrival_price: f64) -> f64 {
    side.sign() * (fill_price - arrival_price) / arrival_price * 10_000.0
}

fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// Execution quality of `orders` and their `fills` (see the module doc for every
/// definition). Order ids must be unique; quantities and prices positive and finite,
/// fees finite. Fills of unknown orders are counted in `unmatched_fills` and otherwise
/// ignored. Empty input gives zero counts and `None` averages.
pub fn execution_stats(orders: &[Order], fills: &[Fill]) -> Result<ExecutionStats, ExecutionError> {
    // Orders: validate, index by id, intern symbols.
    if orders.len() >= u32::MAX as usize {
        return Err(ExecutionError::TooManyOrders(orders.len()));
    }
    let mut ids: Vec<u64> = Vec::with_capacity(orders.len());
    let mut symbols: HashMap<&str, u32, BuildHasherDefault<IdHasher>> = HashMap::default();
    let mut symbol_names: Vec<&str> = Vec::new();
    // What the fill loop needs of each order, packed (the orders themselves are large).
    let mut slots: Vec<Slot> = Vec::with_capacity(orders.len());
    let mut last_symbol: Option<(&str, u32)> = None;
    for (i, o) in orders.iter().enumerate() {
        if !positive(o.quantity) {
            return Err(ExecutionError::OrderQuantity {
                index: i,
                id: o.id,
                value: o.quantity,
            });
        }
        for (field, price) in [
            ("arrival price", o.arrival_price),
            ("limit price", o.limit_price),
        ] {
            if let Some(p) = price.filter(|&p| !positive(p)) {
                return Err(ExecutionError::OrderPrice {
                    index: i,
                    id: o.id,
                    field,
                    value: p,
                });
            }
        }
        let sym = match last_symbol {
            Some((name, s)) if name == o.symbol => s,
            _ => {
                let next = symbol_names.len() as u32;
                let s = *symbols.entry(o.symbol.as_str()).or_insert_with(|| {
                    symbol_names.push(o.symbol.as_str());
                    next
                });
                last_symbol = Some((o.symbol.as_str(), s));
                s
            }
        };
        ids.push(o.id);
        slots.push(Slot {
            arrival: o.arrival_price.unwrap_or(f64::NAN),
            side: o.side,
            sym,
            filled: 0.0,
        });
    }

    let index = OrderIndex::build(&ids)?;
    drop(ids);

    // Fills: one pass, no allocation per fill.
    let mut per_symbol = vec![SymbolAcc::default(); symbol_names.len()];
    let mut slip = SlipAcc::default();
    let (mut executions, mut unmatched) = (0u64, 0u64);
    let (mut filled_total, mut notional_total, mut fees_total) = (0.0f64, 0.0f64, 0.0f64);
    // Resolved in blocks: a tight loop of independent lookups lets the CPU overlap the
    // cache misses of a large id map, which the accumulating loop below would not.
    const BLOCK: usize = 1024;
    let mut resolved = [u32::MAX; BLOCK];
    let mut last_fill: Option<(u64, u32)> = None;
    for (b, block) in fills.chunks(BLOCK).enumerate() {
        for (r, f) in resolved.iter_mut().zip(block) {
            // Fills of one order usually come together: skip the lookup for a repeat.
            *r = match last_fill {
                Some((id, oi)) if id == f.order_id => oi,
                _ => match index.get(f.order_id) {
                    Some(oi) => {
                        last_fill = Some((f.order_id, oi));
                        oi
                    }
                    None => u32::MAX,
                },
            };
        }
        for (j, (f, &oi)) in block.iter().zip(&resolved).enumerate() {
            let i = b * BLOCK + j;
            let bad = |field, value| ExecutionError::FillValue {
                index: i,
                order_id: f.order_id,
                field,
                value,
            };
            if !positive(f.quantity) {
                return Err(bad("quantity", f.quantity));
            }
            if !positive(f.price) {
                return Err(bad("price", f.price));
            }
            if !f.fee.is_finite() {
                return Err(bad("fee", f.fee));
            }
            if oi == u32::MAX {
                unmatched += 1;
                continue;
            }
            let slot = &mut slots[oi as usize];
            let sym = &mut per_symbol[slot.sym as usize];
            let notional = f.quantity * f.price;
            executions += 1;
            slot.filled += f.quantity;
            filled_total += f.quantity;
            notional_total += notional;
            fees_total += f.fee;
            sym.executions += 1;
            sym.filled += f.quantity;
            sym.notional += notional;
            sym.fees += f.fee;
            if slot.arrival.is_nan() {
                slip.skipped += 1;
                sym.slip.skipped += 1;
            } else {
                let bps = slippage_bps(slot.side, f.price, slot.arrival);
                slip.add(bps, notional);
                sym.slip.add(bps, notional);
            }
        }
    }

    // Orders: states, fill rates, partial fills, latency.
    let mut out = ExecutionStats {
        orders: orders.len() as u64,
        executions,
        unmatched_fills: unmatched,
        filled_quantity: filled_total,
        filled_notional: notional_total,
        fees: fees_total,
        ..ExecutionStats::default()
    };
    let mut latencies: Vec<i64> = Vec::with_capacity(orders.len());
    let mut ordered_total = 0.0f64;
    for (i, o) in orders.iter().enumerate() {
        let slot = &slots[i];
        let sym = &mut per_symbol[slot.sym as usize];
        sym.orders += 1;
        sym.ordered += o.quantity;
        ordered_total += o.quantity;
        let s = &mut out.by_state;
        match o.final_state {
            OrderState::Filled => {
                s.filled += 1;
                sym.filled_orders += 1;
            }
            OrderState::PartiallyFilled => s.partially_filled += 1,
            OrderState::Cancelled => s.cancelled += 1,
            OrderState::Rejected => s.rejected += 1,
            OrderState::Failed => s.failed += 1,
            OrderState::Open => s.open += 1,
        }
        if matches!(o.final_state, OrderState::Rejected | OrderState::Failed) {
            out.failures += 1;
            sym.failures += 1;
            let reason = o.reject_reason.as_deref().unwrap_or("unspecified");
            match out.reject_reasons.get_mut(reason) {
                Some(count) => *count += 1,
                None => {
                    out.reject_reasons.insert(reason.to_owned(), 1);
                }
            }
        }
        let filled = slot.filled;
        if filled > 0.0 && filled < o.quantity * (1.0 - QUANTITY_TOLERANCE) {
            out.partial_fills += 1;
            sym.partial += 1;
        }
        match o.ack_ms {
            Some(ack) => latencies.push(ack - o.submit_ms),
            None => out.latency.missing_ack += 1,
        }
    }
    out.ordered_quantity = ordered_total;
    out.fill_rate_by_quantity = ratio(filled_total, ordered_total);
    out.fill_rate_by_orders = ratio(out.by_state.filled as f64, orders.len() as f64);
    out.slippage = slip.stats();

    let lat = &mut out.latency;
    lat.count = latencies.len() as u64;
    if !latencies.is_empty() {
        let sum: i128 = latencies.iter().map(|&l| i128::from(l)).sum();
        lat.avg_ms = Some(sum as f64 / latencies.len() as f64);
        lat.max_ms = latencies.iter().copied().max();
        lat.p50_ms = nearest_rank(&mut latencies, 50);
        lat.p95_ms = nearest_rank(&mut latencies, 95);
        lat.p99_ms = nearest_rank(&mut latencies, 99);
    }

    out.by_symbol = symbol_names
        .iter()
        .zip(&per_symbol)
        .map(|(name, a)| {
            let stats = SymbolStats {
                orders: a.orders,
                filled_orders: a.filled_orders,
                partial_fills: a.partial,
                failures: a.failures,
                ordered_quantity: a.ordered,
                filled_quantity: a.filled,
                fill_rate_by_quantity: ratio(a.filled, a.ordered),
                fill_rate_by_orders: ratio(a.filled_orders as f64, a.orders as f64),
                executions: a.executions,
                filled_notional: a.notional,
                fees: a.fees,
                slippage: a.slip.stats(),
            };
            ((*name).to_owned(), stats)
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::returns::tests::close;

    fn order(id: u64, symbol: &str, side: Side, qty: f64, arrival: Option<f64>) -> Order {
        Order {
            id,
            symbol: symbol.to_owned(),
            side,
            quantity: qty,
            order_type: OrderType::Market,
            limit_price: None,
            arrival_price: arrival,
            decision_ms: 0,
            submit_ms: 1_000,
            ack_ms: None,
            final_state: OrderState::Filled,
            reject_reason: None,
        }
    }

    fn fill(order_id: u64, qty: f64, price: f64, fee: f64) -> Fill {
        Fill {
            order_id,
            time_ms: 2_000,
            quantity: qty,
            price,
            fee,
        }
    }

    /// Five orders: a buy filled in two fills, a sell filled at a better price, a
    /// cancelled partial, a reject, and a fill-less open order without arrival price.
    fn sample() -> (Vec<Order>, Vec<Fill>) {
        let mut o = vec![
            order(1, "AAPL", Side::Buy, 100.0, Some(100.0)),
            order(2, "AAPL", Side::Sell, 50.0, Some(200.0)),
            order(3, "MSFT", Side::Buy, 10.0, Some(50.0)),
            order(4, "MSFT", Side::Sell, 20.0, Some(50.0)),
            order(5, "BTC", Side::Buy, 2.0, None),
        ];
        o[0].ack_ms = Some(1_005);
        o[1].ack_ms = Some(1_012);
        o[2].ack_ms = Some(1_003);
        o[2].final_state = OrderState::Cancelled;
        o[3].ack_ms = Some(1_040);
        o[3].final_state = OrderState::Rejected;
        o[3].reject_reason = Some("insufficient margin".into());
        o[4].final_state = OrderState::PartiallyFilled;
        let f = vec![
            fill(1, 60.0, 100.05, 0.6),
            fill(1, 40.0, 100.10, 0.4),
            fill(2, 50.0, 199.9, 1.0),
            fill(3, 4.0, 50.0, 0.04),
            fill(5, 1.0, 30_000.0, 3.0),
            fill(99, 1.0, 1.0, 0.0),
        ];
        (o, f)
    }

    #[test]
    fn counts_and_fill_rates() {
        let (o, f) = sample();
        let s = execution_stats(&o, &f).unwrap();
        assert_eq!(s.orders, 5);
        assert_eq!(
            s.by_state,
            StateCounts {
                filled: 2,
                partially_filled: 1,
                cancelled: 1,
                rejected: 1,
                failed: 0,
                open: 0
            }
        );
        assert_eq!(s.executions, 5);
        assert_eq!(s.unmatched_fills, 1);
        // Orders 3 (4 of 10) and 5 (1 of 2).
        assert_eq!(s.partial_fills, 2);
        assert_eq!(s.failures, 1);
        assert_eq!(s.reject_reasons["insufficient margin"], 1);
        // (60 + 40 + 50 + 4 + 1) / (100 + 50 + 10 + 20 + 2)
        close(s.filled_quantity, 155.0);
        close(s.ordered_quantity, 182.0);
        close(s.fill_rate_by_quantity.unwrap(), 155.0 / 182.0);
        assert_eq!(s.fill_rate_by_orders, Some(0.4));
        close(s.fees, 5.04);
    }

    #[test]
    fn slippage_is_side_signed() {
        let (o, f) = sample();
        let s = execution_stats(&o, &f).unwrap().slippage;
        // Python:
        //   bps = [(100.05 - 100) / 100 * 1e4, (100.10 - 100) / 100 * 1e4,
        //          -(199.9 - 200) / 200 * 1e4, (50.0 - 50) / 50 * 1e4]
        //   notional = [60 * 100.05, 40 * 100.10, 50 * 199.9, 4 * 50.0]
        //   np.mean(bps) -> 4.999999999999716
        //   np.dot(bps, notional) / np.sum(notional) -> 5.941490941490604
        //   max(bps) -> 9.999999999999432
        assert_eq!(s.measured_fills, 4);
        assert_eq!(s.skipped_no_arrival, 1);
        close(s.mean_bps.unwrap(), 4.999999999999716);
        close(s.notional_weighted_bps.unwrap(), 5.941490941490604);
        close(s.max_bps.unwrap(), 9.999999999999432);
        assert_eq!((s.adverse, s.improved, s.zero), (3, 0, 1));
        // The sell at 199.9 against a 200 mid is a cost for a seller: positive.
        assert!(slippage_bps(Side::Sell, 199.9, 200.0) > 0.0);
        assert!(slippage_bps(Side::Sell, 200.1, 200.0) < 0.0);
        assert!(slippage_bps(Side::Buy, 99.9, 100.0) < 0.0);
    }

    #[test]
    fn latency_nearest_rank() {
        let (o, f) = sample();
        let l = execution_stats(&o, &f).unwrap().latency;
        // latencies 5, 12, 3, 40; order 5 has no ack.
        assert_eq!(l.count, 4);
        assert_eq!(l.missing_ack, 1);
        assert_eq!(l.avg_ms, Some(15.0));
        assert_eq!(l.max_ms, Some(40));
        // Sorted 3, 5, 12, 40: ranks ceil(0.5*4)=2, ceil(0.95*4)=4, ceil(0.99*4)=4.
        assert_eq!(
            (l.p50_ms, l.p95_ms, l.p99_ms),
            (Some(5), Some(40), Some(40))
        );

        // 1..=100: nearest rank p50 = 50, p95 = 95, p99 = 99 (numpy's 'inverted_cdf').
        let mut v: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(nearest_rank(&mut v, 50), Some(50));
        assert_eq!(nearest_rank(&mut v, 95), Some(95));
        assert_eq!(nearest_rank(&mut v, 99), Some(99));
        // 1..=101: np.percentile(np.arange(1, 102), [50, 95, 99], method='inverted_cdf')
        //   -> [51, 96, 100]
        let mut v: Vec<i64> = (1..=101).collect();
        assert_eq!(nearest_rank(&mut v, 50), Some(51));
        assert_eq!(nearest_rank(&mut v, 95), Some(96));
        assert_eq!(nearest_rank(&mut v, 99), Some(100));
        assert_eq!(nearest_rank(&mut [7], 99), Some(7));
        assert_eq!(nearest_rank(&mut [], 50), None);
    }

    #[test]
    fn by_symbol_breakdown() {
        let (o, f) = sample();
        let s = execution_stats(&o, &f).unwrap();
        assert_eq!(
            s.by_symbol.keys().collect::<Vec<_>>(),
            vec!["AAPL", "BTC", "MSFT"]
        );
        let aapl = &s.by_symbol["AAPL"];
        assert_eq!(
            (aapl.orders, aapl.filled_orders, aapl.executions),
            (2, 2, 3)
        );
        assert_eq!(aapl.fill_rate_by_orders, Some(1.0));
        assert_eq!(aapl.slippage.measured_fills, 3);
        let msft = &s.by_symbol["MSFT"];
        assert_eq!((msft.orders, msft.failures, msft.partial_fills), (2, 1, 1));
        close(msft.fill_rate_by_quantity.unwrap(), 4.0 / 30.0);
        assert_eq!(msft.slippage.zero, 1);
        let btc = &s.by_symbol["BTC"];
        assert_eq!(btc.slippage.skipped_no_arrival, 1);
        assert_eq!(btc.slippage.mean_bps, None);
    }

    #[test]
    fn ids_with_only_high_bits_set_still_spread() {
        // Ids that differ only above bit 20 or 40 must not all land in one bucket (which
        // would make this quadratic and the test slow).
        for shift in [20, 40, 60] {
            let n = 20_000u64;
            let orders: Vec<Order> = (0..n)
                .map(|i| order((i + 1) << shift.min(63 - 15), "X", Side::Buy, 1.0, None))
                .collect();
            let fills: Vec<Fill> = orders.iter().map(|o| fill(o.id, 1.0, 1.0, 0.0)).collect();
            let s = execution_stats(&orders, &fills).unwrap();
            assert_eq!(s.executions, n);
        }
    }

    #[test]
    fn sparse_ids_give_the_same_stats_as_dense_ones() {
        let (o, f) = sample();
        let dense = execution_stats(&o, &f).unwrap();
        // Spread the ids over the whole u64 range: the hashed index.
        let spread = |id: u64| id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let o2: Vec<Order> = o
            .iter()
            .map(|o| Order {
                id: spread(o.id),
                ..o.clone()
            })
            .collect();
        let f2: Vec<Fill> = f
            .iter()
            .map(|f| Fill {
                order_id: spread(f.order_id),
                ..*f
            })
            .collect();
        assert_eq!(execution_stats(&o2, &f2).unwrap(), dense);
        let mut dup = o2.clone();
        dup[4].id = dup[1].id;
        assert_eq!(
            execution_stats(&dup, &[]).unwrap_err(),
            ExecutionError::DuplicateOrderId {
                index: 4,
                first: 1,
                id: dup[1].id
            }
        );
    }

    #[test]
    fn empty_input() {
        let s = execution_stats(&[], &[]).unwrap();
        assert_eq!(s.orders, 0);
        assert_eq!(s.executions, 0);
        assert_eq!(s.fill_rate_by_orders, None);
        assert_eq!(s.fill_rate_by_quantity, None);
        assert_eq!(s.slippage.mean_bps, None);
        assert_eq!(s.slippage.notional_weighted_bps, None);
        assert_eq!(s.latency.avg_ms, None);
        assert_eq!(s.latency.p99_ms, None);
        assert!(s.by_symbol.is_empty());
        // Fills without orders are all unmatched.
        let s = execution_stats(&[], &[fill(1, 1.0, 1.0, 0.0)]).unwrap();
        assert_eq!((s.executions, s.unmatched_fills), (0, 1));
    }

    #[test]
    fn full_fill_in_float_pieces_is_not_partial() {
        let mut o = vec![order(1, "X", Side::Buy, 0.3, Some(1.0))];
        o[0].final_state = OrderState::Filled;
        // 0.1 + (0.2 - 1e-12) = 0.29999999999900007: short of 0.3 by float residue only,
        // within the relative tolerance.
        let f = [fill(1, 0.1, 1.0, 0.0), fill(1, 0.2 - 1e-12, 1.0, 0.0)];
        assert_eq!(execution_stats(&o, &f).unwrap().partial_fills, 0);
        let f = [fill(1, 0.1, 1.0, 0.0)];
        assert_eq!(execution_stats(&o, &f).unwrap().partial_fills, 1);
    }

    #[test]
    fn refuses_bad_input() {
        let o = vec![
            order(1, "X", Side::Buy, 1.0, None),
            order(1, "Y", Side::Buy, 1.0, None),
        ];
        assert_eq!(
            execution_stats(&o, &[]).unwrap_err().to_string(),
            "order 1 repeats the id 1 of order 0"
        );
        let o = vec![order(1, "X", Side::Buy, 0.0, None)];
        assert!(matches!(
            execution_stats(&o, &[]),
            Err(ExecutionError::OrderQuantity { index: 0, .. })
        ));
        let o = vec![order(1, "X", Side::Buy, 1.0, Some(-5.0))];
        assert_eq!(
            execution_stats(&o, &[]).unwrap_err().to_string(),
            "order 0 (id 1) has arrival price -5; it must be positive and finite"
        );
        let o = vec![order(1, "X", Side::Buy, 1.0, Some(5.0))];
        assert_eq!(
            execution_stats(&o, &[fill(1, 1.0, f64::NAN, 0.0)])
                .unwrap_err()
                .to_string(),
            "fill 0 (order 1) has price NaN; it must be positive and finite"
        );
        assert_eq!(
            execution_stats(&o, &[fill(1, 1.0, 1.0, f64::INFINITY)])
                .unwrap_err()
                .to_string(),
            "fill 0 (order 1) has fee inf; it must be finite"
        );
    }
}
