-- The job engine on SQLite: the same tables, columns, constraints and indexes
-- as migrations/postgres/0001_jobs.sql. See core/src/job.rs for the state machine.
--
-- Types: ids are 16-byte BLOBs (uuid), JSON is TEXT, booleans are INTEGER 0/1,
-- and every timestamp is INTEGER microseconds since the Unix epoch, written by
-- the store (so they compare and sort as numbers).

CREATE TABLE jobs (
    id               BLOB    NOT NULL PRIMARY KEY,
    tenant_id        TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    -- Virtual start time for fair claiming across tenants (see fair_queues).
    vtime            INTEGER NOT NULL,
    params           TEXT    NOT NULL,
    run_at           INTEGER NOT NULL,
    -- Times claimed: the fencing token every worker write must present.
    attempt          INTEGER NOT NULL DEFAULT 0,
    -- Attempts that count against max_attempts (released attempts do not).
    failed_attempts  INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_expires_at INTEGER,
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    progress         TEXT,
    checkpoint       TEXT,
    result           TEXT,
    last_error       TEXT,
    idempotency_key  TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
);

-- Claim: the due head of each queue in (priority, vtime) order.
CREATE INDEX jobs_claim_idx ON jobs (queue, priority, vtime) WHERE state = 'queued';
-- Running caps per tenant and the lease rescuer.
CREATE INDEX jobs_running_idx ON jobs (tenant_id, lease_expires_at) WHERE state = 'running';
-- Same idempotency key, same job (per tenant).
CREATE UNIQUE INDEX jobs_idempotency_idx ON jobs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Listing a tenant's jobs, newest first (ids are UUIDv7: they sort by creation time).
CREATE INDEX jobs_tenant_idx ON jobs (tenant_id, id);
-- Pruning finished jobs.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled');

-- job_attempts and job_events carry no foreign key: they are written on the
-- hot path (claim, completion), as in PostgreSQL; rows leave with their job in
-- prune_finished, in one transaction.
CREATE TABLE job_attempts (
    job_id      BLOB    NOT NULL,
    attempt     INTEGER NOT NULL,
    tenant_id   TEXT    NOT NULL,
    worker_id   TEXT,
    started_at  INTEGER,
    finished_at INTEGER NOT NULL,
    outcome     TEXT    NOT NULL
                CHECK (outcome IN ('succeeded', 'retried', 'failed', 'cancelled', 'lease_expired', 'released')),
    error       TEXT,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id    BLOB    NOT NULL,
    tenant_id TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    attempt   INTEGER,
    kind      TEXT    NOT NULL,
    data      TEXT
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

-- Fair claiming (start-time fair queuing): each (tenant, queue) hands out
-- virtual times from max(its next_vtime, the queue's head), so a tenant that
-- arrives behind another's backlog interleaves with it instead of waiting.
CREATE TABLE fair_queues (
    tenant_id  TEXT    NOT NULL,
    queue      TEXT    NOT NULL,
    next_vtime INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, queue)
);

-- Per-tenant cap on running jobs (absent: the configured default).
CREATE TABLE tenant_limits (
    tenant_id   TEXT    PRIMARY KEY,
    max_running INTEGER NOT NULL CHECK (max_running >= 1)
);

-- Each queue's virtual clock: the largest vtime claimed so far. New work of a
-- tenant starts no earlier than it, so idle tenants bank no credit.
CREATE TABLE queue_clocks (
    queue TEXT    PRIMARY KEY,
    vtime INTEGER NOT NULL
);
