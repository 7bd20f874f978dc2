//! `performance_report`: a strategy's returns (or equity) over a period, with trade
//! statistics from its closed round trips and, on request, figures against a benchmark.
//! The report itself is built by [`build_report`], a pure function also used by the
//! offline `quantbox report --returns FILE`, so both say exactly the same thing.

use std::collections::BTreeMap;
use std::time::Instant;

use quantbox_analytics::{self as an, Date, ReportConfig, Returns};
use quantbox_trading::{Bar, DEFAULT_BENCHMARK, Day, SeriesKind, SeriesPoint, TradingStore};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Ops;
use crate::error::{ErrorCode, OpError};

fn d30() -> i64 {
    30
}

fn d252() -> f64 {
    252.0
}

/// Arguments of `performance_report`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportInput {
    /// The strategy (as imported, or as an agent named it).
    pub strategy: String,
    /// The last N calendar days of the strategy's data (0 = all of it), 0–36500.
    #[serde(default = "d30")]
    pub period_days: i64,
    /// Also compare with a benchmark (`benchmark`, default the S&P 500 series `SPX`).
    #[serde(default)]
    pub include_benchmark: bool,
    /// Ask for GPU computation (there is no GPU path: the report says so in `compute`).
    #[serde(default)]
    pub use_gpu: bool,
    /// The benchmark symbol: bundled (`SPX`, `IXIC`, `AAPL`, …) or imported prices.
    #[serde(default)]
    pub benchmark: Option<String>,
    /// Annual risk-free rate (0.03 = 3 %), -0.5 to 1.
    #[serde(default)]
    pub risk_free_rate: f64,
    /// Periods per year of the series: 252 daily, 52 weekly, 12 monthly, 365 crypto (1–366).
    #[serde(default = "d252")]
    pub periods_per_year: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PeriodOut {
    /// First and last dates of the returns in the period (YYYY-MM-DD).
    pub start: Option<String>,
    pub end: Option<String>,
    /// Returns in the period, missing ones included.
    pub observations: usize,
    pub missing: usize,
    pub period_days: i64,
}

#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct PerformanceOut {
    pub total_return: Option<f64>,
    pub annualized_return: Option<f64>,
    pub sharpe_ratio: Option<f64>,
    pub sortino_ratio: Option<f64>,
    pub calmar_ratio: Option<f64>,
    /// Negative fraction (-0.14 = -14 %).
    pub max_drawdown: Option<f64>,
    pub max_drawdown_duration_days: Option<i64>,
    /// From closed trades: winners / all (breakeven in the denominator).
    pub win_rate: Option<f64>,
    /// Gross profit / |gross loss| of closed trades.
    pub profit_factor: Option<f64>,
}

#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct RiskOut {
    pub volatility: Option<f64>,
    pub var_95: Option<f64>,
    pub cvar_95: Option<f64>,
    pub skewness: Option<f64>,
    pub kurtosis: Option<f64>,
}

