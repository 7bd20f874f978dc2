//! The monitor's minute aggregates: written once a minute by the collector (merged when
//! a restart splits a minute in two), read for history beyond the hour in memory.

use quantbox_monitor::{Metric, MetricStore, MinuteAgg};
use quantbox_sandbox::StoreError;
use rusqlite::params;

use crate::{Ctx, SqliteStore};

/// Merges into an existing row: min of mins, max of maxes, average weighted by count.
const UPSERT: &str = "INSERT INTO metric_minutes (metric, minute, min, avg, max, count)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (metric, minute) DO UPDATE SET
       min = MIN(min, excluded.min),
       max = MAX(max, excluded.max),
       avg = (avg * count + excluded.avg * excluded.count) / (count + excluded.count),
       count = count + excluded.count";

impl MetricStore for SqliteStore {
    fn put_minutes(&self, rows: &[(Metric, MinuteAgg)]) -> Result<(), StoreError> {
        let what = || format!("storing {} metric minute aggregate(s)", rows.len());
        let mut conn = self.conn();
        let tx = conn.transaction().ctx(what)?;
        {
            let mut stmt = tx.prepare_cached(UPSERT).ctx(what)?;
            for (m, a) in rows {
                if !(a.min.is_finite() && a.avg.is_finite() && a.max.is_finite()) || a.count == 0 {
                    return Err(StoreError(format!(
                        "{}: {} at minute {} is not finite or empty ({a:?})",
                        what(),
                        m.name(),
                        a.minute
                    )));
                }
                let count = i64::try_from(a.count)
                    .map_err(|e| StoreError(format!("{}: count: {e}", what())))?;
                stmt.execute(params![m.name(), a.minute, a.min, a.avg, a.max, count])
                    .ctx(what)?;
            }
        }
        tx.commit().ctx(what)
    }

    fn minutes(
        &self,
        metric: Metric,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<MinuteAgg>, StoreError> {
        let what = || format!("reading {} minute aggregates", metric.name());
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT minute, min, avg, max, count FROM metric_minutes
                 WHERE metric = ?1 AND minute >= ?2 AND minute < ?3 ORDER BY minute",
            )
            .ctx(what)?;
        let rows = stmt
            .query_map(params![metric.name(), from_s, to_s], |r| {
                Ok(MinuteAgg {
                    minute: r.get(0)?,
                    min: r.get(1)?,
                    avg: r.get(2)?,
                    max: r.get(3)?,
                    count: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                })
            })
            .ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }

    fn prune_minutes(&self, before_s: i64) -> Result<u64, StoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM metric_minutes WHERE minute < ?1",
                params![before_s],
            )
            .ctx(|| "pruning metric minute aggregates".into())?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(minute: i64, min: f64, avg: f64, max: f64, count: u64) -> MinuteAgg {
        MinuteAgg {
            minute,
            min,
            avg,
            max,
            count,
        }
    }

    #[test]
    fn minutes_round_trip_merge_and_prune() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.put_minutes(&[
            (Metric::Cpu, agg(60, 1.0, 2.0, 3.0, 10)),
            (Metric::Cpu, agg(120, 4.0, 5.0, 6.0, 60)),
            (Metric::Memory, agg(60, 7.0, 8.0, 9.0, 60)),
        ])
        .unwrap();
        // The same minute again (a restart): merged, not replaced.
        s.put_minutes(&[(Metric::Cpu, agg(60, 0.5, 6.0, 2.0, 30))])
            .unwrap();
        let cpu = s.minutes(Metric::Cpu, 0, 1000).unwrap();
        assert_eq!(cpu.len(), 2);
        assert_eq!((cpu[0].min, cpu[0].max, cpu[0].count), (0.5, 3.0, 40));
        assert!((cpu[0].avg - 5.0).abs() < 1e-12);
        assert_eq!(cpu[1], agg(120, 4.0, 5.0, 6.0, 60));
        // Bounds: from inclusive, to exclusive.
        assert_eq!(s.minutes(Metric::Cpu, 61, 120).unwrap(), vec![]);
        assert_eq!(s.minutes(Metric::Cpu, 120, 121).unwrap().len(), 1);
        assert_eq!(s.minutes(Metric::Gpu, 0, 1000).unwrap(), vec![]);
        assert_eq!(s.prune_minutes(120).unwrap(), 2);
        assert_eq!(s.minutes(Metric::Cpu, 0, 1000).unwrap().len(), 1);
        assert!(s.minutes(Metric::Memory, 0, 1000).unwrap().is_empty());
    }

    #[test]
    fn non_finite_aggregates_are_refused_and_nothing_is_written() {
        let s = SqliteStore::open_in_memory().unwrap();
        let e = s
            .put_minutes(&[
                (Metric::Cpu, agg(60, 1.0, 2.0, 3.0, 10)),
                (Metric::Cpu, agg(120, 1.0, f64::NAN, 3.0, 10)),
            ])
            .unwrap_err();
        assert!(e.0.contains("not finite"), "{e}");
        assert!(s.minutes(Metric::Cpu, 0, 1000).unwrap().is_empty());
    }
}
