//! `/v1/jobs`: create (202 + Location, `Idempotency-Key`; quotas: `429
//! rate_limited` past the tenant's creations per minute, `429 quota_exceeded`
//! at its cap on queued jobs), list (filters and
//! cursor pagination), read, cancel and retry a tenant's jobs. A job of
//! another tenant is `404`, never `403`, and never appears in a listing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use longhaul_core::client::{EnqueueRequest, MAX_IDEMPOTENCY_KEY_LEN};
use longhaul_core::job::{Attempt, Job, JobFilter};
use longhaul_core::tenancy::Role;
use longhaul_core::usage::Period;
use longhaul_core::{JobId, JobState, Progress};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::lockout;
use crate::openapi::{BodyRejected, LockedOut, Unauthorized};
use crate::state::AppState;
use longhaul_core::failure::PublicError;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read))
        .routes(routes!(cancel))
        .routes(routes!(retry))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJob {
    /// A kind of the catalogue, e.g. `system.sleep`.
    #[schema(example = "system.sleep")]
    pub kind: String,
    /// A JSON object the kind validates (at most 64 KiB); default `{}`.
    #[serde(default = "empty_object")]
    #[schema(example = json!({"durationMs": 3000, "steps": 6}))]
    pub params: Value,
    /// Default: the kind's queue.
    #[schema(max_length = 64, pattern = r"^[a-z0-9_.-]{1,64}$")]
    pub queue: Option<String>,
    /// 0 (most urgent) to 9; default 5.
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i16>,
    /// Run no earlier than this (RFC 3339); default now.
    pub run_at: Option<DateTime<Utc>>,
    /// 1 to 100; default: the kind's.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<i32>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// `GET /v1/jobs` query: `state=queued,running&kind=…&queue=…&createdFrom=…&
/// createdTo=…&limit=…&cursor=…`. Values are parsed by hand so that a bad one
/// is a `422` naming its parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobs {
    /// Comma-separated states: `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    #[param(example = "queued,running")]
    pub state: Option<String>,
    pub kind: Option<String>,
    #[param(max_length = 64, pattern = r"^[a-z0-9_.-]{1,64}$")]
    pub queue: Option<String>,
    /// RFC 3339; jobs created at or after it.
    #[param(example = "2025-01-31T12:00:00Z")]
    pub created_from: Option<String>,
    /// RFC 3339; jobs created before it.
    pub created_to: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

pub const DEFAULT_PAGE: u32 = 50;

/// One page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    pub data: Vec<JobView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(value_type = Option<String>, example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub next_cursor: Option<JobId>,
}

impl ListJobs {
    fn filter(&self) -> Result<JobFilter, ApiError> {
        let states = match &self.state {
            None => vec![],
            Some(list) => list
                .split(',')
                .map(|name| name.trim().parse::<JobState>())
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(JobFilter {
            states,
            kind: self.kind.clone(),
            queue: self.queue.clone(),
            created_from: time_param("createdFrom", self.created_from.as_deref())?,
            created_to: time_param("createdTo", self.created_to.as_deref())?,
        })
    }

    fn cursor(&self) -> Result<Option<JobId>, ApiError> {
        self.cursor
            .as_deref()
            .map(|text| {
                text.parse().map_err(|_| {
                    ApiError::validation(
                        "cursor",
                        format!(
                            "{text:?} is not a job id; pass the nextCursor of the previous page"
                        ),
                    )
                })
            })
            .transpose()
    }
}

pub(crate) fn time_param(
    name: &str,
    text: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|text| {
        DateTime::parse_from_rfc3339(text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::validation(
                    name,
                    format!(
                        "{text:?} is not an RFC 3339 time such as 2025-01-31T12:00:00Z \
                         (percent-encode a '+' offset as %2B)"
                    ),
                )
            })
    })
    .transpose()
}

