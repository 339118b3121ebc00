//! The running set of one pool and its heartbeat: one batched statement every
//! third of the lease extends every lease the pool holds, reads back cancel
//! requests, and stops handlers whose lease was lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longhaul_core::job::Lease;
use longhaul_core::{JobId, JobStore};
use tokio_util::sync::CancellationToken;

use crate::stop::{StopReason, StopSignal};

/// Each running job's attempt and the signal that stops its handler.
type Held = HashMap<JobId, (i32, Arc<StopSignal>)>;

/// The jobs a pool is running now, with the signal that stops each.
#[derive(Debug, Default, Clone)]
pub(crate) struct RunningSet {
    inner: Arc<Mutex<Held>>,
}

impl RunningSet {
    pub(crate) fn insert(&self, lease: Lease, stop: Arc<StopSignal>) {
        self.lock().insert(lease.job_id, (lease.attempt, stop));
    }

    pub(crate) fn remove(&self, job_id: JobId) {
        self.lock().remove(&job_id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The running jobs' ids, sorted.
    pub(crate) fn job_ids(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self.lock().keys().copied().collect();
        ids.sort();
        ids
    }

    pub(crate) fn leases(&self) -> Vec<Lease> {
        self.lock()
            .iter()
            .map(|(job_id, (attempt, _))| Lease {
                job_id: *job_id,
                attempt: *attempt,
            })
            .collect()
    }

    /// Stops one job, if it is still running here with that attempt (or any attempt).
    pub(crate) fn stop(&self, job_id: JobId, attempt: Option<i32>, reason: StopReason) {
        let signal = self
            .lock()
            .get(&job_id)
            .filter(|(held, _)| attempt.is_none_or(|a| a == *held))
            .map(|(_, signal)| signal.clone());
        if let Some(signal) = signal {
            signal.stop(reason);
        }
    }

    pub(crate) fn stop_all(&self, reason: StopReason) {
        let signals: Vec<_> = self.lock().values().map(|(_, s)| s.clone()).collect();
        for signal in signals {
            signal.stop(reason);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every critical section is a single map operation).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Heartbeats until `stop` fires.
pub(crate) async fn run_heartbeat(
    store: Arc<dyn JobStore>,
    running: RunningSet,
    lease: Duration,
    stop: CancellationToken,
) {
    let interval = lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        beat(store.as_ref(), &running, lease).await;
    }
}

async fn beat(store: &dyn JobStore, running: &RunningSet, lease: Duration) {
    let leases = running.leases();
    if leases.is_empty() {
        return;
    }
    match store.heartbeat(&leases, lease).await {
        Ok(replies) => {
            let held: HashMap<JobId, bool> = replies
                .iter()
                .map(|r| (r.job_id, r.cancel_requested))
                .collect();
            for held_lease in &leases {
                match held.get(&held_lease.job_id) {
                    Some(true) => running.stop(
                        held_lease.job_id,
                        Some(held_lease.attempt),
                        StopReason::CancelRequested,
                    ),
                    Some(false) => {}
                    None => {
                        tracing::warn!(job_id = %held_lease.job_id, attempt = held_lease.attempt,
                            "lease lost (job was rescued or finished elsewhere); stopping the handler");
                        running.stop(
                            held_lease.job_id,
                            Some(held_lease.attempt),
                            StopReason::LeaseLost,
                        );
                    }
                }
            }
        }
        Err(error) => tracing::error!(%error, jobs = leases.len(), "heartbeat failed; will retry"),
    }
}
