//! Strategy health (metrics.md, "Strategy health"): a 0–100 score from four checks.
//!
//! Start at 100 and subtract, per check that fails (defaults in [`HealthRules`]):
//!
//! | check | fails when | penalty | alert |
//! |---|---|---|---|
//! | `performance_stability` | Sharpe of the last 30 observations `< 0.5` | −20 | warning |
//! |  | … `< 0` | −30 (instead) | critical |
//! | `drawdown` | current drawdown deeper than 10 % (`dd < -0.10`) | −15 | warning |
//! |  | … deeper than 20 % | −30 (instead) | critical |
//! | `execution_quality` | fill rate by orders `< 0.90` | −10 | warning |
//! |  | mean slippage `> 10` bps | −10 (added) | warning |
//! | `data_feed` | no bar or heartbeat for more than 3 expected intervals | −25 | critical |
//!
//! **Edges are exclusive** — the comparisons are strict, so the number in the spec
//! passes: a Sharpe of exactly 0.5 passes and exactly 0 is a warning (−20, not −30); a
//! drawdown of exactly 10 % passes and exactly 20 % costs −15; a fill rate of exactly
//! 90 % and a slippage of exactly 10 bps pass; a gap of exactly 3 intervals passes.
//! Bands: score ≥ 80 healthy, 60 ≤ score < 80 warning, < 60 critical (80 is healthy,
//! 60 is warning). The score saturates at 0.
//!
//! A check without its data is `no_data` and costs nothing; when all four are
//! `no_data` the status is `no_data` and there is no score. Every failed condition
//! raises an alert. The clock is an input (`now_ms`): nothing here reads the time.

use serde::Serialize;

use crate::drawdown::current_drawdown;
use crate::execution::ExecutionStats;
use crate::returns::sharpe;

/// Thresholds and penalties; `Default` is metrics.md's numbers. Drawdowns are positive
/// fractions of depth (0.10 = 10 %).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HealthRules {
    /// Observations in the rolling Sharpe window (the last `window` of the series).
    pub sharpe_window: usize,
    pub sharpe_warning_below: f64,
    pub sharpe_warning_penalty: u32,
    pub sharpe_critical_below: f64,
    pub sharpe_critical_penalty: u32,
    pub drawdown_warning_beyond: f64,
    pub drawdown_warning_penalty: u32,
    pub drawdown_critical_beyond: f64,
    pub drawdown_critical_penalty: u32,
    pub fill_rate_below: f64,
    pub fill_rate_penalty: u32,
    pub slippage_above_bps: f64,
    pub slippage_penalty: u32,
    pub feed_max_intervals: f64,
    pub feed_penalty: u32,
    /// Lowest healthy score.
    pub healthy_from: u32,
    /// Lowest warning score (below it: critical).
    pub warning_from: u32,
}

