//! Quotas and backpressure through the HTTP API, on both stores: the cap on
//! queued jobs (`429 quota_exceeded` + `Retry-After`, nothing written, exact
//! under concurrency, idempotent replays still answered), creations per
//! minute (`429 rate_limited`; in-process counters on the manual clock, and
//! Redis counters shared by two API replicas, for real at
//! `LONGHAUL_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`; unreachable
//! fails the test), and usage metering (`GET /v1/usage`).

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::Router;
use chrono::Utc;
use longhaul_api::clock::{Clock, ManualClock};
use longhaul_api::rate_limit::RedisRateLimiter;
use longhaul_api::AppState;
use longhaul_core::audit::Actor;
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{KeyMode, NewTenant, Quotas, Role, Tenant};
use longhaul_core::usage::Period;
use longhaul_core::JobState;
use serde_json::{json, Value};

use crate::harness::{redis_url, TestDb};
use crate::http::{self, Reply};

#[derive(Clone)]
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
    /// A tenant with `quotas` and an admin key.
    async fn tenant(&self, name: &str, quotas: Quotas) -> (Tenant, String) {
        let tenant = self
            .stores
            .create_tenant(
                NewTenant {
                    name: name.into(),
                    region: "eu".into(),
                    plan: "standard".into(),
                    quotas,
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

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        call(&self.router, method, path, key, idempotency_key, body).await
    }

    async fn create(&self, key: &str, idempotency_key: Option<&str>, body: Value) -> Reply {
        self.call(
            Method::POST,
            "/v1/jobs",
            Some(key),
            idempotency_key,
            Some(body),
        )
        .await
    }

    async fn usage(&self, key: &str, query: &str) -> Reply {
        self.call(
            Method::GET,
            &format!("/v1/usage{query}"),
            Some(key),
            None,
            None,
        )
        .await
    }

    async fn queued(&self, tenant: &Tenant) -> usize {
        let filter = longhaul_core::job::JobFilter {
            states: vec![JobState::Queued],
            ..Default::default()
        };
        self.stores
            .list_jobs(&tenant.id, &filter, None, 1000)
            .await
            .expect("listing")
            .len()
    }

    async fn all_jobs(&self) -> i64 {
        self.stores
            .count_by_state()
            .await
            .expect("counts")
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// The tenant's usage this month (by the API clock), straight from the store.
    async fn operations(&self, tenant: &Tenant) -> Vec<(String, i64)> {
        self.stores
            .usage(&tenant.id, Period::of(self.clock.now()))
            .await
            .expect("usage")
            .into_iter()
            .map(|usage| (usage.kind, usage.operations))
            .collect()
    }
}

async fn call(
    router: &Router,
    method: Method,
    path: &str,
    key: Option<&str>,
    idempotency_key: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let headers: Vec<(&str, &str)> = idempotency_key
        .map(|key| ("idempotency-key", key))
        .into_iter()
        .collect();
    http::send(router, http::request(method, path, key, &headers, body)).await
}

fn sleep_job() -> Value {
    json!({ "kind": "system.sleep", "params": { "durationMs": 60000, "steps": 10 } })
}

fn noop_job() -> Value {
    json!({ "kind": "system.noop", "params": {} })
}

fn max_queued(n: i64) -> Quotas {
    Quotas {
        max_queued: Some(n),
        ..Default::default()
    }
}

fn per_minute(n: i32) -> Quotas {
    Quotas {
        creations_per_minute: Some(n),
        ..Default::default()
    }
}

async fn the_job_past_the_queued_cap_is_refused_and_nothing_changes(db: TestDb) {
    let api = api(&db).await;
    let (acme, key) = api.tenant("acme", max_queued(3)).await;
    let (_, other) = api.tenant("other", max_queued(3)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = api.create(&key, None, sleep_job()).await;
        reply.assert_status(StatusCode::ACCEPTED);
        ids.push(reply.body["id"].as_str().expect("id").to_string());
    }
    let jobs_before = api.all_jobs().await;
    let usage_before = api.operations(&acme).await;

    let refused = api.create(&key, None, noop_job()).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(refused.retry_after(), 30);
    assert_eq!(
        refused.body["error"]["details"],
        json!({ "limit": 3, "queued": 3 })
    );
    // A delayed job would be queued too: refused as well.
    let delayed = json!({ "kind": "system.noop", "params": {}, "runAt": "2099-01-01T00:00:00Z" });
    api.create(&key, None, delayed)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");

    // Nothing was written; the accepted jobs are all still there.
    assert_eq!(api.all_jobs().await, jobs_before);
    assert_eq!(api.operations(&acme).await, usage_before);
    assert_eq!(usage_before, vec![("system.sleep".to_string(), 3)]);
    assert_eq!(api.queued(&acme).await, 3);
    // Another tenant has its own cap.
    api.create(&other, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);

    // One job leaves `queued`: there is room for exactly one more.
    api.call(
        Method::POST,
        &format!("/v1/jobs/{}/cancel", ids[0]),
        Some(&key),
        None,
        None,
    )
    .await
    .assert_status(StatusCode::OK);
    api.create(&key, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    api.create(&key, None, noop_job())
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(api.queued(&acme).await, 3);
    assert_eq!(
        api.operations(&acme).await,
        vec![
            ("system.noop".to_string(), 1),
            ("system.sleep".to_string(), 3)
        ]
    );
}

async fn concurrent_creations_stop_exactly_at_the_cap(db: TestDb) {
    let api = api(&db).await;
    let (acme, key) = api.tenant("acme", max_queued(5)).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let api = api.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            api.create(&key, None, noop_job()).await
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for task in tasks {
        let reply = task.await.expect("task");
        match reply.status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!((accepted, refused), (5, 15));
    assert_eq!(api.queued(&acme).await, 5);
    assert_eq!(api.all_jobs().await, 5);
    assert_eq!(
        api.operations(&acme).await,
        vec![("system.noop".to_string(), 5)]
    );
}

async fn an_idempotent_replay_at_the_cap_answers_the_existing_job(db: TestDb) {
    let api = api(&db).await;
    let (acme, key) = api.tenant("acme", max_queued(2)).await;
    let first = api.create(&key, Some("order-1"), sleep_job()).await;
    first.assert_status(StatusCode::ACCEPTED);
    api.create(&key, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);

    let replay = api.create(&key, Some("order-1"), sleep_job()).await;
    replay.assert_status(StatusCode::ACCEPTED);
    assert_eq!(replay.body["id"], first.body["id"]);
    assert_eq!(
        replay
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    // A new key is new work: refused.
    api.create(&key, Some("order-2"), sleep_job())
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    // The same key with other params is still a conflict, not a quota matter.
    api.create(&key, Some("order-1"), noop_job())
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    assert_eq!(api.all_jobs().await, 2);
    assert_eq!(
        api.operations(&acme).await,
        vec![
            ("system.noop".to_string(), 1),
            ("system.sleep".to_string(), 1)
        ]
    );
}

async fn creations_per_minute_in_process(db: TestDb) {
    let api = api(&db).await;
    let (acme, key) = api.tenant("acme", per_minute(3)).await;
    let (_, other) = api.tenant("other", per_minute(3)).await;
    // An invalid request is not a creation.
    api.create(&key, None, json!({ "kind": "no.such.kind" }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    for _ in 0..3 {
        api.create(&key, None, noop_job())
            .await
            .assert_status(StatusCode::ACCEPTED);
    }
    let limited = api.create(&key, None, noop_job()).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let seconds = limited.retry_after();
    assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
    assert_eq!(limited.body["error"]["details"]["limit"], json!(3));
    assert_eq!(
        limited.body["error"]["details"]["retryAfterSeconds"],
        json!(seconds)
    );
    // Nothing written, nothing billed; other tenants count on their own.
    assert_eq!(api.all_jobs().await, 3);
    assert_eq!(
        api.operations(&acme).await,
        vec![("system.noop".to_string(), 3)]
    );
    api.create(&other, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);

    // Once the window has passed, creations are accepted again.
    api.clock.advance(chrono::Duration::seconds(seconds as i64));
    for _ in 0..3 {
        api.create(&key, None, noop_job())
            .await
            .assert_status(StatusCode::ACCEPTED);
    }
    api.create(&key, None, noop_job())
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    api.clock.advance(chrono::Duration::minutes(1));
    api.create(&key, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
}

async fn redis_replicas_share_the_creation_counter(db: TestDb) {
    let url = redis_url();
    let namespace = format!("longhaul:rate:test-{}", uuid::Uuid::now_v7().simple());
    // One clock for both replicas: the minute of the Redis key comes from it.
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let stores = longhaul_core::store::connect_stores(&db.url, 8)
            .await
            .expect("stores");
        let limiter = RedisRateLimiter::connect(&url, &namespace)
            .await
            .unwrap_or_else(|e| {
                panic!("Redis must be reachable for the test suite at {url} (set LONGHAUL_TEST_REDIS_URL): {e}")
            });
        let state = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
            .with_clock(clock.clone())
            .with_rate_limiter(Arc::new(limiter));
        replicas.push(Api {
            router: longhaul_api::router(state),
            clock: clock.clone(),
            stores,
        });
    }
    let (one, two) = (&replicas[0], &replicas[1]);
    let (acme, key) = one.tenant("acme", per_minute(4)).await;
    for i in 0..4 {
        let replica = if i % 2 == 0 { one } else { two };
        replica
            .create(&key, None, noop_job())
            .await
            .assert_status(StatusCode::ACCEPTED);
    }
    for replica in [one, two] {
        let limited = replica.create(&key, None, noop_job()).await;
        limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!((1..=60).contains(&limited.retry_after()));
    }
    assert_eq!(
        one.operations(&acme).await,
        vec![("system.noop".to_string(), 4)]
    );
    // The next minute is a new key on both.
    clock.advance(chrono::Duration::minutes(1));
    two.create(&key, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    one.create(&key, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
}

async fn usage_meters_created_jobs_per_kind_and_month(db: TestDb) {
    let api = api(&db).await;
    let (acme, key) = api.tenant("acme", Quotas::default()).await;
    let (other_tenant, other) = api.tenant("other", Quotas::default()).await;
    let this_month = Period::of(api.clock.now()).to_string();

    let empty = api.usage(&key, "").await;
    empty.assert_status(StatusCode::OK);
    assert_eq!(
        empty.body,
        json!({ "period": this_month, "data": [], "total": 0 })
    );

    api.create(&key, Some("a"), sleep_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    api.create(&key, None, sleep_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    api.create(&key, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    // Replays, invalid requests and conflicts are free.
    api.create(&key, Some("a"), sleep_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    api.create(&key, Some("a"), noop_job())
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    api.create(
        &key,
        None,
        json!({ "kind": "system.sleep", "params": { "steps": "x" } }),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    // Another tenant's work is not ours; work enqueued outside the API is not metered.
    api.create(&other, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    let client = longhaul_core::JobClient::new(
        db.store.clone(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    );
    client
        .enqueue(longhaul_core::client::EnqueueRequest::new(
            acme.id.clone(),
            "system.noop",
            json!({}),
        ))
        .await
        .expect("enqueue");

    let viewer = api.key(&acme, Role::Viewer).await;
    let expected = json!({
        "period": this_month,
        "data": [
            { "kind": "system.noop", "operations": 1 },
            { "kind": "system.sleep", "operations": 2 },
        ],
        "total": 3,
    });
    for query in [String::new(), format!("?period={this_month}")] {
        let reply = api.usage(&viewer, &query).await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.body, expected);
    }
    assert_eq!(
        api.stores
            .usage(&other_tenant.id, Period::of(api.clock.now()))
            .await
            .expect("usage")
            .len(),
        1
    );

    // Next month (by the API clock) starts from nothing.
    api.clock.advance(chrono::Duration::days(32));
    let next_month = Period::of(api.clock.now()).to_string();
    assert_ne!(next_month, this_month);
    api.create(&key, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    assert_eq!(
        api.usage(&viewer, "").await.body,
        json!({
            "period": next_month,
            "data": [{ "kind": "system.noop", "operations": 1 }],
            "total": 1,
        })
    );
    assert_eq!(
        api.usage(&viewer, &format!("?period={this_month}"))
            .await
            .body,
        expected
    );
}

async fn usage_query_validation_and_roles(db: TestDb) {
    let api = api(&db).await;
    let (acme, key) = api.tenant("acme", Quotas::default()).await;
    for bad in [
        "2025-13",
        "2025-00",
        "2025-1",
        "25-01",
        "abc",
        "",
        "2025-01-01",
        "1969-12",
    ] {
        let reply = api.usage(&key, &format!("?period={bad}")).await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert_eq!(reply.body["error"]["details"]["field"], json!("period"));
    }
    let unknown = api.usage(&key, "?month=2025-01").await;
    unknown.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert_eq!(unknown.body["error"]["details"]["field"], json!("month"));
    let old = api.usage(&key, "?period=2001-02").await;
    old.assert_status(StatusCode::OK);
    assert_eq!(
        old.body,
        json!({ "period": "2001-02", "data": [], "total": 0 })
    );

    let viewer = api.key(&acme, Role::Viewer).await;
    api.usage(&viewer, "").await.assert_status(StatusCode::OK);
    api.call(Method::GET, "/v1/usage", None, None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let operator = api
        .stores
        .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
        .await
        .expect("operator key")
        .secret;
    api.usage(&operator, "")
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    api.call(Method::POST, "/v1/usage", Some(&key), None, None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

both_stores!(
    the_job_past_the_queued_cap_is_refused_and_nothing_changes,
    concurrent_creations_stop_exactly_at_the_cap,
    an_idempotent_replay_at_the_cap_answers_the_existing_job,
    creations_per_minute_in_process,
    redis_replicas_share_the_creation_counter,
    usage_meters_created_jobs_per_kind_and_month,
    usage_query_validation_and_roles,
);

/// A retry puts a job back in `queued`: it is held to the cap like a creation.
async fn a_retry_past_the_queued_cap_is_refused(db: TestDb) {
    let api = api(&db).await;
    let (acme, key) = api.tenant("acme", max_queued(2)).await;
    let first = api.create(&key, None, sleep_job()).await;
    let first = first.body["id"].as_str().expect("id").to_string();
    let cancel = |id: String| {
        let api = &api;
        let key = &key;
        async move {
            api.call(
                Method::POST,
                &format!("/v1/jobs/{id}/cancel"),
                Some(key),
                None,
                None,
            )
            .await
            .assert_status(StatusCode::OK);
        }
    };
    cancel(first.clone()).await;
    api.create(&key, None, sleep_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    let second = api.create(&key, None, sleep_job()).await;
    second.assert_status(StatusCode::ACCEPTED);
    assert_eq!(api.queued(&acme).await, 2);

    let retry = |id: String| {
        let api = &api;
        let key = &key;
        async move {
            api.call(
                Method::POST,
                &format!("/v1/jobs/{id}/retry"),
                Some(key),
                None,
                None,
            )
            .await
        }
    };
    let refused = retry(first.clone()).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(
        refused.body["error"]["details"],
        json!({ "limit": 2, "queued": 2 })
    );
    assert_eq!(
        api.queued(&acme).await,
        2,
        "a refused retry changed the queue"
    );
    let still = api
        .call(
            Method::GET,
            &format!("/v1/jobs/{first}"),
            Some(&key),
            None,
            None,
        )
        .await;
    assert_eq!(
        still.body["status"], "cancelled",
        "a refused retry requeued the job"
    );

    // Room again: the retry goes through.
    cancel(second.body["id"].as_str().expect("id").to_string()).await;
    retry(first.clone())
        .await
        .assert_status(StatusCode::ACCEPTED);
    assert_eq!(api.queued(&acme).await, 2);
}

both_stores!(a_retry_past_the_queued_cap_is_refused);

/// Sets (or changes) the tenant's maxQueued quota, as an operator would.
async fn give_max_queued(api: &Api, tenant: &Tenant, n: i64) {
    api.stores
        .update_tenant(
            &tenant.id,
            longhaul_core::tenancy::TenantPatch {
                quotas: Some(max_queued(n)),
                ..Default::default()
            },
            &Actor::system(),
        )
        .await
        .expect("setting maxQueued");
}

/// Jobs queued while a tenant had no maxQueued quota are not in the count's
/// index; giving the tenant a quota must count them all the same.
async fn a_quota_given_later_counts_the_jobs_already_queued(db: TestDb) {
    let api = api(&db).await;
    let (acme, key) = api.tenant("acme", Quotas::default()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = api.create(&key, None, sleep_job()).await;
        reply.assert_status(StatusCode::ACCEPTED);
        ids.push(reply.body["id"].as_str().expect("id").to_string());
    }
    give_max_queued(&api, &acme, 3).await;
    let refused = api.create(&key, None, noop_job()).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(
        refused.body["error"]["details"],
        json!({ "limit": 3, "queued": 3 })
    );
    // A job cancelled and retried while the quota holds is counted again.
    api.call(
        Method::POST,
        &format!("/v1/jobs/{}/cancel", ids[0]),
        Some(&key),
        None,
        None,
    )
    .await
    .assert_status(StatusCode::OK);
    api.call(
        Method::POST,
        &format!("/v1/jobs/{}/retry", ids[0]),
        Some(&key),
        None,
        None,
    )
    .await
    .assert_status(StatusCode::ACCEPTED);
    api.create(&key, None, noop_job())
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    // Raising the quota leaves the count as it is: exactly one more fits.
    give_max_queued(&api, &acme, 4).await;
    api.create(&key, None, noop_job())
        .await
        .assert_status(StatusCode::ACCEPTED);
    api.create(&key, None, noop_job())
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
}

/// A quota given while batches of the tenant's jobs are being enqueued
/// concurrently: every job queued before, during and after the change is
/// counted (an enqueue that read the tenant before the quota committed
/// cannot slip its jobs in uncounted).
async fn a_quota_given_during_bulk_enqueues_counts_every_job(db: TestDb) {
    use longhaul_core::client::{EnqueueRequest, JobClient};
    use std::sync::atomic::{AtomicBool, Ordering};

    let api = api(&db).await;
    let (acme, key) = api.tenant("acme", Quotas::default()).await;
    let client = Arc::new(JobClient::new(
        db.store.clone(),
        crate::support::test_catalogue(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..3 {
        let (client, stop, tenant) = (client.clone(), stop.clone(), acme.id.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..200)
                    .map(|_| EnqueueRequest::new(&tenant, crate::support::RECORD, json!({})))
                    .collect();
                client.enqueue_many(batch).await.expect("bulk enqueue");
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    give_max_queued(&api, &acme, 1_000_000_000).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let queued = api
        .stores
        .count_by_state()
        .await
        .expect("counts")
        .into_iter()
        .find(|(state, _)| *state == JobState::Queued)
        .map(|(_, n)| n)
        .expect("queued jobs");
    assert!(queued >= 1_200, "the writers queued {queued} jobs");
    // A quota of exactly the jobs queued: the count must find them all.
    give_max_queued(&api, &acme, queued).await;
    let refused = api.create(&key, None, noop_job()).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(
        refused.body["error"]["details"],
        json!({ "limit": queued, "queued": queued })
    );
}

both_stores!(
    a_quota_given_later_counts_the_jobs_already_queued,
    a_quota_given_during_bulk_enqueues_counts_every_job,
);
