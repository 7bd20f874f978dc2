//! The client of envd, the daemon inside each E2B sandbox: processes and health.
//!
//! Why this module exists: E2B runs commands through envd's `process.Process` Connect
//! service, not through the control plane (e2b-compat.md §2). A command is a server
//! stream: one request envelope out, then `start`, `data` and `end` events back as they
//! happen, which must be read incrementally (output reaches quantbox's live log while the
//! process runs) over plain HTTP/1.1 with the JSON codec ([`crate::connect`]). Killing and
//! stdin are separate unary calls (`SendSignal`, `SendInput`, `CloseStdin`).
//!
//! Every request carries the routing headers (`E2b-Sandbox-Id`, `E2b-Sandbox-Port`), the
//! sandbox's `X-Access-Token` and, for RPCs, the Linux user as `Authorization: Basic`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Client, Error};
use crate::connect::{self, Decoder};
use crate::ids;

/// envd's keepalive interval the SDKs ask for on streams, seconds.
pub const KEEPALIVE_PING_INTERVAL_SECS: u64 = 50;
/// How often a unary envd call is tried when the connection fails.
const CONNECTION_ATTEMPTS: u32 = 3;

/// `ProcessConfig` and the flags of `StartRequest`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StartRequest {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    /// envd's default (the user's home) when `None`.
    pub cwd: Option<String>,
    /// Whether the process gets a stdin to write to with [`Envd::send_input`].
    pub stdin: bool,
}

impl StartRequest {
    /// The request body's message, with the protobuf JSON names.
    pub fn to_json(&self) -> Value {
        let mut process = json!({"cmd": self.cmd, "args": self.args, "envs": self.envs});
        if let Some(cwd) = &self.cwd {
            process["cwd"] = json!(cwd);
        }
        json!({"process": process, "stdin": self.stdin})
    }
}

/// How a process ended (`ProcessEvent.end`); absent fields are their defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct End {
    /// 0 when omitted (protobuf JSON leaves default values out).
    pub exit_code: i32,
    /// Whether it exited by itself (false when a signal ended it).
    pub exited: bool,
    /// e.g. `exit status 1`, `signal: killed`.
    pub status: String,
    pub error: Option<String>,
}

impl End {
    /// The signal that ended the process, read from `status` (`signal: killed`); Go's
    /// names of the common signals.
    pub fn signal(&self) -> Option<i32> {
        let name = self.status.strip_prefix("signal: ")?;
        Some(match name.trim() {
            "hangup" => 1,
            "interrupt" => 2,
            "quit" => 3,
            "illegal instruction" => 4,
            "trace/breakpoint trap" => 5,
            "aborted" => 6,
            "bus error" => 7,
            "floating point exception" => 8,
            "killed" => 9,
            "user defined signal 1" => 10,
            "segmentation fault" => 11,
            "user defined signal 2" => 12,
            "broken pipe" => 13,
            "alarm clock" => 14,
            "terminated" => 15,
            other => other
                .strip_prefix("signal ")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        })
        .filter(|s| *s > 0)
    }

    /// The process's exit code and the signal that killed it: a code when it exited, a
    /// signal when `status` names one (the code is then envd's -1).
    pub fn outcome(&self) -> (Option<i32>, Option<i32>) {
        match self.signal() {
            Some(sig) => (None, Some(sig)),
            None if !self.exited && self.exit_code < 0 => (None, None),
            None => (Some(self.exit_code), None),
        }
    }
}

/// One event of a process stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Start {
        pid: u32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    End(End),
    Keepalive,
    /// An event kind this client does not know (a newer envd); skipped.
    Other,
}

fn int_of(v: &Value) -> Option<i64> {
    // Protobuf JSON: 32-bit ints are numbers, but parsers accept strings too.
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Reads one `StartResponse`/`ConnectResponse` message: `{"event": {...}}`.
pub fn parse_event(msg: &Value) -> Result<Event, String> {
    let ev = msg
        .get("event")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("a process stream message without an event: {msg}"))?;
    let b64 = |v: &Value| -> Result<Vec<u8>, String> {
        let s = v.as_str().ok_or("output data is not a base64 string")?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("output data is not base64: {e}"))
    };
    if let Some(start) = ev.get("start") {
        let pid = start.get("pid").and_then(int_of).unwrap_or(0);
        return Ok(Event::Start {
            pid: u32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?,
        });
    }
    if let Some(data) = ev.get("data") {
        if let Some(v) = data.get("stdout").or_else(|| data.get("pty")) {
            return Ok(Event::Stdout(b64(v)?));
        }
        if let Some(v) = data.get("stderr") {
            return Ok(Event::Stderr(b64(v)?));
        }
        return Ok(Event::Other);
    }
    if let Some(end) = ev.get("end") {
        let field = |camel: &str, snake: &str| end.get(camel).or_else(|| end.get(snake));
        let exit_code = field("exitCode", "exit_code").and_then(int_of).unwrap_or(0);
        return Ok(Event::End(End {
            exit_code: i32::try_from(exit_code).unwrap_or(-1),
            exited: end.get("exited").and_then(Value::as_bool).unwrap_or(false),
            status: end
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            error: end
                .get("error")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
        }));
    }
    if ev.contains_key("keepalive") {
        return Ok(Event::Keepalive);
    }
    Ok(Event::Other)
}

