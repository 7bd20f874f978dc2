//! envd's `process.Process` service over the manager's executions.
//!
//! Why this module exists: E2B's SDKs run every command through this service (`Start`
//! streams a process's output, `Connect` re-attaches to it by pid or tag, `SendInput`,
//! `CloseStdin` and `SendSignal` drive it, `List` shows what runs). Each process here is
//! an ordinary execution of the sandbox manager (its record, logs, limits and metrics are
//! the same as any tool's), started with live controls ([`ExecControl`]).
//!
//! One deliberate difference from E2B's envd (E2B issue #1074): a process outlives the
//! stream that started it. A client going away or a `Connect-Timeout-Ms` deadline ends
//! that client's stream (`deadline_exceeded`), never the process, so a background
//! command can be re-attached by pid for as long as it runs. It ends when it exits, is
//! signalled, or its sandbox stops.
//!
//! A process started with `pty` runs on a terminal of that size: its output travels as
//! `pty` data, input is written to the terminal, `Update` resizes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use futures_util::StreamExt as _;
use quantbox_ops::Ops;
use quantbox_sandbox::{
    ExecCommand, ExecControl, ExecParams, ManagerError, SandboxId, Stream as OutStream,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{Call, Envd, rpc_error, rpc_ok, rpc_request, stream_request, stream_timing};
use crate::connect::{self, Code};

/// How long a process started through envd may run: bounded in practice by its
/// sandbox's lifetime (at most a day), which ends it with everything else.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Events queued for one attached client before it counts as too slow and is cut off.
const CLIENT_QUEUE: usize = 4096;

/// `ProcessConfig`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `ProcessSelector`: `{"pid": n}` or `{"tag": "..."}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Selector {
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StartRequest {
    process: Option<ProcessConfig>,
    #[serde(default)]
    pty: Option<Value>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    stdin: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct SelectRequest {
    process: Option<Selector>,
}

#[derive(Debug, Default, Deserialize)]
struct ProcessInput {
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    pty: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SendInputRequest {
    process: Option<Selector>,
    input: Option<ProcessInput>,
}

#[derive(Debug, Deserialize)]
struct SendSignalRequest {
    process: Option<Selector>,
    signal: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct UpdateRequest {
    process: Option<Selector>,
    #[serde(default)]
    pty: Option<Value>,
}

/// `StreamInputRequest`: one of `start`, `data`, `keepalive`.
#[derive(Debug, Deserialize)]
struct StreamInputRequest {
    #[serde(default)]
    start: Option<SelectRequest>,
    #[serde(default)]
    data: Option<StreamInputData>,
}

#[derive(Debug, Deserialize)]
struct StreamInputData {
    input: Option<ProcessInput>,
}

/// What an attached client receives, in order.
#[derive(Clone, Debug)]
enum Event {
    Data(OutStream, Vec<u8>),
    End(Value),
}

/// One process started through envd.
struct Proc {
    pid: u32,
    config: ProcessConfig,
    tag: Option<String>,
    stdin: bool,
    /// It runs on a terminal: output is `pty` data.
    pty: bool,
    commands: mpsc::UnboundedSender<ExecCommand>,
    clients: Mutex<Vec<mpsc::Sender<Event>>>,
}

impl Proc {
    /// Sends a command to the running process.
    fn command(&self, c: ExecCommand) -> Result<(), connect::Error> {
        self.commands.send(c).map_err(|_| {
            connect::Error::new(Code::NotFound, format!("process {} has ended", self.pid))
        })
    }

    /// Hands `ev` to every attached client; a client whose queue is full is cut off.
    fn publish(&self, ev: &Event) {
        lock(&self.clients).retain(|c| c.try_send(ev.clone()).is_ok());
    }

    fn attach(&self) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        lock(&self.clients).push(tx);
        rx
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Running processes by sandbox, then by pid.
type Table = HashMap<SandboxId, HashMap<u32, Arc<Proc>>>;

/// The processes started through envd and still running, per sandbox.
#[derive(Clone)]
pub struct Processes {
    ops: Ops,
    table: Arc<Mutex<Table>>,
}

impl Processes {
    pub fn new(ops: Ops) -> Processes {
        Processes {
            ops,
            table: Arc::default(),
        }
    }

    fn find(&self, id: &SandboxId, sel: &Selector) -> Result<Arc<Proc>, connect::Error> {
        let table = lock(&self.table);
        let procs = table.get(id);
        let found = match (sel.pid, &sel.tag) {
            (Some(pid), _) => procs.and_then(|p| p.get(&pid)).cloned(),
            (None, Some(tag)) => procs
                .and_then(|p| p.values().find(|x| x.tag.as_deref() == Some(tag)))
                .cloned(),
            (None, None) => {
                return Err(connect::Error::new(
                    Code::InvalidArgument,
                    "process: give a pid or a tag",
                ));
            }
        };
        found.ok_or_else(|| {
            let what = match (sel.pid, &sel.tag) {
                (Some(pid), _) => format!("pid {pid}"),
                (_, Some(tag)) => format!("tag {tag:?}"),
                _ => unreachable!(),
            };
            connect::Error::new(
                Code::NotFound,
                format!(
                    "process with {what} not found (it has ended, or was not started through envd)"
                ),
            )
        })
    }

    fn list(&self, id: &SandboxId) -> Vec<Arc<Proc>> {
        let mut v: Vec<Arc<Proc>> = lock(&self.table)
            .get(id)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|p| p.pid);
        v
    }

    fn remove(&self, id: &SandboxId, pid: u32) {
        let mut table = lock(&self.table);
        if let Some(procs) = table.get_mut(id) {
            procs.remove(&pid);
            if procs.is_empty() {
                table.remove(id);
            }
        }
    }

    /// Starts `config` in the sandbox; returns it with the first client attached, once
    /// its pid is known.
    async fn start(
        &self,
        call: &Call,
        config: ProcessConfig,
        tag: Option<String>,
        stdin: bool,
        pty: Option<(u16, u16)>,
    ) -> Result<(Arc<Proc>, mpsc::Receiver<Event>), connect::Error> {
        if config.cmd.is_empty() {
            return Err(connect::Error::new(
                Code::InvalidArgument,
                "process.cmd: must not be empty",
            ));
        }
        let (pid_tx, pid_rx) = oneshot::channel::<i64>();
        let pid_tx = Mutex::new(Some(pid_tx));
        let (mut control, commands) = ExecControl::new(stdin, move |pid| {
            if let Some(tx) = lock(&pid_tx).take() {
                let _ = tx.send(pid);
            }
        });
        control.pty = pty;
        // Output reaches clients once the process is registered; until then it waits here.
        let (early_tx, mut early_rx) = mpsc::unbounded_channel::<Event>();
        let proc_slot: Arc<Mutex<Option<Arc<Proc>>>> = Arc::default();
        let tap = {
            let slot = proc_slot.clone();
            Arc::new(move |stream: OutStream, chunk: &[u8]| {
                let ev = Event::Data(stream, chunk.to_vec());
                match lock(&slot).as_ref() {
                    Some(p) => p.publish(&ev),
                    None => {
                        let _ = early_tx.send(ev);
                    }
                }
            })
        };
        let params = ExecParams {
            command: config.cmd.clone(),
            args: config.args.clone(),
            env: config.envs.clone(),
            cwd: config.cwd.clone(),
            user: call.user,
            stdin: None,
            timeout: PROCESS_TIMEOUT,
            capture_output: false,
            on_output: Some(tap),
            cancel: None,
            control: Some(control),
        };
        let manager = self.ops.manager().clone();
        let sandbox_id = call.sandbox_id.clone();
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(async move {
            let r = manager.exec(&sandbox_id, params).await;
            let _ = done_tx.send(r);
        });
        // The pid, or why the process did not start. (Biased: a process that started
        // and ended at once has sent its pid before its result.)
        let mut done_rx = done_rx;
        let mut finished = None;
        let pid = tokio::select! {
            biased;
            pid = pid_rx => match pid {
                Ok(pid) => pid,
                // No pid: the exec ended without starting the process; its result says why.
                Err(_) => match (&mut done_rx).await {
                    Ok(Ok(rec)) => {
                        let pid = rec.outcome.pid;
                        finished = Some(Ok(rec));
                        pid
                    }
                    Ok(Err(e)) => return Err(start_error(&e)),
                    Err(_) => return Err(connect::Error::new(Code::Internal, "the process did not start")),
                },
            },
            r = &mut done_rx => match r {
                // A provider that does not report the pid early: it ran already.
                Ok(Ok(rec)) => {
                    let pid = rec.outcome.pid;
                    finished = Some(Ok(rec));
                    pid
                }
                Ok(Err(e)) => return Err(start_error(&e)),
                Err(_) => return Err(connect::Error::new(Code::Internal, "the process did not start")),
            },
        };
        let pid = u32::try_from(pid).unwrap_or(0);
        let proc = Arc::new(Proc {
            pid,
            config,
            tag,
            stdin: stdin || pty.is_some(),
            pty: pty.is_some(),
            commands,
            clients: Mutex::new(Vec::new()),
        });
        let first = proc.attach();
        {
            // Output that came before registration goes first, in order.
            let mut slot = lock(&proc_slot);
            while let Ok(ev) = early_rx.try_recv() {
                proc.publish(&ev);
            }
            *slot = Some(proc.clone());
        }
        if let Some(result) = finished {
            proc.publish(&Event::End(outcome_end(result)));
            lock(&proc.clients).clear();
            return Ok((proc, first));
        }
        lock(&self.table)
            .entry(call.sandbox_id.clone())
            .or_default()
            .insert(pid, proc.clone());
        // When it ends: the end event to every client, and out of the table.
        let this = self.clone();
        let sandbox_id = call.sandbox_id.clone();
        let ended = proc.clone();
        tokio::spawn(async move {
            let end = match done_rx.await {
                Ok(r) => outcome_end(r),
                Err(_) => {
                    json!({"exitCode": -1, "status": "error", "error": "the execution was lost"})
                }
            };
            this.remove(&sandbox_id, pid);
            ended.publish(&Event::End(end));
            lock(&ended.clients).clear();
        });
        Ok((proc, first))
    }
}

/// The `end` event of an execution's result.
fn outcome_end(r: Result<quantbox_sandbox::ExecutionRecord, ManagerError>) -> Value {
    match r {
        Ok(rec) => end_event(&rec.outcome, rec.error.as_deref()),
        Err(e) => json!({"exitCode": -1, "status": "error", "error": e.to_string()}),
    }
}

/// Why a process could not start, as a Connect error.
fn start_error(e: &ManagerError) -> connect::Error {
    let code = match e {
        ManagerError::Invalid(_) => Code::InvalidArgument,
        ManagerError::NotFound(_) => Code::NotFound,
        ManagerError::Precondition(m) if m.contains("rootless") => Code::PermissionDenied,
        ManagerError::Precondition(_) => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    connect::Error::new(code, e.to_string())
}

/// The `end` event of an execution, as envd (Go's `os.ProcessState`) words it: exit code
/// 0 is left out (protobuf JSON omits defaults); a signal is exit code -1, `exited`
/// false and status `signal: <name>`.
fn end_event(o: &quantbox_sandbox::ExecOutcome, error: Option<&str>) -> Value {
    let mut end = serde_json::Map::new();
    match (o.exit_code, o.signal) {
        (Some(code), _) => {
            if code != 0 {
                end.insert("exitCode".into(), json!(code));
            }
            end.insert("exited".into(), json!(true));
            end.insert("status".into(), json!(format!("exit status {code}")));
        }
        (None, Some(sig)) => {
            end.insert("exitCode".into(), json!(-1));
            end.insert(
                "status".into(),
                json!(format!("signal: {}", signal_name(sig))),
            );
        }
        (None, None) => {
            end.insert("exitCode".into(), json!(-1));
            end.insert("status".into(), json!("unknown"));
        }
    }
    if let Some(e) = error {
        end.insert("error".into(), json!(e));
    }
    Value::Object(end)
}

/// Go's names of the common signals.
fn signal_name(sig: i32) -> String {
    match sig {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        6 => "aborted".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn event_json(ev: &Event, pty: bool) -> Value {
    match ev {
        Event::Data(stream, bytes) => {
            let key = match stream {
                _ if pty => "pty",
                OutStream::Stderr => "stderr",
                _ => "stdout",
            };
            json!({"event": {"data": {key: b64(bytes)}}})
        }
        Event::End(end) => json!({"event": {"end": end}}),
    }
}

/// Streams `start`, then the process's events until its end (or the client's).
async fn stream_events(
    headers: &HeaderMap,
    pid: u32,
    pty: bool,
    mut rx: mpsc::Receiver<Event>,
) -> Response {
    let (deadline, keepalive) = match stream_timing(headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (tx, resp) = super::stream_response(
        deadline,
        Some((keepalive, json!({"event": {"keepalive": {}}}))),
    );
    tokio::spawn(async move {
        if !tx.send(&json!({"event": {"start": {"pid": pid}}})).await {
            return;
        }
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        let end = matches!(ev, Event::End(_));
                        if !tx.send(&event_json(&ev, pty)).await {
                            return;
                        }
                        if end {
                            tx.finish(None).await;
                            return;
                        }
                    }
                    // Cut off: this client did not keep up with the output.
                    None => {
                        tx.finish(Some(connect::Error::new(
                            Code::ResourceExhausted,
                            "the client read the output too slowly and was detached; the process runs on (re-attach with Connect)",
                        )))
                        .await;
                        return;
                    }
                },
                () = tx.closed() => return,
            }
        }
    });
    resp
}

pub fn routes() -> Router<Envd> {
    Router::new()
        .route("/process.Process/Start", post(start))
        .route("/process.Process/Connect", post(connect_rpc))
        .route("/process.Process/List", post(list))
        .route("/process.Process/SendInput", post(send_input))
        .route("/process.Process/StreamInput", post(stream_input))
        .route("/process.Process/SendSignal", post(send_signal))
        .route("/process.Process/CloseStdin", post(close_stdin))
        .route("/process.Process/Update", post(update))
}

async fn start(
    State(envd): State<Envd>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: StartRequest = match stream_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let pty = match req.pty.as_ref().map(|p| pty_size(p, "pty")).transpose() {
        Ok(p) => p,
        Err(e) => return rpc_error(&e),
    };
    let Some(config) = req.process else {
        return rpc_error(&connect::Error::new(
            Code::InvalidArgument,
            "process: required",
        ));
    };
    // envd's default for a request without the flag is an open stdin.
    let stdin = req.stdin.unwrap_or(true);
    match envd
        .processes
        .start(&call, config, req.tag, stdin, pty)
        .await
    {
        Ok((proc, rx)) => stream_events(&headers, proc.pid, proc.pty, rx).await,
        Err(e) => rpc_error(&e),
    }
}

/// A `PTY` message's size, `{"size": {"cols": c, "rows": r}}`: each 1 to 65535.
fn pty_size(pty: &Value, field: &str) -> Result<(u16, u16), connect::Error> {
    let dim = |name: &str| -> Result<u16, connect::Error> {
        let v = &pty["size"][name];
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                connect::Error::new(
                    Code::InvalidArgument,
                    format!("{field}.size.{name}: must be a whole number from 1 to 65535, got {v}"),
                )
            })
    };
    Ok((dim("cols")?, dim("rows")?))
}

/// The process a request's `process` selector names.
fn select(envd: &Envd, call: &Call, p: Option<Selector>) -> Result<Arc<Proc>, connect::Error> {
    let sel = p.ok_or_else(|| connect::Error::new(Code::InvalidArgument, "process: required"))?;
    envd.processes.find(&call.sandbox_id, &sel)
}

/// The empty answer of a unary call that succeeded, or its error.
fn done(result: Result<(), connect::Error>) -> Response {
    match result {
        Ok(()) => rpc_ok(&json!({})),
        Err(e) => rpc_error(&e),
    }
}

async fn connect_rpc(
    State(envd): State<Envd>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: SelectRequest = match stream_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let proc = match select(&envd, &call, req.process) {
        Ok(p) => p,
        Err(e) => return rpc_error(&e),
    };
    let rx = proc.attach();
    stream_events(&headers, proc.pid, proc.pty, rx).await
}

async fn list(
    State(envd): State<Envd>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = rpc_request::<serde_json::Map<String, Value>>(&headers, &body) {
        return r;
    }
    let processes: Vec<Value> = envd
        .processes
        .list(&call.sandbox_id)
        .iter()
        .map(|p| {
            let mut v = json!({"config": p.config, "pid": p.pid});
            if let Some(t) = &p.tag {
                v["tag"] = json!(t);
            }
            v
        })
        .collect();
    rpc_ok(&json!({ "processes": processes }))
}

/// The bytes of a `ProcessInput` (`stdin`, or `pty` for a process on a terminal).
fn input_bytes(input: Option<ProcessInput>) -> Result<Vec<u8>, connect::Error> {
    let input =
        input.ok_or_else(|| connect::Error::new(Code::InvalidArgument, "input: required"))?;
    // `stdin` for a pipe, `pty` for a terminal: either way, bytes for the process.
    let text = input.stdin.or(input.pty).unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| {
            connect::Error::new(
                Code::InvalidArgument,
                format!("input.stdin: not base64: {e}"),
            )
        })
}

fn send_stdin(proc: &Proc, data: Vec<u8>) -> Result<(), connect::Error> {
    if !proc.stdin {
        return Err(connect::Error::new(
            Code::FailedPrecondition,
            format!(
                "process {} was started without stdin (start it with stdin enabled to send input)",
                proc.pid
            ),
        ));
    }
    proc.command(ExecCommand::Input(data))
}

async fn send_input(
    State(envd): State<Envd>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: SendInputRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    done(
        select(&envd, &call, req.process)
            .and_then(|p| input_bytes(req.input).and_then(|d| send_stdin(&p, d))),
    )
}

/// Client streaming: `start` names the process, then `data` messages feed its stdin.
/// Over HTTP/1.1 the whole request arrives before the answer; messages are applied as
/// they are read.
async fn stream_input(
    State(envd): State<Envd>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = super::content_type(&headers, true) {
        return r;
    }
    let result = async {
        let mut decoder = connect::Decoder::new();
        let mut proc: Option<Arc<Proc>> = None;
        let mut body = body.into_data_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                connect::Error::new(Code::Canceled, format!("reading the request: {e}"))
            })?;
            decoder.push(&chunk);
            while let Some(env) = decoder.next()? {
                if env.is_end_stream() {
                    continue;
                }
                let msg: StreamInputRequest = env.json()?;
                if let Some(start) = msg.start {
                    proc = Some(select(&envd, &call, start.process)?);
                } else if let Some(data) = msg.data {
                    let p = proc.as_ref().ok_or_else(|| {
                        connect::Error::new(
                            Code::InvalidArgument,
                            "the first message must be `start` (which process)",
                        )
                    })?;
                    send_stdin(p, input_bytes(data.input)?)?;
                }
            }
        }
        decoder.finish()?;
        Ok::<(), connect::Error>(())
    }
    .await;
    let (tx, resp) = super::stream_response(None, None);
    match result {
        Ok(()) => {
            tx.send(&json!({})).await;
            tx.finish(None).await;
        }
        Err(e) => tx.finish(Some(e)).await,
    }
    resp
}

