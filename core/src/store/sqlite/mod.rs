//! The SQLite job store (the embedded mode): the queue engine's SQL (the
//! CRUD-shaped domains are shared, in `store/<domain>.rs`); the schema lives
//! in `migrations/sqlite/`. It answers exactly as [`super::PgStore`]
//! does, held to that by the conformance suite.
//!
//! One writer at a time. Every write holds an in-process mutex, so writers of
//! this process queue in Rust instead of sleeping in SQLite's busy handler, and
//! every multi-statement write runs in a `BEGIN IMMEDIATE` transaction, which
//! takes SQLite's write lock up front: writers of other processes wait for it,
//! and a claim counts running jobs that no one else can change under it (so
//! running caps hold across processes). Reads run beside the writer (WAL).
//!
//! Ids are 16-byte blobs, JSON is text, timestamps are microseconds since the
//! Unix epoch read from the Rust clock. Batches (claimed ids, completions,
//! heartbeats, new jobs) travel as one JSON parameter read with `json_each`, so
//! a batch costs a few statements whatever its size. Wake-ups reach this
//! process only, sent after the writing transaction commits.

pub(crate) mod audit;
mod schedule;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Executor, Row, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::pool::PoolSettings;
use super::wake::{Wake, WakeHub, WakeReceiver};
use super::{
    cancel_unchanged, check_max_queued, count_created, idempotency_conflict, job_cancelled,
    job_creations, job_retried, lease_lost, retry_unchanged, state_counts, validate_max_running,
    Backend, Created, JobStore, Rescued,
};
use crate::audit::Actor;
use crate::error::{DbContext, Error, Result};
use crate::failure::{FailureCode, PublicError};
use crate::ids::JobId;
use crate::job::{
    Attempt, AttemptOutcome, ClaimRequest, Enqueued, Finish, HeartbeatReply, Job, JobEvent,
    JobFilter, JobState, Lease, NewJob, Progress,
};
use crate::nul::{json_without_nul, text_without_nul};
use crate::usage::{KindUsage, Period};
use audit::insert_change as record;

/// What the rescuer writes as the error of an attempt whose lease expired.
const LEASE_EXPIRED_ERROR: &str = "lease expired: the worker stopped heartbeating";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    wakes: WakeHub,
    /// Held by every write of this process (see the module comment).
    write_lock: Arc<Mutex<()>>,
    /// Passed by every write but heartbeats before they queue for
    /// `write_lock`: at most one of them waits there at a time, so a
    /// heartbeat waits behind the write under way and one more, never behind
    /// a queue of claims and completions (a heartbeat that waits too long
    /// loses a live worker its lease).
    write_gate: Arc<Mutex<()>>,
}

/// A write transaction: the process's write lock plus `BEGIN IMMEDIATE`.
/// Dropping it starts a rollback, then releases the lock (fields drop in order).
pub(crate) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _lock: OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    pub(crate) async fn commit(self, context: &'static str) -> Result<()> {
        self.tx.commit().await.db(context)
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        self.tx.rollback().await.db("rolling back a write")
    }
}

type SqliteQuery = sqlx::query::Query<'static, Sqlite, SqliteArguments<'static>>;

impl SqliteStore {
    /// Opens (creating if missing, folder included) the database file the URL
    /// names, with a pool of `max_connections`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Self::connect_pool(url, PoolSettings::new(max_connections)).await
    }

    /// Opens the database with a pool of the given size; a write waits for
    /// the database's write lock as long as a caller waits for a connection.
    pub async fn connect_pool(url: &str, pool: PoolSettings) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .db("parsing the database url")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(pool.acquire_timeout)
            .log_statements(tracing::log::LevelFilter::Trace);
        create_parent_dir(options.get_filename())?;
        Self::connect_with(options, pool).await
    }

    pub async fn connect_with(options: SqliteConnectOptions, pool: PoolSettings) -> Result<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(pool.max_connections)
            .min_connections(1.min(pool.max_connections))
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options)
            .await
            .db("opening the SQLite database")?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps a pool opened with the options [`SqliteStore::connect`] sets
    /// (foreign keys on, WAL, a busy timeout).
    pub fn from_pool(pool: SqlitePool) -> Self {
        SqliteStore {
            pool,
            wakes: WakeHub::new(),
            write_lock: Arc::new(Mutex::new(())),
            write_gate: Arc::new(Mutex::new(())),
        }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The process's write lock, taken behind the gate (see `write_gate`).
    pub(crate) async fn lock_for_write(&self) -> OwnedMutexGuard<()> {
        let _gate = self.write_gate.lock().await;
        self.write_lock.clone().lock_owned().await
    }

    pub(crate) async fn begin_write(&self, context: &'static str) -> Result<WriteTx> {
        let lock = self.lock_for_write().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await.db(context)?;
        Ok(WriteTx { tx, _lock: lock })
    }

    pub(crate) fn wake_queues<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        let queues: BTreeSet<&str> = queues.into_iter().collect();
        for queue in queues {
            self.wakes.send(Wake::Queue(queue.to_string()));
        }
    }

    /// Ends a running attempt other than by success (failed, cancelled,
    /// released): the fenced UPDATE `sql` (`?1` id, `?2` attempt, `?3` now,
    /// more from `bind`), then the attempt history row and the event that
    /// `record` chooses for the updated job.
    async fn end_attempt(
        &self,
        lease: Lease,
        sql: &'static str,
        bind: impl FnOnce(SqliteQuery) -> SqliteQuery,
        record: impl FnOnce(&EndedAttempt) -> Result<AttemptRecord>,
    ) -> Result<()> {
        let mut w = self.begin_write("starting to finish an attempt").await?;
        let now = now_micros();
        let query = sqlx::query(sql)
            .bind(lease.job_id.as_uuid())
            .bind(lease.attempt)
            .bind(now);
        let row = bind(query)
            .fetch_optional(w.conn())
            .await
            .db("finishing an attempt")?;
        let Some(row) = row else {
            w.rollback().await?;
            return Err(lease_lost(lease));
        };
        let ended = EndedAttempt::from_row(&row)?;
        let AttemptRecord {
            outcome,
            error,
            public,
            event,
            data,
        } = record(&ended)?;
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, tenant_id, worker_id, started_at, finished_at, outcome,
                                       error, error_code, error_message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .bind(lease.job_id.as_uuid())
        .bind(ended.attempt)
        .bind(&ended.tenant_id)
        .bind(&ended.worker_id)
        .bind(ended.started_at)
        .bind(now)
        .bind(outcome.as_str())
        .bind(error)
        .bind(public.as_ref().map(|p| p.code.as_str()))
        .bind(public.as_ref().map(|p| p.message.as_str()))
        .execute(w.conn())
        .await
        .db("recording an attempt")?;
        insert_event(
            w.conn(),
            lease.job_id,
            &ended.tenant_id,
            now,
            Some(ended.attempt),
            event,
            data,
        )
        .await?;
        w.commit("committing a finished attempt").await?;
        if ended.state == JobState::Queued {
            self.wake_queues([ended.queue.as_str()]);
        }
        Ok(())
    }

    /// A fenced write of one JSON column (progress, checkpoint) and its event.
    async fn write_running_job(
        &self,
        lease: Lease,
        update_sql: &'static str,
        value: String,
        event: &'static str,
        data: Option<Value>,
    ) -> Result<()> {
        let mut w = self.begin_write("starting a worker write").await?;
        let now = now_micros();
        let tenant_id: Option<String> = sqlx::query_scalar(update_sql)
            .bind(lease.job_id.as_uuid())
            .bind(lease.attempt)
            .bind(value)
            .fetch_optional(w.conn())
            .await
            .db("writing a running job")?;
        let Some(tenant_id) = tenant_id else {
            w.rollback().await?;
            return Err(lease_lost(lease));
        };
        insert_event(
            w.conn(),
            lease.job_id,
            &tenant_id,
            now,
            Some(lease.attempt),
            event,
            data,
        )
        .await?;
        w.commit("committing a worker write").await
    }
}

fn create_parent_dir(file: &std::path::Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .map_err(sqlx::Error::Io)
            .db("creating the database folder"),
        _ => Ok(()),
    }
}

// ---- enqueue -----------------------------------------------------------------

