-- The same change as migrations/postgres/0010_audit_reads_job_events.sql: job
-- transitions are written once, in job_events, and the audit log reads them
-- from there (core/src/audit/sqlite.rs), so the trigger goes.

DROP TRIGGER job_events_audit;

-- The trigger's copies of transitions still in job_events would be listed
-- twice; those of pruned jobs stay.
DELETE FROM audit_events
WHERE source = 'system'
  AND actor_type = 'system'
  AND actor_key_id IS NULL
  AND request_id IS NULL
  AND external_id IS NULL
  AND resource_type = 'job'
  AND action LIKE 'job.%'
  AND EXISTS (
      SELECT 1 FROM job_events e
      WHERE e.job_id = unhex(substr(audit_events.resource_id, 5))
        AND e.tenant_id = audit_events.tenant_id
        AND e.at = audit_events.occurred_at
        AND 'job.' || e.kind = audit_events.action
        AND e.kind NOT IN ('progress', 'checkpoint'));

-- A tenant's transitions in time order (listings, counts, exports and their
-- keyset); progress and checkpoints are left out.
CREATE INDEX job_events_tenant_at_idx ON job_events (tenant_id, at, id)
    WHERE kind NOT IN ('progress', 'checkpoint');
