//! Artifact records on PostgreSQL: all of their SQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::artifacts::records::{
    ArtifactRecord, ArtifactRecords, ArtifactStatus, NewArtifact, SweepCandidate, SweepCursor,
};
use crate::error::{DbContext, Error, Result};
use crate::job::Lease;
use crate::store::{lease_lost, PgStore};
use crate::JobId;

fn record_from_row(row: &PgRow) -> Result<ArtifactRecord> {
    let read = "reading an artifact";
    let status: String = row.try_get("status").db(read)?;
    let size: Option<i64> = row.try_get("size").db(read)?;
    Ok(ArtifactRecord {
        job_id: JobId::from_uuid(row.try_get::<Uuid, _>("job_id").db(read)?),
        name: row.try_get("name").db(read)?,
        tenant_id: row.try_get("tenant_id").db(read)?,
        region: row.try_get("region").db(read)?,
        object_key: row.try_get("object_key").db(read)?,
        content_type: row.try_get("content_type").db(read)?,
        status: ArtifactStatus::parse(&status)?,
        size: size.map(|s| s.max(0) as u64),
        sha256: row.try_get("sha256").db(read)?,
        created_at: row.try_get("created_at").db(read)?,
        stored_at: row.try_get("stored_at").db(read)?,
        expires_at: row.try_get("expires_at").db(read)?,
    })
}

#[async_trait]
impl ArtifactRecords for PgStore {
    async fn begin_artifact(&self, lease: Lease, artifact: &NewArtifact) -> Result<()> {
        let written = sqlx::query(
            "INSERT INTO artifacts (job_id, name, tenant_id, region, object_key, content_type, status)
             SELECT j.id, $3, j.tenant_id, $4, $5, $6, 'uploading'
             FROM jobs j WHERE j.id = $1 AND j.attempt = $2 AND j.state = 'running' AND j.tenant_id = $7
             ON CONFLICT (job_id, name) DO UPDATE
                SET region = excluded.region, object_key = excluded.object_key,
                    content_type = excluded.content_type, status = 'uploading',
                    size = NULL, sha256 = NULL, stored_at = NULL, expires_at = NULL,
                    created_at = excluded.created_at
                WHERE artifacts.status <> 'deleting'
             RETURNING job_id",
        )
        .bind(lease.job_id.as_uuid())
        .bind(lease.attempt)
        .bind(&artifact.name)
        .bind(&artifact.region)
        .bind(&artifact.object_key)
        .bind(&artifact.content_type)
        .bind(&artifact.tenant_id)
        .fetch_optional(self.pool())
        .await
        .db("recording an artifact upload")?;
        if written.is_some() {
            return Ok(());
        }
        // Nothing written: the lease is gone, or the sweeper holds the row.
        let deleting: Option<String> = sqlx::query_scalar(
            "SELECT a.status FROM artifacts a JOIN jobs j ON j.id = a.job_id
             WHERE a.job_id = $1 AND a.name = $2 AND a.status = 'deleting'
               AND j.attempt = $3 AND j.state = 'running'",
        )
        .bind(lease.job_id.as_uuid())
        .bind(&artifact.name)
        .bind(lease.attempt)
        .fetch_optional(self.pool())
        .await
        .db("checking an artifact being swept")?;
        match deleting {
            Some(_) => Err(Error::Conflict(format!(
                "the previous {:?} artifact of job {} is being removed; try again",
                artifact.name, lease.job_id
            ))),
            None => Err(lease_lost(lease)),
        }
    }

