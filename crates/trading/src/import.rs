//! Importers: users' CSV files (their own or a broker's export) into the domain records.
//!
//! # Rules common to every file
//!
//! - Comma-separated, the first non-blank line is the header. Fields may be quoted
//!   (`"Smith, J."`, `""` for a quote inside). A UTF-8 byte order mark at the start, CRLF
//!   line ends and blank lines (also lines of empty fields only, as spreadsheets write
//!   them) are ignored.
//! - Header names are matched case-insensitively after trimming; a space or `-` in a
//!   header name counts as `_` (`Adj Close` is `adj_close`, `Order ID` is `order_id`).
//!   Each column below lists the other names it is also found under.
//! - A *mapping* `&[(ours, theirs)]` renames the file's columns onto ours, e.g.
//!   `[("order_id", "OrderRef"), ("time", "ExecTime")]` for a broker's export. A mapped
//!   column is taken from the named header column only; `ours` may be any name a column
//!   is found under. Naming a column we do not have, or one the header lacks, is an error.
//! - Columns we do not know are ignored. A missing required column is an error that
//!   names it and lists the header found.
//! - **A bad row rejects the whole file**: the error gives the 1-based line, the column
//!   and the reason, and nothing of the file is returned. A file without data rows is
//!   refused too.
//! - Numbers are plain decimals (`1234.5`, `-0.01`, `1e-3`): finite, no thousands
//!   separators, no `%`. `null` (what Yahoo writes for a day without prices) is refused.
//! - Dates: `YYYY-MM-DD` (a time after it is ignored) or `M/D/YYYY`. Where a file is a
//!   series (returns, prices), dates must be strictly ascending: a repeated or earlier
//!   date is an error naming both lines.
//! - Times ([`parse_time_ms`]): RFC 3339 (`2024-01-02T14:30:00Z`,
//!   `2024-01-02T09:30:00.250-05:00`), `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC (also
//!   with `T`, without seconds, or with an offset), or epoch milliseconds (an integer of
//!   at least 10^11; epoch seconds are refused).
//! - Sides ([`Side::parse`]): `buy`/`sell`, `b`/`s`, `long`/`short`, `bot`/`sld`, any
//!   case. Order states ([`OrderState::parse`]): `open`, `filled`, `partially_filled`,
//!   `cancelled`, `rejected`, `failed` and common broker spellings (`canceled`,
//!   `partial`, `new`, `done`, …).
//!
//! # Returns or equity — [`parse_returns`]
//!
//! | column | also | |
//! |---|---|---|
//! | `date` | `day` | required |
//! | `return` | `returns`, `ret` | the period return as a fraction (`0.01` = 1 %), greater than -1 |
//! | `equity` | `value`, `nav`, `close` | the equity curve, greater than 0 |
//!
//! Exactly one of `return` and `equity` (which decides the [`SeriesKind`]). Each point is
//! stamped at 00:00 UTC of its date.
//!
//! # Orders — [`parse_orders`]
//!
//! | column | also | |
//! |---|---|---|
//! | `strategy` | | required unless a default strategy is given (an empty value takes the default) |
//! | `order_id` | `id` | required; unique within a strategy |
//! | `symbol` | `ticker` | required |
//! | `side` | | required |
//! | `quantity` | `qty` | required, > 0 |
//! | `order_type` | `type` | default `market`; kept lower-cased |
//! | `limit_price` | `limit` | > 0; required when the type is `limit` (or `lmt`) |
//! | `arrival_price` | | > 0; the reference price slippage is measured against |
//! | `decision_time` | | defaults to `submit_time`; not after it |
//! | `submit_time` | | required |
//! | `ack_time` | | not before `submit_time` |
//! | `state` | `status` | required |
//! | `reject_reason` | | only for a `rejected` order |
//!
//! # Fills — [`parse_fills`]
//!
//! | column | also | |
//! |---|---|---|
//! | `strategy` | | as for orders |
//! | `order_id` | | required |
//! | `time` | `fill_time`, `timestamp` | required |
//! | `quantity` | `qty` | required, > 0 |
//! | `price` | `fill_price` | required, > 0 |
//! | `fee` | `fees`, `commission` | default 0, ≥ 0 |
//!
//! # Closed trades — [`parse_trades`]
//!
//! | column | also | |
//! |---|---|---|
//! | `strategy` | | as for orders |
//! | `trade_id` | `id` | required; unique within a strategy |
//! | `symbol` | `ticker` | required |
//! | `side` | | required (`buy` = long, `sell` = short) |
//! | `quantity` | `qty` | required, > 0 |
//! | `entry_time` | | required |
//! | `exit_time` | | required, not before `entry_time` |
//! | `entry_price` | | required, > 0 |
//! | `exit_price` | | required, > 0 |
//! | `pnl` | `profit` | realised, fees deducted; when absent: ±(exit − entry) × quantity − fees |
//! | `fees` | `fee`, `commission` | default 0, ≥ 0 |
//!
//! # Daily prices — [`parse_prices`], [`parse_prices_by_symbol`]
//!
//! Yahoo's download as it is: `Date,Open,High,Low,Close,Adj Close,Volume`.
//!
//! | column | also | |
//! |---|---|---|
//! | `date` | `day` | required |
//! | `open`, `high`, `low`, `close` | | required, > 0; high ≥ max(open, close), low ≤ min(open, close) |
//! | `adj_close` | `adjclose`, `adjusted_close` | > 0; defaults to `close` |
//! | `volume` | | ≥ 0; defaults to 0 |
//! | `symbol` | `ticker` | [`parse_prices_by_symbol`]: required; [`parse_prices`]: one symbol only, if given |

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use csv::StringRecord;

use crate::date::Day;
use crate::model::{Bar, Fill, Order, OrderState, SeriesKind, SeriesPoint, Side, Trade};

/// Why a file was refused. Nothing of a refused file is imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    /// The file, when the caller named it ([`ImportError::in_file`]).
    pub file: Option<String>,
    /// 1-based line of the file; `None` when the error is about the file as a whole.
    pub line: Option<u64>,
    /// Our name of the column at fault (`date`, `order_id`, …).
    pub column: Option<String>,
    /// That column's name in the file's header, when it has one.
    pub source_column: Option<String>,
    pub reason: String,
}

impl ImportError {
    fn whole(reason: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            column: None,
            source_column: None,
            reason: reason.into(),
        }
    }

    fn at(line: u64, reason: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            ..Self::whole(reason)
        }
    }

    /// Names the file in the message (`orders.csv, line 7, column …`).
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(file) = &self.file {
            parts.push(file.clone());
        }
        if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        match (&self.column, &self.source_column) {
            (Some(ours), Some(theirs)) if norm(theirs) != *ours => {
                parts.push(format!("column `{theirs}` ({ours})"));
            }
            (Some(ours), _) => parts.push(format!("column `{ours}`")),
            (None, _) => {}
        }
        if parts.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", parts.join(", "), self.reason)
        }
    }
}

impl std::error::Error for ImportError {}

/// A file's bytes as text, or an error naming the first line that is not UTF-8 (a
/// spreadsheet's "CSV" in a legacy encoding).
pub fn text_from_utf8(bytes: &[u8]) -> Result<&str, ImportError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ImportError::at(
            line as u64,
            "the file is not UTF-8 text (save it as \"CSV UTF-8\")",
        )
    })
}

