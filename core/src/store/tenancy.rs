//! Tenancy written once for both backends (see `sql.rs`): tenants and API
//! keys on the job store's pool. A tenant write and the `tenant_limits` row
//! the claim reads change in one transaction; a key being revoked or rotated
//! is locked (`FOR UPDATE` on PostgreSQL, the write lock on SQLite).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::sql::{sql, Db, Row, SqlStore};
use super::{PgStore, SqliteStore};
use crate::audit::Actor;
use crate::error::{Error, Result};
use crate::tenancy::{
    check_rotatable, grace_end, key_accepts, key_issued, key_of_tenant_checked, key_revoked,
    key_rotated, last_used_due, merged_settings, new_id, parse_token, reason_for, tenant_created,
    tenant_cursor_checked, tenant_id_checked, tenant_status_set, tenant_updated,
    validate_key_request, validate_new_tenant, validate_patch, ApiKey, IssuedKey, KeyMaterial,
    KeyMode, NewTenant, Quotas, Role, Tenant, TenantColumns, TenantPatch, TenantStatus,
    TenantStore, JOINED_TENANT, TENANT, TENANT_ID_PREFIX,
};

/// A key by its token's prefix, with its tenant's columns renamed `t_…` so
/// that they do not collide with the key's (see `JOINED_TENANT`).
const AUTHENTICATE_SQL: &str = "
SELECT k.*, t.id AS t_id, t.name AS t_name, t.region AS t_region, t.plan AS t_plan,
       t.status AS t_status, t.suspended_reason AS t_suspended_reason,
       t.max_running AS t_max_running, t.max_queued AS t_max_queued,
       t.creations_per_minute AS t_creations_per_minute, t.settings AS t_settings,
       t.max_schedules AS t_max_schedules,
       t.created_at AS t_created_at, t.updated_at AS t_updated_at
FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id
WHERE k.prefix = $1";

fn tenant_from_row(row: &Row, c: &TenantColumns) -> Result<Tenant> {
    let status = row.text(c.status)?;
    Ok(Tenant {
        id: row.text(c.id)?,
        name: row.text(c.name)?,
        region: row.text(c.region)?,
        plan: row.text(c.plan)?,
        status: status
            .parse()
            .map_err(|_| Error::corrupt("tenant status", &status))?,
        suspended_reason: row.opt_text(c.suspended_reason)?,
        quotas: Quotas {
            max_running: row.opt_int4(c.max_running)?,
            max_queued: row.opt_int(c.max_queued)?,
            creations_per_minute: row.opt_int4(c.creations_per_minute)?,
            max_schedules: row.opt_int(c.max_schedules)?,
        },
        settings: row.json(c.settings)?,
        created_at: row.time(c.created_at)?,
        updated_at: row.time(c.updated_at)?,
    })
}

fn key_from_row(row: &Row) -> Result<ApiKey> {
    let role = row.text("role")?;
    let mode = row.text("mode")?;
    Ok(ApiKey {
        id: row.text("id")?,
        tenant_id: row.opt_text("tenant_id")?,
        name: row.text("name")?,
        role: role
            .parse()
            .map_err(|_| Error::corrupt("key role", &role))?,
        mode: mode
            .parse()
            .map_err(|_| Error::corrupt("key mode", &mode))?,
        prefix: row.text("prefix")?,
        created_at: row.time("created_at")?,
        last_used_at: row.opt_time("last_used_at")?,
        expires_at: row.opt_time("expires_at")?,
        revoked_at: row.opt_time("revoked_at")?,
    })
}

/// Mirrors a tenant's running cap into `tenant_limits` (what the claim reads).
async fn sync_tenant_limits(
    db: &mut Db<'_>,
    tenant_id: &str,
    max_running: Option<i32>,
) -> Result<()> {
    let statement = match max_running {
        Some(max) => sql(
            "setting a tenant's running cap",
            "INSERT INTO tenant_limits (tenant_id, max_running) VALUES ($1, $2)
             ON CONFLICT (tenant_id) DO UPDATE SET max_running = excluded.max_running",
        )
        .bind(tenant_id)
        .bind(max),
        None => sql(
            "clearing a tenant's running cap",
            "DELETE FROM tenant_limits WHERE tenant_id = $1",
        )
        .bind(tenant_id),
    };
    db.execute(statement).await?;
    Ok(())
}

