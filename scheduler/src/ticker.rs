//! The fire loop: fire what is due, in batches, then sleep until the next
//! schedule is due (at most `poll_interval`, so schedules created meanwhile
//! are seen). Every replica runs it; the store makes each fire time produce
//! one job (see `longhaul_core::schedule`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use longhaul_core::Error;
use tokio_util::sync::CancellationToken;

use crate::job_maker::CatalogueJobs;
use crate::SchedulerStore;

/// Ticks retried at once after a conflict before the tick reports it.
const MAX_CONFLICT_RETRIES: u32 = 3;

#[derive(Debug, Clone)]
pub struct TickerConfig {
    /// Schedules fired per transaction.
    pub batch: u32,
    /// Longest sleep between looks at the due index.
    pub poll_interval: Duration,
    /// A fire time seen later than this is a misfire (the schedule's misfire
    /// policy decides).
    pub misfire_threshold: Duration,
}

impl Default for TickerConfig {
    fn default() -> Self {
        TickerConfig {
            batch: 500,
            poll_interval: Duration::from_millis(500),
            misfire_threshold: Duration::from_secs(60),
        }
    }
}

pub struct Ticker {
    store: Arc<dyn SchedulerStore>,
    jobs: CatalogueJobs,
    config: TickerConfig,
}

/// What a run of the ticker did (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickerReport {
    pub fired: u64,
    pub skipped: u64,
    /// Of the skipped, fires over their tenant's `maxQueued`.
    pub over_quota: u64,
    pub failed: u64,
}

impl Ticker {
    pub fn new(store: Arc<dyn SchedulerStore>, jobs: CatalogueJobs, config: TickerConfig) -> Self {
        Ticker {
            store,
            jobs,
            config,
        }
    }

    /// Fires everything due now, batch after batch; answers what it did.
    pub async fn tick(&self) -> Result<TickerReport, Error> {
        let mut total = TickerReport::default();
        let mut conflicts = 0;
        loop {
            let now = Utc::now();
            let report = match self
                .store
                .fire_due(
                    now,
                    self.config.batch,
                    self.config.misfire_threshold,
                    &self.jobs,
                )
                .await
            {
                Ok(report) => report,
                // A schedule moved under this tick (its transaction rolled
                // back whole): look again, a few times at most.
                Err(Error::Conflict(message)) if conflicts < MAX_CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::debug!(%message, "scheduler tick conflicted; looking again");
                    continue;
                }
                Err(error) => return Err(error),
            };
            let fired_at = Utc::now();
            for (schedule_id, fire_time, job_id) in &report.fired {
                tracing::debug!(%schedule_id, %fire_time, %job_id, "schedule fired");
                // From the nominal fire time: a schedule's jitter counts in.
                let lag = (fired_at - *fire_time).to_std().unwrap_or_default();
                metrics::histogram!("longhaul_scheduler_fire_lag_seconds")
                    .record(lag.as_secs_f64());
            }
            total.fired += report.fired.len() as u64;
            if report.over_quota > 0 {
                tracing::info!(
                    fires = report.over_quota,
                    "scheduled fires skipped: their tenants were at maxQueued"
                );
            }
            total.skipped += report.skipped;
            total.over_quota += report.over_quota;
            total.failed += report.failed;
            if report.schedules < self.config.batch as usize {
                return Ok(total);
            }
        }
    }

    /// Ticks until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("scheduler ticking");
        while !shutdown.is_cancelled() {
            if let Err(error) = self.tick().await {
                // Back off: a failing database must not be hammered.
                tracing::error!(%error, "scheduler tick failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
                continue;
            }
            let sleep = match self.store.next_due_at().await {
                Ok(Some(due)) => (due - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(self.config.poll_interval),
                Ok(None) => self.config.poll_interval,
                Err(error) => {
                    tracing::error!(%error, "reading the next due schedule failed");
                    self.config.poll_interval
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
            }
        }
        tracing::info!("scheduler stopped");
    }
}
