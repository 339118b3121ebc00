//! The PostgreSQL job store: the queue engine's SQL (the CRUD-shaped domains
//! are shared, in `store/<domain>.rs`); the schema lives in
//! `migrations/postgres/`.
//!
//! Claims pick, reserve capped tenants' slots, update and log the jobs in one
//! statement, with no lock shared by all claims (`CLAIM_SQL` says how running
//! caps stay exact). Wake-ups use LISTEN/NOTIFY with identifiers only (queue
//! names, job ids).

pub(crate) mod audit;
mod claim_floor;
pub(crate) mod enqueue_lock;
mod schedule;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, PgConnection, Row};
use uuid::Uuid;

use claim_floor::{ClaimFloors, NO_FLOOR};

use super::pool::{probe_postgres, PoolSettings};
use super::wake::{Wake, WakeHub, WakeReceiver, CANCEL_CHANNEL, QUEUE_CHANNEL};
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
use audit::{insert_change as record, insert_changes as insert_changes_pg};

/// The session settings of the claim connections: no sequential scans (the
/// planner cannot estimate the "not a full tenant" filter and would otherwise
/// sort the whole queue instead of reading the claim index in order), and the
/// cached generic plan (re-planning this statement costs more than running
/// it). Claims run on connections of their own that run nothing else, so the
/// claim is one statement in one round trip, committed on its own.
const CLAIM_SESSION_SETTINGS: [(&str, &str); 2] = [
    ("enable_seqscan", "off"),
    ("plan_cache_mode", "force_generic_plan"),
];

/// Most claim connections per store: a worker pool has at most a few claims
/// in flight, and nothing else runs on them.
const MAX_CLAIM_CONNECTIONS: u32 = 4;

/// The claim, in one statement and without a shared lock: due candidates per
/// queue in (priority, vtime) order, skipping full tenants and rows other
/// claims hold (`FOR UPDATE SKIP LOCKED`); capped tenants' slots reserved on
/// their `tenant_running` row; the granted jobs marked running with a lease,
/// logged, and the queue clocks advanced. `$1` queues, `$2` limit, `$3`
/// worker, `$4` lease seconds, `$5` default cap, `$6`/`$7` each queue's floor
/// (priority, vtime): where its read of the claim index starts.
///
/// **Floors.** Claimed jobs' entries stay in the claim index until vacuum, so
/// each claim reads only the stretches of the index from the queue's floor on
/// and the priorities more urgent than it, and answers the queue's new head
/// (`head_*` columns, on every row) for the next claim (`claim_floor.rs`).
///
/// **Running caps stay exact.** A capped tenant's slots are reserved by an
/// `UPDATE … WHERE running < cap` on its counter row: a second claim of the
/// same tenant waits for the first to commit, then re-evaluates the row as
/// committed (read committed's update recheck), so two claims can never both
/// take the last slot. A tenant's first capped claim inserts the row, counted
/// from the jobs table; a concurrent first claim meets the insert's conflict
/// and is granted nothing this time. Finishing an attempt gives the slot back
/// in the statement that records it (`GIVE_BACK_SLOTS`). Uncapped tenants have
/// no row and cost nothing.
///
/// Candidates of a tenant that reached its cap within this claim are left
/// (`capped_out` counts them, on every row; the one row of a claim that got
/// no job has NULL job columns): [`PgStore::claim`] then claims again for the
/// slots they would have taken, with those tenants now skipped as full.
///
/// The picked jobs are updated by `id = ANY (ARRAY(…))`, a probe of the
/// primary key per id, not by a join with `picked`: the generic plan may make
/// the join a merge join that walks the primary key from its start up to the
/// picked ids, which reads every job claimed before them (340 ms per claim
/// after 130,000 jobs of a million-job backlog had drained).
///
/// Full tenants are skipped with `NOT (ids @> ARRAY[tenant])`, not
/// `tenant <> ALL (ids)`: the planner estimates the latter from the column's
/// statistics, and once `ANALYZE` has seen a backlog of one tenant it expects
/// it to keep no row, so it read the whole backlog through an index on the
/// tenant and sorted it (250–300 ms per claim at 300,000 queued jobs).
/// Containment gets a fixed estimate, so the candidates are read in order from
/// `jobs_claim_idx` and the scan stops at the limit, whatever the backlog
/// (`PgStore::explain_claim` shows the plan).
///
/// The queue clock is advanced only if its row is free (`SKIP LOCKED`): a
/// claim that finds another claim advancing it leaves it to that one, so the
/// clock is never a point where claims wait (it only has to be roughly the
/// queue's head for new tenants to start there).
const CLAIM_SQL: &str = "-- longhaul:claim
WITH full_tenants AS MATERIALIZED (
    SELECT coalesce(array_agg(r.tenant_id), '{}') AS ids
    FROM tenant_running r LEFT JOIN tenant_limits l ON l.tenant_id = r.tenant_id
    WHERE r.running >= coalesce(l.max_running, $5)
),
-- The stretches of each queue's claim index to read: the priorities more
-- urgent than the floor's, and from the floor on (no floor: priority 0 and
-- the smallest vtime, so the first stretch is empty and the second is all).
stretches AS MATERIALIZED (
    SELECT q.name, r.low_priority, r.low_vtime, r.below_priority
    FROM unnest($1::text[], $6::int2[], $7::int8[]) AS q(name, floor_priority, floor_vtime)
    CROSS JOIN LATERAL (VALUES
        (0::int2, (-9223372036854775807 - 1)::int8, q.floor_priority),
        (q.floor_priority, q.floor_vtime, 10::int2)
    ) AS r(low_priority, low_vtime, below_priority)
),
candidates AS MATERIALIZED (
    SELECT c.* FROM stretches q
    CROSS JOIN full_tenants f
    CROSS JOIN LATERAL (
        SELECT j.id, j.tenant_id, j.priority, j.vtime FROM jobs j
        WHERE j.state = 'queued' AND j.queue = q.name
          AND (j.priority, j.vtime) >= (q.low_priority, q.low_vtime) AND j.priority < q.below_priority
          AND j.run_at <= statement_timestamp()
          AND NOT (f.ids @> ARRAY[j.tenant_id])
        ORDER BY j.priority, j.vtime
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority, c.vtime
    LIMIT $2
),
capped AS MATERIALIZED (
    SELECT c.tenant_id, count(*)::int AS wanted, min(coalesce(l.max_running, $5)) AS cap
    FROM candidates c LEFT JOIN tenant_limits l ON l.tenant_id = c.tenant_id
    WHERE coalesce(l.max_running, $5) IS NOT NULL
    GROUP BY c.tenant_id
),
-- Counter rows locked in tenant order, as finishes lock them
-- (give_back_slots!): two statements touching the same tenants never wait
-- on each other in a cycle.
counter_rows AS MATERIALIZED (
    SELECT r.tenant_id FROM tenant_running r
    WHERE r.tenant_id IN (SELECT tenant_id FROM capped)
    ORDER BY r.tenant_id
    FOR UPDATE
),
reserved AS (
    UPDATE tenant_running r SET granted = least(w.wanted, w.cap - r.running),
                                running = r.running + least(w.wanted, w.cap - r.running)
    FROM capped w
    WHERE r.tenant_id = w.tenant_id AND r.running < w.cap
      AND r.tenant_id IN (SELECT tenant_id FROM counter_rows)
    RETURNING r.tenant_id, r.granted
),
first_reserved AS (
    INSERT INTO tenant_running AS r (tenant_id, running, granted)
    SELECT w.tenant_id, n.running + least(w.wanted, greatest(w.cap - n.running, 0)),
           least(w.wanted, greatest(w.cap - n.running, 0))
    FROM capped w
    CROSS JOIN LATERAL (
        SELECT count(*)::int AS running FROM jobs WHERE tenant_id = w.tenant_id AND state = 'running'
    ) n
    WHERE NOT EXISTS (SELECT 1 FROM tenant_running x WHERE x.tenant_id = w.tenant_id)
    ON CONFLICT (tenant_id) DO NOTHING
    RETURNING r.tenant_id, r.granted
),
picked AS (
    SELECT c.id FROM (
        SELECT c.id, c.tenant_id,
               row_number() OVER (PARTITION BY c.tenant_id ORDER BY c.priority, c.vtime) AS nth
        FROM candidates c
    ) c
    LEFT JOIN capped w ON w.tenant_id = c.tenant_id
    LEFT JOIN reserved g ON g.tenant_id = c.tenant_id
    LEFT JOIN first_reserved fg ON fg.tenant_id = c.tenant_id
    WHERE w.tenant_id IS NULL OR c.nth <= coalesce(g.granted, fg.granted, 0)
),
claimed AS (
    UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, worker_id = $3,
                      started_at = statement_timestamp(),
                      lease_expires_at = statement_timestamp() + make_interval(secs => $4)
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING j.*
),
started AS (
    INSERT INTO job_events (job_id, tenant_id, attempt, kind, data)
    SELECT id, tenant_id, attempt, 'started', jsonb_build_object('workerId', worker_id) FROM claimed
),
free_clocks AS (
    SELECT k.queue FROM queue_clocks k WHERE k.queue = ANY ($1::text[]) FOR UPDATE SKIP LOCKED
),
clock AS (
    UPDATE queue_clocks k SET vtime = greatest(k.vtime, m.vtime)
    FROM (SELECT queue, max(vtime) AS vtime FROM claimed GROUP BY queue) m
    WHERE k.queue = m.queue AND k.queue IN (SELECT queue FROM free_clocks)
),
dropped AS (
    SELECT (SELECT count(*) FROM candidates) - (SELECT count(*) FROM picked) AS n
),
-- The next claim's floor per queue (see `claim_floor.rs`): the first due job
-- still queued after this claim, of any tenant (full ones and rows other
-- claims hold included), or the queue clock if lower (a job enqueued now
-- starts at the clock or later); the clock alone (NULL priority) if none.
heads AS (
    SELECT k.queue, h.priority, least(h.vtime, k.vtime) AS vtime
    FROM queue_clocks k
    LEFT JOIN LATERAL (
        SELECT first.priority, first.vtime
        FROM stretches q
        CROSS JOIN LATERAL (
            SELECT j.priority, j.vtime FROM jobs j
            WHERE j.state = 'queued' AND j.queue = q.name
              AND (j.priority, j.vtime) >= (q.low_priority, q.low_vtime) AND j.priority < q.below_priority
              AND j.run_at <= statement_timestamp()
              AND j.id <> ALL (ARRAY(SELECT id FROM picked))
            ORDER BY j.priority, j.vtime
            LIMIT 1
        ) first
        WHERE q.name = k.queue
        ORDER BY first.priority, first.vtime
        LIMIT 1
    ) h ON true
    WHERE k.queue = ANY ($1::text[])
)
SELECT d.n AS capped_out,
       (SELECT array_agg(queue) FROM heads) AS head_queues,
       (SELECT array_agg(priority) FROM heads) AS head_priorities,
       (SELECT array_agg(vtime) FROM heads) AS head_vtimes,
       c.*
FROM dropped d LEFT JOIN claimed c ON true
ORDER BY c.priority, c.vtime";

/// Gives finished attempts' slots back to their capped tenants: CTEs for a
/// statement whose CTE `$ended` returns the `tenant_id` of each attempt it
/// took out of `running` (uncapped tenants have no row: nothing to do). The
/// counter rows are locked in tenant order first, as claims lock them, so a
/// finish and a claim of the same tenants cannot deadlock.
macro_rules! give_back_slots {
    ($ended:literal) => {
        concat!(
            "slot_rows AS MATERIALIZED (
            SELECT r.tenant_id FROM tenant_running r
            WHERE r.tenant_id IN (SELECT tenant_id FROM ",
            $ended,
            ")
            ORDER BY r.tenant_id
            FOR UPDATE),
            slots AS (
            UPDATE tenant_running r SET running = greatest(r.running - e.n, 0)
            FROM (SELECT tenant_id, count(*)::int AS n FROM ",
            $ended,
            " GROUP BY tenant_id) e
            WHERE r.tenant_id = e.tenant_id
              AND r.tenant_id IN (SELECT tenant_id FROM slot_rows))"
        )
    };
}

/// The CTEs both enqueue statements share: `alloc` gives each (tenant,
/// queue) group a run of virtual times from max(its next_vtime, the queue
/// clock); `quota` names the batch's tenants with a maxQueued quota, whose
/// jobs are `counted_in_quota` (see [`enqueue_lock`]); `clocks` creates a queue's clock row before its first claim (only
/// when absent: an existing row may be mid-update by a claim, and a
/// conflicting insert would wait for that claim's commit). The arguments
/// are the parameters holding the groups' tenants, queues and sizes.
macro_rules! enqueue_groups {
    (alloc: $tenants:literal, $queues:literal, $sizes:literal) => {
        concat!(
            "alloc AS (
    INSERT INTO fair_queues AS f (tenant_id, queue, next_vtime)
    SELECT g.tenant_id, g.queue, coalesce(c.vtime, 0) + g.n
    FROM unnest(", $tenants, "::text[], ", $queues, "::text[], ", $sizes, "::int8[]) AS g(tenant_id, queue, n)
    LEFT JOIN queue_clocks c ON c.queue = g.queue
    ON CONFLICT (tenant_id, queue) DO UPDATE
    SET next_vtime = greatest(
        f.next_vtime + excluded.next_vtime - coalesce((SELECT vtime FROM queue_clocks WHERE queue = excluded.queue), 0),
        excluded.next_vtime)
    RETURNING f.tenant_id, f.queue, f.next_vtime
)"
        )
    };
    (quota: $tenants:literal) => {
        concat!(
            "quota AS (
    SELECT t.id FROM tenants t WHERE t.id = ANY (", $tenants, "::text[]) AND t.max_queued IS NOT NULL
)"
        )
    };
    (clocks: $queues:literal) => {
        concat!(
            "clocks AS (
    INSERT INTO queue_clocks (queue, vtime)
    SELECT DISTINCT g.queue, 0 FROM unnest(", $queues, "::text[]) AS g(queue)
    WHERE NOT EXISTS (SELECT 1 FROM queue_clocks c WHERE c.queue = g.queue)
    ON CONFLICT (queue) DO NOTHING
)"
        )
    };
}

