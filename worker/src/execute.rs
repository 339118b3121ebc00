//! Running one claimed job: its handler in a task of its own (so a panic is a
//! failed attempt, not a dead worker), under the kind's timeout, then the
//! attempt recorded according to how it ended and why it was stopped.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use longhaul_core::failure::FailureCode;
use longhaul_core::job::{Finish, Job};
use longhaul_core::{JobStore, KindSpec};
use tokio::task::JoinError;
use tracing::Instrument;

use crate::completer::CompletionSender;
use crate::context::JobContext;
use crate::handler::{JobError, JobHandler, JobOutput};
use crate::heartbeat::RunningSet;
use crate::stop::{StopReason, StopSignal};

/// How long a handler gets to return after its token fired before its task
/// is aborted.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

pub(crate) struct Execution {
    pub(crate) job: Arc<Job>,
    pub(crate) handler: Arc<dyn JobHandler>,
    pub(crate) spec: KindSpec,
    pub(crate) stop: Arc<StopSignal>,
    pub(crate) running: RunningSet,
    /// Where ended attempts are counted for the throughput figures.
    pub(crate) tally: crate::tally::Tally,
}

/// The end of a handler run, before it is recorded.
enum Ended {
    Returned(Result<JobOutput, JobError>),
    Panicked(String),
    /// Did not return within STOP_GRACE after being stopped; aborted.
    Abandoned,
}

/// An end other than success, to be recorded as a finish.
enum Unsuccessful {
    Error(JobError),
    Panicked(String),
    Abandoned,
}

impl Execution {
    /// Runs the attempt and records how it ended. The attempt leaves the
    /// running set here, or, for a success, once the completer wrote it.
    pub(crate) async fn run(self, store: Arc<dyn JobStore>, completions: CompletionSender) {
        // Jobs run on tasks of their own, outside the pool's span: the
        // worker id is one of the job span's fields.
        let span = tracing::info_span!("job", tenant_id = %self.job.tenant_id, job_id = %self.job.id,
            kind = %self.job.kind, attempt = self.job.attempt,
            worker_id = self.job.worker_id.as_deref().unwrap_or_default());
        async move {
            let ctx = JobContext::new(self.job.clone(), store.clone(), self.stop.clone());
            crate::telemetry::started(&self.job);
            // A prefetched job stopped while it waited for a slot (cancelled,
            // handed back at shutdown, lease lost) is recorded without running.
            let began = std::time::Instant::now();
            let ended = if self.stop.reason().is_some() {
                Ended::Abandoned
            } else {
                self.run_handler(ctx.clone()).await
            };
            crate::telemetry::ran(&self.job.kind, began.elapsed());
            let queued = self.record(ended, &ctx, store.as_ref(), &completions).await;
            if !queued {
                self.running.remove(self.job.lease());
            }
        }
        .instrument(span)
        .await
    }

