//! Schedules on SQLite: all of their SQL. Every write holds the store's
//! write lock (`BEGIN IMMEDIATE`), so a tick reads the due schedules and
//! moves them on with no other writer between.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::audit::insert_change as record;
use crate::audit::{Actor, Change};
use crate::error::{DbContext, Error, Result};
use crate::ids::JobId;
use crate::schedule::{
    change, check_new_schedule, first_fire, parse_schedule_id, plan, same_fire, schedule_id_text,
    FireReport, JobMaker, NewSchedule, OverlapPolicy, QueuedQuota, QuotaSkip, Schedule,
    SchedulePatch, ScheduleStore, DEFAULT_MAX_SCHEDULES, SKIP_QUOTA_EXCEEDED,
};
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

fn optional_time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>> {
    let micros: Option<i64> = row.try_get(column).db("reading a schedule time")?;
    micros.map(time_of).transpose()
}

fn schedule_from_row(row: &SqliteRow) -> Result<Schedule> {
    let id: Uuid = row.try_get("id").db("reading a schedule id")?;
    let overlap: String = row.try_get("overlap_policy").db("reading a schedule")?;
    let misfire: String = row.try_get("misfire_policy").db("reading a schedule")?;
    let jitter: i64 = row.try_get("jitter_seconds").db("reading a schedule")?;
    let params: String = row.try_get("params").db("reading a schedule")?;
    let last_job: Option<Uuid> = row.try_get("last_job_id").db("reading a schedule")?;
    let paused: i64 = row.try_get("paused").db("reading a schedule")?;
    Ok(Schedule {
        id: schedule_id_text(id),
        tenant_id: row.try_get("tenant_id").db("reading a schedule")?,
        name: row.try_get("name").db("reading a schedule")?,
        cron: row.try_get("cron").db("reading a schedule")?,
        time_zone: row.try_get("time_zone").db("reading a schedule")?,
        kind: row.try_get("kind").db("reading a schedule")?,
        queue: row.try_get("queue").db("reading a schedule")?,
        params: serde_json::from_str(&params)
            .map_err(|error| Error::corrupt("schedule params", error))?,
        priority: row.try_get("priority").db("reading a schedule")?,
        jitter_seconds: u32::try_from(jitter).unwrap_or(0),
        overlap_policy: overlap
            .parse()
            .map_err(|_| Error::corrupt("schedule overlap policy", &overlap))?,
        misfire_policy: misfire
            .parse()
            .map_err(|_| Error::corrupt("schedule misfire policy", &misfire))?,
        paused: paused != 0,
        next_fire_at: optional_time(row, "next_fire_at")?,
        last_fire_at: optional_time(row, "last_fire_at")?,
        last_job_id: last_job.map(JobId::from_uuid),
        last_skipped_at: optional_time(row, "last_skipped_at")?,
        last_skip_reason: row.try_get("last_skip_reason").db("reading a schedule")?,
        created_at: time_of(row.try_get("created_at").db("reading a schedule")?)?,
        updated_at: time_of(row.try_get("updated_at").db("reading a schedule")?)?,
    })
}

