//! `GET /metrics` in the Prometheus text format (operator keys: the figures
//! span tenants): jobs per state from the store, and per route the requests
//! served by status and their total duration, recorded by a middleware.

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
    state.http_metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Prometheus metrics: jobs by state, requests and their time by method,
/// route template and status.
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
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# HELP longhaul_jobs Jobs by state.\n# TYPE longhaul_jobs gauge"
    );
    let counts = state.stores.count_by_state().await?;
    for state_name in longhaul_core::JobState::ALL {
        let n = counts
            .iter()
            .find(|(s, _)| *s == state_name)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(text, "longhaul_jobs{{state=\"{state_name}\"}} {n}");
    }
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
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