impl Default for HealthRules {
    fn default() -> HealthRules {
        HealthRules {
            sharpe_window: 30,
            sharpe_warning_below: 0.5,
            sharpe_warning_penalty: 20,
            sharpe_critical_below: 0.0,
            sharpe_critical_penalty: 30,
            drawdown_warning_beyond: 0.10,
            drawdown_warning_penalty: 15,
            drawdown_critical_beyond: 0.20,
            drawdown_critical_penalty: 30,
            fill_rate_below: 0.90,
            fill_rate_penalty: 10,
            slippage_above_bps: 10.0,
            slippage_penalty: 10,
            feed_max_intervals: 3.0,
            feed_penalty: 25,
            healthy_from: 80,
            warning_from: 60,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Warning,
    Critical,
    NoData,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Fail,
    NoData,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

/// One check's outcome. `value` is the figure compared with `threshold` (always finite;
/// `None` with the reason in `detail` when it is missing or infinite).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: CheckStatus,
    pub value: Option<f64>,
    pub threshold: f64,
    /// Points subtracted from the score.
    pub penalty: u32,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub check: &'static str,
    pub severity: Severity,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Health {
    /// 0–100; `None` when no check had data.
    pub score: Option<u32>,
    pub status: HealthStatus,
    /// `performance_stability`, `drawdown`, `execution_quality`, `data_feed`, in that order.
    pub checks: Vec<Check>,
    pub alerts: Vec<Alert>,
}

/// The execution figures health looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ExecutionFacts {
    pub fill_rate_by_orders: Option<f64>,
    pub mean_slippage_bps: Option<f64>,
}

impl From<&ExecutionStats> for ExecutionFacts {
    /// Fill rate by orders and the **simple** mean slippage.
    fn from(s: &ExecutionStats) -> ExecutionFacts {
        ExecutionFacts {
            fill_rate_by_orders: s.fill_rate_by_orders,
            mean_slippage_bps: s.slippage.mean_bps,
        }
    }
}

/// The data feed's state, times in Unix milliseconds (`now_ms` is the caller's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FeedFacts {
    /// The last bar or heartbeat; `None` if none was ever received.
    pub last_event_ms: Option<i64>,
    pub expected_interval_ms: i64,
    pub now_ms: i64,
}

/// Everything [`strategy_health`] reads.
#[derive(Clone, Copy, Debug)]
pub struct HealthInputs<'a> {
    /// The strategy's simple period returns (may be empty).
    pub returns: &'a [f64],
    pub periods_per_year: f64,
    /// Annual risk-free rate for the rolling Sharpe.
    pub risk_free: f64,
    pub execution: Option<ExecutionFacts>,
    pub feed: Option<FeedFacts>,
}

/// Sharpe ([`sharpe`]) of the last `window` observations; `None` with fewer than
/// `window`. May be ±inf or NaN (constant returns).
pub fn rolling_sharpe_last(
    returns: &[f64],
    window: usize,
    periods_per_year: f64,
    risk_free: f64,
) -> Option<f64> {
    (window > 0 && returns.len() >= window).then(|| {
        sharpe(
            &returns[returns.len() - window..],
            periods_per_year,
            risk_free,
        )
    })
}

fn check(
    name: &'static str,
    status: CheckStatus,
    value: Option<f64>,
    threshold: f64,
    penalty: u32,
    detail: String,
) -> Check {
    Check {
        name,
        status,
        value,
        threshold,
        penalty,
        detail,
    }
}

fn alert(check: &'static str, severity: Severity, message: String) -> Alert {
    Alert {
        check,
        severity,
        message,
    }
}

/// `performance_stability` from the rolling Sharpe (`None`: too few observations).
pub fn performance_check(rolling_sharpe: Option<f64>, rules: &HealthRules) -> (Check, Vec<Alert>) {
    const NAME: &str = "performance_stability";
    let threshold = rules.sharpe_warning_below;
    let w = rules.sharpe_window;
    let Some(s) = rolling_sharpe else {
        let detail = format!("needs {w} observations for the rolling Sharpe");
        return (
            check(NAME, CheckStatus::NoData, None, threshold, 0, detail),
            vec![],
        );
    };
    if s.is_nan() {
        let detail = format!(
            "the rolling {w}-observation Sharpe is undefined (too few non-missing returns, or all exactly the risk-free rate)"
        );
        return (
            check(NAME, CheckStatus::NoData, None, threshold, 0, detail),
            vec![],
        );
    }
    let shown = if s.is_finite() {
        format!("{s:.3}")
    } else {
        format!("{s} (constant returns)")
    };
    let value = s.is_finite().then_some(s);
    let (penalty, severity, bound) = if s < rules.sharpe_critical_below {
        (
            rules.sharpe_critical_penalty,
            Severity::Critical,
            rules.sharpe_critical_below,
        )
    } else if s < rules.sharpe_warning_below {
        (
            rules.sharpe_warning_penalty,
            Severity::Warning,
            rules.sharpe_warning_below,
        )
    } else {
        let detail = format!("rolling {w}-observation Sharpe {shown} ≥ {threshold}");
        return (
            check(NAME, CheckStatus::Pass, value, threshold, 0, detail),
            vec![],
        );
    };
    let detail = format!("rolling {w}-observation Sharpe {shown} < {bound}");
    let alerts = vec![alert(NAME, severity, detail.clone())];
    (
        check(NAME, CheckStatus::Fail, value, threshold, penalty, detail),
        alerts,
    )
}

