-- Attempts ended per minute and queue, added by each worker pool's heartbeat
-- (core/src/workers.rs): the dashboard's jobs per minute, without counting
-- the jobs table. Pruned with the worker rows (a day).

CREATE TABLE job_throughput (
    minute    timestamptz NOT NULL,
    queue     text        NOT NULL,
    succeeded bigint      NOT NULL,
    failed    bigint      NOT NULL,
    PRIMARY KEY (minute, queue)
);
