//! A self-contained HTML tearsheet for a trading strategy.
//!
//! [`render`] turns a daily return series (and optionally a benchmark) into one HTML page
//! whose charts are inline SVG drawn with `plotters` (SVG backend only, text emitted as SVG
//! `<text>` elements, so no font rasterising and no system font libraries). The page has no
//! JavaScript, no network references and no external CSS or fonts: it renders offline in any
//! browser and prints cleanly.
//!
//! The page holds, in order:
//! 1. the summary table (rows formatted by the caller, grouped by section) and notes;
//! 2. the cumulative return (wealth anchored at 1.0) against the benchmark, if any;
//! 3. the drawdown (underwater) chart;
//! 4. the monthly returns heatmap (years × Jan–Dec, plus a yearly total column);
//! 5. the distribution of daily returns with the mean and the 5 % historical VaR;
//! 6. the rolling Sharpe ratio.
//!
//! Rendering is pure: no I/O; the caller writes the returned string.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Default window of the rolling Sharpe chart, in observations.
pub const DEFAULT_ROLLING_WINDOW: usize = 126;
/// Most points drawn for one line series; longer series are min/max decimated.
pub const MAX_POINTS_PER_SERIES: usize = 1500;
/// Number of bins of the daily returns histogram.
const HISTOGRAM_BINS: usize = 50;
/// Width and height of each chart, in SVG user units (CSS scales them down to fit).
const CHART_W: u32 = 1000;
const CHART_H: u32 = 360;
/// Most date ticks on a time axis.
const MAX_DATE_TICKS: usize = 10;
const Y_TICKS: usize = 8;
const FONT: &str = "sans-serif";
/// Sizes passed to plotters: the SVG backend writes `font-size = size / 1.24`.
const CAPTION_SIZE: f64 = 22.0;
const LABEL_SIZE: f64 = 15.0;
const NOT_ENOUGH_DATA: &str = "not enough data";

const STRATEGY_COLOR: RGBColor = RGBColor(31, 119, 180);
const BENCHMARK_COLOR: RGBColor = RGBColor(255, 127, 14);
const LOSS_COLOR: RGBColor = RGBColor(200, 40, 40);
const AXIS_GREY: RGBColor = RGBColor(90, 90, 90);

/// What a tearsheet is drawn from.
pub struct TearsheetInput<'a> {
    pub strategy: &'a str,
    /// When the report was generated (RFC 3339), shown as given.
    pub generated_at: &'a str,
    /// Daily simple returns, ascending unique days (days since 1970-01-01). NaN allowed:
    /// drawn as a 0 return, skipped in the statistics.
    pub returns: &'a [(i32, f64)],
    /// The benchmark's name and daily returns on its own days (may be None).
    pub benchmark: Option<(&'a str, &'a [(i32, f64)])>,
    pub periods_per_year: f64,
    /// Summary table rows already formatted by the caller: (section, label, value).
    pub summary: &'a [(&'a str, &'a str, String)],
    /// Notes shown under the summary (e.g. why a figure is null).
    pub notes: &'a [String],
}

/// Knobs of [`render_with`]; [`render`] uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TearsheetOptions {
    /// Observations per rolling Sharpe window (at least 2).
    pub rolling_window: usize,
}

impl Default for TearsheetOptions {
    fn default() -> Self {
        Self {
            rolling_window: DEFAULT_ROLLING_WINDOW,
        }
    }
}

/// Why a tearsheet could not be rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum TearsheetError {
    /// The strategy has no returns at all.
    EmptyReturns,
    /// Days of a series are not strictly ascending.
    UnsortedDays {
        series: String,
        index: usize,
        previous: i32,
        day: i32,
    },
    /// `periods_per_year` is not a finite positive number.
    InvalidPeriodsPerYear(f64),
    /// The rolling window is below 2 observations.
    InvalidRollingWindow(usize),
    /// A chart failed to draw.
    Chart {
        chart: &'static str,
        message: String,
    },
}

impl fmt::Display for TearsheetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyReturns => {
                write!(f, "cannot render a tearsheet: the return series is empty")
            }
            Self::UnsortedDays {
                series,
                index,
                previous,
                day,
            } => write!(
                f,
                "the {series} series is not in strictly ascending day order: \
                 entry {index} has day {day} after day {previous}"
            ),
            Self::InvalidPeriodsPerYear(p) => {
                write!(f, "periods_per_year must be finite and positive, got {p}")
            }
            Self::InvalidRollingWindow(w) => {
                write!(
                    f,
                    "the rolling window must be at least 2 observations, got {w}"
                )
            }
            Self::Chart { chart, message } => write!(f, "drawing the {chart} chart: {message}"),
        }
    }
}

impl std::error::Error for TearsheetError {}

/// Renders the tearsheet with the default options.
pub fn render(input: &TearsheetInput) -> Result<String, TearsheetError> {
    render_with(input, &TearsheetOptions::default())
}

/// Renders the tearsheet: one self-contained HTML page.
pub fn render_with(
    input: &TearsheetInput,
    options: &TearsheetOptions,
) -> Result<String, TearsheetError> {
    validate(input, options)?;
    let data = Prepared::new(input);

    let summary = summary_html(input.summary, input.notes);
    let equity = equity_chart(&data)?;
    let drawdown = drawdown_chart(&data)?;
    let heatmap = heatmap_svg(input.returns);
    let histogram = histogram_chart(&data)?;
    let rolling = rolling_sharpe_chart(&data, input.periods_per_year, options.rolling_window)?;

    let strategy = esc(input.strategy);
    let mut html = String::with_capacity(
        equity.len() + drawdown.len() + heatmap.len() + histogram.len() + rolling.len() + 8192,
    );
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(html, "<title>Tearsheet: {strategy}</title>");
    html.push_str(CSS);
    html.push_str("</head>\n<body>\n<header>\n");
    let _ = writeln!(html, "<h1>Tearsheet: {strategy}</h1>");
    html.push_str("<p class=\"meta\">");
    html.push_str(&meta_line(input, &data));
    html.push_str("</p>\n</header>\n");
    html.push_str(&summary);
    for (id, svg) in [
        ("equity", &equity),
        ("drawdown", &drawdown),
        ("monthly", &heatmap),
        ("distribution", &histogram),
        ("rolling-sharpe", &rolling),
    ] {
        let _ = writeln!(html, "<figure id=\"fig-{id}\">\n{svg}</figure>");
    }
    html.push_str("<footer>Generated by quantbox.</footer>\n</body>\n</html>\n");
    Ok(html)
}

const CSS: &str = "<style>
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif;
  color: #222; background: #fff; max-width: 1040px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.15em; margin: 24px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 0.9em; margin: 0 0 8px; }
