//! The store conformance suite: the behaviour of the `JobStore` contract, run
//! against both backends (`<test>::postgres` and `<test>::sqlite`). Jobs are
//! enqueued through `JobClient` (the only way anything is written in
//! production); worker operations call the store directly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use longhaul_core::client::{EnqueueRequest, MAX_PARAMS_BYTES};
use longhaul_core::failure::FailureCode;
use longhaul_core::job::{AttemptOutcome, ClaimRequest, Finish, Lease, Progress};
use longhaul_core::store::{Rescued, Wake, WakeReceiver};
use longhaul_core::JobKind;
use longhaul_core::{Error, Job, JobClient, JobId, JobState, KindSpec};
use longhaul_worker::jobs::{noop::Noop, sleep::Sleep};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::harness::TestDb;

// ---- shared helpers ----------------------------------------------------------

const TENANT: &str = "acme";
const OTHER: &str = "globex";
const WORKER: &str = "worker-1";
const LEASE: Duration = Duration::from_secs(30);

/// Asserts that a result is an error matching a pattern (errors have no `PartialEq`).
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!("expected Err({}), got {:?}", stringify!($pattern), other),
        }
    };
}

fn client(db: &TestDb) -> JobClient {
    client_with(db, [])
}

/// The built-in catalogue plus extra kinds.
fn client_with(db: &TestDb, kinds: impl IntoIterator<Item = KindSpec>) -> JobClient {
    let mut catalogue = longhaul_worker::jobs::catalogue();
    for kind in kinds {
        catalogue.register(kind);
    }
    JobClient::new(db.store.clone(), Arc::new(catalogue))
}

fn noop(tenant: &str) -> EnqueueRequest {
    EnqueueRequest::new(tenant, Noop::NAME, json!({}))
}

fn sleep_job(tenant: &str, duration_ms: u64) -> EnqueueRequest {
    EnqueueRequest::new(
        tenant,
        Sleep::NAME,
        json!({"durationMs": duration_ms, "steps": 2}),
    )
}

fn with_max_attempts(max_attempts: i32, request: EnqueueRequest) -> EnqueueRequest {
    EnqueueRequest {
        max_attempts: Some(max_attempts),
        ..request
    }
}

fn on_queue(queue: &str, request: EnqueueRequest) -> EnqueueRequest {
    EnqueueRequest {
        queue: Some(queue.to_string()),
        ..request
    }
}

/// Enqueues one request that must create a new job.
async fn enqueue(client: &JobClient, request: EnqueueRequest) -> JobId {
    let answer = client.enqueue(request).await.expect("enqueue");
    assert!(
        answer.created,
        "a request without a matching idempotency key creates a job"
    );
    answer.id
}

/// Enqueues `n` `system.noop` jobs for a tenant in one batch.
async fn enqueue_noop(client: &JobClient, tenant: &str, n: usize) -> Vec<JobId> {
    let answers = client
        .enqueue_many((0..n).map(|_| noop(tenant)).collect())
        .await
        .expect("enqueue_many");
    assert_eq!(answers.len(), n);
    answers
        .into_iter()
        .map(|answer| {
            assert!(answer.created);
            answer.id
        })
        .collect()
}

fn claim_request(limit: usize) -> ClaimRequest {
    claim_request_on(&["default"], limit)
}

fn claim_request_on(queues: &[&str], limit: usize) -> ClaimRequest {
    ClaimRequest {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        limit,
        worker_id: WORKER.to_string(),
        lease: LEASE,
    }
}

fn short_lease(request: ClaimRequest) -> ClaimRequest {
    ClaimRequest {
        lease: Duration::from_secs(1),
        ..request
    }
}

/// Claims from the `default` queue with no default running cap.
async fn claim(db: &TestDb, limit: usize) -> Vec<Job> {
    db.store
        .claim(&claim_request(limit), None)
        .await
        .expect("claim")
}

/// Claims with `request` and asserts that exactly the job `id` was claimed.
async fn claim_exactly(db: &TestDb, request: &ClaimRequest, id: JobId) -> Job {
    let claimed = db.store.claim(request, None).await.expect("claim");
    assert_eq!(ids(&claimed), vec![id], "expected to claim exactly {id}");
    claimed.into_iter().next().expect("one job")
}

/// Enqueues a job on the `default` queue (when it is the only due one) and claims it.
async fn enqueue_and_claim(db: &TestDb, client: &JobClient, request: EnqueueRequest) -> Job {
    let id = enqueue(client, request).await;
    claim_exactly(db, &claim_request(1), id).await
}

/// Claims from `default` and completes what it got (as a fast worker would).
async fn claim_and_complete(db: &TestDb, limit: usize) -> Vec<Job> {
    let jobs = claim(db, limit).await;
    let completed: Vec<(Lease, Value)> = jobs.iter().map(|job| (job.lease(), json!({}))).collect();
    let applied = db
        .store
        .complete_many(&completed)
        .await
        .expect("complete_many");
    assert_eq!(sorted(applied), ids(&jobs));
    jobs
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    sorted(jobs.iter().map(|job| job.id).collect())
}

fn sorted(mut ids: Vec<JobId>) -> Vec<JobId> {
    ids.sort();
    ids
}

async fn get(db: &TestDb, tenant: &str, id: JobId) -> Job {
    db.store.get_job(tenant, id).await.expect("get_job")
}

async fn event_kinds(db: &TestDb, tenant: &str, id: JobId) -> Vec<String> {
    let events = db
        .store
        .job_events(tenant, id, 0, 1000)
        .await
        .expect("job_events");
    events.into_iter().map(|event| event.kind).collect()
}

async fn attempt_outcomes(db: &TestDb, tenant: &str, id: JobId) -> Vec<(i32, AttemptOutcome)> {
    let attempts = db
        .store
        .job_attempts(tenant, id)
        .await
        .expect("job_attempts");
    attempts
        .into_iter()
        .map(|a| (a.attempt, a.outcome))
        .collect()
}

/// Non-zero counts per state, sorted by state name.
async fn counts(db: &TestDb) -> Vec<(JobState, i64)> {
    let mut counts: Vec<(JobState, i64)> = db
        .store
        .count_by_state()
        .await
        .expect("count_by_state")
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect();
    counts.sort_by_key(|(state, _)| state.as_str());
    counts
}

async fn running_by_tenant(db: &TestDb) -> Vec<(String, i64)> {
    let mut running: Vec<(String, i64)> = db
        .store
        .running_by_tenant()
        .await
        .expect("running_by_tenant")
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect();
    running.sort();
    running
}

/// A time `ms` from now, rounded to the millisecond (stores keep at least that).
fn millis_from_now(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis() + ms).expect("valid time")
}

fn failed(error: &str, retry_at: DateTime<Utc>, permanent: bool) -> Finish {
    Finish::Failed {
        error: error.to_string(),
        public: longhaul_core::failure::PublicError::job_failed(error),
        retry_at,
        permanent,
    }
}

async fn succeed(db: &TestDb, lease: Lease) {
    db.store
        .finish(
            lease,
            &Finish::Succeeded {
                result: json!({"ok": true}),
            },
        )
        .await
        .expect("finish succeeded");
}

async fn finish_expect_lost(db: &TestDb, lease: Lease, finish: &Finish) {
    assert_err!(
        db.store.finish(lease, finish).await,
        Error::LeaseLost { job_id, attempt } if job_id == lease.job_id && attempt == lease.attempt
    );
}

/// Every worker write with a lease that is no longer current is refused and
/// changes nothing (row, events, attempts).
async fn assert_fenced(db: &TestDb, tenant: &str, stale: Lease) {
    let before = get(db, tenant, stale.job_id).await;
    let events_before = event_kinds(db, tenant, stale.job_id).await;
    let attempts_before = attempt_outcomes(db, tenant, stale.job_id).await;
    assert!(
        before.state != JobState::Running || before.attempt != stale.attempt,
        "the lease under test must be stale"
    );

    let progress = Progress {
        current: 99,
        total: Some(100),
        unit: None,
        message: Some("stale".into()),
    };
    assert_err!(
        db.store.set_progress(stale, &progress).await,
        Error::LeaseLost { job_id, attempt } if job_id == stale.job_id && attempt == stale.attempt
    );
    assert_err!(
        db.store.save_checkpoint(stale, &json!({"stale": true})).await,
        Error::LeaseLost { job_id, attempt } if job_id == stale.job_id && attempt == stale.attempt
    );
    for finish in [
        Finish::Succeeded {
            result: json!({"stale": true}),
        },
        failed("stale", millis_from_now(0), false),
        failed("stale", millis_from_now(0), true),
        Finish::Cancelled,
        Finish::Released,
    ] {
        finish_expect_lost(db, stale, &finish).await;
    }
    let applied = db
        .store
        .complete_many(&[(stale, json!({"stale": true}))])
        .await
        .expect("complete_many");
    assert!(
        applied.is_empty(),
        "a stale completion was applied: {applied:?}"
    );
    let beats = db
        .store
        .heartbeat(&[stale], LEASE)
        .await
        .expect("heartbeat");
    assert!(beats.is_empty(), "a stale lease was extended: {beats:?}");

    assert_eq!(
        get(db, tenant, stale.job_id).await,
        before,
        "a stale write changed the job"
    );
    assert_eq!(event_kinds(db, tenant, stale.job_id).await, events_before);
    assert_eq!(
        attempt_outcomes(db, tenant, stale.job_id).await,
        attempts_before
    );
}

/// Waits up to 2 s for a specific wake-up, skipping unrelated ones (PostgreSQL
/// notifications are database-wide, so other tests' wake-ups arrive too).
async fn wait_for_wake(receiver: &mut WakeReceiver, wanted: &Wake) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => return false,
            Ok(Ok(wake)) if &wake == wanted => return true,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => continue,
        }
    }
}

both_stores!(
    enqueue_one_stores_defaults,
    enqueue_honours_explicit_fields,
    enqueue_batch_answers_in_order,
    tenants_cannot_see_or_touch_each_others_jobs,
    unknown_kind_is_refused,
    params_over_64_kib_are_refused,
    invalid_requests_are_refused,
    invalid_batch_writes_nothing,
    nul_character_in_params_is_stored_or_refused,
    nul_character_in_error_still_ends_the_attempt,
    nul_character_in_result_still_completes_the_batch,
    idempotency_key_returns_the_existing_job,
    idempotency_key_repeated_within_a_batch,
    idempotency_key_with_other_params_conflicts,
    idempotency_keys_are_per_tenant,
    claim_marks_jobs_running,
    claim_respects_limit,
    claim_respects_queues,
    claim_skips_jobs_not_yet_due,
    claim_takes_urgent_priorities_first,
    urgent_job_enqueued_behind_a_claim_is_taken_first,
    capped_tenants_jobs_left_behind_a_claim_are_still_claimed,
    claimed_job_is_not_claimed_again,
    claim_with_a_queue_named_twice,
    claim_with_a_huge_limit,
    concurrent_claims_never_share_a_job,
    claim_is_fair_across_tenants,
    idle_tenant_banks_no_credit,
    tenant_running_cap_limits_claims,
    running_cap_holds_under_concurrent_claims,
    default_running_cap_and_clearing_a_cap,
    heartbeat_extends_leases_and_reports_cancel,
    progress_and_checkpoint_are_stored,
    events_page_by_id,
    finish_succeeded,
    finish_failed_with_attempts_left_schedules_retry,
    failures_keep_the_raw_error_and_show_a_public_one,
    success_completes_a_progress_with_a_total,
    finish_failed_on_last_attempt_fails,
    finish_failed_permanent_fails_at_once,
    finish_cancelled,
    finish_released_does_not_count,
    stale_lease_is_fenced_after_rescue,
    stale_lease_is_fenced_after_release,
    complete_many_applies_only_current_leases,
    cancel_queued_job,
    cancel_running_job_requests_cancel,
    cancel_finished_job_conflicts,
    manual_retry_requeues,
    manual_retry_of_unfinished_or_succeeded_job_conflicts,
    rescue_expired_requeues_expired_leases,
    rescue_expired_fails_when_attempts_are_spent,
    prune_finished_removes_only_old_finished_jobs,
    subscribe_wakes_on_enqueue_and_cancel,
    counts_are_exact,
);

// ---- enqueue -------------------------------------------------------------------

