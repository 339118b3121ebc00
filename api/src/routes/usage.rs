//! `/v1/usage` (a tenant's key) and `/v1/tenants/{id}/usage` (operator
//! keys): a tenant's billable operations per job kind in one calendar month
//! (UTC). One operation per job accepted by `POST /v1/jobs` (idempotent
//! replays and refused requests are free), metered in the same transaction as
//! the job.

use axum::extract::State;
use axum::Json;
use longhaul_core::tenancy::Role;
use longhaul_core::usage::{KindUsage, Period};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::{LockedOut, Unauthorized};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(usage))
        .routes(routes!(tenant_usage))
}

/// `GET /v1/usage?period=YYYY-MM` (default: the current month).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// A calendar month (UTC), `YYYY-MM`; default the current one.
    #[param(example = "2025-01", pattern = r"^\d{4}-\d{2}$")]
    pub period: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Usage)]
pub struct UsageView {
    /// The calendar month (UTC), `YYYY-MM`.
    #[schema(value_type = String, example = "2025-01", pattern = r"^\d{4}-\d{2}$")]
    pub period: Period,
    /// Per kind, sorted by kind; kinds without operations are absent.
    pub data: Vec<KindUsage>,
    /// All operations of the period.
    pub total: i64,
}

/// The tenant's billable operations per job kind in one month.
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "getUsage",
    tag = "usage",
    security(("bearer" = [])),
    params(UsageQuery),
    responses(
        (status = 200, description = "Operations per kind and in total", body = UsageView),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a tenant key", body = ErrorBody),
        (status = 422, description = "`validation_error`: `period` is not `YYYY-MM`",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageView>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    usage_of(&state, &tenant.id, &query).await
}

/// A tenant's billable operations per job kind in one month (operators).
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/usage",
    operation_id = "getTenantUsage",
    tag = "tenants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The tenant id"), UsageQuery),
    responses(
        (status = 200, description = "Operations per kind and in total", body = UsageView),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
        (status = 422, description = "`validation_error`: `period` is not `YYYY-MM`",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn tenant_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageView>, ApiError> {
    caller.operator()?;
    let tenant = state.stores.get_tenant(&id).await?;
    usage_of(&state, &tenant.id, &query).await
}

async fn usage_of(
    state: &AppState,
    tenant_id: &str,
    query: &UsageQuery,
) -> Result<Json<UsageView>, ApiError> {
    let period = match query.period.as_deref() {
        None => Period::of(state.clock.now()),
        Some(text) => text.parse()?,
    };
    let data = state.jobs.usage(tenant_id, period).await?;
    let total = data.iter().map(|usage| usage.operations).sum();
    Ok(Json(UsageView {
        period,
        data,
        total,
    }))
}