/// A time to unix milliseconds: RFC 3339 (`2024-01-02T14:30:00Z`, with an offset or
/// fractional seconds), `YYYY-MM-DD HH:MM:SS[.fff]` as UTC (also with `T`, without
/// seconds, or with an offset), or epoch milliseconds (an integer ≥ 10^11). Fractions
/// beyond milliseconds are truncated. `None` for anything else.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = s.parse().ok()?;
        return (ms >= EPOCH_MS_MIN).then_some(ms);
    }
    let b = s.as_bytes();
    if b.len() < 16 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let day = Day::parse(s.get(..10)?)?;
    let mut p = Cursor { b, i: 11 };
    let hour = p.digits(2)?;
    p.expect(b':')?;
    let minute = p.digits(2)?;
    let second = if p.peek() == Some(b':') {
        p.i += 1;
        p.digits(2)?
    } else {
        0
    };
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut ms = 0;
    if matches!(p.peek(), Some(b'.' | b',')) {
        p.i += 1;
        let start = p.i;
        while p.peek().is_some_and(|c| c.is_ascii_digit()) {
            if p.i - start < 3 {
                ms = ms * 10 + i64::from(p.b[p.i] - b'0');
            }
            p.i += 1;
        }
        let n = p.i - start;
        if !(1..=9).contains(&n) {
            return None;
        }
        for _ in n..3 {
            ms *= 10;
        }
    }
    if p.peek() == Some(b' ') {
        p.i += 1;
    }
    let offset_min = match p.peek() {
        None => 0,
        Some(b'Z' | b'z') => {
            p.i += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            p.i += 1;
            let oh = p.digits(2)?;
            if p.peek() == Some(b':') {
                p.i += 1;
            }
            let om = p.digits(2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            if sign == b'-' {
                -(oh * 60 + om)
            } else {
                oh * 60 + om
            }
        }
        Some(_) => return None,
    };
    if p.i != b.len() {
        return None;
    }
    let local_s = (hour * 60 + minute) * 60 + second;
    Some(day.start_ms() + (local_s - offset_min * 60) * 1000 + ms)
}

/// 10^11 ms is March 1973: a smaller integer is much more likely epoch *seconds*.
const EPOCH_MS_MIN: i64 = 100_000_000_000;

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn digits(&mut self, n: usize) -> Option<i64> {
        let part = self.b.get(self.i..self.i + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(part.iter().fold(0, |v, d| v * 10 + i64::from(d - b'0')))
    }
}

/// A column of a file kind: our name and the other header names it is found under.
struct Col {
    name: &'static str,
    aliases: &'static [&'static str],
}

const fn col(name: &'static str, aliases: &'static [&'static str]) -> Col {
    Col { name, aliases }
}

const STRATEGY: Col = col("strategy", &[]);
const SYMBOL: Col = col("symbol", &["ticker"]);
const SIDE: Col = col("side", &[]);
const QUANTITY: Col = col("quantity", &["qty"]);
const DATE: Col = col("date", &["day"]);

const RETURNS_COLS: &[Col] = &[
    DATE,
    col("return", &["returns", "ret"]),
    col("equity", &["value", "nav", "close"]),
];

const ORDER_COLS: &[Col] = &[
    STRATEGY,
    col("order_id", &["id"]),
    SYMBOL,
    SIDE,
    QUANTITY,
    col("order_type", &["type"]),
    col("limit_price", &["limit"]),
    col("arrival_price", &[]),
    col("decision_time", &[]),
    col("submit_time", &[]),
    col("ack_time", &[]),
    col("state", &["status"]),
    col("reject_reason", &[]),
];

const FILL_COLS: &[Col] = &[
    STRATEGY,
    col("order_id", &[]),
    col("time", &["fill_time", "timestamp"]),
    QUANTITY,
    col("price", &["fill_price"]),
    col("fee", &["fees", "commission"]),
];

const TRADE_COLS: &[Col] = &[
    STRATEGY,
    col("trade_id", &["id"]),
    SYMBOL,
    SIDE,
    QUANTITY,
    col("entry_time", &[]),
    col("exit_time", &[]),
    col("entry_price", &[]),
    col("exit_price", &[]),
    col("pnl", &["profit"]),
    col("fees", &["fee", "commission"]),
];

const PRICE_COLS: &[Col] = &[
    DATE,
    col("open", &[]),
    col("high", &[]),
    col("low", &[]),
    col("close", &[]),
    col("adj_close", &["adjclose", "adjusted_close"]),
    col("volume", &[]),
    SYMBOL,
];

/// How a header name is compared: trimmed, lower-case, spaces and `-` as `_`.
fn norm(s: &str) -> String {
    s.trim()
        .trim_start_matches('\u{feff}')
        .to_lowercase()
        .replace([' ', '-'], "_")
}

/// A file read as a header and rows, its columns found.
struct Table {
    header: Vec<String>,
    header_line: u64,
    rows: Vec<(u64, StringRecord)>,
    /// Per column of the spec, by our name: its index in the header.
    found: HashMap<&'static str, usize>,
    /// Our columns the caller's mapping named.
    mapped: Vec<&'static str>,
}

impl Table {
    fn read(text: &str, spec: &[Col], mapping: &[(&str, &str)]) -> Result<Self, ImportError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut header: Option<(u64, Vec<String>)> = None;
        let mut rows = Vec::new();
        let mut lines = Lines {
            text: text.as_bytes(),
            pos: 0,
            line: 1,
        };
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = lines.at(e.position().map_or(0, |p| p.byte()));
                ImportError::at(line, format!("unreadable CSV: {e}"))
            })?;
            let line = lines.at(record.position().map_or(0, |p| p.byte()));
            if record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            match &header {
                None => header = Some((line, record.iter().map(|f| f.trim().to_owned()).collect())),
                Some((_, names)) => {
                    let width = names.len();
                    if record.len() < width
                        || record.iter().skip(width).any(|f| !f.trim().is_empty())
                    {
                        return Err(ImportError::at(
                            line,
                            format!(
                                "{} fields where the header has {width} (a value with a comma \
                                 in it must be quoted)",
                                record.len()
                            ),
                        ));
                    }
                    rows.push((line, record));
                }
            }
        }
        let Some((header_line, header)) = header else {
            return Err(ImportError::whole(format!(
                "the file is empty: expected a header line with the columns {}",
                names(spec)
            )));
        };
        let (found, mapped) = find_columns(&header, header_line, spec, mapping)?;
        if rows.is_empty() {
            return Err(ImportError::at(
                header_line,
                "no data rows after the header",
            ));
        }
        Ok(Self {
            header,
            header_line,
            rows,
            found,
            mapped,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.found.contains_key(name)
    }

    /// Requires the column, naming it and the header found when it is missing.
    fn require(&self, name: &'static str, spec: &[Col], hint: &str) -> Result<(), ImportError> {
        if self.has(name) {
            return Ok(());
        }
        let also = spec
            .iter()
            .find(|c| c.name == name)
            .filter(|c| !c.aliases.is_empty())
            .map(|c| format!(" (also found as {})", quoted(c.aliases.iter().copied())))
            .unwrap_or_default();
        Err(ImportError {
            column: Some(name.to_owned()),
            ..ImportError::at(
                self.header_line,
                format!(
                    "missing column `{name}`{also}{hint}; the header has {}",
                    quoted(self.header.iter().map(String::as_str))
                ),
            )
        })
    }

    fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(move |(line, rec)| Row {
            table: self,
            line: *line,
            rec,
        })
    }
}

/// The 1-based line a record starts on. The csv reader's own line count is off after
/// blank lines and with CRLF, so lines are counted here from its byte offsets, which are
/// where the previous record ended: the record starts after the line breaks that follow.
struct Lines<'a> {
    text: &'a [u8],
    pos: usize,
    line: u64,
}

impl Lines<'_> {
    fn at(&mut self, byte: u64) -> u64 {
        let mut start = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        while matches!(self.text.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        while self.pos < start {
            match self.text[self.pos] {
                b'\n' => self.line += 1,
                b'\r' if self.text.get(self.pos + 1) != Some(&b'\n') => self.line += 1,
                _ => {}
            }
            self.pos += 1;
        }
        self.line
    }
}

fn names(spec: &[Col]) -> String {
    quoted(spec.iter().map(|c| c.name))
}

