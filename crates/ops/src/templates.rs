//! `export_e2b_template`, and the template verbs of REST and the CLI (list, import,
//! delete).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use quantbox_sandbox::{CopyProgress, TemplateDefaults, TemplateInfo, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Ops;
use crate::args::int_in;
use crate::error::{ErrorCode, OpError};
use crate::sandboxes::{check_env, check_metadata, check_template_name, parse_id, ts};

/// Arguments of `export_e2b_template`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportInput {
    /// The running (or paused) sandbox whose filesystem becomes the template.
    pub sandbox_id: String,
    /// Name of the new template: 1 to 64 of [A-Za-z0-9._-].
    pub template_name: String,
    /// Also take the user's home directory (/home/user); /tmp is never taken.
    #[serde(default)]
    pub include_data: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExportOutput {
    /// The id of the template's new layer.
    pub template_id: String,
    pub template_name: String,
    pub sandbox_id: String,
    /// The template the sandbox was made from; the new one is it plus the sandbox's changes.
    pub base_template: String,
    pub include_data: bool,
    pub exported_at: String,
    /// What the new layer holds.
    pub size_mb: f64,
    pub files_count: u64,
}

/// Arguments of a template import (REST `POST /api/v1/templates`, `quantbox template import`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportInput {
    pub name: String,
    /// A root filesystem on the server's machine: a directory, or a tar archive (plain or gzip).
    pub source: String,
    #[serde(default)]
    pub memory_mb: Option<i64>,
    #[serde(default)]
    pub cpu_count: Option<f64>,
    /// Default lifetime of its sandboxes, seconds.
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Run in the background as the sandbox user when a sandbox starts.
    #[serde(default)]
    pub start_command: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub category: Option<String>,
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

pub(crate) fn template_json(t: &TemplateInfo, in_use: bool) -> Value {
    json!({
        "name": t.name,
        "template_id": t.id,
        "provider": t.provider,
        "builtin": t.builtin,
        "layers": t.layers,
        "size_mb": mb(t.size_bytes),
        "files_count": t.files_count,
        "source": t.source,
        "base_template": t.parent,
        "created_at": ts(t.created_at),
        "in_use": in_use,
        "defaults": {
            "memory_mb": t.defaults.memory_mb,
            "cpu_count": t.defaults.cpu_count,
            "timeout": t.defaults.timeout_s,
            "env_vars": t.defaults.env_vars,
            "start_command": t.defaults.start_command,
            "metadata": t.defaults.metadata,
            "category": t.defaults.category,
        },
    })
}

fn no_progress() -> CopyProgress {
    Arc::new(|_, _| {})
}

impl Ops {
    fn templates_in_use(&self) -> Vec<String> {
        let mut v = self.manager.templates_in_use();
        v.extend(self.deployments.templates_in_use());
        v
    }

    /// Every template of the default provider.
    pub fn list_templates(&self) -> Result<Value, OpError> {
        let in_use = self.templates_in_use();
        let list: Vec<Value> = self
            .default_provider()?
            .template_info()
            .iter()
            .map(|t| template_json(t, in_use.contains(&t.name)))
            .collect();
        Ok(json!({"total_count": list.len(), "templates": list}))
    }

    pub async fn export_e2b_template(&self, input: ExportInput) -> Result<ExportOutput, OpError> {
        self.export_with_progress(input, no_progress()).await
    }

    /// `export_e2b_template`, telling `progress` how far the copy is.
    pub async fn export_with_progress(
        &self,
        input: ExportInput,
        progress: CopyProgress,
    ) -> Result<ExportOutput, OpError> {
        let id = parse_id(&input.sandbox_id)?;
        check_template_name("template_name", &input.template_name)?;
        let base = self.manager.get(&id)?.template;
        let t = self
            .manager
            .export_template(&id, &input.template_name, input.include_data, progress)
            .await?;
        Ok(ExportOutput {
            template_id: t.id,
            template_name: t.name,
            sandbox_id: id.to_string(),
            base_template: base,
            include_data: input.include_data,
            exported_at: ts(Timestamp::now()),
            size_mb: mb(t.size_bytes),
            files_count: t.files_count,
        })
    }

    /// Makes a template from a root filesystem on this machine.
    pub async fn import_template(
        &self,
        input: ImportInput,
        progress: CopyProgress,
    ) -> Result<Value, OpError> {
        check_template_name("name", &input.name)?;
        let source = PathBuf::from(&input.source);
        if !source.is_absolute() {
            return Err(OpError::invalid(
                "source",
                "must be an absolute path on the server's machine",
            ));
        }
        if !source.exists() {
            return Err(OpError::invalid(
                "source",
                format!(
                    "{} does not exist on the server's machine",
                    source.display()
                ),
            ));
        }
        let memory_mb = match input.memory_mb {
            Some(m) => Some(int_in("memory_mb", m, 64, self.limits.host_memory_mb as i64)? as u64),
            None => None,
        };
        if let Some(c) = input.cpu_count
            && !(c.is_finite() && c >= 0.1 && c <= self.limits.host_cpus)
        {
            return Err(OpError::invalid(
                "cpu_count",
                format!("must be between 0.1 and {}, got {c}", self.limits.host_cpus),
            ));
        }
        let timeout_s = match input.timeout {
            Some(t) => Some(int_in("timeout", t, 1, 86_400)? as u64),
            None => None,
        };
        check_env("env_vars", &input.env_vars)?;
        check_metadata(&input.metadata)?;
        let defaults = TemplateDefaults {
            memory_mb,
            cpu_count: input.cpu_count,
            timeout_s,
            env_vars: input.env_vars,
            start_command: input.start_command.filter(|s| !s.trim().is_empty()),
            metadata: input.metadata,
            category: input.category,
        };
        let t = self
            .default_provider()?
            .import_template(&input.name, &source, defaults, progress)
            .await
            .map_err(|e| {
                // The provider names the template `template_name`, as export calls it;
                // an import calls it `name`.
                let mut e = OpError::from(e);
                if let Some(rest) = e.message.strip_prefix("template_name: ") {
                    e.message = format!("name: {rest}");
                }
                e
            })?;
        Ok(template_json(&t, false))
    }

    /// Deletes a template nothing uses.
    pub async fn delete_template(&self, name: &str) -> Result<Value, OpError> {
        check_template_name("name", name)?;
        let in_use = self.templates_in_use();
        self.default_provider()?
            .delete_template(name, &in_use)
            .await
            .map_err(OpError::from)?;
        Ok(json!({"name": name, "message": format!("template `{name}` deleted")}))
    }

    fn default_provider(&self) -> Result<&Arc<dyn quantbox_sandbox::Provider>, OpError> {
        self.manager
            .provider(&self.manager.config().default_provider)
            .ok_or_else(|| {
                OpError::new(
                    ErrorCode::Unavailable,
                    "the default provider is not configured",
                )
            })
    }

    /// The defaults of template `name` of the default provider, if it has any.
    pub(crate) fn template_defaults(&self, name: &str) -> TemplateDefaults {
        self.manager
            .provider(&self.manager.config().default_provider)
            .and_then(|p| p.template_info().into_iter().find(|t| t.name == name))
            .map(|t| t.defaults)
            .unwrap_or_default()
    }
}
