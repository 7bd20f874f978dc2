//! envd, E2B's in-sandbox daemon, served by quantbox over its own sandboxes.
//!
//! Why this module exists: E2B's SDKs run commands and move files by talking to envd
//! inside each sandbox (e2b-compat.md §2). quantbox's sandboxes have no daemon inside;
//! this front end answers envd's HTTP endpoints and Connect services on the server
//! instead, routed per sandbox by the `E2b-Sandbox-Id` header (what `E2B_SANDBOX_URL`
//! makes the SDKs send), and carries each request out through the one sandbox manager:
//! processes are the manager's executions, files are read and written by the quantbox
//! binary run inside the sandbox (`quantbox envd-fs`), as the sandbox's own user.
//!
//! Every request is checked here before any handler runs: the sandbox must be active, its
//! `X-Access-Token` must match (except where envd itself lets a URL signature stand in
//! for it), and the `Authorization: Basic` user must be one the sandbox has.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use quantbox_ops::Ops;
use quantbox_sandbox::{ExecUser, SandboxId, SandboxStatus};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::connect::{self, Code};
use crate::ids;

pub mod files;
pub mod filesystem;
pub mod process;

/// The envd version quantbox reports: the highest whose features are all served here
/// (e2b-compat.md §2.3; the SDK gates features on it).
pub const ENVD_VERSION: &str = "0.6.4";

/// The default user of envd ≥ 0.4.0, and its home (relative paths resolve against it).
pub const DEFAULT_USER: &str = "user";

/// Per-sandbox access tokens: HMAC-SHA256 of the sandbox id under a secret kept in the
/// data directory, so every sandbox has one without storing it, and a restarted server
/// (which adopts its sandboxes) still accepts the tokens it handed out.
pub struct AccessTokens {
    secret: [u8; 32],
}

impl AccessTokens {
    /// Reads the secret at `path`, or makes one (mode 0600) if there is none.
    pub fn load_or_create(path: &Path) -> std::io::Result<AccessTokens> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut secret = [0u8; 32];
                secret.copy_from_slice(&bytes);
                return Ok(AccessTokens { secret });
            }
            Ok(bytes) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} holds {} bytes, expected 32 (delete it to make a new one; tokens handed out before become invalid)",
                        path.display(),
                        bytes.len()
                    ),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&secret)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(AccessTokens { secret })
    }

    /// Tokens under a given secret (tests).
    pub fn from_secret(secret: [u8; 32]) -> AccessTokens {
        AccessTokens { secret }
    }

    /// The access token of sandbox `id`: 64 hex characters.
    pub fn for_sandbox(&self, id: &str) -> String {
        hex(&hmac_sha256(&self.secret, id.as_bytes()))
    }

    /// Whether `token` is sandbox `id`'s (compared in constant time).
    pub fn verify(&self, id: &str, token: &str) -> bool {
        eq_constant_time(&self.for_sandbox(id), token)
    }
}

/// Equality of two secrets in time that depends on their length only.
pub(crate) fn eq_constant_time(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// envd's URL signature (SDK `download_url`/`upload_url`):
/// `"v1_" + base64_nopad(sha256("<path>:<operation>:<user>:<token>[:<expiration>]"))`.
pub fn url_signature(
    path: &str,
    operation: &str,
    user: &str,
    access_token: &str,
    expiration: Option<i64>,
) -> String {
    let mut text = format!("{path}:{operation}:{user}:{access_token}");
    if let Some(exp) = expiration {
        text.push_str(&format!(":{exp}"));
    }
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// What every envd handler works with.
#[derive(Clone)]
pub struct Envd {
    pub ops: Ops,
    pub tokens: Arc<AccessTokens>,
    pub processes: process::Processes,
    /// `filesystem.Filesystem`'s polling watchers, of every sandbox.
    pub watchers: filesystem::Watchers,
}

impl Envd {
    pub fn new(ops: Ops, tokens: Arc<AccessTokens>) -> Envd {
        Envd {
            processes: process::Processes::new(ops.clone()),
            watchers: filesystem::Watchers::default(),
            ops,
            tokens,
        }
    }
}

/// One envd request's context, checked and put in the request's extensions before any
/// handler runs.
#[derive(Clone, Debug)]
pub struct Call {
    pub sandbox_id: SandboxId,
    /// The user of `Authorization: Basic`, or envd's default user.
    pub user: ExecUser,
    /// `X-Access-Token` was given and is this sandbox's. Where it is false the request
    /// reached a route envd leaves open without it (`/health`, `/files` with a URL
    /// signature): the handler must check the signature.
    pub token_ok: bool,
    /// The sandbox's access token, for checking URL signatures.
    pub access_token: String,
}

/// A user name envd knows: `user` (the default) or `root`.
pub fn parse_user(name: &str) -> Option<ExecUser> {
    match name {
        "user" => Some(ExecUser::User),
        "root" => Some(ExecUser::Root),
        _ => None,
    }
}

/// envd's plain-HTTP error body, `{"message", "code"}`.
pub fn http_error(status: u16, message: impl Into<String>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        axum::Json(json!({"message": message.into(), "code": status})),
    )
        .into_response()
}

/// A Connect error as a unary response.
pub fn rpc_error(e: &connect::Error) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, connect::CONTENT_TYPE_UNARY_JSON)],
        e.to_json(),
    )
        .into_response()
}

