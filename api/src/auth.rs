//! Who is calling: `Authorization: Bearer lh_live_…` resolved to an API key,
//! its role and (for tenant keys) its tenant. Roles rank
//! `viewer < developer < admin` within a tenant; `operator` keys span tenants.
//! A suspended tenant's keys may read but not start work.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use longhaul_core::tenancy::{ApiKey, Role, Tenant, TenantStatus};

use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
    pub tenant: Option<Tenant>,
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
        match state.stores.authenticate(token, state.clock.now()).await? {
            Some((key, tenant)) => Ok(Caller { key, tenant }),
            None => Err(ApiError::unauthorized(
                "the API key is not valid (unknown, revoked or expired)",
            )),
        }
    }
}

impl Caller {
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
