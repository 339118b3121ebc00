//! The audit log on PostgreSQL: all of its SQL, the reading of job
//! transitions from `job_events` included.

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};
use uuid::Uuid;

use crate::audit::{
    Actor, AuditCursor, AuditEventRef, AuditFilter, AuditStore, AuditVisitor, Change,
    CheckedEvents, Ingested, KeyRange, Order,
};
use crate::error::{DbContext, Result};
use crate::store::PgStore;

/// Records one change of an API call, inside the caller's transaction (its
/// time is the transaction's).
pub(crate) async fn insert_change(
    conn: &mut PgConnection,
    tenant_id: &str,
    actor: &Actor,
    change: &Change,
) -> Result<()> {
    insert_changes(conn, &[(tenant_id, change.clone())], actor).await
}

/// Records many changes by one actor in one statement (a scheduler tick
/// creates hundreds of jobs), inside the caller's transaction.
pub(crate) async fn insert_changes(
    conn: &mut PgConnection,
    changes: &[(&str, Change)],
    actor: &Actor,
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = changes.iter().map(|(tenant, _)| *tenant).collect();
    let ids: Vec<Uuid> = changes.iter().map(|_| Uuid::now_v7()).collect();
    let actions: Vec<&str> = changes.iter().map(|(_, c)| c.action).collect();
    let types: Vec<&str> = changes.iter().map(|(_, c)| c.resource_type).collect();
    let resources: Vec<&str> = changes
        .iter()
        .map(|(_, c)| c.resource_id.as_str())
        .collect();
    let details: Vec<&serde_json::Value> = changes.iter().map(|(_, c)| &c.details).collect();
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, occurred_at, id, source, actor_type, actor_id,
                                   actor_key_id, action, resource_type, resource_id, ip,
                                   request_id, details)
         SELECT x.tenant_id, now(), x.id, $7, $8, $9, $9, x.action, x.resource_type,
                x.resource_id, $10, $11, x.details
         FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
              AS x(tenant_id, id, action, resource_type, resource_id, details)",
    )
    .bind(&tenants)
    .bind(&ids)
    .bind(&actions)
    .bind(&types)
    .bind(&resources)
    .bind(&details)
    .bind(actor.source())
    .bind(actor.kind.as_str())
    .bind(&actor.key_id)
    .bind(&actor.ip)
    .bind(&actor.request_id)
    .execute(conn)
    .await
    .db("recording audit events")?;
    Ok(())
}

/// An application's batch in one statement: `$1` tenant, `$2` key, `$3`
/// request id, `$4`… the columns as arrays. A resent `external_id` is skipped.
const INGEST_SQL: &str = "
INSERT INTO audit_events (tenant_id, occurred_at, id, source, actor_type, actor_id, actor_key_id,
                          action, resource_type, resource_id, ip, request_id, external_id, details)
SELECT $1, e.occurred_at, e.id, 'application', e.actor_type, e.actor_id, $2, e.action,
       e.resource_type, e.resource_id, e.ip, $3, e.external_id, e.details
