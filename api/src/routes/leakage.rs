//! `/v1/leakage/scans`, `/v1/leakage/incidents`, `/v1/leakage/stats`:
//! leakage scans and what they found. `POST …/scans` checks the targets,
//! stores inline texts as objects (never in the job), takes a snapshot of the
//! policies and queues a `leakage.scan` job, answering `202` at once; a scan
//! is its job (`lks_<hex>` = `job_<hex>`: cancel and events come from the job
//! endpoints). Findings and incidents show secrets only redacted. Creating
//! scans and changing incidents needs a developer key; reading, any key.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use longhaul_core::artifacts::artifact_key;
use longhaul_core::artifacts::records::INPUT_PREFIX;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::{Job, JobFilter, JobInput};
use longhaul_core::scans::leakage::{
    LeakageScan, LeakageScanParams, LeakageScanRequest, PendingSource, Source, SourceRules,
    INCIDENT_PREFIX, LEAKAGE_SCAN, SCAN_PREFIX,
};
use longhaul_core::scans::{
    scan_id, scan_job_id, Incident, IncidentFilter, IncidentStatus, LeakageFinding, LeakageStats,
    PolicyFamily,
};
use longhaul_core::tenancy::{Role, Tenant};
use longhaul_core::{JobId, JobState};
use longhaul_scan::Severity;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::{BodyRejected, LockedOut, TooLarge, Unauthorized};
use crate::routes::jobs::{accepted, admit, idempotency_key};
use crate::routes::scan_policies::{page_limit, scan_policies, snapshot_ids};
use crate::state::AppState;
use longhaul_core::failure::PublicError;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_scan, list_scans))
        .routes(routes!(read_scan))
        .routes(routes!(list_findings))
        .routes(routes!(list_incidents))
        .routes(routes!(read_incident, update_incident))
        .routes(routes!(stats))
}

/// A scan's job, if `id` names one of the tenant's scans of `kind`.
pub(crate) async fn scan_job(
    state: &AppState,
    tenant: &Tenant,
    prefix: &str,
    kind: &str,
    id: &str,
) -> Result<Job, ApiError> {
    let missing = || ApiError::not_found(format!("scan {id} not found"));
    let job_id = scan_job_id(prefix, id).ok_or_else(missing)?;
    match state.jobs.get(&tenant.id, job_id).await {
        Ok(job) if job.kind == kind => Ok(job),
        Ok(_) | Err(longhaul_core::Error::NotFound(_)) => Err(missing()),
        Err(other) => Err(other.into()),
    }
}

/// The scan an earlier request with this `Idempotency-Key` created, if any;
/// `409` if the key named another job or a scan made from another body.
pub(crate) async fn replayed_scan(
    state: &AppState,
    tenant: &Tenant,
    key: Option<&str>,
    kind: &str,
    request_sha256: &str,
) -> Result<Option<Job>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    match state.jobs.find_by_idempotency_key(&tenant.id, key).await? {
        Some(job) => check_same_scan(&job, kind, request_sha256).map(|()| Some(job)),
        None => Ok(None),
    }
}

/// `409` unless `job` is a scan of `kind` made from a body with this hash.
pub(crate) fn check_same_scan(job: &Job, kind: &str, request_sha256: &str) -> Result<(), ApiError> {
    let same = job.kind == kind
        && job.params.get("requestSha256").and_then(Value::as_str) == Some(request_sha256);
    if same {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "the Idempotency-Key was already used for another scan or job",
        ))
    }
}

/// The hex sha256 of a request body, to tell replays from reuse of a key.
pub(crate) fn request_sha256(body: &impl Serialize) -> Result<String, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|error| {
        tracing::error!(%error, "encoding a scan request");
        ApiError::internal()
    })?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A rough finish time: a few seconds per URL, half a minute per
/// repository, a minute per bucket prefix, inline text at 50 MB/s.
fn estimated_seconds(sources: &[Source]) -> i64 {
    sources
        .iter()
        .map(|source| match source {
            Source::Inline { size, .. } => 1 + (*size / 50_000_000) as i64,
            Source::Url { .. } => 5,
            Source::Git { .. } | Source::Repository { .. } => 30,
            Source::Organization { .. } => 120,
            Source::Bucket { .. } => 60,
        })
        .sum()
}

