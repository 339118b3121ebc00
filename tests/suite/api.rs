//! The HTTP API against both stores, driven in-process: the error format on
//! every kind of bad request, jobs end to end, tenant isolation, the role
//! matrix, suspension, and key rotation and revocation with a manual clock.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use longhaul_api::clock::ManualClock;
use longhaul_core::audit::Actor;
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{KeyMode, NewTenant, Quotas, Role, Tenant};
use serde_json::{json, Value};

use crate::harness::TestDb;
use crate::http::{self, Reply};

struct Api {
    router: Router,
    clock: Arc<ManualClock>,
    stores: Arc<dyn Stores>,
}

async fn api(db: &TestDb) -> Api {
    let http::TestApp {
        router,
        clock,
        stores,
    } = http::test_app(db).await;
    Api {
        router,
        clock,
        stores,
    }
}

impl Api {
    async fn tenant(&self, name: &str) -> (Tenant, String) {
        let tenant = self
            .stores
            .create_tenant(
                NewTenant {
                    name: name.into(),
                    region: "eu".into(),
                    plan: "standard".into(),
                    quotas: Quotas::default(),
                    settings: json!({}),
                },
                &Actor::system(),
            )
            .await
            .expect("tenant");
        let key = self.key(&tenant, Role::Admin).await;
        (tenant, key)
    }

    async fn key(&self, tenant: &Tenant, role: Role) -> String {
        self.stores
            .issue_api_key(
                Some(&tenant.id),
                "test",
                role,
                KeyMode::Live,
                &Actor::system(),
            )
            .await
            .expect("key")
            .secret
    }

    async fn operator(&self) -> String {
        self.stores
            .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
            .await
            .expect("operator key")
            .secret
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        http::send(&self.router, request).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        http::call(&self.router, method, path, key, body).await
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

// ---- GET /v1/jobs --------------------------------------------------------------

fn noop_job() -> Value {
    json!({ "kind": "system.noop" })
}

impl Api {
    /// Creates `n` jobs and answers their ids, oldest first.
    async fn create_jobs(&self, key: &str, n: usize, body: Value) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let reply = self.create_job(key, body.clone()).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
            ids.push(reply.body["id"].as_str().expect("id").to_string());
        }
        ids
    }

