//! Trading data: strategies and their series, orders, fills, closed trades, feed
//! heartbeats, and daily bars. Every write call is one transaction.

use quantbox_sandbox::{StoreError, Timestamp};
use quantbox_trading::{
    Bar, Day, Fill, Heartbeat, Order, OrderState, SeriesKind, SeriesPoint, Side, StrategyInfo,
    SymbolInfo, Trade, TradingStore,
};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::{Ctx, SqliteStore};

fn ensure_strategy(tx: &Transaction<'_>, name: &str, source: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO strategies (name, source, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![name, source, Timestamp::now().unix_ms()]))
    .ctx(|| format!("recording strategy {name}"))?;
    Ok(())
}

fn finite(what: &str, field: &str, v: f64) -> Result<(), StoreError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(StoreError(format!(
            "{what}: {field} is {v}, not a finite number"
        )))
    }
}

fn side(s: &str) -> Side {
    Side::parse(s).unwrap_or(Side::Buy)
}

fn order_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        strategy: r.get(0)?,
        id: r.get(1)?,
        symbol: r.get(2)?,
        side: side(&r.get::<_, String>(3)?),
        quantity: r.get(4)?,
        order_type: r.get(5)?,
        limit_price: r.get(6)?,
        arrival_price: r.get(7)?,
        decision_ms: r.get(8)?,
        submit_ms: r.get(9)?,
        ack_ms: r.get(10)?,
        state: OrderState::parse(&r.get::<_, String>(11)?).unwrap_or(OrderState::Failed),
        reject_reason: r.get(12)?,
        simulated: r.get(13)?,
    })
}

const ORDER_COLS: &str = "strategy, id, symbol, side, quantity, order_type, limit_price, arrival_price, decision_ms, submit_ms, ack_ms, state, reject_reason, simulated";

impl SqliteStore {
    fn write_series(
        &self,
        strategy: &str,
        source: &str,
        kind: SeriesKind,
        points: &[SeriesPoint],
        replace: bool,
    ) -> Result<(), StoreError> {
        let what = || format!("storing the {} series of {strategy}", kind.as_str());
        for p in points {
            finite(&what(), "value", p.value)?;
        }
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        ensure_strategy(&tx, strategy, source)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT series_kind FROM strategies WHERE name = ?1",
                [strategy],
                |r| r.get(0),
            )
            .ctx(what)?;
        if !replace
            && let Some(k) = existing.as_deref().and_then(SeriesKind::parse)
            && k != kind
        {
            return Err(StoreError(format!(
                "{}: the strategy already has a {} series",
                what(),
                k.as_str()
            )));
        }
        if replace {
            tx.execute(
                "DELETE FROM strategy_series WHERE strategy = ?1",
                [strategy],
            )
            .ctx(what)?;
        } else if let Some(first) = points.first() {
            let last: Option<i64> = tx
                .query_row(
                    "SELECT MAX(t_ms) FROM strategy_series WHERE strategy = ?1",
                    [strategy],
                    |r| r.get(0),
                )
                .ctx(what)?;
            if let Some(last) = last
                && first.t_ms <= last
            {
                return Err(StoreError(format!(
                    "{}: a point at {} is not after the last stored one ({})",
                    what(),
                    first.t_ms,
                    last
                )));
            }
        }
        tx.execute(
            "UPDATE strategies SET series_kind = ?2 WHERE name = ?1",
            params![strategy, kind.as_str()],
        )
        .ctx(what)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO strategy_series (strategy, t_ms, value) VALUES (?1, ?2, ?3)",
                )
                .ctx(what)?;
            for p in points {
                stmt.execute(params![strategy, p.t_ms, p.value]).ctx(what)?;
            }
        }
        tx.commit().ctx(what)
    }

    fn info(&self, name: &str) -> Result<Option<StrategyInfo>, StoreError> {
        let what = || format!("reading strategy {name}");
        let conn = self.conn();
        conn.query_row(
            "SELECT s.name, s.source, s.series_kind, s.feed_interval_ms,
                    (SELECT COUNT(*) FROM strategy_series WHERE strategy = s.name),
                    (SELECT MIN(t_ms) FROM strategy_series WHERE strategy = s.name),
                    (SELECT MAX(t_ms) FROM strategy_series WHERE strategy = s.name),
                    (SELECT COUNT(*) FROM orders WHERE strategy = s.name),
                    (SELECT COUNT(*) FROM fills WHERE strategy = s.name),
                    (SELECT COUNT(*) FROM trades WHERE strategy = s.name)
             FROM strategies s WHERE s.name = ?1",
            [name],
            |r| {
                Ok(StrategyInfo {
                    name: r.get(0)?,
                    source: r.get(1)?,
                    series_kind: r
                        .get::<_, Option<String>>(2)?
                        .as_deref()
                        .and_then(SeriesKind::parse),
                    feed_interval_ms: r.get(3)?,
                    points: r.get::<_, i64>(4)? as u64,
                    first_ms: r.get(5)?,
                    last_ms: r.get(6)?,
                    orders: r.get::<_, i64>(7)? as u64,
                    fills: r.get::<_, i64>(8)? as u64,
                    trades: r.get::<_, i64>(9)? as u64,
                })
            },
        )
        .optional()
        .ctx(what)
    }
}