/// Enqueue in one statement: each (tenant, queue) group takes a run of virtual
/// times from max(its next_vtime, the queue clock); the jobs are inserted with
/// `base + offset` (idempotency-key duplicates skipped); the queues that got
/// jobs are notified. `$1`–`$9` job columns, `$10` offsets, `$11` group sizes
/// per job, `$12`–`$14` the groups (tenant, queue, size), `$15` the channel.
const ENQUEUE_SQL: &str = concat!(
    "
WITH ",
    enqueue_groups!(alloc: "$12", "$13", "$14"),
    ",
",
    enqueue_groups!(quota: "$12"),
    ",
input AS (
    SELECT i.id, i.tenant_id, i.kind, i.queue, i.priority, a.next_vtime - i.group_size + i.offset_in_group AS vtime,
           i.params::jsonb AS params, coalesce(i.run_at, now()) AS run_at, i.max_attempts, i.idempotency_key,
           q.id IS NOT NULL AS counted_in_quota
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::text[], $7::timestamptz[],
                $8::int4[], $9::text[], $10::int8[], $11::int8[])
         AS i(id, tenant_id, kind, queue, priority, params, run_at, max_attempts, idempotency_key,
              offset_in_group, group_size)
    JOIN alloc a ON a.tenant_id = i.tenant_id AND a.queue = i.queue
    LEFT JOIN quota q ON q.id = i.tenant_id
),
-- Jobs without an idempotency key cannot conflict: a plain insert spares
-- them the speculative insertion of ON CONFLICT (a lock and an extra WAL
-- record per row).
ins_plain AS (
    INSERT INTO jobs (id, tenant_id, kind, queue, priority, vtime, params, run_at, max_attempts, counted_in_quota)
    SELECT id, tenant_id, kind, queue, priority, vtime, params, run_at, max_attempts, counted_in_quota
    FROM input WHERE idempotency_key IS NULL
    RETURNING id, queue
),
ins_keyed AS (
    INSERT INTO jobs (id, tenant_id, kind, queue, priority, vtime, params, run_at, max_attempts, idempotency_key,
                      counted_in_quota)
    SELECT id, tenant_id, kind, queue, priority, vtime, params, run_at, max_attempts, idempotency_key,
           counted_in_quota
    FROM input WHERE idempotency_key IS NOT NULL
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, queue
),
ins AS (SELECT id, queue FROM ins_plain UNION ALL SELECT id, queue FROM ins_keyed),
woken AS (SELECT pg_notify($15, q.queue) FROM (SELECT DISTINCT queue FROM ins) q),
",
    enqueue_groups!(clocks: "$13"),
    "
SELECT ins.id FROM ins, (SELECT count(*) FROM woken) w"
);

