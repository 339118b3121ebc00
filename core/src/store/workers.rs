//! The worker table, written once for both backends (see `sql.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{sql, Row, SqlStore};
use super::{PgStore, SqliteStore};
use crate::error::{Error, Result};
use crate::workers::{
    Ended, ThroughputMinute, WorkerInfo, WorkerRecord, WorkerStore, KEPT_FOR, LISTED_FOR,
};

fn worker_from_row(row: &Row, now: DateTime<Utc>) -> Result<WorkerRecord> {
    let queues = serde_json::from_value(row.json("queues")?)
        .map_err(|e| Error::corrupt("reading a worker's queues", e))?;
    let last_heartbeat_at = row.time("heartbeat_at")?;
    let stopped_at = row.opt_time("stopped_at")?;
    Ok(WorkerRecord {
        worker_id: row.text("id")?,
        host: row.text("host")?,
        version: row.text("version")?,
        queues,
        concurrency: u32::try_from(row.int4("concurrency")?).unwrap_or(0),
        running_jobs: u32::try_from(row.int4("running")?).unwrap_or(0),
        status: WorkerRecord::status_at(last_heartbeat_at, stopped_at, now),
        started_at: row.time("started_at")?,
        last_heartbeat_at,
        stopped_at,
    })
}

fn ago(now: DateTime<Utc>, span: std::time::Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(span).unwrap_or(chrono::Duration::zero())
}

async fn register(store: &impl SqlStore, worker: &WorkerInfo, now: DateTime<Utc>) -> Result<()> {
    let queues = serde_json::json!(worker.queues);
    let mut tx = store.write("starting to register a worker").await?;
    tx.db()
        .execute(
            sql(
                "registering a worker",
                "INSERT INTO workers (id, host, version, queues, concurrency, running, started_at,
                                      heartbeat_at, stopped_at)
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $6, NULL)
                 ON CONFLICT (id) DO UPDATE SET host = excluded.host, version = excluded.version,
                     queues = excluded.queues, concurrency = excluded.concurrency, running = 0,
                     started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                     stopped_at = NULL",
            )
            .bind(worker.id.as_str())
            .bind(worker.host.as_str())
            .bind(worker.version.as_str())
            .bind(&queues)
            .bind(i32::try_from(worker.concurrency).unwrap_or(i32::MAX))
            .bind(now),
        )
        .await?;
    tx.commit("registering a worker").await
}

async fn heartbeat(
    store: &impl SqlStore,
    id: &str,
    running: u32,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tx = store.write("starting a worker heartbeat").await?;
    tx.db()
        .execute(
            sql(
                "recording a worker heartbeat",
                "UPDATE workers SET heartbeat_at = $2, running = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .bind(i32::try_from(running).unwrap_or(i32::MAX)),
        )
        .await?;
    tx.commit("recording a worker heartbeat").await
}

async fn stopped(store: &impl SqlStore, id: &str, now: DateTime<Utc>) -> Result<()> {
    let mut tx = store.write("starting to mark a worker stopped").await?;
    tx.db()
        .execute(
            sql(
                "marking a worker stopped",
                "UPDATE workers SET stopped_at = $2, heartbeat_at = $2, running = 0 WHERE id = $1",
            )
            .bind(id)
            .bind(now),
        )
        .await?;
    tx.commit("marking a worker stopped").await
}

async fn list(store: &impl SqlStore, now: DateTime<Utc>) -> Result<Vec<WorkerRecord>> {
    let mut conn = store.read("listing workers").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing workers",
                "SELECT * FROM workers WHERE heartbeat_at >= $1 ORDER BY id",
            )
            .bind(ago(now, LISTED_FOR)),
        )
        .await?
        .iter()
        .map(|row| worker_from_row(row, now))
        .collect()
}

async fn prune(store: &impl SqlStore, now: DateTime<Utc>) -> Result<u64> {
    let mut tx = store.write("starting to prune workers").await?;
    let deleted = tx
        .db()
        .execute(
            sql(
                "pruning workers",
                "DELETE FROM workers WHERE heartbeat_at < $1",
            )
            .bind(ago(now, KEPT_FOR)),
        )
        .await?;
    tx.db()
        .execute(
            sql(
                "pruning throughput",
                "DELETE FROM job_throughput WHERE minute < $1",
            )
            .bind(ago(now, KEPT_FOR)),
        )
        .await?;
    tx.commit("pruning workers").await?;
    Ok(deleted)
}

async fn add_throughput(
    store: &impl SqlStore,
    minute: DateTime<Utc>,
    ended: &[(String, Ended)],
) -> Result<()> {
    if ended.is_empty() {
        return Ok(());
    }
    let mut tx = store.write("starting to add throughput").await?;
    for (queue, counts) in ended {
        tx.db()
            .execute(
                sql(
                    "adding throughput",
                    "INSERT INTO job_throughput (minute, queue, succeeded, failed) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (minute, queue) DO UPDATE SET
                         succeeded = job_throughput.succeeded + excluded.succeeded,
                         failed = job_throughput.failed + excluded.failed",
                )
                .bind(minute)
                .bind(queue)
                .bind(counts.succeeded)
                .bind(counts.failed),
            )
            .await?;
    }
    tx.commit("adding throughput").await
}

async fn throughput_since(
    store: &impl SqlStore,
    since: DateTime<Utc>,
) -> Result<Vec<ThroughputMinute>> {
    let mut conn = store.read("reading throughput").await?;
    conn.db()
        .fetch_all(
            sql(
                "reading throughput",
                "SELECT minute, CAST(sum(succeeded) AS bigint) AS succeeded,
                        CAST(sum(failed) AS bigint) AS failed
                 FROM job_throughput WHERE minute >= $1 GROUP BY minute ORDER BY minute",
            )
            .bind(since),
        )
        .await?
        .iter()
        .map(|row| {
            Ok(ThroughputMinute {
                minute: row.time("minute")?,
                succeeded: u64::try_from(row.int("succeeded")?).unwrap_or(0),
                failed: u64::try_from(row.int("failed")?).unwrap_or(0),
            })
        })
        .collect()
}

/// `WorkerStore` for a backend, through the functions above.
macro_rules! worker_store_for {
    ($store:ty) => {
        #[async_trait]
        impl WorkerStore for $store {
            async fn register_worker(&self, worker: &WorkerInfo, now: DateTime<Utc>) -> Result<()> {
                register(self, worker, now).await
            }

            async fn worker_heartbeat(
                &self,
                id: &str,
                running: u32,
                now: DateTime<Utc>,
            ) -> Result<()> {
                heartbeat(self, id, running, now).await
            }

            async fn worker_stopped(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
                stopped(self, id, now).await
            }

            async fn list_workers(&self, now: DateTime<Utc>) -> Result<Vec<WorkerRecord>> {
                list(self, now).await
            }

            async fn prune_workers(&self, now: DateTime<Utc>) -> Result<u64> {
                prune(self, now).await
            }

            async fn add_throughput(
                &self,
                minute: DateTime<Utc>,
                ended: &[(String, Ended)],
            ) -> Result<()> {
                add_throughput(self, minute, ended).await
            }

            async fn throughput_since(
                &self,
                since: DateTime<Utc>,
            ) -> Result<Vec<ThroughputMinute>> {
                throughput_since(self, since).await
            }
        }
    };
}

worker_store_for!(PgStore);
worker_store_for!(SqliteStore);
