-- One-minute aggregates of the host metrics (get_system_metrics history beyond the hour
-- kept in memory, and across restarts). Kept for seven days by the collector.
CREATE TABLE metric_minutes (
    metric TEXT NOT NULL,
    -- Start of the minute, Unix seconds.
    minute INTEGER NOT NULL,
    min REAL NOT NULL,
    avg REAL NOT NULL,
    max REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (metric, minute)
) WITHOUT ROWID;
CREATE INDEX metric_minutes_minute ON metric_minutes (minute);