/// [`ENQUEUE_SQL`] for a batch without idempotency keys, where every job is
/// inserted: no conflict handling, no ids returned (the caller knows them),
/// the queues notified from the groups. Half the statement's cost per row
/// went to materialising, re-reading and returning the rows. `$1`–`$8` job
/// columns, `$9` offsets, `$10` group sizes per job, `$11`–`$13` the groups,
/// `$14` the channel.
const ENQUEUE_UNKEYED_SQL: &str = concat!(
    "
WITH ",
    enqueue_groups!(alloc: "$11", "$12", "$13"),
    ",
",
    enqueue_groups!(quota: "$11"),
    ",
ins AS (
    INSERT INTO jobs (id, tenant_id, kind, queue, priority, vtime, params, run_at, max_attempts, counted_in_quota)
    SELECT i.id, i.tenant_id, i.kind, i.queue, i.priority, a.next_vtime - i.group_size + i.offset_in_group,
           i.params::jsonb, coalesce(i.run_at, now()), i.max_attempts, q.id IS NOT NULL
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::text[], $7::timestamptz[],
                $8::int4[], $9::int8[], $10::int8[])
         AS i(id, tenant_id, kind, queue, priority, params, run_at, max_attempts, offset_in_group, group_size)
    JOIN alloc a ON a.tenant_id = i.tenant_id AND a.queue = i.queue
    LEFT JOIN quota q ON q.id = i.tenant_id
),
",
    enqueue_groups!(clocks: "$12"),
    "
SELECT pg_notify($14, q.queue) FROM (SELECT DISTINCT unnest($12::text[]) AS queue) q"
);

/// Serializes a tenant's quota checks (count + insert) until the transaction
/// ends. `hashtext` yields an int4, so the key never equals the claim lock's.
const QUOTA_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtext('quota:' || $1))";

/// Queued jobs per tenant (`jobs_queued_tenant_idx`): `$1` tenants.
const QUEUED_COUNT_SQL: &str = "
SELECT tenant_id, count(*) AS n FROM jobs
WHERE tenant_id = ANY ($1::text[]) AND state = 'queued' AND counted_in_quota
GROUP BY tenant_id";

/// Takes the quota lock of each tenant (sorted, so that two transactions
/// naming the same tenants cannot deadlock) and counts their queued jobs;
/// the locks are held until the transaction ends, so no other admission
/// (API or scheduler) can queue jobs for them in between. Tenants with no
/// queued job are absent from the answer.
pub(crate) async fn lock_queued_counts(
    conn: &mut PgConnection,
    tenants: std::collections::BTreeSet<&str>,
) -> Result<BTreeMap<String, i64>> {
    let mut queued = BTreeMap::new();
    if tenants.is_empty() {
        return Ok(queued);
    }
    for tenant in &tenants {
        sqlx::query(QUOTA_LOCK_SQL)
            .bind(*tenant)
            .execute(&mut *conn)
            .await
            .db("taking a tenant's quota lock")?;
    }
    // A statement after the lock: its snapshot sees every commit of the
    // transactions that held the lock before.
    let tenants: Vec<&str> = tenants.into_iter().collect();
    for row in sqlx::query(QUEUED_COUNT_SQL)
        .bind(&tenants)
        .fetch_all(&mut *conn)
        .await
        .db("counting queued jobs")?
    {
        let tenant: String = row.try_get("tenant_id").db("reading queued counts")?;
        let n: i64 = row.try_get("n").db("reading queued counts")?;
        queued.insert(tenant, n);
    }
    Ok(queued)
}

/// Adds billable operations: `$1` tenants, `$2` period, `$3` kinds, `$4` counts.
const ADD_USAGE_SQL: &str = "
INSERT INTO usage AS u (tenant_id, period, kind, operations)
SELECT t, $2, k, n FROM unnest($1::text[], $3::text[], $4::int8[]) AS x(t, k, n)
ON CONFLICT (tenant_id, period, kind) DO UPDATE SET operations = u.operations + excluded.operations";

/// A page of a tenant's jobs, newest first: `$1` tenant, `$2` the cursor (the
/// largest uuid for the first page), `$3` states (empty: any), `$4` kind, `$5`
/// queue, `$6`/`$7` the created range `[from, to)`, `$8` limit.
///
/// The tenant is scoped by a range on `(tenant_id, id)`, not `tenant_id = $1`:
/// the two row bounds share `$1`, so together they hold exactly the tenant's
/// rows with `id < $2`. Written as an equality, PostgreSQL drops `tenant_id`
/// from the ordering (it is constant) and may walk the primary key backwards
/// filtering on the tenant: that reads every newer job of other tenants, and
/// all jobs for a tenant with none. As a range on the ordering
/// `(tenant_id, id)`, only a backward scan of `jobs_tenant_idx` serves the
/// query, in custom and generic plans alike, and a deep page costs what the
/// first does. The other filters are checked on the rows that scan yields.
const LIST_SQL: &str = "
SELECT * FROM jobs
WHERE (tenant_id, id) >= ($1, '00000000-0000-0000-0000-000000000000'::uuid)
  AND (tenant_id, id) < ($1, $2)
  AND (cardinality($3::text[]) = 0 OR state = ANY ($3::text[]))
  AND ($4::text IS NULL OR kind = $4)
  AND ($5::text IS NULL OR queue = $5)
  AND ($6::timestamptz IS NULL OR created_at >= $6)
  AND ($7::timestamptz IS NULL OR created_at < $7)
ORDER BY tenant_id DESC, id DESC
LIMIT $8";

/// Capped tenants whose running counter disagrees with their running jobs,
/// read in one snapshot (where claims and finishes keep both in step).
const DRIFTED_COUNTERS_SQL: &str = "
SELECT r.tenant_id FROM tenant_running r
LEFT JOIN (SELECT tenant_id, count(*)::int AS n FROM jobs WHERE state = 'running' GROUP BY tenant_id) c
       ON c.tenant_id = r.tenant_id
WHERE r.running <> coalesce(c.n, 0)";

/// Recounts the named counters (`$1`), after `LOCK_COUNTERS_SQL` in the same
/// transaction: this statement's snapshot then holds every claim and finish
/// that wrote them.
const LOCK_COUNTERS_SQL: &str =
    "SELECT tenant_id FROM tenant_running WHERE tenant_id = ANY ($1) ORDER BY tenant_id FOR UPDATE";
const RECOUNT_COUNTERS_SQL: &str = "
UPDATE tenant_running r
SET running = (SELECT count(*) FROM jobs j WHERE j.tenant_id = r.tenant_id AND j.state = 'running')
WHERE r.tenant_id = ANY ($1)
RETURNING r.tenant_id, r.running";

/// Most claim statements one claim runs: a round that left candidates of
/// tenants that reached their cap is followed by another for those slots.
const MAX_CLAIM_ROUNDS: usize = 3;

/// How long a session may sit idle inside a transaction before PostgreSQL
/// ends it (see [`PgStore::connect_with`]).
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Connections that only claim (see `CLAIM_SESSION_SETTINGS`), opened on
    /// first use with the main pool's options.
    claims: PgPool,
    /// Where the next claim of each queue starts reading (`claim_floor.rs`).
    floors: Arc<Mutex<ClaimFloors>>,
    wakes: WakeHub,
    /// Whether the LISTEN task runs; checked and changed under the lock so a
    /// subscriber never arrives just as the task decides to stop.
    listening: Arc<Mutex<bool>>,
}

impl PgStore {
    /// The tenant's job, if it exists.
    async fn find_job(&self, tenant_id: &str, id: JobId) -> Result<Option<Job>> {
        sqlx::query("SELECT * FROM jobs WHERE id = $1 AND tenant_id = $2")
            .bind(id.as_uuid())
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await
            .db("reading a job")?
            .as_ref()
            .map(job_from_row)
            .transpose()
    }

