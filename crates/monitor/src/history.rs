//! History of the host metrics: the last hour of readings at full resolution in memory,
//! and one-minute aggregates (min, avg, max, count) that the collector persists so that
//! a range of up to seven days, and a restart, are covered. Pure: no clock, no I/O.
//!
//! A query merges the two: minute aggregates for the time before the first reading in
//! memory, readings after it. Its points are averaged into buckets of a "nice" width
//! chosen so that a range never gives more than [`MAX_POINTS`] points; its summary is
//! computed over all samples of the range, not over the points.

use std::collections::VecDeque;

/// The series kept per metric name of `get_system_metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Cpu,
    Memory,
    Disk,
    Network,
    Gpu,
    Sandboxes,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Self::Cpu,
        Self::Memory,
        Self::Disk,
        Self::Network,
        Self::Gpu,
        Self::Sandboxes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Network => "network",
            Self::Gpu => "gpu",
            Self::Sandboxes => "sandboxes",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// What the history of this metric holds.
    pub fn series(self) -> &'static str {
        match self {
            Self::Cpu => "usage_percent: busy share of all cores",
            Self::Memory => "usage_percent: (total - available) / total",
            Self::Disk => "usage_percent of the fullest real disk",
            Self::Network => "bytes_per_s: received + sent over all interfaces but loopback",
            Self::Gpu => "utilization_percent: mean over the GPUs",
            Self::Sandboxes => "running: sandboxes running",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Self::Cpu | Self::Memory | Self::Disk | Self::Gpu => "percent",
            Self::Network => "bytes_per_s",
            Self::Sandboxes => "sandboxes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One minute of one metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinuteAgg {
    /// Start of the minute, Unix seconds (a multiple of 60).
    pub minute: i64,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    /// Readings it summarises.
    pub count: u64,
}