async fn enqueue_one_stores_defaults(db: TestDb) {
    let client = client_with(
        &db,
        [KindSpec::new("test.media").queue("media").max_attempts(2)],
    );
    let before = Utc::now();
    let answer = client.enqueue(noop(TENANT)).await.expect("enqueue");
    assert!(answer.created);

    let job = get(&db, TENANT, answer.id).await;
    assert_eq!(job.id, answer.id);
    assert_eq!(job.tenant_id, TENANT);
    assert_eq!(job.kind, Noop::NAME);
    assert_eq!(job.queue, "default", "the queue comes from the kind");
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.priority, 5);
    assert_eq!(job.params, json!({}));
    assert_eq!(job.max_attempts, 5, "max_attempts comes from the kind");
    assert_eq!((job.attempt, job.failed_attempts), (0, 0));
    assert_eq!(job.lease_expires_at, None);
    assert_eq!(job.worker_id, None);
    assert!(!job.cancel_requested);
    assert_eq!(
        (job.progress, job.checkpoint, job.result),
        (None, None, None)
    );
    assert_eq!(job.last_error, None);
    assert_eq!(job.idempotency_key, None);
    assert_eq!((job.started_at, job.finished_at), (None, None));
    let slack = chrono::Duration::seconds(2);
    assert!(job.created_at >= before - slack && job.created_at <= Utc::now() + slack);
    assert!(
        job.run_at <= Utc::now() && job.run_at >= before - slack,
        "run_at defaults to now"
    );

    let media = enqueue(
        &client,
        EnqueueRequest::new(TENANT, "test.media", json!({"file": "a.mp4"})),
    )
    .await;
    let media = get(&db, TENANT, media).await;
    assert_eq!(
        (media.queue.as_str(), media.max_attempts, media.priority),
        ("media", 2, 5)
    );
    assert_eq!(media.params, json!({"file": "a.mp4"}));
    assert_eq!(counts(&db).await, vec![(JobState::Queued, 2)]);
}

async fn enqueue_honours_explicit_fields(db: TestDb) {
    let client = client(&db);
    let run_at = millis_from_now(3_600_000);
    let request = EnqueueRequest {
        queue: Some("reports".into()),
        priority: Some(2),
        run_at: Some(run_at),
        max_attempts: Some(7),
        idempotency_key: Some("order-17".into()),
        ..sleep_job(TENANT, 1500)
    };
    let id = enqueue(&client, request).await;
    let job = get(&db, TENANT, id).await;
    assert_eq!(job.kind, Sleep::NAME);
    assert_eq!(job.queue, "reports");
    assert_eq!(job.priority, 2);
    assert_eq!(job.run_at.timestamp_millis(), run_at.timestamp_millis());
    assert_eq!(job.max_attempts, 7);
    assert_eq!(job.idempotency_key.as_deref(), Some("order-17"));
    assert_eq!(job.params, json!({"durationMs": 1500, "steps": 2}));
    assert_eq!(job.state, JobState::Queued);
}

async fn enqueue_batch_answers_in_order(db: TestDb) {
    let client = client(&db);
    assert!(client
        .enqueue_many(vec![])
        .await
        .expect("empty batch")
        .is_empty());

    let requests: Vec<EnqueueRequest> = (0..6u64)
        .map(|i| sleep_job(if i % 2 == 0 { TENANT } else { OTHER }, 100 + i))
        .collect();
    let answers = client
        .enqueue_many(requests.clone())
        .await
        .expect("enqueue_many");
    assert_eq!(answers.len(), 6);
    let distinct: HashSet<JobId> = answers.iter().map(|a| a.id).collect();
    assert_eq!(distinct.len(), 6, "each job gets its own id");
    for (answer, request) in answers.iter().zip(&requests) {
        assert!(answer.created);
        let job = get(&db, &request.tenant_id, answer.id).await;
        assert_eq!(job.tenant_id, request.tenant_id);
        assert_eq!(job.params, request.params, "answers are in request order");
    }
    assert_eq!(counts(&db).await, vec![(JobState::Queued, 6)]);
}

async fn tenants_cannot_see_or_touch_each_others_jobs(db: TestDb) {
    let client = client(&db);
    let dead = enqueue_and_claim(&db, &client, with_max_attempts(1, noop(TENANT))).await;
    db.store
        .finish(dead.lease(), &failed("boom", millis_from_now(0), false))
        .await
        .expect("fail");
    let queued = enqueue(&client, noop(TENANT)).await;
    let queued_before = get(&db, TENANT, queued).await;
    let dead_before = get(&db, TENANT, dead.id).await;
    assert_eq!(dead_before.state, JobState::Failed);

    for id in [queued, dead.id] {
        assert_err!(db.store.get_job(OTHER, id).await, Error::NotFound(got) if got == id);
        assert_err!(db.store.cancel(OTHER, id).await, Error::NotFound(got) if got == id);
        assert_err!(db.store.retry(OTHER, id).await, Error::NotFound(got) if got == id);
        assert_err!(db.store.job_events(OTHER, id, 0, 100).await, Error::NotFound(got) if got == id);
        assert_err!(db.store.job_attempts(OTHER, id).await, Error::NotFound(got) if got == id);
    }
    assert_eq!(get(&db, TENANT, queued).await, queued_before);
    assert_eq!(get(&db, TENANT, dead.id).await, dead_before);
    assert_eq!(event_kinds(&db, TENANT, queued).await, Vec::<String>::new());
    assert_eq!(
        event_kinds(&db, TENANT, dead.id).await,
        ["started", "failed"]
    );

    let unknown = JobId::new();
    assert_err!(db.store.get_job(TENANT, unknown).await, Error::NotFound(got) if got == unknown);
    assert_err!(db.store.cancel(TENANT, unknown).await, Error::NotFound(got) if got == unknown);
    assert_err!(db.store.retry(TENANT, unknown).await, Error::NotFound(got) if got == unknown);

    // Counts per state: one tenant's, or the whole store's.
    assert_eq!(tenant_counts(&db, OTHER).await, vec![]);
    enqueue(&client, noop(OTHER)).await;
    assert_eq!(
        tenant_counts(&db, TENANT).await,
        [(JobState::Failed, 1), (JobState::Queued, 1)]
    );
    assert_eq!(tenant_counts(&db, OTHER).await, [(JobState::Queued, 1)]);
    assert_eq!(
        counts(&db).await,
        [(JobState::Failed, 1), (JobState::Queued, 2)]
    );
}

/// One tenant's non-zero counts per state, sorted by state name.
async fn tenant_counts(db: &TestDb, tenant: &str) -> Vec<(JobState, i64)> {
    let mut counts: Vec<(JobState, i64)> = db
        .store
        .count_by_state_of(tenant)
        .await
        .expect("count_by_state_of")
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect();
    counts.sort_by_key(|(state, _)| state.as_str());
    counts
}

// ---- validation ----------------------------------------------------------------

async fn unknown_kind_is_refused(db: TestDb) {
    let client = client(&db);
    let request = EnqueueRequest::new(TENANT, "system.nope", json!({}));
    assert_err!(client.enqueue(request).await, Error::UnknownKind(kind) if kind == "system.nope");
    assert_eq!(counts(&db).await, vec![]);
}

async fn params_over_64_kib_are_refused(db: TestDb) {
    let client = client_with(&db, [KindSpec::new("test.blob")]);
    let blob = |size: usize| {
        // `{"data":"…"}` is 11 bytes plus the string.
        let params = json!({"data": "x".repeat(size - 11)});
        assert_eq!(serde_json::to_vec(&params).expect("serializes").len(), size);
        EnqueueRequest::new(TENANT, "test.blob", params)
    };
    assert_err!(
        client.enqueue(blob(MAX_PARAMS_BYTES + 1)).await,
        Error::PayloadTooLarge { size, limit } if size == MAX_PARAMS_BYTES + 1 && limit == 64 * 1024
    );
    assert_eq!(counts(&db).await, vec![]);

    let request = blob(MAX_PARAMS_BYTES);
    let id = enqueue(&client, request.clone()).await;
    assert_eq!(
        get(&db, TENANT, id).await.params,
        request.params,
        "64 KiB exactly is accepted intact"
    );
}

async fn invalid_requests_are_refused(db: TestDb) {
    let client = client(&db);
    let long_key = "k".repeat(256);
    let cases: Vec<(EnqueueRequest, &str)> = vec![
        (
            EnqueueRequest {
                priority: Some(10),
                ..noop(TENANT)
            },
            "priority",
        ),
        (
            EnqueueRequest {
                priority: Some(-1),
                ..noop(TENANT)
            },
            "priority",
        ),
        (with_max_attempts(0, noop(TENANT)), "maxAttempts"),
        (with_max_attempts(101, noop(TENANT)), "maxAttempts"),
        (noop(""), "tenant_id"),
        (noop("acme corp"), "tenant_id"),
        (noop(&"t".repeat(65)), "tenant_id"),
        (on_queue("Bad Queue", noop(TENANT)), "queue"),
        (on_queue("", noop(TENANT)), "queue"),
        (
            EnqueueRequest::new(TENANT, Sleep::NAME, json!({"durationMs": -1})),
            "params",
        ),
        (
            EnqueueRequest::new(TENANT, Sleep::NAME, json!({"durationMs": 100, "steps": 0})),
            "params",
        ),
        (
            EnqueueRequest::new(TENANT, Sleep::NAME, json!({"durationMs": 90_000_000u64})),
            "params",
        ),
        (
            EnqueueRequest::new(TENANT, Sleep::NAME, json!({"duration": 100})),
            "params",
        ),
        (
            EnqueueRequest::new(TENANT, Noop::NAME, json!({"x": 1})),
            "params",
        ),
        (
            EnqueueRequest {
                idempotency_key: Some(String::new()),
                ..noop(TENANT)
            },
            "idempotencyKey",
        ),
        (
            EnqueueRequest {
                idempotency_key: Some(long_key),
                ..noop(TENANT)
            },
            "idempotencyKey",
        ),
        (
            EnqueueRequest {
                idempotency_key: Some("a\nb".into()),
                ..noop(TENANT)
            },
            "idempotencyKey",
        ),
    ];
    for (request, expected) in cases {
        let described = format!("{request:?}");
        match client.enqueue(request).await {
            Err(Error::Validation { field, .. }) => assert_eq!(field, expected, "for {described}"),
            other => {
                panic!("expected a validation error on {expected} for {described}, got {other:?}")
            }
        }
    }
    assert_eq!(counts(&db).await, vec![], "nothing invalid was written");

    // The edges of each range are accepted.
    let edges = vec![
        EnqueueRequest {
            priority: Some(0),
            ..noop(TENANT)
        },
        EnqueueRequest {
            priority: Some(9),
            ..noop(TENANT)
        },
        with_max_attempts(1, noop(TENANT)),
        with_max_attempts(100, noop(TENANT)),
        noop(&"t".repeat(64)),
        on_queue("a.b-c_1", noop(TENANT)),
    ];
    assert_eq!(
        client.enqueue_many(edges).await.expect("edge values").len(),
        6
    );
    assert_eq!(counts(&db).await, vec![(JobState::Queued, 6)]);
}

/// JSON allows U+0000 in strings. Params holding one are either stored intact
/// or refused as invalid, never a database error.
async fn nul_character_in_params_is_stored_or_refused(db: TestDb) {
    let client = client_with(&db, [KindSpec::new("test.blob")]);
    let params = json!({"text": "a\u{0}b"});
    match client
        .enqueue(EnqueueRequest::new(TENANT, "test.blob", params.clone()))
        .await
    {
        Ok(answer) => assert_eq!(get(&db, TENANT, answer.id).await.params, params),
        Err(Error::Validation { field, .. }) => {
            assert_eq!(field, "params");
            assert_eq!(counts(&db).await, vec![]);
        }
        Err(other) => {
            panic!("params with a NUL character: expected Ok or a validation error, got {other:?}")
        }
    }
}

/// A handler's error text may hold U+0000 (say, from a subprocess): the attempt
/// must still end, or the job would sit running until its lease expired and
/// the lost lease would count against it.
async fn nul_character_in_error_still_ends_the_attempt(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    let finish = failed(
        "exit status 1: \u{0}garbage",
        millis_from_now(60_000),
        false,
    );
    db.store
        .finish(job.lease(), &finish)
        .await
        .expect("finish with a NUL in the error");
    let job = get(&db, TENANT, job.id).await;
    assert_eq!((job.state, job.failed_attempts), (JobState::Queued, 1));
    assert!(job
        .last_error
        .is_some_and(|e| e.starts_with("exit status 1: ")));
}

