//! The storage layer: the job store trait and the two backends (PostgreSQL
//! for production, SQLite for the embedded mode) of every domain's store
//! trait, held to the same behaviour by one conformance suite
//! (`tests/suite/conformance.rs`). The CRUD-shaped domains are written once
//! for both (`tenancy.rs`, `scans.rs`, `artifacts.rs`, `schedule.rs` over
//! `sql.rs`); what must differ per dialect (the queue engine, the schedule
//! fire transaction, the audit log) lives in `postgres/` and `sqlite/`; the
//! schema lives in `migrations/<backend>/`. Domain modules never depend on
//! this one.
//!
//! Tenant-facing operations take the tenant id and never see another tenant's
//! rows. Worker operations (claim, heartbeat, progress, checkpoint, finish) are
//! fenced by the [`Lease`]: a write from an attempt that lost its lease changes
//! nothing and answers [`Error::LeaseLost`].

mod artifacts;
mod migrations;
mod pool;
mod postgres;
mod queue_stats;
mod retention;
mod scans;
pub(crate) mod schedule;
pub(crate) mod sql;
mod sqlite;
mod stores;
mod tenancy;
mod wake;
mod webhooks;
mod workers;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub use pool::{PoolSettings, DEFAULT_ACQUIRE_TIMEOUT};
pub use postgres::PgStore;
pub(crate) use postgres::{
    lock_queued_counts as pg_lock_queued_counts, meter_created as pg_meter_created,
};
pub use sqlite::SqliteStore;
pub(crate) use sqlite::{
    enqueue_in as sqlite_enqueue_in, meter_created as sqlite_meter_created,
    queued_count as sqlite_queued_count, time_from_micros as sqlite_time,
};
pub use stores::{connect_stores, connect_stores_pool, Stores};
pub use wake::{Wake, WakeReceiver};

use crate::audit::{Actor, Change};
use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::job::{
    Attempt, ClaimRequest, Enqueued, Finish, HeartbeatReply, Job, JobEvent, JobFilter, JobState,
    Lease, NewJob, Progress,
};
use crate::usage::{KindUsage, Period};

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A job rescued from an expired lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    pub job_id: JobId,
    pub tenant_id: String,
    /// `queued` when attempts remain, `failed` otherwise.
    pub state: JobState,
}

