//! `/healthz` (the process answers) and `/readyz` (the database answers).
//! Neither takes a key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, DATABASE_UNAVAILABLE_RETRY_AFTER_SECS};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses(
        (status = 200, description = "The process is up: `{\"status\": \"ok\"}`",
            body = HealthStatus),
    )
)]
async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(
        (status = 200, description = "The database is reachable: `{\"status\": \"ready\"}`",
            body = HealthStatus),
        (status = 503, description = "`not_ready`: the database is not reachable \
            (`Retry-After` in seconds)", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<HealthStatus>, ApiError> {
    match state.stores.ping().await {
        Ok(()) => Ok(Json(HealthStatus { status: "ready" })),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            let mut not_ready = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database is not reachable",
            );
            not_ready.retry_after = Some(DATABASE_UNAVAILABLE_RETRY_AFTER_SECS);
            Err(not_ready)
        }
    }
}
