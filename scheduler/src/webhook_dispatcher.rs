//! The webhook dispatcher: turns jobs that ended into deliveries. Each pass
//! reads the job event log from a cursor (succeeded, failed and cancelled
//! transitions of tenants with an enabled endpoint), and queues one
//! `webhook.deliver` job per (endpoint, event) under the idempotency key
//! `webhook:<endpoint>:<event id>`, so a pass repeated, or run by two
//! scheduler replicas at once, queues each delivery once.
//!
//! The cursor only moves past events older than [`SETTLE`]: event ids are
//! handed out before commit, so an id below one already read may still
//! commit; the events of the last seconds are read again by the next passes
//! (their deliveries already exist and are not queued twice).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use longhaul_core::webhooks::{deliver::delivery_of, WebhookEvent};
use longhaul_core::{Catalogue, JobClient};
use tokio_util::sync::CancellationToken;

use crate::SchedulerStore;

/// How often the dispatcher looks for jobs that ended.
pub const DISPATCH_INTERVAL: Duration = Duration::from_millis(500);
/// Events this old are behind the cursor for good.
pub const SETTLE: Duration = Duration::from_secs(5);
/// Events read per pass.
const BATCH: u32 = 1000;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Job ends read.
    pub events: usize,
    /// Deliveries queued now.
    pub queued: usize,
    /// Deliveries already queued by an earlier pass.
    pub existing: usize,
}

pub struct WebhookDispatcher {
    store: Arc<dyn SchedulerStore>,
    client: JobClient,
}

impl WebhookDispatcher {
    pub fn new(store: Arc<dyn SchedulerStore>, catalogue: Arc<Catalogue>) -> Self {
        let client = JobClient::new(store.clone().job_store(), catalogue);
        WebhookDispatcher { store, client }
    }

    /// Dispatches every DISPATCH_INTERVAL until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.dispatch(Utc::now()).await {
                tracing::warn!(%error, "webhook dispatch failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(DISPATCH_INTERVAL) => {}
            }
        }
    }

    /// One pass over the events after the cursor (as of `now`), until none
    /// is left.
    pub async fn dispatch(&self, now: DateTime<Utc>) -> longhaul_core::Result<DispatchReport> {
        let settled_before =
            now - chrono::Duration::from_std(SETTLE).unwrap_or(chrono::Duration::zero());
        let mut report = DispatchReport::default();
        let mut after = self.store.webhook_cursor().await?;
        loop {
            let ended = self.store.finished_jobs_after(after, BATCH).await?;
            let Some(last) = ended.last() else {
                return Ok(report);
            };
            let tenants: Vec<String> = ended
                .iter()
                .map(|job| job.tenant_id.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let subscriptions = self.store.subscriptions(&tenants).await?;
            let mut requests = Vec::new();
            for job in &ended {
                for event in WebhookEvent::of_finished_job(&job.kind, job.state) {
                    for endpoint in subscriptions
                        .iter()
                        .filter(|s| s.tenant_id == job.tenant_id && s.events.contains(&event))
                    {
                        requests.push(delivery_of(endpoint, job, event)?);
                    }
                }
            }
            for enqueued in self.client.enqueue_many(requests).await? {
                if enqueued.created {
                    report.queued += 1;
                } else {
                    report.existing += 1;
                }
            }
            report.events += ended.len();
            // The cursor passes the settled events before the first recent one.
            let settled = ended
                .iter()
                .take_while(|job| job.at < settled_before)
                .last()
                .map(|job| job.event_seq);
            if let Some(settled) = settled {
                self.store.advance_webhook_cursor(settled).await?;
            }
            if ended.len() < BATCH as usize {
                return Ok(report);
            }
            after = last.event_seq;
        }
    }
}