    /// `GET /v1/jobs?{query}`, which must succeed: the page's ids and next cursor.
    async fn list_jobs(&self, key: &str, query: &str) -> (Vec<String>, Option<String>) {
        let reply = self
            .call(Method::GET, &format!("/v1/jobs?{query}"), Some(key), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
        let data = reply.body["data"].as_array().expect("data");
        let ids = data
            .iter()
            .map(|job| job["id"].as_str().expect("id").to_string())
            .collect();
        let next = match &reply.body["nextCursor"] {
            Value::Null => None,
            Value::String(cursor) => Some(cursor.clone()),
            other => panic!("nextCursor is {other}"),
        };
        (ids, next)
    }
}

fn newest_first(mut ids: Vec<String>) -> Vec<String> {
    // Job ids are `job_` and lowercase hex of UUIDv7: text order is id order.
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

async fn jobs_list_shows_only_the_callers_tenants_jobs(db: TestDb) {
    let api = api(&db).await;
    let (_, acme) = api.tenant("acme").await;
    let (_, globex) = api.tenant("globex").await;
    let acme_jobs = api.create_jobs(&acme, 3, noop_job()).await;
    let globex_jobs = api.create_jobs(&globex, 2, sleep_job()).await;
    api.create_jobs(&acme, 1, sleep_job()).await;

    let reply = api.call(Method::GET, "/v1/jobs", Some(&globex), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["nextCursor"], Value::Null);
    let data = reply.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    for job in data {
        assert_eq!(job["kind"], json!("system.sleep"));
        assert_eq!(job["status"], json!("queued"));
        assert!(job.get("createdAt").is_some() && job.get("attempts").is_none());
    }
    let (ids, _) = api.list_jobs(&globex, "").await;
    assert_eq!(ids, newest_first(globex_jobs.clone()));

    let (ids, next) = api.list_jobs(&acme, "limit=200").await;
    assert_eq!(ids.len(), 4);
    assert!(acme_jobs.iter().all(|id| ids.contains(id)));
    assert!(ids.iter().all(|id| !globex_jobs.contains(id)));
    assert_eq!(next, None);
    // Another tenant's job as the cursor shows nothing of that tenant.
    let (ids, _) = api
        .list_jobs(&acme, &format!("cursor={}", globex_jobs[1]))
        .await;
    assert!(ids.iter().all(|id| !globex_jobs.contains(id)));
}

async fn jobs_list_pages_cover_every_job_once(db: TestDb) {
    let api = api(&db).await;
    let (_, key) = api.tenant("acme").await;
    let created = api.create_jobs(&key, 12, noop_job()).await;

    let mut walked = Vec::new();
    let mut sizes = Vec::new();
    let mut query = "limit=5".to_string();
    loop {
        let (ids, next) = api.list_jobs(&key, &query).await;
        sizes.push(ids.len());
        walked.extend(ids.iter().cloned());
        match next {
            Some(cursor) => {
                assert_eq!(Some(&cursor), ids.last());
                query = format!("limit=5&cursor={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(sizes, [5, 5, 2]);
    assert_eq!(walked, newest_first(created.clone()));

    // The default page holds them all; a full last page has no next cursor.
    let (ids, next) = api.list_jobs(&key, "").await;
    assert_eq!((ids.len(), next), (12, None));
    let (ids, next) = api.list_jobs(&key, "limit=12").await;
    assert_eq!((ids.len(), next), (12, None));
    let (ids, next) = api
        .list_jobs(&key, &format!("cursor={}&limit=2", walked[9]))
        .await;
    assert_eq!((ids, next), (walked[10..].to_vec(), None));
}

async fn jobs_list_filters(db: TestDb) {
    let api = api(&db).await;
    let (_, key) = api.tenant("acme").await;
    let noops = api.create_jobs(&key, 4, noop_job()).await;
    let sleeps = api.create_jobs(&key, 1, sleep_job()).await;
    for id in &noops[..2] {
        let reply = api
            .call(
                Method::POST,
                &format!("/v1/jobs/{id}/cancel"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let cancelled = newest_first(noops[..2].to_vec());
    let queued = newest_first([&noops[2..], &sleeps[..]].concat());

    assert_eq!(api.list_jobs(&key, "state=cancelled").await.0, cancelled);
    assert_eq!(api.list_jobs(&key, "state=queued").await.0, queued);
    assert_eq!(
        api.list_jobs(&key, "state=queued,cancelled").await.0,
        newest_first([&noops[..], &sleeps[..]].concat())
    );
    assert!(api
        .list_jobs(&key, "state=running,failed")
        .await
        .0
        .is_empty());
    assert_eq!(api.list_jobs(&key, "kind=system.sleep").await.0, sleeps);
    assert_eq!(
        api.list_jobs(
            &key,
            "state=cancelled&kind=system.noop&queue=default&limit=1"
        )
        .await,
        (cancelled[..1].to_vec(), Some(cancelled[0].clone()))
    );
    assert!(api.list_jobs(&key, "queue=bulk").await.0.is_empty());

    // The created range is [from, to): the newest job's own creation time
    // starts a range that holds it and ends one that does not.
    let newest = api
        .call(
            Method::GET,
            &format!("/v1/jobs/{}", sleeps[0]),
            Some(&key),
            None,
        )
        .await;
    let created_at = newest.body["createdAt"]
        .as_str()
        .expect("createdAt")
        .to_string();
    let (from, _) = api
        .list_jobs(&key, &format!("createdFrom={created_at}"))
        .await;
    assert!(from.contains(&sleeps[0]));
    let (to, _) = api
        .list_jobs(&key, &format!("createdTo={created_at}"))
        .await;
    assert!(!to.contains(&sleeps[0]));
    assert_eq!(from.len() + to.len(), 5);
    let (both, _) = api
        .list_jobs(
            &key,
            "createdFrom=2000-01-01T00:00:00Z&createdTo=2999-01-01T00:00:00%2B01:00&state=queued",
        )
        .await;
    assert_eq!(both, queued);
}

async fn jobs_list_refuses_bad_query_values(db: TestDb) {
    let api = api(&db).await;
    let (_, key) = api.tenant("acme").await;
    api.create_jobs(&key, 2, noop_job()).await;

    let unprocessable = [
        ("state=done", "state"),
        ("state=", "state"),
        ("state=queued,,running", "state"),
        ("cursor=nope", "cursor"),
        ("cursor=job_0193a4b2c3d47e8f9a0b1c2d3e4f5a6", "cursor"),
        ("cursor=%00", "cursor"),
        ("createdFrom=yesterday", "createdFrom"),
        ("createdTo=2025-13-01T00:00:00Z", "createdTo"),
        ("createdFrom=2025-01-01T00:00:00+01:00", "createdFrom"),
        (
            "createdFrom=2025-01-02T00:00:00Z&createdTo=2025-01-01T00:00:00Z",
            "createdTo",
        ),
        (
            "createdFrom=2025-01-01T00:00:00Z&createdTo=2025-01-01T00:00:00Z",
            "createdTo",
        ),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("queue=Not%20A%20Queue", "queue"),
        ("kind=", "kind"),
        ("kind=system%00noop", "kind"),
        // Wrong types, unknown and repeated parameters are field problems too.
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=7.5", "limit"),
        ("limit=99999999999", "limit"),
        ("page=2", "page"),
        ("State=queued", "State"),
        ("state=queued&state=running", "state"),
    ];
    for (query, field) in unprocessable {
        let reply = api
            .call(Method::GET, &format!("/v1/jobs?{query}"), Some(&key), None)
            .await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert_eq!(
            reply.body["error"]["details"]["field"],
            json!(field),
            "{query}"
        );
    }
    // The bounds themselves are fine.
    assert_eq!(api.list_jobs(&key, "limit=1").await.0.len(), 1);
    assert_eq!(api.list_jobs(&key, "limit=200").await.0.len(), 2);
    // An integer written as a whole float is that integer.
    assert_eq!(api.list_jobs(&key, "limit=1.0").await.0.len(), 1);
}

async fn jobs_list_is_open_to_viewers_only_within_a_tenant(db: TestDb) {
    let api = api(&db).await;
    let (tenant, _) = api.tenant("acme").await;
    let developer = api.key(&tenant, Role::Developer).await;
    let viewer = api.key(&tenant, Role::Viewer).await;
    let created = api.create_jobs(&developer, 3, noop_job()).await;

    assert_eq!(
        api.list_jobs(&viewer, "state=queued").await,
        (newest_first(created), None)
    );
    let operator = api.operator().await;
    api.call(Method::GET, "/v1/jobs", Some(&operator), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    api.call(Method::GET, "/v1/jobs", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

both_stores!(
    jobs_list_shows_only_the_callers_tenants_jobs,
    jobs_list_pages_cover_every_job_once,
    jobs_list_filters,
    jobs_list_refuses_bad_query_values,
    jobs_list_is_open_to_viewers_only_within_a_tenant,
);

async fn metrics_show_queues_and_requests_by_route(db: TestDb) {
    let api = api(&db).await;
    let (_, key) = api.tenant("acme").await;
    let operator = api.operator().await;
    let first = api.create_job(&key, sleep_job()).await;
    api.create_job(&key, sleep_job()).await;
    // Due in an hour: scheduled, not part of the depth.
    let mut later = sleep_job();
    later["runAt"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    api.create_job(&key, later).await;
    let id = first.body["id"].as_str().expect("id").to_string();
    api.call(Method::GET, &format!("/v1/jobs/{id}"), Some(&key), None)
        .await;
    api.call(Method::GET, "/v1/nowhere", Some(&key), None).await;
    for invented in ["FOO1", "FOO2"] {
        let method = Method::from_bytes(invented.as_bytes()).expect("method");
        api.call(method, "/healthz", None, None).await;
    }

    api.call(Method::GET, "/metrics", Some(&key), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let request = Request::get("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {operator}"))
        .body(Body::empty())
        .expect("request");
    let (status, headers, text) = http::send_raw(&api.router, request).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    for line in [
        "longhaul_queue_depth{queue=\"default\"} 2",
        "longhaul_queue_scheduled{queue=\"default\"} 1",
        "longhaul_queue_running{queue=\"default\"} 0",
        "longhaul_queue_depth_by_kind{queue=\"default\",kind=\"system.sleep\"} 2",
        "longhaul_http_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"202\"} 3",
        "longhaul_http_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",status=\"200\"} 1",
        "longhaul_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"403\"} 1",
        "longhaul_http_requests_total{method=\"other\",route=\"/healthz\",status=\"405\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    let age: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("longhaul_queue_oldest_age_seconds{queue=\"default\"} "))
        .expect("the oldest due job's age")
        .parse()
        .expect("a number");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!(!text.contains(&id), "a raw path leaked into the labels");
    assert!(!text.contains("FOO1"), "an invented method became a label");
}

both_stores!(metrics_show_queues_and_requests_by_route);

async fn a_run_at_outside_the_supported_years_is_refused(db: TestDb) {
    let api = api(&db).await;
    let (_, key) = api.tenant("acme").await;
    for run_at in [
        "-5000-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "+10000-01-01T00:00:00Z",
    ] {
        let reply = api
            .create_job(&key, json!({ "kind": "system.noop", "runAt": run_at }))
            .await;
        assert!(
            reply.status.is_client_error(),
            "{run_at}: {} {}",
            reply.status,
            reply.body
        );
        assert!(
            reply.body["error"]["code"].is_string(),
            "{run_at}: {}",
            reply.body
        );
    }
    let accepted = api
        .create_job(
            &key,
            json!({ "kind": "system.noop", "runAt": "2030-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    assert_eq!(
        db.store.count_by_state().await.expect("counts"),
        vec![(longhaul_core::JobState::Queued, 1)]
    );
}

both_stores!(a_run_at_outside_the_supported_years_is_refused);
