-- Throughput: the same table as migrations/postgres/0015_throughput.sql.

CREATE TABLE job_throughput (
    minute    integer NOT NULL,
    queue     text    NOT NULL,
    succeeded integer NOT NULL,
    failed    integer NOT NULL,
    PRIMARY KEY (minute, queue)
);
