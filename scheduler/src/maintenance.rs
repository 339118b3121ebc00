//! Maintenance loops, each safe with several replicas: lease rescue (fenced
//! in the store: two rescuers cannot both take a job back) and pruning of
//! finished jobs with their events and attempts, and of schedule fire
//! records, past retention (bounded batches; a row is deleted once); and the
//! artifact sweeper when object storage is configured.

use std::sync::Arc;
use std::time::Duration;

use crate::{ArtifactSweeper, SchedulerStore};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

/// Rows rescued or pruned per statement.
const BATCH: u32 = 1000;
/// How often pruning runs.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often the artifact sweeper runs.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub struct Maintenance {
    store: Arc<dyn SchedulerStore>,
    rescue_interval: Duration,
    job_retention: Duration,
    sweeper: Option<ArtifactSweeper>,
}

impl Maintenance {
    pub fn new(
        store: Arc<dyn SchedulerStore>,
        rescue_interval: Duration,
        job_retention: Duration,
    ) -> Self {
        Maintenance {
            store,
            rescue_interval,
            job_retention,
            sweeper: None,
        }
    }

    pub fn with_sweeper(mut self, sweeper: ArtifactSweeper) -> Self {
        self.sweeper = Some(sweeper);
        self
    }

    /// Rescues every expired lease now; answers how many jobs.
    pub async fn rescue(&self) -> longhaul_core::Result<usize> {
        let mut total = 0;
        loop {
            let rescued = self.store.rescue_expired(BATCH).await?;
            for job in &rescued {
                tracing::info!(tenant_id = %job.tenant_id, job_id = %job.job_id, state = %job.state, "rescued an expired lease");
            }
            total += rescued.len();
            metrics::counter!("longhaul_lease_rescues_total").increment(rescued.len() as u64);
            if rescued.len() < BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Prunes finished jobs and fire records past retention, and worker pools
    /// long gone; answers how many rows.
    pub async fn prune(&self) -> longhaul_core::Result<u64> {
        let before = Utc::now()
            - chrono::Duration::from_std(self.job_retention).unwrap_or(chrono::Duration::zero());
        let mut total = 0;
        loop {
            let pruned = self.store.prune_finished(before, BATCH).await?;
            total += pruned;
            if pruned < u64::from(BATCH) {
                break;
            }
        }
        // Fire records are only needed while a fire time could come again;
        // once a schedule moved past it (the fence), they are history.
        loop {
            let pruned = self.store.prune_fires(before, BATCH).await?;
            total += pruned;
            if pruned < u64::from(BATCH) {
                break;
            }
        }
        // Worker pools gone or stopped for a day.
        total += self.store.prune_workers(Utc::now()).await?;
        Ok(total)
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut rescue = tokio::time::interval(self.rescue_interval);
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = rescue.tick() => {
                    if let Err(error) = self.rescue().await {
                        tracing::error!(%error, "lease rescue failed");
                    }
                }
                _ = prune.tick() => {
                    match self.prune().await {
                        Ok(0) => {}
                        Ok(pruned) => tracing::info!(pruned, "pruned finished jobs"),
                        Err(error) => tracing::error!(%error, "pruning failed"),
                    }
                }
                _ = sweep.tick(), if self.sweeper.is_some() => {
                    if let Some(sweeper) = &self.sweeper {
                        match sweeper.sweep(Utc::now()).await {
                            Ok(report) if report.removed() == 0 && report.failed == 0 => {}
                            Ok(report) => tracing::info!(?report, "swept artifacts"),
                            Err(error) => tracing::error!(%error, "artifact sweep failed"),
                        }
                    }
                }
            }
        }
    }
}
