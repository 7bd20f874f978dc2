//! Deterministic synthetic inputs, for `quantbox bench` and the timing example: the
//! same seed gives the same data on every machine (xorshift64, no external RNG).

use crate::date::Date;
use crate::execution::{Fill, Order, OrderState, OrderType, Side};
use crate::series::Returns;

/// xorshift64: tiny and reproducible; not for anything but test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Any non-zero state works; spread small seeds first.
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15).max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` daily returns (uniform in about ±2 %, slight positive drift) dated on
/// consecutive days from 2015-01-01, with every `missing_every`-th one missing (0: none).
pub fn daily_returns(n: usize, seed: u64, missing_every: usize) -> Returns {
    let mut rng = Rng::new(seed);
    let first = Date::from_ymd(2015, 1, 1).map_or(0, Date::days);
    let dates = (0..n as i32).map(|i| Date::from_days(first + i)).collect();
    let values = (0..n)
        .map(|i| {
            let r = (rng.unit() - 0.48) * 0.04;
            if missing_every > 0 && i % missing_every == missing_every - 1 {
                f64::NAN
            } else {
                r
            }
        })
        .collect();
    // Dates strictly increase and values are finite or NaN: this cannot fail for n > 0.
    Returns::from_parts(dates, values).unwrap_or_else(|e| panic!("synthetic series: {e}"))
}

/// About `fills` fills over `fills / 2` orders on 20 symbols: most orders filled in two
/// pieces, some partially filled then cancelled, a few rejected; arrival prices on
/// most, acks on most.
pub fn orders_and_fills(fills: usize, seed: u64) -> (Vec<Order>, Vec<Fill>) {
    let mut rng = Rng::new(seed);
    let n_orders = fills.div_ceil(2).max(1);
    let symbols: Vec<String> = (0..20).map(|i| format!("SYM{i:02}")).collect();
    let mut orders = Vec::with_capacity(n_orders);
    let mut out = Vec::with_capacity(fills);
    for i in 0..n_orders {
        let id = 1_000_000 + i as u64 * 7;
        let side = if rng.next_u64() & 1 == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let mid = 50.0 + rng.unit() * 100.0;
        let quantity = 100.0;
        let submit_ms = 1_700_000_000_000 + i as i64 * 10;
        let roll = rng.unit();
        let final_state = if roll < 0.02 {
            OrderState::Rejected
        } else if roll < 0.08 {
            OrderState::Cancelled
        } else {
            OrderState::Filled
        };
        orders.push(Order {
            id,
            symbol: symbols[i % symbols.len()].clone(),
            side,
            quantity,
            order_type: OrderType::Market,
            limit_price: None,
            arrival_price: (rng.unit() < 0.97).then_some(mid),
            decision_ms: submit_ms - 2,
            submit_ms,
            ack_ms: (rng.unit() < 0.99).then(|| submit_ms + 1 + (rng.next_u64() % 40) as i64),
            final_state,
            reject_reason: (final_state == OrderState::Rejected).then(|| "risk limit".to_owned()),
        });
        let pieces: &[f64] = match final_state {
            OrderState::Filled => &[60.0, 40.0],
            OrderState::Cancelled => &[30.0],
            _ => &[],
        };
        for &q in pieces {
            if out.len() == fills {
                break;
            }
            let price = mid * (1.0 + (rng.unit() - 0.45) * 0.002);
            out.push(Fill {
                order_id: id,
                time_ms: submit_ms + 5,
                quantity: q,
                price,
                fee: q * price * 0.0001,
            });
        }
    }
    // Top up to exactly `fills` with extra pieces on filled orders' ids.
    let mut k = 0;
    while out.len() < fills {
        let o = &orders[k % orders.len()];
        out.push(Fill {
            order_id: o.id,
            time_ms: o.submit_ms + 7,
            quantity: 1.0,
            price: o.arrival_price.unwrap_or(100.0),
            fee: 0.0,
        });
        k += 1;
    }
    (orders, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let a = daily_returns(2520, 42, 0);
        let b = daily_returns(2520, 42, 0);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2520);
        assert_eq!(a.missing(), 0);
        assert_eq!(daily_returns(100, 1, 10).missing(), 10);
        let (o, f) = orders_and_fills(10_001, 3);
        assert_eq!(f.len(), 10_001);
        assert_eq!(o.len(), 5_001);
        let s = crate::execution::execution_stats(&o, &f).unwrap();
        assert_eq!(s.unmatched_fills, 0);
        assert_eq!(s.executions, 10_001);
    }
}
