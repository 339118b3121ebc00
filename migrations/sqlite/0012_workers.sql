-- Worker pools: the same table as migrations/postgres/0013_workers.sql.

CREATE TABLE workers (
    id           text    PRIMARY KEY,
    host         text    NOT NULL,
    version      text    NOT NULL,
    queues       text    NOT NULL,
    concurrency  integer NOT NULL,
    running      integer NOT NULL,
    started_at   integer NOT NULL,
    heartbeat_at integer NOT NULL,
    stopped_at   integer
);
CREATE INDEX workers_heartbeat_idx ON workers (heartbeat_at);
