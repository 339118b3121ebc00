-- Worker pools as operators see them (core/src/workers.rs): registered at
-- start, heartbeated with their running count, marked stopped at the end.
-- Only a view: leases and their rescue do not read it.

CREATE TABLE workers (
    id           text        PRIMARY KEY,
    host         text        NOT NULL,
    version      text        NOT NULL,
    queues       jsonb       NOT NULL,
    concurrency  integer     NOT NULL,
    running      integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    stopped_at   timestamptz
);
CREATE INDEX workers_heartbeat_idx ON workers (heartbeat_at);
