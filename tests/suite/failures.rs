//! Failed attempts on both stores, through a real worker pool: a transient
//! failure of the platform (object store or database unavailable) backs off
//! for minutes, a kind's own failure for its usual seconds; tenants see a
//! code and a short message (never the raw SDK text, in the job, its attempts
//! or the audit log), operators the raw error; a succeeded job shows none.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use chrono::{DateTime, Utc};
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::tenancy::{KeyMode, NewTenant, Role};
use longhaul_core::{JobClient, JobId, JobState, JobStore};
use longhaul_worker::WorkerPool;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::harness::TestDb;
use crate::http;
use crate::support::*;

fn start_pool(store: Arc<dyn JobStore>) -> CancellationToken {
    let stop = CancellationToken::new();
    let pool = WorkerPool::new(store, test_registry(&Journal::default()), pool_config(4));
    tokio::spawn(pool.run(stop.clone()));
    stop
}

async fn enqueue(db: &TestDb, tenant: &str, kind: &str, params: Value) -> JobId {
    JobClient::new(db.store.clone(), test_catalogue())
        .enqueue(EnqueueRequest::new(tenant, kind, params))
        .await
        .expect("enqueue")
        .id
}

/// The back-off the first failed attempt chose: `runAt` of its
/// `retry_scheduled` event minus the time it was written.
async fn first_back_off(store: &dyn JobStore, tenant: &str, id: JobId) -> Duration {
    let events = store.job_events(tenant, id, 0, 100).await.expect("events");
    let retry = events
        .iter()
        .find(|e| e.kind == "retry_scheduled")
        .expect("a retry was scheduled");
    let run_at: DateTime<Utc> =
        serde_json::from_value(retry.data.as_ref().expect("retry data")["runAt"].clone())
            .expect("runAt");
    (run_at - retry.at)
        .to_std()
        .expect("runAt is after the failure")
}

async fn transient_failures_back_off_for_minutes(db: TestDb) {
    let storage = enqueue(&db, "t", OUTAGE, json!({"cause": "storage"})).await;
    let database = enqueue(&db, "t", OUTAGE, json!({"cause": "database"})).await;
    let refused = enqueue(&db, "t", OUTAGE, json!({"cause": "refused"})).await;
    let flaky = enqueue(&db, "t", FLAKY, json!({"succeedOn": 3})).await;
    let stop = start_pool(db.store.clone());
    for id in [storage, database, refused, flaky] {
        wait_for_job(db.store.as_ref(), "t", id, Duration::from_secs(20), |job| {
            job.failed_attempts >= 1
        })
        .await;
    }
    stop.cancel();
    // Transient: 15 s ±20 % (the first step of 15 s, 30 s, 1 min, …).
    for (id, code) in [
        (storage, "storage_unavailable"),
        (database, "database_unavailable"),
    ] {
        let back_off = first_back_off(db.store.as_ref(), "t", id).await;
        assert!(
            back_off >= Duration::from_secs(12) && back_off <= Duration::from_secs(18),
            "{code}: backed off {back_off:?}"
        );
        let job = db.store.get_job("t", id).await.expect("job");
        assert_eq!(job.state, JobState::Queued, "{code}: retried, not failed");
        assert_eq!(job.tenant_error().map(|e| e.code).as_deref(), Some(code));
    }
    // Not transient: the kind's back-off (300 ms ±10 % in the test catalogue).
    for (id, code) in [(refused, "storage_error"), (flaky, "job_failed")] {
        let back_off = first_back_off(db.store.as_ref(), "t", id).await;
        assert!(
            back_off <= Duration::from_millis(400),
            "{code}: backed off {back_off:?}"
        );
        let attempts = db.store.job_attempts("t", id).await.expect("attempts");
        assert_eq!(
            attempts[0].tenant_error().map(|e| e.code).as_deref(),
            Some(code)
        );
    }
}

async fn tenants_see_a_code_and_operators_the_raw_error(db: TestDb) {
    let app = http::test_app(&db).await;
    let tenant = app
        .stores
        .create_tenant(NewTenant::new("acme", "eu", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let key = app
        .stores
        .issue_api_key(
            Some(&tenant.id),
            "test",
            Role::Admin,
            KeyMode::Live,
            &Actor::system(),
        )
        .await
        .expect("key")
        .secret;
    let outage = enqueue(&db, &tenant.id, OUTAGE, json!({"cause": "storage"})).await;
    let flaky = enqueue(&db, &tenant.id, FLAKY, json!({"succeedOn": 2})).await;
    let stop = start_pool(db.store.clone());
    let within = Duration::from_secs(20);
    wait_for_job(db.store.as_ref(), &tenant.id, outage, within, |job| {
        job.failed_attempts >= 1
    })
    .await;
    wait_for_state(
        db.store.as_ref(),
        &tenant.id,
        flaky,
        JobState::Succeeded,
        within,
    )
    .await;
    stop.cancel();

    // The tenant: a code and a short message, in the job and its attempts.
    let view = http::call(
        &app.router,
        Method::GET,
        &format!("/v1/jobs/{outage}"),
        Some(&key),
        None,
    )
    .await;
    let expected = json!({
        "code": "storage_unavailable",
        "message": "The object store did not answer or was unavailable.",
    });
    assert_eq!(view.body["error"], expected, "{}", view.body);
    assert_eq!(view.body["attempts"][0]["error"], expected);
    let text = view.body.to_string();
    for raw in [
        SECRET_BUCKET,
        "4442587FB7D0A2F9",
        "SlowDown",
        "dispatch failure",
    ] {
        assert!(!text.contains(raw), "the tenant sees {raw:?}: {text}");
    }
    // Nor in the audit log of the job's transitions.
    let audit = http::call(
        &app.router,
        Method::GET,
        &format!("/v1/audit/events?resourceId={outage}"),
        Some(&key),
        None,
    )
    .await;
    let audit_text = audit.body.to_string();
    assert!(audit_text.contains("job.retry_scheduled"), "{audit_text}");
    assert!(audit_text.contains("storage_unavailable"), "{audit_text}");
    assert!(!audit_text.contains(SECRET_BUCKET), "{audit_text}");

    // Operators (the store, `longhaul jobs get`): the raw error.
    let job = db.store.get_job(&tenant.id, outage).await.expect("job");
    assert!(job
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains(SECRET_BUCKET)));
    let attempts = db
        .store
        .job_attempts(&tenant.id, outage)
        .await
        .expect("attempts");
    assert!(attempts[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains(SECRET_BUCKET)));

    // A succeeded job shows no error; its failed attempt keeps the kind's
    // own message.
    let done = http::call(
        &app.router,
        Method::GET,
        &format!("/v1/jobs/{flaky}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.body);
    assert_eq!(done.body["error"], Value::Null, "{}", done.body);
    assert_eq!(
        done.body["attempts"][0]["error"],
        json!({"code": "job_failed", "message": "flaky failure on attempt 1"})
    );
    assert_eq!(done.body["attempts"][1]["error"], Value::Null);
}

both_stores!(
    transient_failures_back_off_for_minutes,
    tenants_see_a_code_and_operators_the_raw_error,
);
