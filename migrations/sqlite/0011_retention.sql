-- Retention: the same tables as migrations/postgres/0012_retention.sql.
-- Times are microseconds since the epoch, ids 16-byte blobs, booleans 0/1,
-- JSON as text.

CREATE TABLE retention_policies (
    tenant_id        text    NOT NULL,
    id               blob    NOT NULL,
    name             text    NOT NULL,
    target           text    NOT NULL CHECK (target IN ('audit_log', 'data_buckets')),
    retention_period text    NOT NULL,
    scope            text    NOT NULL,
    archive          integer NOT NULL,
    on_expiry        text    NOT NULL CHECK (on_expiry IN ('delete', 'archive', 'notify')),
    enabled          integer NOT NULL,
    created_at       integer NOT NULL,
    updated_at       integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX retention_policies_name_idx ON retention_policies (tenant_id, name);

CREATE TABLE legal_holds (
    tenant_id        text    NOT NULL,
    id               blob    NOT NULL,
    name             text    NOT NULL,
    reason           text    NOT NULL,
    scope            text    NOT NULL,
    objects_held     integer NOT NULL,
    expires_at       integer,
    created_at       integer NOT NULL,
    released_at      integer,
    objects_released integer,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE retention_savings (
    tenant_id       text    NOT NULL PRIMARY KEY,
    events_deleted  integer NOT NULL DEFAULT 0,
    bytes_reclaimed integer NOT NULL DEFAULT 0,
    objects_deleted integer NOT NULL DEFAULT 0
);