FROM unnest($4::timestamptz[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::text[], $11::text[], $12::text[], $13::jsonb[])
     AS e(occurred_at, id, actor_type, actor_id, action, resource_type, resource_id, ip,
          external_id, details)
ON CONFLICT (tenant_id, external_id) WHERE external_id IS NOT NULL DO NOTHING";

// ---- reading: audit_events and the transitions of job_events ---------------
//
// A listing, a count or an export reads two tables: the events stored in
// audit_events, and job transitions, which are their job_events rows (every
// kind but progress and checkpoint) mapped to the event the trigger of
// 0004_audit.sql used to copy (see the module docs of `audit`). The parameters
// of every statement below:
//
//   $1 tenant; $2, $3 and $4, $5 the exclusive bounds (time, id) of the
//   [`KeyRange`]; $6 action, $7 actor id, $8 actor key, $9 resource type,
//   $10 resource id, $11 source (NULL: any); $12, $13 the key range as
//   job_events ids (`KeyRange::job_event_ids`: `> $12` at $2, `<= $13` at $4);
//   $14 the job `$10` names (`AuditFilter::job_resource`); $15 the page size.
//
// Each source is read by a branch of its own with every filter, so that each
// is an index range that stops at the page size: audit_events on its primary
// key, transitions on job_events_tenant_at_idx `(tenant_id, at, id)` or, when
// $10 names a job, on job_events_job_idx. Filters only a stored event can
// match ($8, a source or type other than the system's `job`) are conditions
// on parameters alone, which the planner checks once, before any row. Keyset
// comparisons on whole index keys keep a deep page as cheap as the first (see
// `LIST_SQL` in `store/postgres.rs`).

/// audit_events rows strictly inside the key range, then the filters.
macro_rules! stored_events {
    () => {
        "FROM audit_events
WHERE (tenant_id, occurred_at, id) > ($1, $2, $3)
  AND (tenant_id, occurred_at, id) < ($1, $4, $5)
  AND ($6::text IS NULL OR action = $6)
  AND ($7::text IS NULL OR actor_id = $7)
  AND ($8::text IS NULL OR actor_key_id = $8)
  AND ($9::text IS NULL OR resource_type = $9)
  AND ($10::text IS NULL OR resource_id = $10)
  AND ($11::text IS NULL OR source = $11)"
    };
}

/// The filters of a transition `e`, bar the resource id and the range.
macro_rules! transition_filters {
    () => {
        "
  AND e.kind NOT IN ('progress', 'checkpoint')
  AND ($6::text IS NULL OR 'job.' || e.kind = $6)
  AND ($7::text IS NULL OR (e.kind = 'started' AND e.data ->> 'workerId' = $7))
  AND $8::text IS NULL
  AND ($9::text IS NULL OR $9 = 'job')
  AND ($11::text IS NULL OR $11 = 'system')"
    };
}

/// A tenant's transitions in the key range, when no resource id is asked
/// for: a range of job_events_tenant_at_idx (its predicate is the kind filter).
macro_rules! tenant_transitions {
    () => {
        concat!(
            "FROM job_events e
WHERE $10::text IS NULL
  AND (e.tenant_id, e.at, e.id) > ($1, $2, $12)
  AND (e.tenant_id, e.at, e.id) <= ($1, $4, $13)",
            transition_filters!()
        )
    };
}

/// The transitions in the key range of the job the resource id names (none
/// when it names no job: $14 is NULL), from job_events_job_idx.
macro_rules! job_transitions {
    () => {
        concat!(
            "FROM job_events e
WHERE e.job_id = $14 AND e.tenant_id = $1
  AND (e.at, e.id) > ($2, $12)
  AND (e.at, e.id) <= ($4, $13)",
            transition_filters!()
        )
    };
}

/// The audit event a transition `e` is: what the trigger wrote, its id the
/// row's id as a uuid.
macro_rules! transition_columns {
    () => {
        "SELECT lpad(to_hex(e.id), 32, '0')::uuid, e.tenant_id, e.at, e.at, 'system', 'system',
       CASE WHEN e.kind = 'started' THEN e.data ->> 'workerId' END, NULL::text,
       'job.' || e.kind, 'job', 'job_' || replace(e.job_id::text, '-', ''),
       NULL::text, NULL::text, NULL::text,
       jsonb_strip_nulls(jsonb_build_object('attempt', e.attempt, 'data', e.data))::text
"
    };
}

/// A page: up to $15 rows of each branch, in its index's order (`$dir` is
/// `ASC` or `DESC`), merged by `(occurred_at, id)` and cut at $15. Each branch
/// cuts its own page: a transition's event id is computed, so no index yields
/// the merged order, and the final sort is of three pages at most.
macro_rules! list_sql {
    ($dir:literal) => {
        concat!(
            "SELECT * FROM (
(SELECT id, tenant_id, occurred_at, recorded_at, source, actor_type, actor_id, actor_key_id,
       action, resource_type, resource_id, ip, request_id, external_id, details::text
",
            stored_events!(),
            "
ORDER BY tenant_id ",
            $dir,
            ", occurred_at ",
            $dir,
            ", id ",
            $dir,
            "
LIMIT $15)
UNION ALL
(",
            transition_columns!(),
            tenant_transitions!(),
            "
ORDER BY e.tenant_id ",
            $dir,
            ", e.at ",
            $dir,
            ", e.id ",
            $dir,
            "
LIMIT $15)
UNION ALL
(",
            transition_columns!(),
            job_transitions!(),
            "
ORDER BY e.at ",
            $dir,
            ", e.id ",
            $dir,
            "
LIMIT $15)
) page
ORDER BY occurred_at ",
            $dir,
            ", id ",
            $dir,
            "
LIMIT $15"
        )
    };
}
const LIST_NEWEST_SQL: &str = list_sql!("DESC");
const LIST_OLDEST_SQL: &str = list_sql!("ASC");
const COUNT_SQL: &str = concat!(
    "SELECT (SELECT count(*) ",
    stored_events!(),
    ")
     + (SELECT count(*) ",
    tenant_transitions!(),
    ")
     + (SELECT count(*) ",
    job_transitions!(),
    ") AS n"
);

/// A reading statement with `$1`…`$14` bound (see above).
fn reading<'q>(
    sql: &'q str,
    tenant_id: &'q str,
    filter: &'q AuditFilter,
    range: &KeyRange,
) -> Query<'q, Postgres, PgArguments> {
    let (low_id, high_id) = range.job_event_ids();
    sqlx::query(sql)
        .bind(tenant_id)
        .bind(range.low.0)
        .bind(range.low.1)
        .bind(range.high.0)
        .bind(range.high.1)
        .bind(&filter.action)
        .bind(&filter.actor_id)
        .bind(&filter.actor_key_id)
        .bind(&filter.resource_type)
        .bind(&filter.resource_id)
        .bind(&filter.source)
        .bind(low_id)
        .bind(high_id)
        .bind(filter.job_resource())
}

