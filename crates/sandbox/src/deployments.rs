//! Deployments: groups of sandboxes made from one template with one configuration.
//!
//! An instance is made in three steps: the sandbox is created with the deployment's
//! resources, environment and metadata; its `files` are written; its `setup_commands`
//! run in order. A failing step fails the instance, which is terminated; the first
//! instance failing fails the whole deployment. Scaling creates instances concurrently and
//! terminates the newest first; every instance's outcome is reported.
//!
//! The auto-scaler of a deployment samples its instances' CPU every interval, as a share
//! of each instance's quota. After `SUSTAIN` samples in a row above the target it adds an
//! instance (up to the maximum); after `SUSTAIN` in a row below half the target it removes
//! the newest (down to the minimum). Instances that died are replaced at once. Every
//! decision is written to the deployment's event log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::deployment::{
    AutoScale, DeploymentConfig, DeploymentEvent, DeploymentId, DeploymentRecord, DeploymentStatus,
};
use crate::id::SandboxId;
use crate::manager::{CreateParams, ExecParams, Manager, ManagerError};
use crate::model::{ExecUser, ListFilter, SandboxRecord, SandboxStatus};
use crate::store::DeploymentStore;
use crate::time::Timestamp;

/// The sandbox user's home: relative `files` are written there and setup commands run
/// there, as the user or as root.
const SETUP_DIR: &str = "/home/user";

/// Samples in a row above (or below) the bounds before the auto-scaler acts.
pub const SUSTAIN: u32 = 2;

#[derive(Clone, Debug)]
pub struct DeploymentsConfig {
    /// How often the auto-scaler samples its deployment.
    pub autoscale_interval: Duration,
    /// Longest a single setup command may run.
    pub setup_timeout: Duration,
}

impl Default for DeploymentsConfig {
    fn default() -> Self {
        Self {
            autoscale_interval: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(600),
        }
    }
}

/// Why an instance could not be made, with what the failing step printed.
#[derive(Clone, Debug)]
pub struct InstanceFailure {
    pub message: String,
    pub details: serde_json::Value,
}

/// One instance after a deploy or scale.
#[derive(Clone, Debug)]
pub struct InstanceOutcome {
    /// `None` when the sandbox could not even be created.
    pub sandbox_id: Option<SandboxId>,
    /// `running`, `terminated` (scaled down) or `failed`.
    pub status: &'static str,
    pub error: Option<InstanceFailure>,
}

#[derive(Clone, Debug)]
pub struct ScaleOutcome {
    pub deployment: DeploymentRecord,
    pub instances: Vec<InstanceOutcome>,
    pub running: usize,
    pub failed: usize,
}

/// A deployment with its instances and recent events.
#[derive(Clone, Debug)]
pub struct DeploymentView {
    pub deployment: DeploymentRecord,
    pub instances: Vec<SandboxRecord>,
    pub events: Vec<DeploymentEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("no deployment with id `{0}`")]
    NotFound(String),
    #[error("{message}")]
    Failed {
        message: String,
        details: serde_json::Value,
    },
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

impl From<crate::store::StoreError> for DeploymentError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Manager(ManagerError::Store(e))
    }
}

struct Inner {
    mgr: Manager,
    store: Arc<dyn DeploymentStore>,
    cfg: DeploymentsConfig,
    controllers: Mutex<HashMap<DeploymentId, tokio::task::JoinHandle<()>>>,
    /// Serialises changes of one deployment's size.
    locks: Mutex<HashMap<DeploymentId, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Clone)]
pub struct Deployments {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Deployments {
    /// Starts the service, restarting the auto-scalers of deployments that had one.
    pub fn start(
        mgr: Manager,
        store: Arc<dyn DeploymentStore>,
        cfg: DeploymentsConfig,
    ) -> Result<Self, DeploymentError> {
        let d = Self {
            inner: Arc::new(Inner {
                mgr,
                store,
                cfg,
                controllers: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
            }),
        };
        for rec in d.inner.store.list_deployments(false)? {
            if rec.auto_scale.enabled {
                d.start_controller(&rec.id);
            }
        }
        Ok(d)
    }

