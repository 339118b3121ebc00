//! The running set of one pool and its heartbeat: one batched statement every
//! third of the lease extends every lease the pool holds, reads back cancel
//! requests, and stops handlers whose lease was lost.
//!
//! An attempt stays in the set, heartbeated, until its outcome is written:
//! a success waiting in the completer's queue keeps its lease however long the
//! store takes to write it. An attempt whose outcome is being written is
//! marked `finishing`: when its heartbeat finds the job no longer running,
//! that is the outcome landing, not a lost lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longhaul_core::job::Lease;
use longhaul_core::{JobId, JobStore};
use tokio_util::sync::CancellationToken;

use crate::stop::{StopReason, StopSignal};

/// A running attempt: its number, the signal that stops its handler, and
/// whether its outcome is being written.
#[derive(Debug)]
struct Attempt {
    attempt: i32,
    stop: Arc<StopSignal>,
    finishing: bool,
}

/// Each running job's attempt.
type Held = HashMap<JobId, Attempt>;

/// The jobs a pool is running now, with the signal that stops each.
#[derive(Debug, Default, Clone)]
pub(crate) struct RunningSet {
    inner: Arc<Mutex<Held>>,
}

impl RunningSet {
    pub(crate) fn insert(&self, lease: Lease, stop: Arc<StopSignal>) {
        let attempt = Attempt {
            attempt: lease.attempt,
            stop,
            finishing: false,
        };
        self.lock().insert(lease.job_id, attempt);
    }

    /// The attempt's outcome is being written (see the module comment).
    pub(crate) fn mark_finishing(&self, lease: Lease) {
        if let Some(held) = self.lock().get_mut(&lease.job_id) {
            if held.attempt == lease.attempt {
                held.finishing = true;
            }
        }
    }

    /// Forgets the attempt (not a later attempt of the same job).
    pub(crate) fn remove(&self, lease: Lease) {
        let mut held = self.lock();
        if held
            .get(&lease.job_id)
            .is_some_and(|h| h.attempt == lease.attempt)
        {
            held.remove(&lease.job_id);
        }
    }

    /// Attempts whose handler still runs.
    pub(crate) fn handlers_running(&self) -> usize {
        self.lock().values().filter(|h| !h.finishing).count()
    }

    /// The jobs whose handler still runs, in id order.
    pub(crate) fn job_ids(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self
            .lock()
            .iter()
            .filter(|(_, held)| !held.finishing)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    pub(crate) fn leases(&self) -> Vec<Lease> {
        self.lock()
            .iter()
            .map(|(job_id, held)| Lease {
                job_id: *job_id,
                attempt: held.attempt,
            })
            .collect()
    }

    /// Stops one job, if it is still running here with that attempt (or any attempt).
    pub(crate) fn stop(&self, job_id: JobId, attempt: Option<i32>, reason: StopReason) {
        let signal = self
            .lock()
            .get(&job_id)
            .filter(|held| attempt.is_none_or(|a| a == held.attempt))
            .map(|held| held.stop.clone());
        if let Some(signal) = signal {
            signal.stop(reason);
        }
    }

    pub(crate) fn stop_all(&self, reason: StopReason) {
        let signals: Vec<_> = self.lock().values().map(|h| h.stop.clone()).collect();
        for signal in signals {
            signal.stop(reason);
        }
    }

    /// Whether a lease the store no longer holds was really lost: the attempt
    /// is still here and its handler has not ended (an attempt whose outcome
    /// is being written, or already forgotten, simply finished).
    fn lost(&self, lease: Lease) -> bool {
        self.lock()
            .get(&lease.job_id)
            .is_some_and(|h| h.attempt == lease.attempt && !h.finishing)
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
                    None if !running.lost(*held_lease) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(job_id: JobId, attempt: i32) -> Lease {
        Lease { job_id, attempt }
    }

    #[test]
    fn an_attempt_whose_outcome_is_being_written_has_not_lost_its_lease() {
        let running = RunningSet::default();
        let job = JobId::new();
        running.insert(lease(job, 1), Arc::default());
        assert!(
            running.lost(lease(job, 1)),
            "a running handler's missing lease is lost"
        );
        running.mark_finishing(lease(job, 1));
        assert!(
            !running.lost(lease(job, 1)),
            "its outcome landing is not a loss"
        );
        assert_eq!(
            running.leases(),
            vec![lease(job, 1)],
            "still heartbeated until written"
        );
        assert_eq!(running.handlers_running(), 0);
        running.remove(lease(job, 1));
        assert!(!running.lost(lease(job, 1)));
        assert!(running.leases().is_empty());
    }

    #[test]
    fn forgetting_an_old_attempt_keeps_the_new_one() {
        let running = RunningSet::default();
        let job = JobId::new();
        running.insert(lease(job, 1), Arc::default());
        running.insert(lease(job, 2), Arc::default());
        running.remove(lease(job, 1));
        running.mark_finishing(lease(job, 1));
        assert_eq!(running.leases(), vec![lease(job, 2)]);
        assert!(running.lost(lease(job, 2)));
    }
}