async fn send_signal(
    State(envd): State<Envd>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: SendSignalRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let signal = match req.signal {
        Some(Value::String(s)) if s == "SIGNAL_SIGKILL" => libc_signal::KILL,
        Some(Value::String(s)) if s == "SIGNAL_SIGTERM" => libc_signal::TERM,
        Some(Value::Number(n)) if n.as_i64() == Some(9) => libc_signal::KILL,
        Some(Value::Number(n)) if n.as_i64() == Some(15) => libc_signal::TERM,
        other => {
            return rpc_error(&connect::Error::new(
                Code::InvalidArgument,
                format!("signal: {other:?} is not one of SIGNAL_SIGTERM, SIGNAL_SIGKILL"),
            ));
        }
    };
    done(select(&envd, &call, req.process).and_then(|p| p.command(ExecCommand::Signal(signal))))
}

/// The two signals envd's API names.
mod libc_signal {
    pub const KILL: i32 = 9;
    pub const TERM: i32 = 15;
}

async fn close_stdin(
    State(envd): State<Envd>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: SelectRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    done(select(&envd, &call, req.process).and_then(|p| {
        if !p.stdin {
            return Err(connect::Error::new(
                Code::FailedPrecondition,
                format!("process {} was started without stdin", p.pid),
            ));
        }
        p.command(ExecCommand::CloseInput)
    }))
}

