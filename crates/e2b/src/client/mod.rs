//! A client of E2B's API: the control plane (v2 routes) and envd.
//!
//! Why this module exists: provider `e2b` runs quantbox's sandboxes in E2B's cloud, so it
//! must speak E2B's API the way E2B's own SDKs do (e2b-compat.md §1, §2, §3): the same
//! settings (`E2B_API_KEY`, `E2B_DOMAIN`, `E2B_API_URL`, `E2B_SANDBOX_URL`), the same
//! headers, the same retry rules ([`retry`]), an `Idempotency-Key` per logical create, and
//! E2B's error body read into [`Error`] with what was being done. [`envd`] is the
//! in-sandbox half: commands as Connect server streams.
//!
//! Nothing here knows quantbox's records; the provider (`crate::provider`) maps quantbox's
//! sandboxes onto these calls and these errors onto quantbox's.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connect;
use crate::ids;
use crate::model::{
    ApiError, ConnectSandboxV2, IDEMPOTENCY_KEY_HEADER, ListedSandbox, NEXT_TOKEN_HEADER,
    NewSandbox, RETRY_AFTER_HEADER, SHOULD_RETRY_HEADER, Sandbox, SandboxDetail, SandboxMetric,
    SandboxPauseRequest, SandboxState, SandboxTimeoutRequest,
};

pub mod envd;
pub mod retry;

pub use retry::RetryPolicy;

/// E2B's domain when `E2B_DOMAIN` is not set.
pub const DEFAULT_DOMAIN: &str = "e2b.app";
/// What an API request may take, as the SDKs' `request_timeout` default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait for a TCP/TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// quantbox's setting (not E2B's): the E2B templates sandboxes may be made from,
/// comma-separated.
pub const TEMPLATES_ENV: &str = "QUANTBOX_E2B_TEMPLATES";

/// The message of every call made without an API key.
pub const NO_API_KEY: &str = "E2B_API_KEY is not set: set it (and optionally E2B_DOMAIN or E2B_API_URL) to run sandboxes in E2B's cloud";

/// Where E2B is and how to call it. Built from the environment by [`Config::from_env`]
/// (the server does that once) or by hand (tests: environment variables are
/// process-global).
#[derive(Clone)]
pub struct Config {
    /// `E2B_API_KEY`; without it every call fails with [`NO_API_KEY`].
    pub api_key: Option<String>,
    /// `E2B_DOMAIN`, default [`DEFAULT_DOMAIN`].
    pub domain: String,
    /// `E2B_API_URL`, default `https://api.{domain}`; no trailing slash.
    pub api_url: String,
    /// `E2B_SANDBOX_URL`: one envd base URL for every sandbox (routed by the
    /// `E2b-Sandbox-Id` header); without it, E2B's URL rules ([`ids::envd_url`]).
    pub sandbox_url: Option<String>,
    /// Retries of control-plane requests.
    pub retry: RetryPolicy,
    /// What one control-plane request may take.
    pub request_timeout: Duration,
    /// The E2B templates quantbox offers for provider `e2b` (`QUANTBOX_E2B_TEMPLATES`,
    /// default `base`): E2B has no list of public templates to ask for.
    pub templates: Vec<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("domain", &self.domain)
            .field("api_url", &self.api_url)
            .field("sandbox_url", &self.sandbox_url)
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .field("templates", &self.templates)
            .finish()
    }
}