    /// Connects a pool (`max_connections`) to the database the URL names.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Self::connect_pool(url, PoolSettings::new(max_connections)).await
    }

    /// Connects a pool of the given size and acquire timeout.
    pub async fn connect_pool(url: &str, pool: PoolSettings) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .db("parsing the database url")?
            .log_statements(tracing::log::LevelFilter::Trace);
        Self::connect_with(options, pool).await
    }

    /// Every session runs without JIT compilation (see below) and ends a
    /// transaction left idle for [`IDLE_IN_TRANSACTION_TIMEOUT`]:
    /// a process frozen mid-transaction (SIGSTOP, a paused VM, a half-open
    /// connection) gives back the rows and locks it holds within seconds, so
    /// it cannot stop the claims or schedule fires of every other process.
    /// No transaction of this store waits on anything but its own statements.
    pub async fn connect_with(options: PgConnectOptions, pool: PoolSettings) -> Result<Self> {
        let options = options.options([
            (
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            ),
            // No statement of the stores is long enough for JIT compilation
            // to pay: once the planner's estimates grow with the tables (a
            // million queued jobs), every claim compiled its plan with LLVM
            // first, 60–130 ms per claim, and the drain fell to ~900 jobs/s.
            ("jit", "off"),
        ]);
        probe_postgres(&options, pool.acquire_timeout).await?;
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections)
            .min_connections(1.min(pool.max_connections))
            .acquire_timeout(pool.acquire_timeout)
            .connect_with(options)
            .await
            .db("connecting to PostgreSQL")?;
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        let options = pool.connect_options().as_ref().clone();
        let claims = PgPoolOptions::new()
            .max_connections(MAX_CLAIM_CONNECTIONS.min(pool.options().get_max_connections()))
            .min_connections(0)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with(options.options(CLAIM_SESSION_SETTINGS));
        PgStore {
            pool,
            claims,
            floors: Arc::default(),
            wakes: WakeHub::new(),
            listening: Arc::new(Mutex::new(false)),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The plan of a claim of `limit` jobs from `queues` as it runs now, read
    /// from the start of each queue (no floor, the most a claim reads): the
    /// cached generic plan, `EXPLAIN ANALYZE`d inside a transaction that is
    /// rolled back (nothing is claimed), for benchmarks and for operators
    /// asking why claims slow down.
    pub async fn explain_claim(&self, queues: &[String], limit: i64) -> Result<String> {
        // A claim connection (its session settings are the claim's), taken
        // out of the pool and closed afterwards with what was prepared on it.
        let mut conn = self
            .claims
            .acquire()
            .await
            .db("acquiring a connection to explain a claim")?
            .detach();
        let mut tx = sqlx::Connection::begin(&mut conn)
            .await
            .db("starting a claim to explain")?;
        sqlx::raw_sql(&format!(
            "PREPARE longhaul_explained_claim (text[], int8, text, float8, int4, int2[], int8[]) AS {CLAIM_SQL}"
        ))
        .execute(&mut *tx)
        .await
        .db("preparing a claim to explain")?;
        // EXECUTE takes no bind parameters: the server quotes the values in.
        let explain: String = sqlx::query_scalar(
            "SELECT format('EXPLAIN (ANALYZE, COSTS OFF) EXECUTE longhaul_explained_claim \
                            (%L::text[], %s, ''explain'', 30, NULL, %L::int2[], %L::int8[])', \
                            $1::text[], $2, $3::int2[], $4::int8[])",
        )
        .bind(queues)
        .bind(limit)
        .bind(vec![NO_FLOOR.0; queues.len()])
        .bind(vec![NO_FLOOR.1; queues.len()])
        .fetch_one(&mut *tx)
        .await
        .db("writing the claim to explain")?;
        let lines: Vec<String> = sqlx::query_scalar(&explain)
            .fetch_all(&mut *tx)
            .await
            .db("explaining a claim")?;
        tx.rollback().await.db("rolling back an explained claim")?;
        Ok(lines.join("\n"))
    }

    /// Sets running counters that drifted from the jobs table back to the
    /// number of running jobs (all capped tenants' when `tenants` is `None`),
    /// answering the repaired ones. Counters only drift when a tenant had
    /// running jobs claimed while it was uncapped (a cap set or a default cap
    /// configured later); the rescuer calls this on every pass, and setting a
    /// cap does for its tenant.
    pub async fn repair_running_counters(
        &self,
        tenants: Option<&[String]>,
    ) -> Result<Vec<(String, i32)>> {
        let drifted: Vec<String> = match tenants {
            Some(tenants) => tenants.to_vec(),
            None => sqlx::query_scalar(DRIFTED_COUNTERS_SQL)
                .fetch_all(&self.pool)
                .await
                .db("looking for drifted running counters")?,
        };
        if drifted.is_empty() {
            return Ok(vec![]);
        }
        let mut tx = self.pool.begin().await.db("starting a counter repair")?;
        sqlx::query(LOCK_COUNTERS_SQL)
            .bind(&drifted)
            .execute(&mut *tx)
            .await
            .db("locking running counters")?;
        let repaired: Vec<(String, i32)> = sqlx::query_as(RECOUNT_COUNTERS_SQL)
            .bind(&drifted)
            .fetch_all(&mut *tx)
            .await
            .db("recounting running jobs")?;
        tx.commit().await.db("committing a counter repair")?;
        Ok(repaired)
    }

    /// Stores jobs inside the caller's transaction: the jobs exist exactly
    /// when the caller's own writes commit. Takes the enqueue lock of their
    /// tenants (held until that commit).
    pub async fn enqueue_in(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        enqueue_lock::lock_shared(&mut *conn, jobs.iter().map(|job| job.tenant_id.as_str()))
            .await?;
        Self::enqueue_locked_in(conn, jobs).await
    }

    /// A transaction that holds the enqueue lock of the jobs' tenants from
    /// its `BEGIN` on (one round trip), for [`Self::enqueue_locked_in`].
    async fn begin_enqueue(
        &self,
        jobs: &[NewJob],
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool
            .begin_with(enqueue_lock::shared_begin(
                jobs.iter().map(|job| job.tenant_id.as_str()),
            ))
            .await
            .db("starting an enqueue transaction")
    }

    /// [`Self::enqueue_in`] in a transaction that already holds the enqueue
    /// lock of the jobs' tenants.
    async fn enqueue_locked_in(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        // Jobs per (tenant, queue), in a fixed order so concurrent batches lock
        // fair_queues rows without deadlocking; each job's offset in its group.
        let mut groups: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut columns = EnqueueColumns::with_capacity(jobs.len());
        for job in jobs {
            let group = groups
                .entry((job.tenant_id.as_str(), job.queue.as_str()))
                .or_default();
            columns.push(job, *group);
            *group += 1;
        }
        for job in jobs {
            columns
                .group_sizes
                .push(groups[&(job.tenant_id.as_str(), job.queue.as_str())]);
        }
        let (group_keys, group_sizes): (Vec<_>, Vec<i64>) =
            groups.iter().map(|(k, n)| (*k, *n)).unzip();
        let (group_tenants, group_queues): (Vec<&str>, Vec<&str>) = group_keys.into_iter().unzip();
        // Jobs without idempotency keys take the cheaper statement, which
        // has no key column and answers nothing.
        let keyed = jobs.iter().any(|job| job.idempotency_key.is_some());
        let statement = if keyed {
            ENQUEUE_SQL
        } else {
            ENQUEUE_UNKEYED_SQL
        };
        let mut query = sqlx::query(statement)
            .bind(&columns.ids)
            .bind(&columns.tenant_ids)
            .bind(&columns.kinds)
            .bind(&columns.queues)
            .bind(&columns.priorities)
            .bind(&columns.params)
            .bind(&columns.run_ats)
            .bind(&columns.max_attempts);
        if keyed {
            query = query.bind(&columns.idempotency_keys);
        }
        let query = query
            .bind(&columns.offsets)
            .bind(&columns.group_sizes)
            .bind(&group_tenants)
            .bind(&group_queues)
            .bind(&group_sizes)
            .bind(QUEUE_CHANNEL);
        if !keyed {
            query.execute(&mut *conn).await.db("inserting jobs")?;
            let answers: Vec<Enqueued> = jobs
                .iter()
                .map(|job| Enqueued {
                    id: job.id,
                    created: true,
                })
                .collect();
            super::artifacts::insert_job_inputs(super::sql::Db::Pg(&mut *conn), jobs, &answers)
                .await?;
            return Ok(answers);
        }
        let inserted: Vec<Uuid> = query
            .fetch_all(&mut *conn)
            .await
            .db("inserting jobs")?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<std::result::Result<_, _>>()
            .db("reading inserted job ids")?;

        let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            if inserted.contains(&job.id.as_uuid()) {
                answers.push(Enqueued {
                    id: job.id,
                    created: true,
                });
                continue;
            }
            let key = job.idempotency_key.as_deref().ok_or_else(|| {
                Error::corrupt("enqueue", "a job without idempotency key was not inserted")
            })?;
            let existing = sqlx::query(
                "SELECT id, kind, params FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2",
            )
            .bind(&job.tenant_id)
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .db("looking up an idempotency key")?;
            let kind: String = existing.try_get("kind").db("reading job kind")?;
            let params: Value = existing.try_get("params").db("reading job params")?;
            if kind != job.kind || params != job.params {
                return Err(idempotency_conflict(key));
            }
            let id: Uuid = existing.try_get("id").db("reading job id")?;
            answers.push(Enqueued {
                id: JobId::from_uuid(id),
                created: false,
            });
        }
        super::artifacts::insert_job_inputs(super::sql::Db::Pg(&mut *conn), jobs, &answers).await?;
        Ok(answers)
    }

    /// One claim statement of `limit` jobs, appended to `jobs`; answers how
    /// many candidates were left because their tenant reached its cap.
    async fn claim_round(
        &self,
        request: &ClaimRequest,
        queues: &[String],
        limit: usize,
        default_max_running: Option<i32>,
        jobs: &mut Vec<Job>,
    ) -> Result<i64> {
        let (floor_priorities, floor_vtimes) = self
            .floors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .for_claim(queues, std::time::Instant::now());
        let rows = sqlx::query(CLAIM_SQL)
            .bind(queues)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(&request.worker_id)
            .bind(request.lease.as_secs_f64())
            .bind(default_max_running)
            .bind(floor_priorities)
            .bind(floor_vtimes)
            .fetch_all(&self.claims)
            .await
            .db("claiming jobs")?;
        let mut capped_out = 0;
        for (nth, row) in rows.iter().enumerate() {
            capped_out = row
                .try_get("capped_out")
                .db("reading a claim's capped-out count")?;
            if nth == 0 {
                self.record_heads(row)?;
            }
            let id: Option<Uuid> = row.try_get("id").db("reading a claimed job's id")?;
            if id.is_some() {
                jobs.push(job_from_row(row)?);
            }
        }
        Ok(capped_out)
    }

    /// Keeps the queue heads a claim answered for the next claims' floors.
    fn record_heads(&self, row: &PgRow) -> Result<()> {
        let names: Option<Vec<String>> = row.try_get("head_queues").db("reading claim heads")?;
        let priorities: Option<Vec<Option<i16>>> =
            row.try_get("head_priorities").db("reading claim heads")?;
        let vtimes: Option<Vec<i64>> = row.try_get("head_vtimes").db("reading claim heads")?;
        let heads: Vec<claim_floor::Head> = names
            .unwrap_or_default()
            .into_iter()
            .zip(priorities.unwrap_or_default())
            .zip(vtimes.unwrap_or_default())
            .map(|((name, priority), vtime)| (name, priority, vtime))
            .collect();
        self.floors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(&heads, std::time::Instant::now());
        Ok(())
    }

    async fn finish_with(
        &self,
        sql: &'static str,
        lease: Lease,
        bind: impl FnOnce(PgQuery) -> PgQuery,
    ) -> Result<PgRow> {
        let query = sqlx::query(sql)
            .bind(lease.job_id.as_uuid())
            .bind(lease.attempt);
        bind(query)
            .fetch_optional(&self.pool)
            .await
            .db("finishing an attempt")?
            .ok_or(Error::LeaseLost {
                job_id: lease.job_id,
                attempt: lease.attempt,
            })
    }

    /// Starts the LISTEN task unless it runs. Called with the flag locked.
    fn start_listener(&self, listening: &mut bool) {
        if *listening {
            return;
        }
        *listening = true;
        let pool = self.pool.clone();
        let wakes = self.wakes.clone();
        let flag = self.listening.clone();
        tokio::spawn(async move {
            loop {
                match listen(&pool, &wakes, &flag).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN connection failed; workers fall back to polling, retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}

fn lock_flag(flag: &Mutex<bool>) -> std::sync::MutexGuard<'_, bool> {
    flag.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

type PgQuery = sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Forwards notifications to the in-process hub until nobody listens.
async fn listen(pool: &PgPool, wakes: &WakeHub, flag: &Mutex<bool>) -> Result<()> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .db("connecting the LISTEN session")?;
    listener
        .listen_all([QUEUE_CHANNEL, CANCEL_CHANNEL])
        .await
        .db("subscribing to job notifications")?;
    loop {
        let notification = listener.recv().await.db("receiving a notification")?;
        let wake = match notification.channel() {
            QUEUE_CHANNEL => Wake::Queue(notification.payload().to_string()),
            CANCEL_CHANNEL => match notification.payload().parse::<JobId>() {
                Ok(id) => Wake::Cancel(id),
                Err(_) => continue,
            },
            _ => continue,
        };
        wakes.send(wake);
        if !wakes.has_subscribers() {
            let mut listening = lock_flag(flag);
            if !wakes.has_subscribers() {
                *listening = false;
                return Ok(());
            }
        }
    }
}

async fn notify_queues(conn: &mut PgConnection, queues: &[&str]) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q")
        .bind(QUEUE_CHANNEL)
        .bind(queues)
        .execute(conn)
        .await
        .db("notifying workers")?;
    Ok(())
}

/// Enqueue batches travel as one array per column (one round trip).
struct EnqueueColumns {
    ids: Vec<Uuid>,
    tenant_ids: Vec<String>,
    kinds: Vec<String>,
    queues: Vec<String>,
    priorities: Vec<i16>,
    /// The job's position among its batch's jobs of the same tenant and queue.
    offsets: Vec<i64>,
    /// How many jobs of the batch share its tenant and queue.
    group_sizes: Vec<i64>,
    params: Vec<String>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    max_attempts: Vec<i32>,
    idempotency_keys: Vec<Option<String>>,
}

impl EnqueueColumns {
    fn with_capacity(n: usize) -> Self {
        EnqueueColumns {
            ids: Vec::with_capacity(n),
            tenant_ids: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            queues: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            offsets: Vec::with_capacity(n),
            group_sizes: Vec::with_capacity(n),
            params: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            idempotency_keys: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, job: &NewJob, offset: i64) {
        self.ids.push(job.id.as_uuid());
        self.tenant_ids.push(job.tenant_id.clone());
        self.kinds.push(job.kind.clone());
        self.queues.push(job.queue.clone());
        self.priorities.push(job.priority);
        self.offsets.push(offset);
        self.params.push(job.params.to_string());
        self.run_ats.push(job.run_at);
        self.max_attempts.push(job.max_attempts);
        self.idempotency_keys.push(job.idempotency_key.clone());
    }
}

/// Adds one billable operation per created job, inside the enqueue transaction.
/// Meters the jobs an enqueue created (not replays) as billable operations of
/// `period`, in the caller's transaction (the scheduler's fires use it).
pub(crate) async fn meter_created(
    conn: &mut PgConnection,
    jobs: &[NewJob],
    answers: &[Enqueued],
    period: Period,
) -> Result<()> {
    add_usage(conn, &count_created(jobs, answers), period).await
}

async fn add_usage(conn: &mut PgConnection, created: &Created<'_>, period: Period) -> Result<()> {
    if created.per_kind.is_empty() {
        return Ok(());
    }
    let mut tenants = Vec::with_capacity(created.per_kind.len());
    let mut kinds = Vec::with_capacity(created.per_kind.len());
    let mut counts = Vec::with_capacity(created.per_kind.len());
    for ((tenant, kind), n) in &created.per_kind {
        tenants.push(*tenant);
        kinds.push(*kind);
        counts.push(*n);
    }
    sqlx::query(ADD_USAGE_SQL)
        .bind(&tenants)
        .bind(period.to_string())
        .bind(&kinds)
        .bind(&counts)
        .execute(&mut *conn)
        .await
        .db("metering usage")?;
    Ok(())
}

fn job_from_row(row: &PgRow) -> Result<Job> {
    let state: String = row.try_get("state").db("reading job state")?;
    let progress: Option<Value> = row.try_get("progress").db("reading job progress")?;
    Ok(Job {
        id: JobId::from_uuid(row.try_get("id").db("reading job id")?),
        tenant_id: row.try_get("tenant_id").db("reading job tenant")?,
        kind: row.try_get("kind").db("reading job kind")?,
        queue: row.try_get("queue").db("reading job queue")?,
        state: state
            .parse()
            .map_err(|_| Error::corrupt("job state", &state))?,
        priority: row.try_get("priority").db("reading job priority")?,
        params: row.try_get("params").db("reading job params")?,
        run_at: row.try_get("run_at").db("reading job run_at")?,
        attempt: row.try_get("attempt").db("reading job attempt")?,
        failed_attempts: row
            .try_get("failed_attempts")
            .db("reading job failed_attempts")?,
        max_attempts: row.try_get("max_attempts").db("reading job max_attempts")?,
        lease_expires_at: row.try_get("lease_expires_at").db("reading job lease")?,
        worker_id: row.try_get("worker_id").db("reading job worker")?,
        cancel_requested: row
            .try_get("cancel_requested")
            .db("reading job cancel flag")?,
        progress: progress
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::corrupt("job progress", e))?,
        checkpoint: row.try_get("checkpoint").db("reading job checkpoint")?,
        result: row.try_get("result").db("reading job result")?,
        last_error: row.try_get("last_error").db("reading job error")?,
        public_error: PublicError::from_columns(
            row.try_get("error_code").db("reading job error code")?,
            row.try_get("error_message")
                .db("reading job error message")?,
        ),
        idempotency_key: row
            .try_get("idempotency_key")
            .db("reading job idempotency key")?,
        created_at: row.try_get("created_at").db("reading job created_at")?,
        started_at: row.try_get("started_at").db("reading job started_at")?,
        finished_at: row.try_get("finished_at").db("reading job finished_at")?,
    })
}

/// A fenced worker write that records the attempt's end: the UPDATE (guarded by
/// id, attempt and `running`) feeds the attempt history and the event log.
/// `$1` is the job id and `$2` the attempt; `error` gives the attempt's raw
/// error, code and message.
macro_rules! finish_statement {
    (set: $set:literal, outcome: $outcome:literal, error: $error:literal, event: $event:literal, data: $data:literal) => {
        concat!(
            "WITH f AS (UPDATE jobs SET lease_expires_at = NULL, ",
            $set,
            " WHERE id = $1 AND attempt = $2 AND state = 'running'
               RETURNING id, tenant_id, attempt, worker_id, started_at, state, queue, run_at, last_error,
                         error_code, error_message),
             a AS (INSERT INTO job_attempts (job_id, attempt, tenant_id, worker_id, started_at, outcome,
                                             error, error_code, error_message)
                   SELECT id, attempt, tenant_id, worker_id, started_at, ",
            $outcome,
            ", ",
            $error,
            " FROM f),
             e AS (INSERT INTO job_events (job_id, tenant_id, attempt, kind, data)
                   SELECT id, tenant_id, attempt, ",
            $event,
            ", ",
            $data,
            " FROM f), ",
            give_back_slots!("f"),
            "
             SELECT state, queue FROM f"
        )
    };
}

const FAIL_SQL: &str = finish_statement!(
    set: "failed_attempts = failed_attempts + 1,
          state = CASE WHEN $5 OR failed_attempts + 1 >= max_attempts THEN 'failed'
                       WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
          run_at = CASE WHEN $5 OR failed_attempts + 1 >= max_attempts OR cancel_requested THEN run_at ELSE $4 END,
          finished_at = CASE WHEN $5 OR failed_attempts + 1 >= max_attempts OR cancel_requested THEN now() END,
          last_error = $3, error_code = $6, error_message = $7",
    outcome: "CASE WHEN state = 'queued' THEN 'retried' ELSE 'failed' END",
    error: "last_error, error_code, error_message",
    event: "CASE state WHEN 'failed' THEN 'failed' WHEN 'cancelled' THEN 'cancelled' ELSE 'retry_scheduled' END",
    data: "jsonb_build_object('error', jsonb_build_object('code', error_code, 'message', error_message),
           'runAt', to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))"
);

