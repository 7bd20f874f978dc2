//! The usage history of one active sandbox: one point per five seconds of wall-clock
//! time (E2B's own granularity for a sandbox's metrics), the last hour of them.
//!
//! Pure: the manager's sampler offers each reading it takes (once a second) and the
//! history keeps the first reading of every five-second step. The history lives with the
//! sandbox's entry in the manager, so it goes when the sandbox stops.

use std::collections::VecDeque;

use crate::manager::UsageSample;
use crate::time::Timestamp;

/// Wall-clock step between two points, milliseconds.
pub const STEP_MS: i64 = 5_000;
/// How far back points are kept, milliseconds.
pub const KEEP_MS: i64 = 3_600_000;
/// Most points kept: an hour of five-second steps.
pub const MAX_POINTS: usize = (KEEP_MS / STEP_MS) as usize;

/// One point of a sandbox's usage history; every figure is a reading of its cgroup.
#[derive(Clone, Debug, PartialEq)]
pub struct UsagePoint {
    /// When the sampler took the reading.
    pub at: Timestamp,
    /// Percent of one core (100 = one full core), averaged over the time since the
    /// previous point from the cgroup's cumulative CPU counter; at the first point, the
    /// sampler's own figure over its last interval.
    pub cpu_percent: f64,
    /// Memory in use, page cache that can be dropped excluded.
    pub memory_bytes: u64,
    /// The memory limit as the cgroup reports it (`u64::MAX` when unlimited).
    pub memory_limit_bytes: u64,
    /// Bytes the writable layer holds (the sampler measures it every ten seconds and
    /// carries the last measurement in between).
    pub disk_bytes: u64,
    /// Size of the filesystem the writable layer lives on; 0 when unknown.
    pub disk_total_bytes: u64,
}

/// A bounded history of [`UsagePoint`]s, oldest first.
#[derive(Debug, Default)]
pub struct UsageHistory {
    points: VecDeque<UsagePoint>,
    /// The cumulative CPU counter (ns) at the newest point.
    last_cpu_ns: u64,
}

impl UsageHistory {
    /// Offers one of the sampler's readings: kept (and `true` returned) when it is the
    /// first of a five-second step later than the newest point's; points older than an
    /// hour before it, or beyond [`MAX_POINTS`], are dropped.
    pub fn offer(&mut self, s: &UsageSample) -> bool {
        let step = s.sampled_at.unix_ms().div_euclid(STEP_MS);
        let cpu_percent = match self.points.back() {
            Some(last) if last.at.unix_ms().div_euclid(STEP_MS) >= step => return false,
            Some(last) => {
                let ms = s.sampled_at.ms_since(last.at);
                match s.usage.cpu_usage_ns.checked_sub(self.last_cpu_ns) {
                    Some(ns) if ms > 0 => cpu_pct(ns, ms),
                    // The counter went back (it cannot, short of a new cgroup): the
                    // sampler's own figure is the one left.
                    _ => s.cpu_percent,
                }
            }
            None => s.cpu_percent,
        };
        self.last_cpu_ns = s.usage.cpu_usage_ns;
        self.points.push_back(UsagePoint {
            at: s.sampled_at,
            cpu_percent,
            memory_bytes: s.usage.memory_bytes,
            memory_limit_bytes: s.usage.memory_limit_bytes,
            disk_bytes: s.usage.disk_bytes,
            disk_total_bytes: s.usage.disk_total_bytes,
        });
        let oldest = s.sampled_at.plus_ms(-KEEP_MS);
        while self.points.len() > MAX_POINTS || self.points.front().is_some_and(|p| p.at < oldest) {
            self.points.pop_front();
        }
        true
    }

