//! Provider `e2b`: quantbox's sandboxes run in E2B's cloud.
//!
//! Why this module exists: the manager drives every sandbox through the `Provider` trait;
//! this implementation turns each of its calls into E2B's API ([`crate::client`]) so that
//! every sandbox tool works with `provider: "e2b"` as it does with `local`:
//!
//! | trait | E2B |
//! |---|---|
//! | `create` | `POST /v2/sandboxes` (template as named, lifetime, env vars, metadata plus `quantbox_id`), one `Idempotency-Key` per create |
//! | `exec` | envd `process.Process/Start` stream; `SendSignal` SIGKILL on timeout or cancel; stdin by `SendInput` + `CloseStdin` |
//! | `terminate` | `DELETE /sandboxes/{id}` (404: already gone) |
//! | `usage`, `counters` | `GET /sandboxes/{id}/metrics`, else envd `GET /metrics` |
//! | `ping` | envd `GET /health` |
//! | `set_deadline` | `POST /sandboxes/{id}/timeout` |
//! | `adopt` | `GET /sandboxes/{id}` (a create that never finished: found by `quantbox_id` and killed) |
//! | `pause` / `resume` | `POST /sandboxes/{id}/pause` / `POST /v2/sandboxes/{id}/connect` |
//!
//! quantbox's sandbox id and E2B's `sandboxID` are different ids: the remote one (and its
//! envd access token) is the runtime state the manager persists, and E2B's metadata
//! carries `quantbox_id` so the sandbox can be found from either side.
//!
//! What E2B does not offer is said, not invented: sizes come from the E2B template, so the
//! memory and CPU a quantbox request names are recorded but not applied; E2B reports no
//! process counts, refused forks or OOM kills, so those read 0 and the provider's limit
//! support says they are not measured; CPU time is E2B's reported CPU percentage
//! integrated over time (E2B gives a percentage, not a counter).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quantbox_sandbox::{
    Adoption, Counters, ExecCommand, ExecOutcome, ExecRequest, ExecUser, LimitSupport,
    OUTPUT_CAP_BYTES, OutputSink, Provider, ProviderError, ProviderInfo, ResourceUsage, SandboxId,
    SandboxSpec, Stream, Termination, Timestamp, UnexpectedExit,
};
use serde::{Deserialize, Serialize};

use crate::client::envd::{Envd, Event, StartRequest};
use crate::client::{Client, Config, Error, ListQuery, NO_API_KEY};
use crate::connect::Code;
use crate::model::{NewSandbox, SandboxMetric, SandboxState};

/// The metadata key that names the quantbox sandbox an E2B sandbox belongs to.
pub const QUANTBOX_ID_KEY: &str = "quantbox_id";
/// The manager's timer ends sandboxes; E2B's own timeout is a backstop this much later,
/// as the local provider's init ends its sandbox 30 s after the deadline.
pub const BACKSTOP: Duration = Duration::from_secs(30);
/// E2B samples a sandbox's metrics every few seconds; asking more often gains nothing.
const METRICS_EVERY: Duration = Duration::from_secs(5);
/// The wait for envd to answer a command's start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// After a kill, the wait for the process's `end` event.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// stdin goes to envd in pieces of this size.
const STDIN_CHUNK: usize = 256 * 1024;

/// What the manager persists of an E2B sandbox (the record's `runtime`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// E2B's `sandboxID` (not quantbox's id).
    pub e2b_sandbox_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(default)]
    pub envd_version: String,
    /// The sandbox's own domain, when E2B gave one (envd URLs use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub template_id: String,
}

/// CPU time as E2B's reported percentage integrated over time: `ns(now) = ns_at +
/// rate · (now − at)`, re-anchored at each new sample so it only grows.
#[derive(Clone, Copy, Debug, Default)]
struct CpuClock {
    at: Option<Instant>,
    ns_at: u64,
    /// CPU nanoseconds per wall second (cores busy × 10⁹).
    rate: f64,
}

impl CpuClock {
    fn read(&self, now: Instant) -> u64 {
        match self.at {
            Some(at) => {
                self.ns_at + (self.rate * now.saturating_duration_since(at).as_secs_f64()) as u64
            }
            None => 0,
        }
    }

    /// A new reading: `cores_busy` cores in use from `now` on.
    fn set_rate(&mut self, now: Instant, cores_busy: f64) {
        self.ns_at = self.read(now);
        self.at = Some(now);
        self.rate = (cores_busy.max(0.0)) * 1e9;
    }

    fn stop(&mut self, now: Instant) {
        self.set_rate(now, 0.0);
    }
}

/// One E2B sandbox as this provider knows it.
#[derive(Clone, Debug)]
struct Remote {
    rt: Runtime,
    paused: bool,
    cpu: CpuClock,
    /// The last memory and disk readings and when they were asked for.
    last: Option<(Instant, Sample)>,
}

/// One reading of E2B's metrics.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    mem_used: u64,
    mem_total: u64,
    disk_used: u64,
    disk_total: u64,
}