.summary-grid { display: flex; flex-wrap: wrap; gap: 12px 32px; align-items: flex-start; }
table.summary { border-collapse: collapse; font-size: 0.9em; min-width: 280px; }
table.summary th { text-align: left; background: #eef1f5; padding: 4px 8px; }
table.summary td { padding: 3px 8px; border-bottom: 1px solid #eee; }
table.summary td.value { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.notes { color: #555; font-size: 0.85em; margin: 12px 0 0; padding-left: 20px; }
figure { margin: 20px 0 0; }
svg { display: block; max-width: 100%; height: auto; }
footer { color: #888; font-size: 0.8em; margin: 24px 0; }
@page { size: A4; margin: 12mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; }
  figure, table.summary { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; page-break-after: avoid; }
  footer { display: none; }
}
</style>
";

// ---------------------------------------------------------------------------------------------
// Input checks and derived series

fn validate(input: &TearsheetInput, options: &TearsheetOptions) -> Result<(), TearsheetError> {
    if input.returns.is_empty() {
        return Err(TearsheetError::EmptyReturns);
    }
    if !(input.periods_per_year.is_finite() && input.periods_per_year > 0.0) {
        return Err(TearsheetError::InvalidPeriodsPerYear(
            input.periods_per_year,
        ));
    }
    if options.rolling_window < 2 {
        return Err(TearsheetError::InvalidRollingWindow(options.rolling_window));
    }
    check_ascending("strategy", input.returns)?;
    if let Some((_, bench)) = input.benchmark {
        check_ascending("benchmark", bench)?;
    }
    Ok(())
}

fn check_ascending(series: &str, values: &[(i32, f64)]) -> Result<(), TearsheetError> {
    for (index, pair) in values.windows(2).enumerate() {
        if pair[1].0 <= pair[0].0 {
            return Err(TearsheetError::UnsortedDays {
                series: series.to_string(),
                index: index + 1,
                previous: pair[0].0,
                day: pair[1].0,
            });
        }
    }
    Ok(())
}

/// Series derived once from the input.
struct Prepared<'a> {
    strategy: &'a str,
    first_day: i32,
    last_day: i32,
    observations: usize,
    /// Finite returns only (the statistics' input).
    finite: Vec<(i32, f64)>,
    /// Wealth, anchored at 1.0 the day before the first return; non-finite returns count as 0.
    wealth: Vec<(i32, f64)>,
    /// The benchmark's name and wealth over the strategy's date range, with the same anchor.
    benchmark: Option<(&'a str, Vec<(i32, f64)>)>,
}

impl<'a> Prepared<'a> {
    fn new(input: &TearsheetInput<'a>) -> Self {
        let first_day = input.returns[0].0;
        let last_day = input.returns[input.returns.len() - 1].0;
        let finite = input
            .returns
            .iter()
            .copied()
            .filter(|(_, r)| r.is_finite())
            .collect();
        let wealth = compound(first_day, input.returns.iter().copied());
        let benchmark = input.benchmark.map(|(name, bench)| {
            let in_range = bench
                .iter()
                .copied()
                .filter(|&(d, _)| d >= first_day && d <= last_day);
            (name, compound(first_day, in_range))
        });
        Self {
            strategy: input.strategy,
            first_day,
            last_day,
            observations: input.returns.len(),
            finite,
            wealth,
            benchmark,
        }
    }
}

/// Compounds returns into wealth, with an anchor point of 1.0 the day before `first_day`.
fn compound(first_day: i32, returns: impl Iterator<Item = (i32, f64)>) -> Vec<(i32, f64)> {
    let mut wealth = 1.0;
    let mut out = vec![(first_day.saturating_sub(1), 1.0)];
    for (day, r) in returns {
        if r.is_finite() {
            wealth *= 1.0 + r;
        }
        out.push((day, wealth));
    }
    out
}

/// Drawdown in % of the running peak (the 1.0 anchor included).
fn drawdown_pct(wealth: &[(i32, f64)]) -> Vec<(i32, f64)> {
    let mut peak = f64::NEG_INFINITY;
    wealth
        .iter()
        .map(|&(day, w)| {
            peak = peak.max(w);
            let dd = if peak > 0.0 {
                (w / peak - 1.0) * 100.0
            } else {
                0.0
            };
            (day, if dd.is_finite() { dd.min(0.0) } else { 0.0 })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Dates

/// Days since 1970-01-01 to a proleptic Gregorian (year, month 1..=12, day 1..=31).
pub fn civil_from_days(days: i32) -> (i32, u32, u32) {
    // Howard Hinnant's algorithm, in i64 so no intermediate overflows.
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u32, day as u32)
}

/// A proleptic Gregorian date to days since 1970-01-01 (i64: may fall outside i32).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn month_index(days: i32) -> i64 {
    let (y, m, _) = civil_from_days(days);
    i64::from(y) * 12 + i64::from(m) - 1
}

fn month_start(index: i64) -> i64 {
    days_from_civil(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
}

fn fmt_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TickFormat {
    Year,
    Month,
    Day,
}

/// A time axis over days, with ticks on month (or year) starts, labelled YYYY-MM or YYYY.
#[derive(Debug, Clone)]
struct DayAxis {
    start: i32,
    end: i32,
    ticks: Vec<i32>,
    format: TickFormat,
}

impl DayAxis {
    fn new(start: i32, end: i32, max_ticks: usize) -> Self {
        let end = end.max(start.saturating_add(1));
        let (ticks, format) = date_ticks(start, end, max_ticks.max(2));
        Self {
            start,
            end,
            ticks,
            format,
        }
    }
}

/// Ticks on the first day of months that are a multiple of a "nice" step (1, 2, 3, 6 months,
/// then 1, 2, 5, 10, ... years) so that at most `max` fall in `[start, end]`; spans too short
/// for two month starts fall back to day ticks.
fn date_ticks(start: i32, end: i32, max: usize) -> (Vec<i32>, TickFormat) {
    let (m0, m1) = (month_index(start), month_index(end));
    let mut steps = vec![1i64, 2, 3, 6];
    let mut years = 1i64;
    while years <= 1_000_000 {
        steps.extend([12 * years, 24 * years, 60 * years]);
        years *= 10;
    }
    for step in steps {
        // The first month index at or after m0 that is a multiple of step.
        let first = m0 + (step - m0.rem_euclid(step)) % step;
        if first <= m1 && (m1 - first) / step + 1 > max as i64 {
            continue; // too many: a coarser step
        }
        let ticks: Vec<i32> = (first..=m1)
            .step_by(step as usize)
            .map(month_start)
            .filter(|&d| d >= i64::from(start) && d <= i64::from(end))
            .map(|d| d as i32)
            .collect();
        if ticks.len() < 2 {
            break;
        }
        let format = if step >= 12 {
            TickFormat::Year
        } else {
            TickFormat::Month
        };
        return (ticks, format);
    }
    // Under two month starts in range: ticks on days.
    let (start64, end64) = (i64::from(start), i64::from(end));
    for step in [1i64, 2, 7, 14, 28] {
        if (end64 - start64) / step < max as i64 {
            let first = start64 + (step - start64.rem_euclid(step)) % step;
            let ticks = (first..=end64)
                .step_by(step as usize)
                .map(|d| d as i32)
                .collect();
            return (ticks, TickFormat::Day);
        }
    }
    (vec![start, end], TickFormat::Day)
}

impl Ranged for DayAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = i32;

    fn map(&self, value: &i32, limit: (i32, i32)) -> i32 {
        let span = f64::from(self.end) - f64::from(self.start);
        let frac = (f64::from(*value) - f64::from(self.start)) / span;
        let px = f64::from(limit.0) + frac * (f64::from(limit.1) - f64::from(limit.0));
        px.round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<i32> {
        // Only bold lines (with labels): no light grid on the date axis.
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        let max = hint.max_num_points().max(1);
        if self.ticks.len() <= max {
            return self.ticks.clone();
        }
        let every = self.ticks.len().div_ceil(max);
        self.ticks.iter().copied().step_by(every).collect()
    }

    fn range(&self) -> Range<i32> {
        self.start..self.end
    }
}

impl ValueFormatter<i32> for DayAxis {
    fn format_ext(&self, value: &i32) -> String {
        let (y, m, d) = civil_from_days(*value);
        match self.format {
            TickFormat::Year => format!("{y:04}"),
            TickFormat::Month => format!("{y:04}-{m:02}"),
            TickFormat::Day => format!("{y:04}-{m:02}-{d:02}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// `(lo, hi)` over the finite values, padded by `pad` of the span; never empty or NaN.
fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if !(span.is_finite() && span > 1e-12 * lo.abs().max(hi.abs()).max(1e-12)) {
        let d = (lo.abs() * 0.05).max(0.01);
        return (lo - d, hi + d);
    }
    (lo - span * pad, hi + span * pad)
}

/// Decimal places for ticks of `range` with about `n` labels, from plotters' own key points.
fn tick_decimals(range: (f64, f64), n: usize) -> usize {
    let points = RangedCoordf64::from(range.0..range.1).key_points(n);
    let step = points
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(f64::INFINITY, f64::min);
    if !step.is_finite() || step <= 0.0 {
        return 2;
    }
    (-step.log10().floor()).clamp(0.0, 6.0) as usize
}

/// A number with `decimals` places, never "-0" and never "NaN".
fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// Keeps at most `max` points: in each bucket, its minimum and maximum in time order, so
/// peaks and troughs (the maximum drawdown included) survive.
fn decimate(points: &[(i32, f64)], max: usize) -> Vec<(i32, f64)> {
    if points.len() <= max || max < 4 {
        return points.to_vec();
    }
    let buckets = max / 2;
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(max);
    for chunk in points.chunks(size) {
        let (mut lo, mut hi) = (0, 0);
        for (i, p) in chunk.iter().enumerate() {
            if p.1 < chunk[lo].1 {
                lo = i;
            }
            if p.1 > chunk[hi].1 {
                hi = i;
            }
        }
        let (a, b) = (lo.min(hi), lo.max(hi));
        out.push(chunk[a]);
        if b != a {
            out.push(chunk[b]);
        }
    }
    out
}

/// The `q` quantile with linear interpolation between order statistics (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + (next - sorted[i]) * frac,
        None => sorted[i],
    }
}

// ---------------------------------------------------------------------------------------------
// HTML text

/// Escapes text for HTML element content and attribute values (also valid in SVG).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn meta_line(input: &TearsheetInput, data: &Prepared) -> String {
    let skipped = data.observations - data.finite.len();
    let mut s = format!(
        "{} to {} · {} observation{}",
        fmt_date(data.first_day),
        fmt_date(data.last_day),
        data.observations,
        if data.observations == 1 { "" } else { "s" }
    );
    if skipped > 0 {
        let _ = write!(s, " ({skipped} missing, drawn as 0, skipped in statistics)");
    }
    let _ = write!(s, " · {} periods/year", fmt_num(input.periods_per_year, 0));
    if let Some((name, _)) = input.benchmark {
        let _ = write!(s, " · benchmark: {}", esc(name));
    }
    let _ = write!(s, " · generated {}", esc(input.generated_at));
    s
}

fn summary_html(rows: &[(&str, &str, String)], notes: &[String]) -> String {
    let mut sections: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    for (section, label, value) in rows {
        match sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, items)) => items.push((label, value)),
            None => sections.push((section, vec![(label, value)])),
        }
    }
    let mut html = String::from("<section id=\"summary\">\n<h2>Summary</h2>\n");
    if sections.is_empty() {
        html.push_str("<p class=\"meta\">No summary figures.</p>\n");
    } else {
        html.push_str("<div class=\"summary-grid\">\n");
        for (section, items) in &sections {
            html.push_str("<table class=\"summary\">\n");
            let _ = writeln!(
                html,
                "<thead><tr><th colspan=\"2\">{}</th></tr></thead>\n<tbody>",
                esc(section)
            );
            for (label, value) in items {
                let _ = writeln!(
                    html,
                    "<tr><td>{}</td><td class=\"value\">{}</td></tr>",
                    esc(label),
                    esc(value)
                );
            }
            html.push_str("</tbody>\n</table>\n");
        }
        html.push_str("</div>\n");
    }
    if !notes.is_empty() {
        html.push_str("<ul class=\"notes\">\n");
        for note in notes {
            let _ = writeln!(html, "<li>{}</li>", esc(note));
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</section>\n");
    html
}

// ---------------------------------------------------------------------------------------------
// Charts (plotters, SVG backend)

fn chart_err<E: fmt::Display>(chart: &'static str) -> impl Fn(E) -> TearsheetError {
    move |e| TearsheetError::Chart {
        chart,
        message: e.to_string(),
    }
}

/// Adds an id, a role and a `<title>` to the `<svg>` that plotters wrote.
fn finish_svg(svg: String, id: &str, title: &str) -> String {
    let title = esc(title);
    let Some(rest) = svg.strip_prefix("<svg ") else {
        return svg;
    };
    let Some(close) = rest.find('>') else {
        return svg;
    };
    format!(
        "<svg class=\"chart\" id=\"chart-{id}\" role=\"img\" aria-label=\"{title}\" {}>\n<title>{title}</title>{}",
        &rest[..close],
        &rest[close + 1..]
    )
}

fn caption_font() -> TextStyle<'static> {
    (FONT, CAPTION_SIZE).into_font().color(&BLACK)
}

fn label_font() -> TextStyle<'static> {
    (FONT, LABEL_SIZE).into_font().color(&AXIS_GREY)
}

fn desc_font() -> TextStyle<'static> {
    (FONT, LABEL_SIZE).into_font().color(&BLACK)
}

/// A titled chart that only says why it has nothing to show.
fn placeholder_svg(id: &'static str, title: &str, message: &str) -> Result<String, TearsheetError> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, 140)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err(id))?;
        let area = root.titled(title, caption_font()).map_err(chart_err(id))?;
        let (w, h) = area.dim_in_pixel();
        let style = (FONT, 18.0)
            .into_font()
            .color(&AXIS_GREY)
            .pos(Pos::new(HPos::Center, VPos::Center));
        area.draw_text(message, &style, (w as i32 / 2, h as i32 / 2))
            .map_err(chart_err(id))?;
        root.present().map_err(chart_err(id))?;
    }
    Ok(finish_svg(buf, id, title))
}

type SvgArea<'b> = DrawingArea<SVGBackend<'b>, plotters::coord::Shift>;
type SvgError = DrawingAreaErrorKind<std::io::Error>;

/// Draws the title and, when there are entries, a legend row under it (outside the plot, so
/// it never hides data); returns the area left for the chart.
fn chart_frame<'b>(
    root: &SvgArea<'b>,
    title: &str,
    legend: &[(String, RGBColor)],
) -> Result<SvgArea<'b>, SvgError> {
    const ROW_H: u32 = 24;
    const SWATCH: i32 = 22;
    let area = root.margin(10, 0, 0, 0).titled(title, caption_font())?;
    if legend.is_empty() {
        return Ok(area);
    }
    let (row, rest) = area.split_vertically(ROW_H);
    // SVG text width is unknown here: estimate it generously for a 12 px sans-serif.
    let widths: Vec<i32> = legend
        .iter()
        .map(|(name, _)| SWATCH + 8 + (name.chars().count() as f64 * 7.2).ceil() as i32)
        .collect();
    let gap = 28;
    let total: i32 = widths.iter().sum::<i32>() + gap * (widths.len() as i32 - 1);
    let (w, _) = row.dim_in_pixel();
    let mut x = ((w as i32 - total) / 2).max(8);
    let y = ROW_H as i32 / 2 - 2;
    let style = desc_font().pos(Pos::new(HPos::Left, VPos::Center));
    for ((name, color), width) in legend.iter().zip(&widths) {
        row.draw(&PathElement::new(
            vec![(x, y), (x + SWATCH, y)],
            color.stroke_width(3),
        ))?;
        row.draw_text(name, &style, (x + SWATCH + 8, y))?;
        x += width + gap;
    }
    Ok(rest)
}

