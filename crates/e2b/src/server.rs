//! E2B's control plane, served over quantbox's own sandboxes: the routes E2B's SDKs call
//! to create, inspect, list, time out and kill sandboxes, with E2B's bodies, status codes,
//! error shape and `X-API-Key` auth. A thin front end: every route calls the operations
//! layer (`Ops::call`), as REST and MCP do. Mounted by `quantbox serve` on its E2B port,
//! next to envd (see [`crate::router`]). Metrics and logs are in [`observe`].

mod observe;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use quantbox_ops::{ErrorCode, OpError, Ops};
use serde_json::{Value, json};

use crate::model::{
    ApiError, ApiVersion, ConnectSandbox, ConnectSandboxV2, DEFAULT_TIMEOUT_V1_SECS, ListedSandbox,
    NewSandbox, ResumedSandbox, Sandbox, SandboxDetail, SandboxRefreshRequest, SandboxState,
    SandboxTimeoutRequest, parse_limit, parse_states,
};

use crate::envd::{AccessTokens, ENVD_VERSION};

/// Which `X-API-Key` values the control plane accepts.
#[derive(Clone, Debug)]
pub enum ApiKeys {
    /// Exactly these.
    Only(Vec<String>),
    /// Any key of E2B's form (`e2b_` + lowercase hex): a server on loopback with no key
    /// configured, where every local user may use it anyway.
    AnyWellFormed,
}

impl ApiKeys {
    fn accepts(&self, key: &str) -> bool {
        match self {
            ApiKeys::Only(keys) => keys.iter().any(|k| k == key),
            ApiKeys::AnyWellFormed => crate::ids::looks_like_api_key(key),
        }
    }
}

#[derive(Clone)]
struct S {
    ops: Ops,
    keys: Arc<ApiKeys>,
    tokens: Arc<AccessTokens>,
    creates: Arc<std::sync::Mutex<Creates>>,
}

/// Creates by `Idempotency-Key`, kept a day: a retried create (same key, same body) gets
/// the first one's answer instead of a second sandbox.
#[derive(Default)]
struct Creates(std::collections::HashMap<String, Create>);

struct Create {
    at: std::time::Instant,
    body_sha256: [u8; 32],
    /// `None` while it runs.
    answer: Option<(StatusCode, Bytes)>,
}

const IDEMPOTENCY_KEEP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn err(status: u16, message: impl Into<String>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(ApiError::new(status, message))).into_response()
}

/// quantbox's error as E2B's (`{code, message}` with the HTTP status).
fn op_err(e: &OpError) -> Response {
    let status = match e.code {
        ErrorCode::InvalidArgument => 400,
        ErrorCode::Unauthenticated => 401,
        ErrorCode::PermissionDenied => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition => 409,
        ErrorCode::ResourceExhausted => 429,
        ErrorCode::Unavailable => 503,
        ErrorCode::DeadlineExceeded => 504,
        ErrorCode::Internal => 500,
    };
    err(status, e.message.clone())
}

/// E2B's control plane over `ops`; requests must carry a key `api_keys` accepts as
/// `X-API-Key` (`GET /health` excepted). Sandboxes are handed out with their envd access
/// token from `tokens`.
pub fn control_router(ops: Ops, api_keys: ApiKeys, tokens: Arc<AccessTokens>) -> Router {
    let s = S {
        ops,
        keys: Arc::new(api_keys),
        tokens,
        creates: Arc::default(),
    };
    let authed = Router::new()
        .route("/sandboxes", post(create_v1).get(list_v1))
        .route("/v2/sandboxes", post(create_v2).get(list_v2))
        .route("/sandboxes/{id}", get(detail).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/connect", post(connect_v1))
        .route("/v2/sandboxes/{id}/connect", post(connect_v2))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/metrics", get(observe::many_metrics))
        .route("/sandboxes/{id}/metrics", get(observe::sandbox_metrics))
        .route("/sandboxes/{id}/logs", get(observe::logs_v1))
        .route("/v2/sandboxes/{id}/logs", get(observe::logs_v2))
        .layer(axum::middleware::from_fn_with_state(s.clone(), auth))
        .with_state(s);
    Router::new()
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .merge(authed)
        .fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                err(
                    404,
                    format!(
                        "{method} {} is not part of the E2B API quantbox serves (see docs/e2b.md)",
                        uri.path()
                    ),
                )
            },
        )
}

