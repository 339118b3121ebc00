//! A pool's presence in the worker table (`GET /v1/workers`): registered
//! when the pool starts, a heartbeat with its running count every
//! [`HEARTBEAT_EVERY`] that also adds the attempts ended since the last one
//! to the throughput figures, stopped when it ends. Failures are logged and never
//! stop the pool: the table is a view for operators, the leases are what
//! keeps jobs safe.

use std::sync::Arc;

use chrono::Utc;
use longhaul_core::workers::{minute_of, WorkerInfo, WorkerStore, HEARTBEAT_EVERY};
use tokio_util::sync::CancellationToken;

use crate::heartbeat::RunningSet;
use crate::tally::Tally;

/// The host name (`HOSTNAME`, else the kernel's), for the worker table.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Registers, heartbeats until `stop`, then marks the pool stopped.
pub(crate) async fn run_presence(
    store: Arc<dyn WorkerStore>,
    worker: WorkerInfo,
    running: RunningSet,
    tally: Tally,
    stop: CancellationToken,
) {
    if let Err(error) = store.register_worker(&worker, Utc::now()).await {
        tracing::warn!(%error, "registering the worker failed; it is not listed until a heartbeat lands");
    }
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let count = u32::try_from(running.handlers_running()).unwrap_or(u32::MAX);
        if let Err(error) = store.worker_heartbeat(&worker.id, count, Utc::now()).await {
            tracing::warn!(%error, "the worker heartbeat failed");
        }
        write_throughput(store.as_ref(), &tally).await;
    }
    write_throughput(store.as_ref(), &tally).await;
    if let Err(error) = store.worker_stopped(&worker.id, Utc::now()).await {
        tracing::warn!(%error, "marking the worker stopped failed; it will show as gone");
    }
}

/// Adds what the pool ended since the last write to this minute's
/// throughput; on failure the counts wait for the next heartbeat.
async fn write_throughput(store: &dyn WorkerStore, tally: &Tally) {
    let ended = tally.take();
    if ended.is_empty() {
        return;
    }
    if let Err(error) = store.add_throughput(minute_of(Utc::now()), &ended).await {
        tracing::warn!(%error, "writing the throughput failed; kept for the next heartbeat");
        tally.restore(ended);
    }
}
