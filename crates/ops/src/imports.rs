//! Imports of what users already have (returns or equity, orders, fills, closed trades,
//! daily prices) and the bundled market data. A file is parsed whole before anything is
//! written; one bad row refuses it with its line and reason, and the write is one
//! transaction.

use quantbox_trading::import::{self, ImportError};
use quantbox_trading::{SeriesKind, TradingStore, market};
use serde::Serialize;

use crate::Ops;
use crate::error::{ErrorCode, OpError};
use crate::report::check_strategy;

/// What can be imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportKind {
    Returns,
    Orders,
    Fills,
    Trades,
    Prices,
}

impl ImportKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "returns" => Self::Returns,
            "orders" => Self::Orders,
            "fills" => Self::Fills,
            "trades" => Self::Trades,
            "prices" => Self::Prices,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Returns => "returns",
            Self::Orders => "orders",
            Self::Fills => "fills",
            Self::Trades => "trades",
            Self::Prices => "prices",
        }
    }
}

/// One import's request.
#[derive(Clone, Debug, Default)]
pub struct ImportRequest {
    /// The file's name, for messages.
    pub file: Option<String>,
    pub text: String,
    /// The strategy (required for returns; the default for rows without one otherwise).
    pub strategy: Option<String>,
    /// The symbol of a prices file without a symbol column.
    pub symbol: Option<String>,
    /// `(ours, theirs)`: the user's column `theirs` is our `ours`.
    pub mapping: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub struct ImportOutput {
    pub kind: &'static str,
    /// Strategies or symbols written.
    pub written_to: Vec<String>,
    pub rows: usize,
    /// For a series: `returns` or `equity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_kind: Option<&'static str>,
    pub first: Option<String>,
    pub last: Option<String>,
    pub message: String,
}

fn bad_file(e: ImportError) -> OpError {
    let mut details = serde_json::Map::new();
    if let Some(l) = e.line {
        details.insert("line".into(), l.into());
    }
    if let Some(c) = &e.column {
        details.insert("column".into(), c.clone().into());
    }
    details.insert("reason".into(), e.reason.clone().into());
    OpError::new(
        ErrorCode::InvalidArgument,
        format!("file: {e}; nothing was imported"),
    )
    .with_details(serde_json::Value::Object(details))
}

fn day(ms: i64) -> String {
    quantbox_trading::Day::from_ms(ms).to_string()
}

impl Ops {
    /// Parses `req` as `kind` and writes it.
    pub async fn import(
        &self,
        kind: ImportKind,
        req: ImportRequest,
    ) -> Result<ImportOutput, OpError> {
        if let Some(s) = &req.strategy {
            check_strategy(s)?;
        }
        if let Some(s) = &req.symbol {
            check_symbol(s)?;
        }
        if kind == ImportKind::Returns && req.strategy.is_none() {
            return Err(OpError::invalid(
                "strategy",
                "a returns file needs the strategy it belongs to (--strategy NAME)",
            ));
        }
        let store = self.trading()?.clone();
        tokio::task::spawn_blocking(move || import_blocking(store.as_ref(), kind, req))
            .await
            .map_err(|e| OpError::internal(format!("the import failed: {e}")))?
    }

    /// Loads the price history compiled into quantbox (AAPL, IBM, MSFT, GOOG, FB, SPX,
    /// IXIC) into the store, unless each symbol is there already. Returns how many
    /// symbols were written.
    pub async fn load_bundled_market_data(&self) -> Result<usize, OpError> {
        let store = self.trading()?.clone();
        tokio::task::spawn_blocking(move || {
            let have = store.symbols()?;
            // Every start comes here: decompress the data only when something is missing.
            if market::SYMBOLS
                .iter()
                .all(|m| have.iter().any(|s| s.symbol == *m))
            {
                return Ok(0);
            }
            let mut written = 0;
            let bundled = market::bundled()
                .map_err(|e| OpError::internal(format!("the bundled market data: {e}")))?;
            for b in bundled {
                if have.iter().any(|s| s.symbol == b.symbol) {
                    continue;
                }
                store.replace_bars(&b.symbol, "bundled", &b.bars)?;
                written += 1;
            }
            Ok(written)
        })
        .await
        .map_err(|e| OpError::internal(format!("loading market data: {e}")))?
    }
}

fn check_symbol(s: &str) -> Result<(), OpError> {
    let ok = (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'^' | b'='));
    if ok {
        Ok(())
    } else {
        Err(OpError::invalid(
            "symbol",
            format!("must be 1 to 32 characters of [A-Za-z0-9._-^=], got {s:?}"),
        ))
    }
}

