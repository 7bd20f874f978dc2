//! The Connect protocol with the JSON codec, as E2B's SDKs speak it to `envd`.
//!
//! Why this module exists: both official SDKs talk to the in-sandbox daemon with the
//! Connect protocol (not gRPC), JSON codec, no compression (e2b-compat.md §2.4). Serving
//! envd's RPCs and calling them both need the same wire rules, so they live here once, as
//! pure functions over bytes with no HTTP framework attached:
//!
//! - **unary**: `Content-Type: application/json`, the message is the whole body; a failure
//!   is a non-200 status (see [`Code::http_status`]) with `{"code": "...", "message": "..."}`;
//! - **streaming**: `Content-Type: application/connect+json`, the body is a sequence of
//!   envelopes, each a flag byte, a big-endian `u32` length and the payload; the last one
//!   has flag [`FLAG_END_STREAM`] and carries [`EndStream`] (`{"error"?, "metadata"?}`),
//!   and errors during a stream travel there with HTTP 200.
//!
//! [`Decoder`] takes a body in whatever chunks it arrives and hands out whole envelopes.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Content type of a unary request or response with the JSON codec.
pub const CONTENT_TYPE_UNARY_JSON: &str = "application/json";
/// Content type of a streaming request or response with the JSON codec.
pub const CONTENT_TYPE_STREAM_JSON: &str = "application/connect+json";
/// Header a unary Connect client sends (value [`PROTOCOL_VERSION`]).
pub const PROTOCOL_VERSION_HEADER: &str = "connect-protocol-version";
/// The only Connect protocol version.
pub const PROTOCOL_VERSION: &str = "1";
/// Header carrying the caller's deadline in milliseconds.
pub const TIMEOUT_HEADER: &str = "connect-timeout-ms";

/// Envelope flag: the payload is compressed (never negotiated by E2B's SDKs).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Length of an envelope's prefix: one flag byte and a big-endian `u32` length.
pub const ENVELOPE_PREFIX_LEN: usize = 5;
/// Default limit on one envelope's payload accepted by [`Decoder::new`].
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// A Connect error code (the Connect specification's sixteen codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// Every code, in the specification's numeric order (1..=16).
    pub const ALL: [Code; 16] = [
        Code::Canceled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code's wire name (`snake_case`), e.g. `"not_found"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The code for a wire name; `None` for a name the specification does not define.
    pub fn from_name(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The HTTP status a unary error response with this code carries.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown => 500,
            Code::InvalidArgument => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 400,
            Code::Aborted => 409,
            Code::OutOfRange => 400,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::DataLoss => 500,
            Code::Unauthenticated => 401,
        }
    }

    /// The code a client infers from the HTTP status of a response that carries no Connect
    /// error body (a proxy's error page, say), per the Connect specification.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    /// An unrecognised name reads as [`Code::Unknown`], as the specification asks of clients.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Code::from_name(&name).unwrap_or(Code::Unknown))
    }
}

/// A Connect error: the body of a unary error response and the `error` of an
/// end-of-stream message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {}", message.as_deref().unwrap_or(""))]
pub struct Error {
    pub code: Code,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Error details, kept as JSON (`{"type", "value", "debug"?}` objects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<serde_json::Value>,
}

impl Error {
    /// An error with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error {
            code,
            message: Some(message.into()),
            details: Vec::new(),
        }
    }

    /// The HTTP status of this error as a unary response.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// The JSON body of this error as a unary response (content type `application/json`).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Connect error always serialises")
    }

    /// Reads a unary response that failed (`status` ≠ 200): its Connect error body if it has
    /// one, else an error inferred from the status whose message is the body's `message`
    /// string, if any, or the body's text.
    pub fn from_unary_response(status: u16, body: &[u8]) -> Error {
        #[derive(Deserialize)]
        struct Loose {
            code: Option<serde_json::Value>,
            message: Option<serde_json::Value>,
        }
        let from_status = Code::from_http_status(status);
        match serde_json::from_slice::<Loose>(body) {
            Ok(loose) => {
                if matches!(loose.code, Some(serde_json::Value::String(_)))
                    && let Ok(error) = serde_json::from_slice::<Error>(body)
                {
                    return error;
                }
                let message = match loose.message {
                    Some(serde_json::Value::String(m)) => m,
                    _ => String::from_utf8_lossy(body).into_owned(),
                };
                Error::new(from_status, message)
            }
            Err(_) => Error::new(from_status, String::from_utf8_lossy(body).into_owned()),
        }
    }
}

