//! `/v1/schedules`: a tenant's recurring jobs. Create, list, read, update,
//! delete, pause, resume, and preview the next fire times in the schedule's
//! time zone. The job a schedule creates is validated like `POST /v1/jobs`
//! (kind, params, queue, priority) when the schedule is written. Reading
//! needs `viewer`; changing needs `developer` (creating or resuming needs a
//! tenant that is not suspended). A tenant holds at most its plan's
//! `maxSchedules` (default 100): past it, `429 quota_exceeded`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use longhaul_core::client::EnqueueRequest;
use longhaul_core::schedule::{CronSpec, NewSchedule, Schedule, SchedulePatch};
use longhaul_core::tenancy::{Role, Tenant};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::{BodyRejected, LockedOut, Unauthorized};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, delete))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(next))
}

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;
/// Most fire times `GET …/next` previews.
pub const MAX_PREVIEW: usize = 100;

/// `GET /v1/schedules` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListSchedules {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    #[param(example = "sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub cursor: Option<String>,
}

/// One page of schedules, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePage {
    pub data: Vec<Schedule>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(example = "sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub next_cursor: Option<String>,
}

/// `GET /v1/schedules/{id}/next?count=10`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub count: Option<usize>,
}

/// Upcoming fire times, in UTC and in the schedule's zone.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirePreview {
    /// The schedule's IANA time zone.
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    /// The cron expression in words.
    pub description: String,
    /// Oldest first.
    pub data: Vec<FireTime>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FireTime {
    pub at: DateTime<Utc>,
    /// The same instant in the schedule's time zone (RFC 3339 with offset).
    #[schema(example = "2025-01-31T03:00:00+01:00")]
    pub local: String,
}

/// Checks the job a schedule would create against the catalogue, as
/// `POST /v1/jobs` would (the errors name the same fields).
fn check_job(state: &AppState, tenant: &Tenant, new: &NewSchedule) -> Result<(), ApiError> {
    state.jobs.catalogue().check_public(&new.kind)?;
    state.jobs.prepare(EnqueueRequest {
        tenant_id: tenant.id.clone(),
        kind: new.kind.clone(),
        params: new.params.clone(),
        queue: new.queue.clone(),
        priority: new.priority,
        run_at: None,
        max_attempts: None,
        idempotency_key: None,
        inputs: Vec::new(),
    })?;
    Ok(())
}

