-- Retention (core/src/retention/): the tenants' retention policies, their
-- legal holds, and what cleanup runs have deleted so far. A cleanup run
-- itself is its job (`audit.retention_cleanup`, `rex_<hex>` = `job_<hex>`).

CREATE TABLE retention_policies (
    tenant_id        text        NOT NULL,
    id               uuid        NOT NULL,
    name             text        NOT NULL,
    target           text        NOT NULL CHECK (target IN ('audit_log', 'data_buckets')),
    -- ISO 8601 (`P90D`, `P1Y6M`), validated by core/src/retention/period.rs.
    retention_period text        NOT NULL,
    -- {eventTypes, services, buckets, classifications}
    scope            jsonb       NOT NULL,
    archive          boolean     NOT NULL,
    on_expiry        text        NOT NULL CHECK (on_expiry IN ('delete', 'archive', 'notify')),
    enabled          boolean     NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX retention_policies_name_idx ON retention_policies (tenant_id, name);

CREATE TABLE legal_holds (
    tenant_id        text        NOT NULL,
    id               uuid        NOT NULL,
    name             text        NOT NULL,
    reason           text        NOT NULL,
    -- {eventTypes, resourceIds, buckets, objectKeys}
    scope            jsonb       NOT NULL,
    objects_held     bigint      NOT NULL,
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL,
    released_at      timestamptz,
    objects_released bigint,
    PRIMARY KEY (tenant_id, id)
);

-- Running totals of what cleanups deleted, per tenant (written in each
-- delete batch's transaction).
CREATE TABLE retention_savings (
    tenant_id       text   NOT NULL PRIMARY KEY,
    events_deleted  bigint NOT NULL DEFAULT 0,
    bytes_reclaimed bigint NOT NULL DEFAULT 0,
    objects_deleted bigint NOT NULL DEFAULT 0
);
