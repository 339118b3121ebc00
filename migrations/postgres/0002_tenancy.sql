-- Tenants and their API keys (issue 4). See core/src/tenancy/mod.rs for the
-- model and the rules the store checks before writing.
--
-- A tenant's quotas.max_running is mirrored into tenant_limits (0001), which
-- the claim reads: the tenancy store writes both in one transaction. Ids are
-- prefixed text (`tnt_…`, `key_…`) because jobs.tenant_id and
-- tenant_limits.tenant_id hold the tenant id as text.

CREATE TABLE tenants (
    id                   text        PRIMARY KEY,
    name                 text        NOT NULL,
    -- Data residency: `us`, `eu`, `eu-west`, …
    region               text        NOT NULL,
    plan                 text        NOT NULL,
    status               text        NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'suspended')),
    suspended_reason     text,
    -- Quotas (NULL: no limit of the tenant's own).
    max_running          integer     CHECK (max_running >= 1),
    max_queued           bigint      CHECK (max_queued >= 1),
    creations_per_minute integer     CHECK (creations_per_minute >= 1),
    -- A JSON object (for example auditLogRetentionDays).
    settings             jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- API keys: only the SHA-256 of the whole token is stored, beside its public
-- prefix (looked up on every request). Operator keys have no tenant.
CREATE TABLE api_keys (
    id           text        PRIMARY KEY,
    tenant_id    text        REFERENCES tenants (id),
    name         text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('viewer', 'developer', 'admin', 'operator')),
    mode         text        NOT NULL CHECK (mode IN ('live', 'test')),
    prefix       text        NOT NULL UNIQUE,
    token_hash   bytea       NOT NULL CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Written at most once a minute per key.
    last_used_at timestamptz,
    -- Set by rotation: the old key works until then.
    expires_at   timestamptz,
    revoked_at   timestamptz,
    -- Operator keys span tenants; every other role belongs to one.
    CHECK ((tenant_id IS NULL) = (role = 'operator'))
);
-- A tenant's keys (listing; the tenant foreign key).
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);
