//! Durable state of quantbox: the SQLite implementation of the manager's persistence ports,
//! [`quantbox_sandbox::SandboxStore`] and [`quantbox_sandbox::DeploymentStore`].
//!
//! The manager keeps sandboxes, executions, recent log lines and deployments in memory
//! while it runs, but it must find them again after a restart (to adopt or clean up what
//! survived, to mark interrupted executions, to keep deployments at their size), and users
//! list stopped sandboxes and deleted deployments long after they ended.
//! This crate is the only place that knows SQL: one embedded SQLite file (WAL, one
//! connection behind a mutex), a schema that evolves through ordered, embedded migrations,
//! and decoding that turns a damaged row into an error naming its table, id and column
//! instead of a panic.

mod metrics;
mod migrations;
mod rows;
mod trading;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params, params_from_iter};

pub use quantbox_sandbox::StoreError;
use quantbox_sandbox::{
    DeploymentEvent, DeploymentId, DeploymentRecord, DeploymentStatus, DeploymentStore,
    ExecutionRecord, ListFilter, LogLine, SandboxId, SandboxRecord, SandboxStatus, SandboxStore,
    Stream,
};

use rows::{
    decode_deployment, decode_deployment_event, decode_execution, decode_log_line, decode_sandbox,
};

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// A [`SandboxStore`] and [`DeploymentStore`] in one SQLite database.
///
/// Every call takes the connection's mutex for the length of one short statement or
/// transaction. Several processes (or several `SqliteStore`s) may open the same file:
/// writers wait up to five seconds for each other.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// `None` for an in-memory database.
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if needed, mode 0600 on unix) the database at `path` and brings
    /// its schema up to date. The parent directory must exist. Fails if the database was
    /// written by a newer quantbox.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let what = || format!("open database {}", path.display());
        create_private(path).map_err(|e| StoreError(format!("{}: {e}", what())))?;
        let conn = Connection::open(path).ctx(what)?;
        Self::init(conn, Some(path.to_owned()))
            .map_err(|e| StoreError(format!("{}: {}", what(), e.0)))
    }

    /// Opens a private, empty database that lives as long as the store (for tests and
    /// throwaway servers).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().ctx(|| "open in-memory database".into())?;
        Self::init(conn, None)
    }

    /// The file this store writes, `None` when it is in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        // First, so that the PRAGMAs below also wait for other connections.
        conn.busy_timeout(BUSY_TIMEOUT)
            .ctx(|| "set busy_timeout".into())?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .ctx(|| "set journal_mode".into())?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; writers will block readers");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .ctx(|| "set synchronous".into())?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .ctx(|| "set foreign_keys".into())?;
        migrations::migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic elsewhere while holding the lock leaves no open transaction behind
        // (rusqlite rolls back on drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sandboxes whose status is in `statuses` (all when `None`), newest first.
    fn query_sandboxes(
        &self,
        statuses: Option<Vec<SandboxStatus>>,
        deployment_id: Option<&str>,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<SandboxRecord>, StoreError> {
        let mut sql = format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE 1 = 1");
        let mut args: Vec<&str> = Vec::new();
        if let Some(statuses) = &statuses {
            let marks = vec!["?"; statuses.len()].join(", ");
            sql.push_str(&format!(" AND status IN ({marks})"));
            args.extend(statuses.iter().map(|s| s.as_str()));
        }
        if let Some(d) = deployment_id {
            sql.push_str(" AND deployment_id = ?");
            args.push(d);
        }
        sql.push_str(" ORDER BY created_at DESC, id ASC");

        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).ctx(what)?;
        let mut rows = stmt.query(params_from_iter(args)).ctx(what)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx(what)? {
            out.push(decode_sandbox(row)?);
        }
        Ok(out)
    }
}

/// Every sandbox status, to turn status predicates into SQL `IN` lists.
const ALL_STATUSES: [SandboxStatus; 4] = [
    SandboxStatus::Creating,
    SandboxStatus::Running,
    SandboxStatus::Paused,
    SandboxStatus::Stopped,
];

const SANDBOX_COLUMNS: &str = "id, name, template, provider, status, stop_reason, memory_mb, \
     cpu_count, pids_max, timeout_s, env_vars, metadata, deployment_id, created_at, \
     expires_at, stopped_at, runtime, paused_at";

