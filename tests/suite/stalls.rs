//! A process frozen mid-transaction (SIGSTOP, a paused VM, a half-open TCP
//! connection) must cost the others a few seconds at most (PostgreSQL: the
//! embedded SQLite store has one process). The frozen process is simulated by
//! a proxy that stops forwarding once the claim or fire statement has been
//! sent, so the server holds whatever that transaction locked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use longhaul_core::audit::Actor;
use longhaul_core::client::{EnqueueRequest, JobClient};
use longhaul_core::schedule::{MisfirePolicy, NewSchedule, OverlapPolicy};
use longhaul_core::tenancy::NewTenant;
use longhaul_core::{store, JobState};
use longhaul_scheduler::CatalogueJobs;
use longhaul_worker::WorkerPool;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::freezing_proxy::FreezingProxy;
use crate::harness::{self, TestDb};
use crate::support::{pool_config, test_catalogue, test_registry, wait_for_count, Journal, RECORD};

/// How long the others may be held up by a frozen process, at most.
const BOUND: Duration = Duration::from_secs(20);

async fn proxy_for(db: &TestDb, marker: &'static [u8]) -> FreezingProxy {
    let authority = db
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("authority");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let upstream = tokio::net::lookup_host(host_port)
        .await
        .expect("resolving the database host")
        .next()
        .expect("an address");
    FreezingProxy::start(upstream, marker).await
}

/// A pool of its own to probe locks with.
async fn pg_pool(db: &TestDb) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .expect("probe connection")
}

/// Whether the frozen process has been frozen for more than two seconds.
fn proxy_waited(proxy: &FreezingProxy) -> bool {
    proxy.frozen_for() > Duration::from_secs(2)
}

async fn wait_until_frozen(proxy: &FreezingProxy) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.is_frozen() {
        assert!(
            Instant::now() < deadline,
            "the process never reached the statement to freeze on"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_frozen_mid_claim_does_not_stop_the_others() {
    let db = harness::postgres().await;
    let client = JobClient::new(db.store.clone(), test_catalogue());
    let first: Vec<_> = (0..100)
        .map(|i| EnqueueRequest::new(format!("t{}", i % 3), RECORD, json!({})))
        .collect();
    client.enqueue_many(first).await.expect("enqueue");

    // The frozen worker: its claim statement reaches the server, nothing after it.
    let proxy = proxy_for(&db, b"-- longhaul:claim").await;
    let frozen_store = store::connect(&proxy.url_through(&db.url), 4)
        .await
        .expect("connecting through the proxy");
    let frozen_journal = Journal::default();
    let frozen_stop = CancellationToken::new();
    let frozen = tokio::spawn(
        WorkerPool::new(frozen_store, test_registry(&frozen_journal), pool_config(4))
            .run(frozen_stop.clone()),
    );
    wait_until_frozen(&proxy).await;

    // A healthy worker runs everything, including work queued after the freeze.
    let journal = Journal::default();
    let stop = CancellationToken::new();
    let healthy = tokio::spawn(
        WorkerPool::new(
            db.reconnect().await,
            test_registry(&journal),
            pool_config(8),
        )
        .run(stop.clone()),
    );
    let later: Vec<_> = (0..100)
        .map(|i| EnqueueRequest::new(format!("t{}", i % 3), RECORD, json!({})))
        .collect();
    client
        .enqueue_many(later)
        .await
        .expect("enqueue after the freeze");
    let started = Instant::now();
    wait_for_count(db.store.as_ref(), JobState::Succeeded, 200, BOUND).await;
    eprintln!("drained past the frozen claimer in {:?}", started.elapsed());

    let runs = journal.runs_per_job();
    assert_eq!(runs.len(), 200);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
    assert_eq!(
        frozen_journal
            .total
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    stop.cancel();
    healthy.await.expect("healthy pool");
    frozen.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_frozen_mid_fire_does_not_stop_its_schedules() {
    let db = harness::postgres().await;
    let stores = longhaul_core::store::connect_stores(&db.url, 4)
        .await
        .expect("stores");
    let tenant = stores
        .create_tenant(NewTenant::new("acme", "eu", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let now = Utc::now();
    let schedule = stores
        .create_schedule(
            Some(&tenant.id),
            &NewSchedule {
                name: "nightly".into(),
                cron: "* * * * *".into(),
                time_zone: "UTC".into(),
                kind: "system.noop".into(),
                params: json!({}),
                queue: None,
                priority: None,
                jitter_seconds: 0,
                overlap_policy: OverlapPolicy::Allow,
                misfire_policy: MisfirePolicy::FireOnce,
                paused: false,
            },
            None,
            now - chrono::Duration::minutes(2),
            &Actor::system(),
        )
        .await
        .expect("schedule");
    let jobs = Arc::new(CatalogueJobs::new(Arc::new(
        longhaul_worker::jobs::catalogue(),
    )));

    // The frozen replica: its batch of due schedules is locked, nothing after.
    let proxy = proxy_for(&db, b"FOR UPDATE OF s SKIP LOCKED").await;
    let frozen_stores = longhaul_core::store::connect_stores(&proxy.url_through(&db.url), 2)
        .await
        .expect("connecting through the proxy");
    let frozen_jobs = jobs.clone();
    let frozen = tokio::spawn(async move {
        frozen_stores
            .fire_due(now, 10, Duration::from_secs(3600), frozen_jobs.as_ref())
            .await
    });
    wait_until_frozen(&proxy).await;
    let locked = loop {
        let probe = sqlx::query("SELECT 1 FROM schedules WHERE name = 'nightly' FOR UPDATE NOWAIT")
            .execute(&pg_pool(&db).await)
            .await;
        match probe {
            Err(e) if e.to_string().contains("could not obtain lock") => break true,
            _ if proxy_waited(&proxy) => break false,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(locked, "the frozen replica holds the schedule's row");

    // A healthy replica fires the schedule within the bound, once.
    let started = Instant::now();
    let fired = loop {
        let report = stores
            .fire_due(now, 10, Duration::from_secs(3600), jobs.as_ref())
            .await
            .expect("healthy tick");
        if !report.fired.is_empty() {
            break report.fired;
        }
        assert!(
            started.elapsed() < BOUND,
            "the schedule stayed locked by the frozen replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("fired past the frozen replica in {:?}", started.elapsed());
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].0, schedule.id);
    frozen.abort();
}
