//! Who is calling: `Authorization: Bearer lh_live_…` resolved to an API key,
//! its role and (for tenant keys) its tenant. Roles rank
//! `viewer < developer < admin` within a tenant; `operator` keys span tenants.
//! A suspended tenant's keys may read but not start work. Failed
//! authentications count towards a brute-force lockout (`lockout.rs`) per key
//! prefix and client IP; a locked prefix or IP is refused before the key is
//! even looked at.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use longhaul_core::audit::{Actor, ActorKind};
use longhaul_core::tenancy::{hash_token, parse_token, ApiKey, Role, Tenant, TenantStatus};
use serde_json::json;

use crate::error::ApiError;
use crate::lockout::{self, LockKey};
use crate::state::AppState;

/// An authenticated caller, and where the call came from (for the audit log).
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
    pub tenant: Option<Tenant>,
    pub ip: String,
    pub request_id: Option<String>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("send an API key as Authorization: Bearer lh_live_…")
            })?;
        let ip = client_ip(parts, state.trust_forwarded_for);
        let keys = lock_keys(token, &ip);
        let now = state.clock.now();
        let locked = state.lockout.check(&keys, now).await.map_err(|error| {
            tracing::error!(%error, "brute-force lockout check failed");
            ApiError::internal()
        })?;
        if let Some(remaining) = locked {
            return Err(locked_out(remaining));
        }
        let request_id = parts
            .headers
            .get(crate::REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        // A cached key is checked for expiry (rotation grace) on every use.
        let digest = hash_token(token);
        if let Some((key, tenant)) = state.auth_cache.get(&digest, now) {
            if key.is_valid_at(now) {
                record_tenant(tenant.as_ref().map(|t| t.id.as_str()));
                return Ok(Caller {
                    key,
                    tenant,
                    ip,
                    request_id,
                });
            }
        }
        match state.stores.authenticate(token, now).await? {
            Some((key, tenant)) => {
                state
                    .auth_cache
                    .insert(digest, (key.clone(), tenant.clone()), now);
                record_tenant(tenant.as_ref().map(|t| t.id.as_str()));
                Ok(Caller {
                    key,
                    tenant,
                    ip,
                    request_id,
                })
            }
            None => {
                match state.lockout.record_failure(&keys, now).await {
                    Ok(Some(_)) => {
                        tracing::warn!(keys = ?keys, "brute-force lockout: too many failed authentications")
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, "brute-force lockout: failure not recorded")
                    }
                }
                Err(ApiError::unauthorized(
                    "the API key is not valid (unknown, revoked or expired)",
                ))
            }
        }
    }
}

/// The request's span (`lib.rs`) names the caller's tenant, so its log
/// lines and exported spans carry `tenant_id` as the worker's job spans do.
fn record_tenant(tenant_id: Option<&str>) {
    if let Some(tenant_id) = tenant_id {
        tracing::Span::current().record("tenant_id", tenant_id);
    }
}

fn locked_out(remaining: std::time::Duration) -> ApiError {
    let seconds = lockout::retry_after_secs(remaining);
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "brute_force_lockout",
        format!("too many failed authentications; try again in {seconds} s"),
    )
    .with_details(json!({ "retryAfterSeconds": seconds }));
    error.retry_after = Some(seconds);
    error
}

/// What a request's failures count against: the key prefix when the token is
/// well formed (a malformed token counts only against the IP), and the IP.
pub fn lock_keys(token: &str, ip: &str) -> Vec<LockKey> {
    let mut keys = Vec::with_capacity(2);
    if let Some((_, prefix)) = parse_token(token) {
        keys.push(LockKey::Prefix(prefix.to_string()));
    }
    keys.push(LockKey::Ip(ip.to_string()));
    keys
}

/// The client's IP: the first `X-Forwarded-For` entry when the API is behind a
/// trusted proxy (which must set that header itself), else the peer address of
/// the connection, else `unknown` (in-process calls).
pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for {
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok());
        if let Some(ip) = forwarded {
            return ip.to_string();
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

impl Caller {
    /// Who makes the changes of this call, as the audit log records them.
    pub fn actor(&self) -> Actor {
        Actor {
            kind: if self.tenant.is_some() {
                ActorKind::ApiKey
            } else {
                ActorKind::OperatorKey
            },
            key_id: Some(self.key.id.clone()),
            ip: Some(self.ip.clone()),
            request_id: self.request_id.clone(),
        }
    }

    /// The caller's tenant, for endpoints that act within one tenant.
    pub fn tenant(&self) -> Result<&Tenant, ApiError> {
        self.tenant.as_ref().ok_or_else(|| {
            ApiError::forbidden("this endpoint takes a tenant key; operator keys manage tenants")
        })
    }

    /// A tenant key with at least `role`.
    pub fn tenant_role(&self, role: Role) -> Result<&Tenant, ApiError> {
        let tenant = self.tenant()?;
        if self.key.role < role {
            return Err(ApiError::forbidden(format!(
                "this needs the {} role; the key has {}",
                role.as_str(),
                self.key.role.as_str()
            )));
        }
        Ok(tenant)
    }

    /// A tenant key with at least `role` whose tenant may start work.
    pub fn tenant_writer(&self, role: Role) -> Result<&Tenant, ApiError> {
        let tenant = self.tenant_role(role)?;
        if tenant.status == TenantStatus::Suspended {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_suspended",
                format!(
                    "the tenant is suspended{}",
                    tenant
                        .suspended_reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(tenant)
    }

    /// An operator key.
    pub fn operator(&self) -> Result<(), ApiError> {
        if self.key.role == Role::Operator && self.tenant.is_none() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this endpoint takes an operator key"))
        }
    }
}
