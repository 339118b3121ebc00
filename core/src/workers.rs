//! Worker processes as operators see them: each pool registers when it
//! starts (id, host, version, queues, concurrency), heartbeats how many jobs
//! it runs, and marks itself stopped when it ends. A pool that stops
//! heartbeating (killed, frozen, cut off) is shown gone after
//! [`GONE_AFTER`]; its jobs are rescued by the lease machinery as always,
//! this table only shows it. Rows of pools gone or stopped for a day are
//! pruned.
//!
//! Each heartbeat also adds the attempts the pool ended since the last one
//! to `job_throughput` (per minute and queue: succeeded, failed), so the
//! dashboard shows jobs per minute over the last hour without counting the
//! jobs table; rows older than [`KEPT_FOR`] are pruned with the pools.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;

/// How often a pool writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A pool silent this long is shown gone.
pub const GONE_AFTER: Duration = Duration::from_secs(30);
/// Pools gone or stopped this long ago are no longer listed.
pub const LISTED_FOR: Duration = Duration::from_secs(3600);
/// Pools gone or stopped this long ago are deleted by maintenance.
pub const KEPT_FOR: Duration = Duration::from_secs(86_400);

/// What a pool says of itself when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub version: String,
    pub queues: Vec<String>,
    pub concurrency: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum WorkerStatus {
    /// Heartbeating.
    Live,
    /// Silent for longer than [`GONE_AFTER`] without having stopped.
    Gone,
    /// Ended cleanly.
    Stopped,
}

/// A pool as listed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecord {
    pub worker_id: String,
    pub host: String,
    pub version: String,
    pub queues: Vec<String>,
    pub concurrency: u32,
    /// Jobs it ran at its last heartbeat.
    pub running_jobs: u32,
    pub status: WorkerStatus,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
}

impl WorkerRecord {
    pub fn status_at(
        last_heartbeat_at: DateTime<Utc>,
        stopped_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> WorkerStatus {
        let silent = now.signed_duration_since(last_heartbeat_at);
        if stopped_at.is_some() {
            WorkerStatus::Stopped
        } else if silent.to_std().is_ok_and(|silent| silent > GONE_AFTER) {
            WorkerStatus::Gone
        } else {
            WorkerStatus::Live
        }
    }
}

/// Attempts a pool ended in one queue: succeeded, and failed (retried or
/// failed for good).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ended {
    pub succeeded: u64,
    pub failed: u64,
}

/// Attempts ended in one minute, every queue and pool together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThroughputMinute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub succeeded: u64,
    pub failed: u64,
}

/// The start of `at`'s minute.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp() - at.timestamp().rem_euclid(60), 0).unwrap_or(at)
}

/// The worker table (both backends, written once).
#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// Registers a pool (a restart with the same id starts afresh).
    async fn register_worker(&self, worker: &WorkerInfo, now: DateTime<Utc>) -> Result<()>;

    /// Records a heartbeat and the jobs the pool runs.
    async fn worker_heartbeat(&self, id: &str, running: u32, now: DateTime<Utc>) -> Result<()>;

    /// Marks a pool stopped.
    async fn worker_stopped(&self, id: &str, now: DateTime<Utc>) -> Result<()>;

    /// Live pools, and those gone or stopped within [`LISTED_FOR`], by id.
    async fn list_workers(&self, now: DateTime<Utc>) -> Result<Vec<WorkerRecord>>;

    /// Deletes pools gone or stopped for [`KEPT_FOR`], and throughput rows
    /// as old; how many pools.
    async fn prune_workers(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Adds attempts ended per queue to `minute`'s throughput.
    async fn add_throughput(&self, minute: DateTime<Utc>, ended: &[(String, Ended)]) -> Result<()>;

    /// Attempts ended per minute from `since` on, oldest first (minutes with
    /// none are absent).
    async fn throughput_since(&self, since: DateTime<Utc>) -> Result<Vec<ThroughputMinute>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_start_on_the_minute() {
        let at = DateTime::parse_from_rfc3339("2026-12-03T10:41:59.900Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(minute_of(at).to_rfc3339(), "2026-12-03T10:41:00+00:00");
        assert_eq!(minute_of(minute_of(at)), minute_of(at));
    }

    #[test]
    fn a_silent_pool_is_gone_and_a_stopped_one_stopped() {
        let now = Utc::now();
        let beat = now - chrono::Duration::seconds(10);
        assert_eq!(WorkerRecord::status_at(beat, None, now), WorkerStatus::Live);
        let silent = now - chrono::Duration::seconds(31);
        assert_eq!(
            WorkerRecord::status_at(silent, None, now),
            WorkerStatus::Gone
        );
        assert_eq!(
            WorkerRecord::status_at(beat, Some(now), now),
            WorkerStatus::Stopped
        );
    }
}
