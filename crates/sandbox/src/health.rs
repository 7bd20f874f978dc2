//! Health rules, as pure functions so every threshold is tested at its edge.
//!
//! A single sandbox is
//! - **unhealthy** when it stopped unexpectedly (crashed, lost, failed to start) or its
//!   init does not answer a ping within 2 s;
//! - **degraded** when the memory limit killed a process in the last 5 minutes, its
//!   memory use is above 90 % of its limit, it is at its process limit (or the limit
//!   refused a fork in the last 5 minutes), or its usage cannot be read;
//! - **healthy** otherwise (a paused sandbox, or one stopped as asked, is healthy).
//!
//! A fleet's score is the share of its active sandboxes that are healthy (0–100; an empty
//! fleet scores 100): **healthy** at 90 or more, **degraded** from 70 up to 90,
//! **unhealthy** below 70.

use crate::model::StopReason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    pub status: HealthStatus,
    pub reasons: Vec<String>,
}

/// How recent an OOM kill or a refused fork makes a sandbox degraded.
pub const RECENT_SECS: u64 = 300;
/// Memory use above this share of the limit makes a sandbox degraded.
pub const MEMORY_HIGH: f64 = 0.9;

/// What the rules look at for one sandbox.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Why it stopped, if it did.
    pub stopped: Option<StopReason>,
    pub paused: bool,
    /// `Err(why)` when usage could not be read.
    pub usage: Option<Result<UsageFacts, String>>,
    /// `Err(why)` when init did not answer; `None` when it was not asked (paused, stopped).
    pub init_answer: Option<Result<(), String>>,
}