impl TradingStore for SqliteStore {
    fn replace_series(
        &self,
        strategy: &str,
        source: &str,
        kind: SeriesKind,
        points: &[SeriesPoint],
    ) -> Result<(), StoreError> {
        self.write_series(strategy, source, kind, points, true)
    }

    fn append_series(
        &self,
        strategy: &str,
        source: &str,
        kind: SeriesKind,
        points: &[SeriesPoint],
    ) -> Result<(), StoreError> {
        self.write_series(strategy, source, kind, points, false)
    }

    fn series(&self, strategy: &str) -> Result<Option<(SeriesKind, Vec<SeriesPoint>)>, StoreError> {
        let what = || format!("reading the series of {strategy}");
        let conn = self.conn();
        let kind: Option<Option<String>> = conn
            .query_row(
                "SELECT series_kind FROM strategies WHERE name = ?1",
                [strategy],
                |r| r.get(0),
            )
            .optional()
            .ctx(what)?;
        let Some(kind) = kind.flatten().as_deref().and_then(SeriesKind::parse) else {
            return Ok(None);
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT t_ms, value FROM strategy_series WHERE strategy = ?1 ORDER BY t_ms",
            )
            .ctx(what)?;
        let points = stmt
            .query_map([strategy], |r| {
                Ok(SeriesPoint {
                    t_ms: r.get(0)?,
                    value: r.get(1)?,
                })
            })
            .ctx(what)?
            .collect::<Result<Vec<_>, _>>()
            .ctx(what)?;
        Ok(Some((kind, points)))
    }

