//! What E2B's control plane tells about a sandbox's work: its metrics (one sandbox's
//! history, the latest of many) and its logs (v1 and v2), from quantbox's own readings.
//!
//! - Metrics come from the manager's sampler, which reads each active sandbox's cgroup
//!   once a second and keeps one reading per five seconds for the last hour
//!   (`Manager::usage_history`). The history goes with the sandbox: a stopped sandbox
//!   answers an empty list. No operation hands these out in bytes, so the routes read the
//!   manager (`Ops::manager`).
//! - Logs are the sandbox's stored output lines and lifecycle events (the last 1000, as
//!   `get_e2b_sandbox_status` returns them), kept after the sandbox stops. quantbox has
//!   no log levels; a line's level is its stream's: `event` (the sandbox's own lifecycle
//!   events) and `stdout` are `info`, `stderr` is `error`. Each entry's `fields` hold
//!   `stream` (`stdout`, `stderr` or `event`) and `sandboxID`.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use quantbox_ops::{ErrorCode, OpError};
use quantbox_sandbox::{ManagerError, Resources, SandboxId, Timestamp, UsagePoint};
use serde_json::json;

use super::{S, err, not_found, op_err};
use crate::model::{
    LogLevel, SandboxLog, SandboxLogEntry, SandboxLogs, SandboxLogsV2Response, SandboxMetric,
    SandboxesWithMetrics,
};

/// Most ids `GET /sandboxes/metrics` takes at once.
pub const MAX_METRICS_IDS: usize = 100;
/// Most log entries one answer holds, and the default.
pub const MAX_LOG_LIMIT: i64 = 1000;
/// Longest `search` of the v2 logs, in characters.
pub const MAX_SEARCH_CHARS: usize = 256;

type Q = Query<BTreeMap<String, String>>;

/// An optional integer query parameter within `min..=max`, or the 400 that names it.
fn int_param(
    q: &BTreeMap<String, String>,
    name: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, Box<Response>> {
    let Some(v) = q.get(name) else {
        return Ok(None);
    };
    match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ if max == i64::MAX => Err(Box::new(err(
            400,
            format!("{name} must be an integer of at least {min}, got {v:?}"),
        ))),
        _ => Err(Box::new(err(
            400,
            format!("{name} must be an integer between {min} and {max}, got {v:?}"),
        ))),
    }
}

/// One reading as E2B's `SandboxMetric`.
///
/// - `cpuCount` is the sandbox's CPU quota rounded up (as the sandbox's details say);
///   `cpuUsedPct` is the CPU time used as percent of the quota itself (100 = all of it:
///   a 2-core sandbox with one core busy is at 50, a 0.5-core one using half a core at
///   100). It is measured, not clamped: timing jitter can put a saturated sandbox a few
///   points above 100.
/// - `memUsed` is the cgroup's memory in use, page cache that can be dropped excluded;
///   `memTotal` is the cgroup's memory limit (the configured one if the cgroup reports
///   none).
/// - `memCache` is 0: quantbox does not read a sandbox's page cache, so it is unknown.
/// - `diskUsed` is what the sandbox's writable layer holds; `diskTotal` the size of the
///   filesystem that layer lives on (a sandbox has no disk quota of its own: this is what
///   `df /` shows inside it), 0 before the first reading.
fn metric(res: &Resources, p: &UsagePoint) -> SandboxMetric {
    let configured = res.memory_mb.saturating_mul(1024 * 1024);
    let limit = if p.memory_limit_bytes == u64::MAX {
        configured
    } else {
        p.memory_limit_bytes
    };
    let quota = if res.cpu_count > 0.0 {
        res.cpu_count
    } else {
        1.0
    };
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    SandboxMetric {
        timestamp: p.at.to_rfc3339(),
        timestamp_unix: p.at.unix_ms().div_euclid(1000),
        cpu_count: res.cpu_count.ceil().max(1.0) as i32,
        cpu_used_pct: (p.cpu_percent / quota * 100.0).round() / 100.0,
        mem_used: i(p.memory_bytes),
        mem_total: i(limit),
        mem_cache: 0,
        disk_used: i(p.disk_bytes),
        disk_total: i(p.disk_total_bytes),
    }
}