const EXECUTION_COLUMNS: &str = "id, sandbox_id, command, args, cwd, user, status, pid, \
     exit_code, signal, timed_out, oom_killed, sandbox_ended, stdout, stderr, stdout_truncated, \
     stderr_truncated, error, started_at, finished_at";

const DEPLOYMENT_COLUMNS: &str = "id, template, category, config, status, desired_instances, \
     autoscale_enabled, min_instances, max_instances, target_cpu_percent, created_at, updated_at";

static SANDBOX_UPSERT: LazyLock<String> =
    LazyLock::new(|| upsert_sql("sandboxes", SANDBOX_COLUMNS));
static EXECUTION_UPSERT: LazyLock<String> =
    LazyLock::new(|| upsert_sql("executions", EXECUTION_COLUMNS));
static DEPLOYMENT_UPSERT: LazyLock<String> =
    LazyLock::new(|| upsert_sql("deployments", DEPLOYMENT_COLUMNS));

/// `INSERT ... ON CONFLICT(id) DO UPDATE`: replaces a row in place. (`INSERT OR REPLACE`
/// would delete it first, which rows referencing it by foreign key forbid.)
fn upsert_sql(table: &str, columns: &str) -> String {
    let cols: Vec<&str> = columns.split(',').map(str::trim).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    let sets: Vec<String> = cols
        .iter()
        .filter(|c| **c != "id")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}",
        cols.join(", "),
        marks.join(", "),
        sets.join(", ")
    )
}