impl Config {
    /// The settings from the process environment (empty values count as unset).
    pub fn from_env() -> Config {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// The settings from `get` (a variable's value by name), as [`Config::from_env`] reads
    /// them.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Config {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let domain = get("E2B_DOMAIN").unwrap_or_else(|| DEFAULT_DOMAIN.to_owned());
        let api_url = get("E2B_API_URL").unwrap_or_else(|| format!("https://api.{domain}"));
        let templates = get(TEMPLATES_ENV)
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| vec![ids::DEFAULT_TEMPLATE.to_owned()]);
        Config {
            api_key: get("E2B_API_KEY"),
            domain,
            api_url: api_url.trim_end_matches('/').to_owned(),
            sandbox_url: get("E2B_SANDBOX_URL").map(|u| u.trim_end_matches('/').to_owned()),
            retry: RetryPolicy::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            templates,
        }
    }

    /// A server that serves both the control plane and envd at `url` (what quantbox's
    /// own E2B port does, and E2B's local development setup): `E2B_API_URL` and
    /// `E2B_SANDBOX_URL` both `url`.
    pub fn single_server(api_key: Option<String>, url: &str) -> Config {
        let url = url.trim_end_matches('/').to_owned();
        Config {
            api_key,
            sandbox_url: Some(url.clone()),
            api_url: url,
            ..Config::from_lookup(|_| None)
        }
    }

    /// The envd base URL of sandbox `sandbox_id`: `E2B_SANDBOX_URL` if set, else E2B's
    /// rules over the sandbox's own domain (from create/connect) or the configured one.
    pub fn envd_url(&self, sandbox_id: &str, sandbox_domain: Option<&str>) -> String {
        if let Some(u) = &self.sandbox_url {
            return u.clone();
        }
        let domain = sandbox_domain.unwrap_or(&self.domain);
        match ids::SandboxId::parse(sandbox_id) {
            Ok(id) => ids::envd_url(domain, &id, ids::ENVD_PORT),
            // An id E2B's proxy would not route; the shared host at least answers why.
            Err(_) => format!("https://sandbox.{domain}"),
        }
    }
}

/// A fresh `Idempotency-Key`: `quantbox-` and 32 random characters of `[a-z0-9]`, valid
/// by [`ids::validate_idempotency_key`].
pub fn idempotency_key() -> String {
    format!(
        "quantbox-{}{}",
        ids::SandboxId::generate(),
        &ids::SandboxId::generate().as_str()[..12]
    )
}

/// What went wrong calling E2B, with what was being done (`what`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `E2B_API_KEY`.
    #[error("{NO_API_KEY}")]
    NoApiKey,
    /// E2B answered with an error status (after `attempts` tries).
    #[error("{what}: E2B answered {status}: {}{}", error.message, tries(*attempts))]
    Api {
        what: String,
        status: u16,
        error: ApiError,
        attempts: u32,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("{what}: no answer from E2B at {url}{}: {source}", tries(*attempts))]
    Transport {
        what: String,
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what E2B's API specifies.
    #[error("{what}: E2B's answer cannot be read: {detail}")]
    Decode { what: String, detail: String },
    /// envd answered a Connect call with an error.
    #[error("{what}: the sandbox's envd answered {}: {}", error.code, error.message.as_deref().unwrap_or(""))]
    Rpc { what: String, error: connect::Error },
    /// envd's stream broke the protocol (no `start` first, no `end` before it closed).
    #[error("{what}: {detail}")]
    Protocol { what: String, detail: String },
}

fn tries(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl Error {
    /// The HTTP status E2B answered, if it answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Rpc { error, .. } => Some(error.code.http_status()),
            _ => None,
        }
    }

    /// Whether E2B said the sandbox does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { status: 404, .. })
    }
}

/// A successful answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode {
            what: what.to_owned(),
            detail: format!(
                "{e} in {:?}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            ),
        })
    }
}

/// Filters of [`Client::list`].
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Sandboxes whose metadata has all these pairs.
    pub metadata: BTreeMap<String, String>,
    /// Running and paused when empty.
    pub states: Vec<SandboxState>,
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `metadata` query value as the SDK writes it: `k=v&k2=v2` with keys and values
/// percent-encoded, the whole then encoded once more as one query parameter.
pub fn metadata_query(metadata: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = metadata
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    encode(&pairs.join("&"))
}

/// The HTTP client of E2B's control plane. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    cfg: Config,
    key: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("cfg", &self.cfg).finish()
    }
}

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("quantbox/", env!("CARGO_PKG_VERSION"));

