//! The agent event protocol, version 1: what a trading agent prints on its stdout, one
//! JSON object per line (`docs/agent-protocol.md` is the user-facing version).
//!
//! Every event has `"v": 1` and a `"type"`: `bar`, `order`, `ack`, `fill`, `reject`,
//! `equity`, `heartbeat`, `log` or `done`. Times (`t`, `decision_t`) are RFC 3339 UTC
//! strings or integer epoch milliseconds when read, and are always written as RFC 3339
//! with three fractional digits and `Z`. Within version 1 fields are only ever added:
//! readers ignore fields they do not know, and a new required field or a change of meaning
//! is a new version, which readers of version 1 refuse.
//!
//! [`parse_line`] reads one line and never panics; [`StreamParser`] reads a byte stream in
//! arbitrary chunks and sets malformed lines aside (counted, with their first 200 bytes).

use std::fmt;

use quantbox_sandbox::time::Timestamp;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::model::Side;

/// The protocol version this module reads and writes.
pub const PROTOCOL_VERSION: u64 = 1;

/// The longest line read, terminator excluded (1 MiB); a longer one is malformed.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How much of a malformed line is kept for logging.
pub const MALFORMED_PREFIX_BYTES: usize = 200;

/// The event types of version 1, in the order the documentation lists them.
pub const EVENT_TYPES: [&str; 9] = [
    "bar",
    "order",
    "ack",
    "fill",
    "reject",
    "equity",
    "heartbeat",
    "log",
    "done",
];

/// One line of the protocol. `t_ms` fields are epoch milliseconds (UTC); on the wire they
/// are `t` (and `decision_t`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Bar(BarEvent),
    Order(OrderEvent),
    Ack(AckEvent),
    Fill(FillEvent),
    Reject(RejectEvent),
    Equity(EquityEvent),
    Heartbeat(HeartbeatEvent),
    Log(LogEvent),
    Done(DoneEvent),
}

/// A price bar the agent acted on (a sign of life of its data feed, too). Prices in the
/// quote currency per share, volume in shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BarEvent {
    #[serde(rename = "t", with = "time_ms")]
    pub t_ms: i64,
    pub symbol: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

/// An order as submitted (`t` is the submit time).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    #[serde(rename = "t", with = "time_ms")]
    pub t_ms: i64,
    /// Unique within the run; fills, acks and rejects name it.
    pub id: String,
    pub symbol: String,
    pub side: Side,
    /// Shares, > 0 (the side gives the direction).
    pub quantity: f64,
    /// `market` or `limit`.
    pub order_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_price: Option<f64>,
    /// The reference price when the order was decided; slippage is measured against it.
    pub arrival_price: f64,
    /// When the order was decided (at or before `t`).
    #[serde(rename = "decision_t", with = "time_ms")]
    pub decision_ms: i64,
}

/// The broker has received the order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AckEvent {
    #[serde(rename = "t", with = "time_ms")]
    pub t_ms: i64,
    pub order_id: String,
}

/// An execution of (part of) an order. An order may have several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FillEvent {
    #[serde(rename = "t", with = "time_ms")]
    pub t_ms: i64,
    pub order_id: String,
    /// Shares, > 0.
    pub quantity: f64,
    /// Per share, slippage included.
    pub price: f64,
    /// In the quote currency, for this fill.
    pub fee: f64,
}

/// The order was refused (or could not be executed); nothing of it fills afterwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectEvent {
    #[serde(rename = "t", with = "time_ms")]
    pub t_ms: i64,
    pub order_id: String,
    pub reason: String,
}

/// The account's value: `equity = cash + positions_value` (short positions count
/// negative).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EquityEvent {
    #[serde(rename = "t", with = "time_ms")]
    pub t_ms: i64,
    pub equity: f64,
    pub cash: f64,
    pub positions_value: f64,
}

/// A sign of life when there is no bar to report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatEvent {
    #[serde(rename = "t", with = "time_ms")]
    pub t_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    #[serde(alias = "trace")]
    Debug,
    Info,
    #[serde(alias = "warning")]
    Warn,
    #[serde(alias = "critical", alias = "fatal")]
    Error,
}

