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
//! A row is first claimed (`deleting`, only if unchanged since read: a job
//! retried meanwhile keeps its new upload), then its objects go, then the row;
//! a crash in between leaves a `deleting` row the next sweep finishes. While a
//! row is `deleting`, a retried job's `begin_artifact` is refused (the attempt
//! retries later). Safe with several replicas: deleting twice is harmless.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use longhaul_core::artifacts::records::{SweepCandidate, SweepCursor, SweepReason};
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

    /// Removes everything due as of `now`. Rows are read in creation order
    /// by keyset, so rows that keep failing do not hold back the others.
    pub async fn sweep(&self, now: DateTime<Utc>) -> longhaul_core::Result<SweepReport> {
        let mut report = SweepReport::default();
        let mut after: Option<SweepCursor> = None;
        loop {
            let batch = self
                .store
                .artifacts_to_sweep(now, after.as_ref(), BATCH)
                .await?;
            for candidate in &batch {
                match self.remove(candidate, now).await {
                    Ok(true) => match candidate.reason {
                        SweepReason::Expired => report.expired += 1,
                        SweepReason::JobGone => report.job_gone += 1,
                        SweepReason::Abandoned | SweepReason::Unfinished => report.abandoned += 1,
                    },
                    Ok(false) => {}
                    Err(error) => {
                        report.failed += 1;
                        let record = &candidate.record;
                        tracing::warn!(tenant_id = %record.tenant_id, job_id = %record.job_id,
                            key = %record.object_key, %error, "could not remove an artifact; the next sweep retries");
                    }
                }
            }
            match batch.last() {
                Some(last) if batch.len() == BATCH as usize => {
                    let record = &last.record;
                    after = Some((record.created_at, record.job_id, record.name.clone()));
                }
                _ => return Ok(report),
            }
        }
    }

    /// Claims the row (unless a retried job re-recorded it since it was
    /// read), aborts uploads to the key, deletes the object, then the row;
    /// whether it was removed.
    async fn remove(&self, candidate: &SweepCandidate, now: DateTime<Utc>) -> Result<bool, String> {
        let record = &candidate.record;
        if !self
            .store
            .claim_for_sweep(record, now)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(false);
        }
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
        self.store
            .forget_artifact(record.job_id, &record.name)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(tenant_id = %record.tenant_id, job_id = %record.job_id,
            key = %record.object_key, reason = ?candidate.reason, "artifact removed");
        Ok(true)
    }
}
