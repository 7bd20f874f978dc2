-- Deployments (a group of sandboxes made from one template with one configuration) and
-- their event logs. Timestamps are unix milliseconds (INTEGER). JSON columns hold text.

CREATE TABLE deployments (
    id                 TEXT    NOT NULL PRIMARY KEY,
    template           TEXT    NOT NULL,
    category           TEXT    NOT NULL,
    config             TEXT    NOT NULL,  -- JSON: DeploymentConfig
    status             TEXT    NOT NULL,  -- DeploymentStatus::as_str
    desired_instances  INTEGER NOT NULL,  -- u32
    -- AutoScale, one column per field.
    autoscale_enabled  INTEGER NOT NULL,  -- 0 / 1
    min_instances      INTEGER NOT NULL,  -- u32
    max_instances      INTEGER NOT NULL,  -- u32
    target_cpu_percent REAL    NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
) STRICT;

CREATE INDEX deployments_by_created ON deployments (created_at DESC, id);

CREATE TABLE deployment_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT    NOT NULL REFERENCES deployments (id),
    at            INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    details       TEXT    NOT NULL        -- JSON
) STRICT;

CREATE INDEX deployment_events_by_deployment ON deployment_events (deployment_id, id);
