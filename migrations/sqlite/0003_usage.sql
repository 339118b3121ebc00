-- Quotas and metering on SQLite: the same table and index as
-- migrations/postgres/0003_usage.sql. See core/src/usage.rs.
--
-- Types as in 0001/0002: the tenant id is TEXT, the period is TEXT 'YYYY-MM'
-- (a calendar month, UTC), counts are INTEGER. No timestamps are stored.

CREATE TABLE usage (
    tenant_id  TEXT    NOT NULL,
    period     TEXT    NOT NULL CHECK (period GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]'
                                       AND substr(period, 6, 2) BETWEEN '01' AND '12'),
    kind       TEXT    NOT NULL,
    operations INTEGER NOT NULL DEFAULT 0 CHECK (operations >= 0),
    PRIMARY KEY (tenant_id, period, kind)
);

-- The max-queued quota counts a tenant's queued jobs on every API enqueue
-- under a cap: this index holds only queued jobs.
CREATE INDEX jobs_queued_tenant_idx ON jobs (tenant_id) WHERE state = 'queued';
