//! The audit log on both stores, through the HTTP API: every state-changing
//! call is recorded with its key, IP and request id; refused calls record
//! nothing; job transitions are recorded by the store; applications ingest
//! their own events (validated, deduplicated); listings filter, page in both
//! orders without gaps or repeats, and never show another tenant's events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, Duration as TimeSpan, SecondsFormat, Utc};
use longhaul_api::clock::{Clock, ManualClock};
use longhaul_api::AppState;
use longhaul_core::audit::{Actor, AuditFilter};
use longhaul_core::job::{ClaimRequest, Finish, JobEvent, Lease};
use longhaul_core::store::Stores;
use longhaul_core::store::{PgStore, SqliteStore};
use longhaul_core::tenancy::{self, KeyMode, NewTenant, Quotas, Role, Tenant};
use longhaul_core::JobId;
use serde_json::{json, Value};

use crate::harness::TestDb;
use crate::http::{self, Reply};

const CLIENT_IP: &str = "203.0.113.7";

struct App {
    router: Router,
    clock: Arc<ManualClock>,
    stores: Arc<dyn Stores>,
}

/// The API behind a trusted proxy, so the tests choose the client IP.
async fn app(db: &TestDb) -> App {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let state = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_clock(clock.clone())
        .with_trust_forwarded_for(true);
    App {
        router: longhaul_api::router(state),
        clock,
        stores,
    }
}