/// `drawdown` from the current drawdown (a negative fraction; `None`: no returns).
pub fn drawdown_check(current: Option<f64>, rules: &HealthRules) -> (Check, Vec<Alert>) {
    const NAME: &str = "drawdown";
    let threshold = -rules.drawdown_warning_beyond;
    let Some(dd) = current.filter(|d| d.is_finite()) else {
        let detail = "no returns".to_owned();
        return (
            check(NAME, CheckStatus::NoData, None, threshold, 0, detail),
            vec![],
        );
    };
    let depth = -dd;
    let pct = |x: f64| format!("{:.2} %", x * 100.0);
    let (penalty, severity, bound) = if depth > rules.drawdown_critical_beyond {
        (
            rules.drawdown_critical_penalty,
            Severity::Critical,
            rules.drawdown_critical_beyond,
        )
    } else if depth > rules.drawdown_warning_beyond {
        (
            rules.drawdown_warning_penalty,
            Severity::Warning,
            rules.drawdown_warning_beyond,
        )
    } else {
        let detail = format!(
            "current drawdown {} within {}",
            pct(depth),
            pct(rules.drawdown_warning_beyond)
        );
        return (
            check(NAME, CheckStatus::Pass, Some(dd), threshold, 0, detail),
            vec![],
        );
    };
    let detail = format!("current drawdown {} beyond {}", pct(depth), pct(bound));
    let alerts = vec![alert(NAME, severity, detail.clone())];
    (
        check(
            NAME,
            CheckStatus::Fail,
            Some(dd),
            threshold,
            penalty,
            detail,
        ),
        alerts,
    )
}

/// `execution_quality`: fill rate by orders and mean slippage, each its own condition
/// and penalty. `value`/`threshold` are the fill rate's; the detail names both.
pub fn execution_check(facts: Option<ExecutionFacts>, rules: &HealthRules) -> (Check, Vec<Alert>) {
    const NAME: &str = "execution_quality";
    let threshold = rules.fill_rate_below;
    let facts = facts.unwrap_or_default();
    let fill = facts.fill_rate_by_orders.filter(|v| v.is_finite());
    let slip = facts.mean_slippage_bps.filter(|v| v.is_finite());
    if fill.is_none() && slip.is_none() {
        let detail = "no orders or fills".to_owned();
        return (
            check(NAME, CheckStatus::NoData, None, threshold, 0, detail),
            vec![],
        );
    }
    let (mut penalty, mut alerts, mut parts) = (0, Vec::new(), Vec::new());
    match fill {
        Some(f) if f < rules.fill_rate_below => {
            let msg = format!(
                "fill rate by orders {:.2} % below {:.2} %",
                f * 100.0,
                rules.fill_rate_below * 100.0
            );
            penalty += rules.fill_rate_penalty;
            alerts.push(alert(NAME, Severity::Warning, msg.clone()));
            parts.push(msg);
        }
        Some(f) => parts.push(format!("fill rate by orders {:.2} %", f * 100.0)),
        None => parts.push("no fill rate".to_owned()),
    }
    match slip {
        Some(s) if s > rules.slippage_above_bps => {
            let msg = format!(
                "mean slippage {s:.2} bps above {} bps",
                rules.slippage_above_bps
            );
            penalty += rules.slippage_penalty;
            alerts.push(alert(NAME, Severity::Warning, msg.clone()));
            parts.push(msg);
        }
        Some(s) => parts.push(format!("mean slippage {s:.2} bps")),
        None => parts.push("no slippage measured".to_owned()),
    }
    let status = if alerts.is_empty() {
        CheckStatus::Pass
    } else {
        CheckStatus::Fail
    };
    (
        check(NAME, status, fill, threshold, penalty, parts.join("; ")),
        alerts,
    )
}