async fn record_change(
    conn: &mut SqliteConnection,
    schedule: &Schedule,
    actor: &Actor,
    change: &Change,
) -> Result<()> {
    record(
        conn,
        micros(Utc::now()),
        schedule.job_tenant(),
        actor,
        change,
    )
    .await
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

async fn find(
    conn: &mut SqliteConnection,
    tenant_id: Option<&str>,
    id: Uuid,
) -> Result<Option<Schedule>> {
    sqlx::query("SELECT * FROM schedules WHERE id = ?1 AND tenant_id IS ?2")
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(conn)
        .await
        .db("reading a schedule")?
        .as_ref()
        .map(schedule_from_row)
        .transpose()
}

#[async_trait]
impl ScheduleStore for SqliteStore {
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
        let mut w = self.begin_write("starting to create a schedule").await?;
        if let Some(tenant_id) = tenant_id {
            let limit = max_schedules.unwrap_or(DEFAULT_MAX_SCHEDULES);
            let held: i64 =
                sqlx::query_scalar("SELECT count(*) FROM schedules WHERE tenant_id = ?1")
                    .bind(tenant_id)
                    .fetch_one(w.conn())
                    .await
                    .db("counting schedules")?;
            if held >= limit {
                w.rollback().await?;
                return Err(Error::LimitReached {
                    what: "schedules",
                    limit,
                    current: held,
                });
            }
        }
        let written = micros(Utc::now());
        let row = sqlx::query(
            "INSERT INTO schedules (id, tenant_id, name, cron, time_zone, kind, queue, params,
                                    priority, jitter_seconds, overlap_policy, misfire_policy,
                                    paused, next_fire_at, next_run_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16)
             RETURNING *",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(&new.name)
        .bind(spec.expression())
        .bind(spec.time_zone())
        .bind(&new.kind)
        .bind(&new.queue)
        .bind(new.params.to_string())
        .bind(new.priority)
        .bind(i64::from(new.jitter_seconds))
        .bind(new.overlap_policy.as_str())
        .bind(new.misfire_policy.as_str())
        .bind(new.paused)
        .bind(next_fire_at.map(micros))
        .bind(next_run_at.map(micros))
        .bind(written)
        .fetch_one(w.conn())
        .await
        .map_err(|error| name_taken(error, &new.name))?;
        let schedule = schedule_from_row(&row)?;
        let details = json!({"name": schedule.name, "cron": schedule.cron, "timeZone": schedule.time_zone, "kind": schedule.kind});
        record_change(
            w.conn(),
            &schedule,
            actor,
            &change("schedule.create", &schedule, details),
        )
        .await?;
        w.commit("committing a new schedule").await?;
        Ok(schedule)
    }

    async fn get_schedule(&self, tenant_id: Option<&str>, id: &str) -> Result<Schedule> {
        let uuid = parse_schedule_id(id)?;
        let mut conn = self.pool().acquire().await.db("reading a schedule")?;
        find(&mut conn, tenant_id, uuid)
            .await?
            .ok_or_else(|| Error::no_such("schedule", id))
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
        sqlx::query(
            "SELECT * FROM schedules WHERE tenant_id IS ?1 AND (?2 IS NULL OR id > ?2)
             ORDER BY id LIMIT ?3",
        )
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
        let mut w = self.begin_write("starting to update a schedule").await?;
        let Some(old) = find(w.conn(), tenant_id, uuid).await? else {
            w.rollback().await?;
            return Err(Error::no_such("schedule", id));
        };
        if patch.is_empty() {
            w.rollback().await?;
            return Ok(old);
        }
        let new = patch.apply_to(&old);
        let spec = match check_new_schedule(&new) {
            Ok(spec) => spec,
            Err(error) => {
                w.rollback().await?;
                return Err(error);
            }
        };
        let (next_fire_at, next_run_at) = if patch.changes_timing() {
            first_fire(&spec, uuid, new.jitter_seconds, now)
        } else {
            same_fire(uuid, old.next_fire_at, new.jitter_seconds)
        };
        let row = sqlx::query(
            "UPDATE schedules SET name = ?2, cron = ?3, time_zone = ?4, kind = ?5, queue = ?6,
                 params = ?7, priority = ?8, jitter_seconds = ?9, overlap_policy = ?10,
                 misfire_policy = ?11, next_fire_at = ?12, next_run_at = ?13, updated_at = ?14
             WHERE id = ?1 RETURNING *",
        )
        .bind(uuid)
        .bind(&new.name)
        .bind(spec.expression())
        .bind(spec.time_zone())
        .bind(&new.kind)
        .bind(&new.queue)
        .bind(new.params.to_string())
        .bind(new.priority)
        .bind(i64::from(new.jitter_seconds))
        .bind(new.overlap_policy.as_str())
        .bind(new.misfire_policy.as_str())
        .bind(next_fire_at.map(micros))
        .bind(next_run_at.map(micros))
        .bind(micros(Utc::now()))
        .fetch_one(w.conn())
        .await
        .map_err(|error| name_taken(error, &new.name))?;
        let schedule = schedule_from_row(&row)?;
        let details = serde_json::to_value(patch).unwrap_or(Value::Null);
        record_change(
            w.conn(),
            &schedule,
            actor,
            &change("schedule.update", &schedule, details),
        )
        .await?;
        w.commit("committing a schedule update").await?;
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
        let mut w = self.begin_write("starting to pause a schedule").await?;
        let Some(old) = find(w.conn(), tenant_id, uuid).await? else {
            w.rollback().await?;
            return Err(Error::no_such("schedule", id));
        };
        if old.paused == paused {
            // Already so: nothing changes, nothing is recorded.
            w.rollback().await?;
            return Ok(old);
        }
        let (next_fire_at, next_run_at) = if paused {
            same_fire(uuid, old.next_fire_at, old.jitter_seconds)
        } else {
            first_fire(&old.spec()?, uuid, old.jitter_seconds, now)
        };
        let row = sqlx::query(
            "UPDATE schedules SET paused = ?2, next_fire_at = ?3, next_run_at = ?4, updated_at = ?5
             WHERE id = ?1 RETURNING *",
        )
        .bind(uuid)
        .bind(paused)
        .bind(next_fire_at.map(micros))
        .bind(next_run_at.map(micros))
        .bind(micros(Utc::now()))
        .fetch_one(w.conn())
        .await
        .db("pausing a schedule")?;
        let schedule = schedule_from_row(&row)?;
        let action = if paused {
            "schedule.pause"
        } else {
            "schedule.resume"
        };
        record_change(
            w.conn(),
            &schedule,
            actor,
            &change(action, &schedule, json!({})),
        )
        .await?;
        w.commit("committing a schedule pause").await?;
        Ok(schedule)
    }

    async fn delete_schedule(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        actor: &Actor,
    ) -> Result<()> {
        let uuid = parse_schedule_id(id)?;
        let mut w = self.begin_write("starting to delete a schedule").await?;
        let Some(schedule) = find(w.conn(), tenant_id, uuid).await? else {
            w.rollback().await?;
            return Err(Error::no_such("schedule", id));
        };
        for sql in [
            "DELETE FROM schedules WHERE id = ?1",
            "DELETE FROM schedule_fires WHERE schedule_id = ?1",
        ] {
            sqlx::query(sql)
                .bind(uuid)
                .execute(w.conn())
                .await
                .db("deleting a schedule")?;
        }
        record_change(
            w.conn(),
            &schedule,
            actor,
            &change("schedule.delete", &schedule, json!({})),
        )
        .await?;
        w.commit("committing a schedule deletion").await?;
        Ok(())
    }

    async fn fire_due(
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
        for row in &rows {
            let schedule = schedule_from_row(row)?;
            let uuid: Uuid = row.try_get("id").db("reading a schedule id")?;
            let suspended: bool = row
                .try_get("tenant_suspended")
                .db("reading a tenant's status")?;
            let max_queued: Option<i64> = row
                .try_get("tenant_max_queued")
                .db("reading a tenant's quota")?;
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

    async fn prune_fires(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
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

    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let micros: Option<i64> = sqlx::query_scalar(
            "SELECT min(next_run_at) FROM schedules WHERE paused = 0 AND next_run_at IS NOT NULL",
        )
        .fetch_one(self.pool())
        .await
        .db("reading the next due schedule")?;
        micros.map(time_of).transpose()
    }
}
