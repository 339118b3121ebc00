-- The audit log (core/src/audit/): who changed what, when and from where, per
-- tenant. API calls write their events in the store operation's transaction;
-- job transitions are written by the trigger below, in the transaction that
-- logs them in job_events; applications add their own through the API.

CREATE TABLE audit_events (
    tenant_id     text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    id            uuid        NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    source        text        NOT NULL CHECK (source IN ('api', 'system', 'application')),
    actor_type    text        NOT NULL,
    actor_id      text,
    actor_key_id  text,
    action        text        NOT NULL,
    resource_type text,
    resource_id   text,
    ip            text,
    request_id    text,
    -- An application's own id for an event it sends: a resend is not stored twice.
    external_id   text,
    details       jsonb       NOT NULL DEFAULT '{}',
    -- Time-range scans of one tenant (listings, exports, retention cleanup)
    -- and the keyset of their pagination.
    PRIMARY KEY (tenant_id, occurred_at, id)
);

CREATE UNIQUE INDEX audit_events_external_idx ON audit_events (tenant_id, external_id)
    WHERE external_id IS NOT NULL;

-- Every job transition (not progress or checkpoints) becomes an audit event,
-- once per statement for all the rows it logged (a claim or a completion
-- batch logs many).
CREATE FUNCTION audit_job_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_events (tenant_id, occurred_at, id, source, actor_type, actor_id, action,
                              resource_type, resource_id, details)
    SELECT e.tenant_id, e.at, gen_random_uuid(), 'system', 'system',
           CASE WHEN e.kind = 'started' THEN e.data ->> 'workerId' END,
           'job.' || e.kind, 'job', 'job_' || replace(e.job_id::text, '-', ''),
           jsonb_strip_nulls(jsonb_build_object('attempt', e.attempt, 'data', e.data))
    FROM logged e
    WHERE e.kind NOT IN ('progress', 'checkpoint');
    RETURN NULL;
END
$$;

CREATE TRIGGER job_events_audit AFTER INSERT ON job_events
    REFERENCING NEW TABLE AS logged
    FOR EACH STATEMENT EXECUTE FUNCTION audit_job_transitions();
