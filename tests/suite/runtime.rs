//! The worker runtime against both stores: exactly-once draining, fairness
//! and caps through a real pool, retries and back-off, dead jobs and manual
//! retry, panics, timeouts, cancel, delayed jobs, graceful shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::AttemptOutcome;
use longhaul_core::JobKind;
use longhaul_core::{JobClient, JobState};
use longhaul_worker::jobs::{noop::Noop, sleep::Sleep};
use longhaul_worker::{PoolReport, Shutdown, WorkerPool};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness::TestDb;
use crate::support::*;

struct RunningPool {
    stop: CancellationToken,
    task: JoinHandle<PoolReport>,
}

impl RunningPool {
    async fn stop(self) -> PoolReport {
        self.stop.cancel();
        self.task.await.expect("pool task")
    }
}

fn start_pool(
    store: Arc<dyn longhaul_core::JobStore>,
    journal: &Journal,
    config: longhaul_worker::PoolConfig,
) -> RunningPool {
    let stop = CancellationToken::new();
    let pool = WorkerPool::new(store, test_registry(journal), config);
    RunningPool {
        task: tokio::spawn(pool.run(stop.clone())),
        stop,
    }
}

fn client(db: &TestDb) -> JobClient {
    JobClient::new(db.store.clone(), test_catalogue())
}

fn record(tenant: &str, ms: u64) -> EnqueueRequest {
    EnqueueRequest::new(tenant, RECORD, json!({ "ms": ms }))
}

async fn exactly_once_with_four_pools(db: TestDb) {
    let client = client(&db);
    let requests: Vec<_> = (0..2000)
        .map(|i| record(&format!("tenant-{}", i % 5), 0))
        .collect();
    let ids: Vec<_> = client
        .enqueue_many(requests)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let journal = Journal::default();
    let mut pools = Vec::new();
    for _ in 0..4 {
        pools.push(start_pool(db.reconnect().await, &journal, pool_config(8)));
    }
    wait_for_count(
        db.store.as_ref(),
        JobState::Succeeded,
        2000,
        Duration::from_secs(120),
    )
    .await;
    for pool in pools {
        pool.stop().await;
    }
    let runs = journal.runs_per_job();
    assert_eq!(runs.len(), 2000, "every job ran");
    let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "jobs ran more than once: {repeated:?}");
    for (index, id) in ids.iter().enumerate().step_by(97) {
        let job = db
            .store
            .get_job(&format!("tenant-{}", index % 5), *id)
            .await
            .expect("job");
        assert_eq!((job.state, job.attempt), (JobState::Succeeded, 1));
    }
    assert_eq!(count(db.store.as_ref(), JobState::Running).await, 0);
}

