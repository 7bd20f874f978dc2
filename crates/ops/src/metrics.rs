//! `get_system_metrics`: the host and the sandboxes as the monitor last read them, and
//! with `include_history` each metric's history over the range, in the contract's units
//! (MB, GB, percent, bytes per second).

use std::collections::BTreeMap;
use std::time::Duration;

use quantbox_monitor::{GpuReading, Metric, Monitor};
use quantbox_sandbox::{SandboxStatus, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Ops;
use crate::args::int_in;
use crate::error::{ErrorCode, OpError};

fn default_metrics() -> Vec<String> {
    ["cpu", "memory", "disk", "network"]
        .map(String::from)
        .to_vec()
}

fn default_range() -> i64 {
    60
}

/// Longest history range: seven days.
pub const MAX_RANGE_MINUTES: i64 = 10_080;

/// Arguments of `get_system_metrics`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsInput {
    /// Which metrics: any of `cpu`, `memory`, `disk`, `network`, `gpu`, `sandboxes`.
    #[serde(default = "default_metrics")]
    pub metrics: Vec<String>,
    /// The history's range, minutes (1–10080, i.e. up to seven days).
    #[serde(default = "default_range")]
    pub time_range_minutes: i64,
    /// Also return each metric's history over the range (points and min/avg/max/p95).
    #[serde(default)]
    pub include_history: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HostOut {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub uptime_s: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CpuOut {
    /// Busy share of all cores over the last collector interval, percent; null until
    /// the collector has two readings (see `reason`).
    pub usage_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each core's busy share, percent (empty while `usage_percent` is null).
    pub per_core: Vec<f64>,
    pub cores: usize,
    /// Load average over 1, 5 and 15 minutes.
    pub load_avg: [f64; 3],
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MemoryOut {
    pub total_mb: f64,
    /// total − available.
    pub used_mb: f64,
    pub available_mb: f64,
    pub usage_percent: f64,
    pub swap_total_mb: f64,
    pub swap_used_mb: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DiskOut {
    pub mount_point: String,
    pub filesystem: String,
    pub total_gb: f64,
    /// Space in use (total − free, as `df` says).
    pub used_gb: f64,
    /// Space an unprivileged user can still write.
    pub available_gb: f64,
    /// used / (used + available), as `df` computes it.
    pub usage_percent: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NetworkOut {
    pub interface: String,
    /// Over the last collector interval; null on the collector's first reading.
    pub rx_bytes_per_s: Option<f64>,
    pub tx_bytes_per_s: Option<f64>,
    pub rx_bytes_total: u64,
    pub tx_bytes_total: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GpuDeviceOut {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub utilization_percent: Option<f64>,
    pub memory_total_mb: Option<f64>,
    pub memory_used_mb: Option<f64>,
    pub temperature_c: Option<f64>,
    pub power_w: Option<f64>,
}

/// The GPUs, or why there are none.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum GpuOut {
    Devices(Vec<GpuDeviceOut>),
    Unavailable { available: bool, reason: String },
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxUsageOut {
    pub sandbox_id: String,
    pub name: String,
    pub status: String,
    /// Percent of one core over the last sampling interval.
    pub cpu_percent: f64,
    pub memory_mb: f64,
    pub memory_limit_mb: f64,
    pub disk_mb: f64,
    pub pids: u64,
    pub oom_kills: u64,
    pub sampled_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxesOut {
    pub running: usize,
    pub paused: usize,
    /// Sum over running sandboxes, percent of one core.
    pub cpu_percent: f64,
    /// Sum over active sandboxes.
    pub memory_mb: f64,
    /// Each active sandbox's last sample (read by the manager's sampler every second).
    pub per_sandbox: Vec<SandboxUsageOut>,
}

#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct MetricsOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<Vec<DiskOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Vec<NetworkOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandboxes: Option<SandboxesOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PointOut {
    /// Start of the point's bucket.
    pub t: String,
    /// Mean of the bucket's readings.
    pub value: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryOut {
    /// What the series holds.
    pub series: &'static str,
    pub unit: &'static str,
    pub from: String,
    pub to: String,
    /// Width of each point's bucket, seconds (at most 360 points per range).
    pub resolution_s: i64,
    /// Readings summarised (1 per collector interval).
    pub samples: u64,
    pub points: Vec<PointOut>,
    pub min: Option<f64>,
    pub avg: Option<f64>,
    pub max: Option<f64>,
    /// 95th percentile (nearest rank) over the range's readings.
    pub p95: Option<f64>,
    /// Why there are no points, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CollectorOut {
    pub interval_s: f64,
    pub started_at: String,
    /// When the figures were read.
    pub reading_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MetricsOutput {
    pub timestamp: String,
    pub host: HostOut,
    pub metrics: MetricsOut,
    /// With `include_history`: one entry per requested metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<BTreeMap<String, HistoryOut>>,
    pub collector: CollectorOut,
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn mb(bytes: u64) -> f64 {
    r2(bytes as f64 / (1024.0 * 1024.0))
}

fn gb(bytes: u64) -> f64 {
    r2(bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

/// Parses and deduplicates metric names, in the order given.
pub fn parse_metrics(names: &[String]) -> Result<Vec<Metric>, OpError> {
    if names.is_empty() {
        return Err(OpError::invalid(
            "metrics",
            "must name at least one metric (cpu, memory, disk, network, gpu, sandboxes)",
        ));
    }
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let m = Metric::parse(n).ok_or_else(|| {
            OpError::invalid(
                &format!("metrics[{i}]"),
                format!(
                    "unknown metric `{n}`; the metrics are {}",
                    Metric::ALL.map(Metric::name).join(", ")
                ),
            )
        })?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

impl Ops {
    fn monitor(&self) -> Result<&Monitor, OpError> {
        self.monitor.as_ref().ok_or_else(|| {
            OpError::new(
                ErrorCode::Unavailable,
                "the metrics collector is not running in this process",
            )
        })
    }

    pub async fn get_system_metrics(&self, input: MetricsInput) -> Result<MetricsOutput, OpError> {
        let metrics = parse_metrics(&input.metrics)?;
        let range = int_in(
            "time_range_minutes",
            input.time_range_minutes,
            1,
            MAX_RANGE_MINUTES,
        )?;
        let monitor = self.monitor()?.clone();
        let snap = monitor.snapshot();
        let r = &snap.reading;
        let mut out = MetricsOut::default();
        for m in &metrics {
            match m {
                Metric::Cpu => {
                    out.cpu = Some(CpuOut {
                        usage_percent: r.cpu.as_ref().map(|c| r2(c.usage_percent)),
                        reason: r.cpu.is_none().then(|| {
                            format!(
                                "CPU usage needs two readings and the collector has taken one (it reads every {} s)",
                                monitor.config().interval.as_secs_f64()
                            )
                        }),
                        per_core: r
                            .cpu
                            .as_ref()
                            .map(|c| c.per_core.iter().map(|&u| r2(u)).collect())
                            .unwrap_or_default(),
                        cores: r.cores,
                        load_avg: r.load_avg.map(r2),
                    })
                }
                Metric::Memory => {
                    let m = &r.memory;
                    out.memory = Some(MemoryOut {
                        total_mb: mb(m.total_bytes),
                        used_mb: mb(m.used_bytes),
                        available_mb: mb(m.available_bytes),
                        usage_percent: r2(m.usage_percent()),
                        swap_total_mb: mb(m.swap_total_bytes),
                        swap_used_mb: mb(m.swap_used_bytes),
                    })
                }
                Metric::Disk => {
                    out.disk = Some(
                        r.disks
                            .iter()
                            .map(|d| DiskOut {
                                mount_point: d.mount_point.clone(),
                                filesystem: d.filesystem.clone(),
                                total_gb: gb(d.total_bytes),
                                used_gb: gb(d.used_bytes),
                                available_gb: gb(d.available_bytes),
                                usage_percent: r2(d.usage_percent()),
                            })
                            .collect(),
                    )
                }
                Metric::Network => {
                    out.network = Some(
                        r.network
                            .iter()
                            .map(|n| NetworkOut {
                                interface: n.interface.clone(),
                                rx_bytes_per_s: n.rx_bytes_per_s.map(r2),
                                tx_bytes_per_s: n.tx_bytes_per_s.map(r2),
                                rx_bytes_total: n.rx_bytes_total,
                                tx_bytes_total: n.tx_bytes_total,
                            })
                            .collect(),
                    )
                }
                Metric::Gpu => {
                    out.gpu = Some(match &snap.gpu {
                        GpuReading::Devices(d) => GpuOut::Devices(
                            d.iter()
                                .map(|d| GpuDeviceOut {
                                    index: d.index,
                                    name: d.name.clone(),
                                    uuid: d.uuid.clone(),
                                    utilization_percent: d.utilization_percent,
                                    memory_total_mb: d.memory_total_bytes.map(mb),
                                    memory_used_mb: d.memory_used_bytes.map(mb),
                                    temperature_c: d.temperature_c,
                                    power_w: d.power_w.map(r2),
                                })
                                .collect(),
                        ),
                        GpuReading::Unavailable { reason } => GpuOut::Unavailable {
                            available: false,
                            reason: reason.clone(),
                        },
                    })
                }
                Metric::Sandboxes => out.sandboxes = Some(self.sandboxes_now()),
            }
        }
        let history = if input.include_history {
            let window = Duration::from_secs(u64::try_from(range).unwrap_or(60) * 60);
            let monitor2 = monitor.clone();
            let wanted = metrics.clone();
            // The store may be read: off the async workers.
            let answers = tokio::task::spawn_blocking(move || monitor2.histories(&wanted, window))
                .await
                .map_err(|e| OpError::internal(format!("reading history: {e}")))?
                .map_err(|e| OpError::internal(format!("reading history: {e}")))?;
            let mut h = BTreeMap::new();
            for a in answers {
                let m = a.metric;
                let s = &a.summary;
                h.insert(
                    m.name().to_owned(),
                    HistoryOut {
                        series: m.series(),
                        unit: m.unit(),
                        from: a.from.to_rfc3339(),
                        to: a.to.to_rfc3339(),
                        resolution_s: s.resolution_s,
                        samples: s.samples,
                        points: s
                            .points
                            .iter()
                            .map(|&(t, v)| PointOut {
                                t: Timestamp::from_unix_ms(t * 1000).to_rfc3339(),
                                value: r2(v),
                            })
                            .collect(),
                        min: s.min.map(r2),
                        avg: s.avg.map(r2),
                        max: s.max.map(r2),
                        p95: s.p95.map(r2),
                        note: a.note,
                    },
                );
            }
            Some(h)
        } else {
            None
        };
        Ok(MetricsOutput {
            timestamp: Timestamp::now().to_rfc3339(),
            host: HostOut {
                hostname: monitor.host_info().hostname.clone(),
                os: monitor.host_info().os.clone(),
                kernel: monitor.host_info().kernel.clone(),
                uptime_s: r.uptime_s,
            },
            metrics: out,
            history,
            collector: CollectorOut {
                interval_s: monitor.config().interval.as_secs_f64(),
                started_at: monitor.started_at().to_rfc3339(),
                reading_at: snap.taken_at.to_rfc3339(),
            },
        })
    }

    fn sandboxes_now(&self) -> SandboxesOut {
        let samples = self.manager.samples();
        let mut out = SandboxesOut {
            running: 0,
            paused: 0,
            cpu_percent: 0.0,
            memory_mb: 0.0,
            per_sandbox: Vec::new(),
        };
        for s in samples {
            match s.record.status {
                SandboxStatus::Running => out.running += 1,
                SandboxStatus::Paused => out.paused += 1,
                _ => {}
            }
            let Some(u) = s.sample else { continue };
            if s.record.status == SandboxStatus::Running {
                out.cpu_percent += u.cpu_percent;
            }
            out.memory_mb += u.usage.memory_bytes as f64 / (1024.0 * 1024.0);
            out.per_sandbox.push(SandboxUsageOut {
                sandbox_id: s.record.id.to_string(),
                name: s.record.name.clone(),
                status: s.record.status.as_str().to_owned(),
                cpu_percent: r2(u.cpu_percent),
                memory_mb: mb(u.usage.memory_bytes),
                memory_limit_mb: mb(u.usage.memory_limit_bytes),
                disk_mb: mb(u.usage.disk_bytes),
                pids: u.usage.pids,
                oom_kills: u.usage.oom_kills,
                sampled_at: u.sampled_at.to_rfc3339(),
            });
        }
        out.per_sandbox
            .sort_by(|a, b| a.name.cmp(&b.name).then(a.sandbox_id.cmp(&b.sandbox_id)));
        out.cpu_percent = r2(out.cpu_percent);
        out.memory_mb = r2(out.memory_mb);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_checked_by_position_and_deduplicated() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_metrics(&v(&["gpu", "cpu", "gpu"])).unwrap(),
            vec![Metric::Gpu, Metric::Cpu]
        );
        let e = parse_metrics(&v(&["cpu", "disks"])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(
            e.message,
            "metrics[1]: unknown metric `disks`; the metrics are cpu, memory, disk, network, gpu, sandboxes"
        );
        let e = parse_metrics(&[]).unwrap_err();
        assert!(e.message.starts_with("metrics: must name at least one"));
    }

    #[test]
    fn defaults_are_the_contracts() {
        let i: MetricsInput = crate::args::parse(serde_json::json!({})).unwrap();
        assert_eq!(i.metrics, ["cpu", "memory", "disk", "network"]);
        assert_eq!(i.time_range_minutes, 60);
        assert!(!i.include_history);
    }
}