async fn auth(State(s): State<S>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let given = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    match given {
        Some(k) if s.keys.accepts(k) => next.run(req).await,
        Some(_) => err(401, "Invalid API key"),
        None => err(401, "Missing X-API-Key header"),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(err(400, format!("invalid request body: {e}"))))
}

async fn create_v1(State(s): State<S>, headers: HeaderMap, body: Bytes) -> Response {
    idempotent_create(s, &headers, body, ApiVersion::V1).await
}

async fn create_v2(State(s): State<S>, headers: HeaderMap, body: Bytes) -> Response {
    idempotent_create(s, &headers, body, ApiVersion::V2).await
}

fn err_code(status: u16, message: impl Into<String>, error_code: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = ApiError::new(status, message);
    body.error_code = Some(error_code.to_owned());
    (code, axum::Json(body)).into_response()
}

/// A create with an `Idempotency-Key` runs once: the same key with the same body again
/// replays its answer (`Idempotent-Replayed: true`), with another body is a 409
/// `idempotency_request_mismatch`, while the first still runs a 409
/// `idempotency_in_progress`. Only successes are kept: a retry after a refusal runs
/// again.
async fn idempotent_create(s: S, headers: &HeaderMap, body: Bytes, v: ApiVersion) -> Response {
    use sha2::Digest as _;
    let Some(key) = headers.get(crate::model::IDEMPOTENCY_KEY_HEADER) else {
        return create(s, body, v).await;
    };
    let key = key.to_str().unwrap_or("\u{fffd}").to_owned();
    if let Err(e) = crate::ids::validate_idempotency_key(&key) {
        return err(400, format!("Idempotency-Key: {e}"));
    }
    let digest: [u8; 32] = sha2::Sha256::digest(&body).into();
    {
        let mut creates = s.creates.lock().unwrap_or_else(|e| e.into_inner());
        creates.0.retain(|_, c| c.at.elapsed() < IDEMPOTENCY_KEEP);
        if let Some(c) = creates.0.get(&key) {
            if c.body_sha256 != digest {
                return err_code(
                    409,
                    format!("Idempotency-Key {key} was used with another request body"),
                    crate::model::error_codes::IDEMPOTENCY_REQUEST_MISMATCH,
                );
            }
            return match &c.answer {
                None => err_code(
                    409,
                    format!("the create with Idempotency-Key {key} is still running"),
                    crate::model::error_codes::IDEMPOTENCY_IN_PROGRESS,
                ),
                Some((status, bytes)) => {
                    let mut r = (
                        *status,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        bytes.clone(),
                    )
                        .into_response();
                    r.headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                    r
                }
            };
        }
        creates.0.insert(
            key.clone(),
            Create {
                at: std::time::Instant::now(),
                body_sha256: digest,
                answer: None,
            },
        );
    }
    let resp = create(s.clone(), body, v).await;
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    {
        let mut creates = s.creates.lock().unwrap_or_else(|e| e.into_inner());
        // Only a sandbox made is kept: a refusal (a full server's 429, a bad template)
        // may go the other way when retried.
        if !status.is_success() {
            creates.0.remove(&key);
        } else if let Some(c) = creates.0.get_mut(&key) {
            c.answer = Some((status, bytes.clone()));
        }
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

async fn create(s: S, body: Bytes, v: ApiVersion) -> Response {
    let new: NewSandbox = match parse_body(&body) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let timeout = new.timeout_secs(v);
    if timeout <= 0 {
        return err(400, "Timeout must be greater than 0");
    }
    if timeout > 86_400 {
        return err(400, "Timeout cannot be greater than 24 hours");
    }
    let args = json!({
        "name": "e2b",
        "template": new.template_id,
        "timeout": timeout,
        "env_vars": new.env_vars,
        "metadata": new.metadata,
    });
    match s.ops.call("create_e2b_sandbox", args).await {
        Ok(out) => {
            let sandbox_id = out["sandbox_id"].as_str().unwrap_or_default().to_owned();
            (
                StatusCode::CREATED,
                axum::Json(sandbox_body(&s, new.template_id, &sandbox_id)),
            )
                .into_response()
        }
        // An unknown template is E2B's 404.
        Err(e) if e.code == ErrorCode::InvalidArgument && e.message.starts_with("template") => {
            err(404, e.message)
        }
        Err(e) => op_err(&e),
    }
}

/// The `Sandbox` answer of create and connect.
fn sandbox_body(s: &S, template_id: String, sandbox_id: &str) -> Sandbox {
    Sandbox {
        template_id,
        sandbox_id: sandbox_id.to_owned(),
        client_id: sandbox_id.to_owned(),
        envd_version: ENVD_VERSION.into(),
        alias: None,
        envd_access_token: Some(s.tokens.for_sandbox(sandbox_id)),
        traffic_access_token: None,
        domain: None,
    }
}

fn state_of(status: &str) -> Option<SandboxState> {
    match status {
        "running" | "creating" => Some(SandboxState::Running),
        "paused" => Some(SandboxState::Paused),
        _ => None,
    }
}

fn resources(v: &Value) -> (i32, i32) {
    (
        v["resources"]["cpu_count"]
            .as_f64()
            .unwrap_or(1.0)
            .ceil()
            .max(1.0) as i32,
        v["resources"]["memory_mb"].as_i64().unwrap_or(512).max(128) as i32,
    )
}

fn listed(v: &Value) -> Option<ListedSandbox> {
    let state = state_of(v["status"].as_str()?)?;
    let (cpu_count, memory_mb) = resources(v);
    let id = v["sandbox_id"].as_str()?.to_owned();
    let metadata: BTreeMap<String, String> =
        serde_json::from_value(v["metadata"].clone()).unwrap_or_default();
    Some(ListedSandbox {
        template_id: v["template"].as_str()?.to_owned(),
        client_id: id.clone(),
        sandbox_id: id,
        started_at: v["created_at"].as_str()?.to_owned(),
        end_at: v["expires_at"].as_str()?.to_owned(),
        cpu_count,
        memory_mb,
        disk_size_mb: 0,
        state,
        envd_version: ENVD_VERSION.into(),
        alias: None,
        metadata: Some(metadata.into_iter().collect()),
    })
}

async fn detail(State(s): State<S>, Path(id): Path<String>) -> Response {
    match active(&s, &id).await {
        Ok(l) => axum::Json(SandboxDetail {
            template_id: l.template_id,
            sandbox_id: l.sandbox_id,
            client_id: l.client_id,
            started_at: l.started_at,
            end_at: l.end_at,
            cpu_count: l.cpu_count,
            memory_mb: l.memory_mb,
            // The filesystem its writable layer lives on (a sandbox has no quota).
            disk_size_mb: s
                .ops
                .manager()
                .samples()
                .into_iter()
                .find(|x| x.record.id.as_str() == id)
                .and_then(|x| x.sample)
                .map_or(0, |x| (x.usage.disk_total_bytes / (1024 * 1024)) as i32),
            state: l.state,
            envd_version: l.envd_version,
            alias: None,
            envd_access_token: Some(s.tokens.for_sandbox(&id)),
            allow_internet_access: Some(false),
            domain: None,
            metadata: l.metadata,
            network: None,
            lifecycle: None,
            volume_mounts: None,
            envd_unresponsive_at_pause: None,
            pause_mode: None,
        })
        .into_response(),
        Err(r) => *r,
    }
}

async fn kill(State(s): State<S>, Path(id): Path<String>) -> Response {
    // A sandbox that has stopped is gone, as far as E2B is concerned.
    match s
        .ops
        .call(
            "get_e2b_sandbox_status",
            json!({"sandbox_id": id, "log_lines": 0}),
        )
        .await
    {
        Ok(st) if st["status"] == "stopped" => {
            return err(404, format!("sandbox \"{id}\" not found"));
        }
        Ok(_) => {}
        Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::InvalidArgument) => {
            return err(404, format!("sandbox \"{id}\" not found"));
        }
        Err(e) => return op_err(&e),
    }
    match s
        .ops
        .call(
            "terminate_e2b_sandbox",
            json!({"sandbox_id": id, "force": true}),
        )
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => op_err(&e),
    }
}

