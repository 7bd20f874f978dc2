//! The five sandbox tools of the contract: inputs (with their JSON schemas, defaults and
//! rules), the checks, and the result shapes.

use std::collections::BTreeMap;
use std::time::Duration;

use quantbox_sandbox::{
    CreateParams, ExecParams, ExecStatus, ExecUser, ExecutionRecord, ListFilter, SandboxId,
    SandboxRecord, StatusFilter, Timestamp,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Ops;
use crate::args::int_in;
use crate::error::{ErrorCode, OpError};

fn default_template() -> String {
    "base".into()
}
fn default_sandbox_timeout() -> i64 {
    300
}
fn default_memory_mb() -> i64 {
    512
}
fn default_cpu_count() -> f64 {
    1.0
}
fn default_exec_timeout() -> i64 {
    60
}
fn default_true() -> bool {
    true
}
fn default_log_lines() -> i64 {
    100
}

/// Where a sandbox runs.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProviderName {
    /// The embedded engine: Linux namespaces, cgroups, overlayfs and seccomp on this host.
    Local,
    /// E2B's cloud (needs `E2B_API_KEY` on the server).
    E2b,
}

impl ProviderName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::E2b => "e2b",
        }
    }
}

/// Which user runs a process inside the sandbox.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UserName {
    /// The unprivileged sandbox user (uid 1000, home /home/user).
    User,
    /// Root of the sandbox's own user namespace.
    Root,
}

/// Arguments of `create_e2b_sandbox`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    /// Name of the sandbox: 1 to 64 characters of [A-Za-z0-9._-].
    pub name: String,
    /// Template to start from.
    #[serde(default = "default_template")]
    pub template: String,
    /// Lifetime in seconds (1 to 86400); the sandbox is terminated when it runs out. Default: the template's, else 300.
    #[serde(default)]
    #[schemars(extend("default" = 300), with = "i64")]
    pub timeout: Option<i64>,
    /// Hard memory limit in MB, swap included (64 to the host's memory); exceeding it OOM-kills. Default: the template's, else 512.
    #[serde(default)]
    #[schemars(extend("default" = 512), with = "i64")]
    pub memory_mb: Option<i64>,
    /// CPU quota in cores (0.1 to the host's cores). Default: the template's, else 1.
    #[serde(default)]
    #[schemars(extend("default" = 1.0), with = "f64")]
    pub cpu_count: Option<f64>,
    /// Environment variables of every process in the sandbox.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Labels to find the sandbox by (list_e2b_sandboxes filters on them).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Where to run it; default: the server's configured provider.
    #[serde(default)]
    pub provider: Option<ProviderName>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ResourcesOut {
    pub memory_mb: u64,
    pub cpu_count: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CreateOutput {
    pub sandbox_id: String,
    pub name: String,
    pub template: String,
    pub provider: String,
    pub status: String,
    pub resources: ResourcesOut,
    pub created_at: String,
    pub expires_at: String,
    /// The E2B-compatible envd URL of this sandbox, or null where none is served.
    pub endpoint: Option<String>,
}

/// Arguments of `execute_e2b_process`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecInput {
    /// The sandbox to run in.
    pub sandbox_id: String,
    /// With `args` empty, run through `/bin/sh -c command`; with `args`, the program to execute directly.
    pub command: String,
    /// Arguments; when given, `command` is executed directly with them (no shell).
    #[serde(default)]
    pub args: Vec<String>,
    /// Seconds before the process and its children are killed (1 to 86400).
    #[serde(default = "default_exec_timeout")]
    pub timeout: i64,
    /// Return stdout and stderr (each capped at 1 MiB).
    #[serde(default = "default_true")]
    pub capture_output: bool,
    /// Working directory (absolute); default the user's home.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables of this process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text written to the process's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// `user` (default) or `root` (root of the sandbox's user namespace only).
    #[serde(default)]
    pub user: Option<UserName>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecOutput {
    /// The process id inside the sandbox.
    pub process_id: i64,
    /// The id of this execution in the server's records.
    pub execution_id: String,
    pub sandbox_id: String,
    pub command: String,
    pub args: Vec<String>,
    /// Null when the process was killed by a signal.
    pub exit_code: Option<i32>,
    /// Name of the signal that killed the process, e.g. "SIGKILL".
    pub signal: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub timed_out: bool,
    /// The memory limit killed the process.
    pub oom_killed: bool,
    /// Why the process did not finish normally, when the server knows.
    pub error: Option<String>,
    pub execution_time_ms: i64,
    pub started_at: String,
    pub finished_at: String,
}

/// Which sandboxes to list.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilterIn {
    Running,
    Paused,
    /// Terminated, expired or crashed.
    Stopped,
    #[default]
    All,
}

