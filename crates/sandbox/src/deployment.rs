//! Deployments: a named group of sandboxes made from one template with one
//! configuration, kept at a size by hand (`scale`) or by the auto-scaler.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A deployment id: `dep_` and 16 characters of `[a-z0-9]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeploymentId(String);

impl DeploymentId {
    pub fn generate() -> Self {
        Self(format!("dep_{}", crate::id::random_chars(16)))
    }

    /// Parses an id, checking its form.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("dep_")?;
        (rest.len() == 16
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What every instance of a deployment is made with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentConfig {
    pub memory_mb: u64,
    pub cpu_count: f64,
    /// Lifetime of each instance, seconds.
    pub timeout_s: u64,
    pub env_vars: BTreeMap<String, String>,
    /// Files written into each instance before the setup commands: path → text.
    pub files: BTreeMap<String, String>,
    /// Shell lines run in order in each new instance; one failing fails the instance.
    pub setup_commands: Vec<String>,
    /// The user the setup commands and file writes run as: `user` or `root`.
    pub setup_user: String,
    pub metadata: BTreeMap<String, String>,
}

/// The auto-scaler's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoScale {
    pub enabled: bool,
    pub min_instances: u32,
    pub max_instances: u32,
    /// Mean CPU of the instances (percent of their quota) above which one is added; below
    /// half of it one is removed.
    pub target_cpu_percent: f64,
}

impl Default for AutoScale {
    fn default() -> Self {
        Self {
            enabled: false,
            min_instances: 1,
            max_instances: 1,
            target_cpu_percent: 70.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Its instances are kept as asked.
    Deployed,
    /// Deleted: all its instances were terminated.
    Deleted,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployed => "deployed",
            Self::Deleted => "deleted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "deployed" => Self::Deployed,
            "deleted" => Self::Deleted,
            _ => return None,
        })
    }
}

/// The durable record of a deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentRecord {
    pub id: DeploymentId,
    pub template: String,
    /// `trading`, `analytics`, `ml` or `custom`.
    pub category: String,
    pub config: DeploymentConfig,
    pub status: DeploymentStatus,
    /// Instances asked for (the maximum when auto-scaling).
    pub desired_instances: u32,
    pub auto_scale: AutoScale,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One entry of a deployment's event log (scaling decisions, failures, replacements).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentEvent {
    pub at: Timestamp,
    /// e.g. `deployed`, `scaled`, `instance_failed`, `autoscale_up`, `autoscale_down`,
    /// `replaced`, `deleted`.
    pub kind: String,
    pub message: String,
    /// Structured facts behind the message (mean CPU, instance ids, errors).
    pub details: serde_json::Value,
}
