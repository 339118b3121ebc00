//! A large backlog must not slow claims down (PostgreSQL): once `ANALYZE`
//! has seen a queue full of one tenant's jobs, the claim must still read its
//! candidates in order from the claim index and stop at its limit, instead
//! of reading the whole backlog and sorting it.

use longhaul_core::client::{EnqueueRequest, JobClient};
use longhaul_core::store::PgStore;
use serde_json::json;

use crate::harness;
use crate::support::{test_catalogue, RECORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_read_the_claim_index_in_order_whatever_the_backlog() {
    let db = harness::postgres().await;
    let client = JobClient::new(db.store.clone(), test_catalogue());
    for _ in 0..4 {
        let batch: Vec<_> = (0..5_000)
            .map(|_| EnqueueRequest::new("big", RECORD, json!({})))
            .collect();
        client.enqueue_many(batch).await.expect("backlog");
    }
    let store = PgStore::connect(&db.url, 2).await.expect("store");
    sqlx::query("ANALYZE jobs")
        .execute(store.pool())
        .await
        .expect("analyze");

    let plan = store
        .explain_claim(&["default".to_string()], 24)
        .await
        .expect("plan");
    assert!(
        plan.contains("Index Scan using jobs_claim_idx"),
        "the candidates come from the claim index:\n{plan}"
    );
    assert!(
        !plan.contains("jobs_queued_tenant_idx") && !plan.contains("Bitmap Heap Scan on jobs"),
        "no read of the whole backlog:\n{plan}"
    );
    // Every read of the claim index (the candidates: two stretches per queue;
    // the next claim's floor) stops at the claim's limit, not at 20,000.
    let reads: Vec<f64> = plan
        .lines()
        .filter(|l| l.contains("Index Scan using jobs_claim_idx"))
        .map(rows_read)
        .collect();
    assert!(reads.len() >= 2, "candidates and heads:\n{plan}");
    assert!(
        reads.iter().all(|&rows| rows <= 24.0),
        "the claim index is read up to the limit only: {reads:?}\n{plan}"
    );
    assert!(
        reads.contains(&24.0),
        "the candidates fill the claim: {reads:?}\n{plan}"
    );
}

/// `rows × loops` of an `EXPLAIN ANALYZE` node line.
fn rows_read(line: &str) -> f64 {
    let field = |name: &str| -> f64 {
        let start = line.find(name).expect("an analysed node") + name.len();
        line[start..]
            .split([' ', ')'])
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    field("rows=") * field("loops=")
}
