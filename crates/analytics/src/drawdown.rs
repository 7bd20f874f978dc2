//! Drawdowns on the compounded wealth curve.
//!
//! The curve is anchored at 1.0 **before** the first return (so a loss on day one is a
//! drawdown), a missing return compounds as 0, and the drawdown at each point is
//! `wealth / running_peak - 1` (a negative fraction; -0.14 = -14 %).
//!
//! Reference: empyrical `max_drawdown` anchors the same way (at 100). quantstats
//! `max_drawdown` starts the curve at the first return's wealth and misses a day-one
//! loss — not followed.

use serde::Serialize;

use crate::date::Date;
use crate::series::Returns;

/// Maximum drawdown: the most negative `wealth / peak - 1` on the curve anchored at 1.0
/// before the first return; 0 when the curve never falls below a previous peak, NaN for
/// an empty slice. A negative fraction.
///
/// Reference: empyrical `max_drawdown`; Python check:
/// `w = np.concatenate([[1.0], np.cumprod(1 + r)]); (w / np.maximum.accumulate(w) - 1).min()`.
pub fn max_drawdown(returns: &[f64]) -> f64 {
    if returns.is_empty() {
        return f64::NAN;
    }
    let (mut wealth, mut peak, mut mdd) = (1.0f64, 1.0f64, 0.0f64);
    for &r in returns {
        if !r.is_nan() {
            wealth *= 1.0 + r;
        }
        if wealth >= peak {
            peak = wealth;
        }
        let dd = wealth / peak - 1.0;
        if dd < mdd {
            mdd = dd;
        }
    }
    mdd
}

/// Current drawdown: `wealth / peak - 1` at the last observation (0 at a new high); NaN
/// for an empty slice. Used by strategy health.
pub fn current_drawdown(returns: &[f64]) -> f64 {
    if returns.is_empty() {
        return f64::NAN;
    }
    let (mut wealth, mut peak) = (1.0f64, 1.0f64);
    for &r in returns {
        if !r.is_nan() {
            wealth *= 1.0 + r;
        }
        if wealth >= peak {
            peak = wealth;
        }
    }
    wealth / peak - 1.0
}

/// Maximum drawdown duration in calendar days: the longest span from a peak to the
/// recovery (the first date the wealth is back at or above that peak) or, if it never
/// recovered, to the last date. 0 when there is no drawdown.
///
/// The anchor peak (before the first return) is dated [`Returns::anchor_date`]: the
/// series' start date when known (an equity curve's first date), otherwise the first
/// return's date. Ties keep the earlier drawdown. empyrical has no such figure
/// (pyfolio's drawdown table counts business days).
pub fn max_drawdown_duration_days(returns: &Returns) -> i64 {
    drawdown_stats(returns).max_duration_days
}

/// Everything about the drawdowns of a series, from one pass.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DrawdownStats {
    /// [`max_drawdown`].
    pub max_drawdown: f64,
    /// The peak before the deepest drawdown (`None` when there is no drawdown).
    pub max_drawdown_peak: Option<Date>,
    /// The date of the deepest point (`None` when there is no drawdown).
    pub max_drawdown_trough: Option<Date>,
    /// [`max_drawdown_duration_days`].
    pub max_duration_days: i64,
    /// Peak date of the longest drawdown (`None` when there is no drawdown).
    pub longest_start: Option<Date>,
    /// Recovery date of the longest drawdown, or the last date if it had not recovered.
    pub longest_end: Option<Date>,
    /// Whether the longest drawdown had recovered by the last date.
    pub longest_recovered: bool,
    /// [`current_drawdown`].
    pub current_drawdown: f64,
}

/// [`DrawdownStats`] of a validated series.
pub fn drawdown_stats(returns: &Returns) -> DrawdownStats {
    let mut t = DrawdownTracker::new(returns.anchor_date());
    for (&date, &r) in returns.dates().iter().zip(returns.values()) {
        t.push(date, r);
    }
    t.finish(returns.last_date())
}

/// The drawdown state machine shared by [`drawdown_stats`] and the report's single pass.
/// Same arithmetic as [`max_drawdown`] and [`current_drawdown`], so the figures agree
/// bit for bit.
#[derive(Clone, Debug)]
pub(crate) struct DrawdownTracker {
    wealth: f64,
    peak: f64,
    peak_date: Date,
    underwater: bool,
    max_dd: f64,
    max_dd_peak: Option<Date>,
    max_dd_trough: Option<Date>,
    longest: i64,
    longest_start: Option<Date>,
    longest_end: Option<Date>,
    longest_recovered: bool,
    current: f64,
}

