//! Getting at job artifacts: `GET /v1/jobs/{id}/result` redirects (302) to a
//! short-lived link to the job's artifact; `GET /v1/artifacts/{token}` serves
//! a local-store artifact to whoever holds an unexpired, HMAC-signed token
//! (the local store's presigned link; S3 links go to S3 itself). The token is
//! the credential, as a presigned URL's signature is: no API key is needed.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use longhaul_core::artifacts::records::{ArtifactStatus, INPUT_PREFIX};
use longhaul_core::artifacts::StorageError;
use longhaul_core::audit::export::AUDIT_EXPORT;
use longhaul_core::tenancy::Role;
use longhaul_core::JobState;
use tokio_util::io::ReaderStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiPath;
use crate::openapi::{LockedOut, Unauthorized};
use crate::routes::jobs::job_id;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(job_result))
        .routes(routes!(download))
}

/// Redirect to a download link of the job's result file.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/result",
    operation_id = "getJobResult",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`job_…`")),
    responses(
        (status = 302, description = "To a short-lived download link",
            headers(("Location" = String, description = "The link"))),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a tenant key (an admin key for an audit \
            export)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job, or it wrote no file", body = ErrorBody),
        (status = 409, description = "`conflict`: the job has not succeeded", body = ErrorBody),
        LockedOut,
    )
)]
async fn job_result(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let id = job_id(&id)?;
    let job = state.jobs.get(&tenant.id, id).await?;
    // An audit export holds the audit log, which only admins may read.
    if job.kind == AUDIT_EXPORT {
        caller.tenant_role(Role::Admin)?;
    }
    if job.state != JobState::Succeeded {
        return Err(ApiError::conflict(format!(
            "job {id} is {}; its result is ready once it succeeds",
            job.state
        )));
    }
    let records = state.stores.job_artifacts(&tenant.id, id).await?;
    let record = records
        .iter()
        .find(|r| r.status == ArtifactStatus::Stored && !r.name.starts_with(INPUT_PREFIX))
        .ok_or_else(|| ApiError::not_found(format!("job {id} wrote no result file")))?;
    let link = state.download_link(record).await?;
    let mut response = StatusCode::FOUND.into_response();
    let location = HeaderValue::from_str(&link.url).map_err(|_| ApiError::internal())?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Download an artifact through a signed link (local artifact storage).
#[utoipa::path(
    get,
    path = "/v1/artifacts/{token}",
    operation_id = "downloadArtifact",
    tag = "jobs",
    params(("token" = String, Path, description = "The signed token of a download link")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 404, description = "`not_found`: not a genuine link, or the file is gone",
            body = ErrorBody),
        (status = 410, description = "`link_expired`: ask for a new link", body = ErrorBody),
    )
)]
async fn download(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, ApiError> {
    let grant = state.verify_download(&token)?;
    let store = state.artifact_store(&grant.region)?;
    let reader = store.read(&grant.key).await.map_err(|error| match error {
        StorageError::NotFound(_) => ApiError::not_found("the file is no longer stored"),
        other => {
            tracing::error!(error = %other, key = %grant.key, "reading an artifact");
            ApiError::internal()
        }
    })?;
    let file_name = grant.key.rsplit('/').next().unwrap_or("artifact");
    let mut response =
        Body::from_stream(ReaderStream::with_capacity(reader.body, 64 * 1024)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_of(file_name)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(reader.size));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}

fn content_type_of(file_name: &str) -> &'static str {
    if file_name.ends_with(".gz") {
        "application/gzip"
    } else if file_name.ends_with(".csv") {
        "text/csv; charset=utf-8"
    } else if file_name.ends_with(".ndjson") {
        "application/x-ndjson"
    } else {
        "application/octet-stream"
    }
}
