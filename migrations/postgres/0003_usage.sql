-- Quotas and metering (issue 4 item 5). See core/src/usage.rs.
--
-- usage: billable operations per tenant, calendar month (UTC, 'YYYY-MM') and
-- job kind. The store adds one operation per job the API accepts, in the same
-- transaction as the insert, so metering never disagrees with accepted work.

CREATE TABLE usage (
    tenant_id  text   NOT NULL,
    period     text   NOT NULL CHECK (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    kind       text   NOT NULL,
    operations bigint NOT NULL DEFAULT 0 CHECK (operations >= 0),
    PRIMARY KEY (tenant_id, period, kind)
);

-- The max-queued quota counts a tenant's queued jobs on every API enqueue
-- under a cap: this index holds only queued jobs, so the count reads about
-- as many entries as the cap allows, whatever the tenant's history.
CREATE INDEX jobs_queued_tenant_idx ON jobs (tenant_id) WHERE state = 'queued';
