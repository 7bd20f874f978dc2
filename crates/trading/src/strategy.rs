//! Strategies over daily bars: each turns the prices seen so far into target weights
//! (the fraction of equity to hold in each symbol, negative = short) after every bar.
//!
//! - Signals use the **adjusted close** (splits and dividends accounted for), one price
//!   per symbol per bar, oldest first. The weight after bar `i` depends on the prices of
//!   bars `0..=i` only: [`Signals::next`] is fed one bar at a time, so there is no way to
//!   look ahead. The backtest trades the weight decided at bar `i`'s close at bar `i+1`'s
//!   open.
//! - Prices must be finite and positive (the backtest checks its bars before it starts).
//! - Every strategy has `position_fraction` (default 0.95): the fraction of equity held
//!   when long, split equally across the symbols (0.95 over 5 symbols is 0.19 each). For
//!   `pairs` it is the gross exposure of both legs together.
//! - Moving averages and standard deviations are over the last `window` (or `lookback`)
//!   prices, the current bar's included; standard deviations are sample ones (n − 1, as
//!   pandas' `rolling().std()`). A bar whose statistic is undefined (too little history)
//!   is flat; one whose deviation is 0 (a constant window) keeps the previous state.
//!
//! | strategy | parameters (default) | rule |
//! |---|---|---|
//! | `momentum` | `lookback` (20), `threshold` (0.0) | long when `p[i] / p[i − lookback] − 1 > threshold`, flat otherwise (flat for the first `lookback` bars) |
//! | `mean_reversion` | `window` (20), `entry_z` (1.0), `exit_z` (0.0) | `z = (p − MA) / SD`; enter long when `z < −entry_z`, exit when `z > −exit_z` |
//! | `pairs` | `lookback` (60), `entry_z` (2.0), `exit_z` (0.5), `hedge_ratio` (none: OLS) | exactly 2 symbols A, B; spread `A − h·B`; long the spread when `z < −entry_z`, short when `z > entry_z`, flat when `\|z\| < exit_z` |
//! | `trend` | `fast` (20), `slow` (50) | long when the fast moving average is above the slow one |
//! | `buy_and_hold` | — | long from the first bar |
//!
//! Parameters arrive as JSON (`strategy_params`): unknown fields are refused, a missing
//! one takes its default, and an error names the field.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The strategies, as they are named in `strategy_params` requests.
pub const STRATEGY_NAMES: [&str; 5] = [
    "momentum",
    "mean_reversion",
    "pairs",
    "trend",
    "buy_and_hold",
];

const DEFAULT_POSITION_FRACTION: f64 = 0.95;

/// Time-series momentum: long when the return over `lookback` bars beats `threshold`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Momentum {
    /// Bars the return is measured over, ≥ 1. Default 20.
    pub lookback: usize,
    /// The return to beat (0.05 = 5 %). Default 0.0.
    pub threshold: f64,
    /// Fraction of equity held when long, in (0, 1]. Default 0.95.
    pub position_fraction: f64,
}

impl Default for Momentum {
    fn default() -> Self {
        Self {
            lookback: 20,
            threshold: 0.0,
            position_fraction: DEFAULT_POSITION_FRACTION,
        }
    }
}

/// Mean reversion: buy a price that is far below its moving average, sell when it has
/// come back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeanReversion {
    /// Bars of the moving average and deviation, ≥ 2. Default 20.
    pub window: usize,
    /// Enter long when z < −entry_z. Default 1.0.
    pub entry_z: f64,
    /// Exit when z > −exit_z; at most `entry_z`. Default 0.0 (back at the average).
    pub exit_z: f64,
    /// Fraction of equity held when long, in (0, 1]. Default 0.95.
    pub position_fraction: f64,
}

impl Default for MeanReversion {
    fn default() -> Self {
        Self {
            window: 20,
            entry_z: 1.0,
            exit_z: 0.0,
            position_fraction: DEFAULT_POSITION_FRACTION,
        }
    }
}

