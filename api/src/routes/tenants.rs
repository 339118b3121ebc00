//! `/v1/tenants` (operator keys only): create, read, list, update, suspend
//! with a reason, resume.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use longhaul_core::tenancy::{NewTenant, Quotas, Tenant, TenantPatch, TenantStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create).get(list))
        .route("/v1/tenants/{id}", get(read).patch(update))
        .route("/v1/tenants/{id}/suspend", post(suspend))
        .route("/v1/tenants/{id}/resume", post(resume))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTenant {
    name: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default = "default_plan")]
    plan: String,
    #[serde(default)]
    quotas: Quotas,
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateTenant {
    name: Option<String>,
    region: Option<String>,
    plan: Option<String>,
    quotas: Option<Quotas>,
    settings: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suspend {
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Page {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantPage {
    data: Vec<Tenant>,
    next_cursor: Option<String>,
}

pub const MAX_PAGE: u32 = 200;
pub const DEFAULT_PAGE: u32 = 50;

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
    let next_cursor = if data.len() > limit as usize {
        data.truncate(limit as usize);
        data.last().map(|t| t.id.clone())
    } else {
        None
    };
    Ok(Json(TenantPage { data, next_cursor }))
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Tenant>, ApiError> {
    caller.operator()?;
    Ok(Json(state.stores.get_tenant(&id).await?))
}

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
    Ok(Json(
        state
            .stores
            .update_tenant(&id, patch, &caller.actor())
            .await?,
    ))
}

async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Suspend>,
) -> Result<Json<Tenant>, ApiError> {
    caller.operator()?;
    let reason = body.reason.trim().to_string();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::validation("reason", "must be 1-500 characters"));
    }
    Ok(Json(
        state
            .stores
            .set_tenant_status(&id, TenantStatus::Suspended, Some(reason), &caller.actor())
            .await?,
    ))
}

async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Tenant>, ApiError> {
    caller.operator()?;
    Ok(Json(
        state
            .stores
            .set_tenant_status(&id, TenantStatus::Active, None, &caller.actor())
            .await?,
    ))
}
