//! `/v1/classification/scans` and `/v1/classification/stats`: classifying
//! the objects of a tenant's data buckets. `POST …/scans` checks the scope
//! against the tenant's data buckets, takes a snapshot of the policies and
//! queues a `classification.scan` job (`cls_<hex>` = `job_<hex>`), answering
//! `202`; results per object hold levels, data types and counts, never
//! values. Creating scans needs a developer key; reading, any key.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::Job;
use longhaul_core::scans::classification::{
    ClassificationScan, ClassificationScanParams, ClassificationScanRequest, CLASSIFICATION_SCAN,
    SCAN_PREFIX,
};
use longhaul_core::scans::leakage::{data_buckets, SourceRules};
use longhaul_core::scans::{scan_id, ClassificationStats, ObjectClassification, PolicyFamily};
use longhaul_core::tenancy::Role;
use longhaul_core::{JobId, JobState};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::{BodyRejected, LockedOut, TooLarge, Unauthorized};
use crate::routes::jobs::{accepted, admit, idempotency_key};
use crate::routes::leakage::{
    check_same_scan, list_scan_jobs, replayed_scan, request_sha256, scan_job, Page, ScanProgress,
};
use crate::routes::scan_policies::{page_limit, scan_policies, snapshot_ids};
use crate::state::AppState;
use longhaul_core::failure::PublicError;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_scan, list_scans))
        .routes(routes!(read_scan))
        .routes(routes!(list_results))
        .routes(routes!(stats))
}

/// A classification scan as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationScanView {
    #[schema(example = "cls_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub scan_id: String,
    #[schema(value_type = String, example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub job_id: JobId,
    pub status: JobState,
    pub buckets: Vec<String>,
    pub prefixes: Vec<String>,
    pub max_object_bytes: u64,
    #[schema(value_type = Vec<Object>)]
    pub policies: Value,
    pub progress: ScanProgress,
    /// Objects with a result so far.
    pub objects_classified: u64,
    /// A rough estimate (a minute per bucket prefix) while queued or running.
    pub estimated_completion_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The last failure, as a stable code and a short message (none once
    /// succeeded; the raw error is kept for operators).
    pub error: Option<PublicError>,
}

impl ClassificationScanView {
    fn of(job: Job, objects_classified: u64) -> Result<Self, ApiError> {
        let unreadable = |error: longhaul_core::Error| {
            tracing::error!(job_id = %job.id, %error, "an unreadable classification scan job");
            ApiError::internal()
        };
        let params = job.params_of::<ClassificationScan>().map_err(unreadable)?;
        let output = job.output_of::<ClassificationScan>().map_err(unreadable)?;
        let checkpoint = job
            .checkpoint_of::<ClassificationScan>()
            .map_err(unreadable)?;
        let estimate =
            chrono::Duration::seconds(60 * (params.buckets.len() * params.prefixes.len()) as i64);
        let estimated_completion_at = match job.state {
            JobState::Queued => Some(job.run_at.max(job.created_at) + estimate),
            JobState::Running => job.started_at.map(|at| at + estimate),
            _ => None,
        };
        let error = job.tenant_error();
        Ok(ClassificationScanView {
            scan_id: scan_id(SCAN_PREFIX, job.id),
            job_id: job.id,
            status: job.state,
            progress: ScanProgress::of(
                &job,
                output.map(|o| (o.bytes, o.objects)),
                checkpoint.map(|c| c.objects_done),
            ),
            policies: snapshot_ids(&params.policies),
            buckets: params.buckets,
            prefixes: params.prefixes,
            max_object_bytes: params.max_object_bytes,
            objects_classified,
            estimated_completion_at,
            created_at: job.created_at,
            started_at: job.started_at,
            completed_at: job.finished_at,
            error,
        })
    }
}