fn import_blocking(
    store: &dyn TradingStore,
    kind: ImportKind,
    req: ImportRequest,
) -> Result<ImportOutput, OpError> {
    let mapping: Vec<(&str, &str)> = req
        .mapping
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let named = |e: ImportError| match &req.file {
        Some(f) => bad_file(e.in_file(f.clone())),
        None => bad_file(e),
    };
    let strategy = req.strategy.as_deref();
    match kind {
        ImportKind::Returns => {
            let s = strategy.expect("checked above");
            let (sk, points) = import::parse_returns(&req.text, &mapping).map_err(named)?;
            store.replace_series(s, "import", sk, &points)?;
            Ok(ImportOutput {
                kind: kind.as_str(),
                written_to: vec![s.to_owned()],
                rows: points.len(),
                series_kind: Some(sk.as_str()),
                first: points.first().map(|p| day(p.t_ms)),
                last: points.last().map(|p| day(p.t_ms)),
                message: format!(
                    "imported {} {} point(s) into strategy `{s}` (replacing its series){}",
                    points.len(),
                    sk.as_str(),
                    if sk == SeriesKind::Equity {
                        "; returns are computed from the equity"
                    } else {
                        ""
                    }
                ),
            })
        }
        ImportKind::Orders => {
            let orders = import::parse_orders(&req.text, strategy, &mapping).map_err(named)?;
            for o in &orders {
                check_strategy(&o.strategy)?;
            }
            store.put_orders(&orders)?;
            let mut to: Vec<String> = orders.iter().map(|o| o.strategy.clone()).collect();
            to.sort();
            to.dedup();
            Ok(ImportOutput {
                kind: kind.as_str(),
                rows: orders.len(),
                series_kind: None,
                first: orders.iter().map(|o| o.submit_ms).min().map(ts),
                last: orders.iter().map(|o| o.submit_ms).max().map(ts),
                message: format!(
                    "imported {} order(s) into {}; orders with the same strategy and id were replaced",
                    orders.len(),
                    to.join(", ")
                ),
                written_to: to,
            })
        }
        ImportKind::Fills => {
            let fills = import::parse_fills(&req.text, strategy, &mapping).map_err(named)?;
            // Every fill must belong to a stored order: say which one does not.
            let mut by_strategy: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for f in &fills {
                by_strategy
                    .entry(&f.strategy)
                    .or_default()
                    .push(&f.order_id);
            }
            for (s, ids) in &by_strategy {
                let known = store.known_orders(s, ids)?;
                if let Some((i, f)) = fills
                    .iter()
                    .enumerate()
                    .find(|(_, f)| f.strategy == *s && !known.contains(&f.order_id))
                {
                    return Err(OpError::new(
                        ErrorCode::InvalidArgument,
                        format!(
                            "file: record {} (the fill at {}): strategy `{s}` has no order `{}`; import the orders first; nothing was imported",
                            i + 1,
                            ts(f.t_ms),
                            f.order_id
                        ),
                    ));
                }
            }
            store.put_fills(&fills)?;
            let to: Vec<String> = by_strategy.keys().map(|s| (*s).to_owned()).collect();
            Ok(ImportOutput {
                kind: kind.as_str(),
                rows: fills.len(),
                series_kind: None,
                first: fills.iter().map(|f| f.t_ms).min().map(ts),
                last: fills.iter().map(|f| f.t_ms).max().map(ts),
                message: format!("imported {} fill(s) into {}", fills.len(), to.join(", ")),
                written_to: to,
            })
        }
        ImportKind::Trades => {
            let trades = import::parse_trades(&req.text, strategy, &mapping).map_err(named)?;
            store.put_trades(&trades)?;
            let mut to: Vec<String> = trades.iter().map(|t| t.strategy.clone()).collect();
            to.sort();
            to.dedup();
            Ok(ImportOutput {
                kind: kind.as_str(),
                rows: trades.len(),
                series_kind: None,
                first: trades.iter().map(|t| t.exit_ms).min().map(ts),
                last: trades.iter().map(|t| t.exit_ms).max().map(ts),
                message: format!(
                    "imported {} closed trade(s) into {}",
                    trades.len(),
                    to.join(", ")
                ),
                written_to: to,
            })
        }
        ImportKind::Prices => {
            let sets = match &req.symbol {
                Some(sym) => vec![(
                    sym.clone(),
                    import::parse_prices(&req.text, &mapping).map_err(named)?,
                )],
                None => import::parse_prices_by_symbol(&req.text, &mapping).map_err(|e| {
                    let mut e = named(e);
                    e.message
                        .push_str(" (a file without a symbol column needs --symbol SYMBOL)");
                    e
                })?,
            };
            for (sym, _) in &sets {
                check_symbol(sym)?;
            }
            let mut rows = 0;
            for (sym, bars) in &sets {
                store.replace_bars(sym, "import", bars)?;
                rows += bars.len();
            }
            let first = sets
                .iter()
                .filter_map(|(_, b)| b.first())
                .map(|b| b.day)
                .min();
            let last = sets
                .iter()
                .filter_map(|(_, b)| b.last())
                .map(|b| b.day)
                .max();
            let to: Vec<String> = sets.into_iter().map(|(s, _)| s).collect();
            Ok(ImportOutput {
                kind: kind.as_str(),
                rows,
                series_kind: None,
                first: first.map(|d| d.to_string()),
                last: last.map(|d| d.to_string()),
                message: format!(
                    "imported {rows} daily bar(s) of {} (replacing their price history)",
                    to.join(", ")
                ),
                written_to: to,
            })
        }
    }
}

fn ts(ms: i64) -> String {
    quantbox_sandbox::Timestamp::from_unix_ms(ms).to_rfc3339()
}