impl DrawdownTracker {
    pub(crate) fn new(anchor: Date) -> DrawdownTracker {
        DrawdownTracker {
            wealth: 1.0,
            peak: 1.0,
            peak_date: anchor,
            underwater: false,
            max_dd: 0.0,
            max_dd_peak: None,
            max_dd_trough: None,
            longest: 0,
            longest_start: None,
            longest_end: None,
            longest_recovered: false,
            current: 0.0,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, date: Date, r: f64) {
        if !r.is_nan() {
            self.wealth *= 1.0 + r;
        }
        if self.wealth >= self.peak {
            if self.underwater {
                self.close_episode(date, true);
                self.underwater = false;
            }
            self.peak = self.wealth;
            self.peak_date = date;
        } else {
            self.underwater = true;
        }
        let dd = self.wealth / self.peak - 1.0;
        if dd < self.max_dd {
            self.max_dd = dd;
            self.max_dd_peak = Some(self.peak_date);
            self.max_dd_trough = Some(date);
        }
        self.current = dd;
    }

    fn close_episode(&mut self, end: Date, recovered: bool) {
        let days = end.days_since(self.peak_date);
        if days > self.longest || self.longest_start.is_none() {
            self.longest = days;
            self.longest_start = Some(self.peak_date);
            self.longest_end = Some(end);
            self.longest_recovered = recovered;
        }
    }

    /// The compounded wealth so far (1.0 before any return).
    pub(crate) fn wealth(&self) -> f64 {
        self.wealth
    }

    pub(crate) fn finish(mut self, last: Date) -> DrawdownStats {
        if self.underwater {
            self.close_episode(last, false);
        }
        DrawdownStats {
            max_drawdown: self.max_dd,
            max_drawdown_peak: self.max_dd_peak,
            max_drawdown_trough: self.max_dd_trough,
            max_duration_days: self.longest,
            longest_start: self.longest_start,
            longest_end: self.longest_end,
            longest_recovered: self.longest_recovered,
            current_drawdown: self.current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::returns::tests::{R, close};

    fn series(days: &[i32], values: &[f64]) -> Returns {
        Returns::from_parts(
            days.iter().map(|&d| Date::from_days(d)).collect(),
            values.to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn max_drawdown_is_anchored_before_the_first_return() {
        // w = np.concatenate([[1.0], np.cumprod(1 + r)]); (w / np.maximum.accumulate(w) - 1).min()
        close(max_drawdown(&R), -0.025000000000000022);
        // A day-one loss counts: the same expression with r = [-0.05, 0.01]
        close(max_drawdown(&[-0.05, 0.01]), -0.050000000000000044);
        assert_eq!(max_drawdown(&[0.01, 0.02]), 0.0);
        assert!(max_drawdown(&[]).is_nan());
    }

    #[test]
    fn max_drawdown_of_all_losses_and_missing_values() {
        // r = np.array([-0.1, -0.2, -0.05]); w = np.concatenate([[1.0], np.cumprod(1 + r)]);
        // (w / np.maximum.accumulate(w) - 1).min()
        close(max_drawdown(&[-0.1, -0.2, -0.05]), -0.31599999999999995);
        // NaN compounds as 0: r = [0.1, nan, -0.2] -> fillna(0) then as above
        close(max_drawdown(&[0.1, f64::NAN, -0.2]), -0.19999999999999996);
        assert_eq!(max_drawdown(&[f64::NAN]), 0.0);
    }

    #[test]
    fn current_drawdown_at_the_last_point() {
        // w = np.cumprod(1 + r); w[-1] / max(1.0, w.max()) - 1
        close(current_drawdown(&R), -0.004476320200000106);
        assert_eq!(current_drawdown(&[0.01, 0.02]), 0.0);
        close(current_drawdown(&[-0.1]), -0.09999999999999998);
    }

    // The durations below were checked with an independent Python implementation:
    //   d = [start or days[0]] + days; w = np.concatenate([[1.0], np.cumprod(1 + r)])
    //   peak = pd.Series(w).cummax(); for each underwater point j, the episode runs from
    //   the last date with w == peak to the first later date with w >= peak[j] (else the
    //   last date); the answer is the largest span.
    //   -> 28, 29, 5, 8 (start=7), and 2 for all losses on days 0, 1, 2.
    #[test]
    fn duration_of_the_longest_drawdown_in_calendar_days() {
        // Wealth: 1.1 (day 1, peak), 0.99 (day 3), 1.089 (day 10), 1.1979 (day 12, recovered:
        // 11 days), 1.07811 (day 20), then flat to day 40 without recovering: 28 days.
        let s = series(&[1, 3, 10, 12, 20, 40], &[0.1, -0.1, 0.1, 0.1, -0.1, 0.0]);
        let st = drawdown_stats(&s);
        assert_eq!(st.max_duration_days, 28);
        assert_eq!(st.longest_start, Some(Date::from_days(12)));
        assert_eq!(st.longest_end, Some(Date::from_days(40)));
        assert!(!st.longest_recovered);
        assert_eq!(max_drawdown_duration_days(&s), 28);

        // Recovered drawdown longer than the open one.
        let s = series(&[1, 3, 30, 31, 33], &[0.1, -0.1, 0.2, -0.01, 0.0]);
        let st = drawdown_stats(&s);
        assert_eq!(st.max_duration_days, 29);
        assert_eq!(st.longest_start, Some(Date::from_days(1)));
        assert_eq!(st.longest_end, Some(Date::from_days(30)));
        assert!(st.longest_recovered);
        assert_eq!(st.max_drawdown_peak, Some(Date::from_days(1)));
        assert_eq!(st.max_drawdown_trough, Some(Date::from_days(3)));
    }

    #[test]
    fn duration_starts_at_the_anchor() {
        // A loss on the first return: the peak is the anchor.
        let s = series(&[10, 11, 15], &[-0.1, 0.05, 0.1]);
        assert_eq!(max_drawdown_duration_days(&s), 5); // from the first date (10) to 15
        let s = s.with_start(Date::from_days(7)).unwrap();
        assert_eq!(max_drawdown_duration_days(&s), 8); // from the start (7) to 15
        // Never a drawdown.
        let s = series(&[1, 2], &[0.0, 0.01]);
        let st = drawdown_stats(&s);
        assert_eq!(st.max_duration_days, 0);
        assert_eq!(st.longest_start, None);
        assert_eq!(st.max_drawdown, 0.0);
        assert_eq!(st.max_drawdown_trough, None);
    }

    #[test]
    fn stats_agree_with_the_slice_functions() {
        let days: Vec<i32> = (0..R.len() as i32).collect();
        let st = drawdown_stats(&series(&days, &R));
        assert_eq!(st.max_drawdown.to_bits(), max_drawdown(&R).to_bits());
        assert_eq!(
            st.current_drawdown.to_bits(),
            current_drawdown(&R).to_bits()
        );
    }
}
