-- Leakage and classification scans (core/src/scans/): the tenants' scan
-- policies, what leakage scans found (findings per scan, incidents per
-- secret across scans) and what classification scans concluded per object.
-- A scan itself is its job (`leakage.scan`, `classification.scan`); rows
-- written by a scan are fenced by its lease. No row ever holds a whole secret
-- or a matched value: findings keep a redacted form and a fingerprint.

CREATE TABLE scan_policies (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    family      text        NOT NULL CHECK (family IN ('leakage', 'classification')),
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    enabled     boolean     NOT NULL,
    -- The rules and allowlist, validated by core/src/scans/policies.rs.
    spec        jsonb       NOT NULL,
    version     integer     NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX scan_policies_name_idx ON scan_policies (tenant_id, family, name);

CREATE TABLE leakage_findings (
    job_id      uuid        NOT NULL,
    -- Hash of fingerprint and location: an attempt that rescans a source
    -- after a retry writes nothing twice.
    finding_key text        NOT NULL,
    tenant_id   text        NOT NULL,
    fingerprint text        NOT NULL,
    rule        text        NOT NULL,
    severity    text        NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    source      text        NOT NULL,
    commit_sha  text,
    path        text        NOT NULL,
    line        bigint      NOT NULL,
    col         bigint      NOT NULL,
    redacted    text        NOT NULL,
    found_at    timestamptz NOT NULL,
    PRIMARY KEY (job_id, finding_key)
);
-- A scan's findings page by page, in the order they were found.
CREATE INDEX leakage_findings_page_idx ON leakage_findings (job_id, found_at, finding_key);
CREATE INDEX leakage_findings_tenant_idx ON leakage_findings (tenant_id, fingerprint);

-- One incident per secret (fingerprint) and tenant, across scans.
CREATE TABLE leakage_incidents (
    tenant_id     text        NOT NULL,
    fingerprint   text        NOT NULL,
    rule          text        NOT NULL,
    severity      text        NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    redacted      text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('open', 'resolved')),
    occurrences   bigint      NOT NULL,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    first_job_id  uuid        NOT NULL,
    last_job_id   uuid        NOT NULL,
    last_source   text        NOT NULL,
    last_path     text        NOT NULL,
    last_line     bigint      NOT NULL,
    resolved_by   text,
    resolved_at   timestamptz,
    note          text,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, fingerprint),
    CHECK (status <> 'resolved' OR resolved_at IS NOT NULL)
);
CREATE INDEX leakage_incidents_page_idx ON leakage_incidents (tenant_id, first_seen_at DESC, fingerprint DESC);

-- What each classification scan concluded per object.
CREATE TABLE classification_results (
    job_id        uuid        NOT NULL,
    bucket        text        NOT NULL,
    object_key    text        NOT NULL,
    tenant_id     text        NOT NULL,
    size          bigint      NOT NULL CHECK (size >= 0),
    status        text        NOT NULL CHECK (status IN ('classified', 'skipped')),
    level         text        CHECK (level IN ('public', 'internal', 'confidential', 'restricted')),
    data_types    jsonb       NOT NULL,
    counts        jsonb       NOT NULL,
    format        text,
    gzip          boolean     NOT NULL,
    truncated     boolean     NOT NULL,
    skip_reason   text,
    classified_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, bucket, object_key),
    CHECK (status <> 'classified' OR level IS NOT NULL)
);

-- The latest conclusion per object of a tenant: what the stats count.
CREATE TABLE classified_objects (
    tenant_id     text        NOT NULL,
    bucket        text        NOT NULL,
    object_key    text        NOT NULL,
    job_id        uuid        NOT NULL,
    size          bigint      NOT NULL,
    level         text,
    pii           boolean     NOT NULL,
    phi           boolean     NOT NULL,
    pci           boolean     NOT NULL,
    classified_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, bucket, object_key)
);