/// Stores jobs inside a write transaction; see [`JobStore::enqueue`].
pub(crate) async fn enqueue_in(
    conn: &mut SqliteConnection,
    jobs: &[NewJob],
    now: i64,
) -> Result<Vec<Enqueued>> {
    let mut next_vtime = allocate_vtimes(conn, jobs).await?;
    let mut batch = Vec::with_capacity(jobs.len());
    for job in jobs {
        let slot = next_vtime
            .get_mut(&(job.tenant_id.as_str(), job.queue.as_str()))
            .ok_or_else(|| Error::corrupt("enqueue", "missing fair-queue group"))?;
        batch.push(json!({
            "id": hex(job.id.as_uuid()),
            "tenantId": job.tenant_id,
            "kind": job.kind,
            "queue": job.queue,
            "priority": job.priority,
            "vtime": *slot,
            "params": job.params.to_string(),
            "runAt": job.run_at.map(|at| at.timestamp_micros()),
            "maxAttempts": job.max_attempts,
            "idempotencyKey": job.idempotency_key,
        }));
        *slot += 1;
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO jobs (id, tenant_id, kind, queue, priority, vtime, params, run_at, max_attempts,
                           idempotency_key, created_at, counted_in_quota)
         SELECT unhex(j.value ->> '$.id'), j.value ->> '$.tenantId', j.value ->> '$.kind', j.value ->> '$.queue',
                j.value ->> '$.priority', j.value ->> '$.vtime', j.value ->> '$.params',
                coalesce(j.value ->> '$.runAt', ?2), j.value ->> '$.maxAttempts', j.value ->> '$.idempotencyKey', ?2,
                EXISTS (SELECT 1 FROM tenants t
                        WHERE t.id = j.value ->> '$.tenantId' AND t.max_queued IS NOT NULL)
         FROM json_each(?1) AS j WHERE true
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(Value::Array(batch).to_string())
    .bind(now)
    .fetch_all(&mut *conn)
    .await
    .db("inserting jobs")?;

    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        if inserted.contains(&job.id.as_uuid()) {
            answers.push(Enqueued {
                id: job.id,
                created: true,
            });
        } else {
            answers.push(existing_job(conn, job).await?);
        }
    }
    super::artifacts::insert_job_inputs(super::sql::Db::Sqlite(&mut *conn), jobs, &answers).await?;
    Ok(answers)
}

/// Queued jobs of each tenant of the batch (`jobs_queued_tenant_idx`).
async fn queued_counts(
    conn: &mut SqliteConnection,
    jobs: &[NewJob],
) -> Result<BTreeMap<String, i64>> {
    let tenants: BTreeSet<&str> = jobs.iter().map(|job| job.tenant_id.as_str()).collect();
    let mut counts = BTreeMap::new();
    for tenant in tenants {
        counts.insert(tenant.to_string(), queued_count(conn, tenant).await?);
    }
    Ok(counts)
}

/// A tenant's queued jobs (delayed ones included), counted inside the
/// caller's write transaction (the scheduler's fires use it too).
pub(crate) async fn queued_count(conn: &mut SqliteConnection, tenant: &str) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE tenant_id = ?1 AND state = 'queued' AND counted_in_quota = 1",
    )
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await
        .db("counting queued jobs")
}

/// Adds one billable operation per created job, inside the enqueue transaction.
/// Meters the jobs an enqueue created (not replays) as billable operations of
/// `period`, in the caller's write transaction (the scheduler's fires use it).
pub(crate) async fn meter_created(
    conn: &mut SqliteConnection,
    jobs: &[NewJob],
    answers: &[Enqueued],
    period: Period,
) -> Result<()> {
    add_usage(conn, &count_created(jobs, answers), period).await
}

async fn add_usage(
    conn: &mut SqliteConnection,
    created: &Created<'_>,
    period: Period,
) -> Result<()> {
    let period = period.to_string();
    for ((tenant, kind), n) in &created.per_kind {
        sqlx::query(
            "INSERT INTO usage (tenant_id, period, kind, operations) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant_id, period, kind) DO UPDATE SET operations = operations + excluded.operations",
        )
        .bind(*tenant)
        .bind(&period)
        .bind(*kind)
        .bind(*n)
        .execute(&mut *conn)
        .await
        .db("metering usage")?;
    }
    Ok(())
}

/// Virtual times per (tenant, queue), in sorted order: the first of each group.
async fn allocate_vtimes<'j>(
    conn: &mut SqliteConnection,
    jobs: &'j [NewJob],
) -> Result<BTreeMap<(&'j str, &'j str), i64>> {
    let mut groups: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for job in jobs {
        *groups
            .entry((job.tenant_id.as_str(), job.queue.as_str()))
            .or_default() += 1;
    }
    for ((tenant_id, queue), count) in groups.iter_mut() {
        let base: i64 = sqlx::query_scalar(
            "INSERT INTO fair_queues (tenant_id, queue, next_vtime)
             VALUES (?1, ?2, coalesce((SELECT vtime FROM queue_clocks WHERE queue = ?2), 0) + ?3)
             ON CONFLICT (tenant_id, queue) DO UPDATE
             SET next_vtime = max(next_vtime, coalesce((SELECT vtime FROM queue_clocks WHERE queue = ?2), 0)) + ?3
             RETURNING next_vtime - ?3",
        )
        .bind(*tenant_id)
        .bind(*queue)
        .bind(*count)
        .fetch_one(&mut *conn)
        .await
        .db("allocating fair-queue virtual times")?;
        *count = base;
    }
    Ok(groups)
}

/// The answer for a job that was not inserted: its idempotency key names an
/// existing job, which must have the same kind and params.
async fn existing_job(conn: &mut SqliteConnection, job: &NewJob) -> Result<Enqueued> {
    let key = job.idempotency_key.as_deref().ok_or_else(|| {
        Error::corrupt("enqueue", "a job without idempotency key was not inserted")
    })?;
    let existing = sqlx::query(
        "SELECT id, kind, params FROM jobs WHERE tenant_id = ?1 AND idempotency_key = ?2",
    )
    .bind(&job.tenant_id)
    .bind(key)
    .fetch_one(&mut *conn)
    .await
    .db("looking up an idempotency key")?;
    let kind: String = existing.try_get("kind").db("reading job kind")?;
    let params = json_at(&existing, "params", "reading job params")?;
    if kind != job.kind || params != job.params {
        return Err(idempotency_conflict(key));
    }
    Ok(Enqueued {
        id: JobId::from_uuid(existing.try_get("id").db("reading job id")?),
        created: false,
    })
}

// ---- claim -------------------------------------------------------------------

/// The claim: `?1` limit, `?2` worker id, `?3` now, `?4` lease end, `?5` the
/// default running cap, `?6` how many candidates to scan, `?7…` the queues
/// (one `{queue_heads}` branch each, so every branch walks `jobs_claim_idx`).
const CLAIM_SQL: &str = "
    WITH running AS (
        SELECT tenant_id, count(*) AS n FROM jobs WHERE state = 'running' GROUP BY tenant_id
    ),
    room AS MATERIALIZED (
        SELECT r.tenant_id, coalesce(l.max_running, ?5) - r.n AS free
        FROM running r LEFT JOIN tenant_limits l ON l.tenant_id = r.tenant_id
        WHERE coalesce(l.max_running, ?5) IS NOT NULL
    ),
    candidates AS (
        SELECT * FROM ({queue_heads}) ORDER BY priority, vtime LIMIT ?6
    ),
    ranked AS (
        SELECT c.id, c.priority, c.vtime,
               row_number() OVER (PARTITION BY c.tenant_id ORDER BY c.priority, c.vtime) AS nth,
               coalesce(room.free, l.max_running, ?5) AS free
        FROM candidates c
        LEFT JOIN room ON room.tenant_id = c.tenant_id
        LEFT JOIN tenant_limits l ON l.tenant_id = c.tenant_id
    ),
    picked AS (
        SELECT id FROM ranked WHERE free IS NULL OR nth <= free ORDER BY priority, vtime LIMIT ?1
    )
    UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = ?2, started_at = ?3, lease_expires_at = ?4
    WHERE id IN (SELECT id FROM picked) AND state = 'queued'
    RETURNING *";

/// The due head of one queue (`?{n}`), skipping tenants at their cap.
const QUEUE_HEAD_SQL: &str = "
    SELECT * FROM (
        SELECT j.id, j.tenant_id, j.priority, j.vtime FROM jobs j
        WHERE j.state = 'queued' AND j.queue = ?{n} AND j.run_at <= ?3
          AND NOT EXISTS (SELECT 1 FROM room WHERE room.tenant_id = j.tenant_id AND room.free <= 0)
        ORDER BY j.priority, j.vtime
        LIMIT ?6
    )";

fn claim_sql(queues: usize) -> String {
    let heads: Vec<String> = (0..queues)
        .map(|i| QUEUE_HEAD_SQL.replace("{n}", &(i + 7).to_string()))
        .collect();
    CLAIM_SQL.replace("{queue_heads}", &heads.join(" UNION ALL "))
}