/// Bytes and objects a scan has read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanProgress {
    pub bytes_scanned: u64,
    /// The bytes to read, where known when the scan started (classification
    /// scans; leakage scans of git or URLs cannot know it).
    pub bytes_total: Option<u64>,
    pub objects_scanned: u64,
    /// Where it is, e.g. `source 2 of 3, 120 objects`.
    pub message: Option<String>,
}

impl ScanProgress {
    /// A scan's progress: `finished` is what its result says (bytes,
    /// objects) once it succeeded; until then, its progress and the objects
    /// its checkpoint says are done.
    pub(crate) fn of(job: &Job, finished: Option<(u64, u64)>, objects_done: Option<u64>) -> Self {
        ScanProgress {
            bytes_scanned: finished.map_or_else(
                || job.progress.as_ref().map_or(0, |p| p.current),
                |(bytes, _)| bytes,
            ),
            bytes_total: job.progress.as_ref().and_then(|p| p.total),
            objects_scanned: finished
                .map(|(_, objects)| objects)
                .or(objects_done)
                .unwrap_or(0),
            message: job.progress.as_ref().and_then(|p| p.message.clone()),
        }
    }
}

/// A leakage scan as clients see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeakageScanView {
    #[schema(example = "lks_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub scan_id: String,
    #[schema(value_type = String, example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub job_id: JobId,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: JobState,
    /// What is scanned (URLs without credentials, inline texts by name).
    pub sources: Vec<String>,
    /// The policies it runs, with their version when the scan was created.
    #[schema(value_type = Vec<Object>)]
    pub policies: Value,
    pub builtin_rules: bool,
    pub progress: ScanProgress,
    pub findings_count: u64,
    /// A rough estimate while queued or running.
    pub estimated_completion_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The last failure, as a stable code and a short message (none once
    /// succeeded; the raw error is kept for operators).
    pub error: Option<PublicError>,
}

impl LeakageScanView {
    fn of(job: Job, findings_count: u64) -> Result<Self, ApiError> {
        let unreadable = |error: longhaul_core::Error| {
            tracing::error!(job_id = %job.id, %error, "an unreadable leakage scan job");
            ApiError::internal()
        };
        let params = job.params_of::<LeakageScan>().map_err(unreadable)?;
        let output = job.output_of::<LeakageScan>().map_err(unreadable)?;
        let checkpoint = job.checkpoint_of::<LeakageScan>().map_err(unreadable)?;
        let estimate = chrono::Duration::seconds(estimated_seconds(&params.sources));
        let estimated_completion_at = match job.state {
            JobState::Queued => Some(job.run_at.max(job.created_at) + estimate),
            JobState::Running => job.started_at.map(|at| at + estimate),
            _ => None,
        };
        let error = job.tenant_error();
        Ok(LeakageScanView {
            scan_id: scan_id(SCAN_PREFIX, job.id),
            job_id: job.id,
            status: job.state,
            sources: params.sources.iter().map(Source::label).collect(),
            policies: snapshot_ids(&params.policies),
            builtin_rules: params.builtin_rules,
            progress: ScanProgress::of(
                &job,
                output.map(|o| (o.bytes, o.objects)),
                checkpoint.map(|c| c.objects_done),
            ),
            findings_count,
            estimated_completion_at,
            created_at: job.created_at,
            started_at: job.started_at,
            completed_at: job.finished_at,
            error,
        })
    }
}