    fn serial(&self, id: &DeploymentId) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.locks)
            .entry(id.clone())
            .or_default()
            .clone()
    }

    fn record(&self, id: &DeploymentId) -> Result<DeploymentRecord, DeploymentError> {
        self.inner
            .store
            .get_deployment(id)?
            .filter(|d| d.status == DeploymentStatus::Deployed)
            .ok_or_else(|| DeploymentError::NotFound(id.to_string()))
    }

    fn event(&self, id: &DeploymentId, kind: &str, message: String, details: serde_json::Value) {
        tracing::info!(deployment = %id, kind, "{message}");
        let ev = DeploymentEvent {
            at: Timestamp::now(),
            kind: kind.to_owned(),
            message,
            details,
        };
        if let Err(e) = self.inner.store.append_deployment_event(id, &ev) {
            tracing::error!(deployment = %id, error = %e, "could not store a deployment event");
        }
    }

    /// Active instances of a deployment, oldest first.
    fn instances(&self, id: &DeploymentId) -> Result<Vec<SandboxRecord>, DeploymentError> {
        let mut v: Vec<SandboxRecord> = self
            .inner
            .mgr
            .list(&ListFilter {
                deployment_id: Some(id.to_string()),
                ..ListFilter::default()
            })?
            .into_iter()
            .filter(|r| r.status.is_active())
            .collect();
        v.sort_by_key(|r| r.created_at);
        Ok(v)
    }

    /// Makes one instance: sandbox, files, setup commands. On failure nothing of it is
    /// left.
    async fn make_instance(
        &self,
        dep: &DeploymentRecord,
    ) -> Result<SandboxId, (Option<SandboxId>, InstanceFailure)> {
        let c = &dep.config;
        let mut metadata = c.metadata.clone();
        metadata.insert("deployment_id".into(), dep.id.to_string());
        let rec = self
            .inner
            .mgr
            .create(CreateParams {
                name: format!("{}-{}", dep.template, &dep.id.as_str()[4..12]),
                template: dep.template.clone(),
                timeout: Duration::from_secs(c.timeout_s),
                memory_mb: c.memory_mb,
                cpu_count: c.cpu_count,
                env_vars: c.env_vars.clone(),
                metadata,
                provider: None,
                deployment_id: Some(dep.id.to_string()),
            })
            .await
            .map_err(|e| {
                (
                    None,
                    InstanceFailure {
                        message: format!("creating the sandbox failed: {e}"),
                        details: json!({"step": "create"}),
                    },
                )
            })?;
        let id = rec.id;
        if let Err(f) = self.set_up(&id, c).await {
            if let Err(e) = self.inner.mgr.terminate(&id, true).await {
                tracing::error!(sandbox = %id, error = %e, "could not remove a failed instance");
            }
            return Err((Some(id), f));
        }
        Ok(id)
    }

    async fn set_up(&self, id: &SandboxId, c: &DeploymentConfig) -> Result<(), InstanceFailure> {
        let user = if c.setup_user == "root" {
            ExecUser::Root
        } else {
            ExecUser::User
        };
        let env = c.env_vars.clone();
        let run = |step: String, command: String, args: Vec<String>, stdin: Option<Vec<u8>>| {
            let mgr = self.inner.mgr.clone();
            let id = id.clone();
            let env = env.clone();
            let timeout = self.inner.cfg.setup_timeout;
            async move {
                let shown = if args.is_empty() {
                    command.clone()
                } else {
                    format!("{command} {}", args.join(" "))
                };
                match mgr
                    .exec(
                        &id,
                        ExecParams {
                            command,
                            args,
                            env,
                            // Where relative `files` land, whoever runs the step.
                            cwd: Some(SETUP_DIR.into()),
                            user,
                            stdin,
                            timeout,
                            capture_output: true,
                            on_output: None,
                            cancel: None,
                            control: None,
                        },
                    )
                    .await
                {
                    Ok(r) if r.outcome.exit_code == Some(0) => Ok(()),
                    Ok(r) => {
                        let o = &r.outcome;
                        let how = match (o.exit_code, o.signal, o.timed_out) {
                            (_, _, true) => {
                                format!("ran past {} s and was killed", timeout.as_secs())
                            }
                            (Some(c), _, _) => format!("exited with {c}"),
                            (None, Some(s), _) => format!("was killed by signal {s}"),
                            (None, None, _) => "did not finish".into(),
                        };
                        Err(InstanceFailure {
                            message: format!("{step} (`{shown}`) {how}"),
                            details: json!({
                                "step": step,
                                "command": shown,
                                "exit_code": o.exit_code,
                                "signal": o.signal,
                                "timed_out": o.timed_out,
                                "stdout": String::from_utf8_lossy(&o.stdout),
                                "stderr": String::from_utf8_lossy(&o.stderr),
                            }),
                        })
                    }
                    Err(e) => Err(InstanceFailure {
                        message: format!("{step} (`{shown}`) could not run: {e}"),
                        details: json!({"step": step, "command": shown}),
                    }),
                }
            }
        };
        for (path, content) in &c.files {
            // Relative paths are under the user's home.
            let target = if path.starts_with('/') {
                path.clone()
            } else {
                format!("{SETUP_DIR}/{path}")
            };
            run(
                format!("files[{path}]"),
                "/bin/sh".into(),
                vec![
                    "-c".into(),
                    "mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\"".into(),
                    "write-file".into(),
                    target,
                ],
                Some(content.clone().into_bytes()),
            )
            .await?;
        }
        for (i, cmd) in c.setup_commands.iter().enumerate() {
            run(
                format!("setup_commands[{i}]"),
                cmd.clone(),
                Vec::new(),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Creates a deployment and its first instance.
    pub async fn deploy(
        &self,
        template: String,
        category: String,
        config: DeploymentConfig,
    ) -> Result<(DeploymentRecord, SandboxId), DeploymentError> {
        let now = Timestamp::now();
        let mut dep = DeploymentRecord {
            id: DeploymentId::generate(),
            template,
            category,
            config,
            status: DeploymentStatus::Deployed,
            desired_instances: 1,
            auto_scale: AutoScale::default(),
            created_at: now,
            updated_at: now,
        };
        self.inner.store.put_deployment(&dep)?;
        match self.make_instance(&dep).await {
            Ok(id) => {
                self.event(
                    &dep.id,
                    "deployed",
                    format!(
                        "deployed template `{}` with its first instance {id}",
                        dep.template
                    ),
                    json!({"sandbox_id": id.to_string()}),
                );
                Ok((dep, id))
            }
            Err((sandbox, f)) => {
                dep.status = DeploymentStatus::Deleted;
                dep.updated_at = Timestamp::now();
                self.inner.store.put_deployment(&dep)?;
                self.event(
                    &dep.id,
                    "failed",
                    format!(
                        "deployment failed: {}; everything it made was removed",
                        f.message
                    ),
                    f.details.clone(),
                );
                let mut details = f.details;
                if let (Some(obj), Some(id)) = (details.as_object_mut(), sandbox) {
                    obj.insert("sandbox_id".into(), json!(id.to_string()));
                }
                Err(DeploymentError::Failed {
                    message: format!(
                        "deployment failed: {}; what was created has been removed",
                        f.message
                    ),
                    details,
                })
            }
        }
    }

    /// Changes the number of instances, or hands it to the auto-scaler.
    pub async fn scale(
        &self,
        id: &DeploymentId,
        count: u32,
        auto_scale: Option<AutoScale>,
    ) -> Result<ScaleOutcome, DeploymentError> {
        let serial = self.serial(id);
        let _guard = serial.lock().await;
        let mut dep = self.record(id)?;
        let (target, auto) = match auto_scale {
            Some(a) => {
                let current = self.instances(id)?.len() as u32;
                (current.clamp(a.min_instances, a.max_instances), a)
            }
            None => (
                count,
                AutoScale {
                    enabled: false,
                    ..dep.auto_scale
                },
            ),
        };
        let before = self.instances(id)?.len();
        let instances = self.resize(&dep, target as usize).await?;
        dep.desired_instances = if auto.enabled {
            auto.max_instances
        } else {
            count
        };
        dep.auto_scale = auto;
        dep.updated_at = Timestamp::now();
        self.inner.store.put_deployment(&dep)?;
        let failed = instances.iter().filter(|i| i.status == "failed").count();
        let running = self.instances(id)?.len();
        self.event(
            id,
            "scaled",
            if auto.enabled {
                format!(
                    "auto-scaling between {} and {} instances at {} % CPU ({before} → {running} instances)",
                    auto.min_instances, auto.max_instances, auto.target_cpu_percent
                )
            } else {
                format!("scaled from {before} to {running} instances ({failed} failed)")
            },
            json!({"from": before, "to": running, "failed": failed, "auto_scale": auto.enabled}),
        );
        if auto.enabled {
            self.start_controller(id);
        } else if let Some(h) = lock(&self.inner.controllers).remove(id) {
            h.abort();
        }
        Ok(ScaleOutcome {
            deployment: dep,
            instances,
            running,
            failed,
        })
    }

    /// Brings the number of active instances to `target`: creates the missing ones
    /// concurrently, or terminates the newest first. Returns every instance's outcome.
    async fn resize(
        &self,
        dep: &DeploymentRecord,
        target: usize,
    ) -> Result<Vec<InstanceOutcome>, DeploymentError> {
        let current = self.instances(&dep.id)?;
        let mut out: Vec<InstanceOutcome> = Vec::new();
        if target > current.len() {
            let mut set = tokio::task::JoinSet::new();
            for _ in current.len()..target {
                let me = self.clone();
                let dep = dep.clone();
                set.spawn(async move { me.make_instance(&dep).await });
            }
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(id)) => out.push(InstanceOutcome {
                        sandbox_id: Some(id),
                        status: "running",
                        error: None,
                    }),
                    Ok(Err((id, f))) => {
                        self.event(
                            &dep.id,
                            "instance_failed",
                            format!("an instance failed: {}", f.message),
                            f.details.clone(),
                        );
                        out.push(InstanceOutcome {
                            sandbox_id: id,
                            status: "failed",
                            error: Some(f),
                        });
                    }
                    Err(e) => out.push(InstanceOutcome {
                        sandbox_id: None,
                        status: "failed",
                        error: Some(InstanceFailure {
                            message: format!("the creating task failed: {e}"),
                            details: json!({}),
                        }),
                    }),
                }
            }
            for r in &current {
                out.push(InstanceOutcome {
                    sandbox_id: Some(r.id.clone()),
                    status: "running",
                    error: None,
                });
            }
        } else {
            let (keep, drop) = current.split_at(target);
            let mut set = tokio::task::JoinSet::new();
            for r in drop.iter().rev() {
                let mgr = self.inner.mgr.clone();
                let sid = r.id.clone();
                set.spawn(async move { (sid.clone(), mgr.terminate(&sid, false).await) });
            }
            while let Some(r) = set.join_next().await {
                if let Ok((sid, res)) = r {
                    out.push(match res {
                        Ok(_) => InstanceOutcome {
                            sandbox_id: Some(sid),
                            status: "terminated",
                            error: None,
                        },
                        Err(e) => InstanceOutcome {
                            sandbox_id: Some(sid),
                            status: "failed",
                            error: Some(InstanceFailure {
                                message: format!("terminating it failed: {e}"),
                                details: json!({}),
                            }),
                        },
                    });
                }
            }
            for r in keep {
                out.push(InstanceOutcome {
                    sandbox_id: Some(r.id.clone()),
                    status: "running",
                    error: None,
                });
            }
        }
        Ok(out)
    }

    /// Terminates every instance and marks the deployment deleted.
    pub async fn delete(&self, id: &DeploymentId) -> Result<DeploymentRecord, DeploymentError> {
        let serial = self.serial(id);
        let _guard = serial.lock().await;
        let mut dep = self.record(id)?;
        if let Some(h) = lock(&self.inner.controllers).remove(id) {
            h.abort();
        }
        let n = self.instances(id)?.len();
        self.resize(&dep, 0).await?;
        dep.status = DeploymentStatus::Deleted;
        dep.desired_instances = 0;
        dep.auto_scale.enabled = false;
        dep.updated_at = Timestamp::now();
        self.inner.store.put_deployment(&dep)?;
        self.event(
            id,
            "deleted",
            format!("deleted; its {n} instances were terminated"),
            json!({"terminated": n}),
        );
        Ok(dep)
    }

    pub fn get(&self, id: &DeploymentId, events: usize) -> Result<DeploymentView, DeploymentError> {
        let deployment = self
            .inner
            .store
            .get_deployment(id)?
            .ok_or_else(|| DeploymentError::NotFound(id.to_string()))?;
        Ok(DeploymentView {
            instances: self.instances(id)?,
            events: self.inner.store.deployment_events(id, events)?,
            deployment,
        })
    }

    pub fn list(&self, include_deleted: bool) -> Result<Vec<DeploymentView>, DeploymentError> {
        self.inner
            .store
            .list_deployments(include_deleted)?
            .into_iter()
            .map(|d| {
                Ok(DeploymentView {
                    instances: self.instances(&d.id)?,
                    events: Vec::new(),
                    deployment: d,
                })
            })
            .collect()
    }

    /// Templates that active deployments make instances from.
    pub fn templates_in_use(&self) -> Vec<String> {
        self.inner
            .store
            .list_deployments(false)
            .map(|v| v.into_iter().map(|d| d.template).collect())
            .unwrap_or_default()
    }

    fn start_controller(&self, id: &DeploymentId) {
        let weak = Arc::downgrade(&self.inner);
        let id2 = id.clone();
        let handle = tokio::spawn(async move { controller(weak, id2).await });
        if let Some(old) = lock(&self.inner.controllers).insert(id.clone(), handle) {
            old.abort();
        }
    }
}