/// The common margins and label areas of the plots.
fn plot_builder<'a, 'b>(area: &'a SvgArea<'b>) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(6)
        .margin_left(12)
        .margin_right(28)
        .margin_bottom(8)
        .x_label_area_size(48)
        .y_label_area_size(72);
    builder
}

/// One line of a time chart.
struct Line<'n> {
    name: &'n str,
    points: Vec<(i32, f64)>,
    color: RGBColor,
}

/// What differs between the time charts.
struct TimeChart<'n> {
    id: &'static str,
    title: String,
    y_desc: &'static str,
    lines: Vec<Line<'n>>,
    /// Fill the area between the first line and 0.
    fill_to_zero: bool,
    /// A horizontal reference line (e.g. 0 or 1.0).
    reference: Option<f64>,
    y_suffix: &'static str,
    legend: bool,
    /// The date range of the x axis (the same for all time charts, so they line up).
    x_range: (i32, i32),
}

fn time_chart(spec: TimeChart) -> Result<String, TearsheetError> {
    let id = spec.id;
    let err = chart_err(id);
    let (x_start, x_end) = spec.x_range;
    let values = spec
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(spec.reference)
        .chain(spec.fill_to_zero.then_some(0.0));
    let (mut y_lo, mut y_hi) = padded_range(values, 0.05);
    if y_hi <= y_lo {
        y_lo -= 1.0;
        y_hi += 1.0;
    }
    let decimals = tick_decimals((y_lo, y_hi), Y_TICKS);
    let suffix = spec.y_suffix;
    let y_fmt = move |v: &f64| format!("{}{suffix}", fmt_num(*v, decimals));

    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, CHART_H)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let legend: Vec<(String, RGBColor)> = if spec.legend {
            spec.lines
                .iter()
                .map(|l| (l.name.to_string(), l.color))
                .collect()
        } else {
            Vec::new()
        };
        let plot_area = chart_frame(&root, &spec.title, &legend).map_err(&err)?;
        let mut chart = plot_builder(&plot_area)
            .build_cartesian_2d(DayAxis::new(x_start, x_end, MAX_DATE_TICKS), y_lo..y_hi)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_labels(MAX_DATE_TICKS)
            .y_labels(Y_TICKS)
            .y_label_formatter(&y_fmt)
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.1))
            .axis_style(AXIS_GREY)
            .label_style(label_font())
            .axis_desc_style(desc_font())
            .x_desc("Date")
            .y_desc(spec.y_desc)
            .draw()
            .map_err(&err)?;
        if let Some(level) = spec.reference {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x_start, level), (x_end, level)],
                    BLACK.mix(0.55).stroke_width(1),
                )))
                .map_err(&err)?;
        }
        for (i, line) in spec.lines.iter().enumerate() {
            let color = line.color;
            let points = decimate(&line.points, MAX_POINTS_PER_SERIES);
            if spec.fill_to_zero && i == 0 {
                chart
                    .draw_series(
                        AreaSeries::new(points, 0.0, color.mix(0.35))
                            .border_style(color.stroke_width(1)),
                    )
                    .map_err(&err)?;
            } else {
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    Ok(finish_svg(buf, id, &spec.title))
}

fn equity_chart(data: &Prepared) -> Result<String, TearsheetError> {
    let title = "Cumulative return (wealth, start = 1.0)";
    if data.observations < 2 {
        return placeholder_svg("equity", title, NOT_ENOUGH_DATA);
    }
    let mut lines = vec![Line {
        name: data.strategy,
        points: data.wealth.clone(),
        color: STRATEGY_COLOR,
    }];
    if let Some((name, wealth)) = &data.benchmark
        && wealth.len() >= 2
    {
        lines.push(Line {
            name,
            points: wealth.clone(),
            color: BENCHMARK_COLOR,
        });
    }
    time_chart(TimeChart {
        id: "equity",
        title: title.to_string(),
        y_desc: "Wealth",
        lines,
        fill_to_zero: false,
        reference: Some(1.0),
        y_suffix: "",
        legend: true,
        x_range: (data.first_day - 1, data.last_day),
    })
}

fn drawdown_chart(data: &Prepared) -> Result<String, TearsheetError> {
    let title = "Drawdown (underwater)";
    if data.observations < 2 {
        return placeholder_svg("drawdown", title, NOT_ENOUGH_DATA);
    }
    let dd = drawdown_pct(&data.wealth);
    let worst = dd.iter().map(|p| p.1).fold(0.0, f64::min);
    time_chart(TimeChart {
        id: "drawdown",
        title: format!("{title}, maximum {}%", fmt_num(worst, 1)),
        y_desc: "Drawdown from peak (%)",
        lines: vec![Line {
            name: data.strategy,
            points: dd,
            color: LOSS_COLOR,
        }],
        fill_to_zero: true,
        reference: None,
        y_suffix: "%",
        legend: false,
        x_range: (data.first_day - 1, data.last_day),
    })
}

/// Rolling Sharpe over `window` finite observations: mean / std (ddof = 1) × √periods_per_year,
/// at each window's last day; windows with zero std are skipped.
fn rolling_sharpe(finite: &[(i32, f64)], window: usize, periods_per_year: f64) -> Vec<(i32, f64)> {
    if window < 2 || finite.len() < window {
        return Vec::new();
    }
    let scale = periods_per_year.sqrt();
    finite
        .windows(window)
        .filter_map(|w| {
            let n = w.len() as f64;
            let mean = w.iter().map(|p| p.1).sum::<f64>() / n;
            let var = w.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let std = var.sqrt();
            let sharpe = mean / std * scale;
            (std > 0.0 && sharpe.is_finite()).then(|| (w[w.len() - 1].0, sharpe))
        })
        .collect()
}

fn rolling_sharpe_chart(
    data: &Prepared,
    periods_per_year: f64,
    window: usize,
) -> Result<String, TearsheetError> {
    let title = format!("Rolling Sharpe ratio ({window} observations, annualised)");
    let points = rolling_sharpe(&data.finite, window, periods_per_year);
    if points.len() < 2 {
        return placeholder_svg(
            "rolling-sharpe",
            &title,
            &format!("{NOT_ENOUGH_DATA} for a {window}-observation window"),
        );
    }
    time_chart(TimeChart {
        id: "rolling-sharpe",
        title,
        y_desc: "Sharpe ratio",
        lines: vec![Line {
            name: data.strategy,
            points,
            color: STRATEGY_COLOR,
        }],
        fill_to_zero: false,
        reference: Some(0.0),
        y_suffix: "",
        legend: false,
        x_range: (data.first_day - 1, data.last_day),
    })
}

fn histogram_chart(data: &Prepared) -> Result<String, TearsheetError> {
    const ID: &str = "distribution";
    let title = "Distribution of daily returns";
    let mut values: Vec<f64> = data.finite.iter().map(|p| p.1 * 100.0).collect();
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let (lo, hi) = match (values.first(), values.last()) {
        (Some(&lo), Some(&hi)) if values.len() >= 2 && hi > lo => (lo, hi),
        _ => return placeholder_svg(ID, title, NOT_ENOUGH_DATA),
    };
    let err = chart_err(ID);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var5 = quantile(&values, 0.05);
    let width = (hi - lo) / HISTOGRAM_BINS as f64;
    let mut counts = [0u32; HISTOGRAM_BINS];
    for v in &values {
        let bin = (((v - lo) / width).floor() as usize).min(HISTOGRAM_BINS - 1);
        counts[bin] += 1;
    }
    let top = f64::from(counts.iter().copied().max().unwrap_or(1)) * 1.05;
    let (x_lo, x_hi) = (lo - width, hi + width);
    let x_dec = tick_decimals((x_lo, x_hi), 10);
    let x_fmt = move |v: &f64| format!("{}%", fmt_num(*v, x_dec));
    let y_fmt = |v: &f64| fmt_num(*v, 0);

    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, CHART_H)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mean_color = RGBColor(20, 20, 20);
        let mean_label = format!("mean {}%", fmt_num(mean, 3));
        let var_label = format!("5% VaR (historical) {}%", fmt_num(var5, 2));
        let legend = [(mean_label, mean_color), (var_label, LOSS_COLOR)];
        let plot_area = chart_frame(&root, title, &legend).map_err(&err)?;
        let mut chart = plot_builder(&plot_area)
            .build_cartesian_2d(x_lo..x_hi, 0.0..top)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.1))
            .axis_style(AXIS_GREY)
            .label_style(label_font())
            .axis_desc_style(desc_font())
            .x_desc("Daily return (%)")
            .y_desc("Days")
            .draw()
            .map_err(&err)?;
        chart
            .draw_series(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(i, &c)| {
                        let x0 = lo + width * i as f64;
                        Rectangle::new(
                            [(x0, 0.0), (x0 + width, f64::from(c))],
                            STRATEGY_COLOR.mix(0.75).filled(),
                        )
                    }),
            )
            .map_err(&err)?;
        for (value, color) in [(mean, mean_color), (var5, LOSS_COLOR)] {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(value, 0.0), (value, top)],
                    color.stroke_width(2),
                )))
                .map_err(&err)?;
        }
        root.present().map_err(&err)?;
    }
    Ok(finish_svg(buf, ID, title))
}

