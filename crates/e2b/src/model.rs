//! The bodies of E2B's control-plane REST API (e2b-compat.md §1), as serde types.
//!
//! Why this module exists: quantbox both serves this API (E2B's SDKs pointed at a quantbox
//! server) and calls it (provider `e2b`), and both sides must agree byte for byte with
//! E2B's field names — camelCase mostly, with E2B's own exceptions (`templateID`,
//! `sandboxID`, `memoryMB`, the snake_case `allow_internet_access` and `error_code`).
//! Defaults the spec documents are applied on reading; fields the spec marks optional are
//! `Option`s that are left out when writing. Unknown fields are ignored on reading, as the
//! SDKs do, so newer peers still parse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Header carrying the API key (the SDKs spell it `X-API-KEY`; names are case-insensitive).
pub const API_KEY_HEADER: &str = "X-API-Key";
/// Response header with the cursor of the next page; absent on the last page.
pub const NEXT_TOKEN_HEADER: &str = "X-Next-Token";
/// Response header of `GET /v2/sandboxes`: how many sandboxes are running.
pub const TOTAL_RUNNING_HEADER: &str = "X-Total-Running";
/// Request header of `POST /v2/sandboxes` making the create idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Response header telling the SDK whether to retry (`true`/`false`).
pub const SHOULD_RETRY_HEADER: &str = "Should-Retry";
/// Response header with the delay, in seconds, before a retry.
pub const RETRY_AFTER_HEADER: &str = "Retry-After";

/// Timeout of a v1 create (`POST /sandboxes`), resume and fork when none is given.
pub const DEFAULT_TIMEOUT_V1_SECS: i32 = 15;
/// Timeout of a v2 create (`POST /v2/sandboxes`) and v2 connect when none is given.
pub const DEFAULT_TIMEOUT_V2_SECS: i32 = 300;

/// A string-to-string map (`metadata`, `envVars`), ordered so output is stable.
pub type StringMap = BTreeMap<String, String>;

fn default_true() -> bool {
    true
}

fn default_timeout_v1() -> i32 {
    DEFAULT_TIMEOUT_V1_SECS
}

fn default_timeout_v2() -> i32 {
    DEFAULT_TIMEOUT_V2_SECS
}

/// The body of every 4xx/5xx response (schema `Error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The HTTP status, repeated.
    pub code: i32,
    #[serde(default)]
    pub message: String,
    /// A machine-readable reason, e.g. [`error_codes::SANDBOX_CREATE_FAILED`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

impl ApiError {
    /// An error body for `status` with `message` and no `error_code`.
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            code: i32::from(status),
            message: message.into(),
            error_code: None,
        }
    }

    /// Reads a failed response as the SDKs do: its `Error` body, or, when the body has no
    /// `message`, the raw body text as the message.
    pub fn from_response(status: u16, body: &[u8]) -> ApiError {
        #[derive(Deserialize)]
        struct Loose {
            message: Option<String>,
            error_code: Option<String>,
        }
        match serde_json::from_slice::<Loose>(body) {
            Ok(Loose {
                message: Some(message),
                error_code,
            }) => ApiError {
                code: i32::from(status),
                message,
                error_code,
            },
            _ => ApiError::new(status, String::from_utf8_lossy(body)),
        }
    }
}

/// `error_code` values the spec lists.
pub mod error_codes {
    pub const SANDBOX_CAPACITY_UNAVAILABLE: &str = "sandbox_capacity_unavailable";
    pub const SANDBOX_PLACEMENT_TIMEOUT: &str = "sandbox_placement_timeout";
    pub const SANDBOX_NO_COMPATIBLE_NODE: &str = "sandbox_no_compatible_node";
    pub const SANDBOX_CREATE_FAILED: &str = "sandbox_create_failed";
    pub const INTERNAL_SERVER_ERROR: &str = "internal_server_error";
    pub const SANDBOX_CREATE_REFUSED: &str = "sandbox_create_refused";
    pub const SECRET_LIMIT_REACHED: &str = "secret_limit_reached";
    pub const IDEMPOTENCY_REQUEST_MISMATCH: &str = "idempotency_request_mismatch";
    pub const IDEMPOTENCY_IN_PROGRESS: &str = "idempotency_in_progress";
    pub const IDEMPOTENCY_OUTCOME_UNKNOWN: &str = "idempotency_outcome_unknown";
    pub const SANDBOX_SNAPSHOT_GUEST_AGENT_UNRESPONSIVE: &str =
        "sandbox_snapshot_guest_agent_unresponsive";
}