/// Likewise a result holding U+0000 must not keep the other completions of
/// the same batch from being applied.
async fn nul_character_in_result_still_completes_the_batch(db: TestDb) {
    let client = client(&db);
    enqueue_noop(&client, TENANT, 2).await;
    let claimed = claim(&db, 2).await;
    assert_eq!(claimed.len(), 2);
    let batch = [
        (claimed[0].lease(), json!({"ok": true})),
        (claimed[1].lease(), json!({"stdout": "a\u{0}b"})),
    ];
    let applied = db
        .store
        .complete_many(&batch)
        .await
        .expect("complete with a NUL in one result");
    assert_eq!(sorted(applied), ids(&claimed));
    assert_eq!(counts(&db).await, vec![(JobState::Succeeded, 2)]);
}

async fn invalid_batch_writes_nothing(db: TestDb) {
    let client = client_with(&db, [KindSpec::new("test.blob")]);
    let big = EnqueueRequest::new(
        TENANT,
        "test.blob",
        json!({"data": "x".repeat(MAX_PARAMS_BYTES)}),
    );
    let cases: Vec<(Vec<EnqueueRequest>, &str)> = vec![
        (
            vec![
                noop(TENANT),
                EnqueueRequest {
                    priority: Some(12),
                    ..noop(TENANT)
                },
                noop(TENANT),
            ],
            "jobs[1].priority",
        ),
        (
            vec![
                noop(TENANT),
                noop(OTHER),
                EnqueueRequest::new(TENANT, "system.nope", json!({})),
            ],
            "jobs[2].kind",
        ),
        (vec![noop(TENANT), big], "jobs[1].params"),
        (vec![noop("bad tenant")], "jobs[0].tenant_id"),
    ];
    for (batch, expected) in cases {
        match client.enqueue_many(batch).await {
            Err(Error::Validation { field, .. }) => assert_eq!(field, expected),
            other => panic!("expected a validation error on {expected}, got {other:?}"),
        }
    }
    assert_eq!(counts(&db).await, vec![], "an invalid batch writes nothing");
}

// ---- idempotency ---------------------------------------------------------------

fn keyed(key: &str, request: EnqueueRequest) -> EnqueueRequest {
    EnqueueRequest {
        idempotency_key: Some(key.to_string()),
        ..request
    }
}

async fn idempotency_key_returns_the_existing_job(db: TestDb) {
    let client = client(&db);
    let first = client
        .enqueue(keyed("k1", sleep_job(TENANT, 10)))
        .await
        .expect("first");
    let second = client
        .enqueue(keyed("k1", sleep_job(TENANT, 10)))
        .await
        .expect("second");
    assert!(first.created);
    assert!(!second.created, "the second enqueue found the first job");
    assert_eq!(second.id, first.id);
    assert_eq!(counts(&db).await, vec![(JobState::Queued, 1)]);

    // Still the same job once it has run.
    let job = claim_exactly(&db, &claim_request(5), first.id).await;
    succeed(&db, job.lease()).await;
    let third = client
        .enqueue(keyed("k1", sleep_job(TENANT, 10)))
        .await
        .expect("third");
    assert_eq!((third.id, third.created), (first.id, false));
    assert_eq!(counts(&db).await, vec![(JobState::Succeeded, 1)]);
}

async fn idempotency_key_repeated_within_a_batch(db: TestDb) {
    let client = client(&db);
    let answers = client
        .enqueue_many(vec![
            keyed("same", noop(TENANT)),
            noop(TENANT),
            keyed("same", noop(TENANT)),
        ])
        .await
        .expect("enqueue_many");
    assert_eq!(answers.len(), 3);
    assert_eq!(
        (answers[0].created, answers[1].created, answers[2].created),
        (true, true, false)
    );
    assert_eq!(answers[2].id, answers[0].id);
    assert_ne!(answers[1].id, answers[0].id);
    assert_eq!(counts(&db).await, vec![(JobState::Queued, 2)]);
}

async fn idempotency_key_with_other_params_conflicts(db: TestDb) {
    let client = client(&db);
    let original = enqueue(&client, keyed("k", sleep_job(TENANT, 10))).await;
    assert_err!(
        client.enqueue(keyed("k", sleep_job(TENANT, 20))).await,
        Error::Conflict(_)
    );
    assert_err!(
        client.enqueue(keyed("k", noop(TENANT))).await,
        Error::Conflict(_)
    );
    // The conflict aborts the whole batch: the new job in it is not stored either.
    assert_err!(
        client
            .enqueue_many(vec![
                keyed("fresh", noop(TENANT)),
                keyed("k", sleep_job(TENANT, 30))
            ])
            .await,
        Error::Conflict(_)
    );
    assert_eq!(counts(&db).await, vec![(JobState::Queued, 1)]);
    let job = get(&db, TENANT, original).await;
    assert_eq!(job.params, json!({"durationMs": 10, "steps": 2}));
    let fresh = client
        .enqueue(keyed("fresh", noop(TENANT)))
        .await
        .expect("fresh key");
    assert!(
        fresh.created,
        "the aborted batch left no job behind under its key"
    );
}

async fn idempotency_keys_are_per_tenant(db: TestDb) {
    let client = client(&db);
    let a = client
        .enqueue(keyed("k", noop(TENANT)))
        .await
        .expect("tenant a");
    let b = client
        .enqueue(keyed("k", noop(OTHER)))
        .await
        .expect("tenant b");
    assert!(a.created && b.created);
    assert_ne!(a.id, b.id);
    assert_eq!(get(&db, OTHER, b.id).await.tenant_id, OTHER);
    assert_eq!(counts(&db).await, vec![(JobState::Queued, 2)]);
}

// ---- claim ---------------------------------------------------------------------

async fn claim_marks_jobs_running(db: TestDb) {
    let client = client(&db);
    let enqueued = enqueue_noop(&client, TENANT, 3).await;
    let before = Utc::now();
    let claimed = claim(&db, 10).await;
    assert_eq!(ids(&claimed), sorted(enqueued));
    for job in &claimed {
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.attempt, 1);
        assert_eq!(job.failed_attempts, 0);
        assert_eq!(job.worker_id.as_deref(), Some(WORKER));
        let lease = job.lease_expires_at.expect("a claimed job has a lease");
        assert!(lease > Utc::now(), "the lease is in the future");
        assert!(
            lease <= Utc::now() + chrono::Duration::seconds(32),
            "the lease is about 30 s"
        );
        let started = job.started_at.expect("a claimed job has started_at");
        assert!(started >= before - chrono::Duration::seconds(2));
        assert_eq!(
            get(&db, TENANT, job.id).await,
            *job,
            "claim answers the stored row"
        );
        assert_eq!(event_kinds(&db, TENANT, job.id).await, ["started"]);
    }
    assert_eq!(counts(&db).await, vec![(JobState::Running, 3)]);
}

async fn claim_respects_limit(db: TestDb) {
    let client = client(&db);
    enqueue_noop(&client, TENANT, 5).await;
    assert!(claim(&db, 0).await.is_empty(), "limit 0 claims nothing");
    assert_eq!(claim(&db, 2).await.len(), 2);
    assert_eq!(claim(&db, 10).await.len(), 3);
    assert!(claim(&db, 10).await.is_empty());
    assert_eq!(counts(&db).await, vec![(JobState::Running, 5)]);
}

async fn claim_respects_queues(db: TestDb) {
    let client = client_with(&db, [KindSpec::new("test.media").queue("media")]);
    let default_jobs = enqueue_noop(&client, TENANT, 2).await;
    let media = enqueue(
        &client,
        EnqueueRequest::new(TENANT, "test.media", json!({})),
    )
    .await;
    let reports = enqueue(&client, on_queue("reports", noop(TENANT))).await;

    let claimed = db
        .store
        .claim(&claim_request_on(&["media"], 10), None)
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), vec![media]);
    let claimed = db
        .store
        .claim(&claim_request_on(&["other"], 10), None)
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "nothing is queued on 'other'");
    let claimed = db
        .store
        .claim(&claim_request_on(&[], 10), None)
        .await
        .expect("claim");
    assert!(claimed.is_empty(), "no queues, no jobs");
    let claimed = db
        .store
        .claim(&claim_request_on(&["default", "media"], 10), None)
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), sorted(default_jobs));
    assert_eq!(get(&db, TENANT, reports).await.state, JobState::Queued);
}

async fn claim_skips_jobs_not_yet_due(db: TestDb) {
    let client = client(&db);
    let request = EnqueueRequest {
        run_at: Some(Utc::now() + chrono::Duration::milliseconds(1000)),
        ..noop(TENANT)
    };
    let id = enqueue(&client, request).await;
    assert!(
        claim(&db, 10).await.is_empty(),
        "a job is not claimed before its run_at"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    claim_exactly(&db, &claim_request(10), id).await;
}

async fn claim_takes_urgent_priorities_first(db: TestDb) {
    let client = client(&db);
    let mut by_priority = Vec::new();
    for priority in [9, 5, 0] {
        let id = enqueue(
            &client,
            EnqueueRequest {
                priority: Some(priority),
                ..noop(TENANT)
            },
        )
        .await;
        by_priority.push((priority, id));
    }
    // One at a time, the most urgent first whatever the enqueue order.
    for (priority, id) in by_priority.into_iter().rev() {
        let job = claim_exactly(&db, &claim_request(1), id).await;
        assert_eq!(job.priority, priority);
    }
}

/// Claims start where the last one left off (PostgreSQL's claim floors): a
/// more urgent job enqueued afterwards is still the first one taken.
async fn urgent_job_enqueued_behind_a_claim_is_taken_first(db: TestDb) {
    let client = client(&db);
    enqueue_noop(&client, TENANT, 10).await;
    assert_eq!(claim(&db, 2).await.len(), 2);
    let urgent = enqueue(
        &client,
        EnqueueRequest {
            priority: Some(0),
            ..noop(OTHER)
        },
    )
    .await;
    let next = claim(&db, 1).await;
    assert_eq!(ids(&next), vec![urgent], "the urgent job comes first");
}

/// A capped tenant's queued jobs sit below where the claims of other tenants
/// have read on to: once its slot is free they are claimed all the same
/// (within the floor's full-scan period), each exactly once.
async fn capped_tenants_jobs_left_behind_a_claim_are_still_claimed(db: TestDb) {
    let client = client(&db);
    db.store
        .set_tenant_max_running("a", Some(1))
        .await
        .expect("set cap");
    let capped = enqueue_noop(&client, "a", 3).await;
    let first = claim(&db, 1).await;
    assert_eq!(ids(&first), vec![capped[0]]);
    // b's jobs start at the queue clock, behind a's two queued ones; claims
    // skip a (full) and read on past them.
    let others = enqueue_noop(&client, "b", 6).await;
    let mut claimed = claim(&db, 2).await;
    assert!(claimed.iter().all(|job| job.tenant_id == "b"));
    claimed.extend(first.clone());

    succeed(&db, first[0].lease()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while claimed.iter().filter(|job| job.tenant_id == "a").count() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's jobs were left unclaimed: {:?}",
            ids(&claimed)
        );
        let got = claim(&db, 1).await;
        for job in &got {
            if job.tenant_id == "a" {
                succeed(&db, job.lease()).await;
            }
        }
        claimed.extend(got);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut expected = capped;
    expected.extend(others.iter().take(claimed.len() - 3));
    let claimed_ids: Vec<JobId> = claimed.iter().map(|job| job.id).collect();
    assert_eq!(
        claimed_ids.iter().collect::<HashSet<_>>().len(),
        claimed_ids.len(),
        "no job claimed twice"
    );
    assert!(claimed_ids.iter().all(|id| expected.contains(id)));
}

async fn claimed_job_is_not_claimed_again(db: TestDb) {
    let client = client(&db);
    let enqueued = enqueue_noop(&client, TENANT, 4).await;
    let first = claim(&db, 2).await;
    let second = claim(&db, 10).await;
    assert_eq!((first.len(), second.len()), (2, 2));
    let mut all = ids(&first);
    all.extend(ids(&second));
    assert_eq!(
        sorted(all),
        sorted(enqueued),
        "every job claimed exactly once"
    );
    assert!(claim(&db, 10).await.is_empty());
    assert!(first.iter().chain(&second).all(|job| job.attempt == 1));
}

async fn claim_with_a_queue_named_twice(db: TestDb) {
    let client = client(&db);
    let enqueued = enqueue_noop(&client, TENANT, 4).await;
    let claimed = db
        .store
        .claim(&claim_request_on(&["default", "default"], 4), None)
        .await
        .expect("claim");
    assert_eq!(
        ids(&claimed),
        sorted(enqueued),
        "a repeated queue name must not shrink the claim"
    );
}

async fn claim_with_a_huge_limit(db: TestDb) {
    let client = client(&db);
    let enqueued = enqueue_noop(&client, TENANT, 3).await;
    let claimed = db
        .store
        .claim(&claim_request(usize::MAX), None)
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), sorted(enqueued));
}