/// The events of one process, read as they arrive.
pub struct ProcessStream {
    resp: reqwest::Response,
    decoder: Decoder,
    pending: std::collections::VecDeque<Event>,
    /// The end-of-stream error, handed out after the events that came before it.
    deferred: Option<connect::Error>,
    finished: bool,
    what: String,
}

impl ProcessStream {
    /// The next event; `None` once the stream has ended cleanly. An end-of-stream message
    /// with an error is [`Error::Rpc`].
    pub async fn next(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            if let Some(error) = self.deferred.take() {
                return Err(Error::Rpc {
                    what: self.what.clone(),
                    error,
                });
            }
            if self.finished {
                return Ok(None);
            }
            let chunk = self.resp.chunk().await.map_err(|e| Error::Protocol {
                what: self.what.clone(),
                detail: format!("the stream broke: {e}"),
            })?;
            let Some(chunk) = chunk else {
                self.finished = true;
                let d = std::mem::take(&mut self.decoder);
                d.finish().map_err(|e| Error::Protocol {
                    what: self.what.clone(),
                    detail: e.to_string(),
                })?;
                continue;
            };
            self.decoder.push(&chunk);
            while let Some(env) = self.decoder.next().map_err(|e| Error::Protocol {
                what: self.what.clone(),
                detail: e.to_string(),
            })? {
                if env.is_end_stream() {
                    self.finished = true;
                    let end = env.end_stream().map_err(|e| Error::Protocol {
                        what: self.what.clone(),
                        detail: e.to_string(),
                    })?;
                    // Events before an error still count: it comes after them.
                    self.deferred = end.error;
                    break;
                }
                let msg: Value = env.json().map_err(|e| Error::Protocol {
                    what: self.what.clone(),
                    detail: e.to_string(),
                })?;
                let ev = parse_event(&msg).map_err(|detail| Error::Protocol {
                    what: self.what.clone(),
                    detail,
                })?;
                self.pending.push_back(ev);
            }
        }
    }
}

/// envd of one sandbox.
#[derive(Clone, Debug)]
pub struct Envd {
    http: reqwest::Client,
    base: String,
    sandbox_id: String,
    access_token: Option<String>,
}

/// `Authorization: Basic base64("<user>:")`.
pub fn basic_auth(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
    )
}

impl Envd {
    /// envd of E2B sandbox `sandbox_id` at `base` (see [`super::Config::envd_url`]).
    pub fn new(
        client: &Client,
        base: String,
        sandbox_id: &str,
        access_token: Option<&str>,
    ) -> Envd {
        Envd {
            http: client.http().clone(),
            base,
            sandbox_id: sandbox_id.to_owned(),
            access_token: access_token.map(str::to_owned),
        }
    }

    fn headers(&self, user: Option<&str>) -> HeaderMap {
        let mut h = Client::envd_headers(&self.sandbox_id, self.access_token.as_deref());
        if let Some(u) = user.and_then(|u| HeaderValue::from_str(&basic_auth(u)).ok()) {
            h.insert(reqwest::header::AUTHORIZATION, u);
        }
        h
    }