/// `autoResume` of a create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoResume {
    pub enabled: bool,
}

/// One token requested under `iam.tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IamToken {
    pub audience: String,
    pub token_type: String,
}

/// `iam` of a create request: `{"tokens": {name: {"audience", "tokenType"}}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iam {
    pub tokens: BTreeMap<String, IamToken>,
}

/// A volume mounted into the sandbox: `{"name", "path"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub name: String,
    pub path: String,
}

/// A SOCKS5 proxy for the sandbox's egress: `{"address": "host:port", "username", "password"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressProxy {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `SandboxNetworkConfig` (also the body of `PUT /sandboxes/{id}/network`, where omitted
/// fields are cleared). Fields whose shape the spec does not pin down are kept as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxNetworkConfig {
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    /// CIDRs, IPs or domains (including `*.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// CIDRs or IPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Nullable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<serde_json::Value>,
    /// `{domain: [{"transform": {"headers": {..}}}]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<serde_json::Value>,
}

impl SandboxNetworkConfig {
    /// `allowPublicTraffic` with its default (true).
    pub fn allows_public_traffic(&self) -> bool {
        self.allow_public_traffic.unwrap_or(true)
    }
}

/// The body of `POST /sandboxes` (`NewSandbox`) and `POST /v2/sandboxes` (`NewSandboxV2`,
/// the same fields without `secure`). The two differ in the default timeout, so `timeout`
/// stays optional here: see [`NewSandbox::timeout_secs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds (int32, minimum 0); defaults differ between v1 and v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i32>,
    #[serde(rename = "autoPause", default)]
    pub auto_pause: bool,
    #[serde(rename = "autoPauseMemory", default = "default_true")]
    pub auto_pause_memory: bool,
    #[serde(
        rename = "autoResume",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_resume: Option<AutoResume>,
    /// v1 only; the 2.63 SDK model says it is ignored (always secured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// Note the snake_case name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<SandboxNetworkConfig>,
    #[serde(default)]
    pub metadata: StringMap,
    #[serde(rename = "envVars", default)]
    pub env_vars: StringMap,
    /// An object or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<Iam>,
    #[serde(
        rename = "volumeMounts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// Which create route a [`NewSandbox`] came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `POST /sandboxes`.
    V1,
    /// `POST /v2/sandboxes`.
    V2,
}

impl NewSandbox {
    /// A request for `template_id` with every other field at its default.
    pub fn new(template_id: impl Into<String>) -> NewSandbox {
        NewSandbox {
            template_id: template_id.into(),
            timeout: None,
            auto_pause: false,
            auto_pause_memory: true,
            auto_resume: None,
            secure: None,
            allow_internet_access: None,
            network: None,
            metadata: StringMap::new(),
            env_vars: StringMap::new(),
            mcp: None,
            iam: None,
            volume_mounts: None,
        }
    }

    /// The timeout in seconds, the route's default when none was given
    /// ([`DEFAULT_TIMEOUT_V1_SECS`] or [`DEFAULT_TIMEOUT_V2_SECS`]).
    pub fn timeout_secs(&self, version: ApiVersion) -> i32 {
        self.timeout.unwrap_or(match version {
            ApiVersion::V1 => DEFAULT_TIMEOUT_V1_SECS,
            ApiVersion::V2 => DEFAULT_TIMEOUT_V2_SECS,
        })
    }
}

/// `SandboxTimeoutRequest`, body of `POST /sandboxes/{id}/timeout`: end = now + timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxTimeoutRequest {
    pub timeout: i32,
}

/// `SandboxRefreshRequest`, optional body of `POST /sandboxes/{id}/refreshes` (0..3600 s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRefreshRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i32>,
}

/// `SandboxPauseRequest`, optional body of `POST /sandboxes/{id}/pause`. `memory: false`
/// is a filesystem-only snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPauseRequest {
    #[serde(default = "default_true")]
    pub memory: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_healthy_guest: Option<bool>,
}

