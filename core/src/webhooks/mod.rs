//! Webhooks: a tenant's HTTPS endpoints told when its jobs end, so clients
//! need not poll. An endpoint (`wh_<hex>`) subscribes to [`WebhookEvent`]s and
//! has a signing secret (`whsec_…`, shown on creation and rotation only).
//!
//! Deliveries are jobs of the `webhook.deliver` kind (`whd_<hex>` =
//! `job_<hex>`): the scheduler's dispatcher reads finished jobs from the job
//! event log and queues one delivery per (endpoint, event), keyed so that it is
//! queued once whatever the number of passes or replicas; the worker POSTs the
//! JSON body signed with `Longhaul-Signature` (see [`signature`]) and retries
//! with back-off; each attempt is kept in the endpoint's delivery log.

pub mod deliver;
pub mod signature;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::Actor;
use crate::error::{Error, Result};
use crate::ids::parse_prefixed;
use crate::{JobId, JobState};
pub use deliver::{DeliveryOutput, DeliveryParams, WebhookDelivery, WEBHOOK_DELIVER};

/// `wh_<hex>`: an endpoint.
pub const WEBHOOK_PREFIX: &str = "wh_";
/// `whd_<hex>` names the delivery job `job_<hex>`.
pub const DELIVERY_PREFIX: &str = "whd_";
/// Endpoints a tenant may have.
pub const MAX_WEBHOOKS: i64 = 20;
const MAX_URL_CHARS: usize = 2048;
const MAX_DESCRIPTION_CHARS: usize = 500;

/// What an endpoint can be told.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum WebhookEvent {
    /// Any job succeeded.
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    /// Any job failed for good (no attempt left, or a permanent error).
    #[serde(rename = "job.failed")]
    JobFailed,
    /// Any job was cancelled.
    #[serde(rename = "job.cancelled")]
    JobCancelled,
    /// An audit export's file is ready.
    #[serde(rename = "export.completed")]
    ExportCompleted,
    /// A leakage or classification scan finished.
    #[serde(rename = "scan.completed")]
    ScanCompleted,
    /// Sent by `POST /v1/webhooks/{id}/test` only; not subscribable.
    #[serde(rename = "webhook.test")]
    Test,
}

impl WebhookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::JobSucceeded => "job.succeeded",
            WebhookEvent::JobFailed => "job.failed",
            WebhookEvent::JobCancelled => "job.cancelled",
            WebhookEvent::ExportCompleted => "export.completed",
            WebhookEvent::ScanCompleted => "scan.completed",
            WebhookEvent::Test => "webhook.test",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
    }

    /// The events a job of `kind` ending in `state` makes, most general
    /// first. Deliveries themselves make none (an endpoint subscribed to
    /// `job.failed` would otherwise be told of its own failed deliveries).
    pub fn of_finished_job(kind: &str, state: JobState) -> Vec<WebhookEvent> {
        if kind == WEBHOOK_DELIVER {
            return vec![];
        }
        match state {
            JobState::Succeeded => {
                let mut events = vec![WebhookEvent::JobSucceeded];
                if kind == crate::audit::export::AUDIT_EXPORT {
                    events.push(WebhookEvent::ExportCompleted);
                }
                if kind == crate::scans::leakage::LEAKAGE_SCAN
                    || kind == crate::scans::classification::CLASSIFICATION_SCAN
                {
                    events.push(WebhookEvent::ScanCompleted);
                }
                events
            }
            JobState::Failed => vec![WebhookEvent::JobFailed],
            JobState::Cancelled => vec![WebhookEvent::JobCancelled],
            JobState::Queued | JobState::Running => vec![],
        }
    }
}

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWebhook {
    /// `https://…` (or `http://` where the deployment allows it); a host
    /// that resolves to a private or local address is refused at delivery.
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// `PATCH /v1/webhooks/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<WebhookEvent>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

impl WebhookPatch {
    pub fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.events.is_none()
            && self.description.is_none()
            && self.enabled.is_none()
    }
}

/// An endpoint's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedWebhook {
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub description: Option<String>,
    pub enabled: bool,
}

impl NewWebhook {
    pub fn check(&self) -> Result<CheckedWebhook> {
        Ok(CheckedWebhook {
            url: check_url(&self.url)?,
            events: check_events(&self.events)?,
            description: check_description(self.description.as_deref())?,
            enabled: self.enabled.unwrap_or(true),
        })
    }
}

impl WebhookPatch {
    /// `current` with the patch applied, checked as a whole.
    pub fn apply(&self, current: &Webhook) -> Result<CheckedWebhook> {
        Ok(CheckedWebhook {
            url: check_url(self.url.as_deref().unwrap_or(&current.url))?,
            events: check_events(self.events.as_deref().unwrap_or(&current.events))?,
            description: check_description(
                self.description
                    .as_deref()
                    .or(current.description.as_deref()),
            )?,
            enabled: self.enabled.unwrap_or(current.enabled),
        })
    }
}