/// A row of the listing query, borrowed: columns by position (the query's
/// own list), types known, so no name lookups or type checks per row.
fn event_of(row: &PgRow) -> std::result::Result<AuditEventRef<'_>, sqlx::Error> {
    Ok(AuditEventRef {
        id: row.try_get_unchecked(0)?,
        tenant_id: row.try_get_unchecked(1)?,
        occurred_at: row.try_get_unchecked(2)?,
        recorded_at: row.try_get_unchecked(3)?,
        source: row.try_get_unchecked(4)?,
        actor_type: row.try_get_unchecked(5)?,
        actor_id: row.try_get_unchecked(6)?,
        actor_key_id: row.try_get_unchecked(7)?,
        action: row.try_get_unchecked(8)?,
        resource_type: row.try_get_unchecked(9)?,
        resource_id: row.try_get_unchecked(10)?,
        ip: row.try_get_unchecked(11)?,
        request_id: row.try_get_unchecked(12)?,
        external_id: row.try_get_unchecked(13)?,
        details: row.try_get_unchecked(14)?,
    })
}

#[async_trait]
impl AuditStore for PgStore {
    async fn ingest_audit_events(
        &self,
        tenant_id: &str,
        actor: &Actor,
        events: &CheckedEvents,
    ) -> Result<Ingested> {
        let events = &events.0;
        let mut columns = IngestColumns::default();
        for event in events {
            columns.occurred_at.push(event.occurred_at);
            columns.id.push(Uuid::now_v7());
            columns.actor_type.push(event.actor_type.as_str());
            columns.actor_id.push(event.actor_id.as_deref());
            columns.action.push(event.action.as_str());
            columns.resource_type.push(event.resource_type.as_deref());
            columns.resource_id.push(event.resource_id.as_deref());
            columns.ip.push(event.ip.as_deref());
            columns.external_id.push(event.external_id.as_deref());
            columns.details.push(&event.details);
        }
        let stored = sqlx::query(INGEST_SQL)
            .bind(tenant_id)
            .bind(&actor.key_id)
            .bind(&actor.request_id)
            .bind(&columns.occurred_at)
            .bind(&columns.id)
            .bind(&columns.actor_type)
            .bind(&columns.actor_id)
            .bind(&columns.action)
            .bind(&columns.resource_type)
            .bind(&columns.resource_id)
            .bind(&columns.ip)
            .bind(&columns.external_id)
            .bind(&columns.details)
            .execute(self.pool())
            .await
            .db("storing audit events")?
            .rows_affected();
        let stored = usize::try_from(stored).unwrap_or(usize::MAX);
        Ok(Ingested {
            stored,
            duplicates: events.len().saturating_sub(stored),
        })
    }

    async fn scan_audit_events(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
        after: Option<AuditCursor>,
        order: Order,
        limit: u32,
        visit: &mut AuditVisitor<'_>,
    ) -> Result<usize> {
        filter.check()?;
        let range = KeyRange::new(filter, after, order);
        if range.is_empty() {
            return Ok(0);
        }
        let sql = match order {
            Order::NewestFirst => LIST_NEWEST_SQL,
            Order::OldestFirst => LIST_OLDEST_SQL,
        };
        let rows = reading(sql, tenant_id, filter, &range)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .db("listing audit events")?;
        for row in &rows {
            visit(&event_of(row).db("reading an audit event")?)?;
        }
        Ok(rows.len())
    }

    async fn count_audit_events(&self, tenant_id: &str, filter: &AuditFilter) -> Result<u64> {
        filter.check()?;
        let range = KeyRange::new(filter, None, Order::OldestFirst);
        if range.is_empty() {
            return Ok(0);
        }
        let count: i64 = reading(COUNT_SQL, tenant_id, filter, &range)
            .fetch_one(self.pool())
            .await
            .db("counting audit events")?
            .try_get(0)
            .db("reading the count of audit events")?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

#[derive(Default)]
struct IngestColumns<'e> {
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    id: Vec<Uuid>,
    actor_type: Vec<&'e str>,
    actor_id: Vec<Option<&'e str>>,
    action: Vec<&'e str>,
    resource_type: Vec<Option<&'e str>>,
    resource_id: Vec<Option<&'e str>>,
    ip: Vec<Option<&'e str>>,
    external_id: Vec<Option<&'e str>>,
    details: Vec<&'e serde_json::Value>,
}