#[async_trait]
pub trait JobStore: Send + Sync + fmt::Debug + 'static {
    fn backend(&self) -> Backend;

    /// Applies the embedded migrations (idempotent).
    async fn migrate(&self) -> Result<()>;

    /// Is the database reachable?
    async fn ping(&self) -> Result<()>;

    // ---- tenant-facing -------------------------------------------------------

    /// Stores jobs atomically. A job whose idempotency key matches an existing
    /// job of the same tenant is not stored again: its answer names the existing
    /// job with `created: false` (a different kind or params is a conflict).
    async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>>;

    /// Admits work a tenant submitted (the API's `POST /v1/jobs`): stores the
    /// jobs as [`JobStore::enqueue`] does and, in the same transaction,
    ///
    /// - when `max_queued` is set (the tenant's own maxQueued quota, as read
    ///   from its row), refuses the whole batch with
    ///   [`Error::QuotaExceeded`] (writing nothing) if a tenant of the batch
    ///   would end with more than `max_queued` jobs in state `queued`. Only
    ///   jobs queued while the tenant had a quota in the tenants table are
    ///   counted (`jobs.counted_in_quota`; giving a tenant a quota marks its
    ///   outstanding jobs), so a limit passed for a tenant without one in
    ///   the table counts nothing queued before. The
    ///   count and the insert are serialized per tenant (PostgreSQL: a
    ///   transaction-level advisory lock on the tenant, taken only when a cap
    ///   is set; SQLite: the write lock), so concurrent requests cannot pass
    ///   the cap together. A batch that creates nothing (idempotent replays)
    ///   is never refused, and jobs already queued are never touched;
    /// - adds one billable operation per created job (not per replay) to the
    ///   `usage` of its tenant and kind in `period`;
    /// - records a `job.create` audit event by `actor` per created job.
    async fn enqueue_within_quota(
        &self,
        jobs: &[NewJob],
        max_queued: Option<i64>,
        period: Period,
        actor: &Actor,
    ) -> Result<Vec<Enqueued>>;

    /// A tenant's billable operations in `period`, per kind (sorted by kind;
    /// kinds without operations are absent).
    async fn usage(&self, tenant_id: &str, period: Period) -> Result<Vec<KindUsage>>;

    async fn get_job(&self, tenant_id: &str, id: JobId) -> Result<Job>;

    /// The tenant's job created with this idempotency key, if any.
    async fn find_job_by_idempotency_key(&self, tenant_id: &str, key: &str) -> Result<Option<Job>>;

    /// Up to `limit` of the tenant's jobs that match `filter`, newest first
    /// (id descending: ids are UUIDv7), strictly older than the job `after`
    /// when it is set: keyset pagination on `jobs_tenant_idx` (never OFFSET),
    /// so a deep page costs what the first does. The other filters are
    /// checked on the rows that index yields.
    async fn list_jobs(
        &self,
        tenant_id: &str,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<Job>>;

    /// A job's finished attempts, oldest first, scoped to the tenant but
    /// without telling a missing job from one with no attempts yet.
    async fn attempts_of(&self, tenant_id: &str, id: JobId) -> Result<Vec<Attempt>>;

    /// The finished attempts of a job, oldest first (NotFound if the job is
    /// not this tenant's).
    async fn job_attempts(&self, tenant_id: &str, id: JobId) -> Result<Vec<Attempt>> {
        let attempts = self.attempts_of(tenant_id, id).await?;
        if attempts.is_empty() {
            self.get_job(tenant_id, id).await?;
        }
        Ok(attempts)
    }

    /// A job and its finished attempts, in two queries (what a status read needs).
    async fn get_job_with_attempts(
        &self,
        tenant_id: &str,
        id: JobId,
    ) -> Result<(Job, Vec<Attempt>)> {
        let job = self.get_job(tenant_id, id).await?;
        let attempts = self.attempts_of(tenant_id, id).await?;
        Ok((job, attempts))
    }

    /// A job's events with id greater than `after`, oldest first; `NotFound`
    /// once the job is gone (a pruned job's transitions stay for the audit
    /// log, not for this).
    async fn job_events(
        &self,
        tenant_id: &str,
        id: JobId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<JobEvent>>;

    /// New events of several jobs in one query (the API's event hub, which
    /// serves every open event stream of a process with one read per tick):
    /// for each `(job, after)` of `cursors` (each job named once), up to
    /// `per_job` of its events with id greater than `after`, ordered by id.
    /// Not scoped to a tenant: the hub checked each stream's tenant when the
    /// stream opened. Jobs that never existed simply have no events; a
    /// pruned job's transitions stay (see [`JobStore::prune_finished`]).
    async fn events_of_jobs(&self, cursors: &[(JobId, i64)], per_job: u32)
        -> Result<Vec<JobEvent>>;

    /// Queued → cancelled at once; running → `cancel_requested` (the worker
    /// stops the handler). A finished job is a conflict. Done by the system
    /// (see [`JobStore::cancel_as`]).
    async fn cancel(&self, tenant_id: &str, id: JobId) -> Result<Job> {
        self.cancel_as(tenant_id, id, &Actor::system()).await
    }

    /// `cancel`, recorded as a `job.cancel` audit event by `actor` when it
    /// changes the job (cancelling a cancelled job changes nothing).
    async fn cancel_as(&self, tenant_id: &str, id: JobId, actor: &Actor) -> Result<Job>;

    /// Failed or cancelled → queued with a fresh attempt budget. Others: conflict.
    async fn retry(&self, tenant_id: &str, id: JobId) -> Result<Job> {
        self.retry_within_quota(tenant_id, id, None, &Actor::system())
            .await
    }

    /// `retry`, refused with `QuotaExceeded` (and nothing changed) when it
    /// would take the tenant past `max_queued` queued jobs; checked under the
    /// same lock as enqueue, so concurrent requests cannot pass the cap
    /// together. Recorded as a `job.retry` audit event by `actor`.
    async fn retry_within_quota(
        &self,
        tenant_id: &str,
        id: JobId,
        max_queued: Option<i64>,
        actor: &Actor,
    ) -> Result<Job>;

    /// Sets (or with `None` clears) a tenant's cap on running jobs.
    async fn set_tenant_max_running(&self, tenant_id: &str, max_running: Option<i32>)
        -> Result<()>;

    // ---- worker-facing (fenced by lease) -------------------------------------

    /// Claims up to `limit` due jobs fairly across tenants, never past a
    /// tenant's running cap (`default_max_running` for tenants without one).
    async fn claim(
        &self,
        request: &ClaimRequest,
        default_max_running: Option<i32>,
    ) -> Result<Vec<Job>>;

    /// Extends the leases still held; the answer lists them with their cancel
    /// flag. A lease missing from the answer was lost.
    async fn heartbeat(&self, leases: &[Lease], lease_for: Duration)
        -> Result<Vec<HeartbeatReply>>;

    async fn set_progress(&self, lease: Lease, progress: &Progress) -> Result<()>;

    async fn save_checkpoint(&self, lease: Lease, checkpoint: &Value) -> Result<()>;

    /// Finishes one attempt; `Err(LeaseLost)` if it no longer holds the lease.
    async fn finish(&self, lease: Lease, finish: &Finish) -> Result<()>;

    /// Completes many attempts successfully in one round trip; answers the ids
    /// that were applied (the others had lost their lease). A completed job's
    /// error is cleared (its attempts keep theirs) and a progress with a
    /// total shows it done (`current = total`: the last value written may
    /// be older than the work, e.g. a resumed attempt with nothing left).
    async fn complete_many(&self, completed: &[(Lease, Value)]) -> Result<Vec<JobId>>;

    // ---- maintenance ---------------------------------------------------------

    /// Takes back running jobs whose lease expired: queued again (the attempt
    /// counts) or failed when attempts are spent.
    async fn rescue_expired(&self, limit: u32) -> Result<Vec<Rescued>>;

    /// Deletes up to `limit` finished jobs that finished before
    /// `finished_before`, with their attempts and their progress and
    /// checkpoint events. Their transitions stay in `job_events`: they are
    /// the audit log's record of the job (`crate::audit`), kept as long as
    /// the log keeps events; the job's own event log is gone with it.
    async fn prune_finished(&self, finished_before: DateTime<Utc>, limit: u32) -> Result<u64>;

    /// Jobs per state in the whole store, every tenant's (for operators,
    /// benchmarks and tests).
    async fn count_by_state(&self) -> Result<Vec<(JobState, i64)>>;

    /// One tenant's jobs per state.
    async fn count_by_state_of(&self, tenant_id: &str) -> Result<Vec<(JobState, i64)>>;

    /// Running jobs per tenant.
    async fn running_by_tenant(&self) -> Result<Vec<(String, i64)>>;

    /// Wake-ups: a queue got due work, or a running job was asked to cancel.
    fn subscribe(&self) -> WakeReceiver;
}

/// Opens the store a URL names: `postgres://…` or `sqlite://…`.
pub async fn connect(url: &str, max_connections: u32) -> Result<Arc<dyn JobStore>> {
    connect_pool(url, PoolSettings::new(max_connections)).await
}

/// [`connect`] with a pool's size and acquire timeout.
pub async fn connect_pool(url: &str, pool: PoolSettings) -> Result<Arc<dyn JobStore>> {
    Ok(connect_stores_pool(url, pool).await?.job_store())
}

/// Rows of `(state, count)` as both backends' counts read them.
fn state_counts(rows: Vec<(String, i64)>) -> Result<Vec<(JobState, i64)>> {
    rows.into_iter()
        .map(|(state, n)| Ok((state.parse()?, n)))
        .collect()
}

/// Shared by both backends: how a tenant-scoped lookup that found nothing is
/// reported, and how a conflicting state change is explained.
fn state_conflict(action: &str, id: JobId, state: JobState) -> Error {
    Error::Conflict(format!("cannot {action} job {id}: it is {state}"))
}

/// What a cancel answers when its statement changed no row: the job as it
/// is (`None`: no such job of the tenant). Already cancelled, or running and
/// already asked to stop, is the cancel done; any other state is a conflict.
fn cancel_unchanged(id: JobId, job: Option<Job>) -> Result<Job> {
    let job = job.ok_or(Error::NotFound(id))?;
    match job.state {
        JobState::Cancelled => Ok(job),
        JobState::Running if job.cancel_requested => Ok(job),
        state => Err(state_conflict("cancel", id, state)),
    }
}

/// What a retry answers when its statement changed no row: only failed and
/// cancelled jobs can be retried (`None`: no such job of the tenant).
fn retry_unchanged(id: JobId, job: Option<Job>) -> Error {
    match job {
        None => Error::NotFound(id),
        Some(job) => state_conflict("retry", id, job.state),
    }
}

/// A running cap is a whole number of jobs, at least 1 (None removes it).
fn validate_max_running(max_running: Option<i32>) -> Result<()> {
    match max_running {
        Some(max) if max < 1 => Err(Error::validation(
            "max_running",
            "must be at least 1 (or none to remove the cap)",
        )),
        _ => Ok(()),
    }
}

/// Created jobs per tenant and per (tenant, kind), in sorted order (so that
/// concurrent writers touch `usage` rows in the same order).
struct Created<'j> {
    per_tenant: BTreeMap<&'j str, i64>,
    per_kind: BTreeMap<(&'j str, &'j str), i64>,
}