impl App {
    async fn tenant(&self, name: &str, quotas: Quotas) -> (Tenant, String) {
        let tenant = self
            .stores
            .create_tenant(
                NewTenant {
                    quotas,
                    ..NewTenant::new(name, "eu", "standard")
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

    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        let forwarded = [("x-forwarded-for", CLIENT_IP)];
        http::send(
            &self.router,
            http::request(method, path, Some(key), &forwarded, body),
        )
        .await
    }

    /// Every event of the key's tenant matching `query`, oldest first, read
    /// page by page.
    async fn events(&self, key: &str, query: &str) -> Vec<Value> {
        self.paged(key, query, "asc", 50).await
    }

    /// Every event of the key's tenant matching `query`, in `order` (`asc`
    /// or `desc`), read in pages of `limit`.
    async fn paged(&self, key: &str, query: &str, order: &str, limit: u32) -> Vec<Value> {
        let mut events = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/audit/events?order={order}&limit={limit}{query}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.call(Method::GET, &path, key, None).await;
            page.assert_status(StatusCode::OK);
            events.extend(page.body["data"].as_array().expect("data").iter().cloned());
            match page.body["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return events,
            }
        }
    }

    /// Creates a `system.noop` job through the API: its id and queue.
    async fn create_job(&self, key: &str) -> (JobId, String) {
        let created = self
            .call(
                Method::POST,
                "/v1/jobs",
                key,
                Some(json!({ "kind": "system.noop" })),
            )
            .await;
        created.assert_status(StatusCode::ACCEPTED);
        let id = created.body["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("job id");
        let queue = created.body["queue"].as_str().expect("queue").to_string();
        (id, queue)
    }

    async fn ingest(&self, key: &str, events: Value) -> Reply {
        self.call(
            Method::POST,
            "/v1/audit/events",
            key,
            Some(json!({ "events": events })),
        )
        .await
    }
}

fn request_id(reply: &Reply) -> String {
    reply.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string()
}

fn key_id_of(app_key: &str, keys: &Value) -> String {
    // The listing shows prefixes; a token is `lh_live_<prefix>_<secret>`.
    let prefix = app_key.split('_').nth(2).expect("prefix");
    keys["data"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|key| key["prefix"] == prefix)
        .and_then(|key| key["id"].as_str())
        .expect("the key is listed")
        .to_string()
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["action"].as_str().expect("action").to_string())
        .collect()
}

fn time(text: &str) -> String {
    DateTime::parse_from_rfc3339(text)
        .expect("time")
        .with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn api_changes_are_recorded_with_key_ip_and_request_id(db: TestDb) {
    let app = app(&db).await;
    let operator = app
        .stores
        .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
        .await
        .expect("operator key");
    let (tenant, admin) = app.tenant("acme", Quotas::default()).await;
    let keys = app.call(Method::GET, "/v1/api-keys", &admin, None).await;
    let admin_key_id = key_id_of(&admin, &keys.body);

    // Jobs: create, cancel (queued: cancelled at once), retry.
    let created = app
        .call(
            Method::POST,
            "/v1/jobs",
            &admin,
            Some(json!({ "kind": "system.noop" })),
        )
        .await;
    created.assert_status(StatusCode::ACCEPTED);
    let job_id = created.body["id"].as_str().expect("id").to_string();
    let cancelled = app
        .call(
            Method::POST,
            &format!("/v1/jobs/{job_id}/cancel"),
            &admin,
            None,
        )
        .await;
    cancelled.assert_status(StatusCode::OK);
    let retried = app
        .call(
            Method::POST,
            &format!("/v1/jobs/{job_id}/retry"),
            &admin,
            None,
        )
        .await;
    retried.assert_status(StatusCode::ACCEPTED);

    // Keys: issue, rotate the new one, revoke its successor.
    let issued = app
        .call(
            Method::POST,
            "/v1/api-keys",
            &admin,
            Some(json!({ "name": "ci", "role": "viewer" })),
        )
        .await;
    issued.assert_status(StatusCode::CREATED);
    let issued_id = issued.body["id"].as_str().expect("key id").to_string();
    let rotated = app
        .call(
            Method::POST,
            &format!("/v1/api-keys/{issued_id}/rotate"),
            &admin,
            None,
        )
        .await;
    rotated.assert_status(StatusCode::CREATED);
    let successor_id = rotated.body["id"].as_str().expect("key id").to_string();
    let revoked = app
        .call(
            Method::POST,
            &format!("/v1/api-keys/{successor_id}/revoke"),
            &admin,
            None,
        )
        .await;
    revoked.assert_status(StatusCode::OK);

    // The tenant, by an operator: update, suspend, resume.
    let tenant_path = format!("/v1/tenants/{}", tenant.id);
    let updated = app
        .call(
            Method::PATCH,
            &tenant_path,
            &operator.secret,
            Some(json!({ "plan": "enterprise" })),
        )
        .await;
    updated.assert_status(StatusCode::OK);
    let suspended = app
        .call(
            Method::POST,
            &format!("{tenant_path}/suspend"),
            &operator.secret,
            Some(json!({ "reason": "unpaid invoice" })),
        )
        .await;
    suspended.assert_status(StatusCode::OK);
    let resumed = app
        .call(
            Method::POST,
            &format!("{tenant_path}/resume"),
            &operator.secret,
            None,
        )
        .await;
    resumed.assert_status(StatusCode::OK);

    let api_events: Vec<Value> = app.events(&admin, "&source=api").await;
    let expected = [
        (
            "job.create",
            "job",
            job_id.as_str(),
            &admin_key_id,
            &created,
            "api_key",
        ),
        (
            "job.cancel",
            "job",
            &job_id,
            &admin_key_id,
            &cancelled,
            "api_key",
        ),
        (
            "job.retry",
            "job",
            &job_id,
            &admin_key_id,
            &retried,
            "api_key",
        ),
        (
            "api_key.create",
            "api_key",
            &issued_id,
            &admin_key_id,
            &issued,
            "api_key",
        ),
        (
            "api_key.rotate",
            "api_key",
            &issued_id,
            &admin_key_id,
            &rotated,
            "api_key",
        ),
        (
            "api_key.revoke",
            "api_key",
            &successor_id,
            &admin_key_id,
            &revoked,
            "api_key",
        ),
        (
            "tenant.update",
            "tenant",
            &tenant.id,
            &operator.key.id,
            &updated,
            "operator_key",
        ),
        (
            "tenant.suspend",
            "tenant",
            &tenant.id,
            &operator.key.id,
            &suspended,
            "operator_key",
        ),
        (
            "tenant.resume",
            "tenant",
            &tenant.id,
            &operator.key.id,
            &resumed,
            "operator_key",
        ),
    ];
    assert_eq!(
        actions(&api_events),
        expected.iter().map(|e| e.0.to_string()).collect::<Vec<_>>(),
        "{api_events:#?}"
    );
    for (event, (action, resource_type, resource_id, key_id, reply, actor_type)) in
        api_events.iter().zip(expected)
    {
        assert_eq!(event["tenantId"], json!(tenant.id), "{action}");
        assert_eq!(event["resourceType"], json!(resource_type), "{action}");
        assert_eq!(event["resourceId"], json!(resource_id), "{action}");
        assert_eq!(event["actorKeyId"], json!(key_id), "{action}");
        assert_eq!(event["actorId"], json!(key_id), "{action}");
        assert_eq!(event["actorType"], json!(actor_type), "{action}");
        assert_eq!(event["ip"], json!(CLIENT_IP), "{action}");
        assert_eq!(event["requestId"], json!(request_id(reply)), "{action}");
    }
    assert_eq!(api_events[0]["details"]["kind"], "system.noop");
    assert_eq!(api_events[1]["details"]["state"], "cancelled");
    assert_eq!(
        api_events[4]["details"]["successorKeyId"],
        json!(successor_id)
    );
    assert_eq!(api_events[6]["details"], json!({ "plan": "enterprise" }));
    assert_eq!(api_events[7]["details"]["reason"], "unpaid invoice");
    // The secret of an issued key is never in the log.
    let log = serde_json::to_string(&api_events).expect("json");
    let secret = issued.body["secret"].as_str().expect("secret");
    assert!(!log.contains(secret), "a key secret reached the audit log");

    // The cancel's transition was recorded too, by the system.
    let transitions = app
        .events(&admin, &format!("&source=system&resourceId={job_id}"))
        .await;
    assert_eq!(actions(&transitions), ["job.cancelled", "job.requeued"]);
    assert!(transitions
        .iter()
        .all(|e| e["actorType"] == "system" && e["ip"].is_null()));
}

async fn refused_and_no_op_calls_record_nothing(db: TestDb) {
    let app = app(&db).await;
    let quotas = Quotas {
        max_queued: Some(1),
        ..Quotas::default()
    };
    let (tenant, admin) = app.tenant("acme", quotas).await;
    let noop = json!({ "kind": "system.noop" });
    let post = |body: Value, idempotency: &'static str| {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {admin}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", idempotency)
            .body(Body::from(body.to_string()))
            .expect("request");
        http::send(&app.router, request)
    };
    post(noop.clone(), "one")
        .await
        .assert_status(StatusCode::ACCEPTED);
    // A replay, a refusal at the queued cap, and an invalid job: no new events.
    post(noop.clone(), "one")
        .await
        .assert_status(StatusCode::ACCEPTED);
    post(noop.clone(), "two")
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    post(json!({ "kind": "no.such.kind" }), "three")
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);

    // Revoking twice records one revocation; a failed rotation records nothing.
    let extra = app
        .stores
        .issue_api_key(
            Some(&tenant.id),
            "x",
            Role::Viewer,
            KeyMode::Live,
            &Actor::system(),
        )
        .await
        .expect("key");
    for _ in 0..2 {
        app.call(
            Method::POST,
            &format!("/v1/api-keys/{}/revoke", extra.key.id),
            &admin,
            None,
        )
        .await
        .assert_status(StatusCode::OK);
    }
    app.call(
        Method::POST,
        &format!("/v1/api-keys/{}/rotate", extra.key.id),
        &admin,
        None,
    )
    .await
    .assert_error(StatusCode::CONFLICT, "conflict");

    let events = app.events(&admin, "&source=api").await;
    assert_eq!(
        actions(&events),
        ["job.create", "api_key.revoke"],
        "{events:#?}"
    );
}

