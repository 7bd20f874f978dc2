//! envd's `filesystem.Filesystem` Connect service, and the runner both file front ends
//! use to act inside a sandbox.
//!
//! Why this module exists: E2B's SDKs list, stat, make, move, remove and watch a
//! sandbox's files through this service (e2b-compat.md §2.3). Every operation is carried
//! out by `quantbox envd-fs` run inside the sandbox as the requesting user
//! ([`crate::inside`]), through the sandbox manager — never by the server touching the
//! sandbox's files from the host. [`Inside`] is that runner: it starts the process, taps
//! its stdout as it comes (capture is capped, and downloads and watches are streams), and
//! maps what it answers onto Connect codes and envd's HTTP statuses.
//!
//! Messages follow the protobuf JSON mapping: lowerCamelCase keys (the proto names are
//! accepted too), enums by name, int64 as strings, timestamps in RFC 3339, default values
//! left out. Watchers of the polling variant (`CreateWatcher`, `GetWatcherEvents`,
//! `RemoveWatcher`) live in memory in [`Watchers`], keyed by a random id; one ends when it
//! is removed, when its sandbox stops, or when its process does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use quantbox_sandbox::{
    ExecParams, ExecUser, ExecutionRecord, ManagerError, OutputSink, ProviderError, SandboxId,
    Stream,
};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use super::{
    Call, Envd, http_error, rpc_error, rpc_ok, rpc_request, stream_request, stream_timing,
};
use crate::connect::{self, Code};
use crate::inside::{
    self, Answer, EntryInfo, ErrorCode, EventKind, FileKind, FsError, Op, WatchEvent, WatchLine,
};

/// How long a unary operation may run when the request sets no deadline.
const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on a watch process: a watch lasts until its client leaves or its sandbox
/// stops, and the manager wants a finite timeout.
const WATCH_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most stdout kept from one unary operation (a deep listing is the big one).
const ANSWER_CAP: usize = 64 * 1024 * 1024;
/// Stderr kept from one operation, for error messages.
const STDERR_CAP: usize = 16 * 1024;
/// Unread stdout above which the process is held back (a slow download client): the
/// tap blocks its reader, the pipe fills, and the process waits in `write`.
const FLOW_HIGH: usize = 8 * 1024 * 1024;
const FLOW_LOW: usize = 2 * 1024 * 1024;
/// Polling watchers per sandbox, and events kept per watcher between polls.
const MAX_WATCHERS: usize = 128;
const MAX_PENDING_EVENTS: usize = 100_000;

/// Why an in-sandbox operation did not give its answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The operation refused, with its reason.
    Fs(FsError),
    /// The process could not be run (sandbox gone, root in a rootless sandbox, ...).
    Manager(ManagerError),
    /// It ran past its deadline.
    TimedOut,
    /// The sandbox stopped while it ran.
    SandboxEnded,
    /// It ended without a usable answer.
    Broken(String),
}

impl Failure {
    /// What went wrong, in words.
    pub(crate) fn message(&self) -> String {
        match self {
            Failure::Fs(e) => e.message.clone(),
            Failure::Manager(e) => e.to_string(),
            Failure::TimedOut => "the operation ran past its deadline".into(),
            Failure::SandboxEnded => "the sandbox stopped while the operation ran".into(),
            Failure::Broken(m) => m.clone(),
        }
    }

