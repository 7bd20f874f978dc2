-- Sandboxes, their executions and their recent log lines.
-- Timestamps are unix milliseconds (INTEGER). JSON columns hold text.

CREATE TABLE sandboxes (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    template      TEXT    NOT NULL,
    provider      TEXT    NOT NULL,
    status        TEXT    NOT NULL,      -- SandboxStatus::as_str
    stop_reason   TEXT,                  -- StopReason::as_str
    memory_mb     INTEGER NOT NULL,
    cpu_count     REAL    NOT NULL,
    pids_max      INTEGER NOT NULL,
    timeout_s     INTEGER NOT NULL,
    env_vars      TEXT    NOT NULL,      -- JSON object of strings
    metadata      TEXT    NOT NULL,      -- JSON object of strings
    deployment_id TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    stopped_at    INTEGER,
    runtime       TEXT    NOT NULL       -- JSON, provider-owned
) STRICT;

CREATE INDEX sandboxes_by_status ON sandboxes (status);
CREATE INDEX sandboxes_by_created ON sandboxes (created_at DESC, id);

CREATE TABLE executions (
    id               TEXT    NOT NULL PRIMARY KEY,
    sandbox_id       TEXT    NOT NULL REFERENCES sandboxes (id),
    command          TEXT    NOT NULL,
    args             TEXT    NOT NULL,   -- JSON array of strings
    cwd              TEXT,
    user             TEXT    NOT NULL,   -- ExecUser::as_str
    status           TEXT    NOT NULL,   -- ExecStatus::as_str
    pid              INTEGER NOT NULL,
    exit_code        INTEGER,
    signal           INTEGER,
    timed_out        INTEGER NOT NULL,   -- 0 / 1
    oom_killed       INTEGER NOT NULL,   -- 0 / 1
    sandbox_ended    INTEGER NOT NULL,   -- 0 / 1: the sandbox ended under the process
    stdout           BLOB    NOT NULL,
    stderr           BLOB    NOT NULL,
    stdout_truncated INTEGER NOT NULL,   -- 0 / 1
    stderr_truncated INTEGER NOT NULL,   -- 0 / 1
    error            TEXT,
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER
) STRICT;

CREATE INDEX executions_by_sandbox ON executions (sandbox_id);
-- Only running executions: what `interrupt_executions` looks for after a restart.
CREATE INDEX executions_running ON executions (sandbox_id) WHERE status = 'running';

CREATE TABLE log_lines (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id TEXT    NOT NULL REFERENCES sandboxes (id),
    at         INTEGER NOT NULL,
    stream     TEXT    NOT NULL,         -- Stream::as_str
    line       TEXT    NOT NULL
) STRICT;

CREATE INDEX log_lines_by_sandbox ON log_lines (sandbox_id, id);
