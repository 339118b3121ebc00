//! `/v1/tenants` (operator keys only): create, read, list, update, suspend
//! with a reason, resume.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use longhaul_core::tenancy::{NewTenant, Quotas, Tenant, TenantPatch, TenantStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::{BodyRejected, LockedOut, TooLarge, Unauthorized};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update))
        .routes(routes!(suspend))
        .routes(routes!(resume))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTenant {
    /// 1 to 200 characters, no control characters.
    #[schema(example = "acme", min_length = 1, max_length = 200)]
    name: String,
    /// Where the tenant's data lives; default `us`.
    #[serde(default = "default_region")]
    #[schema(example = "eu", max_length = 64, pattern = r"^[a-z]{2}(-[a-z0-9]+)*$")]
    region: String,
    /// Default `standard`.
    #[serde(default = "default_plan")]
    #[schema(min_length = 1, max_length = 64)]
    plan: String,
    /// Default: no quotas of its own.
    #[serde(default)]
    quotas: Quotas,
    /// A JSON object, e.g. `{"auditLogRetentionDays": 365}`; default `{}`.
    #[serde(default = "empty_object")]
    settings: Value,
}

fn default_region() -> String {
    "us".into()
}

fn default_plan() -> String {
    "standard".into()
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Each field given replaces the stored value whole (`quotas` all four
/// quotas), except `settings`, which is merged into the stored settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateTenant {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(max_length = 64, pattern = r"^[a-z]{2}(-[a-z0-9]+)*$")]
    region: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    plan: Option<String>,
    quotas: Option<Quotas>,
    /// A JSON Merge Patch (RFC 7396) of the settings: the keys given change
    /// (objects such as `dataBuckets` merge key by key), `null` removes a
    /// key, the others stay; the result is validated whole.
    #[schema(example = json!({"dataBuckets": {"reports": "acme-reports"}, "gitOwners": null}))]
    settings: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SuspendTenant)]
struct Suspend {
    /// 1 to 500 characters; shown to the tenant's callers.
    #[schema(example = "unpaid invoice", min_length = 1, max_length = 500)]
    reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Page {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// One page of tenants, by id.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct TenantPage {
    data: Vec<Tenant>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

pub const MAX_PAGE: u32 = 200;
pub const DEFAULT_PAGE: u32 = 50;

/// Create a tenant.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    operation_id = "createTenant",
    tag = "tenants",
    security(("bearer" = [])),
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = Tenant,
            headers(("Location" = String, description = "`/v1/tenants/{id}`"))),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        TooLarge,
        (status = 422, description = "`validation_error`: a field is invalid (`details.field`)",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<Response, ApiError> {
    caller.operator()?;
    let tenant = state
        .stores
        .create_tenant(
            NewTenant {
                name: body.name,
                region: body.region,
                plan: body.plan,
                quotas: body.quotas,
                settings: body.settings,
            },
            &caller.actor(),
        )
        .await?;
    let mut response = (StatusCode::CREATED, Json(&tenant)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/tenants/{}", tenant.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// List tenants.
#[utoipa::path(
    get,
    path = "/v1/tenants",
    operation_id = "listTenants",
    tag = "tenants",
    security(("bearer" = [])),
    params(Page),
    responses(
        (status = 200, description = "One page of tenants", body = TenantPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        (status = 422, description = "`validation_error`: `limit` out of range", body = ErrorBody),
        LockedOut,
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<TenantPage>, ApiError> {
    caller.operator()?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(
            "limit",
            format!("must be from 1 to {MAX_PAGE}"),
        ));
    }
    let mut data = state
        .stores
        .list_tenants(page.cursor.as_deref(), limit + 1)
        .await?;
    let next_cursor = crate::routes::trim_page(&mut data, limit).map(|t| t.id.clone());
    Ok(Json(TenantPage { data, next_cursor }))
}

/// Read a tenant.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}",
    operation_id = "getTenant",
    tag = "tenants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The tenant id", example = "tnt_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
        LockedOut,
    )
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Tenant>, ApiError> {
    caller.operator()?;
    Ok(Json(state.stores.get_tenant(&id).await?))
}

/// Update a tenant's name, region, plan, quotas or settings (`settings`
/// merged as a JSON Merge Patch: `null` removes a key).
#[utoipa::path(
    patch,
    path = "/v1/tenants/{id}",
    operation_id = "updateTenant",
    tag = "tenants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The tenant id", example = "tnt_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    request_body = UpdateTenant,
    responses(
        (status = 200, description = "The updated tenant", body = Tenant),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
        TooLarge,
        (status = 422, description = "`validation_error`: a field is invalid (`details.field`)",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> Result<Json<Tenant>, ApiError> {
    caller.operator()?;
    let patch = TenantPatch {
        name: body.name,
        region: body.region,
        plan: body.plan,
        quotas: body.quotas,
        settings: body.settings,
    };
    let tenant = state
        .stores
        .update_tenant(&id, patch, &caller.actor())
        .await?;
    state.forget_tenant_keys(&id);
    Ok(Json(tenant))
}

/// Suspend a tenant: its keys may still read, but not start work.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/suspend",
    operation_id = "suspendTenant",
    tag = "tenants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The tenant id", example = "tnt_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    request_body = Suspend,
    responses(
        (status = 200, description = "The suspended tenant", body = Tenant),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
        TooLarge,
        (status = 422, description = "`validation_error`: `reason` is empty or over 500 characters",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Suspend>,
) -> Result<Json<Tenant>, ApiError> {
    caller.operator()?;
    let reason = body.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::validation("reason", "must be 1-500 characters"));
    }
    let tenant = state
        .stores
        .set_tenant_status(&id, TenantStatus::Suspended, Some(reason), &caller.actor())
        .await?;
    state.forget_tenant_keys(&id);
    Ok(Json(tenant))
}

/// Resume a suspended tenant.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/resume",
    operation_id = "resumeTenant",
    tag = "tenants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The tenant id", example = "tnt_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 200, description = "The active tenant", body = Tenant),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an operator key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such tenant", body = ErrorBody),
        LockedOut,
    )
)]
async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Tenant>, ApiError> {
    caller.operator()?;
    let tenant = state
        .stores
        .set_tenant_status(&id, TenantStatus::Active, None, &caller.actor())
        .await?;
    state.forget_tenant_keys(&id);
    Ok(Json(tenant))
}
