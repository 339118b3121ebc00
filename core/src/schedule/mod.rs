//! Schedules: cron-style recurring jobs of a tenant, or of the system (no
//! tenant; their jobs run as tenant [`SYSTEM_TENANT`]). Each schedule holds a
//! cron expression in an IANA time zone (`timing.rs`), the job to create,
//! jitter, an overlap policy and a misfire policy, a paused flag, and its
//! next nominal fire time.
//!
//! Exactly one job per fire time, with any number of schedulers: a fire is
//! one transaction that takes the due rows (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, the write lock on SQLite), inserts `(schedule, fire time)` into
//! `schedule_fires` (primary key: a second insert of the same fire is a
//! no-op), inserts the job only for fires that row accepted, and moves
//! `next_fire_at` on with an update fenced by its old value. No leader is
//! needed; schedules are never all held in memory: a tick reads the due ones
//! by the `schedules_due_idx` index.
//!
//! Fires count against the tenant's `maxQueued` as `POST /v1/jobs` does (the
//! count under the same per-tenant lock): a fire that would take the tenant
//! past it creates no job; the schedule moves on, records the skip
//! (`lastSkippedAt`, `lastSkipReason: quota_exceeded`) and the audit log a
//! `schedule.fire_skipped` event.

pub mod timing;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::audit::{Actor, Change};
use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::job::NewJob;
use crate::nul::contains_nul;
pub use timing::{jitter_offset, plan_fire, CronSpec, FirePlan, MisfirePolicy, OverlapPolicy};

/// The tenant id of the jobs system schedules create.
pub const SYSTEM_TENANT: &str = "system";
/// Schedules a tenant may hold when its quotas name no limit.
pub const DEFAULT_MAX_SCHEDULES: i64 = 100;
/// Largest jitter, in seconds.
pub const MAX_JITTER_SECONDS: u32 = 3600;

const ID_PREFIX: &str = "sch_";

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// `sch_…`
    #[schema(example = "sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub id: String,
    /// `None` for a system schedule.
    pub tenant_id: Option<String>,
    #[schema(example = "nightly")]
    pub name: String,
    #[schema(example = "0 3 * * *")]
    pub cron: String,
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    #[schema(example = "system.sleep")]
    pub kind: String,
    pub queue: Option<String>,
    /// The params of the jobs it creates: a JSON object the kind validates.
    #[schema(value_type = Object)]
    pub params: Value,
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i16>,
    #[schema(maximum = 3600)]
    pub jitter_seconds: u32,
    pub overlap_policy: OverlapPolicy,
    pub misfire_policy: MisfirePolicy,
    pub paused: bool,
    /// The next nominal fire time (`null`: it will not fire again).
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fire_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<String>, example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub last_job_id: Option<JobId>,
    /// The last fire time that created no job for a reason the tenant can
    /// act on (see `lastSkipReason`).
    pub last_skipped_at: Option<DateTime<Utc>>,
    /// Why: `quota_exceeded` (the tenant was at its `maxQueued`).
    #[schema(example = "quota_exceeded")]
    pub last_skip_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    pub fn spec(&self) -> Result<CronSpec> {
        CronSpec::parse(&self.cron, &self.time_zone)
    }

    /// The tenant its jobs run as.
    pub fn job_tenant(&self) -> &str {
        self.tenant_id.as_deref().unwrap_or(SYSTEM_TENANT)
    }
}

