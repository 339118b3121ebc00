//! Schedules on PostgreSQL: all of their SQL. A tick locks the due rows with
//! `FOR UPDATE SKIP LOCKED` (replicas take different schedules instead of
//! waiting), and writes the fires, the jobs and the moved schedules in one
//! transaction, one statement each.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use super::audit::{insert_change as record, insert_changes as insert_changes_pg};
use crate::audit::{Actor, Change};
use crate::error::{DbContext, Error, Result};
use crate::ids::JobId;
use crate::schedule::{
    change, check_new_schedule, first_fire, parse_schedule_id, plan, same_fire, schedule_id_text,
    FireReport, JobMaker, NewSchedule, PlannedFire, QueuedQuota, QuotaSkip, Schedule,
    SchedulePatch, ScheduleStore, DEFAULT_MAX_SCHEDULES, SKIP_QUOTA_EXCEEDED,
};
use crate::store::PgStore;
use crate::usage::Period;

fn schedule_from_row(row: &PgRow) -> Result<Schedule> {
    let id: Uuid = row.try_get("id").db("reading a schedule id")?;
    let overlap: String = row.try_get("overlap_policy").db("reading a schedule")?;
    let misfire: String = row.try_get("misfire_policy").db("reading a schedule")?;
    let jitter: i32 = row.try_get("jitter_seconds").db("reading a schedule")?;
    let last_job: Option<Uuid> = row.try_get("last_job_id").db("reading a schedule")?;
    Ok(Schedule {
        id: schedule_id_text(id),
        tenant_id: row.try_get("tenant_id").db("reading a schedule")?,
        name: row.try_get("name").db("reading a schedule")?,
        cron: row.try_get("cron").db("reading a schedule")?,
        time_zone: row.try_get("time_zone").db("reading a schedule")?,
        kind: row.try_get("kind").db("reading a schedule")?,
        queue: row.try_get("queue").db("reading a schedule")?,
        params: row.try_get("params").db("reading a schedule")?,
        priority: row.try_get("priority").db("reading a schedule")?,
        jitter_seconds: u32::try_from(jitter).unwrap_or(0),
        overlap_policy: overlap
            .parse()
            .map_err(|_| Error::corrupt("schedule overlap policy", &overlap))?,
        misfire_policy: misfire
            .parse()
            .map_err(|_| Error::corrupt("schedule misfire policy", &misfire))?,
        paused: row.try_get("paused").db("reading a schedule")?,
        next_fire_at: row.try_get("next_fire_at").db("reading a schedule")?,
        last_fire_at: row.try_get("last_fire_at").db("reading a schedule")?,
        last_job_id: last_job.map(JobId::from_uuid),
        last_skipped_at: row.try_get("last_skipped_at").db("reading a schedule")?,
        last_skip_reason: row.try_get("last_skip_reason").db("reading a schedule")?,
        created_at: row.try_get("created_at").db("reading a schedule")?,
        updated_at: row.try_get("updated_at").db("reading a schedule")?,
    })
}

/// A tenant's schedule, read under its row lock until the transaction ends
/// (`id` is the text the caller named it by, for the not-found error).
async fn lock_schedule(
    conn: &mut sqlx::PgConnection,
    tenant_id: Option<&str>,
    uuid: Uuid,
    id: &str,
) -> Result<Schedule> {
    let row = sqlx::query(
        "SELECT * FROM schedules WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 FOR UPDATE",
    )
    .bind(uuid)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
    .db("reading a schedule")?
    .ok_or_else(|| Error::no_such("schedule", id))?;
    schedule_from_row(&row)
}

/// The audit log is per tenant; system schedules log under the system tenant.
async fn record_change(
    conn: &mut sqlx::PgConnection,
    schedule: &Schedule,
    actor: &Actor,
    change: &Change,
) -> Result<()> {
    record(conn, schedule.job_tenant(), actor, change).await
}

fn name_taken(error: sqlx::Error, name: &str) -> Error {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::Conflict(format!("a schedule named {name:?} already exists"))
        }
        _ => Error::Database {
            context: "writing a schedule",
            source: error,
        },
    }
}

