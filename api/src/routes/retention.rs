//! `/v1/retention/…`: a tenant's retention policies (audit log, data
//! buckets), previews computed from the data, cleanup runs (jobs of the
//! `audit.retention_cleanup` kind, `rex_<hex>` = `job_<hex>`), metrics of
//! the audit log, and legal holds. Everything here needs an admin key.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use longhaul_core::artifacts::records::ArtifactStatus;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::failure::PublicError;
use longhaul_core::job::Job;
use longhaul_core::retention::preview::{covered, preview};
use longhaul_core::retention::{
    all_policies, execution_id, parse_execution_id, parse_hold_id, parse_policy_id, CleanupArchive,
    CleanupCounts, CleanupParams, ExpiringObject, LegalHold, NewLegalHold, NewRetentionPolicy,
    RetentionCleanup, RetentionMetrics, RetentionPolicy, RetentionPolicyPatch, RetentionPreview,
    Trigger, DEFAULT_POLICY_ID, EXECUTION_PREFIX, RETENTION_CLEANUP,
};
use longhaul_core::scans::leakage::data_buckets;
use longhaul_core::tenancy::{Role, Tenant};
use longhaul_core::{JobId, JobState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::{BodyRejected, LockedOut, TooLarge, Unauthorized};
use crate::routes::jobs::{accepted, admit, idempotency_key};
use crate::routes::leakage::{list_scan_jobs, Page};
use crate::routes::scan_policies::page_limit;
use crate::routes::trim_page;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_policy, list_policies))
        .routes(routes!(get_policy, patch_policy, delete_policy))
        .routes(routes!(preview_policy))
        .routes(routes!(start_cleanup))
        .routes(routes!(list_executions))
        .routes(routes!(get_execution))
        .routes(routes!(metrics))
        .routes(routes!(create_hold, list_holds))
        .routes(routes!(get_hold))
        .routes(routes!(release_hold))
}

fn created(body: impl Serialize, location: &str) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn tenant_buckets(tenant: &Tenant) -> Vec<String> {
    data_buckets(&tenant.settings).into_keys().collect()
}

/// `limit` and `cursor` of a listing by id.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IdPage {
    /// 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Create a retention policy.
///
/// An audit-log policy (`scope.eventTypes` globs such as `job.*`,
/// `scope.services`) keeps events for at least the plan's minimum (90 days);
/// a data-bucket policy names `scope.buckets` (and optionally
/// `scope.classifications`) and `actions.onExpiry`.
#[utoipa::path(
    post,
    path = "/v1/retention/policies",
    operation_id = "createRetentionPolicy",
    tag = "retention",
    security(("bearer" = [])),
    request_body = NewRetentionPolicy,
    responses(
        (status = 201, description = "Created", body = RetentionPolicy),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad period (or shorter than the \
            plan's minimum), scope, bucket or destination", body = ErrorBody),
        (status = 429, description = "`quota_exceeded`: 100 policies (nothing written) or \
            `brute_force_lockout`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn create_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewRetentionPolicy>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let checked = body.check(&tenant_buckets(tenant))?;
    let policy = state
        .stores
        .create_retention_policy(&tenant.id, &checked, state.clock.now(), &caller.actor())
        .await?;
    let location = format!("/v1/retention/policies/{}", policy.policy_id);
    Ok(created(policy, &location))
}

/// One page of policies.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPage {
    pub data: Vec<RetentionPolicy>,
    /// The tenant's default policy (`settings.auditLogRetentionDays`).
    pub default_policy: RetentionPolicy,
    pub next_cursor: Option<String>,
}

/// List the tenant's retention policies (and the default one).
#[utoipa::path(
    get,
    path = "/v1/retention/policies",
    operation_id = "listRetentionPolicies",
    tag = "retention",
    security(("bearer" = [])),
    params(IdPage),
    responses(
        (status = 200, description = "One page", body = PolicyPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<IdPage>,
) -> Result<Json<PolicyPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let limit = page_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| parse_policy_id(c).map_err(|_| bad_cursor()))
        .transpose()?;
    let mut data = state
        .stores
        .list_retention_policies(&tenant.id, after, limit + 1)
        .await?;
    let next_cursor = trim_page(&mut data, limit).map(|p| p.policy_id.clone());
    Ok(Json(PolicyPage {
        data,
        default_policy: default_policy(tenant),
        next_cursor,
    }))
}