/// The payload of the end-of-stream envelope: `{"error"?: {...}, "metadata"?: {...}}`.
/// Metadata is trailers: each key maps to a list of values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndStream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, Vec<String>>,
}

/// Whether a `Content-Type` value is the unary JSON type (parameters such as
/// `charset=utf-8` allowed, case-insensitive).
pub fn is_unary_json(content_type: &str) -> bool {
    media_type(content_type).eq_ignore_ascii_case(CONTENT_TYPE_UNARY_JSON)
}

/// Whether a `Content-Type` value is the streaming JSON type.
pub fn is_stream_json(content_type: &str) -> bool {
    media_type(content_type).eq_ignore_ascii_case(CONTENT_TYPE_STREAM_JSON)
}

fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parses a `Connect-Timeout-Ms` value: ASCII digits, at most 10 of them. `0` means no
/// deadline (E2B's SDKs use it for "unlimited"), as does an absent header.
pub fn parse_timeout_ms(value: &str) -> Result<Option<Duration>, Error> {
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::new(
            Code::InvalidArgument,
            format!("invalid {TIMEOUT_HEADER}: {value:?}"),
        ));
    }
    let ms: u64 = value.parse().expect("at most 10 ASCII digits fit in u64");
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// Reads a unary request body as `T`; a malformed body is `invalid_argument`.
/// An empty body reads as `{}`.
pub fn decode_unary<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| Error::new(Code::InvalidArgument, format!("invalid request: {e}")))
}

/// Writes a unary response body.
pub fn encode_unary<T: Serialize>(message: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(message)
        .map_err(|e| Error::new(Code::Internal, format!("cannot encode response: {e}")))
}

/// One envelope of a streaming body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Envelope {
    /// Whether this is the end-of-stream message.
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// The payload read as a JSON message `T`; a malformed one is `invalid_argument`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Error::new(Code::InvalidArgument, format!("invalid message: {e}")))
    }

    /// The payload read as an [`EndStream`] (an empty payload reads as `{}`).
    pub fn end_stream(&self) -> Result<EndStream, Error> {
        if self.payload.is_empty() {
            return Ok(EndStream::default());
        }
        self.json()
    }
}

/// Why a streaming body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope payload of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("compressed envelope, but no compression was negotiated")]
    Compressed,
    #[error("envelope flags {0:#04x} have unknown bits set")]
    UnknownFlags(u8),
    #[error("body ended inside an envelope ({0} bytes left over)")]
    Truncated(usize),
}

impl From<EnvelopeError> for Error {
    fn from(e: EnvelopeError) -> Error {
        let code = match e {
            EnvelopeError::TooLarge { .. } => Code::ResourceExhausted,
            EnvelopeError::Compressed => Code::Internal,
            EnvelopeError::UnknownFlags(_) | EnvelopeError::Truncated(_) => Code::InvalidArgument,
        };
        Error::new(code, e.to_string())
    }
}

/// Prefixes `payload` with `flags` and its big-endian length.
pub fn encode_envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("an envelope payload fits in u32");
    let mut out = Vec::with_capacity(ENVELOPE_PREFIX_LEN + payload.len());
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One message envelope (flags 0) holding `message` as JSON.
pub fn encode_message<T: Serialize>(message: &T) -> Result<Vec<u8>, Error> {
    Ok(encode_envelope(0, &encode_unary(message)?))
}

/// The end-of-stream envelope (flag [`FLAG_END_STREAM`]).
pub fn encode_end_stream(end: &EndStream) -> Vec<u8> {
    let payload = serde_json::to_vec(end).expect("an end-of-stream message always serialises");
    encode_envelope(FLAG_END_STREAM, &payload)
}