/// Stores inline texts in the tenant's artifact store; the sources with
/// their object keys. Objects already stored are removed if one fails.
async fn stage_sources(
    state: &AppState,
    tenant: &Tenant,
    pending: Vec<PendingSource<'_>>,
) -> Result<(Vec<Source>, Vec<JobInput>), ApiError> {
    let batch = uuid::Uuid::now_v7().simple().to_string();
    let mut sources = Vec::with_capacity(pending.len());
    let mut staged = Vec::new();
    for (index, source) in pending.into_iter().enumerate() {
        match source {
            PendingSource::Ready(source) => sources.push(source),
            PendingSource::Inline { name, content } => {
                let store = match state.artifact_store(&tenant.region) {
                    Ok(store) => store,
                    Err(error) => {
                        unstage(state, tenant, &sources).await;
                        return Err(error);
                    }
                };
                let key = match artifact_key(
                    &tenant.id,
                    LEAKAGE_SCAN,
                    &format!("input-{batch}"),
                    &format!("inline-{index}"),
                ) {
                    Ok(key) => key,
                    Err(error) => {
                        tracing::error!(%error, "an inline scan text key");
                        unstage(state, tenant, &sources).await;
                        return Err(ApiError::internal());
                    }
                };
                let stored = async {
                    let mut upload = store.start_upload(&key).await?;
                    upload
                        .write(bytes::Bytes::copy_from_slice(content.as_bytes()))
                        .await?;
                    upload.complete().await
                }
                .await;
                let stored = match stored {
                    Ok(stored) => stored,
                    Err(error) => {
                        tracing::error!(%error, "storing an inline scan text");
                        unstage(state, tenant, &sources).await;
                        return Err(ApiError::new(
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "the object store did not take the inline text; try again",
                        ));
                    }
                };
                let now = state.clock.now();
                staged.push(JobInput {
                    name: format!("{INPUT_PREFIX}inline-{index}"),
                    region: tenant.region.clone(),
                    object_key: stored.key,
                    content_type: "text/plain".into(),
                    size: stored.size,
                    sha256: stored.sha256,
                    stored_at: now,
                    expires_at: now + INPUT_RETENTION,
                });
                sources.push(Source::Inline {
                    name,
                    object_key: key,
                    size: content.len() as u64,
                });
            }
        }
    }
    Ok((sources, staged))
}

/// How long an inline text may outlive its scan at most: the scan deletes it
/// when it ends, and the artifact sweeper when this has passed (a scan
/// cancelled before it ran) or its job was purged.
const INPUT_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Removes inline texts a refused request stored.
async fn unstage(state: &AppState, tenant: &Tenant, sources: &[Source]) {
    let Ok(store) = state.artifact_store(&tenant.region) else {
        return;
    };
    for source in sources {
        if let Source::Inline { object_key, .. } = source {
            if let Err(error) = store.delete(object_key).await {
                tracing::warn!(%error, key = %object_key, "removing an unused inline scan text");
            }
        }
    }
}

