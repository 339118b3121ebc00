//! The artifact sweeper: deletes what jobs left in object storage once it is
//! no longer wanted, row by row from `artifacts` (see
//! `longhaul_core::artifacts::records`):
//!
//! - stored artifacts whose retention ended (the tenant's plan, else
//!   `LONGHAUL_ARTIFACT_RETENTION_DAYS`);
//! - artifacts of purged jobs;
//! - uploads whose job is over without them (failed, cancelled, or killed
//!   mid-upload and never resumed): every pending upload to the key is aborted,
//!   so no multipart parts are left to cost storage.
//!
//! Objects go first, the row last (only if unchanged since read), so a crash
//! in between just repeats the sweep. Safe with several replicas: deleting
//! twice is harmless.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use longhaul_core::artifacts::records::{SweepCandidate, SweepReason};
use longhaul_core::artifacts::ArtifactStores;

use crate::SchedulerStore;

/// Rows handled per batch.
const BATCH: u32 = 200;

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: usize,
    pub job_gone: usize,
    pub abandoned: usize,
    /// Rows whose objects could not be removed this time (logged; retried).
    pub failed: usize,
}

impl SweepReport {
    pub fn removed(&self) -> usize {
        self.expired + self.job_gone + self.abandoned
    }
}

pub struct ArtifactSweeper {
    store: Arc<dyn SchedulerStore>,
    artifacts: Arc<ArtifactStores>,
}

impl ArtifactSweeper {
    pub fn new(store: Arc<dyn SchedulerStore>, artifacts: Arc<ArtifactStores>) -> Self {
        Self { store, artifacts }
    }

    /// Removes everything due as of `now`.
    pub async fn sweep(&self, now: DateTime<Utc>) -> longhaul_core::Result<SweepReport> {
        let mut report = SweepReport::default();
        loop {
            let batch = self.store.artifacts_to_sweep(now, BATCH).await?;
            let mut progressed = false;
            for candidate in &batch {
                match self.remove(candidate).await {
                    Ok(true) => {
                        progressed = true;
                        match candidate.reason {
                            SweepReason::Expired => report.expired += 1,
                            SweepReason::JobGone => report.job_gone += 1,
                            SweepReason::Abandoned => report.abandoned += 1,
                        }
                    }
                    Ok(false) => {}
                    Err(error) => {
                        report.failed += 1;
                        let record = &candidate.record;
                        tracing::warn!(tenant_id = %record.tenant_id, job_id = %record.job_id,
                            key = %record.object_key, %error, "could not remove an artifact; next sweep retries");
                    }
                }
            }
            // A batch that removed nothing (every row failed or changed) would
            // come back the same: stop until the next sweep.
            if batch.len() < BATCH as usize || !progressed {
                return Ok(report);
            }
        }
    }

    /// Aborts uploads to the key, deletes the object, then the row; whether
    /// the row was removed.
    async fn remove(&self, candidate: &SweepCandidate) -> Result<bool, String> {
        let record = &candidate.record;
        let store = self
            .artifacts
            .store(&record.region)
            .map_err(|e| e.to_string())?;
        store
            .abort_uploads(&record.object_key)
            .await
            .map_err(|e| e.to_string())?;
        store
            .delete(&record.object_key)
            .await
            .map_err(|e| e.to_string())?;
        let forgotten = self
            .store
            .forget_artifact(record)
            .await
            .map_err(|e| e.to_string())?;
        if forgotten {
            tracing::info!(tenant_id = %record.tenant_id, job_id = %record.job_id,
                key = %record.object_key, reason = ?candidate.reason, "artifact removed");
        }
        Ok(forgotten)
    }
}
