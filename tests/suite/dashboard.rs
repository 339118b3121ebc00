//! The dashboard as a person uses it: served by the API itself with no
//! external asset, then driven in headless Chromium (Debian's `chromium`, over
//! the DevTools protocol by tests/scripts/drive_dashboard.py): the page loads,
//! takes a tenant key, lists a job, opens it, cancels it, and shows the new
//! state; the screenshots are kept under the target folder. And
//! `GET /v1/queues`, which the operator side reads.

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{header, Method, StatusCode};
use longhaul_api::clock::Clock;
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::tenancy::{KeyMode, Role};
use longhaul_core::workers::Ended;
use longhaul_core::{JobClient, JobKind, JobState};
use longhaul_worker::jobs::noop::Noop;
use serde_json::json;

use crate::harness::{self, TestDb};
use crate::http::{self, tenant_with_admin_key};

/// Debian's Chromium, or the one `LONGHAUL_TEST_CHROMIUM` names.
fn chromium() -> String {
    let path =
        std::env::var("LONGHAUL_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "the dashboard test needs Chromium at {path} (apt-get install chromium; .ci/run installs it)"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_is_served_whole_from_the_binary() {
    let app = http::test_app(&harness::sqlite().await).await;
    for (path, content_type) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let (status, headers, body) = http::send_raw(
            &app.router,
            http::request(Method::GET, path, None, &[], None),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let served = headers[header::CONTENT_TYPE].to_str().expect("ASCII");
        assert!(served.starts_with(content_type), "{path}: {served}");
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ASCII");
        assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"));
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{path} names no other origin: it works offline"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_lists_a_job_and_cancels_it() {
    let db: TestDb = harness::postgres().await;
    let app = http::test_app(&db).await;
    let (tenant, key) = tenant_with_admin_key(app.stores.as_ref(), "acme").await;
    let client = JobClient::new(
        app.stores.clone().job_store(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    );
    // On a queue no worker serves: it stays queued until the browser cancels it.
    let job = client
        .enqueue(EnqueueRequest {
            queue: Some("dashboard-test".into()),
            ..EnqueueRequest::new(tenant.id.clone(), Noop::NAME, json!({}))
        })
        .await
        .expect("job")
        .id;
    // Another one, left queued: the operator's queue table shows it.
    client
        .enqueue(EnqueueRequest {
            queue: Some("dashboard-test".into()),
            ..EnqueueRequest::new(tenant.id.clone(), Noop::NAME, json!({}))
        })
        .await
        .expect("job");
    app.clock.advance(chrono::Duration::seconds(1));
    let operator = app
        .stores
        .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
        .await
        .expect("operator key")
        .secret;
    // A pool's report for the throughput chart, this minute.
    app.stores
        .add_throughput(
            longhaul_core::workers::minute_of(app.clock.now()),
            &[(
                "default".to_string(),
                Ended {
                    succeeded: 12,
                    failed: 2,
                },
            )],
        )
        .await
        .expect("throughput");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/dashboard", listener.local_addr().expect("addr"));
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/drive_dashboard.py");
    let chromium = chromium();
    let job_text = job.to_string();
    let shots_text = shots.display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .args([&chromium, &url, &key, &job_text, &shots_text, &operator])
            .output()
    })
    .await
    .expect("the driver's thread")
    .expect("python3 runs the driver");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(printed.trim()).expect("one JSON line");
    assert_eq!(report["ok"], json!(true), "{report}");
    assert_eq!(report["throughput"], json!("14 in all"), "{report}");
    for shot in report["screenshots"].as_array().expect("screenshots") {
        let path = shot.as_str().expect("a path");
        let bytes = std::fs::read(path).expect("a screenshot file");
        assert!(bytes.starts_with(b"\x89PNG"), "{path} is a PNG");
    }
    let stored = app.stores.get_job(&tenant.id, job).await.expect("job");
    assert_eq!(
        stored.state,
        JobState::Cancelled,
        "the click cancelled it for real"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queues_are_listed_for_operator_keys() {
    let app = http::test_app(&harness::sqlite().await).await;
    let (tenant, key) = tenant_with_admin_key(app.stores.as_ref(), "acme").await;
    let operator = app
        .stores
        .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
        .await
        .expect("operator key")
        .secret;
    // Through the API, which meters them (one billable operation each).
    for _ in 0..3 {
        http::call(
            &app.router,
            Method::POST,
            "/v1/jobs",
            Some(&key),
            Some(json!({"kind": Noop::NAME, "params": {}})),
        )
        .await
        .assert_status(StatusCode::ACCEPTED);
    }
    // The API's clock started before the jobs were enqueued: now they are due.
    app.clock.advance(chrono::Duration::seconds(1));
    http::call(&app.router, Method::GET, "/v1/queues", Some(&key), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let listed = http::call(
        &app.router,
        Method::GET,
        "/v1/queues",
        Some(&operator),
        None,
    )
    .await;
    listed.assert_status(StatusCode::OK);
    let row = &listed.body["data"][0];
    assert_eq!(row["queue"], json!("default"), "{}", listed.body);
    assert_eq!(row["kind"], json!(Noop::NAME));
    assert_eq!(row["due"], json!(3));
    assert_eq!(row["running"], json!(0));
    assert!(row["oldestAgeSeconds"]
        .as_f64()
        .is_some_and(|age| age >= 0.0));
    assert_eq!(
        listed.body["lastHour"],
        json!([]),
        "no pool has reported yet"
    );

    // A tenant's usage, for operators (the dashboard's tenants table).
    let usage_path = format!("/v1/tenants/{}/usage", tenant.id);
    let usage = http::call(&app.router, Method::GET, &usage_path, Some(&operator), None).await;
    usage.assert_status(StatusCode::OK);
    assert_eq!(usage.body["total"], json!(3), "{}", usage.body);
    assert_eq!(usage.body["data"][0]["kind"], json!(Noop::NAME));
    http::call(&app.router, Method::GET, &usage_path, Some(&key), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    http::call(
        &app.router,
        Method::GET,
        "/v1/tenants/tnt_nope/usage",
        Some(&operator),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");

    // Two pools' heartbeats in the same minute add up; old minutes are not shown.
    let now = app.clock.now();
    let minute = longhaul_core::workers::minute_of(now);
    let ended = |succeeded, failed| Ended { succeeded, failed };
    for counts in [ended(3, 1), ended(4, 0)] {
        app.stores
            .add_throughput(minute, &[("default".to_string(), counts)])
            .await
            .expect("throughput");
    }
    app.stores
        .add_throughput(
            minute - chrono::Duration::hours(2),
            &[("default".to_string(), ended(100, 0))],
        )
        .await
        .expect("throughput");
    let listed = http::call(
        &app.router,
        Method::GET,
        "/v1/queues",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(
        listed.body["lastHour"],
        json!([{"minute": minute, "succeeded": 7, "failed": 1}])
    );
}