    /// As a Connect error.
    pub(crate) fn connect(&self) -> connect::Error {
        let code = match self {
            Failure::Fs(e) => match e.code {
                ErrorCode::NotFound => Code::NotFound,
                ErrorCode::AlreadyExists => Code::AlreadyExists,
                ErrorCode::InvalidArgument => Code::InvalidArgument,
                ErrorCode::PermissionDenied => Code::PermissionDenied,
                ErrorCode::ResourceExhausted => Code::ResourceExhausted,
                ErrorCode::Internal => Code::Internal,
            },
            Failure::Manager(e) => match e {
                // The one precondition of an exec: root asked of a rootless sandbox.
                ManagerError::Provider(ProviderError::Precondition(_)) => Code::PermissionDenied,
                ManagerError::NotFound(_)
                | ManagerError::Precondition(_)
                | ManagerError::Unavailable(_)
                | ManagerError::Provider(ProviderError::NotRunning(_)) => Code::Unavailable,
                ManagerError::Exhausted(_)
                | ManagerError::Provider(ProviderError::Exhausted(_)) => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            Failure::TimedOut => Code::DeadlineExceeded,
            Failure::SandboxEnded => Code::Unavailable,
            Failure::Broken(_) => Code::Internal,
        };
        connect::Error::new(code, self.message())
    }

    /// As envd's plain-HTTP error (`{"message", "code"}`).
    pub(crate) fn http(&self) -> Response {
        let status = match self {
            Failure::Fs(e) => match e.code {
                ErrorCode::NotFound => 404,
                ErrorCode::AlreadyExists => 409,
                ErrorCode::InvalidArgument => 400,
                ErrorCode::PermissionDenied => 403,
                ErrorCode::ResourceExhausted => 507,
                ErrorCode::Internal => 500,
            },
            Failure::Manager(e) => match e {
                // envd answers 401 when the user cannot be used.
                ManagerError::Provider(ProviderError::Precondition(_)) => 401,
                ManagerError::NotFound(_)
                | ManagerError::Precondition(_)
                | ManagerError::Provider(ProviderError::NotRunning(_)) => 502,
                ManagerError::Exhausted(_)
                | ManagerError::Provider(ProviderError::Exhausted(_)) => 429,
                ManagerError::Unavailable(_) => 503,
                _ => 500,
            },
            Failure::TimedOut => 504,
            Failure::SandboxEnded => 502,
            Failure::Broken(_) => 500,
        };
        http_error(status, self.message())
    }
}

/// Back-pressure between the tap (the provider's reader) and the consumer of stdout.
#[derive(Default)]
struct Flow {
    pending: Mutex<usize>,
    drained: Condvar,
    closed: AtomicBool,
}

impl Flow {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn added(&self, n: usize) {
        *self.lock() += n;
    }

    fn taken(&self, n: usize) {
        let mut p = self.lock();
        *p = p.saturating_sub(n);
        if *p <= FLOW_LOW {
            self.drained.notify_all();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _guard = self.lock();
        self.drained.notify_all();
    }

    /// Holds the caller (the provider's reader) while too much is unread. Only on a
    /// multi-threaded runtime, where `block_in_place` lets the other tasks go on; on a
    /// current-thread runtime the output is buffered instead.
    fn hold_back(&self) {
        if *self.lock() <= FLOW_HIGH || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi {
            return;
        }
        tokio::task::block_in_place(|| {
            let mut p = self.lock();
            while *p > FLOW_LOW && !self.closed.load(Ordering::SeqCst) {
                p = self
                    .drained
                    .wait_timeout(p, Duration::from_secs(1))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        });
    }
}

/// One `quantbox envd-fs` process running in a sandbox.
pub(crate) struct Inside {
    stdout: mpsc::UnboundedReceiver<Bytes>,
    flow: Arc<Flow>,
    stderr: Arc<Mutex<Vec<u8>>>,
    cancel: watch::Sender<bool>,
    done: Option<tokio::task::JoinHandle<Result<ExecutionRecord, ManagerError>>>,
    /// Kill the process when this is dropped before it ended (a reader that left).
    cancel_on_drop: bool,
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.flow.close();
        if self.cancel_on_drop && self.done.as_ref().is_some_and(|d| !d.is_finished()) {
            let _ = self.cancel.send(true);
        }
    }
}

impl Inside {
    /// Starts `op` in the sandbox of `call` as `user`, with `stdin`. The process runs in
    /// a task of its own: a caller that goes away does not cut it off unless
    /// `cancel_on_drop` (read-only operations).
    pub(crate) fn start(
        envd: &Envd,
        sandbox: &SandboxId,
        user: ExecUser,
        op: &Op,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        cancel_on_drop: bool,
    ) -> Inside {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let flow = Arc::new(Flow::default());
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let tap: OutputSink = {
            let (flow, stderr) = (flow.clone(), stderr.clone());
            Arc::new(move |stream, chunk| match stream {
                Stream::Stdout => {
                    if flow.closed.load(Ordering::SeqCst) {
                        return;
                    }
                    flow.added(chunk.len());
                    if tx.send(Bytes::copy_from_slice(chunk)).is_ok() {
                        flow.hold_back();
                    }
                }
                Stream::Stderr => {
                    let mut e = stderr.lock().unwrap_or_else(|p| p.into_inner());
                    let room = STDERR_CAP.saturating_sub(e.len());
                    e.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Stream::Event => {}
            })
        };
        let mut args = vec![inside::SUBCOMMAND.to_owned()];
        args.extend(op.to_args());
        let params = ExecParams {
            command: quantbox_ops::agents::TOOLS_EXE.to_owned(),
            args,
            env: BTreeMap::new(),
            cwd: None,
            user,
            stdin,
            timeout,
            capture_output: false,
            on_output: Some(tap),
            cancel: Some(cancel_rx),
            control: None,
        };
        let manager = envd.ops.manager().clone();
        let id = sandbox.clone();
        let done = tokio::spawn(async move { manager.exec(&id, params).await });
        Inside {
            stdout: rx,
            flow,
            stderr,
            cancel: cancel_tx,
            done: Some(done),
            cancel_on_drop,
        }
    }

    /// The next piece of stdout; `None` once the process has ended and all is read.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        let b = self.stdout.recv().await?;
        self.flow.taken(b.len());
        Some(b)
    }

