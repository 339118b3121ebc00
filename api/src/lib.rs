//! longhaul-api: the HTTP API (axum). Routes under `/v1/…` in `routes/`, one
//! module per resource; authentication in `auth.rs`; every error in the one
//! shape of `error.rs`; a request id on every response and log line. The API
//! never runs a job: it validates and stores work through core's `JobClient`.
//! The OpenAPI document is generated from the handlers (`openapi.rs`).

pub mod auth;
pub mod cache;
pub mod clock;
mod dashboard;
pub mod error;
pub mod extract;
pub mod job_event_hub;
pub mod job_event_relay;
pub mod limits;
pub mod lockout;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod state;
pub mod stream_slots;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use limits::MAX_BODY_BYTES;
pub use server::{serve_on, ServeOptions};
pub use state::AppState;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every documented route, with the OpenAPI document they make.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::health::routes())
        .merge(routes::jobs::routes())
        .merge(routes::events::routes())
        .merge(routes::tenants::routes())
        .merge(routes::keys::routes())
        .merge(metrics::routes())
        .merge(routes::usage::routes())
        .merge(routes::audit::routes())
        .merge(routes::exports::routes())
        .merge(routes::artifacts::routes())
        .merge(routes::scan_policies::routes())
        .merge(routes::leakage::routes())
        .merge(routes::classification::routes())
        .merge(routes::retention::routes())
        .merge(routes::workers::routes())
        .merge(routes::queues::routes())
        .merge(routes::webhooks::routes())
        .merge(routes::schedules::routes())
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let (api, spec) = documented_routes().split_for_parts();
    api.merge(openapi::routes(&spec))
        .merge(dashboard::routes())
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(limits::enforce))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                // A download token is a credential: logged as the route, not the path.
                let path = request.uri().path();
                let path = if path.starts_with("/v1/artifacts/") {
                    "/v1/artifacts/{token}"
                } else {
                    path
                };
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %path,
                    request_id,
                    tenant_id = tracing::field::Empty,
                    job_id = tracing::field::Empty,
                    kind = tracing::field::Empty
                )
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(
            request_id::keep_only_acceptable,
        ))
        .with_state(state)
}

/// Binds the API's listener; the error names the address (a taken port
/// says which one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| std::io::Error::new(error.kind(), format!("binding {addr}: {error}")))
}

/// Serves the API on `addr` until `shutdown` resolves, within `options`'
/// connection limits.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_listener(bind(addr).await?, state, options, shutdown).await
}

/// Serves the API on a bound listener until `shutdown` resolves (bind
/// first, so a process reports a taken port before it announces anything).
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    state: AppState,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            %addr,
            max_connections = options.max_connections,
            header_read_timeout = ?options.header_read_timeout,
            idle_timeout = ?options.idle_timeout,
            "API listening"
        );
    }
    serve_on(listener, router(state), options, shutdown).await
}