const CANCELLED_SQL: &str = finish_statement!(
    set: "state = 'cancelled', finished_at = now()",
    outcome: "'cancelled'",
    error: "NULL, NULL, NULL",
    event: "'cancelled'",
    data: "NULL::jsonb"
);

const RELEASED_SQL: &str = finish_statement!(
    set: "state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
          run_at = now(), finished_at = CASE WHEN cancel_requested THEN now() END",
    outcome: "'released'",
    error: "NULL, NULL, NULL",
    event: "CASE WHEN state = 'cancelled' THEN 'cancelled' ELSE 'released' END",
    data: "NULL::jsonb"
);

/// New events of several jobs (`$1` ids, `$2` the id each has seen, `$3`
/// per job): one `job_events_job_idx` range per job, each at most `$3` rows.
const EVENTS_OF_JOBS_SQL: &str = "
    SELECT e.id, e.job_id, e.at, e.attempt, e.kind, e.data
    FROM unnest($1::uuid[], $2::int8[]) AS f(job_id, after)
    CROSS JOIN LATERAL (
        SELECT id, job_id, at, attempt, kind, data FROM job_events
        WHERE job_id = f.job_id AND id > f.after
        ORDER BY id LIMIT $3
    ) e
    ORDER BY e.id";

#[async_trait]
impl JobStore for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<()> {
        super::migrations::migrator(super::migrations::POSTGRES)
            .await?
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .db("pinging PostgreSQL")?;
        Ok(())
    }

    async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        let mut tx = self.begin_enqueue(jobs).await?;
        let answers = Self::enqueue_locked_in(&mut tx, jobs).await?;
        tx.commit().await.db("committing enqueued jobs")?;
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
        let mut tx = self.begin_enqueue(jobs).await?;
        let queued_before = match max_queued {
            Some(_) => {
                let tenants = jobs.iter().map(|job| job.tenant_id.as_str()).collect();
                lock_queued_counts(&mut tx, tenants).await?
            }
            None => BTreeMap::new(),
        };
        let answers = Self::enqueue_locked_in(&mut tx, jobs).await?;
        let created = count_created(jobs, &answers);
        if let Some(limit) = max_queued {
            // An error drops the transaction: nothing is written, no NOTIFY sent.
            check_max_queued(limit, &queued_before, &created)?;
        }
        add_usage(&mut tx, &created, period).await?;
        let changes: Vec<(&str, crate::audit::Change)> = job_creations(jobs, &answers).collect();
        insert_changes_pg(&mut tx, &changes, actor).await?;
        tx.commit().await.db("committing enqueued jobs")?;
        Ok(answers)
    }

    async fn usage(&self, tenant_id: &str, period: Period) -> Result<Vec<KindUsage>> {
        let rows = sqlx::query(
            "SELECT kind, operations FROM usage WHERE tenant_id = $1 AND period = $2 ORDER BY kind",
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
        self.find_job(tenant_id, id)
            .await?
            .ok_or(Error::NotFound(id))
    }

    async fn find_job_by_idempotency_key(&self, tenant_id: &str, key: &str) -> Result<Option<Job>> {
        sqlx::query("SELECT * FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2")
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
            .bind(&states)
            // PostgreSQL text cannot hold U+0000, so no stored kind or queue does.
            .bind(filter.kind.as_deref().map(text_without_nul))
            .bind(filter.queue.as_deref().map(text_without_nul))
            .bind(filter.created_from)
            .bind(filter.created_to)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .db("listing jobs")?;
        rows.iter().map(job_from_row).collect()
    }

    /// One round trip (a status read is the API's hottest path): the job row
    /// joined with its attempts, the job's columns repeated on each.
    async fn get_job_with_attempts(
        &self,
        tenant_id: &str,
        id: JobId,
    ) -> Result<(Job, Vec<Attempt>)> {
        let rows = sqlx::query(
            "SELECT j.*, a.attempt AS a_attempt, a.worker_id AS a_worker_id,
                    a.started_at AS a_started_at, a.finished_at AS a_finished_at,
                    a.outcome AS a_outcome, a.error AS a_error,
                    a.error_code AS a_error_code, a.error_message AS a_error_message
             FROM jobs j
             LEFT JOIN job_attempts a ON a.job_id = j.id AND a.tenant_id = j.tenant_id
             WHERE j.id = $1 AND j.tenant_id = $2
             ORDER BY a.attempt",
        )
        .bind(id.as_uuid())
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .db("reading a job with its attempts")?;
        let first = rows.first().ok_or(Error::NotFound(id))?;
        let job = job_from_row(first)?;
        let mut attempts = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(attempt) = row.try_get("a_attempt").db("reading attempt number")? else {
                continue;
            };
            let outcome: String = row.try_get("a_outcome").db("reading attempt outcome")?;
            attempts.push(Attempt {
                attempt,
                worker_id: row.try_get("a_worker_id").db("reading attempt worker")?,
                started_at: row.try_get("a_started_at").db("reading attempt start")?,
                finished_at: row.try_get("a_finished_at").db("reading attempt end")?,
                outcome: AttemptOutcome::from_str(&outcome)?,
                error: row.try_get("a_error").db("reading attempt error")?,
                public_error: PublicError::from_columns(
                    row.try_get("a_error_code")
                        .db("reading attempt error code")?,
                    row.try_get("a_error_message")
                        .db("reading attempt error message")?,
                ),
            });
        }
        Ok((job, attempts))
    }

    async fn attempts_of(&self, tenant_id: &str, id: JobId) -> Result<Vec<Attempt>> {
        let rows = sqlx::query(
            "SELECT attempt, worker_id, started_at, finished_at, outcome, error, error_code, error_message
             FROM job_attempts WHERE job_id = $1 AND tenant_id = $2 ORDER BY attempt",
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
                    started_at: row.try_get("started_at").db("reading attempt start")?,
                    finished_at: row.try_get("finished_at").db("reading attempt end")?,
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
             WHERE job_id = $1 AND tenant_id = $2 AND id > $3
               AND EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND tenant_id = $2)
             ORDER BY id LIMIT $4",
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
                    at: row.try_get("at").db("reading event time")?,
                    attempt: row.try_get("attempt").db("reading event attempt")?,
                    kind: row.try_get("kind").db("reading event kind")?,
                    data: row.try_get("data").db("reading event data")?,
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
        let ids: Vec<Uuid> = cursors.iter().map(|(id, _)| id.as_uuid()).collect();
        let afters: Vec<i64> = cursors.iter().map(|(_, after)| *after).collect();
        let rows = sqlx::query(EVENTS_OF_JOBS_SQL)
            .bind(&ids)
            .bind(&afters)
            .bind(i64::from(per_job))
            .fetch_all(&self.pool)
            .await
            .db("reading new events of followed jobs")?;
        rows.iter()
            .map(|row| {
                Ok(JobEvent {
                    id: row.try_get("id").db("reading event id")?,
                    job_id: JobId::from_uuid(row.try_get("job_id").db("reading event job")?),
                    at: row.try_get("at").db("reading event time")?,
                    attempt: row.try_get("attempt").db("reading event attempt")?,
                    kind: row.try_get("kind").db("reading event kind")?,
                    data: row.try_get("data").db("reading event data")?,
                })
            })
            .collect()
    }

    async fn cancel_as(&self, tenant_id: &str, id: JobId, actor: &Actor) -> Result<Job> {
        let mut tx = self
            .pool
            .begin()
            .await
            .db("starting a cancel transaction")?;
        let row = sqlx::query(
            "WITH c AS (
                UPDATE jobs SET
                    state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                    cancel_requested = cancel_requested OR state = 'running',
                    finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END
                WHERE id = $1 AND tenant_id = $2
                  AND (state = 'queued' OR (state = 'running' AND NOT cancel_requested))
                RETURNING *),
             e AS (INSERT INTO job_events (job_id, tenant_id, attempt, kind)
                   SELECT id, tenant_id, attempt,
                          CASE WHEN state = 'cancelled' THEN 'cancelled' ELSE 'cancel_requested' END FROM c)
             SELECT * FROM c",
        )
        .bind(id.as_uuid())
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .db("cancelling a job")?;
        let Some(row) = row else {
            drop(tx);
            return cancel_unchanged(id, self.find_job(tenant_id, id).await?);
        };
        let job = job_from_row(&row)?;
        record(&mut tx, tenant_id, actor, &job_cancelled(&job)).await?;
        if job.state == JobState::Running {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CANCEL_CHANNEL)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .db("notifying a cancel")?;
        }
        tx.commit().await.db("committing a cancel")?;
        Ok(job)
    }

    async fn retry_within_quota(
        &self,
        tenant_id: &str,
        id: JobId,
        max_queued: Option<i64>,
        actor: &Actor,
    ) -> Result<Job> {
        let mut tx = self
            .pool
            .begin_with(enqueue_lock::shared_begin([tenant_id]))
            .await
            .db("starting a retry transaction")?;
        if max_queued.is_some() {
            sqlx::query(QUOTA_LOCK_SQL)
                .bind(tenant_id)
                .execute(&mut *tx)
                .await
                .db("taking a tenant's quota lock")?;
        }
        let row = sqlx::query(
            "WITH target AS (
                SELECT tenant_id, queue FROM jobs WHERE id = $1 AND tenant_id = $2 AND state IN ('failed', 'cancelled')
             ),
             -- A fresh virtual time, as for a new job: the old one would put the
             -- retried job ahead of every tenant's current work.
             alloc AS (
                INSERT INTO fair_queues AS f (tenant_id, queue, next_vtime)
                SELECT t.tenant_id, t.queue, coalesce(c.vtime, 0) + 1
                FROM target t LEFT JOIN queue_clocks c ON c.queue = t.queue
                ON CONFLICT (tenant_id, queue) DO UPDATE SET next_vtime = greatest(f.next_vtime + 1, excluded.next_vtime)
                RETURNING f.next_vtime - 1 AS vtime
             ),
             r AS (
                UPDATE jobs SET state = 'queued', failed_attempts = 0, run_at = now(), finished_at = NULL,
                                cancel_requested = false, lease_expires_at = NULL,
                                vtime = coalesce((SELECT vtime FROM alloc), vtime),
                                counted_in_quota = EXISTS (SELECT 1 FROM tenants t
                                                           WHERE t.id = $2 AND t.max_queued IS NOT NULL)
                WHERE id = $1 AND tenant_id = $2 AND state IN ('failed', 'cancelled')
                RETURNING *),
             e AS (INSERT INTO job_events (job_id, tenant_id, attempt, kind)
                   SELECT id, tenant_id, attempt, 'requeued' FROM r)
             SELECT * FROM r",
        )
        .bind(id.as_uuid())
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .db("retrying a job")?;
        let Some(row) = row else {
            drop(tx);
            return Err(retry_unchanged(id, self.find_job(tenant_id, id).await?));
        };
        let job = job_from_row(&row)?;
        if let Some(limit) = max_queued {
            // After the lock: this snapshot sees every commit made under it.
            let queued: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND state = 'queued' AND counted_in_quota",
            )
            .bind(tenant_id)
            .fetch_one(&mut *tx)
            .await
            .db("counting queued jobs")?;
            if queued > limit {
                // Dropping the transaction undoes the retry.
                return Err(Error::QuotaExceeded {
                    limit,
                    current: queued - 1,
                });
            }
        }
        record(&mut tx, tenant_id, actor, &job_retried(&job)).await?;
        notify_queues(&mut tx, &[job.queue.as_str()]).await?;
        tx.commit().await.db("committing a retry")?;
        Ok(job)
    }

    async fn set_tenant_max_running(
        &self,
        tenant_id: &str,
        max_running: Option<i32>,
    ) -> Result<()> {
        validate_max_running(max_running)?;
        match max_running {
            Some(max) => sqlx::query(
                "INSERT INTO tenant_limits (tenant_id, max_running) VALUES ($1, $2)
                 ON CONFLICT (tenant_id) DO UPDATE SET max_running = excluded.max_running",
            )
            .bind(tenant_id)
            .bind(max)
            .execute(&self.pool)
            .await
            .db("setting a tenant's running cap")
            .map(|_| ())?,
            None => sqlx::query("DELETE FROM tenant_limits WHERE tenant_id = $1")
                .bind(tenant_id)
                .execute(&self.pool)
                .await
                .db("clearing a tenant's running cap")
                .map(|_| ())?,
        };
        if max_running.is_some() {
            // Running jobs claimed while the tenant was uncapped are not on
            // its counter (if it has one): count them before the cap applies.
            self.repair_running_counters(Some(&[tenant_id.to_string()]))
                .await?;
        }
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
        let mut queues = request.queues.clone();
        queues.sort();
        queues.dedup();
        let mut jobs = Vec::new();
        for round in 0..MAX_CLAIM_ROUNDS {
            let limit = request.limit - jobs.len();
            let capped_out = match self
                .claim_round(request, &queues, limit, default_max_running, &mut jobs)
                .await
            {
                Ok(capped_out) => capped_out,
                // The jobs of the rounds before are committed as running
                // with this worker's lease: they are answered, not dropped
                // (dropped, they would sit unrun until their lease expired).
                Err(error) if round > 0 => {
                    tracing::warn!(%error, claimed = jobs.len(), "a further claim round failed; keeping what the first claimed");
                    break;
                }
                Err(error) => return Err(error),
            };
            if capped_out == 0 || jobs.len() >= request.limit {
                break;
            }
        }
        Ok(jobs)
    }

    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease_for: Duration,
    ) -> Result<Vec<HeartbeatReply>> {
        if leases.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<Uuid> = leases.iter().map(|l| l.job_id.as_uuid()).collect();
        let attempts: Vec<i32> = leases.iter().map(|l| l.attempt).collect();
        let rows = sqlx::query(
            "WITH locked AS MATERIALIZED (
                SELECT j.id FROM jobs j WHERE j.id = ANY ($1::uuid[]) ORDER BY j.id FOR UPDATE
             )
             UPDATE jobs j SET lease_expires_at = now() + make_interval(secs => $3)
             FROM unnest($1::uuid[], $2::int4[]) AS l(id, attempt)
             WHERE j.id = l.id AND j.attempt = l.attempt AND j.state = 'running'
               AND j.id IN (SELECT id FROM locked)
             RETURNING j.id, j.cancel_requested",
        )
        .bind(&ids)
        .bind(&attempts)
        .bind(lease_for.as_secs_f64())
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
        let progress = json_without_nul(&progress);
        sqlx::query(
            "WITH u AS (UPDATE jobs SET progress = $3 WHERE id = $1 AND attempt = $2 AND state = 'running'
                        RETURNING id, tenant_id, attempt)
             INSERT INTO job_events (job_id, tenant_id, attempt, kind, data)
             SELECT id, tenant_id, attempt, 'progress', $3 FROM u RETURNING job_id",
        )
        .bind(lease.job_id.as_uuid())
        .bind(lease.attempt)
        .bind(progress.as_ref())
        .fetch_optional(&self.pool)
        .await
        .db("saving progress")?
        .map(|_| ())
        .ok_or_else(|| lease_lost(lease))
    }

    async fn save_checkpoint(&self, lease: Lease, checkpoint: &Value) -> Result<()> {
        sqlx::query(
            "WITH u AS (UPDATE jobs SET checkpoint = $3 WHERE id = $1 AND attempt = $2 AND state = 'running'
                        RETURNING id, tenant_id, attempt)
             INSERT INTO job_events (job_id, tenant_id, attempt, kind)
             SELECT id, tenant_id, attempt, 'checkpoint' FROM u RETURNING job_id",
        )
        .bind(lease.job_id.as_uuid())
        .bind(lease.attempt)
        .bind(json_without_nul(checkpoint).as_ref())
        .fetch_optional(&self.pool)
        .await
        .db("saving a checkpoint")?
        .map(|_| ())
        .ok_or_else(|| lease_lost(lease))
    }

    async fn finish(&self, lease: Lease, finish: &Finish) -> Result<()> {
        match finish {
            Finish::Succeeded { result } => {
                let applied = self.complete_many(&[(lease, result.clone())]).await?;
                if applied.is_empty() {
                    return Err(lease_lost(lease));
                }
            }
            Finish::Failed {
                error,
                public,
                retry_at,
                permanent,
            } => {
                let row = self
                    .finish_with(FAIL_SQL, lease, |q| {
                        q.bind(text_without_nul(error).into_owned())
                            .bind(*retry_at)
                            .bind(*permanent)
                            .bind(text_without_nul(&public.code).into_owned())
                            .bind(text_without_nul(&public.message).into_owned())
                    })
                    .await?;
                let state: String = row.try_get("state").db("reading the failed job's state")?;
                if state == "queued" {
                    let queue: String =
                        row.try_get("queue").db("reading the failed job's queue")?;
                    let mut conn = self.pool.acquire().await.db("acquiring a connection")?;
                    notify_queues(&mut conn, &[queue.as_str()]).await?;
                }
            }
            Finish::Cancelled => {
                self.finish_with(CANCELLED_SQL, lease, |q| q).await?;
            }
            Finish::Released => {
                let row = self.finish_with(RELEASED_SQL, lease, |q| q).await?;
                let queue: String = row
                    .try_get("queue")
                    .db("reading the released job's queue")?;
                let mut conn = self.pool.acquire().await.db("acquiring a connection")?;
                notify_queues(&mut conn, &[queue.as_str()]).await?;
            }
        }
        Ok(())
    }

    async fn complete_many(&self, completed: &[(Lease, Value)]) -> Result<Vec<JobId>> {
        if completed.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<Uuid> = completed.iter().map(|(l, _)| l.job_id.as_uuid()).collect();
        let attempts: Vec<i32> = completed.iter().map(|(l, _)| l.attempt).collect();
        let results: Vec<String> = completed
            .iter()
            .map(|(_, r)| json_without_nul(r).to_string())
            .collect();
        let applied: Vec<Uuid> = sqlx::query_scalar(concat!(
            "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[]) AS i(id, attempt, result)),
             -- Rows locked in id order, as heartbeats lock them: a batch and
             -- a heartbeat of the same pool never wait on each other in a cycle.
             locked AS MATERIALIZED (
                SELECT j.id FROM jobs j WHERE j.id = ANY ($1::uuid[]) ORDER BY j.id FOR UPDATE
             ),
             done AS (
                UPDATE jobs j SET state = 'succeeded', result = i.result::jsonb, finished_at = now(),
                                  lease_expires_at = NULL,
                                  last_error = NULL, error_code = NULL, error_message = NULL,
                                  progress = CASE WHEN jsonb_typeof(j.progress -> 'total') = 'number'
                                                  THEN jsonb_set(j.progress, '{current}', j.progress -> 'total')
                                                  ELSE j.progress END
                FROM input i WHERE j.id = i.id AND j.attempt = i.attempt AND j.state = 'running'
                  AND j.id IN (SELECT id FROM locked)
                RETURNING j.id, j.tenant_id, j.attempt, j.worker_id, j.started_at
             ),
             a AS (INSERT INTO job_attempts (job_id, attempt, tenant_id, worker_id, started_at, outcome)
                   SELECT id, attempt, tenant_id, worker_id, started_at, 'succeeded' FROM done),
             e AS (INSERT INTO job_events (job_id, tenant_id, attempt, kind)
                   SELECT id, tenant_id, attempt, 'succeeded' FROM done), ",
            give_back_slots!("done"),
            "
             SELECT id FROM done"
        ),
        )
        .bind(&ids)
        .bind(&attempts)
        .bind(&results)
        .fetch_all(&self.pool)
        .await
        .db("completing jobs")?;
        Ok(applied.into_iter().map(JobId::from_uuid).collect())
    }

    async fn rescue_expired(&self, limit: u32) -> Result<Vec<Rescued>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .db("starting a rescue transaction")?;
        let rows = sqlx::query(concat!(
            "WITH expired AS (
                SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < now()
                ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
             ),
             r AS (
                UPDATE jobs j SET
                    failed_attempts = j.failed_attempts + 1,
                    state = CASE WHEN j.failed_attempts + 1 >= j.max_attempts THEN 'failed'
                                 WHEN j.cancel_requested THEN 'cancelled' ELSE 'queued' END,
                    run_at = now(),
                    finished_at = CASE WHEN j.failed_attempts + 1 >= j.max_attempts OR j.cancel_requested
                                       THEN now() END,
                    last_error = 'lease expired: the worker stopped heartbeating',
                    error_code = $2, error_message = $3,
                    lease_expires_at = NULL
                FROM expired WHERE j.id = expired.id AND j.state = 'running'
                RETURNING j.id, j.tenant_id, j.attempt, j.worker_id, j.started_at, j.state, j.queue, j.last_error,
                          j.error_code, j.error_message
             ),
             a AS (INSERT INTO job_attempts (job_id, attempt, tenant_id, worker_id, started_at, outcome,
                                             error, error_code, error_message)
                   SELECT id, attempt, tenant_id, worker_id, started_at, 'lease_expired', last_error,
                          error_code, error_message FROM r),
             e AS (INSERT INTO job_events (job_id, tenant_id, attempt, kind, data)
                   SELECT id, tenant_id, attempt,
                          CASE state WHEN 'queued' THEN 'lease_expired' ELSE state END,
                          jsonb_build_object('error', jsonb_build_object('code', error_code,
                                                                         'message', error_message))
                   FROM r), ",
            give_back_slots!("r"),
            "
             SELECT id, tenant_id, state, queue FROM r"
        ),
        )
        .bind(i64::from(limit))
        .bind(FailureCode::WorkerLost.as_str())
        .bind(FailureCode::WorkerLost.message())
        .fetch_all(&mut *tx)
        .await
        .db("rescuing expired leases")?;
        let mut rescued = Vec::with_capacity(rows.len());
        let mut queues = Vec::new();
        for row in &rows {
            let state: String = row.try_get("state").db("reading a rescued job's state")?;
            let queue: String = row.try_get("queue").db("reading a rescued job's queue")?;
            queues.push(queue);
            rescued.push(Rescued {
                job_id: JobId::from_uuid(row.try_get("id").db("reading a rescued job's id")?),
                tenant_id: row
                    .try_get("tenant_id")
                    .db("reading a rescued job's tenant")?,
                state: state.parse()?,
            });
        }
        if !queues.is_empty() {
            queues.sort();
            queues.dedup();
            let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
            notify_queues(&mut tx, &queues).await?;
        }
        tx.commit().await.db("committing a rescue")?;
        for (tenant_id, running) in self.repair_running_counters(None).await? {
            tracing::warn!(%tenant_id, running, "repaired a running counter that had drifted from the jobs table");
        }
        Ok(rescued)
    }

    async fn prune_finished(&self, finished_before: DateTime<Utc>, limit: u32) -> Result<u64> {
        // Transitions stay in job_events: they are the audit log's record of
        // the job (`audit/postgres.rs`).
        let result = sqlx::query(
            "WITH doomed AS (
                SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < $1
                ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED),
             events AS (DELETE FROM job_events WHERE job_id IN (SELECT id FROM doomed)
                                                 AND kind IN ('progress', 'checkpoint')),
             attempts AS (DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM doomed))
             DELETE FROM jobs WHERE id IN (SELECT id FROM doomed)",
        )
        .bind(finished_before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .db("pruning finished jobs")?;
        Ok(result.rows_affected())
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
            "SELECT state, count(*) FROM jobs WHERE tenant_id = $1 GROUP BY state ORDER BY state",
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
        let mut listening = lock_flag(&self.listening);
        let receiver = self.wakes.subscribe();
        self.start_listener(&mut listening);
        receiver
    }
}
