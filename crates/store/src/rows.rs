//! Decoding rows into domain records. Nothing here panics: a value that does not decode
//! (wrong SQL type, out of range, unknown enum string, bad JSON, malformed id) is an error
//! naming the table, the row's id and the column.

use std::collections::BTreeMap;
use std::fmt;

use rusqlite::Row;
use rusqlite::types::FromSql;

use quantbox_sandbox::{
    AutoScale, DeploymentConfig, DeploymentEvent, DeploymentId, DeploymentRecord, DeploymentStatus,
    ExecOutcome, ExecStatus, ExecUser, ExecutionId, ExecutionRecord, LogLine, Resources, SandboxId,
    SandboxRecord, SandboxStatus, StopReason, StoreError, Stream, Timestamp,
};

/// One row being decoded, with what errors need to say where they are.
struct RowCtx<'a, 'r> {
    row: &'a Row<'r>,
    table: &'static str,
    id: String,
}

impl<'a, 'r> RowCtx<'a, 'r> {
    /// Reads the row's `id` column (of type `I`) first, so later errors can name it.
    fn new<I: FromSql + fmt::Display>(
        row: &'a Row<'r>,
        table: &'static str,
    ) -> Result<Self, StoreError> {
        let id: I = row
            .get("id")
            .map_err(|e| StoreError(format!("decode {table} row: column id: {e}")))?;
        Ok(Self {
            row,
            table,
            id: id.to_string(),
        })
    }

    fn bad(&self, column: &str, detail: impl fmt::Display) -> StoreError {
        StoreError(format!(
            "decode {} {}: column {column}: {detail}",
            self.table, self.id
        ))
    }

    fn get<T: FromSql>(&self, column: &str) -> Result<T, StoreError> {
        self.row.get(column).map_err(|e| self.bad(column, e))
    }

    /// An unsigned integer, stored as SQLite's signed INTEGER.
    fn uint(&self, column: &str) -> Result<u64, StoreError> {
        let v: i64 = self.get(column)?;
        u64::try_from(v).map_err(|_| self.bad(column, format_args!("negative value {v}")))
    }

    fn time(&self, column: &str) -> Result<Timestamp, StoreError> {
        self.get::<i64>(column).map(Timestamp::from_unix_ms)
    }

    fn opt_time(&self, column: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .get::<Option<i64>>(column)?
            .map(Timestamp::from_unix_ms))
    }

    fn enumeration<T>(
        &self,
        column: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, StoreError> {
        let s: String = self.get(column)?;
        parse(&s).ok_or_else(|| self.bad(column, format_args!("unknown value `{s}`")))
    }

    fn opt_enumeration<T>(
        &self,
        column: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        match self.get::<Option<String>>(column)? {
            None => Ok(None),
            Some(s) => parse(&s)
                .map(Some)
                .ok_or_else(|| self.bad(column, format_args!("unknown value `{s}`"))),
        }
    }

    fn json<T>(
        &self,
        column: &str,
        parse: impl FnOnce(&str) -> serde_json::Result<T>,
    ) -> Result<T, StoreError> {
        let s: String = self.get(column)?;
        parse(&s).map_err(|e| self.bad(column, format_args!("invalid JSON: {e}")))
    }

    fn sandbox_id(&self, column: &str) -> Result<SandboxId, StoreError> {
        let s: String = self.get(column)?;
        SandboxId::parse(&s).map_err(|e| self.bad(column, e))
    }
}

fn parse_user(s: &str) -> Option<ExecUser> {
    [ExecUser::User, ExecUser::Root]
        .into_iter()
        .find(|u| u.as_str() == s)
}