/// A unary Connect success response.
pub fn rpc_ok<T: Serialize>(msg: &T) -> Response {
    match connect::encode_unary(msg) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, connect::CONTENT_TYPE_UNARY_JSON)],
            body,
        )
            .into_response(),
        Err(e) => rpc_error(&e),
    }
}

/// Checks a Connect request's content type: JSON, unary or streaming (binary protobuf is
/// not served).
#[allow(clippy::result_large_err)]
pub fn content_type(headers: &HeaderMap, stream: bool) -> Result<(), Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (ok, want) = if stream {
        (
            connect::is_stream_json(ct),
            connect::CONTENT_TYPE_STREAM_JSON,
        )
    } else {
        (connect::is_unary_json(ct), connect::CONTENT_TYPE_UNARY_JSON)
    };
    if ok {
        return Ok(());
    }
    Err(rpc_error(&connect::Error::new(
        Code::Unimplemented,
        format!(
            "content type {ct:?} is not served: quantbox's envd speaks Connect with the JSON codec ({want})"
        ),
    )))
}

/// Reads a unary Connect request: JSON content type, body as `T`.
#[allow(clippy::result_large_err)]
pub fn rpc_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Response> {
    content_type(headers, false)?;
    connect::decode_unary(body).map_err(|e| rpc_error(&e))
}

/// Reads a server-streaming Connect request: its one message as `T`. A failure is a
/// plain Connect error response (the stream has not begun).
#[allow(clippy::result_large_err)]
pub fn stream_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Response> {
    content_type(headers, true)?;
    connect::decode_stream_request(body).map_err(|e| rpc_error(&e))
}