/// `Update`: a new size for a process's terminal.
async fn update(
    State(envd): State<Envd>,
    Extension(call): Extension<Call>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: UpdateRequest = match rpc_request(&headers, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    done(select(&envd, &call, req.process).and_then(|p| {
        let Some(pty) = &req.pty else {
            // Nothing to change.
            return Ok(());
        };
        let (cols, rows) = pty_size(pty, "pty")?;
        if !p.pty {
            return Err(connect::Error::new(
                Code::FailedPrecondition,
                format!(
                    "process {} does not run on a terminal (start it with pty)",
                    p.pid
                ),
            ));
        }
        p.command(ExecCommand::Resize(cols, rows))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quantbox_sandbox::ExecOutcome;

    #[test]
    fn end_events_read_as_envd_writes_them() {
        let ok = ExecOutcome {
            exit_code: Some(0),
            ..Default::default()
        };
        assert_eq!(
            end_event(&ok, None),
            json!({"exited": true, "status": "exit status 0"})
        );
        let three = ExecOutcome {
            exit_code: Some(3),
            ..Default::default()
        };
        assert_eq!(
            end_event(&three, None),
            json!({"exitCode": 3, "exited": true, "status": "exit status 3"})
        );
        let killed = ExecOutcome {
            signal: Some(9),
            ..Default::default()
        };
        assert_eq!(
            end_event(&killed, Some("boom")),
            json!({"exitCode": -1, "status": "signal: killed", "error": "boom"})
        );
    }

    #[test]
    fn pty_sizes_are_checked() {
        assert_eq!(
            pty_size(&json!({"size": {"cols": 80, "rows": 24}}), "pty").unwrap(),
            (80, 24)
        );
        for bad in [
            json!({}),
            json!({"size": {"cols": 0, "rows": 24}}),
            json!({"size": {"cols": 80, "rows": 70000}}),
            json!({"size": {"cols": -1, "rows": 24}}),
        ] {
            let e = pty_size(&bad, "pty").unwrap_err();
            assert_eq!(e.code, Code::InvalidArgument, "{bad}");
            assert!(e.message.unwrap().starts_with("pty.size."), "{bad}");
        }
    }

    #[test]
    fn input_must_be_base64_stdin_or_pty() {
        assert_eq!(
            input_bytes(Some(ProcessInput {
                stdin: Some("aGkK".into()),
                pty: None
            }))
            .unwrap(),
            b"hi\n"
        );
        let e = input_bytes(Some(ProcessInput {
            stdin: Some("***".into()),
            pty: None,
        }))
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        let pty = input_bytes(Some(ProcessInput {
            stdin: None,
            pty: Some("aA==".into()),
        }));
        assert_eq!(pty.unwrap(), b"h");
        assert_eq!(input_bytes(None).unwrap_err().code, Code::InvalidArgument);
    }
}
