//! A paper broker for daily bars: how an order becomes a fill, a partial fill or a
//! reject, at what price, for what fee, and when the acknowledgement comes. Every number
//! is a field of [`BrokerConfig`] (serde, with the defaults below); nothing is random
//! except the acknowledgement latency, which is drawn from a seeded generator, so a run
//! is reproducible.
//!
//! - **When and at what price.** A market order decided at bar t's close executes at bar
//!   t+1's open. Buys pay `open · (1 + s)`, sells receive `open · (1 − s)`, with the
//!   slippage `s = (half_spread_bps + impact_bps · participation) / 10 000` and
//!   `participation = filled quantity / bar volume` (a fraction: 10 % of the volume adds
//!   1 bp of impact at the default 10 bps).
//! - **Liquidity.** At most `max_participation` (default 10 %) of the bar's volume,
//!   rounded down to whole shares, fills; the rest of the order is cancelled and it ends
//!   `partially_filled`. An order of which not one share can fill is rejected (`no
//!   liquidity`). A bar with volume 0 (volume unknown, as for some indices) puts no cap
//!   and no impact on the order.
//! - **Fees.** `max(min_fee, fee_bps / 10 000 · notional)`, notional = filled quantity ×
//!   fill price; per order, in the quote currency.
//! - **Cash.** A buy whose cost (notional + fee) exceeds the cash is rejected:
//!   `insufficient cash: need X, have Y` (so is a sell whose proceeds do not pay its fee).
//!   The check is made at execution, with the fill price, after the acknowledgement.
//! - **Shorts.** The caller says how far the account may be short
//!   ([`Account::max_short_value`]): 0 is long-only (a sell beyond the position is
//!   rejected); the backtest allows `pairs` to be short up to its `position_fraction` of
//!   equity. Short sales credit their proceeds to cash; there is no margin interest, no
//!   borrow fee and no margin call.
//! - **Latency.** The acknowledgement comes `latency_mean_ms ± latency_jitter_ms` after
//!   the submission (uniform over whole milliseconds, never negative), drawn from an
//!   xorshift64 generator seeded with `seed` (through SplitMix64).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Bar, OrderState, Side};
use crate::strategy::from_json_naming_field;

/// The paper broker's rules. Deserialised with defaults for missing fields; unknown
/// fields are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Half the bid-ask spread, paid on every fill, in bps of the price. Default 5.
    pub half_spread_bps: f64,
    /// Market impact at 100 % participation, in bps; scaled by the participation.
    /// Default 10.
    pub impact_bps: f64,
    /// The largest fraction of a bar's volume one order may take, in (0, 1]. Default 0.1.
    pub max_participation: f64,
    /// Fee in bps of the notional. Default 1.
    pub fee_bps: f64,
    /// The smallest fee of an order, in the quote currency. Default 1.0.
    pub min_fee: f64,
    /// Mean submit-to-acknowledgement latency, ms. Default 20.
    pub latency_mean_ms: u64,
    /// The latency is uniform in mean ± jitter, ms. Default 10.
    pub latency_jitter_ms: u64,
    /// Seed of the latency generator (mixed by SplitMix64 into xorshift64's non-zero
    /// state; any value, 0 included, is fine). Default 1.
    pub seed: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            half_spread_bps: 5.0,
            impact_bps: 10.0,
            max_participation: 0.1,
            fee_bps: 1.0,
            min_fee: 1.0,
            latency_mean_ms: 20,
            latency_jitter_ms: 10,
            seed: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", match field { Some(f) => format!("broker config: `{f}`: {reason}"), None => format!("broker config: {reason}") })]
pub struct BrokerError {
    pub field: Option<String>,
    pub reason: String,
}

impl BrokerConfig {
    /// From JSON (`null` = every default); an error names the field.
    pub fn from_json(value: &Value) -> Result<Self, BrokerError> {
        let config: Self = from_json_naming_field(value)
            .map_err(|(field, reason)| BrokerError { field, reason })?;
        config.validate()?;
        Ok(config)
    }

    /// Every rate finite and not negative; `max_participation` in (0, 1].
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |field: &str, reason: String| BrokerError {
            field: Some(field.to_owned()),
            reason,
        };
        for (field, x) in [
            ("half_spread_bps", self.half_spread_bps),
            ("impact_bps", self.impact_bps),
            ("fee_bps", self.fee_bps),
            ("min_fee", self.min_fee),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(bad(
                    field,
                    format!("must be a finite number, at least 0, not {x}"),
                ));
            }
        }
        let p = self.max_participation;
        if !(p > 0.0 && p <= 1.0) {
            return Err(bad(
                "max_participation",
                format!("must be greater than 0 and at most 1, not {p}"),
            ));
        }
        Ok(())
    }
}

