//! `/v1/jobs`: create (202 + Location, `Idempotency-Key`), read, cancel and
//! retry a tenant's jobs. A job of another tenant is `404`, never `403`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::{Attempt, Job};
use longhaul_core::tenancy::Role;
use longhaul_core::{JobId, JobState, Progress};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(create))
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
    let enqueued = state.jobs.enqueue(request).await?;
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

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let id = job_id(&id)?;
    let job = state.jobs.get(&tenant.id, id).await?;
    let attempts = state.jobs.attempts(&tenant.id, id).await?;
    Ok(Json(JobView::of(job, Some(attempts))))
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    // Stopping work is allowed for suspended tenants too.
    let tenant = caller.tenant_role(Role::Developer)?;
    let job = state.jobs.cancel(&tenant.id, job_id(&id)?).await?;
    Ok(Json(JobView::of(job, None)))
}

async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    let job = state.jobs.retry(&tenant.id, job_id(&id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(JobView::of(job, None))))
}
