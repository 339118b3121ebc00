-- Running caps without a global claim lock (issue 21).
--
-- Claims used to take one advisory lock and recount every tenant's running
-- jobs, so that two claimers could not both fill a tenant's last slot; every
-- claim of every worker queued on that lock. Now each *capped* tenant has a
-- counter row that claims reserve slots on and finishing attempts give back,
-- in the same statement as the jobs they move: claims of different tenants
-- (and all claims of uncapped tenants, which have no row) never wait on each
-- other, and two claims of one capped tenant serialize on its row only.
-- The rescuer recounts the rows from the jobs table (see
-- `PgStore::repair_running_counters`), which repairs a counter that drifted
-- (a cap set while the tenant had uncounted running jobs).
CREATE TABLE tenant_running (
    tenant_id text    PRIMARY KEY,
    running   integer NOT NULL DEFAULT 0 CHECK (running >= 0),
    -- What the last claim reserved: the claim reads it back through RETURNING
    -- (PostgreSQL 15 has no RETURNING OLD to compute it from).
    granted   integer NOT NULL DEFAULT 0
);

INSERT INTO tenant_running (tenant_id, running)
SELECT j.tenant_id, count(*) FROM jobs j
WHERE j.state = 'running'
GROUP BY j.tenant_id;

-- Every queue has its clock row before it is first claimed: claims advance
-- it with `FOR UPDATE SKIP LOCKED` (a claim that finds it busy leaves it to
-- the other), so the row is never a point where claims wait.
INSERT INTO queue_clocks (queue, vtime)
SELECT queue, 0 FROM jobs GROUP BY queue
ON CONFLICT (queue) DO NOTHING;
