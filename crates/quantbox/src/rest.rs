//! REST under `/api/v1`: resource routes for people and scripts, and
//! `POST /api/v1/tools/{name}` taking exactly a tool's MCP arguments. Every handler
//! converts HTTP to one call of [`Ops`] (`Ops::call`, or the operation of a resource
//! route such as `Ops::pause_sandbox`) and the result or `OpError` back; nothing else.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use quantbox_ops::sandboxes::TimeoutInput;
use quantbox_ops::templates::{ExportInput, ImportInput};
use quantbox_ops::{ErrorCode, OpError, Ops, args};
use quantbox_sandbox::CopyProgress;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{BytesCodec, FramedRead};

#[derive(Clone)]
pub struct RestState {
    pub ops: Ops,
}

/// An operation's result or error as an HTTP response.
struct Reply(Result<Value, OpError>, StatusCode);

/// A tool's answer already encoded as JSON text ([`Ops::call_text`]).
struct TextReply(Result<String, OpError>, StatusCode);

impl IntoResponse for TextReply {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(text) => {
                (self.1, [(header::CONTENT_TYPE, "application/json")], text).into_response()
            }
            Err(e) => error_response(&e),
        }
    }
}

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
fn with_id(args: Value, id: &str) -> Result<Value, OpError> {
    with_field(args, "sandbox_id", id)
}