/// Provider `e2b`.
pub struct E2bProvider {
    cfg: Config,
    client: Option<Client>,
    /// Why there is no client (no key, or the HTTP client could not be made).
    no_client: String,
    remotes: Mutex<HashMap<SandboxId, Remote>>,
    exits: OnceLock<tokio::sync::mpsc::UnboundedSender<UnexpectedExit>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// quantbox's error for a failed call to E2B: what failed, E2B's own message, and what
/// to do about it.
pub fn provider_error(e: Error) -> ProviderError {
    let msg = e.to_string();
    match &e {
        Error::NoApiKey => ProviderError::Unavailable(NO_API_KEY.into()),
        Error::Api { status, .. } => match status {
            401 => ProviderError::Unavailable(format!(
                "E2B rejected the API key (E2B_API_KEY): {msg}; set E2B_API_KEY on the quantbox server to a valid key of your E2B team"
            )),
            403 => ProviderError::Unavailable(format!(
                "E2B refused access: {msg}; check that the key (E2B_API_KEY) belongs to the team that owns this sandbox or template"
            )),
            404 => ProviderError::NotFound(format!(
                "{msg}; E2B has no such sandbox or template (it may have ended or been killed outside quantbox)"
            )),
            400 | 422 => ProviderError::Invalid(format!("E2B refused the request: {msg}")),
            409 => ProviderError::Precondition(format!(
                "E2B refused the request in the sandbox's current state: {msg}"
            )),
            429 => ProviderError::Exhausted(format!(
                "E2B's limits are reached: {msg}; end some E2B sandboxes or try again later"
            )),
            s if *s >= 500 => {
                ProviderError::Unavailable(format!("E2B is unavailable: {msg}; try again later"))
            }
            _ => ProviderError::Unavailable(format!("E2B refused the request: {msg}")),
        },
        Error::Transport { .. } => ProviderError::Unavailable(format!(
            "{msg}; check the network and E2B_API_URL / E2B_DOMAIN / E2B_SANDBOX_URL"
        )),
        Error::Decode { .. } => {
            ProviderError::Internal(format!("{msg} (is E2B_API_URL an E2B API?)"))
        }
        Error::Rpc { error, .. } => match error.code {
            Code::Unauthenticated | Code::PermissionDenied => ProviderError::Unavailable(format!(
                "{msg}; the sandbox's envd refused its access token or user"
            )),
            Code::NotFound => ProviderError::NotFound(msg),
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                ProviderError::Invalid(msg)
            }
            Code::ResourceExhausted => ProviderError::Exhausted(msg),
            _ => ProviderError::Unavailable(format!("{msg}; E2B's envd did not do it, try again")),
        },
        Error::Protocol { .. } => ProviderError::Unavailable(msg),
    }
}

