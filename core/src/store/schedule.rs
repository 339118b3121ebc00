//! Schedules' CRUD written once for both backends (see `sql.rs`); the fire
//! transaction stays per dialect (`postgres/schedule.rs`, `sqlite/schedule.rs`),
//! which read due schedules with [`schedule_from_row`] too. A schedule being
//! changed is read under its row lock (`FOR UPDATE` on PostgreSQL, the write
//! lock on SQLite), so a concurrent change cannot slip between the read and
//! the next fire time computed from it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::sql::{sql, Db, Row, SqlStore};
use super::{PgStore, SqliteStore};
use crate::audit::{Actor, Change};
use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::schedule::{
    change, check_new_schedule, first_fire, parse_schedule_id, same_fire, schedule_id_text,
    FireReport, JobMaker, NewSchedule, Schedule, SchedulePatch, ScheduleStore,
    DEFAULT_MAX_SCHEDULES,
};

pub(crate) fn schedule_from_row(row: &Row) -> Result<Schedule> {
    let overlap = row.text("overlap_policy")?;
    let misfire = row.text("misfire_policy")?;
    Ok(Schedule {
        id: schedule_id_text(row.uuid("id")?),
        tenant_id: row.opt_text("tenant_id")?,
        name: row.text("name")?,
        cron: row.text("cron")?,
        time_zone: row.text("time_zone")?,
        kind: row.text("kind")?,
        queue: row.opt_text("queue")?,
        params: row.json("params")?,
        priority: row.opt_int2("priority")?,
        jitter_seconds: u32::try_from(row.int4("jitter_seconds")?).unwrap_or(0),
        overlap_policy: overlap
            .parse()
            .map_err(|_| Error::corrupt("schedule overlap policy", &overlap))?,
        misfire_policy: misfire
            .parse()
            .map_err(|_| Error::corrupt("schedule misfire policy", &misfire))?,
        paused: row.bool("paused")?,
        next_fire_at: row.opt_time("next_fire_at")?,
        last_fire_at: row.opt_time("last_fire_at")?,
        last_job_id: row.opt_uuid("last_job_id")?.map(JobId::from_uuid),
        last_skipped_at: row.opt_time("last_skipped_at")?,
        last_skip_reason: row.opt_text("last_skip_reason")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

/// The audit log is per tenant; system schedules log under the system tenant.
async fn record_change(
    db: &mut Db<'_>,
    schedule: &Schedule,
    actor: &Actor,
    change: &Change,
) -> Result<()> {
    db.record_change(schedule.job_tenant(), actor, change, Utc::now())
        .await
}

/// A unique violation on a schedule's name is a conflict naming it.
fn name_taken(error: Error, name: &str) -> Error {
    match &error {
        Error::Database {
            source: sqlx::Error::Database(db),
            ..
        } if db.is_unique_violation() => {
            Error::Conflict(format!("a schedule named {name:?} already exists"))
        }
        _ => error,
    }
}

/// A schedule of the tenant (`None`: a system schedule), locked until the
/// transaction ends; `id` is the text the caller named it by.
async fn locked_schedule(
    db: &mut Db<'_>,
    tenant_id: Option<&str>,
    uuid: Uuid,
    id: &str,
) -> Result<Schedule> {
    let text = db.pick(
        "SELECT * FROM schedules WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2 FOR UPDATE",
        "SELECT * FROM schedules WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2",
    );
    let row = db
        .fetch_optional(sql("reading a schedule", text).bind(uuid).bind(tenant_id))
        .await?
        .ok_or_else(|| Error::no_such("schedule", id))?;
    schedule_from_row(&row)
}

async fn create_schedule(
    store: &impl SqlStore,
    tenant_id: Option<&str>,
    new: &NewSchedule,
    max_schedules: Option<i64>,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Schedule> {
    let spec = check_new_schedule(new)?;
    let id = Uuid::now_v7();
    let (next_fire_at, next_run_at) = first_fire(&spec, id, new.jitter_seconds, now);
    let mut tx = store.write("starting to create a schedule").await?;
    let mut db = tx.db();
    if let Some(tenant_id) = tenant_id {
        if let Db::Pg(_) = db {
            // Serialize a tenant's creations so the limit holds under
            // concurrency (SQLite's write lock already does).
            db.execute(
                sql(
                    "taking a tenant's schedule lock",
                    "SELECT pg_advisory_xact_lock(hashtext('schedules:' || $1))",
                )
                .bind(tenant_id),
            )
            .await?;
        }
        let limit = max_schedules.unwrap_or(DEFAULT_MAX_SCHEDULES);
        let held = db
            .fetch_optional(
                sql(
                    "counting schedules",
                    "SELECT count(*) AS n FROM schedules WHERE tenant_id = $1",
                )
                .bind(tenant_id),
            )
            .await?
            .map(|row| row.int("n"))
            .transpose()?
            .unwrap_or(0);
        if held >= limit {
            return Err(Error::LimitReached {
                what: "schedules",
                limit,
                current: held,
            });
        }
    }
    let written = Utc::now();
    let row = db
        .fetch_optional(
            sql(
                "writing a schedule",
                "INSERT INTO schedules (id, tenant_id, name, cron, time_zone, kind, queue, params,
                                        priority, jitter_seconds, overlap_policy, misfire_policy,
                                        paused, next_fire_at, next_run_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                         $16)
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
            .bind(written),
        )
        .await
        .map_err(|error| name_taken(error, &new.name))?
        .ok_or_else(|| Error::corrupt("creating a schedule", "no row returned"))?;
    let schedule = schedule_from_row(&row)?;
    let details = json!({"name": schedule.name, "cron": schedule.cron, "timeZone": schedule.time_zone, "kind": schedule.kind});
    let created = change("schedule.create", &schedule, details);
    record_change(&mut db, &schedule, actor, &created).await?;
    tx.commit("committing a new schedule").await?;
    Ok(schedule)
}

async fn get_schedule(
    store: &impl SqlStore,
    tenant_id: Option<&str>,
    id: &str,
) -> Result<Schedule> {
    let uuid = parse_schedule_id(id)?;
    let mut conn = store.read("reading a schedule").await?;
    let row = conn
        .db()
        .fetch_optional(
            sql(
                "reading a schedule",
                "SELECT * FROM schedules WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2",
            )
            .bind(uuid)
            .bind(tenant_id),
        )
        .await?
        .ok_or_else(|| Error::no_such("schedule", id))?;
    schedule_from_row(&row)
}

async fn list_schedules(
    store: &impl SqlStore,
    tenant_id: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Schedule>> {
    let after = match after {
        Some(text) => Some(
            parse_schedule_id(text)
                .map_err(|_| Error::validation("cursor", "is not a cursor this API returned"))?,
        ),
        None => None,
    };
    // `tenant_id = $1` (not IS NOT DISTINCT FROM) so that a tenant's page
    // reads schedules_tenant_idx; system schedules have their own query.
    let statement = match tenant_id {
        Some(tenant_id) => sql(
            "listing schedules",
            "SELECT * FROM schedules WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(tenant_id),
        None => sql(
            "listing schedules",
            "SELECT * FROM schedules WHERE tenant_id IS NULL AND $1 IS NULL
               AND ($2 IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(None::<&str>),
    };
    let mut conn = store.read("listing schedules").await?;
    conn.db()
        .fetch_all(statement.bind(after).bind(i64::from(limit)))
        .await?
        .iter()
        .map(schedule_from_row)
        .collect()
}

async fn update_schedule(
    store: &impl SqlStore,
    tenant_id: Option<&str>,
    id: &str,
    patch: &SchedulePatch,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Schedule> {
    let uuid = parse_schedule_id(id)?;
    let mut tx = store.write("starting to update a schedule").await?;
    let mut db = tx.db();
    let old = locked_schedule(&mut db, tenant_id, uuid, id).await?;
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
    let row = db
        .fetch_optional(
            sql(
                "updating a schedule",
                "UPDATE schedules SET name = $2, cron = $3, time_zone = $4, kind = $5, queue = $6,
                     params = $7, priority = $8, jitter_seconds = $9, overlap_policy = $10,
                     misfire_policy = $11, next_fire_at = $12, next_run_at = $13,
                     updated_at = $14
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
            .bind(Utc::now()),
        )
        .await
        .map_err(|error| name_taken(error, &new.name))?
        .ok_or_else(|| Error::no_such("schedule", id))?;
    let schedule = schedule_from_row(&row)?;
    let details = serde_json::to_value(patch).unwrap_or(Value::Null);
    let updated = change("schedule.update", &schedule, details);
    record_change(&mut db, &schedule, actor, &updated).await?;
    tx.commit("committing a schedule update").await?;
    Ok(schedule)
}

async fn set_schedule_paused(
    store: &impl SqlStore,
    tenant_id: Option<&str>,
    id: &str,
    paused: bool,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Schedule> {
    let uuid = parse_schedule_id(id)?;
    let mut tx = store.write("starting to pause a schedule").await?;
    let mut db = tx.db();
    let old = locked_schedule(&mut db, tenant_id, uuid, id).await?;
    if old.paused == paused {
        // Already so: nothing changes, nothing is recorded.
        return Ok(old);
    }
    let (next_fire_at, next_run_at) = if paused {
        same_fire(uuid, old.next_fire_at, old.jitter_seconds)
    } else {
        first_fire(&old.spec()?, uuid, old.jitter_seconds, now)
    };
    let row = db
        .fetch_optional(
            sql(
                "pausing a schedule",
                "UPDATE schedules SET paused = $2, next_fire_at = $3, next_run_at = $4,
                     updated_at = $5
                 WHERE id = $1 RETURNING *",
            )
            .bind(uuid)
            .bind(paused)
            .bind(next_fire_at)
            .bind(next_run_at)
            .bind(Utc::now()),
        )
        .await?
        .ok_or_else(|| Error::no_such("schedule", id))?;
    let schedule = schedule_from_row(&row)?;
    let action = if paused {
        "schedule.pause"
    } else {
        "schedule.resume"
    };
    let changed = change(action, &schedule, json!({}));
    record_change(&mut db, &schedule, actor, &changed).await?;
    tx.commit("committing a schedule pause").await?;
    Ok(schedule)
}

async fn delete_schedule(
    store: &impl SqlStore,
    tenant_id: Option<&str>,
    id: &str,
    actor: &Actor,
) -> Result<()> {
    let uuid = parse_schedule_id(id)?;
    let mut tx = store.write("starting to delete a schedule").await?;
    let mut db = tx.db();
    let row = db
        .fetch_optional(
            sql(
                "deleting a schedule",
                "DELETE FROM schedules WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2
                 RETURNING *",
            )
            .bind(uuid)
            .bind(tenant_id),
        )
        .await?
        .ok_or_else(|| Error::no_such("schedule", id))?;
    let schedule = schedule_from_row(&row)?;
    db.execute(
        sql(
            "deleting a schedule's fires",
            "DELETE FROM schedule_fires WHERE schedule_id = $1",
        )
        .bind(uuid),
    )
    .await?;
    let deleted = change("schedule.delete", &schedule, json!({}));
    record_change(&mut db, &schedule, actor, &deleted).await?;
    tx.commit("committing a schedule deletion").await?;
    Ok(())
}

/// `ScheduleStore` for a backend: the CRUD above, and the backend's own fire
/// transaction (`dialect_fire_due` and its upkeep in `<backend>/schedule.rs`).
macro_rules! schedule_store_for {
    ($store:ty) => {
        #[async_trait]
        impl ScheduleStore for $store {
            async fn create_schedule(
                &self,
                tenant_id: Option<&str>,
                new: &NewSchedule,
                max_schedules: Option<i64>,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<Schedule> {
                create_schedule(self, tenant_id, new, max_schedules, now, actor).await
            }

            async fn get_schedule(&self, tenant_id: Option<&str>, id: &str) -> Result<Schedule> {
                get_schedule(self, tenant_id, id).await
            }

            async fn list_schedules(
                &self,
                tenant_id: Option<&str>,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<Schedule>> {
                list_schedules(self, tenant_id, after, limit).await
            }

            async fn update_schedule(
                &self,
                tenant_id: Option<&str>,
                id: &str,
                patch: &SchedulePatch,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<Schedule> {
                update_schedule(self, tenant_id, id, patch, now, actor).await
            }

            async fn set_schedule_paused(
                &self,
                tenant_id: Option<&str>,
                id: &str,
                paused: bool,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<Schedule> {
                set_schedule_paused(self, tenant_id, id, paused, now, actor).await
            }

            async fn delete_schedule(
                &self,
                tenant_id: Option<&str>,
                id: &str,
                actor: &Actor,
            ) -> Result<()> {
                delete_schedule(self, tenant_id, id, actor).await
            }

            async fn fire_due(
                &self,
                now: DateTime<Utc>,
                limit: u32,
                misfire_threshold: Duration,
                jobs: &dyn JobMaker,
            ) -> Result<FireReport> {
                self.dialect_fire_due(now, limit, misfire_threshold, jobs)
                    .await
            }

            async fn prune_fires(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
                self.dialect_prune_fires(before, limit).await
            }

            async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
                self.dialect_next_due_at().await
            }
        }
    };
}

schedule_store_for!(PgStore);
schedule_store_for!(SqliteStore);
