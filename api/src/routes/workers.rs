//! `GET /v1/workers` (operator keys): the worker pools, live and recently
//! gone or stopped, as they registered and last heartbeated.

use axum::extract::State;
use axum::Json;
use longhaul_core::workers::WorkerRecord;
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

/// The worker pools.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerList {
    pub data: Vec<WorkerRecord>,
}

/// Worker pools: live ones (heartbeating), and those gone (silent for 30 s)
/// or stopped within the last hour, by id.
#[utoipa::path(
    get,
    path = "/v1/workers",
    operation_id = "listWorkers",
    tag = "workers",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The pools", body = WorkerList),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        LockedOut,
    )
)]
async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<WorkerList>, ApiError> {
    caller.operator()?;
    let data = state.stores.list_workers(state.clock.now()).await?;
    Ok(Json(WorkerList { data }))
}