async fn concurrent_claims_never_share_a_job(db: TestDb) {
    let client = client(&db);
    let enqueued = enqueue_noop(&client, TENANT, 40).await;
    // Two claimers on this pool and two on another (as if another process).
    let other_process = db.reconnect().await;
    let mut tasks = Vec::new();
    for n in 0..4 {
        let store = if n % 2 == 0 {
            db.store.clone()
        } else {
            other_process.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store
                    .claim(&claim_request(3), None)
                    .await
                    .expect("concurrent claim");
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(jobs.iter().map(|job| job.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("claimer task"));
    }
    assert_eq!(all.len(), 40, "each job claimed once");
    assert_eq!(sorted(all), sorted(enqueued));
}

async fn claim_is_fair_across_tenants(db: TestDb) {
    let client = client(&db);
    enqueue_noop(&client, "tenant-a", 300).await;
    // A is already being worked on when B arrives.
    for _ in 0..3 {
        let jobs = claim_and_complete(&db, 8).await;
        assert!(jobs.iter().all(|job| job.tenant_id == "tenant-a"));
    }
    let b_jobs: HashSet<JobId> = enqueue_noop(&client, "tenant-b", 10)
        .await
        .into_iter()
        .collect();
    let (mut a_claimed, mut b_claimed) = (0, 0);
    while b_claimed < 10 {
        let jobs = claim_and_complete(&db, 8).await;
        assert_eq!(jobs.len(), 8, "plenty of work is due");
        for job in &jobs {
            if job.tenant_id == "tenant-b" {
                assert!(b_jobs.contains(&job.id));
                b_claimed += 1;
            } else {
                assert_eq!(job.tenant_id, "tenant-a");
                a_claimed += 1;
            }
        }
        assert!(
            a_claimed <= 40,
            "tenant-b waited behind tenant-a's backlog: {a_claimed} of a's jobs claimed, only {b_claimed} of b's"
        );
    }
}

/// A tenant that was idle while others worked does not get to run all of its
/// new work ahead of them afterwards.
async fn idle_tenant_banks_no_credit(db: TestDb) {
    let client = client(&db);
    enqueue_noop(&client, "tenant-b", 1).await;
    enqueue_noop(&client, "tenant-a", 80).await;
    let mut drained = 0;
    while drained < 81 {
        let jobs = claim_and_complete(&db, 27).await;
        assert!(!jobs.is_empty());
        drained += jobs.len();
    }
    // B arrives first this time, A right after: they share the queue.
    enqueue_noop(&client, "tenant-b", 20).await;
    enqueue_noop(&client, "tenant-a", 20).await;
    let (mut a_claimed, mut b_claimed) = (0, 0);
    while b_claimed < 20 {
        let jobs = claim_and_complete(&db, 8).await;
        assert!(!jobs.is_empty());
        b_claimed += jobs
            .iter()
            .filter(|job| job.tenant_id == "tenant-b")
            .count();
        a_claimed += jobs
            .iter()
            .filter(|job| job.tenant_id == "tenant-a")
            .count();
    }
    assert!(
        a_claimed >= 10,
        "idle tenant-b ran ahead on banked credit: all 20 of its jobs claimed while tenant-a had {a_claimed}"
    );
}

// ---- running caps --------------------------------------------------------------

async fn tenant_running_cap_limits_claims(db: TestDb) {
    let client = client(&db);
    db.store
        .set_tenant_max_running("a", Some(2))
        .await
        .expect("set cap");
    enqueue_noop(&client, "a", 10).await;
    let first = claim(&db, 8).await;
    assert_eq!(first.len(), 2, "the cap holds within one claim");
    assert!(
        claim(&db, 8).await.is_empty(),
        "the cap holds across claims"
    );
    assert_eq!(running_by_tenant(&db).await, vec![("a".to_string(), 2)]);

    succeed(&db, first[0].lease()).await;
    assert_eq!(
        claim(&db, 8).await.len(),
        1,
        "a finished job frees one slot"
    );
    assert!(claim(&db, 8).await.is_empty());

    // Other tenants are not held back by a's cap.
    enqueue_noop(&client, "b", 3).await;
    let others = claim(&db, 8).await;
    assert_eq!(others.len(), 3);
    assert!(others.iter().all(|job| job.tenant_id == "b"));
    assert_eq!(
        running_by_tenant(&db).await,
        vec![("a".to_string(), 2), ("b".to_string(), 3)]
    );
}

async fn running_cap_holds_under_concurrent_claims(db: TestDb) {
    let client = client(&db);
    db.store
        .set_tenant_max_running("a", Some(3))
        .await
        .expect("set cap");
    enqueue_noop(&client, "a", 30).await;
    let other_process = db.reconnect().await;
    let mut tasks = Vec::new();
    for n in 0..6 {
        let store = if n % 2 == 0 {
            db.store.clone()
        } else {
            other_process.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut claimed = 0;
            for _ in 0..5 {
                claimed += store
                    .claim(&claim_request(2), None)
                    .await
                    .expect("concurrent claim")
                    .len();
            }
            claimed
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("claimer task");
    }
    assert_eq!(total, 3, "concurrent claimers filled the cap exactly");
    assert_eq!(running_by_tenant(&db).await, vec![("a".to_string(), 3)]);
}

async fn default_running_cap_and_clearing_a_cap(db: TestDb) {
    let client = client(&db);
    db.store
        .set_tenant_max_running("a", Some(1))
        .await
        .expect("set cap");
    db.store
        .set_tenant_max_running("a", Some(3))
        .await
        .expect("replace cap");
    enqueue_noop(&client, "a", 5).await;
    enqueue_noop(&client, "b", 5).await;

    // `a` has its own cap (3); `b` takes the default (1).
    let claimed = db
        .store
        .claim(&claim_request(20), Some(1))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 4);
    assert_eq!(
        running_by_tenant(&db).await,
        vec![("a".to_string(), 3), ("b".to_string(), 1)]
    );

    // Without its own cap, `a` falls under the default (1) and already has 3.
    db.store
        .set_tenant_max_running("a", None)
        .await
        .expect("clear cap");
    assert!(db
        .store
        .claim(&claim_request(20), Some(1))
        .await
        .expect("claim")
        .is_empty());

    // Without a default either, nothing holds them back.
    let claimed = db
        .store
        .claim(&claim_request(20), None)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 6);
    assert_eq!(
        running_by_tenant(&db).await,
        vec![("a".to_string(), 5), ("b".to_string(), 5)]
    );
}

// ---- heartbeat, progress, checkpoint ---------------------------------------------

async fn heartbeat_extends_leases_and_reports_cancel(db: TestDb) {
    let client = client(&db);
    enqueue_noop(&client, TENANT, 2).await;
    let claimed = db
        .store
        .claim(&short_lease(claim_request(2)), None)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let (job, other) = (&claimed[0], &claimed[1]);
    let old_lease = job.lease_expires_at.expect("lease");

    let replies = db
        .store
        .heartbeat(&[job.lease()], Duration::from_secs(60))
        .await
        .expect("heartbeat");
    assert_eq!(replies.len(), 1);
    assert_eq!(
        (replies[0].job_id, replies[0].cancel_requested),
        (job.id, false)
    );
    let extended = get(&db, TENANT, job.id)
        .await
        .lease_expires_at
        .expect("lease");
    assert!(
        extended >= old_lease + chrono::Duration::seconds(50),
        "lease {old_lease} was not extended by 60 s: {extended}"
    );

    db.store.cancel(TENANT, job.id).await.expect("cancel");
    let stale = Lease {
        job_id: other.id,
        attempt: other.attempt + 1,
    };
    let mut replies = db
        .store
        .heartbeat(
            &[job.lease(), stale, other.lease()],
            Duration::from_secs(60),
        )
        .await
        .expect("heartbeat");
    replies.sort_by_key(|reply| reply.job_id);
    let mut expected = vec![(job.id, true), (other.id, false)];
    expected.sort();
    let got: Vec<(JobId, bool)> = replies
        .iter()
        .map(|r| (r.job_id, r.cancel_requested))
        .collect();
    assert_eq!(
        got, expected,
        "the stale lease is absent, the cancel is reported"
    );

    let stale_only = db
        .store
        .heartbeat(&[stale], Duration::from_secs(60))
        .await
        .expect("heartbeat");
    assert!(stale_only.is_empty());
    assert!(db
        .store
        .heartbeat(&[], Duration::from_secs(60))
        .await
        .expect("heartbeat")
        .is_empty());

    // A finished job's lease is gone too.
    succeed(&db, other.lease()).await;
    assert!(db
        .store
        .heartbeat(&[other.lease()], LEASE)
        .await
        .expect("heartbeat")
        .is_empty());
}

async fn progress_and_checkpoint_are_stored(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, sleep_job(TENANT, 1000)).await;
    let progress = Progress {
        current: 3,
        total: Some(10),
        unit: Some("files".into()),
        message: Some("copying".into()),
    };
    db.store
        .set_progress(job.lease(), &progress)
        .await
        .expect("progress");
    db.store
        .save_checkpoint(job.lease(), &json!({"cursor": 3, "done": ["a", "b"]}))
        .await
        .expect("checkpoint");
    let stored = get(&db, TENANT, job.id).await;
    assert_eq!(stored.progress.as_ref(), Some(&progress));
    assert_eq!(
        stored.checkpoint,
        Some(json!({"cursor": 3, "done": ["a", "b"]}))
    );
    assert_eq!(stored.state, JobState::Running);
    assert_eq!(
        event_kinds(&db, TENANT, job.id).await,
        ["started", "progress", "checkpoint"]
    );

    let wrong = Lease {
        job_id: job.id,
        attempt: job.attempt + 1,
    };
    let other_progress = Progress {
        current: 9,
        total: None,
        unit: None,
        message: None,
    };
    assert_err!(
        db.store.set_progress(wrong, &other_progress).await,
        Error::LeaseLost { job_id, attempt } if job_id == job.id && attempt == wrong.attempt
    );
    assert_err!(
        db.store.save_checkpoint(wrong, &json!({"cursor": 9})).await,
        Error::LeaseLost { job_id, attempt } if job_id == job.id && attempt == wrong.attempt
    );
    assert_eq!(
        get(&db, TENANT, job.id).await,
        stored,
        "refused writes change nothing"
    );
    assert_eq!(
        event_kinds(&db, TENANT, job.id).await,
        ["started", "progress", "checkpoint"]
    );

    // A later write replaces the earlier value.
    let later = Progress {
        current: 10,
        total: Some(10),
        unit: None,
        message: None,
    };
    db.store
        .set_progress(job.lease(), &later)
        .await
        .expect("progress");
    assert_eq!(get(&db, TENANT, job.id).await.progress, Some(later));
}

async fn events_page_by_id(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, sleep_job(TENANT, 1000)).await;
    for step in 0..3 {
        db.store
            .save_checkpoint(job.lease(), &json!({"step": step}))
            .await
            .expect("checkpoint");
    }
    succeed(&db, job.lease()).await;
    let all = db
        .store
        .job_events(TENANT, job.id, 0, 100)
        .await
        .expect("events");
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "started",
            "checkpoint",
            "checkpoint",
            "checkpoint",
            "succeeded"
        ]
    );
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "events are oldest first"
    );
    assert!(all
        .iter()
        .all(|e| e.job_id == job.id && e.attempt == Some(1)));

    let first_page = db
        .store
        .job_events(TENANT, job.id, 0, 2)
        .await
        .expect("events");
    assert_eq!(first_page, all[..2]);
    let next_page = db
        .store
        .job_events(TENANT, job.id, first_page[1].id, 100)
        .await
        .expect("events");
    assert_eq!(next_page, all[2..]);
    let past_end = db
        .store
        .job_events(TENANT, job.id, all[4].id, 100)
        .await
        .expect("events");
    assert!(past_end.is_empty(), "no events after the last one");
}

