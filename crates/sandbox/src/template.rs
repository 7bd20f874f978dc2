//! Templates as the manager and the front ends see them, whatever provider holds them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// What a template gives the sandboxes made from it, where the caller says nothing.
/// Also the local provider's manifest format: every field may be absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplateDefaults {
    /// Memory limit, MiB.
    pub memory_mb: Option<u64>,
    /// CPU limit, cores.
    pub cpu_count: Option<f64>,
    /// Lifetime, seconds.
    pub timeout_s: Option<u64>,
    /// Environment of the sandbox's processes.
    pub env_vars: BTreeMap<String, String>,
    /// Run in the background as the sandbox user when a sandbox starts.
    pub start_command: Option<String>,
    /// Free-form labels.
    pub metadata: BTreeMap<String, String>,
    /// Free-form category (for listings).
    pub category: Option<String>,
}

/// A template in a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateInfo {
    pub name: String,
    /// The id of its topmost layer (unique per template).
    pub id: String,
    pub provider: String,
    pub builtin: bool,
    pub layers: usize,
    /// Bytes and entries of the layers this template added itself.
    pub size_bytes: u64,
    pub files_count: u64,
    /// Where it came from: built in, an import, an export of a sandbox.
    pub source: String,
    /// The template it was exported from, if any.
    pub parent: Option<String>,
    pub created_at: Timestamp,
    pub defaults: TemplateDefaults,
}

/// Told of progress during a long copy: bytes and entries so far.
pub type CopyProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;
