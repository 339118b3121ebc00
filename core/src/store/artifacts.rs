//! Artifact records, written once for both backends (see `sql.rs`): a row
//! per file a job writes, lease-fenced writes, what the sweeper must remove,
//! and the inputs an enqueue records with its jobs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{sql, Db, Row, SqlStore};
use super::{lease_lost, PgStore, SqliteStore};
use crate::artifacts::records::{
    sweep_reason, ArtifactRecord, ArtifactRecords, ArtifactStatus, NewArtifact, SweepCandidate,
    SweepCursor,
};
use crate::error::{Error, Result};
use crate::job::{Enqueued, Lease, NewJob};
use crate::JobId;

fn record_from_row(row: &Row) -> Result<ArtifactRecord> {
    Ok(ArtifactRecord {
        job_id: JobId::from_uuid(row.uuid("job_id")?),
        name: row.text("name")?,
        tenant_id: row.text("tenant_id")?,
        region: row.text("region")?,
        object_key: row.text("object_key")?,
        content_type: row.text("content_type")?,
        status: ArtifactStatus::parse(&row.text("status")?)?,
        size: row.opt_int("size")?.map(|s| s.max(0) as u64),
        sha256: row.opt_text("sha256")?,
        created_at: row.time("created_at")?,
        stored_at: row.opt_time("stored_at")?,
        expires_at: row.opt_time("expires_at")?,
    })
}

async fn begin_artifact(store: &impl SqlStore, lease: Lease, artifact: &NewArtifact) -> Result<()> {
    let mut tx = store.write("starting to record an artifact").await?;
    let written = tx
        .db()
        .execute(
            sql(
                "recording an artifact upload",
                "INSERT INTO artifacts (job_id, name, tenant_id, region, object_key, content_type,
                                        status, created_at)
                 SELECT j.id, $3, j.tenant_id, $4, $5, $6, 'uploading', $8
                 FROM jobs j
                 WHERE j.id = $1 AND j.attempt = $2 AND j.state = 'running' AND j.tenant_id = $7
                 ON CONFLICT (job_id, name) DO UPDATE
                    SET region = excluded.region, object_key = excluded.object_key,
                        content_type = excluded.content_type, status = 'uploading',
                        size = NULL, sha256 = NULL, stored_at = NULL, expires_at = NULL,
                        created_at = excluded.created_at
                    WHERE artifacts.status <> 'deleting'",
            )
            .bind(lease.job_id)
            .bind(lease.attempt)
            .bind(&artifact.name)
            .bind(&artifact.region)
            .bind(&artifact.object_key)
            .bind(&artifact.content_type)
            .bind(&artifact.tenant_id)
            .bind(Utc::now()),
        )
        .await?;
    if written == 0 {
        // The lease is gone, or the sweeper holds the row.
        let deleting = tx
            .db()
            .fetch_optional(
                sql(
                    "checking an artifact being swept",
                    "SELECT a.status FROM artifacts a JOIN jobs j ON j.id = a.job_id
                     WHERE a.job_id = $1 AND a.name = $2 AND a.status = 'deleting'
                       AND j.attempt = $3 AND j.state = 'running'",
                )
                .bind(lease.job_id)
                .bind(&artifact.name)
                .bind(lease.attempt),
            )
            .await?;
        return Err(match deleting {
            Some(_) => Error::Conflict(format!(
                "the previous {:?} artifact of job {} is being removed; try again",
                artifact.name, lease.job_id
            )),
            None => lease_lost(lease),
        });
    }
    tx.commit("committing an artifact upload").await
}

async fn store_artifact(
    store: &impl SqlStore,
    lease: Lease,
    name: &str,
    size: u64,
    sha256: &str,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    let mut tx = store.write("starting to record a stored artifact").await?;
    let written = tx
        .db()
        .execute(
            sql(
                "recording a stored artifact",
                "UPDATE artifacts SET status = 'stored', size = $4, sha256 = $5, stored_at = $6,
                        expires_at = $7
                 WHERE job_id = $1 AND name = $3
                   AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = $1 AND j.attempt = $2
                               AND j.state = 'running')",
            )
            .bind(lease.job_id)
            .bind(lease.attempt)
            .bind(name)
            .bind(size)
            .bind(sha256)
            .bind(Utc::now())
            .bind(expires_at),
        )
        .await?;
    if written == 0 {
        return Err(lease_lost(lease));
    }
    tx.commit("committing a stored artifact").await
}

async fn job_artifacts(
    store: &impl SqlStore,
    tenant_id: &str,
    job_id: JobId,
) -> Result<Vec<ArtifactRecord>> {
    let mut conn = store.read("reading a job's artifacts").await?;
    conn.db()
        .fetch_all(
            sql(
                "reading a job's artifacts",
                "SELECT * FROM artifacts WHERE job_id = $1 AND tenant_id = $2 ORDER BY name",
            )
            .bind(job_id)
            .bind(tenant_id),
        )
        .await?
        .iter()
        .map(record_from_row)
        .collect()
}