/// Create a schedule.
///
/// The job it creates is validated as `POST /v1/jobs` validates one (kind,
/// params, queue, priority), then the cron expression and time zone; the
/// tenant holds at most its plan's `maxSchedules` (default 100).
#[utoipa::path(
    post,
    path = "/v1/schedules",
    operation_id = "createSchedule",
    tag = "schedules",
    security(("bearer" = [])),
    request_body = NewSchedule,
    responses(
        (status = 201, description = "Created", body = Schedule,
            headers(("Location" = String, description = "`/v1/schedules/{id}`"))),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key; `tenant_suspended`",
            body = ErrorBody),
        (status = 409, description = "`conflict`: the tenant has a schedule with that name",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 1 MiB or `params` over 64 KiB",
            body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad cron expression, unknown time zone, \
            unknown kind, invalid params, `jitterSeconds` over 3600 or another bad field \
            (`details.field`)",
            body = ErrorBody),
        (status = 429, description = "`quota_exceeded` (the tenant holds its plan's `maxSchedules`; \
            nothing written) or `brute_force_lockout`",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewSchedule>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    check_job(&state, tenant, &body)?;
    let schedule = state
        .stores
        .create_schedule(
            Some(&tenant.id),
            &body,
            tenant.quotas.max_schedules,
            state.clock.now(),
            &caller.actor(),
        )
        .await?;
    let mut response = (StatusCode::CREATED, Json(&schedule)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/schedules/{}", schedule.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// List the tenant's schedules, oldest first.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    operation_id = "listSchedules",
    tag = "schedules",
    security(("bearer" = [])),
    params(ListSchedules),
    responses(
        (status = 200, description = "One page of schedules", body = SchedulePage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a tenant key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor \
            (`details.field` names it)", body = ErrorBody),
        LockedOut,
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListSchedules>,
) -> Result<Json<SchedulePage>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let limit = match query.limit {
        None => DEFAULT_PAGE,
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
        Some(_) => {
            return Err(ApiError::validation(
                "limit",
                format!("must be from 1 to {MAX_PAGE}"),
            ))
        }
    };
    let mut data = state
        .stores
        .list_schedules(Some(&tenant.id), query.cursor.as_deref(), limit + 1)
        .await?;
    let next_cursor =
        crate::routes::trim_page(&mut data, limit).map(|schedule| schedule.id.clone());
    Ok(Json(SchedulePage { data, next_cursor }))
}

/// Read a schedule.
#[utoipa::path(
    get,
    path = "/v1/schedules/{id}",
    operation_id = "getSchedule",
    tag = "schedules",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The schedule id",
        example = "sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 200, description = "The schedule", body = Schedule),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such schedule in the caller's tenant",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Schedule>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    Ok(Json(
        state.stores.get_schedule(Some(&tenant.id), &id).await?,
    ))
}

/// Change a schedule.
///
/// Each field sent replaces the stored one; the result is validated as a new
/// schedule is. A new cron, time zone or jitter recomputes the next fire time
/// from now.
#[utoipa::path(
    patch,
    path = "/v1/schedules/{id}",
    operation_id = "updateSchedule",
    tag = "schedules",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The schedule id",
        example = "sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    request_body = SchedulePatch,
    responses(
        (status = 200, description = "The changed schedule", body = Schedule),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such schedule in the caller's tenant",
            body = ErrorBody),
        (status = 409, description = "`conflict`: the tenant has another schedule with that name",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 1 MiB or `params` over 64 KiB",
            body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad cron expression, unknown time zone, \
            unknown kind, invalid params, `jitterSeconds` over 3600 or another bad field \
            (`details.field`)",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<SchedulePatch>,
) -> Result<Json<Schedule>, ApiError> {
    let tenant = caller.tenant_role(Role::Developer)?;
    let current = state.stores.get_schedule(Some(&tenant.id), &id).await?;
    check_job(&state, tenant, &patch.apply_to(&current))?;
    Ok(Json(
        state
            .stores
            .update_schedule(
                Some(&tenant.id),
                &id,
                &patch,
                state.clock.now(),
                &caller.actor(),
            )
            .await?,
    ))
}

/// Delete a schedule (the jobs it created stay).
#[utoipa::path(
    delete,
    path = "/v1/schedules/{id}",
    operation_id = "deleteSchedule",
    tag = "schedules",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The schedule id",
        example = "sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such schedule in the caller's tenant",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_role(Role::Developer)?;
    state
        .stores
        .delete_schedule(Some(&tenant.id), &id, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule: it creates no jobs until resumed.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/pause",
    operation_id = "pauseSchedule",
    tag = "schedules",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The schedule id",
        example = "sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 200, description = "The paused schedule", body = Schedule),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such schedule in the caller's tenant",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Schedule>, ApiError> {
    let tenant = caller.tenant_role(Role::Developer)?;
    Ok(Json(
        state
            .stores
            .set_schedule_paused(
                Some(&tenant.id),
                &id,
                true,
                state.clock.now(),
                &caller.actor(),
            )
            .await?,
    ))
}

/// Resume a schedule from now (fire times passed while paused are not caught up).
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/resume",
    operation_id = "resumeSchedule",
    tag = "schedules",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The schedule id",
        example = "sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 200, description = "The resumed schedule", body = Schedule),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key; `tenant_suspended`",
            body = ErrorBody),
        (status = 404, description = "`not_found`: no such schedule in the caller's tenant",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Schedule>, ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    Ok(Json(
        state
            .stores
            .set_schedule_paused(
                Some(&tenant.id),
                &id,
                false,
                state.clock.now(),
                &caller.actor(),
            )
            .await?,
    ))
}

/// Preview a schedule's next fire times, in UTC and in its time zone.
#[utoipa::path(
    get,
    path = "/v1/schedules/{id}/next",
    operation_id = "previewScheduleFires",
    tag = "schedules",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The schedule id",
            example = "sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90"),
        NextQuery,
    ),
    responses(
        (status = 200, description = "The next fire times", body = FirePreview),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such schedule in the caller's tenant",
            body = ErrorBody),
        (status = 422, description = "`validation_error`: `count` is not from 1 to 100",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn next(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<NextQuery>,
) -> Result<Json<FirePreview>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let count = match query.count {
        None => 10,
        Some(count) if (1..=MAX_PREVIEW).contains(&count) => count,
        Some(_) => {
            return Err(ApiError::validation(
                "count",
                format!("must be from 1 to {MAX_PREVIEW}"),
            ))
        }
    };
    let schedule = state.stores.get_schedule(Some(&tenant.id), &id).await?;
    let spec = CronSpec::parse(&schedule.cron, &schedule.time_zone)?;
    let data = spec
        .upcoming(state.clock.now(), count)
        .into_iter()
        .map(|at| FireTime {
            at,
            local: spec.local_rfc3339(at),
        })
        .collect();
    Ok(Json(FirePreview {
        time_zone: schedule.time_zone.clone(),
        description: spec.describe(),
        data,
    }))
}
