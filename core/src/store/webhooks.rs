//! Webhook endpoints, their delivery logs and the dispatcher's cursor, written
//! once for both backends (see `sql.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::retention::lock_tenant;
use super::sql::{sql, Db, Row, SqlStore};
use super::{PgStore, SqliteStore};
use crate::audit::{Actor, Change};
use crate::error::{Error, Result};
use crate::webhooks::{
    delivery_id, parse_delivery_id, secret_hint, webhook_id_text, CheckedWebhook, DeliveryRecord,
    DeliveryStatus, FinishedJob, SigningEndpoint, Subscription, Webhook, WebhookEvent,
    WebhookPatch, WebhookStore, MAX_WEBHOOKS,
};
use crate::{JobId, JobState};

/// The dispatcher's row in `webhook_cursor`.
const CURSOR: &str = "job_events";

fn events_from(value: serde_json::Value) -> Result<Vec<WebhookEvent>> {
    serde_json::from_value(value).map_err(|e| Error::corrupt("reading a webhook's events", e))
}

fn endpoint_from_row(row: &Row) -> Result<SigningEndpoint> {
    let secret = row.text("secret")?;
    Ok(SigningEndpoint {
        webhook: Webhook {
            webhook_id: webhook_id_text(row.uuid("id")?),
            url: row.text("url")?,
            events: events_from(row.json("events")?)?,
            description: row.opt_text("description")?,
            enabled: row.bool("enabled")?,
            secret_hint: secret_hint(&secret),
            created_at: row.time("created_at")?,
            updated_at: row.time("updated_at")?,
        },
        secret,
    })
}

fn delivery_from_row(row: &Row) -> Result<DeliveryRecord> {
    let event = row.text("event")?;
    let status = row.text("status")?;
    Ok(DeliveryRecord {
        delivery_id: delivery_id(JobId::from_uuid(row.uuid("id")?)),
        webhook_id: webhook_id_text(row.uuid("webhook_id")?),
        event: WebhookEvent::parse(&event)
            .ok_or_else(|| Error::corrupt("reading a delivery", format!("event {event}")))?,
        event_id: row.text("event_id")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| Error::corrupt("reading a delivery", format!("status {status}")))?,
        attempts: row.int4("attempts")?,
        last_status_code: row.opt_int4("last_status_code")?,
        last_error: row.opt_text("last_error")?,
        last_attempt_at: row.time("last_attempt_at")?,
        delivered_at: row.opt_time("delivered_at")?,
    })
}

fn audited(webhook: &CheckedWebhook) -> serde_json::Value {
    json!({
        "url": webhook.url,
        "events": webhook.events,
        "enabled": webhook.enabled,
    })
}

async fn read_endpoint(
    db: &mut Db<'_>,
    tenant_id: &str,
    id: Uuid,
    lock: bool,
) -> Result<SigningEndpoint> {
    let text = if lock {
        db.pick(
            "SELECT * FROM webhooks WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            "SELECT * FROM webhooks WHERE tenant_id = $1 AND id = $2",
        )
    } else {
        "SELECT * FROM webhooks WHERE tenant_id = $1 AND id = $2"
    };
    let row = db
        .fetch_optional(sql("reading a webhook", text).bind(tenant_id).bind(id))
        .await?
        .ok_or_else(|| Error::no_such("webhook", webhook_id_text(id)))?;
    endpoint_from_row(&row)
}