/// An incremental envelope decoder: [`push`](Decoder::push) bytes as they arrive,
/// [`next`](Decoder::next) whole envelopes out, [`finish`](Decoder::finish) at the end of
/// the body.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    max_message_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder accepting payloads up to [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn new() -> Decoder {
        Decoder::with_max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// A decoder accepting payloads up to `max` bytes.
    pub fn with_max_message_size(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max_message_size: max,
        }
    }

    /// Adds the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole envelope, `None` if more bytes are needed. A bad prefix is reported
    /// as soon as its five bytes are in, before the payload arrives.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Envelope>, EnvelopeError> {
        let pending = &self.buf[self.start..];
        if pending.len() < ENVELOPE_PREFIX_LEN {
            return Ok(None);
        }
        let flags = pending[0];
        if flags & !(FLAG_COMPRESSED | FLAG_END_STREAM) != 0 {
            return Err(EnvelopeError::UnknownFlags(flags));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(EnvelopeError::Compressed);
        }
        let size = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
        if size > self.max_message_size {
            return Err(EnvelopeError::TooLarge {
                size,
                limit: self.max_message_size,
            });
        }
        if pending.len() < ENVELOPE_PREFIX_LEN + size {
            return Ok(None);
        }
        let payload = pending[ENVELOPE_PREFIX_LEN..ENVELOPE_PREFIX_LEN + size].to_vec();
        self.start += ENVELOPE_PREFIX_LEN + size;
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(Envelope { flags, payload }))
    }

    /// Bytes received but not yet handed out as an envelope.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Ends the body: an error if it stopped inside an envelope.
    pub fn finish(self) -> Result<(), EnvelopeError> {
        match self.pending() {
            0 => Ok(()),
            n => Err(EnvelopeError::Truncated(n)),
        }
    }
}

