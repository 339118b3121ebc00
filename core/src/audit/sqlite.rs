//! The audit log on SQLite: all of its SQL (the job-transition trigger is in
//! `migrations/sqlite/0004_audit.sql`). Writes hold the store's write lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::{
    Actor, AuditCursor, AuditEventRef, AuditFilter, AuditStore, AuditVisitor, Change,
    CheckedEvents, Ingested, KeyRange, Order,
};
use crate::error::{DbContext, Error, Result};
use crate::store::SqliteStore;

/// Records one change of an API call inside the caller's write transaction,
/// at `at` (microseconds: the time the change itself was written with).
pub(crate) async fn insert_change(
    conn: &mut SqliteConnection,
    at: i64,
    tenant_id: &str,
    actor: &Actor,
    change: &Change,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, occurred_at, id, recorded_at, source, actor_type,
                                   actor_id, actor_key_id, action, resource_type, resource_id,
                                   ip, request_id, details)
         VALUES (?1, ?2, ?3, ?2, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .bind(tenant_id)
    .bind(at)
    .bind(Uuid::now_v7())
    .bind(actor.source())
    .bind(actor.kind.as_str())
    .bind(&actor.key_id)
    .bind(change.action)
    .bind(change.resource_type)
    .bind(&change.resource_id)
    .bind(&actor.ip)
    .bind(&actor.request_id)
    .bind(change.details.to_string())
    .execute(conn)
    .await
    .db("recording an audit event")?;
    Ok(())
}

/// A page: rows strictly inside the [`KeyRange`] (`?2`/`?3` to `?4`/`?5`) on
/// the primary key, then the filters. `$dir` is `ASC` or `DESC`.
macro_rules! list_sql {
    ($dir:literal) => {
        concat!(
            "SELECT id, tenant_id, occurred_at, recorded_at, source, actor_type, actor_id,
       actor_key_id, action, resource_type, resource_id, ip, request_id, external_id, details
FROM audit_events
WHERE (tenant_id, occurred_at, id) > (?1, ?2, ?3)
  AND (tenant_id, occurred_at, id) < (?1, ?4, ?5)
  AND (?6 IS NULL OR action = ?6)
  AND (?7 IS NULL OR actor_id = ?7)
  AND (?8 IS NULL OR actor_key_id = ?8)
  AND (?9 IS NULL OR resource_type = ?9)
  AND (?10 IS NULL OR resource_id = ?10)
  AND (?11 IS NULL OR source = ?11)
ORDER BY tenant_id ",
            $dir,
            ", occurred_at ",
            $dir,
            ", id ",
            $dir,
            "
LIMIT ?12"
        )
    };
}
const LIST_NEWEST_SQL: &str = list_sql!("DESC");
const LIST_OLDEST_SQL: &str = list_sql!("ASC");
const COUNT_SQL: &str = "SELECT count(*) AS n FROM audit_events
WHERE (tenant_id, occurred_at, id) > (?1, ?2, ?3)
  AND (tenant_id, occurred_at, id) < (?1, ?4, ?5)
  AND (?6 IS NULL OR action = ?6)
  AND (?7 IS NULL OR actor_id = ?7)
  AND (?8 IS NULL OR actor_key_id = ?8)
  AND (?9 IS NULL OR resource_type = ?9)
  AND (?10 IS NULL OR resource_id = ?10)
  AND (?11 IS NULL OR source = ?11)";

fn time_at(row: &SqliteRow, index: usize) -> Result<DateTime<Utc>> {
    let micros: i64 = row
        .try_get_unchecked(index)
        .db("reading an audit event time")?;
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        Error::corrupt(
            "audit event time",
            format!("{micros} microseconds is out of range"),
        )
    })
}

/// A row of the listing query, borrowed: columns by position (the query's
/// own list), times from microseconds.
fn event_of(row: &SqliteRow) -> Result<AuditEventRef<'_>> {
    let read = "reading an audit event";
    Ok(AuditEventRef {
        id: row.try_get_unchecked::<Uuid, _>(0).db(read)?,
        tenant_id: row.try_get_unchecked(1).db(read)?,
        occurred_at: time_at(row, 2)?,
        recorded_at: time_at(row, 3)?,
        source: row.try_get_unchecked(4).db(read)?,
        actor_type: row.try_get_unchecked(5).db(read)?,
        actor_id: row.try_get_unchecked(6).db(read)?,
        actor_key_id: row.try_get_unchecked(7).db(read)?,
        action: row.try_get_unchecked(8).db(read)?,
        resource_type: row.try_get_unchecked(9).db(read)?,
        resource_id: row.try_get_unchecked(10).db(read)?,
        ip: row.try_get_unchecked(11).db(read)?,
        request_id: row.try_get_unchecked(12).db(read)?,
        external_id: row.try_get_unchecked(13).db(read)?,
        details: row.try_get_unchecked(14).db(read)?,
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn ingest_audit_events(
        &self,
        tenant_id: &str,
        actor: &Actor,
        events: &CheckedEvents,
    ) -> Result<Ingested> {
        let now = Utc::now().timestamp_micros();
        let mut tx = self.begin_write("starting to store audit events").await?;
        let mut stored = 0;
        for event in &events.0 {
            let written = sqlx::query(
                "INSERT INTO audit_events (tenant_id, occurred_at, id, recorded_at, source,
                     actor_type, actor_id, actor_key_id, action, resource_type, resource_id, ip,
                     request_id, external_id, details)
                 VALUES (?1, ?2, ?3, ?4, 'application', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (tenant_id, external_id) WHERE external_id IS NOT NULL DO NOTHING",
            )
            .bind(tenant_id)
            .bind(event.occurred_at.timestamp_micros())
            .bind(Uuid::now_v7())
            .bind(now)
            .bind(&event.actor_type)
            .bind(&event.actor_id)
            .bind(&actor.key_id)
            .bind(&event.action)
            .bind(&event.resource_type)
            .bind(&event.resource_id)
            .bind(&event.ip)
            .bind(&actor.request_id)
            .bind(&event.external_id)
            .bind(event.details.to_string())
            .execute(tx.conn())
            .await
            .db("storing an audit event")?;
            stored += usize::try_from(written.rows_affected()).unwrap_or(0);
        }
        tx.commit("committing audit events").await?;
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
            .bind(range.low.0.timestamp_micros())
            .bind(range.low.1)
            .bind(range.high.0.timestamp_micros())
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
            visit(&event_of(row)?)?;
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
            .bind(range.low.0.timestamp_micros())
            .bind(range.low.1)
            .bind(range.high.0.timestamp_micros())
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
