//! What operators and autoscalers read of the queues: per queue (and kind)
//! the jobs due now, those scheduled for later, how long the oldest due job
//! has waited, and the jobs running. Read from the queued and running jobs
//! only (the partial indexes of those states), never from the finished
//! ones, so a scrape costs in proportion to the work outstanding, not to the
//! jobs stored.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;

/// One queue and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGauge {
    pub queue: String,
    pub kind: String,
    /// Queued and due now.
    pub due: u64,
    /// Queued for later (`runAt` in the future, or a retry's back-off).
    pub scheduled: u64,
    /// When the oldest due job became due.
    pub oldest_due_at: Option<DateTime<Utc>>,
    pub running: u64,
}

#[async_trait]
pub trait QueueStatsStore: Send + Sync {
    /// Every queue and kind with queued or running jobs at `now`.
    async fn queue_gauges(&self, now: DateTime<Utc>) -> Result<Vec<QueueGauge>>;
}