/// Pairs trading on the spread `A − h·B` of two symbols.
///
/// `h` is `hedge_ratio` when given, else the OLS slope of A on B (with an intercept) over
/// the last `lookback` bars, re-estimated every bar. `z` is the last spread's z-score
/// among the window's spreads (all computed with the current `h`). The state after a bar:
/// flat when `|z| < exit_z`; else long the spread (buy A, sell B) when `z < −entry_z`;
/// else short it when `z > entry_z` (so a position may flip in one bar); else unchanged.
/// Entering sizes both legs at that bar's close as 1 share of A per `h` shares of B with
/// gross exposure `position_fraction` of equity:
/// `w_A = ±f·p_A / (p_A + |h|·p_B)`, `w_B = ∓f·h·p_B / (p_A + |h|·p_B)`; the weights are
/// then held unchanged until the state changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pairs {
    /// Bars of the hedge-ratio regression and the spread's z-score, ≥ 3. Default 60.
    pub lookback: usize,
    /// Enter when |z| > entry_z, > 0. Default 2.0.
    pub entry_z: f64,
    /// Exit when |z| < exit_z, in [0, entry_z]. Default 0.5.
    pub exit_z: f64,
    /// Shares of B per share of A; `null` (the default) estimates it by OLS.
    pub hedge_ratio: Option<f64>,
    /// Gross exposure of both legs, in (0, 1]. Default 0.95.
    pub position_fraction: f64,
}

impl Default for Pairs {
    fn default() -> Self {
        Self {
            lookback: 60,
            entry_z: 2.0,
            exit_z: 0.5,
            hedge_ratio: None,
            position_fraction: DEFAULT_POSITION_FRACTION,
        }
    }
}

/// Trend following: long while the fast moving average is above the slow one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trend {
    /// Bars of the fast simple moving average, ≥ 1. Default 20.
    pub fast: usize,
    /// Bars of the slow simple moving average, > fast. Default 50.
    pub slow: usize,
    /// Fraction of equity held when long, in (0, 1]. Default 0.95.
    pub position_fraction: f64,
}

impl Default for Trend {
    fn default() -> Self {
        Self {
            fast: 20,
            slow: 50,
            position_fraction: DEFAULT_POSITION_FRACTION,
        }
    }
}

/// Buy at the first opportunity and hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuyAndHold {
    /// Fraction of equity held, in (0, 1]. Default 0.95.
    pub position_fraction: f64,
}

impl Default for BuyAndHold {
    fn default() -> Self {
        Self {
            position_fraction: DEFAULT_POSITION_FRACTION,
        }
    }
}

/// A strategy with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    Momentum(Momentum),
    MeanReversion(MeanReversion),
    Pairs(Pairs),
    Trend(Trend),
    BuyAndHold(BuyAndHold),
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StrategyError {
    #[error(
        "unknown strategy `{0}`: the strategies are momentum, mean_reversion, pairs, trend and buy_and_hold"
    )]
    UnknownStrategy(String),
    /// `field` is `None` when the error is about the parameters as a whole.
    #[error("{}", params_message(strategy, field.as_deref(), reason))]
    Params {
        strategy: &'static str,
        field: Option<String>,
        reason: String,
    },
    #[error("`symbols`: {0}")]
    Symbols(String),
}

fn params_message(strategy: &str, field: Option<&str>, reason: &str) -> String {
    match field {
        Some(f) => format!("strategy_params of {strategy}: `{f}`: {reason}"),
        None => format!("strategy_params of {strategy}: {reason}"),
    }
}

impl Strategy {
    /// Builds a strategy from its name, its `strategy_params` (an object; `null` takes
    /// every default) and the symbols it trades (`pairs`: exactly 2; the others: at
    /// least 1). Symbols must be distinct and not empty.
    pub fn new(name: &str, params: &Value, symbols: &[String]) -> Result<Self, StrategyError> {
        let name = STRATEGY_NAMES
            .iter()
            .copied()
            .find(|&n| n == name)
            .ok_or_else(|| StrategyError::UnknownStrategy(name.to_owned()))?;
        let strategy = match name {
            "momentum" => Self::Momentum(parse_params(name, params)?),
            "mean_reversion" => Self::MeanReversion(parse_params(name, params)?),
            "pairs" => Self::Pairs(parse_params(name, params)?),
            "trend" => Self::Trend(parse_params(name, params)?),
            _ => Self::BuyAndHold(parse_params(name, params)?),
        };
        strategy.validate()?;
        strategy.check_symbols(symbols)?;
        Ok(strategy)
    }