async fn create(
    store: &impl SqlStore,
    tenant_id: &str,
    webhook: &CheckedWebhook,
    secret: &str,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Webhook> {
    let mut tx = store.write("starting to create a webhook").await?;
    let mut db = tx.db();
    lock_tenant(&mut db, tenant_id).await?;
    let current = db
        .fetch_optional(
            sql(
                "counting the tenant's webhooks",
                "SELECT count(*) AS n FROM webhooks WHERE tenant_id = $1",
            )
            .bind(tenant_id),
        )
        .await?
        .map(|row| row.int("n"))
        .transpose()?
        .unwrap_or(0);
    if current >= MAX_WEBHOOKS {
        return Err(Error::LimitReached {
            what: "webhooks",
            limit: MAX_WEBHOOKS,
            current,
        });
    }
    let row = db
        .fetch_optional(
            sql(
                "writing a webhook",
                "INSERT INTO webhooks (tenant_id, id, url, events, description, enabled, secret,
                                       created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING *",
            )
            .bind(tenant_id)
            .bind(Uuid::now_v7())
            .bind(&webhook.url)
            .bind(&json!(webhook.events))
            .bind(&webhook.description)
            .bind(webhook.enabled)
            .bind(secret)
            .bind(now),
        )
        .await?
        .ok_or_else(|| Error::corrupt("creating a webhook", "no row returned"))?;
    let created = endpoint_from_row(&row)?.webhook;
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "webhook.create",
            "webhook",
            &created.webhook_id,
            audited(webhook),
        ),
        now,
    )
    .await?;
    tx.commit("creating a webhook").await?;
    Ok(created)
}

