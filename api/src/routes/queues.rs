//! `GET /v1/queues` (operator keys): the queues as JSON, per queue and kind:
//! jobs due now, scheduled for later, running, and how long the oldest due
//! job has waited (the figures of `/metrics`, read from the outstanding jobs
//! only), and the attempts ended per minute over the last hour (added up by
//! the worker pools' heartbeats), for the dashboard and scripts.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use longhaul_core::workers::{minute_of, ThroughputMinute};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{LockedOut, Unauthorized};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// One queue and kind.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    pub queue: String,
    pub kind: String,
    /// Queued and due now.
    pub due: u64,
    /// Queued for later (`runAt`, a retry's back-off).
    pub scheduled: u64,
    pub running: u64,
    /// When the oldest due job became due.
    pub oldest_due_at: Option<DateTime<Utc>>,
    /// How long it has waited, in seconds (0 when nothing is due).
    pub oldest_age_seconds: f64,
}

/// The queues.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueList {
    pub data: Vec<QueueView>,
    /// Attempts ended per minute (every queue), the last 60 minutes, oldest
    /// first; minutes with none are absent. Written by each pool's heartbeat
    /// (every 5 s), so the current minute trails by up to that.
    pub last_hour: Vec<ThroughputMinute>,
    pub at: DateTime<Utc>,
}

/// Queues and kinds with queued or running jobs, by queue then kind.
#[utoipa::path(
    get,
    path = "/v1/queues",
    operation_id = "listQueues",
    tag = "workers",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The queues", body = QueueList),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        LockedOut,
    )
)]
async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<QueueList>, ApiError> {
    caller.operator()?;
    let now = state.clock.now();
    let mut gauges = state.stores.queue_gauges(now).await?;
    gauges.sort_by(|a, b| (&a.queue, &a.kind).cmp(&(&b.queue, &b.kind)));
    let data = gauges
        .into_iter()
        .map(|gauge| QueueView {
            oldest_age_seconds: gauge
                .oldest_due_at
                .map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
            queue: gauge.queue,
            kind: gauge.kind,
            due: gauge.due,
            scheduled: gauge.scheduled,
            running: gauge.running,
            oldest_due_at: gauge.oldest_due_at,
        })
        .collect();
    let since = minute_of(now) - chrono::Duration::minutes(59);
    let last_hour = state.stores.throughput_since(since).await?;
    Ok(Json(QueueList {
        data,
        last_hour,
        at: now,
    }))
}
