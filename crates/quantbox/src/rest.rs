//! REST under `/api/v1`: resource routes for people and scripts, and
//! `POST /api/v1/tools/{name}` taking exactly a tool's MCP arguments. Every handler
//! converts HTTP to an [`Ops::call`] and the result or `OpError` back; nothing else.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quantbox_ops::{ErrorCode, OpError, Ops};
use serde_json::{Map, Value, json};

#[derive(Clone)]
pub struct RestState {
    pub ops: Ops,
}

/// An operation's result or error as an HTTP response.
struct Reply(Result<Value, OpError>, StatusCode);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(v) => (self.1, Json(v)).into_response(),
            Err(e) => error_response(&e),
        }
    }
}

pub fn error_response(e: &OpError) -> Response {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.to_json())).into_response()
}

/// Largest request body: 16 MiB of stdin, JSON-escaped, and the rest of the arguments.
pub const MAX_BODY_BYTES: usize = 40 << 20;

fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<Value, OpError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OpError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "the request body is larger than {} MiB",
                    MAX_BODY_BYTES >> 20
                ),
            )
        } else {
            OpError::new(
                ErrorCode::InvalidArgument,
                format!("the request body could not be read: {e}"),
            )
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| {
        OpError::new(
            ErrorCode::InvalidArgument,
            format!("the request body is not valid JSON: {e}"),
        )
    })
}

/// Puts the path's sandbox id into the arguments (a different id in the body is an error).
fn with_id(mut args: Value, id: &str) -> Result<Value, OpError> {
    if args.is_null() {
        args = Value::Object(Map::new());
    }
    let Some(obj) = args.as_object_mut() else {
        return Err(OpError::new(
            ErrorCode::InvalidArgument,
            "the request body must be a JSON object",
        ));
    };
    match obj.get("sandbox_id") {
        Some(Value::String(s)) if s != id => {
            return Err(OpError::invalid(
                "sandbox_id",
                "differs from the id in the path",
            ));
        }
        _ => {}
    }
    obj.insert("sandbox_id".into(), Value::String(id.to_owned()));
    Ok(args)
}

/// Query parameters arrive as strings: convert those of known types, strictly.
fn query_args(q: BTreeMap<String, String>, allowed: &[(&str, QType)]) -> Result<Value, OpError> {
    let mut obj = Map::new();
    let mut metadata = Map::new();
    for (k, v) in q {
        if let Some(key) = k.strip_prefix("metadata.") {
            metadata.insert(key.to_owned(), Value::String(v));
            continue;
        }
        let Some((name, ty)) = allowed.iter().find(|(n, _)| *n == k) else {
            let known: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            return Err(OpError::invalid(
                &k,
                format!(
                    "unknown query parameter; the known ones are {}",
                    known.join(", ")
                ),
            ));
        };
        let val =
            match ty {
                QType::Str => Value::String(v),
                QType::Int => Value::from(v.parse::<i64>().map_err(|_| {
                    OpError::invalid(name, format!("must be an integer, got {v:?}"))
                })?),
                QType::Bool => match v.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => {
                        return Err(OpError::invalid(
                            name,
                            format!("must be true or false, got {v:?}"),
                        ));
                    }
                },
            };
        obj.insert((*name).to_owned(), val);
    }
    if !metadata.is_empty() {
        obj.insert("metadata".into(), Value::Object(metadata));
    }
    Ok(Value::Object(obj))
}

#[derive(Clone, Copy)]
enum QType {
    Str,
    Int,
    Bool,
}

async fn call_tool(
    State(s): State<RestState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let r = match parse_body(body) {
        Ok(args) => s.ops.call(&name, args).await,
        Err(e) => Err(e),
    };
    Reply(r, StatusCode::OK)
}

async fn create(State(s): State<RestState>, body: Result<Bytes, BytesRejection>) -> Reply {
    let r = match parse_body(body) {
        Ok(args) => s.ops.call("create_e2b_sandbox", args).await,
        Err(e) => Err(e),
    };
    Reply(r, StatusCode::CREATED)
}

