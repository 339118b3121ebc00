//! `/v1/api-keys`: a tenant's admins issue, list, rotate (the old key keeps
//! working for a 24 h grace period) and revoke (at once) its keys. The secret
//! is in the answer of issue and rotate only.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use longhaul_core::tenancy::{ApiKey, IssuedKey, KeyMode, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::{BodyRejected, LockedOut, TooLarge, Unauthorized};
use crate::state::AppState;

/// How long a rotated key keeps working.
pub const ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue, list))
        .routes(routes!(rotate))
        .routes(routes!(revoke))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssueKey {
    /// 1 to 200 characters, no control characters.
    #[schema(example = "ci", min_length = 1, max_length = 200)]
    name: String,
    /// `viewer`, `developer` or `admin` (`operator` is refused).
    role: Role,
    /// Default `live`.
    #[serde(default = "live")]
    mode: KeyMode,
}

fn live() -> KeyMode {
    KeyMode::Live
}

/// An issued key: its record plus the secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = IssuedApiKey)]
struct IssuedKeyView {
    #[serde(flatten)]
    key: ApiKey,
    /// The whole token for `Authorization: Bearer`; never shown again.
    #[schema(example = "lh_live_abcdefghijkl_…")]
    secret: String,
}

impl From<IssuedKey> for IssuedKeyView {
    fn from(issued: IssuedKey) -> Self {
        IssuedKeyView {
            key: issued.key,
            secret: issued.secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ApiKeyList)]
struct KeyList {
    data: Vec<ApiKey>,
}

/// Issue a key for the caller's tenant.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    operation_id = "issueApiKey",
    tag = "api-keys",
    security(("bearer" = [])),
    request_body = IssueKey,
    responses(
        (status = 201, description = "The key and its secret (shown once)", body = IssuedKeyView),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        TooLarge,
        (status = 422, description = "`validation_error`: a bad name, role or mode (`details.field`)",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<IssueKey>,
) -> Result<(StatusCode, Json<IssuedKeyView>), ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    if body.role == Role::Operator {
        return Err(ApiError::validation(
            "role",
            "tenant keys are viewer, developer or admin",
        ));
    }
    let issued = state
        .stores
        .issue_api_key(
            Some(&tenant.id),
            &body.name,
            body.role,
            body.mode,
            &caller.actor(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued.into())))
}

/// List the tenant's keys (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "listApiKeys",
    tag = "api-keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every key of the tenant", body = KeyList),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        LockedOut,
    )
)]
async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<KeyList>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    Ok(Json(KeyList {
        data: state.stores.list_api_keys(&tenant.id).await?,
    }))
}

/// Rotate a key: a new key is issued and the old one keeps working for 24 h.
#[utoipa::path(
    post,
    path = "/v1/api-keys/{id}/rotate",
    operation_id = "rotateApiKey",
    tag = "api-keys",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The key id", example = "key_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 201, description = "The successor key and its secret (shown once)",
            body = IssuedKeyView),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such key in the caller's tenant",
            body = ErrorBody),
        (status = 409, description = "`conflict`: the key is revoked or was already rotated",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<IssuedKeyView>), ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let issued = state
        .stores
        .rotate_api_key(
            &tenant.id,
            &id,
            state.clock.now(),
            ROTATION_GRACE,
            &caller.actor(),
        )
        .await?;
    state.forget_key(&id);
    Ok((StatusCode::CREATED, Json(issued.into())))
}

/// Revoke a key at once (revoking again changes nothing).
#[utoipa::path(
    post,
    path = "/v1/api-keys/{id}/revoke",
    operation_id = "revokeApiKey",
    tag = "api-keys",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The key id", example = "key_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 200, description = "The revoked key", body = ApiKey),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such key in the caller's tenant",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApiKey>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let key = state
        .stores
        .revoke_api_key(&tenant.id, &id, state.clock.now(), &caller.actor())
        .await?;
    // At once in this process; other replicas within their auth cache TTL.
    state.forget_key(&id);
    Ok(Json(key))
}