#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct TradesOut {
    pub total: u64,
    pub winning: u64,
    pub losing: u64,
    pub breakeven: u64,
    pub average_win: Option<f64>,
    pub average_loss: Option<f64>,
    pub largest_win: Option<f64>,
    pub largest_loss: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BenchmarkOut {
    pub symbol: String,
    /// The benchmark's compounded return over the strategy's dates.
    pub total_return: Option<f64>,
    /// Annual, compounded.
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    pub correlation: Option<f64>,
    pub tracking_error: Option<f64>,
    /// Annualised (empyrical and quantstats leave it per period).
    pub information_ratio: Option<f64>,
    /// Dates both series have.
    pub common_dates: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ComputeOut {
    /// Always `cpu`: quantbox has no GPU code path for reports.
    pub device: &'static str,
    pub gpu_requested: bool,
    pub note: String,
    pub elapsed_ms: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReportOutput {
    pub strategy: String,
    pub period: PeriodOut,
    pub performance: PerformanceOut,
    pub risk: RiskOut,
    pub trades: TradesOut,
    /// With `include_benchmark`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<BenchmarkOut>,
    /// Why each null figure is null, by its path (e.g. `performance.sharpe_ratio`).
    pub reasons: BTreeMap<String, String>,
    pub periods_per_year: f64,
    pub risk_free_rate: f64,
    pub compute: ComputeOut,
}

/// A report with its inputs.
pub struct ReportWithSeries {
    pub report: ReportOutput,
    /// The period's daily returns (`None`: there are none).
    pub returns: Option<Returns>,
    /// The benchmark's symbol and daily returns (`None`: no prices), when asked for.
    pub benchmark: Option<(String, Option<Returns>)>,
}

/// Parameters of [`build_report`].
#[derive(Clone, Debug)]
pub struct ReportParams {
    pub period_days: i64,
    pub periods_per_year: f64,
    pub risk_free_rate: f64,
    pub use_gpu: bool,
}

pub fn check_params(p: &ReportParams) -> Result<(), OpError> {
    crate::args::int_in("period_days", p.period_days, 0, 36_500)?;
    if !(p.periods_per_year.is_finite() && (1.0..=366.0).contains(&p.periods_per_year)) {
        return Err(OpError::invalid(
            "periods_per_year",
            format!("must be between 1 and 366, got {}", p.periods_per_year),
        ));
    }
    if !(p.risk_free_rate.is_finite() && (-0.5..=1.0).contains(&p.risk_free_rate)) {
        return Err(OpError::invalid(
            "risk_free_rate",
            format!(
                "must be an annual rate between -0.5 and 1 (0.03 = 3 %), got {}",
                p.risk_free_rate
            ),
        ));
    }
    Ok(())
}

fn day_of(d: Date) -> Day {
    Day(d.unix_seconds().div_euclid(86_400) as i32)
}

fn date_of(day: Day) -> Date {
    Date::from_unix_millis(day.start_ms()).expect("a Day is a valid date")
}

/// A strategy's series as daily returns: returns as they are; an equity curve's last
/// value per day, turned into returns.
/// `None` when there is no return (no point, or a single equity point).
pub fn daily_returns(kind: SeriesKind, points: &[SeriesPoint]) -> Result<Option<Returns>, OpError> {
    let bad = |e: an::SeriesError| {
        OpError::new(
            ErrorCode::FailedPrecondition,
            format!("the stored series cannot be read as returns: {e}"),
        )
    };
    match kind {
        SeriesKind::Returns => {
            let pts: Vec<(Date, f64)> = points
                .iter()
                .map(|p| (date_of(Day::from_ms(p.t_ms)), p.value))
                .collect();
            if pts.is_empty() {
                return Ok(None);
            }
            Returns::new(&pts).map(Some).map_err(bad)
        }
        SeriesKind::Equity => {
            let mut daily: Vec<(Date, f64)> = Vec::with_capacity(points.len());
            for p in points {
                let d = date_of(Day::from_ms(p.t_ms));
                match daily.last_mut() {
                    Some(last) if last.0 == d => last.1 = p.value,
                    _ => daily.push((d, p.value)),
                }
            }
            if daily.len() < 2 {
                return Ok(None);
            }
            an::equity_to_returns(&daily).map(Some).map_err(bad)
        }
    }
}

/// Daily returns of a symbol's adjusted close, each dated at its later day.
/// `None` with fewer than two bars.
pub fn bar_returns(bars: &[Bar]) -> Result<Option<Returns>, OpError> {
    let pts: Vec<(Date, f64)> = bars
        .windows(2)
        .map(|w| (date_of(w[1].day), w[1].adj_close / w[0].adj_close - 1.0))
        .collect();
    if pts.is_empty() {
        return Ok(None);
    }
    Returns::new(&pts)
        .map(Some)
        .map_err(|e| OpError::internal(format!("benchmark returns: {e}")))
}

/// The last `period_days` calendar days of `r` (0 = all).
pub fn last_days(r: Option<Returns>, period_days: i64) -> Option<Returns> {
    let r = r?;
    if period_days == 0 {
        return Some(r);
    }
    let end = r.last_date();
    let from = r
        .dates()
        .partition_point(|d| end.days_since(*d) >= period_days);
    // The last return is always in the period (it is 0 days before the end).
    Returns::from_parts(r.dates()[from..].to_vec(), r.values()[from..].to_vec()).ok()
}

fn put(
    reasons: &mut BTreeMap<String, String>,
    from: &BTreeMap<&'static str, String>,
    key: &str,
    path: &str,
    v: Option<f64>,
) -> Option<f64> {
    if v.is_none()
        && let Some(why) = from.get(key)
    {
        reasons.insert(path.to_owned(), why.clone());
    }
    v
}

/// The whole report of `returns` (already cut to the period), `pnls` of its closed
/// trades, and an optional benchmark (symbol, its returns).
pub fn build_report(
    strategy: &str,
    returns: Option<&Returns>,
    benchmark: Option<(&str, Option<&Returns>)>,
    pnls: &[f64],
    p: &ReportParams,
    started: Instant,
) -> Result<ReportOutput, OpError> {
    let cfg = ReportConfig {
        periods_per_year: p.periods_per_year,
        risk_free: p.risk_free_rate,
        mar: 0.0,
    };
    let mut reasons = BTreeMap::new();
    let (mut perf, mut risk) = (PerformanceOut::default(), RiskOut::default());
    let mut bench_out = None;
    let period = match returns {
        None => {
            for path in [
                "performance.total_return",
                "performance.annualized_return",
                "performance.sharpe_ratio",
                "performance.sortino_ratio",
                "performance.calmar_ratio",
                "performance.max_drawdown",
                "performance.max_drawdown_duration_days",
                "risk.volatility",
                "risk.var_95",
                "risk.cvar_95",
                "risk.skewness",
                "risk.kurtosis",
            ] {
                reasons.insert(
                    path.to_owned(),
                    "the strategy has no returns in the period".to_owned(),
                );
            }
            PeriodOut {
                start: None,
                end: None,
                observations: 0,
                missing: 0,
                period_days: p.period_days,
            }
        }
        Some(returns) => {
            let r = an::report(returns, benchmark.and_then(|b| b.1), &cfg)
                .map_err(|e| OpError::invalid("periods_per_year", e.to_string()))?;
            let rs = &r.reasons;
            perf.total_return = put(
                &mut reasons,
                rs,
                "total_return",
                "performance.total_return",
                r.total_return,
            );
            perf.annualized_return = put(
                &mut reasons,
                rs,
                "annualized_return",
                "performance.annualized_return",
                r.annualized_return,
            );
            perf.sharpe_ratio = put(
                &mut reasons,
                rs,
                "sharpe",
                "performance.sharpe_ratio",
                r.sharpe,
            );
            perf.sortino_ratio = put(
                &mut reasons,
                rs,
                "sortino",
                "performance.sortino_ratio",
                r.sortino,
            );
            perf.calmar_ratio = put(
                &mut reasons,
                rs,
                "calmar",
                "performance.calmar_ratio",
                r.calmar,
            );
            perf.max_drawdown = put(
                &mut reasons,
                rs,
                "max_drawdown",
                "performance.max_drawdown",
                r.max_drawdown,
            );
            perf.max_drawdown_duration_days = Some(r.max_drawdown_duration_days);
            risk.volatility = put(
                &mut reasons,
                rs,
                "volatility",
                "risk.volatility",
                r.volatility,
            );
            risk.var_95 = put(&mut reasons, rs, "var_95", "risk.var_95", r.var_95);
            risk.cvar_95 = put(&mut reasons, rs, "cvar_95", "risk.cvar_95", r.cvar_95);
            risk.skewness = put(&mut reasons, rs, "skewness", "risk.skewness", r.skewness);
            risk.kurtosis = put(&mut reasons, rs, "kurtosis", "risk.kurtosis", r.kurtosis);
            if let Some((symbol, b)) = benchmark {
                let in_range: Vec<f64> = b
                    .map(|b| {
                        b.dates()
                            .iter()
                            .zip(b.values())
                            .filter(|(d, _)| **d >= r.first_date && **d <= r.last_date)
                            .map(|(_, v)| *v)
                            .collect()
                    })
                    .unwrap_or_default();
                let total = (!in_range.is_empty()).then(|| an::total_return(&in_range));
                if total.is_none() {
                    reasons.insert(
                        "benchmark.total_return".into(),
                        format!(
                            "{symbol} has no prices between {} and {}",
                            r.first_date, r.last_date
                        ),
                    );
                }
                let mut out = BenchmarkOut {
                    symbol: symbol.to_owned(),
                    total_return: total,
                    alpha: None,
                    beta: None,
                    correlation: None,
                    tracking_error: None,
                    information_ratio: None,
                    common_dates: 0,
                };
                match &r.benchmark {
                    Some(s) => {
                        let br = &s.reasons;
                        out.common_dates = s.common_dates;
                        out.alpha = put(&mut reasons, br, "alpha", "benchmark.alpha", s.alpha);
                        out.beta = put(&mut reasons, br, "beta", "benchmark.beta", s.beta);
                        out.correlation = put(
                            &mut reasons,
                            br,
                            "correlation",
                            "benchmark.correlation",
                            s.correlation,
                        );
                        out.tracking_error = put(
                            &mut reasons,
                            br,
                            "tracking_error",
                            "benchmark.tracking_error",
                            s.tracking_error,
                        );
                        out.information_ratio = put(
                            &mut reasons,
                            br,
                            "information_ratio",
                            "benchmark.information_ratio",
                            s.information_ratio,
                        );
                    }
                    None => {
                        let why = rs
                            .get("benchmark")
                            .cloned()
                            .unwrap_or_else(|| format!("{symbol} and the strategy share no date"));
                        for f in [
                            "alpha",
                            "beta",
                            "correlation",
                            "tracking_error",
                            "information_ratio",
                        ] {
                            reasons.insert(format!("benchmark.{f}"), why.clone());
                        }
                    }
                }
                bench_out = Some(out);
            }
            PeriodOut {
                start: Some(r.first_date.to_string()),
                end: Some(r.last_date.to_string()),
                observations: r.observations,
                missing: r.missing,
                period_days: p.period_days,
            }
        }
    };
    let t =
        an::trade_stats(pnls).map_err(|e| OpError::internal(format!("trade statistics: {e}")))?;
    let tr = &t.reasons;
    perf.win_rate = put(
        &mut reasons,
        tr,
        "win_rate",
        "performance.win_rate",
        t.win_rate,
    );
    perf.profit_factor = put(
        &mut reasons,
        tr,
        "profit_factor",
        "performance.profit_factor",
        t.profit_factor,
    );
    let trades = TradesOut {
        total: t.total,
        winning: t.winning,
        losing: t.losing,
        breakeven: t.breakeven,
        average_win: put(
            &mut reasons,
            tr,
            "average_win",
            "trades.average_win",
            t.average_win,
        ),
        average_loss: put(
            &mut reasons,
            tr,
            "average_loss",
            "trades.average_loss",
            t.average_loss,
        ),
        largest_win: put(
            &mut reasons,
            tr,
            "largest_win",
            "trades.largest_win",
            t.largest_win,
        ),
        largest_loss: put(
            &mut reasons,
            tr,
            "largest_loss",
            "trades.largest_loss",
            t.largest_loss,
        ),
    };
    Ok(ReportOutput {
        strategy: strategy.to_owned(),
        period,
        performance: perf,
        risk,
        trades,
        benchmark: bench_out,
        reasons,
        periods_per_year: p.periods_per_year,
        risk_free_rate: p.risk_free_rate,
        compute: ComputeOut {
            device: "cpu",
            gpu_requested: p.use_gpu,
            note: if p.use_gpu {
                "a GPU was asked for, but quantbox has no GPU code path for reports: computed on the CPU (a full report of ten years of daily returns takes well under a millisecond)".into()
            } else {
                "computed on the CPU".into()
            },
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        },
    })
}

/// The strategy name rule.
pub(crate) fn check_strategy(name: &str) -> Result<(), OpError> {
    if crate::sandboxes::is_short_name(name) {
        Ok(())
    } else {
        Err(OpError::invalid(
            "strategy",
            format!("must be 1 to 64 characters of [A-Za-z0-9._-], got {name:?}"),
        ))
    }
}

impl Ops {
    /// Strategies with what is stored of each.
    pub async fn strategies(&self) -> Result<Vec<quantbox_trading::StrategyInfo>, OpError> {
        let store = self.trading()?.clone();
        tokio::task::spawn_blocking(move || store.strategies().map_err(OpError::from))
            .await
            .map_err(|e| OpError::internal(format!("listing strategies: {e}")))?
    }

    /// Symbols with daily prices.
    pub async fn symbols(&self) -> Result<Vec<quantbox_trading::SymbolInfo>, OpError> {
        let store = self.trading()?.clone();
        tokio::task::spawn_blocking(move || store.symbols().map_err(OpError::from))
            .await
            .map_err(|e| OpError::internal(format!("listing symbols: {e}")))?
    }

    pub(crate) fn trading(&self) -> Result<&std::sync::Arc<dyn TradingStore>, OpError> {
        self.trading.as_ref().ok_or_else(|| {
            OpError::new(
                ErrorCode::Unavailable,
                "trading data is not available in this process (no store)",
            )
        })
    }

    pub async fn performance_report(&self, input: ReportInput) -> Result<ReportOutput, OpError> {
        Ok(self.report_with_series(input).await?.report)
    }

    /// The report and the returns it was computed from (for charts).
    pub async fn report_with_series(
        &self,
        input: ReportInput,
    ) -> Result<ReportWithSeries, OpError> {
        let started = Instant::now();
        check_strategy(&input.strategy)?;
        let params = ReportParams {
            period_days: input.period_days,
            periods_per_year: input.periods_per_year,
            risk_free_rate: input.risk_free_rate,
            use_gpu: input.use_gpu,
        };
        check_params(&params)?;
        let symbol = input.benchmark.clone();
        if let Some(s) = &symbol
            && s.trim().is_empty()
        {
            return Err(OpError::invalid(
                "benchmark",
                "must name a symbol, got an empty string",
            ));
        }
        let store = self.trading()?.clone();
        let strategy = input.strategy.clone();
        let include = input.include_benchmark || symbol.is_some();
        tokio::task::spawn_blocking(move || {
            store.strategy(&strategy)?.ok_or_else(|| {
                OpError::not_found(format!(
                    "no strategy named `{strategy}`; import its returns with `quantbox import returns FILE --strategy {strategy}` (POST /api/v1/import/returns), or run an agent"
                ))
            })?;
            let returns = match store.series(&strategy)? {
                Some((kind, points)) => daily_returns(kind, &points)?,
                None => None,
            };
            let returns = last_days(returns, params.period_days);
            let bench = if include {
                let sym = symbol.unwrap_or_else(|| DEFAULT_BENCHMARK.to_owned());
                let known = store.symbols()?;
                if !known.iter().any(|s| s.symbol == sym) {
                    return Err(OpError::invalid(
                        "benchmark",
                        format!(
                            "unknown symbol `{sym}`; the known ones are {} (import more with `quantbox import prices`)",
                            known.iter().map(|s| s.symbol.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                // From a little before the first return: its day's benchmark return needs
                // the close before it.
                let (from, to) = match &returns {
                    None => (Day(i32::MIN), Day(i32::MAX)),
                    Some(r) => (Day(day_of(r.first_date()).0 - 10), day_of(r.last_date())),
                };
                let bars = store.bars(&sym, from, to)?;
                Some((sym, bar_returns(&bars)?))
            } else {
                None
            };
            let pnls: Vec<f64> = store.trades(&strategy)?.iter().map(|t| t.pnl).collect();
            let report = build_report(
                &strategy,
                returns.as_ref(),
                bench.as_ref().map(|(s, r)| (s.as_str(), r.as_ref())),
                &pnls,
                &params,
                started,
            )?;
            Ok(ReportWithSeries {
                report,
                returns,
                benchmark: bench,
            })
        })
        .await
        .map_err(|e| OpError::internal(format!("the report failed: {e}")))?
    }
}

/// The report of a returns file without a server (`quantbox report --returns FILE`):
/// the same figures `performance_report` gives for the same data. `benchmark` is a
/// Yahoo-style prices file (its adjusted close) or a returns/equity file.
pub fn offline_report(
    name: &str,
    returns_csv: &str,
    benchmark: Option<(&str, &str)>,
    params: &ReportParams,
) -> Result<ReportWithSeries, OpError> {
    use quantbox_trading::import;
    let started = Instant::now();
    check_params(params)?;
    let file_err = |what: &str, e: import::ImportError| {
        OpError::invalid(what, format!("{e}; nothing was computed"))
    };
    let (kind, points) =
        import::parse_returns(returns_csv, &[]).map_err(|e| file_err("returns", e))?;
    let returns = last_days(daily_returns(kind, &points)?, params.period_days);
    let bench = match benchmark {
        Some((symbol, text)) => {
            let r = match import::parse_prices(text, &[]) {
                Ok(bars) => bar_returns(&bars)?,
                Err(price_err) => match import::parse_returns(text, &[]) {
                    Ok((k, p)) => daily_returns(k, &p)?,
                    Err(_) => return Err(file_err("benchmark", price_err)),
                },
            };
            Some((symbol.to_owned(), r))
        }
        None => None,
    };
    let report = build_report(
        name,
        returns.as_ref(),
        bench.as_ref().map(|(s, r)| (s.as_str(), r.as_ref())),
        &[],
        params,
        started,
    )?;
    Ok(ReportWithSeries {
        report,
        returns,
        benchmark: bench,
    })
}