// ---------------------------------------------------------------------------------------------
// Monthly heatmap (hand-written SVG: a grid of labelled, classed cells)

/// Compounded return of each (year, month) with at least one observation; NaN counts as 0.
fn monthly_returns(returns: &[(i32, f64)]) -> BTreeMap<(i32, u32), f64> {
    let mut months: BTreeMap<(i32, u32), f64> = BTreeMap::new();
    for &(day, r) in returns {
        let (y, m, _) = civil_from_days(day);
        let w = months.entry((y, m)).or_insert(1.0);
        if r.is_finite() {
            *w *= 1.0 + r;
        }
    }
    months.values_mut().for_each(|w| *w -= 1.0);
    months
}

/// Diverging colour: red for losses, green for gains, intensity |v| / max_abs.
fn diverging(v: f64, max_abs: f64) -> (u8, u8, u8) {
    let t = if max_abs > 0.0 && v.is_finite() {
        (v.abs() / max_abs).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let neutral = (247.0, 247.0, 247.0);
    let end = if v < 0.0 {
        (215.0, 48.0, 39.0)
    } else {
        (26.0, 152.0, 80.0)
    };
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    (
        mix(neutral.0, end.0),
        mix(neutral.1, end.1),
        mix(neutral.2, end.2),
    )
}

fn fmt_pct_cell(v: f64) -> String {
    let pct = v * 100.0;
    if pct.abs() >= 100.0 {
        fmt_num(pct, 0)
    } else {
        fmt_num(pct, 1)
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn heatmap_svg(returns: &[(i32, f64)]) -> String {
    const LEFT: u32 = 70;
    const TOP: u32 = 70;
    const CELL_W: u32 = 66;
    const CELL_H: u32 = 26;
    const GAP: u32 = 2;
    const YEAR_GAP: u32 = 14;
    const YEAR_W: u32 = 80;
    let title = "Monthly returns (%)";
    let months = monthly_returns(returns);
    let mut years: BTreeMap<i32, f64> = BTreeMap::new();
    for (&(y, _), &r) in &months {
        *years.entry(y).or_insert(1.0) *= 1.0 + r;
    }
    years.values_mut().for_each(|w| *w -= 1.0);
    let (first_year, last_year) = match (years.keys().next(), years.keys().next_back()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => (0, -1),
    };
    let rows = u32::try_from(i64::from(last_year) - i64::from(first_year) + 1).unwrap_or(0);
    let month_max = months
        .values()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let year_max = years
        .values()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));

    let year_x = LEFT + 12 * (CELL_W + GAP) + YEAR_GAP;
    let grid_bottom = TOP + rows * (CELL_H + GAP);
    let height = grid_bottom + 84;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" id=\"chart-monthly\" role=\"img\" aria-label=\"{title}\" \
         width=\"{CHART_W}\" height=\"{height}\" viewBox=\"0 0 {CHART_W} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-family=\"{FONT}\">\n<title>{title}</title>\n\
         <rect width=\"{CHART_W}\" height=\"{height}\" fill=\"#fff\"/>\n\
         <text x=\"{}\" y=\"30\" text-anchor=\"middle\" font-size=\"17.7\">{title}</text>\n",
        CHART_W / 2
    );
    // Column headers.
    for (i, name) in MONTHS.iter().enumerate() {
        let x = LEFT + i as u32 * (CELL_W + GAP) + CELL_W / 2;
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" fill=\"#444\">{name}</text>",
            TOP - 8
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" font-weight=\"bold\" fill=\"#444\">Year</text>",
        year_x + YEAR_W / 2,
        TOP - 8
    );
    let cell = |s: &mut String,
                class: &str,
                x: u32,
                y: u32,
                w: u32,
                v: f64,
                max: f64,
                tip: &str| {
        let (r, g, b) = diverging(v, max);
        let strong = max > 0.0 && v.abs() / max > 0.6;
        let text_fill = if strong { "#fff" } else { "#222" };
        let _ = writeln!(
            s,
            "<g><title>{tip}: {}%</title><rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" \
             height=\"{CELL_H}\" fill=\"rgb({r},{g},{b})\"/><text x=\"{}\" y=\"{}\" \
             text-anchor=\"middle\" font-size=\"12\" fill=\"{text_fill}\">{}</text></g>",
            fmt_num(v * 100.0, 2),
            x + w / 2,
            y + CELL_H / 2 + 4,
            fmt_pct_cell(v)
        );
    };
    for row in 0..rows {
        let year = first_year + row as i32;
        let y = TOP + row * (CELL_H + GAP);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\" fill=\"#444\">{year}</text>",
            LEFT - 8,
            y + CELL_H / 2 + 4
        );
        for month in 1..=12u32 {
            let x = LEFT + (month - 1) * (CELL_W + GAP);
            match months.get(&(year, month)) {
                Some(&v) => cell(
                    &mut s,
                    "hm-cell",
                    x,
                    y,
                    CELL_W,
                    v,
                    month_max,
                    &format!("{year}-{month:02}"),
                ),
                None => {
                    let _ = writeln!(
                        s,
                        "<rect class=\"hm-empty\" x=\"{x}\" y=\"{y}\" width=\"{CELL_W}\" \
                         height=\"{CELL_H}\" fill=\"#fafafa\" stroke=\"#eee\"/>"
                    );
                }
            }
        }
        if let Some(&v) = years.get(&year) {
            cell(
                &mut s,
                "hm-year",
                year_x,
                y,
                YEAR_W,
                v,
                year_max,
                &year.to_string(),
            );
        }
    }
    // Colour key: loss ... 0 ... gain, for the month cells.
    let key_y = grid_bottom + 18;
    let steps = 11u32;
    let key_w = 22u32;
    let key_x = LEFT + 12 * (CELL_W + GAP) / 2 - steps * key_w / 2;
    for i in 0..steps {
        let v = (f64::from(i) / f64::from(steps - 1) * 2.0 - 1.0) * month_max;
        let (r, g, b) = diverging(v, month_max);
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{key_y}\" width=\"{key_w}\" height=\"12\" fill=\"rgb({r},{g},{b})\"/>",
            key_x + i * key_w
        );
    }
    let label_y = key_y + 28;
    for (x, anchor, text) in [
        (key_x, "start", format!("{}%", fmt_pct_cell(-month_max))),
        (key_x + steps * key_w / 2, "middle", "0".to_string()),
        (
            key_x + steps * key_w,
            "end",
            format!("+{}%", fmt_pct_cell(month_max)),
        ),
    ] {
        let _ = writeln!(
            s,
            "<text x=\"{x}\" y=\"{label_y}\" text-anchor=\"{anchor}\" font-size=\"11\" fill=\"#444\">{}</text>",
            esc(&text)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#666\">Colour scaled by the largest absolute monthly return; yearly totals by the largest yearly one.</text>",
        key_x + steps * key_w / 2,
        label_y + 18
    );
    s.push_str("</svg>\n");
    s
}