async fn a_late_tenant_is_not_stuck_behind_a_backlog(db: TestDb) {
    let client = client(&db);
    let backlog: Vec<_> = (0..10_000).map(|_| record("big", 0)).collect();
    client.enqueue_many(backlog).await.expect("backlog");
    let journal = Journal::default();
    let pool = start_pool(db.store.clone(), &journal, pool_config(8));
    // Let the pool get going on the backlog first.
    let deadline = Instant::now() + Duration::from_secs(30);
    while journal.starts_of("big") < 100 {
        assert!(
            Instant::now() < deadline,
            "the pool did not start the backlog"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let small: Vec<_> = (0..10).map(|_| record("small", 0)).collect();
    client.enqueue_many(small).await.expect("small tenant");
    // Counted from when the small tenant's jobs are queued: on a loaded
    // machine the enqueue call itself can last long enough for hundreds of
    // no-op jobs of the backlog to run.
    let big_before = journal.starts_of("big");
    let deadline = Instant::now() + Duration::from_secs(30);
    while journal.starts_of("small") < 10 {
        assert!(
            Instant::now() < deadline,
            "the small tenant's jobs did not all start"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let big_meanwhile = journal.starts_of("big") - big_before;
    pool.stop().await;
    assert!(
        big_meanwhile < 200,
        "the big tenant started {big_meanwhile} jobs before the small tenant's 10 had all started"
    );
}

async fn running_cap_is_never_exceeded(db: TestDb) {
    let client = client(&db);
    db.store
        .set_tenant_max_running("capped", Some(2))
        .await
        .expect("cap");
    let mut requests: Vec<_> = (0..60).map(|_| record("capped", 20)).collect();
    requests.extend((0..60).map(|_| record("free", 20)));
    client.enqueue_many(requests).await.expect("enqueue");
    let journal = Journal::default();
    let pools = [
        start_pool(db.reconnect().await, &journal, pool_config(4)),
        start_pool(db.reconnect().await, &journal, pool_config(4)),
    ];
    let mut max_capped_in_db = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(db.store.as_ref(), JobState::Succeeded).await < 120 {
        assert!(Instant::now() < deadline, "jobs did not drain");
        for (tenant, running) in db.store.running_by_tenant().await.expect("running") {
            if tenant == "capped" {
                max_capped_in_db = max_capped_in_db.max(running);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for pool in pools {
        pool.stop().await;
    }
    assert!(
        max_capped_in_db <= 2,
        "database showed {max_capped_in_db} running for a tenant capped at 2"
    );
    assert!(
        max_capped_in_db >= 1,
        "sampling never saw the capped tenant running"
    );
    assert!(
        journal.max_running_of("capped") <= 2,
        "handlers ran {} at once",
        journal.max_running_of("capped")
    );
    assert!(
        journal.max_running_of("free") > 2,
        "the uncapped tenant should use the other slots"
    );
}

async fn retries_back_off_then_succeed(db: TestDb) {
    let client = client(&db);
    let id = client
        .enqueue(EnqueueRequest::new("t", FLAKY, json!({ "succeedOn": 3 })))
        .await
        .expect("enqueue")
        .id;
    let pool = start_pool(db.store.clone(), &Journal::default(), pool_config(2));
    let job = wait_for_state(
        db.store.as_ref(),
        "t",
        id,
        JobState::Succeeded,
        Duration::from_secs(20),
    )
    .await;
    pool.stop().await;
    assert_eq!(job.attempt, 3);
    assert_eq!(job.failed_attempts, 2);
    assert_eq!(job.result, Some(json!({ "succeededOn": 3 })));
    let attempts = db.store.job_attempts("t", id).await.expect("attempts");
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::Retried,
            AttemptOutcome::Retried,
            AttemptOutcome::Succeeded
        ]
    );
    assert!(attempts[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("flaky failure on attempt 1")));
    // Back-off: 300 ms then 600 ms, each ±10%, measured from the failure to the next start.
    for (gap_index, expected_ms) in [(0usize, 300i64), (1, 600)] {
        let failed_at = attempts[gap_index].finished_at;
        let next_start = attempts[gap_index + 1].started_at.expect("started");
        let gap = (next_start - failed_at).num_milliseconds();
        assert!(
            gap >= expected_ms * 9 / 10 && gap <= expected_ms * 11 / 10 + 400,
            "gap {gap_index} was {gap} ms, expected about {expected_ms} ms"
        );
    }
}

async fn spent_attempts_fail_and_manual_retry_runs_again(db: TestDb) {
    let client = client(&db);
    let id = client
        .enqueue(EnqueueRequest::new("t", FLAKY, json!({ "succeedOn": 5 })))
        .await
        .expect("enqueue")
        .id;
    let permanent = client
        .enqueue(EnqueueRequest::new("t", PERMANENT, json!({})))
        .await
        .expect("enqueue")
        .id;
    let pool = start_pool(db.store.clone(), &Journal::default(), pool_config(2));
    let job = wait_for_state(
        db.store.as_ref(),
        "t",
        id,
        JobState::Failed,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!((job.attempt, job.failed_attempts), (3, 3));
    assert!(job
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("attempt 3")));
    assert!(job.finished_at.is_some());

    let failed_for_good = wait_for_state(
        db.store.as_ref(),
        "t",
        permanent,
        JobState::Failed,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        failed_for_good.attempt, 1,
        "a permanent error is not retried"
    );

    // By hand: a fresh budget of 3 attempts; attempts 4 and 5 run, and 5 succeeds.
    client.retry("t", id).await.expect("manual retry");
    let job = wait_for_state(
        db.store.as_ref(),
        "t",
        id,
        JobState::Succeeded,
        Duration::from_secs(20),
    )
    .await;
    pool.stop().await;
    assert_eq!(job.attempt, 5);
    assert_eq!(job.result, Some(json!({ "succeededOn": 5 })));
}

async fn a_panic_is_a_failed_attempt_and_the_pool_lives_on(db: TestDb) {
    let client = client(&db);
    let panicking = client
        .enqueue(EnqueueRequest::new("t", PANIC, json!({})))
        .await
        .expect("enqueue")
        .id;
    let pool = start_pool(db.store.clone(), &Journal::default(), pool_config(2));
    let job = wait_for_state(
        db.store.as_ref(),
        "t",
        panicking,
        JobState::Failed,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        job.last_error
            .as_deref()
            .is_some_and(|e| e.contains("panicked") && e.contains("boom")),
        "{:?}",
        job.last_error
    );
    let after = client
        .enqueue(EnqueueRequest::new("t", Noop::NAME, json!({})))
        .await
        .expect("enqueue")
        .id;
    wait_for_state(
        db.store.as_ref(),
        "t",
        after,
        JobState::Succeeded,
        Duration::from_secs(10),
    )
    .await;
    pool.stop().await;
}

async fn a_timeout_stops_the_handler_and_fails_the_attempt(db: TestDb) {
    let client = client(&db);
    let id = client
        .enqueue(EnqueueRequest::new("t", HANG, json!({})))
        .await
        .expect("enqueue")
        .id;
    let pool = start_pool(db.store.clone(), &Journal::default(), pool_config(2));
    let job = wait_for_state(
        db.store.as_ref(),
        "t",
        id,
        JobState::Failed,
        Duration::from_secs(10),
    )
    .await;
    pool.stop().await;
    assert!(
        job.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{:?}",
        job.last_error
    );
    let ran_for = job.finished_at.expect("finished") - job.started_at.expect("started");
    assert!(
        ran_for.num_milliseconds() >= 250,
        "stopped after {ran_for}, before the 300 ms timeout"
    );
    assert!(
        ran_for.num_milliseconds() < 3000,
        "took {ran_for} to stop after a 300 ms timeout"
    );
}

async fn cancel_stops_a_running_job(db: TestDb) {
    let client = client(&db);
    let id = client
        .enqueue(EnqueueRequest::new(
            "t",
            Sleep::NAME,
            json!({ "durationMs": 20_000, "steps": 200 }),
        ))
        .await
        .expect("enqueue")
        .id;
    let pool = start_pool(db.store.clone(), &Journal::default(), pool_config(2));
    wait_for_job(db.store.as_ref(), "t", id, Duration::from_secs(10), |j| {
        j.progress.is_some()
    })
    .await;
    let asked = Instant::now();
    let requested = client.cancel("t", id).await.expect("cancel");
    assert_eq!(requested.state, JobState::Running);
    assert!(requested.cancel_requested);
    let job = wait_for_state(
        db.store.as_ref(),
        "t",
        id,
        JobState::Cancelled,
        Duration::from_secs(5),
    )
    .await;
    // The cancel arrives by wake-up, well before the next heartbeat (1 s here).
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "cancel took {:?}",
        asked.elapsed()
    );
    pool.stop().await;
    assert!(job.finished_at.is_some());
    let attempts = db.store.job_attempts("t", id).await.expect("attempts");
    assert_eq!(
        attempts.last().map(|a| a.outcome),
        Some(AttemptOutcome::Cancelled)
    );
}

async fn delayed_jobs_start_when_due(db: TestDb) {
    let client = client(&db);
    let run_at = Utc::now() + chrono::Duration::milliseconds(1200);
    let id = client
        .enqueue(EnqueueRequest {
            run_at: Some(run_at),
            ..EnqueueRequest::new("t", Noop::NAME, json!({}))
        })
        .await
        .expect("enqueue")
        .id;
    let pool = start_pool(db.store.clone(), &Journal::default(), pool_config(2));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        db.store.get_job("t", id).await.expect("job").state,
        JobState::Queued,
        "started before run_at"
    );
    let job = wait_for_state(
        db.store.as_ref(),
        "t",
        id,
        JobState::Succeeded,
        Duration::from_secs(10),
    )
    .await;
    pool.stop().await;
    assert!(job.started_at.expect("started") >= run_at);
}

async fn graceful_shutdown_loses_nothing(db: TestDb) {
    let client = client(&db);
    let sleepers: Vec<_> = (0..4)
        .map(|_| EnqueueRequest::new("t", Sleep::NAME, json!({ "durationMs": 6000, "steps": 30 })))
        .collect();
    let sleepers: Vec<_> = client
        .enqueue_many(sleepers)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let quick: Vec<_> = (0..30).map(|_| record("t", 10)).collect();
    client.enqueue_many(quick).await.expect("enqueue");
    let journal = Journal::default();
    let mut config = pool_config(6);
    config.shutdown_grace = Duration::from_millis(700);
    let pool = start_pool(db.store.clone(), &journal, config.clone());
    for id in &sleepers {
        wait_for_job(db.store.as_ref(), "t", *id, Duration::from_secs(20), |j| {
            j.checkpoint.is_some()
        })
        .await;
    }
    let report = pool.stop().await;
    assert_eq!(
        report.handed_back, 4,
        "the four long jobs outlive the grace period and are handed back"
    );
    assert_eq!(
        count(db.store.as_ref(), JobState::Running).await,
        0,
        "nothing is left running"
    );
    for id in &sleepers {
        let job = db.store.get_job("t", *id).await.expect("job");
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.failed_attempts, 0, "a released attempt does not count");
        let attempts = db.store.job_attempts("t", *id).await.expect("attempts");
        assert_eq!(
            attempts.last().map(|a| a.outcome),
            Some(AttemptOutcome::Released)
        );
    }
    let pool = start_pool(db.store.clone(), &journal, config);
    wait_for_count(
        db.store.as_ref(),
        JobState::Succeeded,
        34,
        Duration::from_secs(30),
    )
    .await;
    pool.stop().await;
    for id in &sleepers {
        let job = db.store.get_job("t", *id).await.expect("job");
        let resumed = job
            .result
            .as_ref()
            .and_then(|r| r["resumedFromStep"].as_u64())
            .expect("result");
        assert!(
            resumed > 0,
            "job {id} restarted from step 0 instead of its checkpoint"
        );
    }
    assert_eq!(
        journal.runs_per_job().values().filter(|n| **n != 1).count(),
        0,
        "a quick job ran twice"
    );
}

/// A second stop (a second ctrl-c) ends the grace period at once: the
/// running job is handed back, the pool stops long before the hour it would
/// otherwise wait.
async fn a_second_stop_hands_running_jobs_back_before_the_grace_ends(db: TestDb) {
    let id = client(&db)
        .enqueue(EnqueueRequest::new(
            "t",
            Sleep::NAME,
            json!({ "durationMs": 600_000, "steps": 6000 }),
        ))
        .await
        .expect("enqueue")
        .id;
    let mut config = pool_config(2);
    config.shutdown_grace = Duration::from_secs(3600);
    let shutdown = Shutdown::default();
    let pool = WorkerPool::new(db.store.clone(), test_registry(&Journal::default()), config);
    let task = tokio::spawn(pool.run_with(shutdown.clone()));
    wait_for_job(db.store.as_ref(), "t", id, Duration::from_secs(20), |j| {
        j.checkpoint.is_some()
    })
    .await;
    shutdown.stop.cancel();
    // Stopped claiming, still running the job within its grace period.
    let steps = |job: &longhaul_core::Job| job.progress.as_ref().map_or(0, |p| p.current);
    let at_stop = steps(&db.store.get_job("t", id).await.expect("job"));
    wait_for_job(db.store.as_ref(), "t", id, Duration::from_secs(20), |j| {
        steps(j) >= at_stop + 3
    })
    .await;
    assert!(
        !task.is_finished(),
        "the pool stopped before its grace period"
    );
    shutdown.hand_back_now.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the pool stops once asked to hand its jobs back")
        .expect("pool task");
    assert_eq!(report.handed_back, 1);
    let job = db.store.get_job("t", id).await.expect("job");
    assert_eq!(job.state, JobState::Queued, "handed back, not lost");
    assert_eq!(job.failed_attempts, 0);
    let attempts = db.store.job_attempts("t", id).await.expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [AttemptOutcome::Released]
    );
}

async fn maintenance_prunes_finished_jobs_past_retention(db: TestDb) {
    let client = client(&db);
    let done = client
        .enqueue(EnqueueRequest::new("t", Noop::NAME, json!({})))
        .await
        .expect("enqueue")
        .id;
    let later = client
        .enqueue(EnqueueRequest {
            run_at: Some(Utc::now() + chrono::Duration::seconds(60)),
            ..EnqueueRequest::new("t", Noop::NAME, json!({}))
        })
        .await
        .expect("enqueue")
        .id;
    let mut config = pool_config(2);
    config.job_retention = Duration::from_millis(300);
    config.rescue_interval = Some(Duration::from_millis(200));
    let pool = start_pool(db.store.clone(), &Journal::default(), config);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match db.store.get_job("t", done).await {
            Err(longhaul_core::Error::NotFound(_)) => break,
            Ok(job) => assert!(Instant::now() < deadline, "not pruned: {job:?}"),
            Err(other) => panic!("{other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.stop().await;
    assert_eq!(
        db.store
            .get_job("t", later)
            .await
            .expect("a queued job is kept")
            .state,
        JobState::Queued
    );
}

both_stores!(
    maintenance_prunes_finished_jobs_past_retention,
    exactly_once_with_four_pools,
    a_late_tenant_is_not_stuck_behind_a_backlog,
    running_cap_is_never_exceeded,
    retries_back_off_then_succeed,
    spent_attempts_fail_and_manual_retry_runs_again,
    a_panic_is_a_failed_attempt_and_the_pool_lives_on,
    a_timeout_stops_the_handler_and_fails_the_attempt,
    cancel_stops_a_running_job,
    delayed_jobs_start_when_due,
    graceful_shutdown_loses_nothing,
    a_second_stop_hands_running_jobs_back_before_the_grace_ends,
);