fn bad_cursor() -> ApiError {
    ApiError::validation("cursor", "is not a cursor this API returned")
}

fn default_policy(tenant: &Tenant) -> RetentionPolicy {
    RetentionPolicy::default_for(tenant.audit_log_retention_days(), tenant.created_at)
}

fn policy_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("retention policy {id} not found"))
}

fn map_policy_error(id: &str) -> impl Fn(longhaul_core::Error) -> ApiError + '_ {
    move |error| match error {
        longhaul_core::Error::NoSuchResource { .. } => policy_not_found(id),
        other => other.into(),
    }
}

/// The policy `id` names: `default` or one of the tenant's.
async fn find_policy(
    state: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<RetentionPolicy, ApiError> {
    if id == DEFAULT_POLICY_ID {
        return Ok(default_policy(tenant));
    }
    let uuid = parse_policy_id(id).map_err(|_| policy_not_found(id))?;
    state
        .stores
        .get_retention_policy(&tenant.id, uuid)
        .await
        .map_err(map_policy_error(id))
}

fn stored_policy_id(id: &str) -> Result<Uuid, ApiError> {
    if id == DEFAULT_POLICY_ID {
        return Err(ApiError::validation(
            "policyId",
            "the default policy is the tenant's settings.auditLogRetentionDays: change it there",
        ));
    }
    parse_policy_id(id).map_err(|_| policy_not_found(id))
}

/// A retention policy (`default`: the tenant's default one).
#[utoipa::path(
    get,
    path = "/v1/retention/policies/{id}",
    operation_id = "getRetentionPolicy",
    tag = "retention",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`rtp_…` or `default`")),
    responses(
        (status = 200, description = "The policy", body = RetentionPolicy),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RetentionPolicy>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    Ok(Json(find_policy(&state, tenant, &id).await?))
}

/// Change a retention policy (the result is validated as a whole).
#[utoipa::path(
    patch,
    path = "/v1/retention/policies/{id}",
    operation_id = "updateRetentionPolicy",
    tag = "retention",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`rtp_…`")),
    request_body = RetentionPolicyPatch,
    responses(
        (status = 200, description = "The policy as changed", body = RetentionPolicy),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 422, description = "`validation_error`", body = ErrorBody),
        LockedOut,
    )
)]
async fn patch_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<RetentionPolicyPatch>,
) -> Result<Json<RetentionPolicy>, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let uuid = stored_policy_id(&id)?;
    if patch.is_empty() {
        return Err(ApiError::validation(
            "body",
            "name at least one field to change",
        ));
    }
    let policy = state
        .stores
        .update_retention_policy(
            &tenant.id,
            uuid,
            &patch,
            &tenant_buckets(tenant),
            state.clock.now(),
            &caller.actor(),
        )
        .await
        .map_err(map_policy_error(&id))?;
    Ok(Json(policy))
}