/// The stream's deadline (`Connect-Timeout-Ms`; none when absent or 0) and keepalive
/// interval (`Keepalive-Ping-Interval`, seconds; envd's default 90).
#[allow(clippy::result_large_err)]
pub fn stream_timing(headers: &HeaderMap) -> Result<(Option<Duration>, Duration), Response> {
    let deadline = match headers.get(connect::TIMEOUT_HEADER) {
        Some(v) => {
            connect::parse_timeout_ms(v.to_str().unwrap_or("?")).map_err(|e| rpc_error(&e))?
        }
        None => None,
    };
    let keepalive = headers
        .get(ids::KEEPALIVE_PING_INTERVAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(90);
    Ok((deadline, Duration::from_secs(keepalive)))
}

/// The sending end of a server-streaming response. Messages are written as they come;
/// [`StreamTx::finish`] writes the end-of-stream message. Dropping it without finishing
/// ends the stream with no error.
pub struct StreamTx {
    tx: mpsc::Sender<Item>,
}

enum Item {
    Message(Vec<u8>),
    End(Option<connect::Error>),
}

impl StreamTx {
    /// Sends one message; `false` once the stream is over (client gone, deadline passed).
    pub async fn send<T: Serialize>(&self, msg: &T) -> bool {
        match connect::encode_message(msg) {
            Ok(bytes) => self.tx.send(Item::Message(bytes)).await.is_ok(),
            Err(e) => {
                let _ = self.tx.send(Item::End(Some(e))).await;
                false
            }
        }
    }

    /// Ends the stream, with `error` in the end-of-stream message if there is one.
    pub async fn finish(self, error: Option<connect::Error>) {
        let _ = self.tx.send(Item::End(error)).await;
    }

    /// Completes when the stream is over for the client (gone, or past its deadline).
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Whether the stream is over for the client.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A server-streaming response: what is sent on the returned [`StreamTx`] goes out as
/// envelopes, `keepalive` (a whole JSON message) every `interval`, and at `deadline` the
/// stream ends with `deadline_exceeded` (the producer sees [`StreamTx::is_closed`]).
pub fn stream_response(
    deadline: Option<Duration>,
    keepalive: Option<(Duration, serde_json::Value)>,
) -> (StreamTx, Response) {
    let (tx, mut rx) = mpsc::channel::<Item>(64);
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let until = deadline.map(|d| tokio::time::Instant::now() + d);
        let mut tick = keepalive.as_ref().map(|(every, _)| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + *every, *every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let ping = keepalive
            .as_ref()
            .and_then(|(_, msg)| connect::encode_message(msg).ok());
        let end = loop {
            let next_tick = async {
                match tick.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let past_deadline = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = rx.recv() => match item {
                    Some(Item::Message(bytes)) => {
                        if body_tx.send(Ok(Bytes::from(bytes))).await.is_err() {
                            return;
                        }
                    }
                    Some(Item::End(err)) => break err,
                    None => break None,
                },
                () = next_tick => {
                    if let Some(p) = &ping
                        && body_tx.send(Ok(Bytes::from(p.clone()))).await.is_err()
                    {
                        return;
                    }
                }
                () = past_deadline => {
                    break Some(connect::Error::new(
                        Code::DeadlineExceeded,
                        "the stream's deadline (Connect-Timeout-Ms) passed",
                    ));
                }
                () = body_tx.closed() => return,
            }
        };
        drop(rx);
        let end = connect::EndStream {
            error: end,
            metadata: Default::default(),
        };
        let _ = body_tx
            .send(Ok(Bytes::from(connect::encode_end_stream(&end))))
            .await;
    });
    let body = Body::from_stream(tokio_stream_from(body_rx));
    let resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, connect::CONTENT_TYPE_STREAM_JSON)],
        body,
    )
        .into_response();
    (StreamTx { tx }, resp)
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// envd's routes over `envd`; each request passes [`authorize`] first.
pub fn router(envd: Envd) -> Router {
    Router::new()
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .route("/envs", get(envs))
        .route("/metrics", get(metrics))
        .merge(process::routes())
        .merge(files::routes())
        .merge(filesystem::routes())
        .fallback(|uri: axum::http::Uri| async move {
            let path = uri.path();
            if path.starts_with("/process.") || path.starts_with("/filesystem.") {
                rpc_error(&connect::Error::new(
                    Code::Unimplemented,
                    format!("{path} is not served by quantbox's envd"),
                ))
            } else {
                http_error(404, format!("{path} is not served by quantbox's envd"))
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            envd.clone(),
            authorize,
        ))
        .with_state(envd)
}

/// The sandbox an envd request is for: the `E2b-Sandbox-Id` header, or a
/// `{port}-{sandboxID}.{domain}` host.
pub fn sandbox_of(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(ids::SANDBOX_ID_HEADER) {
        return Some(v.to_str().unwrap_or("").to_owned());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = host.split(':').next()?;
    ids::EnvdHost::parse(host)
        .ok()
        .map(|h| h.sandbox_id.as_str().to_owned())
}

/// Checks the sandbox, the access token and the user, then hands on a [`Call`].
async fn authorize(State(envd): State<Envd>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let Some(raw_id) = sandbox_of(headers) else {
        return http_error(400, "missing E2b-Sandbox-Id header");
    };
    let not_found = || http_error(502, format!("The sandbox {raw_id} was not found"));
    let Ok(sandbox_id) = SandboxId::parse(&raw_id) else {
        return not_found();
    };
    match envd.ops.manager().get(&sandbox_id) {
        Ok(r) if r.status == SandboxStatus::Running => {}
        Ok(r) if r.status == SandboxStatus::Paused => {
            return http_error(
                502,
                format!(
                    "The sandbox {raw_id} is paused: connect to it (Sandbox.connect) to resume it"
                ),
            );
        }
        _ => return not_found(),
    }
    let access_token = envd.tokens.for_sandbox(&raw_id);
    let path = req.uri().path();
    let open_without_token = path == "/health" || path == "/files";
    let token_ok = match headers
        .get(ids::ACCESS_TOKEN_HEADER)
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(t) if envd.tokens.verify(&raw_id, t) => true,
        Some(_) => return http_error(401, "invalid access token for this sandbox"),
        None if open_without_token => false,
        None => return http_error(401, "missing X-Access-Token header"),
    };
    let user = match basic_user(headers) {
        Ok(u) => u,
        Err(msg) => {
            let is_rpc = path.starts_with("/process.") || path.starts_with("/filesystem.");
            return if is_rpc {
                rpc_error(&connect::Error::new(Code::Unauthenticated, msg))
            } else {
                http_error(401, msg)
            };
        }
    };
    req.extensions_mut().insert(Call {
        sandbox_id,
        user,
        token_ok,
        access_token,
    });
    next.run(req).await
}

/// The user of `Authorization: Basic base64("<user>:")`; envd's default user without it.
fn basic_user(headers: &HeaderMap) -> Result<ExecUser, String> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(ExecUser::User);
    };
    let v = v.to_str().unwrap_or("");
    let Some(b64) = v.strip_prefix("Basic ") else {
        return Err("Authorization must be Basic base64(\"<user>:\")".into());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("Authorization: Basic value is not base64 of UTF-8 text")?;
    let name = decoded.split(':').next().unwrap_or("");
    if name.is_empty() {
        return Ok(ExecUser::User);
    }
    parse_user(name).ok_or_else(|| {
        format!("invalid user {name:?}: this sandbox has the users \"user\" and \"root\"")
    })
}