/// Reads the request body of a server-streaming call: exactly one message envelope, whose
/// payload is `T`. Anything else is `invalid_argument`.
pub fn decode_stream_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let mut decoder = Decoder::new();
    decoder.push(body);
    let envelope = decoder
        .next()?
        .ok_or(EnvelopeError::Truncated(body.len()))?;
    if envelope.is_end_stream() {
        return Err(Error::new(
            Code::InvalidArgument,
            "expected a request message, got end-of-stream",
        ));
    }
    if decoder.pending() > 0 {
        return Err(Error::new(
            Code::InvalidArgument,
            "a server-streaming request holds exactly one message",
        ));
    }
    envelope.json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn http_status_per_code() {
        let expected = [
            ("canceled", 499),
            ("unknown", 500),
            ("invalid_argument", 400),
            ("deadline_exceeded", 504),
            ("not_found", 404),
            ("already_exists", 409),
            ("permission_denied", 403),
            ("resource_exhausted", 429),
            ("failed_precondition", 400),
            ("aborted", 409),
            ("out_of_range", 400),
            ("unimplemented", 501),
            ("internal", 500),
            ("unavailable", 503),
            ("data_loss", 500),
            ("unauthenticated", 401),
        ];
        for (code, (name, status)) in Code::ALL.into_iter().zip(expected) {
            assert_eq!(code.as_str(), name);
            assert_eq!(Code::from_name(name), Some(code));
            assert_eq!(code.http_status(), status, "{name}");
        }
        assert_eq!(Code::from_name("NOT_FOUND"), None);
    }

    #[test]
    fn code_from_http_status_without_connect_body() {
        assert_eq!(Code::from_http_status(400), Code::Internal);
        assert_eq!(Code::from_http_status(401), Code::Unauthenticated);
        assert_eq!(Code::from_http_status(403), Code::PermissionDenied);
        assert_eq!(Code::from_http_status(404), Code::Unimplemented);
        for s in [429, 502, 503, 504] {
            assert_eq!(Code::from_http_status(s), Code::Unavailable);
        }
        assert_eq!(Code::from_http_status(500), Code::Unknown);
        assert_eq!(Code::from_http_status(418), Code::Unknown);
    }

    #[test]
    fn unary_error_body() {
        let e = Error::new(Code::NotFound, "no such file");
        assert_eq!(e.http_status(), 404);
        assert_eq!(
            e.to_json(),
            br#"{"code":"not_found","message":"no such file"}"#
        );
        let bare = Error {
            code: Code::Internal,
            message: None,
            details: vec![],
        };
        assert_eq!(bare.to_json(), br#"{"code":"internal"}"#);
        assert_eq!(e.to_string(), "not_found: no such file");
    }

    #[test]
    fn unknown_code_name_reads_as_unknown() {
        let e: Error = serde_json::from_str(r#"{"code":"teapot","message":"m"}"#).unwrap();
        assert_eq!(e.code, Code::Unknown);
    }

    #[test]
    fn error_from_unary_response() {
        let e = Error::from_unary_response(404, br#"{"code":"not_found","message":"gone"}"#);
        assert_eq!(e, Error::new(Code::NotFound, "gone"));
        // A proxy's body: the code is a number, not a Connect code.
        let e = Error::from_unary_response(502, br#"{"code":502,"message":"sandbox down"}"#);
        assert_eq!(e, Error::new(Code::Unavailable, "sandbox down"));
        let e = Error::from_unary_response(401, b"nope");
        assert_eq!(e, Error::new(Code::Unauthenticated, "nope"));
        let e = Error::from_unary_response(500, br#"{"other":1}"#);
        assert_eq!(e, Error::new(Code::Unknown, r#"{"other":1}"#));
    }

    #[test]
    fn content_types() {
        assert!(is_unary_json("application/json"));
        assert!(is_unary_json("Application/JSON; charset=utf-8"));
        assert!(!is_unary_json("application/connect+json"));
        assert!(is_stream_json("application/connect+json"));
        assert!(!is_stream_json("application/connect+proto"));
    }

    #[test]
    fn timeout_header() {
        assert_eq!(
            parse_timeout_ms("60000").unwrap(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_timeout_ms("0").unwrap(), None);
        assert_eq!(
            parse_timeout_ms("9999999999").unwrap(),
            Some(Duration::from_millis(9_999_999_999))
        );
        for bad in ["", "-1", "1.5", "12345678901", " 5"] {
            assert_eq!(
                parse_timeout_ms(bad).unwrap_err().code,
                Code::InvalidArgument
            );
        }
    }

    #[test]
    fn unary_request_and_response() {
        #[derive(Deserialize, Serialize, PartialEq, Debug)]
        struct ListDir {
            path: String,
            #[serde(default)]
            depth: u32,
        }
        let r: ListDir = decode_unary(br#"{"path":"/home/user","depth":1}"#).unwrap();
        assert_eq!(
            r,
            ListDir {
                path: "/home/user".into(),
                depth: 1
            }
        );
        let e = decode_unary::<ListDir>(b"{").unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        let empty: serde_json::Value = decode_unary(b"").unwrap();
        assert_eq!(empty, json!({}));
        assert_eq!(
            encode_unary(&r).unwrap(),
            br#"{"path":"/home/user","depth":1}"#
        );
    }

    #[test]
    fn encode_message_envelope() {
        let bytes = encode_message(&json!({"event": {"start": {"pid": 412}}})).unwrap();
        let payload = br#"{"event":{"start":{"pid":412}}}"#;
        let mut expected = vec![0x00, 0x00, 0x00, 0x00, payload.len() as u8];
        expected.extend_from_slice(payload);
        assert_eq!(bytes, expected);
        assert_eq!(payload.len(), 31);
        assert_eq!(&bytes[..5], &[0x00, 0x00, 0x00, 0x00, 0x1f]);
    }

    #[test]
    fn encode_length_is_big_endian() {
        let payload = vec![b'x'; 0x0102];
        let bytes = encode_envelope(0, &payload);
        assert_eq!(&bytes[..5], &[0x00, 0x00, 0x00, 0x01, 0x02]);
        assert_eq!(bytes.len(), 5 + 0x0102);
    }

    #[test]
    fn encode_empty_end_stream() {
        assert_eq!(
            encode_end_stream(&EndStream::default()),
            [0x02, 0x00, 0x00, 0x00, 0x02, b'{', b'}']
        );
    }

    #[test]
    fn encode_end_stream_with_error_and_metadata() {
        let end = EndStream {
            error: Some(Error::new(Code::DeadlineExceeded, "late")),
            metadata: BTreeMap::from([("k".to_string(), vec!["v".to_string()])]),
        };
        let payload =
            br#"{"error":{"code":"deadline_exceeded","message":"late"},"metadata":{"k":["v"]}}"#;
        let mut expected = vec![0x02, 0, 0, 0, payload.len() as u8];
        expected.extend_from_slice(payload);
        assert_eq!(encode_end_stream(&end), expected);
    }

    #[test]
    fn decode_end_stream_payloads() {
        let env = Envelope {
            flags: FLAG_END_STREAM,
            payload:
                br#"{"error":{"code":"unavailable","message":"x"},"metadata":{"a":["1","2"]}}"#
                    .to_vec(),
        };
        assert!(env.is_end_stream());
        let end = env.end_stream().unwrap();
        assert_eq!(end.error, Some(Error::new(Code::Unavailable, "x")));
        assert_eq!(end.metadata["a"], vec!["1", "2"]);
        let empty = Envelope {
            flags: FLAG_END_STREAM,
            payload: vec![],
        };
        assert_eq!(empty.end_stream().unwrap(), EndStream::default());
    }

    #[test]
    fn decoder_whole_body_several_envelopes() {
        let body = [
            0x00, 0, 0, 0, 2, b'{', b'}', //
            0x00, 0, 0, 0, 7, b'{', b'"', b'a', b'"', b':', b'1', b'}', //
            0x02, 0, 0, 0, 2, b'{', b'}',
        ];
        let mut d = Decoder::new();
        d.push(&body);
        let a = d.next().unwrap().unwrap();
        assert_eq!((a.flags, a.payload.as_slice()), (0, &b"{}"[..]));
        let b = d.next().unwrap().unwrap();
        assert_eq!(b.json::<serde_json::Value>().unwrap(), json!({"a": 1}));
        let c = d.next().unwrap().unwrap();
        assert!(c.is_end_stream());
        assert_eq!(d.next().unwrap(), None);
        d.finish().unwrap();
    }

    #[test]
    fn decoder_byte_at_a_time() {
        let body = [0x00, 0, 0, 0, 3, b'"', b'x', b'"', 0x02, 0, 0, 0, 0];
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for b in body {
            d.push(&[b]);
            while let Some(e) = d.next().unwrap() {
                out.push(e);
            }
        }
        assert_eq!(
            out,
            vec![
                Envelope {
                    flags: 0,
                    payload: b"\"x\"".to_vec()
                },
                Envelope {
                    flags: FLAG_END_STREAM,
                    payload: vec![]
                },
            ]
        );
        assert_eq!(d.pending(), 0);
        d.finish().unwrap();
    }

    #[test]
    fn decoder_split_inside_prefix_and_payload() {
        let mut d = Decoder::new();
        d.push(&[0x00, 0, 0]);
        assert_eq!(d.next().unwrap(), None);
        d.push(&[0, 4, b'n', b'u']);
        assert_eq!(d.next().unwrap(), None);
        assert_eq!(d.pending(), 7);
        d.push(&[b'l', b'l', 0x00]);
        assert_eq!(d.next().unwrap().unwrap().payload, b"null");
        assert_eq!(d.next().unwrap(), None);
        assert_eq!(d.finish(), Err(EnvelopeError::Truncated(1)));
    }

    #[test]
    fn decoder_rejects_compressed_and_unknown_flags() {
        let mut d = Decoder::new();
        d.push(&[0x01, 0, 0, 0, 0]);
        assert_eq!(d.next(), Err(EnvelopeError::Compressed));
        let mut d = Decoder::new();
        d.push(&[0x04, 0, 0, 0, 0]);
        assert_eq!(d.next(), Err(EnvelopeError::UnknownFlags(0x04)));
        assert_eq!(
            Error::from(EnvelopeError::UnknownFlags(4)).code,
            Code::InvalidArgument
        );
    }

    #[test]
    fn decoder_rejects_oversized_before_payload_arrives() {
        let mut d = Decoder::with_max_message_size(16);
        d.push(&[0x00, 0, 0, 0, 17]);
        assert_eq!(
            d.next(),
            Err(EnvelopeError::TooLarge {
                size: 17,
                limit: 16
            })
        );
        let mut d = Decoder::with_max_message_size(16);
        d.push(&[0x00, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next(), Err(EnvelopeError::TooLarge { .. })));
        assert_eq!(
            Error::from(EnvelopeError::TooLarge { size: 1, limit: 0 }).code,
            Code::ResourceExhausted
        );
    }

    #[test]
    fn decoder_reuses_buffer_over_long_streams() {
        let one = encode_envelope(0, &[b'a'; 1000]);
        let mut d = Decoder::new();
        for _ in 0..500 {
            d.push(&one);
            assert_eq!(d.next().unwrap().unwrap().payload.len(), 1000);
        }
        assert!(d.buf.len() <= 128 * 1024 + one.len());
        d.finish().unwrap();
    }

    #[test]
    fn stream_request_is_one_message() {
        let payload = br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{}},"stdin":false}"#;
        let body = encode_envelope(0, payload);
        let v: serde_json::Value = decode_stream_request(&body).unwrap();
        assert_eq!(v["process"]["cmd"], "/bin/bash");
        assert_eq!(v["stdin"], false);

        let mut two = body.clone();
        two.extend_from_slice(&body);
        assert_eq!(
            decode_stream_request::<serde_json::Value>(&two)
                .unwrap_err()
                .code,
            Code::InvalidArgument
        );
        assert_eq!(
            decode_stream_request::<serde_json::Value>(&body[..7])
                .unwrap_err()
                .code,
            Code::InvalidArgument
        );
        assert_eq!(
            decode_stream_request::<serde_json::Value>(&[0x02, 0, 0, 0, 0])
                .unwrap_err()
                .code,
            Code::InvalidArgument
        );
    }
}
