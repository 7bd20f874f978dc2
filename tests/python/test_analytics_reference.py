#!/usr/bin/env python3
"""quantbox's performance report against empyrical-reloaded and quantstats.

Run by crates/quantbox/tests/analytics_reference.rs with the libraries pinned in
tests/python/requirements-analytics.txt:

    test_analytics_reference.py --returns aapl.csv --benchmark spx.csv --ours ours.json

`--returns` and `--benchmark` are `date,return` files (simple daily returns, full
precision); `--ours` is quantbox's `performance_report` output for them (no period cut,
252 periods a year, risk-free 0). Every figure of the report that a library defines as
shared/spec/metrics.md does is recomputed with that library and must agree to 1e-9
(|ours - ref| <= 1e-9 * max(1, |ref|)); every figure a library defines differently is
still shown, with the library's value and why it differs (citing metrics.md), and is not
compared. Prints one row per (metric, library function), then quantstats' full-report
time as `quantstats_full_report_seconds=<median>` on a line of its own. Exits 1 on any
disagreement, 2 on bad input.
"""

import argparse
import json
import math
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd
import scipy.stats

import empyrical as ep
import quantstats as qs

TOL = 1e-9
P = 252
SQRT_P = math.sqrt(P)


def load(path):
    """A `date,return` file as a float Series on a DatetimeIndex, read bit for bit."""
    # Read as text and parsed by Python's float(), which is correctly rounded: the values
    # are exactly the doubles quantbox computed (pandas' own parser may differ in the last
    # bit, and its round-trip option is deprecated).
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(df.columns) != ["date", "return"]:
        sys.exit(f"{path}: expected the columns date,return, got {list(df.columns)}")
    s = pd.Series(
        np.array([float(v) for v in df["return"]], dtype="float64"),
        index=pd.DatetimeIndex(pd.to_datetime(df["date"], format="%Y-%m-%d")),
        name="return",
    )
    if not s.index.is_monotonic_increasing or s.index.has_duplicates:
        sys.exit(f"{path}: dates must be increasing and unique")
    return s


def fnum(x):
    if x is None:
        return "null"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.17g}"


