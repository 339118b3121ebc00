//! What a request may be before any handler sees it: a URI of at most
//! [`MAX_URI_BYTES`] (`414`), at most [`MAX_HEADER_FIELDS`] header fields
//! of at most [`MAX_HEADER_BYTES`] in all (`431`), a body of at most
//! [`MAX_BODY_BYTES`] (`413`, at once when `Content-Length` announces more),
//! all in the error format. The HTTP layer's own limits (`server.rs`) sit
//! well above these, so that clients get these answers rather than its bare
//! ones.
//!
//! The body is then read whole before the handler runs: a handler that never
//! reads it (a `POST …/cancel` sent with `{}`) or a request refused before
//! its body is read (a `401`) still leaves the connection at the start of the
//! next request, so keep-alive goes on.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::error::ApiError;

/// Largest request body accepted (bigger answers 413 in the error format).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most bytes of header fields accepted, counted as sent (`name: value\r\n`).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields accepted.
pub const MAX_HEADER_FIELDS: usize = 100;

/// Middleware: refuses requests past the limits, then reads the body whole.
pub async fn enforce(request: Request, next: Next) -> Response {
    if let Err(error) = check_head(&request) {
        return error.into_response();
    }
    if announced_length(request.headers()).is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return closing(body_too_large());
    }
    let (parts, body) = request.into_parts();
    let bytes = match read_whole(body).await {
        Ok(bytes) => bytes,
        Err(error) => return closing(error),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn check_head(request: &Request) -> Result<(), ApiError> {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request URI is {uri_bytes} bytes, longer than the {MAX_URI_BYTES}-byte limit"
            ),
        )
        .with_details(json!({ "size": uri_bytes, "limit": MAX_URI_BYTES })));
    }
    let fields = request.headers().len();
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if fields > MAX_HEADER_FIELDS || header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request has {fields} header fields of {header_bytes} bytes; \
                 the limits are {MAX_HEADER_FIELDS} fields and {MAX_HEADER_BYTES} bytes"
            ),
        )
        .with_details(json!({
            "fields": fields,
            "bytes": header_bytes,
            "maxFields": MAX_HEADER_FIELDS,
            "maxBytes": MAX_HEADER_BYTES,
        })));
    }
    Ok(())
}

/// The `Content-Length` a request announces (None when absent or not a
/// number; the HTTP layer refuses malformed ones itself).
fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn read_whole(body: Body) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(body_too_large()),
        Err(error) => {
            tracing::debug!(%error, "reading a request body");
            Err(ApiError::bad_request("the request body could not be read"))
        }
    }
}

fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than the {MAX_BODY_BYTES}-byte limit"),
    )
    .with_details(json!({ "limit": MAX_BODY_BYTES }))
}

/// The answer, and the connection closed after it: the rest of the body is
/// not read, so the connection cannot carry another request.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
