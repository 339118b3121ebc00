-- Webhooks (core/src/webhooks/): tenants' endpoints, the log of their
-- deliveries (each delivery is a `webhook.deliver` job; `id` is its job id),
-- and the dispatcher's cursor over job_events.

CREATE TABLE webhooks (
    tenant_id   text        NOT NULL,
    id          uuid        NOT NULL,
    url         text        NOT NULL,
    events      jsonb       NOT NULL,
    description text,
    enabled     boolean     NOT NULL,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
-- The dispatcher reads the enabled endpoints of the tenants whose jobs ended.
CREATE INDEX webhooks_enabled_idx ON webhooks (tenant_id) WHERE enabled;

CREATE TABLE webhook_deliveries (
    tenant_id        text        NOT NULL,
    webhook_id       uuid        NOT NULL,
    id               uuid        NOT NULL,
    event            text        NOT NULL,
    event_id         text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer     NOT NULL,
    last_status_code integer,
    last_error       text,
    last_attempt_at  timestamptz NOT NULL,
    delivered_at     timestamptz,
    PRIMARY KEY (tenant_id, webhook_id, id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE webhook_cursor (
    name          text   PRIMARY KEY,
    last_event_id bigint NOT NULL
);
