//! `webhook.deliver`: POSTs one event to one endpoint, signed with the
//! endpoint's current secret (`Longhaul-Signature`, see
//! `longhaul_core::webhooks::signature`), and writes the attempt to the
//! endpoint's delivery log. A 2xx answer delivers; any other answer, a
//! timeout or a broken connection is retried with the kind's back-off; a
//! deleted or disabled endpoint, or an address tenants may not reach, fails
//! the delivery for good.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use hyper::header::HeaderName;
use longhaul_core::webhooks::signature::sign;
use longhaul_core::webhooks::{
    delivery_id, parse_webhook_id, DeliveryOutput, DeliveryParams, DeliveryRecord, DeliveryStatus,
    SigningEndpoint, WebhookDelivery as Kind,
};
use tokio::sync::OnceCell;

use crate::context::JobContext;
use crate::handler::{JobError, KindHandler};
use crate::outbound_http::{FetchError, HttpFetcher, PostAnswer};
use crate::services::JobServices;

/// How long an endpoint has to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WebhookDelivery {
    services: JobServices,
    http: OnceCell<HttpFetcher>,
}

impl WebhookDelivery {
    pub fn new(services: JobServices) -> Self {
        Self {
            services,
            http: OnceCell::new(),
        }
    }

    async fn http(&self) -> Result<&HttpFetcher, JobError> {
        let allow_private = self.services.scans.allow_private_urls;
        self.http
            .get_or_try_init(|| async move {
                HttpFetcher::new(allow_private).map_err(|e| {
                    JobError::retryable(format!("loading the TLS root certificates: {e}"))
                })
            })
            .await
    }

    /// The endpoint to deliver to, or why the delivery ends here.
    async fn endpoint(
        &self,
        ctx: &JobContext,
        params: &DeliveryParams,
    ) -> Result<SigningEndpoint, JobError> {
        let id = parse_webhook_id(&params.webhook_id)
            .map_err(|_| JobError::permanent("the delivery names no webhook"))?;
        match self.services.stores.get_webhook(ctx.tenant_id(), id).await {
            Ok(endpoint) if endpoint.webhook.enabled => Ok(endpoint),
            Ok(_) => Err(JobError::permanent("the webhook endpoint is disabled")),
            Err(longhaul_core::Error::NoSuchResource { .. }) => {
                Err(JobError::permanent("the webhook endpoint was deleted"))
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn post(
        &self,
        ctx: &JobContext,
        endpoint: &SigningEndpoint,
        params: &DeliveryParams,
    ) -> Result<PostAnswer, JobError> {
        let body = serde_json::to_vec(&params.body)
            .map_err(|e| JobError::permanent(format!("encoding the event: {e}")))?;
        let signature = sign(&endpoint.secret, Utc::now().timestamp(), &body)
            .map_err(|e| JobError::permanent(e.to_string()))?;
        let headers = [
            // `Longhaul-Signature` (header names are sent lower-case).
            (HeaderName::from_static("longhaul-signature"), signature),
            (
                HeaderName::from_static("longhaul-event-id"),
                params.event_id.clone(),
            ),
            (
                HeaderName::from_static("longhaul-event-type"),
                params.event.as_str().to_string(),
            ),
            (
                HeaderName::from_static("longhaul-delivery-id"),
                delivery_id(ctx.job_id()),
            ),
        ];
        self.http()
            .await?
            .post_json(
                &endpoint.webhook.url,
                &headers,
                Bytes::from(body),
                ANSWER_TIMEOUT,
            )
            .await
            .map_err(|error| match error {
                FetchError::Refused(message) => JobError::permanent(message),
                other => JobError::retryable(other.to_string()),
            })
    }

    /// Writes the attempt to the endpoint's log.
    async fn record(
        &self,
        ctx: &JobContext,
        params: &DeliveryParams,
        outcome: &Result<PostAnswer, JobError>,
    ) -> Result<(), JobError> {
        let job = ctx.job();
        let now = Utc::now();
        let (status, code, error) = match outcome {
            Ok(answer) if answer.status.is_success() => {
                (DeliveryStatus::Succeeded, Some(answer.status), None)
            }
            Ok(answer) => (
                DeliveryStatus::Pending,
                Some(answer.status),
                Some(format!("answered {}: {}", answer.status, answer.excerpt)),
            ),
            Err(error) => (
                if error.is_permanent() {
                    DeliveryStatus::Failed
                } else {
                    DeliveryStatus::Pending
                },
                None,
                Some(error.public().message),
            ),
        };
        // A failure on the last attempt counting against max_attempts ends
        // the delivery.
        let status =
            if status == DeliveryStatus::Pending && job.failed_attempts + 1 >= job.max_attempts {
                DeliveryStatus::Failed
            } else {
                status
            };
        let record = DeliveryRecord {
            delivery_id: delivery_id(ctx.job_id()),
            webhook_id: params.webhook_id.clone(),
            event: params.event,
            event_id: params.event_id.clone(),
            status,
            attempts: ctx.attempt(),
            last_status_code: code.map(|c| i32::from(c.as_u16())),
            last_error: error,
            last_attempt_at: now,
            delivered_at: (status == DeliveryStatus::Succeeded).then_some(now),
        };
        self.services
            .stores
            .record_webhook_delivery(ctx.tenant_id(), &record)
            .await
            .map_err(JobError::from)
    }
}

#[async_trait]
impl KindHandler for WebhookDelivery {
    type Kind = Kind;

    async fn run(
        &self,
        ctx: JobContext,
        params: DeliveryParams,
    ) -> Result<DeliveryOutput, JobError> {
        let started = Instant::now();
        let outcome = match self.endpoint(&ctx, &params).await {
            Ok(endpoint) => self.post(&ctx, &endpoint, &params).await,
            Err(error) => Err(error),
        };
        self.record(&ctx, &params, &outcome).await?;
        let answer = outcome?;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            status = answer.status.as_u16(),
            duration_ms,
            event = params.event.as_str(),
            "webhook delivery answered"
        );
        if answer.status.is_success() {
            Ok(DeliveryOutput {
                status_code: answer.status.as_u16(),
                duration_ms,
            })
        } else {
            Err(JobError::retryable(format!(
                "the endpoint answered {}",
                answer.status
            )))
        }
    }
}