/// A message for the agent's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    #[serde(rename = "t", with = "time_ms")]
    pub t_ms: i64,
    pub level: LogLevel,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneStatus {
    Completed,
    Failed,
}

/// The last event of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoneEvent {
    #[serde(rename = "t", with = "time_ms")]
    pub t_ms: i64,
    pub status: DoneStatus,
    pub summary: Summary,
}

/// What a run did, as counted by the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Bar events (one per symbol per date).
    pub bars: u64,
    /// Order events.
    pub orders: u64,
    /// Fill events.
    pub fills: u64,
    /// Reject events.
    pub rejects: u64,
    /// The last equity, in the quote currency.
    pub final_equity: f64,
    /// `final_equity / start equity − 1` (0.1 = +10 %).
    pub total_return: f64,
}

/// Why a line is not an event.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// The version as the line wrote it (JSON text).
    #[error("unsupported protocol version {0} (this reader speaks version 1)")]
    UnsupportedVersion(String),
    /// The type as the line wrote it (JSON text when it is not a string).
    #[error(
        "unknown event type {0} (known: bar, order, ack, fill, reject, equity, heartbeat, log, done)"
    )]
    UnknownType(String),
    #[error("invalid `{event_type}` event: {reason}")]
    Invalid {
        event_type: &'static str,
        reason: String,
    },
    #[error("`{field}` of a `{event_type}` event is not a finite number")]
    NonFinite {
        event_type: &'static str,
        field: &'static str,
    },
    #[error("not UTF-8")]
    NotUtf8,
    #[error("line of {0} bytes is longer than the limit of 1 MiB")]
    TooLong(usize),
}

/// Reads one line (its terminator, if any, excluded): the event, or why it is none. Never
/// panics. Refuses a version other than 1 (naming it), an unknown type, a missing or
/// mistyped field, a non-finite number and an order or fill quantity that is not
/// positive. Fields it does not know are ignored.
pub fn parse_line(line: &str) -> Result<Event, ProtocolError> {
    let value: Value =
        serde_json::from_str(line.trim()).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let Value::Object(map) = &value else {
        return Err(ProtocolError::NotObject);
    };
    match map.get("v") {
        None => return Err(ProtocolError::MissingField("v")),
        Some(Value::Number(n)) if n.as_f64() == Some(PROTOCOL_VERSION as f64) => {}
        Some(v) => return Err(ProtocolError::UnsupportedVersion(v.to_string())),
    }
    let event_type = match map.get("type") {
        None => return Err(ProtocolError::MissingField("type")),
        Some(Value::String(s)) => match EVENT_TYPES.iter().find(|&&k| k == s) {
            Some(&k) => k,
            None => return Err(ProtocolError::UnknownType(format!("`{s}`"))),
        },
        Some(other) => return Err(ProtocolError::UnknownType(other.to_string())),
    };
    let event = Event::deserialize(value).map_err(|e| ProtocolError::Invalid {
        event_type,
        reason: e.to_string(),
    })?;
    event.validate()?;
    Ok(event)
}

impl Event {
    /// The event as one line: `{"v":1,"type":…,…}`, without a newline. Numbers are
    /// written as they are: a non-finite one becomes `null`, which [`parse_line`] refuses
    /// ([`Event::validate`] says so first).
    pub fn to_line(&self) -> String {
        // Serialising a struct of plain fields cannot fail; the tag comes first.
        let body = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        let mut line = String::with_capacity(body.len() + 7);
        line.push_str("{\"v\":1,");
        line.push_str(body.get(1..).unwrap_or("}"));
        line
    }

