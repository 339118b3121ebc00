//! The OpenAPI 3.1 document, generated from the code, and its reference page.
//!
//! Every handler carries `#[utoipa::path(...)]` and each `routes()` registers
//! it through utoipa-axum's `routes!`, which adds the route to the router and
//! the operation to the document from the same annotation: the document cannot
//! list a route the router lacks, nor the reverse. [`ApiDoc`] adds what no
//! handler owns: the title and version, the tags, the bearer scheme and the
//! one error schema ([`ErrorBody`]).
//!
//! `GET /openapi.json` serves the document; `GET /docs/` serves Swagger UI
//! from assets compiled into the binary (utoipa-swagger-ui's `vendored`
//! feature), so the page needs no network. Both are public.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Object, Ref, RefOr, Response, ResponseBuilder, Type};
use utoipa::{IntoResponses, Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::error::ErrorBody;
use crate::state::AppState;

/// Where the document is served.
pub const SPEC_PATH: &str = "/openapi.json";
/// Where the reference page is served (`/docs` redirects to `/docs/`).
pub const DOCS_PATH: &str = "/docs";
/// The name of the security scheme every authenticated operation requires.
pub const BEARER: &str = "bearer";

/// What no handler owns. The paths come from `routes()` (see `crate::router`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Longhaul API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Long-running jobs for many tenants: create, follow, cancel and retry \
            jobs; manage tenants, API keys, usage and the audit log.\n\n\
            Authenticate with `Authorization: Bearer lh_live_…` (or `lh_test_…`). Roles rank \
            viewer < developer < admin within a tenant; operator keys manage tenants. Every \
            error is `{\"error\": {\"code\", \"message\", \"details\"}}` and every response \
            carries `X-Request-Id`."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "A tenant's jobs: create, list, read, follow (SSE), cancel, retry"),
        (name = "schedules", description = "A tenant's recurring jobs: cron in an IANA zone, jitter, overlap and misfire policies"),
        (name = "tenants", description = "Tenants, their quotas and settings (operator keys)"),
        (name = "api-keys", description = "A tenant's API keys (admin)"),
        (name = "usage", description = "Billable operations per month"),
        (name = "audit", description = "A tenant's audit log"),
        (name = "leakage", description = "Leakage scans for secrets: policies, scans, findings (redacted), incidents, stats"),
        (name = "classification", description = "Classification of data-bucket objects: policies, scans, per-object results, stats"),
        (name = "retention", description = "Retention policies, previews, cleanup runs, metrics and legal holds (admin)"),
        (name = "workers", description = "Worker pools, live and recently gone (operator keys)"),
        (name = "webhooks", description = "Endpoints told when jobs end: signed deliveries, retries, delivery logs (admin)"),
        (name = "health", description = "Liveness and readiness (no key)"),
        (name = "metrics", description = "Prometheus metrics (operator keys)"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` scheme: `Authorization: Bearer lh_live_…`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("lh_live_… or lh_test_…")
            .description(Some(
                "An API key: `lh_live_` or `lh_test_`, a 12-character public prefix, `_`, \
                 the secret. Tenant keys act within their tenant; operator keys manage tenants.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// A response in the error format (`ErrorBody`).
pub fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// A response in the error format with a `Retry-After` header.
pub fn error_response_retry_after(description: &str) -> Response {
    let mut response = error_response(description);
    response.headers.insert(
        "Retry-After".to_string(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(Object::with_type(Type::Integer)))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        ),
    );
    response
}

fn responses<const N: usize>(list: [(&str, Response); N]) -> BTreeMap<String, RefOr<Response>> {
    list.into_iter()
        .map(|(status, response)| (status.to_string(), RefOr::T(response)))
        .collect()
}

/// `401 unauthorized`, which every authenticated operation can answer.
pub struct Unauthorized;

impl IntoResponses for Unauthorized {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            "401",
            error_response(
                "`unauthorized`: no `Authorization: Bearer` key, or one that is unknown, \
                 revoked or past its rotation grace period",
            ),
        )])
    }
}

/// `429 brute_force_lockout`, which every authenticated operation can answer
/// (operations with quotas document their own 429, which includes it).
pub struct LockedOut;

impl IntoResponses for LockedOut {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            "429",
            error_response_retry_after(
                "`brute_force_lockout`: too many failed authentications for this key prefix \
                 or client IP; refused, even with a correct key, until `Retry-After`",
            ),
        )])
    }
}

/// How a JSON body can be refused before it is read (its `422` and `413`
/// are each operation's own).
pub struct BodyRejected;

impl IntoResponses for BodyRejected {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([
            (
                "400",
                error_response("`bad_request`: the body is not valid JSON"),
            ),
            (
                "415",
                error_response(
                    "`unsupported_media_type`: the body is not sent as `application/json`",
                ),
            ),
        ])
    }
}

/// `413 payload_too_large` for a body over [`crate::MAX_BODY_BYTES`].
pub struct TooLarge;

impl IntoResponses for TooLarge {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses([(
            "413",
            error_response("`payload_too_large`: the body is larger than 1 MiB"),
        )])
    }
}

/// `GET /openapi.json` and the Swagger UI at `/docs/`, for `spec`.
#[allow(
    clippy::expect_used,
    reason = "a document of strings and maps always serializes; the openapi tests fetch it"
)]
pub fn routes(spec: &utoipa::openapi::OpenApi) -> Router<AppState> {
    // Serialized once: the document does not change while the process runs.
    let json = Bytes::from(
        spec.to_pretty_json()
            .expect("the OpenAPI document serializes"),
    );
    let ui = SwaggerUi::new(DOCS_PATH).config(
        Config::new([SPEC_PATH])
            // The default validator badge would fetch validator.swagger.io.
            .validator_url("none")
            .persist_authorization(true),
    );
    Router::new()
        .route(
            SPEC_PATH,
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        json,
                    )
                }
            }),
        )
        .merge(Router::from(ui).layer(axum::middleware::map_response(
            missing_asset_in_error_format,
        )))
}

/// Swagger UI answers an unknown file under `/docs/` with an empty 404; the
/// API answers every unknown path in its error format.
async fn missing_asset_in_error_format(response: HttpResponse) -> HttpResponse {
    if response.status() == StatusCode::NOT_FOUND {
        crate::error::route_not_found().await.into_response()
    } else {
        response
    }
}
