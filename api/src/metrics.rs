//! `GET /metrics` in the Prometheus text format (operator keys: the figures
//! span tenants): per queue (and kind) the jobs due, scheduled for later and
//! running and the age of the oldest due job, read from the outstanding jobs
//! only (`queue_stats`, two aggregates per scrape, never a scan of finished
//! jobs); and per route the requests served by status and their total
//! duration, recorded by a middleware.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use longhaul_core::queue_stats::QueueGauge;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{LockedOut, Unauthorized};
use crate::state::AppState;

/// Requests served, by (method, route template, status).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    served: Mutex<BTreeMap<(String, String, u16), Served>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Served {
    count: u64,
    seconds: f64,
}

impl HttpMetrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        let entry = served
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        entry.count += 1;
        entry.seconds += seconds;
    }

    fn snapshot(&self) -> Vec<((String, String, u16), Served)> {
        let served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        served.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Middleware: counts every request by its route template (never the raw
/// path, so ids do not explode the label set; unmatched paths are "unmatched").
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A fixed set: a client inventing methods must not grow the label set.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    metrics::histogram!("longhaul_http_request_duration_seconds",
        "method" => method.clone(), "route" => route.clone())
    .record(seconds);
    state
        .http_metrics
        .record(&method, &route, response.status().as_u16(), seconds);
    response
}

/// Prometheus metrics: queue depth, lag and running jobs per queue and kind;
/// requests and their time by method, route template and status.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "metrics",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The Prometheus text format",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        LockedOut,
    )
)]
async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.operator()?;
    // Due-ness is the claim's (the database host's clock), not the API's
    // clock (which tests set by hand).
    let now = chrono::Utc::now();
    let mut text = queue_gauges(&state.stores.queue_gauges(now).await?, now);
    let served = state.http_metrics.snapshot();
    let _ = writeln!(
        text,
        "# HELP longhaul_http_requests_total Requests served.\n# TYPE longhaul_http_requests_total counter"
    );
    for ((method, route, status), s) in &served {
        let _ = writeln!(
            text,
            "longhaul_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
            s.count
        );
    }
    let _ = writeln!(
        text,
        "# HELP longhaul_http_request_seconds_total Time spent serving requests.\n# TYPE longhaul_http_request_seconds_total counter"
    );
    for ((method, route, status), s) in &served {
        let _ = writeln!(
            text,
            "longhaul_http_request_seconds_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {:.6}",
            s.seconds
        );
    }
    // What the process recorded through the `metrics` facade (job
    // attempts, run and wait times, rescues, fencing refusals, fire lag,
    // request latency), when the binary installed the recorder.
    if let Some(recorder) = &state.metrics {
        text.push_str(&recorder.render());
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// A label value as Prometheus text wants it (`\`, `"` and newlines escaped).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The queue gauges, per queue and per queue and kind.
fn queue_gauges(gauges: &[QueueGauge], now: chrono::DateTime<chrono::Utc>) -> String {
    // The kinds of each queue summed (`kind` left empty).
    let mut per_queue: BTreeMap<&str, QueueGauge> = BTreeMap::new();
    for g in gauges {
        let entry = per_queue.entry(&g.queue).or_insert_with(|| QueueGauge {
            queue: g.queue.clone(),
            kind: String::new(),
            due: 0,
            scheduled: 0,
            oldest_due_at: None,
            running: 0,
        });
        entry.due += g.due;
        entry.scheduled += g.scheduled;
        entry.running += g.running;
        entry.oldest_due_at = match (entry.oldest_due_at, g.oldest_due_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let age = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1000.0
        })
    };
    let mut text = String::new();
    for (name, help, value) in [
        (
            "longhaul_queue_depth",
            "Jobs queued and due now, per queue.",
            0,
        ),
        (
            "longhaul_queue_scheduled",
            "Jobs queued for later, per queue.",
            1,
        ),
        ("longhaul_queue_running", "Jobs running, per queue.", 2),
    ] {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (queue, v) in &per_queue {
            let n = [v.due, v.scheduled, v.running][value];
            let _ = writeln!(text, "{name}{{queue=\"{}\"}} {n}", label(queue));
        }
    }
    let _ = writeln!(
        text,
        "# HELP longhaul_queue_oldest_age_seconds How long the oldest due job of the queue has waited (0 when none is due).\n# TYPE longhaul_queue_oldest_age_seconds gauge"
    );
    for (queue, v) in &per_queue {
        let _ = writeln!(
            text,
            "longhaul_queue_oldest_age_seconds{{queue=\"{}\"}} {:.3}",
            label(queue),
            age(v.oldest_due_at)
        );
    }
    for (name, help, value) in [
        (
            "longhaul_queue_depth_by_kind",
            "Jobs queued and due now, per queue and kind.",
            0,
        ),
        (
            "longhaul_queue_running_by_kind",
            "Jobs running, per queue and kind.",
            1,
        ),
    ] {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for g in gauges {
            let n = [g.due, g.running][value];
            let _ = writeln!(
                text,
                "{name}{{queue=\"{}\",kind=\"{}\"}} {n}",
                label(&g.queue),
                label(&g.kind)
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP longhaul_queue_oldest_age_seconds_by_kind How long the oldest due job of the queue and kind has waited.\n# TYPE longhaul_queue_oldest_age_seconds_by_kind gauge"
    );
    for g in gauges {
        let _ = writeln!(
            text,
            "longhaul_queue_oldest_age_seconds_by_kind{{queue=\"{}\",kind=\"{}\"}} {:.3}",
            label(&g.queue),
            label(&g.kind),
            age(g.oldest_due_at)
        );
    }
    text
}