impl SandboxStore for SqliteStore {
    fn put_sandbox(&self, r: &SandboxRecord) -> Result<(), StoreError> {
        let what = || format!("insert sandbox {}", r.id);
        let col = |c: &str, e: &dyn fmt::Display| StoreError(format!("{}: {c}: {e}", what()));
        let memory_mb = i64::try_from(r.resources.memory_mb).map_err(|e| col("memory_mb", &e))?;
        let pids_max = i64::try_from(r.resources.pids_max).map_err(|e| col("pids_max", &e))?;
        let timeout_s = i64::try_from(r.timeout_s).map_err(|e| col("timeout_s", &e))?;
        let env_vars = serde_json::to_string(&r.env_vars).map_err(|e| col("env_vars", &e))?;
        let metadata = serde_json::to_string(&r.metadata).map_err(|e| col("metadata", &e))?;
        let runtime = serde_json::to_string(&r.runtime).map_err(|e| col("runtime", &e))?;

        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&SANDBOX_UPSERT).ctx(what)?;
        stmt.execute(params![
            r.id.as_str(),
            r.name,
            r.template,
            r.provider,
            r.status.as_str(),
            r.stop_reason.map(|s| s.as_str()),
            memory_mb,
            r.resources.cpu_count,
            pids_max,
            timeout_s,
            env_vars,
            metadata,
            r.deployment_id,
            r.created_at.unix_ms(),
            r.expires_at.unix_ms(),
            r.stopped_at.map(|t| t.unix_ms()),
            runtime,
            r.paused_at.map(|t| t.unix_ms()),
        ])
        .ctx(what)?;
        Ok(())
    }

    fn get_sandbox(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, StoreError> {
        let what = || format!("get sandbox {id}");
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE id = ?1"
            ))
            .ctx(what)?;
        let mut rows = stmt.query([id.as_str()]).ctx(what)?;
        match rows.next().ctx(what)? {
            Some(row) => decode_sandbox(row).map(Some),
            None => Ok(None),
        }
    }

    fn list_sandboxes(&self, filter: &ListFilter) -> Result<Vec<SandboxRecord>, StoreError> {
        let statuses = filter
            .status
            .map(|f| ALL_STATUSES.into_iter().filter(|s| f.matches(*s)).collect());
        let mut records =
            self.query_sandboxes(statuses, filter.deployment_id.as_deref(), &|| {
                "list sandboxes".into()
            })?;
        // In Rust rather than with json_extract: keys may contain anything, dots and
        // quotes included, and JSON paths would have to escape them.
        if !filter.metadata.is_empty() {
            records.retain(|r| {
                filter
                    .metadata
                    .iter()
                    .all(|(k, v)| r.metadata.get(k) == Some(v))
            });
        }
        Ok(records)
    }

    fn active_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let statuses = ALL_STATUSES.into_iter().filter(|s| s.is_active()).collect();
        self.query_sandboxes(Some(statuses), None, &|| "list active sandboxes".into())
    }

    fn put_execution(&self, e: &ExecutionRecord) -> Result<(), StoreError> {
        let what = || format!("insert execution {} of sandbox {}", e.id, e.sandbox_id);
        let args = serde_json::to_string(&e.args)
            .map_err(|err| StoreError(format!("{}: args: {err}", what())))?;
        let o = &e.outcome;
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&EXECUTION_UPSERT).ctx(what)?;
        stmt.execute(params![
            e.id.as_str(),
            e.sandbox_id.as_str(),
            e.command,
            args,
            e.cwd,
            e.user.as_str(),
            e.status.as_str(),
            o.pid,
            o.exit_code,
            o.signal,
            o.timed_out,
            o.oom_killed,
            o.sandbox_ended,
            o.stdout,
            o.stderr,
            o.stdout_truncated,
            o.stderr_truncated,
            e.error,
            e.started_at.unix_ms(),
            e.finished_at.map(|t| t.unix_ms()),
        ])
        .ctx(what)?;
        Ok(())
    }

    fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        let what = || format!("get execution {id}");
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?1"
            ))
            .ctx(what)?;
        let mut rows = stmt.query([id]).ctx(what)?;
        match rows.next().ctx(what)? {
            Some(row) => decode_execution(row).map(Some),
            None => Ok(None),
        }
    }

    fn interrupt_executions(&self, sandbox: Option<&SandboxId>) -> Result<u64, StoreError> {
        let conn = self.conn();
        let n = match sandbox {
            None => conn
                .execute(
                    "UPDATE executions SET status = 'interrupted' WHERE status = 'running'",
                    [],
                )
                .ctx(|| "interrupt running executions".into())?,
            Some(id) => conn
                .execute(
                    "UPDATE executions SET status = 'interrupted' \
                     WHERE status = 'running' AND sandbox_id = ?1",
                    [id.as_str()],
                )
                .ctx(|| format!("interrupt running executions of sandbox {id}"))?,
        };
        Ok(n as u64)
    }

    fn append_logs(
        &self,
        sandbox: &SandboxId,
        lines: &[LogLine],
        keep: usize,
    ) -> Result<(), StoreError> {
        let what = || format!("append {} log lines of sandbox {sandbox}", lines.len());
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(what)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO log_lines (sandbox_id, at, stream, line) VALUES (?1, ?2, ?3, ?4)",
                )
                .ctx(what)?;
            for l in lines {
                insert
                    .execute(params![
                        sandbox.as_str(),
                        l.at.unix_ms(),
                        l.stream.as_str(),
                        l.line
                    ])
                    .ctx(what)?;
            }
            // Drops every output line at or before the (keep + 1)-th newest one; events
            // stay.
            let keep = i64::try_from(keep).unwrap_or(i64::MAX);
            let mut prune = tx
                .prepare_cached(
                    "DELETE FROM log_lines
                     WHERE sandbox_id = ?1 AND stream IN (?2, ?3) AND id <= (
                         SELECT id FROM log_lines
                         WHERE sandbox_id = ?1 AND stream IN (?2, ?3)
                         ORDER BY id DESC LIMIT 1 OFFSET ?4)",
                )
                .ctx(what)?;
            prune
                .execute(params![
                    sandbox.as_str(),
                    Stream::Stdout.as_str(),
                    Stream::Stderr.as_str(),
                    keep
                ])
                .ctx(what)?;
        }
        tx.commit().ctx(what)
    }

    fn recent_logs(&self, sandbox: &SandboxId, n: usize) -> Result<Vec<LogLine>, StoreError> {
        let what = || format!("read recent log lines of sandbox {sandbox}");
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, at, stream, line FROM log_lines
                 WHERE sandbox_id = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .ctx(what)?;
        let mut rows = stmt.query(params![sandbox.as_str(), n]).ctx(what)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx(what)? {
            out.push(decode_log_line(row)?);
        }
        out.reverse();
        Ok(out)
    }
}

