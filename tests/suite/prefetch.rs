//! Prefetch: while a pool's jobs are short it claims more than its free
//! slots, and the extra jobs wait in the pool. Waiting jobs are leased to it,
//! so they must behave like running ones: a cancel stops one before it runs
//! (recorded as cancelled, handler never called), and at shutdown they are
//! handed back unrun (released: the attempt does not count) for another
//! worker to run exactly once.

use std::time::Duration;

use longhaul_core::client::{EnqueueRequest, JobClient};
use longhaul_core::job::AttemptOutcome;
use longhaul_core::{JobId, JobState};
use longhaul_worker::WorkerPool;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::TestDb;
use crate::support::*;

async fn enqueue(client: &JobClient, ms: u64, n: usize) -> Vec<JobId> {
    let requests = (0..n)
        .map(|_| EnqueueRequest::new("t", RECORD, json!({ "ms": ms })))
        .collect();
    client
        .enqueue_many(requests)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|job| job.id)
        .collect()
}

async fn state_of(db: &TestDb, id: JobId) -> JobState {
    db.store.get_job("t", id).await.expect("job").state
}

async fn waiting_jobs_are_cancelled_or_handed_back_unrun(db: TestDb) {
    let client = JobClient::new(db.store.clone(), test_catalogue());
    let journal = Journal::default();
    let mut config = pool_config(1);
    config.prefetch = 8;
    config.shutdown_grace = Duration::from_secs(5);
    let stop = CancellationToken::new();
    let pool = tokio::spawn(
        WorkerPool::new(db.store.clone(), test_registry(&journal), config).run(stop.clone()),
    );

    // Short jobs first: the pool learns its jobs are short.
    for id in enqueue(&client, 0, 3).await {
        wait_for_job(db.store.as_ref(), "t", id, Duration::from_secs(10), |j| {
            j.state == JobState::Succeeded
        })
        .await;
    }
    // One slot, held by a long job; the short jobs behind it are claimed
    // ahead and wait in the pool.
    let long = enqueue(&client, 1500, 1).await[0];
    wait_for_job(db.store.as_ref(), "t", long, Duration::from_secs(10), |j| {
        j.state == JobState::Running
    })
    .await;
    let waiting = enqueue(&client, 0, 4).await;
    for id in &waiting {
        wait_for_job(db.store.as_ref(), "t", *id, Duration::from_secs(10), |j| {
            j.state == JobState::Running
        })
        .await;
    }
    assert_eq!(
        state_of(&db, long).await,
        JobState::Running,
        "the long job still holds the only slot"
    );

    // A cancel reaches a waiting job: it ends cancelled without running.
    db.store.cancel("t", waiting[0]).await.expect("cancel");
    // Shutdown while the long job runs: it finishes in the grace period, the
    // waiting jobs go back to the queue unrun.
    stop.cancel();
    pool.await.expect("pool");

    let started: Vec<JobId> = journal
        .starts
        .lock()
        .expect("journal")
        .iter()
        .map(|(id, _, _)| *id)
        .collect();
    assert!(started.contains(&long));
    for id in &waiting {
        assert!(!started.contains(id), "a waiting job ran: {id}");
    }
    assert_eq!(state_of(&db, long).await, JobState::Succeeded);
    assert_eq!(state_of(&db, waiting[0]).await, JobState::Cancelled);
    for id in &waiting[1..] {
        let job = db.store.get_job("t", *id).await.expect("job");
        assert_eq!(job.state, JobState::Queued, "handed back: {id}");
        let attempts = db.store.attempts_of("t", *id).await.expect("attempts");
        assert_eq!(
            attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
            vec![AttemptOutcome::Released]
        );
        assert_eq!(job.failed_attempts, 0, "a hand-back does not count");
    }

    // Another worker runs the handed-back jobs, each once.
    let next = Journal::default();
    let stop = CancellationToken::new();
    tokio::spawn(
        WorkerPool::new(db.store.clone(), test_registry(&next), pool_config(2)).run(stop.clone()),
    );
    for id in &waiting[1..] {
        wait_for_job(db.store.as_ref(), "t", *id, Duration::from_secs(10), |j| {
            j.state == JobState::Succeeded
        })
        .await;
    }
    stop.cancel();
    let runs = next.runs_per_job();
    assert_eq!(runs.len(), 3);
    assert!(runs.values().all(|n| *n == 1));
}

both_stores!(waiting_jobs_are_cancelled_or_handed_back_unrun);
