//! Retention policies, legal holds, the walk over expired audit events and
//! their deletion, written once for both backends (see `sql.rs`). Deletes
//! run in short transactions of one batch each; each re-reads the holds in
//! force inside the transaction, after locking the tenant's row against
//! new holds (`FOR SHARE` on PostgreSQL, where placing a hold takes `FOR NO
//! KEY UPDATE`; SQLite's write lock serialises both), so an event a hold
//! covers is never deleted, however close the two come.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::sql::{sql, Db, Row, SqlStore};
use super::{PgStore, SqliteStore};
use crate::audit::{Actor, AuditCursor, Change};
use crate::error::{DbContext, Error, Result};
use crate::retention::{
    hold_id_text, policy_id_text, ArchiveConfig, CheckedPolicy, Deleted, EventsByAge, ExpiredEvent,
    Holds, LegalHold, NewLegalHold, OnExpiry, PolicyActions, PolicyTarget, RetentionMetrics,
    RetentionPolicy, RetentionPolicyPatch, RetentionSavings, RetentionStore, MAX_HOLDS,
    MAX_POLICIES,
};

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

fn policy_from_row(row: &Row) -> Result<RetentionPolicy> {
    let scope = serde_json::from_value(row.json("scope")?)
        .map_err(|e| Error::corrupt("reading a retention policy's scope", e))?;
    Ok(RetentionPolicy {
        policy_id: policy_id_text(row.uuid("id")?),
        name: row.text("name")?,
        target: PolicyTarget::parse(&row.text("target")?)?,
        retention_period: row.text("retention_period")?,
        scope,
        archive_config: ArchiveConfig {
            enabled: row.bool("archive")?,
            destination: "artifacts".to_string(),
        },
        actions: PolicyActions {
            on_expiry: OnExpiry::parse(&row.text("on_expiry")?)?,
        },
        enabled: row.bool("enabled")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

fn hold_from_row(row: &Row, now: DateTime<Utc>) -> Result<LegalHold> {
    let scope = serde_json::from_value(row.json("scope")?)
        .map_err(|e| Error::corrupt("reading a legal hold's scope", e))?;
    let released_at = row.opt_time("released_at")?;
    let expires_at = row.opt_time("expires_at")?;
    Ok(LegalHold {
        hold_id: hold_id_text(row.uuid("id")?),
        name: row.text("name")?,
        reason: row.text("reason")?,
        scope,
        status: LegalHold::status_at(released_at, expires_at, now),
        objects_held: count(row.int("objects_held")?),
        expires_at,
        created_at: row.time("created_at")?,
        released_at,
        objects_released: row.opt_int("objects_released")?.map(count),
    })
}

fn name_taken(error: Error, name: &str) -> Error {
    if error.to_string().contains("retention_policies_name_idx")
        || error
            .to_string()
            .contains("UNIQUE constraint failed: retention_policies")
    {
        Error::Conflict(format!("a retention policy named {name:?} exists"))
    } else {
        error
    }
}

fn policy_details(policy: &CheckedPolicy) -> serde_json::Value {
    json!({
        "name": policy.name,
        "target": policy.target.as_str(),
        "retentionPeriod": policy.retention_period,
        "scope": policy.scope,
        "archive": policy.archive,
        "onExpiry": policy.on_expiry.as_str(),
        "enabled": policy.enabled,
    })
}

fn scope_json(policy: &CheckedPolicy) -> Result<serde_json::Value> {
    serde_json::to_value(&policy.scope).map_err(|e| Error::corrupt("encoding a scope", e))
}

async fn create_policy(
    store: &impl SqlStore,
    tenant_id: &str,
    policy: &CheckedPolicy,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<RetentionPolicy> {
    let mut tx = store.write("starting to create a retention policy").await?;
    let mut db = tx.db();
    lock_tenant(&mut db, tenant_id).await?;
    let current = db
        .fetch_optional(
            sql(
                "counting the tenant's retention policies",
                "SELECT count(*) AS n FROM retention_policies WHERE tenant_id = $1",
            )
            .bind(tenant_id),
        )
        .await?
        .map(|row| row.int("n"))
        .transpose()?
        .unwrap_or(0);
    if current >= MAX_POLICIES {
        return Err(Error::LimitReached {
            what: "retention policies",
            limit: MAX_POLICIES,
            current,
        });
    }
    let row = db
        .fetch_optional(
            sql(
                "writing a retention policy",
                "INSERT INTO retention_policies (tenant_id, id, name, target, retention_period, scope,
                                                 archive, on_expiry, enabled, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING *",
            )
            .bind(tenant_id)
            .bind(Uuid::now_v7())
            .bind(&policy.name)
            .bind(policy.target.as_str())
            .bind(&policy.retention_period)
            .bind(&scope_json(policy)?)
            .bind(policy.archive)
            .bind(policy.on_expiry.as_str())
            .bind(policy.enabled)
            .bind(now),
        )
        .await
        .map_err(|e| name_taken(e, &policy.name))?
        .ok_or_else(|| Error::corrupt("creating a retention policy", "no row returned"))?;
    let created = policy_from_row(&row)?;
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "retention_policy.create",
            "retention_policy",
            &created.policy_id,
            policy_details(policy),
        ),
        now,
    )
    .await?;
    tx.commit("creating a retention policy").await?;
    Ok(created)
}

async fn read_policy(
    db: &mut Db<'_>,
    tenant_id: &str,
    id: Uuid,
    lock: bool,
) -> Result<RetentionPolicy> {
    let text = if lock {
        db.pick(
            "SELECT * FROM retention_policies WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            "SELECT * FROM retention_policies WHERE tenant_id = $1 AND id = $2",
        )
    } else {
        "SELECT * FROM retention_policies WHERE tenant_id = $1 AND id = $2"
    };
    let row = db
        .fetch_optional(
            sql("reading a retention policy", text)
                .bind(tenant_id)
                .bind(id),
        )
        .await?
        .ok_or_else(|| Error::no_such("retention policy", policy_id_text(id)))?;
    policy_from_row(&row)
}

async fn get_policy(store: &impl SqlStore, tenant_id: &str, id: Uuid) -> Result<RetentionPolicy> {
    let mut conn = store.read("reading a retention policy").await?;
    read_policy(&mut conn.db(), tenant_id, id, false).await
}

async fn list_policies(
    store: &impl SqlStore,
    tenant_id: &str,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<RetentionPolicy>> {
    let mut conn = store.read("listing retention policies").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing retention policies",
                "SELECT * FROM retention_policies WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2)
                 ORDER BY id LIMIT $3",
            )
            .bind(tenant_id)
            .bind(after)
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(policy_from_row)
        .collect()
}

async fn update_policy(
    store: &impl SqlStore,
    tenant_id: &str,
    id: Uuid,
    patch: &RetentionPolicyPatch,
    data_buckets: &[String],
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<RetentionPolicy> {
    let mut tx = store.write("starting to update a retention policy").await?;
    let mut db = tx.db();
    let current = read_policy(&mut db, tenant_id, id, true).await?;
    let checked = patch.apply(&current).check(data_buckets)?;
    if checked.target != current.target {
        return Err(Error::validation(
            "scope",
            "cannot turn an audit-log policy into a data-bucket one or back: create another policy",
        ));
    }
    let row = db
        .fetch_optional(
            sql(
                "updating a retention policy",
                "UPDATE retention_policies SET name = $3, retention_period = $4, scope = $5,
                        archive = $6, on_expiry = $7, enabled = $8, updated_at = $9
                 WHERE tenant_id = $1 AND id = $2 RETURNING *",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(&checked.name)
            .bind(&checked.retention_period)
            .bind(&scope_json(&checked)?)
            .bind(checked.archive)
            .bind(checked.on_expiry.as_str())
            .bind(checked.enabled)
            .bind(now),
        )
        .await
        .map_err(|e| name_taken(e, &checked.name))?
        .ok_or_else(|| Error::no_such("retention policy", policy_id_text(id)))?;
    let updated = policy_from_row(&row)?;
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "retention_policy.update",
            "retention_policy",
            &updated.policy_id,
            policy_details(&checked),
        ),
        now,
    )
    .await?;
    tx.commit("updating a retention policy").await?;
    Ok(updated)
}

async fn delete_policy(
    store: &impl SqlStore,
    tenant_id: &str,
    id: Uuid,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<()> {
    let mut tx = store.write("starting to delete a retention policy").await?;
    let mut db = tx.db();
    let deleted = db
        .execute(
            sql(
                "deleting a retention policy",
                "DELETE FROM retention_policies WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id)
            .bind(id),
        )
        .await?;
    if deleted == 0 {
        return Err(Error::no_such("retention policy", policy_id_text(id)));
    }
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "retention_policy.delete",
            "retention_policy",
            policy_id_text(id),
            json!({}),
        ),
        now,
    )
    .await?;
    tx.commit("deleting a retention policy").await
}

/// Orders holds against deletes of the tenant's events (see the module
/// docs): `exclusive` for placing a hold, shared for a delete batch.
async fn lock_tenant_for(db: &mut Db<'_>, tenant_id: &str, exclusive: bool) -> Result<()> {
    let text = if exclusive {
        db.pick(
            "SELECT id FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
            "SELECT id FROM tenants WHERE id = $1",
        )
    } else {
        db.pick(
            "SELECT id FROM tenants WHERE id = $1 FOR SHARE",
            "SELECT id FROM tenants WHERE id = $1",
        )
    };
    db.fetch_optional(sql("locking the tenant", text).bind(tenant_id))
        .await?;
    Ok(())
}

pub(super) async fn lock_tenant(db: &mut Db<'_>, tenant_id: &str) -> Result<()> {
    lock_tenant_for(db, tenant_id, true).await
}

async fn create_hold(
    store: &impl SqlStore,
    tenant_id: &str,
    hold: &NewLegalHold,
    objects_held: u64,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<LegalHold> {
    let mut tx = store.write("starting to place a legal hold").await?;
    let mut db = tx.db();
    lock_tenant(&mut db, tenant_id).await?;
    let current = db
        .fetch_optional(
            sql(
                "counting the tenant's active holds",
                "SELECT count(*) AS n FROM legal_holds WHERE tenant_id = $1 AND released_at IS NULL
                   AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(tenant_id)
            .bind(now),
        )
        .await?
        .map(|row| row.int("n"))
        .transpose()?
        .unwrap_or(0);
    if current >= MAX_HOLDS {
        return Err(Error::LimitReached {
            what: "active legal holds",
            limit: MAX_HOLDS,
            current,
        });
    }
    let scope =
        serde_json::to_value(&hold.scope).map_err(|e| Error::corrupt("encoding a scope", e))?;
    let row = db
        .fetch_optional(
            sql(
                "placing a legal hold",
                "INSERT INTO legal_holds (tenant_id, id, name, reason, scope, objects_held, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
            )
            .bind(tenant_id)
            .bind(Uuid::now_v7())
            .bind(hold.name.trim())
            .bind(&hold.reason)
            .bind(&scope)
            .bind(objects_held)
            .bind(hold.expires_at)
            .bind(now),
        )
        .await?
        .ok_or_else(|| Error::corrupt("placing a legal hold", "no row returned"))?;
    let created = hold_from_row(&row, now)?;
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "legal_hold.create",
            "legal_hold",
            &created.hold_id,
            json!({"name": created.name, "reason": created.reason, "scope": created.scope,
                   "expiresAt": created.expires_at, "objectsHeld": objects_held}),
        ),
        now,
    )
    .await?;
    tx.commit("placing a legal hold").await?;
    Ok(created)
}

async fn get_hold(
    store: &impl SqlStore,
    tenant_id: &str,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<LegalHold> {
    let mut conn = store.read("reading a legal hold").await?;
    let row = conn
        .db()
        .fetch_optional(
            sql(
                "reading a legal hold",
                "SELECT * FROM legal_holds WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id)
            .bind(id),
        )
        .await?
        .ok_or_else(|| Error::no_such("legal hold", hold_id_text(id)))?;
    hold_from_row(&row, now)
}

async fn list_holds(
    store: &impl SqlStore,
    tenant_id: &str,
    after: Option<Uuid>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Vec<LegalHold>> {
    let mut conn = store.read("listing legal holds").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing legal holds",
                "SELECT * FROM legal_holds WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2)
                 ORDER BY id LIMIT $3",
            )
            .bind(tenant_id)
            .bind(after)
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(|row| hold_from_row(row, now))
        .collect()
}

async fn release_hold(
    store: &impl SqlStore,
    tenant_id: &str,
    id: Uuid,
    objects_released: u64,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<LegalHold> {
    let mut tx = store.write("starting to release a legal hold").await?;
    let mut db = tx.db();
    lock_tenant(&mut db, tenant_id).await?;
    let row = db
        .fetch_optional(
            sql(
                "releasing a legal hold",
                "UPDATE legal_holds SET released_at = $3, objects_released = $4
                 WHERE tenant_id = $1 AND id = $2 AND released_at IS NULL RETURNING *",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(now)
            .bind(objects_released),
        )
        .await?;
    let Some(row) = row else {
        let exists = db
            .fetch_optional(
                sql(
                    "reading a legal hold",
                    "SELECT id FROM legal_holds WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant_id)
                .bind(id),
            )
            .await?
            .is_some();
        return Err(if exists {
            Error::Conflict(format!(
                "legal hold {} is already released",
                hold_id_text(id)
            ))
        } else {
            Error::no_such("legal hold", hold_id_text(id))
        });
    };
    let released = hold_from_row(&row, now)?;
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "legal_hold.release",
            "legal_hold",
            &released.hold_id,
            json!({"name": released.name, "objectsReleased": objects_released}),
        ),
        now,
    )
    .await?;
    tx.commit("releasing a legal hold").await?;
    Ok(released)
}

/// The tenant's holds active at `now` or named in `also`.
async fn holds_in_force(
    db: &mut Db<'_>,
    tenant_id: &str,
    now: DateTime<Utc>,
    also: &[String],
) -> Result<Vec<LegalHold>> {
    let rows = db
        .fetch_all(
            sql(
                "reading the tenant's legal holds",
                "SELECT * FROM legal_holds WHERE tenant_id = $1",
            )
            .bind(tenant_id),
        )
        .await?;
    let mut holds = Vec::new();
    for row in &rows {
        let hold = hold_from_row(row, now)?;
        if hold.status == crate::retention::HoldStatus::Active || also.contains(&hold.hold_id) {
            holds.push(hold);
        }
    }
    Ok(holds)
}

/// The bound below every event: no event is older, the nil uuid is no id.
fn start_of_time() -> (DateTime<Utc>, Uuid) {
    (crate::retention::earliest(), Uuid::nil())
}

/// A `job_events` id as the low bits of its event uuid (and back).
fn transition_id(id: Uuid) -> i64 {
    i64::try_from(id.as_u128()).unwrap_or(i64::MAX)
}

async fn expired_events(
    store: &impl SqlStore,
    tenant_id: &str,
    cutoff: DateTime<Utc>,
    after: Option<AuditCursor>,
    limit: u32,
) -> Result<Vec<ExpiredEvent>> {
    let (after_at, after_id) = after.map_or_else(start_of_time, |c| (c.occurred_at, c.id));
    let mut conn = store.read("reading expired audit events").await?;
    let mut db = conn.db();
    // Sizes: the bytes of an event's main columns (what metrics sum too).
    let stored = db
        .fetch_all(
            sql(
                "reading expired audit events",
                "SELECT occurred_at, id, recorded_at, source, action, resource_id,
                        CAST(40 + octet_length(action) + coalesce(octet_length(actor_id), 0)
                             + coalesce(octet_length(resource_id), 0)
                             + octet_length(CAST(details AS text)) AS BIGINT) AS size
                 FROM audit_events
                 WHERE (tenant_id, occurred_at, id) > ($1, $2, $3)
                   AND (tenant_id, occurred_at, id) < ($1, $4, $5)
                 ORDER BY tenant_id, occurred_at, id LIMIT $6",
            )
            .bind(tenant_id)
            .bind(after_at)
            .bind(after_id)
            .bind(cutoff)
            .bind(Uuid::nil())
            .bind(i64::from(limit)),
        )
        .await?;
    let transitions = db
        .fetch_all(
            sql(
                "reading expired job transitions",
                "SELECT at, id, job_id, kind,
                        CAST(40 + octet_length(kind) + coalesce(octet_length(CAST(data AS text)), 0)
                             AS BIGINT) AS size
                 FROM job_events
                 WHERE (tenant_id, at, id) > ($1, $2, $3) AND (tenant_id, at, id) < ($1, $4, 0)
                   AND kind NOT IN ('progress', 'checkpoint')
                 ORDER BY tenant_id, at, id LIMIT $5",
            )
            .bind(tenant_id)
            .bind(after_at)
            .bind(transition_id(after_id))
            .bind(cutoff)
            .bind(i64::from(limit)),
        )
        .await?;
    let mut stored = stored.iter().peekable();
    let mut transitions = transitions.iter().peekable();
    let mut events = Vec::with_capacity(limit as usize);
    while events.len() < limit as usize {
        let next_stored = stored.peek().map(|row| stored_key(row)).transpose()?;
        let next_transition = transitions
            .peek()
            .map(|row| transition_key(row))
            .transpose()?;
        let take_stored = match (next_stored, next_transition) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(s), Some(t)) => s < t,
        };
        if take_stored {
            if let Some(row) = stored.next() {
                events.push(ExpiredEvent {
                    cursor: AuditCursor {
                        occurred_at: row.time("occurred_at")?,
                        id: row.uuid("id")?,
                    },
                    transition: None,
                    recorded_at: row.time("recorded_at")?,
                    source: row.text("source")?,
                    action: row.text("action")?,
                    resource_id: row.opt_text("resource_id")?,
                    size: count(row.int("size")?),
                });
            }
        } else if let Some(row) = transitions.next() {
            let at = row.time("at")?;
            let id = row.int("id")?;
            events.push(ExpiredEvent {
                cursor: AuditCursor {
                    occurred_at: at,
                    id: Uuid::from_u128(u128::from(id.unsigned_abs())),
                },
                transition: Some(id),
                recorded_at: at,
                source: "system".to_string(),
                action: format!("job.{}", row.text("kind")?),
                resource_id: Some(format!("job_{}", row.uuid("job_id")?.simple())),
                size: count(row.int("size")?),
            });
        }
    }
    Ok(events)
}

fn stored_key(row: &Row) -> Result<(DateTime<Utc>, Uuid)> {
    Ok((row.time("occurred_at")?, row.uuid("id")?))
}

fn transition_key(row: &Row) -> Result<(DateTime<Utc>, Uuid)> {
    Ok((
        row.time("at")?,
        Uuid::from_u128(u128::from(row.int("id")?.unsigned_abs())),
    ))
}

async fn delete_events(
    store: &impl SqlStore,
    tenant_id: &str,
    events: &[ExpiredEvent],
    now: DateTime<Utc>,
    also: &[String],
) -> Result<Deleted> {
    if events.is_empty() {
        return Ok(Deleted::default());
    }
    let mut tx = store
        .write("starting to delete expired audit events")
        .await?;
    let mut db = tx.db();
    lock_tenant_for(&mut db, tenant_id, false).await?;
    let holds = Holds::new(&holds_in_force(&mut db, tenant_id, now, also).await?)?;
    let (held, doomed): (Vec<&ExpiredEvent>, Vec<&ExpiredEvent>) =
        events.iter().partition(|e| holds.holds_event(&e.facts()));
    let bytes: u64 = doomed.iter().map(|e| e.size).sum();
    let deleted = match &mut db {
        Db::Pg(conn) => delete_on_postgres(conn, tenant_id, &doomed).await?,
        Db::Sqlite(_) => {
            let mut deleted = 0;
            for event in &doomed {
                deleted += match event.transition {
                    Some(id) => {
                        db.execute(
                            sql(
                                "deleting a job transition",
                                "DELETE FROM job_events WHERE tenant_id = $1 AND id = $2",
                            )
                            .bind(tenant_id)
                            .bind(id),
                        )
                        .await?
                    }
                    None => {
                        db.execute(
                            sql(
                                "deleting an audit event",
                                "DELETE FROM audit_events
                                 WHERE tenant_id = $1 AND occurred_at = $2 AND id = $3",
                            )
                            .bind(tenant_id)
                            .bind(event.cursor.occurred_at)
                            .bind(event.cursor.id),
                        )
                        .await?
                    }
                };
            }
            deleted
        }
    };
    add_savings(&mut db, tenant_id, deleted, bytes, 0).await?;
    tx.commit("deleting expired audit events").await?;
    Ok(Deleted {
        events: deleted,
        bytes,
        held: held.len() as u64,
    })
}

/// One statement per table, the keys as arrays (a primary-key probe each).
async fn delete_on_postgres(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    events: &[&ExpiredEvent],
) -> Result<u64> {
    let (transitions, stored): (Vec<&ExpiredEvent>, Vec<&ExpiredEvent>) =
        events.iter().partition(|e| e.transition.is_some());
    let ids: Vec<i64> = transitions.iter().filter_map(|e| e.transition).collect();
    let times: Vec<DateTime<Utc>> = stored.iter().map(|e| e.cursor.occurred_at).collect();
    let uuids: Vec<Uuid> = stored.iter().map(|e| e.cursor.id).collect();
    let mut deleted = 0;
    if !uuids.is_empty() {
        deleted += sqlx::query(
            "DELETE FROM audit_events a USING unnest($2::timestamptz[], $3::uuid[]) AS k(at, id)
             WHERE a.tenant_id = $1 AND a.occurred_at = k.at AND a.id = k.id",
        )
        .bind(tenant_id)
        .bind(&times)
        .bind(&uuids)
        .execute(&mut *conn)
        .await
        .db("deleting expired audit events")?
        .rows_affected();
    }
    if !ids.is_empty() {
        deleted +=
            sqlx::query("DELETE FROM job_events WHERE tenant_id = $1 AND id = ANY ($2::int8[])")
                .bind(tenant_id)
                .bind(&ids)
                .execute(&mut *conn)
                .await
                .db("deleting expired job transitions")?
                .rows_affected();
    }
    Ok(deleted)
}

async fn add_savings(
    db: &mut Db<'_>,
    tenant_id: &str,
    events: u64,
    bytes: u64,
    objects: u64,
) -> Result<()> {
    if events == 0 && bytes == 0 && objects == 0 {
        return Ok(());
    }
    db.execute(
        sql(
            "adding to the tenant's retention savings",
            "INSERT INTO retention_savings (tenant_id, events_deleted, bytes_reclaimed, objects_deleted)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id) DO UPDATE SET
                 events_deleted = retention_savings.events_deleted + excluded.events_deleted,
                 bytes_reclaimed = retention_savings.bytes_reclaimed + excluded.bytes_reclaimed,
                 objects_deleted = retention_savings.objects_deleted + excluded.objects_deleted",
        )
        .bind(tenant_id)
        .bind(events)
        .bind(bytes)
        .bind(objects),
    )
    .await?;
    Ok(())
}

async fn savings(store: &impl SqlStore, tenant_id: &str, objects: u64, bytes: u64) -> Result<()> {
    let mut tx = store.write("starting to add retention savings").await?;
    add_savings(&mut tx.db(), tenant_id, 0, bytes, objects).await?;
    tx.commit("adding retention savings").await
}

async fn levels(
    store: &impl SqlStore,
    tenant_id: &str,
    bucket: &str,
    first: &str,
    last: &str,
) -> Result<Vec<(String, Option<String>)>> {
    let mut conn = store.read("reading classification levels").await?;
    conn.db()
        .fetch_all(
            sql(
                "reading classification levels",
                "SELECT object_key, level FROM classified_objects
                 WHERE tenant_id = $1 AND bucket = $2 AND object_key >= $3 AND object_key <= $4",
            )
            .bind(tenant_id)
            .bind(bucket)
            .bind(first)
            .bind(last),
        )
        .await?
        .iter()
        .map(|row| Ok((row.text("object_key")?, row.opt_text("level")?)))
        .collect()
}

async fn classified_after(
    store: &impl SqlStore,
    tenant_id: &str,
    after: Option<(String, String)>,
    limit: u32,
) -> Result<Vec<(String, String)>> {
    let (bucket, key) = after.unwrap_or_default();
    let mut conn = store.read("listing classified objects").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing classified objects",
                "SELECT bucket, object_key FROM classified_objects
                 WHERE (tenant_id, bucket, object_key) > ($1, $2, $3)
                   AND tenant_id = $1
                 ORDER BY tenant_id, bucket, object_key LIMIT $4",
            )
            .bind(tenant_id)
            .bind(&bucket)
            .bind(&key)
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(|row| Ok((row.text("bucket")?, row.text("object_key")?)))
        .collect()
}

async fn forget_classified(
    store: &impl SqlStore,
    tenant_id: &str,
    bucket: &str,
    keys: &[String],
) -> Result<()> {
    let mut tx = store.write("starting to forget deleted objects").await?;
    let mut db = tx.db();
    for key in keys {
        db.execute(
            sql(
                "forgetting a deleted object's classification",
                "DELETE FROM classified_objects WHERE tenant_id = $1 AND bucket = $2 AND object_key = $3",
            )
            .bind(tenant_id)
            .bind(bucket)
            .bind(key),
        )
        .await?;
    }
    tx.commit("forgetting deleted objects").await
}

async fn metrics(
    store: &impl SqlStore,
    tenant_id: &str,
    now: DateTime<Utc>,
) -> Result<RetentionMetrics> {
    let mut conn = store.read("measuring the audit log").await?;
    let mut db = conn.db();
    let row = db
        .fetch_optional(
            sql(
                "measuring the audit log",
                "SELECT count(*) AS n, CAST(coalesce(sum(size), 0) AS BIGINT) AS bytes,
                        count(*) FILTER (WHERE at >= $2) AS d7,
                        count(*) FILTER (WHERE at >= $3) AS d30,
                        count(*) FILTER (WHERE at >= $4) AS d90
                 FROM (SELECT occurred_at AS at,
                              40 + octet_length(action) + coalesce(octet_length(actor_id), 0)
                              + coalesce(octet_length(resource_id), 0)
                              + octet_length(CAST(details AS text)) AS size
                       FROM audit_events WHERE tenant_id = $1
                       UNION ALL
                       SELECT at, 40 + octet_length(kind) + coalesce(octet_length(CAST(data AS text)), 0)
                       FROM job_events
                       WHERE tenant_id = $1 AND kind NOT IN ('progress', 'checkpoint')) e",
            )
            .bind(tenant_id)
            .bind(now - Duration::days(7))
            .bind(now - Duration::days(30))
            .bind(now - Duration::days(90)),
        )
        .await?
        .ok_or_else(|| Error::corrupt("measuring the audit log", "no row returned"))?;
    let total = count(row.int("n")?);
    let d90 = count(row.int("d90")?);
    let saved = db
        .fetch_optional(
            sql(
                "reading retention savings",
                "SELECT events_deleted, bytes_reclaimed, objects_deleted FROM retention_savings
                 WHERE tenant_id = $1",
            )
            .bind(tenant_id),
        )
        .await?;
    let retention_savings = match saved {
        Some(row) => RetentionSavings {
            events_deleted: count(row.int("events_deleted")?),
            bytes_reclaimed: count(row.int("bytes_reclaimed")?),
            objects_deleted: count(row.int("objects_deleted")?),
        },
        None => RetentionSavings::default(),
    };
    Ok(RetentionMetrics {
        total_events: total,
        total_size_bytes: count(row.int("bytes")?),
        by_age: EventsByAge {
            last7_days: count(row.int("d7")?),
            last30_days: count(row.int("d30")?),
            last90_days: d90,
            older: total.saturating_sub(d90),
        },
        retention_savings,
    })
}

/// `RetentionStore` for a backend, through the functions above.
macro_rules! retention_store_for {
    ($store:ty) => {
        #[async_trait]
        impl RetentionStore for $store {
            async fn create_retention_policy(
                &self,
                tenant_id: &str,
                policy: &CheckedPolicy,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<RetentionPolicy> {
                create_policy(self, tenant_id, policy, now, actor).await
            }

            async fn get_retention_policy(
                &self,
                tenant_id: &str,
                id: Uuid,
            ) -> Result<RetentionPolicy> {
                get_policy(self, tenant_id, id).await
            }

            async fn list_retention_policies(
                &self,
                tenant_id: &str,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<RetentionPolicy>> {
                list_policies(self, tenant_id, after, limit).await
            }

            async fn update_retention_policy(
                &self,
                tenant_id: &str,
                id: Uuid,
                patch: &RetentionPolicyPatch,
                data_buckets: &[String],
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<RetentionPolicy> {
                update_policy(self, tenant_id, id, patch, data_buckets, now, actor).await
            }

            async fn delete_retention_policy(
                &self,
                tenant_id: &str,
                id: Uuid,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<()> {
                delete_policy(self, tenant_id, id, now, actor).await
            }

            async fn create_legal_hold(
                &self,
                tenant_id: &str,
                hold: &NewLegalHold,
                objects_held: u64,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<LegalHold> {
                create_hold(self, tenant_id, hold, objects_held, now, actor).await
            }

            async fn get_legal_hold(
                &self,
                tenant_id: &str,
                id: Uuid,
                now: DateTime<Utc>,
            ) -> Result<LegalHold> {
                get_hold(self, tenant_id, id, now).await
            }

            async fn list_legal_holds(
                &self,
                tenant_id: &str,
                after: Option<Uuid>,
                limit: u32,
                now: DateTime<Utc>,
            ) -> Result<Vec<LegalHold>> {
                list_holds(self, tenant_id, after, limit, now).await
            }

            async fn release_legal_hold(
                &self,
                tenant_id: &str,
                id: Uuid,
                objects_released: u64,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<LegalHold> {
                release_hold(self, tenant_id, id, objects_released, now, actor).await
            }

            async fn legal_holds_in_force(
                &self,
                tenant_id: &str,
                now: DateTime<Utc>,
                also: &[String],
            ) -> Result<Vec<LegalHold>> {
                let mut conn = self.read("reading legal holds").await?;
                holds_in_force(&mut conn.db(), tenant_id, now, also).await
            }

            async fn expired_audit_events(
                &self,
                tenant_id: &str,
                cutoff: DateTime<Utc>,
                after: Option<AuditCursor>,
                limit: u32,
            ) -> Result<Vec<ExpiredEvent>> {
                expired_events(self, tenant_id, cutoff, after, limit).await
            }

            async fn delete_audit_events(
                &self,
                tenant_id: &str,
                events: &[ExpiredEvent],
                now: DateTime<Utc>,
                also: &[String],
            ) -> Result<Deleted> {
                delete_events(self, tenant_id, events, now, also).await
            }

            async fn classification_levels(
                &self,
                tenant_id: &str,
                bucket: &str,
                first: &str,
                last: &str,
            ) -> Result<Vec<(String, Option<String>)>> {
                levels(self, tenant_id, bucket, first, last).await
            }

            async fn classified_objects_after(
                &self,
                tenant_id: &str,
                after: Option<(String, String)>,
                limit: u32,
            ) -> Result<Vec<(String, String)>> {
                classified_after(self, tenant_id, after, limit).await
            }

            async fn forget_classified_objects(
                &self,
                tenant_id: &str,
                bucket: &str,
                keys: &[String],
            ) -> Result<()> {
                forget_classified(self, tenant_id, bucket, keys).await
            }

            async fn add_retention_savings(
                &self,
                tenant_id: &str,
                objects: u64,
                bytes: u64,
            ) -> Result<()> {
                savings(self, tenant_id, objects, bytes).await
            }

            async fn retention_metrics(
                &self,
                tenant_id: &str,
                now: DateTime<Utc>,
            ) -> Result<RetentionMetrics> {
                metrics(self, tenant_id, now).await
            }
        }
    };
}

retention_store_for!(PgStore);
retention_store_for!(SqliteStore);