    /// `bar`, `order`, …
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Bar(_) => "bar",
            Self::Order(_) => "order",
            Self::Ack(_) => "ack",
            Self::Fill(_) => "fill",
            Self::Reject(_) => "reject",
            Self::Equity(_) => "equity",
            Self::Heartbeat(_) => "heartbeat",
            Self::Log(_) => "log",
            Self::Done(_) => "done",
        }
    }

    /// The event's time (`t`), epoch milliseconds.
    pub fn t_ms(&self) -> i64 {
        match self {
            Self::Bar(e) => e.t_ms,
            Self::Order(e) => e.t_ms,
            Self::Ack(e) => e.t_ms,
            Self::Fill(e) => e.t_ms,
            Self::Reject(e) => e.t_ms,
            Self::Equity(e) => e.t_ms,
            Self::Heartbeat(e) => e.t_ms,
            Self::Log(e) => e.t_ms,
            Self::Done(e) => e.t_ms,
        }
    }

    /// The rules beyond the types: every number finite, times within years 0000–9999,
    /// order and fill quantities > 0.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let event_type = self.type_name();
        let finite = |field: &'static str, x: f64| {
            if x.is_finite() {
                Ok(())
            } else {
                Err(ProtocolError::NonFinite { event_type, field })
            }
        };
        let positive = |field: &'static str, x: f64| {
            if x > 0.0 {
                Ok(())
            } else {
                Err(ProtocolError::Invalid {
                    event_type,
                    reason: format!("`{field}` must be greater than 0, not {x}"),
                })
            }
        };
        let time = |field: &'static str, ms: i64| {
            if time_ms::in_range(ms) {
                Ok(())
            } else {
                Err(ProtocolError::Invalid {
                    event_type,
                    reason: format!("`{field}` {ms} is outside years 0000-9999"),
                })
            }
        };
        time("t", self.t_ms())?;
        match self {
            Self::Bar(e) => {
                finite("open", e.open)?;
                finite("high", e.high)?;
                finite("low", e.low)?;
                finite("close", e.close)?;
                finite("volume", e.volume)?;
            }
            Self::Order(e) => {
                finite("quantity", e.quantity)?;
                positive("quantity", e.quantity)?;
                if let Some(p) = e.limit_price {
                    finite("limit_price", p)?;
                }
                finite("arrival_price", e.arrival_price)?;
                time("decision_t", e.decision_ms)?;
            }
            Self::Fill(e) => {
                finite("quantity", e.quantity)?;
                positive("quantity", e.quantity)?;
                finite("price", e.price)?;
                finite("fee", e.fee)?;
            }
            Self::Equity(e) => {
                finite("equity", e.equity)?;
                finite("cash", e.cash)?;
                finite("positions_value", e.positions_value)?;
            }
            Self::Done(e) => {
                finite("final_equity", e.summary.final_equity)?;
                finite("total_return", e.summary.total_return)?;
            }
            Self::Ack(_) | Self::Reject(_) | Self::Heartbeat(_) | Self::Log(_) => {}
        }
        Ok(())
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// A line [`StreamParser`] could not read.
#[derive(Clone, Debug, PartialEq)]
pub struct Malformed {
    /// 1-based line number in the stream (blank lines counted).
    pub line: u64,
    /// The line's first 200 bytes (invalid UTF-8 replaced), for logging.
    pub prefix: String,
    pub error: ProtocolError,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} ({:?})", self.line, self.error, self.prefix)
    }
}

/// Reads the protocol from a byte stream in chunks of any size: a line may be split
/// across chunks; `\n` and `\r\n` end lines; [`StreamParser::finish`] reads a last line
/// without a newline. Blank lines are skipped. A line longer than [`MAX_LINE_BYTES`] is
/// malformed: it is not buffered beyond the limit, the rest of it is skipped, and only its
/// prefix is kept. Memory stays within about 1 MiB whatever the input.
#[derive(Debug, Default)]
pub struct StreamParser {
    buf: Vec<u8>,
    /// The current line has gone past the limit: its bytes are counted, not kept.
    overlong: Option<OverLong>,
    line: u64,
    events: u64,
    malformed: u64,
}

#[derive(Debug)]
struct OverLong {
    prefix: Vec<u8>,
    bytes: usize,
    /// The last byte seen was `\r` (not counted if the newline follows).
    last_cr: bool,
}

