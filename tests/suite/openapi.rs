//! The OpenAPI document and the reference page: `/openapi.json` is OpenAPI
//! 3.1 and lists exactly the routes the router serves (one explicit list
//! below, checked against both), every authenticated operation requires the
//! bearer scheme, every error response is the one `ErrorBody`, and `/docs/`
//! serves Swagger UI with every asset from the app itself (no network).

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use longhaul_api::error::ErrorBody;
use longhaul_core::audit::Actor;
use longhaul_core::tenancy::{KeyMode, NewTenant, Role};
use serde_json::{json, Value};

use crate::harness::TestDb;
use crate::http::{self, Reply, TestApp};

/// Whether a route takes an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Public,
    Key,
    /// No key: a signed token in the path is the credential.
    Signed,
}

use Access::{Key, Public, Signed};

/// Every route the API serves, except `/openapi.json` and `/docs` themselves
/// (from `api/src/routes/*.rs` and `api/src/metrics.rs`).
const ROUTES: &[(&str, &str, Access)] = &[
    ("get", "/healthz", Public),
    ("get", "/readyz", Public),
    ("get", "/metrics", Key),
    ("post", "/v1/jobs", Key),
    ("get", "/v1/jobs", Key),
    ("get", "/v1/jobs/{id}", Key),
    ("post", "/v1/jobs/{id}/cancel", Key),
    ("post", "/v1/jobs/{id}/retry", Key),
    ("get", "/v1/jobs/{id}/events", Key),
    ("get", "/v1/jobs/{id}/result", Key),
    ("get", "/v1/artifacts/{token}", Signed),
    ("post", "/v1/tenants", Key),
    ("get", "/v1/tenants", Key),
    ("get", "/v1/tenants/{id}", Key),
    ("patch", "/v1/tenants/{id}", Key),
    ("post", "/v1/tenants/{id}/suspend", Key),
    ("post", "/v1/tenants/{id}/resume", Key),
    ("post", "/v1/api-keys", Key),
    ("get", "/v1/api-keys", Key),
    ("post", "/v1/api-keys/{id}/rotate", Key),
    ("post", "/v1/api-keys/{id}/revoke", Key),
    ("get", "/v1/usage", Key),
    ("get", "/v1/audit/events", Key),
    ("post", "/v1/audit/events", Key),
    ("post", "/v1/audit/exports", Key),
    ("get", "/v1/audit/exports", Key),
    ("get", "/v1/audit/exports/{id}", Key),
    ("post", "/v1/schedules", Key),
    ("get", "/v1/schedules", Key),
    ("get", "/v1/schedules/{id}", Key),
    ("patch", "/v1/schedules/{id}", Key),
    ("delete", "/v1/schedules/{id}", Key),
    ("post", "/v1/schedules/{id}/pause", Key),
    ("post", "/v1/schedules/{id}/resume", Key),
    ("get", "/v1/schedules/{id}/next", Key),
    ("post", "/v1/leakage/policies", Key),
    ("get", "/v1/leakage/policies", Key),
    ("get", "/v1/leakage/policies/{id}", Key),
    ("patch", "/v1/leakage/policies/{id}", Key),
    ("delete", "/v1/leakage/policies/{id}", Key),
    ("post", "/v1/leakage/scans", Key),
    ("get", "/v1/leakage/scans", Key),
    ("get", "/v1/leakage/scans/{id}", Key),
    ("get", "/v1/leakage/scans/{id}/findings", Key),
    ("get", "/v1/leakage/incidents", Key),
    ("get", "/v1/leakage/incidents/{id}", Key),
    ("patch", "/v1/leakage/incidents/{id}", Key),
    ("get", "/v1/leakage/stats", Key),
    ("post", "/v1/classification/policies", Key),
    ("get", "/v1/classification/policies", Key),
    ("get", "/v1/classification/policies/{id}", Key),
    ("patch", "/v1/classification/policies/{id}", Key),
    ("delete", "/v1/classification/policies/{id}", Key),
    ("post", "/v1/classification/scans", Key),
    ("get", "/v1/classification/scans", Key),
    ("get", "/v1/classification/scans/{id}", Key),
    ("get", "/v1/classification/scans/{id}/results", Key),
    ("get", "/v1/classification/stats", Key),
    ("post", "/v1/retention/policies", Key),
    ("get", "/v1/retention/policies", Key),
    ("get", "/v1/retention/policies/{id}", Key),
    ("patch", "/v1/retention/policies/{id}", Key),
    ("delete", "/v1/retention/policies/{id}", Key),
    ("post", "/v1/retention/preview", Key),
    ("post", "/v1/retention/cleanup", Key),
    ("get", "/v1/retention/executions", Key),
    ("get", "/v1/retention/executions/{id}", Key),
    ("get", "/v1/retention/metrics", Key),
    ("post", "/v1/retention/holds", Key),
    ("get", "/v1/retention/holds", Key),
    ("get", "/v1/retention/holds/{id}", Key),
    ("post", "/v1/retention/holds/{id}/release", Key),
    ("get", "/v1/workers", Key),
    ("get", "/v1/queues", Key),
    ("get", "/v1/tenants/{id}/usage", Key),
    ("post", "/v1/webhooks", Key),
    ("get", "/v1/webhooks", Key),
    ("get", "/v1/webhooks/{id}", Key),
    ("patch", "/v1/webhooks/{id}", Key),
    ("delete", "/v1/webhooks/{id}", Key),
    ("post", "/v1/webhooks/{id}/rotate-secret", Key),
    ("post", "/v1/webhooks/{id}/test", Key),
    ("get", "/v1/webhooks/{id}/deliveries", Key),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

async fn spec(app: &TestApp) -> Value {
    let reply = http::send(&app.router, get("/openapi.json")).await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/json",
        "content type"
    );
    assert!(
        reply.headers.contains_key("x-request-id"),
        "/openapi.json skipped the request-id layer"
    );
    reply.body
}