/// Whether the tenant has a maxQueued quota now (its row locked on
/// PostgreSQL until the caller's transaction ends).
async fn max_queued_of(db: &mut Db<'_>, tenant_id: &str) -> Result<bool> {
    let text = db.pick(
        "SELECT max_queued FROM tenants WHERE id = $1 FOR UPDATE",
        "SELECT max_queued FROM tenants WHERE id = $1",
    );
    let row = db
        .fetch_optional(sql("reading a tenant's quota", text).bind(tenant_id))
        .await?
        .ok_or_else(|| Error::no_such("tenant", tenant_id))?;
    Ok(row.opt_int("max_queued")?.is_some())
}

/// A tenant given a maxQueued quota: its outstanding jobs, queued while it had
/// none, count from now on (`jobs.counted_in_quota`). On PostgreSQL the
/// exclusive enqueue lock first waits for the tenant's enqueues in flight,
/// which read the tenant before the quota committed
/// (`postgres/enqueue_lock.rs`); the rows are locked in id order, as
/// completion batches lock them. Reads the tenant's jobs through
/// `jobs_tenant_idx`: once per quota given, never on the enqueue path.
async fn count_outstanding_jobs_in_quota(db: &mut Db<'_>, tenant_id: &str) -> Result<()> {
    if let Db::Pg(conn) = db {
        super::postgres::enqueue_lock::lock_exclusive(conn, tenant_id).await?;
    }
    let text = db.pick(
        "WITH outstanding AS MATERIALIZED (
            SELECT id FROM jobs
            WHERE tenant_id = $1 AND state IN ('queued', 'running') AND NOT counted_in_quota
            ORDER BY id FOR UPDATE
         )
         UPDATE jobs SET counted_in_quota = true WHERE id IN (SELECT id FROM outstanding)",
        "UPDATE jobs SET counted_in_quota = 1
         WHERE tenant_id = $1 AND state IN ('queued', 'running') AND counted_in_quota = 0",
    );
    db.execute(
        sql(
            "counting a tenant's outstanding jobs in its new quota",
            text,
        )
        .bind(tenant_id),
    )
    .await?;
    Ok(())
}

/// Inserts a key for the tenant (or an operator key); `None` when the tenant
/// does not exist.
async fn insert_key(
    db: &mut Db<'_>,
    tenant_id: Option<&str>,
    name: &str,
    role: Role,
    mode: KeyMode,
    now: DateTime<Utc>,
) -> Result<Option<IssuedKey>> {
    let material = KeyMaterial::generate(mode)?;
    let row = db
        .fetch_optional(
            sql(
                "inserting an api key",
                "INSERT INTO api_keys (id, tenant_id, name, role, mode, prefix, token_hash,
                                       created_at)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8
                 WHERE $2 IS NULL OR EXISTS (SELECT 1 FROM tenants WHERE id = $2)
                 RETURNING *",
            )
            .bind(&material.id)
            .bind(tenant_id)
            .bind(name)
            .bind(role.as_str())
            .bind(mode.as_str())
            .bind(&material.prefix)
            .bind(&material.hash[..])
            .bind(now),
        )
        .await?;
    row.map(|row| {
        Ok(IssuedKey {
            key: key_from_row(&row)?,
            secret: material.token,
        })
    })
    .transpose()
}

/// A tenant's key, locked for a change until the transaction ends.
async fn locked_key(db: &mut Db<'_>, tenant_id: &str, key_id: &str) -> Result<ApiKey> {
    let text = db.pick(
        "SELECT * FROM api_keys WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        "SELECT * FROM api_keys WHERE id = $1 AND tenant_id = $2",
    );
    let row = db
        .fetch_optional(
            sql("reading an api key to change", text)
                .bind(key_id)
                .bind(tenant_id),
        )
        .await?
        .ok_or_else(|| Error::no_such("api key", key_id))?;
    key_from_row(&row)
}