    /// `momentum`, `mean_reversion`, …
    pub fn name(&self) -> &'static str {
        match self {
            Self::Momentum(_) => "momentum",
            Self::MeanReversion(_) => "mean_reversion",
            Self::Pairs(_) => "pairs",
            Self::Trend(_) => "trend",
            Self::BuyAndHold(_) => "buy_and_hold",
        }
    }

    /// The parameters in effect (defaults filled in), as JSON.
    pub fn params(&self) -> Value {
        let v = match self {
            Self::Momentum(p) => serde_json::to_value(p),
            Self::MeanReversion(p) => serde_json::to_value(p),
            Self::Pairs(p) => serde_json::to_value(p),
            Self::Trend(p) => serde_json::to_value(p),
            Self::BuyAndHold(p) => serde_json::to_value(p),
        };
        v.unwrap_or(Value::Null)
    }

    pub fn position_fraction(&self) -> f64 {
        match self {
            Self::Momentum(p) => p.position_fraction,
            Self::MeanReversion(p) => p.position_fraction,
            Self::Pairs(p) => p.position_fraction,
            Self::Trend(p) => p.position_fraction,
            Self::BuyAndHold(p) => p.position_fraction,
        }
    }

    /// Whether the strategy may hold short positions (only `pairs`).
    pub fn allows_short(&self) -> bool {
        matches!(self, Self::Pairs(_))
    }

    /// Whether `n` symbols suit the strategy; the error says the rule.
    pub fn check_symbol_count(&self, n: usize) -> Result<(), StrategyError> {
        match self {
            Self::Pairs(_) if n != 2 => Err(StrategyError::Symbols(format!(
                "pairs needs exactly 2 symbols (A and B of the spread A - h*B), got {n}"
            ))),
            _ if n == 0 => Err(StrategyError::Symbols(format!(
                "{} needs at least 1 symbol, got none",
                self.name()
            ))),
            _ => Ok(()),
        }
    }

    fn check_symbols(&self, symbols: &[String]) -> Result<(), StrategyError> {
        self.check_symbol_count(symbols.len())?;
        for (i, s) in symbols.iter().enumerate() {
            if s.trim().is_empty() {
                return Err(StrategyError::Symbols(format!("symbol {} is empty", i + 1)));
            }
            if symbols[..i].contains(s) {
                return Err(StrategyError::Symbols(format!("`{s}` is listed twice")));
            }
        }
        Ok(())
    }

    /// The rules on parameter values beyond their types.
    pub fn validate(&self) -> Result<(), StrategyError> {
        let strategy = self.name();
        let bad = |field: &str, reason: String| StrategyError::Params {
            strategy,
            field: Some(field.to_owned()),
            reason,
        };
        let finite = |field: &str, x: f64| {
            if x.is_finite() {
                Ok(())
            } else {
                Err(bad(field, format!("must be a finite number, not {x}")))
            }
        };
        let f = self.position_fraction();
        if !(f > 0.0 && f <= 1.0) {
            return Err(bad(
                "position_fraction",
                format!("must be greater than 0 and at most 1, not {f}"),
            ));
        }
        match self {
            Self::Momentum(p) => {
                if p.lookback < 1 {
                    return Err(bad("lookback", "must be at least 1, not 0".into()));
                }
                finite("threshold", p.threshold)?;
            }
            Self::MeanReversion(p) => {
                if p.window < 2 {
                    return Err(bad(
                        "window",
                        format!("must be at least 2, not {}", p.window),
                    ));
                }
                finite("entry_z", p.entry_z)?;
                finite("exit_z", p.exit_z)?;
                if p.exit_z > p.entry_z {
                    return Err(bad(
                        "exit_z",
                        format!("must be at most entry_z ({}), not {}", p.entry_z, p.exit_z),
                    ));
                }
            }
            Self::Pairs(p) => {
                if p.lookback < 3 {
                    return Err(bad(
                        "lookback",
                        format!("must be at least 3, not {}", p.lookback),
                    ));
                }
                finite("entry_z", p.entry_z)?;
                finite("exit_z", p.exit_z)?;
                if p.entry_z <= 0.0 {
                    return Err(bad(
                        "entry_z",
                        format!("must be greater than 0, not {}", p.entry_z),
                    ));
                }
                if !(0.0..=p.entry_z).contains(&p.exit_z) {
                    return Err(bad(
                        "exit_z",
                        format!(
                            "must be between 0 and entry_z ({}), not {}",
                            p.entry_z, p.exit_z
                        ),
                    ));
                }
                if let Some(h) = p.hedge_ratio {
                    finite("hedge_ratio", h)?;
                }
            }
            Self::Trend(p) => {
                if p.fast < 1 {
                    return Err(bad("fast", "must be at least 1, not 0".into()));
                }
                if p.slow <= p.fast {
                    return Err(bad(
                        "slow",
                        format!("must be greater than fast ({}), not {}", p.fast, p.slow),
                    ));
                }
            }
            Self::BuyAndHold(_) => {}
        }
        Ok(())
    }

    /// A fresh signal state for `n_symbols` symbols (in the order their prices will be
    /// given).
    pub fn signals(&self, n_symbols: usize) -> Signals {
        Signals {
            strategy: self.clone(),
            history: vec![Vec::new(); n_symbols],
            long: vec![false; n_symbols],
            pair_state: 0,
            weights: vec![0.0; n_symbols],
        }
    }

    /// The target weights after every bar: `closes[symbol][bar]` in, `out[bar][symbol]`
    /// out. The series must have the same length.
    pub fn target_weights(&self, closes: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let n = closes.iter().map(Vec::len).min().unwrap_or(0);
        let mut signals = self.signals(closes.len());
        let mut bar = vec![0.0; closes.len()];
        (0..n)
            .map(|i| {
                for (b, series) in bar.iter_mut().zip(closes) {
                    *b = series[i];
                }
                signals.next(&bar).to_vec()
            })
            .collect()
    }
}

