-- Artifacts (core/src/artifacts/records/): the files jobs write to object
-- storage. A row exists from before its upload starts, so the sweeper can
-- always find and abort an upload whose job gave up, and delete what a job
-- left once its retention ends or the job is purged. Times are microseconds
-- since the epoch, as in the other tables.

CREATE TABLE artifacts (
    job_id       blob    NOT NULL,
    name         text    NOT NULL,
    tenant_id    text    NOT NULL,
    region       text    NOT NULL,
    object_key   text    NOT NULL,
    content_type text    NOT NULL,
    status       text    NOT NULL CHECK (status IN ('uploading', 'stored', 'deleting')),
    size         integer CHECK (size >= 0),
    sha256       text,
    created_at   integer NOT NULL,
    stored_at    integer,
    expires_at   integer,
    PRIMARY KEY (job_id, name),
    CHECK (status <> 'stored' OR (size IS NOT NULL AND sha256 IS NOT NULL AND stored_at IS NOT NULL AND expires_at IS NOT NULL))
);

CREATE INDEX artifacts_expiry_idx ON artifacts (expires_at) WHERE status = 'stored';