impl E2bProvider {
    /// The provider over `cfg`. Without an API key it is registered all the same and
    /// every call says why it cannot work ([`NO_API_KEY`]).
    pub fn new(cfg: Config) -> E2bProvider {
        let (client, no_client) = match Client::new(cfg.clone()) {
            Ok(c) => (Some(c), String::new()),
            Err(e) => (None, e.to_string()),
        };
        E2bProvider {
            cfg,
            client,
            no_client,
            remotes: Mutex::new(HashMap::new()),
            exits: OnceLock::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn client(&self) -> Result<&Client, ProviderError> {
        self.client
            .as_ref()
            .ok_or_else(|| ProviderError::Unavailable(self.no_client.clone()))
    }

    fn remote(&self, id: &SandboxId) -> Result<Remote, ProviderError> {
        self.client()?;
        lock(&self.remotes)
            .get(id)
            .cloned()
            .ok_or_else(|| ProviderError::NotRunning(id.clone()))
    }

    fn envd(&self, rt: &Runtime) -> Result<Envd, ProviderError> {
        let client = self.client()?;
        Ok(Envd::new(
            client,
            self.cfg.envd_url(&rt.e2b_sandbox_id, rt.domain.as_deref()),
            &rt.e2b_sandbox_id,
            rt.envd_access_token.as_deref(),
        ))
    }

    /// E2B no longer has the sandbox: forget it and tell the manager (once).
    fn gone(&self, id: &SandboxId, detail: String) {
        if lock(&self.remotes).remove(id).is_some()
            && let Some(tx) = self.exits.get()
        {
            let _ = tx.send(UnexpectedExit {
                id: id.clone(),
                detail,
            });
        }
    }

    /// Kills whatever E2B holds of quantbox sandbox `id` (found by its `quantbox_id`);
    /// how many there were.
    async fn kill_orphans(&self, id: &SandboxId) -> Result<usize, ProviderError> {
        let client = self.client()?;
        let q = ListQuery {
            metadata: [(QUANTBOX_ID_KEY.to_owned(), id.to_string())].into(),
            states: Vec::new(),
        };
        let found = client.list(&q).await.map_err(provider_error)?;
        for s in &found {
            client.kill(&s.sandbox_id).await.map_err(provider_error)?;
        }
        Ok(found.len())
    }

    /// Whether E2B still has the sandbox (`None`: could not tell).
    async fn exists(&self, rt: &Runtime) -> Option<bool> {
        match self.client().ok()?.get(&rt.e2b_sandbox_id).await {
            Ok(_) => Some(true),
            Err(e) if e.is_not_found() => Some(false),
            Err(_) => None,
        }
    }

    fn gone_detail(rt: &Runtime) -> String {
        format!(
            "E2B no longer has sandbox {} (its E2B timeout ran out, or it was killed outside quantbox)",
            rt.e2b_sandbox_id
        )
    }

    /// The latest metrics of a running sandbox: the control plane's, else envd's own.
    async fn fetch_sample(
        &self,
        id: &SandboxId,
        rt: &Runtime,
    ) -> Result<(Sample, f64), ProviderError> {
        let client = self.client()?;
        let from_api = match client.metrics(&rt.e2b_sandbox_id).await {
            Ok(list) => list.last().map(|m: &SandboxMetric| {
                (
                    Sample {
                        mem_used: m.mem_used.max(0) as u64,
                        mem_total: m.mem_total.max(0) as u64,
                        disk_used: m.disk_used.max(0) as u64,
                        disk_total: m.disk_total.max(0) as u64,
                    },
                    m.cpu_used_pct / 100.0 * f64::from(m.cpu_count.max(1)),
                )
            }),
            Err(e) if e.is_not_found() => {
                if self.exists(rt).await == Some(false) {
                    self.gone(id, Self::gone_detail(rt));
                    return Err(ProviderError::NotRunning(id.clone()));
                }
                None
            }
            Err(e) => return Err(provider_error(e)),
        };
        if let Some(s) = from_api {
            return Ok(s);
        }
        // No sample yet (or no metrics route): envd's live reading.
        let envd = self.envd(rt)?;
        let v = envd.metrics().await.map_err(provider_error)?;
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
        Ok((
            Sample {
                mem_used: n("mem_used") as u64,
                mem_total: n("mem_total") as u64,
                disk_used: n("disk_used") as u64,
                disk_total: n("disk_total") as u64,
            },
            n("cpu_used_pct") / 100.0 * n("cpu_count").max(1.0),
        ))
    }

    async fn read_usage(&self, id: &SandboxId) -> Result<ResourceUsage, ProviderError> {
        let r = self.remote(id)?;
        let now = Instant::now();
        let fresh = r
            .last
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) < METRICS_EVERY);
        let sample = if r.paused || fresh {
            r.last.map(|(_, s)| s).unwrap_or_default()
        } else {
            // Marked as asked first, so concurrent readers do not all ask E2B.
            let before = r.last.map(|(_, s)| s).unwrap_or_default();
            if let Some(e) = lock(&self.remotes).get_mut(id) {
                e.last = Some((now, before));
            }
            let (s, cores) = self.fetch_sample(id, &r.rt).await?;
            let mut map = lock(&self.remotes);
            if let Some(e) = map.get_mut(id) {
                e.last = Some((now, s));
                if !e.paused {
                    e.cpu.set_rate(Instant::now(), cores);
                }
            }
            s
        };
        let cpu = lock(&self.remotes)
            .get(id)
            .map(|e| e.cpu.read(Instant::now()))
            .unwrap_or(0);
        Ok(ResourceUsage {
            cpu_usage_ns: cpu,
            memory_bytes: sample.mem_used,
            memory_limit_bytes: sample.mem_total,
            memory_peak_bytes: None,
            disk_bytes: sample.disk_used,
            disk_total_bytes: sample.disk_total,
            pids: 0,
            pids_max: 0,
            pids_limit_hits: 0,
            oom_kills: 0,
        })
    }

    fn limit_support(&self) -> Vec<LimitSupport> {
        let not = |limit, reason: &str| LimitSupport {
            limit,
            enforced: false,
            reason: Some(reason.to_owned()),
        };
        vec![
            not(
                "memory",
                "E2B sizes a sandbox by its template (memoryMB is fixed when the template is built); the memory_mb asked for is recorded, not applied",
            ),
            not(
                "cpu",
                "E2B sizes a sandbox by its template (cpuCount is fixed when the template is built); the cpu_count asked for is recorded, not applied",
            ),
            not(
                "pids",
                "E2B has no process limit and reports no process counts: pids, refused forks and OOM kills are not measured for e2b (they read 0)",
            ),
            LimitSupport {
                limit: "freezer",
                enforced: true,
                reason: Some("pause and resume are E2B's snapshots".into()),
            },
            LimitSupport {
                limit: "lifetime",
                enforced: true,
                reason: None,
            },
        ]
    }
}

/// Seconds from now to `at` plus the backstop, at least 1, as E2B's int32 timeout.
fn timeout_secs(at: Timestamp, now: Timestamp) -> i32 {
    let ms = at.ms_since(now).max(0) as u64 + BACKSTOP.as_millis() as u64;
    i32::try_from(ms.div_ceil(1000).max(1)).unwrap_or(i32::MAX)
}

/// What a kill or the end of the stream leaves of an execution.
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
    keep: bool,
}

