-- The job engine: jobs, their attempt history and event log, per-tenant
-- fairness state and running caps. See core/src/job.rs for the state machine.

CREATE TABLE jobs (
    id               uuid        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    kind             text        NOT NULL,
    queue            text        NOT NULL,
    state            text        NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         smallint    NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    -- Virtual start time for fair claiming across tenants (see fair_queues).
    vtime            bigint      NOT NULL,
    params           jsonb       NOT NULL,
    run_at           timestamptz NOT NULL DEFAULT now(),
    -- Times claimed: the fencing token every worker write must present.
    attempt          integer     NOT NULL DEFAULT 0,
    -- Attempts that count against max_attempts (released attempts do not).
    failed_attempts  integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    lease_expires_at timestamptz,
    worker_id        text,
    cancel_requested boolean     NOT NULL DEFAULT false,
    progress         jsonb,
    checkpoint       jsonb,
    result           jsonb,
    last_error       text,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
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
-- hot path (claim, completion) where the FK check costs more than the rest of
-- the insert; rows leave with their job in prune_finished, in one statement.
CREATE TABLE job_attempts (
    job_id      uuid        NOT NULL,
    attempt     integer     NOT NULL,
    tenant_id   text        NOT NULL,
    worker_id   text,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    outcome     text        NOT NULL
                CHECK (outcome IN ('succeeded', 'retried', 'failed', 'cancelled', 'lease_expired', 'released')),
    error       text,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_events (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id    uuid        NOT NULL,
    tenant_id text        NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    attempt   integer,
    kind      text        NOT NULL,
    data      jsonb
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

-- Fair claiming (start-time fair queuing): each (tenant, queue) hands out
-- virtual times from max(its next_vtime, the queue's head), so a tenant that
-- arrives behind another's backlog interleaves with it instead of waiting.
CREATE TABLE fair_queues (
    tenant_id  text   NOT NULL,
    queue      text   NOT NULL,
    next_vtime bigint NOT NULL,
    PRIMARY KEY (tenant_id, queue)
);

-- Per-tenant cap on running jobs (absent: the configured default).
CREATE TABLE tenant_limits (
    tenant_id   text    PRIMARY KEY,
    max_running integer NOT NULL CHECK (max_running >= 1)
);

-- Each queue's virtual clock: the largest vtime claimed so far. New work of a
-- tenant starts no earlier than it, so idle tenants bank no credit.
CREATE TABLE queue_clocks (
    queue text   PRIMARY KEY,
    vtime bigint NOT NULL
);