    /// Kills the process (a watch whose client left); what it still writes is dropped.
    pub(crate) fn kill(&self) {
        self.flow.close();
        let _ = self.cancel.send(true);
    }

    /// Reads up to the first newline: the answer line and what came after it. `None`
    /// when the process ended first (or wrote a first line past 64 KiB).
    pub(crate) async fn first_line(&mut self) -> Option<(Vec<u8>, Bytes)> {
        let mut line = Vec::new();
        while let Some(chunk) = self.recv().await {
            if let Some(i) = chunk.iter().position(|b| *b == b'\n') {
                line.extend_from_slice(&chunk[..i]);
                return Some((line, chunk.slice(i + 1..)));
            }
            line.extend_from_slice(&chunk);
            if line.len() > 64 * 1024 {
                return None;
            }
        }
        None
    }

    /// Waits for the process to end (stdout need not be read to the end; what it still
    /// writes is dropped): `Ok` when it exited 0, else why not (an error line in `answer`
    /// is the operation's own reason).
    pub(crate) async fn wait(&mut self, answer: &[u8]) -> Result<(), Failure> {
        // Output nobody reads any more must not hold the process back.
        self.flow.close();
        let Some(done) = self.done.take() else {
            return Err(Failure::Broken(
                "the operation was already waited for".into(),
            ));
        };
        let rec = match done.await {
            Ok(Ok(rec)) => rec,
            Ok(Err(e)) => return Err(Failure::Manager(e)),
            Err(e) => return Err(Failure::Broken(format!("the operation's task failed: {e}"))),
        };
        let o = &rec.outcome;
        if o.sandbox_ended {
            return Err(Failure::SandboxEnded);
        }
        if o.timed_out {
            return Err(Failure::TimedOut);
        }
        if o.exit_code == Some(0) {
            return Ok(());
        }
        let first = answer.split(|b| *b == b'\n').next().unwrap_or(&[]);
        if let Ok(Answer::<Value>::Error(e)) = serde_json::from_slice(first) {
            return Err(if o.exit_code == Some(1) {
                Failure::Fs(e)
            } else {
                Failure::Broken(format!(
                    "quantbox envd-fs refused its arguments: {}",
                    e.message
                ))
            });
        }
        if let Ok(WatchLine::Error(e)) = serde_json::from_slice(first) {
            return Err(Failure::Fs(e));
        }
        let stderr = {
            let e = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&e).trim().to_owned()
        };
        let how = match (o.exit_code, o.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "no exit status".into(),
        };
        Err(Failure::Broken(format!(
            "the file operation inside the sandbox failed ({how}){}{}",
            if stderr.is_empty() { "" } else { ": " },
            stderr
        )))
    }

    /// Reads all of stdout (up to [`ANSWER_CAP`]) and waits for the end.
    pub(crate) async fn finish(mut self) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::new();
        let mut over = false;
        while let Some(chunk) = self.recv().await {
            if out.len() + chunk.len() > ANSWER_CAP {
                over = true;
                self.kill();
                continue;
            }
            out.extend_from_slice(&chunk);
        }
        let r = self.wait(&out).await;
        if over {
            return Err(Failure::Fs(FsError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "the answer is larger than {} MiB (list less deep)",
                    ANSWER_CAP >> 20
                ),
            )));
        }
        r.map(|()| out)
    }

    /// Runs `op` to its end and reads its one answer as `T`.
    pub(crate) async fn run<T: serde::de::DeserializeOwned>(
        envd: &Envd,
        sandbox: &SandboxId,
        user: ExecUser,
        op: &Op,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, Failure> {
        let cancel_on_drop = matches!(op, Op::Stat { .. } | Op::List { .. } | Op::Read { .. });
        let out = Inside::start(envd, sandbox, user, op, stdin, timeout, cancel_on_drop)
            .finish()
            .await?;
        let first = out.split(|b| *b == b'\n').next().unwrap_or(&[]);
        match serde_json::from_slice::<Answer<T>>(first) {
            Ok(Answer::Ok(v)) => Ok(v),
            Ok(Answer::Error(e)) => Err(Failure::Fs(e)),
            Err(e) => Err(Failure::Broken(format!(
                "unreadable answer from inside the sandbox: {e}"
            ))),
        }
    }
}

