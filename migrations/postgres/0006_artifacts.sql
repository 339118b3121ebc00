-- Artifacts (core/src/artifacts/records/): the files jobs write to object
-- storage. A row exists from before its upload starts, so the sweeper can
-- always find and abort an upload whose job gave up, and delete what a job
-- left once its retention ends or the job is purged.

CREATE TABLE artifacts (
    job_id       uuid        NOT NULL,
    name         text        NOT NULL,
    tenant_id    text        NOT NULL,
    -- The tenant's region when the job ran: which store holds the object.
    region       text        NOT NULL,
    object_key   text        NOT NULL,
    content_type text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('uploading', 'stored', 'deleting')),
    size         bigint      CHECK (size >= 0),
    sha256       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    stored_at    timestamptz,
    expires_at   timestamptz,
    PRIMARY KEY (job_id, name),
    CHECK (status <> 'stored' OR (size IS NOT NULL AND sha256 IS NOT NULL AND stored_at IS NOT NULL AND expires_at IS NOT NULL))
);

-- A row the sweeper is removing is 'deleting' (claimed before its objects go,
-- so a retried job cannot start a new upload under it meanwhile).

-- What the sweeper reads: stored artifacts by expiry.
CREATE INDEX artifacts_expiry_idx ON artifacts (expires_at) WHERE status = 'stored';