/// Decodes a row selected with `SANDBOX_COLUMNS`.
pub(crate) fn decode_sandbox(row: &Row<'_>) -> Result<SandboxRecord, StoreError> {
    let c = RowCtx::new::<String>(row, "sandboxes")?;
    Ok(SandboxRecord {
        id: c.sandbox_id("id")?,
        name: c.get("name")?,
        template: c.get("template")?,
        provider: c.get("provider")?,
        status: c.enumeration("status", SandboxStatus::parse)?,
        stop_reason: c.opt_enumeration("stop_reason", StopReason::parse)?,
        resources: Resources {
            memory_mb: c.uint("memory_mb")?,
            cpu_count: c.get("cpu_count")?,
            pids_max: c.uint("pids_max")?,
        },
        timeout_s: c.uint("timeout_s")?,
        env_vars: c.json("env_vars", |s| {
            serde_json::from_str::<BTreeMap<String, String>>(s)
        })?,
        metadata: c.json("metadata", |s| {
            serde_json::from_str::<BTreeMap<String, String>>(s)
        })?,
        deployment_id: c.get("deployment_id")?,
        created_at: c.time("created_at")?,
        expires_at: c.time("expires_at")?,
        stopped_at: c.opt_time("stopped_at")?,
        paused_at: c.opt_time("paused_at")?,
        runtime: c.json("runtime", |s| serde_json::from_str::<serde_json::Value>(s))?,
    })
}

/// Decodes a row selected with `EXECUTION_COLUMNS`.
pub(crate) fn decode_execution(row: &Row<'_>) -> Result<ExecutionRecord, StoreError> {
    let c = RowCtx::new::<String>(row, "executions")?;
    Ok(ExecutionRecord {
        id: ExecutionId::from_string(c.get("id")?),
        sandbox_id: c.sandbox_id("sandbox_id")?,
        command: c.get("command")?,
        args: c.json("args", |s| serde_json::from_str::<Vec<String>>(s))?,
        cwd: c.get("cwd")?,
        user: c.enumeration("user", parse_user)?,
        status: c.enumeration("status", ExecStatus::parse)?,
        outcome: ExecOutcome {
            pid: c.get("pid")?,
            exit_code: c.get("exit_code")?,
            signal: c.get("signal")?,
            timed_out: c.get("timed_out")?,
            // Not a column: a cancelled execution's record says so in `error`.
            cancelled: false,
            oom_killed: c.get("oom_killed")?,
            sandbox_ended: c.get("sandbox_ended")?,
            stdout: c.get("stdout")?,
            stderr: c.get("stderr")?,
            stdout_truncated: c.get("stdout_truncated")?,
            stderr_truncated: c.get("stderr_truncated")?,
        },
        error: c.get("error")?,
        started_at: c.time("started_at")?,
        finished_at: c.opt_time("finished_at")?,
    })
}

/// Decodes a row of `id, at, stream, line` from `log_lines`.
pub(crate) fn decode_log_line(row: &Row<'_>) -> Result<LogLine, StoreError> {
    let c = RowCtx::new::<i64>(row, "log_lines")?;
    Ok(LogLine {
        at: c.time("at")?,
        stream: c.enumeration("stream", Stream::parse)?,
        line: c.get("line")?,
    })
}

/// Decodes a row selected with `DEPLOYMENT_COLUMNS`.
pub(crate) fn decode_deployment(row: &Row<'_>) -> Result<DeploymentRecord, StoreError> {
    let c = RowCtx::new::<String>(row, "deployments")?;
    let id: String = c.get("id")?;
    Ok(DeploymentRecord {
        id: DeploymentId::parse(&id)
            .ok_or_else(|| c.bad("id", format_args!("malformed deployment id `{id}`")))?,
        template: c.get("template")?,
        category: c.get("category")?,
        config: c.json("config", |s| serde_json::from_str::<DeploymentConfig>(s))?,
        status: c.enumeration("status", DeploymentStatus::parse)?,
        // rusqlite refuses an INTEGER outside u32's range instead of wrapping it.
        desired_instances: c.get("desired_instances")?,
        auto_scale: AutoScale {
            enabled: c.get("autoscale_enabled")?,
            min_instances: c.get("min_instances")?,
            max_instances: c.get("max_instances")?,
            target_cpu_percent: c.get("target_cpu_percent")?,
        },
        created_at: c.time("created_at")?,
        updated_at: c.time("updated_at")?,
    })
}

/// Decodes a row of `id, at, kind, message, details` from `deployment_events`.
pub(crate) fn decode_deployment_event(row: &Row<'_>) -> Result<DeploymentEvent, StoreError> {
    let c = RowCtx::new::<i64>(row, "deployment_events")?;
    Ok(DeploymentEvent {
        at: c.time("at")?,
        kind: c.get("kind")?,
        message: c.get("message")?,
        details: c.json("details", |s| serde_json::from_str::<serde_json::Value>(s))?,
    })
}
