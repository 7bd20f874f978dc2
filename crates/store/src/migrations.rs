//! Schema migrations: an ordered list of embedded SQL scripts, each applied once, in its
//! own transaction, and recorded in `schema_migrations`.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use quantbox_sandbox::{StoreError, Timestamp};

use crate::Ctx;

/// One schema change.
pub(crate) struct Migration {
    /// Position in the history, starting at 1 with no gaps.
    pub(crate) version: i64,
    /// What it does, for the log.
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first. Adding one is one line here plus its SQL file; never
/// edit or reorder a migration that has shipped.
#[rustfmt::skip]
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "sandboxes, executions, log lines", sql: include_str!("../migrations/0001_sandboxes.sql") },
    Migration { version: 2, name: "deployments, deployment events", sql: include_str!("../migrations/0002_deployments.sql") },
    Migration { version: 3, name: "paused sandboxes", sql: include_str!("../migrations/0003_paused.sql") },
    Migration { version: 4, name: "metric minute aggregates", sql: include_str!("../migrations/0004_metric_minutes.sql") },
    Migration { version: 5, name: "trading: strategies, series, orders, fills, trades, heartbeats, bars", sql: include_str!("../migrations/0005_trading.sql") },
];

/// The newest schema version this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database up to [`latest_version`]; refuses a database made by a newer
/// quantbox.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER
         )",
    )
    .ctx(|| "create schema_migrations".into())?;

    let latest = latest_version();
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .ctx(|| "read schema version".into())?;
    if current > latest {
        return Err(StoreError(format!(
            "database schema version {current} is newer than this quantbox (knows up to \
             {latest}); upgrade quantbox"
        )));
    }

    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let what = || format!("apply schema migration {} ({})", m.version, m.name);
        // IMMEDIATE: another process opening the same file waits here instead of racing.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(what)?;
        let applied = tx
            .query_row(
                "SELECT 1 FROM schema_migrations WHERE version = ?1",
                [m.version],
                |_| Ok(()),
            )
            .optional()
            .ctx(what)?
            .is_some();
        if applied {
            continue;
        }
        tx.execute_batch(m.sql).ctx(what)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![m.version, Timestamp::now().unix_ms()],
        )
        .ctx(what)?;
        tx.commit().ctx(what)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied schema migration"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_and_have_no_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration `{}`", m.name);
            assert!(!m.sql.trim().is_empty(), "migration `{}` is empty", m.name);
        }
    }
}
