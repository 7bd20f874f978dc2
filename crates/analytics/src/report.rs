//! The full report of a return series, in two passes over the data.
//!
//! Pass 1 walks the dated series once: compounding, drawdowns and their durations,
//! sums for the means, the downside sum, constancy, best and worst, and copies the
//! non-missing values into a scratch buffer. Pass 2 walks that buffer for the central
//! moments (volatility, Sharpe, skewness, kurtosis). VaR and CVaR are then O(n)
//! selections in the same buffer. The arithmetic is the same as the single-metric
//! functions', in the same order, so every figure equals theirs bit for bit.
//!
//! Every figure that cannot be computed is `None` with the reason under its name in
//! [`Report::reasons`] — including the infinite ones (a constant positive series has a
//! Sharpe of +inf; JSON has no infinity), so nothing non-finite ever reaches a
//! serialiser.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::benchmark::{BenchmarkStats, benchmark_stats};
use crate::date::Date;
use crate::drawdown::DrawdownTracker;
use crate::returns::{
    TAIL_95, annualised_ratio, kurt_from_sums, percentile_linear, risk_free_per_period,
    skew_from_sums, tail_mean,
};
use crate::series::Returns;

/// How to read the returns.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ReportConfig {
    /// P: 252 daily, 52 weekly, 12 monthly, 365 crypto.
    pub periods_per_year: f64,
    /// Annual risk-free rate (0.03 = 3 %), converted per period geometrically.
    pub risk_free: f64,
    /// Minimum acceptable return **per period** for the downside deviation and Sortino.
    pub mar: f64,
}

impl Default for ReportConfig {
    /// Daily returns, no risk-free rate, MAR 0.
    fn default() -> ReportConfig {
        ReportConfig {
            periods_per_year: 252.0,
            risk_free: 0.0,
            mar: 0.0,
        }
    }
}

/// A configuration that makes no sense.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("periods per year must be positive and finite; it is {0}")]
    PeriodsPerYear(f64),
    #[error("the risk-free rate must be finite and above -100 %; it is {0}")]
    RiskFree(f64),
    #[error("the minimum acceptable return must be finite; it is {0}")]
    Mar(f64),
}

impl ReportConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.periods_per_year.is_finite() && self.periods_per_year > 0.0) {
            return Err(ConfigError::PeriodsPerYear(self.periods_per_year));
        }
        if !(self.risk_free.is_finite() && self.risk_free > -1.0) {
            return Err(ConfigError::RiskFree(self.risk_free));
        }
        if !self.mar.is_finite() {
            return Err(ConfigError::Mar(self.mar));
        }
        Ok(())
    }
}

/// Every period metric of a series (see [`crate::returns`] and [`crate::drawdown`] for
/// the definitions). Fractions are plain numbers (0.14 = 14 %).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub periods_per_year: f64,
    pub risk_free: f64,
    pub mar: f64,
    /// `n`: every observation, missing ones included.
    pub observations: usize,
    /// Missing (NaN) observations.
    pub missing: usize,
    /// The wealth anchor's date, when the series knows it.
    pub start: Option<Date>,
    pub first_date: Date,
    pub last_date: Date,
    pub total_return: Option<f64>,
    pub annualized_return: Option<f64>,
    pub volatility: Option<f64>,
    pub sharpe: Option<f64>,
    /// Per period, as metrics.md defines it.
    pub downside_deviation: Option<f64>,
    pub sortino: Option<f64>,
    /// Negative fraction; 0 without a drawdown.
    pub max_drawdown: Option<f64>,
    pub max_drawdown_peak: Option<Date>,
    pub max_drawdown_trough: Option<Date>,
    /// Calendar days of the longest drawdown (0 without one).
    pub max_drawdown_duration_days: i64,
    /// Whether that longest drawdown has recovered.
    pub longest_drawdown_recovered: bool,
    pub current_drawdown: Option<f64>,
    pub calmar: Option<f64>,
    pub var_95: Option<f64>,
    pub cvar_95: Option<f64>,
    pub skewness: Option<f64>,
    pub kurtosis: Option<f64>,
    /// The best and worst single-period returns.
    pub best_period: Option<f64>,
    pub worst_period: Option<f64>,
    /// Figures against the benchmark on the common dates; `None` when no benchmark was
    /// given, or (with the reason under `"benchmark"`) when the two share no date.
    pub benchmark: Option<BenchmarkStats>,
    /// Why each `None` figure is `None`, by field name.
    pub reasons: BTreeMap<&'static str, String>,
}