async fn create_tenant(store: &impl SqlStore, new: NewTenant, actor: &Actor) -> Result<Tenant> {
    validate_new_tenant(&new)?;
    let id = new_id(TENANT_ID_PREFIX);
    let now = Utc::now();
    let mut tx = store.write("starting to create a tenant").await?;
    let mut db = tx.db();
    let row = db
        .fetch_optional(
            sql(
                "inserting a tenant",
                "INSERT INTO tenants (id, name, region, plan, max_running, max_queued,
                                      creations_per_minute, settings, created_at, updated_at,
                                      max_schedules)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)
                 RETURNING *",
            )
            .bind(&id)
            .bind(&new.name)
            .bind(&new.region)
            .bind(&new.plan)
            .bind(new.quotas.max_running)
            .bind(new.quotas.max_queued)
            .bind(new.quotas.creations_per_minute)
            .bind(&new.settings)
            .bind(now)
            .bind(new.quotas.max_schedules),
        )
        .await?
        .ok_or_else(|| Error::corrupt("inserting a tenant", "no row returned"))?;
    let tenant = tenant_from_row(&row, &TENANT)?;
    if tenant.quotas.max_running.is_some() {
        sync_tenant_limits(&mut db, &id, tenant.quotas.max_running).await?;
    }
    db.record_change(&id, actor, &tenant_created(&tenant), now)
        .await?;
    tx.commit("committing a new tenant").await?;
    Ok(tenant)
}

async fn get_tenant(store: &impl SqlStore, id: &str) -> Result<Tenant> {
    let id = tenant_id_checked(id)?;
    let mut conn = store.read("reading a tenant").await?;
    let row = conn
        .db()
        .fetch_optional(sql("reading a tenant", "SELECT * FROM tenants WHERE id = $1").bind(id))
        .await?
        .ok_or_else(|| Error::no_such("tenant", id))?;
    tenant_from_row(&row, &TENANT)
}