/// A new schedule (`POST /v1/schedules`).
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSchedule {
    /// 1 to 100 characters, no control characters; unique in the tenant.
    #[schema(example = "nightly", min_length = 1, max_length = 100)]
    pub name: String,
    /// 5 fields, or 6 with seconds first.
    #[schema(example = "0 3 * * *")]
    pub cron: String,
    /// IANA time zone (default `UTC`).
    #[serde(default = "utc")]
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    #[schema(example = "system.sleep")]
    pub kind: String,
    /// The params of the jobs it creates: a JSON object the kind validates
    /// (at most 64 KiB); default `{}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub params: Value,
    #[schema(max_length = 64, pattern = r"^[a-z0-9_.-]{1,64}$")]
    pub queue: Option<String>,
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i16>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3600)]
    pub jitter_seconds: u32,
    #[serde(default = "overlap_skip")]
    pub overlap_policy: OverlapPolicy,
    #[serde(default = "misfire_skip")]
    pub misfire_policy: MisfirePolicy,
    #[serde(default)]
    pub paused: bool,
}

fn utc() -> String {
    "UTC".into()
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn overlap_skip() -> OverlapPolicy {
    OverlapPolicy::Skip
}

fn misfire_skip() -> MisfirePolicy {
    MisfirePolicy::Skip
}

/// A change to a schedule: each `Some` field replaces the stored one. A new
/// cron, zone or jitter recomputes the next fire time from now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulePatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A JSON object the kind validates (at most 64 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64, pattern = r"^[a-z0-9_.-]{1,64}$")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 3600)]
    pub jitter_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap_policy: Option<OverlapPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub misfire_policy: Option<MisfirePolicy>,
}