    /// `GET /health`: the time the round trip took.
    pub async fn health(&self, timeout: Duration) -> Result<Duration, Error> {
        let what = format!("checking envd of E2B sandbox {}", self.sandbox_id);
        let url = format!("{}/health", self.base);
        let t0 = Instant::now();
        let resp = self
            .http
            .get(&url)
            .headers(self.headers(None))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Error::Transport {
                what: what.clone(),
                url: url.clone(),
                attempts: 1,
                source: e,
            })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(t0.elapsed());
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(Error::Api {
            what,
            status,
            error: crate::model::ApiError::from_response(status, &body),
            attempts: 1,
        })
    }

    /// `GET /metrics`: envd's live reading (`cpu_count`, `cpu_used_pct`, `mem_used`,
    /// `mem_total`, `disk_used`, ... in snake_case).
    pub async fn metrics(&self) -> Result<Value, Error> {
        let what = format!("reading envd's metrics of E2B sandbox {}", self.sandbox_id);
        let url = format!("{}/metrics", self.base);
        let resp = self
            .http
            .get(&url)
            .headers(self.headers(None))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| Error::Transport {
                what: what.clone(),
                url: url.clone(),
                attempts: 1,
                source: e,
            })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        if status != 200 {
            return Err(Error::Api {
                what,
                status,
                error: crate::model::ApiError::from_response(status, &body),
                attempts: 1,
            });
        }
        serde_json::from_slice(&body).map_err(|e| Error::Decode {
            what,
            detail: e.to_string(),
        })
    }

    /// `process.Process/Start`: starts `req` as `user` and hands back its event stream
    /// once envd has answered (within `open_timeout`). `deadline` becomes
    /// `Connect-Timeout-Ms`, envd's bound on the whole stream.
    pub async fn start(
        &self,
        req: &StartRequest,
        user: Option<&str>,
        deadline: Option<Duration>,
        open_timeout: Duration,
    ) -> Result<ProcessStream, Error> {
        let what = format!("starting `{}` in E2B sandbox {}", req.cmd, self.sandbox_id);
        let url = format!("{}/process.Process/Start", self.base);
        let body = connect::encode_message(&req.to_json()).map_err(|e| Error::Rpc {
            what: what.clone(),
            error: e,
        })?;
        let mut r = self
            .http
            .post(&url)
            .headers(self.headers(user))
            .header(
                reqwest::header::CONTENT_TYPE,
                connect::CONTENT_TYPE_STREAM_JSON,
            )
            .header(connect::PROTOCOL_VERSION_HEADER, connect::PROTOCOL_VERSION)
            .header(
                ids::KEEPALIVE_PING_INTERVAL_HEADER,
                KEEPALIVE_PING_INTERVAL_SECS.to_string(),
            )
            .body(body);
        if let Some(d) = deadline {
            r = r.header(connect::TIMEOUT_HEADER, d.as_millis().max(1).to_string());
        }
        let resp = match tokio::time::timeout(open_timeout, r.send()).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                return Err(Error::Transport {
                    what,
                    url,
                    attempts: 1,
                    source: e,
                });
            }
            Err(_) => {
                return Err(Error::Protocol {
                    what,
                    detail: format!("envd did not answer within {} s", open_timeout.as_secs()),
                });
            }
        };
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(Error::Rpc {
                what,
                error: connect::Error::from_unary_response(status, &body),
            });
        }
        Ok(ProcessStream {
            resp,
            decoder: Decoder::new(),
            pending: Default::default(),
            finished: false,
            what,
            deferred: None,
        })
    }

    /// A unary `process.Process` call, retried when the connection fails.
    async fn unary<T: Serialize>(
        &self,
        method: &str,
        what: String,
        msg: &T,
        user: Option<&str>,
    ) -> Result<(), Error> {
        let url = format!("{}/process.Process/{method}", self.base);
        let body = connect::encode_unary(msg).map_err(|e| Error::Rpc {
            what: what.clone(),
            error: e,
        })?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .post(&url)
                .headers(self.headers(user))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    connect::CONTENT_TYPE_UNARY_JSON,
                )
                .header(connect::PROTOCOL_VERSION_HEADER, connect::PROTOCOL_VERSION)
                .header(connect::TIMEOUT_HEADER, "30000")
                .timeout(Duration::from_secs(30))
                .body(body.clone())
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if e.is_connect() && attempt < CONNECTION_ATTEMPTS => {
                    tokio::time::sleep(super::retry::backoff(attempt - 1, super::retry::jitter()))
                        .await;
                    continue;
                }
                Err(e) => {
                    return Err(Error::Transport {
                        what,
                        url,
                        attempts: attempt,
                        source: e,
                    });
                }
            };
            let status = resp.status().as_u16();
            if status == 200 {
                return Ok(());
            }
            let body = resp.bytes().await.unwrap_or_default();
            return Err(Error::Rpc {
                what,
                error: connect::Error::from_unary_response(status, &body),
            });
        }
    }

    /// `SendSignal`: `SIGKILL` (`kill`) or `SIGTERM` to process `pid`.
    pub async fn send_signal(&self, pid: u32, kill: bool, user: Option<&str>) -> Result<(), Error> {
        let signal = if kill {
            "SIGNAL_SIGKILL"
        } else {
            "SIGNAL_SIGTERM"
        };
        self.unary(
            "SendSignal",
            format!(
                "signalling process {pid} in E2B sandbox {}",
                self.sandbox_id
            ),
            &json!({"process": {"pid": pid}, "signal": signal}),
            user,
        )
        .await
    }

    /// `SendInput`: `data` to process `pid`'s stdin.
    pub async fn send_input(&self, pid: u32, data: &[u8], user: Option<&str>) -> Result<(), Error> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        self.unary(
            "SendInput",
            format!(
                "writing to the stdin of process {pid} in E2B sandbox {}",
                self.sandbox_id
            ),
            &json!({"process": {"pid": pid}, "input": {"stdin": b64}}),
            user,
        )
        .await
    }

    /// `CloseStdin`: end of file on process `pid`'s stdin (envd ≥ 0.5.2).
    pub async fn close_stdin(&self, pid: u32, user: Option<&str>) -> Result<(), Error> {
        self.unary(
            "CloseStdin",
            format!(
                "closing the stdin of process {pid} in E2B sandbox {}",
                self.sandbox_id
            ),
            &json!({"process": {"pid": pid}}),
            user,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_request_body() {
        let r = StartRequest {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), "echo hi".into()],
            envs: BTreeMap::from([("A".into(), "1".into())]),
            cwd: None,
            stdin: false,
        };
        assert_eq!(
            r.to_json(),
            json!({"process": {"cmd": "/bin/sh", "args": ["-c", "echo hi"], "envs": {"A": "1"}}, "stdin": false})
        );
        let r = StartRequest {
            cwd: Some("/tmp".into()),
            stdin: true,
            ..r
        };
        assert_eq!(r.to_json()["process"]["cwd"], "/tmp");
        assert_eq!(r.to_json()["stdin"], true);
    }

    #[test]
    fn events_as_envd_sends_them() {
        let p = |s: &str| parse_event(&serde_json::from_str(s).unwrap()).unwrap();
        assert_eq!(
            p(r#"{"event":{"start":{"pid":412}}}"#),
            Event::Start { pid: 412 }
        );
        assert_eq!(
            p(r#"{"event":{"data":{"stdout":"aGkK"}}}"#),
            Event::Stdout(b"hi\n".to_vec())
        );
        assert_eq!(
            p(r#"{"event":{"data":{"stderr":"ZXJyCg=="}}}"#),
            Event::Stderr(b"err\n".to_vec())
        );
        assert_eq!(p(r#"{"event":{"keepalive":{}}}"#), Event::Keepalive);
        assert_eq!(p(r#"{"event":{"somethingNew":{}}}"#), Event::Other);
        let end = |s: &str| match p(s) {
            Event::End(e) => e,
            other => panic!("{other:?}"),
        };
        // Exit code 0 is left out of the JSON.
        let e = end(r#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#);
        assert_eq!(e.outcome(), (Some(0), None));
        let e = end(r#"{"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3"}}}"#);
        assert_eq!(e.outcome(), (Some(3), None));
        let e = end(r#"{"event":{"end":{"exit_code":"7","exited":true}}}"#);
        assert_eq!(e.outcome(), (Some(7), None));
        let e = end(r#"{"event":{"end":{"exitCode":-1,"status":"signal: killed"}}}"#);
        assert_eq!(e.outcome(), (None, Some(9)));
        let e = end(r#"{"event":{"end":{"exitCode":-1,"status":"signal: terminated"}}}"#);
        assert_eq!(e.outcome(), (None, Some(15)));
        let e = end(r#"{"event":{"end":{"exitCode":-1,"status":"signal: signal 31"}}}"#);
        assert_eq!(e.outcome(), (None, Some(31)));
        let e = end(r#"{"event":{"end":{"exitCode":-1,"error":"boom"}}}"#);
        assert_eq!(
            (e.outcome(), e.error.as_deref()),
            ((None, None), Some("boom"))
        );
        assert!(parse_event(&json!({"nope": 1})).is_err());
        assert!(parse_event(&json!({"event": {"data": {"stdout": "!!"}}})).is_err());
    }

    #[test]
    fn basic_auth_header() {
        assert_eq!(basic_auth("user"), "Basic dXNlcjo=");
        assert_eq!(basic_auth("root"), "Basic cm9vdDo=");
    }
}
