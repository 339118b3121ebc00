-- Job transitions are written once, in job_events: the audit log reads them
-- from there (core/src/audit/postgres.rs maps each row to the event the
-- trigger of 0004_audit.sql used to copy into audit_events, which cost about
-- 30% of the queue's drain speed), and prune_finished keeps them for the
-- audit retention.

DROP TRIGGER job_events_audit ON job_events;
DROP FUNCTION audit_job_transitions();

-- The copies the trigger made of transitions still in job_events would now
-- be listed twice; those of pruned jobs (their job_events rows are gone)
-- stay in audit_events, the only record of them.
DELETE FROM audit_events a
USING job_events e
WHERE a.tenant_id = e.tenant_id
  AND a.occurred_at = e.at
  AND a.source = 'system'
  AND a.actor_type = 'system'
  AND a.actor_key_id IS NULL
  AND a.request_id IS NULL
  AND a.external_id IS NULL
  AND a.action = 'job.' || e.kind
  AND a.resource_type = 'job'
  AND a.resource_id = 'job_' || replace(e.job_id::text, '-', '')
  AND e.kind NOT IN ('progress', 'checkpoint');

-- A tenant's transitions in time order: the time-range scans of listings,
-- counts and exports, and the keyset (at, id) of their pagination. Progress
-- and checkpoints (no audit events, and most of the rows of a busy job) are
-- left out, so writing them costs no more than before.
CREATE INDEX job_events_tenant_at_idx ON job_events (tenant_id, at, id)
    WHERE kind NOT IN ('progress', 'checkpoint');