fn check_url(url: &str) -> Result<String> {
    let invalid = |message: &str| Error::validation("url", message);
    if url.chars().count() > MAX_URL_CHARS {
        return Err(invalid("at most 2048 characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid(&format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(invalid("must be an https:// (or http://) URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("names no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "must not carry credentials: verify deliveries by their signature",
        ));
    }
    if parsed.fragment().is_some() {
        return Err(invalid("must not have a #fragment"));
    }
    Ok(parsed.to_string())
}

fn check_events(events: &[WebhookEvent]) -> Result<Vec<WebhookEvent>> {
    if events.is_empty() {
        return Err(Error::validation("events", "name at least one event"));
    }
    if events.contains(&WebhookEvent::Test) {
        return Err(Error::validation(
            "events",
            "webhook.test is sent by POST /v1/webhooks/{id}/test only",
        ));
    }
    let mut events = events.to_vec();
    events.sort();
    events.dedup();
    Ok(events)
}

fn check_description(description: Option<&str>) -> Result<Option<String>> {
    match description {
        Some(text) if text.chars().count() > MAX_DESCRIPTION_CHARS => {
            Err(Error::validation("description", "at most 500 characters"))
        }
        other => Ok(other.map(str::to_string)),
    }
}

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// `wh_<hex>`.
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub description: Option<String>,
    pub enabled: bool,
    /// The secret's last four characters, to tell secrets apart.
    pub secret_hint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint with its secret: what its deliveries are signed with.
#[derive(Debug, Clone)]
pub struct SigningEndpoint {
    pub webhook: Webhook,
    pub secret: String,
}

/// How a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryStatus {
    /// Not attempted yet, or failed with attempts left.
    Pending,
    /// The endpoint answered 2xx.
    Succeeded,
    /// No attempt left, or refused for good (endpoint gone, address refused).
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One delivery in an endpoint's log, as of its last attempt.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// `whd_<hex>` (the delivery job is `job_<hex>`).
    pub delivery_id: String,
    pub webhook_id: String,
    pub event: WebhookEvent,
    /// The body's `id`: the same on every attempt, for receivers to drop
    /// repeats.
    pub event_id: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    /// The HTTP status of the last attempt (none if no answer came).
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A job that ended, as the dispatcher reads it from the job event log.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedJob {
    /// The job event's id: the dispatcher's cursor.
    pub event_seq: i64,
    pub at: DateTime<Utc>,
    pub tenant_id: String,
    pub job_id: JobId,
    pub kind: String,
    pub state: JobState,
}

/// An enabled endpoint and what it subscribed to (for the dispatcher).
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub tenant_id: String,
    pub webhook_id: Uuid,
    pub events: Vec<WebhookEvent>,
}

pub fn webhook_id_text(id: Uuid) -> String {
    format!("{WEBHOOK_PREFIX}{}", id.simple())
}

pub fn parse_webhook_id(text: &str) -> Result<Uuid> {
    parse_prefixed("webhook", WEBHOOK_PREFIX, text)
}

pub fn delivery_id(job: JobId) -> String {
    format!("{DELIVERY_PREFIX}{}", job.as_uuid().simple())
}

pub fn parse_delivery_id(text: &str) -> Result<JobId> {
    parse_prefixed("webhook delivery", DELIVERY_PREFIX, text).map(JobId::from_uuid)
}

