//! The schedules' fire transaction on PostgreSQL (their CRUD is shared, in
//! `store/schedule.rs`). A tick locks the due rows with
//! `FOR UPDATE SKIP LOCKED` (replicas take different schedules instead of
//! waiting), and writes the fires, the jobs and the moved schedules in one
//! transaction, one statement each.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::audit::insert_changes as insert_changes_pg;
use crate::audit::{Actor, Change};
use crate::error::{DbContext, Error, Result};
use crate::schedule::{
    plan, FireReport, JobMaker, PlannedFire, QueuedQuota, QuotaSkip, Schedule, SKIP_QUOTA_EXCEEDED,
};
use crate::store::schedule as shared;
use crate::store::sql::Row as SharedRow;
use crate::store::PgStore;
use crate::usage::Period;

/// The fire transaction and its upkeep on PostgreSQL (the rest of
/// `ScheduleStore` is `store/schedule.rs`).
impl PgStore {
    pub(crate) async fn dialect_fire_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        misfire_threshold: Duration,
        jobs: &dyn JobMaker,
    ) -> Result<FireReport> {
        let mut tx = self.pool().begin().await.db("starting a scheduler tick")?;
        let rows = sqlx::query(
            "SELECT s.*, coalesce(t.status = 'suspended', false) AS tenant_suspended,
                    t.max_queued AS tenant_max_queued
             FROM schedules s LEFT JOIN tenants t ON t.id = s.tenant_id
             WHERE NOT s.paused AND s.next_run_at IS NOT NULL AND s.next_run_at <= $1
             ORDER BY s.next_run_at LIMIT $2
             FOR UPDATE OF s SKIP LOCKED",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .db("reading due schedules")?;
        if rows.is_empty() {
            return Ok(FireReport::default());
        }
        let mut report = FireReport {
            schedules: rows.len(),
            ..FireReport::default()
        };
        let mut due = Vec::with_capacity(rows.len());
        let mut max_queued: HashMap<Uuid, i64> = HashMap::new();
        for row in rows.into_iter().map(SharedRow::Pg) {
            let schedule = shared::schedule_from_row(&row)?;
            let uuid = row.uuid("id")?;
            let suspended = row.bool("tenant_suspended")?;
            let limit = row.opt_int("tenant_max_queued")?;
            if let Some(limit) = limit {
                max_queued.insert(uuid, limit);
            }
            due.push((schedule, uuid, suspended));
        }
        // Overlap `skip`: is the previous run still queued or running?
        let previous: Vec<Uuid> = due
            .iter()
            .filter(|(s, _, _)| s.overlap_policy == crate::schedule::OverlapPolicy::Skip)
            .filter_map(|(s, _, _)| s.last_job_id.map(|id| id.as_uuid()))
            .collect();
        let unfinished: std::collections::HashSet<Uuid> = if previous.is_empty() {
            Default::default()
        } else {
            sqlx::query_scalar(
                "SELECT id FROM jobs WHERE id = ANY($1) AND state IN ('queued', 'running')",
            )
            .bind(&previous)
            .fetch_all(&mut *tx)
            .await
            .db("checking previous runs")?
            .into_iter()
            .collect()
        };
        let mut planned: Vec<(PlannedFire, Option<crate::job::NewJob>)> =
            Vec::with_capacity(due.len());
        for (schedule, uuid, suspended) in &due {
            let due = schedule
                .next_fire_at
                .ok_or_else(|| Error::corrupt("schedule", "due without a fire time"))?;
            let mut fire = plan(schedule, *uuid, due, now, misfire_threshold);
            report.skipped += fire.skipped;
            report.failed += u64::from(fire.failed);
            let mut job = None;
            if let Some(fire_time) = fire.fire {
                // A suspended tenant starts no work; its fire times pass by.
                let busy = *suspended
                    || schedule.overlap_policy == crate::schedule::OverlapPolicy::Skip
                        && schedule
                            .last_job_id
                            .is_some_and(|id| unfinished.contains(&id.as_uuid()));
                if busy {
                    report.skipped += 1;
                    fire.fire = None;
                } else {
                    match jobs.job_for(schedule, fire_time) {
                        Ok(new_job) => job = Some(new_job),
                        Err(error) => {
                            tracing::warn!(schedule_id = %schedule.id, %error, "a scheduled fire could not build its job");
                            report.failed += 1;
                            fire.fire = None;
                        }
                    }
                }
            }
            planned.push((fire, job));
        }
        // maxQueued, as `POST /v1/jobs` applies it: under the tenants' quota
        // locks, in fire order; a fire over it creates no job.
        let capped = planned
            .iter()
            .filter(|(f, job)| job.is_some() && max_queued.contains_key(&f.schedule_id))
            .filter_map(|(_, job)| job.as_ref().map(|j| j.tenant_id.as_str()))
            .collect();
        let mut quota = QueuedQuota::default();
        for (tenant, queued) in crate::store::pg_lock_queued_counts(&mut tx, capped).await? {
            quota.set_count(&tenant, queued);
        }
        let mut quota_skips: HashMap<Uuid, QuotaSkip> = HashMap::new();
        for (fire, job) in planned.iter_mut() {
            let (Some(fire_time), Some(new_job), Some(limit)) =
                (fire.fire, job.as_ref(), max_queued.get(&fire.schedule_id))
            else {
                continue;
            };
            if let Err(queued) = quota.admit(&new_job.tenant_id, *limit) {
                quota_skips.insert(
                    fire.schedule_id,
                    QuotaSkip {
                        fire_time,
                        limit: *limit,
                        queued,
                    },
                );
                report.skipped += 1;
                report.over_quota += 1;
                fire.fire = None;
                *job = None;
            }
        }
        // The fires first: a fire time already in schedule_fires (a second
        // scheduler got there first) is not inserted, nor is its job.
        let fires: Vec<&(PlannedFire, Option<crate::job::NewJob>)> =
            planned.iter().filter(|(_, job)| job.is_some()).collect();
        let accepted: std::collections::HashSet<Uuid> = if fires.is_empty() {
            Default::default()
        } else {
            let ids: Vec<Uuid> = fires.iter().map(|(f, _)| f.schedule_id).collect();
            let times: Vec<DateTime<Utc>> = fires.iter().filter_map(|(f, _)| f.fire).collect();
            let job_ids: Vec<Uuid> = fires
                .iter()
                .filter_map(|(_, job)| job.as_ref().map(|j| j.id.as_uuid()))
                .collect();
            sqlx::query_scalar(
                "INSERT INTO schedule_fires (schedule_id, fire_time, job_id)
                 SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[])
                 ON CONFLICT DO NOTHING RETURNING schedule_id",
            )
            .bind(&ids)
            .bind(&times)
            .bind(&job_ids)
            .fetch_all(&mut *tx)
            .await
            .db("recording fires")?
            .into_iter()
            .collect()
        };
        let new_jobs: Vec<crate::job::NewJob> = planned
            .iter()
            .filter(|(f, _)| accepted.contains(&f.schedule_id))
            .filter_map(|(_, job)| job.clone())
            .collect();
        let answers = PgStore::enqueue_in(&mut tx, &new_jobs).await?;
        // Scheduled jobs are billed as the API's are.
        crate::store::pg_meter_created(&mut tx, &new_jobs, &answers, Period::of(now)).await?;
        let by_schedule: HashMap<Uuid, &Schedule> = due.iter().map(|(s, u, _)| (*u, s)).collect();
        let created: Vec<(&str, Change)> = new_jobs
            .iter()
            .map(|job| {
                let details = json!({"kind": job.kind, "queue": job.queue});
                (
                    job.tenant_id.as_str(),
                    Change::new("job.create", "job", job.id.to_string(), details),
                )
            })
            .collect();
        insert_changes_pg(&mut tx, &created, &Actor::system()).await?;
        let skipped: Vec<(&str, Change)> = quota_skips
            .iter()
            .filter_map(|(uuid, skip)| {
                let schedule = by_schedule.get(uuid)?;
                Some((schedule.job_tenant(), skip.change(schedule)))
            })
            .collect();
        insert_changes_pg(&mut tx, &skipped, &Actor::system()).await?;
        // Move every schedule on, fenced by the fire time it was read with.
        let ids: Vec<Uuid> = planned.iter().map(|(f, _)| f.schedule_id).collect();
        let old: Vec<DateTime<Utc>> = planned.iter().map(|(f, _)| f.old_next_fire_at).collect();
        let next_fire: Vec<Option<DateTime<Utc>>> =
            planned.iter().map(|(f, _)| f.next_fire_at).collect();
        let next_run: Vec<Option<DateTime<Utc>>> =
            planned.iter().map(|(f, _)| f.next_run_at).collect();
        let fired_at: Vec<Option<DateTime<Utc>>> = planned
            .iter()
            .map(|(f, _)| f.fire.filter(|_| accepted.contains(&f.schedule_id)))
            .collect();
        let fired_job: Vec<Option<Uuid>> = planned
            .iter()
            .map(|(f, job)| {
                job.as_ref()
                    .filter(|_| accepted.contains(&f.schedule_id))
                    .map(|j| j.id.as_uuid())
            })
            .collect();
        let skipped_at: Vec<Option<DateTime<Utc>>> = planned
            .iter()
            .map(|(f, _)| quota_skips.get(&f.schedule_id).map(|skip| skip.fire_time))
            .collect();
        let moved = sqlx::query(
            "UPDATE schedules s SET next_fire_at = u.next_fire, next_run_at = u.next_run,
                 last_fire_at = coalesce(u.fired_at, s.last_fire_at),
                 last_job_id = coalesce(u.job_id, s.last_job_id),
                 last_skipped_at = coalesce(u.skipped_at, s.last_skipped_at),
                 last_skip_reason = CASE WHEN u.skipped_at IS NULL THEN s.last_skip_reason
                                         ELSE $8 END
             FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[],
                         $5::timestamptz[], $6::uuid[], $7::timestamptz[])
                  AS u(id, old_fire, next_fire, next_run, fired_at, job_id, skipped_at)
             WHERE s.id = u.id AND s.next_fire_at = u.old_fire",
        )
        .bind(&ids)
        .bind(&old)
        .bind(&next_fire)
        .bind(&next_run)
        .bind(&fired_at)
        .bind(&fired_job)
        .bind(&skipped_at)
        .bind(SKIP_QUOTA_EXCEEDED)
        .execute(&mut *tx)
        .await
        .db("moving schedules on")?
        .rows_affected();
        if moved != ids.len() as u64 {
            // Another writer moved one first: undo the whole tick.
            return Err(Error::Conflict(
                "a schedule moved during the tick; retrying".into(),
            ));
        }
        tx.commit().await.db("committing a scheduler tick")?;
        for (fire, job) in &planned {
            if let (Some(at), Some(job)) = (fire.fire, job) {
                if accepted.contains(&fire.schedule_id) {
                    let id = by_schedule
                        .get(&fire.schedule_id)
                        .map(|s| s.id.clone())
                        .unwrap_or_default();
                    report.fired.push((id, at, job.id));
                }
            }
        }
        Ok(report)
    }

    pub(crate) async fn dialect_prune_fires(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM schedule_fires WHERE ctid = ANY (ARRAY(
                 SELECT ctid FROM schedule_fires WHERE fire_time < $1 LIMIT $2))",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(self.pool())
        .await
        .db("pruning fire records")?
        .rows_affected())
    }

    pub(crate) async fn dialect_next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar(
            "SELECT min(next_run_at) FROM schedules WHERE NOT paused AND next_run_at IS NOT NULL",
        )
        .fetch_one(self.pool())
        .await
        .db("reading the next due schedule")
    }
}