// ---- finish --------------------------------------------------------------------

async fn finish_succeeded(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    let result = json!({"ok": true, "rows": [1, 2, 3]});
    db.store
        .finish(
            job.lease(),
            &Finish::Succeeded {
                result: result.clone(),
            },
        )
        .await
        .expect("finish");
    let done = get(&db, TENANT, job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, Some(result));
    assert!(done.finished_at.is_some());
    assert_eq!(done.lease_expires_at, None);
    assert_eq!(done.attempt, 1);
    let attempts = db
        .store
        .job_attempts(TENANT, job.id)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].attempt, attempts[0].outcome),
        (1, AttemptOutcome::Succeeded)
    );
    assert_eq!(attempts[0].worker_id.as_deref(), Some(WORKER));
    assert_eq!(attempts[0].error, None);
    assert_eq!(
        event_kinds(&db, TENANT, job.id).await,
        ["started", "succeeded"]
    );
    assert_eq!(counts(&db).await, vec![(JobState::Succeeded, 1)]);

    // Finishing twice is refused and changes nothing.
    finish_expect_lost(&db, job.lease(), &Finish::Succeeded { result: json!(2) }).await;
    assert_eq!(get(&db, TENANT, job.id).await, done);
}

/// A failure is kept raw for operators (the job row and the attempt history)
/// and shown to tenants as a code and a short message (the row's public pair,
/// the attempt's, the event log's); success clears the job's error but not
/// the history.
async fn failures_keep_the_raw_error_and_show_a_public_one(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, with_max_attempts(3, noop(TENANT))).await;
    let raw = "S3 UploadPart unavailable: dispatch failure: bucket lh-secret-eu, \
               request id 4442587FB7D0A2F9, <Error><Code>SlowDown</Code></Error>";
    let public = FailureCode::StorageUnavailable.public();
    db.store
        .finish(
            job.lease(),
            &Finish::Failed {
                error: raw.into(),
                public: public.clone(),
                retry_at: millis_from_now(-1000),
                permanent: false,
            },
        )
        .await
        .expect("finish");
    let queued = get(&db, TENANT, job.id).await;
    assert_eq!(queued.last_error.as_deref(), Some(raw));
    assert_eq!(queued.public_error.as_ref(), Some(&public));
    assert_eq!(queued.tenant_error().as_ref(), Some(&public));
    let attempts = db
        .store
        .job_attempts(TENANT, job.id)
        .await
        .expect("attempts");
    assert_eq!(attempts[0].error.as_deref(), Some(raw));
    assert_eq!(attempts[0].tenant_error().as_ref(), Some(&public));
    let events = db
        .store
        .job_events(TENANT, job.id, 0, 100)
        .await
        .expect("events");
    let logged =
        serde_json::to_string(&events.iter().map(|e| &e.data).collect::<Vec<_>>()).expect("json");
    assert!(logged.contains("storage_unavailable"), "{logged}");
    assert!(!logged.contains("lh-secret-eu"), "{logged}");

    let again = claim(&db, 1).await;
    assert_eq!(ids(&again), [job.id]);
    succeed(&db, again[0].lease()).await;
    let done = get(&db, TENANT, job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.last_error, None, "a succeeded job has no error");
    assert_eq!(done.public_error, None);
    assert_eq!(done.tenant_error(), None);
    let (_, history) = db
        .store
        .get_job_with_attempts(TENANT, job.id)
        .await
        .expect("job");
    assert_eq!(history[0].error.as_deref(), Some(raw), "history keeps it");
    assert_eq!(history[0].public_error.as_ref(), Some(&public));
    assert_eq!(history[1].error, None);
}

/// A succeeded job shows its progress complete when it had a total (the last
/// value written may lag: an attempt resumed from a checkpoint with nothing
/// left to do writes none); a progress without a total is left as it was.
async fn success_completes_a_progress_with_a_total(db: TestDb) {
    let client = client(&db);
    let counted = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    let progress = Progress {
        current: 3,
        total: Some(4),
        unit: Some("steps".into()),
        message: Some("step 3".into()),
    };
    db.store
        .set_progress(counted.lease(), &progress)
        .await
        .expect("progress");
    succeed(&db, counted.lease()).await;
    let done = get(&db, TENANT, counted.id).await;
    assert_eq!(
        done.progress,
        Some(Progress {
            current: 4,
            ..progress
        })
    );

    let open_ended = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    let bytes = Progress {
        current: 1234,
        total: None,
        unit: Some("bytes".into()),
        message: None,
    };
    db.store
        .set_progress(open_ended.lease(), &bytes)
        .await
        .expect("progress");
    let applied = db
        .store
        .complete_many(&[(open_ended.lease(), json!({}))])
        .await
        .expect("complete");
    assert_eq!(applied, [open_ended.id]);
    assert_eq!(get(&db, TENANT, open_ended.id).await.progress, Some(bytes));

    let silent = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    succeed(&db, silent.lease()).await;
    assert_eq!(get(&db, TENANT, silent.id).await.progress, None);
}

async fn finish_failed_with_attempts_left_schedules_retry(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, with_max_attempts(3, noop(TENANT))).await;
    let retry_at = millis_from_now(600_000);
    db.store
        .finish(job.lease(), &failed("boom", retry_at, false))
        .await
        .expect("finish");
    let queued = get(&db, TENANT, job.id).await;
    assert_eq!(queued.state, JobState::Queued);
    assert_eq!(queued.failed_attempts, 1);
    assert_eq!(queued.attempt, 1);
    assert_eq!(
        queued.run_at.timestamp_millis(),
        retry_at.timestamp_millis()
    );
    assert_eq!(queued.last_error.as_deref(), Some("boom"));
    assert_eq!(queued.finished_at, None);
    assert_eq!(queued.lease_expires_at, None);
    let attempts = db
        .store
        .job_attempts(TENANT, job.id)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].attempt, attempts[0].outcome),
        (1, AttemptOutcome::Retried)
    );
    assert_eq!(attempts[0].error.as_deref(), Some("boom"));
    let events = db
        .store
        .job_events(TENANT, job.id, 0, 100)
        .await
        .expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["started", "retry_scheduled"]);
    assert_eq!(events[0].data, Some(json!({"workerId": WORKER})));
    let data = events[1].data.clone().expect("retry_scheduled has data");
    assert_eq!(
        data["error"],
        json!({"code": "job_failed", "message": "boom"}),
        "events (which tenants read) carry the public error"
    );
    let run_at: DateTime<Utc> =
        serde_json::from_value(data["runAt"].clone()).expect("runAt is a timestamp");
    assert_eq!(run_at.timestamp_millis(), retry_at.timestamp_millis());
    assert!(
        claim(&db, 10).await.is_empty(),
        "not claimable before retry_at"
    );
}

async fn finish_failed_on_last_attempt_fails(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, with_max_attempts(2, noop(TENANT))).await;
    // retry_at in the past: due again at once.
    db.store
        .finish(job.lease(), &failed("first", millis_from_now(-1000), false))
        .await
        .expect("finish");
    let second = claim_exactly(&db, &claim_request(1), job.id).await;
    assert_eq!((second.attempt, second.failed_attempts), (2, 1));
    db.store
        .finish(
            second.lease(),
            &failed("second", millis_from_now(60_000), false),
        )
        .await
        .expect("finish");

    let dead = get(&db, TENANT, job.id).await;
    assert_eq!(dead.state, JobState::Failed);
    assert_eq!(dead.failed_attempts, 2);
    assert!(dead.finished_at.is_some());
    assert_eq!(dead.last_error.as_deref(), Some("second"));
    assert_eq!(
        attempt_outcomes(&db, TENANT, job.id).await,
        [(1, AttemptOutcome::Retried), (2, AttemptOutcome::Failed)]
    );
    assert_eq!(
        event_kinds(&db, TENANT, job.id).await,
        ["started", "retry_scheduled", "started", "failed"]
    );
    assert!(
        claim(&db, 10).await.is_empty(),
        "a failed job is not claimed"
    );
}

async fn finish_failed_permanent_fails_at_once(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, with_max_attempts(5, noop(TENANT))).await;
    db.store
        .finish(
            job.lease(),
            &failed("bad input", millis_from_now(-1000), true),
        )
        .await
        .expect("finish");
    let dead = get(&db, TENANT, job.id).await;
    assert_eq!(dead.state, JobState::Failed);
    assert_eq!(dead.failed_attempts, 1);
    assert!(dead.finished_at.is_some());
    assert_eq!(dead.last_error.as_deref(), Some("bad input"));
    assert_eq!(
        attempt_outcomes(&db, TENANT, job.id).await,
        [(1, AttemptOutcome::Failed)]
    );
    assert_eq!(
        event_kinds(&db, TENANT, job.id).await,
        ["started", "failed"]
    );
    assert!(claim(&db, 10).await.is_empty());
}

async fn finish_cancelled(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    db.store.cancel(TENANT, job.id).await.expect("cancel");
    db.store
        .finish(job.lease(), &Finish::Cancelled)
        .await
        .expect("finish");
    let cancelled = get(&db, TENANT, job.id).await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(cancelled.failed_attempts, 0);
    assert_eq!(
        attempt_outcomes(&db, TENANT, job.id).await,
        [(1, AttemptOutcome::Cancelled)]
    );
    assert_eq!(
        event_kinds(&db, TENANT, job.id).await,
        ["started", "cancel_requested", "cancelled"]
    );
    assert_eq!(counts(&db).await, vec![(JobState::Cancelled, 1)]);
}

async fn finish_released_does_not_count(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, with_max_attempts(2, noop(TENANT))).await;
    db.store
        .finish(job.lease(), &failed("flaky", millis_from_now(-1000), false))
        .await
        .expect("fail");
    let second = claim_exactly(&db, &claim_request(1), job.id).await;
    assert_eq!((second.attempt, second.failed_attempts), (2, 1));

    // Released on the last counted attempt: queued again, not failed.
    db.store
        .finish(second.lease(), &Finish::Released)
        .await
        .expect("release");
    let released = get(&db, TENANT, job.id).await;
    assert_eq!(released.state, JobState::Queued);
    assert_eq!(
        released.failed_attempts, 1,
        "a released attempt does not count"
    );
    assert!(released.run_at <= Utc::now(), "due again at once");
    assert_eq!(released.lease_expires_at, None);
    assert_eq!(released.finished_at, None);
    let attempts = db
        .store
        .job_attempts(TENANT, job.id)
        .await
        .expect("attempts");
    let outcomes: Vec<(i32, AttemptOutcome, Option<&str>)> = attempts
        .iter()
        .map(|a| (a.attempt, a.outcome, a.error.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, AttemptOutcome::Retried, Some("flaky")),
            (2, AttemptOutcome::Released, None)
        ],
        "the released attempt did not fail: it carries no error"
    );
    assert_eq!(
        event_kinds(&db, TENANT, job.id).await,
        ["started", "retry_scheduled", "started", "released"]
    );

    let third = claim_exactly(&db, &claim_request(1), job.id).await;
    assert_eq!((third.attempt, third.failed_attempts), (3, 1));
}

// ---- fencing -------------------------------------------------------------------

async fn stale_lease_is_fenced_after_rescue(db: TestDb) {
    let client = client(&db);
    let id = enqueue(&client, noop(TENANT)).await;
    let first = claim_exactly(&db, &short_lease(claim_request(1)), id).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let rescued = db.store.rescue_expired(10).await.expect("rescue");
    assert_eq!(rescued.len(), 1);
    let second = claim_exactly(&db, &claim_request(1), id).await;
    assert_eq!(second.attempt, 2);
    assert_fenced(&db, TENANT, first.lease()).await;
    // The current attempt still works.
    succeed(&db, second.lease()).await;
    assert_eq!(get(&db, TENANT, id).await.state, JobState::Succeeded);
}

async fn stale_lease_is_fenced_after_release(db: TestDb) {
    let client = client(&db);
    let first = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    db.store
        .finish(first.lease(), &Finish::Released)
        .await
        .expect("release");
    // While queued, the old lease is fenced too.
    assert_fenced(&db, TENANT, first.lease()).await;
    let second = claim_exactly(&db, &claim_request(1), first.id).await;
    assert_eq!(second.attempt, 2);
    assert_fenced(&db, TENANT, first.lease()).await;
    succeed(&db, second.lease()).await;
}