#[async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(
        &self,
        tenant_id: Option<&str>,
        new: &NewSchedule,
        max_schedules: Option<i64>,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Schedule> {
        let spec = check_new_schedule(new)?;
        let id = Uuid::now_v7();
        let (next_fire_at, next_run_at) = first_fire(&spec, id, new.jitter_seconds, now);
        let mut tx = self
            .pool()
            .begin()
            .await
            .db("starting to create a schedule")?;
        if let Some(tenant_id) = tenant_id {
            // Serialize a tenant's creations so the limit holds under concurrency.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('schedules:' || $1))")
                .bind(tenant_id)
                .execute(&mut *tx)
                .await
                .db("taking a tenant's schedule lock")?;
            let limit = max_schedules.unwrap_or(DEFAULT_MAX_SCHEDULES);
            let held: i64 =
                sqlx::query_scalar("SELECT count(*) FROM schedules WHERE tenant_id = $1")
                    .bind(tenant_id)
                    .fetch_one(&mut *tx)
                    .await
                    .db("counting schedules")?;
            if held >= limit {
                return Err(Error::LimitReached {
                    what: "schedules",
                    limit,
                    current: held,
                });
            }
        }
        let row = sqlx::query(
            "INSERT INTO schedules (id, tenant_id, name, cron, time_zone, kind, queue, params,
                                    priority, jitter_seconds, overlap_policy, misfire_policy,
                                    paused, next_fire_at, next_run_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             RETURNING *",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(&new.name)
        .bind(spec.expression())
        .bind(spec.time_zone())
        .bind(&new.kind)
        .bind(&new.queue)
        .bind(&new.params)
        .bind(new.priority)
        .bind(i32::try_from(new.jitter_seconds).unwrap_or(i32::MAX))
        .bind(new.overlap_policy.as_str())
        .bind(new.misfire_policy.as_str())
        .bind(new.paused)
        .bind(next_fire_at)
        .bind(next_run_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|error| name_taken(error, &new.name))?;
        let schedule = schedule_from_row(&row)?;
        let details = json!({"name": schedule.name, "cron": schedule.cron, "timeZone": schedule.time_zone, "kind": schedule.kind});
        record_change(
            &mut tx,
            &schedule,
            actor,
            &change("schedule.create", &schedule, details),
        )
        .await?;
        tx.commit().await.db("committing a new schedule")?;
        Ok(schedule)
    }

    async fn get_schedule(&self, tenant_id: Option<&str>, id: &str) -> Result<Schedule> {
        let uuid = parse_schedule_id(id)?;
        let row = sqlx::query(
            "SELECT * FROM schedules WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2",
        )
        .bind(uuid)
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await
        .db("reading a schedule")?
        .ok_or_else(|| Error::no_such("schedule", id))?;
        schedule_from_row(&row)
    }

    async fn list_schedules(
        &self,
        tenant_id: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Schedule>> {
        let after =
            match after {
                Some(text) => Some(parse_schedule_id(text).map_err(|_| {
                    Error::validation("cursor", "is not a cursor this API returned")
                })?),
                None => None,
            };
        // `tenant_id = $1` (not IS NOT DISTINCT FROM) so that a tenant's page
        // reads schedules_tenant_idx; system schedules have their own query.
        let sql = match tenant_id {
            Some(_) => {
                "SELECT * FROM schedules WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
                 ORDER BY id LIMIT $3"
            }
            None => {
                "SELECT * FROM schedules
                 WHERE tenant_id IS NULL AND $1::text IS NULL AND ($2::uuid IS NULL OR id > $2)
                 ORDER BY id LIMIT $3"
            }
        };
        sqlx::query(sql)
            .bind(tenant_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .db("listing schedules")?
            .iter()
            .map(schedule_from_row)
            .collect()
    }

    async fn update_schedule(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        patch: &SchedulePatch,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Schedule> {
        let uuid = parse_schedule_id(id)?;
        let mut tx = self
            .pool()
            .begin()
            .await
            .db("starting to update a schedule")?;
        let old = lock_schedule(&mut tx, tenant_id, uuid, id).await?;
        if patch.is_empty() {
            return Ok(old);
        }
        let new = patch.apply_to(&old);
        let spec = check_new_schedule(&new)?;
        let (next_fire_at, next_run_at) = if patch.changes_timing() {
            first_fire(&spec, uuid, new.jitter_seconds, now)
        } else {
            same_fire(uuid, old.next_fire_at, new.jitter_seconds)
        };
        let row = sqlx::query(
            "UPDATE schedules SET name = $2, cron = $3, time_zone = $4, kind = $5, queue = $6,
                 params = $7, priority = $8, jitter_seconds = $9, overlap_policy = $10,
                 misfire_policy = $11, next_fire_at = $12, next_run_at = $13, updated_at = now()
             WHERE id = $1 RETURNING *",
        )
        .bind(uuid)
        .bind(&new.name)
        .bind(spec.expression())
        .bind(spec.time_zone())
        .bind(&new.kind)
        .bind(&new.queue)
        .bind(&new.params)
        .bind(new.priority)
        .bind(i32::try_from(new.jitter_seconds).unwrap_or(i32::MAX))
        .bind(new.overlap_policy.as_str())
        .bind(new.misfire_policy.as_str())
        .bind(next_fire_at)
        .bind(next_run_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|error| name_taken(error, &new.name))?;
        let schedule = schedule_from_row(&row)?;
        let details = serde_json::to_value(patch).unwrap_or(Value::Null);
        record_change(
            &mut tx,
            &schedule,
            actor,
            &change("schedule.update", &schedule, details),
        )
        .await?;
        tx.commit().await.db("committing a schedule update")?;
        Ok(schedule)
    }

    async fn set_schedule_paused(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        paused: bool,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Schedule> {
        let uuid = parse_schedule_id(id)?;
        let mut tx = self
            .pool()
            .begin()
            .await
            .db("starting to pause a schedule")?;
        // Read under the row lock: a concurrent PATCH cannot change the cron
        // between this read and the next fire time computed from it.
        let old = lock_schedule(&mut tx, tenant_id, uuid, id).await?;
        if old.paused == paused {
            // Already so: nothing changes, nothing is recorded.
            return Ok(old);
        }
        let spec = old.spec()?;
        let (next_fire_at, next_run_at) = if paused {
            same_fire(uuid, old.next_fire_at, old.jitter_seconds)
        } else {
            first_fire(&spec, uuid, old.jitter_seconds, now)
        };
        let row = sqlx::query(
            "UPDATE schedules SET paused = $3, next_fire_at = $4, next_run_at = $5, updated_at = now()
             WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 RETURNING *",
        )
        .bind(uuid)
        .bind(tenant_id)
        .bind(paused)
        .bind(next_fire_at)
        .bind(next_run_at)
        .fetch_optional(&mut *tx)
        .await
        .db("pausing a schedule")?
        .ok_or_else(|| Error::no_such("schedule", id))?;
        let schedule = schedule_from_row(&row)?;
        let action = if paused {
            "schedule.pause"
        } else {
            "schedule.resume"
        };
        record_change(
            &mut tx,
            &schedule,
            actor,
            &change(action, &schedule, json!({})),
        )
        .await?;
        tx.commit().await.db("committing a schedule pause")?;
        Ok(schedule)
    }

    async fn delete_schedule(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        actor: &Actor,
    ) -> Result<()> {
        let uuid = parse_schedule_id(id)?;
        let mut tx = self
            .pool()
            .begin()
            .await
            .db("starting to delete a schedule")?;
        let row = sqlx::query(
            "DELETE FROM schedules WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 RETURNING *",
        )
        .bind(uuid)
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .db("deleting a schedule")?
        .ok_or_else(|| Error::no_such("schedule", id))?;
        let schedule = schedule_from_row(&row)?;
        sqlx::query("DELETE FROM schedule_fires WHERE schedule_id = $1")
            .bind(uuid)
            .execute(&mut *tx)
            .await
            .db("deleting a schedule's fires")?;
        record_change(
            &mut tx,
            &schedule,
            actor,
            &change("schedule.delete", &schedule, json!({})),
        )
        .await?;
        tx.commit().await.db("committing a schedule deletion")?;
        Ok(())
    }

    async fn fire_due(
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
        for row in &rows {
            let schedule = schedule_from_row(row)?;
            let uuid: Uuid = row.try_get("id").db("reading a schedule id")?;
            let suspended: bool = row
                .try_get("tenant_suspended")
                .db("reading a tenant's status")?;
            let limit: Option<i64> = row
                .try_get("tenant_max_queued")
                .db("reading a tenant's quota")?;
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

    async fn prune_fires(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
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

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar(
            "SELECT min(next_run_at) FROM schedules WHERE NOT paused AND next_run_at IS NOT NULL",
        )
        .fetch_one(self.pool())
        .await
        .db("reading the next due schedule")
    }
}