impl Capture {
    fn new(keep: bool) -> Capture {
        Capture {
            bytes: Vec::new(),
            truncated: false,
            keep,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        if !self.keep {
            return;
        }
        let room = OUTPUT_CAP_BYTES.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

impl E2bProvider {
    async fn run(
        &self,
        id: &SandboxId,
        req: &ExecRequest,
        sink: OutputSink,
    ) -> Result<ExecOutcome, ProviderError> {
        let r = self.remote(id)?;
        if r.paused {
            return Err(ProviderError::Precondition(format!(
                "sandbox {id} is paused in E2B; resume it first"
            )));
        }
        let envd = self.envd(&r.rt)?;
        let user = match req.user {
            ExecUser::User => "user",
            ExecUser::Root => "root",
        };
        let (cmd, args) = match req.argv.split_first() {
            Some((c, a)) => (c.clone(), a.to_vec()),
            None => return Err(ProviderError::Invalid("an empty command line".into())),
        };
        if req.control.as_ref().is_some_and(|c| c.pty.is_some()) {
            return Err(ProviderError::Invalid(
                "a terminal (pty) is not available with provider e2b: run the command without one"
                    .into(),
            ));
        }
        let start = StartRequest {
            cmd,
            args,
            envs: req.env.clone(),
            cwd: req.cwd.clone(),
            // Input comes whole (`req.stdin`) or piece by piece (`req.control`).
            stdin: req.stdin.is_some() || req.control.as_ref().is_some_and(|c| c.stdin),
        };
        // envd's own deadline is a backstop after ours (we kill the process ourselves).
        let mut stream = match envd
            .start(
                &start,
                Some(user),
                Some(req.timeout + BACKSTOP),
                START_TIMEOUT,
            )
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(self.start_error(id, &r.rt, e).await),
        };
        let pid = match stream.next().await {
            Ok(Some(Event::Start { pid })) => pid,
            Ok(Some(other)) => {
                return Err(ProviderError::Unavailable(format!(
                    "E2B's envd began the stream of `{}` with {other:?} instead of its start event",
                    start.cmd
                )));
            }
            Ok(None) => {
                return Err(ProviderError::Unavailable(format!(
                    "E2B's envd closed the stream of `{}` before the process started",
                    start.cmd
                )));
            }
            Err(e) => return Err(self.start_error(id, &r.rt, e).await),
        };
        if let Some(c) = &req.control {
            (c.on_start)(i64::from(pid));
        }
        let mut commands = req.control.as_ref().and_then(|c| c.take_commands());
        let deadline = tokio::time::Instant::now() + req.timeout;
        // stdin is written while the output is read: a process that writes before it
        // reads must not wait on a stream nobody reads. As with a pipe, input the process
        // does not take (it exited, or closed its stdin) is dropped; its stdin is closed
        // all the same, so it never waits for more.
        let feed = async {
            let Some(data) = &req.stdin else {
                return Ok(());
            };
            let mut sent = Ok(());
            for chunk in data.chunks(STDIN_CHUNK) {
                sent = envd.send_input(pid, chunk, Some(user)).await;
                if sent.is_err() {
                    break;
                }
            }
            let closed = envd.close_stdin(pid, Some(user)).await;
            sent.and(closed)
        };
        tokio::pin!(feed);
        let mut fed = req.stdin.is_none();
        let mut out = Capture::new(req.capture_output);
        let mut err = Capture::new(req.capture_output);
        let mut cancel = req.cancel.clone();
        let mut timed_out = false;
        let mut cancelled = false;
        let mut killed_at: Option<tokio::time::Instant> = None;
        enum Step {
            Got(Option<Result<Option<Event>, Error>>),
            Kill,
            Fed(Result<(), Error>),
            Command(Option<ExecCommand>),
        }
        let end = loop {
            let next = async {
                match killed_at {
                    Some(at) => tokio::time::timeout_at(at + KILL_GRACE, stream.next())
                        .await
                        .ok(),
                    None => Some(stream.next().await),
                }
            };
            let cancelled_now = async {
                match (&mut cancel, killed_at) {
                    (Some(c), None) => {
                        // A dropped sender is no request to cancel.
                        if c.wait_for(|v| *v).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    _ => std::future::pending().await,
                }
            };
            let out_of_time = async {
                match killed_at {
                    None => tokio::time::sleep_until(deadline).await,
                    Some(_) => std::future::pending().await,
                }
            };
            let command = async {
                match &mut commands {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                got = next => Step::Got(got),
                () = cancelled_now => { cancelled = true; Step::Kill }
                () = out_of_time => { timed_out = true; Step::Kill }
                r = &mut feed, if !fed => { fed = true; Step::Fed(r) }
                c = command => Step::Command(c),
            };
            match step {
                Step::Got(Some(Ok(Some(Event::Stdout(b))))) => {
                    sink(Stream::Stdout, &b);
                    out.push(&b);
                }
                Step::Got(Some(Ok(Some(Event::Stderr(b))))) => {
                    sink(Stream::Stderr, &b);
                    err.push(&b);
                }
                Step::Got(Some(Ok(Some(Event::End(end))))) => break Ok(Some(end)),
                Step::Got(Some(Ok(Some(_)))) => {}
                Step::Got(Some(Ok(None))) => break Ok(None),
                Step::Got(Some(Err(e))) => break Err(e),
                Step::Got(None) => break Ok(None),
                Step::Fed(Ok(())) => {}
                Step::Fed(Err(e)) => {
                    tracing::debug!(sandbox = %id, pid, error = %e, "stdin not (wholly) taken by the process in E2B");
                }
                Step::Command(None) => commands = None,
                Step::Command(Some(c)) => {
                    let done = match c {
                        ExecCommand::Input(data) => envd.send_input(pid, &data, Some(user)).await,
                        ExecCommand::CloseInput => envd.close_stdin(pid, Some(user)).await,
                        // envd signals with SIGKILL or SIGTERM only.
                        ExecCommand::Signal(9) => envd.send_signal(pid, true, Some(user)).await,
                        ExecCommand::Signal(15) => envd.send_signal(pid, false, Some(user)).await,
                        ExecCommand::Signal(other) => {
                            tracing::warn!(sandbox = %id, pid, signal = other, "E2B's envd sends only SIGKILL and SIGTERM; signal not sent");
                            Ok(())
                        }
                        // Refused at the start: no terminal here.
                        ExecCommand::Resize(..) => Ok(()),
                    };
                    if let Err(e) = done {
                        tracing::warn!(sandbox = %id, pid, error = %e, "a command to the process in E2B failed");
                    }
                }
                Step::Kill => {
                    // Out of time or cancelled: kill it, then wait a little for its end.
                    if let Err(e) = envd.send_signal(pid, true, Some(user)).await {
                        tracing::warn!(sandbox = %id, pid, error = %e, "could not kill the process in E2B");
                    }
                    killed_at = Some(tokio::time::Instant::now());
                }
            }
        };
        let mut outcome = ExecOutcome {
            pid: i64::from(pid),
            timed_out,
            cancelled,
            ..ExecOutcome::default()
        };
        match end {
            Ok(Some(end)) => {
                let (code, signal) = end.outcome();
                outcome.exit_code = code;
                outcome.signal = signal;
                if code.is_none() && signal.is_none() && killed_at.is_some() {
                    outcome.signal = Some(9);
                }
            }
            // No end event: killed by us (and envd said no more), or the sandbox is gone.
            Ok(None) | Err(_) if killed_at.is_some() => outcome.signal = Some(9),
            other => {
                if self.exists(&r.rt).await == Some(false) {
                    self.gone(id, Self::gone_detail(&r.rt));
                    outcome.sandbox_ended = true;
                    outcome.signal = Some(9);
                } else {
                    let why = match other {
                        Err(e) => provider_error(e).to_string(),
                        _ => "the stream ended without an end event".into(),
                    };
                    return Err(ProviderError::Unavailable(format!(
                        "process {pid} (`{}`) in E2B sandbox {}: {why}; its outcome is unknown",
                        start.cmd, r.rt.e2b_sandbox_id
                    )));
                }
            }
        }
        outcome.stdout = out.bytes;
        outcome.stderr = err.bytes;
        outcome.stdout_truncated = out.truncated;
        outcome.stderr_truncated = err.truncated;
        Ok(outcome)
    }

    /// A command that did not start: gone sandbox, a bad request (no such program or
    /// directory), or E2B's trouble.
    async fn start_error(&self, id: &SandboxId, rt: &Runtime, e: Error) -> ProviderError {
        if let Error::Rpc { error, .. } = &e
            && matches!(
                error.code,
                Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition
            )
        {
            return ProviderError::Invalid(e.to_string());
        }
        if self.exists(rt).await == Some(false) {
            self.gone(id, Self::gone_detail(rt));
            return ProviderError::NotRunning(id.clone());
        }
        provider_error(e)
    }
}

#[async_trait]
impl Provider for E2bProvider {
    fn name(&self) -> &'static str {
        "e2b"
    }

    fn info(&self) -> ProviderInfo {
        let (status, detail) = match &self.client {
            Some(_) => (
                "available",
                format!(
                    "E2B's cloud at {} (envd {}); sizes come from the E2B template",
                    self.cfg.api_url,
                    self.cfg.sandbox_url.clone().unwrap_or_else(|| format!(
                        "by E2B's URL rules for domain {}",
                        self.cfg.domain
                    ))
                ),
            ),
            None => ("not_configured", self.no_client.clone()),
        };
        ProviderInfo {
            name: "e2b",
            status,
            detail,
            limits: self.limit_support(),
        }
    }

    fn templates(&self) -> Vec<String> {
        self.cfg.templates.clone()
    }

    fn check(&self, spec: &SandboxSpec) -> Result<(), ProviderError> {
        self.client()?;
        if spec.metadata.contains_key(QUANTBOX_ID_KEY) {
            return Err(ProviderError::Invalid(format!(
                "metadata: the key `{QUANTBOX_ID_KEY}` is reserved: provider e2b sets it to the quantbox sandbox id"
            )));
        }
        crate::ids::TemplateRef::parse(&spec.template)
            .map_err(|e| ProviderError::Invalid(format!("template: {e}")))?;
        if spec.timeout.as_secs() + BACKSTOP.as_secs() > i32::MAX as u64 {
            return Err(ProviderError::Invalid(format!(
                "timeout: {} s is more than E2B accepts",
                spec.timeout.as_secs()
            )));
        }
        // memory_mb and cpu_count are accepted but not applied: E2B sizes sandboxes by
        // their template (see `info().limits`).
        Ok(())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<serde_json::Value, ProviderError> {
        let client = self.client()?;
        let mut new = NewSandbox::new(spec.template.clone());
        new.timeout = Some(timeout_secs(spec.expires_at, Timestamp::now()));
        new.env_vars = spec.env_vars.clone();
        new.metadata = spec.metadata.clone();
        new.metadata
            .insert(QUANTBOX_ID_KEY.into(), spec.id.to_string());
        // One key per logical create: retries replay it instead of making a second one.
        let key = format!("quantbox-{}", spec.id);
        let sb = match client.create(&new, &key).await {
            Ok(sb) => sb,
            Err(e) => {
                // A refusal made nothing; after anything else (no answer, an answer that
                // cannot be read, E2B's own failure) a sandbox may exist all the same.
                if !matches!(e.status(), Some(400..=499))
                    && let Err(k) = self.kill_orphans(&spec.id).await
                {
                    tracing::warn!(sandbox = %spec.id, error = %k, "could not look for what a failed create left in E2B");
                }
                return Err(match e.status() {
                    // An unknown template is E2B's 404 on create.
                    Some(404) => ProviderError::Invalid(format!(
                        "template: {e}; E2B has no template `{}` for this key's team",
                        spec.template
                    )),
                    _ => provider_error(e),
                });
            }
        };
        let rt = Runtime {
            e2b_sandbox_id: sb.sandbox_id,
            envd_access_token: sb.envd_access_token,
            envd_version: sb.envd_version,
            domain: sb.domain,
            template_id: sb.template_id,
        };
        lock(&self.remotes).insert(
            spec.id.clone(),
            Remote {
                rt: rt.clone(),
                paused: false,
                cpu: CpuClock::default(),
                last: None,
            },
        );
        serde_json::to_value(&rt).map_err(|e| ProviderError::Internal(e.to_string()))
    }

    async fn exec(
        &self,
        id: &SandboxId,
        req: &ExecRequest,
        sink: OutputSink,
    ) -> Result<ExecOutcome, ProviderError> {
        self.run(id, req, sink).await
    }

    async fn terminate(&self, id: &SandboxId, _how: Termination) -> Result<(), ProviderError> {
        let client = self.client()?;
        let Some(r) = lock(&self.remotes).get(id).cloned() else {
            return Ok(());
        };
        // E2B has one way to end a sandbox: kill. 404 means it is gone already.
        client
            .kill(&r.rt.e2b_sandbox_id)
            .await
            .map_err(provider_error)?;
        lock(&self.remotes).remove(id);
        Ok(())
    }

    async fn usage(&self, id: &SandboxId, _disk: bool) -> Result<ResourceUsage, ProviderError> {
        self.read_usage(id).await
    }

    async fn counters(&self, id: &SandboxId) -> Result<Counters, ProviderError> {
        let u = self.read_usage(id).await?;
        Ok(Counters {
            cpu_usage_ns: u.cpu_usage_ns,
            oom_kills: 0,
            pids_limit_hits: 0,
        })
    }

    async fn ping(&self, id: &SandboxId, timeout: Duration) -> Result<Duration, ProviderError> {
        let r = self.remote(id)?;
        let envd = self.envd(&r.rt)?;
        match envd.health(timeout).await {
            Ok(d) => Ok(d),
            Err(e) => {
                if self.exists(&r.rt).await == Some(false) {
                    self.gone(id, Self::gone_detail(&r.rt));
                    return Err(ProviderError::NotRunning(id.clone()));
                }
                Err(provider_error(e))
            }
        }
    }

    async fn set_deadline(
        &self,
        id: &SandboxId,
        expires_at: Timestamp,
    ) -> Result<(), ProviderError> {
        let r = self.remote(id)?;
        let client = self.client()?;
        match client
            .set_timeout(
                &r.rt.e2b_sandbox_id,
                timeout_secs(expires_at, Timestamp::now()),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => {
                self.gone(id, Self::gone_detail(&r.rt));
                Err(ProviderError::NotRunning(id.clone()))
            }
            Err(e) => Err(provider_error(e)),
        }
    }

    async fn adopt(
        &self,
        id: &SandboxId,
        runtime: &serde_json::Value,
        paused: bool,
    ) -> Result<Adoption, ProviderError> {
        let client = self.client()?;
        if runtime.is_null() {
            // The create never finished here; E2B may have made it all the same.
            let killed = self.kill_orphans(id).await?;
            return Ok(Adoption::Gone {
                detail: format!(
                    "its creation in E2B never finished ({killed} E2B sandbox(es) of it killed)"
                ),
            });
        }
        let rt: Runtime = serde_json::from_value(runtime.clone()).map_err(|e| {
            ProviderError::Internal(format!(
                "the recorded E2B state of sandbox {id} cannot be read: {e}"
            ))
        })?;
        let detail = match client.get(&rt.e2b_sandbox_id).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => {
                return Ok(Adoption::Gone {
                    detail: Self::gone_detail(&rt),
                });
            }
            Err(e) => return Err(provider_error(e)),
        };
        let mut rt = rt;
        if detail.envd_access_token.is_some() {
            rt.envd_access_token = detail.envd_access_token.clone();
        }
        let mut remote_paused = detail.state == SandboxState::Paused;
        if remote_paused && !paused {
            // quantbox has it running: resume it in E2B too.
            let (sb, _) = client
                .connect(&rt.e2b_sandbox_id, crate::model::DEFAULT_TIMEOUT_V2_SECS)
                .await
                .map_err(provider_error)?;
            if sb.envd_access_token.is_some() {
                rt.envd_access_token = sb.envd_access_token;
            }
            remote_paused = false;
        } else if !remote_paused && paused {
            client
                .pause(&rt.e2b_sandbox_id)
                .await
                .map_err(provider_error)?;
            remote_paused = true;
        }
        lock(&self.remotes).insert(
            id.clone(),
            Remote {
                rt,
                paused: remote_paused,
                cpu: CpuClock::default(),
                last: None,
            },
        );
        Ok(Adoption::Adopted)
    }

    async fn pause(&self, id: &SandboxId) -> Result<(), ProviderError> {
        let r = self.remote(id)?;
        let client = self.client()?;
        match client.pause(&r.rt.e2b_sandbox_id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {
                self.gone(id, Self::gone_detail(&r.rt));
                return Err(ProviderError::NotRunning(id.clone()));
            }
            Err(e) => return Err(provider_error(e)),
        }
        if let Some(e) = lock(&self.remotes).get_mut(id) {
            e.paused = true;
            e.cpu.stop(Instant::now());
        }
        Ok(())
    }

    async fn resume(&self, id: &SandboxId) -> Result<(), ProviderError> {
        let r = self.remote(id)?;
        let client = self.client()?;
        // The manager sets the exact deadline right after (set_deadline); connect only
        // ever extends a lifetime, so a short one here is safe.
        let (sb, _) = match client
            .connect(&r.rt.e2b_sandbox_id, BACKSTOP.as_secs() as i32)
            .await
        {
            Ok(x) => x,
            Err(e) if e.is_not_found() => {
                self.gone(id, Self::gone_detail(&r.rt));
                return Err(ProviderError::NotRunning(id.clone()));
            }
            Err(e) => return Err(provider_error(e)),
        };
        if let Some(e) = lock(&self.remotes).get_mut(id) {
            e.paused = false;
            e.last = None;
            if sb.envd_access_token.is_some() {
                e.rt.envd_access_token = sb.envd_access_token;
            }
        }
        Ok(())
    }

    fn watch_exits(&self, tx: tokio::sync::mpsc::UnboundedSender<UnexpectedExit>) {
        let _ = self.exits.set(tx);
    }
}

/// Everything E2B has that carries a quantbox id (the sandboxes provider `e2b` made
/// through the key of `cfg`), for checks and clean-up.
pub async fn remote_sandboxes(cfg: &Config) -> Result<Vec<crate::model::ListedSandbox>, Error> {
    let client = Client::new(cfg.clone())?;
    let all = client.list(&ListQuery::default()).await?;
    Ok(all
        .into_iter()
        .filter(|s| {
            s.metadata
                .as_ref()
                .is_some_and(|m| m.contains_key(QUANTBOX_ID_KEY))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(template: &str) -> SandboxSpec {
        SandboxSpec {
            id: SandboxId::generate(),
            name: "t".into(),
            template: template.into(),
            resources: quantbox_sandbox::Resources {
                memory_mb: 512,
                cpu_count: 1.0,
                pids_max: 512,
            },
            timeout: Duration::from_secs(300),
            env_vars: BTreeMap::new(),
            metadata: BTreeMap::new(),
            deployment_id: None,
            expires_at: Timestamp::now().plus_ms(300_000),
        }
    }

    fn keyless() -> E2bProvider {
        E2bProvider::new(Config::from_lookup(|_| None))
    }

    #[test]
    fn without_a_key_it_says_so_everywhere() {
        let p = keyless();
        let info = p.info();
        assert_eq!((info.name, info.status), ("e2b", "not_configured"));
        assert_eq!(info.detail, NO_API_KEY);
        let e = p.check(&spec("base")).unwrap_err();
        assert!(
            matches!(&e, ProviderError::Unavailable(m) if m == NO_API_KEY),
            "{e:?}"
        );
        assert!(NO_API_KEY.contains("E2B_API_KEY"));
    }

    #[tokio::test]
    async fn without_a_key_every_call_is_unavailable() {
        let p = keyless();
        let s = spec("base");
        let unavailable = |r: Result<(), ProviderError>| {
            assert!(
                matches!(r, Err(ProviderError::Unavailable(ref m)) if m == NO_API_KEY),
                "{r:?}"
            )
        };
        unavailable(p.create(&s).await.map(|_| ()));
        unavailable(p.terminate(&s.id, Termination::Force).await);
        unavailable(p.usage(&s.id, false).await.map(|_| ()));
        unavailable(p.ping(&s.id, Duration::from_secs(1)).await.map(|_| ()));
        unavailable(p.pause(&s.id).await);
        unavailable(p.resume(&s.id).await);
        unavailable(
            p.adopt(&s.id, &serde_json::Value::Null, false)
                .await
                .map(|_| ()),
        );
    }

    #[test]
    fn info_says_what_is_not_measured() {
        let p = E2bProvider::new(Config::single_server(
            Some("e2b_0000".into()),
            "http://127.0.0.1:9",
        ));
        let info = p.info();
        assert_eq!(info.status, "available");
        assert!(
            info.detail.contains("http://127.0.0.1:9"),
            "{}",
            info.detail
        );
        let by_name: BTreeMap<_, _> = info.limits.iter().map(|l| (l.limit, l)).collect();
        for l in ["memory", "cpu", "pids"] {
            assert!(!by_name[l].enforced, "{l}");
            assert!(by_name[l].reason.as_ref().unwrap().len() > 20);
        }
        assert!(
            by_name["pids"]
                .reason
                .as_ref()
                .unwrap()
                .contains("OOM kills are not measured")
        );
        assert!(by_name["lifetime"].enforced);
        assert_eq!(p.templates(), vec!["base"]);
    }

    #[test]
    fn check_refuses_what_e2b_cannot_take() {
        let p = E2bProvider::new(Config::single_server(
            Some("k".into()),
            "http://127.0.0.1:9",
        ));
        p.check(&spec("base")).unwrap();
        p.check(&spec("team/python:v1")).unwrap();
        let mut s = spec("base");
        s.metadata.insert(QUANTBOX_ID_KEY.into(), "x".into());
        assert!(matches!(p.check(&s), Err(ProviderError::Invalid(m)) if m.contains("reserved")));
        assert!(matches!(
            p.check(&spec("Bad:Tag")),
            Err(ProviderError::Invalid(_))
        ));
    }

    #[test]
    fn remote_timeouts_include_the_backstop() {
        let now = Timestamp::now();
        assert_eq!(timeout_secs(now.plus_ms(300_000), now), 330);
        assert_eq!(timeout_secs(now.plus_ms(1), now), 31);
        assert_eq!(timeout_secs(now.plus_ms(-5_000), now), 30);
    }

    #[test]
    fn cpu_time_integrates_the_reported_rate() {
        let t0 = Instant::now();
        let mut c = CpuClock::default();
        assert_eq!(c.read(t0), 0);
        c.set_rate(t0, 0.5);
        assert_eq!(c.read(t0 + Duration::from_secs(2)), 1_000_000_000);
        c.set_rate(t0 + Duration::from_secs(2), 2.0);
        assert_eq!(c.read(t0 + Duration::from_secs(3)), 3_000_000_000);
        c.stop(t0 + Duration::from_secs(3));
        assert_eq!(c.read(t0 + Duration::from_secs(60)), 3_000_000_000);
    }

    #[test]
    fn errors_map_to_quantbox_codes_with_e2b_messages() {
        let api = |status: u16, body: &str| Error::Api {
            what: "creating an E2B sandbox".into(),
            status,
            error: crate::model::ApiError::from_response(status, body.as_bytes()),
            attempts: 1,
        };
        let m = |e: ProviderError| (std::mem::discriminant(&e), e.to_string());
        let (d, s) = m(provider_error(api(
            401,
            r#"{"code":401,"message":"Invalid API key"}"#,
        )));
        assert_eq!(
            d,
            std::mem::discriminant(&ProviderError::Unavailable(String::new()))
        );
        assert!(
            s.contains("E2B rejected the API key (E2B_API_KEY)") && s.contains("Invalid API key"),
            "{s}"
        );
        let (d, s) = m(provider_error(api(
            429,
            r#"{"code":429,"message":"you have reached the maximum number of concurrent E2B sandboxes (20)"}"#,
        )));
        assert_eq!(
            d,
            std::mem::discriminant(&ProviderError::Exhausted(String::new()))
        );
        assert!(
            s.contains("maximum number of concurrent E2B sandboxes"),
            "{s}"
        );
        assert!(matches!(
            provider_error(api(404, "{}")),
            ProviderError::NotFound(_)
        ));
        assert!(
            matches!(provider_error(api(400, r#"{"code":400,"message":"Timeout must be greater than 0"}"#)), ProviderError::Invalid(m) if m.contains("Timeout must be"))
        );
        assert!(matches!(
            provider_error(api(409, "{}")),
            ProviderError::Precondition(_)
        ));
        for s in [500, 502, 503, 504] {
            assert!(
                matches!(provider_error(api(s, "down")), ProviderError::Unavailable(m) if m.contains("down"))
            );
        }
        let rpc = |code| Error::Rpc {
            what: "starting".into(),
            error: crate::connect::Error::new(code, "m"),
        };
        assert!(matches!(
            provider_error(rpc(Code::Unauthenticated)),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            provider_error(rpc(Code::InvalidArgument)),
            ProviderError::Invalid(_)
        ));
        assert!(matches!(
            provider_error(rpc(Code::ResourceExhausted)),
            ProviderError::Exhausted(_)
        ));
    }

    #[test]
    fn runtime_round_trips() {
        let rt = Runtime {
            e2b_sandbox_id: "abc".into(),
            envd_access_token: Some("tok".into()),
            envd_version: "0.5.7".into(),
            domain: None,
            template_id: "base".into(),
        };
        let v = serde_json::to_value(&rt).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"e2b_sandbox_id": "abc", "envd_access_token": "tok", "envd_version": "0.5.7", "template_id": "base"})
        );
        assert_eq!(serde_json::from_value::<Runtime>(v).unwrap(), rt);
    }
}