/// A new signing secret: `whsec_` and 32 random bytes, base64url.
pub fn new_secret() -> Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| Error::corrupt("drawing a webhook secret", e.to_string()))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The secret's last four characters.
pub fn secret_hint(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// Endpoints, their secrets, their delivery logs, and the dispatcher's
/// cursor over the job event log.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Refuses the [`MAX_WEBHOOKS`]+1st endpoint (`LimitReached`).
    async fn create_webhook(
        &self,
        tenant_id: &str,
        webhook: &CheckedWebhook,
        secret: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Webhook>;

    /// Newest first, after `after` (a webhook id) if given.
    async fn list_webhooks(
        &self,
        tenant_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Webhook>>;

    /// `NoSuchResource` if the tenant has no such endpoint.
    async fn get_webhook(&self, tenant_id: &str, id: Uuid) -> Result<SigningEndpoint>;

    /// Applies a patch, checked against the stored endpoint in the same
    /// transaction.
    async fn update_webhook(
        &self,
        tenant_id: &str,
        id: Uuid,
        patch: &WebhookPatch,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Webhook>;

    /// Deletes the endpoint and its delivery log; queued deliveries then
    /// fail as "endpoint deleted".
    async fn delete_webhook(
        &self,
        tenant_id: &str,
        id: Uuid,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<()>;

    /// Replaces the secret; later attempts are signed with the new one.
    async fn rotate_webhook_secret(
        &self,
        tenant_id: &str,
        id: Uuid,
        secret: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Webhook>;

    /// Records an attempt of a delivery (creates its log entry on the first).
    async fn record_webhook_delivery(&self, tenant_id: &str, record: &DeliveryRecord)
        -> Result<()>;

    /// An endpoint's deliveries, newest first, after `after` if given.
    async fn list_webhook_deliveries(
        &self,
        tenant_id: &str,
        webhook_id: Uuid,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>>;

    /// Jobs that ended (succeeded, failed, cancelled) with event ids above
    /// `after`, in id order, of tenants with an enabled endpoint.
    async fn finished_jobs_after(&self, after: i64, limit: u32) -> Result<Vec<FinishedJob>>;

    /// The enabled endpoints of these tenants.
    async fn subscriptions(&self, tenants: &[String]) -> Result<Vec<Subscription>>;

    /// Where the dispatcher stopped (0 before its first pass).
    async fn webhook_cursor(&self) -> Result<i64>;

    /// Moves the dispatcher's cursor forward (never back).
    async fn advance_webhook_cursor(&self, to: i64) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let new = |url: &str| NewWebhook {
            url: url.into(),
            events: vec![WebhookEvent::JobFailed],
            description: None,
            enabled: None,
        };
        assert_eq!(
            new("https://hooks.example.com/longhaul")
                .check()
                .map(|c| c.url)
                .ok(),
            Some("https://hooks.example.com/longhaul".to_string())
        );
        for bad in [
            "ftp://example.com/",
            "not a url",
            "https://user:pass@example.com/",
            "https://example.com/#frag",
            "mailto:ops@example.com",
        ] {
            assert!(
                matches!(new(bad).check(), Err(Error::Validation { ref field, .. }) if field == "url"),
                "{bad}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(2100));
        assert!(new(&long).check().is_err());
    }

    #[test]
    fn events_are_deduplicated_and_the_test_event_is_not_subscribable() {
        let checked = NewWebhook {
            url: "https://example.com/".into(),
            events: vec![
                WebhookEvent::JobFailed,
                WebhookEvent::JobSucceeded,
                WebhookEvent::JobFailed,
            ],
            description: None,
            enabled: None,
        }
        .check()
        .expect("valid");
        assert_eq!(
            checked.events,
            vec![WebhookEvent::JobSucceeded, WebhookEvent::JobFailed]
        );
        assert!(checked.enabled);
        for events in [vec![], vec![WebhookEvent::Test]] {
            let result = NewWebhook {
                url: "https://example.com/".into(),
                events,
                description: None,
                enabled: None,
            }
            .check();
            assert!(
                matches!(result, Err(Error::Validation { ref field, .. }) if field == "events")
            );
        }
    }

    #[test]
    fn finished_jobs_make_their_events() {
        use crate::audit::export::AUDIT_EXPORT;
        assert_eq!(
            WebhookEvent::of_finished_job(AUDIT_EXPORT, JobState::Succeeded),
            vec![WebhookEvent::JobSucceeded, WebhookEvent::ExportCompleted]
        );
        assert_eq!(
            WebhookEvent::of_finished_job("leakage.scan", JobState::Succeeded),
            vec![WebhookEvent::JobSucceeded, WebhookEvent::ScanCompleted]
        );
        assert_eq!(
            WebhookEvent::of_finished_job(AUDIT_EXPORT, JobState::Failed),
            vec![WebhookEvent::JobFailed]
        );
        assert_eq!(
            WebhookEvent::of_finished_job("system.noop", JobState::Cancelled),
            vec![WebhookEvent::JobCancelled]
        );
        assert!(WebhookEvent::of_finished_job(WEBHOOK_DELIVER, JobState::Failed).is_empty());
        assert!(WebhookEvent::of_finished_job("system.noop", JobState::Running).is_empty());
    }

    #[test]
    fn ids_and_secrets() {
        let id = Uuid::now_v7();
        assert_eq!(parse_webhook_id(&webhook_id_text(id)).ok(), Some(id));
        assert!(parse_webhook_id("wh_xyz").is_err());
        let job = JobId::new();
        assert_eq!(parse_delivery_id(&delivery_id(job)).ok(), Some(job));
        let a = new_secret().expect("secret");
        let b = new_secret().expect("secret");
        assert!(a.starts_with("whsec_") && a.len() == 6 + 43);
        assert_ne!(a, b);
        assert_eq!(secret_hint("whsec_abcdefgh"), "…efgh");
    }
}
