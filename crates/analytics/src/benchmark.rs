//! Metrics against a benchmark, on the dates both series have.
//!
//! Dated series are joined with [`crate::series::align`] (an inner join); the functions
//! here take the two aligned value slices (same length, same dates). A pair where either
//! side is missing (NaN) is dropped from every figure (empyrical masks the benchmark
//! where the returns are NaN the same way). Every figure needs at least 2 complete
//! pairs; otherwise it is NaN.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::returns::{annualised_ratio, risk_free_per_period};
use crate::series::{Returns, align};

/// All benchmark figures of aligned slices, computed once (three passes over the
/// complete pairs). The public functions below return one field each, so they agree
/// with [`benchmark_stats`] bit for bit.
#[derive(Clone, Copy, Debug)]
struct Raw {
    pairs: usize,
    beta: f64,
    alpha: f64,
    correlation: f64,
    tracking_error: f64,
    information_ratio: f64,
    /// The strategy's paired values are all bitwise equal.
    returns_constant: bool,
}

fn raw(returns: &[f64], benchmark: &[f64], periods_per_year: f64, risk_free: f64) -> Raw {
    assert_eq!(
        returns.len(),
        benchmark.len(),
        "benchmark metrics need aligned slices of the same length"
    );
    let pairs = || {
        returns
            .iter()
            .zip(benchmark)
            .map(|(&r, &b)| (r, b))
            .filter(|(r, b)| !r.is_nan() && !b.is_nan())
    };
    // Pass 1: counts, sums, constancy.
    let (mut n, mut sr, mut sb, mut sa) = (0usize, 0.0, 0.0, 0.0);
    let mut first: Option<(u64, u64, u64)> = None;
    let (mut r_const, mut b_const, mut a_const) = (true, true, true);
    for (r, b) in pairs() {
        n += 1;
        sr += r;
        sb += b;
        let a = r - b;
        sa += a;
        match first {
            None => first = Some((r.to_bits(), b.to_bits(), a.to_bits())),
            Some((fr, fb, fa)) => {
                r_const &= fr == r.to_bits();
                b_const &= fb == b.to_bits();
                a_const &= fa == a.to_bits();
            }
        }
    }
    let nan = f64::NAN;
    let mut out = Raw {
        pairs: n,
        beta: nan,
        alpha: nan,
        correlation: nan,
        tracking_error: nan,
        information_ratio: nan,
        returns_constant: r_const,
    };
    if n < 2 {
        return out;
    }
    let nf = n as f64;
    let (mr, mb, ma) = (sr / nf, sb / nf, sa / nf);
    // Pass 2: co-moments.
    let (mut sxy, mut sxx, mut syy, mut saa) = (0.0, 0.0, 0.0, 0.0);
    for (r, b) in pairs() {
        let (dr, db, da) = (r - mr, b - mb, (r - b) - ma);
        sxy += dr * db;
        sxx += dr * dr;
        syy += db * db;
        saa += da * da;
    }
    if b_const {
        syy = 0.0;
    }
    if r_const {
        // A constant series co-varies with nothing: exactly 0, not rounding residue.
        sxx = 0.0;
        sxy = 0.0;
    }
    if a_const {
        saa = 0.0;
    }
    let sqrt_p = periods_per_year.sqrt();
    if syy > 0.0 {
        // cov(r, b, ddof=1) / var(b, ddof=1): the (n - 1)s cancel.
        out.beta = sxy / syy;
        // Pass 3: mean of the residual excess return.
        let rf = risk_free_per_period(risk_free, periods_per_year);
        let mut s = 0.0;
        for (r, b) in pairs() {
            s += (r - rf) - out.beta * (b - rf);
        }
        out.alpha = (1.0 + s / nf).powf(periods_per_year) - 1.0;
        if sxx > 0.0 {
            out.correlation = sxy / (sxx * syy).sqrt();
        }
    }
    let te = (saa / (n - 1) as f64).sqrt();
    out.tracking_error = te * sqrt_p;
    out.information_ratio = annualised_ratio(ma, te, a_const, periods_per_year);
    out
}

/// Beta: `cov(r, b) / var(b)` over the complete pairs (both with ddof=1, which cancels).
/// NaN with fewer than 2 pairs or a constant benchmark.
///
/// Reference: empyrical `beta` (ddof=0 for both, the same ratio).
pub fn beta(returns: &[f64], benchmark: &[f64]) -> f64 {
    raw(returns, benchmark, 1.0, 0.0).beta
}

/// Alpha, annual and compounded: `(1 + mean(r - rf_p - beta * (b - rf_p)))^P - 1`, rf_p
/// the per-period risk-free rate from the annual `risk_free`. NaN where beta is.
///
/// Reference: empyrical `alpha` (same compounding; rf taken per period as given).
pub fn alpha(returns: &[f64], benchmark: &[f64], periods_per_year: f64, risk_free: f64) -> f64 {
    raw(returns, benchmark, periods_per_year, risk_free).alpha
}

