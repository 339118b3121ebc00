//! What a handler gets: the job (tenant, params, attempt, saved checkpoint), a
//! cancellation signal, and fenced writes for progress and checkpoints. A write
//! refused by fencing stops the handler (its attempt lost the job).

use std::sync::Arc;
use std::time::{Duration, Instant};

use longhaul_core::job::{Job, Lease, Progress};
use longhaul_core::{JobId, JobKind, JobStore};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::handler::JobError;
use crate::stop::{StopReason, StopSignal};

/// Progress is written at most this often; the latest value is kept meanwhile.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct JobContext {
    job: Arc<Job>,
    store: Arc<dyn JobStore>,
    stop: Arc<StopSignal>,
    progress: Arc<Mutex<ProgressState>>,
}

#[derive(Default)]
struct ProgressState {
    last_written: Option<Instant>,
    pending: Option<Progress>,
}

impl JobContext {
    pub(crate) fn new(job: Arc<Job>, store: Arc<dyn JobStore>, stop: Arc<StopSignal>) -> Self {
        JobContext {
            job,
            store,
            stop,
            progress: Arc::new(Mutex::new(ProgressState::default())),
        }
    }

    pub fn job(&self) -> &Job {
        &self.job
    }

    pub fn job_id(&self) -> JobId {
        self.job.id
    }

    pub fn tenant_id(&self) -> &str {
        &self.job.tenant_id
    }

    pub fn attempt(&self) -> i32 {
        self.job.attempt
    }

    /// The attempt's lease: what fences the handler's own store writes.
    pub fn lease(&self) -> Lease {
        self.job.lease()
    }

    /// The checkpoint a previous attempt saved, if any.
    pub fn checkpoint<K: JobKind>(&self) -> Result<Option<K::Checkpoint>, JobError> {
        self.job
            .checkpoint
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| JobError::permanent(format!("unreadable checkpoint: {e}")))
    }

    /// Saves where the job is, so a retried attempt resumes from here.
    pub async fn save_checkpoint<K: JobKind>(
        &self,
        checkpoint: &K::Checkpoint,
    ) -> Result<(), JobError> {
        let value = serde_json::to_value(checkpoint)
            .map_err(|e| JobError::permanent(format!("checkpoint: {e}")))?;
        let result = self.store.save_checkpoint(self.lease(), &value).await;
        self.fenced(result)
    }

    /// Reports progress; written at most every 500 ms (the latest value wins,
    /// and the runtime writes a pending value when the handler returns).
    pub async fn progress(&self, progress: Progress) -> Result<(), JobError> {
        let mut state = self.progress.lock().await;
        let due = state
            .last_written
            .is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL);
        if !due {
            state.pending = Some(progress);
            return Ok(());
        }
        state.pending = None;
        state.last_written = Some(Instant::now());
        let result = self.store.set_progress(self.lease(), &progress).await;
        drop(state);
        self.fenced(result)
    }

    /// Writes progress held back by the throttle.
    pub(crate) async fn flush_progress(&self) -> Result<(), JobError> {
        let pending = self.progress.lock().await.pending.take();
        match pending {
            Some(progress) => {
                let result = self.store.set_progress(self.lease(), &progress).await;
                self.fenced(result)
            }
            None => Ok(()),
        }
    }

    /// A token that fires when the handler should stop (cancel requested,
    /// lease lost, timeout or shutdown).
    pub fn cancellation(&self) -> CancellationToken {
        self.stop.token().clone()
    }

    /// Whether the stop is a client's cancel (work is to be discarded), as
    /// opposed to a shutdown, timeout or lost lease (work may be resumed by a
    /// later attempt).
    pub fn cancel_requested(&self) -> bool {
        self.stop.reason() == Some(StopReason::CancelRequested)
    }

    pub fn is_cancelled(&self) -> bool {
        self.stop.token().is_cancelled()
    }

    /// Resolves when the handler should stop.
    pub async fn cancelled(&self) {
        self.stop.token().cancelled().await
    }

    fn fenced(&self, result: longhaul_core::Result<()>) -> Result<(), JobError> {
        match result {
            Ok(()) => Ok(()),
            Err(longhaul_core::Error::LeaseLost { .. }) => {
                tracing::warn!("write fenced: this attempt lost the lease; stopping the handler");
                self.stop.stop(StopReason::LeaseLost);
                Err(JobError::Cancelled)
            }
            Err(other) => Err(JobError::from(other)),
        }
    }
}