    async fn store_artifact(
        &self,
        lease: Lease,
        name: &str,
        size: u64,
        sha256: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE artifacts a SET status = 'stored', size = $4, sha256 = $5, stored_at = now(),
                    expires_at = $6
             FROM jobs j
             WHERE a.job_id = $1 AND a.name = $3
               AND j.id = a.job_id AND j.attempt = $2 AND j.state = 'running'
             RETURNING a.job_id",
        )
        .bind(lease.job_id.as_uuid())
        .bind(lease.attempt)
        .bind(name)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(sha256)
        .bind(expires_at)
        .fetch_optional(self.pool())
        .await
        .db("recording a stored artifact")?
        .map(|_| ())
        .ok_or_else(|| lease_lost(lease))
    }

    async fn job_artifacts(&self, tenant_id: &str, job_id: JobId) -> Result<Vec<ArtifactRecord>> {
        sqlx::query("SELECT * FROM artifacts WHERE job_id = $1 AND tenant_id = $2 ORDER BY name")
            .bind(job_id.as_uuid())
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await
            .db("reading a job's artifacts")?
            .iter()
            .map(record_from_row)
            .collect()
    }

    async fn artifacts_to_sweep(
        &self,
        now: DateTime<Utc>,
        after: Option<&SweepCursor>,
        limit: u32,
    ) -> Result<Vec<SweepCandidate>> {
        sqlx::query(&format!(
            "SELECT a.*, {REASON} AS reason
             FROM artifacts a LEFT JOIN jobs j ON j.id = a.job_id
             WHERE ({DUE})
               AND ($2::timestamptz IS NULL OR (a.created_at, a.job_id, a.name) > ($2, $3, $4))
             ORDER BY a.created_at, a.job_id, a.name
             LIMIT $5"
        ))
        .bind(now)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1.as_uuid()))
        .bind(after.map(|a| a.2.as_str()))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .db("finding artifacts to sweep")?
        .iter()
        .map(|row| {
            let reason: String = row.try_get("reason").db("reading a sweep reason")?;
            Ok(SweepCandidate {
                record: record_from_row(row)?,
                reason: crate::artifacts::records::sweep_reason(&reason),
            })
        })
        .collect()
    }

    async fn claim_for_sweep(&self, seen: &ArtifactRecord, _now: DateTime<Utc>) -> Result<bool> {
        // Unchanged since read: `created_at` is renewed by every
        // `begin_artifact`, so a retried job's new upload is never claimed.
        let claimed = sqlx::query(
            "UPDATE artifacts SET status = 'deleting'
             WHERE job_id = $1 AND name = $2 AND status = $3 AND created_at = $4",
        )
        .bind(seen.job_id.as_uuid())
        .bind(&seen.name)
        .bind(seen.status.as_str())
        .bind(seen.created_at)
        .execute(self.pool())
        .await
        .db("claiming an artifact to sweep")?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn forget_artifact(&self, job_id: JobId, name: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM artifacts WHERE job_id = $1 AND name = $2 AND status = 'deleting'",
        )
        .bind(job_id.as_uuid())
        .bind(name)
        .execute(self.pool())
        .await
        .db("forgetting an artifact")?;
        Ok(())
    }
}

/// Why a row is due (`$1` = now), over `artifacts a LEFT JOIN jobs j`.
const DUE: &str = "j.id IS NULL
    OR (a.status = 'stored' AND a.expires_at <= $1)
    OR (a.status = 'uploading' AND j.state IN ('succeeded', 'failed', 'cancelled'))
    OR a.status = 'deleting'";
const REASON: &str = "CASE WHEN a.status = 'deleting' THEN 'unfinished'
    WHEN j.id IS NULL THEN 'job_gone'
    WHEN a.status = 'stored' THEN 'expired'
    ELSE 'abandoned' END";

/// Records the inputs of the jobs an enqueue created ([`crate::job::JobInput`]),
/// on the enqueue's own connection.
pub(crate) async fn insert_job_inputs(
    conn: &mut sqlx::PgConnection,
    jobs: &[crate::job::NewJob],
    answers: &[crate::job::Enqueued],
) -> Result<()> {
    for (job, answer) in jobs.iter().zip(answers) {
        if !answer.created {
            continue;
        }
        for input in &job.inputs {
            sqlx::query(
                "INSERT INTO artifacts (job_id, name, tenant_id, region, object_key, content_type,
                                        status, size, sha256, created_at, stored_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'stored', $7, $8, $9, $9, $10)",
            )
            .bind(job.id.as_uuid())
            .bind(&input.name)
            .bind(&job.tenant_id)
            .bind(&input.region)
            .bind(&input.object_key)
            .bind(&input.content_type)
            .bind(i64::try_from(input.size).unwrap_or(i64::MAX))
            .bind(&input.sha256)
            .bind(input.stored_at)
            .bind(input.expires_at)
            .execute(&mut *conn)
            .await
            .db("recording a job's input")?;
        }
    }
    Ok(())
}