impl Default for SandboxPauseRequest {
    fn default() -> Self {
        SandboxPauseRequest {
            memory: true,
            require_healthy_guest: None,
        }
    }
}

/// `ResumedSandbox`, the required body of the deprecated `POST /sandboxes/{id}/resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumedSandbox {
    #[serde(default = "default_timeout_v1")]
    pub timeout: i32,
    /// Deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
}

/// `ConnectSandbox`, the required body of `POST /sandboxes/{id}/connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectSandbox {
    pub timeout: i32,
}

/// `ConnectSandboxV2`, body of `POST /v2/sandboxes/{id}/connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectSandboxV2 {
    #[serde(default = "default_timeout_v2")]
    pub timeout: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
}

/// `SandboxForkRequest`, optional body of `POST /sandboxes/{id}/fork`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxForkRequest {
    #[serde(default = "default_timeout_v1")]
    pub timeout: i32,
    /// 1..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
}

/// `SandboxSnapshotRequest`, body of `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSnapshotRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `Sandbox`, returned by create, connect, resume and fork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// Deprecated but required: old SDKs check it.
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Sent by the SDK as `X-Access-Token` on every envd request.
    #[serde(
        rename = "envdAccessToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub envd_access_token: Option<String>,
    /// Nullable.
    #[serde(
        rename = "trafficAccessToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub traffic_access_token: Option<String>,
    /// Nullable; when set, the SDK uses it as the sandbox domain for envd URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// A sandbox's state in lists and details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    Paused,
}

impl SandboxState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
        }
    }
}

/// What happens when a sandbox's timeout is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    Kill,
    Pause,
}

/// `lifecycle` of a sandbox detail: `{"autoResume": bool, "onTimeout": "kill"|"pause"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    pub auto_resume: bool,
    pub on_timeout: OnTimeout,
}

/// `pauseMode` of a paused sandbox (SDK 2.63).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    Full,
    Filesystem,
}

/// `SandboxDetail`, returned by `GET /sandboxes/{id}`. Times are RFC 3339 strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub started_at: String,
    pub end_at: String,
    /// At least 1.
    pub cpu_count: i32,
    /// At least 128.
    #[serde(rename = "memoryMB")]
    pub memory_mb: i32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i32,
    pub state: SandboxState,
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    /// Nullable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<StringMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<SandboxNetworkConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_unresponsive_at_pause: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_mode: Option<PauseMode>,
}

/// `ListedSandbox`, an element of `GET /sandboxes` and `GET /v2/sandboxes`: the detail's
/// required fields, without the token and network fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: i32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: i32,
    pub state: SandboxState,
    pub envd_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<StringMap>,
}

/// `SandboxMetric`: one sample; byte counts are int64; all fields required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    /// Deprecated (RFC 3339); `timestampUnix` replaces it.
    pub timestamp: String,
    /// Unix seconds.
    pub timestamp_unix: i64,
    pub cpu_count: i32,
    pub cpu_used_pct: f64,
    pub mem_used: i64,
    pub mem_total: i64,
    pub mem_cache: i64,
    pub disk_used: i64,
    pub disk_total: i64,
}

/// `SandboxesWithMetrics`, returned by `GET /sandboxes/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxesWithMetrics {
    pub sandboxes: BTreeMap<String, SandboxMetric>,
}

/// A v1 log line: `{"timestamp", "line"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLog {
    pub timestamp: String,
    pub line: String,
}

/// A log entry's level; as a query parameter it is the minimum level returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// `SandboxLogEntry`: `{"timestamp", "level", "message", "fields"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLogEntry {
    pub timestamp: String,
    pub level: LogLevel,
    pub message: String,
    pub fields: StringMap,
}

/// `SandboxLogs`, returned by the deprecated `GET /sandboxes/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxLogs {
    pub logs: Vec<SandboxLog>,
    pub log_entries: Vec<SandboxLogEntry>,
}

/// `SandboxLogsV2Response`, returned by `GET /v2/sandboxes/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLogsV2Response {
    pub logs: Vec<SandboxLogEntry>,
}

/// `SandboxForkResult`: each element of a fork's answer holds a sandbox or an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxForkResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// `SnapshotInfo`, returned by `POST /sandboxes/{id}/snapshots` and `GET /snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