/// Scan targets for leaked secrets.
///
/// `targets`: `git` (`url`, or `path` where the deployment allows local
/// paths), `github`/`gitlab` (`repositories` as `owner/name`,
/// `organizations`), `url`, `inline` (`name`, `content`), `bucket`
/// (`bucket`, `prefixes`); `scope`: more `buckets` × `prefixes`, and `paths`
/// globs that limit what is read. The built-in ruleset runs unless
/// `builtinRules` is false; with the named policies, or else the tenant's
/// enabled ones. One billable operation, under the tenant's job quotas;
/// `Idempotency-Key` as for jobs.
#[utoipa::path(
    post,
    path = "/v1/leakage/scans",
    operation_id = "createLeakageScan",
    tag = "leakage",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
            description = "Makes a retried request answer the scan the first one created"),
    ),
    request_body = LeakageScanRequest,
    responses(
        (status = 202, description = "Queued (or replayed by its idempotency key)", body = LeakageScanView,
            headers(("Location" = String, description = "`/v1/leakage/scans/{id}`"))),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key; `tenant_suspended`",
            body = ErrorBody),
        (status = 409, description = "`conflict`: the idempotency key was used for another request",
            body = ErrorBody),
        TooLarge,
        (status = 422, description = "`validation_error`: a bad target (named by its index), \
            a bucket the tenant does not have, an unknown policy", body = ErrorBody),
        (status = 429, description = "`rate_limited`, `quota_exceeded` or `brute_force_lockout`",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 503, description = "`unavailable`: no object storage for inline texts",
            body = ErrorBody),
    )
)]
async fn create_scan(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LeakageScanRequest>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    let key = idempotency_key(&headers)?;
    let request_sha256 = request_sha256(&body)?;
    if let Some(job) = replayed_scan(
        &state,
        tenant,
        key.as_deref(),
        LEAKAGE_SCAN,
        &request_sha256,
    )
    .await?
    {
        let count = state.stores.count_findings(&tenant.id, job.id).await?;
        let view = LeakageScanView::of(job, count)?;
        let location = format!("/v1/leakage/scans/{}", view.scan_id);
        return Ok(accepted(view, &location, false));
    }
    let rules = SourceRules::of(&tenant.settings, &state.scans);
    let pending = body.sources(&rules)?;
    let policies = scan_policies(
        &state,
        tenant,
        PolicyFamily::Leakage,
        body.policy_ids.as_deref(),
    )
    .await?;
    let builtin_rules = body.builtin_rules.unwrap_or(true);
    if !builtin_rules && policies.is_empty() {
        return Err(ApiError::validation(
            "builtinRules",
            "with the built-in rules off, name at least one policy (the tenant has no enabled one)",
        ));
    }
    // From here on, a refusal removes the inline texts stored.
    let (sources, staged) = stage_sources(&state, tenant, pending).await?;
    let params = LeakageScanParams {
        sources,
        include_paths: body.scope.paths.clone(),
        builtin_rules,
        policies,
        request_sha256: Some(request_sha256.clone()),
    };
    let request = match EnqueueRequest::of::<LeakageScan>(tenant.id.clone(), &params) {
        Ok(request) => EnqueueRequest {
            inputs: staged,
            ..request.idempotency_key(key)
        },
        Err(error) => {
            unstage(&state, tenant, &params.sources).await;
            return Err(error.into());
        }
    };
    let (job, created) = match admit(&state, &caller, tenant, request).await {
        Ok(admitted) => admitted,
        Err(error) => {
            unstage(&state, tenant, &params.sources).await;
            return Err(error);
        }
    };
    if !created {
        // A concurrent request with the same key won: ours is unused, and
        // it must have been the same request.
        unstage(&state, tenant, &params.sources).await;
        check_same_scan(&job, LEAKAGE_SCAN, &request_sha256)?;
    }
    let view = LeakageScanView::of(job, 0)?;
    let location = format!("/v1/leakage/scans/{}", view.scan_id);
    Ok(accepted(view, &location, created))
}

/// `GET` listings of scans, findings and incidents.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of scans, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeakageScanPage {
    pub data: Vec<LeakageScanView>,
    pub next_cursor: Option<String>,
}

/// List the tenant's leakage scans, newest first.
#[utoipa::path(
    get,
    path = "/v1/leakage/scans",
    operation_id = "listLeakageScans",
    tag = "leakage",
    security(("bearer" = [])),
    params(Page),
    responses(
        (status = 200, description = "One page", body = LeakageScanPage),
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
) -> Result<Json<LeakageScanPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let (jobs, next_cursor) =
        list_scan_jobs(&state, tenant, LEAKAGE_SCAN, SCAN_PREFIX, query).await?;
    let mut data = Vec::with_capacity(jobs.len());
    for job in jobs {
        let count = state.stores.count_findings(&tenant.id, job.id).await?;
        data.push(LeakageScanView::of(job, count)?);
    }
    Ok(Json(LeakageScanPage { data, next_cursor }))
}

/// A page of a tenant's scans of `kind`, newest first, and the next cursor.
pub(crate) async fn list_scan_jobs(
    state: &AppState,
    tenant: &Tenant,
    kind: &str,
    prefix: &str,
    query: Page,
) -> Result<(Vec<Job>, Option<String>), ApiError> {
    let limit = page_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(|text| {
            scan_job_id(prefix, text)
                .ok_or_else(|| ApiError::validation("cursor", "is not a cursor this API returned"))
        })
        .transpose()?;
    let filter = JobFilter {
        kind: Some(kind.into()),
        ..JobFilter::default()
    };
    let page = state.jobs.list(&tenant.id, &filter, after, limit).await?;
    Ok((page.jobs, page.next_cursor.map(|job| scan_id(prefix, job))))
}