/// `GET /envs`: the sandbox's own environment variables (as set at creation).
async fn envs(State(envd): State<Envd>, axum::Extension(call): axum::Extension<Call>) -> Response {
    match envd.ops.manager().get(&call.sandbox_id) {
        Ok(r) => axum::Json(r.env_vars).into_response(),
        Err(e) => http_error(502, e.to_string()),
    }
}

/// `GET /metrics`: the sandbox's latest usage, in envd's snake_case shape.
async fn metrics(
    State(envd): State<Envd>,
    axum::Extension(call): axum::Extension<Call>,
) -> Response {
    let m = envd.ops.manager();
    let rec = match m.get(&call.sandbox_id) {
        Ok(r) => r,
        Err(e) => return http_error(502, e.to_string()),
    };
    let sample = m
        .samples()
        .into_iter()
        .find(|s| s.record.id == call.sandbox_id)
        .and_then(|s| s.sample);
    let mem_total = rec.resources.memory_mb * 1024 * 1024;
    let cores = rec.resources.cpu_count.max(0.01);
    let (cpu_pct, mem_used, disk_used, disk_total) = sample
        .map(|s| {
            (
                s.cpu_percent / cores,
                s.usage.memory_bytes,
                s.usage.disk_bytes,
                s.usage.disk_total_bytes,
            )
        })
        .unwrap_or((0.0, 0, 0, 0));
    axum::Json(json!({
        "ts": quantbox_sandbox::Timestamp::now().unix_ms() / 1000,
        "cpu_count": rec.resources.cpu_count.ceil().max(1.0) as i64,
        "cpu_used_pct": cpu_pct,
        "mem_total": mem_total,
        "mem_used": mem_used,
        "mem_cache": 0,
        "mem_total_mib": mem_total / (1024 * 1024),
        "mem_used_mib": mem_used / (1024 * 1024),
        "disk_used": disk_used,
        "disk_total": disk_total,
    }))
    .into_response()
}

/// Sets a header if the value is a valid header value.
pub fn set_header(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2: a key shorter than the block is zero-padded, so "Jefe"
        // and "Jefe" followed by zeros are the same key.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex(&hmac_sha256(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_are_per_sandbox_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e2b-token.key");
        let a = AccessTokens::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let t = a.for_sandbox("aaaaaaaaaaaaaaaaaaaa");
        assert_eq!(t.len(), 64);
        assert!(a.verify("aaaaaaaaaaaaaaaaaaaa", &t));
        assert!(
            !a.verify("bbbbbbbbbbbbbbbbbbbb", &t),
            "another sandbox's token"
        );
        assert!(!a.verify("aaaaaaaaaaaaaaaaaaaa", &t[..63]));
        assert!(!a.verify("aaaaaaaaaaaaaaaaaaaa", ""));
        // Read again (a restarted server): the same tokens.
        let again = AccessTokens::load_or_create(&path).unwrap();
        assert_eq!(again.for_sandbox("aaaaaaaaaaaaaaaaaaaa"), t);
        // A damaged secret is refused, naming the file; nothing is overwritten.
        std::fs::write(&path, b"short").unwrap();
        let e = AccessTokens::load_or_create(&path).err().unwrap();
        assert!(e.to_string().contains("e2b-token.key"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }

    #[test]
    fn users_come_from_basic_auth() {
        let h = |v: Option<&str>| {
            let mut m = HeaderMap::new();
            if let Some(v) = v {
                m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            basic_user(&m)
        };
        assert_eq!(h(None), Ok(ExecUser::User));
        assert_eq!(h(Some("Basic dXNlcjo=")), Ok(ExecUser::User)); // "user:"
        assert_eq!(h(Some("Basic cm9vdDo=")), Ok(ExecUser::Root)); // "root:"
        assert_eq!(h(Some("Basic Og==")), Ok(ExecUser::User)); // ":" (no name)
        assert!(
            h(Some("Basic bWFsbG9yeTo="))
                .unwrap_err()
                .contains("mallory")
        );
        assert!(h(Some("Bearer x")).is_err());
        assert!(h(Some("Basic ***")).is_err());
    }
}
