//! What a sandbox and an execution are, independent of any provider or wire format.
//! Front ends convert these to their own shapes; nothing here knows JSON field names of
//! MCP, REST or E2B (serde derives exist for the store's and the runtime's own use).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{ExecutionId, SandboxId};
use crate::time::Timestamp;

/// Limits a sandbox runs under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Hard memory limit, swap included; exceeding it OOM-kills.
    pub memory_mb: u64,
    /// CPU quota in cores (0.5 = half of one core's time).
    pub cpu_count: f64,
    /// Most processes and threads at once.
    pub pids_max: u64,
}

/// What to create.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    pub id: SandboxId,
    pub name: String,
    pub template: String,
    pub resources: Resources,
    /// Lifetime; the manager terminates the sandbox when it runs out.
    pub timeout: Duration,
    pub env_vars: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub deployment_id: Option<String>,
    pub expires_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxStatus {
    /// Host resources are being set up; never visible for long.
    Creating,
    Running,
    Paused,
    Stopped,
}

impl SandboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "stopped" => Self::Stopped,
            _ => return None,
        })
    }
    pub fn is_active(self) -> bool {
        !matches!(self, Self::Stopped)
    }
}

/// Why a sandbox stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Terminated on request.
    Terminated,
    /// Its lifetime ran out.
    Expired,
    /// Its init process ended without being asked to.
    Crashed,
    /// Found dead (or half made) when the server started again.
    Lost,
    /// Creation failed; what was made was removed.
    StartFailed,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminated => "terminated",
            Self::Expired => "expired",
            Self::Crashed => "crashed",
            Self::Lost => "lost",
            Self::StartFailed => "start_failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "terminated" => Self::Terminated,
            "expired" => Self::Expired,
            "crashed" => Self::Crashed,
            "lost" => Self::Lost,
            "start_failed" => Self::StartFailed,
            _ => return None,
        })
    }
    /// Whether the sandbox ended the way its user asked or expected.
    pub fn is_normal(self) -> bool {
        matches!(self, Self::Terminated | Self::Expired)
    }
}

/// The durable record of one sandbox.
#[derive(Clone, Debug)]
pub struct SandboxRecord {
    pub id: SandboxId,
    pub name: String,
    pub template: String,
    pub provider: String,
    pub status: SandboxStatus,
    pub stop_reason: Option<StopReason>,
    pub resources: Resources,
    pub timeout_s: u64,
    pub env_vars: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub deployment_id: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub stopped_at: Option<Timestamp>,
    /// Set while paused: the lifetime clock stops, and `expires_at` moves on by the
    /// paused time at resume.
    pub paused_at: Option<Timestamp>,
    /// Provider-owned state needed to find the sandbox again after a restart.
    pub runtime: serde_json::Value,
}

/// Which user inside the sandbox runs a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecUser {
    /// The unprivileged sandbox user, uid 1000, home `/home/user`.
    User,
    /// Root of the sandbox's own user namespace.
    Root,
}

impl ExecUser {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Root => "root",
        }
    }
}

/// A process to run in a running sandbox.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub id: ExecutionId,
    /// The command as the caller gave it.
    pub command: String,
    pub args: Vec<String>,
    /// What is executed: `["/bin/sh", "-c", command]` when `args` is empty, else
    /// `[command, args...]`.
    pub argv: Vec<String>,
    /// Added to the sandbox's environment (sandbox `env_vars` first, then these).
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub user: ExecUser,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    pub capture_output: bool,
    /// Becomes `true` to kill the process (a caller stopping a background run).
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
    /// Live control while it runs: its pid at start, input, signals.
    pub control: Option<ExecControl>,
}

/// What a caller can do to a process while it runs (E2B's envd drives processes so:
/// the pid as soon as it starts, input sent piece by piece, signals).
#[derive(Clone)]
pub struct ExecControl {
    /// Called once, with the process id inside the sandbox, as soon as it has started.
    pub on_start: std::sync::Arc<dyn Fn(i64) + Send + Sync>,
    /// Give the process a stdin pipe fed by [`ExecCommand::Input`] (without it, and
    /// without [`ExecRequest::stdin`], stdin is `/dev/null`).
    pub stdin: bool,
    /// Run it on a terminal of this size (columns, rows): its stdin, stdout and stderr
    /// are the terminal, its output arrives as [`Stream::Stdout`], input goes to the
    /// terminal, and [`ExecCommand::Resize`] changes the size.
    pub pty: Option<(u16, u16)>,
    /// Commands while it runs; the provider takes the receiver once.
    pub commands:
        std::sync::Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ExecCommand>>>>,
}

