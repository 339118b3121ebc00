//! `/v1/audit/exports`: a tenant's audit log exported to a file. `POST` fixes
//! the time range (checked against the tenant's audit retention) and queues an
//! `audit.export` job, answering `202` at once; `GET …/{id}` polls its status,
//! progress (rows done / rows estimated) and, once done, the row count, size,
//! sha256 and a short-lived `downloadUrl`; `GET` lists them, newest first.
//! An export is its job: `exp_<hex>` names job `job_<hex>`, so cancel and
//! Server-Sent Events come from the job endpoints. Admin keys only (the log
//! names keys and IPs).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use longhaul_core::artifacts::records::ArtifactStatus;
use longhaul_core::audit::export::{
    AuditExport, ExportFilters, ExportFormat, ExportRequest, AUDIT_EXPORT, EXPORT_ARTIFACT,
};
use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::{Job, JobFilter};
use longhaul_core::tenancy::Role;
use longhaul_core::{JobId, JobState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::{BodyRejected, LockedOut, TooLarge, Unauthorized};
use crate::routes::jobs::{accepted, admit, idempotency_key, DEFAULT_PAGE};
use crate::state::AppState;
use longhaul_core::failure::PublicError;

const EXPORT_PREFIX: &str = "exp_";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read))
}

/// Rows of an export: done so far and the estimate taken when it started.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportProgress {
    pub rows_done: u64,
    pub rows_estimated: Option<u64>,
}

/// An audit export as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AuditExport)]
pub struct ExportView {
    #[schema(example = "exp_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub export_id: String,
    /// The job carrying the export (cancel it, or follow its events).
    #[schema(value_type = String, example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub job_id: JobId,
    pub status: JobState,
    pub format: ExportFormat,
    pub gzip: bool,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub filters: ExportFilters,
    pub progress: ExportProgress,
    /// Rows in the file (once succeeded).
    pub row_count: Option<u64>,
    /// Size of the file in bytes (once succeeded).
    pub bytes: Option<u64>,
    /// Hex sha256 of the file (once succeeded).
    pub sha256: Option<String>,
    pub file_name: String,
    /// A link to the file, valid until `downloadExpiresAt`; only in
    /// `GET /v1/audit/exports/{id}` of a succeeded export (poll again for a
    /// fresh one).
    pub download_url: Option<String>,
    pub download_expires_at: Option<DateTime<Utc>>,
    /// When the file is deleted (the tenant's artifact retention).
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The last failure, as a stable code and a short message (none once
    /// succeeded; the raw error is kept for operators).
    pub error: Option<PublicError>,
}

fn export_id(job: JobId) -> String {
    let text = job.to_string();
    format!(
        "{EXPORT_PREFIX}{}",
        text.split_once('_').map_or(text.as_str(), |(_, hex)| hex)
    )
}

/// The job of an export id; anything malformed names no export (404).
fn export_job_id(text: &str) -> Result<JobId, ApiError> {
    text.strip_prefix(EXPORT_PREFIX)
        .and_then(|hex| format!("job_{hex}").parse().ok())
        .ok_or_else(|| ApiError::not_found(format!("export {text} not found")))
}

impl ExportView {
    fn of(job: Job) -> Result<Self, ApiError> {
        let unreadable = |error: longhaul_core::Error| {
            tracing::error!(job_id = %job.id, %error, "an unreadable audit export job");
            ApiError::internal()
        };
        let params = job.params_of::<AuditExport>().map_err(unreadable)?;
        let output = job.output_of::<AuditExport>().map_err(unreadable)?;
        let artifact = output.as_ref().map(|output| &output.artifact);
        let rows_done = job.progress.as_ref().map_or(0, |p| p.current);
        let error = job.tenant_error();
        Ok(ExportView {
            export_id: export_id(job.id),
            job_id: job.id,
            status: job.state,
            format: params.format,
            gzip: params.gzip,
            from: params.from,
            to: params.to,
            file_name: params.file_name(),
            filters: params.filters,
            progress: ExportProgress {
                rows_done: output.as_ref().map_or(rows_done, |output| output.rows),
                rows_estimated: job.progress.as_ref().and_then(|p| p.total),
            },
            row_count: output.as_ref().map(|output| output.rows),
            bytes: artifact.map(|a| a.size),
            sha256: artifact.map(|a| a.sha256.clone()),
            download_url: None,
            download_expires_at: None,
            expires_at: artifact.map(|a| a.expires_at),
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            error,
        })
    }
}

/// Export the tenant's audit log.
///
/// The range defaults to the whole retention (`from`) up to now (`to`); it is
/// fixed here, so retries export the same rows. `from` older than the
/// tenant's `auditLogRetentionDays` is refused. One billable operation, under
/// the tenant's job quotas; `Idempotency-Key` as for jobs.
#[utoipa::path(
    post,
    path = "/v1/audit/exports",
    operation_id = "createAuditExport",
    tag = "audit",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
            description = "Makes a retried request answer the export the first one created"),
    ),
    request_body = ExportRequest,
    responses(
        (status = 202, description = "Queued (or replayed by its idempotency key)", body = ExportView,
            headers(("Location" = String, description = "`/v1/audit/exports/{id}`"))),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key; `tenant_suspended`",
            body = ErrorBody),
        (status = 409, description = "`conflict`: the idempotency key was used with other params",
            body = ErrorBody),
        TooLarge,
        (status = 422, description = "`validation_error`: bad format, range (over the retention, \
            in the future, empty) or filter", body = ErrorBody),
        (status = 429, description = "`rate_limited`, `quota_exceeded` or `brute_force_lockout`",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 503, description = "`unavailable`: no artifact storage for the tenant's region",
            body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ExportRequest>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Admin)?;
    let key = idempotency_key(&headers)?;
    // A retried request answers the export the first one created, although
    // its defaulted range ("until now") would resolve differently today.
    if let Some(key) = &key {
        if let Some(job) = state.jobs.find_by_idempotency_key(&tenant.id, key).await? {
            let same = job
                .params_of::<AuditExport>()
                .is_ok_and(|params| body.matches(&params));
            if !same {
                return Err(ApiError::conflict(
                    "the Idempotency-Key was already used for another export or job",
                ));
            }
            let view = ExportView::of(job)?;
            let location = format!("/v1/audit/exports/{}", view.export_id);
            return Ok(accepted(view, &location, false));
        }
    }
    let params = body.resolve(state.clock.now(), tenant.audit_log_retention_days())?;
    // Refused up front rather than failing in the worker.
    state.artifact_store(&tenant.region)?;
    let request =
        EnqueueRequest::of::<AuditExport>(tenant.id.clone(), &params)?.idempotency_key(key);
    let (job, created) = admit(&state, &caller, tenant, request).await?;
    if job.kind != AUDIT_EXPORT {
        return Err(ApiError::conflict(
            "the Idempotency-Key was used for a job that is not an audit export",
        ));
    }
    let view = ExportView::of(job)?;
    let location = format!("/v1/audit/exports/{}", view.export_id);
    Ok(accepted(view, &location, created))
}

