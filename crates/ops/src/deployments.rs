//! `deploy_e2b_template`, `scale_e2b_deployment`, and the deployment verbs of REST and
//! the CLI (list, show, delete).

use std::collections::BTreeMap;

use quantbox_sandbox::{
    AutoScale, DeploymentConfig, DeploymentError, DeploymentId, DeploymentRecord, DeploymentView,
    InstanceOutcome,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Ops;
use crate::args::{self, int_in};
use crate::error::{ErrorCode, OpError};
use crate::sandboxes::{UserName, check_env, check_metadata, check_template_name, ts};

/// What a deployment is for.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Trading,
    Analytics,
    Ml,
    Custom,
}

impl Category {
    fn as_str(self) -> &'static str {
        match self {
            Self::Trading => "trading",
            Self::Analytics => "analytics",
            Self::Ml => "ml",
            Self::Custom => "custom",
        }
    }
}

/// Arguments of `deploy_e2b_template`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployInput {
    /// Template every instance starts from.
    pub template_name: String,
    /// `trading`, `analytics`, `ml` or `custom`.
    pub category: Category,
    /// A JSON object (or a string holding one) with any of: `env_vars` (object),
    /// `memory_mb` (64 to the host's memory, default 512), `cpu_count` (default 1),
    /// `timeout` (instance lifetime, seconds, default 3600), `files` (object: path →
    /// text; relative paths are under /home/user), `setup_commands` (array of shell
    /// lines run in order in /home/user; a failure fails the deployment and removes what
    /// was made),
    /// `setup_user` (`user` or `root`, default `user`), `metadata` (object).
    #[serde(default)]
    pub configuration: Option<Value>,
}

fn default_deploy_memory() -> i64 {
    512
}
fn default_deploy_cpu() -> f64 {
    1.0
}
fn default_deploy_timeout() -> i64 {
    3600
}

/// The `configuration` of a deployment, once it is an object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigInput {
    #[serde(default)]
    env_vars: BTreeMap<String, String>,
    #[serde(default = "default_deploy_memory")]
    memory_mb: i64,
    #[serde(default = "default_deploy_cpu")]
    cpu_count: f64,
    #[serde(default = "default_deploy_timeout")]
    timeout: i64,
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default)]
    setup_commands: Vec<String>,
    #[serde(default)]
    setup_user: Option<UserName>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct InstanceOut {
    /// Null when the sandbox could not even be created.
    pub sandbox_id: Option<String>,
    /// `running`, `terminated` or `failed`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeployOutput {
    pub deployment_id: String,
    /// The first instance.
    pub sandbox_id: String,
    pub template: String,
    pub category: String,
    pub status: String,
    pub instances: Vec<InstanceOut>,
}

