//! The audit log on PostgreSQL: all of its SQL (the job-transition trigger is
//! in `migrations/postgres/0004_audit.sql`).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{
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

/// A page of a tenant's log: rows strictly inside the [`super::KeyRange`]
/// `($2, $3)`–`($4, $5)`, then the filters `$6`…`$11`, `$12` rows. Written
/// as comparisons of the whole key `(tenant_id, occurred_at, id)`, so that only
/// a scan of the primary key (forwards or backwards) serves them and a deep
/// page costs what the first does (see `LIST_SQL` in `store/postgres.rs`).
macro_rules! list_sql {
    ($dir:literal) => {
        concat!(
            "SELECT id, tenant_id, occurred_at, recorded_at, source, actor_type, actor_id,
       actor_key_id, action, resource_type, resource_id, ip, request_id, external_id,
       details::text
FROM audit_events
WHERE (tenant_id, occurred_at, id) > ($1, $2, $3)
  AND (tenant_id, occurred_at, id) < ($1, $4, $5)
  AND ($6::text IS NULL OR action = $6)
  AND ($7::text IS NULL OR actor_id = $7)
  AND ($8::text IS NULL OR actor_key_id = $8)
  AND ($9::text IS NULL OR resource_type = $9)
  AND ($10::text IS NULL OR resource_id = $10)
  AND ($11::text IS NULL OR source = $11)
ORDER BY tenant_id ",
            $dir,
            ", occurred_at ",
            $dir,
            ", id ",
            $dir,
            "
LIMIT $12"
        )
    };
}
const LIST_NEWEST_SQL: &str = list_sql!("DESC");
const LIST_OLDEST_SQL: &str = list_sql!("ASC");
const COUNT_SQL: &str = "SELECT count(*) AS n FROM audit_events
WHERE (tenant_id, occurred_at, id) > ($1, $2, $3)
  AND (tenant_id, occurred_at, id) < ($1, $4, $5)
  AND ($6::text IS NULL OR action = $6)
  AND ($7::text IS NULL OR actor_id = $7)
  AND ($8::text IS NULL OR actor_key_id = $8)
  AND ($9::text IS NULL OR resource_type = $9)
  AND ($10::text IS NULL OR resource_id = $10)
  AND ($11::text IS NULL OR source = $11)";

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
        let rows = sqlx::query(sql)
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
        let count: i64 = sqlx::query_scalar(COUNT_SQL)
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
            .fetch_one(self.pool())
            .await
            .db("counting audit events")?;
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