/// Pearson correlation of the complete pairs; NaN with fewer than 2 pairs or when either
/// side is constant.
///
/// Reference: pandas `Series.corr` / `np.corrcoef`.
pub fn correlation(returns: &[f64], benchmark: &[f64]) -> f64 {
    raw(returns, benchmark, 1.0, 0.0).correlation
}

/// Tracking error, annualised: `std(r - b, ddof=1) * sqrt(P)`; NaN with fewer than 2
/// pairs, exactly 0 when `r - b` is bitwise constant.
///
/// Reference: quantstats / pyfolio (`(r - b).std() * sqrt(P)`).
pub fn tracking_error(returns: &[f64], benchmark: &[f64], periods_per_year: f64) -> f64 {
    raw(returns, benchmark, periods_per_year, 0.0).tracking_error
}

/// Information ratio, **annualised**: `mean(r - b) / std(r - b, ddof=1) * sqrt(P)`. A
/// zero tracking error gives `+inf`/`-inf`/NaN by the sign of the mean active return, as
/// Sharpe does.
///
/// Deviation: empyrical `excess_sharpe` and quantstats `information_ratio` leave it per
/// period (no `sqrt(P)`); metrics.md annualises.
pub fn information_ratio(returns: &[f64], benchmark: &[f64], periods_per_year: f64) -> f64 {
    raw(returns, benchmark, periods_per_year, 0.0).information_ratio
}

/// The benchmark figures of a report. A figure that cannot be computed is `None`, with
/// the reason under its name in `reasons`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchmarkStats {
    /// Dates both series have.
    pub common_dates: usize,
    /// Common dates where neither value is missing: the `n` of every figure.
    pub complete_pairs: usize,
    pub beta: Option<f64>,
    pub alpha: Option<f64>,
    pub correlation: Option<f64>,
    pub tracking_error: Option<f64>,
    pub information_ratio: Option<f64>,
    pub reasons: BTreeMap<&'static str, String>,
}

/// Benchmark figures of `returns` against `benchmark` on their common dates; `None` with
/// a reason when they share no date (see [`crate::report::Report::benchmark`]).
pub fn benchmark_stats(
    returns: &Returns,
    benchmark: &Returns,
    periods_per_year: f64,
    risk_free: f64,
) -> Result<BenchmarkStats, String> {
    let joined = align(returns, benchmark);
    if joined.is_empty() {
        return Err(format!(
            "the returns ({} to {}) and the benchmark ({} to {}) have no date in common",
            returns.first_date(),
            returns.last_date(),
            benchmark.first_date(),
            benchmark.last_date()
        ));
    }
    Ok(stats_of_aligned(
        joined.len(),
        &joined.left,
        &joined.right,
        periods_per_year,
        risk_free,
    ))
}

