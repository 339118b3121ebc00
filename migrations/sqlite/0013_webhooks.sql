-- Webhooks: the same tables as migrations/postgres/0014_webhooks.sql.

CREATE TABLE webhooks (
    tenant_id   text    NOT NULL,
    id          blob    NOT NULL,
    url         text    NOT NULL,
    events      text    NOT NULL,
    description text,
    enabled     integer NOT NULL,
    secret      text    NOT NULL,
    created_at  integer NOT NULL,
    updated_at  integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhooks_enabled_idx ON webhooks (tenant_id) WHERE enabled;

CREATE TABLE webhook_deliveries (
    tenant_id        text    NOT NULL,
    webhook_id       blob    NOT NULL,
    id               blob    NOT NULL,
    event            text    NOT NULL,
    event_id         text    NOT NULL,
    status           text    NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL,
    last_status_code integer,
    last_error       text,
    last_attempt_at  integer NOT NULL,
    delivered_at     integer,
    PRIMARY KEY (tenant_id, webhook_id, id),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE webhook_cursor (
    name          text    PRIMARY KEY,
    last_event_id integer NOT NULL
);
