//! `/v1/api-keys`: a tenant's admins issue, list, rotate (the old key keeps
//! working for a 24 h grace period) and revoke (at once) its keys. The secret
//! is in the answer of issue and rotate only.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use longhaul_core::tenancy::{ApiKey, IssuedKey, KeyMode, Role};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// How long a rotated key keeps working.
pub const ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/api-keys", post(issue).get(list))
        .route("/v1/api-keys/{id}/rotate", post(rotate))
        .route("/v1/api-keys/{id}/revoke", post(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssueKey {
    name: String,
    role: Role,
    #[serde(default = "live")]
    mode: KeyMode,
}

fn live() -> KeyMode {
    KeyMode::Live
}

/// An issued key: its record plus the secret, shown this once.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IssuedKeyView {
    #[serde(flatten)]
    key: ApiKey,
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

#[derive(Debug, Serialize)]
struct KeyList {
    data: Vec<ApiKey>,
}

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

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<KeyList>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    Ok(Json(KeyList {
        data: state.stores.list_api_keys(&tenant.id).await?,
    }))
}

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
    Ok((StatusCode::CREATED, Json(issued.into())))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApiKey>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    Ok(Json(
        state
            .stores
            .revoke_api_key(&tenant.id, &id, state.clock.now(), &caller.actor())
            .await?,
    ))
}
