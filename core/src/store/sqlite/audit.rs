//! The audit log on SQLite: all of its SQL, the reading of job transitions
//! from `job_events` included. Writes hold the store's write lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use crate::audit::{
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

// ---- reading: audit_events and the transitions of job_events ---------------
//
// As on PostgreSQL (`audit/postgres.rs`, which explains the branches): each
// statement reads audit_events and the transitions of job_events, mapped to
// the event the trigger of 0004_audit.sql used to copy (its string
// concatenation for the details), its id the row's id as 16 big-endian bytes.
// The parameters:
//
//   ?1 tenant; ?2, ?3 and ?4, ?5 the exclusive bounds (time in microseconds,
//   id) of the [`KeyRange`]; ?6 action, ?7 actor id, ?8 actor key, ?9 resource
//   type, ?10 resource id, ?11 source (NULL: any); ?12, ?13 the key range as
//   job_events ids (`> ?12` at ?2, `<= ?13` at ?4); ?14 the job ?10 names;
//   ?15 the page size.
//
// Conditions on parameters alone are evaluated once, before the loop; the
// kind filter is the predicate of job_events_tenant_at_idx, word for word, as
// SQLite needs it to use the partial index.

/// audit_events rows strictly inside the key range, then the filters.
macro_rules! stored_events {
    () => {
        "FROM audit_events
WHERE (tenant_id, occurred_at, id) > (?1, ?2, ?3)
  AND (tenant_id, occurred_at, id) < (?1, ?4, ?5)
  AND (?6 IS NULL OR action = ?6)
  AND (?7 IS NULL OR actor_id = ?7)
  AND (?8 IS NULL OR actor_key_id = ?8)
  AND (?9 IS NULL OR resource_type = ?9)
  AND (?10 IS NULL OR resource_id = ?10)
  AND (?11 IS NULL OR source = ?11)"
    };
}

/// The filters of a transition `e`, bar the resource id and the range.
macro_rules! transition_filters {
    () => {
        "
  AND e.kind NOT IN ('progress', 'checkpoint')
  AND (?6 IS NULL OR 'job.' || e.kind = ?6)
  AND (?7 IS NULL OR (e.kind = 'started' AND json_extract(e.data, '$.workerId') = ?7))
  AND ?8 IS NULL
  AND (?9 IS NULL OR ?9 = 'job')
  AND (?11 IS NULL OR ?11 = 'system')"
    };
}

/// A tenant's transitions in the key range when no resource id is asked for:
/// a range of job_events_tenant_at_idx.
macro_rules! tenant_transitions {
    () => {
        concat!(
            "FROM job_events e
WHERE ?10 IS NULL
  AND (e.tenant_id, e.at, e.id) > (?1, ?2, ?12)
  AND (e.tenant_id, e.at, e.id) <= (?1, ?4, ?13)",
            transition_filters!()
        )
    };
}

/// The transitions in the key range of the job the resource id names (none
/// when it names no job: ?14 is NULL), from job_events_job_idx: named, as
/// without statistics SQLite prefers the tenant's range (an equality and a
/// range) to one job's few rows.
macro_rules! job_transitions {
    () => {
        concat!(
            "FROM job_events e INDEXED BY job_events_job_idx
WHERE e.job_id = ?14 AND e.tenant_id = ?1
  AND (e.at, e.id) > (?2, ?12)
  AND (e.at, e.id) <= (?4, ?13)",
            transition_filters!()
        )
    };
}

/// The audit event a transition `e` is: what the trigger wrote, its id the
/// row's id as a 16-byte blob.
macro_rules! transition_columns {
    () => {
        "SELECT unhex(printf('%032x', e.id)) AS id, e.tenant_id, e.at AS occurred_at,
       e.at AS recorded_at, 'system' AS source, 'system' AS actor_type,
       CASE WHEN e.kind = 'started' THEN json_extract(e.data, '$.workerId') END AS actor_id,
       NULL AS actor_key_id, 'job.' || e.kind AS action, 'job' AS resource_type,
       'job_' || lower(hex(e.job_id)) AS resource_id, NULL AS ip, NULL AS request_id,
       NULL AS external_id,
       '{\"attempt\":' || coalesce(e.attempt, 'null')
           || CASE WHEN e.data IS NULL THEN '' ELSE ',\"data\":' || e.data END || '}' AS details
"
    };
}