/// Deserialises `params` into `T`; on an error, finds the field it is about by trying
/// each field alone (serde's own message on a value does not name the field).
fn parse_params<T: DeserializeOwned>(
    strategy: &'static str,
    params: &Value,
) -> Result<T, StrategyError> {
    from_json_naming_field(params).map_err(|(field, reason)| StrategyError::Params {
        strategy,
        field,
        reason,
    })
}

/// `value` (an object, or `null` for every default) as `T`; an error is the field it is
/// about (found by deserialising each field alone: serde's message on a value does not
/// name it) and serde's message.
pub(crate) fn from_json_naming_field<T: DeserializeOwned>(
    value: &Value,
) -> Result<T, (Option<String>, String)> {
    let empty = Value::Object(serde_json::Map::new());
    let value = match value {
        Value::Null => &empty,
        Value::Object(_) => value,
        other => return Err((None, format!("must be a JSON object, not {other}"))),
    };
    let whole = match serde_json::from_value::<T>(value.clone()) {
        Ok(t) => return Ok(t),
        Err(e) => e.to_string(),
    };
    if let Value::Object(map) = value {
        for (key, v) in map {
            let mut alone = serde_json::Map::new();
            alone.insert(key.clone(), v.clone());
            if let Err(e) = serde_json::from_value::<T>(Value::Object(alone)) {
                return Err((Some(key.clone()), e.to_string()));
            }
        }
    }
    Err((None, whole))
}