/// Writes the `started` events of claimed jobs and advances the queue clocks.
async fn record_claims(
    conn: &mut SqliteConnection,
    claimed: &[(Job, i64)],
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_events (job_id, tenant_id, at, attempt, kind, data)
         SELECT id, tenant_id, ?1, attempt, 'started', json_object('workerId', worker_id) FROM jobs
         WHERE id IN (SELECT unhex(value) FROM json_each(?2))",
    )
    .bind(now)
    .bind(ids_json(claimed.iter().map(|(job, _)| job.id.as_uuid())))
    .execute(&mut *conn)
    .await
    .db("recording claims")?;
    let mut clocks: BTreeMap<&str, i64> = BTreeMap::new();
    for (job, vtime) in claimed {
        let clock = clocks.entry(job.queue.as_str()).or_insert(*vtime);
        *clock = (*clock).max(*vtime);
    }
    for (queue, vtime) in clocks {
        sqlx::query(
            "INSERT INTO queue_clocks (queue, vtime) VALUES (?1, ?2)
             ON CONFLICT (queue) DO UPDATE SET vtime = max(vtime, excluded.vtime)",
        )
        .bind(queue)
        .bind(vtime)
        .execute(&mut *conn)
        .await
        .db("advancing a queue clock")?;
    }
    Ok(())
}

// ---- listing -----------------------------------------------------------------

/// A page of a tenant's jobs, newest first: `?1` tenant, `?2` the cursor (16
/// bytes of 0xff for the first page, so the search of `jobs_tenant_idx` is
/// always `tenant_id = ?1 AND id < ?2`), `?3` states as a JSON array (empty:
/// any), `?4` kind, `?5` queue, `?6`/`?7` the created range `[from, to)` in
/// microseconds, `?8` limit.
const LIST_SQL: &str = "
    SELECT * FROM jobs
    WHERE tenant_id = ?1 AND id < ?2
      AND (json_array_length(?3) = 0 OR state IN (SELECT value FROM json_each(?3)))
      AND (?4 IS NULL OR kind = ?4)
      AND (?5 IS NULL OR queue = ?5)
      AND (?6 IS NULL OR created_at >= ?6)
      AND (?7 IS NULL OR created_at < ?7)
    ORDER BY id DESC
    LIMIT ?8";

// ---- pruning -----------------------------------------------------------------

/// Deletes the jobs `?1` names (a JSON array of ids) with their attempts and
/// their progress and checkpoint events; their transitions stay, the audit
/// log's record of them (`audit/sqlite.rs`). The jobs go last, so the last
/// count is the number of jobs pruned.
const PRUNE_SQL: [&str; 3] = [
    "DELETE FROM job_events WHERE job_id IN (SELECT unhex(value) FROM json_each(?1))
         AND kind IN ('progress', 'checkpoint')",
    "DELETE FROM job_attempts WHERE job_id IN (SELECT unhex(value) FROM json_each(?1))",
    "DELETE FROM jobs WHERE id IN (SELECT unhex(value) FROM json_each(?1))",
];

// ---- finishing attempts ------------------------------------------------------

/// A fenced UPDATE that ends the current attempt (`?1` id, `?2` attempt, `?3`
/// now) and answers what [`EndedAttempt`] reads.
macro_rules! end_attempt_statement {
    ($set:literal) => {
        concat!(
            "UPDATE jobs SET lease_expires_at = NULL, ",
            $set,
            " WHERE id = ?1 AND attempt = ?2 AND state = 'running'
             RETURNING tenant_id, attempt, worker_id, started_at, state, queue, run_at, last_error,
                       error_code, error_message"
        )
    };
}

/// `?4` error, `?5` retry at, `?6` permanent, `?7` public code, `?8` public
/// message.
const FAIL_SQL: &str = end_attempt_statement!(
    "failed_attempts = failed_attempts + 1,
     state = CASE WHEN ?6 OR failed_attempts + 1 >= max_attempts THEN 'failed'
                  WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
     run_at = CASE WHEN ?6 OR failed_attempts + 1 >= max_attempts OR cancel_requested THEN run_at ELSE ?5 END,
     finished_at = CASE WHEN ?6 OR failed_attempts + 1 >= max_attempts OR cancel_requested THEN ?3 END,
     last_error = ?4, error_code = ?7, error_message = ?8"
);

const CANCELLED_SQL: &str = end_attempt_statement!("state = 'cancelled', finished_at = ?3");

const RELEASED_SQL: &str = end_attempt_statement!(
    "state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
     run_at = ?3, finished_at = CASE WHEN cancel_requested THEN ?3 END"
);

/// The job as an [`end_attempt_statement!`] left it.
struct EndedAttempt {
    tenant_id: String,
    attempt: i32,
    worker_id: Option<String>,
    started_at: Option<i64>,
    state: JobState,
    queue: String,
    run_at: i64,
    last_error: Option<String>,
    public_error: Option<PublicError>,
}

impl EndedAttempt {
    fn from_row(row: &SqliteRow) -> Result<Self> {
        let state: String = row
            .try_get("state")
            .db("reading the finished job's state")?;
        Ok(EndedAttempt {
            tenant_id: row
                .try_get("tenant_id")
                .db("reading the finished job's tenant")?,
            attempt: row
                .try_get("attempt")
                .db("reading the finished job's attempt")?,
            worker_id: row
                .try_get("worker_id")
                .db("reading the finished job's worker")?,
            started_at: row
                .try_get("started_at")
                .db("reading the finished job's start")?,
            state: state
                .parse()
                .map_err(|_| Error::corrupt("job state", &state))?,
            queue: row
                .try_get("queue")
                .db("reading the finished job's queue")?,
            run_at: row
                .try_get("run_at")
                .db("reading the finished job's run_at")?,
            last_error: row
                .try_get("last_error")
                .db("reading the finished job's error")?,
            public_error: PublicError::from_columns(
                row.try_get("error_code")
                    .db("reading the finished job's error code")?,
                row.try_get("error_message")
                    .db("reading the finished job's error message")?,
            ),
        })
    }
}

/// What an ended attempt writes to the history and the event log.
struct AttemptRecord {
    outcome: AttemptOutcome,
    /// The attempt's own error: only a failure has one.
    error: Option<String>,
    /// What tenants see of it.
    public: Option<PublicError>,
    event: &'static str,
    data: Option<Value>,
}

fn failure_record(ended: &EndedAttempt) -> Result<AttemptRecord> {
    let (outcome, event) = match ended.state {
        JobState::Queued => (AttemptOutcome::Retried, "retry_scheduled"),
        JobState::Cancelled => (AttemptOutcome::Failed, "cancelled"),
        _ => (AttemptOutcome::Failed, "failed"),
    };
    let run_at = time_from_micros(ended.run_at)?;
    Ok(AttemptRecord {
        outcome,
        error: ended.last_error.clone(),
        public: ended.public_error.clone(),
        event,
        data: Some(
            json!({"error": ended.public_error, "runAt": run_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}),
        ),
    })
}

/// A cancelled or released attempt; a release whose job had a cancel request
/// ends the job as cancelled, and the event says so.
fn plain_record(outcome: AttemptOutcome) -> impl FnOnce(&EndedAttempt) -> Result<AttemptRecord> {
    move |ended| {
        Ok(AttemptRecord {
            outcome,
            error: None,
            public: None,
            event: if ended.state == JobState::Cancelled {
                "cancelled"
            } else {
                outcome.as_str()
            },
            data: None,
        })
    }
}

// ---- shared helpers ----------------------------------------------------------

async fn insert_event(
    conn: &mut SqliteConnection,
    job_id: JobId,
    tenant_id: &str,
    at: i64,
    attempt: Option<i32>,
    kind: &str,
    data: Option<Value>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_events (job_id, tenant_id, at, attempt, kind, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(job_id.as_uuid())
    .bind(tenant_id)
    .bind(at)
    .bind(attempt)
    .bind(kind)
    .bind(data.map(|data| data.to_string()))
    .execute(conn)
    .await
    .db("recording a job event")?;
    Ok(())
}

async fn find_job<'c, E>(executor: E, tenant_id: &str, id: JobId) -> Result<Option<Job>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1 AND tenant_id = ?2")
        .bind(id.as_uuid())
        .bind(tenant_id)
        .fetch_optional(executor)
        .await
        .db("reading a job")?;
    row.as_ref().map(job_from_row).transpose()
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros_after(now: i64, duration: Duration) -> i64 {
    now.saturating_add(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX))
}

