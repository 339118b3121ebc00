//! The schedules' fire transaction on SQLite (their CRUD is shared, in
//! `store/schedule.rs`). Every write holds the store's
//! write lock (`BEGIN IMMEDIATE`), so a tick reads the due schedules and
//! moves them on with no other writer between.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::audit::insert_change as record;
use crate::audit::{Actor, Change};
use crate::error::{DbContext, Error, Result};
use crate::schedule::{
    plan, FireReport, JobMaker, OverlapPolicy, QueuedQuota, QuotaSkip, SKIP_QUOTA_EXCEEDED,
};
use crate::store::schedule as shared;
use crate::store::sql::Row as SharedRow;
use crate::store::SqliteStore;
use crate::usage::Period;

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn time_of(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        Error::corrupt(
            "schedule time",
            format!("{micros} microseconds is out of range"),
        )
    })
}

/// The fire transaction and its upkeep on SQLite (the rest of
/// `ScheduleStore` is `store/schedule.rs`).
impl SqliteStore {
    pub(crate) async fn dialect_fire_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        misfire_threshold: Duration,
        jobs: &dyn JobMaker,
    ) -> Result<FireReport> {
        let mut w = self.begin_write("starting a scheduler tick").await?;
        let rows = sqlx::query(
            "SELECT s.*, coalesce(t.status = 'suspended', 0) AS tenant_suspended,
                    t.max_queued AS tenant_max_queued
             FROM schedules s LEFT JOIN tenants t ON t.id = s.tenant_id
             WHERE s.paused = 0 AND s.next_run_at IS NOT NULL AND s.next_run_at <= ?1
             ORDER BY s.next_run_at LIMIT ?2",
        )
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(w.conn())
        .await
        .db("reading due schedules")?;
        let mut report = FireReport {
            schedules: rows.len(),
            ..FireReport::default()
        };
        if rows.is_empty() {
            w.rollback().await?;
            return Ok(report);
        }
        let at = micros(now);
        let mut new_jobs = Vec::new();
        // maxQueued, as `POST /v1/jobs` applies it (the write lock is held
        // from the count to the commit): a fire over it creates no job.
        let mut quota = QueuedQuota::default();
        let mut quota_skips = Vec::new();
        for row in rows.into_iter().map(SharedRow::Sqlite) {
            let schedule = shared::schedule_from_row(&row)?;
            let uuid = row.uuid("id")?;
            let suspended = row.bool("tenant_suspended")?;
            let max_queued = row.opt_int("tenant_max_queued")?;
            let mut skipped_over_quota = None;
            let due = schedule
                .next_fire_at
                .ok_or_else(|| Error::corrupt("schedule", "due without a fire time"))?;
            let mut fire = plan(&schedule, uuid, due, now, misfire_threshold);
            report.skipped += fire.skipped;
            report.failed += u64::from(fire.failed);
            let mut fired_job = None;
            if let Some(fire_time) = fire.fire {
                // A suspended tenant starts no work; its fire times pass by.
                let busy = suspended
                    || match (schedule.overlap_policy, schedule.last_job_id) {
                        (OverlapPolicy::Skip, Some(previous)) => {
                            let state: Option<String> =
                                sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?1")
                                    .bind(previous.as_uuid())
                                    .fetch_optional(w.conn())
                                    .await
                                    .db("checking a previous run")?;
                            matches!(state.as_deref(), Some("queued" | "running"))
                        }
                        _ => false,
                    };
                if busy {
                    report.skipped += 1;
                    fire.fire = None;
                } else {
                    let over_quota = match max_queued {
                        Some(limit) => {
                            let tenant = schedule.job_tenant();
                            if !quota.knows(tenant) {
                                let queued =
                                    crate::store::sqlite_queued_count(w.conn(), tenant).await?;
                                quota.set_count(tenant, queued);
                            }
                            quota.admit(tenant, limit).err().map(|queued| QuotaSkip {
                                fire_time,
                                limit,
                                queued,
                            })
                        }
                        None => None,
                    };
                    match jobs.job_for(&schedule, fire_time) {
                        Ok(_) if over_quota.is_some() => {
                            report.skipped += 1;
                            report.over_quota += 1;
                            fire.fire = None;
                            skipped_over_quota = over_quota;
                        }
                        Ok(job) => {
                            let inserted = sqlx::query(
                                "INSERT INTO schedule_fires (schedule_id, fire_time, job_id, fired_at)
                                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                            )
                            .bind(uuid)
                            .bind(micros(fire_time))
                            .bind(job.id.as_uuid())
                            .bind(at)
                            .execute(w.conn())
                            .await
                            .db("recording a fire")?
                            .rows_affected();
                            if inserted == 1 {
                                fired_job = Some(job.id);
                                report.fired.push((schedule.id.clone(), fire_time, job.id));
                                new_jobs.push(job);
                            } else {
                                fire.fire = None;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(schedule_id = %schedule.id, %error, "a scheduled fire could not build its job");
                            report.failed += 1;
                            fire.fire = None;
                        }
                    }
                }
            }
            let moved = sqlx::query(
                "UPDATE schedules SET next_fire_at = ?3, next_run_at = ?4,
                     last_fire_at = coalesce(?5, last_fire_at), last_job_id = coalesce(?6, last_job_id),
                     last_skipped_at = coalesce(?7, last_skipped_at),
                     last_skip_reason = CASE WHEN ?7 IS NULL THEN last_skip_reason ELSE ?8 END
                 WHERE id = ?1 AND next_fire_at = ?2",
            )
            .bind(uuid)
            .bind(micros(fire.old_next_fire_at))
            .bind(fire.next_fire_at.map(micros))
            .bind(fire.next_run_at.map(micros))
            .bind(fire.fire.map(micros))
            .bind(fired_job.map(|id| id.as_uuid()))
            .bind(skipped_over_quota.as_ref().map(|skip| micros(skip.fire_time)))
            .bind(SKIP_QUOTA_EXCEEDED)
            .execute(w.conn())
            .await
            .db("moving a schedule on")?
            .rows_affected();
            if moved != 1 {
                w.rollback().await?;
                return Err(Error::Conflict(
                    "a schedule moved during the tick; retrying".into(),
                ));
            }
            if let Some(skip) = skipped_over_quota {
                quota_skips.push((schedule.job_tenant().to_string(), skip.change(&schedule)));
            }
        }
        let answers = crate::store::sqlite_enqueue_in(w.conn(), &new_jobs, at).await?;
        // Scheduled jobs are billed as the API's are.
        crate::store::sqlite_meter_created(w.conn(), &new_jobs, &answers, Period::of(now)).await?;
        for job in &new_jobs {
            let details = json!({"kind": job.kind, "queue": job.queue});
            record(
                w.conn(),
                at,
                &job.tenant_id,
                &Actor::system(),
                &Change::new("job.create", "job", job.id.to_string(), details),
            )
            .await?;
        }
        for (tenant, change) in &quota_skips {
            record(w.conn(), at, tenant, &Actor::system(), change).await?;
        }
        w.commit("committing a scheduler tick").await?;
        let queues: HashSet<&str> = new_jobs.iter().map(|job| job.queue.as_str()).collect();
        self.wake_queues(queues);
        Ok(report)
    }

    pub(crate) async fn dialect_prune_fires(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64> {
        let mut w = self.begin_write("starting to prune fire records").await?;
        let pruned = sqlx::query(
            "DELETE FROM schedule_fires WHERE rowid IN (
                 SELECT rowid FROM schedule_fires WHERE fire_time < ?1 LIMIT ?2)",
        )
        .bind(micros(before))
        .bind(i64::from(limit))
        .execute(w.conn())
        .await
        .db("pruning fire records")?
        .rows_affected();
        w.commit("committing pruned fire records").await?;
        Ok(pruned)
    }

    pub(crate) async fn dialect_next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let micros: Option<i64> = sqlx::query_scalar(
            "SELECT min(next_run_at) FROM schedules WHERE paused = 0 AND next_run_at IS NOT NULL",
        )
        .fetch_one(self.pool())
        .await
        .db("reading the next due schedule")?;
        micros.map(time_of).transpose()
    }
}
