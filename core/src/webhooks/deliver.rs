//! `webhook.deliver`: one event POSTed to one endpoint. The body is made when
//! the delivery is queued and sent unchanged on every attempt (same `id`), so
//! receivers can drop repeats; each attempt is signed afresh.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{webhook_id_text, FinishedJob, Subscription, WebhookEvent};
use crate::backoff::Backoff;
use crate::client::EnqueueRequest;
use crate::error::Result;
use crate::kinds::{JobKind, KindSpec};

pub struct WebhookDelivery;

pub const WEBHOOK_DELIVER: &str = WebhookDelivery::NAME;
/// The queue deliveries run on (short HTTP calls, apart from long jobs).
pub const WEBHOOKS_QUEUE: &str = "webhooks";
/// Attempts per delivery: with the back-off below, about a day and a half.
pub const DELIVERY_ATTEMPTS: i32 = 12;

impl JobKind for WebhookDelivery {
    const NAME: &'static str = "webhook.deliver";
    type Params = DeliveryParams;
    type Output = DeliveryOutput;
    type Checkpoint = ();

    /// Internal (queued by the dispatcher and the test endpoint); 30 s,
    /// 1 min, 2 min, … up to 6 h between attempts.
    fn spec(spec: KindSpec) -> KindSpec {
        spec.internal()
            .queue(WEBHOOKS_QUEUE)
            .timeout(Duration::from_secs(60))
            .max_attempts(DELIVERY_ATTEMPTS)
            .backoff(Backoff {
                base: Duration::from_secs(30),
                max: Duration::from_secs(6 * 3600),
                jitter: 0.2,
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryParams {
    /// `wh_<hex>`.
    pub webhook_id: String,
    pub event: WebhookEvent,
    /// The body's `id`.
    pub event_id: String,
    /// The JSON body, as it will be sent.
    pub body: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryOutput {
    pub status_code: u16,
    pub duration_ms: u64,
}

/// The body of an event: `{id, type, createdAt, tenantId, data}`.
pub fn event_body(
    event_id: &str,
    event: WebhookEvent,
    at: DateTime<Utc>,
    tenant_id: &str,
    data: Value,
) -> Value {
    json!({
        "id": event_id,
        "type": event.as_str(),
        "createdAt": at,
        "tenantId": tenant_id,
        "data": data,
    })
}

/// The delivery of `event` (made by `job` ending) to `endpoint`, keyed so
/// that it is queued once however often the dispatcher reads the job's end.
pub fn delivery_of(
    endpoint: &Subscription,
    job: &FinishedJob,
    event: WebhookEvent,
) -> Result<EnqueueRequest> {
    let event_id = format!("evt_{}_{}", job.event_seq, event.as_str().replace('.', "_"));
    let data = json!({
        "jobId": job.job_id,
        "kind": job.kind,
        "status": job.state.as_str(),
        "finishedAt": job.at,
        "links": { "job": format!("/v1/jobs/{}", job.job_id) },
    });
    let webhook_id = webhook_id_text(endpoint.webhook_id);
    let key = format!("webhook:{webhook_id}:{event_id}");
    let params = DeliveryParams {
        body: event_body(&event_id, event, job.at, &job.tenant_id, data),
        webhook_id,
        event,
        event_id,
    };
    Ok(
        EnqueueRequest::of::<WebhookDelivery>(job.tenant_id.clone(), &params)?
            .idempotency_key(Some(key)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobId, JobState};
    use uuid::Uuid;

    #[test]
    fn a_delivery_is_keyed_by_endpoint_and_event() {
        let endpoint = Subscription {
            tenant_id: "acme".into(),
            webhook_id: Uuid::now_v7(),
            events: vec![WebhookEvent::JobSucceeded],
        };
        let job = FinishedJob {
            event_seq: 42,
            at: Utc::now(),
            tenant_id: "acme".into(),
            job_id: JobId::new(),
            kind: "audit.export".into(),
            state: JobState::Succeeded,
        };
        let request = delivery_of(&endpoint, &job, WebhookEvent::ExportCompleted).expect("request");
        assert_eq!(request.kind, WEBHOOK_DELIVER);
        assert_eq!(request.tenant_id, "acme");
        let params: DeliveryParams =
            serde_json::from_value(request.params.clone()).expect("params");
        assert_eq!(params.event_id, "evt_42_export_completed");
        assert_eq!(params.body["type"], "export.completed");
        assert_eq!(params.body["data"]["jobId"], job.job_id.to_string());
        assert_eq!(params.body["data"]["status"], "succeeded");
        assert_eq!(
            request.idempotency_key,
            Some(format!(
                "webhook:{}:evt_42_export_completed",
                webhook_id_text(endpoint.webhook_id)
            ))
        );
        let again = delivery_of(&endpoint, &job, WebhookEvent::ExportCompleted).expect("request");
        assert_eq!(again.idempotency_key, request.idempotency_key);
    }
}