/// What the broker needs to know of the account for one order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Account {
    pub cash: f64,
    /// Shares held of the order's symbol (negative = short).
    pub position: f64,
    /// How large a short position in this symbol may become, in the quote currency at
    /// the fill price; 0 = long-only.
    pub max_short_value: f64,
}

/// How an order ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Execution {
    Filled(FillReport),
    Rejected(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FillReport {
    /// Shares filled, ≤ the order's quantity.
    pub quantity: f64,
    /// Per share, slippage included.
    pub price: f64,
    pub fee: f64,
    /// `filled` or `partially_filled`.
    pub state: OrderState,
    /// Filled quantity / bar volume (0 when the volume is unknown).
    pub participation: f64,
    /// Slippage against the open, bps (a cost: positive for buys and sells alike).
    pub slippage_bps: f64,
}

impl FillReport {
    /// The change in cash: −(notional + fee) for a buy, notional − fee for a sell.
    pub fn cash_flow(&self, side: Side) -> f64 {
        let notional = self.quantity * self.price;
        match side {
            Side::Buy => -notional - self.fee,
            Side::Sell => notional - self.fee,
        }
    }
}

/// The paper broker: its rules and the state of its latency generator.
#[derive(Clone, Debug)]
pub struct PaperBroker {
    config: BrokerConfig,
    rng: u64,
}

/// Replaces a mixed seed of 0, on which xorshift would stay 0.
const ZERO_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Steele, Lea, Flood 2014).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl PaperBroker {
    pub fn new(config: BrokerConfig) -> Result<Self, BrokerError> {
        config.validate()?;
        // Small seeds (1, 2, 7) would start xorshift on a poor sequence: mix them first.
        let rng = match splitmix64(config.seed) {
            0 => ZERO_SEED,
            x => x,
        };
        Ok(Self { config, rng })
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The next order's submit-to-acknowledgement latency, ms.
    pub fn ack_latency_ms(&mut self) -> i64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let (mean, jitter) = (
            self.config.latency_mean_ms.min(1 << 40) as i64,
            self.config.latency_jitter_ms.min(1 << 40) as i64,
        );
        let offset = (x % (2 * jitter as u64 + 1)) as i64 - jitter;
        (mean + offset).max(0)
    }

    /// `max(min_fee, fee_bps · notional)`.
    pub fn fee(&self, notional: f64) -> f64 {
        (self.config.fee_bps / 10_000.0 * notional.abs()).max(self.config.min_fee)
    }

    /// Slippage in bps at a participation (a fraction of the bar's volume).
    pub fn slippage_bps(&self, participation: f64) -> f64 {
        self.config.half_spread_bps + self.config.impact_bps * participation
    }

    /// Executes a market order of `quantity` shares (> 0) at `bar`'s open (the bar after
    /// the one it was decided at).
    pub fn execute(&self, side: Side, quantity: f64, bar: &Bar, account: &Account) -> Execution {
        if !(quantity.is_finite() && quantity > 0.0) {
            return Execution::Rejected(format!("invalid quantity {quantity}"));
        }
        if !(bar.open.is_finite() && bar.open > 0.0) {
            return Execution::Rejected(format!("no price: the open is {}", bar.open));
        }
        let known_volume = bar.volume.is_finite() && bar.volume > 0.0;
        let (filled, participation) = if known_volume {
            let cap = (self.config.max_participation * bar.volume).floor();
            let filled = quantity.min(cap);
            if filled <= 0.0 {
                return Execution::Rejected(format!(
                    "no liquidity: {} % of the bar's volume {} is less than one share",
                    self.config.max_participation * 100.0,
                    bar.volume
                ));
            }
            (filled, filled / bar.volume)
        } else {
            (quantity, 0.0)
        };
        let slippage_bps = self.slippage_bps(participation);
        let s = slippage_bps / 10_000.0;
        let price = match side {
            Side::Buy => bar.open * (1.0 + s),
            Side::Sell => bar.open * (1.0 - s),
        };
        let notional = filled * price;
        let fee = self.fee(notional);
        match side {
            Side::Buy => {
                let cost = notional + fee;
                if cost > account.cash {
                    return Execution::Rejected(format!(
                        "insufficient cash: need {cost:.2}, have {:.2}",
                        account.cash
                    ));
                }
            }
            Side::Sell => {
                let after = account.position - filled;
                if after < 0.0 {
                    let short_value = -after * price;
                    if account.max_short_value <= 0.0 {
                        return Execution::Rejected(format!(
                            "short selling not allowed: selling {filled} with a position of {}",
                            account.position
                        ));
                    }
                    if short_value > account.max_short_value {
                        return Execution::Rejected(format!(
                            "short limit: a short position of {short_value:.2} would exceed {:.2}",
                            account.max_short_value
                        ));
                    }
                }
                if account.cash + notional - fee < 0.0 {
                    return Execution::Rejected(format!(
                        "insufficient cash: need {fee:.2} for the fee, have {:.2}",
                        account.cash + notional
                    ));
                }
            }
        }
        Execution::Filled(FillReport {
            quantity: filled,
            price,
            fee,
            state: if filled < quantity {
                OrderState::PartiallyFilled
            } else {
                OrderState::Filled
            },
            participation,
            slippage_bps,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::date::Day;

    fn bar(open: f64, volume: f64) -> Bar {
        Bar {
            day: Day(14_613),
            open,
            high: open,
            low: open,
            close: open,
            adj_close: open,
            volume,
        }
    }

    fn broker() -> PaperBroker {
        PaperBroker::new(BrokerConfig::default()).unwrap()
    }

    const RICH: Account = Account {
        cash: 1e9,
        position: 0.0,
        max_short_value: 0.0,
    };

    fn filled(e: Execution) -> FillReport {
        match e {
            Execution::Filled(f) => f,
            Execution::Rejected(r) => panic!("rejected: {r}"),
        }
    }

    #[test]
    fn fills_at_the_open_with_half_spread_and_impact() {
        // 1,000 shares of a 100,000-share bar: participation 1 %, slippage 5 + 10 · 0.01
        // = 5.1 bps.
        let f = filled(broker().execute(Side::Buy, 1_000.0, &bar(50.0, 100_000.0), &RICH));
        assert_eq!(f.state, OrderState::Filled);
        assert_eq!((f.quantity, f.participation), (1_000.0, 0.01));
        assert!((f.slippage_bps - 5.1).abs() < 1e-12);
        assert!((f.price - 50.0 * 1.000_51).abs() < 1e-12, "{}", f.price);
        assert!((f.fee - 1_000.0 * 50.0 * 1.000_51 * 1e-4).abs() < 1e-12);
        assert!((f.cash_flow(Side::Buy) + f.quantity * f.price + f.fee).abs() < 1e-9);
        // A sell receives less than the open by the same amount.
        let long = Account {
            position: 1_000.0,
            ..RICH
        };
        let f = filled(broker().execute(Side::Sell, 1_000.0, &bar(50.0, 100_000.0), &long));
        assert!((f.price - 50.0 * 0.999_49).abs() < 1e-12, "{}", f.price);
        // Unknown volume: no cap, no impact.
        let f = filled(broker().execute(Side::Buy, 1e6, &bar(10.0, 0.0), &RICH));
        assert_eq!(
            (f.quantity, f.participation, f.slippage_bps),
            (1e6, 0.0, 5.0)
        );
    }

    #[test]
    fn caps_at_the_participation_limit_and_cancels_the_rest() {
        // 10 % of 12,345 shares is 1,234 (rounded down).
        let f = filled(broker().execute(Side::Buy, 5_000.0, &bar(20.0, 12_345.0), &RICH));
        assert_eq!(f.state, OrderState::PartiallyFilled);
        assert_eq!(f.quantity, 1_234.0);
        let part = 1_234.0 / 12_345.0;
        assert!((f.slippage_bps - (5.0 + 10.0 * part)).abs() < 1e-12);
        assert!((f.price - 20.0 * (1.0 + (5.0 + 10.0 * part) / 1e4)).abs() < 1e-12);
        // Exactly at the cap is a full fill; not one share is a reject.
        let f = filled(broker().execute(Side::Buy, 1_234.0, &bar(20.0, 12_345.0), &RICH));
        assert_eq!(f.state, OrderState::Filled);
        let e = broker().execute(Side::Buy, 5.0, &bar(20.0, 9.0), &RICH);
        assert_eq!(
            e,
            Execution::Rejected(
                "no liquidity: 10 % of the bar's volume 9 is less than one share".into()
            )
        );
    }

    #[test]
    fn rejects_a_buy_it_cannot_pay_for() {
        // 100 shares at 100 · 1.0005 = 10,005 plus a fee of 1.0005 (1 bp > the minimum).
        let account = Account {
            cash: 10_005.5,
            ..RICH
        };
        let e = broker().execute(Side::Buy, 100.0, &bar(100.0, 0.0), &account);
        assert_eq!(
            e,
            Execution::Rejected("insufficient cash: need 10006.00, have 10005.50".into())
        );
        let account = Account {
            cash: 10_006.001,
            ..RICH
        };
        let f = filled(broker().execute(Side::Buy, 100.0, &bar(100.0, 0.0), &account));
        assert!((f.cash_flow(Side::Buy) + 10_006.000_5).abs() < 1e-9);
    }

    #[test]
    fn refuses_shorts_unless_allowed_and_within_the_limit() {
        let e = broker().execute(Side::Sell, 10.0, &bar(100.0, 1e6), &RICH);
        assert_eq!(
            e,
            Execution::Rejected(
                "short selling not allowed: selling 10 with a position of 0".into()
            )
        );
        let allowed = Account {
            max_short_value: 1_000.0,
            ..RICH
        };
        assert!(matches!(
            broker().execute(Side::Sell, 9.0, &bar(100.0, 1e6), &allowed),
            Execution::Filled(_)
        ));
        let e = broker().execute(Side::Sell, 11.0, &bar(100.0, 1e6), &allowed);
        assert!(matches!(e, Execution::Rejected(r) if r.starts_with("short limit")));
    }

    #[test]
    fn fee_is_the_larger_of_the_minimum_and_the_rate() {
        let b = broker();
        assert_eq!(b.fee(5_000.0), 1.0); // 1 bp of 5,000 is 0.50
        assert_eq!(b.fee(10_000.0), 1.0); // exactly the minimum
        assert!((b.fee(250_000.0) - 25.0).abs() < 1e-12);
        let b = PaperBroker::new(BrokerConfig {
            min_fee: 0.0,
            fee_bps: 0.0,
            ..BrokerConfig::default()
        })
        .unwrap();
        assert_eq!(b.fee(1e6), 0.0);
    }

    #[test]
    fn latency_is_deterministic_for_a_seed() {
        let draw = |seed: u64| {
            let mut b = PaperBroker::new(BrokerConfig {
                seed,
                ..BrokerConfig::default()
            })
            .unwrap();
            (0..1_000).map(|_| b.ack_latency_ms()).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        // SplitMix64(7) into xorshift64 (13, 7, 17), 20 + x mod 21 − 10; checked in Python.
        assert_eq!(a[..8], [19, 20, 26, 20, 14, 16, 25, 27]);
        assert!(a.iter().all(|l| (10..=30).contains(l)));
        assert_eq!(*a.iter().min().unwrap(), 10);
        assert_eq!(*a.iter().max().unwrap(), 30);
        let mean = a.iter().sum::<i64>() as f64 / a.len() as f64;
        assert!((mean - 20.0).abs() < 0.5, "{mean}");
        // Seed 0 works (replaced), and no jitter means the mean exactly.
        assert!(draw(0).iter().all(|l| (10..=30).contains(l)));
        let mut b = PaperBroker::new(BrokerConfig {
            latency_jitter_ms: 0,
            ..BrokerConfig::default()
        })
        .unwrap();
        assert_eq!(b.ack_latency_ms(), 20);
    }

    #[test]
    fn config_from_json_has_defaults_and_names_bad_fields() {
        assert_eq!(
            BrokerConfig::from_json(&json!(null)).unwrap(),
            BrokerConfig::default()
        );
        let c = BrokerConfig::from_json(&json!({"fee_bps": 2, "seed": 9})).unwrap();
        assert_eq!((c.fee_bps, c.seed, c.min_fee), (2.0, 9, 1.0));
        let e = BrokerConfig::from_json(&json!({"seed": "x"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("seed"));
        assert!(
            e.to_string()
                .starts_with("broker config: `seed`: invalid type"),
            "{e}"
        );
        let e = BrokerConfig::from_json(&json!({"max_participation": 0})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "broker config: `max_participation`: must be greater than 0 and at most 1, not 0"
        );
        let e = BrokerConfig::from_json(&json!({"spread": 1})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("spread"));
    }
}
