//! The HTTP API against both stores, driven in-process: the error format on
//! every kind of bad request, jobs end to end, tenant isolation, the role
//! matrix, suspension, and key rotation and revocation with a manual clock.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use http_body_util::BodyExt;
use longhaul_api::clock::ManualClock;
use longhaul_api::AppState;
use longhaul_core::tenancy::{self, KeyMode, NewTenant, Quotas, Role, Stores, Tenant};
use longhaul_core::Catalogue;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::harness::TestDb;

struct Api {
    router: Router,
    clock: Arc<ManualClock>,
    stores: Arc<dyn Stores>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    /// Asserts the error format and code, and that a request id came back.
    fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
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
    }
}

async fn api(db: &TestDb) -> Api {
    let stores = tenancy::connect_stores(&db.url, 8).await.expect("stores");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let state =
        AppState::new(stores.clone(), Arc::new(Catalogue::builtin())).with_clock(clock.clone());
    Api {
        router: longhaul_api::router(state),
        clock,
        stores,
    }
}

impl Api {
    async fn tenant(&self, name: &str) -> (Tenant, String) {
        let tenant = self
            .stores
            .create_tenant(NewTenant {
                name: name.into(),
                region: "eu".into(),
                plan: "standard".into(),
                quotas: Quotas::default(),
                settings: json!({}),
            })
            .await
            .expect("tenant");
        let key = self.key(&tenant, Role::Admin).await;
        (tenant, key)
    }

    async fn key(&self, tenant: &Tenant, role: Role) -> String {
        self.stores
            .issue_api_key(Some(&tenant.id), "test", role, KeyMode::Live)
            .await
            .expect("key")
            .secret
    }

    async fn operator(&self) -> String {
        self.stores
            .issue_api_key(None, "ops", Role::Operator, KeyMode::Live)
            .await
            .expect("operator key")
            .secret
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        self.send(request.expect("request")).await
    }

    async fn create_job(&self, key: &str, body: Value) -> Reply {
        self.call(Method::POST, "/v1/jobs", Some(key), Some(body))
            .await
    }
}

fn sleep_job() -> Value {
    json!({ "kind": "system.sleep", "params": { "durationMs": 60000, "steps": 10 } })
}