fn stats_of_aligned(
    common_dates: usize,
    r: &[f64],
    b: &[f64],
    periods_per_year: f64,
    risk_free: f64,
) -> BenchmarkStats {
    let raw = raw(r, b, periods_per_year, risk_free);
    let mut reasons = BTreeMap::new();
    let mut put = |name: &'static str, value: f64, why: &dyn Fn() -> String| {
        if value.is_finite() {
            Some(value)
        } else {
            reasons.insert(name, why());
            None
        }
    };
    let few = || {
        format!(
            "needs at least 2 common dates where neither series is missing; there are {}",
            raw.pairs
        )
    };
    let short = raw.pairs < 2;
    let beta = put("beta", raw.beta, &|| {
        if short {
            few()
        } else {
            "the benchmark is constant (zero variance); beta is undefined".into()
        }
    });
    let alpha = put("alpha", raw.alpha, &|| {
        if short {
            few()
        } else if raw.beta.is_nan() {
            "beta is undefined, so alpha is too".into()
        } else {
            "alpha is not finite (the residual return compounds past the range of f64)".into()
        }
    });
    let correlation = put("correlation", raw.correlation, &|| {
        if short {
            few()
        } else if raw.returns_constant {
            "the returns are constant; correlation is undefined".into()
        } else {
            "the benchmark is constant; correlation is undefined".into()
        }
    });
    let tracking_error = put("tracking_error", raw.tracking_error, &|| few());
    let information_ratio = put("information_ratio", raw.information_ratio, &|| {
        if short {
            few()
        } else if raw.information_ratio == f64::INFINITY {
            "the active return is constant and positive (zero tracking error); the information ratio is +inf".into()
        } else if raw.information_ratio == f64::NEG_INFINITY {
            "the active return is constant and negative (zero tracking error); the information ratio is -inf".into()
        } else {
            "the returns equal the benchmark (zero active return and tracking error); the information ratio is undefined".into()
        }
    });
    BenchmarkStats {
        common_dates,
        complete_pairs: raw.pairs,
        beta,
        alpha,
        correlation,
        tracking_error,
        information_ratio,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::date::Date;
    use crate::returns::tests::{R, close};

    // Python: b = np.array([0.008, -0.015, 0.01, 0.001, -0.004, 0.009, -0.02, 0.006, 0.012, -0.003])
    const B: [f64; 10] = [
        0.008, -0.015, 0.01, 0.001, -0.004, 0.009, -0.02, 0.006, 0.012, -0.003,
    ];

    #[test]
    fn beta_alpha_correlation() {
        // np.cov(r, b)[0, 1] / np.var(b, ddof=1)
        close(beta(&R, &B), 1.3108711839166045);
        // rf = (1 + 0.03) ** (1 / 252) - 1; beta as above;
        // (1 + np.mean(r - rf - beta * (b - rf))) ** 252 - 1
        close(alpha(&R, &B, 252.0, 0.03), 0.10941440088710364);
        // np.corrcoef(r, b)[0, 1]
        close(correlation(&R, &B), 0.9896892645026063);
    }

    #[test]
    fn tracking_error_and_information_ratio() {
        // np.std(r - b, ddof=1) * np.sqrt(252)
        close(tracking_error(&R, &B, 252.0), 0.06316644678941503);
        // np.mean(r - b) / np.std(r - b, ddof=1) * np.sqrt(252)
        close(information_ratio(&R, &B, 252.0), 1.994729898613105);
    }

    #[test]
    fn missing_values_drop_the_pair() {
        let mut r = R.to_vec();
        let mut b = B.to_vec();
        r.push(f64::NAN);
        b.push(0.5);
        r.push(0.5);
        b.push(f64::NAN);
        assert_eq!(beta(&r, &b).to_bits(), beta(&R, &B).to_bits());
        assert_eq!(
            information_ratio(&r, &b, 252.0).to_bits(),
            information_ratio(&R, &B, 252.0).to_bits()
        );
    }

    #[test]
    fn degenerate_inputs() {
        // Fewer than 2 pairs.
        assert!(beta(&[0.01], &[0.02]).is_nan());
        assert!(tracking_error(&[0.01], &[0.02], 252.0).is_nan());
        // Constant benchmark: no beta, alpha or correlation.
        assert!(beta(&R, &[0.001; 10]).is_nan());
        assert!(alpha(&R, &[0.001; 10], 252.0, 0.0).is_nan());
        assert!(correlation(&R, &[0.001; 10]).is_nan());
        // Identical series: zero tracking error, undefined IR, beta 1.
        assert_eq!(tracking_error(&R, &R, 252.0), 0.0);
        assert!(information_ratio(&R, &R, 252.0).is_nan());
        close(beta(&R, &R), 1.0);
        // Constant returns: beta exactly 0, alpha = (1 + mean(r - rf_p))^P - 1.
        assert_eq!(beta(&[0.1; 10], &R), 0.0);
        // (1 + np.mean([0.1] * 10)) ** 252 - 1
        close(alpha(&[0.1; 10], &R, 252.0, 0.0), 26974702266.758556);
        assert!(correlation(&[0.1; 10], &R).is_nan());
        // A constant positive active return: +inf IR.
        let up: Vec<f64> = B.iter().map(|b| b + 0.25).collect();
        assert_eq!(information_ratio(&up, &B, 252.0), f64::INFINITY);
    }

    fn dated(days: std::ops::Range<i32>, values: &[f64]) -> Returns {
        Returns::from_parts(days.map(Date::from_days).collect(), values.to_vec()).unwrap()
    }

    #[test]
    fn stats_use_common_dates_only() {
        // Strategy on days 0..10, benchmark on days 5..15: 5 common dates.
        let r = dated(0..10, &R);
        let b = dated(5..15, &B);
        let s = benchmark_stats(&r, &b, 252.0, 0.0).unwrap();
        assert_eq!(s.common_dates, 5);
        assert_eq!(s.complete_pairs, 5);
        assert_eq!(s.beta.unwrap().to_bits(), beta(&R[5..], &B[..5]).to_bits());
        // np.cov(r[5:], b[:5])[0, 1] / np.var(b[:5], ddof=1)
        close(s.beta.unwrap(), 1.3128078817733992);
        assert!(s.reasons.is_empty());
    }

    #[test]
    fn no_overlap_is_a_reason() {
        let r = dated(0..10, &R);
        let b = dated(20..30, &B);
        let err = benchmark_stats(&r, &b, 252.0, 0.0).unwrap_err();
        assert_eq!(
            err,
            "the returns (1970-01-01 to 1970-01-10) and the benchmark (1970-01-21 to 1970-01-30) have no date in common"
        );
    }

    #[test]
    fn one_common_date_gives_reasons() {
        let r = dated(0..10, &R);
        let b = dated(9..19, &B);
        let s = benchmark_stats(&r, &b, 252.0, 0.0).unwrap();
        assert_eq!(s.complete_pairs, 1);
        assert_eq!(s.beta, None);
        assert_eq!(
            s.reasons["beta"],
            "needs at least 2 common dates where neither series is missing; there are 1"
        );
        assert_eq!(s.reasons.len(), 5);
    }
}