#[derive(Clone, Debug, Default)]
pub struct UsageFacts {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
    pub pids_max: u64,
    pub oom_kills: u64,
    pub oom_kill_recent: bool,
    pub pids_limit_hit_recent: bool,
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The health of one sandbox.
pub fn evaluate(i: &Inputs) -> Health {
    if let Some(reason) = i.stopped {
        return if reason.is_normal() {
            Health {
                status: HealthStatus::Healthy,
                reasons: vec![format!("stopped ({})", reason.as_str())],
            }
        } else {
            Health {
                status: HealthStatus::Unhealthy,
                reasons: vec![format!("stopped unexpectedly ({})", reason.as_str())],
            }
        };
    }
    let mut status = HealthStatus::Healthy;
    let mut reasons = Vec::new();
    let mut degrade = |why: String| {
        reasons.push(why);
        if status == HealthStatus::Healthy {
            status = HealthStatus::Degraded;
        }
    };
    match &i.usage {
        Some(Ok(u)) => {
            if u.oom_kill_recent {
                degrade(format!(
                    "the memory limit killed a process in the last 5 minutes ({} OOM kills in all)",
                    u.oom_kills
                ));
            }
            if u.memory_limit_bytes > 0
                && u.memory_bytes as f64 > u.memory_limit_bytes as f64 * MEMORY_HIGH
            {
                degrade(format!(
                    "memory use {:.0} MB is above 90 % of its limit of {:.0} MB",
                    mb(u.memory_bytes),
                    mb(u.memory_limit_bytes)
                ));
            }
            if u.pids_max > 0 && u.pids >= u.pids_max {
                degrade(format!("at its limit of {} processes", u.pids_max));
            } else if u.pids_limit_hit_recent {
                degrade(format!(
                    "the process limit of {} refused a fork in the last 5 minutes",
                    u.pids_max
                ));
            }
        }
        Some(Err(e)) => degrade(format!("usage could not be read: {e}")),
        None => {}
    }
    if let Some(Err(e)) = &i.init_answer {
        reasons.push(format!("its init does not answer: {e}"));
        status = HealthStatus::Unhealthy;
    }
    if i.paused && reasons.is_empty() {
        reasons.push("paused".into());
    }
    Health { status, reasons }
}

/// The fleet's score: the share of `active` sandboxes that are healthy, 0–100.
pub fn fleet_score(healthy: usize, active: usize) -> f64 {
    if active == 0 {
        return 100.0;
    }
    (healthy as f64 / active as f64 * 1000.0).round() / 10.0
}

/// The fleet's band for a score.
pub fn fleet_status(score: f64) -> HealthStatus {
    if score >= 90.0 {
        HealthStatus::Healthy
    } else if score >= 70.0 {
        HealthStatus::Degraded
    } else {
        HealthStatus::Unhealthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(memory: u64, limit: u64, pids: u64, pids_max: u64) -> Inputs {
        Inputs {
            usage: Some(Ok(UsageFacts {
                memory_bytes: memory,
                memory_limit_bytes: limit,
                pids,
                pids_max,
                ..UsageFacts::default()
            })),
            init_answer: Some(Ok(())),
            ..Inputs::default()
        }
    }

    #[test]
    fn memory_is_high_only_above_ninety_percent() {
        assert_eq!(
            evaluate(&usage(900, 1000, 1, 512)).status,
            HealthStatus::Healthy
        );
        let h = evaluate(&usage(901, 1000, 1, 512));
        assert_eq!(h.status, HealthStatus::Degraded);
        assert!(h.reasons[0].contains("above 90 %"));
        assert_eq!(
            evaluate(&usage(0, 0, 1, 512)).status,
            HealthStatus::Healthy,
            "no limit known"
        );
    }

    #[test]
    fn the_pids_limit_counts_when_reached() {
        assert_eq!(
            evaluate(&usage(0, 1000, 511, 512)).status,
            HealthStatus::Healthy
        );
        let h = evaluate(&usage(0, 1000, 512, 512));
        assert_eq!(
            (h.status, h.reasons[0].as_str()),
            (HealthStatus::Degraded, "at its limit of 512 processes")
        );
        let mut i = usage(0, 1000, 3, 512);
        if let Some(Ok(u)) = &mut i.usage {
            u.pids_limit_hit_recent = true;
        }
        assert!(evaluate(&i).reasons[0].contains("refused a fork in the last 5 minutes"));
    }

    #[test]
    fn a_recent_oom_kill_degrades_and_an_unanswering_init_is_unhealthy() {
        let mut i = usage(0, 1000, 1, 512);
        if let Some(Ok(u)) = &mut i.usage {
            u.oom_kill_recent = true;
            u.oom_kills = 2;
        }
        let h = evaluate(&i);
        assert_eq!(h.status, HealthStatus::Degraded);
        assert!(h.reasons[0].contains("2 OOM kills"));
        i.init_answer = Some(Err("no answer within 2000 ms".into()));
        let h = evaluate(&i);
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(h.reasons.len(), 2);
        let mut i = usage(0, 1000, 1, 512);
        i.usage = Some(Err("gone".into()));
        assert_eq!(evaluate(&i).status, HealthStatus::Degraded);
    }

    #[test]
    fn stopped_sandboxes_are_healthy_only_when_stopped_as_asked() {
        for (reason, status) in [
            (StopReason::Terminated, HealthStatus::Healthy),
            (StopReason::Expired, HealthStatus::Healthy),
            (StopReason::Crashed, HealthStatus::Unhealthy),
            (StopReason::Lost, HealthStatus::Unhealthy),
            (StopReason::StartFailed, HealthStatus::Unhealthy),
        ] {
            let h = evaluate(&Inputs {
                stopped: Some(reason),
                ..Inputs::default()
            });
            assert_eq!(h.status, status, "{reason:?}");
        }
        let paused = evaluate(&Inputs {
            paused: true,
            ..Inputs::default()
        });
        assert_eq!(
            (paused.status, paused.reasons),
            (HealthStatus::Healthy, vec!["paused".to_owned()])
        );
    }

    #[test]
    fn fleet_bands_at_their_edges() {
        assert_eq!(fleet_score(0, 0), 100.0);
        assert_eq!(fleet_score(9, 10), 90.0);
        assert_eq!(fleet_score(2, 3), 66.7);
        assert_eq!(fleet_status(100.0), HealthStatus::Healthy);
        assert_eq!(fleet_status(90.0), HealthStatus::Healthy);
        assert_eq!(fleet_status(89.9), HealthStatus::Degraded);
        assert_eq!(fleet_status(70.0), HealthStatus::Degraded);
        assert_eq!(fleet_status(69.9), HealthStatus::Unhealthy);
        assert_eq!(fleet_status(0.0), HealthStatus::Unhealthy);
        // 9 of 10 healthy is healthy; 8 of 10 degraded; 6 of 10 unhealthy.
        assert_eq!(fleet_status(fleet_score(9, 10)), HealthStatus::Healthy);
        assert_eq!(fleet_status(fleet_score(8, 10)), HealthStatus::Degraded);
        assert_eq!(fleet_status(fleet_score(7, 10)), HealthStatus::Degraded);
        assert_eq!(fleet_status(fleet_score(6, 10)), HealthStatus::Unhealthy);
    }
}