/// A job as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Job)]
pub struct JobView {
    #[schema(value_type = String, example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub id: JobId,
    pub kind: String,
    pub queue: String,
    pub status: JobState,
    pub priority: i16,
    pub params: Value,
    pub progress: Option<Progress>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub cancel_requested: bool,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The last failure, as a stable code and a short message (none once
    /// succeeded; the raw error is kept for operators).
    pub error: Option<PublicError>,
    /// What the job reported on success.
    pub result: Option<Value>,
    /// Finished attempts, oldest first: only in `GET /v1/jobs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub attempts: Option<Vec<AttemptView>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Attempt)]
pub struct AttemptView {
    pub attempt: i32,
    pub outcome: longhaul_core::job::AttemptOutcome,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    /// The attempt's failure as a code and a short message (the raw error
    /// is kept for operators).
    pub error: Option<PublicError>,
}

impl JobView {
    /// The API's JSON of a job (and, for one job's read, its attempts); the
    /// command line prints the same.
    pub fn of(job: Job, attempts: Option<Vec<Attempt>>) -> Self {
        let error = job.tenant_error();
        JobView {
            id: job.id,
            kind: job.kind,
            queue: job.queue,
            status: job.state,
            priority: job.priority,
            params: job.params,
            progress: job.progress,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            cancel_requested: job.cancel_requested,
            run_at: job.run_at,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            error,
            result: job.result,
            attempts: attempts.map(|list| {
                list.into_iter()
                    .map(|a| AttemptView {
                        attempt: a.attempt,
                        outcome: a.outcome,
                        started_at: a.started_at,
                        finished_at: a.finished_at,
                        error: a.tenant_error(),
                    })
                    .collect()
            }),
        }
    }
}

/// A job id from the path: a malformed one names no job, so it is a 404.
pub(crate) fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("job {text} not found")))
}