/// `GET /sandboxes/{id}/metrics?start=&end=`: the sandbox's readings, one per five
/// seconds over the last hour, oldest first, those with `start <= timestampUnix <= end`
/// (unix seconds, both optional).
pub(super) async fn sandbox_metrics(
    State(s): State<S>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    let (start, end) = match (
        int_param(&q, "start", 0, i64::MAX),
        int_param(&q, "end", 0, i64::MAX),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    if let (Some(a), Some(b)) = (start, end)
        && a > b
    {
        return err(400, format!("start ({a}) must not be after end ({b})"));
    }
    let Ok(sid) = SandboxId::parse(&id) else {
        return not_found(&id);
    };
    let m = s.ops.manager();
    let read = || Ok::<_, ManagerError>((m.get(&sid)?, m.usage_history(&sid)?));
    let (record, points) = match read() {
        Ok(x) => x,
        Err(ManagerError::NotFound(_)) => return not_found(&id),
        Err(e) => return op_err(&OpError::from(e)),
    };
    let out: Vec<SandboxMetric> = points
        .iter()
        .map(|p| metric(&record.resources, p))
        .filter(|x| start.is_none_or(|a| x.timestamp_unix >= a))
        .filter(|x| end.is_none_or(|b| x.timestamp_unix <= b))
        .collect();
    axum::Json(out).into_response()
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: the latest reading of each active sandbox
/// named (at most 100, each once; CPU over the sampler's last second); ids of no active
/// sandbox, or of one not yet read, are left out.
pub(super) async fn many_metrics(State(s): State<S>, Query(q): Q) -> Response {
    let Some(given) = q.get("sandbox_ids") else {
        return err(
            400,
            "sandbox_ids is required: a comma-separated list of sandbox ids",
        );
    };
    let mut ids = BTreeSet::new();
    for id in given.split(',') {
        if id.is_empty() {
            return err(400, format!("sandbox_ids has an empty id: {given:?}"));
        }
        if !ids.insert(id) {
            return err(
                400,
                format!("sandbox_ids must be unique; {id:?} is repeated"),
            );
        }
    }
    if ids.len() > MAX_METRICS_IDS {
        return err(
            400,
            format!(
                "sandbox_ids may name at most {MAX_METRICS_IDS} sandboxes, got {}",
                ids.len()
            ),
        );
    }
    let mut out = SandboxesWithMetrics::default();
    for sample in s.ops.manager().samples() {
        let id = sample.record.id.as_str();
        if !ids.contains(id) {
            continue;
        }
        if let Some(u) = &sample.sample {
            let p = UsagePoint {
                at: u.sampled_at,
                cpu_percent: u.cpu_percent,
                memory_bytes: u.usage.memory_bytes,
                memory_limit_bytes: u.usage.memory_limit_bytes,
                disk_bytes: u.usage.disk_bytes,
                disk_total_bytes: u.usage.disk_total_bytes,
            };
            out.sandboxes
                .insert(id.to_owned(), metric(&sample.record.resources, &p));
        }
    }
    axum::Json(out).into_response()
}

/// One stored line: unix ms and the entry.
struct Line {
    ms: i64,
    entry: SandboxLogEntry,
}

/// quantbox's stream as E2B's level.
fn level_of(stream: &str) -> LogLevel {
    match stream {
        "stderr" => LogLevel::Error,
        _ => LogLevel::Info,
    }
}

/// Every stored line of sandbox `id`, oldest first, or E2B's 404 when it never existed.
async fn stored_lines(s: &S, id: &str) -> Result<Vec<Line>, Box<Response>> {
    let st = s
        .ops
        .call(
            "get_e2b_sandbox_status",
            json!({"sandbox_id": id, "log_lines": MAX_LOG_LIMIT}),
        )
        .await
        .map_err(|e| {
            Box::new(match e.code {
                // A malformed id names no sandbox either.
                ErrorCode::NotFound | ErrorCode::InvalidArgument => not_found(id),
                _ => op_err(&e),
            })
        })?;
    let lines = st["recent_logs"].as_array().cloned().unwrap_or_default();
    Ok(lines
        .iter()
        .filter_map(|l| {
            let timestamp = l["timestamp"].as_str()?;
            let stream = l["stream"].as_str()?;
            Some(Line {
                ms: Timestamp::parse_rfc3339(timestamp)?.unix_ms(),
                entry: SandboxLogEntry {
                    timestamp: timestamp.to_owned(),
                    level: level_of(stream),
                    message: l["line"].as_str()?.to_owned(),
                    fields: [
                        ("stream".to_owned(), stream.to_owned()),
                        ("sandboxID".to_owned(), id.to_owned()),
                    ]
                    .into(),
                },
            })
        })
        .collect())
}

/// `GET /sandboxes/{id}/logs?start=&limit=` (deprecated): the lines from `start` (unix
/// ms) on, oldest first, at most `limit` (1 to 1000, default 1000).
pub(super) async fn logs_v1(State(s): State<S>, Path(id): Path<String>, Query(q): Q) -> Response {
    let (start, limit) = match (
        int_param(&q, "start", 0, i64::MAX),
        int_param(&q, "limit", 1, MAX_LOG_LIMIT),
    ) {
        (Ok(a), Ok(b)) => (a.unwrap_or(0), b.unwrap_or(MAX_LOG_LIMIT) as usize),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let lines = match stored_lines(&s, &id).await {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let mut out = SandboxLogs::default();
    for l in lines.into_iter().filter(|l| l.ms >= start).take(limit) {
        out.logs.push(SandboxLog {
            timestamp: l.entry.timestamp.clone(),
            line: l.entry.message.clone(),
        });
        out.log_entries.push(l.entry);
    }
    axum::Json(out).into_response()
}

/// `GET /v2/sandboxes/{id}/logs?cursor=&limit=&direction=&level=&search=`: at most
/// `limit` (1 to 1000, default 1000) entries of at least `level` whose message contains
/// `search` (case-sensitive, at most 256 characters). `direction=forward` (the default)
/// reads from `cursor` (unix ms, inclusive; default the first line) on, oldest first;
/// `backward` reads from `cursor` (default now) back, newest first.
pub(super) async fn logs_v2(State(s): State<S>, Path(id): Path<String>, Query(q): Q) -> Response {
    let (cursor, limit) = match (
        int_param(&q, "cursor", 0, i64::MAX),
        int_param(&q, "limit", 1, MAX_LOG_LIMIT),
    ) {
        (Ok(a), Ok(b)) => (a, b.unwrap_or(MAX_LOG_LIMIT) as usize),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let backward = match q.get("direction").map(String::as_str) {
        None | Some("forward") => false,
        Some("backward") => true,
        Some(other) => {
            return err(
                400,
                format!("direction must be forward or backward, got {other:?}"),
            );
        }
    };
    let min_level = match q.get("level").map(String::as_str) {
        None => LogLevel::Debug,
        Some("debug") => LogLevel::Debug,
        Some("info") => LogLevel::Info,
        Some("warn") => LogLevel::Warn,
        Some("error") => LogLevel::Error,
        Some(other) => {
            return err(
                400,
                format!("level must be one of debug, info, warn, error; got {other:?}"),
            );
        }
    };
    let search = q.get("search").map(String::as_str).unwrap_or_default();
    let chars = search.chars().count();
    if chars > MAX_SEARCH_CHARS {
        return err(
            400,
            format!("search may be at most {MAX_SEARCH_CHARS} characters, got {chars}"),
        );
    }
    let mut lines = match stored_lines(&s, &id).await {
        Ok(l) => l,
        Err(r) => return *r,
    };
    if backward {
        lines.reverse();
    }
    let logs = lines
        .into_iter()
        .filter(|l| match cursor {
            Some(c) if backward => l.ms <= c,
            Some(c) => l.ms >= c,
            None => true,
        })
        .filter(|l| l.entry.level >= min_level && l.entry.message.contains(search))
        .take(limit)
        .map(|l| l.entry)
        .collect();
    axum::Json(SandboxLogsV2Response { logs }).into_response()
}
