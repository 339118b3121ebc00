-- Tenants and their API keys on SQLite: the same tables, columns, constraints
-- and indexes as migrations/postgres/0002_tenancy.sql. See
-- core/src/tenancy/mod.rs for the model.
--
-- Types as in 0001: ids are TEXT (`tnt_…`, `key_…`, the tenant id that
-- jobs.tenant_id and tenant_limits.tenant_id hold), JSON is TEXT, the token
-- hash is a BLOB, and every timestamp is INTEGER microseconds since the Unix
-- epoch, written by the store. A tenant's quotas.max_running is mirrored into
-- tenant_limits in the same transaction.

CREATE TABLE tenants (
    id                   TEXT    NOT NULL PRIMARY KEY,
    name                 TEXT    NOT NULL,
    -- Data residency: `us`, `eu`, `eu-west`, …
    region               TEXT    NOT NULL,
    plan                 TEXT    NOT NULL,
    status               TEXT    NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'suspended')),
    suspended_reason     TEXT,
    -- Quotas (NULL: no limit of the tenant's own).
    max_running          INTEGER CHECK (max_running >= 1),
    max_queued           INTEGER CHECK (max_queued >= 1),
    creations_per_minute INTEGER CHECK (creations_per_minute >= 1),
    -- A JSON object (for example auditLogRetentionDays).
    settings             TEXT    NOT NULL DEFAULT '{}' CHECK (json_type(settings) = 'object'),
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);

-- API keys: only the SHA-256 of the whole token is stored, beside its public
-- prefix (looked up on every request). Operator keys have no tenant.
CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    tenant_id    TEXT    REFERENCES tenants (id),
    name         TEXT    NOT NULL,
    role         TEXT    NOT NULL CHECK (role IN ('viewer', 'developer', 'admin', 'operator')),
    mode         TEXT    NOT NULL CHECK (mode IN ('live', 'test')),
    prefix       TEXT    NOT NULL UNIQUE,
    token_hash   BLOB    NOT NULL CHECK (length(token_hash) = 32),
    created_at   INTEGER NOT NULL,
    -- Written at most once a minute per key.
    last_used_at INTEGER,
    -- Set by rotation: the old key works until then.
    expires_at   INTEGER,
    revoked_at   INTEGER,
    -- Operator keys span tenants; every other role belongs to one.
    CHECK ((tenant_id IS NULL) = (role = 'operator'))
);
-- A tenant's keys (listing; the tenant foreign key).
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