/// Arguments of `scale_e2b_deployment`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleInput {
    pub deployment_id: String,
    /// Instances wanted (0 stops them all); with `auto_scale`, the most the auto-scaler may run.
    pub instance_count: i64,
    /// Let a controller keep the deployment between `min_instances` and `instance_count`
    /// by the instances' mean CPU, and replace instances that die.
    #[serde(default)]
    pub auto_scale: bool,
    /// With `auto_scale`: the fewest instances (default 1).
    #[serde(default)]
    pub min_instances: Option<i64>,
    /// With `auto_scale`: mean CPU (percent of each instance's quota) above which one is
    /// added; below half of it one is removed (default 70).
    #[serde(default)]
    pub target_cpu_percent: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AutoScaleOut {
    pub enabled: bool,
    pub min_instances: u32,
    pub max_instances: u32,
    pub target_cpu_percent: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScaleOutput {
    pub deployment_id: String,
    pub instances: Vec<InstanceOut>,
    pub total_instances: usize,
    pub running_instances: usize,
    pub failed_count: usize,
    pub auto_scale: AutoScaleOut,
}

fn instance_out(o: &InstanceOutcome) -> InstanceOut {
    InstanceOut {
        sandbox_id: o.sandbox_id.as_ref().map(ToString::to_string),
        status: o.status.to_owned(),
        error: o.error.as_ref().map(|e| e.message.clone()),
    }
}

fn auto_out(a: &AutoScale) -> AutoScaleOut {
    AutoScaleOut {
        enabled: a.enabled,
        min_instances: a.min_instances,
        max_instances: a.max_instances,
        target_cpu_percent: a.target_cpu_percent,
    }
}

pub(crate) fn parse_deployment_id(s: &str) -> Result<DeploymentId, OpError> {
    DeploymentId::parse(s).ok_or_else(|| {
        OpError::invalid(
            "deployment_id",
            format!(
                "`{}` is not a deployment id: ids are `dep_` and 16 characters of [a-z0-9]",
                s.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// A JSON parameter given as an object or as a string holding one (older callers send
/// strings).
pub(crate) fn json_object(field: &str, v: Option<Value>) -> Result<Value, OpError> {
    match v {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(o)) => Ok(Value::Object(o)),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(o)) => Ok(Value::Object(o)),
            Ok(other) => Err(OpError::invalid(
                field,
                format!(
                    "must be a JSON object (or a string holding one); the string holds {}",
                    args::kind(&other)
                ),
            )),
            Err(e) => Err(OpError::invalid(
                field,
                format!("the string is not valid JSON: {e}"),
            )),
        },
        Some(other) => Err(OpError::invalid(
            field,
            format!(
                "must be a JSON object (or a string holding one), not {}",
                args::kind(&other)
            ),
        )),
    }
}

impl From<DeploymentError> for OpError {
    fn from(e: DeploymentError) -> Self {
        match e {
            DeploymentError::NotFound(id) => OpError::not_found(format!(
                "no deployment with id `{id}`; GET /api/v1/deployments lists them"
            )),
            DeploymentError::Failed { message, details } => {
                OpError::new(ErrorCode::FailedPrecondition, message).with_details(details)
            }
            DeploymentError::Manager(m) => m.into(),
        }
    }
}

impl Ops {
    fn deployment_config(&self, v: Value) -> Result<DeploymentConfig, OpError> {
        // Field errors name `configuration.<field>`.
        let c: ConfigInput = args::parse(v).map_err(|mut e| {
            if let Some(f) = e
                .details
                .as_ref()
                .and_then(|d| d["field"].as_str())
                .map(str::to_owned)
            {
                e.message = format!("configuration.{}", e.message);
                e.details = Some(json!({"field": format!("configuration.{f}")}));
            }
            e
        })?;
        let memory = int_in(
            "configuration.memory_mb",
            c.memory_mb,
            64,
            self.limits.host_memory_mb as i64,
        )?;
        if !(c.cpu_count.is_finite() && c.cpu_count >= 0.1 && c.cpu_count <= self.limits.host_cpus)
        {
            return Err(OpError::invalid(
                "configuration.cpu_count",
                format!(
                    "must be between 0.1 and {}, got {}",
                    self.limits.host_cpus, c.cpu_count
                ),
            ));
        }
        let timeout = int_in("configuration.timeout", c.timeout, 1, 86_400)?;
        check_env("configuration.env_vars", &c.env_vars)?;
        check_metadata(&c.metadata)?;
        if c.files.len() > 64 {
            return Err(OpError::invalid("configuration.files", "at most 64 files"));
        }
        let total: usize = c.files.values().map(String::len).sum();
        if total > 16 << 20 {
            return Err(OpError::invalid(
                "configuration.files",
                "at most 16 MiB in all",
            ));
        }
        for p in c.files.keys() {
            if p.is_empty()
                || p.contains('\0')
                || p.ends_with('/')
                || p.split('/').any(|c| c == "..")
            {
                return Err(OpError::invalid(
                    &format!("configuration.files.{p}"),
                    "a file path must be non-empty, name a file (not end in `/`) and have no `..`",
                ));
            }
        }
        if c.setup_commands.len() > 64 {
            return Err(OpError::invalid(
                "configuration.setup_commands",
                "at most 64 commands",
            ));
        }
        if let Some(i) = c
            .setup_commands
            .iter()
            .position(|s| s.trim().is_empty() || s.contains('\0'))
        {
            return Err(OpError::invalid(
                &format!("configuration.setup_commands[{i}]"),
                "must be a non-empty shell line without NUL",
            ));
        }
        Ok(DeploymentConfig {
            memory_mb: memory as u64,
            cpu_count: c.cpu_count,
            timeout_s: timeout as u64,
            env_vars: c.env_vars,
            files: c.files,
            setup_commands: c.setup_commands,
            setup_user: match c.setup_user.unwrap_or(UserName::User) {
                UserName::User => "user".into(),
                UserName::Root => "root".into(),
            },
            metadata: c.metadata,
        })
    }

    pub async fn deploy_e2b_template(&self, input: DeployInput) -> Result<DeployOutput, OpError> {
        check_template_name("template_name", &input.template_name)?;
        let config = self.deployment_config(json_object("configuration", input.configuration)?)?;
        if !self.templates().contains(&input.template_name) {
            return Err(OpError::not_found(format!(
                "template_name: no template named `{}` (known: {})",
                input.template_name,
                self.templates().join(", ")
            ))
            .with_details(json!({"field": "template_name"})));
        }
        let (dep, first) = self
            .deployments
            .deploy(
                input.template_name,
                input.category.as_str().to_owned(),
                config,
            )
            .await?;
        Ok(DeployOutput {
            deployment_id: dep.id.to_string(),
            sandbox_id: first.to_string(),
            template: dep.template,
            category: dep.category,
            status: "deployed".into(),
            instances: vec![InstanceOut {
                sandbox_id: Some(first.to_string()),
                status: "running".into(),
                error: None,
            }],
        })
    }

    pub async fn scale_e2b_deployment(&self, input: ScaleInput) -> Result<ScaleOutput, OpError> {
        let id = parse_deployment_id(&input.deployment_id)?;
        let max = self.manager.config().max_sandboxes as i64;
        let count = int_in("instance_count", input.instance_count, 0, max)?;
        let auto = if input.auto_scale {
            let min = int_in("min_instances", input.min_instances.unwrap_or(1), 0, count)?;
            if count == 0 {
                return Err(OpError::invalid(
                    "instance_count",
                    "with auto_scale it is the maximum, at least 1",
                ));
            }
            let target = input.target_cpu_percent.unwrap_or(70.0);
            if !(target.is_finite() && target > 0.0 && target <= 100.0) {
                return Err(OpError::invalid(
                    "target_cpu_percent",
                    format!("must be above 0 and at most 100, got {target}"),
                ));
            }
            Some(AutoScale {
                enabled: true,
                min_instances: min as u32,
                max_instances: count as u32,
                target_cpu_percent: target,
            })
        } else {
            for (field, given) in [
                ("min_instances", input.min_instances.is_some()),
                ("target_cpu_percent", input.target_cpu_percent.is_some()),
            ] {
                if given {
                    return Err(OpError::invalid(
                        field,
                        "only applies with auto_scale: true",
                    ));
                }
            }
            None
        };
        let out = self.deployments.scale(&id, count as u32, auto).await?;
        Ok(ScaleOutput {
            deployment_id: id.to_string(),
            total_instances: out.instances.len(),
            running_instances: out.running,
            failed_count: out.failed,
            instances: out.instances.iter().map(instance_out).collect(),
            auto_scale: auto_out(&out.deployment.auto_scale),
        })
    }

    /// Every deployment (deleted ones too when asked), newest first.
    pub fn list_deployments(&self, include_deleted: bool) -> Result<Value, OpError> {
        let list = self.deployments.list(include_deleted)?;
        Ok(json!({
            "deployments": list.iter().map(|v| deployment_json(v, false)).collect::<Vec<_>>(),
            "total_count": list.len(),
        }))
    }

    /// One deployment with its instances and its event log (the last `events`, 0 to 1000).
    pub fn get_deployment(&self, id: &str, events: i64) -> Result<Value, OpError> {
        let id = parse_deployment_id(id)?;
        let events = int_in("events", events, 0, 1000)? as usize;
        Ok(deployment_json(&self.deployments.get(&id, events)?, true))
    }

    /// Terminates every instance and deletes the deployment.
    pub async fn delete_deployment(&self, id: &str) -> Result<Value, OpError> {
        let id = parse_deployment_id(id)?;
        let dep = self.deployments.delete(&id).await?;
        Ok(
            json!({"deployment_id": dep.id.to_string(), "status": dep.status.as_str(), "message": format!("deployment {} deleted; its instances were terminated", dep.id)}),
        )
    }
}

fn deployment_json(v: &DeploymentView, with_events: bool) -> Value {
    let d: &DeploymentRecord = &v.deployment;
    let mut out = json!({
        "deployment_id": d.id.to_string(),
        "template": d.template,
        "category": d.category,
        "status": d.status.as_str(),
        "desired_instances": d.desired_instances,
        "running_instances": v.instances.iter().filter(|r| r.status.as_str() == "running").count(),
        "instances": v.instances.iter().map(|r| json!({"sandbox_id": r.id.to_string(), "status": r.status.as_str(), "created_at": ts(r.created_at)})).collect::<Vec<_>>(),
        "auto_scale": auto_out(&d.auto_scale),
        "configuration": {
            "memory_mb": d.config.memory_mb,
            "cpu_count": d.config.cpu_count,
            "timeout": d.config.timeout_s,
            "env_vars": d.config.env_vars,
            "files": d.config.files.keys().collect::<Vec<_>>(),
            "setup_commands": d.config.setup_commands,
            "setup_user": d.config.setup_user,
            "metadata": d.config.metadata,
        },
        "created_at": ts(d.created_at),
        "updated_at": ts(d.updated_at),
    });
    if with_events {
        out["events"] = Value::Array(
            v.events
                .iter()
                .map(|e| json!({"at": ts(e.at), "kind": e.kind, "message": e.message, "details": e.details}))
                .collect(),
        );
    }
    out
}