async fn complete_many_applies_only_current_leases(db: TestDb) {
    let client = client(&db);
    enqueue_noop(&client, TENANT, 4).await;
    let claimed = claim(&db, 4).await;
    assert_eq!(claimed.len(), 4);
    // Job 2 is released and claimed again (its attempt-1 lease is stale);
    // job 3 already succeeded.
    db.store
        .finish(claimed[2].lease(), &Finish::Released)
        .await
        .expect("release");
    let reclaimed = claim_exactly(&db, &claim_request(1), claimed[2].id).await;
    succeed(&db, claimed[3].lease()).await;
    let job3_before = get(&db, TENANT, claimed[3].id).await;

    let batch: Vec<(Lease, Value)> = claimed
        .iter()
        .enumerate()
        .map(|(i, job)| (job.lease(), json!({"n": i})))
        .collect();
    let applied = db.store.complete_many(&batch).await.expect("complete_many");
    assert_eq!(sorted(applied), sorted(vec![claimed[0].id, claimed[1].id]));
    for (i, job) in claimed.iter().take(2).enumerate() {
        let job = get(&db, TENANT, job.id).await;
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.result, Some(json!({"n": i})));
    }
    let still_running = get(&db, TENANT, claimed[2].id).await;
    assert_eq!(
        still_running, reclaimed,
        "the stale completion was not applied"
    );
    assert_eq!(get(&db, TENANT, claimed[3].id).await, job3_before);
    assert_eq!(
        attempt_outcomes(&db, TENANT, claimed[3].id).await,
        [(1, AttemptOutcome::Succeeded)]
    );
    assert!(db.store.complete_many(&[]).await.expect("empty").is_empty());
}

// ---- cancel and manual retry -----------------------------------------------------

async fn cancel_queued_job(db: TestDb) {
    let client = client(&db);
    let id = enqueue(&client, noop(TENANT)).await;
    let answered = db.store.cancel(TENANT, id).await.expect("cancel");
    assert_eq!(answered.state, JobState::Cancelled);
    assert!(answered.finished_at.is_some());
    assert!(!answered.cancel_requested);
    let stored = get(&db, TENANT, id).await;
    assert_eq!(stored, answered, "cancel answers the stored row");
    assert_eq!(event_kinds(&db, TENANT, id).await, ["cancelled"]);
    assert!(
        claim(&db, 10).await.is_empty(),
        "a cancelled job is not claimed"
    );

    let again = db.store.cancel(TENANT, id).await.expect("cancelling twice");
    assert_eq!(again, stored, "cancelling a cancelled job changes nothing");
    assert_eq!(event_kinds(&db, TENANT, id).await, ["cancelled"]);
}

async fn cancel_running_job_requests_cancel(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    let answered = db.store.cancel(TENANT, job.id).await.expect("cancel");
    assert_eq!(answered.state, JobState::Running);
    assert!(answered.cancel_requested);
    assert_eq!(answered.finished_at, None);
    assert_eq!(answered.attempt, 1);
    assert_eq!(get(&db, TENANT, job.id).await, answered);
    assert_eq!(
        event_kinds(&db, TENANT, job.id).await,
        ["started", "cancel_requested"]
    );
    // The worker may still finish it its own way.
    succeed(&db, job.lease()).await;
    assert_eq!(get(&db, TENANT, job.id).await.state, JobState::Succeeded);
}

async fn cancel_finished_job_conflicts(db: TestDb) {
    let client = client(&db);
    let done = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    succeed(&db, done.lease()).await;
    let dead = enqueue_and_claim(&db, &client, with_max_attempts(1, noop(TENANT))).await;
    db.store
        .finish(dead.lease(), &failed("boom", millis_from_now(0), false))
        .await
        .expect("fail");
    for id in [done.id, dead.id] {
        let before = get(&db, TENANT, id).await;
        let events_before = event_kinds(&db, TENANT, id).await;
        assert_err!(db.store.cancel(TENANT, id).await, Error::Conflict(_));
        assert_eq!(get(&db, TENANT, id).await, before);
        assert_eq!(event_kinds(&db, TENANT, id).await, events_before);
    }
}

async fn manual_retry_requeues(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, with_max_attempts(1, noop(TENANT))).await;
    db.store
        .finish(job.lease(), &failed("boom", millis_from_now(0), false))
        .await
        .expect("fail");
    assert_eq!(get(&db, TENANT, job.id).await.state, JobState::Failed);

    let retried = db.store.retry(TENANT, job.id).await.expect("retry");
    assert_eq!(retried.state, JobState::Queued);
    assert_eq!(retried.failed_attempts, 0, "a fresh attempt budget");
    assert_eq!(retried.finished_at, None);
    assert!(retried.run_at <= Utc::now());
    assert_eq!(get(&db, TENANT, job.id).await, retried);
    assert_eq!(
        event_kinds(&db, TENANT, job.id).await,
        ["started", "failed", "requeued"]
    );
    let again = claim_exactly(&db, &claim_request(1), job.id).await;
    assert_eq!((again.attempt, again.failed_attempts), (2, 0));
    succeed(&db, again.lease()).await;

    // A cancelled job can be retried too.
    let cancelled = enqueue(&client, noop(TENANT)).await;
    db.store.cancel(TENANT, cancelled).await.expect("cancel");
    let retried = db
        .store
        .retry(TENANT, cancelled)
        .await
        .expect("retry cancelled");
    assert_eq!(retried.state, JobState::Queued);
    assert!(!retried.cancel_requested);
    claim_exactly(&db, &claim_request(1), cancelled).await;
}

async fn manual_retry_of_unfinished_or_succeeded_job_conflicts(db: TestDb) {
    let client = client(&db);
    let done = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    succeed(&db, done.lease()).await;
    let running = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    let queued = enqueue(&client, noop(TENANT)).await;
    for id in [done.id, running.id, queued] {
        let before = get(&db, TENANT, id).await;
        assert_err!(db.store.retry(TENANT, id).await, Error::Conflict(_));
        assert_eq!(get(&db, TENANT, id).await, before);
    }
}

// ---- maintenance ---------------------------------------------------------------

async fn rescue_expired_requeues_expired_leases(db: TestDb) {
    let client = client(&db);
    let expiring = enqueue_noop(&client, TENANT, 3).await;
    let claimed = db
        .store
        .claim(&short_lease(claim_request(3)), None)
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), sorted(expiring.clone()));
    let healthy = enqueue_and_claim(&db, &client, noop(OTHER)).await;
    assert!(
        db.store
            .rescue_expired(10)
            .await
            .expect("rescue")
            .is_empty(),
        "no lease expired yet"
    );

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let first = db.store.rescue_expired(2).await.expect("rescue");
    assert_eq!(first.len(), 2, "the limit is honoured");
    let second = db.store.rescue_expired(10).await.expect("rescue");
    let mut rescued: Vec<Rescued> = first.into_iter().chain(second).collect();
    rescued.sort_by_key(|r| r.job_id);
    let expected: Vec<Rescued> = sorted(expiring.clone())
        .into_iter()
        .map(|job_id| Rescued {
            job_id,
            tenant_id: TENANT.into(),
            state: JobState::Queued,
        })
        .collect();
    assert_eq!(rescued, expected);
    assert!(db
        .store
        .rescue_expired(10)
        .await
        .expect("rescue")
        .is_empty());

    for id in expiring {
        let job = get(&db, TENANT, id).await;
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.failed_attempts, 1, "a lost lease counts");
        assert_eq!(job.lease_expires_at, None);
        assert!(job.last_error.is_some());
        assert_eq!(
            job.tenant_error().map(|e| e.code),
            Some("worker_lost".to_string())
        );
        assert!(job.run_at <= Utc::now());
        assert_eq!(
            attempt_outcomes(&db, TENANT, id).await,
            [(1, AttemptOutcome::LeaseExpired)]
        );
        let attempts = db.store.job_attempts(TENANT, id).await.expect("attempts");
        assert_eq!(attempts[0].public_error, job.public_error);
        assert_eq!(
            event_kinds(&db, TENANT, id).await,
            ["started", "lease_expired"]
        );
    }
    let healthy_now = get(&db, OTHER, healthy.id).await;
    assert_eq!(healthy_now, healthy, "a valid lease is not rescued");
    assert_eq!(
        counts(&db).await,
        vec![(JobState::Queued, 3), (JobState::Running, 1)]
    );
}

async fn rescue_expired_fails_when_attempts_are_spent(db: TestDb) {
    let client = client(&db);
    let id = enqueue(&client, with_max_attempts(1, noop(TENANT))).await;
    claim_exactly(&db, &short_lease(claim_request(1)), id).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let rescued = db.store.rescue_expired(10).await.expect("rescue");
    assert_eq!(
        rescued,
        vec![Rescued {
            job_id: id,
            tenant_id: TENANT.into(),
            state: JobState::Failed
        }]
    );
    let job = get(&db, TENANT, id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.failed_attempts, 1);
    assert!(job.finished_at.is_some());
    assert_eq!(job.lease_expires_at, None);
    assert_eq!(
        attempt_outcomes(&db, TENANT, id).await,
        [(1, AttemptOutcome::LeaseExpired)]
    );
    assert!(claim(&db, 10).await.is_empty());
}

async fn prune_finished_removes_only_old_finished_jobs(db: TestDb) {
    let client = client(&db);
    let succeeded = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    succeed(&db, succeeded.lease()).await;
    let dead = enqueue_and_claim(&db, &client, with_max_attempts(1, noop(TENANT))).await;
    db.store
        .finish(dead.lease(), &failed("boom", millis_from_now(0), false))
        .await
        .expect("fail");
    let cancelled = enqueue(&client, noop(TENANT)).await;
    db.store.cancel(TENANT, cancelled).await.expect("cancel");
    let running = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    let queued = enqueue(&client, on_queue("later", noop(TENANT))).await;

    tokio::time::sleep(Duration::from_millis(50)).await;
    let cutoff = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let late = enqueue(&client, on_queue("late", noop(TENANT))).await;
    let late = claim_exactly(&db, &claim_request_on(&["late"], 1), late).await;
    succeed(&db, late.lease()).await;

    assert_eq!(
        db.store.prune_finished(cutoff, 2).await.expect("prune"),
        2,
        "the limit is honoured"
    );
    assert_eq!(
        db.store.prune_finished(cutoff, 100).await.expect("prune"),
        1
    );
    assert_eq!(
        db.store.prune_finished(cutoff, 100).await.expect("prune"),
        0
    );
    for id in [succeeded.id, dead.id, cancelled] {
        assert_err!(db.store.get_job(TENANT, id).await, Error::NotFound(got) if got == id);
        assert_err!(db.store.job_events(TENANT, id, 0, 100).await, Error::NotFound(got) if got == id);
        assert_err!(db.store.job_attempts(TENANT, id).await, Error::NotFound(got) if got == id);
    }
    assert_eq!(
        get(&db, TENANT, late.id).await.state,
        JobState::Succeeded,
        "finished after the cutoff"
    );
    assert_eq!(
        counts(&db).await,
        vec![
            (JobState::Queued, 1),
            (JobState::Running, 1),
            (JobState::Succeeded, 1)
        ]
    );

    // Even with a cutoff in the future, unfinished jobs stay.
    let future = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(
        db.store.prune_finished(future, 100).await.expect("prune"),
        1
    );
    assert_eq!(get(&db, TENANT, queued).await.state, JobState::Queued);
    assert_eq!(get(&db, TENANT, running.id).await.state, JobState::Running);
    assert_eq!(
        counts(&db).await,
        vec![(JobState::Queued, 1), (JobState::Running, 1)]
    );
}