    async fn run_handler(&self, ctx: JobContext) -> Ended {
        let handler = self.handler.clone();
        let mut task = tokio::spawn(async move { handler.run(ctx).await }.in_current_span());
        let stopped = self.stop.token().clone();
        tokio::select! {
            joined = &mut task => return ended_from(joined),
            _ = tokio::time::sleep(self.spec.timeout) => {
                tracing::warn!(timeout = ?self.spec.timeout, "job timed out; stopping the handler");
                self.stop.stop(StopReason::Timeout);
            }
            _ = stopped.cancelled() => {}
        }
        match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(joined) => ended_from(joined),
            Err(_) => {
                tracing::warn!("handler ignored its stop signal; aborting it");
                task.abort();
                Ended::Abandoned
            }
        }
    }

    async fn record(
        &self,
        ended: Ended,
        ctx: &JobContext,
        store: &dyn JobStore,
        completions: &CompletionSender,
    ) -> bool {
        let reason = self.stop.reason();
        if reason == Some(StopReason::LeaseLost) {
            tracing::warn!("attempt lost its lease; nothing recorded");
            return false;
        }
        self.running.mark_finishing(self.job.lease());
        let unsuccessful = match ended {
            Ended::Returned(Ok(output)) => {
                if let Err(error) = ctx.flush_progress().await {
                    tracing::warn!(%error, "could not write the final progress");
                }
                crate::telemetry::finished(&self.job.kind, "succeeded");
                self.tally.ended(&self.job.queue, true);
                if completions.send((self.job.lease(), output)).is_err() {
                    tracing::error!(
                        "completion queue closed; the job will be rescued when its lease expires"
                    );
                    return false;
                }
                return true;
            }
            Ended::Returned(Err(error)) => Unsuccessful::Error(error),
            Ended::Panicked(message) => Unsuccessful::Panicked(message),
            Ended::Abandoned => Unsuccessful::Abandoned,
        };
        let finish = self.finish_for(unsuccessful, reason);
        match store.finish(self.job.lease(), &finish).await {
            Ok(()) => {
                let outcome = outcome_of(&self.job, &finish);
                crate::telemetry::finished(&self.job.kind, outcome);
                if matches!(outcome, "failed" | "retried") {
                    self.tally.ended(&self.job.queue, false);
                }
                log_finish(&finish)
            }
            Err(longhaul_core::Error::LeaseLost { .. }) => {
                crate::telemetry::fenced();
                tracing::warn!("finish fenced: the attempt had lost its lease")
            }
            Err(error) => {
                tracing::error!(%error, "could not record the attempt; the lease will expire and the job be rescued")
            }
        }
        false
    }

    fn finish_for(&self, ended: Unsuccessful, reason: Option<StopReason>) -> Finish {
        match reason {
            Some(StopReason::CancelRequested) => return Finish::Cancelled,
            Some(StopReason::Shutdown) => return Finish::Released,
            Some(StopReason::Timeout) => {
                return self.failed(JobError::platform(
                    FailureCode::TimedOut,
                    format!("timed out after {:?}", self.spec.timeout),
                ));
            }
            Some(StopReason::LeaseLost) | None => {}
        }
        match ended {
            Unsuccessful::Error(JobError::Cancelled) => Finish::Cancelled,
            Unsuccessful::Error(error) => self.failed(error),
            Unsuccessful::Panicked(message) => self.failed(JobError::platform(
                FailureCode::InternalError,
                format!("handler panicked: {message}"),
            )),
            Unsuccessful::Abandoned => self.failed(JobError::platform(
                FailureCode::InternalError,
                "handler did not stop",
            )),
        }
    }

    /// The failed attempt: the raw error for operators, the public one for
    /// tenants, and the retry after the kind's back-off (its transient one,
    /// minutes long, when the platform was briefly unavailable).
    fn failed(&self, error: JobError) -> Finish {
        let backoff = if error.is_transient() {
            &self.spec.transient_backoff
        } else {
            &self.spec.backoff
        };
        let delay = backoff.delay(self.job.failed_attempts + 1);
        let retry_at =
            Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        Finish::Failed {
            public: error.public(),
            permanent: error.is_permanent(),
            error: error.to_string(),
            retry_at,
        }
    }
}

fn ended_from(joined: Result<Result<JobOutput, JobError>, JoinError>) -> Ended {
    match joined {
        Ok(result) => Ended::Returned(result),
        Err(error) if error.is_panic() => {
            let payload = error.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Ended::Panicked(message)
        }
        Err(_) => Ended::Abandoned,
    }
}

/// The outcome label of a recorded finish: a failure is `retried` while
/// the job has attempts left (as the store decides), else `failed`.
fn outcome_of(job: &longhaul_core::Job, finish: &Finish) -> &'static str {
    match finish {
        Finish::Failed {
            permanent: false, ..
        } if job.failed_attempts + 1 < job.max_attempts => "retried",
        Finish::Failed { .. } => "failed",
        Finish::Cancelled => "cancelled",
        Finish::Released => "released",
        Finish::Succeeded { .. } => "succeeded",
    }
}

fn log_finish(finish: &Finish) {
    match finish {
        Finish::Failed {
            error,
            public,
            permanent,
            retry_at,
        } => {
            tracing::warn!(%error, code = %public.code, permanent, %retry_at, "attempt failed")
        }
        Finish::Cancelled => tracing::info!("job cancelled"),
        Finish::Released => tracing::info!("job handed back for another worker"),
        Finish::Succeeded { .. } => tracing::debug!("job succeeded"),
    }
}
