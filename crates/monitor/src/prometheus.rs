//! Prometheus text exposition (format 0.0.4): a small writer that gets the details
//! right (HELP/TYPE once per family, label values escaped, `+Inf`, cumulative buckets),
//! and the latency histograms the front ends feed. Names follow Prometheus conventions:
//! `quantbox_` prefix, base units (seconds, bytes, ratios), `_total` for counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Writes one exposition.
#[derive(Default)]
pub struct Encoder {
    out: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Encoder {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            out: String::with_capacity(n),
        }
    }

    /// Starts a metric family.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) {
        self.family(name, help, kind);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Bucket upper bounds of the request latency histograms, seconds: 0.5 ms to 60 s
/// (sandbox creation and long tool calls included).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0,
];

/// [`LATENCY_BUCKETS`] as label values.
const LE: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "5",
    "15", "60",
];

#[derive(Clone, Debug, Default)]
struct HistData {
    /// Per bucket (not cumulative), plus one for above the last bound.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram family with labels.
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, HistData>>,
}

impl HistogramVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one observation of `secs` under `values` (one per label, in order).
    pub fn observe(&self, values: &[&str], secs: f64) {
        debug_assert_eq!(values.len(), self.labels.len());
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut s = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let d = s.entry(key).or_insert_with(|| HistData {
            counts: vec![0; LATENCY_BUCKETS.len() + 1],
            ..HistData::default()
        });
        d.counts[i] += 1;
        d.sum += secs;
        d.count += 1;
    }

    /// Observations so far under `values`.
    pub fn count(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let s = self.series.lock().unwrap_or_else(|e| e.into_inner());
        s.get(&key).map_or(0, |d| d.count)
    }

    pub fn encode(&self, e: &mut Encoder) {
        let series = self
            .series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        e.family(self.name, self.help, Kind::Histogram);
        let bucket = format!("{}_bucket", self.name);
        let sum = format!("{}_sum", self.name);
        let count = format!("{}_count", self.name);
        for (values, d) in &series {
            let mut labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            let mut cumulative = 0;
            for (i, le) in LE.iter().enumerate() {
                cumulative += d.counts[i];
                labels.push(("le", le));
                e.sample(&bucket, &labels, cumulative as f64);
                labels.pop();
            }
            labels.push(("le", "+Inf"));
            e.sample(&bucket, &labels, d.count as f64);
            labels.pop();
            e.sample(&sum, &labels, d.sum);
            e.sample(&count, &labels, d.count as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_labels_and_format_values() {
        let mut e = Encoder::default();
        e.family(
            "quantbox_x_bytes",
            "Bytes.\nSecond line \\ here",
            Kind::Gauge,
        );
        e.sample("quantbox_x_bytes", &[("name", "a\"b\\c\nd")], 1.0);
        e.sample("quantbox_x_bytes", &[], 0.25);
        e.sample("quantbox_x_bytes", &[("a", "1"), ("b", "2")], f64::NAN);
        let s = e.finish();
        assert_eq!(
            s,
            "# HELP quantbox_x_bytes Bytes.\\nSecond line \\\\ here\n\
             # TYPE quantbox_x_bytes gauge\n\
             quantbox_x_bytes{name=\"a\\\"b\\\\c\\nd\"} 1\n\
             quantbox_x_bytes 0.25\n\
             quantbox_x_bytes{a=\"1\",b=\"2\"} NaN\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = HistogramVec::new("quantbox_t_seconds", "T.", &["route"]);
        h.observe(&["/a"], 0.0004);
        h.observe(&["/a"], 0.003);
        h.observe(&["/a"], 100.0);
        assert_eq!(h.count(&["/a"]), 3);
        assert_eq!(h.count(&["/b"]), 0);
        let mut e = Encoder::default();
        h.encode(&mut e);
        let s = e.finish();
        assert!(
            s.contains("quantbox_t_seconds_bucket{route=\"/a\",le=\"0.0005\"} 1\n"),
            "{s}"
        );
        assert!(s.contains("quantbox_t_seconds_bucket{route=\"/a\",le=\"0.0025\"} 1\n"));
        assert!(s.contains("quantbox_t_seconds_bucket{route=\"/a\",le=\"0.005\"} 2\n"));
        assert!(s.contains("quantbox_t_seconds_bucket{route=\"/a\",le=\"60\"} 2\n"));
        assert!(s.contains("quantbox_t_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n"));
        assert!(s.contains("quantbox_t_seconds_count{route=\"/a\"} 3\n"));
        assert!(s.contains("quantbox_t_seconds_sum{route=\"/a\"} 100.0034\n"));
    }
}