async fn subscribe_wakes_on_enqueue_and_cancel(db: TestDb) {
    // A queue of our own: PostgreSQL notifications reach every schema's listeners.
    let queue = format!("wake-{}", JobId::new().as_uuid().simple());
    let client = client(&db);
    let mut wakes = db.store.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = enqueue(&client, on_queue(&queue, noop(TENANT))).await;
    assert!(
        wait_for_wake(&mut wakes, &Wake::Queue(queue.clone())).await,
        "no Wake::Queue({queue:?}) within 2 s of the enqueue"
    );

    let on_queue = claim_request_on(&[queue.as_str()], 1);
    let job = claim_exactly(&db, &on_queue, id).await;
    db.store
        .finish(job.lease(), &Finish::Released)
        .await
        .expect("release");
    assert!(
        wait_for_wake(&mut wakes, &Wake::Queue(queue.clone())).await,
        "no Wake::Queue({queue:?}) within 2 s of releasing a job"
    );

    let job = claim_exactly(&db, &on_queue, id).await;
    db.store.cancel(TENANT, id).await.expect("cancel");
    assert!(
        wait_for_wake(&mut wakes, &Wake::Cancel(id)).await,
        "no Wake::Cancel({id}) within 2 s of cancelling the running job"
    );

    db.store
        .finish(job.lease(), &Finish::Cancelled)
        .await
        .expect("finish cancelled");
    db.store.retry(TENANT, id).await.expect("retry");
    assert!(
        wait_for_wake(&mut wakes, &Wake::Queue(queue.clone())).await,
        "no Wake::Queue({queue:?}) within 2 s of a manual retry"
    );
}

async fn counts_are_exact(db: TestDb) {
    let client = client(&db);
    assert_eq!(counts(&db).await, vec![]);
    assert_eq!(running_by_tenant(&db).await, vec![]);
    for _ in 0..4 {
        enqueue(&client, on_queue("qa", noop("a"))).await;
    }
    let b_first = enqueue(&client, on_queue("qb", noop("b"))).await;
    let b_second = enqueue(&client, on_queue("qb", noop("b"))).await;
    enqueue(&client, on_queue("qb", noop("b"))).await;
    let a_jobs = db
        .store
        .claim(&claim_request_on(&["qa"], 3), None)
        .await
        .expect("claim");
    assert_eq!(a_jobs.len(), 3);
    claim_exactly(&db, &claim_request_on(&["qb"], 1), b_first).await;
    assert_eq!(
        running_by_tenant(&db).await,
        vec![("a".to_string(), 3), ("b".to_string(), 1)]
    );

    succeed(&db, a_jobs[0].lease()).await;
    db.store
        .finish(a_jobs[1].lease(), &failed("bad", millis_from_now(0), true))
        .await
        .expect("fail");
    db.store.cancel("b", b_second).await.expect("cancel");

    assert_eq!(
        counts(&db).await,
        vec![
            (JobState::Cancelled, 1),
            (JobState::Failed, 1),
            (JobState::Queued, 2),
            (JobState::Running, 2),
            (JobState::Succeeded, 1),
        ]
    );
    assert_eq!(
        running_by_tenant(&db).await,
        vec![("a".to_string(), 1), ("b".to_string(), 1)]
    );
}

// ---- a cancel request wins over requeueing -----------------------------------

/// Cancels a running job (cancel requested), then ends its attempt with
/// `end`; the job must end cancelled, never queued to run again.
async fn requested_cancel_is_final(
    db: &TestDb,
    end: impl AsyncFnOnce(&TestDb, &Job),
    expected_event: &str,
) {
    let client = client(db);
    let job = enqueue_and_claim(db, &client, with_max_attempts(5, noop(TENANT))).await;
    let requested = client.cancel(TENANT, job.id).await.expect("cancel");
    assert!(requested.cancel_requested && requested.state == JobState::Running);
    end(db, &job).await;
    let ended = get(db, TENANT, job.id).await;
    assert_eq!(
        ended.state,
        JobState::Cancelled,
        "a job asked to cancel was queued again"
    );
    assert!(ended.finished_at.is_some());
    assert!(
        claim(db, 10).await.is_empty(),
        "the cancelled job was claimable"
    );
    let events = db
        .store
        .job_events(TENANT, job.id, 0, 100)
        .await
        .expect("events");
    assert_eq!(events.last().map(|e| e.kind.as_str()), Some(expected_event));
}

async fn cancel_requested_then_failure_cancels(db: TestDb) {
    requested_cancel_is_final(
        &db,
        async |db, job| {
            let retry_at = Utc::now() + chrono::Duration::seconds(60);
            db.store
                .finish(job.lease(), &failed("boom", retry_at, false))
                .await
                .expect("finish");
        },
        "cancelled",
    )
    .await;
}

async fn cancel_requested_then_release_cancels(db: TestDb) {
    requested_cancel_is_final(
        &db,
        async |db, job| {
            db.store
                .finish(job.lease(), &Finish::Released)
                .await
                .expect("release")
        },
        "cancelled",
    )
    .await;
}

async fn cancel_requested_then_lease_expiry_cancels(db: TestDb) {
    let client = client(&db);
    let id = enqueue(&client, with_max_attempts(5, noop(TENANT))).await;
    let job = claim_exactly(&db, &short_lease(claim_request(1)), id).await;
    client.cancel(TENANT, job.id).await.expect("cancel");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let rescued = db.store.rescue_expired(10).await.expect("rescue");
    assert_eq!(
        rescued.iter().map(|r| r.state).collect::<Vec<_>>(),
        [JobState::Cancelled]
    );
    assert_eq!(get(&db, TENANT, id).await.state, JobState::Cancelled);
    assert!(claim(&db, 10).await.is_empty());
}

/// Event data is the same text on both stores: `runAt` as UTC RFC 3339 with microseconds.
async fn retry_event_run_at_is_fixed_format_utc(db: TestDb) {
    let client = client(&db);
    let job = enqueue_and_claim(&db, &client, with_max_attempts(3, noop(TENANT))).await;
    let retry_at = DateTime::parse_from_rfc3339("2099-01-02T03:04:05.678901Z")
        .expect("time")
        .with_timezone(&Utc);
    db.store
        .finish(job.lease(), &failed("boom", retry_at, false))
        .await
        .expect("finish");
    let events = db
        .store
        .job_events(TENANT, job.id, 0, 100)
        .await
        .expect("events");
    let data = events.last().and_then(|e| e.data.clone()).expect("data");
    assert_eq!(data["runAt"], json!("2099-01-02T03:04:05.678901Z"));
}

both_stores!(
    cancel_requested_then_failure_cancels,
    cancel_requested_then_release_cancels,
    cancel_requested_then_lease_expiry_cancels,
    retry_event_run_at_is_fixed_format_utc,
);

// ---- listing a tenant's jobs -------------------------------------------------

use longhaul_core::job::JobFilter;

/// Every page of a store listing from the start, `page` jobs at a time.
async fn list_all_pages(
    db: &TestDb,
    tenant: &str,
    filter: &JobFilter,
    page: u32,
) -> Vec<Vec<JobId>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let jobs = db
            .store
            .list_jobs(tenant, filter, after, page)
            .await
            .expect("list_jobs");
        assert!(
            jobs.len() <= page as usize,
            "a page holds at most the limit"
        );
        assert!(
            jobs.iter().all(|job| job.tenant_id == tenant),
            "a listing holds only the tenant's jobs"
        );
        if jobs.is_empty() {
            return pages;
        }
        after = jobs.last().map(|job| job.id);
        pages.push(ids_in_order(&jobs));
    }
}

/// The jobs' ids in the order the store answered (`ids` sorts them).
fn ids_in_order(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|job| job.id).collect()
}

fn newest_first(mut ids: Vec<JobId>) -> Vec<JobId> {
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

async fn list_jobs_pages_walk_every_job_once_newest_first(db: TestDb) {
    let client = client(&db);
    let mut mine = Vec::new();
    // Several batches, interleaved with another tenant's jobs.
    for _ in 0..4 {
        mine.extend(enqueue_noop(&client, TENANT, 5).await);
        enqueue_noop(&client, OTHER, 3).await;
    }
    mine.push(enqueue(&client, noop(TENANT)).await);
    mine.push(enqueue(&client, noop(TENANT)).await);
    mine.push(enqueue(&client, noop(TENANT)).await);
    assert_eq!(mine.len(), 23);

    let pages = list_all_pages(&db, TENANT, &JobFilter::default(), 7).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [7, 7, 7, 2]);
    let walked: Vec<JobId> = pages.concat();
    assert_eq!(
        walked,
        newest_first(mine.clone()),
        "every job once, id descending"
    );
    assert_eq!(walked.iter().collect::<HashSet<_>>().len(), walked.len());

    // The client pages the same way and says when there is no next page.
    let mut walked = Vec::new();
    let mut after = None;
    let mut sizes = Vec::new();
    loop {
        let page = client
            .list(TENANT, &JobFilter::default(), after, 7)
            .await
            .expect("list");
        sizes.push(page.jobs.len());
        walked.extend(ids_in_order(&page.jobs));
        match page.next_cursor {
            Some(cursor) => {
                assert_eq!(Some(cursor), page.jobs.last().map(|job| job.id));
                after = Some(cursor);
            }
            None => break,
        }
    }
    assert_eq!(sizes, [7, 7, 7, 2]);
    assert_eq!(walked, newest_first(mine.clone()));

    // A last page that is exactly full has no next cursor.
    let last_three = client
        .list(TENANT, &JobFilter::default(), Some(walked[19]), 3)
        .await
        .expect("list");
    assert_eq!(ids_in_order(&last_three.jobs), walked[20..].to_vec());
    assert_eq!(last_three.next_cursor, None);
}

/// Jobs of several kinds, queues, states and creation times, for filtering.
struct FilterFixture {
    /// Every job of TENANT, as stored after the set-up.
    jobs: Vec<Job>,
    /// The creation times of the three batches, oldest first.
    batches: [DateTime<Utc>; 3],
}

