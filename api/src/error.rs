//! The API's one error shape, `{"error": {"code", "message", "details"}}`,
//! and how every failure maps onto it: core errors, bad JSON, wrong content
//! type, oversize bodies, unknown routes and methods. Never a stack trace,
//! never a 500 for bad input.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

// The OpenAPI schema of what `ApiError::into_response` writes; the suite
// (tests/suite/openapi.rs) parses real error responses into it.
/// Every error the API answers, whatever the status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "error": {
        "code": "validation_error",
        "message": "invalid priority: must be from 0 to 9",
        "details": {"field": "priority", "reason": "must be from 0 to 9"}
    }
}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `validation_error`, `not_found`,
    /// `unauthorized`, `forbidden`, `tenant_suspended`, `conflict`,
    /// `rate_limited`, `quota_exceeded`, `brute_force_lockout`,
    /// `payload_too_large`, `uri_too_long`, `headers_too_large`,
    /// `service_unavailable`, `internal`, …
    #[schema(example = "not_found")]
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// `null`, or an object with specifics (e.g. `field` and `reason` of a
    /// `validation_error`, `limit` of a quota).
    pub details: Value,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

/// `Retry-After` (seconds) of a `429 quota_exceeded`: queued jobs leave the
/// queue as workers claim them, so this is an estimate, not a promise.
pub const QUEUE_FULL_RETRY_AFTER_SECS: u64 = 30;

/// `Retry-After` (seconds) while the database cannot be reached: about a
/// restart's or a failover's time.
pub const DATABASE_UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            format!("invalid {field}: {message}"),
        )
        .with_details(json!({ "field": field, "reason": message }))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// `503 service_unavailable` with `Retry-After`: the database cannot be
    /// reached now (nothing was changed, or the change was rolled back).
    pub fn database_unavailable() -> Self {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "the database cannot be reached right now; retry shortly",
        );
        error.retry_after = Some(DATABASE_UNAVAILABLE_RETRY_AFTER_SECS);
        error
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log for the request id",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message, "details": self.details } });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<longhaul_core::Error> for ApiError {
    fn from(error: longhaul_core::Error) -> Self {
        use longhaul_core::Error as E;
        match error {
            E::Validation { field, message } => ApiError::validation(field, message),
            E::PayloadTooLarge { size, limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("params are {size} bytes, larger than the {limit}-byte limit"),
            )
            .with_details(json!({ "size": size, "limit": limit })),
            E::UnknownKind(kind) => {
                ApiError::validation("kind", format!("unknown job kind {kind:?}"))
            }
            E::NotFound(id) => ApiError::not_found(format!("job {id} not found")),
            E::NoSuchResource { kind, id } => ApiError::not_found(format!("{kind} {id} not found")),
            E::Conflict(message) => ApiError::conflict(message),
            E::QuotaExceeded { limit, current } => {
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exceeded",
                    format!(
                        "the tenant has {current} queued jobs, at its limit of {limit}; \
                         retry once some have started"
                    ),
                )
                .with_details(json!({ "limit": limit, "queued": current }));
                error.retry_after = Some(QUEUE_FULL_RETRY_AFTER_SECS);
                error
            }
            E::LimitReached {
                what,
                limit,
                current,
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "the tenant has {current} {what}, at its plan's limit of {limit}; \
                     delete some or ask for a higher limit"
                ),
            )
            .with_details(json!({ "limit": limit, "current": current, "resource": what })),
            unavailable if unavailable.is_store_unavailable() => {
                tracing::warn!(error = %unavailable, "the database is unavailable");
                ApiError::database_unavailable()
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::internal()
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::bad_request(format!("body is not valid JSON: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                format!("body does not match the expected shape: {}", e.body_text()),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than the limit",
                )
            }
            other => ApiError::bad_request(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        match rejection {
            // Path segments are ids: one that cannot be read names nothing.
            PathRejection::FailedToDeserializePathParams(_) => {
                ApiError::not_found("no such resource")
            }
            other => {
                tracing::error!(error = %other.body_text(), "a route without its path parameters");
                ApiError::internal()
            }
        }
    }
}

/// Fallback for unknown routes.
pub async fn route_not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// Fallback for a known route with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