/// The auto-scaler of one deployment.
async fn controller(weak: Weak<Inner>, id: DeploymentId) {
    let mut last: HashMap<SandboxId, (Instant, u64)> = HashMap::new();
    let (mut above, mut below) = (0u32, 0u32);
    loop {
        let interval = match weak.upgrade() {
            Some(i) => i.cfg.autoscale_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = weak.upgrade() else { return };
        let d = Deployments { inner };
        let serial = d.serial(&id);
        let _guard = serial.lock().await;
        let Ok(dep) = d.record(&id) else { return };
        if !dep.auto_scale.enabled {
            return;
        }
        let a = dep.auto_scale;
        let Ok(instances) = d.instances(&id) else {
            continue;
        };
        // Died (crashed, lost, expired): replace at once, up to the minimum.
        if (instances.len() as u32) < a.min_instances {
            let missing = a.min_instances as usize - instances.len();
            if let Ok(out) = d.resize(&dep, a.min_instances as usize).await {
                let made = out.iter().filter(|o| o.status == "running").count() - instances.len();
                d.event(
                    &id,
                    "replaced",
                    format!(
                        "{missing} instance(s) below the minimum of {}; started {made}",
                        a.min_instances
                    ),
                    json!({"missing": missing, "started": made}),
                );
            }
            last.clear();
            (above, below) = (0, 0);
            continue;
        }
        // Mean CPU as a share of each instance's quota, over the last interval.
        let now = Instant::now();
        let mut shares = Vec::new();
        for r in instances
            .iter()
            .filter(|r| r.status == SandboxStatus::Running)
        {
            if let Ok(ns) = d.inner.mgr.cpu_time_ns(&r.id).await {
                if let Some((t, prev)) = last.get(&r.id) {
                    let secs = now.duration_since(*t).as_secs_f64();
                    let cores = (ns.saturating_sub(*prev) as f64 / 1e9) / secs.max(1e-3);
                    shares.push(cores / r.resources.cpu_count.max(0.01) * 100.0);
                }
                last.insert(r.id.clone(), (now, ns));
            }
        }
        last.retain(|k, _| instances.iter().any(|r| &r.id == k));
        if shares.is_empty() {
            continue;
        }
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        let n = instances.len() as u32;
        if mean > a.target_cpu_percent {
            above += 1;
            below = 0;
        } else if mean < a.target_cpu_percent / 2.0 {
            below += 1;
            above = 0;
        } else {
            (above, below) = (0, 0);
        }
        let decision = if above >= SUSTAIN && n < a.max_instances {
            Some(("autoscale_up", n + 1))
        } else if below >= SUSTAIN && n > a.min_instances {
            Some(("autoscale_down", n - 1))
        } else {
            None
        };
        if let Some((kind, to)) = decision {
            (above, below) = (0, 0);
            let res = d.resize(&dep, to as usize).await;
            let failed = res
                .as_ref()
                .map_or(1, |o| o.iter().filter(|i| i.status == "failed").count());
            d.event(
                &id,
                kind,
                format!(
                    "mean CPU {mean:.0} % of quota over {} samples (target {} %): {n} → {to} instances{}",
                    SUSTAIN,
                    a.target_cpu_percent,
                    if failed > 0 { format!(" ({failed} failed)") } else { String::new() }
                ),
                json!({"mean_cpu_percent": (mean * 10.0).round() / 10.0, "from": n, "to": to, "failed": failed}),
            );
        }
    }
}

impl Manager {
    /// Total CPU time of a running sandbox, nanoseconds (for the auto-scaler).
    pub async fn cpu_time_ns(&self, id: &SandboxId) -> Result<u64, ManagerError> {
        let rec = self.get(id)?;
        let p = self.provider(&rec.provider).ok_or_else(|| {
            ManagerError::Unavailable(format!("provider {} is gone", rec.provider))
        })?;
        Ok(p.counters(id).await?.cpu_usage_ns)
    }
}