    /// The points, oldest first.
    pub fn points(&self) -> Vec<UsagePoint> {
        self.points.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// `ns` of CPU time over `ms` of wall time as percent of one core, to 0.1.
fn cpu_pct(ns: u64, ms: i64) -> f64 {
    let pct = ns as f64 / 1e6 / ms as f64 * 100.0;
    (pct * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResourceUsage;

    /// A reading at `ms` whose CPU counter stands at `cpu_ns`.
    fn sample(ms: i64, cpu_ns: u64, cpu_percent: f64) -> UsageSample {
        UsageSample {
            sampled_at: Timestamp::from_unix_ms(ms),
            cpu_percent,
            usage: ResourceUsage {
                cpu_usage_ns: cpu_ns,
                memory_bytes: 1000 + ms as u64,
                memory_limit_bytes: 256 << 20,
                disk_bytes: 7,
                ..ResourceUsage::default()
            },
        }
    }

    const T0: i64 = 1_800_000_000_000; // a multiple of STEP_MS

    #[test]
    fn one_point_per_five_second_step() {
        let mut h = UsageHistory::default();
        // A reading every second (with the jitter of a real timer) for a minute.
        let kept: Vec<i64> = (0..60)
            .map(|i| T0 + i * 1000 + (i % 3) * 7)
            .filter(|&ms| h.offer(&sample(ms, 0, 0.0)))
            .collect();
        assert_eq!(kept.len(), 12, "{kept:?}");
        let pts = h.points();
        assert_eq!(pts.len(), 12);
        for w in pts.windows(2) {
            let step = w[1].at.ms_since(w[0].at);
            assert!((4_980..=5_020).contains(&step), "{step} ms between points");
        }
        // Each point is the first reading of its step, with its own figures.
        assert_eq!(pts[0].at.unix_ms(), T0);
        assert_eq!(pts[1].at.unix_ms(), T0 + 5_000 + 7 * 2);
        assert_eq!(pts[1].memory_bytes, 1000 + pts[1].at.unix_ms() as u64);
        assert_eq!(
            (pts[1].memory_limit_bytes, pts[1].disk_bytes),
            (256 << 20, 7)
        );
        // A second reading in the same step, or one from the past, is not kept.
        assert!(!h.offer(&sample(T0 + 55_500, 0, 0.0)));
        assert!(!h.offer(&sample(T0, 0, 0.0)));
        assert_eq!(h.len(), 12);
    }

    #[test]
    fn cpu_is_averaged_between_points_from_the_counter() {
        let mut h = UsageHistory::default();
        // The first point carries the sampler's figure.
        assert!(h.offer(&sample(T0, 3_000_000_000, 12.5)));
        // Half a core for the next five seconds: 2.5 s of CPU time.
        assert!(h.offer(&sample(T0 + 5_000, 5_500_000_000, 99.0)));
        // Two cores for five seconds.
        assert!(h.offer(&sample(T0 + 10_000, 15_500_000_000, 1.0)));
        // Idle (or frozen) for ten seconds.
        assert!(h.offer(&sample(T0 + 20_000, 15_500_000_000, 0.0)));
        let cpu: Vec<f64> = h.points().iter().map(|p| p.cpu_percent).collect();
        assert_eq!(cpu, vec![12.5, 50.0, 200.0, 0.0]);
    }

    #[test]
    fn bounded_to_an_hour() {
        let mut h = UsageHistory::default();
        // Two hours of readings, one a second.
        for i in 0..7_200 {
            h.offer(&sample(T0 + i * 1000, 0, 0.0));
        }
        assert_eq!(h.len(), MAX_POINTS);
        assert_eq!(MAX_POINTS, 720);
        let pts = h.points();
        let newest = pts.last().unwrap().at;
        assert_eq!(newest.unix_ms(), T0 + 7_195_000);
        assert_eq!(newest.ms_since(pts[0].at), KEEP_MS - STEP_MS);
        // After a gap (readings failed for a while), points older than an hour go even
        // when fewer than MAX_POINTS are kept.
        h.offer(&sample(T0 + 7_200_000 + 3_000_000, 0, 0.0));
        assert_eq!(
            h.len(),
            121,
            "the last 600 s of the first run and the new point"
        );
        let pts = h.points();
        assert!(
            pts.last().unwrap().at.ms_since(pts[0].at) <= KEEP_MS,
            "{:?}",
            pts[0]
        );
    }
}