async fn set_timeout(State(s): State<S>, Path(id): Path<String>, body: Bytes) -> Response {
    let req: SandboxTimeoutRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    if req.timeout <= 0 {
        return err(400, "Timeout must be greater than 0");
    }
    if quantbox_sandbox::SandboxId::parse(&id).is_err() {
        return err(404, format!("sandbox \"{id}\" not found"));
    }
    let input = quantbox_ops::sandboxes::TimeoutInput {
        sandbox_id: id,
        timeout: i64::from(req.timeout),
    };
    match s.ops.set_sandbox_timeout(input).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => op_err(&e),
    }
}

/// E2B's 404 for a sandbox that is not there.
fn not_found(id: &str) -> Response {
    err(
        404,
        format!("sandbox \"{id}\" doesn't exist or you don't have access to it"),
    )
}

/// The active sandbox `id` as listed, or E2B's 404.
async fn active(s: &S, id: &str) -> Result<ListedSandbox, Box<Response>> {
    let list = s
        .ops
        .call("list_e2b_sandboxes", json!({}))
        .await
        .map_err(|e| Box::new(op_err(&e)))?;
    list["sandboxes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["sandbox_id"] == id)
        .and_then(listed)
        .ok_or_else(|| Box::new(not_found(id)))
}

async fn pause(State(s): State<S>, Path(id): Path<String>) -> Response {
    let sb = match active(&s, &id).await {
        Ok(sb) => sb,
        Err(r) => return *r,
    };
    if sb.state == SandboxState::Paused {
        return err(409, format!("sandbox \"{id}\" is already paused"));
    }
    match s.ops.pause_sandbox(&id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => op_err(&e),
    }
}

async fn connect_v1(State(s): State<S>, Path(id): Path<String>, body: Bytes) -> Response {
    match parse_body::<ConnectSandbox>(&body) {
        Ok(c) => connect(s, id, c.timeout).await,
        Err(r) => *r,
    }
}

async fn connect_v2(State(s): State<S>, Path(id): Path<String>, body: Bytes) -> Response {
    // The body is optional: its timeout defaults to 300 s.
    let c = if body.is_empty() {
        Ok(ConnectSandboxV2 {
            timeout: crate::model::DEFAULT_TIMEOUT_V2_SECS,
            memory: None,
        })
    } else {
        parse_body::<ConnectSandboxV2>(&body)
    };
    match c {
        Ok(c) => connect(s, id, c.timeout).await,
        Err(r) => *r,
    }
}

/// Connect: a running sandbox answers 200 (its lifetime extended to at least `timeout`
/// from now, never shortened); a paused one is resumed and answers 201.
async fn connect(s: S, id: String, timeout: i32) -> Response {
    if timeout <= 0 {
        return err(400, "Timeout must be greater than 0");
    }
    let sb = match active(&s, &id).await {
        Ok(sb) => sb,
        Err(r) => return *r,
    };
    let resumed = sb.state == SandboxState::Paused;
    if resumed && let Err(e) = s.ops.resume_sandbox(&id).await {
        return op_err(&e);
    }
    if let Err(r) = extend_lifetime(&s, &sb, timeout, resumed).await {
        return *r;
    }
    let body = sandbox_body(&s, sb.template_id, &sb.sandbox_id);
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

/// Makes sandbox `sb` live at least `timeout` seconds from now; never shortens it.
/// `resumed`: it was paused and has just been resumed.
async fn extend_lifetime(
    s: &S,
    sb: &ListedSandbox,
    timeout: i32,
    resumed: bool,
) -> Result<(), Box<Response>> {
    let left_s = quantbox_sandbox::Timestamp::parse_rfc3339(&sb.end_at)
        .map(|end| end.ms_since(quantbox_sandbox::Timestamp::now()) / 1000)
        .unwrap_or(0);
    // A paused sandbox's clock stood still: after resuming it has what it had left.
    if i64::from(timeout) > left_s || resumed {
        let input = quantbox_ops::sandboxes::TimeoutInput {
            sandbox_id: sb.sandbox_id.clone(),
            timeout: i64::from(timeout).max(left_s.min(86_400)),
        };
        s.ops
            .set_sandbox_timeout(input)
            .await
            .map_err(|e| Box::new(op_err(&e)))?;
    }
    Ok(())
}

/// `POST /sandboxes/{id}/refreshes` (legacy keep-alive): the running sandbox lives at
/// least `duration` seconds more (0 to 3600; below E2B's default of 15 s, and when the
/// body or the field is left out, 15 s); never shortened. As in E2B, only a running
/// sandbox is kept alive: a paused one is not found (connect resumes it).
async fn refresh(State(s): State<S>, Path(id): Path<String>, body: Bytes) -> Response {
    let req = if body.is_empty() {
        SandboxRefreshRequest::default()
    } else {
        match parse_body::<SandboxRefreshRequest>(&body) {
            Ok(r) => r,
            Err(r) => return *r,
        }
    };
    let duration = req.duration.unwrap_or(DEFAULT_TIMEOUT_V1_SECS);
    if !(0..=3600).contains(&duration) {
        return err(
            400,
            format!("duration must be between 0 and 3600 seconds, got {duration}"),
        );
    }
    let sb = match active(&s, &id).await {
        Ok(sb) => sb,
        Err(r) => return *r,
    };
    if sb.state == SandboxState::Paused {
        return err(
            404,
            format!("sandbox \"{id}\" is paused, not running; connect resumes it"),
        );
    }
    match extend_lifetime(&s, &sb, duration.max(DEFAULT_TIMEOUT_V1_SECS), false).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => *r,
    }
}

/// `POST /sandboxes/{id}/resume` (deprecated; connect replaces it): a paused sandbox is
/// resumed as connect does (201 with its `Sandbox`, living at least `timeout` seconds,
/// default 15); a running one is a 409.
async fn resume(State(s): State<S>, Path(id): Path<String>, body: Bytes) -> Response {
    let req: ResumedSandbox = match parse_body(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match active(&s, &id).await {
        Ok(sb) if sb.state == SandboxState::Running => {
            err(409, format!("sandbox \"{id}\" is already running"))
        }
        Ok(_) => connect(s, id, req.timeout).await,
        Err(r) => *r,
    }
}

/// `metadata` filter of the list routes: `key1=value1&key2=value2`, URL-encoded.
fn metadata_filter(q: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    q.get("metadata")
        .map(|m| {
            m.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

async fn list_v1(State(s): State<S>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let args = json!({"status_filter": "running", "metadata": metadata_filter(&q)});
    match s.ops.call("list_e2b_sandboxes", args).await {
        Ok(l) => {
            let v: Vec<ListedSandbox> = l["sandboxes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(listed)
                .collect();
            axum::Json(v).into_response()
        }
        Err(e) => op_err(&e),
    }
}

async fn list_v2(State(s): State<S>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let limit = match parse_limit(q.get("limit").map(String::as_str)) {
        Ok(l) => l as usize,
        Err(e) => {
            let a = e.to_api_error();
            return err(a.code as u16, a.message);
        }
    };
    let states = match parse_states(q.get("state").map(String::as_str)) {
        Ok(s) => s,
        Err(e) => {
            let a = e.to_api_error();
            return err(a.code as u16, a.message);
        }
    };
    let order = match q.get("order").map(String::as_str) {
        None | Some("desc") => crate::model::Order::Desc,
        Some("asc") => crate::model::Order::Asc,
        Some(o) => return err(400, format!("order: `{o}` is not one of asc, desc")),
    };
    let started_after = match q.get("startedAfter") {
        Some(t) => match quantbox_sandbox::Timestamp::parse_rfc3339(t) {
            Some(t) => Some(t),
            None => {
                return err(
                    400,
                    format!("startedAfter: `{t}` is not an RFC 3339 date-time"),
                );
            }
        },
        None => None,
    };
    let template = q.get("template");
    let args = json!({"status_filter": "all", "metadata": metadata_filter(&q)});
    let l = match s.ops.call("list_e2b_sandboxes", args).await {
        Ok(l) => l,
        Err(e) => return op_err(&e),
    };
    let started = |x: &ListedSandbox| {
        quantbox_sandbox::Timestamp::parse_rfc3339(&x.started_at).map_or(0, |t| t.unix_ms())
    };
    let mut all: Vec<ListedSandbox> = l["sandboxes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(listed)
        .filter(|x| states.contains(&x.state))
        .filter(|x| template.is_none_or(|t| &x.template_id == t))
        .filter(|x| started_after.is_none_or(|t| started(x) >= t.unix_ms()))
        .collect();
    // By start time (newest first unless `order=asc`), ties by id: a stable order, so
    // the cursor — the last id of the previous page — always means the same place.
    all.sort_by(|a, b| {
        let by_time = started(a).cmp(&started(b));
        let ord = match order {
            crate::model::Order::Asc => by_time,
            crate::model::Order::Desc => by_time.reverse(),
        };
        ord.then_with(|| a.sandbox_id.cmp(&b.sandbox_id))
    });
    let running = all
        .iter()
        .filter(|x| x.state == SandboxState::Running)
        .count();
    let start = match q.get("nextToken") {
        Some(t) => match all.iter().position(|x| &x.sandbox_id == t) {
            Some(i) => i + 1,
            None => return err(400, format!("invalid nextToken `{t}`")),
        },
        None => 0,
    };
    let page: Vec<ListedSandbox> = all.iter().skip(start).take(limit).cloned().collect();
    let mut resp = axum::Json(&page).into_response();
    let h = resp.headers_mut();
    if start + page.len() < all.len()
        && let Some(last) = page.last()
        && let Ok(v) = HeaderValue::from_str(&last.sandbox_id)
    {
        h.insert("x-next-token", v);
    }
    if let Ok(v) = HeaderValue::from_str(&running.to_string()) {
        h.insert("x-total-running", v);
    }
    resp
}
