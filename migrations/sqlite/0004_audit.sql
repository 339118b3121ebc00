-- The audit log on SQLite: the same table and trigger as
-- migrations/postgres/0004_audit.sql (ids are 16-byte blobs, JSON is text,
-- timestamps integer microseconds since the Unix epoch).

CREATE TABLE audit_events (
    tenant_id     TEXT    NOT NULL,
    occurred_at   INTEGER NOT NULL,
    id            BLOB    NOT NULL,
    recorded_at   INTEGER NOT NULL,
    source        TEXT    NOT NULL CHECK (source IN ('api', 'system', 'application')),
    actor_type    TEXT    NOT NULL,
    actor_id      TEXT,
    actor_key_id  TEXT,
    action        TEXT    NOT NULL,
    resource_type TEXT,
    resource_id   TEXT,
    ip            TEXT,
    request_id    TEXT,
    external_id   TEXT,
    details       TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, occurred_at, id)
) WITHOUT ROWID;

CREATE UNIQUE INDEX audit_events_external_idx ON audit_events (tenant_id, external_id)
    WHERE external_id IS NOT NULL;

-- Every job transition (not progress or checkpoints) becomes an audit event.
-- Built by string concatenation (job_events.data is already JSON text): the
-- JSON functions cost more than the rest of the insert on the claim path.
CREATE TRIGGER job_events_audit AFTER INSERT ON job_events
WHEN NEW.kind NOT IN ('progress', 'checkpoint')
BEGIN
    INSERT INTO audit_events (tenant_id, occurred_at, id, recorded_at, source, actor_type,
                              actor_id, action, resource_type, resource_id, details)
    VALUES (NEW.tenant_id, NEW.at, randomblob(16), NEW.at, 'system', 'system',
            CASE WHEN NEW.kind = 'started' THEN json_extract(NEW.data, '$.workerId') END,
            'job.' || NEW.kind, 'job', 'job_' || lower(hex(NEW.job_id)),
            '{"attempt":' || coalesce(NEW.attempt, 'null')
                || CASE WHEN NEW.data IS NULL THEN '' ELSE ',"data":' || NEW.data END || '}');
END;