/// `data_feed`: fails when `now - last_event > max_intervals * expected_interval` (or
/// nothing was ever received). `value` is the gap in expected intervals.
pub fn feed_check(facts: Option<FeedFacts>, rules: &HealthRules) -> (Check, Vec<Alert>) {
    const NAME: &str = "data_feed";
    let threshold = rules.feed_max_intervals;
    let Some(f) = facts else {
        let detail = "no data-feed information".to_owned();
        return (
            check(NAME, CheckStatus::NoData, None, threshold, 0, detail),
            vec![],
        );
    };
    if f.expected_interval_ms <= 0 {
        let detail = format!(
            "the expected interval must be positive; it is {} ms",
            f.expected_interval_ms
        );
        return (
            check(NAME, CheckStatus::NoData, None, threshold, 0, detail),
            vec![],
        );
    }
    let fail = |value: Option<f64>, detail: String| {
        let alerts = vec![alert(NAME, Severity::Critical, detail.clone())];
        (
            check(
                NAME,
                CheckStatus::Fail,
                value,
                threshold,
                rules.feed_penalty,
                detail,
            ),
            alerts,
        )
    };
    let Some(last) = f.last_event_ms else {
        return fail(None, "no bar or heartbeat received".to_owned());
    };
    let gap_ms = f.now_ms.saturating_sub(last);
    let interval = f.expected_interval_ms as f64;
    let intervals = gap_ms as f64 / interval;
    if gap_ms as f64 > rules.feed_max_intervals * interval {
        fail(
            Some(intervals),
            format!(
                "last bar or heartbeat {gap_ms} ms ago: {intervals:.2} expected intervals of {} ms (more than {})",
                f.expected_interval_ms, rules.feed_max_intervals
            ),
        )
    } else {
        let detail =
            format!("last bar or heartbeat {gap_ms} ms ago ({intervals:.2} expected intervals)");
        (
            check(
                NAME,
                CheckStatus::Pass,
                Some(intervals),
                threshold,
                0,
                detail,
            ),
            vec![],
        )
    }
}

/// The band of a score: ≥ `healthy_from` healthy, ≥ `warning_from` warning, else
/// critical.
pub fn band(score: u32, rules: &HealthRules) -> HealthStatus {
    if score >= rules.healthy_from {
        HealthStatus::Healthy
    } else if score >= rules.warning_from {
        HealthStatus::Warning
    } else {
        HealthStatus::Critical
    }
}