/// `GET /v1/audit/exports` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListExports {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of exports, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportPage {
    pub data: Vec<ExportView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// List the tenant's audit exports, newest first (without download links).
#[utoipa::path(
    get,
    path = "/v1/audit/exports",
    operation_id = "listAuditExports",
    tag = "audit",
    security(("bearer" = [])),
    params(ListExports),
    responses(
        (status = 200, description = "One page of exports", body = ExportPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListExports>,
) -> Result<Json<ExportPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let after = query
        .cursor
        .as_deref()
        .map(|text| {
            text.strip_prefix(EXPORT_PREFIX)
                .and_then(|hex| format!("job_{hex}").parse::<JobId>().ok())
                .ok_or_else(|| ApiError::validation("cursor", "is not a cursor this API returned"))
        })
        .transpose()?;
    let filter = JobFilter {
        kind: Some(AUDIT_EXPORT.into()),
        ..JobFilter::default()
    };
    let page = state
        .jobs
        .list(
            &tenant.id,
            &filter,
            after,
            query.limit.unwrap_or(DEFAULT_PAGE),
        )
        .await?;
    Ok(Json(ExportPage {
        data: page
            .jobs
            .into_iter()
            .map(ExportView::of)
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor.map(export_id),
    }))
}

/// An export's status, progress and, once succeeded, a download link.
#[utoipa::path(
    get,
    path = "/v1/audit/exports/{id}",
    operation_id = "getAuditExport",
    tag = "audit",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`exp_…`")),
    responses(
        (status = 200, description = "The export", body = ExportView),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such export of this tenant", body = ErrorBody),
        LockedOut,
    )
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ExportView>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let job_id = export_job_id(&id)?;
    let job = state
        .jobs
        .get(&tenant.id, job_id)
        .await
        .map_err(|error| match error {
            longhaul_core::Error::NotFound(_) => {
                ApiError::not_found(format!("export {id} not found"))
            }
            other => other.into(),
        })?;
    if job.kind != AUDIT_EXPORT {
        return Err(ApiError::not_found(format!("export {id} not found")));
    }
    let succeeded = job.state == JobState::Succeeded;
    let mut view = ExportView::of(job)?;
    if succeeded {
        let records = state.stores.job_artifacts(&tenant.id, job_id).await?;
        if let Some(record) = records
            .iter()
            .find(|r| r.name == EXPORT_ARTIFACT && r.status == ArtifactStatus::Stored)
        {
            let link = state.download_link(record).await?;
            view.download_url = Some(link.url);
            view.download_expires_at = Some(link.expires_at);
        }
    }
    Ok(Json(view))
}
