-- Schedules on SQLite: the same tables as migrations/postgres/0005_schedules.sql
-- (ids are 16-byte blobs, JSON is text, timestamps integer microseconds).

CREATE TABLE schedules (
    id             BLOB    NOT NULL PRIMARY KEY,
    tenant_id      TEXT,
    name           TEXT    NOT NULL,
    cron           TEXT    NOT NULL,
    time_zone      TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    queue          TEXT,
    params         TEXT    NOT NULL,
    priority       INTEGER CHECK (priority BETWEEN 0 AND 9),
    jitter_seconds INTEGER NOT NULL DEFAULT 0 CHECK (jitter_seconds BETWEEN 0 AND 3600),
    overlap_policy TEXT    NOT NULL CHECK (overlap_policy IN ('skip', 'allow')),
    misfire_policy TEXT    NOT NULL CHECK (misfire_policy IN ('skip', 'fire_once')),
    paused         INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    next_fire_at   INTEGER,
    next_run_at    INTEGER,
    last_fire_at   INTEGER,
    last_job_id    BLOB,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

CREATE UNIQUE INDEX schedules_name_idx ON schedules (coalesce(tenant_id, ''), name);
CREATE INDEX schedules_tenant_idx ON schedules (tenant_id, id);
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE paused = 0 AND next_run_at IS NOT NULL;

CREATE TABLE schedule_fires (
    schedule_id BLOB    NOT NULL,
    fire_time   INTEGER NOT NULL,
    job_id      BLOB    NOT NULL,
    fired_at    INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, fire_time)
);

ALTER TABLE tenants ADD COLUMN max_schedules INTEGER CHECK (max_schedules >= 0);