async fn artifacts_to_sweep(
    store: &impl SqlStore,
    now: DateTime<Utc>,
    after: Option<&SweepCursor>,
    limit: u32,
) -> Result<Vec<SweepCandidate>> {
    let mut conn = store.read("finding artifacts to sweep").await?;
    conn.db()
        .fetch_all(
            sql(
                "finding artifacts to sweep",
                "SELECT a.*, CASE WHEN a.status = 'deleting' THEN 'unfinished'
                                  WHEN j.id IS NULL THEN 'job_gone'
                                  WHEN a.status = 'stored' THEN 'expired'
                                  ELSE 'abandoned' END AS reason
                 FROM artifacts a LEFT JOIN jobs j ON j.id = a.job_id
                 WHERE (j.id IS NULL
                        OR (a.status = 'stored' AND a.expires_at <= $1)
                        OR (a.status = 'uploading' AND j.state IN ('succeeded', 'failed', 'cancelled'))
                        OR a.status = 'deleting')
                   AND ($2 IS NULL OR (a.created_at, a.job_id, a.name) > ($2, $3, $4))
                 ORDER BY a.created_at, a.job_id, a.name
                 LIMIT $5",
            )
            .bind(now)
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1))
            .bind(after.map(|a| a.2.as_str()))
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(|row| {
            Ok(SweepCandidate {
                record: record_from_row(row)?,
                reason: sweep_reason(&row.text("reason")?),
            })
        })
        .collect()
}

async fn claim_for_sweep(store: &impl SqlStore, seen: &ArtifactRecord) -> Result<bool> {
    // Unchanged since read: `created_at` is renewed by every
    // `begin_artifact`, so a retried job's new upload is never claimed.
    let mut tx = store.write("starting to claim an artifact").await?;
    let claimed = tx
        .db()
        .execute(
            sql(
                "claiming an artifact to sweep",
                "UPDATE artifacts SET status = 'deleting'
                 WHERE job_id = $1 AND name = $2 AND status = $3 AND created_at = $4",
            )
            .bind(seen.job_id)
            .bind(&seen.name)
            .bind(seen.status.as_str())
            .bind(seen.created_at),
        )
        .await?;
    tx.commit("committing an artifact claim").await?;
    Ok(claimed == 1)
}

async fn forget_artifact(store: &impl SqlStore, job_id: JobId, name: &str) -> Result<()> {
    let mut tx = store.write("starting to forget an artifact").await?;
    tx.db()
        .execute(
            sql(
                "forgetting an artifact",
                "DELETE FROM artifacts WHERE job_id = $1 AND name = $2 AND status = 'deleting'",
            )
            .bind(job_id)
            .bind(name),
        )
        .await?;
    tx.commit("committing a forgotten artifact").await
}

/// Records the inputs of the jobs an enqueue created ([`crate::job::JobInput`]),
/// inside the enqueue's own transaction.
pub(crate) async fn insert_job_inputs(
    mut db: Db<'_>,
    jobs: &[NewJob],
    answers: &[Enqueued],
) -> Result<()> {
    for (job, answer) in jobs.iter().zip(answers) {
        if !answer.created {
            continue;
        }
        for input in &job.inputs {
            db.execute(
                sql(
                    "recording a job's input",
                    "INSERT INTO artifacts (job_id, name, tenant_id, region, object_key,
                                            content_type, status, size, sha256, created_at,
                                            stored_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'stored', $7, $8, $9, $9, $10)",
                )
                .bind(job.id)
                .bind(&input.name)
                .bind(&job.tenant_id)
                .bind(&input.region)
                .bind(&input.object_key)
                .bind(&input.content_type)
                .bind(input.size)
                .bind(&input.sha256)
                .bind(input.stored_at)
                .bind(input.expires_at),
            )
            .await?;
        }
    }
    Ok(())
}

/// `ArtifactRecords` for a backend, through the functions above.
macro_rules! artifact_records_for {
    ($store:ty) => {
        #[async_trait]
        impl ArtifactRecords for $store {
            async fn begin_artifact(&self, lease: Lease, artifact: &NewArtifact) -> Result<()> {
                begin_artifact(self, lease, artifact).await
            }

            async fn store_artifact(
                &self,
                lease: Lease,
                name: &str,
                size: u64,
                sha256: &str,
                expires_at: DateTime<Utc>,
            ) -> Result<()> {
                store_artifact(self, lease, name, size, sha256, expires_at).await
            }

            async fn job_artifacts(
                &self,
                tenant_id: &str,
                job_id: JobId,
            ) -> Result<Vec<ArtifactRecord>> {
                job_artifacts(self, tenant_id, job_id).await
            }

            async fn artifacts_to_sweep(
                &self,
                now: DateTime<Utc>,
                after: Option<&SweepCursor>,
                limit: u32,
            ) -> Result<Vec<SweepCandidate>> {
                artifacts_to_sweep(self, now, after, limit).await
            }

            async fn claim_for_sweep(
                &self,
                seen: &ArtifactRecord,
                _now: DateTime<Utc>,
            ) -> Result<bool> {
                claim_for_sweep(self, seen).await
            }

            async fn forget_artifact(&self, job_id: JobId, name: &str) -> Result<()> {
                forget_artifact(self, job_id, name).await
            }
        }
    };
}

artifact_records_for!(PgStore);
artifact_records_for!(SqliteStore);