async fn filter_fixture(db: &TestDb, client: &JobClient) -> FilterFixture {
    let mut created = Vec::new();
    let mut batches = Vec::new();
    let groups: [Vec<EnqueueRequest>; 3] = [
        vec![noop(TENANT), noop(TENANT), noop(TENANT)],
        vec![
            sleep_job(TENANT, 10),
            sleep_job(TENANT, 10),
            on_queue("bulk", noop(TENANT)),
            on_queue("bulk", noop(TENANT)),
        ],
        vec![
            noop(TENANT),
            noop(TENANT),
            on_queue("bulk", sleep_job(TENANT, 10)),
        ],
    ];
    for group in groups {
        let answers = client.enqueue_many(group).await.expect("enqueue_many");
        let first = get(db, TENANT, answers[0].id).await;
        batches.push(first.created_at);
        created.extend(answers.into_iter().map(|answer| answer.id));
        // Every batch is created at a later time than the one before.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The two oldest jobs start, one of them succeeds; a queued one is cancelled.
    let claimed = claim(db, 2).await;
    assert_eq!(ids(&claimed), sorted(created[..2].to_vec()));
    succeed(db, claimed[0].lease()).await;
    client.cancel(TENANT, created[7]).await.expect("cancel");
    // Another tenant with the same kinds and queues, and tenants whose ids
    // sort right beside TENANT's.
    for tenant in [OTHER, "acmd", "acme-b", "acme0"] {
        client
            .enqueue_many(vec![
                noop(tenant),
                sleep_job(tenant, 10),
                on_queue("bulk", noop(tenant)),
            ])
            .await
            .expect("enqueue_many");
    }

    let mut jobs = Vec::new();
    for id in created {
        jobs.push(get(db, TENANT, id).await);
    }
    assert!(batches[0] < batches[1] && batches[1] < batches[2]);
    FilterFixture {
        jobs,
        batches: [batches[0], batches[1], batches[2]],
    }
}

/// The store's answer for `filter` (in pages of 2) against the jobs the
/// predicate keeps, newest first; the answer must be neither empty nor all.
async fn assert_filter(
    db: &TestDb,
    fixture: &FilterFixture,
    what: &str,
    filter: JobFilter,
    keep: impl Fn(&Job) -> bool,
) {
    let expected = newest_first(
        fixture
            .jobs
            .iter()
            .filter(|job| keep(job))
            .map(|job| job.id)
            .collect(),
    );
    assert!(
        !expected.is_empty() && expected.len() < fixture.jobs.len(),
        "{what}: the fixture should make the filter meaningful"
    );
    let listed = db
        .store
        .list_jobs(TENANT, &filter, None, 100)
        .await
        .expect("list_jobs");
    assert_eq!(ids_in_order(&listed), expected, "{what}");
    assert_eq!(
        list_all_pages(db, TENANT, &filter, 2).await.concat(),
        expected,
        "{what}, in pages of 2"
    );
    // The whole job, as stored, in every row.
    for job in &listed {
        assert!(fixture.jobs.contains(job), "{what}: {job:?}");
    }
}

async fn list_jobs_filters_alone_and_combined(db: TestDb) {
    let client = client(&db);
    let fixture = filter_fixture(&db, &client).await;
    let [first, second, third] = fixture.batches;
    let filter = JobFilter::default;

    assert_filter(
        &db,
        &fixture,
        "queued",
        JobFilter {
            states: vec![JobState::Queued],
            ..filter()
        },
        |job| job.state == JobState::Queued,
    )
    .await;
    assert_filter(
        &db,
        &fixture,
        "running or succeeded",
        JobFilter {
            states: vec![JobState::Running, JobState::Succeeded],
            ..filter()
        },
        |job| matches!(job.state, JobState::Running | JobState::Succeeded),
    )
    .await;
    assert_filter(
        &db,
        &fixture,
        "cancelled",
        JobFilter {
            states: vec![JobState::Cancelled],
            ..filter()
        },
        |job| job.state == JobState::Cancelled,
    )
    .await;
    assert_filter(
        &db,
        &fixture,
        "kind",
        JobFilter {
            kind: Some(Sleep::NAME.into()),
            ..filter()
        },
        |job| job.kind == Sleep::NAME,
    )
    .await;
    assert_filter(
        &db,
        &fixture,
        "queue",
        JobFilter {
            queue: Some("bulk".into()),
            ..filter()
        },
        |job| job.queue == "bulk",
    )
    .await;
    assert_filter(
        &db,
        &fixture,
        "created from (inclusive)",
        JobFilter {
            created_from: Some(second),
            ..filter()
        },
        |job| job.created_at >= second,
    )
    .await;
    assert_filter(
        &db,
        &fixture,
        "created to (exclusive)",
        JobFilter {
            created_to: Some(second),
            ..filter()
        },
        |job| job.created_at < second,
    )
    .await;
    assert_filter(
        &db,
        &fixture,
        "created in [second, third)",
        JobFilter {
            created_from: Some(second),
            created_to: Some(third),
            ..filter()
        },
        |job| job.created_at >= second && job.created_at < third,
    )
    .await;
    assert_filter(
        &db,
        &fixture,
        "queued noop jobs on bulk created from the second batch",
        JobFilter {
            states: vec![JobState::Queued],
            kind: Some(Noop::NAME.into()),
            queue: Some("bulk".into()),
            created_from: Some(second),
            created_to: Some(third + chrono::Duration::seconds(1)),
        },
        |job| {
            job.state == JobState::Queued
                && job.kind == Noop::NAME
                && job.queue == "bulk"
                && job.created_at >= second
        },
    )
    .await;
    assert_filter(
        &db,
        &fixture,
        "queued or cancelled noop jobs of the default queue",
        JobFilter {
            states: vec![JobState::Queued, JobState::Cancelled],
            kind: Some(Noop::NAME.into()),
            queue: Some("default".into()),
            ..filter()
        },
        |job| {
            matches!(job.state, JobState::Queued | JobState::Cancelled)
                && job.kind == Noop::NAME
                && job.queue == "default"
        },
    )
    .await;
    // Each batch's creation time is the start of exactly its own range.
    let all = db
        .store
        .list_jobs(
            TENANT,
            &JobFilter {
                created_from: Some(first),
                ..filter()
            },
            None,
            100,
        )
        .await
        .expect("list_jobs");
    assert_eq!(all.len(), fixture.jobs.len());
}

async fn list_jobs_never_shows_another_tenants_jobs(db: TestDb) {
    let client = client(&db);
    let mut jobs: Vec<(&str, Vec<JobId>)> = Vec::new();
    for tenant in [TENANT, OTHER, "acmd", "acme-b", "acme0"] {
        jobs.push((tenant, enqueue_noop(&client, tenant, 4).await));
    }
    for (tenant, own) in &jobs {
        let pages = list_all_pages(&db, tenant, &JobFilter::default(), 3).await;
        assert_eq!(pages.concat(), newest_first(own.clone()), "{tenant}");
    }
    // Another tenant's job as the cursor still lists only the caller's jobs.
    let (_, other_jobs) = &jobs[1];
    let (_, mine) = &jobs[0];
    let newest_other = other_jobs.iter().max().copied();
    let listed = db
        .store
        .list_jobs(TENANT, &JobFilter::default(), newest_other, 100)
        .await
        .expect("list_jobs");
    assert!(listed.iter().all(|job| job.tenant_id == TENANT));
    assert_eq!(ids_in_order(&listed), newest_first(mine.clone()));
    let listed = client
        .list(
            OTHER,
            &JobFilter {
                states: JobState::ALL.to_vec(),
                kind: Some(Noop::NAME.into()),
                queue: Some("default".into()),
                ..JobFilter::default()
            },
            None,
            200,
        )
        .await
        .expect("list");
    assert_eq!(ids_in_order(&listed.jobs), newest_first(other_jobs.clone()));
}

async fn list_jobs_empty_results(db: TestDb) {
    let client = client(&db);
    let none = JobFilter::default();
    assert!(db
        .store
        .list_jobs(TENANT, &none, None, 10)
        .await
        .expect("list_jobs")
        .is_empty());
    let mine = enqueue_noop(&client, TENANT, 3).await;
    enqueue_noop(&client, OTHER, 3).await;
    assert!(db
        .store
        .list_jobs("nobody", &none, None, 10)
        .await
        .expect("list_jobs")
        .is_empty());
    // Past the oldest job.
    let oldest = mine.iter().min().copied();
    assert!(db
        .store
        .list_jobs(TENANT, &none, oldest, 10)
        .await
        .expect("list_jobs")
        .is_empty());
    // Filters that match nothing.
    for filter in [
        JobFilter {
            states: vec![JobState::Failed],
            ..JobFilter::default()
        },
        JobFilter {
            kind: Some("no.such.kind".into()),
            ..JobFilter::default()
        },
        JobFilter {
            queue: Some("elsewhere".into()),
            ..JobFilter::default()
        },
        JobFilter {
            created_from: Some(Utc::now() + chrono::Duration::hours(1)),
            ..JobFilter::default()
        },
        JobFilter {
            created_to: Some(Utc::now() - chrono::Duration::hours(1)),
            ..JobFilter::default()
        },
    ] {
        let page = client.list(TENANT, &filter, None, 10).await.expect("list");
        assert!(page.jobs.is_empty(), "{filter:?}");
        assert_eq!(page.next_cursor, None);
    }
}

async fn list_jobs_client_validates_limit_and_range(db: TestDb) {
    let client = client(&db);
    enqueue_noop(&client, TENANT, 2).await;
    let none = JobFilter::default();
    for limit in [0, 201, u32::MAX] {
        assert_err!(
            client.list(TENANT, &none, None, limit).await,
            Error::Validation { field, .. } if field == "limit"
        );
    }
    for limit in [1, 200] {
        client
            .list(TENANT, &none, None, limit)
            .await
            .expect("limit in range");
    }
    let at = Utc::now();
    for to in [at, at - chrono::Duration::seconds(1)] {
        let filter = JobFilter {
            created_from: Some(at),
            created_to: Some(to),
            ..JobFilter::default()
        };
        assert_err!(
            client.list(TENANT, &filter, None, 10).await,
            Error::Validation { field, .. } if field == "createdTo"
        );
    }
    for (kind, queue) in [
        (Some(""), None),
        (Some("a\u{0}b"), None),
        (None, Some("Not A Queue")),
        (None, Some("q\u{0}")),
    ] {
        let filter = JobFilter {
            kind: kind.map(String::from),
            queue: queue.map(String::from),
            ..JobFilter::default()
        };
        assert_err!(
            client.list(TENANT, &filter, None, 10).await,
            Error::Validation { .. }
        );
    }
}

both_stores!(
    list_jobs_pages_walk_every_job_once_newest_first,
    list_jobs_filters_alone_and_combined,
    list_jobs_never_shows_another_tenants_jobs,
    list_jobs_empty_results,
    list_jobs_client_validates_limit_and_range,
);

// ---- a status read: the job with its attempts ------------------------------

async fn get_job_with_attempts_matches_its_parts(db: TestDb) {
    let client = client(&db);
    let ran = enqueue_and_claim(&db, &client, with_max_attempts(3, noop(OTHER))).await;
    let retry_at = Utc::now() + chrono::Duration::seconds(60);
    db.store
        .finish(ran.lease(), &failed("boom", retry_at, false))
        .await
        .expect("finish");
    let (job, attempts) = db
        .store
        .get_job_with_attempts(OTHER, ran.id)
        .await
        .expect("read");
    assert_eq!(job, get(&db, OTHER, ran.id).await);
    assert_eq!(
        attempts,
        db.store
            .job_attempts(OTHER, ran.id)
            .await
            .expect("attempts")
    );
    assert_eq!(attempts.len(), 1);

    let fresh = enqueue(&client, noop(TENANT)).await;
    let (job, attempts) = db
        .store
        .get_job_with_attempts(TENANT, fresh)
        .await
        .expect("read");
    assert_eq!(job, get(&db, TENANT, fresh).await);
    assert!(attempts.is_empty());

    for (tenant, id) in [(OTHER, fresh), (TENANT, ran.id)] {
        let read = db.store.get_job_with_attempts(tenant, id).await;
        assert!(
            matches!(read, Err(Error::NotFound(_))),
            "{tenant} read another tenant's job: {read:?}"
        );
    }
}

both_stores!(get_job_with_attempts_matches_its_parts);

// ---- fairness of retries -----------------------------------------------------

/// A retried job takes a fresh virtual time: it queues behind the work other
/// tenants enqueued meanwhile instead of jumping ahead with its old one.
async fn a_retried_job_queues_behind_current_work(db: TestDb) {
    let client = client(&db);
    let old = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    db.store
        .finish(old.lease(), &failed("boom", Utc::now(), true))
        .await
        .expect("fail for good");
    for _ in 0..5 {
        enqueue(&client, noop(TENANT)).await;
    }
    let batch = claim(&db, 5).await;
    assert_eq!(batch.len(), 5);
    let done: Vec<_> = batch.iter().map(|job| (job.lease(), json!({}))).collect();
    db.store.complete_many(&done).await.expect("complete");

    let newcomer = enqueue(&client, noop(OTHER)).await;
    client.retry(TENANT, old.id).await.expect("retry");
    let order: Vec<JobId> = claim(&db, 2).await.iter().map(|job| job.id).collect();
    assert_eq!(
        order,
        vec![newcomer, old.id],
        "the retried job jumped the queue"
    );
}

both_stores!(a_retried_job_queues_behind_current_work);

// ---- events of several jobs (the API's event hub) ------------------------------

/// `events_of_jobs` reads, in one query, each job's events after its own
/// cursor, at most `per_job` of each, ordered by id and across tenants; a job
/// without events (or that does not exist) adds nothing.
async fn events_of_jobs_reads_each_job_after_its_cursor(db: TestDb) {
    let client = client(&db);
    let a = enqueue_and_claim(&db, &client, noop(TENANT)).await;
    let b = enqueue_and_claim(&db, &client, noop(OTHER)).await;
    for current in 1..=3 {
        for job in [&a, &b] {
            let progress = Progress {
                current,
                total: Some(3),
                unit: None,
                message: None,
            };
            db.store
                .set_progress(job.lease(), &progress)
                .await
                .expect("progress");
        }
    }
    let quiet = enqueue(&client, noop(TENANT)).await;
    let of_a = db.store.job_events(TENANT, a.id, 0, 100).await.expect("a");
    let of_b = db.store.job_events(OTHER, b.id, 0, 100).await.expect("b");
    assert_eq!(
        (of_a.len(), of_b.len()),
        (4, 4),
        "started + 3 progress each"
    );

    let cursors = [(a.id, of_a[0].id), (b.id, 0), (quiet, 0), (JobId::new(), 0)];
    let got = db
        .store
        .events_of_jobs(&cursors, 2)
        .await
        .expect("events of jobs");
    let mut expected: Vec<_> = of_a[1..3].iter().chain(&of_b[..2]).cloned().collect();
    expected.sort_by_key(|event| event.id);
    assert_eq!(got, expected);

    // From a job's newest event, nothing; no cursors, no query result.
    let newest = [(a.id, of_a[3].id), (b.id, of_b[3].id)];
    assert!(db
        .store
        .events_of_jobs(&newest, 10)
        .await
        .expect("none new")
        .is_empty());
    assert!(db
        .store
        .events_of_jobs(&[], 10)
        .await
        .expect("no jobs")
        .is_empty());
}

both_stores!(events_of_jobs_reads_each_job_after_its_cursor);