fn quoted<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn find_columns(
    header: &[String],
    header_line: u64,
    spec: &[Col],
    mapping: &[(&str, &str)],
) -> Result<(HashMap<&'static str, usize>, Vec<&'static str>), ImportError> {
    let keys: Vec<String> = header.iter().map(|h| norm(h)).collect();
    let mut found = HashMap::new();
    let mut claimed = vec![false; header.len()];
    let mut mapped = Vec::new();
    for &(ours, theirs) in mapping {
        let ours_key = norm(ours);
        let Some(c) = spec
            .iter()
            .find(|c| c.name == ours_key || c.aliases.contains(&ours_key.as_str()))
        else {
            return Err(ImportError::whole(format!(
                "mapping `{ours}={theirs}`: `{ours}` is not a column of this file (its columns \
                 are {})",
                names(spec)
            )));
        };
        let Some(index) = keys.iter().position(|k| *k == norm(theirs)) else {
            return Err(ImportError::at(
                header_line,
                format!(
                    "mapping `{ours}={theirs}`: the header has no column `{theirs}`; it has {}",
                    quoted(header.iter().map(String::as_str))
                ),
            ));
        };
        if found.insert(c.name, index).is_some() {
            return Err(ImportError::whole(format!(
                "the mapping names column `{}` twice",
                c.name
            )));
        }
        claimed[index] = true;
        mapped.push(c.name);
    }
    for c in spec {
        if found.contains_key(c.name) {
            continue;
        }
        let mut hits = keys
            .iter()
            .enumerate()
            .filter(|&(i, k)| !claimed[i] && (*k == c.name || c.aliases.contains(&k.as_str())));
        if let Some((i, _)) = hits.next() {
            if let Some((j, _)) = hits.next() {
                return Err(ImportError {
                    column: Some(c.name.to_owned()),
                    ..ImportError::at(
                        header_line,
                        format!(
                            "columns `{}` and `{}` are both `{}`: map the one to use",
                            header[i], header[j], c.name
                        ),
                    )
                });
            }
            found.insert(c.name, i);
        }
    }
    Ok((found, mapped))
}

/// One data row, its values read by our column names.
struct Row<'a> {
    table: &'a Table,
    line: u64,
    rec: &'a StringRecord,
}

impl<'a> Row<'a> {
    fn err(&self, name: &str, reason: impl Into<String>) -> ImportError {
        ImportError {
            column: Some(name.to_owned()),
            source_column: self
                .table
                .found
                .get(name)
                .map(|&i| self.table.header[i].clone()),
            ..ImportError::at(self.line, reason)
        }
    }

    /// The trimmed value, `None` when the column is absent or the value empty.
    fn get(&self, name: &str) -> Option<&'a str> {
        let index = *self.table.found.get(name)?;
        Some(self.rec.get(index)?.trim()).filter(|v| !v.is_empty())
    }

    fn text(&self, name: &str) -> Result<&'a str, ImportError> {
        self.get(name)
            .ok_or_else(|| self.err(name, "no value (the column is required)"))
    }

    fn number(&self, name: &str) -> Result<Option<f64>, ImportError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        parse_number(raw)
            .map(Some)
            .map_err(|why| self.err(name, why))
    }

    fn required_number(&self, name: &str) -> Result<f64, ImportError> {
        self.number(name)?
            .ok_or_else(|| self.err(name, "no value (the column is required)"))
    }

    fn positive(&self, name: &str, required: bool) -> Result<Option<f64>, ImportError> {
        let value = if required {
            Some(self.required_number(name)?)
        } else {
            self.number(name)?
        };
        match value {
            Some(v) if v <= 0.0 => Err(self.err(
                name,
                format!(
                    "`{}` must be greater than 0",
                    self.get(name).unwrap_or_default()
                ),
            )),
            v => Ok(v),
        }
    }

    fn non_negative(&self, name: &str) -> Result<f64, ImportError> {
        match self.number(name)? {
            Some(v) if v < 0.0 => Err(self.err(
                name,
                format!(
                    "`{}` must not be negative",
                    self.get(name).unwrap_or_default()
                ),
            )),
            v => Ok(v.unwrap_or(0.0)),
        }
    }

    fn day(&self, name: &str) -> Result<Day, ImportError> {
        let raw = self.text(name)?;
        Day::parse(raw).ok_or_else(|| {
            self.err(
                name,
                format!("`{raw}` is not a date (YYYY-MM-DD or M/D/YYYY)"),
            )
        })
    }

    fn time(&self, name: &str) -> Result<Option<i64>, ImportError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        if let Some(ms) = parse_time_ms(raw) {
            return Ok(Some(ms));
        }
        let why = if raw.bytes().all(|b| b.is_ascii_digit()) {
            format!(
                "`{raw}` is too small for epoch milliseconds (≥ 10^11); epoch seconds? \
                 multiply by 1000"
            )
        } else {
            format!(
                "`{raw}` is not a time (RFC 3339 like 2024-01-02T14:30:00Z, \
                 `YYYY-MM-DD HH:MM:SS[.fff]` in UTC, or epoch milliseconds)"
            )
        };
        Err(self.err(name, why))
    }

    fn required_time(&self, name: &str) -> Result<i64, ImportError> {
        self.time(name)?
            .ok_or_else(|| self.err(name, "no value (the column is required)"))
    }

    fn side(&self) -> Result<Side, ImportError> {
        let raw = self.text("side")?;
        Side::parse(raw).ok_or_else(|| {
            self.err(
                "side",
                format!("`{raw}` is not a side (buy, sell, b, s, long, short)"),
            )
        })
    }

    fn strategy(&self, default: Option<&str>) -> Result<String, ImportError> {
        match (
            self.get("strategy"),
            default.map(str::trim).filter(|d| !d.is_empty()),
        ) {
            (Some(s), _) | (None, Some(s)) => Ok(s.to_owned()),
            (None, None) => {
                Err(self.err("strategy", "no value, and no default strategy was given"))
            }
        }
    }
}

fn parse_number(raw: &str) -> Result<f64, String> {
    if raw.eq_ignore_ascii_case("null") {
        return Err(
            "`null` is not a number (Yahoo writes `null` for a day it has no prices \
                    for: delete those rows)"
                .to_owned(),
        );
    }
    let value: f64 = raw.parse().map_err(|_| {
        if raw.contains(',') {
            format!("`{raw}` is not a number (no thousands separators)")
        } else if raw.ends_with('%') {
            format!("`{raw}` is not a number (give a fraction: 0.01 for 1 %)")
        } else {
            format!("`{raw}` is not a number")
        }
    })?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("`{raw}` is not a finite number"))
    }
}

/// The strategy column: required unless there is a default.
fn require_strategy(table: &Table, spec: &[Col], default: Option<&str>) -> Result<(), ImportError> {
    if default.is_some_and(|d| !d.trim().is_empty()) {
        return Ok(());
    }
    table.require("strategy", spec, " (or give a default strategy)")
}

/// Strictly ascending dates: the previous row's date and line.
struct Ascending(Option<(Day, u64)>);

impl Ascending {
    fn check(&mut self, row: &Row<'_>, day: Day) -> Result<(), ImportError> {
        if let Some((prev, prev_line)) = self.0 {
            if day == prev {
                return Err(row.err(
                    "date",
                    format!("{day} is on line {prev_line} too: one row per date"),
                ));
            }
            if day < prev {
                return Err(row.err(
                    "date",
                    format!(
                        "{day} comes after {prev} on line {prev_line}: dates must be in \
                         ascending order"
                    ),
                ));
            }
        }
        self.0 = Some((day, row.line));
        Ok(())
    }
}

/// A strategy's returns or equity curve, one point per date at 00:00 UTC.
pub fn parse_returns(
    text: &str,
    mapping: &[(&str, &str)],
) -> Result<(SeriesKind, Vec<SeriesPoint>), ImportError> {
    let table = Table::read(text, RETURNS_COLS, mapping)?;
    table.require("date", RETURNS_COLS, "")?;
    let mapped = |name| table.mapped.contains(&name);
    let kind = match (table.has("return"), table.has("equity")) {
        (true, false) => SeriesKind::Returns,
        (false, true) => SeriesKind::Equity,
        (true, true) if mapped("return") && !mapped("equity") => SeriesKind::Returns,
        (true, true) if mapped("equity") && !mapped("return") => SeriesKind::Equity,
        (true, true) => {
            return Err(ImportError::at(
                table.header_line,
                format!(
                    "both a return column (`{}`) and an equity column (`{}`): map the one to use",
                    table.header[table.found["return"]], table.header[table.found["equity"]]
                ),
            ));
        }
        (false, false) => {
            return Err(ImportError::at(
                table.header_line,
                format!(
                    "missing column `return` (also found as `returns`, `ret`) or `equity` (also \
                     `value`, `nav`, `close`); the header has {}",
                    quoted(table.header.iter().map(String::as_str))
                ),
            ));
        }
    };
    let mut order = Ascending(None);
    let mut points = Vec::with_capacity(table.rows.len());
    for row in table.rows() {
        let day = row.day("date")?;
        order.check(&row, day)?;
        let value = match kind {
            SeriesKind::Returns => {
                let v = row.required_number("return")?;
                if v <= -1.0 {
                    return Err(row.err(
                        "return",
                        format!(
                            "`{}` is a loss of 100 % or more: a return must be greater than -1 \
                             (returns are fractions, 0.01 for 1 %)",
                            row.get("return").unwrap_or_default()
                        ),
                    ));
                }
                v
            }
            SeriesKind::Equity => row.positive("equity", true)?.unwrap_or_default(),
        };
        points.push(SeriesPoint {
            t_ms: day.start_ms(),
            value,
        });
    }
    Ok((kind, points))
}