async fn list_tenants(
    store: &impl SqlStore,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Tenant>> {
    let after = tenant_cursor_checked(after)?;
    let mut conn = store.read("listing tenants").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing tenants",
                "SELECT * FROM tenants WHERE $1 IS NULL OR id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(|row| tenant_from_row(row, &TENANT))
        .collect()
}

async fn update_tenant(
    store: &impl SqlStore,
    id: &str,
    patch: TenantPatch,
    actor: &Actor,
) -> Result<Tenant> {
    let id = tenant_id_checked(id)?;
    validate_patch(&patch)?;
    if patch.is_empty() {
        return get_tenant(store, id).await;
    }
    let quotas = patch.quotas.unwrap_or_default();
    let now = Utc::now();
    let mut tx = store.write("starting to update a tenant").await?;
    let mut db = tx.db();
    let settings = match &patch.settings {
        None => None,
        Some(change) => {
            let text = db.pick(
                "SELECT settings FROM tenants WHERE id = $1 FOR UPDATE",
                "SELECT settings FROM tenants WHERE id = $1",
            );
            let stored = db
                .fetch_optional(sql("reading a tenant's settings", text).bind(id))
                .await?
                .ok_or_else(|| Error::no_such("tenant", id))?
                .json("settings")?;
            Some(merged_settings(stored, change)?)
        }
    };
    let had_max_queued = match patch.quotas {
        None => None,
        Some(_) => Some(max_queued_of(&mut db, id).await?),
    };
    let row = db
        .fetch_optional(
            sql(
                "updating a tenant",
                "UPDATE tenants SET
                     name = coalesce($2, name),
                     region = coalesce($3, region),
                     plan = coalesce($4, plan),
                     max_running = CASE WHEN $5 THEN $6 ELSE max_running END,
                     max_queued = CASE WHEN $5 THEN $7 ELSE max_queued END,
                     creations_per_minute = CASE WHEN $5 THEN $8 ELSE creations_per_minute END,
                     max_schedules = CASE WHEN $5 THEN $11 ELSE max_schedules END,
                     settings = coalesce($9, settings),
                     updated_at = $10
                 WHERE id = $1
                 RETURNING *",
            )
            .bind(id)
            .bind(&patch.name)
            .bind(&patch.region)
            .bind(&patch.plan)
            .bind(patch.quotas.is_some())
            .bind(quotas.max_running)
            .bind(quotas.max_queued)
            .bind(quotas.creations_per_minute)
            .bind(&settings)
            .bind(now)
            .bind(quotas.max_schedules),
        )
        .await?
        .ok_or_else(|| Error::no_such("tenant", id))?;
    let tenant = tenant_from_row(&row, &TENANT)?;
    if patch.quotas.is_some() {
        sync_tenant_limits(&mut db, id, tenant.quotas.max_running).await?;
    }
    if had_max_queued == Some(false) && tenant.quotas.max_queued.is_some() {
        count_outstanding_jobs_in_quota(&mut db, id).await?;
    }
    db.record_change(id, actor, &tenant_updated(id, &patch), now)
        .await?;
    tx.commit("committing a tenant update").await?;
    Ok(tenant)
}

async fn set_tenant_status(
    store: &impl SqlStore,
    id: &str,
    status: TenantStatus,
    reason: Option<String>,
    actor: &Actor,
) -> Result<Tenant> {
    let id = tenant_id_checked(id)?;
    let reason = reason_for(status, reason)?;
    let now = Utc::now();
    let mut tx = store.write("starting to set a tenant's status").await?;
    let mut db = tx.db();
    let row = db
        .fetch_optional(
            sql(
                "setting a tenant's status",
                "UPDATE tenants SET status = $2, suspended_reason = $3, updated_at = $4
                 WHERE id = $1 RETURNING *",
            )
            .bind(id)
            .bind(status.as_str())
            .bind(&reason)
            .bind(now),
        )
        .await?
        .ok_or_else(|| Error::no_such("tenant", id))?;
    let tenant = tenant_from_row(&row, &TENANT)?;
    let change = tenant_status_set(id, status, reason.as_deref());
    db.record_change(id, actor, &change, now).await?;
    tx.commit("committing a tenant's status").await?;
    Ok(tenant)
}

async fn issue_api_key(
    store: &impl SqlStore,
    tenant_id: Option<&str>,
    name: &str,
    role: Role,
    mode: KeyMode,
    actor: &Actor,
) -> Result<IssuedKey> {
    validate_key_request(tenant_id, name, role)?;
    let tenant_id = tenant_id.map(tenant_id_checked).transpose()?;
    let now = Utc::now();
    let mut tx = store.write("starting to issue a key").await?;
    let mut db = tx.db();
    let issued = insert_key(&mut db, tenant_id, name, role, mode, now)
        .await?
        .ok_or_else(|| Error::no_such("tenant", tenant_id.unwrap_or_default()))?;
    if let Some(tenant_id) = tenant_id {
        db.record_change(tenant_id, actor, &key_issued(&issued.key), now)
            .await?;
    }
    tx.commit("committing a new key").await?;
    Ok(issued)
}

async fn authenticate(
    store: &impl SqlStore,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<(ApiKey, Option<Tenant>)>> {
    let Some((mode, prefix)) = parse_token(token) else {
        return Ok(None);
    };
    let mut conn = store.read("looking up an api key").await?;
    let Some(row) = conn
        .db()
        .fetch_optional(sql("looking up an api key", AUTHENTICATE_SQL).bind(prefix))
        .await?
    else {
        return Ok(None);
    };
    drop(conn);
    let mut key = key_from_row(&row)?;
    if !key_accepts(&key, &row.bytes("token_hash")?, mode, token, now) {
        return Ok(None);
    }
    let tenant = match key.tenant_id {
        Some(_) => Some(tenant_from_row(&row, &JOINED_TENANT)?),
        None => None,
    };
    if let Some(older_than) = last_used_due(&key, now) {
        let mut tx = store.write("starting to record a key's use").await?;
        let touched = tx
            .db()
            .execute(
                sql(
                    "recording a key's last use",
                    "UPDATE api_keys SET last_used_at = $2
                     WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)",
                )
                .bind(&key.id)
                .bind(now)
                .bind(older_than),
            )
            .await?;
        tx.commit("committing a key's last use").await?;
        if touched == 1 {
            key.last_used_at = Some(now);
        }
    }
    Ok(Some((key, tenant)))
}

async fn list_api_keys(store: &impl SqlStore, tenant_id: &str) -> Result<Vec<ApiKey>> {
    let tenant_id = tenant_id_checked(tenant_id)?;
    let mut conn = store.read("listing api keys").await?;
    let keys = conn
        .db()
        .fetch_all(
            sql(
                "listing api keys",
                "SELECT * FROM api_keys WHERE tenant_id = $1 ORDER BY id",
            )
            .bind(tenant_id),
        )
        .await?
        .iter()
        .map(key_from_row)
        .collect::<Result<Vec<_>>>()?;
    drop(conn);
    if keys.is_empty() {
        // No keys, or no such tenant?
        get_tenant(store, tenant_id).await?;
    }
    Ok(keys)
}

async fn revoke_api_key(
    store: &impl SqlStore,
    tenant_id: &str,
    key_id: &str,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<ApiKey> {
    let (tenant_id, key_id) = key_of_tenant_checked(tenant_id, key_id)?;
    let mut tx = store.write("starting to revoke a key").await?;
    let mut db = tx.db();
    let key = locked_key(&mut db, tenant_id, key_id).await?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let row = db
        .fetch_optional(
            sql(
                "revoking an api key",
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 RETURNING *",
            )
            .bind(key_id)
            .bind(now),
        )
        .await?
        .ok_or_else(|| Error::no_such("api key", key_id))?;
    let key = key_from_row(&row)?;
    // Audited at the wall clock's time, like every other audit event.
    db.record_change(tenant_id, actor, &key_revoked(&key), Utc::now())
        .await?;
    tx.commit("committing a revocation").await?;
    Ok(key)
}

async fn rotate_api_key(
    store: &impl SqlStore,
    tenant_id: &str,
    key_id: &str,
    now: DateTime<Utc>,
    grace: Duration,
    actor: &Actor,
) -> Result<IssuedKey> {
    let (tenant_id, key_id) = key_of_tenant_checked(tenant_id, key_id)?;
    let expires_at = grace_end(now, grace)?;
    let mut tx = store.write("starting to rotate an api key").await?;
    let mut db = tx.db();
    let old = locked_key(&mut db, tenant_id, key_id).await?;
    check_rotatable(&old)?;
    let issued = insert_key(&mut db, Some(tenant_id), &old.name, old.role, old.mode, now)
        .await?
        .ok_or_else(|| Error::corrupt("rotating an api key", "its tenant is missing"))?;
    db.execute(
        sql(
            "ending a rotated key's life",
            "UPDATE api_keys SET expires_at = $2 WHERE id = $1",
        )
        .bind(key_id)
        .bind(expires_at),
    )
    .await?;
    let change = key_rotated(key_id, &issued.key, expires_at);
    db.record_change(tenant_id, actor, &change, Utc::now())
        .await?;
    tx.commit("committing a key rotation").await?;
    Ok(issued)
}

/// `TenantStore` for a backend, through the functions above.
macro_rules! tenant_store_for {
    ($store:ty) => {
        #[async_trait]
        impl TenantStore for $store {
            async fn create_tenant(&self, new: NewTenant, actor: &Actor) -> Result<Tenant> {
                create_tenant(self, new, actor).await
            }

            async fn get_tenant(&self, id: &str) -> Result<Tenant> {
                get_tenant(self, id).await
            }

            async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<Tenant>> {
                list_tenants(self, after, limit).await
            }

            async fn update_tenant(
                &self,
                id: &str,
                patch: TenantPatch,
                actor: &Actor,
            ) -> Result<Tenant> {
                update_tenant(self, id, patch, actor).await
            }

            async fn set_tenant_status(
                &self,
                id: &str,
                status: TenantStatus,
                reason: Option<String>,
                actor: &Actor,
            ) -> Result<Tenant> {
                set_tenant_status(self, id, status, reason, actor).await
            }

            async fn issue_api_key(
                &self,
                tenant_id: Option<&str>,
                name: &str,
                role: Role,
                mode: KeyMode,
                actor: &Actor,
            ) -> Result<IssuedKey> {
                issue_api_key(self, tenant_id, name, role, mode, actor).await
            }

            async fn authenticate(
                &self,
                token: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<(ApiKey, Option<Tenant>)>> {
                authenticate(self, token, now).await
            }

            async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
                list_api_keys(self, tenant_id).await
            }

            async fn revoke_api_key(
                &self,
                tenant_id: &str,
                key_id: &str,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<ApiKey> {
                revoke_api_key(self, tenant_id, key_id, now, actor).await
            }

            async fn rotate_api_key(
                &self,
                tenant_id: &str,
                key_id: &str,
                now: DateTime<Utc>,
                grace: Duration,
                actor: &Actor,
            ) -> Result<IssuedKey> {
                rotate_api_key(self, tenant_id, key_id, now, grace, actor).await
            }
        }
    };
}

tenant_store_for!(PgStore);
tenant_store_for!(SqliteStore);