/// Arguments of `list_e2b_sandboxes`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// `running`, `paused`, `stopped` (terminated, expired or crashed) or `all`.
    #[serde(default)]
    pub status_filter: StatusFilterIn,
    /// Only sandboxes of this deployment.
    #[serde(default)]
    pub deployment_id: Option<String>,
    /// Only sandboxes whose metadata has all these pairs.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxSummary {
    pub sandbox_id: String,
    pub name: String,
    pub status: String,
    /// Why it stopped: terminated, expired, crashed, lost or start_failed.
    pub stop_reason: Option<String>,
    pub template: String,
    pub provider: String,
    pub created_at: String,
    pub expires_at: String,
    pub resources: ResourcesOut,
    pub deployment_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    pub sandboxes: Vec<SandboxSummary>,
    pub total_count: usize,
}

/// Arguments of `terminate_e2b_sandbox`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateInput {
    pub sandbox_id: String,
    /// Kill at once (SIGKILL) instead of SIGTERM, a grace period, then SIGKILL.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TerminateOutput {
    pub sandbox_id: String,
    pub status: String,
    pub message: String,
    pub terminated_at: String,
}

/// Arguments of `get_e2b_sandbox_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusInput {
    pub sandbox_id: String,
    /// How many of the last output lines and lifecycle events to return (0 to 1000).
    #[serde(default = "default_log_lines")]
    pub log_lines: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ResourceUsageOut {
    /// Percent of one core (100 = one full core) over the last second.
    pub cpu_percent: f64,
    pub memory_mb: f64,
    pub memory_limit_mb: f64,
    /// What the sandbox's writable layer holds on disk.
    pub disk_mb: f64,
    pub pids: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthOut {
    /// healthy, degraded or unhealthy.
    pub status: String,
    pub reasons: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct LogLineOut {
    pub timestamp: String,
    /// stdout, stderr or event (a lifecycle event of the sandbox).
    pub stream: String,
    pub line: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusOutput {
    pub sandbox_id: String,
    pub name: String,
    pub status: String,
    pub stop_reason: Option<String>,
    pub uptime_s: f64,
    pub expires_at: String,
    /// Null when nothing can be measured (the sandbox is not running); see `resource_usage_reason`.
    pub resource_usage: Option<ResourceUsageOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_usage_reason: Option<String>,
    /// Processes in the sandbox other than its init.
    pub processes_running: u64,
    pub oom_kills: u64,
    pub health: HealthOut,
    pub recent_logs: Vec<LogLineOut>,
}

const MAX_MAP_ENTRIES: usize = 256;
const MAX_TOTAL_BYTES: usize = 128 * 1024;

/// 1 to 64 characters of [A-Za-z0-9._-].
pub(crate) fn is_short_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(name: &str) -> Result<(), OpError> {
    if is_short_name(name) {
        Ok(())
    } else {
        Err(OpError::invalid(
            "name",
            format!(
                "must be 1 to 64 characters of [A-Za-z0-9._-], got {:?}",
                truncate(name, 80)
            ),
        ))
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// A template name: 1 to 64 of [A-Za-z0-9._-], not starting with `.` or `-`.
pub(crate) fn check_template_name(field: &str, name: &str) -> Result<(), OpError> {
    if is_short_name(name) && !name.starts_with(['.', '-']) {
        Ok(())
    } else {
        Err(OpError::invalid(
            field,
            format!(
                "a template name is 1 to 64 characters of [A-Za-z0-9._-], not starting with `.` or `-` (no `/`), got {:?}",
                truncate(name, 80)
            ),
        ))
    }
}

pub(crate) fn check_env(field: &str, env: &BTreeMap<String, String>) -> Result<(), OpError> {
    if env.len() > MAX_MAP_ENTRIES {
        return Err(OpError::invalid(
            field,
            format!("at most {MAX_MAP_ENTRIES} variables"),
        ));
    }
    for (k, v) in env {
        let valid = !k.is_empty()
            && k.len() <= 256
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(OpError::invalid(
                &format!("{field}.{k}"),
                "variable names are 1 to 256 characters of [A-Za-z0-9_], not starting with a digit",
            ));
        }
        if v.contains('\0') {
            return Err(OpError::invalid(
                &format!("{field}.{k}"),
                "values cannot contain NUL",
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_metadata(meta: &BTreeMap<String, String>) -> Result<(), OpError> {
    if meta.len() > MAX_MAP_ENTRIES {
        return Err(OpError::invalid(
            "metadata",
            format!("at most {MAX_MAP_ENTRIES} pairs"),
        ));
    }
    for (k, v) in meta {
        if k.is_empty() || k.len() > 256 || v.len() > 4096 {
            return Err(OpError::invalid(
                &format!("metadata.{}", truncate(k, 40)),
                "keys are 1 to 256 bytes and values at most 4096 bytes",
            ));
        }
    }
    Ok(())
}

pub(crate) fn parse_id(s: &str) -> Result<SandboxId, OpError> {
    SandboxId::parse(s).map_err(|e| OpError::invalid("sandbox_id", e.to_string()))
}

pub(crate) fn ts(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// Name of a signal number, e.g. 9 → "SIGKILL".
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("SIG{sig}"),
    };
    name.to_owned()
}

fn summary(r: &SandboxRecord) -> SandboxSummary {
    SandboxSummary {
        sandbox_id: r.id.to_string(),
        name: r.name.clone(),
        status: r.status.as_str().to_owned(),
        stop_reason: r.stop_reason.map(|s| s.as_str().to_owned()),
        template: r.template.clone(),
        provider: r.provider.clone(),
        created_at: ts(r.created_at),
        expires_at: ts(r.expires_at),
        resources: ResourcesOut {
            memory_mb: r.resources.memory_mb,
            cpu_count: r.resources.cpu_count,
        },
        deployment_id: r.deployment_id.clone(),
        metadata: r.metadata.clone(),
    }
}

pub fn exec_output(r: &ExecutionRecord) -> ExecOutput {
    let finished = r.finished_at.unwrap_or(r.started_at);
    ExecOutput {
        process_id: r.outcome.pid,
        execution_id: r.id.to_string(),
        sandbox_id: r.sandbox_id.to_string(),
        command: r.command.clone(),
        args: r.args.clone(),
        exit_code: r.outcome.exit_code,
        signal: r.outcome.signal.map(signal_name),
        stdout: String::from_utf8_lossy(&r.outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&r.outcome.stderr).into_owned(),
        stdout_truncated: r.outcome.stdout_truncated,
        stderr_truncated: r.outcome.stderr_truncated,
        timed_out: r.outcome.timed_out,
        oom_killed: r.outcome.oom_killed,
        error: r
            .error
            .clone()
            .or_else(|| (r.status == ExecStatus::Interrupted).then(|| "interrupted".to_owned())),
        execution_time_ms: finished.ms_since(r.started_at),
        started_at: ts(r.started_at),
        finished_at: ts(finished),
    }
}

impl Ops {
    pub async fn create_e2b_sandbox(&self, input: CreateInput) -> Result<CreateOutput, OpError> {
        check_name(&input.name)?;
        check_template_name("template", &input.template)?;
        let defaults = self.template_defaults(&input.template);
        let timeout = int_in(
            "timeout",
            input.timeout.unwrap_or(
                defaults
                    .timeout_s
                    .map_or(default_sandbox_timeout(), |t| t as i64),
            ),
            1,
            86_400,
        )?;
        let memory_mb = int_in(
            "memory_mb",
            input
                .memory_mb
                .unwrap_or(defaults.memory_mb.map_or(default_memory_mb(), |m| m as i64)),
            64,
            self.limits.host_memory_mb as i64,
        )?;
        let cpu_count = input
            .cpu_count
            .unwrap_or(defaults.cpu_count.unwrap_or(default_cpu_count()));
        if !(cpu_count.is_finite() && cpu_count >= 0.1 && cpu_count <= self.limits.host_cpus) {
            return Err(OpError::invalid(
                "cpu_count",
                format!(
                    "must be between 0.1 and {} (this host's cores), got {cpu_count}",
                    self.limits.host_cpus
                ),
            ));
        }
        let mut env_vars = defaults.env_vars.clone();
        env_vars.extend(input.env_vars);
        let mut metadata = defaults.metadata.clone();
        metadata.extend(input.metadata);
        let input = CreateInput {
            env_vars,
            metadata,
            ..input
        };
        check_env("env_vars", &input.env_vars)?;
        check_metadata(&input.metadata)?;
        let provider = input.provider.map(|p| p.as_str().to_owned());
        if let Some(p) = &provider
            && self.manager.provider(p).is_none()
        {
            let hint = if p == "e2b" {
                "set E2B_API_KEY on the server to use E2B's cloud"
            } else {
                "it is not configured on this server"
            };
            return Err(OpError::new(
                ErrorCode::Unavailable,
                format!("provider `{p}` is unavailable: {hint}"),
            ));
        }
        let template_known = self
            .manager
            .provider(
                provider
                    .as_deref()
                    .unwrap_or(&self.manager.config().default_provider),
            )
            .is_some_and(|p| p.templates().contains(&input.template));
        if !template_known {
            return Err(OpError::not_found(format!(
                "template: no template named `{}` (known: {})",
                input.template,
                self.templates().join(", ")
            ))
            .with_details(json!({"field": "template"})));
        }
        let rec = self
            .manager
            .create(CreateParams {
                name: input.name,
                template: input.template,
                timeout: Duration::from_secs(timeout as u64),
                memory_mb: memory_mb as u64,
                cpu_count,
                env_vars: input.env_vars,
                metadata: input.metadata,
                provider,
                deployment_id: None,
            })
            .await?;
        if let Some(cmd) = defaults.start_command {
            // The template's start command runs in the background for the sandbox's
            // whole life; its output goes to the sandbox's log.
            let mgr = self.manager.clone();
            // The manager gives it the sandbox's own variables.
            let (id, env) = (rec.id.clone(), BTreeMap::new());
            let lifetime = Duration::from_secs(timeout as u64);
            tokio::spawn(async move {
                let params = ExecParams {
                    command: cmd,
                    args: Vec::new(),
                    env,
                    cwd: None,
                    user: ExecUser::User,
                    stdin: None,
                    timeout: lifetime,
                    capture_output: false,
                    on_output: None,
                    cancel: None,
                    control: None,
                };
                if let Err(e) = mgr.exec(&id, params).await {
                    tracing::warn!(sandbox = %id, error = %e, "the template's start command failed");
                }
            });
        }
        Ok(CreateOutput {
            sandbox_id: rec.id.to_string(),
            name: rec.name,
            template: rec.template,
            provider: rec.provider,
            status: rec.status.as_str().to_owned(),
            resources: ResourcesOut {
                memory_mb: rec.resources.memory_mb,
                cpu_count: rec.resources.cpu_count,
            },
            created_at: ts(rec.created_at),
            expires_at: ts(rec.expires_at),
            endpoint: None,
        })
    }

    pub async fn execute_e2b_process(&self, input: ExecInput) -> Result<ExecOutput, OpError> {
        let id = parse_id(&input.sandbox_id)?;
        if input.command.trim().is_empty() {
            return Err(OpError::invalid("command", "must not be empty"));
        }
        if input.command.contains('\0') || input.args.iter().any(|a| a.contains('\0')) {
            return Err(OpError::invalid(
                "command",
                "the command and its args cannot contain NUL",
            ));
        }
        let timeout = int_in("timeout", input.timeout, 1, 86_400)?;
        check_env("env", &input.env)?;
        if let Some(cwd) = &input.cwd
            && (!cwd.starts_with('/') || cwd.contains('\0'))
        {
            return Err(OpError::invalid(
                "cwd",
                format!("must be an absolute path, got {:?}", truncate(cwd, 80)),
            ));
        }
        let size = input.command.len()
            + input.args.iter().map(|a| a.len() + 1).sum::<usize>()
            + input
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        if size > MAX_TOTAL_BYTES {
            return Err(OpError::invalid(
                "command",
                format!(
                    "the command, args and env together are {size} bytes; at most {MAX_TOTAL_BYTES} (pass large data through stdin)"
                ),
            ));
        }
        if input.stdin.as_ref().is_some_and(|s| s.len() > 16 << 20) {
            return Err(OpError::invalid("stdin", "at most 16 MiB"));
        }
        let user = match input.user.unwrap_or(UserName::User) {
            UserName::User => ExecUser::User,
            UserName::Root => ExecUser::Root,
        };
        // The manager lays these over the sandbox's own variables.
        let env = input.env;
        let rec = self
            .manager
            .exec(
                &id,
                ExecParams {
                    command: input.command,
                    args: input.args,
                    env,
                    cwd: input.cwd,
                    user,
                    stdin: input.stdin.map(String::into_bytes),
                    timeout: Duration::from_secs(timeout as u64),
                    capture_output: input.capture_output,
                    on_output: None,
                    cancel: None,
                    control: None,
                },
            )
            .await?;
        Ok(exec_output(&rec))
    }

    pub async fn list_e2b_sandboxes(&self, input: ListInput) -> Result<ListOutput, OpError> {
        check_metadata(&input.metadata)?;
        let status = match input.status_filter {
            StatusFilterIn::Running => Some(StatusFilter::Running),
            StatusFilterIn::Paused => Some(StatusFilter::Paused),
            StatusFilterIn::Stopped => Some(StatusFilter::Stopped),
            StatusFilterIn::All => None,
        };
        let records = self.manager.list(&ListFilter {
            status,
            deployment_id: input.deployment_id,
            metadata: input.metadata,
        })?;
        let sandboxes: Vec<SandboxSummary> = records.iter().map(summary).collect();
        Ok(ListOutput {
            total_count: sandboxes.len(),
            sandboxes,
        })
    }

    pub async fn terminate_e2b_sandbox(
        &self,
        input: TerminateInput,
    ) -> Result<TerminateOutput, OpError> {
        let id = parse_id(&input.sandbox_id)?;
        let out = self.manager.terminate(&id, input.force).await?;
        let at = out.record.stopped_at.unwrap_or_else(Timestamp::now);
        let reason = out.record.stop_reason.map_or("stopped", |r| r.as_str());
        let message = if out.already_stopped {
            format!(
                "sandbox {id} was already stopped ({reason}) at {}; nothing to do",
                ts(at)
            )
        } else if input.force {
            format!("sandbox {id} was killed; nothing of it is left on the host")
        } else {
            format!("sandbox {id} was terminated; nothing of it is left on the host")
        };
        Ok(TerminateOutput {
            sandbox_id: id.to_string(),
            status: "terminated".into(),
            message,
            terminated_at: ts(at),
        })
    }

    pub async fn get_e2b_sandbox_status(
        &self,
        input: StatusInput,
    ) -> Result<StatusOutput, OpError> {
        let id = parse_id(&input.sandbox_id)?;
        let n = int_in("log_lines", input.log_lines, 0, 1000)?;
        let st = self.manager.status(&id, n as usize).await?;
        let r = &st.record;
        Ok(StatusOutput {
            sandbox_id: r.id.to_string(),
            name: r.name.clone(),
            status: r.status.as_str().to_owned(),
            stop_reason: r.stop_reason.map(|s| s.as_str().to_owned()),
            uptime_s: st.uptime_s,
            expires_at: ts(r.expires_at),
            resource_usage_reason: st.usage.is_none().then(|| {
                format!(
                    "the sandbox is {}: there is nothing to measure",
                    r.status.as_str()
                )
            }),
            resource_usage: st.usage.map(|u| ResourceUsageOut {
                cpu_percent: u.cpu_percent,
                memory_mb: u.memory_mb,
                memory_limit_mb: u.memory_limit_mb,
                disk_mb: u.disk_mb,
                pids: u.pids,
            }),
            processes_running: st.processes_running,
            oom_kills: st.oom_kills,
            health: HealthOut {
                status: st.health.status.as_str().to_owned(),
                reasons: st.health.reasons,
            },
            recent_logs: st
                .recent_logs
                .into_iter()
                .map(|l| LogLineOut {
                    timestamp: ts(l.at),
                    stream: l.stream.as_str().to_owned(),
                    line: l.line,
                })
                .collect(),
        })
    }
}

/// Arguments of the lifetime change (REST `POST /api/v1/sandboxes/{id}/timeout`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutInput {
    pub sandbox_id: String,
    /// The rest of the sandbox's lifetime, seconds from now (1 to 86400); for a paused
    /// sandbox, from when it resumes.
    pub timeout: i64,
}

/// What pause, resume and a lifetime change return.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LifecycleOutput {
    pub sandbox_id: String,
    pub status: String,
    pub expires_at: String,
    /// While paused, the lifetime left when it resumes, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_s: Option<f64>,
    pub message: String,
}

fn lifecycle_out(r: &SandboxRecord, message: String) -> LifecycleOutput {
    LifecycleOutput {
        sandbox_id: r.id.to_string(),
        status: r.status.as_str().to_owned(),
        expires_at: ts(r.expires_at),
        remaining_s: r
            .paused_at
            .map(|p| r.expires_at.ms_since(p).max(0) as f64 / 1000.0),
        message,
    }
}

impl Ops {
    /// Freezes a running sandbox (no CPU; memory and files kept; lifetime clock stopped).
    pub async fn pause_sandbox(&self, sandbox_id: &str) -> Result<LifecycleOutput, OpError> {
        let id = parse_id(sandbox_id)?;
        let r = self.manager.pause(&id).await?;
        Ok(lifecycle_out(
            &r,
            format!("sandbox {id} is paused; its lifetime clock stopped"),
        ))
    }

    /// Thaws a paused sandbox.
    pub async fn resume_sandbox(&self, sandbox_id: &str) -> Result<LifecycleOutput, OpError> {
        let id = parse_id(sandbox_id)?;
        let r = self.manager.resume(&id).await?;
        Ok(lifecycle_out(
            &r,
            format!(
                "sandbox {id} runs again; it expires at {}",
                ts(r.expires_at)
            ),
        ))
    }

    /// Extends or shortens a sandbox's lifetime.
    pub async fn set_sandbox_timeout(
        &self,
        input: TimeoutInput,
    ) -> Result<LifecycleOutput, OpError> {
        let id = parse_id(&input.sandbox_id)?;
        let t = int_in("timeout", input.timeout, 1, 86_400)?;
        let r = self
            .manager
            .set_timeout(&id, Duration::from_secs(t as u64))
            .await?;
        Ok(lifecycle_out(
            &r,
            format!("sandbox {id}'s lifetime is now {t} s"),
        ))
    }
}