/// A strategy's state while bars arrive: feed it each bar's adjusted closes, get the
/// target weights.
#[derive(Clone, Debug)]
pub struct Signals {
    strategy: Strategy,
    history: Vec<Vec<f64>>,
    /// Per symbol: long (`mean_reversion`'s hysteresis).
    long: Vec<bool>,
    /// `pairs`: +1 long the spread, −1 short, 0 flat.
    pair_state: i8,
    weights: Vec<f64>,
}

impl Signals {
    /// Takes one bar's adjusted close of every symbol; returns the target weights after
    /// it. A bar with another number of prices than symbols is ignored (the previous
    /// weights are returned).
    pub fn next(&mut self, closes: &[f64]) -> &[f64] {
        if closes.len() != self.history.len() {
            return &self.weights;
        }
        for (h, &p) in self.history.iter_mut().zip(closes) {
            h.push(p);
        }
        let n_sym = self.history.len() as f64;
        match &self.strategy {
            Strategy::Momentum(p) => {
                let w = p.position_fraction / n_sym;
                for (k, h) in self.history.iter().enumerate() {
                    let n = h.len();
                    let long =
                        n > p.lookback && h[n - 1] / h[n - 1 - p.lookback] - 1.0 > p.threshold;
                    self.weights[k] = if long { w } else { 0.0 };
                }
            }
            Strategy::MeanReversion(p) => {
                let w = p.position_fraction / n_sym;
                for (k, h) in self.history.iter().enumerate() {
                    if h.len() < p.window {
                        self.long[k] = false;
                    } else if let Some(z) = z_score(&h[h.len() - p.window..]) {
                        if !self.long[k] && z < -p.entry_z {
                            self.long[k] = true;
                        } else if self.long[k] && z > -p.exit_z {
                            self.long[k] = false;
                        }
                    }
                    self.weights[k] = if self.long[k] { w } else { 0.0 };
                }
            }
            Strategy::Trend(p) => {
                let w = p.position_fraction / n_sym;
                for (k, h) in self.history.iter().enumerate() {
                    let n = h.len();
                    let long = n >= p.slow && mean(&h[n - p.fast..]) > mean(&h[n - p.slow..]);
                    self.weights[k] = if long { w } else { 0.0 };
                }
            }
            Strategy::BuyAndHold(p) => {
                self.weights.fill(p.position_fraction / n_sym);
            }
            Strategy::Pairs(p) => {
                let p = p.clone();
                self.next_pair(&p);
            }
        }
        &self.weights
    }

    fn next_pair(&mut self, p: &Pairs) {
        let (a, b) = (&self.history[0], &self.history[1]);
        let n = a.len();
        if n < p.lookback {
            return;
        }
        let (wa, wb) = (&a[n - p.lookback..], &b[n - p.lookback..]);
        let Some(h) = p.hedge_ratio.or_else(|| ols_slope(wb, wa)) else {
            return;
        };
        let spread: Vec<f64> = wa.iter().zip(wb).map(|(a, b)| a - h * b).collect();
        let Some(z) = z_score(&spread) else {
            return;
        };
        let state = if z.abs() < p.exit_z {
            0
        } else if z < -p.entry_z {
            1
        } else if z > p.entry_z {
            -1
        } else {
            self.pair_state
        };
        if state == self.pair_state {
            return;
        }
        self.pair_state = state;
        let (pa, pb) = (a[n - 1], b[n - 1]);
        let s = f64::from(state);
        let gross = pa + h.abs() * pb;
        self.weights[0] = s * p.position_fraction * pa / gross;
        self.weights[1] = -s * p.position_fraction * h * pb / gross;
    }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// The last value's z-score within `x` (sample deviation); `None` when the deviation is
/// 0 or not finite, or there are fewer than 2 values.
fn z_score(x: &[f64]) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    let m = mean(x);
    let var = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64;
    let sd = var.sqrt();
    (sd > 0.0 && sd.is_finite()).then(|| (x[x.len() - 1] - m) / sd)
}

