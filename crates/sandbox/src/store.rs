//! The persistence port of the manager. The `store` crate implements it; the manager
//! never sees SQL.

use crate::deployment::{DeploymentEvent, DeploymentId, DeploymentRecord};
use crate::id::SandboxId;
use crate::model::{ExecutionRecord, ListFilter, LogLine, SandboxRecord};

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

pub trait SandboxStore: Send + Sync + 'static {
    /// Inserts or replaces the whole record.
    fn put_sandbox(&self, r: &SandboxRecord) -> Result<(), StoreError>;
    fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError>;
    /// Newest first.
    fn list_sandboxes(&self, filter: &ListFilter) -> Result<Vec<SandboxRecord>, StoreError>;
    /// Records whose status is not `stopped`.
    fn active_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError>;

    /// Inserts or replaces an execution.
    fn put_execution(&self, e: &ExecutionRecord) -> Result<(), StoreError>;
    fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError>;
    /// Marks executions still `running` as `interrupted`; returns how many.
    fn interrupt_executions(&self, sandbox: Option<&SandboxId>) -> Result<u64, StoreError>;

    /// Appends output lines and events, keeping at most `keep` lines per sandbox.
    fn append_logs(
        &self,
        sandbox: &SandboxId,
        lines: &[LogLine],
        keep: usize,
    ) -> Result<(), StoreError>;
    /// The last `n` lines, oldest first.
    fn recent_logs(&self, sandbox: &SandboxId, n: usize) -> Result<Vec<LogLine>, StoreError>;
}

/// The persistence of deployments.
pub trait DeploymentStore: Send + Sync + 'static {
    /// Inserts or replaces the whole record.
    fn put_deployment(&self, d: &DeploymentRecord) -> Result<(), StoreError>;
    fn get_deployment(&self, id: &DeploymentId) -> Result<Option<DeploymentRecord>, StoreError>;
    /// Newest first; deleted ones only when asked.
    fn list_deployments(&self, include_deleted: bool) -> Result<Vec<DeploymentRecord>, StoreError>;
    fn append_deployment_event(
        &self,
        id: &DeploymentId,
        event: &DeploymentEvent,
    ) -> Result<(), StoreError>;
    /// The last `n` events, oldest first.
    fn deployment_events(
        &self,
        id: &DeploymentId,
        n: usize,
    ) -> Result<Vec<DeploymentEvent>, StoreError>;
}
