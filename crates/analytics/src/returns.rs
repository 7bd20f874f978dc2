//! Metrics over a slice of simple period returns (metrics.md, first table).
//!
//! Every function takes the values of a series (`&[f64]`, 0.01 = +1 %) and returns an
//! `f64`, NaN where the figure is undefined (as empyrical does); [`mod@crate::report`] turns
//! those into `None` with a reason. A NaN input is a missing observation: skipped by
//! means, deviations and percentiles, compounded as a 0 return, and counted in `n` where
//! a figure is annualised by `n` (CAGR). Sums run in index order, so the single-pass
//! report gives bit-identical figures.
//!
//! `periods_per_year` (P) is 252 for daily, 52 weekly, 12 monthly, 365 for crypto. The
//! risk-free rate is annual and converted geometrically by [`risk_free_per_period`]; the
//! minimum acceptable return (MAR) of the downside figures is per period.

/// The 5 % tail used by [`var_95`] and [`cvar_95`].
pub const TAIL_95: f64 = 0.05;

/// Per-period risk-free rate from an annual one: `(1 + rf)^(1/P) - 1` (geometric).
///
/// empyrical and quantstats take `risk_free` already per period and subtract it as is;
/// quantbox takes it annually (metrics.md).
pub fn risk_free_per_period(annual: f64, periods_per_year: f64) -> f64 {
    (1.0 + annual).powf(1.0 / periods_per_year) - 1.0
}

/// The non-missing values, in order.
pub(crate) fn valid(returns: &[f64]) -> impl Iterator<Item = f64> + '_ {
    returns.iter().copied().filter(|r| !r.is_nan())
}

/// Whether every non-missing value of `values` is bitwise equal to the first one
/// (true for fewer than two values).
pub(crate) fn bitwise_constant(values: impl Iterator<Item = f64>) -> bool {
    let mut first: Option<u64> = None;
    for v in values {
        match first {
            None => first = Some(v.to_bits()),
            Some(bits) if bits != v.to_bits() => return false,
            Some(_) => {}
        }
    }
    true
}

/// `mean / std * sqrt(P)` where a zero deviation gives `+inf`, `-inf` or NaN by the sign
/// of the mean — never a huge finite number from rounding residue.
pub(crate) fn annualised_ratio(mean: f64, std: f64, std_is_zero: bool, p: f64) -> f64 {
    if std_is_zero || std == 0.0 {
        if mean > 0.0 {
            f64::INFINITY
        } else if mean < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::NAN
        }
    } else {
        mean / std * p.sqrt()
    }
}

/// (count, mean) of the non-missing values of `f(r)`; mean NaN when count is 0.
fn count_mean(returns: &[f64], f: impl Fn(f64) -> f64) -> (usize, f64) {
    let (mut n, mut sum) = (0usize, 0.0);
    for r in valid(returns) {
        n += 1;
        sum += f(r);
    }
    (n, if n == 0 { f64::NAN } else { sum / n as f64 })
}

/// Sum of squared deviations of the non-missing `f(r)` from `mean`.
fn sum_sq_dev(returns: &[f64], mean: f64, f: impl Fn(f64) -> f64) -> f64 {
    let mut ss = 0.0;
    for r in valid(returns) {
        let d = f(r) - mean;
        ss += d * d;
    }
    ss
}

/// Total return: `prod(1 + r) - 1`, a missing return compounding as 0; 0 for an empty
/// slice.
///
/// Reference: empyrical `cum_returns_final` (NaN filled with 0), quantstats `comp`.
pub fn total_return(returns: &[f64]) -> f64 {
    let mut wealth = 1.0;
    for &r in returns {
        if !r.is_nan() {
            wealth *= 1.0 + r;
        }
    }
    wealth - 1.0
}