/// Puts a path parameter into the arguments as `field` (a different value in the body is
/// an error).
fn with_field(mut args: Value, field: &str, id: &str) -> Result<Value, OpError> {
    if args.is_null() {
        args = Value::Object(Map::new());
    }
    let Some(obj) = args.as_object_mut() else {
        return Err(OpError::new(
            ErrorCode::InvalidArgument,
            "the request body must be a JSON object",
        ));
    };
    match obj.get(field) {
        Some(Value::String(s)) if s != id => {
            return Err(OpError::invalid(field, "differs from the id in the path"));
        }
        _ => {}
    }
    obj.insert(field.into(), Value::String(id.to_owned()));
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
        let val = match ty {
            QType::Str => Value::String(v),
            // `?metrics=` is an empty list, not a list of one empty name.
            QType::List if v.trim().is_empty() => Value::Array(Vec::new()),
            QType::List => Value::Array(
                v.split(',')
                    .map(|x| Value::String(x.trim().to_owned()))
                    .collect(),
            ),
            QType::Int => {
                Value::from(v.parse::<i64>().map_err(|_| {
                    OpError::invalid(name, format!("must be an integer, got {v:?}"))
                })?)
            }
            QType::Num => v
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| OpError::invalid(name, format!("must be a number, got {v:?}")))?,
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

/// Query parameters of a route that takes no metadata: `metadata.*` is unknown too.
fn query_flags(
    q: BTreeMap<String, String>,
    allowed: &[(&str, QType)],
) -> Result<Map<String, Value>, OpError> {
    let known: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
    if let Some(k) = q
        .keys()
        .find(|k| k.starts_with("metadata.") || known.is_empty())
    {
        return Err(OpError::invalid(
            k,
            if known.is_empty() {
                "unknown query parameter; this route takes none".to_owned()
            } else {
                format!(
                    "unknown query parameter; the known ones are {}",
                    known.join(", ")
                )
            },
        ));
    }
    match query_args(q, allowed)? {
        Value::Object(o) => Ok(o),
        _ => Ok(Map::new()),
    }
}

/// The boolean query parameter `name`, false when absent.
fn flag(q: &Map<String, Value>, name: &str) -> bool {
    q.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn to_json<T: Serialize>(r: Result<T, OpError>) -> Result<Value, OpError> {
    r.and_then(quantbox_ops::to_value)
}

#[derive(Clone, Copy)]
enum QType {
    Str,
    Int,
    Bool,
    /// Comma-separated strings, as an array.
    List,
    /// A JSON number.
    Num,
}

async fn call_tool(
    State(s): State<RestState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> TextReply {
    let r = match parse_body(body) {
        Ok(args) => s.ops.call_text(&name, args).await,
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

async fn create(State(s): State<RestState>, body: Result<Bytes, BytesRejection>) -> TextReply {
    let r = match parse_body(body) {
        Ok(args) => s.ops.call_text("create_e2b_sandbox", args).await,
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::CREATED)
}

async fn list(State(s): State<RestState>, Query(q): Query<BTreeMap<String, String>>) -> TextReply {
    let mut q = q;
    // `status` reads better in a URL; the tool calls it `status_filter`.
    if let Some(v) = q.remove("status") {
        q.insert("status_filter".into(), v);
    }
    let r = match query_args(
        q,
        &[("status_filter", QType::Str), ("deployment_id", QType::Str)],
    ) {
        Ok(args) => s.ops.call_text("list_e2b_sandboxes", args).await,
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

async fn status(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> TextReply {
    let r = match query_args(q, &[("log_lines", QType::Int)]).and_then(|a| with_id(a, &id)) {
        Ok(args) => s.ops.call_text("get_e2b_sandbox_status", args).await,
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

async fn exec(
    State(s): State<RestState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> TextReply {
    let r = match parse_body(body).and_then(|a| with_id(a, &id)) {
        Ok(args) => s.ops.call_text("execute_e2b_process", args).await,
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

async fn terminate(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> TextReply {
    let r = match query_args(q, &[("force", QType::Bool)]).and_then(|a| with_id(a, &id)) {
        Ok(args) => s.ops.call_text("terminate_e2b_sandbox", args).await,
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

/// Least time between two progress lines of a stream.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Runs a copying operation. Without `progress`, the answer is
/// its JSON result (status `ok`) or error. With it, an NDJSON stream:
/// `{"progress": {"bytes", "files"}}` lines (at most one per [`PROGRESS_EVERY`]) and a
/// last `{"result": ...}` or `{"error": ...}` line. The stream starts with the first
/// progress report: an error before it (a bad id or name) is an ordinary error response.
async fn with_progress<F, Fut>(progress: bool, ok: StatusCode, op: F) -> Response
where
    F: FnOnce(CopyProgress) -> Fut,
    Fut: Future<Output = Result<Value, OpError>> + Send + 'static,
{
    let joined = |r: Result<Result<Value, OpError>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Err(OpError::internal(format!("the operation failed: {e}"))))
    };
    if !progress {
        // `detach` already keeps the request's own task alive.
        return Reply(op(Arc::new(|_, _| {})).await, ok).into_response();
    }
    let (tx, mut rx) = tokio::sync::watch::channel((0u64, 0u64));
    let mut task = tokio::spawn(op(Arc::new(move |bytes, files| {
        tx.send_replace((bytes, files));
    })));
    // Until the first report, the outcome may still be a plain error response. A report
    // wins over the end that follows it, so that a stream has it.
    let mut done = tokio::select! {
        biased;
        c = rx.changed() => match c {
            Ok(()) => None,
            Err(_) => Some(joined((&mut task).await)),
        },
        r = &mut task => Some(joined(r)),
    };
    if let Some(Err(e)) = &done {
        return error_response(e);
    }
    let (mut w, r) = tokio::io::duplex(16 << 10);
    tokio::spawn(async move {
        let line = |v: Value| {
            let mut l = v.to_string();
            l.push('\n');
            l
        };
        let mut reported = None;
        let mut next = tokio::time::Instant::now();
        let end = loop {
            if let Some(r) = done.take() {
                break r;
            }
            let now = *rx.borrow_and_update();
            if reported != Some(now) {
                reported = Some(now);
                let l = line(json!({"progress": {"bytes": now.0, "files": now.1}}));
                if w.write_all(l.as_bytes()).await.is_err() {
                    return; // the client went away; the task finishes on its own
                }
                next = tokio::time::Instant::now() + PROGRESS_EVERY;
            }
            tokio::select! {
                r = &mut task => done = Some(joined(r)),
                c = async {
                    tokio::time::sleep_until(next).await;
                    rx.changed().await
                } => {
                    if c.is_err() {
                        done = Some(joined((&mut task).await));
                    }
                }
            }
        };
        let last = match end {
            Ok(v) => json!({ "result": v }),
            Err(e) => e.to_json(),
        };
        let _ = w.write_all(line(last).as_bytes()).await;
        let _ = w.shutdown().await;
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(FramedRead::new(r, BytesCodec::new())),
    )
        .into_response()
}

async fn pause(State(s): State<RestState>, Path(id): Path<String>) -> Reply {
    Reply(to_json(s.ops.pause_sandbox(&id).await), StatusCode::OK)
}

async fn resume(State(s): State<RestState>, Path(id): Path<String>) -> Reply {
    Reply(to_json(s.ops.resume_sandbox(&id).await), StatusCode::OK)
}

async fn set_timeout(
    State(s): State<RestState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let r = match parse_body(body)
        .and_then(|a| with_id(a, &id))
        .and_then(args::parse::<TimeoutInput>)
    {
        Ok(input) => to_json(s.ops.set_sandbox_timeout(input).await),
        Err(e) => Err(e),
    };
    Reply(r, StatusCode::OK)
}

async fn export(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = query_flags(q, &[("progress", QType::Bool)]).and_then(|q| {
        let input = parse_body(body)
            .and_then(|a| with_id(a, &id))
            .and_then(args::parse::<ExportInput>)?;
        Ok((flag(&q, "progress"), input))
    });
    let (progress, input) = match parsed {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let ops = s.ops.clone();
    with_progress(progress, StatusCode::OK, move |p| async move {
        to_json(ops.export_with_progress(input, p).await)
    })
    .await
}

async fn list_templates(
    State(s): State<RestState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let r = query_flags(q, &[]).and_then(|_| s.ops.list_templates());
    Reply(r, StatusCode::OK)
}

async fn import_template(
    State(s): State<RestState>,
    Query(q): Query<BTreeMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = query_flags(q, &[("progress", QType::Bool)]).and_then(|q| {
        let input = parse_body(body).and_then(args::parse::<ImportInput>)?;
        Ok((flag(&q, "progress"), input))
    });
    let (progress, input) = match parsed {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let ops = s.ops.clone();
    with_progress(progress, StatusCode::CREATED, move |p| async move {
        ops.import_template(input, p).await
    })
    .await
}

async fn delete_template(State(s): State<RestState>, Path(name): Path<String>) -> Reply {
    Reply(s.ops.delete_template(&name).await, StatusCode::OK)
}

async fn list_deployments(
    State(s): State<RestState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let r = query_flags(q, &[("include_deleted", QType::Bool)])
        .and_then(|q| s.ops.list_deployments(flag(&q, "include_deleted")));
    Reply(r, StatusCode::OK)
}

async fn deploy(State(s): State<RestState>, body: Result<Bytes, BytesRejection>) -> TextReply {
    let r = match parse_body(body) {
        Ok(args) => s.ops.call_text("deploy_e2b_template", args).await,
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::CREATED)
}

/// Events of a deployment shown when the query does not say.
const DEFAULT_EVENTS: i64 = 100;

async fn get_deployment(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Reply {
    let r = query_flags(q, &[("events", QType::Int)]).and_then(|q| {
        let n = q.get("events").and_then(Value::as_i64);
        s.ops.get_deployment(&id, n.unwrap_or(DEFAULT_EVENTS))
    });
    Reply(r, StatusCode::OK)
}

async fn scale(
    State(s): State<RestState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> TextReply {
    let r = match parse_body(body).and_then(|a| with_field(a, "deployment_id", &id)) {
        Ok(args) => s.ops.call_text("scale_e2b_deployment", args).await,
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

async fn delete_deployment(State(s): State<RestState>, Path(id): Path<String>) -> Reply {
    Reply(s.ops.delete_deployment(&id).await, StatusCode::OK)
}

async fn fleet_health(
    State(s): State<RestState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> TextReply {
    // `all` for people, `include_all_sandboxes` as the tool calls it.
    let allowed = [("all", QType::Bool), ("include_all_sandboxes", QType::Bool)];
    let r = match query_flags(q, &allowed) {
        Ok(q) => {
            let all = flag(&q, "all") || flag(&q, "include_all_sandboxes");
            s.ops
                .call_text("monitor_e2b_health", json!({"include_all_sandboxes": all}))
                .await
        }
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

/// `get_system_metrics` with its arguments as query parameters
/// (`?metrics=cpu,memory&time_range_minutes=60&include_history=true`).
async fn system_metrics(
    State(s): State<RestState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> TextReply {
    let allowed = [
        ("metrics", QType::List),
        ("time_range_minutes", QType::Int),
        ("include_history", QType::Bool),
    ];
    let r = match query_flags(q, &allowed) {
        Ok(args) => {
            s.ops
                .call_text("get_system_metrics", Value::Object(args))
                .await
        }
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

/// `POST /api/v1/import/{kind}` with the file as the body: `?strategy=`, `?symbol=`,
/// `?file=` (its name, for messages) and `?map=ours=theirs,ours2=theirs2` (the user's
/// column names).
async fn import_file(
    State(s): State<RestState>,
    Path(kind): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let r = async {
        let kind = quantbox_ops::imports::ImportKind::parse(&kind).ok_or_else(|| {
            OpError::not_found(format!(
                "nothing to import as `{kind}`; the kinds are returns, orders, fills, trades, prices"
            ))
        })?;
        let mut req = quantbox_ops::imports::ImportRequest::default();
        for (k, v) in q {
            match k.as_str() {
                "strategy" => req.strategy = Some(v),
                "symbol" => req.symbol = Some(v),
                "file" => req.file = Some(v),
                "map" => {
                    for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
                        let (ours, theirs) = pair.split_once('=').ok_or_else(|| {
                            OpError::invalid(
                                "map",
                                format!("`{pair}` is not OURS=THEIRS (e.g. order_id=OrderRef)"),
                            )
                        })?;
                        req.mapping
                            .push((ours.trim().to_owned(), theirs.trim().to_owned()));
                    }
                }
                _ => {
                    return Err(OpError::invalid(
                        &k,
                        "unknown query parameter; the known ones are strategy, symbol, file, map",
                    ));
                }
            }
        }
        let body = body.map_err(|e| OpError::invalid("body", e.body_text()))?;
        req.text = String::from_utf8(body.to_vec()).map_err(|e| {
            OpError::invalid(
                "body",
                format!("the file is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            )
        })?;
        let out = s.ops.import(kind, req).await?;
        quantbox_ops::to_value(out)
    }
    .await;
    Reply(r, StatusCode::OK)
}

async fn strategies(State(s): State<RestState>) -> Reply {
    let r = s
        .ops
        .strategies()
        .await
        .and_then(|v| Ok(json!({"strategies": quantbox_ops::to_value(v)?})));
    Reply(r, StatusCode::OK)
}

async fn symbols(State(s): State<RestState>) -> Reply {
    let r = s
        .ops
        .symbols()
        .await
        .and_then(|v| Ok(json!({"symbols": quantbox_ops::to_value(v)?})));
    Reply(r, StatusCode::OK)
}

const REPORT_QUERY: [(&str, QType); 6] = [
    ("period_days", QType::Int),
    ("include_benchmark", QType::Bool),
    ("use_gpu", QType::Bool),
    ("benchmark", QType::Str),
    ("risk_free_rate", QType::Num),
    ("periods_per_year", QType::Num),
];

/// `performance_report` of the strategy in the path, arguments as query parameters.
async fn strategy_report(
    State(s): State<RestState>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> TextReply {
    let r = match query_flags(q, &REPORT_QUERY) {
        Ok(mut args) => {
            args.insert("strategy".into(), Value::String(name));
            s.ops
                .call_text("performance_report", Value::Object(args))
                .await
        }
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

/// The HTML tearsheet of the strategy in the path (the report's query parameters).
async fn strategy_tearsheet(
    State(s): State<RestState>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let r = async {
        let mut args = query_flags(q, &REPORT_QUERY)?;
        args.insert("strategy".into(), Value::String(name));
        let input = args::parse(Value::Object(args))?;
        let rws = s.ops.report_with_series(input).await?;
        crate::tearsheet::from_report(&rws, &quantbox_sandbox::Timestamp::now().to_rfc3339())
            .map_err(|e| OpError::new(ErrorCode::FailedPrecondition, format!("no tearsheet: {e}")))
    }
    .await;
    match r {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn strategy_health(State(s): State<RestState>, Path(name): Path<String>) -> TextReply {
    TextReply(
        s.ops
            .call_text("monitor_strategy_health", json!({"strategy": name}))
            .await,
        StatusCode::OK,
    )
}

async fn execution_analytics(
    State(s): State<RestState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> TextReply {
    let allowed = [("time_period", QType::Str), ("strategy", QType::Str)];
    let r = match query_flags(q, &allowed) {
        Ok(args) => {
            s.ops
                .call_text("get_execution_analytics", Value::Object(args))
                .await
        }
        Err(e) => Err(e),
    };
    TextReply(r, StatusCode::OK)
}

/// `POST /api/v1/agents/runs`: `run_e2b_agent`'s arguments; starts the run in the
/// background and answers at once (202) with its id.
async fn start_agent(State(s): State<RestState>, body: Result<Bytes, BytesRejection>) -> Reply {
    let r = async {
        let args = parse_body(body)?;
        let input = args::parse(args)?;
        quantbox_ops::to_value(s.ops.start_agent(input).await?)
    }
    .await;
    Reply(r, StatusCode::ACCEPTED)
}

async fn agent_runs(State(s): State<RestState>) -> Reply {
    Reply(
        quantbox_ops::to_value(s.ops.agent_runs()).map(|v| json!({ "runs": v })),
        StatusCode::OK,
    )
}

async fn agent_run(State(s): State<RestState>, Path(id): Path<String>) -> Reply {
    Reply(
        s.ops.agent_run(&id).and_then(quantbox_ops::to_value),
        StatusCode::OK,
    )
}

async fn stop_agent(State(s): State<RestState>, Path(id): Path<String>) -> Reply {
    let r = async { quantbox_ops::to_value(s.ops.stop_agent(&id).await?) }.await;
    Reply(r, StatusCode::OK)
}

/// Prometheus text exposition.
async fn prometheus(State(s): State<RestState>) -> Response {
    match s.ops.monitor_handle() {
        Some(m) => {
            let m = m.clone();
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                m.render_prometheus(),
            )
                .into_response()
        }
        None => error_response(&OpError::new(
            ErrorCode::Unavailable,
            "the metrics collector is not running in this process",
        )),
    }
}

/// `router` with every request timed into the monitor's latency histogram (when this
/// process runs a monitor).
pub fn timed(router: Router, ops: &Ops) -> Router {
    match ops.monitor_handle().cloned() {
        Some(m) => router.layer(axum::middleware::from_fn(move |req, next| {
            track_latency(m.clone(), req, next)
        })),
        None => router,
    }
}

/// Times every request into `quantbox_http_request_duration_seconds`, labelled by the
/// matched route (never the raw path: ids would make a series each).
pub async fn track_latency(
    monitor: quantbox_monitor::Monitor,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    monitor.http_latency().observe(
        &[&method, &route, resp.status().as_str()],
        started.elapsed().as_secs_f64(),
    );
    resp
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
        .route("/api/v1/sandboxes/{id}/pause", post(pause))
        .route("/api/v1/sandboxes/{id}/resume", post(resume))
        .route("/api/v1/sandboxes/{id}/timeout", post(set_timeout))
        .route("/api/v1/sandboxes/{id}/export", post(export))
        .route(
            "/api/v1/templates",
            get(list_templates).post(import_template),
        )
        .route("/api/v1/templates/{name}", delete(delete_template))
        .route("/api/v1/deployments", get(list_deployments).post(deploy))
        .route(
            "/api/v1/deployments/{id}",
            get(get_deployment).delete(delete_deployment),
        )
        .route("/api/v1/deployments/{id}/scale", post(scale))
        .route("/api/v1/fleet/health", get(fleet_health))
        .route("/api/v1/metrics", get(system_metrics))
        .route("/api/v1/import/{kind}", post(import_file))
        .route("/api/v1/strategies", get(strategies))
        .route("/api/v1/strategies/{name}/report", get(strategy_report))
        .route(
            "/api/v1/strategies/{name}/tearsheet",
            get(strategy_tearsheet),
        )
        .route("/api/v1/strategies/{name}/health", get(strategy_health))
        .route("/api/v1/analytics/execution", get(execution_analytics))
        .route("/api/v1/market/symbols", get(symbols))
        .route("/api/v1/agents/runs", post(start_agent).get(agent_runs))
        .route(
            "/api/v1/agents/runs/{id}",
            get(agent_run).delete(stop_agent),
        )
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(detach))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Runs each request's handler in a task of its own: a client that disconnects (or times
/// out) does not cancel a pause, a deletion or a scale halfway; the operation completes
/// and its answer is dropped.
async fn detach(req: Request, next: Next) -> Response {
    tokio::spawn(next.run(req))
        .await
        .unwrap_or_else(|e| error_response(&OpError::internal(format!("the request failed: {e}"))))
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
        assert_eq!(
            with_field(json!({"instance_count": 2}), "deployment_id", "d").unwrap(),
            json!({"instance_count": 2, "deployment_id": "d"})
        );
        let e = with_field(json!({"deployment_id": "e"}), "deployment_id", "d").unwrap_err();
        assert_eq!(e.message, "deployment_id: differs from the id in the path");
    }

    #[test]
    fn routes_without_metadata_refuse_metadata_queries() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let allowed = [("events", QType::Int)];
        let e = query_flags(q(&[("metadata.a", "b")]), &allowed).unwrap_err();
        assert!(e.message.starts_with("metadata.a: unknown query parameter"));
        let e = query_flags(q(&[("events", "ten")]), &allowed).unwrap_err();
        assert_eq!(e.message, "events: must be an integer, got \"ten\"");
        let ok = query_flags(q(&[("events", "5")]), &allowed).unwrap();
        assert_eq!(ok.get("events"), Some(&json!(5)));
        let e = query_flags(q(&[("x", "1")]), &[]).unwrap_err();
        assert_eq!(
            e.message,
            "x: unknown query parameter; this route takes none"
        );
    }

    #[test]
    fn keys_compare_in_constant_time_and_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
