//! An in-process HTTP client for the API tests: send a request through the
//! router, read the answer as JSON, and check errors against the one error
//! format.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use http_body_util::BodyExt;
use longhaul_api::clock::ManualClock;
use longhaul_api::AppState;
use longhaul_core::artifacts::{ArtifactStores, DownloadSigner};
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{self};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::harness::TestDb;

/// The API over a test store, with a clock the test moves.
pub struct TestApp {
    pub router: Router,
    pub clock: Arc<ManualClock>,
    pub stores: Arc<dyn Stores>,
}

pub async fn test_app(db: &TestDb) -> TestApp {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let state = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_clock(clock.clone())
        .with_artifacts(Arc::new(local_artifacts()));
    TestApp {
        router: longhaul_api::router(state),
        clock,
        stores,
    }
}

/// Local artifact storage in a fresh temp folder, links signed with a fixed
/// test secret.
pub fn local_artifacts() -> ArtifactStores {
    let root = std::env::temp_dir().join(format!("longhaul-artifacts-{}", uuid::Uuid::now_v7()));
    ArtifactStores::local(root, test_signer())
}

pub fn test_signer() -> DownloadSigner {
    DownloadSigner::new(b"longhaul-test-download-signing-key".to_vec()).expect("a long secret")
}

/// An answer: status, headers, and the body as JSON (`Null` when empty).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn assert_status(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "{}", self.body);
        self
    }

    /// The error format with this status and code, and a request id.
    pub fn assert_error(&self, status: StatusCode, code: &str) -> &Self {
        self.assert_status(status);
        assert_eq!(self.body["error"]["code"], json!(code), "{}", self.body);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        assert!(self.body["error"].get("details").is_some(), "{}", self.body);
        assert!(self.headers.contains_key("x-request-id"), "no request id");
        self
    }

    /// The `Retry-After` header in whole seconds.
    pub fn retry_after(&self) -> u64 {
        self.headers
            .get(header::RETRY_AFTER)
            .expect("a Retry-After header")
            .to_str()
            .expect("ASCII")
            .parse()
            .expect("whole seconds")
    }
}

/// A request with an optional `Bearer` key, extra headers and a JSON body.
pub fn request(
    method: Method,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .expect("request")
}

/// [`request`] without extra headers, sent through the router.
pub async fn call(
    router: &Router,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Reply {
    send(router, request(method, path, key, &[], body)).await
}

/// Sends one request through the router; the body must be JSON (or empty).
pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    let (status, headers, text) = send_raw(router, request).await;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends one request through the router; the body as text.
pub async fn send_raw(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = router.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// A new tenant and an admin key of it.
pub async fn tenant_with_admin_key(stores: &dyn Stores, name: &str) -> (tenancy::Tenant, String) {
    let tenant = stores
        .create_tenant(
            tenancy::NewTenant::new(name, "eu", "standard"),
            &longhaul_core::audit::Actor::system(),
        )
        .await
        .expect("tenant");
    let key = stores
        .issue_api_key(
            Some(&tenant.id),
            "test",
            tenancy::Role::Admin,
            tenancy::KeyMode::Live,
            &longhaul_core::audit::Actor::system(),
        )
        .await
        .expect("key")
        .secret;
    (tenant, key)
}
