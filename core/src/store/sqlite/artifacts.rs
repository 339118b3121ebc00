//! Artifact records on SQLite: all of their SQL. Writes hold the store's
//! write lock; times are microseconds since the epoch.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::artifacts::records::{
    ArtifactRecord, ArtifactRecords, ArtifactStatus, NewArtifact, SweepCandidate, SweepCursor,
};
use crate::error::{DbContext, Error, Result};
use crate::job::Lease;
use crate::store::{lease_lost, sqlite_time, SqliteStore};
use crate::JobId;

fn time(micros: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    micros.map(sqlite_time).transpose()
}

fn record_from_row(row: &SqliteRow) -> Result<ArtifactRecord> {
    let read = "reading an artifact";
    let status: String = row.try_get("status").db(read)?;
    let size: Option<i64> = row.try_get("size").db(read)?;
    let created_at: i64 = row.try_get("created_at").db(read)?;
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
        created_at: time(Some(created_at))?.unwrap_or_default(),
        stored_at: time(row.try_get("stored_at").db(read)?)?,
        expires_at: time(row.try_get("expires_at").db(read)?)?,
    })
}

#[async_trait]
impl ArtifactRecords for SqliteStore {
    async fn begin_artifact(&self, lease: Lease, artifact: &NewArtifact) -> Result<()> {
        let mut tx = self.begin_write("starting to record an artifact").await?;
        let written = sqlx::query(
            "INSERT INTO artifacts (job_id, name, tenant_id, region, object_key, content_type,
                                    status, created_at)
             SELECT j.id, ?3, j.tenant_id, ?4, ?5, ?6, 'uploading', ?8
             FROM jobs j WHERE j.id = ?1 AND j.attempt = ?2 AND j.state = 'running' AND j.tenant_id = ?7
             ON CONFLICT (job_id, name) DO UPDATE
                SET region = excluded.region, object_key = excluded.object_key,
                    content_type = excluded.content_type, status = 'uploading',
                    size = NULL, sha256 = NULL, stored_at = NULL, expires_at = NULL,
                    created_at = excluded.created_at
                WHERE artifacts.status <> 'deleting'",
        )
        .bind(lease.job_id.as_uuid())
        .bind(lease.attempt)
        .bind(&artifact.name)
        .bind(&artifact.region)
        .bind(&artifact.object_key)
        .bind(&artifact.content_type)
        .bind(&artifact.tenant_id)
        .bind(Utc::now().timestamp_micros())
        .execute(tx.conn())
        .await
        .db("recording an artifact upload")?;
        if written.rows_affected() == 0 {
            // The lease is gone, or the sweeper holds the row.
            let deleting: Option<String> = sqlx::query_scalar(
                "SELECT a.status FROM artifacts a JOIN jobs j ON j.id = a.job_id
                 WHERE a.job_id = ?1 AND a.name = ?2 AND a.status = 'deleting'
                   AND j.attempt = ?3 AND j.state = 'running'",
            )
            .bind(lease.job_id.as_uuid())
            .bind(&artifact.name)
            .bind(lease.attempt)
            .fetch_optional(tx.conn())
            .await
            .db("checking an artifact being swept")?;
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
        &self,
        lease: Lease,
        name: &str,
        size: u64,
        sha256: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self
            .begin_write("starting to record a stored artifact")
            .await?;
        let written = sqlx::query(
            "UPDATE artifacts SET status = 'stored', size = ?4, sha256 = ?5, stored_at = ?6,
                    expires_at = ?7
             WHERE job_id = ?1 AND name = ?3
               AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = ?1 AND j.attempt = ?2
                           AND j.state = 'running')",
        )
        .bind(lease.job_id.as_uuid())
        .bind(lease.attempt)
        .bind(name)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(sha256)
        .bind(Utc::now().timestamp_micros())
        .bind(expires_at.timestamp_micros())
        .execute(tx.conn())
        .await
        .db("recording a stored artifact")?;
        if written.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        tx.commit("committing a stored artifact").await
    }

    async fn job_artifacts(&self, tenant_id: &str, job_id: JobId) -> Result<Vec<ArtifactRecord>> {
        sqlx::query("SELECT * FROM artifacts WHERE job_id = ?1 AND tenant_id = ?2 ORDER BY name")
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
        sqlx::query(
            "SELECT a.*, CASE WHEN a.status = 'deleting' THEN 'unfinished'
                              WHEN j.id IS NULL THEN 'job_gone'
                              WHEN a.status = 'stored' THEN 'expired'
                              ELSE 'abandoned' END AS reason
             FROM artifacts a LEFT JOIN jobs j ON j.id = a.job_id
             WHERE (j.id IS NULL
                    OR (a.status = 'stored' AND a.expires_at <= ?1)
                    OR (a.status = 'uploading' AND j.state IN ('succeeded', 'failed', 'cancelled'))
                    OR a.status = 'deleting')
               AND (?2 IS NULL OR (a.created_at, a.job_id, a.name) > (?2, ?3, ?4))
             ORDER BY a.created_at, a.job_id, a.name
             LIMIT ?5",
        )
        .bind(now.timestamp_micros())
        .bind(after.map(|a| a.0.timestamp_micros()))
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
        let mut tx = self.begin_write("starting to claim an artifact").await?;
        let claimed = sqlx::query(
            "UPDATE artifacts SET status = 'deleting'
             WHERE job_id = ?1 AND name = ?2 AND status = ?3 AND created_at = ?4",
        )
        .bind(seen.job_id.as_uuid())
        .bind(&seen.name)
        .bind(seen.status.as_str())
        .bind(seen.created_at.timestamp_micros())
        .execute(tx.conn())
        .await
        .db("claiming an artifact to sweep")?;
        tx.commit("committing an artifact claim").await?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn forget_artifact(&self, job_id: JobId, name: &str) -> Result<()> {
        let mut tx = self.begin_write("starting to forget an artifact").await?;
        sqlx::query(
            "DELETE FROM artifacts WHERE job_id = ?1 AND name = ?2 AND status = 'deleting'",
        )
        .bind(job_id.as_uuid())
        .bind(name)
        .execute(tx.conn())
        .await
        .db("forgetting an artifact")?;
        tx.commit("committing a forgotten artifact").await
    }
}

/// Records the inputs of the jobs an enqueue created ([`crate::job::JobInput`]),
/// inside the enqueue's write transaction.
pub(crate) async fn insert_job_inputs(
    conn: &mut sqlx::SqliteConnection,
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'stored', ?7, ?8, ?9, ?9, ?10)",
            )
            .bind(job.id.as_uuid())
            .bind(&input.name)
            .bind(&job.tenant_id)
            .bind(&input.region)
            .bind(&input.object_key)
            .bind(&input.content_type)
            .bind(i64::try_from(input.size).unwrap_or(i64::MAX))
            .bind(&input.sha256)
            .bind(input.stored_at.timestamp_micros())
            .bind(input.expires_at.timestamp_micros())
            .execute(&mut *conn)
            .await
            .db("recording a job's input")?;
        }
    }
    Ok(())
}