/// A page: up to ?15 rows of each branch, in its index's order (`$dir` is
/// `ASC` or `DESC`), merged by `(occurred_at, id)` and cut at ?15. Each branch
/// cuts its own page: a transition's event id is computed, so no index yields
/// the merged order, and the final sort is of three pages at most.
macro_rules! list_sql {
    ($dir:literal) => {
        concat!(
            "SELECT * FROM (
SELECT id, tenant_id, occurred_at, recorded_at, source, actor_type, actor_id, actor_key_id,
       action, resource_type, resource_id, ip, request_id, external_id, details
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
LIMIT ?15)
UNION ALL
SELECT * FROM (",
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
LIMIT ?15)
UNION ALL
SELECT * FROM (",
            transition_columns!(),
            job_transitions!(),
            "
ORDER BY e.at ",
            $dir,
            ", e.id ",
            $dir,
            "
LIMIT ?15)
ORDER BY occurred_at ",
            $dir,
            ", id ",
            $dir,
            "
LIMIT ?15"
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

/// A reading statement with `?1`…`?14` bound (see above).
fn reading<'q>(
    sql: &'q str,
    tenant_id: &'q str,
    filter: &'q AuditFilter,
    range: &KeyRange,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    let (low_id, high_id) = range.job_event_ids();
    sqlx::query(sql)
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
        .bind(low_id)
        .bind(high_id)
        .bind(filter.job_resource())
}

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
        let rows = reading(sql, tenant_id, filter, &range)
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
        let count: i64 = reading(COUNT_SQL, tenant_id, filter, &range)
            .fetch_one(self.pool())
            .await
            .db("counting audit events")?
            .try_get(0)
            .db("reading the count of audit events")?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobStore;

    /// The plan of `sql` with every filter absent (`?10` too, or naming a
    /// job), one line per step.
    async fn plan(store: &SqliteStore, sql: &str, job: Option<Uuid>) -> String {
        let filter = AuditFilter {
            resource_id: job.map(|id| format!("job_{}", id.simple())),
            ..AuditFilter::default()
        };
        let range = KeyRange::new(&filter, None, Order::NewestFirst);
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = reading(&explain, "t", &filter, &range);
        if sql != COUNT_SQL {
            query = query.bind(10_i64);
        }
        let rows = query.fetch_all(store.pool()).await.expect("plan");
        rows.iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn every_branch_is_an_index_range() {
        let path = std::env::temp_dir().join(format!("longhaul_audit_plan_{}.db", Uuid::now_v7()));
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display()), 1)
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        for sql in [LIST_NEWEST_SQL, LIST_OLDEST_SQL, COUNT_SQL] {
            for job in [None, Some(Uuid::now_v7())] {
                let plan = plan(&store, sql, job).await;
                let lines: Vec<&str> = plan.lines().collect();
                let step = |search: &str| {
                    lines
                        .iter()
                        .position(|line| line.starts_with(search))
                        .unwrap_or_else(|| panic!("no {search:?} in\n{plan}"))
                };
                let stored =
                    step("SEARCH audit_events USING PRIMARY KEY ((tenant_id,occurred_at,id)>");
                let tenant = step("SEARCH e USING INDEX job_events_tenant_at_idx ((tenant_id,at)>");
                step("SEARCH e USING INDEX job_events_job_idx (job_id=?)");
                assert!(!plan.contains("SCAN audit_events"), "{plan}");
                assert!(!lines.contains(&"SCAN e"), "{plan}");
                // Both ranges are read in the page's order: each stops at the
                // page size (only the page's rows are sorted, to merge them).
                for at in [stored, tenant] {
                    assert!(
                        !lines
                            .get(at + 1)
                            .is_some_and(|l| l.starts_with("USE TEMP B-TREE")),
                        "{plan}"
                    );
                }
            }
        }
        drop(store);
        let _ = std::fs::remove_file(path);
    }
}
