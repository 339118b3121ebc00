//! Which `X-Request-Id` a request goes by (issue 20, hardening): a client's
//! short, plain id is kept, on the response and in the audit log; a forged,
//! oversize or repeated one is replaced by a fresh id, and the audit log
//! stores that one.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::TestDb;
use crate::http::{self, request, send};

/// Creates a job with the given `X-Request-Id` headers; answers the id the
/// response carries and the one the `job.create` audit event stored.
async fn ids_of_a_job_creation(app: &http::TestApp, key: &str, sent: &[&str]) -> (String, Value) {
    let headers: Vec<(&str, &str)> = sent.iter().map(|id| ("x-request-id", *id)).collect();
    let created = send(
        &app.router,
        request(
            Method::POST,
            "/v1/jobs",
            Some(key),
            &headers,
            Some(json!({ "kind": "system.noop" })),
        ),
    )
    .await;
    created.assert_status(StatusCode::ACCEPTED);
    let job = created.body["id"].as_str().expect("id").to_string();
    let answered = created.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let events = http::call(
        &app.router,
        Method::GET,
        &format!("/v1/audit/events?action=job.create&resourceId={job}"),
        Some(key),
        None,
    )
    .await;
    events.assert_status(StatusCode::OK);
    let data = events.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{}", events.body);
    (answered, data[0]["requestId"].clone())
}

async fn client_request_ids_are_kept_only_when_well_formed(db: TestDb) {
    let app = http::test_app(&db).await;
    let (_, key) = http::tenant_with_admin_key(app.stores.as_ref(), "acme").await;

    let plain = "trace-7f3a.span:42_b";
    let (answered, stored) = ids_of_a_job_creation(&app, &key, &[plain]).await;
    assert_eq!(answered, plain);
    assert_eq!(stored, json!(plain));
    let longest = "a".repeat(64);
    let (answered, stored) = ids_of_a_job_creation(&app, &key, &[&longest]).await;
    assert_eq!(answered, longest);
    assert_eq!(stored, json!(longest));

    let too_long = "a".repeat(65);
    let huge = "b".repeat(20_000);
    let forged: [&[&str]; 5] = [
        &["<script>alert(1)</script>"],
        &["two words"],
        &[&too_long],
        &[&huge],
        &["first", "second"],
    ];
    for sent in forged {
        let (answered, stored) = ids_of_a_job_creation(&app, &key, sent).await;
        assert!(
            !sent.iter().any(|id| *id == answered),
            "{sent:?} must be replaced"
        );
        assert!(
            longhaul_api::request_id::is_acceptable(answered.as_bytes()),
            "a minted id: {answered:?}"
        );
        assert_eq!(stored, json!(answered), "the audit log keeps the id used");
    }
}

both_stores!(client_request_ids_are_kept_only_when_well_formed);