/// The (method, path) pairs of the document.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("paths");
    let mut found = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) || method == "head" || method == "options" {
                found.insert((method.clone(), path.clone()));
            }
        }
    }
    found
}

async fn openapi_json_lists_exactly_the_routes_served(db: TestDb) {
    let app = http::test_app(&db).await;
    let spec = spec(&app).await;

    let version = spec["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "OpenAPI {version}");
    assert_eq!(spec["info"]["title"], "Longhaul API");
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));

    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(listed.len(), ROUTES.len(), "a route is listed twice");
    let documented = operations(&spec);
    let undocumented: Vec<_> = listed.difference(&documented).collect();
    let unlisted: Vec<_> = documented.difference(&listed).collect();
    assert!(
        undocumented.is_empty() && unlisted.is_empty(),
        "served but not in the document: {undocumented:?}; in the document but not in ROUTES: {unlisted:?}"
    );

    // The router serves each one: a key route answers 401 without a key (not
    // 404 or 405), a public one 200.
    for (method, path, access) in ROUTES {
        let uri = path.replace("{id}", "x_0").replace("{token}", "x_0");
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(&uri)
            .body(Body::empty())
            .expect("request");
        let reply = http::send(&app.router, request).await;
        match access {
            Public => assert_eq!(
                reply.status,
                StatusCode::OK,
                "{method} {uri}: {}",
                reply.body
            ),
            Key => {
                reply.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
            }
            Signed => {
                reply.assert_error(StatusCode::NOT_FOUND, "not_found");
            }
        }
    }

    // And no other method on those paths: the document misses none.
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, path, _)| *path).collect();
    for path in paths {
        for method in METHODS {
            if listed.contains(&(method.to_string(), path.to_string())) {
                continue;
            }
            let uri = path.replace("{id}", "x_0").replace("{token}", "x_0");
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .body(Body::empty())
                .expect("request");
            http::send(&app.router, request)
                .await
                .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        }
    }

    // Unknown paths keep the error format, next to the new routes too.
    for unknown in ["/nowhere", "/openapi.yaml", "/docs/no-such-asset.js"] {
        http::send(&app.router, get(unknown))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
}

