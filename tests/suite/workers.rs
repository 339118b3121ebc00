//! The worker table on both stores: a pool registers when it starts, its
//! heartbeat carries its running count, it is shown stopped when it ends and
//! gone when it falls silent; `GET /v1/workers` is for operator keys; long
//! gone pools are pruned.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::Utc;
use longhaul_api::AppState;
use longhaul_core::audit::Actor;
use longhaul_core::tenancy::{KeyMode, NewTenant, Role};
use longhaul_core::workers::{WorkerInfo, WorkerStore};
use longhaul_worker::WorkerPool;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::harness::TestDb;
use crate::http;
use crate::support::pool_config;

async fn pools_are_listed_live_stopped_and_gone(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let router = longhaul_api::router(AppState::new(
        stores.clone(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    ));
    let operator = stores
        .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
        .await
        .expect("operator key")
        .secret;
    let tenant = stores
        .create_tenant(NewTenant::new("acme", "us", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let admin = stores
        .issue_api_key(
            Some(&tenant.id),
            "a",
            Role::Admin,
            KeyMode::Live,
            &Actor::system(),
        )
        .await
        .expect("key")
        .secret;
    http::call(&router, Method::GET, "/v1/workers", Some(&admin), None)
        .await
        .assert_status(StatusCode::FORBIDDEN);

    let mut config = pool_config(3);
    config.worker_id = format!("test-{}", uuid::Uuid::now_v7().simple());
    let id = config.worker_id.clone();
    let presence: Arc<dyn WorkerStore> = stores.clone();
    let pool = WorkerPool::new(
        stores.clone().job_store(),
        longhaul_worker::jobs::registry(),
        config,
    )
    .with_presence(presence);
    let token = CancellationToken::new();
    let run = tokio::spawn(pool.run(token.clone()));

    let find = |body: &Value| {
        body["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|w| w["workerId"] == id.as_str())
            .cloned()
    };
    let listed = |want: &'static str, running: Option<u64>| {
        let (router, operator) = (router.clone(), operator.clone());
        let find = &find;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let reply =
                    http::call(&router, Method::GET, "/v1/workers", Some(&operator), None).await;
                reply.assert_status(StatusCode::OK);
                if let Some(worker) = find(&reply.body) {
                    let running_ok = running.is_none_or(|n| worker["runningJobs"] == n);
                    if worker["status"] == want && running_ok {
                        return worker;
                    }
                }
                assert!(tokio::time::Instant::now() < deadline, "{}", reply.body);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let live = listed("live", None).await;
    assert_eq!(live["queues"], json!(["default"]));
    assert_eq!(live["concurrency"], 3);
    assert!(!live["host"].as_str().unwrap_or_default().is_empty());
    assert_eq!(live["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(live["stoppedAt"], Value::Null);

    // A job runs: the next heartbeat says so.
    let job = http::call(
        &router,
        Method::POST,
        "/v1/jobs",
        Some(&admin),
        Some(json!({"kind": "system.sleep", "params": {"durationMs": 20000, "steps": 20}})),
    )
    .await;
    job.assert_status(StatusCode::ACCEPTED);
    listed("live", Some(1)).await;
    let job_id = job.body["id"].as_str().unwrap().to_string();
    http::call(
        &router,
        Method::POST,
        &format!("/v1/jobs/{job_id}/cancel"),
        Some(&admin),
        None,
    )
    .await;

    token.cancel();
    run.await.expect("the pool");
    let stopped = listed("stopped", Some(0)).await;
    assert!(stopped["stoppedAt"].is_string());

    // A pool that fell silent a minute ago is gone; one silent for two days
    // is pruned.
    let silent = WorkerInfo {
        id: "silent".into(),
        host: "h".into(),
        version: "0".into(),
        queues: vec!["exports".into()],
        concurrency: 1,
    };
    stores
        .register_worker(&silent, Utc::now() - chrono::Duration::seconds(60))
        .await
        .unwrap();
    let ancient = WorkerInfo {
        id: "ancient".into(),
        ..silent.clone()
    };
    stores
        .register_worker(&ancient, Utc::now() - chrono::Duration::days(2))
        .await
        .unwrap();
    let reply = http::call(&router, Method::GET, "/v1/workers", Some(&operator), None).await;
    let workers = reply.body["data"].as_array().unwrap();
    let gone = workers
        .iter()
        .find(|w| w["workerId"] == "silent")
        .expect("listed");
    assert_eq!(gone["status"], "gone");
    assert!(
        workers.iter().all(|w| w["workerId"] != "ancient"),
        "older than an hour: not listed"
    );
    assert_eq!(stores.prune_workers(Utc::now()).await.unwrap(), 1);
}

both_stores!(
    pools_are_listed_live_stopped_and_gone,
    a_pools_ended_attempts_add_up_per_minute
);

/// A pool's heartbeat (and its stop) adds the attempts it ended to the
/// throughput figures: successes and failures, each counted once.
async fn a_pools_ended_attempts_add_up_per_minute(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let journal = crate::support::Journal::default();
    let client =
        longhaul_core::JobClient::new(stores.clone().job_store(), crate::support::test_catalogue());
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            client
                .enqueue(longhaul_core::client::EnqueueRequest::new(
                    "t",
                    "system.noop",
                    json!({}),
                ))
                .await
                .expect("job")
                .id,
        );
    }
    ids.push(
        client
            .enqueue(longhaul_core::client::EnqueueRequest::new(
                "t",
                crate::support::PERMANENT,
                json!({}),
            ))
            .await
            .expect("job")
            .id,
    );
    let presence: Arc<dyn WorkerStore> = stores.clone();
    let pool = WorkerPool::new(
        stores.clone().job_store(),
        crate::support::test_registry(&journal),
        pool_config(3),
    )
    .with_presence(presence);
    let token = CancellationToken::new();
    let run = tokio::spawn(pool.run(token.clone()));
    for id in &ids {
        crate::support::wait_for_job(stores.as_ref(), "t", *id, Duration::from_secs(10), |job| {
            job.state.is_terminal()
        })
        .await;
    }
    token.cancel();
    run.await.expect("the pool ends");

    let minutes = stores
        .throughput_since(Utc::now() - chrono::Duration::hours(1))
        .await
        .expect("throughput");
    let succeeded: u64 = minutes.iter().map(|m| m.succeeded).sum();
    let failed: u64 = minutes.iter().map(|m| m.failed).sum();
    assert_eq!((succeeded, failed), (5, 1), "{minutes:?}");
    assert!(minutes
        .iter()
        .all(|m| m.minute == longhaul_core::workers::minute_of(m.minute)));
    // Nothing more is added once the pool has stopped.
    let again = stores
        .throughput_since(Utc::now() - chrono::Duration::hours(1))
        .await
        .expect("throughput");
    assert_eq!(again, minutes);
}