class Table:
    def __init__(self):
        self.rows = []
        self.failures = []

    def compare(self, metric, ours, ref_label, ref):
        """A figure both define the same way: must agree to TOL."""
        ref = None if ref is None else float(ref)
        ours_f = None if ours is None else float(ours)
        if ours_f is None or ref is None or not (math.isfinite(ours_f) and math.isfinite(ref)):
            same_undefined = (ours_f is None or math.isnan(ours_f)) and (
                ref is None or math.isnan(ref)
            )
            diff = None
            ok = same_undefined
            verdict = "agrees (both undefined)" if ok else "MISMATCH: one side is not finite"
        else:
            diff = abs(ours_f - ref)
            ok = diff <= TOL * max(1.0, abs(ref))
            verdict = "agrees" if ok else f"MISMATCH: beyond {TOL:g} * max(1, |ref|)"
        self.rows.append((metric, fnum(ours), ref_label, fnum(ref), fnum(diff), verdict))
        if not ok:
            self.failures.append((metric, ours, ref_label, ref, diff))

    def exact(self, metric, ours, ref_label, ref):
        """A count or a date: must be equal."""
        ok = ours == ref
        self.rows.append(
            (metric, str(ours), ref_label, str(ref), "-", "agrees" if ok else "MISMATCH")
        )
        if not ok:
            self.failures.append((metric, ours, ref_label, ref, None))

    def differs(self, metric, ours, ref_label, ref, why):
        """A figure the library defines otherwise: shown, not compared."""
        diff = None
        if ours is not None and ref is not None:
            o, r = float(ours), float(ref)
            if math.isfinite(o) and math.isfinite(r):
                diff = abs(o - r)
        self.rows.append(
            (metric, fnum(ours), ref_label, fnum(ref), fnum(diff), f"different definition: {why}")
        )

    def print(self):
        head = ("metric", "ours", "reference (library.function)", "reference value", "abs diff", "verdict")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(5)]

        def line(r):
            return " | ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + " | " + r[5]

        print(line(head))
        print("-+-".join("-" * w for w in widths) + "-+-" + "-" * 20)
        for r in self.rows:
            print(line(r))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--returns", required=True)
    ap.add_argument("--benchmark", required=True)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--timing-runs", type=int, default=5)
    args = ap.parse_args()
    # quantstats and pandas warn about deprecations and chained assignment inside the
    # libraries; none of it is about this data.
    warnings.simplefilter("ignore")

    r = load(args.returns)
    b_all = load(args.benchmark)
    with open(args.ours) as f:
        ours = json.load(f)
    perf, risk, bench, period = ours["performance"], ours["risk"], ours["benchmark"], ours["period"]
    if ours["periods_per_year"] != P or ours["risk_free_rate"] != 0:
        sys.exit(f"{args.ours}: expected periods_per_year {P} and risk_free_rate 0")
    if r.isna().any() or b_all.isna().any():
        sys.exit("the inputs have missing returns; this check assumes none")

    # Dates both series have (metrics.md: beta, alpha, correlation, tracking error and
    # information ratio are computed on them). Passing quantstats two series on the same
    # index also keeps its _prepare_benchmark from resampling the benchmark (it
    # reindexes through prices and sets the first day's return to 0 otherwise).
    both = pd.concat({"r": r, "b": b_all}, axis=1, join="inner")
    rc, bc = both["r"], both["b"]
    # The benchmark's own total return is over the strategy's first to last date.
    b_span = b_all[(b_all.index >= r.index[0]) & (b_all.index <= r.index[-1])]

    t = Table()

    # ---- the period
    t.exact("period.observations", period["observations"], "len(returns)", len(r))
    t.exact("period.start", period["start"], "returns.index[0]", r.index[0].strftime("%Y-%m-%d"))
    t.exact("period.end", period["end"], "returns.index[-1]", r.index[-1].strftime("%Y-%m-%d"))

    # ---- performance
    tr = perf["total_return"]
    t.compare("performance.total_return", tr, "empyrical.cum_returns_final", ep.cum_returns_final(r))
    t.compare("performance.total_return", tr, "quantstats.stats.comp", qs.stats.comp(r))

    ar = perf["annualized_return"]
    t.compare("performance.annualized_return", ar, "empyrical.annual_return(annualization=252)",
              ep.annual_return(r, annualization=P))
    # quantstats 0.0.86's cagr counts years as observations / periods (its docstring: "using
    # trading periods"), as metrics.md does; older releases used calendar days.
    t.compare("performance.annualized_return", ar, "quantstats.stats.cagr(periods=252)",
              qs.stats.cagr(r, periods=P))

    sh = perf["sharpe_ratio"]
    t.compare("performance.sharpe_ratio", sh, "empyrical.sharpe_ratio(annualization=252)",
              ep.sharpe_ratio(r, risk_free=0.0, annualization=P))
    t.compare("performance.sharpe_ratio", sh, "quantstats.stats.sharpe(periods=252)",
              qs.stats.sharpe(r, rf=0.0, periods=P))

    # Downside deviation over ALL observations (metrics.md): empyrical's downside_risk is
    # sqrt(nanmean(min(r - MAR, 0)^2)) and quantstats' sortino divides the sum of squared
    # negative returns by returns.count(); both are that definition.
    so = perf["sortino_ratio"]
    t.compare("performance.sortino_ratio", so, "empyrical.sortino_ratio(annualization=252)",
              ep.sortino_ratio(r, required_return=0.0, annualization=P))
    t.compare("performance.sortino_ratio", so, "quantstats.stats.sortino(periods=252)",
              qs.stats.sortino(r, rf=0.0, periods=P))
    t.differs("performance.sortino_ratio", so, "quantstats.stats.adjusted_sortino",
              qs.stats.adjusted_sortino(r, rf=0.0, periods=P),
              "Jack Schwager's version, Sortino / sqrt(2) so it reads like a Sharpe; metrics.md's Sortino is mean(r - MAR) / downside deviation * sqrt(P)")

    # Max drawdown anchored at 1.0 before the first return (metrics.md): empyrical's
    # drawdown_series starts its wealth at 100 before the first return, quantstats adds a
    # phantom baseline of 1.0 the day before.
    md = perf["max_drawdown"]
    t.compare("performance.max_drawdown", md, "empyrical.max_drawdown", ep.max_drawdown(r))
    t.compare("performance.max_drawdown", md, "quantstats.stats.max_drawdown", qs.stats.max_drawdown(r))

    cal = perf["calmar_ratio"]
    t.compare("performance.calmar_ratio", cal, "empyrical.calmar_ratio(annualization=252)",
              ep.calmar_ratio(r, annualization=P))
    t.compare("performance.calmar_ratio", cal, "quantstats.stats.calmar(periods=252)",
              qs.stats.calmar(r, periods=P))

    dd = qs.stats.drawdown_details(qs.stats.to_drawdown_series(r))
    # quantstats' drawdown episodes run from the first day under water to the last one;
    # measured as metrics.md does, each runs from the day before (the peak; the anchor
    # before the first return is dated at the first return, as quantbox dates it for a
    # returns file) to the day after (the recovery), or to the last date if it is still
    # under water.
    idx = r.index

    def peak_to_recovery(start, end):
        i, j = idx.get_loc(pd.Timestamp(start)), idx.get_loc(pd.Timestamp(end))
        peak = idx[i - 1] if i > 0 else idx[0]
        recovery = idx[j + 1] if j + 1 < len(idx) else idx[-1]
        return (recovery - peak).days

    t.exact("performance.max_drawdown_duration_days", perf["max_drawdown_duration_days"],
            "quantstats drawdown_details episodes, peak to recovery",
            max((peak_to_recovery(s, e) for s, e in zip(dd["start"], dd["end"])), default=0))
    t.differs("performance.max_drawdown_duration_days", perf["max_drawdown_duration_days"],
              "quantstats drawdown_details(...)['days'].max()", int(dd["days"].max()),
              "quantstats counts from the first day under water to the last one, inclusive; metrics.md counts calendar days from the peak to the recovery (or to the end); empyrical has no duration")

    t.differs("performance.win_rate", perf["win_rate"], "quantstats.stats.win_rate",
              qs.stats.win_rate(r),
              "quantstats counts winning periods (days) among non-zero ones; metrics.md's win rate is over closed round trips, and a returns file has none (ours is null)")
    t.differs("performance.profit_factor", perf["profit_factor"], "quantstats.stats.profit_factor",
              qs.stats.profit_factor(r),
              "quantstats sums positive / negative period returns; metrics.md's profit factor is over closed trades' P&L (none here: ours is null)")

    # ---- risk
    vol = risk["volatility"]
    t.compare("risk.volatility", vol, "empyrical.annual_volatility(annualization=252)",
              ep.annual_volatility(r, annualization=P))
    t.compare("risk.volatility", vol, "quantstats.stats.volatility(periods=252)",
              qs.stats.volatility(r, periods=P))

    var = risk["var_95"]
    t.compare("risk.var_95", var, "empyrical.value_at_risk(cutoff=0.05)", ep.value_at_risk(r, cutoff=0.05))
    t.compare("risk.var_95", var, "numpy.percentile(r, 5)", np.percentile(r.to_numpy(), 5))
    t.differs("risk.var_95", var, "quantstats.stats.var", qs.stats.var(r),
              "parametric (variance-covariance): norm.ppf(0.05, mean, std); metrics.md's VaR is historical, the 5th percentile with linear interpolation")

    cv = risk["cvar_95"]
    t.compare("risk.cvar_95", cv, "empyrical.conditional_value_at_risk(cutoff=0.05)",
              ep.conditional_value_at_risk(r, cutoff=0.05))
    # The mean of the returns at or below the linearly interpolated 5 % quantile: the same
    # floor((n - 1) * 0.05) + 1 smallest returns unless the quantile falls exactly on a
    # tied order statistic (checked below before comparing).
    q = r.quantile(0.05)
    k = math.floor((len(r) - 1) * 0.05) + 1
    if int((r <= q).sum()) == k:
        t.compare("risk.cvar_95", cv, "quantstats.stats.cvar(method='historical')",
                  qs.stats.cvar(r, method="historical"))
    else:
        t.differs("risk.cvar_95", cv, "quantstats.stats.cvar(method='historical')",
                  qs.stats.cvar(r, method="historical"),
                  f"averages the {int((r <= q).sum())} returns <= the 5 % quantile (ties included); metrics.md averages exactly floor((n-1)*0.05)+1 = {k}")
    t.differs("risk.cvar_95", cv, "quantstats.stats.cvar", qs.stats.cvar(r),
              "default method is parametric: the normal expected shortfall mean - std * pdf(ppf(0.05)) / 0.05; metrics.md's CVaR is the mean of the floor((n-1)*0.05)+1 smallest returns")

    sk = risk["skewness"]
    t.compare("risk.skewness", sk, "pandas.Series.skew", r.skew())
    t.compare("risk.skewness", sk, "quantstats.stats.skew", qs.stats.skew(r))
    t.differs("risk.skewness", sk, "scipy.stats.skew (empyrical's SIMPLE_STAT_FUNCS)",
              scipy.stats.skew(r.to_numpy()),
              "scipy's default bias=True is the population g1; metrics.md's skewness is the bias-corrected G1 (pandas .skew())")

    ku = risk["kurtosis"]
    t.compare("risk.kurtosis", ku, "pandas.Series.kurt", r.kurt())
    t.compare("risk.kurtosis", ku, "quantstats.stats.kurtosis", qs.stats.kurtosis(r))
    t.differs("risk.kurtosis", ku, "scipy.stats.kurtosis (empyrical's SIMPLE_STAT_FUNCS)",
              scipy.stats.kurtosis(r.to_numpy()),
              "scipy's default bias=True is the population excess g2; metrics.md's kurtosis is the bias-corrected excess G2 (pandas .kurt())")

    # ---- benchmark
    if bench is None:
        sys.exit(f"{args.ours}: no benchmark section")
    t.exact("benchmark.symbol", bench["symbol"], "--benchmark", "SPX")
    t.exact("benchmark.common_dates", bench["common_dates"], "len(inner join on dates)", len(both))
    btr = bench["total_return"]
    t.compare("benchmark.total_return", btr, "empyrical.cum_returns_final(SPX in the period)",
              ep.cum_returns_final(b_span))
    t.compare("benchmark.total_return", btr, "quantstats.stats.comp(SPX in the period)",
              qs.stats.comp(b_span))

    alpha, beta = ep.alpha_beta(rc, bc, risk_free=0.0, annualization=P)
    greeks = qs.stats.greeks(rc, bc, periods=P)
    t.compare("benchmark.beta", bench["beta"], "empyrical.alpha_beta(...)[1]", beta)
    t.compare("benchmark.beta", bench["beta"], "quantstats.stats.greeks()['beta']", greeks["beta"])
    # empyrical's alpha is (1 + nanmean(r - rf - beta * (b - rf)))^252 - 1: metrics.md's.
    t.compare("benchmark.alpha", bench["alpha"], "empyrical.alpha_beta(annualization=252)[0]", alpha)
    t.differs("benchmark.alpha", bench["alpha"], "quantstats.stats.greeks()['alpha']", greeks["alpha"],
              "simple annualisation: mean(r - beta * b) * 252; metrics.md's alpha is compounded, (1 + mean(r - rf_p - beta * (b - rf_p)))^P - 1")

    co = bench["correlation"]
    t.compare("benchmark.correlation", co, "pandas.Series.corr (Pearson)", rc.corr(bc))
    t.compare("benchmark.correlation", co, "numpy.corrcoef", np.corrcoef(rc.to_numpy(), bc.to_numpy())[0, 1])
    t.compare("benchmark.correlation ** 2", None if co is None else co * co,
              "quantstats.stats.r_squared", qs.stats.r_squared(rc, bc))

    active = rc - bc
    te = bench["tracking_error"]
    t.compare("benchmark.tracking_error", te, "pandas (r - b).std(ddof=1) * sqrt(252)",
              active.std(ddof=1) * SQRT_P)
    t.compare("benchmark.tracking_error", te, "empyrical.annual_volatility(r - b)",
              ep.annual_volatility(active, annualization=P))

    ir = bench["information_ratio"]
    ir_pp = None if ir is None else ir / SQRT_P
    t.compare("benchmark.information_ratio / sqrt(252)", ir_pp, "empyrical.excess_sharpe", ep.excess_sharpe(rc, bc))
    t.compare("benchmark.information_ratio / sqrt(252)", ir_pp, "quantstats.stats.information_ratio",
              qs.stats.information_ratio(rc, bc))

    t.print()
    compared = sum(1 for row in t.rows if not row[5].startswith("different"))
    print(f"\n{compared} comparisons, {len(t.failures)} disagreements; "
          f"{len(t.rows) - compared} rows with a different definition (not compared)")
    print(f"empyrical-reloaded {ep.__version__}, quantstats {qs.__version__}, pandas {pd.__version__}, "
          f"numpy {np.__version__}; {len(r)} AAPL returns {r.index[0].date()}..{r.index[-1].date()}, "
          f"{len(both)} dates in common with SPX")

    # ---- quantstats' full metrics report on the same data, timed (no plots, no network:
    # the benchmark is a Series, not a ticker). Its returns cache is cleared before each
    # run so every run does the whole computation.
    times = []
    for _ in range(max(1, args.timing_runs)):
        qs.utils._PREPARE_RETURNS_CACHE.clear()
        t0 = time.perf_counter()
        full = qs.reports.metrics(r, benchmark=b_all, rf=0.0, display=False, mode="full",
                                  periods_per_year=P)
        times.append(time.perf_counter() - t0)
    if full is None or len(full) == 0:
        sys.exit("quantstats.reports.metrics returned nothing")
    print(f"quantstats.reports.metrics(mode='full'): {len(full)} rows; runs (s): "
          + ", ".join(f"{x:.3f}" for x in times))
    print(f"quantstats_full_report_seconds={statistics.median(times):.6f}")

    if t.failures:
        print("\nDISAGREEMENTS (quantbox vs a library that defines the figure as metrics.md does):")
        for metric, o, label, ref, diff in t.failures:
            print(f"  {metric}: ours {fnum(o)}, {label} {fnum(ref)}, diff {fnum(diff)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
