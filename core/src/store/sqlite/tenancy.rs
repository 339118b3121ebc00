//! Tenancy on SQLite: all of its SQL lives here (the job store's SQL is in
//! `store/sqlite.rs`), on the job store's pool and under its write discipline:
//! every write holds the store's write lock in a `BEGIN IMMEDIATE`
//! transaction, and a tenant write changes the `tenant_limits` row the claim
//! reads in the same transaction. Reads (lookups, authentication) run beside
//! the writer.
//!
//! Types as in the job store: ids and JSON are text, the token hash a blob,
//! timestamps integer microseconds since the Unix epoch (from the Rust clock,
//! or the caller's `now`).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::audit::insert_change as record;
use crate::audit::Actor;
use crate::error::{DbContext, Error, Result};
use crate::store::SqliteStore;
use crate::tenancy::{
    check_rotatable, grace_end, key_accepts, key_issued, key_of_tenant_checked, key_revoked,
    key_rotated, last_used_due, merged_settings, new_id, reason_for, tenant_created,
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
WHERE k.prefix = ?1";

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn time_at(row: &SqliteRow, column: &str, context: &'static str) -> Result<DateTime<Utc>> {
    let micros: i64 = row.try_get(column).db(context)?;
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::corrupt(context, format!("{micros} microseconds is out of range")))
}

fn optional_time_at(
    row: &SqliteRow,
    column: &str,
    context: &'static str,
) -> Result<Option<DateTime<Utc>>> {
    let micros: Option<i64> = row.try_get(column).db(context)?;
    micros
        .map(|micros| {
            DateTime::from_timestamp_micros(micros).ok_or_else(|| {
                Error::corrupt(context, format!("{micros} microseconds is out of range"))
            })
        })
        .transpose()
}

