//! Round-trip trade statistics (metrics.md, "Trade statistics").
//!
//! The input is one realised P&L per **closed** round trip (entry to flat), in account
//! currency, net of whatever costs the caller includes. Period returns say nothing about
//! trades: a winning day is not a winning trade, so there is deliberately no
//! "win rate over periods" here.

use std::collections::BTreeMap;

use serde::Serialize;

/// A P&L that is not a number.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TradeError {
    #[error("the P&L of trade {index} is {value}; a realised P&L must be finite")]
    NonFinite { index: usize, value: f64 },
}

/// Statistics of closed round trips. Figures that cannot be computed are `None`, with
/// the reason under their name in `reasons`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TradeStats {
    /// Closed round trips.
    pub total: u64,
    /// Trades with P&L > 0.
    pub winning: u64,
    /// Trades with P&L < 0.
    pub losing: u64,
    /// Trades with P&L exactly 0 (in the win rate's denominator).
    pub breakeven: u64,
    /// `winning / total` (breakeven trades count in the denominator).
    pub win_rate: Option<f64>,
    /// Sum of the winners' P&L (0 with none).
    pub gross_profit: f64,
    /// Sum of the losers' P&L, a negative number (0 with none).
    pub gross_loss: f64,
    /// Sum of every P&L.
    pub net_profit: f64,
    /// `gross_profit / abs(gross_loss)`; `None` when there is no loss.
    pub profit_factor: Option<f64>,
    /// Mean P&L of the winners.
    pub average_win: Option<f64>,
    /// Mean P&L of the losers (negative).
    pub average_loss: Option<f64>,
    /// The largest winner's P&L.
    pub largest_win: Option<f64>,
    /// The largest loser's P&L (the most negative).
    pub largest_loss: Option<f64>,
    pub reasons: BTreeMap<&'static str, String>,
}

/// Statistics of closed round trips from their realised P&Ls (one pass).
///
/// - win rate = winners / all closed trades; breakeven trades count in the denominator
///   and are reported separately (quantstats `win_rate` drops zeros — not followed);
/// - profit factor = gross profit / abs(gross loss), `None` with a reason when there is
///   no loss (a would-be +inf, or 0/0 with no trade at all);
/// - average win / loss = mean P&L of winners / losers (the loss is negative);
/// - largest win / loss = the extreme P&Ls.
///
/// No trades: zero counts, `None` figures with reasons. A non-finite P&L is an error.
pub fn trade_stats(pnls: &[f64]) -> Result<TradeStats, TradeError> {
    let (mut winning, mut losing, mut breakeven) = (0u64, 0u64, 0u64);
    let (mut gross_profit, mut gross_loss, mut net) = (0.0f64, 0.0f64, 0.0f64);
    let (mut largest_win, mut largest_loss) = (f64::NEG_INFINITY, f64::INFINITY);
    for (index, &pnl) in pnls.iter().enumerate() {
        if !pnl.is_finite() {
            return Err(TradeError::NonFinite { index, value: pnl });
        }
        net += pnl;
        if pnl > 0.0 {
            winning += 1;
            gross_profit += pnl;
            largest_win = largest_win.max(pnl);
        } else if pnl < 0.0 {
            losing += 1;
            gross_loss += pnl;
            largest_loss = largest_loss.min(pnl);
        } else {
            breakeven += 1;
        }
    }
    let total = pnls.len() as u64;
    let mut reasons = BTreeMap::new();
    let mut none = |name: &'static str, why: &str| {
        reasons.insert(name, why.to_owned());
        None
    };
    let win_rate = if total > 0 {
        Some(winning as f64 / total as f64)
    } else {
        none("win_rate", "no closed trades")
    };
    let profit_factor = if losing > 0 {
        Some(gross_profit / gross_loss.abs())
    } else if total == 0 {
        none("profit_factor", "no closed trades")
    } else {
        none(
            "profit_factor",
            "no losing trades; the profit factor is undefined (gross loss is 0)",
        )
    };
    let (average_win, largest_win) = if winning > 0 {
        (Some(gross_profit / winning as f64), Some(largest_win))
    } else {
        none("average_win", "no winning trades");
        (None, none("largest_win", "no winning trades"))
    };
    let (average_loss, largest_loss) = if losing > 0 {
        (Some(gross_loss / losing as f64), Some(largest_loss))
    } else {
        none("average_loss", "no losing trades");
        (None, none("largest_loss", "no losing trades"))
    };
    Ok(TradeStats {
        total,
        winning,
        losing,
        breakeven,
        win_rate,
        gross_profit,
        gross_loss,
        net_profit: net,
        profit_factor,
        average_win,
        average_loss,
        largest_win,
        largest_loss,
        reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::returns::tests::close;

    #[test]
    fn mixed_trades() {
        // p = np.array([120.5, -40.25, 0.0, 310.0, -95.5, 15.75, 0.0, -12.0])
        let p = [120.5, -40.25, 0.0, 310.0, -95.5, 15.75, 0.0, -12.0];
        let s = trade_stats(&p).unwrap();
        assert_eq!((s.total, s.winning, s.losing, s.breakeven), (8, 3, 3, 2));
        // (p > 0).sum() / len(p)
        assert_eq!(s.win_rate, Some(0.375));
        // p[p > 0].sum(), p[p < 0].sum(), p.sum()
        close(s.gross_profit, 446.25);
        close(s.gross_loss, -147.75);
        close(s.net_profit, 298.5);
        // p[p > 0].sum() / abs(p[p < 0].sum())
        close(s.profit_factor.unwrap(), 3.020304568527919);
        // p[p > 0].mean(), p[p < 0].mean()
        close(s.average_win.unwrap(), 148.75);
        close(s.average_loss.unwrap(), -49.25);
        assert_eq!(s.largest_win, Some(310.0));
        assert_eq!(s.largest_loss, Some(-95.5));
        assert!(s.reasons.is_empty());
    }

    #[test]
    fn no_trades() {
        let s = trade_stats(&[]).unwrap();
        assert_eq!((s.total, s.winning, s.losing, s.breakeven), (0, 0, 0, 0));
        assert_eq!(s.win_rate, None);
        assert_eq!(s.profit_factor, None);
        assert_eq!(s.average_win, None);
        assert_eq!(s.largest_loss, None);
        assert_eq!(s.reasons["win_rate"], "no closed trades");
        assert_eq!(s.reasons["profit_factor"], "no closed trades");
        assert_eq!(s.gross_profit, 0.0);
    }

    #[test]
    fn no_losses_means_no_profit_factor() {
        let s = trade_stats(&[10.0, 0.0, 5.0]).unwrap();
        assert_eq!(s.profit_factor, None);
        assert_eq!(
            s.reasons["profit_factor"],
            "no losing trades; the profit factor is undefined (gross loss is 0)"
        );
        assert_eq!(s.average_loss, None);
        // 2 winners out of 3 (the breakeven counts).
        close(s.win_rate.unwrap(), 2.0 / 3.0);
    }

    #[test]
    fn all_losses() {
        let s = trade_stats(&[-1.0, -3.0]).unwrap();
        assert_eq!(s.win_rate, Some(0.0));
        assert_eq!(s.profit_factor, Some(0.0));
        assert_eq!(s.average_loss, Some(-2.0));
        assert_eq!(s.largest_loss, Some(-3.0));
        assert_eq!(s.largest_win, None);
    }

    #[test]
    fn refuses_non_finite_pnl() {
        assert_eq!(
            trade_stats(&[1.0, f64::NAN]).unwrap_err().to_string(),
            "the P&L of trade 1 is NaN; a realised P&L must be finite"
        );
    }
}