/// Strategy health from returns, execution facts and data-feed facts.
pub fn strategy_health(inputs: &HealthInputs<'_>, rules: &HealthRules) -> Health {
    let rolling = rolling_sharpe_last(
        inputs.returns,
        rules.sharpe_window,
        inputs.periods_per_year,
        inputs.risk_free,
    );
    let current = (!inputs.returns.is_empty()).then(|| current_drawdown(inputs.returns));
    let parts = [
        performance_check(rolling, rules),
        drawdown_check(current, rules),
        execution_check(inputs.execution, rules),
        feed_check(inputs.feed, rules),
    ];
    let mut checks = Vec::with_capacity(parts.len());
    let mut alerts = Vec::new();
    for (c, a) in parts {
        checks.push(c);
        alerts.extend(a);
    }
    if checks.iter().all(|c| c.status == CheckStatus::NoData) {
        return Health {
            score: None,
            status: HealthStatus::NoData,
            checks,
            alerts,
        };
    }
    let penalty: u32 = checks.iter().map(|c| c.penalty).sum();
    let score = 100u32.saturating_sub(penalty);
    Health {
        score: Some(score),
        status: band(score, rules),
        checks,
        alerts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HealthRules {
        HealthRules::default()
    }

    fn perf(s: f64) -> Check {
        performance_check(Some(s), &rules()).0
    }

    #[test]
    fn sharpe_band_edges() {
        assert_eq!(perf(0.5).status, CheckStatus::Pass);
        assert_eq!(perf(0.5).penalty, 0);
        let below = f64::from_bits(0.5f64.to_bits() - 1);
        assert_eq!(perf(below).status, CheckStatus::Fail);
        assert_eq!(perf(below).penalty, 20);
        assert_eq!(perf(0.0).penalty, 20);
        assert_eq!(perf(-f64::MIN_POSITIVE).penalty, 30);
        assert_eq!(perf(-1.0).penalty, 30);
        assert_eq!(perf(f64::INFINITY).status, CheckStatus::Pass);
        assert_eq!(perf(f64::INFINITY).value, None);
        assert_eq!(perf(f64::NEG_INFINITY).penalty, 30);
        assert_eq!(perf(f64::NAN).status, CheckStatus::NoData);
        let (c, a) = performance_check(None, &rules());
        assert_eq!((c.status, a.len()), (CheckStatus::NoData, 0));
        let (_, a) = performance_check(Some(0.2), &rules());
        assert_eq!(a[0].severity, Severity::Warning);
        let (_, a) = performance_check(Some(-0.2), &rules());
        assert_eq!(a[0].severity, Severity::Critical);
    }

    fn dd(x: f64) -> Check {
        drawdown_check(Some(x), &rules()).0
    }

    #[test]
    fn drawdown_band_edges() {
        assert_eq!(dd(0.0).status, CheckStatus::Pass);
        assert_eq!(dd(-0.10).status, CheckStatus::Pass);
        let beyond = f64::from_bits((-0.10f64).to_bits() + 1); // just deeper than -0.10
        assert!(beyond < -0.10);
        assert_eq!(dd(beyond).penalty, 15);
        assert_eq!(dd(-0.20).penalty, 15);
        let beyond = f64::from_bits((-0.20f64).to_bits() + 1);
        assert_eq!(dd(beyond).penalty, 30);
        assert_eq!(drawdown_check(None, &rules()).0.status, CheckStatus::NoData);
    }

    fn exec(fill: Option<f64>, slip: Option<f64>) -> (Check, Vec<Alert>) {
        execution_check(
            Some(ExecutionFacts {
                fill_rate_by_orders: fill,
                mean_slippage_bps: slip,
            }),
            &rules(),
        )
    }

    #[test]
    fn execution_band_edges() {
        assert_eq!(exec(Some(0.9), Some(10.0)).0.status, CheckStatus::Pass);
        let below = f64::from_bits(0.9f64.to_bits() - 1);
        let (c, a) = exec(Some(below), Some(10.0));
        assert_eq!((c.status, c.penalty, a.len()), (CheckStatus::Fail, 10, 1));
        let above = f64::from_bits(10.0f64.to_bits() + 1);
        let (c, a) = exec(Some(0.9), Some(above));
        assert_eq!((c.status, c.penalty, a.len()), (CheckStatus::Fail, 10, 1));
        let (c, a) = exec(Some(0.5), Some(25.0));
        assert_eq!((c.penalty, a.len()), (20, 2));
        assert_eq!(
            c.detail,
            "fill rate by orders 50.00 % below 90.00 %; mean slippage 25.00 bps above 10 bps"
        );
        // One figure missing: the other still counts.
        assert_eq!(exec(None, Some(11.0)).0.penalty, 10);
        assert_eq!(exec(None, None).0.status, CheckStatus::NoData);
        assert_eq!(
            execution_check(None, &rules()).0.status,
            CheckStatus::NoData
        );
    }

    fn feed(last: Option<i64>, now: i64) -> Check {
        feed_check(
            Some(FeedFacts {
                last_event_ms: last,
                expected_interval_ms: 60_000,
                now_ms: now,
            }),
            &rules(),
        )
        .0
    }

    #[test]
    fn feed_band_edges() {
        let c = feed(Some(1_000_000), 1_000_000 + 180_000);
        assert_eq!((c.status, c.value), (CheckStatus::Pass, Some(3.0)));
        let c = feed(Some(1_000_000), 1_000_000 + 180_001);
        assert_eq!((c.status, c.penalty), (CheckStatus::Fail, 25));
        assert_eq!(feed(None, 5).status, CheckStatus::Fail);
        // Clock skew: an event "in the future" is fresh.
        assert_eq!(feed(Some(10), 5).status, CheckStatus::Pass);
        let bad = feed_check(
            Some(FeedFacts {
                last_event_ms: Some(0),
                expected_interval_ms: 0,
                now_ms: 0,
            }),
            &rules(),
        );
        assert_eq!(bad.0.status, CheckStatus::NoData);
        assert_eq!(feed_check(None, &rules()).0.status, CheckStatus::NoData);
    }

    #[test]
    fn score_bands() {
        let r = rules();
        assert_eq!(band(100, &r), HealthStatus::Healthy);
        assert_eq!(band(80, &r), HealthStatus::Healthy);
        assert_eq!(band(79, &r), HealthStatus::Warning);
        assert_eq!(band(60, &r), HealthStatus::Warning);
        assert_eq!(band(59, &r), HealthStatus::Critical);
        assert_eq!(band(0, &r), HealthStatus::Critical);
    }

    fn inputs(returns: &[f64]) -> HealthInputs<'_> {
        HealthInputs {
            returns,
            periods_per_year: 252.0,
            risk_free: 0.0,
            execution: None,
            feed: None,
        }
    }

    #[test]
    fn no_data_at_all() {
        let h = strategy_health(&inputs(&[]), &rules());
        assert_eq!(h.status, HealthStatus::NoData);
        assert_eq!(h.score, None);
        assert_eq!(h.checks.len(), 4);
        assert!(h.alerts.is_empty());
    }

    #[test]
    fn healthy_strategy() {
        // 30 alternating returns with a positive mean: Sharpe well above 0.5.
        let r: Vec<f64> = (0..30)
            .map(|i| if i % 2 == 0 { 0.02 } else { -0.01 })
            .collect();
        let mut i = inputs(&r);
        i.execution = Some(ExecutionFacts {
            fill_rate_by_orders: Some(0.95),
            mean_slippage_bps: Some(2.0),
        });
        i.feed = Some(FeedFacts {
            last_event_ms: Some(1_000),
            expected_interval_ms: 1_000,
            now_ms: 2_000,
        });
        let h = strategy_health(&i, &rules());
        assert_eq!(h.score, Some(100));
        assert_eq!(h.status, HealthStatus::Healthy);
        assert!(h.checks.iter().all(|c| c.status == CheckStatus::Pass));
        let names: Vec<_> = h.checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "performance_stability",
                "drawdown",
                "execution_quality",
                "data_feed"
            ]
        );
    }

    #[test]
    fn everything_failing_saturates_at_zero() {
        // 30 losses of 1 %: Sharpe -inf (constant), drawdown 1 - 0.99^30 = 26 %.
        let r = vec![-0.01; 30];
        let mut i = inputs(&r);
        i.execution = Some(ExecutionFacts {
            fill_rate_by_orders: Some(0.5),
            mean_slippage_bps: Some(30.0),
        });
        i.feed = Some(FeedFacts {
            last_event_ms: None,
            expected_interval_ms: 1_000,
            now_ms: 0,
        });
        let h = strategy_health(&i, &rules());
        // 30 + 30 + 20 + 25 = 105 -> 0.
        assert_eq!(h.score, Some(0));
        assert_eq!(h.status, HealthStatus::Critical);
        assert_eq!(h.alerts.len(), 5);
        assert_eq!(h.checks[0].value, None);
        assert!(h.checks[0].detail.contains("-inf"));
    }

    #[test]
    fn partial_data_scores_what_it_has() {
        // Only 10 returns: the rolling Sharpe has no data; a 15 % drawdown costs 15.
        let r = [-0.15, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let h = strategy_health(&inputs(&r), &rules());
        assert_eq!(h.checks[0].status, CheckStatus::NoData);
        assert_eq!(h.checks[1].penalty, 15);
        assert_eq!(h.score, Some(85));
        assert_eq!(h.status, HealthStatus::Healthy);
    }

    #[test]
    fn rolling_sharpe_uses_the_last_window() {
        let mut r = vec![-0.05; 50];
        r.extend((0..30).map(|i| if i % 2 == 0 { 0.02 } else { -0.01 }));
        let s = rolling_sharpe_last(&r, 30, 252.0, 0.0).unwrap();
        assert_eq!(s.to_bits(), sharpe(&r[50..], 252.0, 0.0).to_bits());
        assert!(rolling_sharpe_last(&r[..29], 30, 252.0, 0.0).is_none());
    }
}