/// Classify the objects of data buckets.
///
/// `scope.buckets` are names from the tenant's `settings.dataBuckets` (set by
/// an operator); `scope.prefixes` limit the keys. The built-in detectors run
/// with the named policies, or else the tenant's enabled ones.
#[utoipa::path(
    post,
    path = "/v1/classification/scans",
    operation_id = "createClassificationScan",
    tag = "classification",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
            description = "Makes a retried request answer the scan the first one created"),
    ),
    request_body = ClassificationScanRequest,
    responses(
        (status = 202, description = "Queued (or replayed)", body = ClassificationScanView,
            headers(("Location" = String, description = "`/v1/classification/scans/{id}`"))),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key; `tenant_suspended`",
            body = ErrorBody),
        (status = 409, description = "`conflict`: the idempotency key was used for another request",
            body = ErrorBody),
        TooLarge,
        (status = 422, description = "`validation_error`: no bucket, a bucket the tenant does \
            not have, a bad prefix or size, an unknown policy", body = ErrorBody),
        (status = 429, description = "`rate_limited`, `quota_exceeded` or `brute_force_lockout`",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn create_scan(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ClassificationScanRequest>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    let key = idempotency_key(&headers)?;
    let request_sha256 = request_sha256(&body)?;
    if let Some(job) = replayed_scan(
        &state,
        tenant,
        key.as_deref(),
        CLASSIFICATION_SCAN,
        &request_sha256,
    )
    .await?
    {
        let count = state
            .stores
            .count_classifications(&tenant.id, job.id)
            .await?;
        let view = ClassificationScanView::of(job, count)?;
        let location = format!("/v1/classification/scans/{}", view.scan_id);
        return Ok(accepted(view, &location, false));
    }
    let rules = SourceRules {
        data_buckets: data_buckets(&tenant.settings),
        ..SourceRules::default()
    };
    let (buckets, prefixes) = body.scope(&rules)?;
    let max_object_bytes = body.max_object_bytes()?;
    let policies = scan_policies(
        &state,
        tenant,
        PolicyFamily::Classification,
        body.policy_ids.as_deref(),
    )
    .await?;
    let params = ClassificationScanParams {
        buckets,
        prefixes,
        max_object_bytes,
        policies,
        request_sha256: Some(request_sha256.clone()),
    };
    let request =
        EnqueueRequest::of::<ClassificationScan>(tenant.id.clone(), &params)?.idempotency_key(key);
    let (job, created) = admit(&state, &caller, tenant, request).await?;
    // A concurrent request with the same key may have won: it must have been
    // the same request.
    check_same_scan(&job, CLASSIFICATION_SCAN, &request_sha256)?;
    let view = ClassificationScanView::of(job, 0)?;
    let location = format!("/v1/classification/scans/{}", view.scan_id);
    Ok(accepted(view, &location, created))
}

/// One page of scans, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationScanPage {
    pub data: Vec<ClassificationScanView>,
    pub next_cursor: Option<String>,
}

/// List the tenant's classification scans, newest first.
#[utoipa::path(
    get,
    path = "/v1/classification/scans",
    operation_id = "listClassificationScans",
    tag = "classification",
    security(("bearer" = [])),
    params(Page),
    responses(
        (status = 200, description = "One page", body = ClassificationScanPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_scans(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<Page>,
) -> Result<Json<ClassificationScanPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let (jobs, next_cursor) =
        list_scan_jobs(&state, tenant, CLASSIFICATION_SCAN, SCAN_PREFIX, query).await?;
    let mut data = Vec::with_capacity(jobs.len());
    for job in jobs {
        let count = state
            .stores
            .count_classifications(&tenant.id, job.id)
            .await?;
        data.push(ClassificationScanView::of(job, count)?);
    }
    Ok(Json(ClassificationScanPage { data, next_cursor }))
}

/// A classification scan's status and progress.
#[utoipa::path(
    get,
    path = "/v1/classification/scans/{id}",
    operation_id = "getClassificationScan",
    tag = "classification",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`cls_…`")),
    responses(
        (status = 200, description = "The scan", body = ClassificationScanView),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such scan of this tenant", body = ErrorBody),
        LockedOut,
    )
)]
async fn read_scan(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ClassificationScanView>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let job = scan_job(&state, tenant, SCAN_PREFIX, CLASSIFICATION_SCAN, &id).await?;
    let count = state
        .stores
        .count_classifications(&tenant.id, job.id)
        .await?;
    Ok(Json(ClassificationScanView::of(job, count)?))
}

/// One page of per-object results, by bucket and key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultPage {
    pub data: Vec<ObjectClassification>,
    pub next_cursor: Option<String>,
}

/// A results cursor: the hex of `bucket \0 key`.
fn encode_cursor(bucket: &str, key: &str) -> String {
    format!("{bucket}\0{key}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(text: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::validation("cursor", "is not a cursor this API returned");
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (bucket, key) = text.split_once('\0').ok_or_else(bad)?;
    if key.contains('\0') {
        return Err(bad());
    }
    Ok((bucket.to_string(), key.to_string()))
}

/// A scan's results per object: level, data types, counts per detector or
/// rule, format; skipped objects with the reason.
#[utoipa::path(
    get,
    path = "/v1/classification/scans/{id}/results",
    operation_id = "listClassificationResults",
    tag = "classification",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`cls_…`"), Page),
    responses(
        (status = 200, description = "One page", body = ResultPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such scan of this tenant", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_results(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<Page>,
) -> Result<Json<ResultPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let job = scan_job(&state, tenant, SCAN_PREFIX, CLASSIFICATION_SCAN, &id).await?;
    let mut data = state
        .stores
        .list_classifications(&tenant.id, job.id, after.as_ref(), limit + 1)
        .await?;
    let next_cursor =
        crate::routes::trim_page(&mut data, limit).map(|r| encode_cursor(&r.bucket, &r.key));
    Ok(Json(ResultPage { data, next_cursor }))
}

/// The tenant's objects by their latest classification: by level and data
/// type.
#[utoipa::path(
    get,
    path = "/v1/classification/stats",
    operation_id = "getClassificationStats",
    tag = "classification",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's classification stats", body = ClassificationStats),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        LockedOut,
    )
)]
async fn stats(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ClassificationStats>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    Ok(Json(state.stores.classification_stats(&tenant.id).await?))
}
