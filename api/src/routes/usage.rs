//! `/v1/usage`: a tenant's billable operations per job kind in one calendar
//! month (UTC). One operation per job accepted by `POST /v1/jobs` (idempotent
//! replays and refused requests are free), metered in the same transaction as
//! the job.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use longhaul_core::tenancy::Role;
use longhaul_core::usage::{KindUsage, Period};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/usage", get(usage))
}

/// `GET /v1/usage?period=YYYY-MM` (default: the current month).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageQuery {
    pub period: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    pub period: Period,
    /// Per kind, sorted by kind; kinds without operations are absent.
    pub data: Vec<KindUsage>,
    /// All operations of the period.
    pub total: i64,
}

async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageView>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let period = match query.period.as_deref() {
        None => Period::of(state.clock.now()),
        Some(text) => text.parse()?,
    };
    let data = state.jobs.usage(&tenant.id, period).await?;
    let total = data.iter().map(|usage| usage.operations).sum();
    Ok(Json(UsageView {
        period,
        data,
        total,
    }))
}