impl DeploymentStore for SqliteStore {
    fn put_deployment(&self, d: &DeploymentRecord) -> Result<(), StoreError> {
        let what = || format!("insert deployment {}", d.id);
        let col = |c: &str, e: &dyn fmt::Display| StoreError(format!("{}: {c}: {e}", what()));
        // JSON writes a non-finite number as `null`, which would not read back; SQLite
        // stores NaN as NULL. Refuse both here rather than fail on every later read.
        if !d.config.cpu_count.is_finite() {
            return Err(col(
                "config.cpu_count",
                &format_args!("{} cannot be stored", d.config.cpu_count),
            ));
        }
        if d.auto_scale.target_cpu_percent.is_nan() {
            return Err(col("target_cpu_percent", &"NaN cannot be stored"));
        }
        let config = serde_json::to_string(&d.config).map_err(|e| col("config", &e))?;

        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&DEPLOYMENT_UPSERT).ctx(what)?;
        stmt.execute(params![
            d.id.as_str(),
            d.template,
            d.category,
            config,
            d.status.as_str(),
            d.desired_instances,
            d.auto_scale.enabled,
            d.auto_scale.min_instances,
            d.auto_scale.max_instances,
            d.auto_scale.target_cpu_percent,
            d.created_at.unix_ms(),
            d.updated_at.unix_ms(),
        ])
        .ctx(what)?;
        Ok(())
    }

    fn get_deployment(&self, id: &DeploymentId) -> Result<Option<DeploymentRecord>, StoreError> {
        let what = || format!("get deployment {id}");
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?1"
            ))
            .ctx(what)?;
        let mut rows = stmt.query([id.as_str()]).ctx(what)?;
        match rows.next().ctx(what)? {
            Some(row) => decode_deployment(row).map(Some),
            None => Ok(None),
        }
    }

    fn list_deployments(&self, include_deleted: bool) -> Result<Vec<DeploymentRecord>, StoreError> {
        let what = || "list deployments".to_owned();
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
                 WHERE ?1 OR status <> ?2
                 ORDER BY created_at DESC, id ASC"
            ))
            .ctx(what)?;
        let mut rows = stmt
            .query(params![include_deleted, DeploymentStatus::Deleted.as_str()])
            .ctx(what)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx(what)? {
            out.push(decode_deployment(row)?);
        }
        Ok(out)
    }

    fn append_deployment_event(
        &self,
        id: &DeploymentId,
        event: &DeploymentEvent,
    ) -> Result<(), StoreError> {
        let what = || format!("append `{}` event of deployment {id}", event.kind);
        let details = serde_json::to_string(&event.details)
            .map_err(|e| StoreError(format!("{}: details: {e}", what())))?;
        let conn = self.conn();
        // One statement: the check that the deployment exists and the insert cannot be
        // separated by another connection's write. (The foreign key is the backstop.)
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO deployment_events (deployment_id, at, kind, message, details)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE EXISTS (SELECT 1 FROM deployments WHERE id = ?1)",
            )
            .ctx(what)?;
        let inserted = stmt
            .execute(params![
                id.as_str(),
                event.at.unix_ms(),
                event.kind,
                event.message,
                details,
            ])
            .ctx(what)?;
        if inserted == 0 {
            return Err(StoreError(format!("{}: no such deployment", what())));
        }
        Ok(())
    }

    fn deployment_events(
        &self,
        id: &DeploymentId,
        n: usize,
    ) -> Result<Vec<DeploymentEvent>, StoreError> {
        let what = || format!("read recent events of deployment {id}");
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, at, kind, message, details FROM deployment_events
                 WHERE deployment_id = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .ctx(what)?;
        let mut rows = stmt.query(params![id.as_str(), n]).ctx(what)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx(what)? {
            out.push(decode_deployment_event(row)?);
        }
        out.reverse();
        Ok(out)
    }
}

/// Creates the database file readable by its owner only, unless it exists.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map(drop)
}

/// Adds what was being done to a SQLite error.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| StoreError(format!("{}: {e}", what())))
    }
}