async fn list(
    store: &impl SqlStore,
    tenant_id: &str,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Webhook>> {
    let mut conn = store.read("listing webhooks").await?;
    conn.db()
        .fetch_all(
            sql(
                "listing webhooks",
                "SELECT * FROM webhooks WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(tenant_id)
            .bind(after)
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(|row| endpoint_from_row(row).map(|endpoint| endpoint.webhook))
        .collect()
}

async fn get(store: &impl SqlStore, tenant_id: &str, id: Uuid) -> Result<SigningEndpoint> {
    let mut conn = store.read("reading a webhook").await?;
    read_endpoint(&mut conn.db(), tenant_id, id, false).await
}

async fn update(
    store: &impl SqlStore,
    tenant_id: &str,
    id: Uuid,
    patch: &WebhookPatch,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Webhook> {
    let mut tx = store.write("starting to change a webhook").await?;
    let mut db = tx.db();
    let current = read_endpoint(&mut db, tenant_id, id, true).await?;
    let changed = patch.apply(&current.webhook)?;
    let row = db
        .fetch_optional(
            sql(
                "changing a webhook",
                "UPDATE webhooks SET url = $3, events = $4, description = $5, enabled = $6,
                                     updated_at = $7
                 WHERE tenant_id = $1 AND id = $2 RETURNING *",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(&changed.url)
            .bind(&json!(changed.events))
            .bind(&changed.description)
            .bind(changed.enabled)
            .bind(now),
        )
        .await?
        .ok_or_else(|| Error::no_such("webhook", webhook_id_text(id)))?;
    let updated = endpoint_from_row(&row)?.webhook;
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "webhook.update",
            "webhook",
            &updated.webhook_id,
            audited(&changed),
        ),
        now,
    )
    .await?;
    tx.commit("changing a webhook").await?;
    Ok(updated)
}

async fn delete(
    store: &impl SqlStore,
    tenant_id: &str,
    id: Uuid,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<()> {
    let mut tx = store.write("starting to delete a webhook").await?;
    let mut db = tx.db();
    let deleted = db
        .execute(
            sql(
                "deleting a webhook",
                "DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id)
            .bind(id),
        )
        .await?;
    if deleted == 0 {
        return Err(Error::no_such("webhook", webhook_id_text(id)));
    }
    db.record_change(
        tenant_id,
        actor,
        &Change::new("webhook.delete", "webhook", webhook_id_text(id), json!({})),
        now,
    )
    .await?;
    tx.commit("deleting a webhook").await
}

async fn rotate(
    store: &impl SqlStore,
    tenant_id: &str,
    id: Uuid,
    secret: &str,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Webhook> {
    let mut tx = store.write("starting to rotate a webhook secret").await?;
    let mut db = tx.db();
    let row = db
        .fetch_optional(
            sql(
                "rotating a webhook secret",
                "UPDATE webhooks SET secret = $3, updated_at = $4
                 WHERE tenant_id = $1 AND id = $2 RETURNING *",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(secret)
            .bind(now),
        )
        .await?
        .ok_or_else(|| Error::no_such("webhook", webhook_id_text(id)))?;
    let rotated = endpoint_from_row(&row)?.webhook;
    db.record_change(
        tenant_id,
        actor,
        &Change::new(
            "webhook.rotate_secret",
            "webhook",
            &rotated.webhook_id,
            json!({ "secretHint": rotated.secret_hint }),
        ),
        now,
    )
    .await?;
    tx.commit("rotating a webhook secret").await?;
    Ok(rotated)
}

async fn record_delivery(
    store: &impl SqlStore,
    tenant_id: &str,
    record: &DeliveryRecord,
) -> Result<()> {
    let webhook_id = crate::webhooks::parse_webhook_id(&record.webhook_id)?;
    let id = parse_delivery_id(&record.delivery_id)?;
    let mut tx = store.write("starting to record a webhook delivery").await?;
    // An endpoint deleted meanwhile has no log to write to (the foreign key
    // would refuse the row): nothing to record.
    tx.db()
        .execute(
            sql(
                "recording a webhook delivery",
                "INSERT INTO webhook_deliveries (tenant_id, webhook_id, id, event, event_id, status,
                     attempts, last_status_code, last_error, last_attempt_at, delivered_at)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
                 WHERE EXISTS (SELECT 1 FROM webhooks WHERE tenant_id = $1 AND id = $2)
                 ON CONFLICT (tenant_id, webhook_id, id) DO UPDATE SET
                     status = excluded.status, attempts = excluded.attempts,
                     last_status_code = excluded.last_status_code,
                     last_error = excluded.last_error, last_attempt_at = excluded.last_attempt_at,
                     delivered_at = excluded.delivered_at",
            )
            .bind(tenant_id)
            .bind(webhook_id)
            .bind(id)
            .bind(record.event.as_str())
            .bind(&record.event_id)
            .bind(record.status.as_str())
            .bind(record.attempts)
            .bind(record.last_status_code)
            .bind(&record.last_error)
            .bind(record.last_attempt_at)
            .bind(record.delivered_at),
        )
        .await?;
    tx.commit("recording a webhook delivery").await
}

async fn list_deliveries(
    store: &impl SqlStore,
    tenant_id: &str,
    webhook_id: Uuid,
    after: Option<JobId>,
    limit: u32,
) -> Result<Vec<DeliveryRecord>> {
    let mut conn = store.read("listing webhook deliveries").await?;
    let mut db = conn.db();
    // An unknown endpoint is not found, not an empty log.
    read_endpoint(&mut db, tenant_id, webhook_id, false).await?;
    db.fetch_all(
        sql(
            "listing webhook deliveries",
            "SELECT * FROM webhook_deliveries
             WHERE tenant_id = $1 AND webhook_id = $2 AND ($3 IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4",
        )
        .bind(tenant_id)
        .bind(webhook_id)
        .bind(after)
        .bind(i64::from(limit)),
    )
    .await?
    .iter()
    .map(delivery_from_row)
    .collect()
}

async fn finished_jobs_after(
    store: &impl SqlStore,
    after: i64,
    limit: u32,
) -> Result<Vec<FinishedJob>> {
    let mut conn = store.read("reading finished jobs for webhooks").await?;
    conn.db()
        .fetch_all(
            sql(
                "reading finished jobs for webhooks",
                "SELECT e.id AS seq, e.at, e.tenant_id, e.job_id, e.kind AS state, j.kind
                 FROM job_events e JOIN jobs j ON j.id = e.job_id
                 WHERE e.id > $1 AND e.kind IN ('succeeded', 'failed', 'cancelled')
                   AND e.tenant_id IN (SELECT tenant_id FROM webhooks WHERE enabled)
                 ORDER BY e.id LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit)),
        )
        .await?
        .iter()
        .map(|row| {
            let state = row.text("state")?;
            Ok(FinishedJob {
                event_seq: row.int("seq")?,
                at: row.time("at")?,
                tenant_id: row.text("tenant_id")?,
                job_id: JobId::from_uuid(row.uuid("job_id")?),
                kind: row.text("kind")?,
                state: state.parse::<JobState>().map_err(|_| {
                    Error::corrupt("reading a finished job", format!("state {state}"))
                })?,
            })
        })
        .collect()
}

async fn subscriptions(store: &impl SqlStore, tenants: &[String]) -> Result<Vec<Subscription>> {
    let mut conn = store.read("reading webhook subscriptions").await?;
    let mut db = conn.db();
    let mut subscriptions = Vec::new();
    for tenant_id in tenants {
        for row in db
            .fetch_all(
                sql(
                    "reading webhook subscriptions",
                    "SELECT id, events FROM webhooks WHERE tenant_id = $1 AND enabled ORDER BY id",
                )
                .bind(tenant_id),
            )
            .await?
        {
            subscriptions.push(Subscription {
                tenant_id: tenant_id.clone(),
                webhook_id: row.uuid("id")?,
                events: events_from(row.json("events")?)?,
            });
        }
    }
    Ok(subscriptions)
}

async fn cursor(store: &impl SqlStore) -> Result<i64> {
    let mut conn = store.read("reading the webhook cursor").await?;
    Ok(conn
        .db()
        .fetch_optional(
            sql(
                "reading the webhook cursor",
                "SELECT last_event_id FROM webhook_cursor WHERE name = $1",
            )
            .bind(CURSOR),
        )
        .await?
        .map(|row| row.int("last_event_id"))
        .transpose()?
        .unwrap_or(0))
}

async fn advance_cursor(store: &impl SqlStore, to: i64) -> Result<()> {
    let mut tx = store.write("starting to move the webhook cursor").await?;
    tx.db()
        .execute(
            sql(
                "moving the webhook cursor",
                "INSERT INTO webhook_cursor (name, last_event_id) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET last_event_id = excluded.last_event_id
                 WHERE webhook_cursor.last_event_id < excluded.last_event_id",
            )
            .bind(CURSOR)
            .bind(to),
        )
        .await?;
    tx.commit("moving the webhook cursor").await
}

/// `WebhookStore` for a backend, through the functions above.
macro_rules! webhook_store_for {
    ($store:ty) => {
        #[async_trait]
        impl WebhookStore for $store {
            async fn create_webhook(
                &self,
                tenant_id: &str,
                webhook: &CheckedWebhook,
                secret: &str,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<Webhook> {
                create(self, tenant_id, webhook, secret, now, actor).await
            }

            async fn list_webhooks(
                &self,
                tenant_id: &str,
                after: Option<Uuid>,
                limit: u32,
            ) -> Result<Vec<Webhook>> {
                list(self, tenant_id, after, limit).await
            }

            async fn get_webhook(&self, tenant_id: &str, id: Uuid) -> Result<SigningEndpoint> {
                get(self, tenant_id, id).await
            }

            async fn update_webhook(
                &self,
                tenant_id: &str,
                id: Uuid,
                patch: &WebhookPatch,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<Webhook> {
                update(self, tenant_id, id, patch, now, actor).await
            }

            async fn delete_webhook(
                &self,
                tenant_id: &str,
                id: Uuid,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<()> {
                delete(self, tenant_id, id, now, actor).await
            }

            async fn rotate_webhook_secret(
                &self,
                tenant_id: &str,
                id: Uuid,
                secret: &str,
                now: DateTime<Utc>,
                actor: &Actor,
            ) -> Result<Webhook> {
                rotate(self, tenant_id, id, secret, now, actor).await
            }

            async fn record_webhook_delivery(
                &self,
                tenant_id: &str,
                record: &DeliveryRecord,
            ) -> Result<()> {
                record_delivery(self, tenant_id, record).await
            }

            async fn list_webhook_deliveries(
                &self,
                tenant_id: &str,
                webhook_id: Uuid,
                after: Option<JobId>,
                limit: u32,
            ) -> Result<Vec<DeliveryRecord>> {
                list_deliveries(self, tenant_id, webhook_id, after, limit).await
            }

            async fn finished_jobs_after(
                &self,
                after: i64,
                limit: u32,
            ) -> Result<Vec<FinishedJob>> {
                finished_jobs_after(self, after, limit).await
            }

            async fn subscriptions(&self, tenants: &[String]) -> Result<Vec<Subscription>> {
                subscriptions(self, tenants).await
            }

            async fn webhook_cursor(&self) -> Result<i64> {
                cursor(self).await
            }

            async fn advance_webhook_cursor(&self, to: i64) -> Result<()> {
                advance_cursor(self, to).await
            }
        }
    };
}

webhook_store_for!(PgStore);
webhook_store_for!(SqliteStore);