impl StreamParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a chunk; returns the lines it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Event, Malformed>> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.append(&rest[..i]);
                    rest = &rest[i + 1..];
                    if let Some(r) = self.end_line() {
                        out.push(r);
                    }
                }
                None => {
                    self.append(rest);
                    rest = &[];
                }
            }
        }
        out
    }

    /// The end of the stream: reads a last line that had no newline.
    pub fn finish(&mut self) -> Option<Result<Event, Malformed>> {
        if self.buf.is_empty() && self.overlong.is_none() {
            return None;
        }
        self.end_line()
    }

    /// Lines read that were events.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Lines read that were malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    fn append(&mut self, bytes: &[u8]) {
        if let Some(o) = &mut self.overlong {
            o.bytes += bytes.len();
            if let Some(&last) = bytes.last() {
                o.last_cr = last == b'\r';
            }
            return;
        }
        self.buf.extend_from_slice(bytes);
        // One more byte than the limit may be a `\r` before the newline.
        if self.buf.len() > MAX_LINE_BYTES + 1 {
            let prefix = self.buf[..MALFORMED_PREFIX_BYTES].to_vec();
            self.overlong = Some(OverLong {
                prefix,
                bytes: self.buf.len(),
                last_cr: self.buf.last() == Some(&b'\r'),
            });
            self.buf = Vec::new();
        }
    }

    fn end_line(&mut self) -> Option<Result<Event, Malformed>> {
        self.line += 1;
        if let Some(o) = self.overlong.take() {
            let bytes = o.bytes - usize::from(o.last_cr);
            return Some(self.malformed_line(&o.prefix, ProtocolError::TooLong(bytes)));
        }
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        // A byte order mark at the very start of the stream.
        let start = if self.line == 1 && line.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        let text = &line[start..];
        let result = if text.len() > MAX_LINE_BYTES {
            Err(ProtocolError::TooLong(text.len()))
        } else if text.iter().all(u8::is_ascii_whitespace) {
            self.buf = reuse(line);
            return None;
        } else {
            match std::str::from_utf8(text) {
                Ok(s) => parse_line(s),
                Err(_) => Err(ProtocolError::NotUtf8),
            }
        };
        let out = match result {
            Ok(event) => {
                self.events += 1;
                Ok(event)
            }
            Err(error) => self.malformed_line(text, error),
        };
        self.buf = reuse(line);
        Some(out)
    }

    fn malformed_line(&mut self, bytes: &[u8], error: ProtocolError) -> Result<Event, Malformed> {
        self.malformed += 1;
        let cut = &bytes[..bytes.len().min(MALFORMED_PREFIX_BYTES)];
        Err(Malformed {
            line: self.line,
            prefix: String::from_utf8_lossy(cut).into_owned(),
            error,
        })
    }
}

/// Keeps a line's allocation for the next one (unless it grew large).
fn reuse(mut line: Vec<u8>) -> Vec<u8> {
    line.clear();
    if line.capacity() > 64 * 1024 {
        Vec::new()
    } else {
        line
    }
}

/// `t` on the wire: written as RFC 3339 (ms, `Z`), read from RFC 3339 or integer epoch
/// milliseconds.
pub mod time_ms {
    use super::*;

