-- Schedules (core/src/schedule/): cron-style recurring jobs of a tenant, or of
-- the system (tenant_id NULL; their jobs run as tenant 'system').

CREATE TABLE schedules (
    id             uuid        PRIMARY KEY,
    tenant_id      text,
    name           text        NOT NULL,
    cron           text        NOT NULL,
    time_zone      text        NOT NULL,
    kind           text        NOT NULL,
    queue          text,
    params         jsonb       NOT NULL,
    priority       smallint    CHECK (priority BETWEEN 0 AND 9),
    jitter_seconds integer     NOT NULL DEFAULT 0 CHECK (jitter_seconds BETWEEN 0 AND 3600),
    overlap_policy text        NOT NULL CHECK (overlap_policy IN ('skip', 'allow')),
    misfire_policy text        NOT NULL CHECK (misfire_policy IN ('skip', 'fire_once')),
    paused         boolean     NOT NULL DEFAULT false,
    -- The next nominal fire time (NULL: never again), and when a scheduler
    -- acts on it: that time plus the schedule's jitter offset.
    next_fire_at   timestamptz,
    next_run_at    timestamptz,
    last_fire_at   timestamptz,
    last_job_id    uuid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One name per tenant (and among system schedules).
CREATE UNIQUE INDEX schedules_name_idx ON schedules (coalesce(tenant_id, ''), name);
-- A tenant's schedules, for listing and the plan limit.
CREATE INDEX schedules_tenant_idx ON schedules (tenant_id, id);
-- What a scheduler tick reads: due, unpaused schedules in time order.
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE NOT paused AND next_run_at IS NOT NULL;

-- Exactly one job per (schedule, fire time), whatever the number of
-- schedulers: a fire inserts here in the transaction that inserts its job.
CREATE TABLE schedule_fires (
    schedule_id uuid        NOT NULL,
    fire_time   timestamptz NOT NULL,
    job_id      uuid        NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, fire_time)
);

-- The plan limit on a tenant's schedules (NULL: the default of the API).
ALTER TABLE tenants ADD COLUMN max_schedules bigint CHECK (max_schedules >= 0);