/// Order of `GET /v2/sandboxes` by start time; default [`Order::Desc`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// Smallest page size.
pub const MIN_LIMIT: u32 = 1;
/// Largest page size, also the default.
pub const MAX_LIMIT: u32 = 100;

/// Why a list query parameter is refused (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("limit must be an integer between {MIN_LIMIT} and {MAX_LIMIT}, got {0:?}")]
    Limit(String),
    #[error("unknown sandbox state {0:?} (expected running or paused)")]
    State(String),
}

impl QueryError {
    /// The 400 body for this error.
    pub fn to_api_error(&self) -> ApiError {
        ApiError::new(400, self.to_string())
    }
}

/// Reads the `limit` query parameter: absent → 100; otherwise an integer in 1..=100.
pub fn parse_limit(value: Option<&str>) -> Result<u32, QueryError> {
    let Some(value) = value else {
        return Ok(MAX_LIMIT);
    };
    match value.parse::<u32>() {
        Ok(n) if (MIN_LIMIT..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(QueryError::Limit(value.to_string())),
    }
}

/// Reads the `state` query parameter of `GET /v2/sandboxes` (`style=form, explode=false`:
/// `state=running,paused`). Absent → running and paused.
pub fn parse_states(value: Option<&str>) -> Result<Vec<SandboxState>, QueryError> {
    let Some(value) = value else {
        return Ok(vec![SandboxState::Running, SandboxState::Paused]);
    };
    let mut states = Vec::new();
    for part in value.split(',') {
        let state = match part {
            "running" => SandboxState::Running,
            "paused" => SandboxState::Paused,
            other => return Err(QueryError::State(other.to_string())),
        };
        if !states.contains(&state) {
            states.push(state);
        }
    }
    Ok(states)
}

/// One page of a list: the items and the cursor for `X-Next-Token`, `None` on the last
/// page (the header is then absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn roundtrip<T: Serialize + for<'de> Deserialize<'de>>(text: &str) -> (T, Value) {
        let parsed: T = serde_json::from_str(text).unwrap();
        (parsed, serde_json::from_str(text).unwrap())
    }

    #[test]
    fn error_body() {
        let (e, v) = roundtrip::<ApiError>(
            r#"{"code":503,"message":"no capacity","error_code":"sandbox_capacity_unavailable"}"#,
        );
        assert_eq!(e.code, 503);
        assert_eq!(
            e.error_code.as_deref(),
            Some(error_codes::SANDBOX_CAPACITY_UNAVAILABLE)
        );
        assert_eq!(serde_json::to_value(&e).unwrap(), v);
        assert_eq!(e.to_string(), "503: no capacity");
        let plain = ApiError::new(404, "sandbox not found");
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"code":404,"message":"sandbox not found"}"#
        );
    }

    #[test]
    fn error_from_response_falls_back_to_body_text() {
        let e = ApiError::from_response(429, br#"{"code":429,"message":"slow down"}"#);
        assert_eq!(e, ApiError::new(429, "slow down"));
        let e = ApiError::from_response(502, b"Bad Gateway");
        assert_eq!(e, ApiError::new(502, "Bad Gateway"));
        let e = ApiError::from_response(500, br#"{"code":500}"#);
        assert_eq!(e, ApiError::new(500, r#"{"code":500}"#));
    }

    #[test]
    fn new_sandbox_as_sdk_sends_it() {
        // What SDK 2.63 sends for `Sandbox.create()` with no options but a timeout.
        let text = r#"{"templateID":"base","autoPause":false,"autoPauseMemory":true,"metadata":{},"envVars":{},"timeout":300}"#;
        let (n, v) = roundtrip::<NewSandbox>(text);
        assert_eq!(n.template_id, "base");
        assert_eq!(n.timeout, Some(300));
        assert!(!n.auto_pause && n.auto_pause_memory);
        assert_eq!(serde_json::to_value(&n).unwrap(), v);
    }

    #[test]
    fn new_sandbox_defaults() {
        let n: NewSandbox = serde_json::from_str(r#"{"templateID":"python"}"#).unwrap();
        assert_eq!(n, NewSandbox::new("python"));
        assert_eq!(n.timeout_secs(ApiVersion::V1), 15);
        assert_eq!(n.timeout_secs(ApiVersion::V2), 300);
        assert!(!n.auto_pause);
        assert!(n.auto_pause_memory);
        assert!(n.metadata.is_empty() && n.env_vars.is_empty());
        assert!(serde_json::from_str::<NewSandbox>(r#"{"timeout":5}"#).is_err());
        // Written back: defaults spelled out, optional fields left out.
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            json!({"templateID":"python","autoPause":false,"autoPauseMemory":true,"metadata":{},"envVars":{}})
        );
    }

    #[test]
    fn new_sandbox_every_field() {
        let text = r#"{
            "templateID": "base",
            "timeout": 60,
            "autoPause": true,
            "autoPauseMemory": false,
            "autoResume": {"enabled": true},
            "secure": true,
            "allow_internet_access": false,
            "network": {
                "allowPublicTraffic": false,
                "allowOut": ["10.0.0.0/8", "*.example.com"],
                "denyOut": ["0.0.0.0/0"],
                "egressProxy": {"address": "proxy:1080", "username": "u", "password": "p"},
                "maskRequestHost": "localhost:${PORT}",
                "rules": {"example.com": [{"transform": {"headers": {"X-A": "b"}}}]}
            },
            "metadata": {"owner": "quant"},
            "envVars": {"A": "1"},
            "mcp": {"server": {}},
            "iam": {"tokens": {"gcp": {"audience": "aud", "tokenType": "id"}}},
            "volumeMounts": [{"name": "data", "path": "/data"}]
        }"#;
        let (n, v) = roundtrip::<NewSandbox>(text);
        assert_eq!(n.timeout_secs(ApiVersion::V2), 60);
        assert_eq!(n.auto_resume, Some(AutoResume { enabled: true }));
        assert_eq!(n.allow_internet_access, Some(false));
        let net = n.network.as_ref().unwrap();
        assert!(!net.allows_public_traffic());
        assert_eq!(net.egress_proxy.as_ref().unwrap().address, "proxy:1080");
        assert_eq!(n.iam.as_ref().unwrap().tokens["gcp"].token_type, "id");
        assert_eq!(n.volume_mounts.as_ref().unwrap()[0].path, "/data");
        assert_eq!(n.env_vars["A"], "1");
        assert_eq!(serde_json::to_value(&n).unwrap(), v);
    }

    #[test]
    fn new_sandbox_null_mcp_and_network_defaults() {
        let n: NewSandbox =
            serde_json::from_str(r#"{"templateID":"base","mcp":null,"network":{}}"#).unwrap();
        assert_eq!(n.mcp, None);
        assert!(n.network.unwrap().allows_public_traffic());
    }

    #[test]
    fn small_request_bodies() {
        let (t, v) = roundtrip::<SandboxTimeoutRequest>(r#"{"timeout":120}"#);
        assert_eq!(t.timeout, 120);
        assert_eq!(serde_json::to_value(t).unwrap(), v);

        let r: SandboxRefreshRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r.duration, None);
        let (r, v) = roundtrip::<SandboxRefreshRequest>(r#"{"duration":30}"#);
        assert_eq!(serde_json::to_value(r).unwrap(), v);

        let p: SandboxPauseRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(p, SandboxPauseRequest::default());
        assert!(p.memory);
        let (p, v) =
            roundtrip::<SandboxPauseRequest>(r#"{"memory":false,"requireHealthyGuest":true}"#);
        assert!(!p.memory);
        assert_eq!(serde_json::to_value(p).unwrap(), v);

        let r: ResumedSandbox = serde_json::from_str("{}").unwrap();
        assert_eq!((r.timeout, r.auto_pause), (15, None));
        let (r, v) = roundtrip::<ResumedSandbox>(r#"{"timeout":60,"autoPause":true}"#);
        assert_eq!(serde_json::to_value(r).unwrap(), v);

        assert!(serde_json::from_str::<ConnectSandbox>("{}").is_err());
        let (c, v) = roundtrip::<ConnectSandbox>(r#"{"timeout":30}"#);
        assert_eq!(serde_json::to_value(c).unwrap(), v);

        let c: ConnectSandboxV2 = serde_json::from_str("{}").unwrap();
        assert_eq!((c.timeout, c.memory), (300, None));
        let (c, v) = roundtrip::<ConnectSandboxV2>(r#"{"timeout":10,"memory":true}"#);
        assert_eq!(serde_json::to_value(c).unwrap(), v);

        let f: SandboxForkRequest = serde_json::from_str("{}").unwrap();
        assert_eq!((f.timeout, f.count), (15, None));
        let (f, v) = roundtrip::<SandboxForkRequest>(r#"{"timeout":15,"count":3}"#);
        assert_eq!(serde_json::to_value(f).unwrap(), v);

        let (s, v) = roundtrip::<SandboxSnapshotRequest>(r#"{"name":"snap"}"#);
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
        assert_eq!(
            serde_json::to_string(&SandboxSnapshotRequest::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn sandbox_response() {
        let text = r#"{"templateID":"base","sandboxID":"i1a2b3c4d5e6f7g8h9j0","clientID":"6532622b","envdVersion":"0.2.4","envdAccessToken":"tok","trafficAccessToken":null,"domain":null}"#;
        let s: Sandbox = serde_json::from_str(text).unwrap();
        assert_eq!(s.sandbox_id, "i1a2b3c4d5e6f7g8h9j0");
        assert_eq!(s.envd_access_token.as_deref(), Some("tok"));
        assert_eq!(
            (s.traffic_access_token.as_ref(), s.domain.as_ref()),
            (None, None)
        );
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"templateID":"base","sandboxID":"i1a2b3c4d5e6f7g8h9j0","clientID":"6532622b","envdVersion":"0.2.4","envdAccessToken":"tok"}"#
        );
        // clientID and envdVersion are required.
        assert!(
            serde_json::from_str::<Sandbox>(
                r#"{"templateID":"base","sandboxID":"x","envdVersion":"0.2.4"}"#
            )
            .is_err()
        );
        let (s, v) = roundtrip::<Sandbox>(
            r#"{"templateID":"t","sandboxID":"x","clientID":"c","envdVersion":"0.1.0","alias":"a","trafficAccessToken":"tt","domain":"example.org"}"#,
        );
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
    }

    #[test]
    fn sandbox_detail() {
        let text = r#"{
            "templateID": "base", "sandboxID": "abc123", "clientID": "c",
            "startedAt": "2026-11-26T10:00:00Z", "endAt": "2026-11-26T10:05:00Z",
            "cpuCount": 2, "memoryMB": 512, "diskSizeMB": 1024, "state": "paused",
            "envdVersion": "0.2.4", "alias": "base", "envdAccessToken": "tok",
            "allowInternetAccess": true, "domain": "e2b.app", "metadata": {"k": "v"},
            "network": {"allowOut": ["1.1.1.1"]},
            "lifecycle": {"autoResume": false, "onTimeout": "pause"},
            "volumeMounts": [{"name": "v", "path": "/v"}],
            "envdUnresponsiveAtPause": false, "pauseMode": "filesystem"
        }"#;
        let (d, v) = roundtrip::<SandboxDetail>(text);
        assert_eq!(d.state, SandboxState::Paused);
        assert_eq!((d.cpu_count, d.memory_mb, d.disk_size_mb), (2, 512, 1024));
        assert_eq!(
            d.lifecycle,
            Some(Lifecycle {
                auto_resume: false,
                on_timeout: OnTimeout::Pause
            })
        );
        assert_eq!(d.pause_mode, Some(PauseMode::Filesystem));
        assert_eq!(serde_json::to_value(&d).unwrap(), v);
        assert!(
            serde_json::from_str::<SandboxDetail>(r#"{"templateID":"base","sandboxID":"x"}"#)
                .is_err()
        );
    }

    #[test]
    fn listed_sandbox() {
        let text = r#"[{"templateID":"base","sandboxID":"abc","clientID":"c","startedAt":"2026-11-26T10:00:00Z","endAt":"2026-11-26T10:05:00Z","cpuCount":1,"memoryMB":128,"diskSizeMB":512,"state":"running","envdVersion":"0.2.4","metadata":{}}]"#;
        let (l, v) = roundtrip::<Vec<ListedSandbox>>(text);
        assert_eq!(l[0].state, SandboxState::Running);
        assert_eq!(l[0].state.as_str(), "running");
        assert_eq!(serde_json::to_value(&l).unwrap(), v);
        // Unknown fields from newer servers are ignored.
        let mut extra: Value = serde_json::from_str(text).unwrap();
        extra[0]["somethingNew"] = json!(1);
        serde_json::from_value::<Vec<ListedSandbox>>(extra).unwrap();
    }

    #[test]
    fn metrics() {
        let text = r#"{"sandboxes":{"abc":{"timestamp":"2026-11-26T10:00:00Z","timestampUnix":1795687200,"cpuCount":2,"cpuUsedPct":12.5,"memUsed":1048576,"memTotal":536870912,"memCache":4096,"diskUsed":2048,"diskTotal":1073741824}}}"#;
        let (m, v) = roundtrip::<SandboxesWithMetrics>(text);
        assert_eq!(m.sandboxes["abc"].cpu_used_pct, 12.5);
        assert_eq!(m.sandboxes["abc"].mem_total, 536_870_912);
        assert_eq!(serde_json::to_value(&m).unwrap(), v);
        assert!(serde_json::from_str::<SandboxMetric>(r#"{"timestampUnix":1}"#).is_err());
    }

    #[test]
    fn logs() {
        let text = r#"{"logs":[{"timestamp":"2026-11-26T10:00:00Z","line":"started"}],"logEntries":[{"timestamp":"2026-11-26T10:00:00Z","level":"warn","message":"started","fields":{"pid":"1"}}]}"#;
        let (l, v) = roundtrip::<SandboxLogs>(text);
        assert_eq!(l.log_entries[0].level, LogLevel::Warn);
        assert!(LogLevel::Debug < LogLevel::Info && LogLevel::Warn < LogLevel::Error);
        assert_eq!(serde_json::to_value(&l).unwrap(), v);
        let text = r#"{"logs":[{"timestamp":"t","level":"error","message":"m","fields":{}}]}"#;
        let (l, v) = roundtrip::<SandboxLogsV2Response>(text);
        assert_eq!(serde_json::to_value(&l).unwrap(), v);
    }

    #[test]
    fn fork_results_and_snapshots() {
        let text = r#"[{"sandbox":{"templateID":"t","sandboxID":"a","clientID":"c","envdVersion":"0.2.4"}},{"error":{"code":503,"message":"no capacity"}}]"#;
        let (f, v) = roundtrip::<Vec<SandboxForkResult>>(text);
        assert!(f[0].sandbox.is_some() && f[0].error.is_none());
        assert_eq!(f[1].error.as_ref().unwrap().code, 503);
        assert_eq!(serde_json::to_value(&f).unwrap(), v);
        let (s, v) =
            roundtrip::<SnapshotInfo>(r#"{"snapshotID":"s1","names":["team/snap:default"]}"#);
        assert_eq!(s.snapshot_id, "s1");
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
    }

    #[test]
    fn paging_limit() {
        assert_eq!(parse_limit(None), Ok(100));
        assert_eq!(parse_limit(Some("1")), Ok(1));
        assert_eq!(parse_limit(Some("100")), Ok(100));
        for bad in ["0", "101", "-1", "ten", ""] {
            assert_eq!(parse_limit(Some(bad)), Err(QueryError::Limit(bad.into())));
        }
        assert_eq!(QueryError::Limit("0".into()).to_api_error().code, 400);
        let last: Page<u8> = Page {
            items: vec![1],
            next_token: None,
        };
        assert!(last.next_token.is_none());
    }

    #[test]
    fn state_filter_and_order() {
        use SandboxState::*;
        assert_eq!(parse_states(None), Ok(vec![Running, Paused]));
        assert_eq!(parse_states(Some("paused")), Ok(vec![Paused]));
        assert_eq!(
            parse_states(Some("running,paused,running")),
            Ok(vec![Running, Paused])
        );
        assert_eq!(
            parse_states(Some("running,killed")),
            Err(QueryError::State("killed".into()))
        );
        assert_eq!(Order::default(), Order::Desc);
        assert_eq!(
            serde_json::from_str::<Order>(r#""asc""#).unwrap(),
            Order::Asc
        );
    }
}