impl Report {
    /// The `Option<f64>` figures by name, in field order (for tables and checks).
    pub fn figures(&self) -> Vec<(&'static str, Option<f64>)> {
        let mut v = vec![
            ("total_return", self.total_return),
            ("annualized_return", self.annualized_return),
            ("volatility", self.volatility),
            ("sharpe", self.sharpe),
            ("downside_deviation", self.downside_deviation),
            ("sortino", self.sortino),
            ("max_drawdown", self.max_drawdown),
            ("current_drawdown", self.current_drawdown),
            ("calmar", self.calmar),
            ("var_95", self.var_95),
            ("cvar_95", self.cvar_95),
            ("skewness", self.skewness),
            ("kurtosis", self.kurtosis),
            ("best_period", self.best_period),
            ("worst_period", self.worst_period),
        ];
        if let Some(b) = &self.benchmark {
            v.extend([
                ("beta", b.beta),
                ("alpha", b.alpha),
                ("correlation", b.correlation),
                ("tracking_error", b.tracking_error),
                ("information_ratio", b.information_ratio),
            ]);
        }
        v
    }
}

/// Keeps finite figures; records why the others are missing.
struct Figures {
    reasons: BTreeMap<&'static str, String>,
}

impl Figures {
    fn put(
        &mut self,
        name: &'static str,
        value: f64,
        why: impl FnOnce(f64) -> String,
    ) -> Option<f64> {
        if value.is_finite() {
            Some(value)
        } else {
            self.reasons.insert(name, why(value));
            None
        }
    }
}

fn need(k: usize, n: usize) -> String {
    format!("needs at least {k} non-missing returns; there are {n}")
}

fn overflow(v: f64) -> String {
    format!("the figure is {v}: out of the range of f64")
}

/// The report of one series, with an optional benchmark.
pub fn report(
    returns: &Returns,
    benchmark: Option<&Returns>,
    config: &ReportConfig,
) -> Result<Report, ConfigError> {
    config.validate()?;
    Ok(compute(returns, benchmark, config, &mut Vec::new()))
}

/// Threads [`report_many`] uses: the work is split in two.
pub const REPORT_MANY_THREADS: usize = 2;

/// Reports of many series (each against the same optional benchmark), the work split
/// over [`REPORT_MANY_THREADS`] scoped threads; results in input order.
pub fn report_many(
    series: &[Returns],
    benchmark: Option<&Returns>,
    config: &ReportConfig,
) -> Result<Vec<Report>, ConfigError> {
    report_many_with_threads(series, benchmark, config, REPORT_MANY_THREADS)
}