impl ExecControl {
    /// Controls with a fresh command channel: the sender is the caller's.
    pub fn new(
        stdin: bool,
        on_start: impl Fn(i64) + Send + Sync + 'static,
    ) -> (ExecControl, tokio::sync::mpsc::UnboundedSender<ExecCommand>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            ExecControl {
                on_start: std::sync::Arc::new(on_start),
                stdin,
                pty: None,
                commands: std::sync::Arc::new(std::sync::Mutex::new(Some(rx))),
            },
            tx,
        )
    }

    /// The command receiver, for the one provider call that runs the process.
    pub fn take_commands(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ExecCommand>> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl std::fmt::Debug for ExecControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecControl")
            .field("stdin", &self.stdin)
            .field("pty", &self.pty)
            .finish_non_exhaustive()
    }
}

/// A command to a running process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecCommand {
    /// Bytes for its stdin (with [`ExecControl::stdin`]).
    Input(Vec<u8>),
    /// End of its stdin.
    CloseInput,
    /// A signal to its process group.
    Signal(i32),
    /// A new terminal size (columns, rows), for a process on a terminal.
    Resize(u16, u16),
}

impl ExecRequest {
    /// The argv convention of the tool contract: a shell when there are no args.
    pub fn argv_for(command: &str, args: &[String]) -> Vec<String> {
        if args.is_empty() {
            vec!["/bin/sh".into(), "-c".into(), command.into()]
        } else {
            std::iter::once(command.to_owned())
                .chain(args.iter().cloned())
                .collect()
        }
    }
}

/// The most output kept per stream of one execution.
pub const OUTPUT_CAP_BYTES: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lifecycle events of the sandbox itself.
    Event,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Event => "event",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "stdout" => Self::Stdout,
            "stderr" => Self::Stderr,
            "event" => Self::Event,
            _ => return None,
        })
    }
}

/// How an execution ended, as the provider saw it.
#[derive(Clone, Debug, Default)]
pub struct ExecOutcome {
    /// The process id inside the sandbox.
    pub pid: i64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Killed because the caller cancelled it.
    pub cancelled: bool,
    /// The sandbox's OOM-kill counter moved while the process ran and the process died
    /// by SIGKILL (or, through a shell, exited with 137): the memory limit killed it.
    pub oom_killed: bool,
    /// The whole sandbox ended while the process ran (terminated, expired, crashed), so
    /// the process was killed with everything else.
    pub sandbox_ended: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    Running,
    Finished,
    /// The process could not be started (no such file, bad cwd, ...).
    StartFailed,
    /// The server restarted while it ran; its outcome is unknown.
    Interrupted,
}

impl ExecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
            Self::StartFailed => "start_failed",
            Self::Interrupted => "interrupted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "finished" => Self::Finished,
            "start_failed" => Self::StartFailed,
            "interrupted" => Self::Interrupted,
            _ => return None,
        })
    }
}

/// The durable record of one execution.
#[derive(Clone, Debug)]
pub struct ExecutionRecord {
    pub id: ExecutionId,
    pub sandbox_id: SandboxId,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    pub user: ExecUser,
    pub status: ExecStatus,
    pub outcome: ExecOutcome,
    /// Why it could not start, for `StartFailed`.
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

impl ExecutionRecord {
    pub fn execution_time_ms(&self) -> Option<i64> {
        self.finished_at.map(|f| f.ms_since(self.started_at))
    }
}

/// One line of a sandbox's output or one lifecycle event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub at: Timestamp,
    pub stream: Stream,
    pub line: String,
}

/// Measured use of a sandbox's resources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceUsage {
    /// Total CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use (page cache that can be dropped excluded), bytes.
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Highest memory use seen, bytes (where the kernel reports it).
    pub memory_peak_bytes: Option<u64>,
    /// Bytes its writable layer holds on disk.
    pub disk_bytes: u64,
    /// Size of the filesystem its writable layer lives on (what `df /` shows inside
    /// it; a sandbox has no disk quota of its own); 0 when unknown.
    pub disk_total_bytes: u64,
    /// Processes and threads in the sandbox, its init included.
    pub pids: u64,
    pub pids_max: u64,
    /// Times the pids limit refused a fork.
    pub pids_limit_hits: u64,
    /// Processes the memory limit killed.
    pub oom_kills: u64,
}

/// Filter of `list`.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// `None` = all.
    pub status: Option<StatusFilter>,
    pub deployment_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    Running,
    Paused,
    Stopped,
}

impl StatusFilter {
    pub fn matches(self, s: SandboxStatus) -> bool {
        match self {
            Self::Running => matches!(s, SandboxStatus::Running | SandboxStatus::Creating),
            Self::Paused => s == SandboxStatus::Paused,
            Self::Stopped => s == SandboxStatus::Stopped,
        }
    }
}