fn tenant_from_row(row: &SqliteRow, c: &TenantColumns) -> Result<Tenant> {
    let status: String = row.try_get(c.status).db("reading tenant status")?;
    let settings: String = row.try_get(c.settings).db("reading tenant settings")?;
    Ok(Tenant {
        id: row.try_get(c.id).db("reading tenant id")?,
        name: row.try_get(c.name).db("reading tenant name")?,
        region: row.try_get(c.region).db("reading tenant region")?,
        plan: row.try_get(c.plan).db("reading tenant plan")?,
        status: status
            .parse()
            .map_err(|_| Error::corrupt("tenant status", &status))?,
        suspended_reason: row
            .try_get(c.suspended_reason)
            .db("reading tenant suspension reason")?,
        quotas: Quotas {
            max_running: row.try_get(c.max_running).db("reading tenant quotas")?,
            max_queued: row.try_get(c.max_queued).db("reading tenant quotas")?,
            creations_per_minute: row
                .try_get(c.creations_per_minute)
                .db("reading tenant quotas")?,
            max_schedules: row.try_get(c.max_schedules).db("reading tenant quotas")?,
        },
        settings: serde_json::from_str(&settings)
            .map_err(|e| Error::corrupt("tenant settings", e))?,
        created_at: time_at(row, c.created_at, "reading tenant created_at")?,
        updated_at: time_at(row, c.updated_at, "reading tenant updated_at")?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<ApiKey> {
    let role: String = row.try_get("role").db("reading key role")?;
    let mode: String = row.try_get("mode").db("reading key mode")?;
    Ok(ApiKey {
        id: row.try_get("id").db("reading key id")?,
        tenant_id: row.try_get("tenant_id").db("reading key tenant")?,
        name: row.try_get("name").db("reading key name")?,
        role: role
            .parse()
            .map_err(|_| Error::corrupt("key role", &role))?,
        mode: mode
            .parse()
            .map_err(|_| Error::corrupt("key mode", &mode))?,
        prefix: row.try_get("prefix").db("reading key prefix")?,
        created_at: time_at(row, "created_at", "reading key created_at")?,
        last_used_at: optional_time_at(row, "last_used_at", "reading key last_used_at")?,
        expires_at: optional_time_at(row, "expires_at", "reading key expires_at")?,
        revoked_at: optional_time_at(row, "revoked_at", "reading key revoked_at")?,
    })
}

/// Mirrors a tenant's running cap into `tenant_limits` (what the claim reads).
async fn sync_tenant_limits(
    conn: &mut SqliteConnection,
    tenant_id: &str,
    max_running: Option<i32>,
) -> Result<()> {
    match max_running {
        Some(max) => sqlx::query(
            "INSERT INTO tenant_limits (tenant_id, max_running) VALUES (?1, ?2)
             ON CONFLICT (tenant_id) DO UPDATE SET max_running = excluded.max_running",
        )
        .bind(tenant_id)
        .bind(max)
        .execute(conn)
        .await
        .db("setting a tenant's running cap")?,
        None => sqlx::query("DELETE FROM tenant_limits WHERE tenant_id = ?1")
            .bind(tenant_id)
            .execute(conn)
            .await
            .db("clearing a tenant's running cap")?,
    };
    Ok(())
}

/// Inserts a key for the tenant (or an operator key); `None` when the tenant
/// does not exist.
async fn insert_key(
    conn: &mut SqliteConnection,
    tenant_id: Option<&str>,
    name: &str,
    role: Role,
    mode: KeyMode,
) -> Result<Option<IssuedKey>> {
    let material = KeyMaterial::generate(mode)?;
    let row = sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, role, mode, prefix, token_hash, created_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
         WHERE ?2 IS NULL OR EXISTS (SELECT 1 FROM tenants WHERE id = ?2)
         RETURNING *",
    )
    .bind(&material.id)
    .bind(tenant_id)
    .bind(name)
    .bind(role.as_str())
    .bind(mode.as_str())
    .bind(&material.prefix)
    .bind(&material.hash[..])
    .bind(micros(Utc::now()))
    .fetch_optional(conn)
    .await
    .db("inserting an api key")?;
    row.map(|row| {
        Ok(IssuedKey {
            key: key_from_row(&row)?,
            secret: material.token,
        })
    })
    .transpose()
}

#[async_trait]
impl TenantStore for SqliteStore {
    async fn create_tenant(&self, new: NewTenant, actor: &Actor) -> Result<Tenant> {
        validate_new_tenant(&new)?;
        let id = new_id(TENANT_ID_PREFIX);
        let now = micros(Utc::now());
        let mut w = self.begin_write("starting to create a tenant").await?;
        let row = sqlx::query(
            "INSERT INTO tenants (id, name, region, plan, max_running, max_queued,
                                  creations_per_minute, settings, created_at, updated_at,
                                  max_schedules)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)
             RETURNING *",
        )
        .bind(&id)
        .bind(&new.name)
        .bind(&new.region)
        .bind(&new.plan)
        .bind(new.quotas.max_running)
        .bind(new.quotas.max_queued)
        .bind(new.quotas.creations_per_minute)
        .bind(new.settings.to_string())
        .bind(now)
        .bind(new.quotas.max_schedules)
        .fetch_one(w.conn())
        .await
        .db("inserting a tenant")?;
        let tenant = tenant_from_row(&row, &TENANT)?;
        if tenant.quotas.max_running.is_some() {
            sync_tenant_limits(w.conn(), &id, tenant.quotas.max_running).await?;
        }
        record(w.conn(), now, &id, actor, &tenant_created(&tenant)).await?;
        w.commit("committing a new tenant").await?;
        Ok(tenant)
    }

    async fn get_tenant(&self, id: &str) -> Result<Tenant> {
        let id = tenant_id_checked(id)?;
        let row = sqlx::query("SELECT * FROM tenants WHERE id = ?1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .db("reading a tenant")?
            .ok_or_else(|| Error::no_such("tenant", id))?;
        tenant_from_row(&row, &TENANT)
    }

    async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<Tenant>> {
        let after = tenant_cursor_checked(after)?;
        sqlx::query("SELECT * FROM tenants WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .db("listing tenants")?
            .iter()
            .map(|row| tenant_from_row(row, &TENANT))
            .collect()
    }

    async fn update_tenant(&self, id: &str, patch: TenantPatch, actor: &Actor) -> Result<Tenant> {
        let id = tenant_id_checked(id)?;
        validate_patch(&patch)?;
        if patch.is_empty() {
            return self.get_tenant(id).await;
        }
        let quotas = patch.quotas.unwrap_or_default();
        let now = micros(Utc::now());
        let mut w = self.begin_write("starting to update a tenant").await?;
        let settings = match &patch.settings {
            None => None,
            Some(change) => {
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT settings FROM tenants WHERE id = ?1")
                        .bind(id)
                        .fetch_optional(w.conn())
                        .await
                        .db("reading a tenant's settings")?;
                let Some(stored) = stored else {
                    w.rollback().await?;
                    return Err(Error::no_such("tenant", id));
                };
                let stored = serde_json::from_str(&stored)
                    .map_err(|e| Error::corrupt("tenant settings", e))?;
                match merged_settings(stored, change) {
                    Ok(merged) => Some(merged.to_string()),
                    Err(error) => {
                        w.rollback().await?;
                        return Err(error);
                    }
                }
            }
        };
        let row = sqlx::query(
            "UPDATE tenants SET
                 name = coalesce(?2, name),
                 region = coalesce(?3, region),
                 plan = coalesce(?4, plan),
                 max_running = CASE WHEN ?5 THEN ?6 ELSE max_running END,
                 max_queued = CASE WHEN ?5 THEN ?7 ELSE max_queued END,
                 creations_per_minute = CASE WHEN ?5 THEN ?8 ELSE creations_per_minute END,
                 max_schedules = CASE WHEN ?5 THEN ?11 ELSE max_schedules END,
                 settings = coalesce(?9, settings),
                 updated_at = ?10
             WHERE id = ?1
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
        .bind(quotas.max_schedules)
        .fetch_optional(w.conn())
        .await
        .db("updating a tenant")?;
        let Some(row) = row else {
            w.rollback().await?;
            return Err(Error::no_such("tenant", id));
        };
        let tenant = tenant_from_row(&row, &TENANT)?;
        if patch.quotas.is_some() {
            sync_tenant_limits(w.conn(), id, tenant.quotas.max_running).await?;
        }
        record(w.conn(), now, id, actor, &tenant_updated(id, &patch)).await?;
        w.commit("committing a tenant update").await?;
        Ok(tenant)
    }

    async fn set_tenant_status(
        &self,
        id: &str,
        status: TenantStatus,
        reason: Option<String>,
        actor: &Actor,
    ) -> Result<Tenant> {
        let id = tenant_id_checked(id)?;
        let reason = reason_for(status, reason)?;
        let now = micros(Utc::now());
        let mut w = self
            .begin_write("starting to set a tenant's status")
            .await?;
        let row = sqlx::query(
            "UPDATE tenants SET status = ?2, suspended_reason = ?3, updated_at = ?4
             WHERE id = ?1 RETURNING *",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(&reason)
        .bind(now)
        .fetch_optional(w.conn())
        .await
        .db("setting a tenant's status")?;
        let Some(row) = row else {
            w.rollback().await?;
            return Err(Error::no_such("tenant", id));
        };
        let tenant = tenant_from_row(&row, &TENANT)?;
        let change = tenant_status_set(id, status, reason.as_deref());
        record(w.conn(), now, id, actor, &change).await?;
        w.commit("committing a tenant's status").await?;
        Ok(tenant)
    }

    async fn issue_api_key(
        &self,
        tenant_id: Option<&str>,
        name: &str,
        role: Role,
        mode: KeyMode,
        actor: &Actor,
    ) -> Result<IssuedKey> {
        validate_key_request(tenant_id, name, role)?;
        let tenant_id = tenant_id.map(tenant_id_checked).transpose()?;
        let mut w = self.begin_write("starting to issue a key").await?;
        let Some(issued) = insert_key(w.conn(), tenant_id, name, role, mode).await? else {
            w.rollback().await?;
            return Err(Error::no_such("tenant", tenant_id.unwrap_or_default()));
        };
        if let Some(tenant_id) = tenant_id {
            let at = micros(issued.key.created_at);
            record(w.conn(), at, tenant_id, actor, &key_issued(&issued.key)).await?;
        }
        w.commit("committing a new key").await?;
        Ok(issued)
    }

    async fn authenticate(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(ApiKey, Option<Tenant>)>> {
        let Some((mode, prefix)) = crate::tenancy::parse_token(token) else {
            return Ok(None);
        };
        let Some(row) = sqlx::query(AUTHENTICATE_SQL)
            .bind(prefix)
            .fetch_optional(self.pool())
            .await
            .db("looking up an api key")?
        else {
            return Ok(None);
        };
        let mut key = key_from_row(&row)?;
        let stored_hash: Vec<u8> = row.try_get("token_hash").db("reading key hash")?;
        if !key_accepts(&key, &stored_hash, mode, token, now) {
            return Ok(None);
        }
        let tenant = match key.tenant_id {
            Some(_) => Some(tenant_from_row(&row, &JOINED_TENANT)?),
            None => None,
        };
        if let Some(older_than) = last_used_due(&key, now) {
            let mut w = self.begin_write("starting to record a key's use").await?;
            let touched = sqlx::query(
                "UPDATE api_keys SET last_used_at = ?2
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?3)",
            )
            .bind(&key.id)
            .bind(micros(now))
            .bind(micros(older_than))
            .execute(w.conn())
            .await
            .db("recording a key's last use")?;
            w.commit("committing a key's last use").await?;
            if touched.rows_affected() == 1 {
                key.last_used_at = Some(now);
            }
        }
        Ok(Some((key, tenant)))
    }

    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>> {
        let tenant_id = tenant_id_checked(tenant_id)?;
        let keys = sqlx::query("SELECT * FROM api_keys WHERE tenant_id = ?1 ORDER BY id")
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await
            .db("listing api keys")?
            .iter()
            .map(key_from_row)
            .collect::<Result<Vec<_>>>()?;
        if keys.is_empty() {
            // No keys, or no such tenant?
            self.get_tenant(tenant_id).await?;
        }
        Ok(keys)
    }

    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<ApiKey> {
        let (tenant_id, key_id) = key_of_tenant_checked(tenant_id, key_id)?;
        let mut w = self.begin_write("starting to revoke a key").await?;
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?1 AND tenant_id = ?2")
            .bind(key_id)
            .bind(tenant_id)
            .fetch_optional(w.conn())
            .await
            .db("reading the api key to revoke")?;
        let Some(row) = row else {
            w.rollback().await?;
            return Err(Error::no_such("api key", key_id));
        };
        let key = key_from_row(&row)?;
        if key.revoked_at.is_some() {
            w.rollback().await?;
            return Ok(key);
        }
        let row = sqlx::query("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 RETURNING *")
            .bind(key_id)
            .bind(micros(now))
            .fetch_one(w.conn())
            .await
            .db("revoking an api key")?;
        let key = key_from_row(&row)?;
        record(
            w.conn(),
            micros(Utc::now()),
            tenant_id,
            actor,
            &key_revoked(&key),
        )
        .await?;
        w.commit("committing a revocation").await?;
        Ok(key)
    }

    async fn rotate_api_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: DateTime<Utc>,
        grace: Duration,
        actor: &Actor,
    ) -> Result<IssuedKey> {
        let (tenant_id, key_id) = key_of_tenant_checked(tenant_id, key_id)?;
        let expires_at = grace_end(now, grace)?;
        let mut w = self.begin_write("starting to rotate an api key").await?;
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?1 AND tenant_id = ?2")
            .bind(key_id)
            .bind(tenant_id)
            .fetch_optional(w.conn())
            .await
            .db("reading the api key to rotate")?;
        let Some(row) = row else {
            w.rollback().await?;
            return Err(Error::no_such("api key", key_id));
        };
        let old = key_from_row(&row)?;
        check_rotatable(&old)?;
        let issued = insert_key(w.conn(), Some(tenant_id), &old.name, old.role, old.mode)
            .await?
            .ok_or_else(|| Error::corrupt("rotating an api key", "its tenant is missing"))?;
        sqlx::query("UPDATE api_keys SET expires_at = ?2 WHERE id = ?1")
            .bind(key_id)
            .bind(micros(expires_at))
            .execute(w.conn())
            .await
            .db("ending a rotated key's life")?;
        let change = key_rotated(key_id, &issued.key, expires_at);
        record(w.conn(), micros(Utc::now()), tenant_id, actor, &change).await?;
        w.commit("committing a key rotation").await?;
        Ok(issued)
    }
}
