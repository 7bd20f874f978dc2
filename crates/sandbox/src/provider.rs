//! The seam between the manager and whatever runs sandboxes (the embedded `local`
//! engine, E2B's cloud). A provider owns host resources; the manager owns records,
//! lifetimes and logs. Providers never touch the store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::id::SandboxId;
use crate::model::{ExecOutcome, ExecRequest, ResourceUsage, SandboxSpec, Stream};

/// What went wrong in a provider, classified so front ends can map it to the
/// contract's error codes.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request cannot be honoured as asked (bad template, cwd, limits).
    #[error("{0}")]
    Invalid(String),
    /// The sandbox is not known to this provider (any more).
    #[error("sandbox {0} is not running")]
    NotRunning(SandboxId),
    /// Something named does not exist (a template).
    #[error("{0}")]
    NotFound(String),
    /// Something of that name exists already (a template).
    #[error("{0}")]
    Exists(String),
    /// The provider cannot do this at all here (rootless without cgroups, no API key).
    #[error("{0}")]
    Unavailable(String),
    /// The host is out of something (pids, memory, disk).
    #[error("{0}")]
    Exhausted(String),
    /// A precondition does not hold (for example the requested limit cannot be enforced).
    #[error("{0}")]
    Precondition(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl ProviderError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Which limits a provider can enforce where it runs, and why not where it cannot.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderInfo {
    pub name: &'static str,
    /// `available`, `unavailable` (it should work here and does not), or
    /// `not_configured` (it needs settings nobody gave, e.g. an API key: not a fault).
    pub status: &'static str,
    pub detail: String,
    /// e.g. `{"memory": true, "cpu": true, "pids": true, "freezer": true}`.
    pub limits: Vec<LimitSupport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LimitSupport {
    pub limit: &'static str,
    pub enforced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Monotonic counters of a sandbox.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub cpu_usage_ns: u64,
    pub oom_kills: u64,
    pub pids_limit_hits: u64,
}

/// Receives output as it is read, for the sandbox's live log.
pub type OutputSink = Arc<dyn Fn(Stream, &[u8]) + Send + Sync>;

/// How to end a sandbox.
#[derive(Clone, Copy, Debug)]
pub enum Termination {
    /// SIGTERM to every process, then SIGKILL after the grace period.
    Graceful { grace: Duration },
    /// SIGKILL at once.
    Force,
}

/// A sandbox that ended without being asked to.
#[derive(Clone, Debug)]
pub struct UnexpectedExit {
    pub id: SandboxId,
    pub detail: String,
}

/// What adoption after a restart found.
#[derive(Debug)]
pub enum Adoption {
    /// The sandbox is alive and attached again.
    Adopted,
    /// It was dead or half made; whatever was left of it has been removed.
    Gone { detail: String },
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    fn info(&self) -> ProviderInfo;

    /// Names of the templates this provider can start.
    fn templates(&self) -> Vec<String>;

    /// GPU device nodes this provider makes visible in its sandboxes (e.g. `nvidia0`);
    /// empty when it passes none in.
    fn gpu_devices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Refuses, before anything is created, a spec this provider cannot honour here.
    fn check(&self, spec: &SandboxSpec) -> Result<(), ProviderError>;

    /// Creates and starts the sandbox. Returns provider state to persist for
    /// [`Provider::adopt`]. On error nothing of the sandbox is left behind.
    async fn create(&self, spec: &SandboxSpec) -> Result<serde_json::Value, ProviderError>;

    /// Runs a process and waits for it (or for its timeout).
    async fn exec(
        &self,
        id: &SandboxId,
        req: &ExecRequest,
        sink: OutputSink,
    ) -> Result<ExecOutcome, ProviderError>;

    /// Ends the sandbox and removes everything it had on the host. Returns once that is
    /// done. Ending a sandbox the provider no longer knows is not an error.
    async fn terminate(&self, id: &SandboxId, how: Termination) -> Result<(), ProviderError>;

    /// Measured use of the sandbox's resources. `disk`: also measure its writable layer
    /// (a walk of its files: the sampler asks for it only now and then); without it,
    /// `disk_bytes` is 0.
    async fn usage(&self, id: &SandboxId, disk: bool) -> Result<ResourceUsage, ProviderError>;

    /// The cheap subset of [`Provider::usage`], read every sampling interval.
    async fn counters(&self, id: &SandboxId) -> Result<Counters, ProviderError>;

    /// Round trip to the sandbox's init; an error or a timeout means it is unresponsive.
    async fn ping(&self, id: &SandboxId, timeout: Duration) -> Result<Duration, ProviderError>;

    /// Tells the sandbox its new deadline, as a backstop should the manager be gone.
    async fn set_deadline(
        &self,
        id: &SandboxId,
        expires_at: crate::time::Timestamp,
    ) -> Result<(), ProviderError>;

    /// Attaches again to a sandbox made before a restart, or cleans up what is left of it.
    /// A `paused` sandbox cannot answer (it is frozen) and is not asked to.
    async fn adopt(
        &self,
        id: &SandboxId,
        runtime: &serde_json::Value,
        paused: bool,
    ) -> Result<Adoption, ProviderError>;

    /// Freezes every process of the sandbox: no CPU, memory and files kept.
    async fn pause(&self, id: &SandboxId) -> Result<(), ProviderError> {
        Err(ProviderError::Unavailable(format!(
            "provider {} cannot pause sandbox {id}",
            self.name()
        )))
    }

    /// Templates with their sizes, sources and defaults.
    fn template_info(&self) -> Vec<crate::template::TemplateInfo> {
        Vec::new()
    }

    /// Makes template `name` from a root filesystem (a directory or a tar archive) at
    /// `source` on this machine.
    async fn import_template(
        &self,
        name: &str,
        source: &std::path::Path,
        defaults: crate::template::TemplateDefaults,
        progress: crate::template::CopyProgress,
    ) -> Result<crate::template::TemplateInfo, ProviderError> {
        let _ = (source, defaults, progress);
        Err(ProviderError::Unavailable(format!(
            "provider {} cannot import template {name}",
            self.name()
        )))
    }

    /// Makes template `name` from a running or paused sandbox: its template's layers plus
    /// its changes (without the user's home unless `include_data`; never /tmp). The
    /// sandbox is frozen while its files are copied, and keeps running.
    async fn export_template(
        &self,
        id: &SandboxId,
        name: &str,
        include_data: bool,
        defaults: crate::template::TemplateDefaults,
        progress: crate::template::CopyProgress,
    ) -> Result<crate::template::TemplateInfo, ProviderError> {
        let _ = (name, include_data, defaults, progress);
        Err(ProviderError::Unavailable(format!(
            "provider {} cannot export sandbox {id}",
            self.name()
        )))
    }

    /// Deletes template `name` unless it is one of `in_use` or built in.
    async fn delete_template(&self, name: &str, in_use: &[String]) -> Result<(), ProviderError> {
        let _ = in_use;
        Err(ProviderError::Unavailable(format!(
            "provider {} cannot delete template {name}",
            self.name()
        )))
    }

    /// Thaws a paused sandbox.
    async fn resume(&self, id: &SandboxId) -> Result<(), ProviderError> {
        Err(ProviderError::Unavailable(format!(
            "provider {} cannot resume sandbox {id}",
            self.name()
        )))
    }

    /// Unexpected ends of sandboxes are sent here (set once, by the manager).
    fn watch_exits(&self, tx: tokio::sync::mpsc::UnboundedSender<UnexpectedExit>);

    /// Called once, after the manager has adopted every sandbox it knows: whatever else
    /// of this provider is on the host is left over and may be removed, and background
    /// work (a warm pool) may start.
    async fn ready(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    /// The server is stopping: release what is not a user's sandbox (running sandboxes
    /// stay, to be adopted at the next start).
    async fn shutdown(&self) {}
}