/// Splits a byte stream into lines.
#[derive(Default)]
pub(crate) struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Adds `chunk`; returns the lines it completed (without their newline).
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let rest = self.buf.split_off(i + 1);
            let mut line = std::mem::replace(&mut self.buf, rest);
            line.pop();
            out.push(line);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Protobuf JSON.

/// envd's `EntryInfo` in the protobuf JSON mapping. A symlink is `FILE_TYPE_SYMLINK`
/// with `isSymlink` set (older SDKs read the first, newer ones the second).
pub(crate) fn entry_json(e: &EntryInfo) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    if !e.name.is_empty() {
        put("name", json!(e.name));
    }
    let kind = match e.kind {
        FileKind::File => Some("FILE_TYPE_FILE"),
        FileKind::Directory => Some("FILE_TYPE_DIRECTORY"),
        FileKind::Symlink => Some("FILE_TYPE_SYMLINK"),
        FileKind::Other => None,
    };
    if let Some(k) = kind {
        put("type", json!(k));
    }
    if !e.path.is_empty() {
        put("path", json!(e.path));
    }
    if e.size != 0 {
        put("size", json!(e.size.to_string()));
    }
    if e.mode != 0 {
        put("mode", json!(e.mode));
    }
    if !e.permissions.is_empty() {
        put("permissions", json!(e.permissions));
    }
    if !e.owner.is_empty() {
        put("owner", json!(e.owner));
    }
    if !e.group.is_empty() {
        put("group", json!(e.group));
    }
    if !e.modified.is_empty() {
        put("modifiedTime", json!(e.modified));
    }
    if let Some(t) = &e.symlink_target {
        put("symlinkTarget", json!(t));
    }
    if !e.metadata.is_empty() {
        put("metadata", json!(e.metadata));
    }
    if e.kind == FileKind::Symlink {
        put("isSymlink", json!(true));
    }
    Value::Object(m)
}

/// envd's `FilesystemEvent` in the protobuf JSON mapping.
pub(crate) fn event_json(e: &WatchEvent) -> Value {
    let kind = match e.kind {
        EventKind::Create => "EVENT_TYPE_CREATE",
        EventKind::Write => "EVENT_TYPE_WRITE",
        EventKind::Remove => "EVENT_TYPE_REMOVE",
        EventKind::Rename => "EVENT_TYPE_RENAME",
        EventKind::Chmod => "EVENT_TYPE_CHMOD",
    };
    let mut m = Map::new();
    if !e.name.is_empty() {
        m.insert("name".into(), json!(e.name));
    }
    m.insert("type".into(), json!(kind));
    if let Some(entry) = &e.entry {
        m.insert("entry".into(), entry_json(entry));
    }
    Value::Object(m)
}

/// A field that may be `null` (protobuf JSON: the default value).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A `uint32`: a JSON number or a decimal string (protobuf JSON accepts both), or `null`.
fn uint32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error as _;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| D::Error::custom(format!("{n} is not a uint32"))),
        Some(Value::String(s)) => s
            .parse::<u32>()
            .map_err(|_| D::Error::custom(format!("{s:?} is not a uint32"))),
        Some(other) => Err(D::Error::custom(format!("{other} is not a uint32"))),
    }
}

#[derive(Deserialize)]
struct PathRequest {
    #[serde(default, deserialize_with = "nullable")]
    path: String,
}

#[derive(Deserialize)]
struct ListDirRequest {
    #[serde(default, deserialize_with = "nullable")]
    path: String,
    #[serde(default, deserialize_with = "uint32")]
    depth: u32,
}

#[derive(Deserialize)]
struct MoveRequest {
    #[serde(default, deserialize_with = "nullable")]
    source: String,
    #[serde(default, deserialize_with = "nullable")]
    destination: String,
}