impl SchedulePatch {
    /// The schedule as it would be after the patch (for validation).
    pub fn apply_to(&self, schedule: &Schedule) -> NewSchedule {
        NewSchedule {
            name: self.name.clone().unwrap_or_else(|| schedule.name.clone()),
            cron: self.cron.clone().unwrap_or_else(|| schedule.cron.clone()),
            time_zone: self
                .time_zone
                .clone()
                .unwrap_or_else(|| schedule.time_zone.clone()),
            kind: self.kind.clone().unwrap_or_else(|| schedule.kind.clone()),
            params: self
                .params
                .clone()
                .unwrap_or_else(|| schedule.params.clone()),
            queue: self.queue.clone().or_else(|| schedule.queue.clone()),
            priority: self.priority.or(schedule.priority),
            jitter_seconds: self.jitter_seconds.unwrap_or(schedule.jitter_seconds),
            overlap_policy: self.overlap_policy.unwrap_or(schedule.overlap_policy),
            misfire_policy: self.misfire_policy.unwrap_or(schedule.misfire_policy),
            paused: schedule.paused,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == SchedulePatch::default()
    }

    /// Does the patch move the fire times?
    pub fn changes_timing(&self) -> bool {
        self.cron.is_some() || self.time_zone.is_some() || self.jitter_seconds.is_some()
    }
}

/// Checks what the store can check alone (the job's kind and params are
/// checked by the caller against the catalogue) and parses the timing.
pub fn check_new_schedule(new: &NewSchedule) -> Result<CronSpec> {
    let name_ok = !new.name.trim().is_empty()
        && new.name.chars().count() <= 100
        && !new.name.chars().any(char::is_control);
    if !name_ok {
        return Err(Error::validation(
            "name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    if new.jitter_seconds > MAX_JITTER_SECONDS {
        return Err(Error::validation(
            "jitterSeconds",
            format!("must be from 0 to {MAX_JITTER_SECONDS}"),
        ));
    }
    if contains_nul(&new.params) {
        return Err(Error::validation(
            "params",
            "must not contain the character U+0000",
        ));
    }
    let spec = CronSpec::parse(&new.cron, &new.time_zone)?;
    Ok(spec)
}

/// The first nominal fire time after `now` and when to act on it (with the
/// schedule's jitter).
pub(crate) fn first_fire(
    spec: &CronSpec,
    schedule_id: Uuid,
    jitter_seconds: u32,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let next = spec.next_after(now);
    (
        next,
        next.map(|at| run_time(schedule_id, at, jitter_seconds)),
    )
}

/// The same nominal fire time (paused, or a change that does not move the
/// fire times), with its run time for `jitter_seconds`.
pub(crate) fn same_fire(
    schedule_id: Uuid,
    next_fire_at: Option<DateTime<Utc>>,
    jitter_seconds: u32,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    (
        next_fire_at,
        next_fire_at.map(|at| run_time(schedule_id, at, jitter_seconds)),
    )
}

/// When a scheduler acts on the nominal fire time `at`.
pub(crate) fn run_time(schedule_id: Uuid, at: DateTime<Utc>, jitter_seconds: u32) -> DateTime<Utc> {
    let offset = jitter_offset(
        &schedule_id.simple().to_string(),
        at,
        Duration::from_secs(u64::from(jitter_seconds)),
    );
    at + chrono::Duration::from_std(offset).unwrap_or_else(|_| chrono::Duration::zero())
}

pub(crate) fn schedule_id_text(id: Uuid) -> String {
    format!("{ID_PREFIX}{}", id.simple())
}

/// A schedule id from the API: a malformed one names no schedule.
pub fn parse_schedule_id(text: &str) -> Result<Uuid> {
    text.strip_prefix(ID_PREFIX)
        .filter(|hex| hex.len() == 32)
        .and_then(|hex| Uuid::try_parse(hex).ok())
        .ok_or_else(|| Error::no_such("schedule", text))
}

/// Builds the job of one fire (the catalogue fills in queue and attempts).
pub trait JobMaker: Send + Sync {
    fn job_for(&self, schedule: &Schedule, fire_time: DateTime<Utc>) -> Result<NewJob>;
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FireReport {
    /// Due schedules this tick took (fired, skipped or failed).
    pub schedules: usize,
    /// Jobs created: (schedule id, fire time, job id).
    pub fired: Vec<(String, DateTime<Utc>, JobId)>,
    /// Fire times passed over: misfires skipped by policy, and fires skipped
    /// because the previous run was unfinished (overlap `skip`).
    pub skipped: u64,
    /// Fires that could not build a job (a kind removed from the catalogue,
    /// say): logged; the schedule moves on.
    pub failed: u64,
    /// Of the skipped, fires that would have taken their tenant past its
    /// `maxQueued` (recorded on the schedule and in the audit log).
    pub over_quota: u64,
}

/// `lastSkipReason` of a fire skipped because its tenant was at `maxQueued`.
pub const SKIP_QUOTA_EXCEEDED: &str = "quota_exceeded";

/// A tick's view of its tenants' `maxQueued`: each capped tenant's queued
/// jobs (counted by the store under the tenant's quota lock) plus the jobs
/// the tick has admitted so far.
#[derive(Debug, Default)]
pub(crate) struct QueuedQuota {
    queued: std::collections::HashMap<String, i64>,
}

impl QueuedQuota {
    pub(crate) fn knows(&self, tenant: &str) -> bool {
        self.queued.contains_key(tenant)
    }

    pub(crate) fn set_count(&mut self, tenant: &str, queued: i64) {
        self.queued.insert(tenant.to_string(), queued);
    }

    /// Takes one more queued job for `tenant` under `limit`; `Err(queued)`
    /// if the tenant already holds `limit` or more.
    pub(crate) fn admit(&mut self, tenant: &str, limit: i64) -> std::result::Result<(), i64> {
        let queued = self.queued.entry(tenant.to_string()).or_insert(0);
        if *queued >= limit {
            return Err(*queued);
        }
        *queued += 1;
        Ok(())
    }
}

/// A fire passed over because its tenant was at `maxQueued`.
#[derive(Debug, Clone)]
pub(crate) struct QuotaSkip {
    pub fire_time: DateTime<Utc>,
    pub limit: i64,
    pub queued: i64,
}

impl QuotaSkip {
    /// Its audit event (by the system, on the schedule).
    pub(crate) fn change(&self, schedule: &Schedule) -> Change {
        change(
            "schedule.fire_skipped",
            schedule,
            serde_json::json!({
                "fireTime": self.fire_time,
                "reason": SKIP_QUOTA_EXCEEDED,
                "limit": self.limit,
                "queued": self.queued,
            }),
        )
    }
}

pub(crate) fn change(action: &'static str, schedule: &Schedule, details: Value) -> Change {
    Change::new(action, "schedule", &schedule.id, details)
}

/// The store side of schedules (both backends). Tenant-facing calls take the
/// tenant (`None`: system schedules); another tenant's schedule is not found.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates a schedule (next fire computed from `now`), refused with
    /// [`Error::LimitReached`] when the tenant already holds `max_schedules`.
    async fn create_schedule(
        &self,
        tenant_id: Option<&str>,
        new: &NewSchedule,
        max_schedules: Option<i64>,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Schedule>;

    async fn get_schedule(&self, tenant_id: Option<&str>, id: &str) -> Result<Schedule>;

    /// Schedules ordered by id, after `after` (keyset pagination).
    async fn list_schedules(
        &self,
        tenant_id: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Schedule>>;

    async fn update_schedule(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        patch: &SchedulePatch,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Schedule>;

    /// Pauses, or resumes from `now` (fire times passed while paused are not
    /// caught up).
    async fn set_schedule_paused(
        &self,
        tenant_id: Option<&str>,
        id: &str,
        paused: bool,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Schedule>;

    async fn delete_schedule(&self, tenant_id: Option<&str>, id: &str, actor: &Actor)
        -> Result<()>;

    /// Fires up to `limit` due schedules at `now` (see the module comment);
    /// a fire time more than `misfire_threshold` late is a misfire, and a
    /// fire that would take its tenant past `maxQueued` is skipped.
    async fn fire_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        misfire_threshold: Duration,
        jobs: &dyn JobMaker,
    ) -> Result<FireReport>;

    /// Deletes up to `limit` fire records of fire times before `before`
    /// (a schedule has moved past them; its fenced `next_fire_at` keeps them
    /// from firing again). Answers how many.
    async fn prune_fires(&self, before: DateTime<Utc>, limit: u32) -> Result<u64>;

    /// When the earliest unpaused schedule is due (to sleep until then).
    async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>>;
}

/// Plans the fire of one due schedule: what job to create (if any) and the
/// schedule's next fire and run times. Shared by both backends.
pub(crate) struct PlannedFire {
    pub schedule_id: Uuid,
    pub old_next_fire_at: DateTime<Utc>,
    pub fire: Option<DateTime<Utc>>,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub skipped: u64,
    /// The schedule could not be planned (its stored cron or zone no longer
    /// parses): it stops firing (`next_fire_at` NULL) instead of stalling the
    /// tick for every other schedule.
    pub failed: bool,
}

/// Lateness is measured from the run time (nominal time + the schedule's
/// jitter offset), not the nominal time: a schedule jittered by more than the
/// misfire threshold is not a misfire.
pub(crate) fn plan(
    schedule: &Schedule,
    schedule_id: Uuid,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    threshold: Duration,
) -> PlannedFire {
    let spec = match schedule.spec() {
        Ok(spec) => spec,
        Err(error) => {
            tracing::error!(schedule_id = %schedule.id, %error, "a stored schedule no longer parses; it stops firing");
            return PlannedFire {
                schedule_id,
                old_next_fire_at: due,
                fire: None,
                next_fire_at: None,
                next_run_at: None,
                skipped: 0,
                failed: true,
            };
        }
    };
    let offset = (run_time(schedule_id, due, schedule.jitter_seconds) - due)
        .to_std()
        .unwrap_or_default();
    let FirePlan {
        fire,
        next,
        skipped,
    } = plan_fire(&spec, schedule.misfire_policy, due, now, threshold + offset);
    PlannedFire {
        schedule_id,
        old_next_fire_at: due,
        fire,
        next_fire_at: next,
        next_run_at: next.map(|at| run_time(schedule_id, at, schedule.jitter_seconds)),
        skipped,
        failed: false,
    }
}
