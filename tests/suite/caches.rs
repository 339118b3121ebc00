//! The API's short-lived caches of keys and job status, on both stores, with
//! the manual clock: changes made through the same API process take effect
//! at once; changes made elsewhere (the store directly, as another replica or
//! a worker would) take effect once the TTL has passed, never later; a cached
//! answer never crosses tenants.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use axum::Router;
use chrono::Utc;
use longhaul_api::clock::{Clock, ManualClock};
use longhaul_api::AppState;
use longhaul_core::audit::Actor;
use longhaul_core::job::ClaimRequest;
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{KeyMode, NewTenant, Role, Tenant, TenantStatus};
use serde_json::{json, Value};

use crate::harness::TestDb;
use crate::http::{self, Reply};

const AUTH_TTL: Duration = Duration::from_secs(2);
const STATUS_TTL: Duration = Duration::from_millis(500);

struct App {
    router: Router,
    clock: Arc<ManualClock>,
    stores: Arc<dyn Stores>,
}

async fn app(db: &TestDb) -> App {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let state = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_clock(clock.clone())
        .with_auth_cache(AUTH_TTL)
        .with_job_status_cache(STATUS_TTL);
    App {
        router: longhaul_api::router(state),
        clock,
        stores,
    }
}

impl App {
    async fn tenant(&self, name: &str) -> (Tenant, String, String) {
        let tenant = self
            .stores
            .create_tenant(NewTenant::new(name, "eu", "standard"), &Actor::system())
            .await
            .expect("tenant");
        let issued = self
            .stores
            .issue_api_key(
                Some(&tenant.id),
                "test",
                Role::Admin,
                KeyMode::Live,
                &Actor::system(),
            )
            .await
            .expect("key");
        (tenant, issued.key.id, issued.secret)
    }

    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        http::call(&self.router, method, path, Some(key), body).await
    }

    fn advance(&self, by: Duration) {
        self.clock
            .advance(chrono::Duration::from_std(by).expect("duration"));
    }
}

async fn key_changes_through_this_process_apply_at_once(db: TestDb) {
    let app = app(&db).await;
    let (tenant, _, admin) = app.tenant("acme").await;
    let issued = app
        .call(
            Method::POST,
            "/v1/api-keys",
            &admin,
            Some(json!({ "name": "ci", "role": "developer" })),
        )
        .await;
    let ci = issued.body["secret"].as_str().expect("secret").to_string();
    let ci_id = issued.body["id"].as_str().expect("id").to_string();
    // Cached by this call.
    app.call(Method::GET, "/v1/jobs", &ci, None)
        .await
        .assert_status(StatusCode::OK);
    app.call(
        Method::POST,
        &format!("/v1/api-keys/{ci_id}/revoke"),
        &admin,
        None,
    )
    .await
    .assert_status(StatusCode::OK);
    app.call(Method::GET, "/v1/jobs", &ci, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Suspension by an operator of this process: the cached key of the
    // tenant cannot start work on the very next request.
    let operator = app
        .stores
        .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
        .await
        .expect("operator");
    app.call(Method::GET, "/v1/jobs", &admin, None)
        .await
        .assert_status(StatusCode::OK);
    app.call(
        Method::POST,
        &format!("/v1/tenants/{}/suspend", tenant.id),
        &operator.secret,
        Some(json!({ "reason": "audit" })),
    )
    .await
    .assert_status(StatusCode::OK);
    app.call(
        Method::POST,
        "/v1/jobs",
        &admin,
        Some(json!({ "kind": "system.noop" })),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "tenant_suspended");
}

async fn key_changes_made_elsewhere_apply_within_the_ttl(db: TestDb) {
    let app = app(&db).await;
    let (tenant, key_id, admin) = app.tenant("acme").await;
    app.call(Method::GET, "/v1/jobs", &admin, None)
        .await
        .assert_status(StatusCode::OK);
    // Another replica revokes the key and suspends the tenant.
    let now = app.clock.now();
    app.stores
        .revoke_api_key(&tenant.id, &key_id, now, &Actor::system())
        .await
        .expect("revoke");
    // Within the TTL this process still knows the key as it was...
    app.advance(AUTH_TTL / 2);
    app.call(Method::GET, "/v1/jobs", &admin, None)
        .await
        .assert_status(StatusCode::OK);
    // ...and once it has passed, the key is read again and refused.
    app.advance(AUTH_TTL / 2);
    app.call(Method::GET, "/v1/jobs", &admin, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let (other, _, other_key) = app.tenant("globex").await;
    app.call(Method::GET, "/v1/jobs", &other_key, None)
        .await
        .assert_status(StatusCode::OK);
    app.stores
        .set_tenant_status(
            &other.id,
            TenantStatus::Suspended,
            Some("elsewhere".into()),
            &Actor::system(),
        )
        .await
        .expect("suspend");
    app.advance(AUTH_TTL);
    app.call(
        Method::POST,
        "/v1/jobs",
        &other_key,
        Some(json!({ "kind": "system.noop" })),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "tenant_suspended");
}

async fn job_status_is_fresh_within_the_ttl_and_at_once_after_own_changes(db: TestDb) {
    let app = app(&db).await;
    let (_, _, admin) = app.tenant("acme").await;
    let created = app
        .call(
            Method::POST,
            "/v1/jobs",
            &admin,
            Some(json!({ "kind": "system.noop" })),
        )
        .await;
    let id = created.body["id"].as_str().expect("id").to_string();
    let queue = created.body["queue"].as_str().expect("queue").to_string();
    let path = format!("/v1/jobs/{id}");
    let first = app.call(Method::GET, &path, &admin, None).await;
    first.assert_status(StatusCode::OK);
    assert_eq!(first.body["status"], "queued");
    assert_eq!(
        first.headers[header::CONTENT_TYPE],
        "application/json",
        "a cached answer is still JSON"
    );

    // A worker claims it: polling clients see it within the TTL.
    let claimed = db
        .store
        .claim(
            &ClaimRequest {
                queues: vec![queue],
                limit: 1,
                worker_id: "w".into(),
                lease: Duration::from_secs(30),
            },
            None,
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let cached = app.call(Method::GET, &path, &admin, None).await;
    assert_eq!(cached.body, first.body, "served from the cache");
    app.advance(STATUS_TTL);
    let fresh = app.call(Method::GET, &path, &admin, None).await;
    assert_eq!(fresh.body["status"], "running");

    // A cancel through this process shows at once.
    app.call(Method::POST, &format!("{path}/cancel"), &admin, None)
        .await
        .assert_status(StatusCode::OK);
    let after = app.call(Method::GET, &path, &admin, None).await;
    assert_eq!(after.body["cancelRequested"], true);

    // The cache is per tenant: another tenant still gets a 404 for the id.
    let (_, _, other) = app.tenant("globex").await;
    let stranger = app.call(Method::GET, &path, &other, None).await;
    stranger.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(!stranger.body.to_string().contains("system.noop"));
}

both_stores!(
    key_changes_through_this_process_apply_at_once,
    key_changes_made_elsewhere_apply_within_the_ttl,
    job_status_is_fresh_within_the_ttl_and_at_once_after_own_changes,
);
