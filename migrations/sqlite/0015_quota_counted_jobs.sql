-- Only jobs of tenants with a maxQueued quota carry an entry in the index
-- the quota check counts (as on PostgreSQL, migration 0016 there):
-- counted_in_quota is set when the job is queued, from the tenant's quota at
-- that moment, and setting a quota marks the tenant's outstanding jobs in
-- the same transaction (one writer at a time: nothing can slip between).
ALTER TABLE jobs ADD COLUMN counted_in_quota INTEGER NOT NULL DEFAULT 0;

UPDATE jobs SET counted_in_quota = 1
WHERE state IN ('queued', 'running')
  AND tenant_id IN (SELECT id FROM tenants WHERE max_queued IS NOT NULL);

DROP INDEX jobs_queued_tenant_idx;
CREATE INDEX jobs_queued_tenant_idx ON jobs (tenant_id) WHERE state = 'queued' AND counted_in_quota = 1;