/// A stored time (microseconds since the epoch), or `Corrupt`.
pub(crate) fn time_from_micros(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        Error::corrupt(
            "timestamp",
            format!("{micros} microseconds is out of range"),
        )
    })
}

fn time_at(row: &SqliteRow, column: &str, context: &'static str) -> Result<DateTime<Utc>> {
    time_from_micros(row.try_get(column).db(context)?)
}

fn optional_time_at(
    row: &SqliteRow,
    column: &str,
    context: &'static str,
) -> Result<Option<DateTime<Utc>>> {
    let micros: Option<i64> = row.try_get(column).db(context)?;
    micros.map(time_from_micros).transpose()
}

fn json_at(row: &SqliteRow, column: &str, context: &'static str) -> Result<Value> {
    let text: String = row.try_get(column).db(context)?;
    serde_json::from_str(&text).map_err(|e| Error::corrupt(context, e))
}

fn optional_json_at(row: &SqliteRow, column: &str, context: &'static str) -> Result<Option<Value>> {
    let text: Option<String> = row.try_get(column).db(context)?;
    text.map(|text| serde_json::from_str(&text).map_err(|e| Error::corrupt(context, e)))
        .transpose()
}

/// The hex text that `unhex()` turns back into the id's blob.
fn hex(id: Uuid) -> String {
    id.simple().to_string()
}

/// A JSON array of ids, read in SQL as `SELECT unhex(value) FROM json_each(?)`.
fn ids_json(ids: impl IntoIterator<Item = Uuid>) -> String {
    Value::Array(ids.into_iter().map(|id| Value::String(hex(id))).collect()).to_string()
}

fn job_from_row(row: &SqliteRow) -> Result<Job> {
    let state: String = row.try_get("state").db("reading job state")?;
    let progress = optional_json_at(row, "progress", "reading job progress")?;
    Ok(Job {
        id: JobId::from_uuid(row.try_get("id").db("reading job id")?),
        tenant_id: row.try_get("tenant_id").db("reading job tenant")?,
        kind: row.try_get("kind").db("reading job kind")?,
        queue: row.try_get("queue").db("reading job queue")?,
        state: state
            .parse()
            .map_err(|_| Error::corrupt("job state", &state))?,
        priority: row.try_get("priority").db("reading job priority")?,
        params: json_at(row, "params", "reading job params")?,
        run_at: time_at(row, "run_at", "reading job run_at")?,
        attempt: row.try_get("attempt").db("reading job attempt")?,
        failed_attempts: row
            .try_get("failed_attempts")
            .db("reading job failed_attempts")?,
        max_attempts: row.try_get("max_attempts").db("reading job max_attempts")?,
        lease_expires_at: optional_time_at(row, "lease_expires_at", "reading job lease")?,
        worker_id: row.try_get("worker_id").db("reading job worker")?,
        cancel_requested: row
            .try_get("cancel_requested")
            .db("reading job cancel flag")?,
        progress: progress
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::corrupt("job progress", e))?,
        checkpoint: optional_json_at(row, "checkpoint", "reading job checkpoint")?,
        result: optional_json_at(row, "result", "reading job result")?,
        last_error: row.try_get("last_error").db("reading job error")?,
        public_error: PublicError::from_columns(
            row.try_get("error_code").db("reading job error code")?,
            row.try_get("error_message")
                .db("reading job error message")?,
        ),
        idempotency_key: row
            .try_get("idempotency_key")
            .db("reading job idempotency key")?,
        created_at: time_at(row, "created_at", "reading job created_at")?,
        started_at: optional_time_at(row, "started_at", "reading job started_at")?,
        finished_at: optional_time_at(row, "finished_at", "reading job finished_at")?,
    })
}

/// New events of several jobs: `?1` a JSON array of `[id hex, the id it
/// has seen]`, `?2` rows per job. One `job_events_job_idx` range per job.
const EVENTS_OF_JOBS_SQL: &str = "
    SELECT id, job_id, at, attempt, kind, data FROM (
        SELECT e.id, e.job_id, e.at, e.attempt, e.kind, e.data,
               row_number() OVER (PARTITION BY e.job_id ORDER BY e.id) AS nth
        FROM json_each(?1) AS f
        JOIN job_events e
          ON e.job_id = unhex(json_extract(f.value, '$[0]'))
         AND e.id > json_extract(f.value, '$[1]')
    )
    WHERE nth <= ?2
    ORDER BY id";

