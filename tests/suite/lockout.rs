//! Brute-force lockout through the HTTP API, on both stores: 10 failures per
//! key prefix or 20 per client IP within 5 minutes lock it for 15 minutes
//! (`429 brute_force_lockout` + `Retry-After`), even for a correct key. The
//! in-process counters follow the API's manual clock; the Redis counters are
//! exercised for real (`LONGHAUL_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`) by two API "replicas" sharing one Redis. An
//! unreachable Redis fails the test.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use longhaul_api::clock::ManualClock;
use longhaul_api::lockout::{LockKey, Lockout, RedisLockout, LOCKOUT};
use longhaul_api::AppState;
use longhaul_core::audit::Actor;
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{parse_token, KeyMode, NewTenant, Quotas, Role, Tenant};
use serde_json::json;

use crate::harness::{redis_url, TestDb};
use crate::http::{self, Reply};

/// Lockout-specific checks on an answer.
trait LockoutReply {
    fn assert_unauthorized(&self);
    fn assert_locked(&self) -> u64;
}

impl LockoutReply for Reply {
    fn assert_unauthorized(&self) {
        self.assert_status(StatusCode::UNAUTHORIZED);
        assert_eq!(self.body["error"]["code"], json!("unauthorized"));
        assert!(!self.headers.contains_key(header::RETRY_AFTER));
    }

    /// Asserts a lockout answer and returns its `Retry-After` seconds.
    fn assert_locked(&self) -> u64 {
        self.assert_status(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            self.body["error"]["code"],
            json!("brute_force_lockout"),
            "{}",
            self.body
        );
        let seconds = self.retry_after();
        assert!((1..=900).contains(&seconds), "Retry-After {seconds}");
        assert_eq!(
            self.body["error"]["details"]["retryAfterSeconds"],
            json!(seconds)
        );
        seconds
    }
}

async fn call(router: &Router, token: &str, forwarded_for: Option<&str>) -> Reply {
    call_path(router, Method::GET, "/v1/api-keys", token, forwarded_for).await
}

async fn call_path(
    router: &Router,
    method: Method,
    path: &str,
    token: &str,
    forwarded_for: Option<&str>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    http::send(router, request.body(Body::empty()).expect("request")).await
}

async fn tenant(stores: &dyn Stores, name: &str) -> Tenant {
    stores
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
        .expect("tenant")
}