/// Annualised return (CAGR): `(1 + total)^(P / n) - 1`, `n` = all observations, missing
/// ones included. NaN for an empty slice or when the wealth went negative (a return
/// below -100 %); -1 when it went to exactly 0.
///
/// Reference: empyrical `annual_return` (years = n / P). quantstats `cagr` counts
/// calendar years between the first and last dates instead; quantbox follows empyrical.
pub fn annualized_return(returns: &[f64], periods_per_year: f64) -> f64 {
    if returns.is_empty() {
        return f64::NAN;
    }
    let growth = 1.0 + total_return(returns);
    if growth < 0.0 {
        return f64::NAN;
    }
    growth.powf(periods_per_year / returns.len() as f64) - 1.0
}

/// Annualised volatility: `std(r, ddof=1) * sqrt(P)` over the non-missing returns; NaN
/// with fewer than 2 of them. A bitwise-constant series gives exactly 0.
///
/// Reference: empyrical `annual_volatility` (nanstd, ddof=1), quantstats `volatility`,
/// pandas `.std() * sqrt(P)`.
pub fn volatility(returns: &[f64], periods_per_year: f64) -> f64 {
    let (n, mean) = count_mean(returns, |r| r);
    if n < 2 {
        return f64::NAN;
    }
    if bitwise_constant(valid(returns)) {
        return 0.0;
    }
    (sum_sq_dev(returns, mean, |r| r) / (n - 1) as f64).sqrt() * periods_per_year.sqrt()
}

/// Sharpe ratio: `mean(r - rf_p) / std(r - rf_p, ddof=1) * sqrt(P)`, rf_p from the
/// annual `risk_free` by [`risk_free_per_period`], over the non-missing returns.
///
/// NaN with fewer than 2 non-missing returns. When the standard deviation is zero —
/// exactly 0.0, or every non-missing `r - rf_p` bitwise equal (so the mean's rounding
/// residue cannot make a tiny non-zero deviation) — the result is `+inf`, `-inf` or NaN
/// by the sign of the mean (metrics.md).
///
/// Reference: empyrical `sharpe_ratio` (rf per period, no conversion; numpy gives a huge
/// finite number for a constant series whose mean does not round-trip).
pub fn sharpe(returns: &[f64], periods_per_year: f64, risk_free: f64) -> f64 {
    let rf = risk_free_per_period(risk_free, periods_per_year);
    let excess = |r: f64| r - rf;
    let (n, mean) = count_mean(returns, excess);
    if n < 2 {
        return f64::NAN;
    }
    let constant = bitwise_constant(valid(returns).map(excess));
    let std = (sum_sq_dev(returns, mean, excess) / (n - 1) as f64).sqrt();
    annualised_ratio(mean, std, constant, periods_per_year)
}

/// Downside deviation, **per period**: `sqrt(sum(min(r - MAR, 0)^2) / n)` with `n` every
/// non-missing observation (not only those below the MAR); MAR per period. NaN when no
/// return is present; 0 when none is below the MAR.
///
/// Reference: empyrical `downside_risk` (nanmean of the clipped squares, so `n` is the
/// non-missing count) — which then annualises by `sqrt(P)`; metrics.md keeps it per
/// period, as [`sortino`] uses it.
pub fn downside_deviation(returns: &[f64], mar: f64) -> f64 {
    let (mut n, mut ss) = (0usize, 0.0);
    for r in valid(returns) {
        n += 1;
        let d = (r - mar).min(0.0);
        ss += d * d;
    }
    if n == 0 {
        f64::NAN
    } else {
        (ss / n as f64).sqrt()
    }
}

/// Sortino ratio: `mean(r - MAR) / downside_deviation(r, MAR) * sqrt(P)`, MAR per period,
/// over the non-missing returns. A zero downside deviation (no return below the MAR)
/// gives `+inf` when the mean excess is positive, NaN when it is zero; NaN with no
/// return at all.
///
/// Reference: empyrical `sortino_ratio` (annual mean / annualised downside risk, the
/// same number), which also returns inf when nothing is below the MAR.
pub fn sortino(returns: &[f64], periods_per_year: f64, mar: f64) -> f64 {
    let (n, mean) = count_mean(returns, |r| r - mar);
    if n == 0 {
        return f64::NAN;
    }
    let dd = downside_deviation(returns, mar);
    annualised_ratio(mean, dd, dd == 0.0, periods_per_year)
}