async fn list(State(s): State<RestState>, Query(q): Query<BTreeMap<String, String>>) -> Reply {
    let mut q = q;
    // `status` reads better in a URL; the tool calls it `status_filter`.
    if let Some(v) = q.remove("status") {
        q.insert("status_filter".into(), v);
    }
    let r = match query_args(
        q,
        &[("status_filter", QType::Str), ("deployment_id", QType::Str)],
    ) {
        Ok(args) => s.ops.call("list_e2b_sandboxes", args).await,
        Err(e) => Err(e),
    };
    Reply(r, StatusCode::OK)
}

async fn status(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let r = match query_args(q, &[("log_lines", QType::Int)]).and_then(|a| with_id(a, &id)) {
        Ok(args) => s.ops.call("get_e2b_sandbox_status", args).await,
        Err(e) => Err(e),
    };
    Reply(r, StatusCode::OK)
}

async fn exec(
    State(s): State<RestState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let r = match parse_body(body).and_then(|a| with_id(a, &id)) {
        Ok(args) => s.ops.call("execute_e2b_process", args).await,
        Err(e) => Err(e),
    };
    Reply(r, StatusCode::OK)
}

async fn terminate(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let r = match query_args(q, &[("force", QType::Bool)]).and_then(|a| with_id(a, &id)) {
        Ok(args) => s.ops.call("terminate_e2b_sandbox", args).await,
        Err(e) => Err(e),
    };
    Reply(r, StatusCode::OK)
}

async fn tools() -> Json<Value> {
    Json(json!({ "tools": quantbox_ops::tools() }))
}

async fn health(State(s): State<RestState>) -> Json<Value> {
    let providers: Vec<Value> = s
        .ops
        .manager()
        .providers()
        .map(|p| serde_json::to_value(p.info()).unwrap_or(Value::Null))
        .collect();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "sandboxes_active": s.ops.manager().active_count(),
        "providers": providers,
    }))
}

async fn method_not_allowed() -> Response {
    error_response(&OpError::new(
        ErrorCode::InvalidArgument,
        "this route does not take that HTTP method (GET /api/v1/tools lists the tools and their routes)",
    ))
}

async fn not_found() -> Response {
    error_response(&OpError::not_found(
        "no such route; the API is under /api/v1 (GET /api/v1/tools lists the tools)",
    ))
}

pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/tools", get(tools))
        .route("/api/v1/tools/{name}", post(call_tool))
        .route("/api/v1/sandboxes", post(create).get(list))
        .route("/api/v1/sandboxes/{id}", get(status).delete(terminate))
        .route("/api/v1/sandboxes/{id}/exec", post(exec))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Requires the API key (as `Authorization: Bearer KEY` or `X-API-Key: KEY`) when one is
/// configured.
pub async fn require_key(
    key: std::sync::Arc<Option<String>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = key.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/api/v1/health" {
        return next.run(req).await;
    }
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), expected.as_bytes()) => next.run(req).await,
        Some(_) => error_response(&OpError::new(
            ErrorCode::Unauthenticated,
            "the API key is wrong",
        )),
        None => error_response(&OpError::new(
            ErrorCode::Unauthenticated,
            "an API key is required: send `Authorization: Bearer <QUANTBOX_API_KEY>` or `X-API-Key`",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_converted_strictly() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let allowed = [("force", QType::Bool), ("log_lines", QType::Int)];
        assert_eq!(
            query_args(q(&[("force", "true")]), &allowed).unwrap(),
            json!({"force": true})
        );
        let e = query_args(q(&[("force", "yes")]), &allowed).unwrap_err();
        assert_eq!(e.message, "force: must be true or false, got \"yes\"");
        let e = query_args(q(&[("log_lines", "ten")]), &allowed).unwrap_err();
        assert_eq!(e.message, "log_lines: must be an integer, got \"ten\"");
        let e = query_args(q(&[("loglines", "1")]), &allowed).unwrap_err();
        assert!(e.message.starts_with("loglines: unknown query parameter"));
        assert_eq!(
            query_args(q(&[("metadata.team", "a")]), &allowed).unwrap(),
            json!({"metadata": {"team": "a"}})
        );
    }

    #[test]
    fn path_ids_win_only_when_the_body_agrees() {
        assert_eq!(
            with_id(Value::Null, "x").unwrap(),
            json!({"sandbox_id": "x"})
        );
        assert!(with_id(json!({"sandbox_id": "y"}), "x").is_err());
        assert!(with_id(json!([1]), "x").is_err());
    }

    #[test]
    fn keys_compare_in_constant_time_and_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