/// The schema a response's `application/json` content references.
fn json_schema_ref(response: &Value) -> Option<&str> {
    response["content"]["application/json"]["schema"]["$ref"].as_str()
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(item, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

async fn operations_declare_bearer_auth_and_the_error_schema(db: TestDb) {
    let app = http::test_app(&db).await;
    let spec = spec(&app).await;

    let scheme = &spec["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    let error_detail = &spec["components"]["schemas"]["ErrorDetail"];
    assert_eq!(
        spec["components"]["schemas"]["ErrorBody"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    for field in ["code", "message", "details"] {
        assert!(
            error_detail["required"]
                .as_array()
                .expect("required")
                .contains(&json!(field)),
            "ErrorDetail.{field} is not required: {error_detail}"
        );
    }

    let mut operation_ids = BTreeSet::new();
    for (method, path, access) in ROUTES {
        let operation = &spec["paths"][*path][*method];
        let name = format!("{method} {path}");
        let id = operation["operationId"].as_str().expect("operationId");
        assert!(
            operation_ids.insert(id.to_string()),
            "{name}: operationId {id} twice"
        );
        assert!(
            operation["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{name}: no tag"
        );
        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            responses
                .keys()
                .any(|status| status.starts_with('2') || status.starts_with('3')),
            "{name}: no success response"
        );
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    json_schema_ref(response),
                    Some("#/components/schemas/ErrorBody"),
                    "{name} {status}: {response}"
                );
            }
        }
        match access {
            Public | Signed => assert!(
                operation["security"].as_array().is_none_or(|list| list
                    .iter()
                    .all(|r| r.as_object().is_some_and(|r| r.is_empty()))),
                "{name} is public but requires {}",
                operation["security"]
            ),
            Key => {
                assert_eq!(
                    operation["security"],
                    json!([{ "bearer": [] }]),
                    "{name}: no bearer requirement"
                );
                for status in ["401", "403", "429"] {
                    assert!(responses.contains_key(status), "{name}: no {status}");
                }
                assert!(
                    responses["429"]["headers"].get("Retry-After").is_some(),
                    "{name}: 429 without Retry-After"
                );
            }
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{name}: a body but no {status}"
                );
            }
        }
    }
    assert!(
        spec.get("security").is_none(),
        "a global requirement would cover the public routes too"
    );

    // Every reference resolves.
    let mut found = Vec::new();
    refs(&spec, &mut found);
    assert!(found.len() > 50, "only {} references", found.len());
    for target in found {
        let pointer = target.strip_prefix('#').expect("a local reference");
        assert!(spec.pointer(pointer).is_some(), "{target} does not resolve");
    }

    // And real errors have that shape (`ErrorBody` refuses unknown fields).
    let tenant = app
        .stores
        .create_tenant(NewTenant::new("acme", "eu", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let key = app
        .stores
        .issue_api_key(
            Some(&tenant.id),
            "t",
            Role::Admin,
            KeyMode::Live,
            &Actor::system(),
        )
        .await
        .expect("key")
        .secret;
    let invalid = Request::post("/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"kind": "system.sleep", "priority": 99}).to_string(),
        ))
        .expect("request");
    let replies: Vec<Reply> = vec![
        http::send(&app.router, invalid).await,
        http::send(&app.router, get("/v1/jobs")).await,
        http::send(&app.router, get("/nowhere")).await,
    ];
    assert_eq!(
        replies[0].status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        replies[0].body
    );
    assert!(
        replies[0].body["error"]["details"].is_object(),
        "{}",
        replies[0].body
    );
    for reply in replies {
        serde_json::from_value::<ErrorBody>(reply.body.clone())
            .unwrap_or_else(|e| panic!("{} is not an ErrorBody: {e}", reply.body));
    }
}

/// The `src` and `href` values of an HTML page.
fn asset_urls(html: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(start) = rest.find(attribute) {
            rest = &rest[start + attribute.len()..];
            let end = rest.find('"').expect("a closing quote");
            urls.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    urls
}

async fn docs_page_is_served_with_its_own_assets(db: TestDb) {
    let app = http::test_app(&db).await;

    let (status, headers, _) = http::send_raw(&app.router, get("/docs")).await;
    assert!(status.is_redirection(), "/docs answered {status}");
    assert_eq!(headers[header::LOCATION], "/docs/");

    let (status, headers, html) = http::send_raw(&app.router, get("/docs/")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/html"),
        "{:?}",
        headers[header::CONTENT_TYPE]
    );
    assert!(
        headers.contains_key("x-request-id"),
        "/docs/ skipped the request-id layer"
    );
    assert!(html.contains("swagger-ui"), "{html}");

    // Every script and stylesheet comes from the app, none from a CDN.
    let urls = asset_urls(&html);
    for needed in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        assert!(
            urls.iter().any(|url| url.ends_with(needed)),
            "{needed} is not referenced: {urls:?}"
        );
    }
    for url in &urls {
        assert!(
            !url.contains("//"),
            "{url} is fetched from elsewhere: the page would need the network"
        );
        let path = format!("/docs/{}", url.trim_start_matches("./"));
        let (status, headers, body) = http::send_raw(&app.router, get(&path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!body.is_empty(), "{path} is empty");
        assert!(
            headers.contains_key(header::CONTENT_TYPE),
            "{path}: no content type"
        );
    }

    // The page loads this API's document, and nothing from validator.swagger.io.
    let (status, _, initializer) =
        http::send_raw(&app.router, get("/docs/swagger-initializer.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(initializer.contains("\"/openapi.json\""), "{initializer}");
    assert!(!initializer.contains("petstore"), "{initializer}");
    assert!(
        initializer.contains("\"validatorUrl\": \"none\""),
        "{initializer}"
    );
}

both_stores!(
    openapi_json_lists_exactly_the_routes_served,
    operations_declare_bearer_auth_and_the_error_schema,
    docs_page_is_served_with_its_own_assets,
);