/// The OLS slope of `y` on `x` with an intercept: `cov(x, y) / var(x)`; `None` when `x`
/// is constant.
pub fn ols_slope(x: &[f64], y: &[f64]) -> Option<f64> {
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
    }
    let h = sxy / sxx;
    (sxx > 0.0 && h.is_finite()).then_some(h)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strategy(name: &str, params: Value, n: usize) -> Strategy {
        let symbols: Vec<String> = (0..n).map(|i| format!("S{i}")).collect();
        Strategy::new(name, &params, &symbols).unwrap()
    }

    /// The bars at which the (single-symbol) weight is non-zero.
    fn long_bars(s: &Strategy, prices: &[f64]) -> Vec<usize> {
        let w = s.target_weights(&[prices.to_vec()]);
        assert!(w.iter().all(|w| w[0] == 0.0 || w[0] == 0.95), "{w:?}");
        (0..w.len()).filter(|&i| w[i][0] != 0.0).collect()
    }

    #[test]
    fn momentum_switches_on_the_lookback_return() {
        // Returns over 2 bars: -, -, +20 %, +9.1 %, -8.3 %, -16.7 %, 0, +30 %.
        let p = [10.0, 11.0, 12.0, 12.0, 11.0, 10.0, 11.0, 13.0];
        let s = strategy("momentum", json!({"lookback": 2}), 1);
        assert_eq!(long_bars(&s, &p), [2, 3, 7]); // a return of exactly 0 is not > 0
        let s = strategy("momentum", json!({"lookback": 2, "threshold": 0.1}), 1);
        assert_eq!(long_bars(&s, &p), [2, 7]);
        // Two symbols share the fraction.
        let s = strategy("momentum", json!({"lookback": 2}), 2);
        let w = s.target_weights(&[p.to_vec(), p.iter().rev().copied().collect()]);
        assert_eq!(w[2], [0.475, 0.0]);
    }

    #[test]
    fn mean_reversion_enters_below_and_exits_above() {
        // window 3: z at bar 3 = (7 − 9) / √3 = −1.155 → long; bar 4: −0.218 stays;
        // bar 5: +1.091 → exit; bar 6: +0.873; bar 7: −1.091 → long; bar 8: −0.801 stays.
        let p = [10.0, 10.0, 10.0, 7.0, 8.0, 10.0, 11.0, 8.0, 7.0];
        let s = strategy("mean_reversion", json!({"window": 3}), 1);
        assert_eq!(long_bars(&s, &p), [3, 4, 7, 8]);
        // With entry_z 1.1 only bar 3 (−1.155) enters; bar 7 (−1.091) does not.
        let s = strategy("mean_reversion", json!({"window": 3, "entry_z": 1.1}), 1);
        assert_eq!(long_bars(&s, &p), [3, 4]);
        // exit_z −1.5 exits only above z = +1.5: never here, so long from bar 3 on.
        let s = strategy(
            "mean_reversion",
            json!({"window": 3, "entry_z": 1.0, "exit_z": -1.5}),
            1,
        );
        assert_eq!(long_bars(&s, &p), [3, 4, 5, 6, 7, 8]);
        // A constant window keeps the state: flat from the start.
        assert_eq!(long_bars(&s, &[5.0; 6]), Vec::<usize>::new());
    }

    #[test]
    fn trend_is_long_while_fast_is_above_slow() {
        // fast 2 / slow 3: bar 2 2.5 > 2, bar 3 2.5 > 2.33, bar 4 1.5 < 2, bar 5 1 < 1.33,
        // bar 6 1.5 > 1.33, bar 7 2.5 > 2.
        let p = [1.0, 2.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0];
        let s = strategy("trend", json!({"fast": 2, "slow": 3}), 1);
        assert_eq!(long_bars(&s, &p), [2, 3, 6, 7]);
    }

    #[test]
    fn buy_and_hold_is_long_from_the_first_bar() {
        let s = strategy("buy_and_hold", json!({}), 1);
        assert_eq!(long_bars(&s, &[1.0, 0.5, 2.0]), [0, 1, 2]);
        let s = strategy("buy_and_hold", json!({"position_fraction": 0.5}), 2);
        assert_eq!(s.target_weights(&[vec![1.0], vec![2.0]]), [[0.25, 0.25]]);
    }

    #[test]
    fn pairs_enters_flips_and_exits_on_the_spread_z_score() {
        // h = 1, lookback 4; spread A − B: 0 0 0 0 3 1 −3 −3 −1.
        // z: bar 4 +1.5 → short; bar 5 0 → flat; bar 6 −1.3 → long; bar 7 −0.833 holds;
        // bar 8 +0.261 → flat.
        let b = [
            100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 102.0, 100.0,
        ];
        let spread = [0.0, 0.0, 0.0, 0.0, 3.0, 1.0, -3.0, -3.0, -1.0];
        let a: Vec<f64> = b.iter().zip(spread).map(|(b, s)| b + s).collect();
        let s = strategy(
            "pairs",
            json!({"lookback": 4, "entry_z": 1.0, "exit_z": 0.5, "hedge_ratio": 1.0}),
            2,
        );
        let w = s.target_weights(&[a.clone(), b.to_vec()]);
        let short = [-0.95 * 103.0 / 203.0, 0.95 * 100.0 / 203.0];
        let long = [0.95 * 97.0 / 197.0, -0.95 * 100.0 / 197.0];
        let flat = [0.0, 0.0];
        assert_eq!(
            w,
            [flat, flat, flat, flat, short, flat, long, long, flat].map(|w| w.to_vec())
        );
    }

    #[test]
    fn pairs_hedge_ratio_is_ols_over_the_lookback() {
        assert_eq!(
            ols_slope(&[1.0, 2.0, 3.0, 4.0], &[3.0, 5.0, 7.0, 9.0]),
            Some(2.0)
        );
        assert_eq!(ols_slope(&[1.0, 1.0], &[3.0, 5.0]), None);
        // A = 2·B exactly (a constant spread: no signal) until a shock at bar 5. Over bars
        // 2..=5, OLS gives h = 14.5 / 5 = 2.9 and z = 0.9 / √0.9 = 0.949.
        let b = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0];
        let mut a: Vec<f64> = b.iter().map(|b| 2.0 * b).collect();
        a[5] += 3.0;
        let params = json!({"lookback": 4, "entry_z": 0.9, "exit_z": 0.0});
        let w = strategy("pairs", params, 2).target_weights(&[a.clone(), b.to_vec()]);
        assert!(w[..5].iter().all(|w| w == &[0.0, 0.0]), "{w:?}");
        let gross = 33.0 + 2.9 * 15.0;
        assert!((w[5][0] + 0.95 * 33.0 / gross).abs() < 1e-12, "{w:?}");
        assert!((w[5][1] - 0.95 * 2.9 * 15.0 / gross).abs() < 1e-12, "{w:?}");
        // Shares: 2.9 of B per share of A.
        assert!(((w[5][1] / 15.0) / (w[5][0] / 33.0) + 2.9).abs() < 1e-9);
        // z = 0.949 is not above 1.0.
        let params = json!({"lookback": 4, "entry_z": 1.0, "exit_z": 0.0});
        let w = strategy("pairs", params, 2).target_weights(&[a, b.to_vec()]);
        assert_eq!(w[5], [0.0, 0.0]);
    }

    #[test]
    fn no_strategy_looks_ahead() {
        // A deterministic random walk of 3 symbols; every prefix gives the same weights.
        let mut x = 42_u64;
        let mut series = vec![vec![100.0_f64]; 3];
        for _ in 1..300 {
            for s in &mut series {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let r = (x % 2001) as f64 / 1000.0 - 1.0; // −1 % .. +1 %
                let last = *s.last().unwrap();
                s.push(last * (1.0 + r / 50.0));
            }
        }
        let cases = [
            ("momentum", json!({"lookback": 5}), 3),
            ("mean_reversion", json!({"window": 10}), 3),
            ("trend", json!({"fast": 5, "slow": 12}), 3),
            ("buy_and_hold", json!(null), 3),
            ("pairs", json!({"lookback": 20, "entry_z": 1.0}), 2),
        ];
        for (name, params, n) in cases {
            let s = strategy(name, params, n);
            let full = s.target_weights(&series[..n]);
            assert!(full.iter().any(|w| w.iter().any(|&x| x != 0.0)), "{name}");
            for k in [1, 7, 50, 299] {
                let prefix: Vec<Vec<f64>> = series[..n].iter().map(|s| s[..k].to_vec()).collect();
                assert_eq!(s.target_weights(&prefix), full[..k], "{name} {k}");
            }
        }
    }

    #[test]
    fn parameters_take_defaults_and_refuse_what_is_wrong() {
        assert_eq!(
            strategy("momentum", json!({}), 1),
            Strategy::Momentum(Momentum {
                lookback: 20,
                threshold: 0.0,
                position_fraction: 0.95
            })
        );
        assert_eq!(
            strategy("pairs", json!(null), 2).params(),
            json!({"lookback": 60, "entry_z": 2.0, "exit_z": 0.5, "hedge_ratio": null, "position_fraction": 0.95})
        );
        assert_eq!(
            strategy("trend", json!({}), 1).params(),
            json!({"fast": 20, "slow": 50, "position_fraction": 0.95})
        );
        assert_eq!(
            strategy("mean_reversion", json!({}), 1).params(),
            json!({"window": 20, "entry_z": 1.0, "exit_z": 0.0, "position_fraction": 0.95})
        );
        assert_eq!(
            strategy("buy_and_hold", json!({}), 1).params(),
            json!({"position_fraction": 0.95})
        );
        let sym = |n: usize| (0..n).map(|i| format!("S{i}")).collect::<Vec<_>>();
        let err = |name: &str, params: Value, n: usize| {
            Strategy::new(name, &params, &sym(n))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("momentum", json!({"lookback": "20"}), 1),
            "strategy_params of momentum: `lookback`: invalid type: string \"20\", expected usize"
        );
        assert_eq!(
            err("momentum", json!({"threshold": 0.1, "lookback": -1}), 1),
            "strategy_params of momentum: `lookback`: invalid value: integer `-1`, expected usize"
        );
        let e = err("trend", json!({"fats": 5}), 1);
        assert!(
            e.starts_with(
                "strategy_params of trend: `fats`: unknown field `fats`, expected one of `fast`"
            ),
            "{e}"
        );
        assert_eq!(
            err("momentum", json!([1]), 1),
            "strategy_params of momentum: must be a JSON object, not [1]"
        );
        assert_eq!(
            err("trend", json!({"fast": 50, "slow": 50}), 1),
            "strategy_params of trend: `slow`: must be greater than fast (50), not 50"
        );
        assert_eq!(
            err("buy_and_hold", json!({"position_fraction": 1.5}), 1),
            "strategy_params of buy_and_hold: `position_fraction`: must be greater than 0 and at most 1, not 1.5"
        );
        assert_eq!(
            err("mean_reversion", json!({"exit_z": 2.0}), 1),
            "strategy_params of mean_reversion: `exit_z`: must be at most entry_z (1), not 2"
        );
        assert_eq!(
            err("pairs", json!({}), 1),
            "`symbols`: pairs needs exactly 2 symbols (A and B of the spread A - h*B), got 1"
        );
        assert_eq!(
            err("pairs", json!({"lookback": 2}), 2),
            "strategy_params of pairs: `lookback`: must be at least 3, not 2"
        );
        assert_eq!(
            err("momentum", json!({}), 0),
            "`symbols`: momentum needs at least 1 symbol, got none"
        );
        let e = Strategy::new("momentum", &json!({}), &["A".into(), "A".into()]).unwrap_err();
        assert_eq!(e.to_string(), "`symbols`: `A` is listed twice");
        assert_eq!(
            err("macd", json!({}), 1),
            "unknown strategy `macd`: the strategies are momentum, mean_reversion, pairs, trend and buy_and_hold"
        );
    }
}
