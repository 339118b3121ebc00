//! Webhooks on both stores: endpoints managed through the API (validation,
//! roles, isolation, secrets shown once, rotation); deliveries queued once
//! per job end by the dispatcher however often it runs, signed so that the
//! documented check (tests/scripts/verify_webhook.py, run with python3)
//! accepts them and refuses altered, stale and replayed ones, retried after
//! a failed answer and logged; private addresses refused for good.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use longhaul_core::backoff::Backoff;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::config::ScanConfig;
use longhaul_core::store::Stores;
use longhaul_core::webhooks::{WebhookDelivery, WEBHOOK_DELIVER};
use longhaul_core::{Catalogue, JobClient, JobKind, JobState, KindSpec};
use longhaul_scheduler::WebhookDispatcher;
use longhaul_worker::jobs::noop::Noop;
use longhaul_worker::{JobServices, WorkerPool};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::harness::TestDb;
use crate::http::{self, tenant_with_admin_key};
use crate::support::{pool_config, wait_for_job};

both_stores!(
    endpoints_are_managed_validated_and_isolated,
    deliveries_are_signed_retried_logged_and_queued_once,
    private_addresses_are_refused_for_good,
);

/// What the receiver got: the signature header and the raw body of each POST.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A receiver on 127.0.0.1 answering each POST with the next status of
/// `answers` (the last one repeated).
async fn receiver(answers: Vec<StatusCode>) -> (String, Received) {
    let received: Received = Arc::default();
    let state = (received.clone(), Arc::new(Mutex::new(answers)));
    let app = Router::new()
        .route(
            "/hook",
            post(
                |AxumState((received, answers)): AxumState<(
                    Received,
                    Arc<Mutex<Vec<StatusCode>>>,
                )>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let signature = headers
                        .get("longhaul-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    received
                        .lock()
                        .expect("lock")
                        .push((signature, body.to_vec()));
                    let mut answers = answers.lock().expect("lock");
                    if answers.len() > 1 {
                        answers.remove(0)
                    } else {
                        answers[0]
                    }
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// Every kind, with deliveries retried after 200 ms instead of 30 s.
fn quick_retry_catalogue() -> Arc<Catalogue> {
    let mut catalogue = longhaul_worker::jobs::catalogue();
    catalogue.register(KindSpec::of::<WebhookDelivery>().backoff(Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_millis(200),
        jitter: 0.0,
    }));
    Arc::new(catalogue)
}

/// A worker for the default and webhooks queues.
fn start_worker(
    stores: Arc<dyn Stores>,
    catalogue: Arc<Catalogue>,
    allow_private_urls: bool,
) -> CancellationToken {
    let services = JobServices {
        stores: stores.clone(),
        artifacts: Arc::new(http::local_artifacts()),
        artifact_retention: Duration::from_secs(86_400),
        scans: ScanConfig {
            allow_private_urls,
            ..ScanConfig::default()
        },
    };
    let registry = longhaul_worker::jobs::registry_for(catalogue)
        .with_services(&longhaul_worker::jobs::kinds(), &services);
    let config = longhaul_worker::PoolConfig {
        queues: vec!["default".into(), "webhooks".into()],
        ..pool_config(4)
    };
    let pool = WorkerPool::new(stores.job_store(), registry, config);
    let token = CancellationToken::new();
    tokio::spawn(pool.run(token.clone()));
    token
}

async fn create_endpoint(router: &Router, key: &str, url: &str, events: Value) -> Value {
    http::call(
        router,
        Method::POST,
        "/v1/webhooks",
        Some(key),
        Some(json!({"url": url, "events": events})),
    )
    .await
    .assert_status(StatusCode::CREATED)
    .body
    .clone()
}

async fn endpoints_are_managed_validated_and_isolated(db: TestDb) {
    let app = http::test_app(&db).await;
    let router = &app.router;
    let (acme, key) = tenant_with_admin_key(app.stores.as_ref(), "acme").await;
    let (_, other_key) = tenant_with_admin_key(app.stores.as_ref(), "globex").await;

    let created = create_endpoint(
        router,
        &key,
        "https://hooks.example.com/longhaul",
        json!(["job.failed", "export.completed", "job.failed"]),
    )
    .await;
    let id = created["webhookId"].as_str().expect("id").to_string();
    assert!(id.starts_with("wh_"));
    let secret = created["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["events"], json!(["job.failed", "export.completed"]));
    assert_eq!(created["enabled"], json!(true));
    assert_eq!(
        created["secretHint"],
        json!(format!("…{}", &secret[secret.len() - 4..]))
    );

    // Refused requests change nothing.
    for (body, status, code) in [
        (
            json!({"url": "ftp://x.example.com/", "events": ["job.failed"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            json!({"url": "https://a:b@x.example.com/", "events": ["job.failed"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            json!({"url": "https://x.example.com/", "events": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            json!({"url": "https://x.example.com/", "events": ["webhook.test"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
    ] {
        http::call(
            router,
            Method::POST,
            "/v1/webhooks",
            Some(&key),
            Some(body.clone()),
        )
        .await
        .assert_error(status, code);
    }
    let unknown_event = http::call(
        router,
        Method::POST,
        "/v1/webhooks",
        Some(&key),
        Some(json!({"url": "https://x.example.com/", "events": ["job.exploded"]})),
    )
    .await;
    assert!(
        unknown_event.status.is_client_error(),
        "{}",
        unknown_event.body
    );
    assert!(unknown_event.body["error"]["code"].is_string());
    let listed = http::call(router, Method::GET, "/v1/webhooks", Some(&key), None).await;
    listed.assert_status(StatusCode::OK);
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));
    assert!(
        listed.body["data"][0].get("secret").is_none(),
        "the secret is shown on creation only"
    );

    // Another tenant sees nothing and touches nothing.
    let path = format!("/v1/webhooks/{id}");
    http::call(router, Method::GET, &path, Some(&other_key), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    http::call(router, Method::DELETE, &path, Some(&other_key), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let theirs = http::call(router, Method::GET, "/v1/webhooks", Some(&other_key), None).await;
    assert_eq!(theirs.body["data"], json!([]));

    // Changes are checked as a whole.
    let patched = http::call(
        router,
        Method::PATCH,
        &path,
        Some(&key),
        Some(json!({"events": ["job.succeeded"], "enabled": false})),
    )
    .await;
    patched.assert_status(StatusCode::OK);
    assert_eq!(patched.body["events"], json!(["job.succeeded"]));
    assert_eq!(patched.body["enabled"], json!(false));
    http::call(
        router,
        Method::PATCH,
        &path,
        Some(&key),
        Some(json!({"url": "nope"})),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    http::call(router, Method::PATCH, &path, Some(&key), Some(json!({})))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let got = http::call(router, Method::GET, &path, Some(&key), None).await;
    assert_eq!(got.body["url"], json!("https://hooks.example.com/longhaul"));

    // Rotation: a new secret, shown once, and a new hint.
    let rotated = http::call(
        router,
        Method::POST,
        &format!("{path}/rotate-secret"),
        Some(&key),
        None,
    )
    .await;
    rotated.assert_status(StatusCode::OK);
    let new_secret = rotated.body["secret"].as_str().expect("secret");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let stored = app
        .stores
        .get_webhook(
            &acme.id,
            longhaul_core::webhooks::parse_webhook_id(&id).expect("id"),
        )
        .await
        .expect("stored");
    assert_eq!(stored.secret, new_secret, "later attempts sign with it");

    http::call(
        router,
        Method::GET,
        "/v1/webhooks?limit=0",
        Some(&key),
        None,
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    http::call(
        router,
        Method::GET,
        "/v1/webhooks?cursor=x",
        Some(&key),
        None,
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");

    http::call(router, Method::DELETE, &path, Some(&key), None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    http::call(router, Method::GET, &path, Some(&key), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    http::call(
        router,
        Method::GET,
        "/v1/webhooks/wh_nope",
        Some(&key),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");

    // Every change is in the audit log.
    let audit = http::call(
        router,
        Method::GET,
        "/v1/audit/events?limit=100",
        Some(&key),
        None,
    )
    .await;
    let actions: Vec<&str> = audit.body["data"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("webhook."))
        .collect();
    for action in [
        "webhook.create",
        "webhook.update",
        "webhook.rotate_secret",
        "webhook.delete",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

/// Runs the documented check on a delivery (`now`: unix seconds).
fn python_verify(secret: &str, header: &str, body: &[u8], seen: &PathBuf, now: i64) -> String {
    let body_file = seen.with_extension(format!("body-{}", uuid::Uuid::now_v7().simple()));
    std::fs::write(&body_file, body).expect("body file");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/verify_webhook.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(secret)
        .arg(header)
        .arg(&body_file)
        .arg(seen)
        .arg(now.to_string())
        .output()
        .expect("python3 runs (the suite needs it)");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

async fn deliveries_are_signed_retried_logged_and_queued_once(db: TestDb) {
    let app = http::test_app(&db).await;
    let (url, received) = receiver(vec![StatusCode::INTERNAL_SERVER_ERROR, StatusCode::OK]).await;
    let (acme, key) = tenant_with_admin_key(app.stores.as_ref(), "acme").await;
    let acme = acme.id;
    let endpoint = create_endpoint(&app.router, &key, &url, json!(["job.succeeded"])).await;
    let webhook_id = endpoint["webhookId"].as_str().expect("id").to_string();
    let secret = endpoint["secret"].as_str().expect("secret").to_string();
    // A tenant without an endpoint: its jobs make no delivery.
    let (globex, _) = tenant_with_admin_key(app.stores.as_ref(), "globex").await;

    let catalogue = quick_retry_catalogue();
    let client = JobClient::new(app.stores.clone().job_store(), catalogue.clone());
    let job = client
        .enqueue(EnqueueRequest::new(acme.clone(), Noop::NAME, json!({})))
        .await
        .expect("job")
        .id;
    client
        .enqueue(EnqueueRequest::new(
            globex.id.clone(),
            Noop::NAME,
            json!({}),
        ))
        .await
        .expect("job");
    let worker = start_worker(app.stores.clone(), catalogue.clone(), true);
    wait_for_job(
        app.stores.as_ref(),
        &acme,
        job,
        Duration::from_secs(10),
        |j| j.state == JobState::Succeeded,
    )
    .await;

    // The dispatcher queues one delivery, however often it passes.
    let dispatcher = WebhookDispatcher::new(app.stores.clone(), catalogue.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        let report = dispatcher.dispatch(Utc::now()).await.expect("dispatch");
        if report.queued > 0 {
            break report;
        }
        assert!(tokio::time::Instant::now() < deadline, "no delivery queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first.queued, 1, "{first:?}");
    let again = dispatcher.dispatch(Utc::now()).await.expect("dispatch");
    assert_eq!(
        again.queued, 0,
        "a second pass queues nothing new: {again:?}"
    );
    assert_eq!(again.existing, 1, "it meets the delivery already queued");
    // A second replica's pass, well past the settle window, neither.
    let replica = WebhookDispatcher::new(app.stores.clone(), catalogue.clone());
    let later = replica
        .dispatch(Utc::now() + chrono::Duration::seconds(60))
        .await
        .expect("dispatch");
    assert_eq!(later.queued, 0, "{later:?}");
    let settled = replica
        .dispatch(Utc::now() + chrono::Duration::seconds(120))
        .await
        .expect("dispatch");
    assert_eq!(settled.events, 0, "the cursor moved past settled events");

    // Delivered on the second attempt; the log says so.
    let deliveries_path = format!("/v1/webhooks/{webhook_id}/deliveries");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let delivery = loop {
        let log = http::call(&app.router, Method::GET, &deliveries_path, Some(&key), None).await;
        log.assert_status(StatusCode::OK);
        let entry = log.body["data"][0].clone();
        if entry["status"] == json!("succeeded") {
            break entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {}",
            log.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(delivery["attempts"], json!(2), "{delivery}");
    assert_eq!(delivery["lastStatusCode"], json!(200));
    assert_eq!(delivery["event"], json!("job.succeeded"));
    assert!(delivery["deliveredAt"].is_string());
    let delivery_job = longhaul_core::webhooks::parse_delivery_id(
        delivery["deliveryId"].as_str().expect("delivery id"),
    )
    .expect("a delivery id");
    // The log is written before the attempt's completion: wait for the job.
    let stored = wait_for_job(
        app.stores.as_ref(),
        &acme,
        delivery_job,
        Duration::from_secs(10),
        |j| j.state.is_terminal(),
    )
    .await;
    worker.cancel();
    assert_eq!(
        (stored.kind.as_str(), stored.state),
        (WEBHOOK_DELIVER, JobState::Succeeded)
    );

    // The same body both times, naming the job; signed for the documented check.
    let received = received.lock().expect("lock").clone();
    assert_eq!(received.len(), 2, "one failed attempt, one delivered");
    assert_eq!(
        received[0].1, received[1].1,
        "every attempt sends the same body"
    );
    let body: Value = serde_json::from_slice(&received[1].1).expect("JSON");
    assert_eq!(body["type"], json!("job.succeeded"));
    assert_eq!(body["tenantId"], json!(acme));
    assert_eq!(body["data"]["jobId"], json!(job.to_string()));
    assert_eq!(delivery["eventId"], body["id"]);

    let seen =
        std::env::temp_dir().join(format!("longhaul-seen-{}", uuid::Uuid::now_v7().simple()));
    let (header, raw) = &received[1];
    let now = Utc::now().timestamp();
    assert_eq!(python_verify(&secret, header, raw, &seen, now), "ok");
    assert_eq!(
        python_verify(&secret, header, raw, &seen, now),
        "replayed",
        "the same event again is refused"
    );
    let mut altered = raw.clone();
    let at = altered.iter().position(|&b| b == b'a').expect("an a");
    altered[at] = b'b';
    assert_eq!(
        python_verify(&secret, header, &altered, &seen, now),
        "mismatch"
    );
    assert_eq!(
        python_verify(&secret, header, raw, &seen, now + 400),
        "stale",
        "an old request replayed later is refused"
    );
    assert_eq!(
        python_verify("whsec_wrong", header, raw, &seen, now),
        "mismatch"
    );
    // And the Rust check agrees.
    assert_eq!(
        longhaul_core::webhooks::signature::verify(&secret, header, raw, now),
        Ok(())
    );
}

async fn private_addresses_are_refused_for_good(db: TestDb) {
    let app = http::test_app(&db).await;
    let (url, received) = receiver(vec![StatusCode::OK]).await;
    let (acme, key) = tenant_with_admin_key(app.stores.as_ref(), "acme").await;
    let endpoint = create_endpoint(&app.router, &key, &url, json!(["job.failed"])).await;
    let webhook_id = endpoint["webhookId"].as_str().expect("id");
    let sent = http::call(
        &app.router,
        Method::POST,
        &format!("/v1/webhooks/{webhook_id}/test"),
        Some(&key),
        None,
    )
    .await;
    sent.assert_status(StatusCode::ACCEPTED);
    let delivery_id = sent.body["deliveryId"]
        .as_str()
        .expect("delivery")
        .to_string();
    let job = longhaul_core::webhooks::parse_delivery_id(&delivery_id).expect("id");

    let worker = start_worker(app.stores.clone(), quick_retry_catalogue(), false);
    let failed = wait_for_job(
        app.stores.as_ref(),
        &acme.id,
        job,
        Duration::from_secs(10),
        |j| j.state.is_terminal(),
    )
    .await;
    worker.cancel();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.attempt, 1, "refused for good, not retried");
    assert!(
        received.lock().expect("lock").is_empty(),
        "nothing was sent"
    );
    let log = http::call(
        &app.router,
        Method::GET,
        &format!("/v1/webhooks/{webhook_id}/deliveries"),
        Some(&key),
        None,
    )
    .await;
    let entry = &log.body["data"][0];
    assert_eq!(entry["deliveryId"], json!(delivery_id));
    assert_eq!(entry["event"], json!("webhook.test"));
    assert_eq!(entry["status"], json!("failed"));
    assert!(
        entry["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("private or local address")),
        "{entry}"
    );
}