fn count_created<'j>(jobs: &'j [NewJob], answers: &[Enqueued]) -> Created<'j> {
    let mut created = Created {
        per_tenant: BTreeMap::new(),
        per_kind: BTreeMap::new(),
    };
    for (job, answer) in jobs.iter().zip(answers) {
        if answer.created {
            *created
                .per_tenant
                .entry(job.tenant_id.as_str())
                .or_default() += 1;
            *created
                .per_kind
                .entry((job.tenant_id.as_str(), job.kind.as_str()))
                .or_default() += 1;
        }
    }
    created
}

/// The quota check both backends make after inserting (inside the
/// transaction): `queued_before` maps each tenant to its queued jobs before
/// the batch. A tenant that created nothing is never refused.
fn check_max_queued(
    limit: i64,
    queued_before: &BTreeMap<String, i64>,
    created: &Created<'_>,
) -> Result<()> {
    for (tenant, n) in &created.per_tenant {
        let before = queued_before.get(*tenant).copied().unwrap_or(0);
        if *n > 0 && before + n > limit {
            return Err(Error::QuotaExceeded {
                limit,
                current: before,
            });
        }
    }
    Ok(())
}

/// The audit events of an admitted batch: one `job.create` per created job.
fn job_creations<'j>(
    jobs: &'j [NewJob],
    answers: &'j [Enqueued],
) -> impl Iterator<Item = (&'j str, Change)> + 'j {
    jobs.iter()
        .zip(answers)
        .filter(|(_, answer)| answer.created)
        .map(|(job, answer)| {
            let details = serde_json::json!({
                "kind": job.kind,
                "queue": job.queue,
                "priority": job.priority,
                "runAt": job.run_at,
            });
            (
                job.tenant_id.as_str(),
                Change::new("job.create", "job", answer.id.to_string(), details),
            )
        })
}

fn job_cancelled(job: &Job) -> Change {
    Change::new(
        "job.cancel",
        "job",
        job.id.to_string(),
        serde_json::json!({"state": job.state}),
    )
}

fn job_retried(job: &Job) -> Change {
    Change::new(
        "job.retry",
        "job",
        job.id.to_string(),
        serde_json::json!({}),
    )
}

/// What a fenced worker write answers when its attempt no longer holds the
/// job (every store's job and artifact writes).
pub(crate) fn lease_lost(lease: Lease) -> Error {
    Error::LeaseLost {
        job_id: lease.job_id,
        attempt: lease.attempt,
    }
}

fn idempotency_conflict(key: &str) -> Error {
    Error::Conflict(format!(
        "idempotency key {key:?} was already used for a job with a different kind or params"
    ))
}
