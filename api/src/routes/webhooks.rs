//! `/v1/webhooks/…`: a tenant's webhook endpoints (admin keys), their
//! signing secrets (shown on creation and rotation only), test sends and
//! delivery logs. Deliveries are `webhook.deliver` jobs (`whd_<hex>` =
//! `job_<hex>`) queued by the scheduler's dispatcher when jobs end;
//! docs/WEBHOOKS.md says how receivers verify them.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::tenancy::Role;
use longhaul_core::webhooks::deliver::event_body;
use longhaul_core::webhooks::{
    delivery_id, new_secret, parse_delivery_id, parse_webhook_id, DeliveryParams, DeliveryRecord,
    NewWebhook, Webhook, WebhookDelivery, WebhookEvent, WebhookPatch,
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::{BodyRejected, LockedOut, TooLarge, Unauthorized};
use crate::routes::jobs::{accepted, admit};
use crate::routes::retention::IdPage;
use crate::routes::scan_policies::page_limit;
use crate::routes::trim_page;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, patch_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(test_webhook))
        .routes(routes!(list_deliveries))
}

/// An endpoint with its signing secret: the only answers that show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_…`: keep it; it is not shown again.
    pub secret: String,
}

/// One page of endpoints, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPage {
    pub data: Vec<Webhook>,
    pub next_cursor: Option<String>,
}

/// One page of an endpoint's deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    pub data: Vec<DeliveryRecord>,
    pub next_cursor: Option<String>,
}

/// A test delivery queued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestDelivery {
    /// `whd_…`: find it in `GET /v1/webhooks/{id}/deliveries`.
    pub delivery_id: String,
    pub event_id: String,
    /// `pending` until the worker has tried.
    pub status: String,
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("webhook {id} not found"))
}

fn webhook_uuid(id: &str) -> Result<Uuid, ApiError> {
    parse_webhook_id(id).map_err(|_| not_found(id))
}

fn map_error(id: &str) -> impl Fn(longhaul_core::Error) -> ApiError + '_ {
    move |error| match error {
        longhaul_core::Error::NoSuchResource { .. } => not_found(id),
        other => other.into(),
    }
}

fn bad_cursor() -> ApiError {
    ApiError::validation("cursor", "is not a cursor this API returned")
}

