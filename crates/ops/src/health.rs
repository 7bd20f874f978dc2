//! `monitor_e2b_health`: the fleet's health from every active sandbox's, with the rules
//! and bands of `quantbox_sandbox::health`.

use std::collections::BTreeMap;

use quantbox_sandbox::{HealthStatus, SandboxStatus, health};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Ops;
use crate::error::OpError;
use crate::sandboxes::{HealthOut, ts};

/// Arguments of `monitor_e2b_health`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthInput {
    /// Also return every active sandbox with its own health.
    #[serde(default)]
    pub include_all_sandboxes: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProviderHealthOut {
    /// `available`, `degraded` or `unavailable`.
    pub status: String,
    pub detail: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxHealthOut {
    pub sandbox_id: String,
    pub name: String,
    pub status: String,
    pub deployment_id: Option<String>,
    pub health: HealthOut,
    /// Percent of one core; null when usage could not be read.
    pub cpu_percent: Option<f64>,
    pub memory_mb: Option<f64>,
    pub memory_limit_mb: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthOutput {
    /// `healthy` (score ≥ 90), `degraded` (70–90) or `unhealthy` (< 70).
    pub overall_health: String,
    /// The share of active sandboxes that are healthy, 0–100 (an empty fleet scores 100).
    pub health_score: f64,
    /// Active sandboxes: running or paused.
    pub total_sandboxes: usize,
    pub running_sandboxes: usize,
    pub paused_sandboxes: usize,
    /// Sandboxes that stopped unexpectedly (crashed, lost, failed to start) in the last hour.
    pub failed_sandboxes: usize,
    /// Mean CPU of the running sandboxes, percent of one core; null when none runs.
    pub average_cpu: Option<f64>,
    /// Mean memory use of the running sandboxes, percent of their limits; null when none runs.
    pub average_memory: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub averages_reason: Option<String>,
    pub issues: Vec<String>,
    pub providers: BTreeMap<String, ProviderHealthOut>,
    /// With `include_all_sandboxes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<Vec<SandboxHealthOut>>,
    pub checked_at: String,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Ops {
    pub async fn monitor_e2b_health(&self, input: HealthInput) -> Result<HealthOutput, OpError> {
        let fleet = self.manager.fleet_health().await?;
        let active = fleet.sandboxes.len();
        let healthy = fleet
            .sandboxes
            .iter()
            .filter(|s| s.health.status == HealthStatus::Healthy)
            .count();
        let running: Vec<_> = fleet
            .sandboxes
            .iter()
            .filter(|s| s.record.status == SandboxStatus::Running)
            .collect();
        let paused = fleet
            .sandboxes
            .iter()
            .filter(|s| s.record.status == SandboxStatus::Paused)
            .count();
        let usages: Vec<_> = running.iter().filter_map(|s| s.usage.as_ref()).collect();
        let (average_cpu, average_memory, averages_reason) = if usages.is_empty() {
            (None, None, Some("no running sandbox to measure".to_owned()))
        } else {
            let n = usages.len() as f64;
            let cpu = usages.iter().map(|u| u.cpu_percent).sum::<f64>() / n;
            let mem = usages
                .iter()
                .map(|u| {
                    if u.memory_limit_mb > 0.0 {
                        u.memory_mb / u.memory_limit_mb * 100.0
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
                / n;
            (Some(round1(cpu)), Some(round1(mem)), None)
        };
        let mut issues = Vec::new();
        for s in fleet
            .sandboxes
            .iter()
            .filter(|s| s.health.status != HealthStatus::Healthy)
        {
            issues.push(format!(
                "sandbox {} ({}) is {}: {}",
                s.record.id,
                s.record.name,
                s.health.status.as_str(),
                s.health.reasons.join("; ")
            ));
        }
        for r in &fleet.failed {
            issues.push(format!(
                "sandbox {} ({}) stopped unexpectedly ({}) at {}",
                r.id,
                r.name,
                r.stop_reason.map_or("stopped", |x| x.as_str()),
                r.stopped_at.map(ts).unwrap_or_default()
            ));
        }
        let mut providers = BTreeMap::new();
        for p in self.manager.providers() {
            let info = p.info();
            // A provider nobody configured (no E2B_API_KEY) is no fault of this server.
            if info.status != "available" && info.status != "not_configured" {
                issues.push(format!("provider {}: {}", info.name, info.detail));
            }
            providers.insert(
                info.name.to_owned(),
                ProviderHealthOut {
                    status: info.status.to_owned(),
                    detail: info.detail,
                },
            );
        }
        let score = health::fleet_score(healthy, active);
        let sandboxes = input.include_all_sandboxes.then(|| {
            fleet
                .sandboxes
                .iter()
                .map(|s| SandboxHealthOut {
                    sandbox_id: s.record.id.to_string(),
                    name: s.record.name.clone(),
                    status: s.record.status.as_str().to_owned(),
                    deployment_id: s.record.deployment_id.clone(),
                    health: HealthOut {
                        status: s.health.status.as_str().to_owned(),
                        reasons: s.health.reasons.clone(),
                    },
                    cpu_percent: s.usage.as_ref().map(|u| u.cpu_percent),
                    memory_mb: s.usage.as_ref().map(|u| u.memory_mb),
                    memory_limit_mb: s.usage.as_ref().map(|u| u.memory_limit_mb),
                })
                .collect()
        });
        Ok(HealthOutput {
            overall_health: health::fleet_status(score).as_str().to_owned(),
            health_score: score,
            total_sandboxes: active,
            running_sandboxes: running.len(),
            paused_sandboxes: paused,
            failed_sandboxes: fleet.failed.len(),
            average_cpu,
            average_memory,
            averages_reason,
            issues,
            providers,
            sandboxes,
            checked_at: ts(quantbox_sandbox::Timestamp::now()),
        })
    }
}