async fn bad_requests_get_the_error_format(db: TestDb) {
    let api = api(&db).await;
    let (_, key) = api.tenant("acme").await;

    api.call(Method::GET, "/v1/nothing-here", Some(&key), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    api.call(Method::DELETE, "/v1/jobs", Some(&key), None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    api.call(Method::POST, "/v1/jobs", None, Some(sleep_job()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    api.call(
        Method::POST,
        "/v1/jobs",
        Some("lh_live_nope"),
        Some(sleep_job()),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let broken_json = Request::post("/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"kind\": "))
        .expect("request");
    api.send(broken_json)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");

    let wrong_type = Request::post("/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(sleep_job().to_string()))
        .expect("request");
    api.send(wrong_type)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    let huge = json!({ "kind": "system.noop", "params": { "pad": "x".repeat(2 * 1024 * 1024) } });
    api.create_job(&key, huge)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let over_params_cap =
        json!({ "kind": "system.sleep", "params": { "durationMs": 1, "pad": "x".repeat(70_000) } });
    api.create_job(&key, over_params_cap)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    api.create_job(&key, json!({ "kind": "system.nope" }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    api.create_job(
        &key,
        json!({ "kind": "system.sleep", "params": { "durationMs": -5 } }),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    api.create_job(&key, json!({ "kind": "system.noop", "priority": 42 }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    api.create_job(&key, json!({ "kind": "system.noop", "surprise": true }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    api.create_job(&key, json!(["not", "an", "object"]))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");

    assert!(
        db.store.count_by_state().await.expect("counts").is_empty(),
        "a bad request wrote a job"
    );
}

async fn jobs_are_created_read_cancelled_and_retried(db: TestDb) {
    let api = api(&db).await;
    let (_, key) = api.tenant("acme").await;

    let created = api.create_job(&key, sleep_job()).await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    assert_eq!(created.body["status"], "queued");
    let id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(
        created.headers[header::LOCATION],
        format!("/v1/jobs/{id}").as_str()
    );

    let read = api
        .call(Method::GET, &format!("/v1/jobs/{id}"), Some(&key), None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["kind"], "system.sleep");
    assert_eq!(read.body["params"]["durationMs"], 60000);
    assert_eq!(read.body["attempts"], json!([]));

    let retry_queued = api
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/retry"),
            Some(&key),
            None,
        )
        .await;
    retry_queued.assert_error(StatusCode::CONFLICT, "conflict");

    let cancelled = api
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.body["status"], "cancelled");

    let retried = api
        .call(
            Method::POST,
            &format!("/v1/jobs/{id}/retry"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED);
    assert_eq!(retried.body["status"], "queued");

    api.call(Method::GET, "/v1/jobs/job_not-a-real-id", Some(&key), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

async fn idempotency_key_returns_the_same_job(db: TestDb) {
    let api = api(&db).await;
    let (_, key) = api.tenant("acme").await;
    let request = |body: Value| {
        Request::post("/v1/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "order-42")
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    let first = api.send(request(sleep_job())).await;
    let again = api.send(request(sleep_job())).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(first.body["id"], again.body["id"]);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let other = api.send(request(json!({ "kind": "system.noop" }))).await;
    other.assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(
        db.store.count_by_state().await.expect("counts"),
        vec![(longhaul_core::JobState::Queued, 1)]
    );
}

async fn another_tenants_job_is_not_found_and_unchanged(db: TestDb) {
    let api = api(&db).await;
    let (_, key_a) = api.tenant("acme").await;
    let (_, key_b) = api.tenant("globex").await;
    let created = api
        .create_job(
            &key_a,
            json!({ "kind": "system.sleep", "params": { "durationMs": 5000, "steps": 1 } }),
        )
        .await;
    let id = created.body["id"].as_str().expect("id").to_string();
    for (method, path) in [
        (Method::GET, format!("/v1/jobs/{id}")),
        (Method::POST, format!("/v1/jobs/{id}/cancel")),
        (Method::POST, format!("/v1/jobs/{id}/retry")),
    ] {
        let reply = api.call(method.clone(), &path, Some(&key_b), None).await;
        reply.assert_error(StatusCode::NOT_FOUND, "not_found");
        let text = reply.body.to_string();
        assert!(
            !text.contains("system.sleep") && !text.contains("5000"),
            "{method} {path} leaked: {text}"
        );
    }
    let still = api
        .call(Method::GET, &format!("/v1/jobs/{id}"), Some(&key_a), None)
        .await;
    assert_eq!(
        still.body["status"], "queued",
        "another tenant changed the job"
    );
}

async fn roles_gate_what_a_key_may_do(db: TestDb) {
    let api = api(&db).await;
    let (tenant, admin) = api.tenant("acme").await;
    let viewer = api.key(&tenant, Role::Viewer).await;
    let developer = api.key(&tenant, Role::Developer).await;
    let operator = api.operator().await;
    let job = api.create_job(&developer, sleep_job()).await;
    assert_eq!(job.status, StatusCode::ACCEPTED);
    let id = job.body["id"].as_str().expect("id").to_string();

    let key_body = json!({ "name": "ci", "role": "viewer" });
    let tenant_body = json!({ "name": "initech" });
    let case = |who: &'static str,
                key: &str,
                method: Method,
                path: String,
                body: Option<Value>,
                allowed: bool| Case {
        who,
        key: key.to_string(),
        method,
        path,
        body,
        allowed,
    };
    let cases = [
        case(
            "viewer",
            &viewer,
            Method::GET,
            format!("/v1/jobs/{id}"),
            None,
            true,
        ),
        case(
            "viewer",
            &viewer,
            Method::POST,
            "/v1/jobs".into(),
            Some(sleep_job()),
            false,
        ),
        case(
            "viewer",
            &viewer,
            Method::POST,
            format!("/v1/jobs/{id}/cancel"),
            None,
            false,
        ),
        case(
            "viewer",
            &viewer,
            Method::POST,
            "/v1/api-keys".into(),
            Some(key_body.clone()),
            false,
        ),
        case(
            "developer",
            &developer,
            Method::POST,
            "/v1/jobs".into(),
            Some(sleep_job()),
            true,
        ),
        case(
            "developer",
            &developer,
            Method::GET,
            "/v1/api-keys".into(),
            None,
            false,
        ),
        case(
            "developer",
            &developer,
            Method::GET,
            "/v1/tenants".into(),
            None,
            false,
        ),
        case(
            "admin",
            &admin,
            Method::POST,
            "/v1/api-keys".into(),
            Some(key_body.clone()),
            true,
        ),
        case(
            "admin",
            &admin,
            Method::GET,
            "/v1/api-keys".into(),
            None,
            true,
        ),
        case(
            "admin",
            &admin,
            Method::POST,
            "/v1/tenants".into(),
            Some(tenant_body.clone()),
            false,
        ),
        case(
            "operator",
            &operator,
            Method::POST,
            "/v1/tenants".into(),
            Some(tenant_body.clone()),
            true,
        ),
        case(
            "operator",
            &operator,
            Method::GET,
            format!("/v1/tenants/{}", tenant.id),
            None,
            true,
        ),
        case(
            "operator",
            &operator,
            Method::POST,
            "/v1/jobs".into(),
            Some(sleep_job()),
            false,
        ),
    ];
    for Case {
        who,
        key,
        method,
        path,
        body,
        allowed,
    } in cases
    {
        let reply = api.call(method.clone(), &path, Some(&key), body).await;
        if allowed {
            assert!(
                reply.status.is_success(),
                "{who} {method} {path}: {} {}",
                reply.status,
                reply.body
            );
        } else {
            reply.assert_error(StatusCode::FORBIDDEN, "forbidden");
        }
    }
}

/// One row of the role matrix.
struct Case {
    who: &'static str,
    key: String,
    method: Method,
    path: String,
    body: Option<Value>,
    allowed: bool,
}
async fn a_suspended_tenant_reads_but_starts_nothing(db: TestDb) {
    let api = api(&db).await;
    let (tenant, key) = api.tenant("acme").await;
    let operator = api.operator().await;
    let job = api.create_job(&key, sleep_job()).await;
    let id = job.body["id"].as_str().expect("id").to_string();

    let suspended = api
        .call(
            Method::POST,
            &format!("/v1/tenants/{}/suspend", tenant.id),
            Some(&operator),
            Some(json!({ "reason": "unpaid invoice" })),
        )
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.body);
    assert_eq!(suspended.body["status"], "suspended");

    let refused = api.create_job(&key, sleep_job()).await;
    refused.assert_error(StatusCode::FORBIDDEN, "tenant_suspended");
    assert!(refused.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("unpaid invoice")));
    assert_eq!(
        api.call(Method::GET, &format!("/v1/jobs/{id}"), Some(&key), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.call(
            Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            Some(&key),
            None
        )
        .await
        .status,
        StatusCode::OK
    );

    let resumed = api
        .call(
            Method::POST,
            &format!("/v1/tenants/{}/resume", tenant.id),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(resumed.body["status"], "active");
    assert_eq!(
        api.create_job(&key, sleep_job()).await.status,
        StatusCode::ACCEPTED
    );
}

async fn rotated_keys_keep_working_for_the_grace_period_and_revoked_keys_stop(db: TestDb) {
    let api = api(&db).await;
    let (_, admin) = api.tenant("acme").await;
    let issued = api
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&admin),
            Some(json!({ "name": "deploy", "role": "developer" })),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    let old_secret = issued.body["secret"].as_str().expect("secret").to_string();
    let key_id = issued.body["id"].as_str().expect("id").to_string();
    let listed = api
        .call(Method::GET, "/v1/api-keys", Some(&admin), None)
        .await;
    assert!(
        !listed.body.to_string().contains(&old_secret),
        "a listing showed a secret"
    );

    let rotated = api
        .call(
            Method::POST,
            &format!("/v1/api-keys/{key_id}/rotate"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.body);
    let new_secret = rotated.body["secret"].as_str().expect("secret").to_string();
    let new_id = rotated.body["id"].as_str().expect("id").to_string();
    assert_ne!(new_secret, old_secret);

    let works = |secret: String| {
        let api = &api;
        async move {
            api.call(Method::GET, "/v1/jobs/job_0", Some(&secret), None)
                .await
                .status
                != StatusCode::UNAUTHORIZED
        }
    };
    assert!(
        works(old_secret.clone()).await,
        "the old key stopped at once"
    );
    api.clock.advance(chrono::Duration::hours(23));
    assert!(
        works(old_secret.clone()).await,
        "the old key stopped inside the grace period"
    );
    api.clock.advance(chrono::Duration::hours(2));
    assert!(
        !works(old_secret.clone()).await,
        "the old key still works after 24 h"
    );
    assert!(works(new_secret.clone()).await);

    let revoked = api
        .call(
            Method::POST,
            &format!("/v1/api-keys/{new_id}/revoke"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert!(!works(new_secret).await, "a revoked key still works");
}

async fn health_and_readiness(db: TestDb) {
    let api = api(&db).await;
    let health = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (health.status, health.body["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    let ready = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (ready.status, ready.body["status"].clone()),
        (StatusCode::OK, json!("ready"))
    );
}

both_stores!(
    bad_requests_get_the_error_format,
    jobs_are_created_read_cancelled_and_retried,
    idempotency_key_returns_the_same_job,
    another_tenants_job_is_not_found_and_unchanged,
    roles_gate_what_a_key_may_do,
    a_suspended_tenant_reads_but_starts_nothing,
    rotated_keys_keep_working_for_the_grace_period_and_revoked_keys_stop,
    health_and_readiness,
);