/// Refuses a second row with the same strategy and id, naming the first one's line.
fn first_of(
    seen: &mut HashMap<(String, String), u64>,
    row: &Row<'_>,
    column: &str,
    kind: &str,
    strategy: &str,
    id: &str,
) -> Result<(), ImportError> {
    match seen.entry((strategy.to_owned(), id.to_owned())) {
        Entry::Occupied(first) => Err(row.err(
            column,
            format!(
                "{kind} `{id}` of strategy `{strategy}` is on line {} too",
                first.get()
            ),
        )),
        Entry::Vacant(slot) => {
            slot.insert(row.line);
            Ok(())
        }
    }
}

/// Orders (`simulated` = false), in the file's order.
pub fn parse_orders(
    text: &str,
    default_strategy: Option<&str>,
    mapping: &[(&str, &str)],
) -> Result<Vec<Order>, ImportError> {
    let table = Table::read(text, ORDER_COLS, mapping)?;
    require_strategy(&table, ORDER_COLS, default_strategy)?;
    for name in [
        "order_id",
        "symbol",
        "side",
        "quantity",
        "submit_time",
        "state",
    ] {
        table.require(name, ORDER_COLS, "")?;
    }
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut orders = Vec::with_capacity(table.rows.len());
    for row in table.rows() {
        let strategy = row.strategy(default_strategy)?;
        let id = row.text("order_id")?.to_owned();
        first_of(&mut seen, &row, "order_id", "order", &strategy, &id)?;
        let symbol = row.text("symbol")?.to_owned();
        let side = row.side()?;
        let quantity = row.positive("quantity", true)?.unwrap_or_default();
        let order_type = row.get("order_type").unwrap_or("market").to_lowercase();
        let limit_price = row.positive("limit_price", false)?;
        if limit_price.is_none() && matches!(order_type.as_str(), "limit" | "lmt") {
            return Err(row.err("limit_price", "no value: a limit order needs a limit price"));
        }
        let arrival_price = row.positive("arrival_price", false)?;
        let submit_ms = row.required_time("submit_time")?;
        let decision_ms = row.time("decision_time")?.unwrap_or(submit_ms);
        if decision_ms > submit_ms {
            return Err(row.err(
                "decision_time",
                format!(
                    "`{}` is after the submit time `{}`",
                    row.get("decision_time").unwrap_or_default(),
                    row.get("submit_time").unwrap_or_default()
                ),
            ));
        }
        let ack_ms = row.time("ack_time")?;
        if ack_ms.is_some_and(|ack| ack < submit_ms) {
            return Err(row.err(
                "ack_time",
                format!(
                    "`{}` is before the submit time `{}`",
                    row.get("ack_time").unwrap_or_default(),
                    row.get("submit_time").unwrap_or_default()
                ),
            ));
        }
        let raw_state = row.text("state")?;
        let state = OrderState::parse(raw_state).ok_or_else(|| {
            row.err(
                "state",
                format!(
                    "`{raw_state}` is not an order state ({})",
                    OrderState::ALL.map(OrderState::as_str).join(", ")
                ),
            )
        })?;
        let reject_reason = row.get("reject_reason").map(str::to_owned);
        if reject_reason.is_some() && state != OrderState::Rejected {
            return Err(row.err(
                "reject_reason",
                format!("the order is {state}: only a rejected order has a reject reason"),
            ));
        }
        orders.push(Order {
            strategy,
            id,
            symbol,
            side,
            quantity,
            order_type,
            limit_price,
            arrival_price,
            decision_ms,
            submit_ms,
            ack_ms,
            state,
            reject_reason,
            simulated: false,
        });
    }
    Ok(orders)
}

/// Fills (`simulated` = false), in the file's order. Whether their orders exist is the
/// store's question, not the file's.
pub fn parse_fills(
    text: &str,
    default_strategy: Option<&str>,
    mapping: &[(&str, &str)],
) -> Result<Vec<Fill>, ImportError> {
    let table = Table::read(text, FILL_COLS, mapping)?;
    require_strategy(&table, FILL_COLS, default_strategy)?;
    for name in ["order_id", "time", "quantity", "price"] {
        table.require(name, FILL_COLS, "")?;
    }
    let mut fills = Vec::with_capacity(table.rows.len());
    for row in table.rows() {
        fills.push(Fill {
            strategy: row.strategy(default_strategy)?,
            order_id: row.text("order_id")?.to_owned(),
            t_ms: row.required_time("time")?,
            quantity: row.positive("quantity", true)?.unwrap_or_default(),
            price: row.positive("price", true)?.unwrap_or_default(),
            fee: row.non_negative("fee")?,
            simulated: false,
        });
    }
    Ok(fills)
}

/// Closed trades (`simulated` = false), in the file's order.
pub fn parse_trades(
    text: &str,
    default_strategy: Option<&str>,
    mapping: &[(&str, &str)],
) -> Result<Vec<Trade>, ImportError> {
    let table = Table::read(text, TRADE_COLS, mapping)?;
    require_strategy(&table, TRADE_COLS, default_strategy)?;
    for name in [
        "trade_id",
        "symbol",
        "side",
        "quantity",
        "entry_time",
        "exit_time",
        "entry_price",
        "exit_price",
    ] {
        table.require(name, TRADE_COLS, "")?;
    }
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut trades = Vec::with_capacity(table.rows.len());
    for row in table.rows() {
        let strategy = row.strategy(default_strategy)?;
        let id = row.text("trade_id")?.to_owned();
        first_of(&mut seen, &row, "trade_id", "trade", &strategy, &id)?;
        let symbol = row.text("symbol")?.to_owned();
        let side = row.side()?;
        let quantity = row.positive("quantity", true)?.unwrap_or_default();
        let entry_ms = row.required_time("entry_time")?;
        let exit_ms = row.required_time("exit_time")?;
        if exit_ms < entry_ms {
            return Err(row.err(
                "exit_time",
                format!(
                    "`{}` is before the entry time `{}`",
                    row.get("exit_time").unwrap_or_default(),
                    row.get("entry_time").unwrap_or_default()
                ),
            ));
        }
        let entry_price = row.positive("entry_price", true)?.unwrap_or_default();
        let exit_price = row.positive("exit_price", true)?.unwrap_or_default();
        let fees = row.non_negative("fees")?;
        let pnl = match row.number("pnl")? {
            Some(pnl) => pnl,
            None => {
                let direction = match side {
                    Side::Buy => 1.0,
                    Side::Sell => -1.0,
                };
                direction * (exit_price - entry_price) * quantity - fees
            }
        };
        trades.push(Trade {
            strategy,
            id,
            symbol,
            side,
            quantity,
            entry_ms,
            exit_ms,
            entry_price,
            exit_price,
            pnl,
            fees,
            simulated: false,
        });
    }
    Ok(trades)
}