/// A leakage scan's status, progress and findings count.
#[utoipa::path(
    get,
    path = "/v1/leakage/scans/{id}",
    operation_id = "getLeakageScan",
    tag = "leakage",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`lks_…`")),
    responses(
        (status = 200, description = "The scan", body = LeakageScanView),
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
) -> Result<Json<LeakageScanView>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let job = scan_job(&state, tenant, SCAN_PREFIX, LEAKAGE_SCAN, &id).await?;
    let count = state.stores.count_findings(&tenant.id, job.id).await?;
    Ok(Json(LeakageScanView::of(job, count)?))
}

/// One page of a scan's findings, in the order they were found.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindingPage {
    pub data: Vec<LeakageFinding>,
    pub next_cursor: Option<String>,
}

/// `<micros>.<text>`: a keyset cursor of a time and a tie-breaker.
fn encode_cursor(at: DateTime<Utc>, text: &str) -> String {
    format!("{}.{text}", at.timestamp_micros())
}

fn decode_cursor(text: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    text.split_once('.')
        .and_then(|(micros, rest)| {
            let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
            (rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (at, rest.to_string()))
        })
        .ok_or_else(|| ApiError::validation("cursor", "is not a cursor this API returned"))
}

/// A scan's findings: rule, severity, where (source, commit, path, line,
/// column), the secret redacted, and its fingerprint (its incident).
#[utoipa::path(
    get,
    path = "/v1/leakage/scans/{id}/findings",
    operation_id = "listLeakageFindings",
    tag = "leakage",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`lks_…`"), Page),
    responses(
        (status = 200, description = "One page", body = FindingPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such scan of this tenant", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_findings(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<Page>,
) -> Result<Json<FindingPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let job = scan_job(&state, tenant, SCAN_PREFIX, LEAKAGE_SCAN, &id).await?;
    let mut data = state
        .stores
        .list_findings(&tenant.id, job.id, after.as_ref(), limit + 1)
        .await?;
    let next_cursor =
        crate::routes::trim_page(&mut data, limit).map(|f| encode_cursor(f.found_at, &f.key));
    Ok(Json(FindingPage { data, next_cursor }))
}

/// Where an incident's secret was last found.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentLocation {
    pub source: String,
    pub path: String,
    pub line: u64,
}

/// A leaked secret across every scan that found it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentView {
    #[schema(example = "inc_3f2a9c0d1e4b5a6978877665544332211")]
    pub id: String,
    pub fingerprint: String,
    pub rule: String,
    #[schema(value_type = String, example = "critical")]
    pub severity: Severity,
    #[schema(example = "AKIA****(20 chars)")]
    pub redacted: String,
    pub status: IncidentStatus,
    /// Findings of it, over all scans.
    pub occurrences: u64,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub first_scan_id: String,
    pub last_scan_id: String,
    pub last_location: IncidentLocation,
    /// The API key that last resolved or reopened it.
    pub resolved_by: Option<String>,
    /// When it was last resolved or reopened.
    pub resolved_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<Incident> for IncidentView {
    fn from(incident: Incident) -> Self {
        IncidentView {
            id: format!("{INCIDENT_PREFIX}{}", incident.fingerprint),
            fingerprint: incident.fingerprint,
            rule: incident.rule,
            severity: incident.severity,
            redacted: incident.redacted,
            status: incident.status,
            occurrences: incident.occurrences,
            first_seen_at: incident.first_seen_at,
            last_seen_at: incident.last_seen_at,
            first_scan_id: scan_id(SCAN_PREFIX, incident.first_job_id),
            last_scan_id: scan_id(SCAN_PREFIX, incident.last_job_id),
            last_location: IncidentLocation {
                source: incident.last_source,
                path: incident.last_path,
                line: incident.last_line,
            },
            resolved_by: incident.resolved_by,
            resolved_at: incident.resolved_at,
            note: incident.note,
            updated_at: incident.updated_at,
        }
    }
}

