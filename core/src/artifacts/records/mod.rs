//! The database side of artifacts: one row per file a job writes, from before
//! its upload starts until the sweeper deletes it. Writes by a job are fenced
//! by its lease like every other worker write; reads are scoped by tenant.
//! `store/postgres/artifacts.rs` and `store/sqlite/artifacts.rs` hold each backend's SQL; the schema is
//! `migrations/<backend>/0006_artifacts.sql`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::job::Lease;
use crate::JobId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactStatus {
    /// An upload may be under way (or was left behind by a failed attempt).
    Uploading,
    /// The object is complete and is the job's result.
    Stored,
    /// The sweeper is removing it (claimed; the row goes last).
    Deleting,
}

impl ArtifactStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactStatus::Uploading => "uploading",
            ArtifactStatus::Stored => "stored",
            ArtifactStatus::Deleting => "deleting",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "uploading" => Ok(ArtifactStatus::Uploading),
            "stored" => Ok(ArtifactStatus::Stored),
            "deleting" => Ok(ArtifactStatus::Deleting),
            other => Err(crate::Error::corrupt(
                "artifact status",
                format!("unknown status {other:?}"),
            )),
        }
    }
}

/// Names of artifacts that are a job's inputs, not its result.
pub const INPUT_PREFIX: &str = "input-";

/// A file a job is writing, recorded before its upload starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    pub job_id: JobId,
    pub name: String,
    pub tenant_id: String,
    pub region: String,
    pub object_key: String,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub job_id: JobId,
    pub name: String,
    pub tenant_id: String,
    pub region: String,
    pub object_key: String,
    pub content_type: String,
    pub status: ArtifactStatus,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    pub stored_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why the sweeper removes an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepReason {
    /// Stored, and its retention ended.
    Expired,
    /// Its job was purged.
    JobGone,
    /// Never stored, and its job is over (failed, cancelled, or succeeded
    /// without it): an abandoned upload.
    Abandoned,
    /// A sweep claimed it and stopped before it was gone.
    Unfinished,
}

/// Where a sweep's scan of `artifacts` stands: (created_at, job, name) of the
/// last row read, so rows that keep failing do not hold the rest back.
pub type SweepCursor = (DateTime<Utc>, JobId, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepCandidate {
    pub record: ArtifactRecord,
    pub reason: SweepReason,
}

pub(crate) fn sweep_reason(text: &str) -> SweepReason {
    match text {
        "job_gone" => SweepReason::JobGone,
        "expired" => SweepReason::Expired,
        "unfinished" => SweepReason::Unfinished,
        _ => SweepReason::Abandoned,
    }
}

#[async_trait]
pub trait ArtifactRecords: Send + Sync {
    /// Records (or re-records, for a later attempt) that the job is about to
    /// upload `artifact`; its status is `uploading`. Fenced by the lease;
    /// `Conflict` while the sweeper is removing the previous one (retry later).
    async fn begin_artifact(&self, lease: Lease, artifact: &NewArtifact) -> Result<()>;

    /// Marks the job's artifact stored with its size and digest, kept until
    /// `expires_at`. Fenced by the lease.
    async fn store_artifact(
        &self,
        lease: Lease,
        name: &str,
        size: u64,
        sha256: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;

    /// The tenant's artifacts of one job, by name.
    async fn job_artifacts(&self, tenant_id: &str, job_id: JobId) -> Result<Vec<ArtifactRecord>>;

    /// Artifacts to remove as of `now`, at most `limit`, in creation order
    /// after `after`.
    async fn artifacts_to_sweep(
        &self,
        now: DateTime<Utc>,
        after: Option<&SweepCursor>,
        limit: u32,
    ) -> Result<Vec<SweepCandidate>>;

    /// Marks the row the sweeper read `deleting` if it is unchanged since
    /// (a retried job's `begin_artifact` renews `created_at`, so its new
    /// upload is never claimed); whether it did. From then on
    /// `begin_artifact` refuses the row until the sweeper forgets it.
    async fn claim_for_sweep(&self, seen: &ArtifactRecord, now: DateTime<Utc>) -> Result<bool>;

    /// Deletes a `deleting` row once its objects are gone.
    async fn forget_artifact(&self, job_id: JobId, name: &str) -> Result<()>;
}