/// `WatchDirRequest` and `CreateWatcherRequest`. `allowNetworkMounts` is left unread:
/// a sandbox has no network mounts to refuse.
#[derive(Deserialize)]
struct WatchRequest {
    #[serde(default, deserialize_with = "nullable")]
    path: String,
    #[serde(default, deserialize_with = "nullable")]
    recursive: bool,
    #[serde(
        default,
        rename = "includeEntry",
        alias = "include_entry",
        deserialize_with = "nullable"
    )]
    include_entry: bool,
}

#[derive(Deserialize)]
struct WatcherRequest {
    #[serde(
        default,
        rename = "watcherId",
        alias = "watcher_id",
        deserialize_with = "nullable"
    )]
    watcher_id: String,
}

// ---------------------------------------------------------------------------------------
// Routes.

pub fn routes() -> Router<Envd> {
    Router::new()
        .route("/filesystem.Filesystem/Stat", post(stat))
        .route("/filesystem.Filesystem/MakeDir", post(make_dir))
        .route("/filesystem.Filesystem/Move", post(move_))
        .route("/filesystem.Filesystem/ListDir", post(list_dir))
        .route("/filesystem.Filesystem/Remove", post(remove))
        .route("/filesystem.Filesystem/WatchDir", post(watch_dir))
        .route("/filesystem.Filesystem/CreateWatcher", post(create_watcher))
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(get_watcher_events),
        )
        .route("/filesystem.Filesystem/RemoveWatcher", post(remove_watcher))
}

type Ext = axum::Extension<Call>;

/// A unary call's deadline: `Connect-Timeout-Ms`, or [`DEFAULT_RPC_TIMEOUT`].
#[allow(clippy::result_large_err)]
fn unary_timeout(headers: &HeaderMap) -> Result<Duration, Response> {
    match headers.get(connect::TIMEOUT_HEADER) {
        Some(v) => connect::parse_timeout_ms(v.to_str().unwrap_or("?"))
            .map(|d| d.unwrap_or(DEFAULT_RPC_TIMEOUT))
            .map_err(|e| rpc_error(&e)),
        None => Ok(DEFAULT_RPC_TIMEOUT),
    }
}