    fn strategies(&self) -> Result<Vec<StrategyInfo>, StoreError> {
        let names: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached("SELECT name FROM strategies ORDER BY name")
                .ctx(|| "listing strategies".into())?;
            stmt.query_map([], |r| r.get(0))
                .ctx(|| "listing strategies".into())?
                .collect::<Result<Vec<_>, _>>()
                .ctx(|| "listing strategies".into())?
        };
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Some(i) = self.info(&n)? {
                out.push(i);
            }
        }
        Ok(out)
    }

    fn strategy(&self, name: &str) -> Result<Option<StrategyInfo>, StoreError> {
        self.info(name)
    }

    fn reset_strategy(
        &self,
        strategy: &str,
        source: &str,
        feed_interval_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let what = || format!("resetting strategy {strategy}");
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        // Fills and the rest go with the strategy (ON DELETE CASCADE).
        tx.execute("DELETE FROM fills WHERE strategy = ?1", [strategy])
            .ctx(what)?;
        tx.execute("DELETE FROM strategies WHERE name = ?1", [strategy])
            .ctx(what)?;
        tx.execute(
            "INSERT INTO strategies (name, source, feed_interval_ms, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![strategy, source, feed_interval_ms, Timestamp::now().unix_ms()],
        )
        .ctx(what)?;
        tx.commit().ctx(what)
    }

    fn put_orders(&self, orders: &[Order]) -> Result<(), StoreError> {
        let what = || format!("storing {} order(s)", orders.len());
        for o in orders {
            let w = format!("order {} of {}", o.id, o.strategy);
            finite(&w, "quantity", o.quantity)?;
            for (f, v) in [
                ("limit_price", o.limit_price),
                ("arrival_price", o.arrival_price),
            ] {
                if let Some(v) = v {
                    finite(&w, f, v)?;
                }
            }
        }
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO orders ({ORDER_COLS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ))
                .ctx(what)?;
            let mut seen = std::collections::HashSet::new();
            for o in orders {
                if seen.insert(o.strategy.as_str()) {
                    ensure_strategy(
                        &tx,
                        &o.strategy,
                        if o.simulated { "agent" } else { "import" },
                    )?;
                }
                stmt.execute(params![
                    o.strategy,
                    o.id,
                    o.symbol,
                    o.side.as_str(),
                    o.quantity,
                    o.order_type,
                    o.limit_price,
                    o.arrival_price,
                    o.decision_ms,
                    o.submit_ms,
                    o.ack_ms,
                    o.state.as_str(),
                    o.reject_reason,
                    o.simulated,
                ])
                .ctx(what)?;
            }
        }
        tx.commit().ctx(what)
    }

    fn put_fills(&self, fills: &[Fill]) -> Result<(), StoreError> {
        let what = || format!("storing {} fill(s)", fills.len());
        for f in fills {
            let w = format!("fill of order {} of {}", f.order_id, f.strategy);
            finite(&w, "quantity", f.quantity)?;
            finite(&w, "price", f.price)?;
            finite(&w, "fee", f.fee)?;
        }
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO fills (strategy, order_id, t_ms, quantity, price, fee, simulated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .ctx(what)?;
            for f in fills {
                stmt.execute(params![
                    f.strategy,
                    f.order_id,
                    f.t_ms,
                    f.quantity,
                    f.price,
                    f.fee,
                    f.simulated
                ])
                .map_err(|e| {
                    StoreError(format!(
                        "{}: fill of order {} of {}: {e}",
                        what(),
                        f.order_id,
                        f.strategy
                    ))
                })?;
            }
        }
        tx.commit().ctx(what)
    }

    fn put_trades(&self, trades: &[Trade]) -> Result<(), StoreError> {
        let what = || format!("storing {} trade(s)", trades.len());
        for t in trades {
            let w = format!("trade {} of {}", t.id, t.strategy);
            for (f, v) in [
                ("quantity", t.quantity),
                ("entry_price", t.entry_price),
                ("exit_price", t.exit_price),
                ("pnl", t.pnl),
                ("fees", t.fees),
            ] {
                finite(&w, f, v)?;
            }
        }
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO trades (strategy, id, symbol, side, quantity, entry_ms, exit_ms,
                       entry_price, exit_price, pnl, fees, simulated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .ctx(what)?;
            let mut seen = std::collections::HashSet::new();
            for t in trades {
                if seen.insert(t.strategy.as_str()) {
                    ensure_strategy(
                        &tx,
                        &t.strategy,
                        if t.simulated { "agent" } else { "import" },
                    )?;
                }
                stmt.execute(params![
                    t.strategy,
                    t.id,
                    t.symbol,
                    t.side.as_str(),
                    t.quantity,
                    t.entry_ms,
                    t.exit_ms,
                    t.entry_price,
                    t.exit_price,
                    t.pnl,
                    t.fees,
                    t.simulated
                ])
                .ctx(what)?;
            }
        }
        tx.commit().ctx(what)
    }

    fn orders(
        &self,
        strategy: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Order>, StoreError> {
        let what = || "reading orders".to_owned();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {ORDER_COLS} FROM orders
                 WHERE (?1 IS NULL OR strategy = ?1) AND submit_ms BETWEEN ?2 AND ?3
                 ORDER BY submit_ms, strategy, id"
            ))
            .ctx(what)?;
        stmt.query_map(params![strategy, from_ms, to_ms], order_row)
            .ctx(what)?
            .collect::<Result<Vec<_>, _>>()
            .ctx(what)
    }

    fn fills(
        &self,
        strategy: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Fill>, StoreError> {
        let what = || "reading fills".to_owned();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT f.strategy, f.order_id, f.t_ms, f.quantity, f.price, f.fee, f.simulated
                 FROM fills f JOIN orders o ON o.strategy = f.strategy AND o.id = f.order_id
                 WHERE (?1 IS NULL OR f.strategy = ?1) AND o.submit_ms BETWEEN ?2 AND ?3
                 ORDER BY f.t_ms, f.seq",
            )
            .ctx(what)?;
        stmt.query_map(params![strategy, from_ms, to_ms], |r| {
            Ok(Fill {
                strategy: r.get(0)?,
                order_id: r.get(1)?,
                t_ms: r.get(2)?,
                quantity: r.get(3)?,
                price: r.get(4)?,
                fee: r.get(5)?,
                simulated: r.get(6)?,
            })
        })
        .ctx(what)?
        .collect::<Result<Vec<_>, _>>()
        .ctx(what)
    }

    fn known_orders(&self, strategy: &str, ids: &[&str]) -> Result<Vec<String>, StoreError> {
        let what = || format!("looking up orders of {strategy}");
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT id FROM orders WHERE strategy = ?1 AND id = ?2")
            .ctx(what)?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(found) = stmt
                .query_row(params![strategy, id], |r| r.get::<_, String>(0))
                .optional()
                .ctx(what)?
            {
                out.push(found);
            }
        }
        Ok(out)
    }

    fn trades(&self, strategy: &str) -> Result<Vec<Trade>, StoreError> {
        let what = || format!("reading the trades of {strategy}");
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT strategy, id, symbol, side, quantity, entry_ms, exit_ms, entry_price,
                        exit_price, pnl, fees, simulated
                 FROM trades WHERE strategy = ?1 ORDER BY exit_ms, id",
            )
            .ctx(what)?;
        stmt.query_map([strategy], |r| {
            Ok(Trade {
                strategy: r.get(0)?,
                id: r.get(1)?,
                symbol: r.get(2)?,
                side: side(&r.get::<_, String>(3)?),
                quantity: r.get(4)?,
                entry_ms: r.get(5)?,
                exit_ms: r.get(6)?,
                entry_price: r.get(7)?,
                exit_price: r.get(8)?,
                pnl: r.get(9)?,
                fees: r.get(10)?,
                simulated: r.get(11)?,
            })
        })
        .ctx(what)?
        .collect::<Result<Vec<_>, _>>()
        .ctx(what)
    }

    fn put_heartbeats(&self, beats: &[Heartbeat]) -> Result<(), StoreError> {
        let what = || format!("storing {} heartbeat(s)", beats.len());
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO heartbeats (strategy, t_ms, kind) VALUES (?1, ?2, ?3)",
                )
                .ctx(what)?;
            let mut seen = std::collections::HashSet::new();
            for b in beats {
                if seen.insert(b.strategy.as_str()) {
                    ensure_strategy(&tx, &b.strategy, "agent")?;
                }
                stmt.execute(params![b.strategy, b.t_ms, b.kind])
                    .ctx(what)?;
            }
        }
        tx.commit().ctx(what)
    }

    fn last_heartbeat(&self, strategy: &str) -> Result<Option<i64>, StoreError> {
        self.conn()
            .query_row(
                "SELECT MAX(t_ms) FROM heartbeats WHERE strategy = ?1",
                [strategy],
                |r| r.get(0),
            )
            .ctx(|| format!("reading the heartbeats of {strategy}"))
    }

    fn replace_bars(&self, symbol: &str, source: &str, bars: &[Bar]) -> Result<(), StoreError> {
        let what = || format!("storing {} bar(s) of {symbol}", bars.len());
        for b in bars {
            let w = format!("bar of {symbol} on {}", b.day);
            for (f, v) in [
                ("open", b.open),
                ("high", b.high),
                ("low", b.low),
                ("close", b.close),
                ("adj_close", b.adj_close),
                ("volume", b.volume),
            ] {
                finite(&w, f, v)?;
            }
        }
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        tx.execute(
            "INSERT INTO symbols (symbol, source) VALUES (?1, ?2)
             ON CONFLICT (symbol) DO UPDATE SET source = excluded.source",
            params![symbol, source],
        )
        .ctx(what)?;
        tx.execute("DELETE FROM bars WHERE symbol = ?1", [symbol])
            .ctx(what)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO bars (symbol, day, open, high, low, close, adj_close, volume)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .ctx(what)?;
            for b in bars {
                stmt.execute(params![
                    symbol,
                    b.day.0,
                    b.open,
                    b.high,
                    b.low,
                    b.close,
                    b.adj_close,
                    b.volume
                ])
                .map_err(|e| StoreError(format!("{}: {}: {e}", what(), b.day)))?;
            }
        }
        tx.commit().ctx(what)
    }

    fn bars(&self, symbol: &str, from: Day, to: Day) -> Result<Vec<Bar>, StoreError> {
        let what = || format!("reading the bars of {symbol}");
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT day, open, high, low, close, adj_close, volume FROM bars
                 WHERE symbol = ?1 AND day BETWEEN ?2 AND ?3 ORDER BY day",
            )
            .ctx(what)?;
        stmt.query_map(params![symbol, from.0, to.0], |r| {
            Ok(Bar {
                day: Day(r.get(0)?),
                open: r.get(1)?,
                high: r.get(2)?,
                low: r.get(3)?,
                close: r.get(4)?,
                adj_close: r.get(5)?,
                volume: r.get(6)?,
            })
        })
        .ctx(what)?
        .collect::<Result<Vec<_>, _>>()
        .ctx(what)
    }

    fn symbols(&self) -> Result<Vec<SymbolInfo>, StoreError> {
        let what = || "listing symbols".to_owned();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT s.symbol, s.source, COUNT(b.day), MIN(b.day), MAX(b.day)
                 FROM symbols s JOIN bars b ON b.symbol = s.symbol
                 GROUP BY s.symbol ORDER BY s.symbol",
            )
            .ctx(what)?;
        stmt.query_map([], |r| {
            Ok(SymbolInfo {
                symbol: r.get(0)?,
                source: r.get(1)?,
                bars: r.get::<_, i64>(2)? as u64,
                first: Day(r.get(3)?),
                last: Day(r.get(4)?),
            })
        })
        .ctx(what)?
        .collect::<Result<Vec<_>, _>>()
        .ctx(what)
    }
}