// ---------------------------------------------------------------------------------------------

/// The tearsheet of a `performance_report` with the returns it was computed from: the
/// report's figures as the summary, its null figures' reasons as notes.
pub fn from_report(
    r: &quantbox_ops::report::ReportWithSeries,
    generated_at: &str,
) -> Result<String, TearsheetError> {
    fn days(r: &quantbox_analytics::Returns) -> Vec<(i32, f64)> {
        r.dates()
            .iter()
            .zip(r.values())
            .map(|(d, v)| (d.unix_seconds().div_euclid(86_400) as i32, *v))
            .collect()
    }
    let pct =
        |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.2} %", v * 100.0));
    let num = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
    let o = &r.report;
    let p = &o.performance;
    let k = &o.risk;
    let t = &o.trades;
    let mut summary: Vec<(&str, &str, String)> = vec![
        (
            "Period",
            "dates",
            format!(
                "{} to {}",
                o.period.start.as_deref().unwrap_or("n/a"),
                o.period.end.as_deref().unwrap_or("n/a")
            ),
        ),
        ("Period", "observations", o.period.observations.to_string()),
        ("Performance", "total return", pct(p.total_return)),
        ("Performance", "annualized return", pct(p.annualized_return)),
        ("Performance", "Sharpe ratio", num(p.sharpe_ratio)),
        ("Performance", "Sortino ratio", num(p.sortino_ratio)),
        ("Performance", "Calmar ratio", num(p.calmar_ratio)),
        ("Performance", "max drawdown", pct(p.max_drawdown)),
        (
            "Performance",
            "max drawdown duration",
            p.max_drawdown_duration_days
                .map_or_else(|| "n/a".to_owned(), |d| format!("{d} days")),
        ),
        ("Risk", "volatility", pct(k.volatility)),
        ("Risk", "VaR 95 %", pct(k.var_95)),
        ("Risk", "CVaR 95 %", pct(k.cvar_95)),
        ("Risk", "skewness", num(k.skewness)),
        ("Risk", "kurtosis (excess)", num(k.kurtosis)),
        ("Trades", "closed trades", t.total.to_string()),
        ("Trades", "win rate", pct(p.win_rate)),
        ("Trades", "profit factor", num(p.profit_factor)),
    ];
    if let Some(b) = &o.benchmark {
        summary.extend([
            ("Benchmark", "symbol", b.symbol.clone()),
            ("Benchmark", "benchmark return", pct(b.total_return)),
            ("Benchmark", "alpha (annual)", pct(b.alpha)),
            ("Benchmark", "beta", num(b.beta)),
            ("Benchmark", "correlation", num(b.correlation)),
            ("Benchmark", "information ratio", num(b.information_ratio)),
        ]);
    }
    let notes: Vec<String> = o
        .reasons
        .iter()
        .map(|(field, why)| format!("{field}: {why}"))
        .collect();
    let returns = r.returns.as_ref().map(days).unwrap_or_default();
    let bench = r
        .benchmark
        .as_ref()
        .map(|(s, b)| (s.as_str(), b.as_ref().map(days).unwrap_or_default()));
    render(&TearsheetInput {
        strategy: &o.strategy,
        generated_at,
        returns: &returns,
        benchmark: bench.as_ref().map(|(s, b)| (*s, b.as_slice())),
        periods_per_year: o.periods_per_year,
        summary: &summary,
        notes: &notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weekdays from 2021-01-01 to 2023-12-31: a sine plus a trend, deterministic.
    fn synthetic() -> Vec<(i32, f64)> {
        let start = days_from_civil(2021, 1, 1) as i32;
        let end = days_from_civil(2023, 12, 31) as i32;
        (start..=end)
            .filter(|d| (d + 3).rem_euclid(7) < 5) // Mon..Fri (1970-01-01 was a Thursday)
            .enumerate()
            .map(|(i, d)| {
                let t = i as f64;
                (
                    d,
                    0.0004 + 0.012 * (t * 0.37).sin() + 0.004 * (t * 0.021).sin(),
                )
            })
            .collect()
    }

    fn bench_series() -> Vec<(i32, f64)> {
        let start = days_from_civil(2020, 6, 1) as i32;
        let end = days_from_civil(2024, 6, 30) as i32;
        (start..=end)
            .enumerate()
            .map(|(i, d)| (d, 0.0003 + 0.008 * (i as f64 * 0.53).cos()))
            .collect()
    }

    fn summary() -> Vec<(&'static str, &'static str, String)> {
        vec![
            ("Returns", "Total return", "42.1%".to_string()),
            ("Returns", "CAGR", "12.4%".to_string()),
            ("Risk", "Volatility (ann.)", "18.0%".to_string()),
            ("Risk", "Max drawdown", "-9.8%".to_string()),
            ("Ratios", "Sharpe", "0.81".to_string()),
            ("Returns", "Best day", "3.1%".to_string()),
        ]
    }

    fn input<'a>(
        strategy: &'a str,
        returns: &'a [(i32, f64)],
        benchmark: Option<(&'a str, &'a [(i32, f64)])>,
        summary: &'a [(&'a str, &'a str, String)],
        notes: &'a [String],
    ) -> TearsheetInput<'a> {
        TearsheetInput {
            strategy,
            generated_at: "2024-01-02T03:04:05Z",
            returns,
            benchmark,
            periods_per_year: 252.0,
            summary,
            notes,
        }
    }

    fn full_sample() -> String {
        let returns = synthetic();
        let bench = bench_series();
        let summary = summary();
        let notes = vec!["Sortino is null: no downside observations in one window.".to_string()];
        render(&input(
            "Sine & trend",
            &returns,
            Some(("SPY <bench>", &bench)),
            &summary,
            &notes,
        ))
        .unwrap()
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for d in (-800_000..800_000).step_by(997) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(i64::from(y), m, dd), i64::from(d));
        }
        // Extremes do not overflow.
        let _ = civil_from_days(i32::MIN);
        let _ = civil_from_days(i32::MAX);
    }

    #[test]
    fn synthetic_three_years_renders() {
        let html = full_sample();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<meta charset=\"utf-8\">"));
        assert!(html.contains("@media print"));
        assert_eq!(html.matches("<svg").count(), 5, "five inline charts");
        assert_eq!(html.matches("class=\"hm-cell\"").count(), 36);
        assert_eq!(html.matches("class=\"hm-year\"").count(), 3);
        for id in [
            "equity",
            "drawdown",
            "monthly",
            "distribution",
            "rolling-sharpe",
        ] {
            assert!(html.contains(&format!("id=\"chart-{id}\"")), "{id}");
        }
        // Summary grouped by section, in order of first appearance, as HTML tables.
        let returns_at = html.find(">Returns<").unwrap();
        let risk_at = html.find(">Risk<").unwrap();
        let best_day_at = html.find(">Best day<").unwrap();
        assert!(returns_at < best_day_at && best_day_at < risk_at);
        assert_eq!(html.matches("<table class=\"summary\">").count(), 3);
        // Date ticks as YYYY-MM or YYYY, never a raw day number.
        assert!(html.contains("\n2022-01\n") || html.contains("\n2022\n"));
        assert!(!html.contains("not enough data"));
        assert!(!html.contains("NaN"));
    }

    #[test]
    fn no_network_references() {
        let html = full_sample();
        let stripped = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!stripped.contains("http://"), "http reference");
        assert!(!stripped.contains("https://"), "https reference");
        assert!(!html.contains("<script"));
        assert!(!html.contains("<link"));
        assert!(!html.contains("@import"));
        assert!(!html.contains("url("));
    }

    #[test]
    fn text_is_escaped() {
        let returns = synthetic();
        let bench = bench_series();
        let summary = vec![("Risk <b>", "Max \"dd\"", "<i>-9%</i>".to_string())];
        let notes = vec!["a & b <script>".to_string()];
        let html = render(&input(
            "<script>alert('x')</script>",
            &returns,
            Some(("<script>bench</script>", &bench)),
            &summary,
            &notes,
        ))
        .unwrap();
        assert!(!html.contains("<script"), "unescaped script tag");
        assert!(html.contains("&lt;script&gt;alert("));
        assert!(html.contains("&lt;script&gt;bench&lt;/script&gt;"));
        assert!(html.contains("Risk &lt;b&gt;"));
        assert!(html.contains("&lt;i&gt;-9%&lt;/i&gt;"));
        assert!(html.contains("a &amp; b &lt;script&gt;"));
    }

    #[test]
    fn empty_returns_is_a_clear_error() {
        let err = render(&input("s", &[], None, &[], &[])).unwrap_err();
        assert_eq!(err, TearsheetError::EmptyReturns);
        assert!(err.to_string().contains("empty"));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let unsorted = [(10, 0.01), (10, 0.02)];
        let err = render(&input("s", &unsorted, None, &[], &[])).unwrap_err();
        assert!(matches!(err, TearsheetError::UnsortedDays { index: 1, .. }));
        let ok = [(10, 0.01)];
        let mut i = input("s", &ok, None, &[], &[]);
        i.periods_per_year = 0.0;
        assert!(matches!(
            render(&i),
            Err(TearsheetError::InvalidPeriodsPerYear(_))
        ));
        let i = input("s", &ok, None, &[], &[]);
        let opts = TearsheetOptions { rolling_window: 1 };
        assert_eq!(
            render_with(&i, &opts),
            Err(TearsheetError::InvalidRollingWindow(1))
        );
    }

    #[test]
    fn one_observation_renders_with_placeholders() {
        let returns = [(19_000, 0.01)];
        let html = render(&input("one", &returns, None, &[], &[])).unwrap();
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(html.matches("not enough data").count() >= 3);
        assert_eq!(html.matches("class=\"hm-cell\"").count(), 1);
        assert_eq!(html.matches("class=\"hm-year\"").count(), 1);
        assert!(html.contains("No summary figures."));
        assert!(!html.contains("NaN"));
    }

    #[test]
    fn nan_returns_never_print_nan() {
        let mut returns = synthetic();
        for (i, r) in returns.iter_mut().enumerate() {
            if i % 17 == 0 || (100..140).contains(&i) {
                r.1 = f64::NAN;
            }
        }
        returns[5].1 = f64::INFINITY;
        let mut bench = bench_series();
        bench[700].1 = f64::NAN;
        let html = render(&input("nan", &returns, Some(("b", &bench)), &[], &[])).unwrap();
        assert_eq!(html.matches("<svg").count(), 5);
        assert_eq!(html.matches("class=\"hm-cell\"").count(), 36);
        assert!(!html.contains("NaN"));
        assert!(!html.to_lowercase().contains(">nan"));
        assert!(!html.contains("inf\n") && !html.contains("inf%") && !html.contains("inf<"));

        // All NaN: still renders, without NaN.
        let all_nan: Vec<(i32, f64)> = (0..300).map(|d| (18_000 + d, f64::NAN)).collect();
        let html = render(&input("all nan", &all_nan, None, &[], &[])).unwrap();
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(!html.contains("NaN"));
    }

    #[test]
    fn rolling_sharpe_matches_a_direct_computation() {
        let returns = synthetic();
        let points = rolling_sharpe(&returns, 126, 252.0);
        assert_eq!(points.len(), returns.len() - 125);
        let w = &returns[..126];
        let mean = w.iter().map(|p| p.1).sum::<f64>() / 126.0;
        let sd = (w.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / 125.0).sqrt();
        assert_eq!(points[0].0, returns[125].0);
        assert!((points[0].1 - mean / sd * 252f64.sqrt()).abs() < 1e-9);
        // Zero-variance windows are skipped.
        let flat: Vec<(i32, f64)> = (0..10).map(|d| (d, 0.001)).collect();
        assert!(rolling_sharpe(&flat, 5, 252.0).is_empty());
    }

    #[test]
    fn long_series_are_downsampled() {
        let start = days_from_civil(1990, 1, 1) as i32;
        let returns: Vec<(i32, f64)> = (0..12_000)
            .map(|i| (start + i, 0.0002 + 0.01 * (f64::from(i) * 0.7).sin()))
            .collect();
        let html = render(&input("long", &returns, None, &[], &[])).unwrap();
        for id in ["equity", "drawdown", "rolling-sharpe"] {
            let at = html.find(&format!("id=\"chart-{id}\"")).unwrap();
            let svg = &html[at..at + html[at..].find("</svg>").unwrap()];
            let most = svg
                .split("points=\"")
                .skip(1)
                .map(|p| p[..p.find('"').unwrap()].split_whitespace().count())
                .max()
                .unwrap();
            assert!(most <= MAX_POINTS_PER_SERIES + 2, "{id}: {most} points");
        }
        assert!(html.len() < 600_000, "page is {} bytes", html.len());
    }

    #[test]
    fn decimate_keeps_extremes() {
        let points: Vec<(i32, f64)> = (0..10_000).map(|i| (i, f64::from(i % 97))).collect();
        let mut with_dip = points.clone();
        with_dip[5_001].1 = -50.0;
        let out = decimate(&with_dip, 1500);
        assert!(out.len() <= 1500);
        assert!(out.iter().any(|p| p.1 == -50.0));
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn date_ticks_are_month_or_year_starts() {
        let start = days_from_civil(2021, 1, 1) as i32;
        let (ticks, fmt) = date_ticks(start, start + 3 * 365, 10);
        assert_eq!(fmt, TickFormat::Month);
        assert!(ticks.len() >= 4 && ticks.len() <= 10);
        assert!(ticks.iter().all(|&d| civil_from_days(d).2 == 1));
        let (ticks, fmt) = date_ticks(start, start + 30 * 365, 10);
        assert_eq!(fmt, TickFormat::Year);
        assert!(ticks.len() <= 10);
        assert!(ticks.iter().all(|&d| civil_from_days(d).1 == 1));
        let (ticks, fmt) = date_ticks(start + 3, start + 20, 10);
        assert_eq!(fmt, TickFormat::Day);
        assert!(!ticks.is_empty() && ticks.len() <= 10);
    }

    /// Writes the sample page for visual inspection:
    /// `cargo test -p quantbox --lib tearsheet::tests::write_sample -- --ignored`.
    #[test]
    #[ignore]
    fn write_sample() {
        let path = std::env::temp_dir().join("tearsheet-sample.html");
        std::fs::write(&path, full_sample()).unwrap();
        eprintln!("wrote {}", path.display());
        // Edge cases, to look at too: one observation, and 30 years with gaps of NaN.
        let one = [(19_000, 0.01)];
        let path = std::env::temp_dir().join("tearsheet-one.html");
        std::fs::write(&path, render(&input("one", &one, None, &[], &[])).unwrap()).unwrap();
        let start = days_from_civil(1994, 3, 15) as i32;
        let long: Vec<(i32, f64)> = (0..7_600)
            .map(|i| {
                let r = 0.0003 + 0.011 * (f64::from(i) * 0.7).sin() * (f64::from(i) * 0.001).cos();
                (start + i * 7 / 5, if i % 250 == 3 { f64::NAN } else { r })
            })
            .collect();
        let path = std::env::temp_dir().join("tearsheet-long.html");
        let html = render(&input(
            "long",
            &long,
            Some(("bench", &long[2000..])),
            &[],
            &[],
        ));
        std::fs::write(&path, html.unwrap()).unwrap();
    }
}