/// `GET /v1/leakage/incidents` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListIncidents {
    /// `open` or `resolved`.
    #[param(value_type = Option<String>)]
    pub status: Option<IncidentStatus>,
    /// `critical`, `high`, `medium` or `low`.
    #[param(value_type = Option<String>)]
    pub severity: Option<Severity>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// One page of incidents, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentPage {
    pub data: Vec<IncidentView>,
    pub next_cursor: Option<String>,
}

/// List incidents (one per leaked secret), newest first.
#[utoipa::path(
    get,
    path = "/v1/leakage/incidents",
    operation_id = "listLeakageIncidents",
    tag = "leakage",
    security(("bearer" = [])),
    params(ListIncidents),
    responses(
        (status = 200, description = "One page", body = IncidentPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_incidents(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListIncidents>,
) -> Result<Json<IncidentPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = IncidentFilter {
        status: query.status,
        severity: query.severity,
    };
    let mut incidents = state
        .stores
        .list_incidents(&tenant.id, &filter, after.as_ref(), limit + 1)
        .await?;
    let next_cursor = crate::routes::trim_page(&mut incidents, limit)
        .map(|i| encode_cursor(i.first_seen_at, &i.fingerprint));
    Ok(Json(IncidentPage {
        data: incidents.into_iter().map(IncidentView::from).collect(),
        next_cursor,
    }))
}

fn incident_fingerprint(id: &str) -> Result<&str, ApiError> {
    id.strip_prefix(INCIDENT_PREFIX)
        .filter(|f| f.len() == 32 && f.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ApiError::not_found(format!("incident {id} not found")))
}

/// An incident.
#[utoipa::path(
    get,
    path = "/v1/leakage/incidents/{id}",
    operation_id = "getLeakageIncident",
    tag = "leakage",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`inc_<fingerprint>`")),
    responses(
        (status = 200, description = "The incident", body = IncidentView),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn read_incident(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IncidentView>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let incident = state
        .stores
        .get_incident(&tenant.id, incident_fingerprint(&id)?)
        .await?;
    Ok(Json(incident.into()))
}

/// `PATCH /v1/leakage/incidents/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IncidentPatch {
    /// `resolved` (the secret was rotated or is not one) or `open` again.
    pub status: IncidentStatus,
    /// Why, up to 1000 characters.
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

/// Resolve or reopen an incident; who and when are recorded (and audited).
///
/// A resolved incident stays resolved when later scans find its secret again
/// (history keeps old commits): they add to its occurrences.
#[utoipa::path(
    patch,
    path = "/v1/leakage/incidents/{id}",
    operation_id = "updateLeakageIncident",
    tag = "leakage",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`inc_<fingerprint>`")),
    request_body = IncidentPatch,
    responses(
        (status = 200, description = "The incident", body = IncidentView),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad status or note", body = ErrorBody),
        LockedOut,
    )
)]
async fn update_incident(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<IncidentPatch>,
) -> Result<Json<IncidentView>, ApiError> {
    let tenant = caller.tenant_role(Role::Developer)?;
    let fingerprint = incident_fingerprint(&id)?;
    if let Some(note) = &body.note {
        if note.chars().count() > 1000 {
            return Err(ApiError::validation(
                "note",
                "must be at most 1000 characters",
            ));
        }
    }
    let incident = state
        .stores
        .set_incident_status(
            &tenant.id,
            fingerprint,
            body.status,
            body.note.as_deref(),
            state.clock.now(),
            &caller.actor(),
        )
        .await?;
    Ok(Json(incident.into()))
}

/// Findings and incidents of the tenant: totals, open and resolved, by
/// severity.
#[utoipa::path(
    get,
    path = "/v1/leakage/stats",
    operation_id = "getLeakageStats",
    tag = "leakage",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's leakage stats", body = LeakageStats),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        LockedOut,
    )
)]
async fn stats(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<LeakageStats>, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let stats = state.stores.leakage_stats(&tenant.id).await?;
    Ok(Json(stats))
}