async fn cancelling_twice_records_one_cancel(db: TestDb) {
    let app = app(&db).await;
    let (_, admin) = app.tenant("acme", Quotas::default()).await;
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
    for _ in 0..2 {
        let reply = app
            .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), &admin, None)
            .await;
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.body["cancelRequested"], true);
    }
    let events = app.events(&admin, &format!("&resourceId={id}")).await;
    // The cancel call and the transition it makes share a transaction (and
    // a timestamp), so their relative order is not defined.
    let mut actions = actions(&events);
    actions[2..].sort();
    assert_eq!(
        actions,
        [
            "job.create",
            "job.started",
            "job.cancel",
            "job.cancel_requested"
        ],
        "a second cancel changes nothing: {events:#?}"
    );
}

async fn job_transitions_are_recorded_by_the_store(db: TestDb) {
    let app = app(&db).await;
    let (tenant, admin) = app.tenant("acme", Quotas::default()).await;
    let created = app
        .call(
            Method::POST,
            "/v1/jobs",
            &admin,
            Some(json!({ "kind": "system.noop", "maxAttempts": 2 })),
        )
        .await;
    created.assert_status(StatusCode::ACCEPTED);
    let id: JobId = created.body["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("job id");
    let queue = created.body["queue"].as_str().expect("queue").to_string();
    let claim = ClaimRequest {
        queues: vec![queue],
        limit: 1,
        worker_id: "worker-7".into(),
        lease: Duration::from_secs(30),
    };
    let first = db.store.claim(&claim, None).await.expect("claim");
    assert_eq!(first.len(), 1);
    let lease = Lease {
        job_id: id,
        attempt: first[0].attempt,
    };
    db.store
        .set_progress(
            lease,
            &longhaul_core::Progress {
                current: 1,
                total: Some(2),
                unit: None,
                message: None,
            },
        )
        .await
        .expect("progress");
    db.store
        .finish(
            lease,
            &Finish::Failed {
                error: "disk full".into(),
                public: longhaul_core::failure::PublicError::job_failed("disk full"),
                retry_at: Utc::now(),
                permanent: false,
            },
        )
        .await
        .expect("fail");
    let second = db.store.claim(&claim, None).await.expect("claim again");
    assert_eq!(second.len(), 1);
    db.store
        .finish(
            Lease {
                job_id: id,
                attempt: second[0].attempt,
            },
            &Finish::Succeeded {
                result: json!({ "ok": true }),
            },
        )
        .await
        .expect("succeed");

    let events = app
        .events(&admin, &format!("&resourceType=job&resourceId={id}"))
        .await;
    assert_eq!(
        actions(&events),
        [
            "job.create",
            "job.started",
            "job.retry_scheduled",
            "job.started",
            "job.succeeded"
        ],
        "progress is not a transition: {events:#?}"
    );
    let started = &events[1];
    assert_eq!(started["source"], "system");
    assert_eq!(started["actorId"], "worker-7");
    assert_eq!(started["details"]["attempt"], 1);
    assert_eq!(started["tenantId"], json!(tenant.id));
    assert_eq!(events[3]["details"]["attempt"], 2);
    let log = serde_json::to_string(&events[2]).expect("json");
    assert!(
        log.contains("disk full"),
        "the failure's error is recorded: {log}"
    );
}

async fn applications_ingest_validated_events(db: TestDb) {
    let app = app(&db).await;
    let (tenant, admin) = app.tenant("acme", Quotas::default()).await;
    let developer = app.key(&tenant, Role::Developer).await;
    let viewer = app.key(&tenant, Role::Viewer).await;
    let now = app.clock.now();
    let an_hour_ago = (now - TimeSpan::hours(1)).to_rfc3339();
    let batch = json!([
        {
            "action": "user.login", "occurredAt": an_hour_ago, "actorType": "user",
            "actorId": "alice@example.com", "ip": "198.51.100.4", "externalId": "evt-1",
            "details": { "mfa": true }
        },
        { "action": "document.share", "resourceType": "document", "resourceId": "doc-9",
          "externalId": "evt-2" },
        { "action": "report.view" }
    ]);
    let stored = app.ingest(&developer, batch.clone()).await;
    stored.assert_status(StatusCode::CREATED);
    assert_eq!(stored.body, json!({ "stored": 3, "duplicates": 0 }));
    // A resend: the events with an externalId are not stored twice.
    let resent = app.ingest(&developer, batch).await;
    assert_eq!(resent.body, json!({ "stored": 1, "duplicates": 2 }));

    let events = app.events(&admin, "&source=application").await;
    assert_eq!(
        actions(&events),
        ["user.login", "document.share", "report.view", "report.view"]
    );
    let login = &events[0];
    assert_eq!(
        login["occurredAt"].as_str().map(time),
        Some(time(&an_hour_ago))
    );
    assert_eq!(login["actorType"], "user");
    assert_eq!(login["actorId"], "alice@example.com");
    assert_eq!(login["ip"], "198.51.100.4");
    assert_eq!(login["details"], json!({ "mfa": true }));
    assert_eq!(login["requestId"], json!(request_id(&stored)));
    assert!(login["actorKeyId"]
        .as_str()
        .is_some_and(|k| k.starts_with("key_")));
    assert_eq!(events[2]["actorType"], "application");

    // Bad batches: refused whole, naming the event and field; nothing stored.
    let old = (now - TimeSpan::days(400)).to_rfc3339();
    let future = (now + TimeSpan::hours(1)).to_rfc3339();
    let too_many: Vec<Value> = (0..1001).map(|_| json!({ "action": "a" })).collect();
    for (events, field) in [
        (
            json!([{ "action": "ok" }, { "action": "bad action" }]),
            "events[1].action",
        ),
        (
            json!([{ "action": "ok", "ip": "not-an-ip" }]),
            "events[0].ip",
        ),
        (
            json!([{ "action": "ok", "occurredAt": old }]),
            "events[0].occurredAt",
        ),
        (
            json!([{ "action": "ok", "occurredAt": future }]),
            "events[0].occurredAt",
        ),
        (
            json!([{ "action": "ok", "details": "text" }]),
            "events[0].details",
        ),
        (
            json!([{ "action": "ok", "actorId": "a\u{0000}b" }]),
            "events[0].actorId",
        ),
        (json!([]), "events"),
        (json!(too_many), "events"),
    ] {
        let reply = app.ingest(&developer, events).await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert_eq!(
            reply.body["error"]["details"]["field"],
            json!(field),
            "{}",
            reply.body
        );
    }
    for body in [
        json!({ "events": [{ "action": "ok", "extra": 1 }] }),
        json!({ "nope": [] }),
    ] {
        let reply = app
            .call(Method::POST, "/v1/audit/events", &developer, Some(body))
            .await;
        assert!(reply.status.is_client_error(), "{}", reply.body);
        assert!(reply.body["error"]["code"].is_string(), "{}", reply.body);
    }
    assert_eq!(app.events(&admin, "&source=application").await.len(), 4);

    // Roles: viewers neither send nor read; developers send but do not read.
    app.ingest(&viewer, json!([{ "action": "a" }]))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    for key in [&viewer, &developer] {
        app.call(Method::GET, "/v1/audit/events", key, None)
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    // A suspended tenant's applications cannot add events.
    app.stores
        .set_tenant_status(
            &tenant.id,
            tenancy::TenantStatus::Suspended,
            Some("test".into()),
            &Actor::system(),
        )
        .await
        .expect("suspend");
    app.ingest(&developer, json!([{ "action": "a" }]))
        .await
        .assert_error(StatusCode::FORBIDDEN, "tenant_suspended");
}

async fn listings_filter_and_page_without_gaps(db: TestDb) {
    let app = app(&db).await;
    let (tenant, admin) = app.tenant("acme", Quotas::default()).await;
    let now = app.clock.now();
    // 230 events over 230 minutes, two actions, some sharing a timestamp.
    let start = now - TimeSpan::minutes(240);
    let batch: Vec<Value> = (0..230)
        .map(|i| {
            json!({
                "action": if i % 3 == 0 { "file.delete" } else { "file.read" },
                "occurredAt": (start + TimeSpan::minutes(i / 2)).to_rfc3339(),
                "resourceType": "file",
                "resourceId": format!("f-{}", i % 7),
                "details": { "n": i },
            })
        })
        .collect();
    app.ingest(&admin, json!(batch))
        .await
        .assert_status(StatusCode::CREATED);

    let oldest_first = app.events(&admin, "&source=application").await;
    let numbers: Vec<i64> = oldest_first
        .iter()
        .map(|e| e["details"]["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(numbers.len(), 230);
    assert_eq!(
        numbers.iter().collect::<HashSet<_>>().len(),
        230,
        "no repeats"
    );
    let times: Vec<String> = oldest_first
        .iter()
        .map(|e| time(e["occurredAt"].as_str().expect("time")))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // Newest first, by the default order, in pages of 100: the reverse.
    let mut newest_first = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/audit/events?source=application&limit=100".to_string();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = app.call(Method::GET, &path, &admin, None).await;
        page.assert_status(StatusCode::OK);
        newest_first.extend(page.body["data"].as_array().expect("data").iter().cloned());
        match page.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let reversed: Vec<Value> = oldest_first.iter().rev().cloned().collect();
    assert_eq!(newest_first, reversed);

    // Filters.
    let deletes = app.events(&admin, "&action=file.delete").await;
    assert_eq!(deletes.len(), (0..230).filter(|i| i % 3 == 0).count());
    let f3 = app
        .events(&admin, "&resourceType=file&resourceId=f-3")
        .await;
    assert_eq!(f3.len(), (0..230).filter(|i| i % 7 == 3).count());
    let from = (start + TimeSpan::minutes(10)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let to = (start + TimeSpan::minutes(20)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let window = app
        .events(&admin, &format!("&source=application&from={from}&to={to}"))
        .await;
    let in_window: Vec<i64> = window
        .iter()
        .map(|e| e["details"]["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(
        in_window,
        (20..40).collect::<Vec<i64>>(),
        "from inclusive, to exclusive"
    );

    // Bad query values: 422 naming the parameter, never a 500.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("order=sideways", "order"),
        ("cursor=garbage", "cursor"),
        ("from=yesterday", "from"),
        ("source=robots", "source"),
        (&format!("from={to}&to={from}") as &str, "to"),
        ("action=a%00b", "action"),
    ] {
        let reply = app
            .call(
                Method::GET,
                &format!("/v1/audit/events?{query}"),
                &admin,
                None,
            )
            .await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert_eq!(
            reply.body["error"]["details"]["field"],
            json!(field),
            "{query}"
        );
    }
    let _ = tenant;
}

async fn another_tenants_events_are_invisible(db: TestDb) {
    let app = app(&db).await;
    let (_, key_a) = app.tenant("acme", Quotas::default()).await;
    let (_, key_b) = app.tenant("globex", Quotas::default()).await;
    app.ingest(
        &key_a,
        json!([{ "action": "secret.read", "resourceId": "acme-vault" }]),
    )
    .await
    .assert_status(StatusCode::CREATED);
    app.call(
        Method::POST,
        "/v1/jobs",
        &key_a,
        Some(json!({ "kind": "system.noop" })),
    )
    .await
    .assert_status(StatusCode::ACCEPTED);
    let seen_by_a = app.events(&key_a, "").await;
    assert!(actions(&seen_by_a).contains(&"secret.read".to_string()));
    // B's listing, and B paging from A's cursor, show none of A's events.
    let first = app
        .call(Method::GET, "/v1/audit/events?limit=1", &key_a, None)
        .await;
    let a_cursor = first.body["nextCursor"].as_str().expect("a second page");
    for path in [
        "/v1/audit/events".to_string(),
        format!("/v1/audit/events?cursor={a_cursor}"),
        "/v1/audit/events?action=secret.read".to_string(),
    ] {
        let reply = app.call(Method::GET, &path, &key_b, None).await;
        reply.assert_status(StatusCode::OK);
        let text = reply.body.to_string();
        assert!(
            !text.contains("acme-vault") && !text.contains("secret.read"),
            "{text}"
        );
        assert!(
            reply.body["data"]
                .as_array()
                .expect("data")
                .iter()
                .all(|e| e["action"] != "job.create"),
            "{text}"
        );
    }
}

// ---- job transitions, read from job_events ----------------------------------

/// Claims `limit` jobs of `queue` for `worker` (exactly that many).
async fn claim(db: &TestDb, queue: &str, worker: &str, limit: usize) -> Vec<Lease> {
    let claimed = db
        .store
        .claim(
            &ClaimRequest {
                queues: vec![queue.to_string()],
                limit,
                worker_id: worker.into(),
                lease: Duration::from_secs(30),
            },
            None,
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), limit);
    claimed.iter().map(|job| job.lease()).collect()
}

async fn succeed(db: &TestDb, lease: Lease) {
    db.store
        .finish(
            lease,
            &Finish::Succeeded {
                result: json!({ "ok": true }),
            },
        )
        .await
        .expect("succeed");
}

/// The kinds of a job's rows in job_events, read from the table (the store's
/// `job_events` answers `NotFound` once the job is pruned).
async fn logged_kinds(db: &TestDb, job: JobId) -> Vec<String> {
    if db.url.starts_with("sqlite:") {
        let store = SqliteStore::connect(&db.url, 1).await.expect("store");
        sqlx::query_scalar("SELECT kind FROM job_events WHERE job_id = ?1 ORDER BY id")
            .bind(job.as_uuid())
            .fetch_all(store.pool())
            .await
            .expect("kinds")
    } else {
        let store = PgStore::connect(&db.url, 1).await.expect("store");
        sqlx::query_scalar("SELECT kind FROM job_events WHERE job_id = $1 ORDER BY id")
            .bind(job.as_uuid())
            .fetch_all(store.pool())
            .await
            .expect("kinds")
    }
}

/// The event the trigger of 0004_audit.sql made of a transition: what the
/// listing must show for it, field for field.
fn transition_event(tenant_id: &str, event: &JobEvent, worker: &str) -> Value {
    let mut details = serde_json::Map::new();
    if let Some(attempt) = event.attempt {
        details.insert("attempt".into(), json!(attempt));
    }
    if let Some(data) = &event.data {
        details.insert("data".into(), data.clone());
    }
    json!({
        "id": format!("aud_{:032x}", event.id),
        "tenantId": tenant_id,
        "occurredAt": event.at,
        "recordedAt": event.at,
        "source": "system",
        "actorType": "system",
        "actorId": if event.kind == "started" { Some(worker) } else { None },
        "actorKeyId": null,
        "action": format!("job.{}", event.kind),
        "resourceType": "job",
        "resourceId": event.job_id.to_string(),
        "ip": null,
        "requestId": null,
        "externalId": null,
        "details": details,
    })
}

async fn a_job_run_lists_started_then_succeeded(db: TestDb) {
    let app = app(&db).await;
    let (tenant, admin) = app.tenant("acme", Quotas::default()).await;
    let (id, queue) = app.create_job(&admin).await;
    let lease = claim(&db, &queue, "worker-9", 1).await[0];
    db.store
        .set_progress(
            lease,
            &longhaul_core::Progress {
                current: 1,
                total: Some(2),
                unit: None,
                message: None,
            },
        )
        .await
        .expect("progress");
    db.store
        .save_checkpoint(lease, &json!({ "at": 1 }))
        .await
        .expect("checkpoint");
    succeed(&db, lease).await;

    let events = app.events(&admin, &format!("&resourceId={id}")).await;
    assert_eq!(
        actions(&events),
        ["job.create", "job.started", "job.succeeded"],
        "{events:#?}"
    );
    let logged = db
        .store
        .job_events(&tenant.id, id, 0, 100)
        .await
        .expect("events");
    let transitions: Vec<&JobEvent> = logged
        .iter()
        .filter(|e| !["progress", "checkpoint"].contains(&e.kind.as_str()))
        .collect();
    assert_eq!(transitions.len(), 2, "{logged:#?}");
    for (event, logged) in events[1..].iter().zip(transitions) {
        assert_eq!(event, &transition_event(&tenant.id, logged, "worker-9"));
    }
    assert_eq!(
        events[1]["details"],
        json!({ "attempt": 1, "data": { "workerId": "worker-9" } })
    );
    assert_eq!(events[2]["details"], json!({ "attempt": 1 }));
    // The same events, newest first and one per page.
    let newest_first = app
        .paged(&admin, &format!("&resourceId={id}"), "desc", 1)
        .await;
    let reversed: Vec<Value> = events.iter().rev().cloned().collect();
    assert_eq!(newest_first, reversed);
}

async fn pruned_jobs_keep_their_transitions_in_the_log(db: TestDb) {
    let app = app(&db).await;
    let (tenant, admin) = app.tenant("acme", Quotas::default()).await;
    let (id, queue) = app.create_job(&admin).await;
    let lease = claim(&db, &queue, "worker-1", 1).await[0];
    db.store
        .set_progress(
            lease,
            &longhaul_core::Progress {
                current: 1,
                total: None,
                unit: None,
                message: Some("half way".into()),
            },
        )
        .await
        .expect("progress");
    db.store
        .save_checkpoint(lease, &json!({ "cursor": 7 }))
        .await
        .expect("checkpoint");
    succeed(&db, lease).await;
    let (running, running_queue) = app.create_job(&admin).await;
    let running_lease = claim(&db, &running_queue, "worker-2", 1).await[0];
    db.store
        .save_checkpoint(running_lease, &json!({ "cursor": 1 }))
        .await
        .expect("checkpoint");
    let before = app.events(&admin, "").await;
    assert_eq!(
        logged_kinds(&db, id).await,
        ["started", "progress", "checkpoint", "succeeded"]
    );

    let pruned = db
        .store
        .prune_finished(Utc::now() + TimeSpan::hours(1), 100)
        .await
        .expect("prune");
    assert_eq!(pruned, 1, "only the finished job");
    // The job, its attempts and its event log are gone; its transitions stay.
    assert!(matches!(
        db.store.get_job(&tenant.id, id).await,
        Err(longhaul_core::Error::NotFound(_))
    ));
    assert!(matches!(
        db.store.job_events(&tenant.id, id, 0, 100).await,
        Err(longhaul_core::Error::NotFound(_))
    ));
    assert_eq!(logged_kinds(&db, id).await, ["started", "succeeded"]);
    assert_eq!(
        logged_kinds(&db, running).await,
        ["started", "checkpoint"],
        "a running job keeps everything"
    );
    let after = app.events(&admin, "").await;
    assert_eq!(after, before, "pruning changes nothing in the log");
    let of_job = app.events(&admin, &format!("&resourceId={id}")).await;
    assert_eq!(
        actions(&of_job),
        ["job.create", "job.started", "job.succeeded"]
    );
    assert_eq!(of_job[1]["actorId"], "worker-1");
    let filter = AuditFilter {
        resource_id: Some(id.to_string()),
        ..AuditFilter::default()
    };
    assert_eq!(
        app.stores
            .count_audit_events(&tenant.id, &filter)
            .await
            .expect("count"),
        3
    );
}

fn event_key(event: &Value) -> (DateTime<Utc>, String) {
    let at = DateTime::parse_from_rfc3339(event["occurredAt"].as_str().expect("time"))
        .expect("time")
        .with_timezone(&Utc);
    (at, event["id"].as_str().expect("id").to_string())
}

async fn pages_mix_stored_events_and_transitions_without_gaps(db: TestDb) {
    let app = app(&db).await;
    let (tenant, admin) = app.tenant("acme", Quotas::default()).await;
    // Rounds of: a job created (api), an application event at the API clock's
    // fixed time (many events at one time), one backdated a second, the job
    // run (system).
    let mut queue = String::new();
    for round in 0..6 {
        let (_, q) = app.create_job(&admin).await;
        queue = q;
        let backdated = (Utc::now() - TimeSpan::seconds(1)).to_rfc3339();
        app.ingest(
            &admin,
            json!([
                { "action": "app.tick", "details": { "round": round } },
                { "action": "app.backdated", "occurredAt": backdated, "details": { "round": round } },
            ]),
        )
        .await
        .assert_status(StatusCode::CREATED);
        let lease = claim(&db, &queue, "worker", 1).await[0];
        succeed(&db, lease).await;
    }
    // Five jobs claimed and completed together: transitions sharing a time.
    for _ in 0..5 {
        app.create_job(&admin).await;
    }
    let leases = claim(&db, &queue, "batch", 5).await;
    let done = db
        .store
        .complete_many(&leases.iter().map(|l| (*l, json!({}))).collect::<Vec<_>>())
        .await
        .expect("complete");
    assert_eq!(done.len(), 5);

    let all = app.paged(&admin, "", "asc", 1000).await;
    let count = |action: &str| actions(&all).iter().filter(|a| *a == action).count();
    assert_eq!(count("job.create"), 11);
    assert_eq!(count("job.started"), 11);
    assert_eq!(count("job.succeeded"), 11);
    assert_eq!(count("app.tick"), 6);
    assert_eq!(count("app.backdated"), 6);
    let keys: Vec<_> = all.iter().map(event_key).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "strictly ordered by (occurredAt, id): {keys:#?}"
    );
    assert_eq!(
        app.stores
            .count_audit_events(&tenant.id, &AuditFilter::default())
            .await
            .expect("count"),
        all.len() as u64
    );
    let reversed: Vec<Value> = all.iter().rev().cloned().collect();
    for limit in [1, 2, 3, 7] {
        assert_eq!(
            app.paged(&admin, "", "asc", limit).await,
            all,
            "oldest first, pages of {limit}"
        );
        assert_eq!(
            app.paged(&admin, "", "desc", limit).await,
            reversed,
            "newest first, pages of {limit}"
        );
    }
    // The same through the store, as exports read it: cursors from the
    // events themselves, across both sources.
    let mut scanned = vec![];
    let mut after = None;
    loop {
        let page = app
            .stores
            .list_audit_events(
                &tenant.id,
                &AuditFilter::default(),
                after,
                longhaul_core::audit::Order::OldestFirst,
                4,
            )
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        after = Some(last.cursor().expect("cursor"));
        scanned.extend(page);
    }
    assert_eq!(serde_json::to_value(&scanned).expect("json"), json!(all));
}

async fn filters_select_job_transitions(db: TestDb) {
    let app = app(&db).await;
    let (tenant, admin) = app.tenant("acme", Quotas::default()).await;
    let keys = app.call(Method::GET, "/v1/api-keys", &admin, None).await;
    let admin_key_id = key_id_of(&admin, &keys.body);
    // Job 1 fails once and succeeds; job 2 is cancelled while queued.
    let (one, queue) = app.create_job(&admin).await;
    let first = claim(&db, &queue, "worker-a", 1).await[0];
    db.store
        .finish(
            first,
            &Finish::Failed {
                error: "disk full".into(),
                public: longhaul_core::failure::PublicError::job_failed("disk full"),
                retry_at: Utc::now(),
                permanent: false,
            },
        )
        .await
        .expect("fail");
    let second = claim(&db, &queue, "worker-b", 1).await[0];
    succeed(&db, second).await;
    let (two, _) = app.create_job(&admin).await;
    app.call(
        Method::POST,
        &format!("/v1/jobs/{two}/cancel"),
        &admin,
        None,
    )
    .await
    .assert_status(StatusCode::OK);
    // An application's event that looks like a transition.
    app.ingest(
        &admin,
        json!([{ "action": "job.started", "resourceType": "job", "resourceId": one.to_string() }]),
    )
    .await
    .assert_status(StatusCode::CREATED);

    let all = app.events(&admin, "").await;
    let one_id = one.to_string();
    let two_id = two.to_string();
    let filter = |f: fn(&mut AuditFilter)| {
        let mut filter = AuditFilter::default();
        f(&mut filter);
        filter
    };
    let cases: Vec<(String, AuditFilter, Vec<&str>)> = vec![
        (
            "&action=job.started".into(),
            AuditFilter {
                action: Some("job.started".into()),
                ..AuditFilter::default()
            },
            vec!["job.started"; 3],
        ),
        (
            "&action=job.started&source=system".into(),
            AuditFilter {
                action: Some("job.started".into()),
                source: Some("system".into()),
                ..AuditFilter::default()
            },
            vec!["job.started"; 2],
        ),
        (
            format!("&resourceId={one_id}"),
            AuditFilter {
                resource_id: Some(one_id.clone()),
                ..AuditFilter::default()
            },
            vec![
                "job.create",
                "job.started",
                "job.retry_scheduled",
                "job.started",
                "job.succeeded",
                "job.started",
            ],
        ),
        (
            format!("&resourceType=job&resourceId={one_id}&action=job.succeeded"),
            AuditFilter {
                resource_type: Some("job".into()),
                resource_id: Some(one_id.clone()),
                action: Some("job.succeeded".into()),
                ..AuditFilter::default()
            },
            vec!["job.succeeded"],
        ),
        (
            format!("&resourceId={two_id}&source=system"),
            AuditFilter {
                resource_id: Some(two_id.clone()),
                source: Some("system".into()),
                ..AuditFilter::default()
            },
            vec!["job.cancelled"],
        ),
        (
            "&actorId=worker-b".into(),
            AuditFilter {
                actor_id: Some("worker-b".into()),
                ..AuditFilter::default()
            },
            vec!["job.started"],
        ),
        (
            format!("&actorKeyId={admin_key_id}&resourceType=job"),
            AuditFilter {
                actor_key_id: Some(admin_key_id.clone()),
                resource_type: Some("job".into()),
                ..AuditFilter::default()
            },
            // The application's event was sent with the admin key too.
            vec!["job.create", "job.create", "job.cancel", "job.started"],
        ),
        (
            "&source=api&resourceType=job".into(),
            filter(|f| {
                f.source = Some("api".into());
                f.resource_type = Some("job".into());
            }),
            vec!["job.create", "job.create", "job.cancel"],
        ),
        (
            "&resourceType=tenant".into(),
            filter(|f| f.resource_type = Some("tenant".into())),
            vec!["tenant.create"],
        ),
        (
            "&action=job.progress".into(),
            filter(|f| f.action = Some("job.progress".into())),
            vec![],
        ),
        (
            "&resourceId=job_00000000000000000000000000000001".into(),
            filter(|f| f.resource_id = Some("job_00000000000000000000000000000001".into())),
            vec![],
        ),
    ];
    for (query, filter, expected) in cases {
        let listed = app.events(&admin, &query).await;
        let mut got = actions(&listed);
        let mut want: Vec<String> = expected.iter().map(|a| a.to_string()).collect();
        if query.contains("resourceId=job_")
            || query.contains("actorKeyId")
            || query.contains("source=api")
        {
            // Events of one transaction share a time; compare as sets there.
            got.sort();
            want.sort();
        }
        assert_eq!(got, want, "{query}: {listed:#?}");
        assert_eq!(
            app.stores
                .count_audit_events(&tenant.id, &filter)
                .await
                .expect("count"),
            listed.len() as u64,
            "{query}: the count agrees with the listing"
        );
        let expected_here: Vec<&Value> = all.iter().filter(|e| listed.contains(e)).collect();
        assert_eq!(
            expected_here.len(),
            listed.len(),
            "{query}: listed events are the log's"
        );
    }
    // The worker that started an attempt, and the time range.
    let started: Vec<&Value> = all
        .iter()
        .filter(|e| e["action"] == "job.started" && e["source"] == "system")
        .collect();
    assert_eq!(started[0]["actorId"], "worker-a");
    let from = event_key(started[0]).0;
    let to = event_key(started[1]).0;
    let window = app
        .events(
            &admin,
            &format!(
                "&from={}&to={}",
                from.to_rfc3339_opts(SecondsFormat::Micros, true),
                to.to_rfc3339_opts(SecondsFormat::Micros, true)
            ),
        )
        .await;
    let expected: Vec<Value> = all
        .iter()
        .filter(|e| (from..to).contains(&event_key(e).0))
        .cloned()
        .collect();
    assert_eq!(window, expected);
    assert!(actions(&window).contains(&"job.retry_scheduled".to_string()));
    let window_filter = AuditFilter {
        from: Some(from),
        to: Some(to),
        ..AuditFilter::default()
    };
    assert_eq!(
        app.stores
            .count_audit_events(&tenant.id, &window_filter)
            .await
            .expect("count"),
        window.len() as u64
    );
}

// ---- migration 0010: the trigger's copies give way to job_events ---------------

/// Migrates `db` with every migration but 0010 (so the transition trigger
/// is in place), from the migration files of its store. The later ones are
/// applied too: today's store code, which the test drives, needs their
/// tables (0011's running counters for claims).
async fn migrate_all_but_0010(db: &TestDb) {
    let store = if db.url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(store);
    let folder = std::env::temp_dir().join(format!(
        "longhaul-migrations-{store}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&folder).expect("folder");
    for entry in std::fs::read_dir(&source).expect("migrations") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !name.starts_with("0010_") {
            std::fs::copy(source.join(&name), folder.join(&name)).expect("copy");
        }
    }
    let migrator = sqlx::migrate::Migrator::new(folder.clone())
        .await
        .expect("migrator");
    if store == "sqlite" {
        let pool = SqliteStore::connect(&db.url, 1).await.expect("store");
        migrator
            .run(pool.pool())
            .await
            .expect("migrating all but 0010");
    } else {
        let pool = PgStore::connect(&db.url, 1).await.expect("store");
        migrator
            .run(pool.pool())
            .await
            .expect("migrating all but 0010");
    }
    let _ = std::fs::remove_dir_all(folder);
}

/// What a job lost under the old pruning: its job_events rows.
async fn forget_job_events(db: &TestDb, job: JobId) {
    if db.url.starts_with("sqlite:") {
        let store = SqliteStore::connect(&db.url, 1).await.expect("store");
        sqlx::query("DELETE FROM job_events WHERE job_id = ?1")
            .bind(job.as_uuid())
            .execute(store.pool())
            .await
            .expect("delete");
    } else {
        let store = PgStore::connect(&db.url, 1).await.expect("store");
        sqlx::query("DELETE FROM job_events WHERE job_id = $1")
            .bind(job.as_uuid())
            .execute(store.pool())
            .await
            .expect("delete");
    }
}

/// An event without its id, as JSON text (sortable, comparable).
fn without_id(event: &Value) -> String {
    let mut event = event.clone();
    event.as_object_mut().expect("object").remove("id");
    event.to_string()
}

fn sorted(mut texts: Vec<String>) -> Vec<String> {
    texts.sort();
    texts
}

/// A transition read from job_events has an id below 2^64.
fn is_read_from_job_events(event: &Value) -> bool {
    event["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("aud_0000000000000000"))
}

async fn migration_0010_lists_each_transition_once(db: TestDb) {
    migrate_all_but_0010(&db).await;
    let app = app(&db).await;
    let (tenant, admin) = app.tenant("acme", Quotas::default()).await;
    // Under the trigger: a job that fails once then succeeds, one cancelled
    // while queued, and one whose job_events the old pruning deleted.
    let (_, queue) = app.create_job(&admin).await;
    let first = claim(&db, &queue, "worker-a", 1).await[0];
    db.store
        .finish(
            first,
            &Finish::Failed {
                error: "disk \"full\"".into(),
                public: longhaul_core::failure::PublicError::job_failed("disk \"full\""),
                retry_at: Utc::now(),
                permanent: false,
            },
        )
        .await
        .expect("fail");
    let second = claim(&db, &queue, "worker-b", 1).await[0];
    succeed(&db, second).await;
    let (two, _) = app.create_job(&admin).await;
    app.call(
        Method::POST,
        &format!("/v1/jobs/{two}/cancel"),
        &admin,
        None,
    )
    .await
    .assert_status(StatusCode::OK);
    let (gone, _) = app.create_job(&admin).await;
    let lease = claim(&db, &queue, "worker-c", 1).await[0];
    succeed(&db, lease).await;
    forget_job_events(&db, gone).await;

    // Both the trigger's copies and job_events are read until 0010: the
    // copies are exactly what the listing makes of job_events.
    let before = app.events(&admin, "").await;
    let copies: Vec<&Value> = before
        .iter()
        .filter(|e| {
            e["source"] == "system"
                && e["action"].as_str().is_some_and(|a| a.starts_with("job."))
                && !is_read_from_job_events(e)
        })
        .collect();
    let read: Vec<&Value> = before
        .iter()
        .filter(|e| is_read_from_job_events(e))
        .collect();
    assert_eq!(copies.len(), 7, "{before:#?}");
    let gone_id = gone.to_string();
    let (of_gone, of_others): (Vec<&Value>, Vec<&Value>) = copies
        .iter()
        .partition(|e| e["resourceId"] == json!(gone_id));
    assert_eq!(
        actions(&of_gone.into_iter().cloned().collect::<Vec<_>>()),
        ["job.started", "job.succeeded"]
    );
    assert_eq!(
        sorted(read.iter().map(|e| without_id(e)).collect()),
        sorted(of_others.iter().map(|e| without_id(e)).collect()),
        "the listing maps job_events to the trigger's events, field for field"
    );

    // 0010: the copies of transitions still in job_events go; the pruned
    // job's stay. Every transition is listed once, as before.
    db.store.migrate().await.expect("migrating to the latest");
    let after = app.events(&admin, "").await;
    assert_eq!(
        sorted(after.iter().map(without_id).collect()),
        sorted(
            before
                .iter()
                .filter(|e| !is_read_from_job_events(e))
                .map(without_id)
                .collect()
        )
    );
    assert_eq!(
        after.iter().filter(|e| is_read_from_job_events(e)).count(),
        5
    );
    assert_eq!(
        app.stores
            .count_audit_events(&tenant.id, &AuditFilter::default())
            .await
            .expect("count"),
        after.len() as u64
    );
    // No trigger any more: a new transition is in the log once.
    let (three, _) = app.create_job(&admin).await;
    let lease = claim(&db, &queue, "worker-d", 1).await[0];
    succeed(&db, lease).await;
    let of_three = app.events(&admin, &format!("&resourceId={three}")).await;
    assert_eq!(
        actions(&of_three),
        ["job.create", "job.started", "job.succeeded"]
    );
}

mod migration_0010_lists_each_transition_once {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        super::migration_0010_lists_each_transition_once(
            crate::harness::postgres_unmigrated().await,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        super::migration_0010_lists_each_transition_once(crate::harness::sqlite_unmigrated().await)
            .await
    }
}

both_stores!(
    api_changes_are_recorded_with_key_ip_and_request_id,
    refused_and_no_op_calls_record_nothing,
    cancelling_twice_records_one_cancel,
    job_transitions_are_recorded_by_the_store,
    applications_ingest_validated_events,
    listings_filter_and_page_without_gaps,
    another_tenants_events_are_invisible,
    a_job_run_lists_started_then_succeeded,
    pruned_jobs_keep_their_transitions_in_the_log,
    pages_mix_stored_events_and_transitions_without_gaps,
    filters_select_job_transitions,
);