/// Delete a retention policy (runs already created keep their copy of it).
#[utoipa::path(
    delete,
    path = "/v1/retention/policies/{id}",
    operation_id = "deleteRetentionPolicy",
    tag = "retention",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`rtp_…`")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_error`: the default policy", body = ErrorBody),
        LockedOut,
    )
)]
async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let uuid = stored_policy_id(&id)?;
    state
        .stores
        .delete_retention_policy(&tenant.id, uuid, state.clock.now(), &caller.actor())
        .await
        .map_err(map_policy_error(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/retention/preview` and the policy of a cleanup.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRef {
    /// `rtp_…` or `default`.
    pub policy_id: String,
}

/// The params of a run of `policy_id` now.
async fn run_params(
    state: &AppState,
    tenant: &Tenant,
    policy_id: &str,
    dry_run: bool,
    trigger: Trigger,
) -> Result<CleanupParams, ApiError> {
    let policy = find_policy(state, tenant, policy_id).await?;
    let explicit = if policy.policy_id == DEFAULT_POLICY_ID {
        all_policies(state.stores.as_ref(), &tenant.id).await?
    } else {
        Vec::new()
    };
    Ok(CleanupParams::of(
        &policy,
        &explicit,
        dry_run,
        trigger,
        state.clock.now(),
    )?)
}

/// What a cleanup of the policy would delete now, counted from the data.
#[utoipa::path(
    post,
    path = "/v1/retention/preview",
    operation_id = "previewRetention",
    tag = "retention",
    security(("bearer" = [])),
    request_body = PolicyRef,
    responses(
        (status = 200, description = "The preview", body = RetentionPreview),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy", body = ErrorBody),
        (status = 422, description = "`validation_error`: a data-bucket policy (previewed by a dry run)",
            body = ErrorBody),
        LockedOut,
    )
)]
async fn preview_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PolicyRef>,
) -> Result<Json<RetentionPreview>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let params = run_params(&state, tenant, &body.policy_id, true, Trigger::Manual).await?;
    if params.target != longhaul_core::retention::PolicyTarget::AuditLog {
        return Err(ApiError::validation(
            "policyId",
            "previews cover audit-log policies; run a data-bucket policy with dryRun: true",
        ));
    }
    let preview = preview(
        state.stores.as_ref(),
        &tenant.id,
        &params,
        state.clock.now(),
    )
    .await?;
    Ok(Json(preview))
}

/// `POST /v1/retention/cleanup`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanupRequest {
    /// `rtp_…` or `default`.
    pub policy_id: String,
    /// Count what would be deleted, delete nothing (default false).
    #[serde(default)]
    pub dry_run: bool,
}

/// The archive of a run, with a short-lived link once stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveView {
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
    pub events: u64,
    pub expires_at: DateTime<Utc>,
    pub download_url: Option<String>,
    pub download_expires_at: Option<DateTime<Utc>>,
}

/// Progress of a run: events looked at so far.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionProgress {
    pub current: u64,
    pub total: Option<u64>,
}

/// A cleanup run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionView {
    #[schema(example = "rex_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub execution_id: String,
    #[schema(value_type = String)]
    pub job_id: JobId,
    pub status: JobState,
    pub policy_id: String,
    pub dry_run: bool,
    pub trigger: Trigger,
    /// Data older than this had expired when the run was created.
    pub cutoff: DateTime<Utc>,
    pub progress: ExecutionProgress,
    #[serde(flatten)]
    pub counts: CleanupCounts,
    pub archive: Option<ArchiveView>,
    /// Objects a `notify` data-bucket policy (or a dry run) found expired,
    /// the first 1,000; nothing was done to them.
    pub expiring: Vec<ExpiringObject>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub error: Option<PublicError>,
}

impl ExecutionView {
    fn of(job: Job) -> Result<Self, ApiError> {
        let unreadable = |error: longhaul_core::Error| {
            tracing::error!(job_id = %job.id, %error, "an unreadable retention cleanup job");
            ApiError::internal()
        };
        let params = job.params_of::<RetentionCleanup>().map_err(unreadable)?;
        let output = job.output_of::<RetentionCleanup>().map_err(unreadable)?;
        let checkpoint = job
            .checkpoint_of::<RetentionCleanup>()
            .map_err(unreadable)?;
        let (counts, archive, expiring): (CleanupCounts, Option<CleanupArchive>, _) =
            match (output, checkpoint) {
                (Some(output), _) => (output.counts, output.archive, output.expiring),
                (None, Some(checkpoint)) => {
                    (checkpoint.counts, checkpoint.archive, checkpoint.expiring)
                }
                (None, None) => (CleanupCounts::default(), None, Vec::new()),
            };
        Ok(ExecutionView {
            execution_id: execution_id(job.id),
            job_id: job.id,
            status: job.state,
            policy_id: params.policy_id,
            dry_run: params.dry_run,
            trigger: params.trigger,
            cutoff: params.cutoff,
            progress: ExecutionProgress {
                current: job
                    .progress
                    .as_ref()
                    .map_or(counts.events_processed, |p| p.current),
                total: job.progress.as_ref().and_then(|p| p.total),
            },
            counts,
            archive: archive.map(|a| ArchiveView {
                file_name: a.file_name,
                size: a.size,
                sha256: a.sha256,
                events: a.events,
                expires_at: a.expires_at,
                download_url: None,
                download_expires_at: None,
            }),
            expiring,
            created_at: job.created_at,
            started_at: job.started_at,
            completed_at: job.finished_at,
            error: job.tenant_error(),
        })
    }
}

/// Run a policy now (a job; one billable `audit.retention_cleanup`).
///
/// With archiving on, the expired events are first written to a gzipped
/// NDJSON archive in the tenant's artifact store and deleted only once it is
/// stored. Legal holds win over every policy.
#[utoipa::path(
    post,
    path = "/v1/retention/cleanup",
    operation_id = "startRetentionCleanup",
    tag = "retention",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
            description = "Makes a retried request answer the run the first one created"),
    ),
    request_body = CleanupRequest,
    responses(
        (status = 202, description = "Queued (or replayed)", body = ExecutionView,
            headers(("Location" = String, description = "`/v1/retention/executions/{id}`"))),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key; `tenant_suspended`",
            body = ErrorBody),
        (status = 404, description = "`not_found`: no such policy", body = ErrorBody),
        (status = 409, description = "`conflict`: the idempotency key was used for another request",
            body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad field or Idempotency-Key",
            body = ErrorBody),
        (status = 429, description = "`rate_limited`, `quota_exceeded` or `brute_force_lockout`",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn start_cleanup(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CleanupRequest>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let key = idempotency_key(&headers)?;
    if let Some(key) = key.as_deref() {
        if let Some(job) = state.jobs.find_by_idempotency_key(&tenant.id, key).await? {
            return replay(job, &body);
        }
    }
    let params = run_params(
        &state,
        tenant,
        &body.policy_id,
        body.dry_run,
        Trigger::Manual,
    )
    .await?;
    let request =
        EnqueueRequest::of::<RetentionCleanup>(tenant.id.clone(), &params)?.idempotency_key(key);
    let (job, created) = admit(&state, &caller, tenant, request).await?;
    if !created {
        return replay(job, &body);
    }
    let view = ExecutionView::of(job)?;
    let location = format!("/v1/retention/executions/{}", view.execution_id);
    Ok(accepted(view, &location, true))
}

/// The run an Idempotency-Key already created, if it was this request.
fn replay(job: Job, body: &CleanupRequest) -> Result<Response, ApiError> {
    let same = job.kind == RETENTION_CLEANUP
        && job
            .params_of::<RetentionCleanup>()
            .is_ok_and(|p| p.policy_id == body.policy_id && p.dry_run == body.dry_run);
    if !same {
        return Err(ApiError::conflict(
            "the Idempotency-Key was already used for another request",
        ));
    }
    let view = ExecutionView::of(job)?;
    let location = format!("/v1/retention/executions/{}", view.execution_id);
    Ok(accepted(view, &location, false))
}

/// One page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionPage {
    pub data: Vec<ExecutionView>,
    pub next_cursor: Option<String>,
}

/// List the tenant's cleanup runs, newest first.
#[utoipa::path(
    get,
    path = "/v1/retention/executions",
    operation_id = "listRetentionExecutions",
    tag = "retention",
    security(("bearer" = [])),
    params(Page),
    responses(
        (status = 200, description = "One page", body = ExecutionPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_executions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<Page>,
) -> Result<Json<ExecutionPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let (jobs, next_cursor) =
        list_scan_jobs(&state, tenant, RETENTION_CLEANUP, EXECUTION_PREFIX, query).await?;
    let data = jobs
        .into_iter()
        .map(ExecutionView::of)
        .collect::<Result<_, _>>()?;
    Ok(Json(ExecutionPage { data, next_cursor }))
}

/// A cleanup run: status, counts and, once archived, the archive's link.
#[utoipa::path(
    get,
    path = "/v1/retention/executions/{id}",
    operation_id = "getRetentionExecution",
    tag = "retention",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`rex_…`")),
    responses(
        (status = 200, description = "The run", body = ExecutionView),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such run of this tenant", body = ErrorBody),
        LockedOut,
    )
)]
async fn get_execution(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let not_found = || ApiError::not_found(format!("retention execution {id} not found"));
    let job_id = parse_execution_id(&id).map_err(|_| not_found())?;
    let job = state
        .jobs
        .get(&tenant.id, job_id)
        .await
        .map_err(|error| match error {
            longhaul_core::Error::NotFound(_) => not_found(),
            other => other.into(),
        })?;
    if job.kind != RETENTION_CLEANUP {
        return Err(not_found());
    }
    let mut view = ExecutionView::of(job)?;
    if let Some(archive) = view.archive.as_mut() {
        let records = state.stores.job_artifacts(&tenant.id, job_id).await?;
        if let Some(record) = records
            .iter()
            .find(|r| r.name == "archive" && r.status == ArtifactStatus::Stored)
        {
            let link = state.download_link(record).await?;
            archive.download_url = Some(link.url);
            archive.download_expires_at = Some(link.expires_at);
        }
    }
    Ok(Json(view))
}

/// The audit log's size by age, and what cleanups have reclaimed.
#[utoipa::path(
    get,
    path = "/v1/retention/metrics",
    operation_id = "getRetentionMetrics",
    tag = "retention",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The metrics", body = RetentionMetrics),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        LockedOut,
    )
)]
async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<RetentionMetrics>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    Ok(Json(
        state
            .stores
            .retention_metrics(&tenant.id, state.clock.now())
            .await?,
    ))
}

fn hold_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("legal hold {id} not found"))
}

fn map_hold_error(id: &str) -> impl Fn(longhaul_core::Error) -> ApiError + '_ {
    move |error| match error {
        longhaul_core::Error::NoSuchResource { .. } => hold_not_found(id),
        other => other.into(),
    }
}

/// Place a legal hold: what it covers is never deleted, whatever the
/// policies say, until it is released or expires.
#[utoipa::path(
    post,
    path = "/v1/retention/holds",
    operation_id = "createLegalHold",
    tag = "retention",
    security(("bearer" = [])),
    request_body = NewLegalHold,
    responses(
        (status = 201, description = "Placed", body = LegalHold),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 422, description = "`validation_error`: an empty scope, a bad glob, a past \
            expiry", body = ErrorBody),
        (status = 429, description = "`quota_exceeded`: 100 active holds (nothing written) or \
            `brute_force_lockout`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn create_hold(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewLegalHold>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let now = state.clock.now();
    body.check(now)?;
    let covered = covered(state.stores.as_ref(), &tenant.id, &body.scope).await?;
    let hold = state
        .stores
        .create_legal_hold(&tenant.id, &body, covered, now, &caller.actor())
        .await?;
    let location = format!("/v1/retention/holds/{}", hold.hold_id);
    Ok(created(hold, &location))
}

/// One page of holds (active, released and expired), oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HoldPage {
    pub data: Vec<LegalHold>,
    pub next_cursor: Option<String>,
}

/// List the tenant's legal holds.
#[utoipa::path(
    get,
    path = "/v1/retention/holds",
    operation_id = "listLegalHolds",
    tag = "retention",
    security(("bearer" = [])),
    params(IdPage),
    responses(
        (status = 200, description = "One page", body = HoldPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_holds(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<IdPage>,
) -> Result<Json<HoldPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let limit = page_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| parse_hold_id(c).map_err(|_| bad_cursor()))
        .transpose()?;
    let mut data = state
        .stores
        .list_legal_holds(&tenant.id, after, limit + 1, state.clock.now())
        .await?;
    let next_cursor = trim_page(&mut data, limit).map(|h| h.hold_id.clone());
    Ok(Json(HoldPage { data, next_cursor }))
}

/// A legal hold.
#[utoipa::path(
    get,
    path = "/v1/retention/holds/{id}",
    operation_id = "getLegalHold",
    tag = "retention",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`hld_…`")),
    responses(
        (status = 200, description = "The hold", body = LegalHold),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn get_hold(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<LegalHold>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let uuid = parse_hold_id(&id).map_err(|_| hold_not_found(&id))?;
    let hold = state
        .stores
        .get_legal_hold(&tenant.id, uuid, state.clock.now())
        .await
        .map_err(map_hold_error(&id))?;
    Ok(Json(hold))
}

/// What releasing answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Released {
    pub hold_id: String,
    pub released_at: DateTime<Utc>,
    /// Audit events and objects the hold covered when released.
    pub objects_released: u64,
}

/// Release a legal hold (audited); what it covered follows the policies again.
#[utoipa::path(
    post,
    path = "/v1/retention/holds/{id}/release",
    operation_id = "releaseLegalHold",
    tag = "retention",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`hld_…`")),
    responses(
        (status = 200, description = "Released", body = Released),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: already released", body = ErrorBody),
        LockedOut,
    )
)]
async fn release_hold(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Released>, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let uuid = parse_hold_id(&id).map_err(|_| hold_not_found(&id))?;
    let now = state.clock.now();
    let hold = state
        .stores
        .get_legal_hold(&tenant.id, uuid, now)
        .await
        .map_err(map_hold_error(&id))?;
    let covered = covered(state.stores.as_ref(), &tenant.id, &hold.scope).await?;
    let released = state
        .stores
        .release_legal_hold(&tenant.id, uuid, covered, now, &caller.actor())
        .await
        .map_err(map_hold_error(&id))?;
    Ok(Json(Released {
        hold_id: released.hold_id,
        released_at: released.released_at.unwrap_or(now),
        objects_released: covered,
    }))
}