/// Calmar ratio: `CAGR / abs(max drawdown)`; NaN when there is no drawdown (or no
/// return).
///
/// Reference: empyrical `calmar_ratio` (NaN unless the max drawdown is negative).
pub fn calmar(returns: &[f64], periods_per_year: f64) -> f64 {
    let mdd = crate::drawdown::max_drawdown(returns);
    if mdd.is_nan() || mdd >= 0.0 {
        return f64::NAN;
    }
    annualized_return(returns, periods_per_year) / mdd.abs()
}

/// numpy's default ("linear") percentile of the values, `q` in [0, 1]: virtual index
/// `(n - 1) * q`, interpolated between the two order statistics around it with numpy's
/// `_lerp`. Reorders `values` (selection, O(n)); NaN when empty.
pub(crate) fn percentile_linear(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let index = (n - 1) as f64 * q;
    let lo = (index.floor() as usize).min(n - 1);
    let t = index - lo as f64;
    let (_, &mut a, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    if above.is_empty() {
        return a;
    }
    let b = above.iter().copied().fold(f64::INFINITY, f64::min);
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// Mean of the `floor((n - 1) * tail) + 1` smallest values. Reorders `values`; NaN when
/// empty.
pub(crate) fn tail_mean(values: &mut [f64], tail: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let k = ((n - 1) as f64 * tail).floor() as usize + 1;
    let k = k.min(n);
    if k < n {
        values.select_nth_unstable_by(k - 1, f64::total_cmp);
    }
    // Summed in ascending order, as numpy's mean over np.partition's prefix would not
    // guarantee, but deterministically.
    let smallest = &mut values[..k];
    smallest.sort_unstable_by(f64::total_cmp);
    smallest.iter().sum::<f64>() / k as f64
}

/// Historical value at risk at 95 %: the 5th percentile of the non-missing returns with
/// linear interpolation between order statistics (numpy's default), as a return
/// (negative = loss). NaN when no return is present.
///
/// Reference: empyrical `value_at_risk(cutoff=0.05)` = `np.percentile(r, 5)` (which is
/// NaN if any return is NaN; quantbox skips them, as `np.nanpercentile`). quantstats
/// `value_at_risk` is parametric (normal) — not followed.
pub fn var_95(returns: &[f64]) -> f64 {
    let mut v: Vec<f64> = valid(returns).collect();
    percentile_linear(&mut v, TAIL_95)
}

/// Historical conditional value at risk (expected shortfall) at 95 %: the mean of the
/// `floor((n - 1) * 0.05) + 1` smallest non-missing returns (`n` = non-missing count).
/// NaN when no return is present.
///
/// Reference: empyrical `conditional_value_at_risk` (`np.partition` at that index, mean
/// of the prefix). quantstats `cvar` averages the returns below its parametric VaR —
/// not followed.
pub fn cvar_95(returns: &[f64]) -> f64 {
    let mut v: Vec<f64> = valid(returns).collect();
    tail_mean(&mut v, TAIL_95)
}

/// Central moment sums (Σd², Σd³, Σd⁴) of the non-missing values around their mean.
fn central_sums(returns: &[f64]) -> (usize, f64, f64, f64) {
    let (n, mean) = count_mean(returns, |r| r);
    let (mut m2, mut m3, mut m4) = (0.0, 0.0, 0.0);
    for r in valid(returns) {
        let d = r - mean;
        let d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
    }
    (n, m2, m3, m4)
}

/// Skewness G1 from the central sums (pandas' expression): with `n` values,
/// `n * sqrt(n - 1) / (n - 2) * m3 / m2^1.5` where m2, m3 are the sums of squared and
/// cubed deviations.
pub(crate) fn skew_from_sums(n: usize, m2: f64, m3: f64, constant: bool) -> f64 {
    if n < 3 || constant || m2 == 0.0 {
        return f64::NAN;
    }
    let n = n as f64;
    (n * (n - 1.0).sqrt() / (n - 2.0)) * (m3 / m2.powf(1.5))
}

/// Excess kurtosis G2 from the central sums (pandas' expression):
/// `n (n + 1) (n - 1) m4 / ((n - 2)(n - 3) m2^2) - 3 (n - 1)^2 / ((n - 2)(n - 3))`.
pub(crate) fn kurt_from_sums(n: usize, m2: f64, m4: f64, constant: bool) -> f64 {
    if n < 4 || constant || m2 == 0.0 {
        return f64::NAN;
    }
    let n = n as f64;
    let adj = 3.0 * (n - 1.0) * (n - 1.0) / ((n - 2.0) * (n - 3.0));
    let numerator = n * (n + 1.0) * (n - 1.0) * m4;
    let denominator = (n - 2.0) * (n - 3.0) * (m2 * m2);
    numerator / denominator - adj
}

/// Skewness: the bias-corrected sample skewness G1 of the non-missing returns, as pandas
/// `Series.skew()`. NaN with fewer than 3 non-missing returns or a constant series
/// (pandas 3 also gives NaN there).
pub fn skewness(returns: &[f64]) -> f64 {
    let (n, m2, m3, _) = central_sums(returns);
    skew_from_sums(n, m2, m3, bitwise_constant(valid(returns)))
}

/// Kurtosis: the bias-corrected **excess** kurtosis G2 of the non-missing returns, as
/// pandas `Series.kurt()` (a normal sample gives about 0). NaN with fewer than 4
/// non-missing returns or a constant series.
pub fn kurtosis(returns: &[f64]) -> f64 {
    let (n, m2, _, m4) = central_sums(returns);
    kurt_from_sums(n, m2, m4, bitwise_constant(valid(returns)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Asserts `actual` is within 1e-12 relative of `expected` (absolute near 0).
    #[track_caller]
    pub(crate) fn close(actual: f64, expected: f64) {
        let tol = 1e-12 * expected.abs().max(1e-300);
        assert!(
            (actual - expected).abs() <= tol || actual == expected,
            "got {actual:e}, expected {expected:e}"
        );
    }

    // The shared sample. Python (numpy 2.4, pandas 3.1):
    //   r = np.array([0.01, -0.02, 0.015, 0.003, -0.007, 0.012, -0.025, 0.004, 0.018, -0.001])
    pub(crate) const R: [f64; 10] = [
        0.01, -0.02, 0.015, 0.003, -0.007, 0.012, -0.025, 0.004, 0.018, -0.001,
    ];

    #[test]
    fn risk_free_conversion() {
        // (1 + 0.05) ** (1 / 252) - 1
        close(risk_free_per_period(0.05, 252.0), 0.00019363050654397362);
        assert_eq!(risk_free_per_period(0.0, 252.0), 0.0);
    }

    #[test]
    fn total_and_annualized_return() {
        // np.prod(1 + r) - 1
        close(total_return(&R), 0.00808181498737559);
        // (1 + (np.prod(1 + r) - 1)) ** (252 / 10) - 1
        close(annualized_return(&R, 252.0), 0.2248803513278983);
        assert_eq!(total_return(&[]), 0.0);
        assert!(annualized_return(&[], 252.0).is_nan());
    }

    #[test]
    fn volatility_matches_pandas_std() {
        // pd.Series(r).std() * np.sqrt(252)
        close(volatility(&R, 252.0), 0.22973288837256195);
        assert!(volatility(&[0.01], 252.0).is_nan());
    }

    #[test]
    fn sharpe_with_and_without_risk_free() {
        // r.mean() / r.std(ddof=1) * np.sqrt(252)
        close(sharpe(&R, 252.0, 0.0), 0.9872334849688319);
        // rf = (1 + 0.05) ** (1 / 252) - 1; e = r - rf; e.mean() / e.std(ddof=1) * np.sqrt(252)
        close(sharpe(&R, 252.0, 0.05), 0.7748351296669569);
    }

    #[test]
    fn sharpe_of_a_constant_series_is_signed_infinity() {
        // numpy: np.array([0.1, 0.1, 0.1]).std(ddof=1) == 1.6996749443881478e-17, so
        // numpy's Sharpe would be a huge finite number; metrics.md wants +inf.
        assert_eq!(sharpe(&[0.1, 0.1, 0.1], 252.0, 0.0), f64::INFINITY);
        assert_eq!(sharpe(&[-0.01; 5], 252.0, 0.0), f64::NEG_INFINITY);
        assert!(sharpe(&[0.0; 5], 252.0, 0.0).is_nan());
        // Constant returns below the risk-free rate: -inf.
        assert_eq!(sharpe(&[0.0; 5], 252.0, 0.05), f64::NEG_INFINITY);
        // One observation: undefined.
        assert!(sharpe(&[0.01], 252.0, 0.0).is_nan());
    }

    #[test]
    fn downside_deviation_and_sortino() {
        // np.sqrt(np.mean(np.minimum(r, 0) ** 2))
        close(downside_deviation(&R, 0.0), 0.01036822067666386);
        // np.mean(r) / np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(252)
        close(sortino(&R, 252.0, 0.0), 1.3779661453295644);
        // mar = 0.001: np.mean(r - 0.001) / np.sqrt(np.mean(np.minimum(r - 0.001, 0) ** 2)) * np.sqrt(252)
        close(downside_deviation(&R, 0.001), 0.010885770528538622);
        close(sortino(&R, 252.0, 0.001), -0.14582805897635195);
        // Nothing below the MAR.
        assert_eq!(downside_deviation(&[0.01, 0.02], 0.0), 0.0);
        assert_eq!(sortino(&[0.01, 0.02], 252.0, 0.0), f64::INFINITY);
        assert!(sortino(&[0.0, 0.0], 252.0, 0.0).is_nan());
    }

    #[test]
    fn calmar_ratio() {
        // cagr / abs(mdd) with mdd from the wealth curve anchored at 1.0:
        //   w = np.concatenate([[1.0], np.cumprod(1 + r)]); mdd = (w / np.maximum.accumulate(w) - 1).min()
        //   -> mdd = -0.025000000000000022; cagr / abs(mdd)
        close(calmar(&R, 252.0), 8.995214053115925);
        assert!(calmar(&[0.01, 0.02], 252.0).is_nan());
    }

    #[test]
    fn var_and_cvar() {
        // np.percentile(r, 5)
        close(var_95(&R), -0.02275);
        // k = int((len(r) - 1) * 0.05) + 1 = 1; np.sort(r)[:k].mean()
        close(cvar_95(&R), -0.025);
        // 41 values: r41 = np.linspace(-0.05, 0.05, 41) ** 3
        //   np.percentile(r41, 5) ; np.sort(r41)[:int(40 * 0.05) + 1].mean()
        let r41: Vec<f64> = (0..41)
            .map(|i| {
                let x = -0.05 + 0.1 * i as f64 / 40.0;
                x * x * x
            })
            .collect();
        close(var_95(&r41), -9.112500000000003e-05);
        close(cvar_95(&r41), -0.00010776562500000002);
    }

    #[test]
    fn skew_and_kurtosis_match_pandas() {
        // pd.Series(r).skew(), pd.Series(r).kurt()
        close(skewness(&R), -0.7808293919909418);
        close(kurtosis(&R), -0.3989994695631713);
        // Too short, constant.
        assert!(skewness(&[0.01, 0.02]).is_nan());
        assert!(kurtosis(&[0.01, 0.02, 0.03]).is_nan());
        assert!(skewness(&[0.1, 0.1, 0.1]).is_nan());
        assert!(kurtosis(&[0.3; 4]).is_nan());
        // pd.Series([1.0, 2.0, 4.0]).skew(), pd.Series([1.0, 2.0, 4.0, 8.0]).kurt()
        close(skewness(&[1.0, 2.0, 4.0]), 0.9352195295828246);
        close(kurtosis(&[1.0, 2.0, 4.0, 8.0]), 0.7576559546313781);
    }

    #[test]
    fn missing_values_are_skipped_but_counted_for_cagr() {
        // rn = pd.Series([0.01, np.nan, -0.02, 0.03, np.nan, 0.005])
        let rn = [0.01, f64::NAN, -0.02, 0.03, f64::NAN, 0.005];
        // (1 + rn.fillna(0)).prod() - 1
        close(total_return(&rn), 0.02459147000000006);
        // ((1 + rn.fillna(0)).prod()) ** (252 / 6) - 1
        close(annualized_return(&rn, 252.0), 1.7741561922842712);
        // rn.std() * np.sqrt(252)
        close(volatility(&rn, 252.0), 0.3264582668581085);
        // rn.mean() / rn.std() * np.sqrt(252)
        close(sharpe(&rn, 252.0, 0.0), 4.824506406770077);
        // np.sqrt(np.nanmean(np.minimum(rn, 0) ** 2))
        close(downside_deviation(&rn, 0.0), 0.01);
        // np.nanpercentile(rn, 5)
        close(var_95(&rn), -0.01625);
        // rn.skew(), rn.kurt()
        close(skewness(&rn), -0.3557156849948469);
        close(kurtosis(&rn), 1.2821471037880068);
    }

    #[test]
    fn all_losses() {
        let l = [-0.01, -0.02, -0.03];
        // np.prod(1 + l) - 1
        close(total_return(&l), -0.058906000000000125);
        // np.mean(l) / np.std(l, ddof=1) * np.sqrt(252)
        close(sharpe(&l, 252.0, 0.0), -31.74901573277509);
        // np.mean(l) / np.sqrt(np.mean(np.minimum(l, 0) ** 2)) * np.sqrt(252)
        close(sortino(&l, 252.0, 0.0), -14.69693845669907);
    }

    #[test]
    fn one_observation() {
        let one = [0.02];
        // np.prod(1 + np.array([0.02])) - 1  (1.02 - 1 in floating point)
        assert_eq!(total_return(&one), 0.020000000000000018);
        // 1.02 ** 252 - 1
        close(annualized_return(&one, 252.0), 145.9749374399537);
        assert!(volatility(&one, 252.0).is_nan());
        assert!(sharpe(&one, 252.0, 0.0).is_nan());
        assert_eq!(downside_deviation(&one, 0.0), 0.0);
        assert_eq!(sortino(&one, 252.0, 0.0), f64::INFINITY);
        assert_eq!(var_95(&one), 0.02);
        assert_eq!(cvar_95(&one), 0.02);
        assert!(skewness(&one).is_nan());
    }

    #[test]
    fn all_missing() {
        let m = [f64::NAN, f64::NAN];
        assert_eq!(total_return(&m), 0.0);
        assert_eq!(annualized_return(&m, 252.0), 0.0);
        assert!(volatility(&m, 252.0).is_nan());
        assert!(sharpe(&m, 252.0, 0.0).is_nan());
        assert!(downside_deviation(&m, 0.0).is_nan());
        assert!(var_95(&m).is_nan());
        assert!(cvar_95(&m).is_nan());
    }

    #[test]
    fn wipe_out_and_worse() {
        assert_eq!(annualized_return(&[0.1, -1.0], 252.0), -1.0);
        assert!(annualized_return(&[0.1, -1.5], 252.0).is_nan());
    }
}
