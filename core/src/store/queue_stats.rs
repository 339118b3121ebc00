//! Queue gauges, written once for both backends (see `sql.rs`): two
//! aggregates, over the queued and over the running jobs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{sql, SqlStore};
use super::{PgStore, SqliteStore};
use crate::error::Result;
use crate::queue_stats::{QueueGauge, QueueStatsStore};

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

async fn gauges(store: &impl SqlStore, now: DateTime<Utc>) -> Result<Vec<QueueGauge>> {
    let mut conn = store.read("reading queue gauges").await?;
    let mut db = conn.db();
    let queued = db
        .fetch_all(
            sql(
                "counting queued jobs",
                "SELECT queue, kind, count(*) FILTER (WHERE run_at <= $1) AS due,
                        count(*) FILTER (WHERE run_at > $1) AS later,
                        min(run_at) FILTER (WHERE run_at <= $1) AS oldest_due
                 FROM jobs WHERE state = 'queued' GROUP BY queue, kind",
            )
            .bind(now),
        )
        .await?;
    let running = db
        .fetch_all(sql(
            "counting running jobs",
            "SELECT queue, kind, count(*) AS running FROM jobs WHERE state = 'running'
             GROUP BY queue, kind",
        ))
        .await?;
    let mut gauges: BTreeMap<(String, String), QueueGauge> = BTreeMap::new();
    for row in &queued {
        let (queue, kind) = (row.text("queue")?, row.text("kind")?);
        gauges.insert(
            (queue.clone(), kind.clone()),
            QueueGauge {
                queue,
                kind,
                due: count(row.int("due")?),
                scheduled: count(row.int("later")?),
                oldest_due_at: row.opt_time("oldest_due")?,
                running: 0,
            },
        );
    }
    for row in &running {
        let (queue, kind) = (row.text("queue")?, row.text("kind")?);
        gauges
            .entry((queue.clone(), kind.clone()))
            .or_insert(QueueGauge {
                queue,
                kind,
                due: 0,
                scheduled: 0,
                oldest_due_at: None,
                running: 0,
            })
            .running = count(row.int("running")?);
    }
    Ok(gauges.into_values().collect())
}

#[async_trait]
impl QueueStatsStore for PgStore {
    async fn queue_gauges(&self, now: DateTime<Utc>) -> Result<Vec<QueueGauge>> {
        gauges(self, now).await
    }
}

#[async_trait]
impl QueueStatsStore for SqliteStore {
    async fn queue_gauges(&self, now: DateTime<Utc>) -> Result<Vec<QueueGauge>> {
        gauges(self, now).await
    }
}