    /// 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z, what RFC 3339 can write.
    pub fn in_range(ms: i64) -> bool {
        (-62_167_219_200_000..253_402_300_800_000).contains(&ms)
    }

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Timestamp::from_unix_ms(*ms).to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(TimeVisitor)
    }

    struct TimeVisitor;

    impl Visitor<'_> for TimeVisitor {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 time or integer epoch milliseconds")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<i64, E> {
            Timestamp::parse_rfc3339(s)
                .map(Timestamp::unix_ms)
                .ok_or_else(|| E::custom(format!("`{s}` is not an RFC 3339 time")))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("epoch milliseconds {v} out of range")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            // 1.7e12 written by a language that prints every number as a float.
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(v as i64)
            } else {
                Err(E::custom(format!(
                    "epoch milliseconds must be an integer, not {v}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_262_615_400_000; // 2010-01-04T14:30:00Z

    fn samples() -> Vec<Event> {
        vec![
            Event::Bar(BarEvent {
                t_ms: T,
                symbol: "AAPL".into(),
                open: 30.49,
                high: 30.64,
                low: 30.34,
                close: 30.57,
                volume: 123_432_400.0,
            }),
            Event::Order(OrderEvent {
                t_ms: T,
                id: "o1".into(),
                symbol: "AAPL".into(),
                side: Side::Buy,
                quantity: 100.0,
                order_type: "market".into(),
                limit_price: None,
                arrival_price: 30.57,
                decision_ms: T,
            }),
            Event::Order(OrderEvent {
                t_ms: T + 5,
                id: "o2".into(),
                symbol: "MSFT".into(),
                side: Side::Sell,
                quantity: 3.0,
                order_type: "limit".into(),
                limit_price: Some(31.5),
                arrival_price: 31.0,
                decision_ms: T,
            }),
            Event::Ack(AckEvent {
                t_ms: T + 20,
                order_id: "o1".into(),
            }),
            Event::Fill(FillEvent {
                t_ms: T + 86_400_000,
                order_id: "o1".into(),
                quantity: 100.0,
                price: 30.6,
                fee: 1.0,
            }),
            Event::Reject(RejectEvent {
                t_ms: T,
                order_id: "o2".into(),
                reason: "insufficient cash: need 10.00, have 5.00".into(),
            }),
            Event::Equity(EquityEvent {
                t_ms: T,
                equity: 100_000.0,
                cash: 96_943.0,
                positions_value: 3_057.0,
            }),
            Event::Heartbeat(HeartbeatEvent { t_ms: T }),
            Event::Log(LogEvent {
                t_ms: T,
                level: LogLevel::Warn,
                message: "a \"quoted\"\nline".into(),
            }),
            Event::Done(DoneEvent {
                t_ms: T,
                status: DoneStatus::Completed,
                summary: Summary {
                    bars: 756,
                    orders: 10,
                    fills: 9,
                    rejects: 1,
                    final_equity: 110_000.0,
                    total_return: 0.1,
                },
            }),
        ]
    }

    #[test]
    fn every_event_round_trips_through_a_line() {
        for e in samples() {
            let line = e.to_line();
            assert!(line.starts_with(&format!("{{\"v\":1,\"type\":\"{}\"", e.type_name())));
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(parse_line(&line), Ok(e.clone()), "{line}");
        }
    }

    #[test]
    fn writes_the_documented_shape() {
        let s = samples();
        assert_eq!(
            s[1].to_line(),
            r#"{"v":1,"type":"order","t":"2010-01-04T14:30:00.000Z","id":"o1","symbol":"AAPL","side":"buy","quantity":100.0,"order_type":"market","arrival_price":30.57,"decision_t":"2010-01-04T14:30:00.000Z"}"#
        );
        assert_eq!(
            s[9].to_line(),
            r#"{"v":1,"type":"done","t":"2010-01-04T14:30:00.000Z","status":"completed","summary":{"bars":756,"orders":10,"fills":9,"rejects":1,"final_equity":110000.0,"total_return":0.1}}"#
        );
    }

    #[test]
    fn reads_epoch_ms_offsets_and_unknown_fields() {
        let e = parse_line(r#"{"type":"heartbeat","v":1,"t":1262615400000,"extra":[1,2]}"#);
        assert_eq!(e, Ok(Event::Heartbeat(HeartbeatEvent { t_ms: T })));
        let e = parse_line(r#"{"v":1,"type":"heartbeat","t":"2010-01-04T09:30:00-05:00"}"#);
        assert_eq!(e, Ok(Event::Heartbeat(HeartbeatEvent { t_ms: T })));
        let e = parse_line(r#"{"v":1.0,"type":"heartbeat","t":1.2626154e12}"#);
        assert_eq!(e, Ok(Event::Heartbeat(HeartbeatEvent { t_ms: T })));
        let e = parse_line(
            r#"{"v":1,"type":"log","t":0,"level":"warning","message":"m","source":"x"}"#,
        );
        assert!(matches!(
            e,
            Ok(Event::Log(LogEvent {
                level: LogLevel::Warn,
                ..
            }))
        ));
        // Fill quantities and prices may be integers.
        let e = parse_line(
            r#"{"v":1,"type":"fill","t":0,"order_id":"a","quantity":5,"price":10,"fee":0}"#,
        );
        assert!(matches!(
            e,
            Ok(Event::Fill(FillEvent { quantity: 5.0, .. }))
        ));
    }

    #[test]
    fn refuses_what_is_not_a_v1_event() {
        let err = |line: &str| parse_line(line).unwrap_err();
        assert_eq!(
            err(r#"{"v":2,"type":"heartbeat","t":0}"#),
            ProtocolError::UnsupportedVersion("2".into())
        );
        assert!(
            err(r#"{"v":2,"type":"heartbeat","t":0}"#)
                .to_string()
                .contains("version 2")
        );
        assert_eq!(
            err(r#"{"v":"1","type":"heartbeat","t":0}"#),
            ProtocolError::UnsupportedVersion("\"1\"".into())
        );
        assert_eq!(
            err(r#"{"type":"heartbeat","t":0}"#),
            ProtocolError::MissingField("v")
        );
        assert_eq!(err(r#"{"v":1,"t":0}"#), ProtocolError::MissingField("type"));
        assert_eq!(
            err(r#"{"v":1,"type":"trade","t":0}"#),
            ProtocolError::UnknownType("`trade`".into())
        );
        assert_eq!(
            err(r#"{"v":1,"type":7,"t":0}"#),
            ProtocolError::UnknownType("7".into())
        );
        assert_eq!(err("[1]"), ProtocolError::NotObject);
        assert!(matches!(err(""), ProtocolError::Json(_)));
        assert!(matches!(err("{\"v\":1,"), ProtocolError::Json(_)));
        // Missing and mistyped fields name the field.
        let e = err(r#"{"v":1,"type":"bar","t":0,"open":1,"high":1,"low":1,"close":1,"volume":1}"#);
        assert_eq!(e.to_string(), "invalid `bar` event: missing field `symbol`");
        let e = err(r#"{"v":1,"type":"ack","order_id":"a"}"#);
        assert_eq!(e.to_string(), "invalid `ack` event: missing field `t`");
        let e = err(r#"{"v":1,"type":"ack","t":"yesterday","order_id":"a"}"#);
        assert!(
            e.to_string()
                .contains("`yesterday` is not an RFC 3339 time"),
            "{e}"
        );
        let e = err(r#"{"v":1,"type":"ack","t":1.5,"order_id":"a"}"#);
        assert!(e.to_string().contains("must be an integer"), "{e}");
        let e = err(r#"{"v":1,"type":"ack","t":0,"order_id":7}"#);
        assert!(
            e.to_string()
                .starts_with("invalid `ack` event: invalid type"),
            "{e}"
        );
        let e = err(r#"{"v":1,"type":"log","t":0,"level":"loud","message":""}"#);
        assert!(e.to_string().contains("unknown variant `loud`"), "{e}");
        let e = err(r#"{"v":1,"type":"done","t":0,"status":"completed","summary":{"bars":1}}"#);
        assert!(e.to_string().contains("missing field `orders`"), "{e}");
        // Non-finite numbers: JSON has none, so they arrive as tokens, overflow or null.
        for bad in ["NaN", "Infinity", "-Infinity", "1e999", "null"] {
            let line = format!(
                r#"{{"v":1,"type":"equity","t":0,"equity":{bad},"cash":0,"positions_value":0}}"#
            );
            assert!(parse_line(&line).is_err(), "{line}");
        }
        let e = err(r#"{"v":1,"type":"fill","t":0,"order_id":"a","quantity":0,"price":1,"fee":0}"#);
        assert!(
            e.to_string().contains("`quantity` must be greater than 0"),
            "{e}"
        );
        let e = err(r#"{"v":1,"type":"heartbeat","t":999999999999999999}"#);
        assert!(e.to_string().contains("outside years"), "{e}");
    }

    #[test]
    fn validate_catches_non_finite_numbers_before_writing() {
        let e = Event::Equity(EquityEvent {
            t_ms: 0,
            equity: f64::NAN,
            cash: 0.0,
            positions_value: 0.0,
        });
        assert_eq!(
            e.validate(),
            Err(ProtocolError::NonFinite {
                event_type: "equity",
                field: "equity"
            })
        );
        assert!(parse_line(&e.to_line()).is_err());
    }

    #[test]
    fn parse_line_never_panics_on_mutilated_lines() {
        let lines: Vec<String> = samples().iter().map(Event::to_line).collect();
        for line in &lines {
            let bytes = line.as_bytes();
            for cut in 0..bytes.len() {
                if let Ok(s) = std::str::from_utf8(&bytes[..cut]) {
                    let _ = parse_line(s);
                }
                let mut flipped = bytes.to_vec();
                flipped[cut] ^= 0x20;
                if let Ok(s) = std::str::from_utf8(&flipped) {
                    let _ = parse_line(s);
                }
            }
        }
    }

    fn collect(p: &mut StreamParser, chunks: &[&[u8]]) -> Vec<Result<Event, Malformed>> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c));
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn stream_parser_reads_lines_split_anywhere() {
        let events = samples();
        let mut text = String::new();
        for (i, e) in events.iter().enumerate() {
            text.push_str(&e.to_line());
            text.push_str(if i % 2 == 0 { "\r\n" } else { "\n" });
            if i == 3 {
                text.push_str("\n  \r\n");
            }
        }
        text.truncate(text.len() - 1); // the last line without its newline
        let bytes = text.as_bytes();
        for size in [1, 2, 7, 64, 1000, bytes.len()] {
            let mut p = StreamParser::new();
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            let got: Vec<Event> = collect(&mut p, &chunks)
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(got, events, "chunks of {size}");
            assert_eq!((p.events(), p.malformed()), (events.len() as u64, 0));
        }
    }

    #[test]
    fn stream_parser_sets_malformed_lines_aside() {
        let good = samples()[7].to_line();
        let long = format!("{{\"v\":1,\"x\":\"{}\"}}", "a".repeat(MAX_LINE_BYTES + 10));
        let text = format!(
            "\u{feff}{good}\nnot json\n{long}\n{good}\n@\n{{\"v\":3,\"type\":\"bar\"}}\n{good}"
        );
        let mut bytes = text.into_bytes();
        // Line 5 is one byte that is not UTF-8.
        let pos = bytes.iter().position(|&b| b == b'@').unwrap();
        bytes[pos] = 0xff;
        for size in [3, 4096, bytes.len()] {
            let mut p = StreamParser::new();
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            let out = collect(&mut p, &chunks);
            assert_eq!(out.len(), 7);
            let bad: Vec<&Malformed> = out.iter().filter_map(|r| r.as_ref().err()).collect();
            assert_eq!(bad.iter().map(|m| m.line).collect::<Vec<_>>(), [2, 3, 5, 6]);
            assert_eq!(bad[0].prefix, "not json");
            assert!(matches!(bad[0].error, ProtocolError::Json(_)));
            assert_eq!(bad[1].error, ProtocolError::TooLong(long.len()));
            assert_eq!(bad[1].prefix.len(), MALFORMED_PREFIX_BYTES);
            assert!(bad[1].prefix.starts_with("{\"v\":1,\"x\":\"aaa"));
            assert_eq!(bad[2].error, ProtocolError::NotUtf8);
            assert_eq!(bad[2].prefix, "\u{fffd}");
            assert_eq!(bad[3].error, ProtocolError::UnsupportedVersion("3".into()));
            assert_eq!((p.events(), p.malformed()), (3, 4));
            assert!(
                bad[3]
                    .to_string()
                    .starts_with("line 6: unsupported protocol version 3")
            );
        }
    }

    #[test]
    fn stream_parser_line_limit_is_exact() {
        // A heartbeat padded with spaces to exactly the limit is read, one byte more is not.
        let hb = samples()[7].to_line();
        let pad = MAX_LINE_BYTES - hb.len();
        let exact = format!("{}{}", &hb[..hb.len() - 1], " ".repeat(pad)) + "}";
        assert_eq!(exact.len(), MAX_LINE_BYTES);
        let over = format!("{} }}", &exact[..exact.len() - 1]);
        let mut p = StreamParser::new();
        let text = format!("{exact}\r\n{over}\r\n{exact}");
        let out = collect(&mut p, &[text.as_bytes()]);
        assert!(out[0].is_ok() && out[2].is_ok());
        assert_eq!(
            out[1].as_ref().unwrap_err().error,
            ProtocolError::TooLong(MAX_LINE_BYTES + 1)
        );
        // An over-long last line without a newline is malformed too.
        let mut p = StreamParser::new();
        let out = collect(&mut p, &[over.as_bytes(), b"more"]);
        assert_eq!(
            out[0].as_ref().unwrap_err().error,
            ProtocolError::TooLong(MAX_LINE_BYTES + 5)
        );
    }
}
