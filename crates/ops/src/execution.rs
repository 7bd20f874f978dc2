//! `get_execution_analytics` and `monitor_strategy_health`: the stored orders and fills
//! (and a strategy's returns and data feed) through the pure definitions of
//! `quantbox-analytics`.

use std::collections::{BTreeMap, HashMap};

use quantbox_analytics::{self as an, health};
use quantbox_sandbox::Timestamp;
use quantbox_trading::{Fill, Order, OrderState, Side};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Ops;
use crate::error::OpError;
use crate::report::{check_strategy, daily_returns};

/// The window of `get_execution_analytics`, ending now.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum TimePeriod {
    #[serde(rename = "1h")]
    Hour,
    #[default]
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
    #[serde(rename = "all")]
    All,
}

impl TimePeriod {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
            Self::Month => "30d",
            Self::All => "all",
        }
    }

    fn ms(self) -> Option<i64> {
        Some(match self {
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
            Self::Week => 7 * 86_400_000,
            Self::Month => 30 * 86_400_000,
            Self::All => return None,
        })
    }
}

/// Arguments of `get_execution_analytics`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionInput {
    /// `1h`, `24h`, `7d`, `30d` (ending now) or `all`; orders count by submit time.
    #[serde(default)]
    pub time_period: TimePeriod,
    /// Only this strategy's orders.
    #[serde(default)]
    pub strategy: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct OrderCountsOut {
    pub total: u64,
    pub filled: u64,
    pub partially_filled: u64,
    pub cancelled: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Still working.
    pub open: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FillRateOut {
    /// Filled quantity / ordered quantity.
    pub by_quantity: Option<f64>,
    /// Fully filled orders / submitted orders.
    pub by_orders: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SlippageOut {
    /// Simple mean over fills, bps, positive = cost against the arrival price.
    pub avg_bps: Option<f64>,
    pub notional_weighted_bps: Option<f64>,
    pub max_bps: Option<f64>,
    pub adverse_count: u64,
    pub improved_count: u64,
    pub zero_count: u64,
    /// Fills measured; fills of orders without an arrival price are not.
    pub measured_fills: u64,
    pub skipped_no_arrival_price: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct LatencyOut {
    /// Submit → acknowledgement, over orders with an acknowledgement.
    pub count: u64,
    pub avg: Option<f64>,
    /// Nearest rank: always observed values.
    pub p50: Option<i64>,
    pub p95: Option<i64>,
    pub p99: Option<i64>,
    pub max: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SymbolOut {
    pub symbol: String,
    pub orders: u64,
    pub filled_orders: u64,
    pub partial_fills: u64,
    pub failures: u64,
    pub fill_rate_by_quantity: Option<f64>,
    pub fill_rate_by_orders: Option<f64>,
    pub executions: u64,
    pub avg_slippage_bps: Option<f64>,
    pub filled_notional: f64,
    pub fees: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecutionOutput {
    pub time_period: String,
    /// Window start (null for `all`) and end.
    pub from: Option<String>,
    pub to: String,
    pub strategy: Option<String>,
    pub orders: OrderCountsOut,
    pub fill_rate: FillRateOut,
    pub slippage: SlippageOut,
    pub latency_ms: LatencyOut,
    /// Fills.
    pub executions: u64,
    /// Orders that ended with 0 < filled < ordered.
    pub partial_fills: u64,
    /// Rejected and failed orders.
    pub failures: u64,
    pub reject_reasons: BTreeMap<String, u64>,
    pub filled_notional: f64,
    pub fees: f64,
    pub by_symbol: Vec<SymbolOut>,
    /// Whether the records come from a simulation (a paper broker): `true`, `false`, or
    /// `mixed`.
    pub simulated: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn side(s: Side) -> an::execution::Side {
    match s {
        Side::Buy => an::execution::Side::Buy,
        Side::Sell => an::execution::Side::Sell,
    }
}

fn state(s: OrderState) -> an::execution::OrderState {
    use an::execution::OrderState as A;
    match s {
        OrderState::Open => A::Open,
        OrderState::Filled => A::Filled,
        OrderState::PartiallyFilled => A::PartiallyFilled,
        OrderState::Cancelled => A::Cancelled,
        OrderState::Rejected => A::Rejected,
        OrderState::Failed => A::Failed,
    }
}

fn order_type(t: &str) -> an::execution::OrderType {
    use an::execution::OrderType as T;
    match t {
        "limit" | "lmt" => T::Limit,
        "stop" | "stp" => T::Stop,
        "stop_limit" | "stop-limit" | "stoplimit" => T::StopLimit,
        _ => T::Market,
    }
}

/// Orders and fills in the analytics' shape (order ids interned per strategy).
pub fn execution_stats(orders: &[Order], fills: &[Fill]) -> Result<an::ExecutionStats, OpError> {
    let mut ids: HashMap<(&str, &str), u64> = HashMap::with_capacity(orders.len());
    let mut a_orders = Vec::with_capacity(orders.len());
    for (i, o) in orders.iter().enumerate() {
        let id = i as u64;
        ids.insert((o.strategy.as_str(), o.id.as_str()), id);
        a_orders.push(an::execution::Order {
            id,
            symbol: o.symbol.clone(),
            side: side(o.side),
            quantity: o.quantity,
            order_type: order_type(&o.order_type),
            limit_price: o.limit_price,
            arrival_price: o.arrival_price,
            decision_ms: o.decision_ms,
            submit_ms: o.submit_ms,
            ack_ms: o.ack_ms,
            final_state: state(o.state),
            reject_reason: o.reject_reason.clone(),
        });
    }
    let a_fills: Vec<an::execution::Fill> = fills
        .iter()
        .filter_map(|f| {
            ids.get(&(f.strategy.as_str(), f.order_id.as_str()))
                .map(|&order_id| an::execution::Fill {
                    order_id,
                    time_ms: f.t_ms,
                    quantity: f.quantity,
                    price: f.price,
                    fee: f.fee,
                })
        })
        .collect();
    an::execution_stats(&a_orders, &a_fills)
        .map_err(|e| OpError::internal(format!("execution statistics: {e}")))
}

fn simulated(orders: &[Order]) -> String {
    match (
        orders.iter().any(|o| o.simulated),
        orders.iter().any(|o| !o.simulated),
    ) {
        (true, true) => "mixed",
        (true, false) => "true",
        _ => "false",
    }
    .to_owned()
}

/// Arguments of `monitor_strategy_health`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyHealthInput {
    pub strategy: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CheckOut {
    /// `pass`, `fail` or `no_data`.
    pub status: String,
    pub value: Option<f64>,
    pub threshold: f64,
    /// Points this check took off the score.
    pub penalty: u32,
    pub detail: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AlertOut {
    /// `warning` or `critical`.
    pub severity: String,
    pub check: String,
    pub message: String,
    pub at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StrategyHealthOutput {
    pub strategy: String,
    /// 0–100; null with `no_data`.
    pub health_score: Option<u32>,
    /// `healthy` (≥ 80), `warning` (60–80), `critical` (< 60) or `no_data`.
    pub status: String,
    /// `performance_stability`, `drawdown`, `execution_quality`, `data_feed`.
    pub checks: BTreeMap<String, CheckOut>,
    pub alerts: Vec<AlertOut>,
    pub metrics: BTreeMap<String, Option<f64>>,
    /// The newest data point, order or heartbeat of the strategy.
    pub last_update: Option<String>,
    /// The rules applied (metrics.md's defaults): thresholds and penalties.
    pub rules: serde_json::Value,
}

fn enum_str<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Ops {
    pub async fn get_execution_analytics(
        &self,
        input: ExecutionInput,
    ) -> Result<ExecutionOutput, OpError> {
        if let Some(s) = &input.strategy {
            check_strategy(s)?;
        }
        let store = self.trading()?.clone();
        let now = Timestamp::now();
        let from = input.time_period.ms().map(|ms| now.unix_ms() - ms);
        let strategy = input.strategy.clone();
        let (orders, fills, all_orders) = tokio::task::spawn_blocking(move || {
            let s = strategy.as_deref();
            let lo = from.unwrap_or(i64::MIN);
            let orders = store.orders(s, lo, now.unix_ms())?;
            let fills = store.fills(s, lo, now.unix_ms())?;
            // For the note of an empty window: what there is at all.
            let all = if orders.is_empty() {
                store.orders(s, i64::MIN, i64::MAX)?
            } else {
                Vec::new()
            };
            Ok::<_, OpError>((orders, fills, all))
        })
        .await
        .map_err(|e| OpError::internal(format!("reading orders: {e}")))??;
        let st = execution_stats(&orders, &fills)?;
        let note = orders.is_empty().then(|| {
            let whose = input
                .strategy
                .as_deref()
                .map_or_else(|| "any strategy".to_owned(), |s| format!("strategy `{s}`"));
            match (all_orders.first(), all_orders.last()) {
                (Some(a), Some(b)) => format!(
                    "no orders of {whose} were submitted in this window; its {} stored orders were submitted between {} and {} (time_period `all` covers them)",
                    all_orders.len(),
                    Timestamp::from_unix_ms(a.submit_ms),
                    Timestamp::from_unix_ms(b.submit_ms)
                ),
                _ => format!(
                    "no orders of {whose} are stored; import them with `quantbox import orders FILE` or run an agent"
                ),
            }
        });
        let by_symbol = st
            .by_symbol
            .iter()
            .map(|(symbol, s)| SymbolOut {
                symbol: symbol.clone(),
                orders: s.orders,
                filled_orders: s.filled_orders,
                partial_fills: s.partial_fills,
                failures: s.failures,
                fill_rate_by_quantity: s.fill_rate_by_quantity,
                fill_rate_by_orders: s.fill_rate_by_orders,
                executions: s.executions,
                avg_slippage_bps: s.slippage.mean_bps,
                filled_notional: s.filled_notional,
                fees: s.fees,
            })
            .collect();
        Ok(ExecutionOutput {
            time_period: input.time_period.as_str().to_owned(),
            from: from.map(|ms| Timestamp::from_unix_ms(ms).to_rfc3339()),
            to: now.to_rfc3339(),
            strategy: input.strategy,
            orders: OrderCountsOut {
                total: st.orders,
                filled: st.by_state.filled,
                partially_filled: st.by_state.partially_filled,
                cancelled: st.by_state.cancelled,
                rejected: st.by_state.rejected,
                failed: st.by_state.failed,
                open: st.by_state.open,
            },
            fill_rate: FillRateOut {
                by_quantity: st.fill_rate_by_quantity,
                by_orders: st.fill_rate_by_orders,
            },
            slippage: SlippageOut {
                avg_bps: st.slippage.mean_bps,
                notional_weighted_bps: st.slippage.notional_weighted_bps,
                max_bps: st.slippage.max_bps,
                adverse_count: st.slippage.adverse,
                improved_count: st.slippage.improved,
                zero_count: st.slippage.zero,
                measured_fills: st.slippage.measured_fills,
                skipped_no_arrival_price: st.slippage.skipped_no_arrival,
            },
            latency_ms: LatencyOut {
                count: st.latency.count,
                avg: st.latency.avg_ms,
                p50: st.latency.p50_ms,
                p95: st.latency.p95_ms,
                p99: st.latency.p99_ms,
                max: st.latency.max_ms,
            },
            executions: st.executions,
            partial_fills: st.partial_fills,
            failures: st.failures,
            reject_reasons: st.reject_reasons.clone(),
            filled_notional: st.filled_notional,
            fees: st.fees,
            by_symbol,
            simulated: simulated(&orders),
            note,
        })
    }

    pub async fn monitor_strategy_health(
        &self,
        input: StrategyHealthInput,
    ) -> Result<StrategyHealthOutput, OpError> {
        check_strategy(&input.strategy)?;
        let store = self.trading()?.clone();
        let name = input.strategy.clone();
        let now = Timestamp::now();
        let (info, series, orders, fills, last_beat) = tokio::task::spawn_blocking(move || {
            let info = store.strategy(&name)?.ok_or_else(|| {
                OpError::not_found(format!(
                    "no strategy named `{name}`; import its returns with `quantbox import returns FILE --strategy {name}`, or run an agent"
                ))
            })?;
            let series = store.series(&name)?;
            let orders = store.orders(Some(&name), i64::MIN, i64::MAX)?;
            let fills = store.fills(Some(&name), i64::MIN, i64::MAX)?;
            let beat = store.last_heartbeat(&name)?;
            Ok::<_, OpError>((info, series, orders, fills, beat))
        })
        .await
        .map_err(|e| OpError::internal(format!("reading the strategy: {e}")))??;
        let returns = match &series {
            Some((kind, points)) => daily_returns(*kind, points)?,
            None => None,
        };
        let values: &[f64] = returns.as_ref().map_or(&[], |r| r.values());
        let exec = (!orders.is_empty())
            .then(|| execution_stats(&orders, &fills))
            .transpose()?;
        let feed = info.feed_interval_ms.map(|interval| health::FeedFacts {
            last_event_ms: last_beat,
            expected_interval_ms: interval,
            now_ms: now.unix_ms(),
        });
        let rules = health::HealthRules::default();
        let h = health::strategy_health(
            &health::HealthInputs {
                returns: values,
                periods_per_year: 252.0,
                risk_free: 0.0,
                execution: exec.as_ref().map(health::ExecutionFacts::from),
                feed,
            },
            &rules,
        );
        let mut checks = BTreeMap::new();
        let mut metrics = BTreeMap::new();
        for c in &h.checks {
            let mut detail = c.detail.clone();
            if c.name == "data_feed" && feed.is_none() {
                detail = format!(
                    "{detail} (the strategy has no live feed: its data was {}; agents in paper mode send heartbeats)",
                    if info.source == "import" {
                        "imported"
                    } else {
                        "written by an agent run without a feed interval"
                    }
                );
            }
            metrics.insert(c.name.to_owned(), c.value);
            checks.insert(
                c.name.to_owned(),
                CheckOut {
                    status: enum_str(&c.status),
                    value: c.value,
                    threshold: c.threshold,
                    penalty: c.penalty,
                    detail,
                },
            );
        }
        if let Some(e) = &exec {
            metrics.insert("fill_rate_by_orders".into(), e.fill_rate_by_orders);
            metrics.insert("mean_slippage_bps".into(), e.slippage.mean_bps);
        }
        metrics.insert("observations".into(), Some(values.len() as f64));
        let last = [
            info.last_ms,
            orders.iter().map(|o| o.submit_ms).max(),
            last_beat,
        ]
        .into_iter()
        .flatten()
        .max();
        Ok(StrategyHealthOutput {
            strategy: input.strategy,
            health_score: h.score,
            status: enum_str(&h.status),
            checks,
            alerts: h
                .alerts
                .iter()
                .map(|a| AlertOut {
                    severity: enum_str(&a.severity),
                    check: a.check.to_owned(),
                    message: a.message.clone(),
                    at: now.to_rfc3339(),
                })
                .collect(),
            metrics,
            last_update: last.map(|ms| Timestamp::from_unix_ms(ms).to_rfc3339()),
            rules: serde_json::to_value(rules).unwrap_or_default(),
        })
    }
}