impl Client {
    /// A client for `cfg`; [`Error::NoApiKey`] without a key.
    pub fn new(cfg: Config) -> Result<Client, Error> {
        let key = cfg.api_key.clone().ok_or(Error::NoApiKey)?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| Error::Transport {
                what: "setting up the HTTP client".into(),
                url: cfg.api_url.clone(),
                attempts: 0,
                source: e,
            })?;
        Ok(Client { http, cfg, key })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The underlying HTTP client (shared with [`envd::Envd`]).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a control-plane request, retrying as E2B asks ([`retry`]) and after
    /// connection failures. `replay_safe`: a timed-out attempt may be sent again (reads,
    /// kills, a create with its idempotency key).
    async fn send(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        idempotency_key: Option<&str>,
        replay_safe: bool,
    ) -> Result<Answer, Error> {
        let url = format!("{}{path}", self.cfg.api_url);
        let mut attempt: u32 = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.cfg.request_timeout)
                .header(crate::model::API_KEY_HEADER, &self.key);
            if let Some(k) = idempotency_key {
                req = req.header(IDEMPOTENCY_KEY_HEADER, k);
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let retryable = e.is_connect() || (replay_safe && e.is_timeout());
                    match retryable
                        .then(|| {
                            retry::connection_retry_delay(&self.cfg.retry, attempt, retry::jitter())
                        })
                        .flatten()
                    {
                        Some(d) => {
                            tracing::debug!(what, error = %e, delay_ms = d.as_millis() as u64, "E2B unreachable; retrying");
                            tokio::time::sleep(d).await;
                            attempt += 1;
                            continue;
                        }
                        None => {
                            return Err(Error::Transport {
                                what: what.to_owned(),
                                url: url.clone(),
                                attempts: attempt + 1,
                                source: e,
                            });
                        }
                    }
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let body_bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    return Err(Error::Transport {
                        what: what.to_owned(),
                        url: url.clone(),
                        attempts: attempt + 1,
                        source: e,
                    });
                }
            };
            if status.is_success() {
                return Ok(Answer {
                    status,
                    headers,
                    body: body_bytes,
                });
            }
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            if let Some(d) = retry::retry_delay(
                &self.cfg.retry,
                attempt,
                status.as_u16(),
                header(SHOULD_RETRY_HEADER),
                header(RETRY_AFTER_HEADER),
                retry::jitter(),
            ) {
                tracing::debug!(
                    what,
                    status = status.as_u16(),
                    delay_ms = d.as_millis() as u64,
                    "E2B asked to retry"
                );
                tokio::time::sleep(d).await;
                attempt += 1;
                continue;
            }
            return Err(Error::Api {
                what: what.to_owned(),
                status: status.as_u16(),
                error: ApiError::from_response(status.as_u16(), &body_bytes),
                attempts: attempt + 1,
            });
        }
    }

    fn body<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(v).map_err(|e| Error::Decode {
            what: what.to_owned(),
            detail: e.to_string(),
        })
    }

    /// `POST /v2/sandboxes` with `Idempotency-Key: key` (the same key on every retry:
    /// E2B replays the first outcome instead of making a second sandbox).
    pub async fn create(&self, new: &NewSandbox, key: &str) -> Result<Sandbox, Error> {
        let what = format!(
            "creating an E2B sandbox from template `{}`",
            new.template_id
        );
        ids::validate_idempotency_key(key).map_err(|e| Error::Protocol {
            what: what.clone(),
            detail: e.to_string(),
        })?;
        let body = Self::body(&what, new)?;
        self.send(
            &what,
            Method::POST,
            "/v2/sandboxes",
            Some(body),
            Some(key),
            true,
        )
        .await?
        .json(&what)
    }

    /// `GET /sandboxes/{id}`.
    pub async fn get(&self, id: &str) -> Result<SandboxDetail, Error> {
        let what = format!("reading E2B sandbox {id}");
        self.send(
            &what,
            Method::GET,
            &format!("/sandboxes/{}", encode(id)),
            None,
            None,
            true,
        )
        .await?
        .json(&what)
    }

    /// `GET /v2/sandboxes`, every page (following `X-Next-Token`).
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<ListedSandbox>, Error> {
        let what = "listing E2B sandboxes";
        let mut base = String::from("/v2/sandboxes?limit=100");
        if !q.metadata.is_empty() {
            base.push_str(&format!("&metadata={}", metadata_query(&q.metadata)));
        }
        if !q.states.is_empty() {
            let states: Vec<&str> = q.states.iter().map(|s| s.as_str()).collect();
            base.push_str(&format!("&state={}", encode(&states.join(","))));
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // A server that hands out the same cursor forever must not keep us here.
        for _ in 0..1000 {
            let path = match &token {
                Some(t) => format!("{base}&nextToken={}", encode(t)),
                None => base.clone(),
            };
            let a = self
                .send(what, Method::GET, &path, None, None, true)
                .await?;
            let page: Vec<ListedSandbox> = a.json(what)?;
            out.extend(page);
            let next = a
                .headers
                .get(NEXT_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .filter(|t| !t.is_empty());
            match next {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// `DELETE /sandboxes/{id}`: `true` when killed, `false` when E2B had no such sandbox.
    pub async fn kill(&self, id: &str) -> Result<bool, Error> {
        let what = format!("killing E2B sandbox {id}");
        match self
            .send(
                &what,
                Method::DELETE,
                &format!("/sandboxes/{}", encode(id)),
                None,
                None,
                true,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /sandboxes/{id}/timeout`: the sandbox ends `secs` from now.
    pub async fn set_timeout(&self, id: &str, secs: i32) -> Result<(), Error> {
        let what = format!("setting the timeout of E2B sandbox {id}");
        let body = Self::body(&what, &SandboxTimeoutRequest { timeout: secs })?;
        self.send(
            &what,
            Method::POST,
            &format!("/sandboxes/{}/timeout", encode(id)),
            Some(body),
            None,
            true,
        )
        .await
        .map(|_| ())
    }

    /// `POST /sandboxes/{id}/pause` (memory kept).
    pub async fn pause(&self, id: &str) -> Result<(), Error> {
        let what = format!("pausing E2B sandbox {id}");
        let body = Self::body(&what, &SandboxPauseRequest::default())?;
        self.send(
            &what,
            Method::POST,
            &format!("/sandboxes/{}/pause", encode(id)),
            Some(body),
            None,
            false,
        )
        .await
        .map(|_| ())
    }

    /// `POST /v2/sandboxes/{id}/connect`: resumes a paused sandbox (its lifetime at least
    /// `timeout_secs` from now; never shortened). Also says whether it was resumed (201)
    /// or already running (200).
    pub async fn connect(&self, id: &str, timeout_secs: i32) -> Result<(Sandbox, bool), Error> {
        let what = format!("connecting to (resuming) E2B sandbox {id}");
        let body = Self::body(
            &what,
            &ConnectSandboxV2 {
                timeout: timeout_secs,
                memory: None,
            },
        )?;
        let a = self
            .send(
                &what,
                Method::POST,
                &format!("/v2/sandboxes/{}/connect", encode(id)),
                Some(body),
                None,
                true,
            )
            .await?;
        let resumed = a.status == StatusCode::CREATED;
        Ok((a.json(&what)?, resumed))
    }

    /// `GET /sandboxes/{id}/metrics`: the samples E2B has (oldest first).
    pub async fn metrics(&self, id: &str) -> Result<Vec<SandboxMetric>, Error> {
        let what = format!("reading the metrics of E2B sandbox {id}");
        self.send(
            &what,
            Method::GET,
            &format!("/sandboxes/{}/metrics", encode(id)),
            None,
            None,
            true,
        )
        .await?
        .json(&what)
    }

    /// The `X-Access-Token` and routing headers of an envd request (see [`envd`]).
    pub(crate) fn envd_headers(sandbox_id: &str, access_token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(sandbox_id) {
            h.insert(ids::SANDBOX_ID_HEADER, v);
        }
        h.insert(ids::SANDBOX_PORT_HEADER, HeaderValue::from_static("49983"));
        if let Some(t) = access_token.and_then(|t| HeaderValue::from_str(t).ok()) {
            h.insert(ids::ACCESS_TOKEN_HEADER, t);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Config {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn config_defaults() {
        let c = env(&[]);
        assert_eq!(c.api_key, None);
        assert_eq!(c.domain, "e2b.app");
        assert_eq!(c.api_url, "https://api.e2b.app");
        assert_eq!(c.sandbox_url, None);
        assert_eq!(c.templates, vec!["base"]);
        assert_eq!(c.retry.max_retries, 3);
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        assert!(matches!(Client::new(c), Err(Error::NoApiKey)));
        assert_eq!(Error::NoApiKey.to_string(), NO_API_KEY);
    }

    #[test]
    fn config_from_variables() {
        let c = env(&[
            ("E2B_API_KEY", " e2b_53ae1fed82754c17ad8077fbc8bcdd90 "),
            ("E2B_DOMAIN", "example.org"),
            ("QUANTBOX_E2B_TEMPLATES", "base, python ,,"),
        ]);
        assert_eq!(
            c.api_key.as_deref(),
            Some("e2b_53ae1fed82754c17ad8077fbc8bcdd90")
        );
        assert_eq!(c.api_url, "https://api.example.org");
        assert_eq!(c.templates, vec!["base", "python"]);
        // The key never shows in debug output.
        assert!(!format!("{c:?}").contains("53ae1fed"));

        let c = env(&[
            ("E2B_API_KEY", ""),
            ("E2B_DOMAIN", "example.org"),
            ("E2B_API_URL", "http://127.0.0.1:3000/"),
            ("E2B_SANDBOX_URL", "http://127.0.0.1:3002/"),
        ]);
        assert_eq!(c.api_key, None, "an empty key is no key");
        assert_eq!(c.api_url, "http://127.0.0.1:3000");
        assert_eq!(c.sandbox_url.as_deref(), Some("http://127.0.0.1:3002"));
    }

    #[test]
    fn envd_url_rules() {
        let c = env(&[]);
        assert_eq!(c.envd_url("abc123", None), "https://sandbox.e2b.app");
        assert_eq!(
            c.envd_url("abc123", Some("example.org")),
            "https://49983-abc123.example.org"
        );
        let c = env(&[("E2B_DOMAIN", "my.cloud")]);
        assert_eq!(c.envd_url("abc123", None), "https://49983-abc123.my.cloud");
        let c = env(&[("E2B_SANDBOX_URL", "http://127.0.0.1:7401")]);
        assert_eq!(
            c.envd_url("abc123", Some("example.org")),
            "http://127.0.0.1:7401"
        );
        let c = Config::single_server(Some("k".into()), "http://127.0.0.1:7401/");
        assert_eq!(c.api_url, "http://127.0.0.1:7401");
        assert_eq!(c.envd_url("x", None), "http://127.0.0.1:7401");
    }

    #[test]
    fn idempotency_keys_are_valid_and_fresh() {
        let a = idempotency_key();
        let b = idempotency_key();
        assert_ne!(a, b);
        for k in [&a, &b] {
            ids::validate_idempotency_key(k).unwrap();
            assert!(k.starts_with("quantbox-") && k.len() == 9 + 32, "{k}");
        }
    }

    #[test]
    fn metadata_query_is_encoded_twice() {
        let m = BTreeMap::from([
            ("quantbox_id".to_string(), "abc".to_string()),
            ("a b".to_string(), "x&y=z".to_string()),
        ]);
        // The inner encoding keeps `&` and `=` of values apart from the separators; the
        // outer one makes the whole a single query parameter.
        assert_eq!(
            metadata_query(&m),
            "a%2520b%3Dx%2526y%253Dz%26quantbox_id%3Dabc"
        );
        assert_eq!(encode("a-z_0.9~"), "a-z_0.9~");
    }

    #[test]
    fn error_messages_say_what_and_how_often() {
        let e = Error::Api {
            what: "creating an E2B sandbox".into(),
            status: 429,
            error: ApiError::from_response(
                429,
                br#"{"code":429,"message":"you have reached the maximum number of concurrent E2B sandboxes (20)"}"#,
            ),
            attempts: 4,
        };
        assert_eq!(
            e.to_string(),
            "creating an E2B sandbox: E2B answered 429: you have reached the maximum number of concurrent E2B sandboxes (20) (after 4 attempts)"
        );
        assert_eq!(e.status(), Some(429));
        assert!(!e.is_not_found());
        let nf = Error::Api {
            what: "x".into(),
            status: 404,
            error: ApiError::new(404, "sandbox not found"),
            attempts: 1,
        };
        assert!(nf.is_not_found());
        assert_eq!(nf.to_string(), "x: E2B answered 404: sandbox not found");
    }
}