#[async_trait]
impl JobStore for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<()> {
        super::migrations::migrator(super::migrations::SQLITE)
            .await?
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .db("pinging SQLite")?;
        Ok(())
    }

    async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        let mut w = self.begin_write("starting an enqueue transaction").await?;
        let answers = enqueue_in(w.conn(), jobs, now_micros()).await?;
        w.commit("committing enqueued jobs").await?;
        let created = jobs
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.created);
        self.wake_queues(created.map(|(job, _)| job.queue.as_str()));
        Ok(answers)
    }

    async fn enqueue_within_quota(
        &self,
        jobs: &[NewJob],
        max_queued: Option<i64>,
        period: Period,
        actor: &Actor,
    ) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        // The write lock (this process's mutex and BEGIN IMMEDIATE) is held
        // from the count to the commit: no other writer can queue jobs between.
        let mut w = self.begin_write("starting an enqueue transaction").await?;
        let queued_before = match max_queued {
            Some(_) => queued_counts(w.conn(), jobs).await?,
            None => BTreeMap::new(),
        };
        let now = now_micros();
        let answers = enqueue_in(w.conn(), jobs, now).await?;
        let created = count_created(jobs, &answers);
        if let Some(limit) = max_queued {
            if let Err(refused) = check_max_queued(limit, &queued_before, &created) {
                w.rollback().await?;
                return Err(refused);
            }
        }
        add_usage(w.conn(), &created, period).await?;
        for (tenant_id, change) in job_creations(jobs, &answers) {
            record(w.conn(), now, tenant_id, actor, &change).await?;
        }
        w.commit("committing enqueued jobs").await?;
        let created = jobs
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.created);
        self.wake_queues(created.map(|(job, _)| job.queue.as_str()));
        Ok(answers)
    }

    async fn usage(&self, tenant_id: &str, period: Period) -> Result<Vec<KindUsage>> {
        let rows = sqlx::query(
            "SELECT kind, operations FROM usage WHERE tenant_id = ?1 AND period = ?2 ORDER BY kind",
        )
        .bind(tenant_id)
        .bind(period.to_string())
        .fetch_all(&self.pool)
        .await
        .db("reading usage")?;
        rows.iter()
            .map(|row| {
                Ok(KindUsage {
                    kind: row.try_get("kind").db("reading usage kind")?,
                    operations: row.try_get("operations").db("reading usage operations")?,
                })
            })
            .collect()
    }

    async fn get_job(&self, tenant_id: &str, id: JobId) -> Result<Job> {
        find_job(&self.pool, tenant_id, id)
            .await?
            .ok_or(Error::NotFound(id))
    }

    async fn find_job_by_idempotency_key(&self, tenant_id: &str, key: &str) -> Result<Option<Job>> {
        sqlx::query("SELECT * FROM jobs WHERE tenant_id = ?1 AND idempotency_key = ?2")
            .bind(tenant_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .db("reading a job by its idempotency key")?
            .as_ref()
            .map(job_from_row)
            .transpose()
    }

    async fn list_jobs(
        &self,
        tenant_id: &str,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
        let rows = sqlx::query(LIST_SQL)
            .bind(tenant_id)
            .bind(after.map_or(Uuid::max(), |id| id.as_uuid()))
            .bind(json!(states).to_string())
            .bind(filter.kind.as_deref())
            .bind(filter.queue.as_deref())
            .bind(filter.created_from.map(|at| at.timestamp_micros()))
            .bind(filter.created_to.map(|at| at.timestamp_micros()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .db("listing jobs")?;
        rows.iter().map(job_from_row).collect()
    }

    async fn attempts_of(&self, tenant_id: &str, id: JobId) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(
            "SELECT attempt, worker_id, started_at, finished_at, outcome, error, error_code, error_message
             FROM job_attempts WHERE job_id = ?1 AND tenant_id = ?2 ORDER BY attempt",
        )
        .bind(id.as_uuid())
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .db("reading job attempts")?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome").db("reading attempt outcome")?;
                Ok(Attempt {
                    attempt: row.try_get("attempt").db("reading attempt number")?,
                    worker_id: row.try_get("worker_id").db("reading attempt worker")?,
                    started_at: optional_time_at(row, "started_at", "reading attempt start")?,
                    finished_at: time_at(row, "finished_at", "reading attempt end")?,
                    outcome: AttemptOutcome::from_str(&outcome)?,
                    error: row.try_get("error").db("reading attempt error")?,
                    public_error: PublicError::from_columns(
                        row.try_get("error_code").db("reading attempt error code")?,
                        row.try_get("error_message")
                            .db("reading attempt error message")?,
                    ),
                })
            })
            .collect()
    }

    async fn job_events(
        &self,
        tenant_id: &str,
        id: JobId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<JobEvent>> {
        // A pruned job's transitions stay (the audit log reads them), but
        // its event log went with it: the job must still exist.
        let rows = sqlx::query(
            "SELECT id, at, attempt, kind, data FROM job_events
             WHERE job_id = ?1 AND tenant_id = ?2 AND id > ?3
               AND EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND tenant_id = ?2)
             ORDER BY id LIMIT ?4",
        )
        .bind(id.as_uuid())
        .bind(tenant_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .db("reading job events")?;
        if rows.is_empty() {
            self.get_job(tenant_id, id).await?;
        }
        rows.iter()
            .map(|row| {
                Ok(JobEvent {
                    id: row.try_get("id").db("reading event id")?,
                    job_id: id,
                    at: time_at(row, "at", "reading event time")?,
                    attempt: row.try_get("attempt").db("reading event attempt")?,
                    kind: row.try_get("kind").db("reading event kind")?,
                    data: optional_json_at(row, "data", "reading event data")?,
                })
            })
            .collect()
    }

    async fn events_of_jobs(
        &self,
        cursors: &[(JobId, i64)],
        per_job: u32,
    ) -> Result<Vec<JobEvent>> {
        if cursors.is_empty() {
            return Ok(Vec::new());
        }
        let followed = Value::Array(
            cursors
                .iter()
                .map(|(id, after)| serde_json::json!([hex(id.as_uuid()), after]))
                .collect(),
        )
        .to_string();
        let rows = sqlx::query(EVENTS_OF_JOBS_SQL)
            .bind(followed)
            .bind(i64::from(per_job))
            .fetch_all(&self.pool)
            .await
            .db("reading new events of followed jobs")?;
        rows.iter()
            .map(|row| {
                Ok(JobEvent {
                    id: row.try_get("id").db("reading event id")?,
                    job_id: JobId::from_uuid(row.try_get("job_id").db("reading event job")?),
                    at: time_at(row, "at", "reading event time")?,
                    attempt: row.try_get("attempt").db("reading event attempt")?,
                    kind: row.try_get("kind").db("reading event kind")?,
                    data: optional_json_at(row, "data", "reading event data")?,
                })
            })
            .collect()
    }

    async fn cancel_as(&self, tenant_id: &str, id: JobId, actor: &Actor) -> Result<Job> {
        let mut w = self.begin_write("starting a cancel transaction").await?;
        let now = now_micros();
        let row = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                 cancel_requested = cancel_requested OR state = 'running',
                 finished_at = CASE WHEN state = 'queued' THEN ?3 ELSE finished_at END
             WHERE id = ?1 AND tenant_id = ?2
               AND (state = 'queued' OR (state = 'running' AND cancel_requested = 0))
             RETURNING *",
        )
        .bind(id.as_uuid())
        .bind(tenant_id)
        .bind(now)
        .fetch_optional(w.conn())
        .await
        .db("cancelling a job")?;
        let Some(row) = row else {
            let job = find_job(w.conn(), tenant_id, id).await?;
            w.rollback().await?;
            return cancel_unchanged(id, job);
        };
        let job = job_from_row(&row)?;
        let event = if job.state == JobState::Cancelled {
            "cancelled"
        } else {
            "cancel_requested"
        };
        record(w.conn(), now, tenant_id, actor, &job_cancelled(&job)).await?;
        insert_event(w.conn(), id, tenant_id, now, Some(job.attempt), event, None).await?;
        w.commit("committing a cancel").await?;
        if job.state == JobState::Running {
            self.wakes.send(Wake::Cancel(id));
        }
        Ok(job)
    }

    async fn retry_within_quota(
        &self,
        tenant_id: &str,
        id: JobId,
        max_queued: Option<i64>,
        actor: &Actor,
    ) -> Result<Job> {
        let mut w = self.begin_write("starting a retry transaction").await?;
        let now = now_micros();
        // A fresh virtual time, as for a new job: the old one would put the
        // retried job ahead of every tenant's current work.
        let vtime: Option<i64> = sqlx::query_scalar(
            "INSERT INTO fair_queues (tenant_id, queue, next_vtime)
             SELECT j.tenant_id, j.queue, coalesce((SELECT c.vtime FROM queue_clocks c WHERE c.queue = j.queue), 0) + 1
             FROM jobs j WHERE j.id = ?1 AND j.tenant_id = ?2 AND j.state IN ('failed', 'cancelled')
             ON CONFLICT (tenant_id, queue) DO UPDATE SET next_vtime = max(next_vtime + 1, excluded.next_vtime)
             RETURNING next_vtime - 1",
        )
        .bind(id.as_uuid())
        .bind(tenant_id)
        .fetch_optional(w.conn())
        .await
        .db("allocating a virtual time for a retry")?;
        let row = sqlx::query(
            "UPDATE jobs SET state = 'queued', failed_attempts = 0, run_at = ?3, finished_at = NULL,
                             cancel_requested = 0, lease_expires_at = NULL, vtime = coalesce(?4, vtime),
                             counted_in_quota = EXISTS (SELECT 1 FROM tenants t
                                                        WHERE t.id = ?2 AND t.max_queued IS NOT NULL)
             WHERE id = ?1 AND tenant_id = ?2 AND state IN ('failed', 'cancelled')
             RETURNING *",
        )
        .bind(id.as_uuid())
        .bind(tenant_id)
        .bind(now)
        .bind(vtime)
        .fetch_optional(w.conn())
        .await
        .db("retrying a job")?;
        let Some(row) = row else {
            let job = find_job(w.conn(), tenant_id, id).await?;
            w.rollback().await?;
            return Err(retry_unchanged(id, job));
        };
        let job = job_from_row(&row)?;
        if let Some(limit) = max_queued {
            let queued = queued_count(w.conn(), tenant_id).await?;
            if queued > limit {
                w.rollback().await?;
                return Err(Error::QuotaExceeded {
                    limit,
                    current: queued - 1,
                });
            }
        }
        record(w.conn(), now, tenant_id, actor, &job_retried(&job)).await?;
        insert_event(
            w.conn(),
            id,
            tenant_id,
            now,
            Some(job.attempt),
            "requeued",
            None,
        )
        .await?;
        w.commit("committing a retry").await?;
        self.wake_queues([job.queue.as_str()]);
        Ok(job)
    }

    async fn set_tenant_max_running(
        &self,
        tenant_id: &str,
        max_running: Option<i32>,
    ) -> Result<()> {
        validate_max_running(max_running)?;
        let _lock = self.lock_for_write().await;
        match max_running {
            Some(max) => sqlx::query(
                "INSERT INTO tenant_limits (tenant_id, max_running) VALUES (?1, ?2)
                 ON CONFLICT (tenant_id) DO UPDATE SET max_running = excluded.max_running",
            )
            .bind(tenant_id)
            .bind(max)
            .execute(&self.pool)
            .await
            .db("setting a tenant's running cap")?,
            None => sqlx::query("DELETE FROM tenant_limits WHERE tenant_id = ?1")
                .bind(tenant_id)
                .execute(&self.pool)
                .await
                .db("clearing a tenant's running cap")?,
        };
        Ok(())
    }

    async fn claim(
        &self,
        request: &ClaimRequest,
        default_max_running: Option<i32>,
    ) -> Result<Vec<Job>> {
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(vec![]);
        }
        let queues: BTreeSet<&str> = request.queues.iter().map(String::as_str).collect();
        let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
        let scan = limit.saturating_mul(4).max(64);
        let sql = claim_sql(queues.len());
        let mut w = self.begin_write("starting a claim transaction").await?;
        // Leases run from the claim, not from before the wait for the lock.
        let now = now_micros();
        let mut query = sqlx::query(&sql)
            .bind(limit)
            .bind(&request.worker_id)
            .bind(now)
            .bind(micros_after(now, request.lease))
            .bind(default_max_running)
            .bind(scan);
        for queue in &queues {
            query = query.bind(*queue);
        }
        let rows = query.fetch_all(w.conn()).await.db("claiming jobs")?;
        if rows.is_empty() {
            w.rollback().await?;
            return Ok(vec![]);
        }
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok((
                    job_from_row(row)?,
                    row.try_get("vtime").db("reading job vtime")?,
                ))
            })
            .collect::<Result<Vec<(Job, i64)>>>()?;
        claimed.sort_by_key(|(job, vtime)| (job.priority, *vtime));
        record_claims(w.conn(), &claimed, now).await?;
        w.commit("committing a claim").await?;
        Ok(claimed.into_iter().map(|(job, _)| job).collect())
    }

    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease_for: Duration,
    ) -> Result<Vec<HeartbeatReply>> {
        if leases.is_empty() {
            return Ok(vec![]);
        }
        let input: Vec<Value> = leases
            .iter()
            .map(|lease| json!([hex(lease.job_id.as_uuid()), lease.attempt]))
            .collect();
        // Straight to the write lock, past the gate: see `write_gate`.
        let _lock = self.write_lock.lock().await;
        let rows = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?2
             FROM (SELECT unhex(value ->> 0) AS lease_id, value ->> 1 AS lease_attempt FROM json_each(?1)) AS l
             WHERE jobs.id = l.lease_id AND jobs.attempt = l.lease_attempt AND jobs.state = 'running'
             RETURNING id, cancel_requested",
        )
        .bind(Value::Array(input).to_string())
        .bind(micros_after(now_micros(), lease_for))
        .fetch_all(&self.pool)
        .await
        .db("extending leases")?;
        rows.iter()
            .map(|row| {
                Ok(HeartbeatReply {
                    job_id: JobId::from_uuid(row.try_get("id").db("reading heartbeat id")?),
                    cancel_requested: row
                        .try_get("cancel_requested")
                        .db("reading heartbeat cancel flag")?,
                })
            })
            .collect()
    }

    async fn set_progress(&self, lease: Lease, progress: &Progress) -> Result<()> {
        let progress = serde_json::to_value(progress)
            .map_err(|e| Error::validation("progress", e.to_string()))?;
        let progress = json_without_nul(&progress).into_owned();
        self.write_running_job(
            lease,
            "UPDATE jobs SET progress = ?3 WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING tenant_id",
            progress.to_string(),
            "progress",
            Some(progress),
        )
        .await
    }

    async fn save_checkpoint(&self, lease: Lease, checkpoint: &Value) -> Result<()> {
        self.write_running_job(
            lease,
            "UPDATE jobs SET checkpoint = ?3 WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING tenant_id",
            json_without_nul(checkpoint).to_string(),
            "checkpoint",
            None,
        )
        .await
    }

    async fn finish(&self, lease: Lease, finish: &Finish) -> Result<()> {
        match finish {
            Finish::Succeeded { result } => {
                let applied = self.complete_many(&[(lease, result.clone())]).await?;
                if applied.is_empty() {
                    return Err(lease_lost(lease));
                }
                Ok(())
            }
            Finish::Failed {
                error,
                public,
                retry_at,
                permanent,
            } => {
                let bind = |q: SqliteQuery| {
                    q.bind(text_without_nul(error).into_owned())
                        .bind(retry_at.timestamp_micros())
                        .bind(*permanent)
                        .bind(text_without_nul(&public.code).into_owned())
                        .bind(text_without_nul(&public.message).into_owned())
                };
                self.end_attempt(lease, FAIL_SQL, bind, failure_record)
                    .await
            }
            Finish::Cancelled => {
                let record = plain_record(AttemptOutcome::Cancelled);
                self.end_attempt(lease, CANCELLED_SQL, |q| q, record).await
            }
            Finish::Released => {
                let record = plain_record(AttemptOutcome::Released);
                self.end_attempt(lease, RELEASED_SQL, |q| q, record).await
            }
        }
    }

    async fn complete_many(&self, completed: &[(Lease, Value)]) -> Result<Vec<JobId>> {
        if completed.is_empty() {
            return Ok(vec![]);
        }
        let input: Vec<Value> = completed
            .iter()
            .map(|(lease, result)| {
                json!([
                    hex(lease.job_id.as_uuid()),
                    lease.attempt,
                    json_without_nul(result).to_string()
                ])
            })
            .collect();
        let mut w = self
            .begin_write("starting a completion transaction")
            .await?;
        let now = now_micros();
        let applied: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'succeeded', result = c.done_result, finished_at = ?2, lease_expires_at = NULL,
                 last_error = NULL, error_code = NULL, error_message = NULL,
                 progress = CASE WHEN json_type(progress, '$.total') IN ('integer', 'real')
                                 THEN json_set(progress, '$.current', json_extract(progress, '$.total'))
                                 ELSE progress END
             FROM (SELECT unhex(value ->> 0) AS done_id, value ->> 1 AS done_attempt, value ->> 2 AS done_result
                   FROM json_each(?1)) AS c
             WHERE jobs.id = c.done_id AND jobs.attempt = c.done_attempt AND jobs.state = 'running'
             RETURNING id",
        )
        .bind(Value::Array(input).to_string())
        .bind(now)
        .fetch_all(w.conn())
        .await
        .db("completing jobs")?;
        if applied.is_empty() {
            w.rollback().await?;
            return Ok(vec![]);
        }
        let ids = ids_json(applied.iter().copied());
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, tenant_id, worker_id, started_at, finished_at, outcome)
             SELECT id, attempt, tenant_id, worker_id, started_at, ?2, 'succeeded' FROM jobs
             WHERE id IN (SELECT unhex(value) FROM json_each(?1))",
        )
        .bind(&ids)
        .bind(now)
        .execute(w.conn())
        .await
        .db("recording completed attempts")?;
        sqlx::query(
            "INSERT INTO job_events (job_id, tenant_id, at, attempt, kind)
             SELECT id, tenant_id, ?2, attempt, 'succeeded' FROM jobs
             WHERE id IN (SELECT unhex(value) FROM json_each(?1))",
        )
        .bind(&ids)
        .bind(now)
        .execute(w.conn())
        .await
        .db("recording completions")?;
        w.commit("committing completed jobs").await?;
        Ok(applied.into_iter().map(JobId::from_uuid).collect())
    }

    async fn rescue_expired(&self, limit: u32) -> Result<Vec<Rescued>> {
        let mut w = self.begin_write("starting a rescue transaction").await?;
        let now = now_micros();
        let rows = sqlx::query(
            "UPDATE jobs SET
                 failed_attempts = failed_attempts + 1,
                 state = CASE WHEN failed_attempts + 1 >= max_attempts THEN 'failed'
                              WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
                 run_at = ?1,
                 finished_at = CASE WHEN failed_attempts + 1 >= max_attempts OR cancel_requested THEN ?1 END,
                 last_error = ?3, error_code = ?4, error_message = ?5,
                 lease_expires_at = NULL
             WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < ?1
                          ORDER BY lease_expires_at LIMIT ?2)
               AND state = 'running'
             RETURNING id, tenant_id, state, queue",
        )
        .bind(now)
        .bind(i64::from(limit))
        .bind(LEASE_EXPIRED_ERROR)
        .bind(FailureCode::WorkerLost.as_str())
        .bind(FailureCode::WorkerLost.message())
        .fetch_all(w.conn())
        .await
        .db("rescuing expired leases")?;
        if rows.is_empty() {
            w.rollback().await?;
            return Ok(vec![]);
        }
        let mut rescued = Vec::with_capacity(rows.len());
        let mut queues = Vec::new();
        for row in &rows {
            let state: String = row.try_get("state").db("reading a rescued job's state")?;
            let rescue = Rescued {
                job_id: JobId::from_uuid(row.try_get("id").db("reading a rescued job's id")?),
                tenant_id: row
                    .try_get("tenant_id")
                    .db("reading a rescued job's tenant")?,
                state: state.parse()?,
            };
            if rescue.state == JobState::Queued {
                queues.push(
                    row.try_get::<String, _>("queue")
                        .db("reading a rescued job's queue")?,
                );
            }
            rescued.push(rescue);
        }
        let ids = ids_json(rescued.iter().map(|r| r.job_id.as_uuid()));
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, tenant_id, worker_id, started_at, finished_at, outcome,
                                       error, error_code, error_message)
             SELECT id, attempt, tenant_id, worker_id, started_at, ?2, 'lease_expired', last_error,
                    error_code, error_message FROM jobs
             WHERE id IN (SELECT unhex(value) FROM json_each(?1))",
        )
        .bind(&ids)
        .bind(now)
        .execute(w.conn())
        .await
        .db("recording expired attempts")?;
        sqlx::query(
            "INSERT INTO job_events (job_id, tenant_id, at, attempt, kind, data)
             SELECT id, tenant_id, ?2, attempt, CASE state WHEN 'queued' THEN 'lease_expired' ELSE state END,
                    json_object('error', json_object('code', error_code, 'message', error_message))
             FROM jobs WHERE id IN (SELECT unhex(value) FROM json_each(?1))",
        )
        .bind(&ids)
        .bind(now)
        .execute(w.conn())
        .await
        .db("recording expired leases")?;
        w.commit("committing a rescue").await?;
        self.wake_queues(queues.iter().map(String::as_str));
        Ok(rescued)
    }

    async fn prune_finished(&self, finished_before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let mut w = self.begin_write("starting a prune transaction").await?;
        let doomed: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < ?1
             ORDER BY finished_at LIMIT ?2",
        )
        .bind(finished_before.timestamp_micros())
        .bind(i64::from(limit))
        .fetch_all(w.conn())
        .await
        .db("finding finished jobs")?;
        if doomed.is_empty() {
            w.rollback().await?;
            return Ok(0);
        }
        let ids = ids_json(doomed);
        let mut pruned = 0;
        for sql in PRUNE_SQL {
            pruned = sqlx::query(sql)
                .bind(&ids)
                .execute(w.conn())
                .await
                .db("pruning finished jobs")?
                .rows_affected();
        }
        w.commit("committing a prune").await?;
        Ok(pruned)
    }

    async fn count_by_state(&self) -> Result<Vec<(JobState, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await
                .db("counting jobs")?;
        state_counts(rows)
    }

    async fn count_by_state_of(&self, tenant_id: &str) -> Result<Vec<(JobState, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM jobs WHERE tenant_id = ?1 GROUP BY state ORDER BY state",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .db("counting a tenant's jobs")?;
        state_counts(rows)
    }

    async fn running_by_tenant(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query_as("SELECT tenant_id, count(*) FROM jobs WHERE state = 'running' GROUP BY tenant_id ORDER BY tenant_id")
            .fetch_all(&self.pool)
            .await
            .db("counting running jobs")
    }

    fn subscribe(&self) -> WakeReceiver {
        self.wakes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    static COUNTER: AtomicU64 = AtomicU64::new(0);

    /// Deletes a test database (and its WAL files) when the test ends.
    struct TempDb(std::path::PathBuf);

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut path = self.0.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// A fresh migrated store in its own file under the temp folder.
    async fn store() -> (SqliteStore, TempDb) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = Utc::now().timestamp_subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "longhaul_unit_{}_{nanos}_{n}.db",
            std::process::id()
        ));
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display()), 4)
            .await
            .expect("opening a test database");
        store.migrate().await.expect("migrating");
        (store, TempDb(path))
    }

    fn new_job(tenant_id: &str, params: Value) -> NewJob {
        NewJob {
            id: JobId::new(),
            tenant_id: tenant_id.to_string(),
            kind: "echo".to_string(),
            queue: "default".to_string(),
            priority: 5,
            params,
            run_at: None,
            max_attempts: 3,
            idempotency_key: None,
            inputs: Vec::new(),
        }
    }

    fn claim_request(limit: usize) -> ClaimRequest {
        ClaimRequest {
            queues: vec!["default".to_string()],
            limit,
            worker_id: "w1".to_string(),
            lease: Duration::from_secs(30),
        }
    }

    async fn event_kinds(store: &SqliteStore, tenant_id: &str, id: JobId) -> Vec<String> {
        let events = store
            .job_events(tenant_id, id, 0, 100)
            .await
            .expect("events");
        events.into_iter().map(|e| e.kind).collect()
    }

    #[tokio::test]
    async fn enqueue_claim_complete_round_trip() {
        let (store, _db) = store().await;
        let jobs = vec![
            new_job("a", json!({"n": 1})),
            new_job("b", json!({"n": 2})),
            new_job("a", json!({"n": 3})),
        ];
        let answers = store.enqueue(&jobs).await.expect("enqueue");
        assert!(answers.iter().all(|a| a.created));

        let claimed = store.claim(&claim_request(10), None).await.expect("claim");
        assert_eq!(claimed.len(), 3);
        // Fair order: the two tenants interleave (a, b, a).
        let tenants: Vec<&str> = claimed.iter().map(|j| j.tenant_id.as_str()).collect();
        assert_eq!(tenants, ["a", "b", "a"]);
        for job in &claimed {
            assert_eq!(job.state, JobState::Running);
            assert_eq!(job.attempt, 1);
            assert_eq!(job.worker_id.as_deref(), Some("w1"));
            assert!(job.lease_expires_at.expect("lease") > job.started_at.expect("started"));
        }
        assert!(store
            .claim(&claim_request(10), None)
            .await
            .expect("claim")
            .is_empty());

        let completed: Vec<(Lease, Value)> = claimed
            .iter()
            .map(|j| (j.lease(), json!({"ok": j.params["n"]})))
            .collect();
        let mut applied = store.complete_many(&completed).await.expect("complete");
        applied.sort();
        let mut ids: Vec<JobId> = claimed.iter().map(|j| j.id).collect();
        ids.sort();
        assert_eq!(applied, ids);

        let job = store.get_job("b", jobs[1].id).await.expect("get");
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.result, Some(json!({"ok": 2})));
        assert_eq!(job.params, json!({"n": 2}));
        assert!(job.finished_at.is_some() && job.lease_expires_at.is_none());
        assert_eq!(
            event_kinds(&store, "b", job.id).await,
            ["started", "succeeded"]
        );
        let started = store.job_events("b", job.id, 0, 1).await.expect("events");
        assert_eq!(started[0].data, Some(json!({"workerId": "w1"})));
        let attempts = store.job_attempts("b", job.id).await.expect("attempts");
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, AttemptOutcome::Succeeded);
        assert_eq!(
            store.count_by_state().await.expect("count"),
            [(JobState::Succeeded, 3)]
        );
        // Another tenant sees nothing.
        assert!(matches!(
            store.get_job("a", job.id).await,
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn stale_attempt_is_fenced_and_changes_nothing() {
        let (store, _db) = store().await;
        let job = new_job("a", json!({}));
        store
            .enqueue(std::slice::from_ref(&job))
            .await
            .expect("enqueue");
        let claimed = store.claim(&claim_request(1), None).await.expect("claim");
        let stale = Lease {
            job_id: job.id,
            attempt: claimed[0].attempt - 1,
        };
        let progress = Progress {
            current: 1,
            total: None,
            unit: None,
            message: None,
        };
        let lost = |r: Result<()>| matches!(r, Err(Error::LeaseLost { job_id, attempt }) if job_id == job.id && attempt == 0);
        assert!(lost(store.set_progress(stale, &progress).await));
        assert!(lost(store.save_checkpoint(stale, &json!({"at": 1})).await));
        assert!(lost(store.finish(stale, &Finish::Cancelled).await));
        let fail = Finish::Failed {
            error: "boom".into(),
            public: crate::failure::PublicError::job_failed("boom"),
            retry_at: Utc::now(),
            permanent: false,
        };
        assert!(lost(store.finish(stale, &fail).await));
        assert!(store
            .complete_many(&[(stale, json!(1))])
            .await
            .expect("complete")
            .is_empty());
        assert!(store
            .heartbeat(&[stale], Duration::from_secs(60))
            .await
            .expect("heartbeat")
            .is_empty());

        let after = store.get_job("a", job.id).await.expect("get");
        assert_eq!(after, claimed[0]);
        assert_eq!(event_kinds(&store, "a", job.id).await, ["started"]);
        assert!(matches!(
            store.job_attempts("a", job.id).await.as_deref(),
            Ok([])
        ));
    }

    #[tokio::test]
    async fn idempotency_key_answers_the_existing_job() {
        let (store, _db) = store().await;
        let mut first = new_job("a", json!({"x": [1, 2]}));
        first.idempotency_key = Some("key-1".into());
        let answer = store
            .enqueue(std::slice::from_ref(&first))
            .await
            .expect("enqueue");
        assert_eq!(
            answer,
            [Enqueued {
                id: first.id,
                created: true
            }]
        );

        let mut again = new_job("a", json!({"x": [1, 2]}));
        again.idempotency_key = Some("key-1".into());
        let answer = store
            .enqueue(&[again.clone(), new_job("a", json!({}))])
            .await
            .expect("enqueue");
        assert_eq!(
            answer[0],
            Enqueued {
                id: first.id,
                created: false
            }
        );
        assert!(answer[1].created);

        // The same key for another tenant is another job.
        let mut other_tenant = again.clone();
        other_tenant.id = JobId::new();
        other_tenant.tenant_id = "b".into();
        assert!(store.enqueue(&[other_tenant]).await.expect("enqueue")[0].created);

        // Different params: a conflict, and nothing of the batch is stored.
        let mut conflicting = again.clone();
        conflicting.id = JobId::new();
        conflicting.params = json!({"x": [2]});
        let bystander = new_job("a", json!({}));
        let result = store.enqueue(&[bystander.clone(), conflicting]).await;
        assert!(matches!(result, Err(Error::Conflict(_))), "{result:?}");
        assert!(matches!(
            store.get_job("a", bystander.id).await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(
            store.count_by_state().await.expect("count"),
            [(JobState::Queued, 3)]
        );
    }

    #[tokio::test]
    async fn running_caps_hold_per_tenant() {
        let (store, _db) = store().await;
        let jobs: Vec<NewJob> = (0..6)
            .map(|i| new_job(if i < 4 { "a" } else { "b" }, json!(i)))
            .collect();
        store.enqueue(&jobs).await.expect("enqueue");
        store
            .set_tenant_max_running("a", Some(1))
            .await
            .expect("cap");
        let claimed = store
            .claim(&claim_request(10), Some(5))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 3);
        assert_eq!(
            store.running_by_tenant().await.expect("running"),
            [("a".to_string(), 1), ("b".to_string(), 2)]
        );
        assert!(store
            .claim(&claim_request(10), Some(5))
            .await
            .expect("claim")
            .is_empty());
        store
            .set_tenant_max_running("a", None)
            .await
            .expect("uncap");
        assert_eq!(
            store
                .claim(&claim_request(10), Some(2))
                .await
                .expect("claim")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn failures_retry_then_fail_and_manual_retry_requeues() {
        let (store, _db) = store().await;
        let mut job = new_job("a", json!({}));
        job.max_attempts = 2;
        store
            .enqueue(std::slice::from_ref(&job))
            .await
            .expect("enqueue");
        let fail = Finish::Failed {
            error: "boom".into(),
            public: crate::failure::PublicError::job_failed("boom"),
            retry_at: Utc::now(),
            permanent: false,
        };
        for expected in [JobState::Queued, JobState::Failed] {
            let claimed = store.claim(&claim_request(1), None).await.expect("claim");
            store.finish(claimed[0].lease(), &fail).await.expect("fail");
            assert_eq!(
                store.get_job("a", job.id).await.expect("get").state,
                expected
            );
        }
        let failed = store.get_job("a", job.id).await.expect("get");
        assert_eq!(
            (failed.failed_attempts, failed.last_error.as_deref()),
            (2, Some("boom"))
        );
        let outcomes: Vec<AttemptOutcome> = store
            .job_attempts("a", job.id)
            .await
            .expect("attempts")
            .into_iter()
            .map(|a| a.outcome)
            .collect();
        assert_eq!(outcomes, [AttemptOutcome::Retried, AttemptOutcome::Failed]);
        let events = store.job_events("a", job.id, 0, 100).await.expect("events");
        assert_eq!(events[1].kind, "retry_scheduled");
        assert_eq!(
            events[1].data.as_ref().expect("data")["error"],
            json!({"code": "job_failed", "message": "boom"})
        );
        assert!(matches!(
            store.cancel("a", job.id).await,
            Err(Error::Conflict(_))
        ));

        let retried = store.retry("a", job.id).await.expect("retry");
        assert_eq!(
            (retried.state, retried.failed_attempts),
            (JobState::Queued, 0)
        );
        assert!(matches!(
            store.retry("a", job.id).await,
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            event_kinds(&store, "a", job.id)
                .await
                .last()
                .map(String::as_str),
            Some("requeued")
        );
    }

    #[tokio::test]
    async fn cancel_and_rescue() {
        let (store, _db) = store().await;
        let jobs = vec![
            new_job("a", json!(1)),
            new_job("a", json!(2)),
            new_job("a", json!(3)),
        ];
        store.enqueue(&jobs).await.expect("enqueue");
        let mut wakes = store.subscribe();
        let cancelled = store.cancel("a", jobs[2].id).await.expect("cancel queued");
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert_eq!(
            store.cancel("a", jobs[2].id).await.expect("cancel again"),
            cancelled
        );

        let mut request = claim_request(2);
        request.lease = Duration::ZERO;
        let claimed = store.claim(&request, None).await.expect("claim");
        assert_eq!(claimed.len(), 2);
        let running = store
            .cancel("a", claimed[0].id)
            .await
            .expect("cancel running");
        assert!(running.cancel_requested && running.state == JobState::Running);
        assert_eq!(
            wakes.recv().await.expect("wake"),
            Wake::Cancel(claimed[0].id)
        );

        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut rescued = store.rescue_expired(10).await.expect("rescue");
        rescued.sort_by_key(|r| r.job_id);
        assert_eq!(rescued.len(), 2);
        let state_of = |id| rescued.iter().find(|r| r.job_id == id).map(|r| r.state);
        // The job with a cancel request ends cancelled; the other is queued again.
        assert_eq!(state_of(claimed[0].id), Some(JobState::Cancelled));
        assert_eq!(state_of(claimed[1].id), Some(JobState::Queued));
        assert_eq!(
            wakes.recv().await.expect("wake"),
            Wake::Queue("default".into())
        );
        let attempts = store
            .job_attempts("a", claimed[1].id)
            .await
            .expect("attempts");
        assert_eq!(attempts[0].outcome, AttemptOutcome::LeaseExpired);
        assert_eq!(attempts[0].error.as_deref(), Some(LEASE_EXPIRED_ERROR));
        let events = store
            .job_events("a", claimed[1].id, 0, 100)
            .await
            .expect("events");
        assert_eq!(
            events.last().map(|e| e.kind.as_str()),
            Some("lease_expired")
        );

        // The cancelled queued job and the job rescued as cancelled.
        assert_eq!(
            store.prune_finished(Utc::now(), 10).await.expect("prune"),
            2
        );
        assert!(matches!(
            store.job_events("a", jobs[2].id, 0, 10).await,
            Err(Error::NotFound(_))
        ));
        // Its transition stays: it is the audit log's record of the job.
        let kept: Vec<String> =
            sqlx::query_scalar("SELECT kind FROM job_events WHERE job_id = ?1 ORDER BY id")
                .bind(jobs[2].id.as_uuid())
                .fetch_all(&store.pool)
                .await
                .expect("kinds");
        assert_eq!(kept, ["cancelled"], "the transition outlives its job");
    }

    #[tokio::test]
    async fn ended_attempts_record_only_their_own_error() {
        let (store, _db) = store().await;
        let jobs = vec![new_job("a", json!(1)), new_job("a", json!(2))];
        store.enqueue(&jobs).await.expect("enqueue");
        let fail = Finish::Failed {
            error: "exit 1: \u{0}garbage".into(),
            public: crate::failure::PublicError::job_failed("exit 1: \u{0}garbage"),
            retry_at: Utc::now(),
            permanent: false,
        };
        for job in store.claim(&claim_request(2), None).await.expect("claim") {
            store.finish(job.lease(), &fail).await.expect("fail");
        }
        let again = store.claim(&claim_request(2), None).await.expect("claim");
        store.cancel("a", again[0].id).await.expect("cancel");
        store
            .finish(again[0].lease(), &Finish::Cancelled)
            .await
            .expect("cancelled");
        store
            .finish(again[1].lease(), &Finish::Released)
            .await
            .expect("released");
        for (job, outcome) in [
            (&again[0], AttemptOutcome::Cancelled),
            (&again[1], AttemptOutcome::Released),
        ] {
            let attempts = store.job_attempts("a", job.id).await.expect("attempts");
            let recorded: Vec<(AttemptOutcome, Option<&str>)> = attempts
                .iter()
                .map(|a| (a.outcome, a.error.as_deref()))
                .collect();
            let replaced = "exit 1: \u{FFFD}garbage";
            assert_eq!(
                recorded,
                [(AttemptOutcome::Retried, Some(replaced)), (outcome, None)]
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn caps_hold_across_processes() {
        let (store, db) = store().await;
        let other = SqliteStore::connect(&format!("sqlite://{}", db.0.display()), 4)
            .await
            .expect("a second pool");
        let jobs: Vec<NewJob> = (0..50).map(|i| new_job("a", json!(i))).collect();
        store.enqueue(&jobs).await.expect("enqueue");
        store
            .set_tenant_max_running("a", Some(5))
            .await
            .expect("cap");
        let claimers = (0..8).map(|i| {
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                store
                    .claim(&claim_request(3), None)
                    .await
                    .expect("claim")
                    .len()
            })
        });
        let mut claimed = 0;
        for claimer in claimers.collect::<Vec<_>>() {
            claimed += claimer.await.expect("join");
        }
        assert_eq!(claimed, 5);
    }
}
