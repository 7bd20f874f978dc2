//! Sandboxes as quantbox understands them: ids, specs, records, the [`Provider`] trait
//! that engines implement, the persistence port, and the [`Manager`] that owns every
//! sandbox's lifecycle. No syscalls, no HTTP, no SQL live here.

pub mod deployment;
pub mod deployments;
pub mod health;
pub mod id;
pub mod logs;
pub mod manager;
pub mod model;
pub mod provider;
pub mod store;
pub mod template;
pub mod time;
pub mod usage_history;

pub use deployment::{
    AutoScale, DeploymentConfig, DeploymentEvent, DeploymentId, DeploymentRecord, DeploymentStatus,
};
pub use deployments::{
    DeploymentError, DeploymentView, Deployments, DeploymentsConfig, InstanceFailure,
    InstanceOutcome, ScaleOutcome,
};
pub use health::{Health, HealthStatus};
pub use id::{ExecutionId, SandboxId};
pub use manager::{
    CreateParams, ExecParams, FleetHealth, LifecycleCounts, Manager, ManagerConfig, ManagerError,
    SandboxHealth, SandboxSample, StatusReport, TerminateOutcome, UsageReport, UsageSample,
};
pub use model::*;
pub use provider::{
    Adoption, Counters, LimitSupport, OutputSink, Provider, ProviderError, ProviderInfo,
    Termination, UnexpectedExit,
};
pub use store::{DeploymentStore, SandboxStore, StoreError};
pub use template::{CopyProgress, TemplateDefaults, TemplateInfo};
pub use time::Timestamp;
pub use usage_history::{UsageHistory, UsagePoint};