impl MinuteAgg {
    /// Merges two aggregates of the same minute (a restart within a minute).
    pub fn merge(self, o: MinuteAgg) -> MinuteAgg {
        let count = self.count + o.count;
        MinuteAgg {
            minute: self.minute,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
            avg: if count == 0 {
                0.0
            } else {
                (self.avg * self.count as f64 + o.avg * o.count as f64) / count as f64
            },
            count,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Acc {
    minute: i64,
    min: f64,
    max: f64,
    sum: f64,
    count: u64,
}

impl Acc {
    fn agg(&self) -> MinuteAgg {
        MinuteAgg {
            minute: self.minute,
            min: self.min,
            avg: self.sum / self.count as f64,
            max: self.max,
            count: self.count,
        }
    }
}

fn minute_of(t_ms: i64) -> i64 {
    t_ms.div_euclid(60_000) * 60
}

/// Readings in memory and the minute being accumulated, per metric.
pub struct History {
    window_ms: i64,
    rings: [VecDeque<(i64, f64)>; 6],
    acc: [Option<Acc>; 6],
    completed: Vec<(Metric, MinuteAgg)>,
}

impl History {
    /// Keeps readings of the last `window_ms` milliseconds, and those of the rest of the
    /// minute the oldest of them falls in.
    pub fn new(window_ms: i64) -> Self {
        Self {
            window_ms,
            rings: Default::default(),
            acc: [None; 6],
            completed: Vec::new(),
        }
    }

    /// Adds a reading taken at `t_ms` (Unix milliseconds, not before the last one).
    pub fn push(&mut self, metric: Metric, t_ms: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let i = metric.index();
        let ring = &mut self.rings[i];
        if ring.back().is_some_and(|&(t, _)| t > t_ms) {
            return;
        }
        ring.push_back((t_ms, value));
        // Whole minutes leave together, so that the oldest reading in memory starts a
        // minute and the minutes before it are exactly the stored ones.
        let cutoff = minute_of(t_ms - self.window_ms) * 1000;
        while ring.front().is_some_and(|&(t, _)| t < cutoff) {
            ring.pop_front();
        }
        let minute = minute_of(t_ms);
        match &mut self.acc[i] {
            Some(a) if a.minute == minute => {
                a.min = a.min.min(value);
                a.max = a.max.max(value);
                a.sum += value;
                a.count += 1;
            }
            slot => {
                if let Some(done) = slot.take() {
                    self.completed.push((metric, done.agg()));
                }
                *slot = Some(Acc {
                    minute,
                    min: value,
                    max: value,
                    sum: value,
                    count: 1,
                });
            }
        }
    }

    /// Puts readings recorded elsewhere before those in memory (those not older than
    /// the first reading in memory, or out of the window, are left out). They are not
    /// aggregated into minutes for the store.
    pub fn prepend(&mut self, metric: Metric, readings: &[(i64, f64)]) {
        let ring = &mut self.rings[metric.index()];
        let first = ring.front().map_or(i64::MAX, |&(t, _)| t);
        let last = ring.back().map_or(i64::MIN, |&(t, _)| t);
        let newest = last.max(readings.iter().map(|r| r.0).max().unwrap_or(i64::MIN));
        let cutoff = minute_of(newest.saturating_sub(self.window_ms)) * 1000;
        let mut older: Vec<(i64, f64)> = readings
            .iter()
            .copied()
            .filter(|&(t, v)| t < first && t >= cutoff && v.is_finite())
            .collect();
        older.sort_by_key(|r| r.0);
        older.dedup_by_key(|r| r.0);
        for r in older.into_iter().rev() {
            ring.push_front(r);
        }
    }

    /// Minutes that ended since the last call, to be persisted.
    pub fn take_completed(&mut self) -> Vec<(Metric, MinuteAgg)> {
        std::mem::take(&mut self.completed)
    }

    /// Everything not yet persisted, the minutes in progress included (at shutdown).
    pub fn take_all(&mut self) -> Vec<(Metric, MinuteAgg)> {
        let mut out = self.take_completed();
        for m in Metric::ALL {
            if let Some(a) = self.acc[m.index()].take() {
                out.push((m, a.agg()));
            }
        }
        out
    }

    /// Time of the oldest reading in memory.
    pub fn first_ms(&self, metric: Metric) -> Option<i64> {
        self.rings[metric.index()].front().map(|&(t, _)| t)
    }

    /// Readings in `[from_ms, to_ms]`.
    pub fn readings(&self, metric: Metric, from_ms: i64, to_ms: i64) -> Vec<(i64, f64)> {
        let ring = &self.rings[metric.index()];
        let start = ring.partition_point(|&(t, _)| t < from_ms);
        ring.range(start..)
            .take_while(|&&(t, _)| t <= to_ms)
            .copied()
            .collect()
    }
}

/// Most points a query returns per metric.
pub const MAX_POINTS: i64 = 360;

/// Bucket widths, seconds.
const WIDTHS: [i64; 12] = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

/// The bucket width for a range: the smallest that gives at most [`MAX_POINTS`] points.
pub fn resolution_s(range_s: i64) -> i64 {
    WIDTHS
        .into_iter()
        .find(|w| range_s / w <= MAX_POINTS)
        .unwrap_or(3600)
}

/// The history of one metric over a range.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// `(bucket start, Unix seconds; mean of the bucket)`.
    pub points: Vec<(i64, f64)>,
    pub resolution_s: i64,
    /// Readings summarised (a minute aggregate counts its readings).
    pub samples: u64,
    pub min: Option<f64>,
    pub avg: Option<f64>,
    pub max: Option<f64>,
    /// Nearest-rank 95th percentile: exact over readings; a minute aggregate counts as
    /// its average, weighted by its readings.
    pub p95: Option<f64>,
}

/// Summarises readings (Unix ms) and minute aggregates (before the readings) over
/// `[from_ms, to_ms]`.
pub fn summarize(
    readings: &[(i64, f64)],
    minutes: &[MinuteAgg],
    from_ms: i64,
    to_ms: i64,
) -> Summary {
    let res = resolution_s(((to_ms - from_ms) / 1000).max(1));
    let bucket = |t_s: i64| t_s.div_euclid(res) * res;
    // Points: (bucket, sum, count), in time order (minutes come before readings).
    let mut points: Vec<(i64, f64, u64)> = Vec::new();
    let mut add = |b: i64, sum: f64, n: u64| match points.last_mut() {
        Some(last) if last.0 == b => {
            last.1 += sum;
            last.2 += n;
        }
        _ => points.push((b, sum, n)),
    };
    let (mut min, mut max, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0u64);
    for m in minutes {
        add(bucket(m.minute), m.avg * m.count as f64, m.count);
        min = min.min(m.min);
        max = max.max(m.max);
        sum += m.avg * m.count as f64;
        n += m.count;
    }
    for &(t, v) in readings {
        add(bucket(t.div_euclid(1000)), v, 1);
        min = min.min(v);
        max = max.max(v);
        sum += v;
        n += 1;
    }
    let points = points
        .into_iter()
        .map(|(b, s, c)| (b, s / c as f64))
        .collect();
    if n == 0 {
        return Summary {
            points,
            resolution_s: res,
            samples: 0,
            min: None,
            avg: None,
            max: None,
            p95: None,
        };
    }
    Summary {
        points,
        resolution_s: res,
        samples: n,
        min: Some(min),
        avg: Some(sum / n as f64),
        max: Some(max),
        p95: Some(p95(readings, minutes, n)),
    }
}

/// Nearest rank: the smallest value with at least 95 % of the weight at or below it.
fn p95(readings: &[(i64, f64)], minutes: &[MinuteAgg], n: u64) -> f64 {
    let rank = (0.95 * n as f64).ceil().max(1.0) as u64;
    if minutes.is_empty() {
        let mut v: Vec<f64> = readings.iter().map(|&(_, v)| v).collect();
        let k = (rank - 1) as usize;
        let (_, x, _) = v.select_nth_unstable_by(k, f64::total_cmp);
        return *x;
    }
    let mut w: Vec<(f64, u64)> = readings.iter().map(|&(_, v)| (v, 1)).collect();
    w.extend(minutes.iter().map(|m| (m.avg, m.count)));
    w.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut seen = 0;
    for (v, c) in &w {
        seen += c;
        if seen >= rank {
            return *v;
        }
    }
    w.last().map_or(f64::NAN, |x| x.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_older_than_the_window_are_dropped_and_minutes_complete() {
        let mut h = History::new(10_000);
        for i in 0..130 {
            h.push(Metric::Cpu, 60_000 + i * 1000, i as f64);
        }
        // The last reading is at 189 s; a 10 s window rounded down to its minute keeps
        // readings from 120 s on.
        let r = h.readings(Metric::Cpu, 0, i64::MAX);
        assert_eq!(r.len(), 70);
        assert_eq!(r[0], (120_000, 60.0));
        // A minute leaves memory whole.
        let mut h2 = History::new(60_000);
        for i in 0..150 {
            h2.push(Metric::Cpu, i * 1000, i as f64);
        }
        assert_eq!(h2.first_ms(Metric::Cpu), Some(60_000));
        let done = h.take_completed();
        assert_eq!(done.len(), 2);
        let (m, a) = done[0];
        assert_eq!(m, Metric::Cpu);
        assert_eq!(
            a,
            MinuteAgg {
                minute: 60,
                min: 0.0,
                avg: 29.5,
                max: 59.0,
                count: 60
            }
        );
        assert_eq!(done[1].1.minute, 120);
        assert!(h.take_completed().is_empty());
        let rest = h.take_all();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1.count, 10);
        assert_eq!(rest[0].1.minute, 180);
    }

    #[test]
    fn prepended_readings_go_before_and_stay_in_the_window() {
        let mut h = History::new(10_000);
        h.push(Metric::Cpu, 130_000, 5.0);
        // Kept from the minute of 130 s - 10 s on: 120 s.
        h.prepend(
            Metric::Cpu,
            &[
                (129_000, 4.0),
                (100_000, 1.0),
                (122_000, 2.0),
                (130_000, 9.0),
                (122_000, 3.0),
            ],
        );
        assert_eq!(
            h.readings(Metric::Cpu, 0, i64::MAX),
            vec![(122_000, 2.0), (129_000, 4.0), (130_000, 5.0)]
        );
        assert!(h.take_all().iter().all(|(_, a)| a.count == 1));
    }

    #[test]
    fn non_finite_and_out_of_order_readings_are_ignored() {
        let mut h = History::new(60_000);
        h.push(Metric::Memory, 2000, f64::NAN);
        h.push(Metric::Memory, 2000, 1.0);
        h.push(Metric::Memory, 1000, 2.0);
        assert_eq!(h.readings(Metric::Memory, 0, 5000), vec![(2000, 1.0)]);
        assert!(h.readings(Metric::Cpu, 0, 5000).is_empty());
    }

    #[test]
    fn resolution_keeps_points_under_the_cap() {
        assert_eq!(resolution_s(60), 1);
        assert_eq!(resolution_s(360), 1);
        assert_eq!(resolution_s(3600), 10);
        assert_eq!(resolution_s(86_400), 300);
        assert_eq!(resolution_s(7 * 86_400), 1800);
        for range in [1, 59, 361, 3601, 10_000, 604_800] {
            assert!(range / resolution_s(range) <= MAX_POINTS, "{range}");
        }
    }

    #[test]
    fn summary_of_readings_is_exact() {
        // 1..=100 over 100 s: p95 by nearest rank is 95.
        let r: Vec<(i64, f64)> = (1..=100).map(|i| (i * 1000, i as f64)).collect();
        let s = summarize(&r, &[], 0, 100_000);
        assert_eq!(s.samples, 100);
        assert_eq!(s.min, Some(1.0));
        assert_eq!(s.max, Some(100.0));
        assert_eq!(s.avg, Some(50.5));
        assert_eq!(s.p95, Some(95.0));
        assert_eq!(s.resolution_s, 1);
        assert_eq!(s.points.len(), 100);
        assert_eq!(s.points[0], (1, 1.0));
    }

    #[test]
    fn minutes_and_readings_merge_with_weights() {
        let minutes = [
            MinuteAgg {
                minute: 0,
                min: 0.0,
                avg: 10.0,
                max: 20.0,
                count: 60,
            },
            MinuteAgg {
                minute: 60,
                min: 5.0,
                avg: 30.0,
                max: 90.0,
                count: 20,
            },
        ];
        let r = [(120_000, 50.0), (121_000, 70.0)];
        let s = summarize(&r, &minutes, 0, 122_000);
        assert_eq!(s.samples, 82);
        assert_eq!(s.min, Some(0.0));
        assert_eq!(s.max, Some(90.0));
        let avg = (600.0 + 600.0 + 120.0) / 82.0;
        assert!((s.avg.unwrap() - avg).abs() < 1e-12);
        // rank ceil(0.95 * 82) = 78: the 60 tens, then the 20 thirties reach 80 ≥ 78.
        assert_eq!(s.p95, Some(30.0));
        // 122 s range → 1 s buckets: one point per minute, then the readings.
        assert_eq!(
            s.points,
            vec![(0, 10.0), (60, 30.0), (120, 50.0), (121, 70.0)]
        );
    }

    #[test]
    fn an_empty_range_has_no_figures() {
        let s = summarize(&[], &[], 0, 60_000);
        assert_eq!(s.samples, 0);
        assert!(s.points.is_empty());
        assert!(s.min.is_none() && s.avg.is_none() && s.max.is_none() && s.p95.is_none());
    }

    #[test]
    fn minute_aggregates_merge() {
        let a = MinuteAgg {
            minute: 60,
            min: 1.0,
            avg: 2.0,
            max: 3.0,
            count: 10,
        };
        let b = MinuteAgg {
            minute: 60,
            min: 0.5,
            avg: 5.0,
            max: 4.0,
            count: 30,
        };
        let m = a.merge(b);
        assert_eq!((m.min, m.max, m.count), (0.5, 4.0, 40));
        assert!((m.avg - 4.25).abs() < 1e-12);
    }

    #[test]
    fn metric_names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.name()), Some(m));
        }
        assert_eq!(Metric::parse("cpus"), None);
    }
}