async fn key(stores: &dyn Stores, tenant: &Tenant, role: Role) -> String {
    stores
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

/// The same key prefix with a wrong secret (well formed, so it counts
/// against the prefix).
fn wrong_secret(token: &str) -> String {
    let (_, prefix) = parse_token(token).expect("a well-formed token");
    let at = token.rfind('_').expect("prefix_secret");
    let secret_len = token.len() - at - 1;
    let random = format!(
        "{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    );
    let secret: String = random.chars().rev().take(secret_len).collect();
    assert_eq!(secret.len(), secret_len, "secret longer than two uuids");
    let bad = format!("{}{}", &token[..=at], secret);
    assert_ne!(bad, token);
    assert_eq!(
        parse_token(&bad).map(|(_, p)| p.to_string()),
        Some(prefix.to_string())
    );
    bad
}

/// A token that does not parse (counts only against the IP).
fn malformed() -> String {
    let token = format!("not-a-key-{}", uuid::Uuid::now_v7().simple());
    assert!(parse_token(&token).is_none());
    token
}

fn memory_api(stores: Arc<dyn Stores>, clock: Arc<ManualClock>, trust: bool) -> Router {
    let state = AppState::new(stores, Arc::new(longhaul_worker::jobs::catalogue()))
        .with_clock(clock)
        .with_trust_forwarded_for(trust);
    longhaul_api::router(state)
}

async fn prefix_then_ip_lockout_and_expiry(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let api = memory_api(stores.clone(), clock.clone(), false);
    let acme = tenant(stores.as_ref(), "acme").await;
    let a = key(stores.as_ref(), &acme, Role::Admin).await;
    let b = key(stores.as_ref(), &acme, Role::Admin).await;
    call(&api, &a, None).await.assert_status(StatusCode::OK);

    // 10 wrong secrets for a's prefix: each an ordinary 401.
    for _ in 0..10 {
        call(&api, &wrong_secret(&a), None)
            .await
            .assert_unauthorized();
    }
    // The 11th attempt is refused even with the right secret.
    let retry = call(&api, &a, None).await.assert_locked();
    assert_eq!(retry, 900, "a fresh lock lasts 15 minutes");

    // Another prefix from the same IP still works: the IP has 10 of its 20.
    call(&api, &b, None).await.assert_status(StatusCode::OK);
    for _ in 0..9 {
        call(&api, &malformed(), None).await.assert_unauthorized();
    }
    call(&api, &b, None).await.assert_status(StatusCode::OK);
    // The 20th failure from this IP locks it: b is refused too.
    call(&api, &malformed(), None).await.assert_unauthorized();
    call(&api, &b, None).await.assert_locked();
    // X-Forwarded-For is ignored unless the proxy is trusted.
    call(&api, &b, Some("203.0.113.9")).await.assert_locked();

    // 14 minutes on: still locked, with what is left of the 15.
    clock.advance(chrono::Duration::minutes(14));
    let left = call(&api, &a, None).await.assert_locked();
    assert_eq!(left, 60);
    clock.advance(chrono::Duration::minutes(1));
    call(&api, &a, None).await.assert_status(StatusCode::OK);
    call(&api, &b, None).await.assert_status(StatusCode::OK);

    // The count started again: one more failure does not lock.
    call(&api, &wrong_secret(&a), None)
        .await
        .assert_unauthorized();
    call(&api, &a, None).await.assert_status(StatusCode::OK);

    // Failures older than the 5-minute window are forgotten: 9 + 9 never lock.
    for _ in 0..8 {
        call(&api, &wrong_secret(&a), None)
            .await
            .assert_unauthorized();
    }
    clock.advance(chrono::Duration::minutes(5));
    for _ in 0..9 {
        call(&api, &wrong_secret(&a), None)
            .await
            .assert_unauthorized();
    }
    call(&api, &a, None).await.assert_status(StatusCode::OK);
    call(&api, &wrong_secret(&a), None)
        .await
        .assert_unauthorized();
    call(&api, &a, None).await.assert_locked();
}

async fn forwarded_ip_lockout_is_per_ip(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let api = memory_api(stores.clone(), clock, true);
    let acme = tenant(stores.as_ref(), "acme").await;
    let good = key(stores.as_ref(), &acme, Role::Admin).await;
    let attacker = "198.51.100.7";

    for _ in 0..19 {
        call(&api, &malformed(), Some(attacker))
            .await
            .assert_unauthorized();
    }
    call(&api, &good, Some(attacker))
        .await
        .assert_status(StatusCode::OK);
    call(&api, &malformed(), Some(attacker))
        .await
        .assert_unauthorized();

    // That IP is locked, for any key; the first X-Forwarded-For entry is the client.
    call(&api, &good, Some(attacker)).await.assert_locked();
    call(&api, &good, Some("198.51.100.7, 10.0.0.1"))
        .await
        .assert_locked();
    call(&api, &malformed(), Some(attacker))
        .await
        .assert_locked();
    // Other IPs are not.
    call(&api, &good, Some("198.51.100.8"))
        .await
        .assert_status(StatusCode::OK);
    call(&api, &good, Some("10.0.0.1, 198.51.100.7"))
        .await
        .assert_status(StatusCode::OK);
    call(&api, &good, None).await.assert_status(StatusCode::OK);
}

async fn only_failed_authentications_count(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let api = memory_api(stores.clone(), clock, false);
    let acme = tenant(stores.as_ref(), "acme").await;
    let viewer = key(stores.as_ref(), &acme, Role::Viewer).await;

    // 403s and 404s of an authenticated key are not guesses.
    for _ in 0..25 {
        call(&api, &viewer, None)
            .await
            .assert_status(StatusCode::FORBIDDEN);
        call_path(
            &api,
            Method::GET,
            &format!("/v1/jobs/{}", longhaul_core::JobId::new()),
            &viewer,
            None,
        )
        .await
        .assert_status(StatusCode::NOT_FOUND);
    }
    call_path(&api, Method::GET, "/v1/jobs", &viewer, None)
        .await
        .assert_status(StatusCode::OK);
}

both_stores!(
    prefix_then_ip_lockout_and_expiry,
    forwarded_ip_lockout_is_per_ip,
    only_failed_authentications_count,
);

async fn redis_lockout(namespace: &str) -> Arc<RedisLockout> {
    let url = redis_url();
    Arc::new(
        RedisLockout::connect(&url, namespace)
            .await
            .unwrap_or_else(|e| {
                panic!("Redis must be reachable for the test suite at {url} (set LONGHAUL_TEST_REDIS_URL): {e}")
            }),
    )
}

async fn redis_replicas_share_the_lockout(db: TestDb) {
    let namespace = format!("longhaul:lockout:test-{}", uuid::Uuid::now_v7().simple());
    // Two replicas: their own store pools and their own Redis connections.
    let mut replicas = Vec::new();
    let mut lockouts = Vec::new();
    for _ in 0..2 {
        let stores = longhaul_core::store::connect_stores(&db.url, 8)
            .await
            .expect("stores");
        let lockout = redis_lockout(&namespace).await;
        let state = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
            .with_lockout(lockout.clone());
        replicas.push((longhaul_api::router(state), stores));
        lockouts.push(lockout);
    }
    let (one, two) = (&replicas[0].0, &replicas[1].0);
    let stores = replicas[0].1.clone();
    let acme = tenant(stores.as_ref(), "acme").await;
    let a = key(stores.as_ref(), &acme, Role::Admin).await;
    let b = key(stores.as_ref(), &acme, Role::Admin).await;

    // 9 failures spread over both replicas: not yet locked.
    for i in 0..9 {
        let replica = if i % 2 == 0 { one } else { two };
        call(replica, &wrong_secret(&a), None)
            .await
            .assert_unauthorized();
    }
    call(one, &a, None).await.assert_status(StatusCode::OK);
    call(two, &a, None).await.assert_status(StatusCode::OK);
    // The 10th, on either, locks the prefix on both.
    call(two, &wrong_secret(&a), None)
        .await
        .assert_unauthorized();
    let retry = call(one, &a, None).await.assert_locked();
    assert!(retry >= 890, "a fresh lock: Retry-After {retry}");
    call(two, &a, None).await.assert_locked();
    // Another prefix from the same IP still works (10 of 20).
    call(two, &b, None).await.assert_status(StatusCode::OK);

    // The lock is a Redis key with a 15-minute TTL, visible to both.
    let prefix = parse_token(&a).expect("token").1.to_string();
    for lockout in &lockouts {
        let left = lockout
            .check(&[LockKey::Prefix(prefix.clone())], Utc::now())
            .await
            .expect("check")
            .expect("locked");
        assert!(left <= LOCKOUT && left.as_secs() >= 890, "{left:?}");
    }

    // 10 more failures from the same IP, half on each replica, lock the IP.
    for i in 0..10 {
        let replica = if i % 2 == 0 { one } else { two };
        call(replica, &malformed(), None)
            .await
            .assert_unauthorized();
    }
    call(one, &b, None).await.assert_locked();
    call(two, &b, None).await.assert_locked();

    // Clean up: every key of this test goes, and with them the locks.
    let deleted = lockouts[0].clear().await.expect("clearing the test keys");
    assert!(deleted >= 2, "deleted {deleted} keys");
    call(two, &a, None).await.assert_status(StatusCode::OK);
    call(one, &b, None).await.assert_status(StatusCode::OK);
}

both_stores!(redis_replicas_share_the_lockout);