/// The `Idempotency-Key` header. Keys starting `schedule:` are the
/// scheduler's (one per fire time) and refused here, so a client cannot take
/// a fire's key ahead of it.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len()))
        .ok_or_else(|| {
            ApiError::validation(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            )
        })?;
    if key.starts_with(RESERVED_IDEMPOTENCY_PREFIX) {
        return Err(ApiError::validation(
            "Idempotency-Key",
            format!("keys starting {RESERVED_IDEMPOTENCY_PREFIX:?} are reserved for schedules"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// The largest `GET /v1/jobs/{id}` answer the status cache keeps.
const MAX_CACHED_STATUS_BYTES: usize = 4 * 1024;

/// The prefix of the idempotency keys of scheduled jobs.
const RESERVED_IDEMPOTENCY_PREFIX: &str = "schedule:";

/// Create a job.
///
/// Validated first (kind, params, priority, attempts), then the tenant's
/// `creationsPerMinute` and `maxQueued` quotas are checked; an accepted job is
/// one billable operation. The same `Idempotency-Key` with the same kind and
/// params answers the existing job (`Idempotent-Replayed: true`).
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "createJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
            description = "Makes a retried request answer the job the first one created"),
    ),
    request_body = CreateJob,
    responses(
        (status = 202, description = "Accepted (created, or replayed by its idempotency key)",
            body = JobView,
            headers(
                ("Location" = String, description = "`/v1/jobs/{id}`"),
                ("Idempotent-Replayed" = String,
                    description = "`true` when an earlier request with this key created the job; absent otherwise"),
            )),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key; `tenant_suspended`",
            body = ErrorBody),
        (status = 409, description = "`conflict`: the idempotency key was used with another kind or params",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 1 MiB or `params` over 64 KiB",
            body = ErrorBody),
        (status = 422, description = "`validation_error`: unknown kind, invalid params or field (`details.field`)",
            body = ErrorBody),
        (status = 429, description = "`rate_limited` (past `creationsPerMinute`), `quota_exceeded` \
            (past `maxQueued`; nothing written) or `brute_force_lockout`",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateJob>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    state.jobs.catalogue().check_public(&body.kind)?;
    let request = EnqueueRequest {
        tenant_id: tenant.id.clone(),
        kind: body.kind,
        params: body.params,
        queue: body.queue,
        priority: body.priority,
        run_at: body.run_at,
        max_attempts: body.max_attempts,
        idempotency_key: idempotency_key(&headers)?,
        inputs: Vec::new(),
    };
    let (job, created) = admit(&state, &caller, tenant, request).await?;
    let location = format!("/v1/jobs/{}", job.id);
    Ok(accepted(JobView::of(job, None), &location, created))
}

/// Validates and stores a job for the caller's tenant under its quotas:
/// validation first (a request refused as invalid is not a creation), then
/// `creationsPerMinute`, then `maxQueued` and metering in the insert's
/// transaction (a refusal writes nothing, an acceptance is billed once).
/// The job, and whether this request created it (false: an idempotent replay).
pub(crate) async fn admit(
    state: &AppState,
    caller: &Caller,
    tenant: &longhaul_core::tenancy::Tenant,
    request: EnqueueRequest,
) -> Result<(Job, bool), ApiError> {
    let job = state.jobs.prepare(request)?;
    let now = state.clock.now();
    if let Some(limit) = tenant.quotas.creations_per_minute {
        let limit = u64::try_from(limit).unwrap_or(0);
        match state.rate_limiter.acquire(&tenant.id, limit, now).await {
            Ok(None) => {}
            Ok(Some(remaining)) => return Err(rate_limited(limit, remaining)),
            Err(error) => {
                // Fails closed, as the lockout does.
                tracing::error!(%error, "creation rate counters unavailable");
                return Err(ApiError::internal());
            }
        }
    }
    let enqueued = state
        .jobs
        .admit(
            job,
            tenant.quotas.max_queued,
            Period::of(now),
            &caller.actor(),
        )
        .await?;
    let job = state.jobs.get(&tenant.id, enqueued.id).await?;
    // The request's span names the job it created (see `lib.rs`), as the
    // worker's span of each attempt does.
    let span = tracing::Span::current();
    span.record("job_id", tracing::field::display(job.id));
    span.record("kind", job.kind.as_str());
    Ok((job, enqueued.created))
}

/// `202 Accepted` with the resource, its `Location`, and
/// `Idempotent-Replayed: true` when an earlier request created it.
pub(crate) fn accepted(body: impl Serialize, location: &str, created: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if !created {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn rate_limited(limit: u64, remaining: std::time::Duration) -> ApiError {
    let seconds = lockout::retry_after_secs(remaining);
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("the tenant may create {limit} jobs per minute; try again in {seconds} s"),
    )
    .with_details(json!({ "limit": limit, "retryAfterSeconds": seconds }));
    error.retry_after = Some(seconds);
    error
}

/// List the tenant's jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "listJobs",
    tag = "jobs",
    security(("bearer" = [])),
    params(ListJobs),
    responses(
        (status = 200, description = "One page of jobs", body = JobPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a tenant key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad state, time, limit or cursor \
            (`details.field` names it)", body = ErrorBody),
        LockedOut,
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListJobs>,
) -> Result<Json<JobPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let filter = query.filter()?;
    let after = query.cursor()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    // The client checks the limit and the range and reads one job more than
    // the page to know whether another follows.
    let page = state.jobs.list(&tenant.id, &filter, after, limit).await?;
    Ok(Json(JobPage {
        data: page
            .jobs
            .into_iter()
            .map(|job| JobView::of(job, None))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Read a job: status, progress, attempts, timings, error, result.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "getJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id", example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 200, description = "The job, with its finished attempts", body = JobView),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job in the caller's tenant",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let id = job_id(&id)?;
    // Polling clients read the same job over and over: its answer is kept,
    // already encoded, for the status cache's TTL (see `cache.rs`).
    let now = state.clock.now();
    let cache_key = (tenant.id.clone(), id);
    let body = match state.job_status_cache.get(&cache_key, now) {
        Some(body) => body,
        None => {
            let (job, attempts) = state.jobs.get_with_attempts(&tenant.id, id).await?;
            let body = Bytes::from(
                serde_json::to_vec(&JobView::of(job, Some(attempts))).map_err(|error| {
                    tracing::error!(%error, "encoding a job");
                    ApiError::internal()
                })?,
            );
            // Large answers (big params, results or errors) are not kept:
            // the cache stays within a few tens of MB.
            if body.len() <= MAX_CACHED_STATUS_BYTES {
                state.job_status_cache.insert(cache_key, body.clone(), now);
            }
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Cancel a job: a queued job is cancelled, a running one is asked to stop.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    operation_id = "cancelJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id", example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 200, description = "The job: `cancelled`, or running with `cancelRequested`",
            body = JobView),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job in the caller's tenant",
            body = ErrorBody),
        (status = 409, description = "`conflict`: the job has already finished", body = ErrorBody),
        LockedOut,
    )
)]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    // Stopping work is allowed for suspended tenants too.
    let tenant = caller.tenant_role(Role::Developer)?;
    let id = job_id(&id)?;
    let job = state
        .jobs
        .cancel_as(&tenant.id, id, &caller.actor())
        .await?;
    state.forget_job_status(&tenant.id, id);
    Ok(Json(JobView::of(job, None)))
}

/// Retry a failed or cancelled job: it is queued again.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    operation_id = "retryJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id", example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")),
    responses(
        (status = 202, description = "The job, queued again", body = JobView),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key; `tenant_suspended`",
            body = ErrorBody),
        (status = 404, description = "`not_found`: no such job in the caller's tenant",
            body = ErrorBody),
        (status = 409, description = "`conflict`: the job is neither failed nor cancelled",
            body = ErrorBody),
        (status = 429, description = "`quota_exceeded` (the tenant is at `maxQueued`) or \
            `brute_force_lockout`",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    let id = job_id(&id)?;
    let job = state
        .jobs
        .retry_within_quota(&tenant.id, id, tenant.quotas.max_queued, &caller.actor())
        .await?;
    state.forget_job_status(&tenant.id, id);
    Ok((StatusCode::ACCEPTED, Json(JobView::of(job, None))))
}