/// Runs a unary operation and answers with `shape(answer)`.
async fn unary<T: serde::de::DeserializeOwned>(
    envd: &Envd,
    call: &Call,
    headers: &HeaderMap,
    op: Op,
    shape: impl FnOnce(T) -> Value,
) -> Response {
    let timeout = match unary_timeout(headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match Inside::run::<T>(envd, &call.sandbox_id, call.user, &op, None, timeout).await {
        Ok(v) => rpc_ok(&shape(v)),
        Err(f) => rpc_error(&f.connect()),
    }
}

async fn stat(
    State(envd): State<Envd>,
    axum::Extension(call): Ext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: PathRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let op = Op::Stat { path: req.path };
    unary(
        &envd,
        &call,
        &headers,
        op,
        |e: EntryInfo| json!({"entry": entry_json(&e)}),
    )
    .await
}

async fn make_dir(
    State(envd): State<Envd>,
    axum::Extension(call): Ext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: PathRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let op = Op::MakeDir { path: req.path };
    unary(
        &envd,
        &call,
        &headers,
        op,
        |e: EntryInfo| json!({"entry": entry_json(&e)}),
    )
    .await
}

async fn move_(
    State(envd): State<Envd>,
    axum::Extension(call): Ext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: MoveRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let op = Op::Move {
        source: req.source,
        destination: req.destination,
    };
    unary(
        &envd,
        &call,
        &headers,
        op,
        |e: EntryInfo| json!({"entry": entry_json(&e)}),
    )
    .await
}

async fn list_dir(
    State(envd): State<Envd>,
    axum::Extension(call): Ext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: ListDirRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let op = Op::List {
        path: req.path,
        depth: req.depth,
    };
    unary(&envd, &call, &headers, op, |v: Vec<EntryInfo>| {
        if v.is_empty() {
            json!({})
        } else {
            json!({"entries": v.iter().map(entry_json).collect::<Vec<_>>()})
        }
    })
    .await
}

async fn remove(
    State(envd): State<Envd>,
    axum::Extension(call): Ext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: PathRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let op = Op::Remove { path: req.path };
    unary(&envd, &call, &headers, op, |_: Value| json!({})).await
}

/// Starts a watch process and waits for it to say its watches are set. Returns it with
/// what it wrote after that line.
async fn start_watch(
    envd: &Envd,
    call: &Call,
    req: WatchRequest,
    timeout: Duration,
) -> Result<(Inside, Bytes), Failure> {
    let op = Op::Watch {
        path: req.path,
        recursive: req.recursive,
        include_entry: req.include_entry,
    };
    let mut run = Inside::start(envd, &call.sandbox_id, call.user, &op, None, timeout, true);
    let Some((line, rest)) = run.first_line().await else {
        run.kill();
        return Err(run
            .wait(&[])
            .await
            .err()
            .unwrap_or_else(|| Failure::Broken("the watch ended before it started".into())));
    };
    match serde_json::from_slice::<WatchLine>(&line) {
        Ok(WatchLine::Started {}) => Ok((run, rest)),
        Ok(WatchLine::Error(e)) => Err(Failure::Fs(e)),
        Ok(WatchLine::Event(_)) | Err(_) => {
            run.kill();
            Err(Failure::Broken(format!(
                "the watch began with {:?}, not its start",
                String::from_utf8_lossy(&line)
            )))
        }
    }
}

/// The events in `lines`, as protobuf JSON; an error line ends the watch.
fn watch_events(lines: Vec<Vec<u8>>) -> (Vec<Value>, Option<FsError>) {
    let mut out = Vec::new();
    for line in lines {
        match serde_json::from_slice::<WatchLine>(&line) {
            Ok(WatchLine::Event(e)) => out.push(event_json(&e)),
            Ok(WatchLine::Error(e)) => return (out, Some(e)),
            Ok(WatchLine::Started {}) => {}
            Err(e) => {
                return (
                    out,
                    Some(FsError::new(
                        ErrorCode::Internal,
                        format!("unreadable watch event: {e}"),
                    )),
                );
            }
        }
    }
    (out, None)
}

/// `WatchDir`: `start`, then a `filesystem` message per change, `keepalive`s between;
/// the watch process is killed when the client leaves or the deadline passes.
async fn watch_dir(
    State(envd): State<Envd>,
    axum::Extension(call): Ext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: WatchRequest = match stream_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (deadline, keepalive) = match stream_timing(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let timeout = deadline.map_or(WATCH_TIMEOUT, |d| d + Duration::from_secs(5));
    let (mut run, rest) = match start_watch(&envd, &call, req, timeout).await {
        Ok(r) => r,
        Err(f) => return rpc_error(&f.connect()),
    };
    let (tx, resp) = super::stream_response(deadline, Some((keepalive, json!({"keepalive": {}}))));
    tokio::spawn(async move {
        if !tx.send(&json!({"start": {}})).await {
            return;
        }
        let mut lines = Lines::default();
        let mut pending = lines.push(&rest);
        let end = loop {
            let (events, error) = watch_events(std::mem::take(&mut pending));
            for ev in events {
                if !tx.send(&json!({"filesystem": ev})).await {
                    return;
                }
            }
            if let Some(e) = error {
                break Some(Failure::Fs(e));
            }
            tokio::select! {
                chunk = run.recv() => match chunk {
                    Some(c) => pending = lines.push(&c),
                    None => break run.wait(&[]).await.err(),
                },
                () = tx.closed() => return,
            }
        };
        let err = end.unwrap_or_else(|| Failure::Broken("the watch ended".into()));
        tx.finish(Some(err.connect())).await;
    });
    resp
}

/// The polling watchers of every sandbox, by watcher id.
#[derive(Clone, Default)]
pub struct Watchers {
    inner: Arc<Mutex<HashMap<String, Arc<PollWatcher>>>>,
}

struct PollWatcher {
    sandbox: SandboxId,
    state: Mutex<WatcherState>,
    cancel: watch::Sender<bool>,
}

#[derive(Default)]
struct WatcherState {
    events: Vec<Value>,
    dropped: u64,
    /// Why the watch ended, once it has.
    ended: Option<connect::Error>,
}

impl Watchers {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PollWatcher>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, sandbox: &SandboxId, id: &str) -> Option<Arc<PollWatcher>> {
        self.map()
            .get(id)
            .filter(|w| &w.sandbox == sandbox)
            .cloned()
    }

    fn remove(&self, id: &str) -> Option<Arc<PollWatcher>> {
        self.map().remove(id)
    }

    /// How many watchers a sandbox has.
    pub fn count(&self, sandbox: &SandboxId) -> usize {
        self.map()
            .values()
            .filter(|w| &w.sandbox == sandbox)
            .count()
    }
}

impl PollWatcher {
    fn state(&self) -> std::sync::MutexGuard<'_, WatcherState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn new_watcher_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn create_watcher(
    State(envd): State<Envd>,
    axum::Extension(call): Ext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: WatchRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if envd.watchers.count(&call.sandbox_id) >= MAX_WATCHERS {
        return rpc_error(&connect::Error::new(
            Code::ResourceExhausted,
            format!("this sandbox has {MAX_WATCHERS} watchers already: remove some first"),
        ));
    }
    let (mut run, rest) = match start_watch(&envd, &call, req, WATCH_TIMEOUT).await {
        Ok(r) => r,
        Err(f) => return rpc_error(&f.connect()),
    };
    // The watcher outlives this request: its process is stopped by RemoveWatcher.
    run.cancel_on_drop = false;
    let id = new_watcher_id();
    let w = Arc::new(PollWatcher {
        sandbox: call.sandbox_id.clone(),
        state: Mutex::new(WatcherState::default()),
        cancel: run.cancel.clone(),
    });
    envd.watchers.map().insert(id.clone(), w.clone());
    let watchers = envd.watchers.clone();
    let wid = id.clone();
    tokio::spawn(async move {
        let mut lines = Lines::default();
        let mut pending = lines.push(&rest);
        let mut error = None;
        loop {
            let (events, err) = watch_events(std::mem::take(&mut pending));
            {
                let mut st = w.state();
                for ev in events {
                    if st.events.len() < MAX_PENDING_EVENTS {
                        st.events.push(ev);
                    } else {
                        st.dropped += 1;
                    }
                }
            }
            if let Some(e) = err {
                error = Some(Failure::Fs(e));
                run.kill();
                break;
            }
            match run.recv().await {
                Some(c) => pending = lines.push(&c),
                None => break,
            }
        }
        let end = run.wait(&[]).await.err();
        let failure = error.or(end);
        let sandbox_gone = matches!(failure, Some(Failure::SandboxEnded | Failure::Manager(_)));
        if sandbox_gone {
            watchers.remove(&wid);
        } else {
            let f = failure.unwrap_or_else(|| Failure::Broken("the watch ended".into()));
            w.state().ended = Some(f.connect());
        }
    });
    rpc_ok(&json!({"watcherId": id}))
}

async fn get_watcher_events(
    State(envd): State<Envd>,
    axum::Extension(call): Ext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: WatcherRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(w) = envd.watchers.get(&call.sandbox_id, &req.watcher_id) else {
        return rpc_error(&connect::Error::new(
            Code::NotFound,
            format!("watcher {:?} not found", req.watcher_id),
        ));
    };
    let (events, ended, dropped) = {
        let mut st = w.state();
        let dropped = std::mem::take(&mut st.dropped);
        (std::mem::take(&mut st.events), st.ended.clone(), dropped)
    };
    if dropped > 0 {
        tracing::warn!(
            watcher = %req.watcher_id,
            dropped,
            "watcher events dropped: more than {MAX_PENDING_EVENTS} were waiting to be read"
        );
    }
    if events.is_empty()
        && let Some(e) = ended
    {
        envd.watchers.remove(&req.watcher_id);
        return rpc_error(&e);
    }
    if events.is_empty() {
        rpc_ok(&json!({}))
    } else {
        rpc_ok(&json!({"events": events}))
    }
}

async fn remove_watcher(
    State(envd): State<Envd>,
    axum::Extension(call): Ext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: WatcherRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if envd
        .watchers
        .get(&call.sandbox_id, &req.watcher_id)
        .is_none()
    {
        return rpc_error(&connect::Error::new(
            Code::NotFound,
            format!("watcher {:?} not found", req.watcher_id),
        ));
    }
    if let Some(w) = envd.watchers.remove(&req.watcher_id) {
        let _ = w.cancel.send(true);
    }
    rpc_ok(&json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_protobuf_json_mapping() {
        let e = EntryInfo {
            name: "l".into(),
            kind: FileKind::Symlink,
            path: "/home/user/l".into(),
            size: 12,
            mode: 0o644,
            permissions: "Lrwxrwxrwx".into(),
            owner: "user".into(),
            group: "user".into(),
            modified: "2026-01-02T03:04:05.006Z".into(),
            symlink_target: Some("/home/user/f".into()),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
        };
        assert_eq!(
            entry_json(&e),
            json!({
                "name": "l", "type": "FILE_TYPE_SYMLINK", "path": "/home/user/l", "size": "12",
                "mode": 420, "permissions": "Lrwxrwxrwx", "owner": "user", "group": "user",
                "modifiedTime": "2026-01-02T03:04:05.006Z", "symlinkTarget": "/home/user/f",
                "metadata": {"k": "v"}, "isSymlink": true
            })
        );
        let empty = EntryInfo {
            kind: FileKind::File,
            size: 0,
            symlink_target: None,
            metadata: BTreeMap::new(),
            ..e.clone()
        };
        let j = entry_json(&empty);
        assert_eq!(j["type"], "FILE_TYPE_FILE");
        for absent in ["size", "symlinkTarget", "metadata", "isSymlink"] {
            assert!(j.get(absent).is_none(), "{absent} is a default: left out");
        }
        let ev = WatchEvent {
            name: "a/b".into(),
            kind: EventKind::Chmod,
            entry: None,
        };
        assert_eq!(
            event_json(&ev),
            json!({"name": "a/b", "type": "EVENT_TYPE_CHMOD"})
        );
    }

    #[test]
    fn requests_take_camel_and_snake_names_and_nulls() {
        let w: WatchRequest =
            serde_json::from_str(r#"{"path":"d","recursive":true,"include_entry":true}"#).unwrap();
        assert!(w.recursive && w.include_entry);
        let w: WatchRequest =
            serde_json::from_str(r#"{"path":null,"includeEntry":true,"allowNetworkMounts":false}"#)
                .unwrap();
        assert!(w.include_entry && w.path.is_empty());
        let r: WatcherRequest = serde_json::from_str(r#"{"watcher_id":"x"}"#).unwrap();
        assert_eq!(r.watcher_id, "x");
        let r: WatcherRequest = serde_json::from_str(r#"{"watcherId":"y"}"#).unwrap();
        assert_eq!(r.watcher_id, "y");
        let l: ListDirRequest = serde_json::from_str(r#"{"path":"p","depth":"3"}"#).unwrap();
        assert_eq!(l.depth, 3);
        let l: ListDirRequest = serde_json::from_str(r#"{"depth":2,"unknown":1}"#).unwrap();
        assert_eq!((l.depth, l.path.as_str()), (2, ""));
        assert!(serde_json::from_str::<ListDirRequest>(r#"{"depth":-1}"#).is_err());
        assert!(serde_json::from_str::<ListDirRequest>(r#"{"depth":"x"}"#).is_err());
    }

    #[test]
    fn failures_map_to_connect_codes_and_envd_statuses() {
        let rootless = Failure::Manager(ManagerError::Provider(ProviderError::Precondition(
            "user: root is not available in a rootless sandbox (no id range to map)".into(),
        )));
        let e = rootless.connect();
        assert_eq!(e.code, Code::PermissionDenied);
        assert!(
            e.message.unwrap().contains("rootless"),
            "the manager's message"
        );
        assert_eq!(rootless.http().status().as_u16(), 401);
        let fs = |code| Failure::Fs(FsError::new(code, "m"));
        let cases = [
            (ErrorCode::NotFound, Code::NotFound, 404),
            (ErrorCode::AlreadyExists, Code::AlreadyExists, 409),
            (ErrorCode::InvalidArgument, Code::InvalidArgument, 400),
            (ErrorCode::PermissionDenied, Code::PermissionDenied, 403),
            (ErrorCode::ResourceExhausted, Code::ResourceExhausted, 507),
            (ErrorCode::Internal, Code::Internal, 500),
        ];
        for (code, connect_code, status) in cases {
            assert_eq!(fs(code).connect().code, connect_code);
            assert_eq!(fs(code).http().status().as_u16(), status);
        }
        assert_eq!(Failure::TimedOut.connect().code, Code::DeadlineExceeded);
        assert_eq!(Failure::SandboxEnded.connect().code, Code::Unavailable);
        assert_eq!(Failure::SandboxEnded.http().status().as_u16(), 502);
    }

    #[test]
    fn lines_split_across_chunks() {
        let mut l = Lines::default();
        assert!(l.push(b"{\"a\"").is_empty());
        assert_eq!(
            l.push(b":1}\n{\"b\":2}\n{"),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        assert_eq!(l.push(b"}\n"), vec![b"{}".to_vec()]);
    }
}