/// [`report_many`] with an explicit thread count (1 = on the calling thread).
pub fn report_many_with_threads(
    series: &[Returns],
    benchmark: Option<&Returns>,
    config: &ReportConfig,
    threads: usize,
) -> Result<Vec<Report>, ConfigError> {
    config.validate()?;
    let run = |chunk: &[Returns]| {
        let mut scratch = Vec::new();
        chunk
            .iter()
            .map(|r| compute(r, benchmark, config, &mut scratch))
            .collect::<Vec<_>>()
    };
    let threads = threads.clamp(1, series.len().max(1));
    if threads == 1 {
        return Ok(run(series));
    }
    let chunk = series.len().div_ceil(threads);
    let parts: Vec<Vec<Report>> = std::thread::scope(|s| {
        let handles: Vec<_> = series
            .chunks(chunk)
            .skip(1)
            .map(|c| s.spawn(move || run(c)))
            .collect();
        // The calling thread takes the first chunk.
        let mut parts = vec![run(&series[..chunk.min(series.len())])];
        for h in handles {
            match h.join() {
                Ok(p) => parts.push(p),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        parts
    });
    Ok(parts.into_iter().flatten().collect())
}

fn compute(
    returns: &Returns,
    benchmark: Option<&Returns>,
    config: &ReportConfig,
    scratch: &mut Vec<f64>,
) -> Report {
    let p = config.periods_per_year;
    let rf = risk_free_per_period(config.risk_free, p);
    let mar = config.mar;
    let values = returns.values();
    let n = values.len();

    // Pass 1: the dated series.
    scratch.clear();
    scratch.reserve(n);
    let mut dd = DrawdownTracker::new(returns.anchor_date());
    let (mut sum, mut sum_e, mut sum_m, mut down_ss) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (mut best, mut worst) = (f64::NEG_INFINITY, f64::INFINITY);
    let mut first: Option<(u64, u64)> = None;
    let (mut const_r, mut const_e) = (true, true);
    for (&date, &r) in returns.dates().iter().zip(values) {
        dd.push(date, r);
        if r.is_nan() {
            continue;
        }
        scratch.push(r);
        sum += r;
        let e = r - rf;
        sum_e += e;
        let m = r - mar;
        sum_m += m;
        let d = m.min(0.0);
        down_ss += d * d;
        best = best.max(r);
        worst = worst.min(r);
        match first {
            None => first = Some((r.to_bits(), e.to_bits())),
            Some((fr, fe)) => {
                const_r &= fr == r.to_bits();
                const_e &= fe == e.to_bits();
            }
        }
    }
    let k = scratch.len(); // non-missing count
    let kf = k as f64;
    let wealth = dd.wealth();
    let draw = dd.finish(returns.last_date());

    // Pass 2: central moments of the non-missing values.
    let nan = f64::NAN;
    let (mean, mean_e, mean_m) = if k == 0 {
        (nan, nan, nan)
    } else {
        (sum / kf, sum_e / kf, sum_m / kf)
    };
    let (mut m2, mut m3, mut m4, mut ss_e) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for &r in scratch.iter() {
        let d = r - mean;
        let d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
        let de = (r - rf) - mean_e;
        ss_e += de * de;
    }

    let total = wealth - 1.0;
    let growth = 1.0 + total;
    let cagr = if growth < 0.0 {
        nan
    } else {
        growth.powf(p / n as f64) - 1.0
    };
    let vol = if k < 2 {
        nan
    } else if const_r {
        0.0
    } else {
        (m2 / (k - 1) as f64).sqrt() * p.sqrt()
    };
    let sharpe = if k < 2 {
        nan
    } else {
        let std = (ss_e / (k - 1) as f64).sqrt();
        annualised_ratio(mean_e, std, const_e, p)
    };
    let downside = if k == 0 { nan } else { (down_ss / kf).sqrt() };
    let sortino = if k == 0 {
        nan
    } else {
        annualised_ratio(mean_m, downside, downside == 0.0, p)
    };
    let mdd = draw.max_drawdown;
    let calmar = if mdd < 0.0 { cagr / mdd.abs() } else { nan };
    let skew = skew_from_sums(k, m2, m3, const_r);
    let kurt = kurt_from_sums(k, m2, m4, const_r);
    let var = percentile_linear(scratch, TAIL_95);
    let cvar = tail_mean(scratch, TAIL_95);

    let mut f = Figures {
        reasons: BTreeMap::new(),
    };
    let report_total = f.put("total_return", total, overflow);
    let annualized_return = f.put("annualized_return", cagr, |v| {
        if v.is_nan() {
            "the wealth went negative (a return below -100 %); CAGR is undefined".into()
        } else {
            overflow(v)
        }
    });
    let volatility = f.put("volatility", vol, |v| {
        if k < 2 { need(2, k) } else { overflow(v) }
    });
    let sharpe = f.put("sharpe", sharpe, |v| {
        if k < 2 {
            need(2, k)
        } else if v == f64::INFINITY {
            "returns are constant and above the risk-free rate; Sharpe is +inf".into()
        } else if v == f64::NEG_INFINITY {
            "returns are constant and below the risk-free rate; Sharpe is -inf".into()
        } else {
            "returns are constant and equal to the risk-free rate; Sharpe is undefined (0/0)".into()
        }
    });
    let downside_deviation = f.put("downside_deviation", downside, |_| need(1, k));
    let sortino = f.put("sortino", sortino, |v| {
        if k == 0 {
            need(1, k)
        } else if v == f64::INFINITY {
            format!("no return is below the MAR ({mar}); Sortino is +inf")
        } else {
            format!("every return equals the MAR ({mar}); Sortino is undefined (0/0)")
        }
    });
    let max_drawdown = f.put("max_drawdown", mdd, overflow);
    let current_drawdown = f.put("current_drawdown", draw.current_drawdown, overflow);
    let calmar = f.put("calmar", calmar, |v| {
        if mdd >= 0.0 {
            "no drawdown; Calmar is undefined".into()
        } else if cagr.is_nan() {
            "CAGR is undefined, so Calmar is too".into()
        } else {
            overflow(v)
        }
    });
    let var_95 = f.put("var_95", var, |_| need(1, k));
    let cvar_95 = f.put("cvar_95", cvar, |_| need(1, k));
    let constant = |what: &str| format!("returns are constant; {what} is undefined");
    let skewness = f.put("skewness", skew, |_| {
        if k < 3 {
            need(3, k)
        } else {
            constant("skewness")
        }
    });
    let kurtosis = f.put("kurtosis", kurt, |_| {
        if k < 4 {
            need(4, k)
        } else {
            constant("kurtosis")
        }
    });
    let best_period = f.put("best_period", best, |_| need(1, k));
    let worst_period = f.put("worst_period", worst, |_| need(1, k));
    let benchmark =
        benchmark.and_then(|b| match benchmark_stats(returns, b, p, config.risk_free) {
            Ok(s) => Some(s),
            Err(why) => {
                f.reasons.insert("benchmark", why);
                None
            }
        });

    Report {
        periods_per_year: p,
        risk_free: config.risk_free,
        mar,
        observations: n,
        missing: n - k,
        start: returns.start(),
        first_date: returns.first_date(),
        last_date: returns.last_date(),
        total_return: report_total,
        annualized_return,
        volatility,
        sharpe,
        downside_deviation,
        sortino,
        max_drawdown,
        max_drawdown_peak: draw.max_drawdown_peak,
        max_drawdown_trough: draw.max_drawdown_trough,
        max_drawdown_duration_days: draw.max_duration_days,
        longest_drawdown_recovered: draw.longest_recovered,
        current_drawdown,
        calmar,
        var_95,
        cvar_95,
        skewness,
        kurtosis,
        best_period,
        worst_period,
        benchmark,
        reasons: f.reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benchmark;
    use crate::drawdown;
    use crate::returns::{self, tests::R};

    fn series(values: &[f64]) -> Returns {
        Returns::from_parts(
            (0..values.len() as i32).map(Date::from_days).collect(),
            values.to_vec(),
        )
        .unwrap()
    }

    /// A deterministic pseudo-random series (xorshift), daily-return sized, with some
    /// missing values.
    pub(crate) fn noise(n: usize, seed: u64, missing_every: usize) -> Vec<f64> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if missing_every > 0 && i % missing_every == missing_every - 1 {
                    f64::NAN
                } else {
                    ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.48) * 0.04
                }
            })
            .collect()
    }

    fn same(a: Option<f64>, b: f64) {
        match a {
            Some(a) => assert_eq!(a.to_bits(), b.to_bits(), "{a:e} vs {b:e}"),
            None => assert!(!b.is_finite(), "None but the function gives {b:e}"),
        }
    }

    /// The report's figures equal the single-metric functions' bit for bit.
    #[test]
    fn report_matches_the_functions_exactly() {
        let cfg = ReportConfig {
            periods_per_year: 252.0,
            risk_free: 0.03,
            mar: 0.0005,
        };
        for (values, label) in [
            (R.to_vec(), "R"),
            (noise(2520, 7, 0), "noise"),
            (noise(1000, 11, 17), "noise with NaN"),
        ] {
            let s = series(&values);
            let rep = report(&s, None, &cfg).unwrap();
            let v = &values[..];
            let p = cfg.periods_per_year;
            eprintln!("{label}");
            same(rep.total_return, returns::total_return(v));
            same(rep.annualized_return, returns::annualized_return(v, p));
            same(rep.volatility, returns::volatility(v, p));
            same(rep.sharpe, returns::sharpe(v, p, cfg.risk_free));
            same(
                rep.downside_deviation,
                returns::downside_deviation(v, cfg.mar),
            );
            same(rep.sortino, returns::sortino(v, p, cfg.mar));
            same(rep.max_drawdown, drawdown::max_drawdown(v));
            same(rep.current_drawdown, drawdown::current_drawdown(v));
            same(rep.calmar, returns::calmar(v, p));
            same(rep.var_95, returns::var_95(v));
            same(rep.cvar_95, returns::cvar_95(v));
            same(rep.skewness, returns::skewness(v));
            same(rep.kurtosis, returns::kurtosis(v));
            assert_eq!(
                rep.max_drawdown_duration_days,
                drawdown::max_drawdown_duration_days(&s)
            );
            assert_eq!(rep.observations, values.len());
            assert_eq!(rep.missing, s.missing());
        }
    }

    /// Ten years of synthetic daily returns with every 50th missing, checked against
    /// numpy/pandas at 1e-12 (the generator is re-implemented in Python):
    ///   x = max((seed ^ 0x9E3779B97F4A7C15) & M, 1); per value: x ^= x << 13 & M;
    ///   x ^= x >> 7; x ^= x << 17 & M; r = ((x >> 11) / 2**53 - 0.48) * 0.04 (NaN at
    ///   i % 50 == 49); s = pd.Series(r); rf = 1.03 ** (1/252) - 1; mar = 0.0005
    #[test]
    fn ten_years_against_pandas() {
        use crate::returns::tests::close;
        let s = crate::synthetic::daily_returns(2520, 42, 50);
        let cfg = ReportConfig {
            periods_per_year: 252.0,
            risk_free: 0.03,
            mar: 0.0005,
        };
        let rep = report(&s, None, &cfg).unwrap();
        assert_eq!((rep.observations, rep.missing), (2520, 50));
        // (1 + s.fillna(0)).prod() - 1 ; ((1 + s.fillna(0)).prod()) ** (252 / 2520) - 1
        close(rep.total_return.unwrap(), 4.738300207191703);
        close(rep.annualized_return.unwrap(), 0.19090831220215865);
        // s.std() * np.sqrt(252) ; e = s - rf; e.mean() / e.std() * np.sqrt(252)
        close(rep.volatility.unwrap(), 0.18267927440470363);
        close(rep.sharpe.unwrap(), 0.9055280002575826);
        // np.sqrt(np.nanmean(np.minimum(r - mar, 0) ** 2))
        close(rep.downside_deviation.unwrap(), 0.007935563737462134);
        // np.nanmean(r - mar) / (the above) * np.sqrt(252)
        close(rep.sortino.unwrap(), 0.547590685286388);
        // w = np.concatenate([[1.0], np.cumprod(1 + s.fillna(0).values)])
        // (w / np.maximum.accumulate(w) - 1).min() ; w[-1] / w.max() - 1 ; cagr / abs(mdd)
        close(rep.max_drawdown.unwrap(), -0.2327256261851296);
        close(rep.current_drawdown.unwrap(), -0.05222014318938306);
        close(rep.calmar.unwrap(), 0.8203149577103042);
        // np.nanpercentile(r, 5) ; v = s.dropna().values; np.sort(v)[:int(2469 * 0.05) + 1].mean()
        close(rep.var_95.unwrap(), -0.017295940336888735);
        close(rep.cvar_95.unwrap(), -0.01829796851008543);
        // s.skew() ; s.kurt()
        close(rep.skewness.unwrap(), 0.01599111462338172);
        close(rep.kurtosis.unwrap(), -1.194656853228968);
    }

    #[test]
    fn report_of_the_sample() {
        let rep = report(&series(&R), None, &ReportConfig::default()).unwrap();
        assert!(rep.reasons.is_empty(), "{:?}", rep.reasons);
        assert!(rep.figures().iter().all(|(_, v)| v.is_some()));
        assert_eq!(rep.best_period, Some(0.018));
        assert_eq!(rep.worst_period, Some(-0.025));
        assert_eq!(rep.max_drawdown_peak, Some(Date::from_days(5)));
        assert_eq!(rep.max_drawdown_trough, Some(Date::from_days(6)));
    }

    #[test]
    fn one_observation() {
        let rep = report(&series(&[0.01]), None, &ReportConfig::default()).unwrap();
        // np.prod(1 + np.array([0.01])) - 1
        assert_eq!(rep.total_return, Some(0.010000000000000009));
        assert!(rep.annualized_return.is_some());
        assert_eq!(rep.volatility, None);
        assert_eq!(
            rep.reasons["volatility"],
            "needs at least 2 non-missing returns; there are 1"
        );
        assert_eq!(rep.sharpe, None);
        assert_eq!(rep.skewness, None);
        assert_eq!(
            rep.reasons["skewness"],
            "needs at least 3 non-missing returns; there are 1"
        );
        assert_eq!(
            rep.reasons["kurtosis"],
            "needs at least 4 non-missing returns; there are 1"
        );
        assert_eq!(rep.max_drawdown, Some(0.0));
        assert_eq!(rep.calmar, None);
        assert_eq!(rep.reasons["calmar"], "no drawdown; Calmar is undefined");
        assert_eq!(rep.var_95, Some(0.01));
        assert_eq!(rep.sortino, None);
        assert_eq!(
            rep.reasons["sortino"],
            "no return is below the MAR (0); Sortino is +inf"
        );
    }

    #[test]
    fn constant_returns_report_infinite_sharpe_as_a_reason() {
        let rep = report(&series(&[0.001; 10]), None, &ReportConfig::default()).unwrap();
        assert_eq!(rep.sharpe, None);
        assert_eq!(
            rep.reasons["sharpe"],
            "returns are constant and above the risk-free rate; Sharpe is +inf"
        );
        assert_eq!(rep.volatility, Some(0.0));
        assert_eq!(
            rep.reasons["skewness"],
            "returns are constant; skewness is undefined"
        );
        assert_eq!(
            rep.reasons["kurtosis"],
            "returns are constant; kurtosis is undefined"
        );

        let rep = report(&series(&[-0.001; 10]), None, &ReportConfig::default()).unwrap();
        assert_eq!(
            rep.reasons["sharpe"],
            "returns are constant and below the risk-free rate; Sharpe is -inf"
        );
        let rep = report(&series(&[0.0; 10]), None, &ReportConfig::default()).unwrap();
        assert!(rep.reasons["sharpe"].contains("undefined (0/0)"));
        assert!(rep.reasons["sortino"].contains("undefined (0/0)"));
    }

    #[test]
    fn all_losses() {
        let rep = report(
            &series(&[-0.01, -0.02, -0.03]),
            None,
            &ReportConfig::default(),
        )
        .unwrap();
        assert!(rep.sharpe.unwrap() < 0.0);
        assert!(rep.calmar.unwrap() < 0.0);
        assert_eq!(rep.max_drawdown_duration_days, 2);
        assert!(!rep.longest_drawdown_recovered);
        assert_eq!(rep.best_period, Some(-0.01));
    }

    #[test]
    fn all_missing() {
        let rep = report(
            &series(&[f64::NAN, f64::NAN]),
            None,
            &ReportConfig::default(),
        )
        .unwrap();
        assert_eq!(rep.observations, 2);
        assert_eq!(rep.missing, 2);
        assert_eq!(rep.total_return, Some(0.0));
        assert_eq!(rep.annualized_return, Some(0.0));
        assert_eq!(rep.volatility, None);
        assert_eq!(rep.var_95, None);
        assert_eq!(
            rep.reasons["var_95"],
            "needs at least 1 non-missing returns; there are 0"
        );
        assert_eq!(rep.best_period, None);
    }

    #[test]
    fn nothing_non_finite_leaks() {
        let cases: Vec<Vec<f64>> = vec![
            vec![0.0],
            vec![f64::NAN],
            vec![0.5; 3],
            vec![-1.0, 0.1],
            vec![-1.5, 0.1],
            vec![1e300, 1e300],
            noise(50, 3, 4),
        ];
        for values in cases {
            let rep = report(&series(&values), None, &ReportConfig::default()).unwrap();
            for (name, v) in rep.figures() {
                if let Some(v) = v {
                    assert!(v.is_finite(), "{name} = {v} for {values:?}");
                } else {
                    assert!(rep.reasons.contains_key(name), "{name} has no reason");
                }
            }
        }
    }

    #[test]
    fn benchmark_in_the_report() {
        let s = series(&R);
        let b = series(&R.map(|r| r * 0.5 + 0.001));
        let rep = report(&s, Some(&b), &ReportConfig::default()).unwrap();
        let st = rep.benchmark.as_ref().unwrap();
        assert_eq!(st.common_dates, 10);
        same(st.beta, benchmark::beta(&R, b.values()));

        let far = Returns::from_parts(vec![Date::from_days(1000)], vec![0.01]).unwrap();
        let rep = report(&s, Some(&far), &ReportConfig::default()).unwrap();
        assert_eq!(rep.benchmark, None);
        assert!(rep.reasons["benchmark"].contains("no date in common"));

        let rep = report(&s, None, &ReportConfig::default()).unwrap();
        assert!(!rep.reasons.contains_key("benchmark"));
    }

    #[test]
    fn config_is_validated() {
        let s = series(&R);
        let bad = ReportConfig {
            periods_per_year: 0.0,
            ..ReportConfig::default()
        };
        assert_eq!(
            report(&s, None, &bad),
            Err(ConfigError::PeriodsPerYear(0.0))
        );
        let bad = ReportConfig {
            risk_free: -1.0,
            ..ReportConfig::default()
        };
        assert!(report_many(&[s], None, &bad).is_err());
    }

    #[test]
    fn report_many_keeps_order_and_matches_report() {
        let all: Vec<Returns> = (0..7).map(|i| series(&noise(300, i + 1, 13))).collect();
        let cfg = ReportConfig::default();
        let many = report_many(&all, None, &cfg).unwrap();
        let one = report_many_with_threads(&all, None, &cfg, 1).unwrap();
        assert_eq!(many.len(), 7);
        for (i, s) in all.iter().enumerate() {
            let r = report(s, None, &cfg).unwrap();
            assert_eq!(many[i], r);
            assert_eq!(one[i], r);
        }
        assert!(report_many(&[], None, &cfg).unwrap().is_empty());
        assert_eq!(
            report_many_with_threads(&all[..1], None, &cfg, 8)
                .unwrap()
                .len(),
            1
        );
    }
}