/// Register an endpoint.
///
/// The answer holds the signing secret (`whsec_…`), shown this once.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    operation_id = "createWebhook",
    tag = "webhooks",
    security(("bearer" = [])),
    request_body = NewWebhook,
    responses(
        (status = 201, description = "Created, with its secret", body = WebhookWithSecret),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad URL or event list", body = ErrorBody),
        (status = 429, description = "`quota_exceeded`: 20 endpoints (nothing written) or \
            `brute_force_lockout`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewWebhook>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let checked = body.check()?;
    let secret = new_secret()?;
    let webhook = state
        .stores
        .create_webhook(
            &tenant.id,
            &checked,
            &secret,
            state.clock.now(),
            &caller.actor(),
        )
        .await?;
    let location = format!("/v1/webhooks/{}", webhook.webhook_id);
    let mut response = (
        StatusCode::CREATED,
        Json(WebhookWithSecret { webhook, secret }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// List the tenant's endpoints, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    operation_id = "listWebhooks",
    tag = "webhooks",
    security(("bearer" = [])),
    params(IdPage),
    responses(
        (status = 200, description = "One page", body = WebhookPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<IdPage>,
) -> Result<Json<WebhookPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let limit = page_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| parse_webhook_id(c).map_err(|_| bad_cursor()))
        .transpose()?;
    let mut data = state
        .stores
        .list_webhooks(&tenant.id, after, limit + 1)
        .await?;
    let next_cursor = trim_page(&mut data, limit).map(|w| w.webhook_id.clone());
    Ok(Json(WebhookPage { data, next_cursor }))
}

/// An endpoint (without its secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    operation_id = "getWebhook",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`wh_…`")),
    responses(
        (status = 200, description = "The endpoint", body = Webhook),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Webhook>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let endpoint = state
        .stores
        .get_webhook(&tenant.id, webhook_uuid(&id)?)
        .await
        .map_err(map_error(&id))?;
    Ok(Json(endpoint.webhook))
}

/// Change an endpoint's URL, events, description or `enabled`.
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    operation_id = "updateWebhook",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`wh_…`")),
    request_body = WebhookPatch,
    responses(
        (status = 200, description = "The endpoint as changed", body = Webhook),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_error`", body = ErrorBody),
        LockedOut,
    )
)]
async fn patch_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<WebhookPatch>,
) -> Result<Json<Webhook>, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let uuid = webhook_uuid(&id)?;
    if patch.is_empty() {
        return Err(ApiError::validation(
            "body",
            "name at least one field to change",
        ));
    }
    let webhook = state
        .stores
        .update_webhook(&tenant.id, uuid, &patch, state.clock.now(), &caller.actor())
        .await
        .map_err(map_error(&id))?;
    Ok(Json(webhook))
}

/// Delete an endpoint and its delivery log (queued deliveries then fail).
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    operation_id = "deleteWebhook",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`wh_…`")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    state
        .stores
        .delete_webhook(
            &tenant.id,
            webhook_uuid(&id)?,
            state.clock.now(),
            &caller.actor(),
        )
        .await
        .map_err(map_error(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace an endpoint's signing secret: attempts from now on are signed
/// with the new one, shown in this answer only.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate-secret",
    operation_id = "rotateWebhookSecret",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`wh_…`")),
    responses(
        (status = 200, description = "The endpoint with its new secret", body = WebhookWithSecret),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookWithSecret>, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let secret = new_secret()?;
    let webhook = state
        .stores
        .rotate_webhook_secret(
            &tenant.id,
            webhook_uuid(&id)?,
            &secret,
            state.clock.now(),
            &caller.actor(),
        )
        .await
        .map_err(map_error(&id))?;
    Ok(Json(WebhookWithSecret { webhook, secret }))
}

/// Send a `webhook.test` event to the endpoint (a delivery like any other:
/// signed, retried, logged).
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/test",
    operation_id = "testWebhook",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`wh_…`")),
    responses(
        (status = 202, description = "Queued", body = TestDelivery),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 429, description = "`rate_limited` or `brute_force_lockout`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn test_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let endpoint = state
        .stores
        .get_webhook(&tenant.id, webhook_uuid(&id)?)
        .await
        .map_err(map_error(&id))?;
    let event_id = format!("evt_test_{}", Uuid::now_v7().simple());
    let params = DeliveryParams {
        webhook_id: endpoint.webhook.webhook_id.clone(),
        event: WebhookEvent::Test,
        body: event_body(
            &event_id,
            WebhookEvent::Test,
            Utc::now(),
            &tenant.id,
            json!({ "webhookId": endpoint.webhook.webhook_id }),
        ),
        event_id: event_id.clone(),
    };
    let request = EnqueueRequest::of::<WebhookDelivery>(tenant.id.clone(), &params)?;
    let (job, _) = admit(&state, &caller, tenant, request).await?;
    let location = format!("/v1/webhooks/{id}/deliveries");
    Ok(accepted(
        TestDelivery {
            delivery_id: delivery_id(job.id),
            event_id,
            status: "pending".into(),
        },
        &location,
        true,
    ))
}

/// An endpoint's deliveries, newest first, as of their last attempt.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    operation_id = "listWebhookDeliveries",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`wh_…`"), IdPage),
    responses(
        (status = 200, description = "One page", body = DeliveryPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<IdPage>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let limit = page_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| parse_delivery_id(c).map_err(|_| bad_cursor()))
        .transpose()?;
    let mut data = state
        .stores
        .list_webhook_deliveries(&tenant.id, webhook_uuid(&id)?, after, limit + 1)
        .await
        .map_err(map_error(&id))?;
    let next_cursor = trim_page(&mut data, limit).map(|d| d.delivery_id.clone());
    Ok(Json(DeliveryPage { data, next_cursor }))
}
