//! Templates as the manager and the front ends see them, whatever provider holds them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// What a template gives the sandboxes made from it, where the caller says nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateDefaults {
    pub memory_mb: Option<u64>,
    pub cpu_count: Option<f64>,
    pub timeout_s: Option<u64>,
    pub env_vars: BTreeMap<String, String>,
    /// Run in the background as the sandbox user when a sandbox starts.
    pub start_command: Option<String>,
    pub metadata: BTreeMap<String, String>,
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
