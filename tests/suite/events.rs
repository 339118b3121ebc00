//! Server-Sent Events for a job: a client sees the current state first, live
//! progress and transitions while a real worker pool runs the job, the final
//! state last, and then the stream ends. Another tenant gets 404.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use longhaul_api::AppState;
use longhaul_core::audit::Actor;
use longhaul_core::tenancy::{self, KeyMode, NewTenant, Role};
use longhaul_core::Catalogue;
use longhaul_worker::{Registry, WorkerPool};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::harness::TestDb;
use crate::support::pool_config;

/// One parsed SSE frame.
#[derive(Debug)]
struct Frame {
    event: String,
    data: Value,
}

fn parse_frames(text: &str) -> Vec<Frame> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    event = Some(rest.trim().to_string());
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data = serde_json::from_str(rest.trim()).ok();
                }
            }
            Some(Frame {
                event: event?,
                data: data?,
            })
        })
        .collect()
}

async fn a_client_follows_a_job_to_its_end(db: TestDb) {
    let stores = tenancy::connect_stores(&db.url, 8).await.expect("stores");
    let tenant = stores
        .create_tenant(NewTenant::new("acme", "us", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let key = stores
        .issue_api_key(
            Some(&tenant.id),
            "t",
            Role::Viewer,
            KeyMode::Live,
            &Actor::system(),
        )
        .await
        .expect("key")
        .secret;
    let other_tenant = stores
        .create_tenant(NewTenant::new("globex", "us", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let other_key = stores
        .issue_api_key(
            Some(&other_tenant.id),
            "t",
            Role::Admin,
            KeyMode::Live,
            &Actor::system(),
        )
        .await
        .expect("key")
        .secret;
    let router = longhaul_api::router(AppState::new(
        stores.clone(),
        Arc::new(Catalogue::builtin()),
    ));

    let client = longhaul_core::JobClient::new(db.store.clone(), Arc::new(Catalogue::builtin()));
    let id = client
        .enqueue(longhaul_core::client::EnqueueRequest::new(
            tenant.id.clone(),
            "system.sleep",
            json!({ "durationMs": 1500, "steps": 3 }),
        ))
        .await
        .expect("enqueue")
        .id;

    let request = |key: &str| {
        Request::get(format!("/v1/jobs/{id}/events"))
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty())
            .expect("request")
    };
    let refused = router
        .clone()
        .oneshot(request(&other_key))
        .await
        .expect("response");
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);

    let response = router
        .clone()
        .oneshot(request(&key))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );

    let stop = CancellationToken::new();
    let pool = WorkerPool::new(db.store.clone(), Registry::builtin(), pool_config(2));
    let worker = tokio::spawn(pool.run(stop.clone()));

    let body = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
        .await
        .expect("the stream ends when the job finishes")
        .expect("body")
        .to_bytes();
    stop.cancel();
    worker.await.expect("pool");

    let frames = parse_frames(&String::from_utf8_lossy(&body));
    let names: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(
        frames.first().map(|f| f.event.as_str()),
        Some("state"),
        "{names:?}"
    );
    assert_eq!(frames[0].data["status"], "queued");
    assert!(names.contains(&"started"), "{names:?}");
    let progress: Vec<u64> = frames
        .iter()
        .filter(|f| f.event == "progress")
        .filter_map(|f| f.data["data"]["current"].as_u64())
        .collect();
    assert!(!progress.is_empty(), "no progress event: {names:?}");
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "progress went backwards: {progress:?}"
    );
    let last = frames.last().expect("frames");
    assert_eq!(last.event, "state");
    assert_eq!(last.data["status"], "succeeded");
    assert_eq!(last.data["result"]["steps"], 3);
    let succeeded_at = names
        .iter()
        .position(|n| *n == "succeeded")
        .expect("a succeeded event");
    assert_eq!(
        succeeded_at,
        names.len() - 2,
        "the final state follows the succeeded event: {names:?}"
    );
}

both_stores!(a_client_follows_a_job_to_its_end);
