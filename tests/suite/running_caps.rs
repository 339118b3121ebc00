//! Running caps with claims that share no lock (issue 21): several worker
//! pools, each on its own connection pool as separate processes would be,
//! compete for capped and uncapped tenants; no cap is ever exceeded, every
//! job runs exactly once, and a running counter that drifted from the jobs
//! table is repaired by the rescuer's pass.

use std::time::Duration;

use longhaul_core::client::{EnqueueRequest, JobClient};
use longhaul_core::job::{ClaimRequest, Finish};
use longhaul_core::JobState;
use longhaul_worker::WorkerPool;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::TestDb;
use crate::support::*;

const POOLS: usize = 4;
const SLOTS: usize = 8;

async fn four_pools_of_eight_slots_never_exceed_a_cap(db: TestDb) {
    db.store
        .set_tenant_max_running("three", Some(3))
        .await
        .expect("cap");
    db.store
        .set_tenant_max_running("five", Some(5))
        .await
        .expect("cap");
    // Above the default cap, more than 32 slots can run.
    db.store
        .set_tenant_max_running("free", Some(1000))
        .await
        .expect("cap");
    let client = JobClient::new(db.store.clone(), test_catalogue());
    let mut requests = Vec::new();
    for tenant in ["three", "five", "default", "free"] {
        for _ in 0..40 {
            requests.push(EnqueueRequest::new(tenant, RECORD, json!({"ms": 15})));
        }
    }
    let requests_tenants: Vec<String> = requests.iter().map(|r| r.tenant_id.clone()).collect();
    let enqueued = client.enqueue_many(requests).await.expect("enqueue");

    let journal = Journal::default();
    let mut stops = Vec::new();
    for _ in 0..POOLS {
        let store = db.reconnect().await;
        let mut config = pool_config(SLOTS);
        // Tenants without a cap of their own get 4.
        config.default_max_running_per_tenant = Some(4);
        // A lease long enough that a machine loaded by the rest of the suite
        // cannot starve a heartbeat into a rescue (which reruns a job, as it
        // should, and would fail "no job ran twice" below for no cap's fault).
        config.lease = Duration::from_secs(15);
        let stop = CancellationToken::new();
        tokio::spawn(WorkerPool::new(store, test_registry(&journal), config).run(stop.clone()));
        stops.push(stop);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let succeeded = count_of(&db, JobState::Succeeded).await;
        if succeeded == enqueued.len() as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{succeeded} of {} jobs ran in 60 s",
            enqueued.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for stop in stops {
        stop.cancel();
    }

    for (tenant, cap) in [("three", 3), ("five", 5), ("default", 4)] {
        let most = journal.max_running_of(tenant);
        assert!(most <= cap, "{tenant} ran {most} jobs at once, cap {cap}");
        assert!(
            most >= 2,
            "{tenant} never ran two jobs at once: the pools did not compete"
        );
    }
    assert!(
        journal.max_running_of("free") > 4,
        "a raised cap lets a tenant use more slots"
    );
    let runs = journal.runs_per_job();
    assert_eq!(runs.len(), enqueued.len(), "every job ran");
    assert!(runs.values().all(|n| *n == 1), "no job ran twice");
    // No job waited for a rescue: a claim that lost jobs it had committed
    // (a failed second claim round, a deadlock between claims and finishes
    // on the counter rows) left them running unrun until their lease expired.
    for (request, enqueued) in requests_tenants.iter().zip(&enqueued) {
        let job = db.store.get_job(request, enqueued.id).await.expect("job");
        assert_eq!(job.attempt, 1, "job {} of {request} was rescued", job.id);
    }
}

async fn count_of(db: &TestDb, wanted: JobState) -> i64 {
    db.store
        .count_by_state()
        .await
        .expect("counts")
        .into_iter()
        .find(|(state, _)| *state == wanted)
        .map_or(0, |(_, n)| n)
}

fn claim_of(limit: usize) -> ClaimRequest {
    ClaimRequest {
        queues: vec!["default".into()],
        limit,
        worker_id: "caps".into(),
        lease: Duration::from_secs(30),
    }
}

/// Workers configured with different default caps: one claims for a tenant
/// under a default cap of 5 (so its counter counts), another with no default
/// cap (so its claims are not counted). The rescuer's pass then recounts, and
/// the capped claims that follow respect the cap against the real count.
async fn a_drifted_running_counter_is_repaired_by_the_rescuer(db: TestDb) {
    let client = JobClient::new(db.store.clone(), test_catalogue());
    let requests = (0..20)
        .map(|_| EnqueueRequest::new("a", RECORD, json!({})))
        .collect();
    client.enqueue_many(requests).await.expect("enqueue");

    let capped = |limit| {
        let store = db.store.clone();
        async move { store.claim(&claim_of(limit), Some(5)).await }
    };
    assert_eq!(capped(1).await.expect("claim").len(), 1);
    let uncounted = db.store.claim(&claim_of(3), None).await.expect("claim");
    assert_eq!(uncounted.len(), 3, "no cap: the claim takes what it asks");

    // The rescuer's pass (no lease has expired: it only repairs counters).
    assert!(db
        .store
        .rescue_expired(100)
        .await
        .expect("rescue")
        .is_empty());
    let more = capped(10).await.expect("claim");
    assert_eq!(
        more.len(),
        1,
        "4 jobs run, so a cap of 5 leaves one slot (a stale counter would give 4)"
    );
    assert_eq!(count_of(&db, JobState::Running).await, 5);
    assert!(capped(10).await.expect("claim").is_empty());

    // Slots come back as attempts finish, through every way out of running.
    let lease = |i: usize| uncounted[i].lease();
    db.store
        .finish(more[0].lease(), &Finish::Succeeded { result: json!({}) })
        .await
        .expect("succeeded");
    db.store
        .finish(lease(0), &Finish::Cancelled)
        .await
        .expect("cancelled");
    db.store
        .finish(lease(1), &Finish::Released)
        .await
        .expect("released");
    assert_eq!(count_of(&db, JobState::Running).await, 2);
    assert_eq!(
        capped(10).await.expect("claim").len(),
        3,
        "three slots came back"
    );
    assert!(capped(10).await.expect("claim").is_empty());
}

both_stores!(
    four_pools_of_eight_slots_never_exceed_a_cap,
    a_drifted_running_counter_is_repaired_by_the_rescuer,
);