/// One symbol's daily bars (Yahoo's download), oldest first. A `symbol`/`ticker` column,
/// if any, must hold one symbol only.
pub fn parse_prices(text: &str, mapping: &[(&str, &str)]) -> Result<Vec<Bar>, ImportError> {
    let table = Table::read(text, PRICE_COLS, mapping)?;
    let mut first_symbol: Option<(&str, u64)> = None;
    let mut order = Ascending(None);
    let mut bars = Vec::with_capacity(table.rows.len());
    require_price_columns(&table)?;
    for row in table.rows() {
        if let Some(symbol) = row.get("symbol") {
            match first_symbol {
                None => first_symbol = Some((symbol, row.line)),
                Some((first, line)) if first != symbol => {
                    return Err(row.err(
                        "symbol",
                        format!(
                            "`{symbol}`, but line {line} is `{first}`: one symbol per file \
                             (or import it as a file of several symbols)"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let bar = bar(&row)?;
        order.check(&row, bar.day)?;
        bars.push(bar);
    }
    Ok(bars)
}

/// Daily bars of several symbols in one file (a `symbol` or `ticker` column), each
/// symbol's oldest first, the symbols in the order they first appear. Rows of different
/// symbols may interleave; each symbol's dates must be strictly ascending.
pub fn parse_prices_by_symbol(
    text: &str,
    mapping: &[(&str, &str)],
) -> Result<Vec<(String, Vec<Bar>)>, ImportError> {
    let table = Table::read(text, PRICE_COLS, mapping)?;
    table.require("symbol", PRICE_COLS, "")?;
    require_price_columns(&table)?;
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<(String, Vec<Bar>, Ascending)> = Vec::new();
    for row in table.rows() {
        let symbol = row.text("symbol")?;
        let i = *index.entry(symbol).or_insert_with(|| {
            out.push((symbol.to_owned(), Vec::new(), Ascending(None)));
            out.len() - 1
        });
        let bar = bar(&row)?;
        let (_, bars, order) = &mut out[i];
        order.check(&row, bar.day)?;
        bars.push(bar);
    }
    Ok(out.into_iter().map(|(s, bars, _)| (s, bars)).collect())
}

fn require_price_columns(table: &Table) -> Result<(), ImportError> {
    for name in ["date", "open", "high", "low", "close"] {
        table.require(name, PRICE_COLS, "")?;
    }
    Ok(())
}

fn bar(row: &Row<'_>) -> Result<Bar, ImportError> {
    let day = row.day("date")?;
    let open = row.positive("open", true)?.unwrap_or_default();
    let high = row.positive("high", true)?.unwrap_or_default();
    let low = row.positive("low", true)?.unwrap_or_default();
    let close = row.positive("close", true)?.unwrap_or_default();
    if high < open.max(close) {
        return Err(row.err(
            "high",
            format!("{high} is below the open ({open}) or the close ({close})"),
        ));
    }
    if low > open.min(close) {
        return Err(row.err(
            "low",
            format!("{low} is above the open ({open}) or the close ({close})"),
        ));
    }
    let adj_close = row.positive("adj_close", false)?.unwrap_or(close);
    let volume = row.non_negative("volume")?;
    Ok(Bar {
        day,
        open,
        high,
        low,
        close,
        adj_close,
        volume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        parse_time_ms(s).unwrap_or_else(|| panic!("{s}"))
    }

    /// The error's line and its message.
    fn fails<T: fmt::Debug>(r: Result<T, ImportError>) -> (Option<u64>, String) {
        let e = r.expect_err("should be refused");
        (e.line, e.to_string())
    }

    #[test]
    fn times_in_every_accepted_form() {
        let t = 1_704_205_800_000; // 2024-01-02T14:30:00Z
        assert_eq!(ms("2024-01-02T14:30:00Z"), t);
        assert_eq!(ms("2024-01-02t14:30:00z"), t);
        assert_eq!(ms("2024-01-02T14:30:00+00:00"), t);
        assert_eq!(ms("2024-01-02T09:30:00-05:00"), t);
        assert_eq!(ms("2024-01-02T16:00:00+0130"), t);
        assert_eq!(ms("2024-01-02T14:30:00.250Z"), t + 250);
        assert_eq!(ms("2024-01-02T14:30:00.5Z"), t + 500);
        assert_eq!(ms("2024-01-02T14:30:00.123456789Z"), t + 123);
        assert_eq!(ms("2024-01-02 14:30:00"), t);
        assert_eq!(ms("2024-01-02 14:30:00.007"), t + 7);
        assert_eq!(ms("2024-01-02 14:30"), t);
        assert_eq!(ms("2024-01-02T14:30:00"), t);
        assert_eq!(ms("2024-01-02 14:30:00 +01:00"), t - 3_600_000);
        assert_eq!(ms(" 1704205800000 "), t);
        assert_eq!(ms("100000000000"), EPOCH_MS_MIN);
        assert_eq!(ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ms("1969-12-31T23:59:59.999Z"), -1);
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in [
            "",
            "1704205800",
            "99999999999",
            "2024-01-02",
            "2024-01-02T",
            "2024-01-02T24:00:00Z",
            "2024-01-02T14:60:00Z",
            "2024-01-02T14:30:60Z",
            "2024-02-30T14:30:00Z",
            "2024-01-02T14:30:00.Z",
            "2024-01-02T14:30:00.1234567890Z",
            "2024-01-02T14:30:00+25:00",
            "2024-01-02T14:30:00+01",
            "2024-01-02T14:30:00 UTC",
            "2024-01-02X14:30:00",
            "1/2/2024 14:30:00",
            "2024-01-02T14:30:00Zjunk",
            "-1704205800000",
            "99999999999999999999999",
            "2024-01-02T1é:30:00Z",
        ] {
            assert_eq!(parse_time_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn returns_and_equity() {
        let (kind, points) =
            parse_returns("date,return\n2024-01-02,0.01\n2024-01-03,-0.02\n", &[]).unwrap();
        assert_eq!(kind, SeriesKind::Returns);
        let d = Day::parse("2024-01-02").unwrap();
        assert_eq!(
            points,
            vec![
                SeriesPoint {
                    t_ms: d.start_ms(),
                    value: 0.01
                },
                SeriesPoint {
                    t_ms: d.start_ms() + 86_400_000,
                    value: -0.02
                },
            ]
        );
        let (kind, points) =
            parse_returns("Date,NAV\n1/2/2024,100\n1/3/2024,101.5\n", &[]).unwrap();
        assert_eq!(kind, SeriesKind::Equity);
        assert_eq!(points[1].value, 101.5);
        assert_eq!(points[0].t_ms, d.start_ms());
        for header in ["returns", "RET", " Return "] {
            let text = format!("date,{header}\n2024-01-02,0.5\n");
            assert_eq!(parse_returns(&text, &[]).unwrap().0, SeriesKind::Returns);
        }
        for header in ["equity", "value", "close"] {
            let text = format!("date,{header}\n2024-01-02,5\n");
            assert_eq!(parse_returns(&text, &[]).unwrap().0, SeriesKind::Equity);
        }
    }

    #[test]
    fn bad_returns_files_name_line_and_column() {
        let cases: &[(&str, u64, &str)] = &[
            (
                "date,return\n2012-02-28,0.1\n2012-02-30,0.1\n",
                3,
                "line 3, column `date`: `2012-02-30` is not a date (YYYY-MM-DD or M/D/YYYY)",
            ),
            (
                "date,return\n2024-01-02,0.1\n2024-01-03,abc\n",
                3,
                "line 3, column `return`: `abc` is not a number",
            ),
            (
                "date,return\n2024-01-02,NaN\n",
                2,
                "`NaN` is not a finite number",
            ),
            (
                "date,return\n2024-01-02,inf\n",
                2,
                "`inf` is not a finite number",
            ),
            ("date,return\n2024-01-02,-1\n", 2, "a loss of 100 % or more"),
            (
                "date,return\n2024-01-02,-1.5\n",
                2,
                "a return must be greater than -1",
            ),
            ("date,return\n2024-01-02,1.5%\n", 2, "give a fraction"),
            ("date,return\n2024-01-02,\n", 2, "column `return`: no value"),
            (
                "date,equity\n2024-01-02,100\n2024-01-03,0\n",
                3,
                "`0` must be greater than 0",
            ),
            ("date,equity\n2024-01-02,-5\n", 2, "must be greater than 0"),
            (
                "date,return\n2024-01-02,0.1\n2024-01-03,0.1\n2024-01-03,0.2\n",
                4,
                "line 4, column `date`: 2024-01-03 is on line 3 too",
            ),
            (
                "date,return\n2024-01-02,0.1\n2024-01-04,0.1\n2024-01-03,0.2\n",
                4,
                "line 4, column `date`: 2024-01-03 comes after 2024-01-04 on line 3",
            ),
            (
                "date,return\n2024-01-02,0.1,7\n",
                2,
                "3 fields where the header has 2",
            ),
            (
                "date,return,x\n2024-01-02,0.1\n",
                2,
                "2 fields where the header has 3",
            ),
            ("date,return\n", 1, "no data rows"),
            (
                "date,return,equity\n2024-01-02,0.1,5\n",
                1,
                "both a return column",
            ),
            ("date,price\n2024-01-02,5\n", 1, "missing column `return`"),
            (
                "day,return,ret\n2024-01-02,0.1,0.1\n",
                1,
                "columns `return` and `ret` are both",
            ),
        ];
        for &(text, line, message) in cases {
            let (l, m) = fails(parse_returns(text, &[]));
            assert_eq!(l, Some(line), "{text:?}: {m}");
            assert!(m.contains(message), "{text:?}: {m}");
        }
        let (l, m) = fails(parse_returns("when,return\n2024-01-02,0.1\n", &[]));
        assert_eq!(l, Some(1));
        assert_eq!(
            m,
            "line 1, column `date`: missing column `date` (also found as `day`); the header \
             has `when`, `return`"
        );
        for empty in ["", "\n\n", "\u{feff}", " \r\n"] {
            let (l, m) = fails(parse_returns(empty, &[]));
            assert_eq!(l, None);
            assert!(m.starts_with("the file is empty"), "{m}");
        }
    }

    #[test]
    fn bom_crlf_quotes_blank_lines() {
        let text = "\u{feff}\"Date\",\"Return\",Note\r\n2024-01-02,0.01,\"up, a bit\"\r\n\r\n\
                    2024-01-03,\" 0.02 \",\"said \"\"hi\"\"\"\r\n\r\n,,\r\n  \r\n";
        let (kind, points) = parse_returns(text, &[]).unwrap();
        assert_eq!(kind, SeriesKind::Returns);
        assert_eq!(
            points.iter().map(|p| p.value).collect::<Vec<_>>(),
            [0.01, 0.02]
        );
        // Line numbers count the blank lines.
        let (l, m) = fails(parse_returns("date,return\r\n\r\n2024-01-02,x\r\n", &[]));
        assert_eq!(l, Some(3), "{m}");
        let text = "date,return\r\n  \r\n,\r\n2024-01-02,0.1\r\n\r\n\r\n2024-01-03,x\r\n";
        assert_eq!(fails(parse_returns(text, &[])).0, Some(7));
        // Old Mac line ends (a lone CR).
        let text = "date,return\r2024-01-02,0.1\r\r2024-01-03,x\r";
        assert_eq!(fails(parse_returns(text, &[])).0, Some(4));
        // A quoted field spanning lines: the row's line is where it starts.
        let (l, _) = fails(parse_returns(
            "date,return,note\n\"2024-01-02\",0.1,\"a\nb\"\n2024-01-03,x,\n",
            &[],
        ));
        assert_eq!(l, Some(4));
    }

    #[test]
    fn mapping_renames_columns() {
        let text = "Day Of Trade,Daily PnL %,Comment\n2024-01-02,0.01,5\n";
        let (kind, points) =
            parse_returns(text, &[("date", "day of trade"), ("return", "Daily PnL %")]).unwrap();
        assert_eq!(kind, SeriesKind::Returns);
        assert_eq!(points[0].value, 0.01);
        // A return and an equity column: ambiguous, unless one of them is mapped.
        let text = "date,return,close\n2024-01-02,0.01,5\n";
        let (_, m) = fails(parse_returns(text, &[]));
        assert!(m.contains("both a return column (`return`) and an equity column (`close`)"));
        let (kind, points) = parse_returns(text, &[("equity", "close")]).unwrap();
        assert_eq!((kind, points[0].value), (SeriesKind::Equity, 5.0));
        assert_eq!(
            parse_returns(text, &[("ret", "RETURN")]).unwrap().0,
            SeriesKind::Returns
        );
        let (l, m) = fails(parse_returns(text, &[("date", "nope")]));
        assert_eq!(l, Some(1));
        assert!(
            m.contains("mapping `date=nope`: the header has no column `nope`"),
            "{m}"
        );
        let (l, m) = fails(parse_returns(text, &[("colour", "date")]));
        assert_eq!(l, None);
        assert!(m.contains("`colour` is not a column of this file"), "{m}");
        let (_, m) = fails(parse_returns(text, &[("date", "date"), ("day", "date")]));
        assert!(m.contains("names column `date` twice"), "{m}");
    }

    const ORDERS: &str = "strategy,order_id,symbol,side,quantity,order_type,limit_price,\
        arrival_price,decision_time,submit_time,ack_time,state,reject_reason\n\
        mom,1,AAPL,buy,100,limit,190.5,190.4,2024-01-02T14:29:59.900Z,2024-01-02T14:30:00Z,\
        2024-01-02T14:30:00.120Z,filled,\n\
        mom,2,MSFT,SELL,50,,,,,2024-01-02 15:00:00,,canceled,\n\
        mom,3,IBM,s,10,market,,,,1704210000000,,rejected,\"margin, insufficient\"\n";

    #[test]
    fn orders_good_file() {
        let orders = parse_orders(ORDERS, None, &[]).unwrap();
        assert_eq!(orders.len(), 3);
        let o = &orders[0];
        assert_eq!(
            o,
            &Order {
                strategy: "mom".into(),
                id: "1".into(),
                symbol: "AAPL".into(),
                side: Side::Buy,
                quantity: 100.0,
                order_type: "limit".into(),
                limit_price: Some(190.5),
                arrival_price: Some(190.4),
                decision_ms: 1_704_205_799_900,
                submit_ms: 1_704_205_800_000,
                ack_ms: Some(1_704_205_800_120),
                state: OrderState::Filled,
                reject_reason: None,
                simulated: false,
            }
        );
        let o = &orders[1];
        assert_eq!((o.side, o.order_type.as_str()), (Side::Sell, "market"));
        assert_eq!(o.state, OrderState::Cancelled);
        assert_eq!(o.decision_ms, o.submit_ms);
        assert_eq!(
            (o.limit_price, o.arrival_price, o.ack_ms),
            (None, None, None)
        );
        let o = &orders[2];
        assert_eq!(o.submit_ms, 1_704_210_000_000);
        assert_eq!(o.reject_reason.as_deref(), Some("margin, insufficient"));
    }

    #[test]
    fn orders_default_strategy_and_broker_mapping() {
        let text = "OrderRef,Ticker,Action,Qty,Status,Time,Account\n\
                    A-1,AAPL,BOT,5,Filled,2024-01-02 14:30:00,U123\n\
                    A-2,AAPL,SLD,5,Cancelled,2024-01-02 14:31:00,U123\n";
        let mapping = [
            ("order_id", "OrderRef"),
            ("side", "action"),
            ("submit_time", "Time"),
        ];
        let orders = parse_orders(text, Some("ib"), &mapping).unwrap();
        assert_eq!(orders.len(), 2);
        assert_eq!(orders[0].strategy, "ib");
        assert_eq!(orders[0].id, "A-1");
        assert_eq!(orders[1].side, Side::Sell);
        // Without a default the strategy column is required.
        let (l, m) = fails(parse_orders(text, None, &mapping));
        assert_eq!(l, Some(1));
        assert!(
            m.contains("missing column `strategy` (or give a default strategy)"),
            "{m}"
        );
        assert!(m.contains("the header has `OrderRef`, `Ticker`"), "{m}");
        // An error in a mapped column names the file's column and ours.
        let text = "OrderRef,Ticker,Action,Qty,Status,Time\nA-1,AAPL,BOT,5,Filled,noon\n";
        let (l, m) = fails(parse_orders(text, Some("ib"), &mapping));
        assert_eq!(l, Some(2));
        assert!(
            m.starts_with("line 2, column `Time` (submit_time): `noon` is not a time"),
            "{m}"
        );
        // An empty strategy value takes the default; without one it is an error.
        let text = "strategy,order_id,symbol,side,quantity,submit_time,state\n\
                    ,1,AAPL,buy,1,2024-01-02T14:30:00Z,open\n";
        assert_eq!(parse_orders(text, Some("d"), &[]).unwrap()[0].strategy, "d");
        let (l, m) = fails(parse_orders(text, None, &[]));
        assert_eq!(l, Some(2));
        assert!(
            m.contains("column `strategy`: no value, and no default"),
            "{m}"
        );
    }

    #[test]
    fn bad_orders_name_line_and_column() {
        let head = "strategy,order_id,symbol,side,quantity,order_type,limit_price,\
                    decision_time,submit_time,ack_time,state,reject_reason\n";
        let good = "s,1,AAPL,buy,1,market,,,2024-01-02T14:30:00Z,,filled,\n";
        let cases: &[(&str, &str)] = &[
            (
                "s,2,AAPL,hold,1,market,,,2024-01-02T14:30:00Z,,filled,",
                "column `side`: `hold` is not a side",
            ),
            (
                "s,2,AAPL,buy,0,market,,,2024-01-02T14:30:00Z,,filled,",
                "column `quantity`: `0` must be greater than 0",
            ),
            (
                "s,2,AAPL,buy,-3,market,,,2024-01-02T14:30:00Z,,filled,",
                "column `quantity`: `-3` must be",
            ),
            (
                "s,2,AAPL,buy,1,limit,,,2024-01-02T14:30:00Z,,filled,",
                "column `limit_price`: no value: a limit order needs a limit price",
            ),
            (
                "s,2,AAPL,buy,1,LMT,,,2024-01-02T14:30:00Z,,filled,",
                "a limit order needs",
            ),
            (
                "s,2,AAPL,buy,1,limit,-1,,2024-01-02T14:30:00Z,,filled,",
                "column `limit_price`: `-1` must be greater",
            ),
            (
                "s,2,AAPL,buy,1,market,,,,,filled,",
                "column `submit_time`: no value",
            ),
            (
                "s,2,AAPL,buy,1,market,,,1704205800,,filled,",
                "epoch seconds?",
            ),
            (
                "s,2,AAPL,buy,1,market,,,2024-01-02T14:30:00Z,2024-01-02T14:29:59Z,filled,",
                "column `ack_time`: `2024-01-02T14:29:59Z` is before the submit time",
            ),
            (
                "s,2,AAPL,buy,1,market,,2024-01-02T14:30:01Z,2024-01-02T14:30:00Z,,filled,",
                "column `decision_time`: `2024-01-02T14:30:01Z` is after the submit time",
            ),
            (
                "s,2,AAPL,buy,1,market,,,2024-01-02T14:30:00Z,,gone,",
                "column `state`: `gone` is not an order state (open, filled, partially_filled",
            ),
            (
                "s,2,AAPL,buy,1,market,,,2024-01-02T14:30:00Z,,filled,no margin",
                "column `reject_reason`: the order is filled: only a rejected order",
            ),
            (
                "s,2,,buy,1,market,,,2024-01-02T14:30:00Z,,filled,",
                "column `symbol`: no value",
            ),
            (
                "s,,AAPL,buy,1,market,,,2024-01-02T14:30:00Z,,filled,",
                "column `order_id`: no value",
            ),
            (
                "s,1,AAPL,buy,1,market,,,2024-01-02T14:30:00Z,,filled,",
                "column `order_id`: order `1` of strategy `s` is on line 2 too",
            ),
        ];
        for &(bad, message) in cases {
            // The bad row is the third line, after a good one: nothing is returned.
            let text = format!("{head}{good}{bad}\n{good}");
            let (l, m) = fails(parse_orders(&text, None, &[]));
            assert_eq!(l, Some(3), "{bad}: {m}");
            assert!(m.starts_with("line 3, "), "{m}");
            assert!(m.contains(message), "{bad}: {m}");
        }
        // The same id in another strategy is another order.
        let text = format!("{head}{good}t,1,AAPL,buy,1,market,,,2024-01-02T14:30:00Z,,filled,\n");
        assert_eq!(parse_orders(&text, None, &[]).unwrap().len(), 2);
        let (l, m) = fails(parse_orders(
            "strategy,order_id,symbol,side,quantity\ns,1,A,buy,1\n",
            None,
            &[],
        ));
        assert_eq!(l, Some(1));
        assert!(m.contains("missing column `submit_time`"), "{m}");
    }

    #[test]
    fn fills() {
        let text = "\u{feff}Strategy,Order_ID,Time,Qty,Price,Commission\r\n\
                    mom,1,2024-01-02T14:30:00.120Z,60,190.45,0.3\r\n\
                    mom,1,2024-01-02T14:30:00.250Z,40,190.5,\r\n\r\n";
        let fills = parse_fills(text, None, &[]).unwrap();
        assert_eq!(
            fills,
            vec![
                Fill {
                    strategy: "mom".into(),
                    order_id: "1".into(),
                    t_ms: 1_704_205_800_120,
                    quantity: 60.0,
                    price: 190.45,
                    fee: 0.3,
                    simulated: false,
                },
                Fill {
                    strategy: "mom".into(),
                    order_id: "1".into(),
                    t_ms: 1_704_205_800_250,
                    quantity: 40.0,
                    price: 190.5,
                    fee: 0.0,
                    simulated: false,
                },
            ]
        );
        let broker = "ExecID,OrderRef,ExecTime,Shares,Px\nE1,A-1,1704205800120,5,\"190.5\"\n";
        let fills = parse_fills(
            broker,
            Some("ib"),
            &[
                ("order_id", "OrderRef"),
                ("time", "ExecTime"),
                ("qty", "Shares"),
                ("price", "Px"),
            ],
        )
        .unwrap();
        assert_eq!(
            (fills[0].strategy.as_str(), fills[0].order_id.as_str()),
            ("ib", "A-1")
        );
        assert_eq!(fills[0].t_ms, 1_704_205_800_120);

        let head = "order_id,time,quantity,price,fee\n1,2024-01-02T14:30:00Z,1,1,0\n";
        for (bad, message) in [
            (
                "1,2024-01-02T14:30:00Z,1,0,0",
                "column `price`: `0` must be greater than 0",
            ),
            (
                "1,2024-01-02T14:30:00Z,0,1,0",
                "column `quantity`: `0` must be greater",
            ),
            (
                "1,2024-01-02T14:30:00Z,1,1,-0.5",
                "column `fee`: `-0.5` must not be negative",
            ),
            (
                "1,yesterday,1,1,0",
                "column `time`: `yesterday` is not a time",
            ),
            (
                "1,2024-01-02T14:30:00Z,1,\"1,000.5\",0",
                "`1,000.5` is not a number (no thousands",
            ),
            ("1,2024-01-02T14:30:00Z,1,1e999,0", "not a finite number"),
        ] {
            let (l, m) = fails(parse_fills(&format!("{head}{bad}\n"), Some("s"), &[]));
            assert_eq!(l, Some(3), "{m}");
            assert!(m.contains(message), "{m}");
        }
        let (l, m) = fails(parse_fills(
            "order_id,quantity,price\n1,1,1\n",
            Some("s"),
            &[],
        ));
        assert_eq!(l, Some(1));
        assert!(
            m.contains("missing column `time` (also found as `fill_time`, `timestamp`)"),
            "{m}"
        );
    }

    #[test]
    fn trades() {
        let text = "trade_id,symbol,side,quantity,entry_time,exit_time,entry_price,exit_price,pnl,fees\n\
                    t1,AAPL,long,10,2024-01-02 14:30:00,2024-01-05 20:00:00,100,110,,2\n\
                    t2,AAPL,short,10,2024-01-02 14:30:00,2024-01-02 14:30:00,100,110,,1\n\
                    t3,MSFT,buy,1,2024-01-02T14:30:00Z,2024-01-03T14:30:00Z,10,11,0.95,0.05\n";
        let trades = parse_trades(text, Some("swing"), &[]).unwrap();
        assert_eq!(trades.len(), 3);
        assert_eq!(trades[0].strategy, "swing");
        assert_eq!(trades[0].side, Side::Buy);
        assert_eq!(trades[0].pnl, 98.0);
        assert_eq!(trades[0].fees, 2.0);
        assert_eq!(trades[1].pnl, -101.0);
        assert_eq!(trades[1].entry_ms, trades[1].exit_ms);
        assert_eq!(trades[2].pnl, 0.95);
        assert!(!trades[2].simulated);

        let head = "trade_id,symbol,side,quantity,entry_time,exit_time,entry_price,exit_price\n\
                    t1,A,buy,1,2024-01-02T14:30:00Z,2024-01-03T14:30:00Z,1,2\n";
        for (bad, message) in [
            (
                "t2,A,buy,1,2024-01-03T14:30:00Z,2024-01-02T14:30:00Z,1,2",
                "column `exit_time`: `2024-01-02T14:30:00Z` is before the entry time",
            ),
            (
                "t2,A,buy,1,2024-01-02T14:30:00Z,2024-01-03T14:30:00Z,0,2",
                "column `entry_price`: `0` must be greater",
            ),
            (
                "t2,A,buy,1,2024-01-02T14:30:00Z,2024-01-03T14:30:00Z,1,null",
                "column `exit_price`: `null` is not a number",
            ),
            (
                "t1,A,buy,1,2024-01-02T14:30:00Z,2024-01-03T14:30:00Z,1,2",
                "column `trade_id`: trade `t1` of strategy `s` is on line 2 too",
            ),
            (
                "t2,A,flat,1,2024-01-02T14:30:00Z,2024-01-03T14:30:00Z,1,2",
                "column `side`: `flat` is not a side",
            ),
        ] {
            let (l, m) = fails(parse_trades(&format!("{head}{bad}\n"), Some("s"), &[]));
            assert_eq!(l, Some(3), "{m}");
            assert!(m.contains(message), "{m}");
        }
        let mapped =
            "Ref,Sym,Side,Qty,Opened,Closed,In,Out\nr1,A,sell,2,1704205800000,1704292200000,10,9\n";
        let trades = parse_trades(
            mapped,
            Some("s"),
            &[
                ("trade_id", "Ref"),
                ("symbol", "Sym"),
                ("entry_time", "Opened"),
                ("exit_time", "Closed"),
                ("entry_price", "In"),
                ("exit_price", "Out"),
            ],
        )
        .unwrap();
        assert_eq!(trades[0].pnl, 2.0);
    }

    const YAHOO: &str = "Date,Open,High,Low,Close,Adj Close,Volume\n\
        2024-01-02,187.15,188.44,183.89,185.64,184.94,82488700\n\
        2024-01-03,184.22,185.88,183.43,184.25,183.55,58414500\n";

    #[test]
    fn yahoo_prices() {
        let bars = parse_prices(YAHOO, &[]).unwrap();
        assert_eq!(bars.len(), 2);
        assert_eq!(
            bars[0],
            Bar {
                day: Day::parse("2024-01-02").unwrap(),
                open: 187.15,
                high: 188.44,
                low: 183.89,
                close: 185.64,
                adj_close: 184.94,
                volume: 82_488_700.0,
            }
        );
        // No adjusted close, no volume: the close and 0.
        let bars = parse_prices("date,open,high,low,close\n1/2/2024,1,2,0.5,1.5\n", &[]).unwrap();
        assert_eq!((bars[0].adj_close, bars[0].volume), (1.5, 0.0));
        let bars = parse_prices(
            "date,open,high,low,close,adj_close\n2024-01-02,1,2,0.5,1.5,1.4\n",
            &[],
        )
        .unwrap();
        assert_eq!(bars[0].adj_close, 1.4);
        // A ticker column of one symbol is fine; of two, refused.
        let one = "Ticker,Date,Open,High,Low,Close\nX,2024-01-02,1,1,1,1\nX,2024-01-03,1,1,1,1\n";
        assert_eq!(parse_prices(one, &[]).unwrap().len(), 2);
        let two = "Ticker,Date,Open,High,Low,Close\nX,2024-01-02,1,1,1,1\nY,2024-01-03,1,1,1,1\n";
        let (l, m) = fails(parse_prices(two, &[]));
        assert_eq!(l, Some(3));
        assert!(
            m.contains("column `Ticker` (symbol): `Y`, but line 2 is `X`"),
            "{m}"
        );
        let by = parse_prices_by_symbol(
            "Ticker,Date,Open,High,Low,Close\nX,2024-01-02,1,1,1,1\nY,2024-01-02,2,2,2,2\n\
             X,2024-01-03,1,1,1,1\n",
            &[],
        )
        .unwrap();
        assert_eq!(by.len(), 2);
        assert_eq!((by[0].0.as_str(), by[0].1.len()), ("X", 2));
        assert_eq!((by[1].0.as_str(), by[1].1[0].close), ("Y", 2.0));
        let (l, m) = fails(parse_prices_by_symbol(
            "Ticker,Date,Open,High,Low,Close\nX,2024-01-02,1,1,1,1\nY,2024-01-02,2,2,2,2\n\
             X,2024-01-02,1,1,1,1\n",
            &[],
        ));
        assert_eq!(l, Some(4));
        assert!(m.contains("2024-01-02 is on line 2 too"), "{m}");
        let (_, m) = fails(parse_prices_by_symbol(YAHOO, &[]));
        assert!(
            m.contains("missing column `symbol` (also found as `ticker`)"),
            "{m}"
        );
    }

    #[test]
    fn bad_prices_name_line_and_column() {
        let head = "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,10,11,9,10,10,100\n";
        for (bad, message) in [
            (
                "2024-01-03,null,null,null,null,null,null",
                "column `open`: `null` is not a number (Yahoo writes `null`",
            ),
            (
                "2024-01-03,10,10.5,9,11,11,100",
                "column `high`: 10.5 is below the open (10) or the close (11)",
            ),
            (
                "2024-01-03,10,12,10.5,11,11,100",
                "column `low`: 10.5 is above the open (10) or the close (11)",
            ),
            (
                "2024-01-03,10,11,9,10,10,-1",
                "column `volume`: `-1` must not be negative",
            ),
            (
                "2024-01-03,10,11,9,10,0,1",
                "column `adj_close`: `0` must be greater than 0",
            ),
            (
                "2024-01-03,0,11,0,10,10,1",
                "column `open`: `0` must be greater than 0",
            ),
            (
                "2024-01-02,10,11,9,10,10,100",
                "2024-01-02 is on line 2 too",
            ),
            (
                "2024-01-01,10,11,9,10,10,100",
                "2024-01-01 comes after 2024-01-02 on line 2",
            ),
            (
                "Jan 3 2024,10,11,9,10,10,100",
                "column `date`: `Jan 3 2024` is not a date",
            ),
        ] {
            let (l, m) = fails(parse_prices(&format!("{head}{bad}\n"), &[]));
            assert_eq!(l, Some(3), "{m}");
            assert!(m.starts_with("line 3, "), "{m}");
            assert!(m.contains(message), "{bad}: {m}");
        }
        let (_, m) = fails(parse_prices(
            "Date,Open,High,Close\n2024-01-02,1,1,1\n",
            &[],
        ));
        assert!(
            m.contains("missing column `low`; the header has `Date`, `Open`, `High`, `Close`"),
            "{m}"
        );
        // The mapping can point two of our columns at one of theirs.
        let bars = parse_prices(
            "day,price\n2024-01-02,5\n",
            &[
                ("open", "price"),
                ("high", "price"),
                ("low", "price"),
                ("close", "price"),
            ],
        )
        .unwrap();
        assert_eq!((bars[0].open, bars[0].adj_close), (5.0, 5.0));
    }

    #[test]
    fn error_display_and_file_name() {
        let e = parse_returns("date,return\n2024-01-02,x\n", &[]).unwrap_err();
        assert_eq!(e.column.as_deref(), Some("return"));
        assert_eq!(e.source_column.as_deref(), Some("return"));
        assert_eq!(
            e.in_file("r.csv").to_string(),
            "r.csv, line 2, column `return`: `x` is not a number"
        );
        assert_eq!(text_from_utf8(b"date\n1\n"), Ok("date\n1\n"));
        let e = text_from_utf8(b"date,return\n2024-01-02,0.1\n\xe9t\xe9\n").unwrap_err();
        assert_eq!(e.line, Some(3));
    }
}
