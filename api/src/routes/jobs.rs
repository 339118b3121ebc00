//! `/v1/jobs`: create (202 + Location, `Idempotency-Key`; quotas: `429
//! rate_limited` past the tenant's creations per minute, `429 quota_exceeded`
//! at its cap on queued jobs), list (filters and
//! cursor pagination), read, cancel and retry a tenant's jobs. A job of
//! another tenant is `404`, never `403`, and never appears in a listing.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::{Attempt, Job, JobFilter};
use longhaul_core::tenancy::Role;
use longhaul_core::usage::Period;
use longhaul_core::{JobId, JobState, Progress};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::lockout;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(create).get(list))
        .route("/v1/jobs/{id}", get(read))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/retry", post(retry))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJob {
    pub kind: String,
    #[serde(default = "empty_object")]
    pub params: Value,
    pub queue: Option<String>,
    /// 0 (most urgent) to 9.
    pub priority: Option<i16>,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: Option<i32>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// `GET /v1/jobs` query: `state=queued,running&kind=…&queue=…&createdFrom=…&
/// createdTo=…&limit=…&cursor=…`. Values are parsed by hand so that a bad one
/// is a `422` naming its parameter.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListJobs {
    /// Comma-separated states.
    pub state: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// RFC 3339; jobs created at or after it.
    pub created_from: Option<String>,
    /// RFC 3339; jobs created before it.
    pub created_to: Option<String>,
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

pub const DEFAULT_PAGE: u32 = 50;

/// One page of jobs, newest first.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    pub data: Vec<JobView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
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
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
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
    pub error: Option<String>,
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub attempt: i32,
    pub outcome: longhaul_core::job::AttemptOutcome,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub error: Option<String>,
}

impl JobView {
    fn of(job: Job, attempts: Option<Vec<Attempt>>) -> Self {
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
            error: job.last_error,
            result: job.result,
            attempts: attempts.map(|list| {
                list.into_iter()
                    .map(|a| AttemptView {
                        attempt: a.attempt,
                        outcome: a.outcome,
                        started_at: a.started_at,
                        finished_at: a.finished_at,
                        error: a.error,
                    })
                    .collect()
            }),
        }
    }
}

/// A job id from the path: a malformed one names no job, so it is a 404.
fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("job {text} not found")))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|key| Some(key.to_string()))
            .map_err(|_| ApiError::validation("Idempotency-Key", "must be visible ASCII")),
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateJob>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    let request = EnqueueRequest {
        tenant_id: tenant.id.clone(),
        kind: body.kind,
        params: body.params,
        queue: body.queue,
        priority: body.priority,
        run_at: body.run_at,
        max_attempts: body.max_attempts,
        idempotency_key: idempotency_key(&headers)?,
    };
    // Validation first: a request refused as invalid is not a creation.
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
    // The queued cap is checked and the usage metered in the insert's
    // transaction: a refusal writes nothing, an acceptance is billed once.
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
    let location = format!("/v1/jobs/{}", job.id);
    let mut response = (StatusCode::ACCEPTED, Json(JobView::of(job, None))).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    if !enqueued.created {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
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
    let page = state
        .jobs
        .list(&tenant.id, &filter, after, limit)
        .await
        .map_err(|error| match error {
            // Name the query parameter the caller sent.
            longhaul_core::Error::Validation { field, message } if field == "created_to" => {
                ApiError::validation("createdTo", message)
            }
            other => ApiError::from(other),
        })?;
    Ok(Json(JobPage {
        data: page
            .jobs
            .into_iter()
            .map(|job| JobView::of(job, None))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let id = job_id(&id)?;
    let (job, attempts) = state.jobs.get_with_attempts(&tenant.id, id).await?;
    Ok(Json(JobView::of(job, Some(attempts))))
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    // Stopping work is allowed for suspended tenants too.
    let tenant = caller.tenant_role(Role::Developer)?;
    let job = state
        .jobs
        .cancel_as(&tenant.id, job_id(&id)?, &caller.actor())
        .await?;
    Ok(Json(JobView::of(job, None)))
}

async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    let job = state
        .jobs
        .retry_within_quota(
            &tenant.id,
            job_id(&id)?,
            tenant.quotas.max_queued,
            &caller.actor(),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(JobView::of(job, None))))
}
