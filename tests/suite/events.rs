//! Server-Sent Events for a job: a client sees the current state first, live
//! progress and transitions while a real worker pool runs the job (each with
//! its log id), the final state last, and then the stream ends; a resumed
//! stream catches up from its `Last-Event-ID`. Another tenant gets 404.
//!
//! The streams of a process share one read of the database per tick (the
//! job event hub): counted through a store that counts its calls. Streams
//! are capped per key and per process (429, freed on close). With Redis, two
//! API instances share one poller, and a replica that loses Redis polls for
//! itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use longhaul_api::job_event_hub::JobEventHub;
use longhaul_api::job_event_relay::JobEventRelay;
use longhaul_api::AppState;
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::config::EventStreamConfig;
use longhaul_core::job::{
    Attempt, ClaimRequest, Enqueued, Finish, HeartbeatReply, Job, JobEvent, JobFilter, Lease,
    NewJob, Progress,
};
use longhaul_core::store::Stores;
use longhaul_core::store::{Backend, JobStore, Rescued, WakeReceiver};
use longhaul_core::tenancy::{KeyMode, NewTenant, Role, Tenant};
use longhaul_core::usage::{KindUsage, Period};
use longhaul_core::{JobClient, JobId, JobState};
use longhaul_worker::WorkerPool;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::harness::{redis_url, TestDb};
use crate::support::pool_config;

/// The hub's interval in these tests.
const TICK: Duration = Duration::from_millis(50);

/// One parsed SSE frame.
#[derive(Debug)]
struct Frame {
    event: String,
    id: Option<i64>,
    data: Value,
}

fn parse_frames(text: &str) -> Vec<Frame> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    event = Some(rest.trim().to_string());
                } else if let Some(rest) = line.strip_prefix("id:") {
                    id = rest.trim().parse().ok();
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data = serde_json::from_str(rest.trim()).ok();
                }
            }
            Some(Frame {
                event: event?,
                id,
                data: data?,
            })
        })
        .collect()
}

/// `(event, id)` of each frame, for comparisons; a state frame is named
/// `state:<status>`.
fn shape(frames: &[Frame]) -> Vec<(String, Option<i64>)> {
    frames
        .iter()
        .map(|f| match f.event.as_str() {
            "state" => (
                format!("state:{}", f.data["status"].as_str().unwrap_or("?")),
                f.id,
            ),
            event => (event.to_string(), f.id),
        })
        .collect()
}

/// Reads a stream to its end; failing if it does not end within `within`.
async fn read_to_end(response: Response<Body>, within: Duration) -> Vec<Frame> {
    let body = tokio::time::timeout(within, response.into_body().collect())
        .await
        .expect("the stream ends when the job finishes")
        .expect("body")
        .to_bytes();
    parse_frames(&String::from_utf8_lossy(&body))
}

fn stream_request(id: JobId, key: &str, last_event_id: Option<i64>) -> Request<Body> {
    let mut request = Request::get(format!("/v1/jobs/{id}/events"))
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last.to_string());
    }
    request.body(Body::empty()).expect("request")
}

/// Opens a stream and reads it to its end in a task.
async fn open_stream(
    router: &Router,
    id: JobId,
    key: &str,
    last_event_id: Option<i64>,
) -> tokio::task::JoinHandle<Vec<Frame>> {
    let response = router
        .clone()
        .oneshot(stream_request(id, key, last_event_id))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    tokio::spawn(read_to_end(response, Duration::from_secs(30)))
}

/// Waits until `done` holds (it is checked every 10 ms; panics after 20 s).
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn tenant_and_key(stores: &dyn Stores, name: &str, role: Role) -> (Tenant, String) {
    let tenant = stores
        .create_tenant(NewTenant::new(name, "us", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let key = another_key(stores, &tenant, role).await;
    (tenant, key)
}

async fn another_key(stores: &dyn Stores, tenant: &Tenant, role: Role) -> String {
    stores
        .issue_api_key(Some(&tenant.id), "t", role, KeyMode::Live, &Actor::system())
        .await
        .expect("key")
        .secret
}

fn streams_config(max_per_key: usize, max_per_process: usize) -> EventStreamConfig {
    EventStreamConfig {
        poll_interval: TICK,
        max_per_key,
        max_per_process,
    }
}

async fn enqueue(store: &Arc<dyn JobStore>, tenant: &Tenant, queue: Option<&str>) -> JobId {
    let client = JobClient::new(store.clone(), Arc::new(longhaul_worker::jobs::catalogue()));
    let mut request = EnqueueRequest::new(tenant.id.clone(), "system.noop", json!({}));
    request.queue = queue.map(str::to_string);
    client.enqueue(request).await.expect("enqueue").id
}

/// Claims the one due job of the `default` queue, as a worker would.
async fn claim(store: &Arc<dyn JobStore>, id: JobId) -> Job {
    let request = ClaimRequest {
        queues: vec!["default".into()],
        limit: 1,
        worker_id: "events-test".into(),
        lease: Duration::from_secs(30),
    };
    let claimed = store.claim(&request, None).await.expect("claim");
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    claimed.into_iter().next().expect("one job")
}

async fn progress(store: &Arc<dyn JobStore>, job: &Job, current: u64) {
    let progress = Progress {
        current,
        total: Some(3),
        unit: None,
        message: None,
    };
    store
        .set_progress(job.lease(), &progress)
        .await
        .expect("progress");
}

async fn succeed(store: &Arc<dyn JobStore>, job: &Job) {
    store
        .finish(
            job.lease(),
            &Finish::Succeeded {
                result: json!({"ok": true}),
            },
        )
        .await
        .expect("succeed");
}

/// The ids of a job's log, oldest first.
async fn log_ids(store: &Arc<dyn JobStore>, tenant: &Tenant, id: JobId) -> Vec<i64> {
    store
        .job_events(&tenant.id, id, 0, 100)
        .await
        .expect("events")
        .iter()
        .map(|event| event.id)
        .collect()
}

fn state(status: &str) -> (String, Option<i64>) {
    (format!("state:{status}"), None)
}

fn logged(kind: &str, id: i64) -> (String, Option<i64>) {
    (kind.into(), Some(id))
}

// ---- the contract ----------------------------------------------------------------

async fn a_client_follows_a_job_to_its_end(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let (tenant, key) = tenant_and_key(stores.as_ref(), "acme", Role::Viewer).await;
    let (_, other_key) = tenant_and_key(stores.as_ref(), "globex", Role::Admin).await;
    let router = longhaul_api::router(AppState::new(
        stores.clone(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    ));

    let client = JobClient::new(
        db.store.clone(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    );
    let id = client
        .enqueue(EnqueueRequest::new(
            tenant.id.clone(),
            "system.sleep",
            json!({ "durationMs": 1500, "steps": 3 }),
        ))
        .await
        .expect("enqueue")
        .id;

    let refused = router
        .clone()
        .oneshot(stream_request(id, &other_key, None))
        .await
        .expect("response");
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);

    let stream = open_stream(&router, id, &key, None).await;
    let stop = CancellationToken::new();
    let pool = WorkerPool::new(
        db.store.clone(),
        longhaul_worker::jobs::registry(),
        pool_config(2),
    );
    let worker = tokio::spawn(pool.run(stop.clone()));
    let frames = stream.await.expect("reader");
    stop.cancel();
    worker.await.expect("pool");

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
    // Every log event carries its log id, in the log's order; states none.
    let ids: Vec<i64> = frames[1..frames.len() - 1]
        .iter()
        .map(|f| f.id.unwrap_or_else(|| panic!("no id on {f:?}")))
        .collect();
    assert_eq!(ids, log_ids(&db.store, &tenant, id).await);
    assert!(frames[0].id.is_none() && last.id.is_none());
}

/// A stream resumed with `Last-Event-ID` reads what it missed from the
/// database, then follows the hub with a stream that joined live; a resumed
/// stream of a finished job gets its state and ends.
async fn a_resumed_stream_catches_up_then_follows(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let (tenant, key) = tenant_and_key(stores.as_ref(), "acme", Role::Viewer).await;
    let state_ = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_event_streams(streams_config(20, 100), None);
    let hub = state_.event_hub.clone();
    let router = longhaul_api::router(state_);

    let id = enqueue(&db.store, &tenant, None).await;
    let job = claim(&db.store, id).await;
    progress(&db.store, &job, 1).await;
    progress(&db.store, &job, 2).await;
    let before = log_ids(&db.store, &tenant, id).await;
    assert_eq!(before.len(), 3, "started and two progress events");

    let resumed = open_stream(&router, id, &key, Some(before[0])).await;
    let live = open_stream(&router, id, &key, None).await;
    wait_until("both streams follow the job", || hub.streams() == 2).await;
    progress(&db.store, &job, 3).await;
    succeed(&db.store, &job).await;
    let all = log_ids(&db.store, &tenant, id).await;
    assert_eq!(all.len(), 5);

    let resumed = resumed.await.expect("reader");
    assert_eq!(
        shape(&resumed),
        vec![
            state("running"),
            logged("progress", all[1]),
            logged("progress", all[2]),
            logged("progress", all[3]),
            logged("succeeded", all[4]),
            state("succeeded"),
        ]
    );
    assert_eq!(resumed[0].data["status"], "running");
    assert_eq!(resumed[1].data["data"]["current"], 1);
    assert_eq!(resumed[5].data["status"], "succeeded");
    let live = live.await.expect("reader");
    assert_eq!(
        shape(&live),
        vec![
            state("running"),
            logged("progress", all[3]),
            logged("succeeded", all[4]),
            state("succeeded"),
        ]
    );
    wait_until("the hub forgets the ended streams", || {
        hub.followed_jobs() == 0
    })
    .await;

    let finished = open_stream(&router, id, &key, Some(all[0])).await;
    let finished = finished.await.expect("reader");
    assert_eq!(shape(&finished), vec![state("succeeded")]);
    assert_eq!(finished[0].data["status"], "succeeded");
}

// ---- one poll per tick -----------------------------------------------------------

/// A job store that counts the calls made to it.
#[derive(Debug)]
struct CountingStore {
    inner: Arc<dyn JobStore>,
    calls: AtomicU64,
}

impl CountingStore {
    fn count(&self) -> &dyn JobStore {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_ref()
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl JobStore for CountingStore {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    async fn migrate(&self) -> longhaul_core::Result<()> {
        self.count().migrate().await
    }
    async fn ping(&self) -> longhaul_core::Result<()> {
        self.count().ping().await
    }
    async fn enqueue(&self, jobs: &[NewJob]) -> longhaul_core::Result<Vec<Enqueued>> {
        self.count().enqueue(jobs).await
    }
    async fn enqueue_within_quota(
        &self,
        jobs: &[NewJob],
        max_queued: Option<i64>,
        period: Period,
        actor: &Actor,
    ) -> longhaul_core::Result<Vec<Enqueued>> {
        self.count()
            .enqueue_within_quota(jobs, max_queued, period, actor)
            .await
    }
    async fn usage(
        &self,
        tenant_id: &str,
        period: Period,
    ) -> longhaul_core::Result<Vec<KindUsage>> {
        self.count().usage(tenant_id, period).await
    }
    async fn get_job(&self, tenant_id: &str, id: JobId) -> longhaul_core::Result<Job> {
        self.count().get_job(tenant_id, id).await
    }
    async fn find_job_by_idempotency_key(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> longhaul_core::Result<Option<Job>> {
        self.count()
            .find_job_by_idempotency_key(tenant_id, key)
            .await
    }
    async fn list_jobs(
        &self,
        tenant_id: &str,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: u32,
    ) -> longhaul_core::Result<Vec<Job>> {
        self.count()
            .list_jobs(tenant_id, filter, after, limit)
            .await
    }
    async fn attempts_of(&self, tenant_id: &str, id: JobId) -> longhaul_core::Result<Vec<Attempt>> {
        self.count().attempts_of(tenant_id, id).await
    }
    async fn job_events(
        &self,
        tenant_id: &str,
        id: JobId,
        after: i64,
        limit: u32,
    ) -> longhaul_core::Result<Vec<JobEvent>> {
        self.count().job_events(tenant_id, id, after, limit).await
    }
    async fn events_of_jobs(
        &self,
        cursors: &[(JobId, i64)],
        per_job: u32,
    ) -> longhaul_core::Result<Vec<JobEvent>> {
        self.count().events_of_jobs(cursors, per_job).await
    }
    async fn cancel_as(
        &self,
        tenant_id: &str,
        id: JobId,
        actor: &Actor,
    ) -> longhaul_core::Result<Job> {
        self.count().cancel_as(tenant_id, id, actor).await
    }
    async fn retry_within_quota(
        &self,
        tenant_id: &str,
        id: JobId,
        max_queued: Option<i64>,
        actor: &Actor,
    ) -> longhaul_core::Result<Job> {
        self.count()
            .retry_within_quota(tenant_id, id, max_queued, actor)
            .await
    }
    async fn set_tenant_max_running(
        &self,
        tenant_id: &str,
        max_running: Option<i32>,
    ) -> longhaul_core::Result<()> {
        self.count()
            .set_tenant_max_running(tenant_id, max_running)
            .await
    }
    async fn claim(
        &self,
        request: &ClaimRequest,
        default_max_running: Option<i32>,
    ) -> longhaul_core::Result<Vec<Job>> {
        self.count().claim(request, default_max_running).await
    }
    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease_for: Duration,
    ) -> longhaul_core::Result<Vec<HeartbeatReply>> {
        self.count().heartbeat(leases, lease_for).await
    }
    async fn set_progress(&self, lease: Lease, progress: &Progress) -> longhaul_core::Result<()> {
        self.count().set_progress(lease, progress).await
    }
    async fn save_checkpoint(&self, lease: Lease, checkpoint: &Value) -> longhaul_core::Result<()> {
        self.count().save_checkpoint(lease, checkpoint).await
    }
    async fn finish(&self, lease: Lease, finish: &Finish) -> longhaul_core::Result<()> {
        self.count().finish(lease, finish).await
    }
    async fn complete_many(
        &self,
        completed: &[(Lease, Value)],
    ) -> longhaul_core::Result<Vec<JobId>> {
        self.count().complete_many(completed).await
    }
    async fn rescue_expired(&self, limit: u32) -> longhaul_core::Result<Vec<Rescued>> {
        self.count().rescue_expired(limit).await
    }
    async fn prune_finished(
        &self,
        finished_before: DateTime<Utc>,
        limit: u32,
    ) -> longhaul_core::Result<u64> {
        self.count().prune_finished(finished_before, limit).await
    }
    async fn count_by_state(&self) -> longhaul_core::Result<Vec<(JobState, i64)>> {
        self.count().count_by_state().await
    }
    async fn count_by_state_of(
        &self,
        tenant_id: &str,
    ) -> longhaul_core::Result<Vec<(JobState, i64)>> {
        self.count().count_by_state_of(tenant_id).await
    }
    async fn running_by_tenant(&self) -> longhaul_core::Result<Vec<(String, i64)>> {
        self.count().running_by_tenant().await
    }
    fn subscribe(&self) -> WakeReceiver {
        self.inner.subscribe()
    }
}

/// 50 streams of 50 jobs cost one database read per tick between them, not
/// one per stream and tick; then every stream still gets its job's end.
async fn many_streams_cost_one_poll_per_tick(db: TestDb) {
    const STREAMS: usize = 50;
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let (tenant, key) = tenant_and_key(stores.as_ref(), "acme", Role::Viewer).await;
    let counting = Arc::new(CountingStore {
        inner: stores.clone().job_store(),
        calls: AtomicU64::new(0),
    });
    let mut state_ = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()));
    state_.jobs = JobClient::new(
        counting.clone(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    );
    let state_ = state_.with_event_streams(streams_config(STREAMS, STREAMS), None);
    let hub = state_.event_hub.clone();
    let router = longhaul_api::router(state_);

    let mut ids = Vec::new();
    for _ in 0..STREAMS {
        ids.push(enqueue(&db.store, &tenant, None).await);
    }
    let mut streams = Vec::new();
    for id in &ids {
        streams.push(open_stream(&router, *id, &key, None).await);
    }
    wait_until("every stream follows its job", || hub.streams() == STREAMS).await;

    let (calls_before, polls_before, ticks_before) = (counting.calls(), hub.polls(), hub.ticks());
    let polls_target = polls_before + 20;
    wait_until("the hub reads 20 times", || hub.polls() >= polls_target).await;
    let (calls, polls, ticks) = (
        counting.calls() - calls_before,
        hub.polls() - polls_before,
        hub.ticks() - ticks_before,
    );
    // Every call in the window is the hub's one read per tick (give or take
    // the one in flight at either end); the streams make none.
    assert!(
        calls <= polls + 1,
        "{calls} store calls for {polls} hub reads by {STREAMS} idle streams"
    );
    assert!(
        polls <= ticks + 1,
        "{polls} hub reads in {ticks} ticks: more than one per tick"
    );

    for id in &ids {
        db.store.cancel(&tenant.id, *id).await.expect("cancel");
    }
    for (stream, id) in streams.into_iter().zip(&ids) {
        let frames = stream.await.expect("reader");
        let cancelled = *log_ids(&db.store, &tenant, *id)
            .await
            .last()
            .expect("a cancelled event");
        assert_eq!(
            shape(&frames),
            vec![
                state("queued"),
                logged("cancelled", cancelled),
                state("cancelled")
            ]
        );
        assert_eq!(frames[2].data["status"], "cancelled");
    }
    wait_until("the hub stops with its last stream", || !hub.active()).await;
}

// ---- caps ------------------------------------------------------------------------

/// Past the streams a key may hold, or the process serves, a stream is
/// refused with `429 rate_limited` and `Retry-After`; a closed stream frees
/// its place at once.
async fn streams_are_capped_per_key_and_per_process(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let (tenant, first_key) = tenant_and_key(stores.as_ref(), "acme", Role::Viewer).await;
    let second_key = another_key(stores.as_ref(), &tenant, Role::Viewer).await;
    let state_ = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_event_streams(streams_config(2, 3), None);
    let slots = state_.event_streams.clone();
    let router = longhaul_api::router(state_);
    let id = enqueue(&db.store, &tenant, None).await;

    let open = |key: &str| router.clone().oneshot(stream_request(id, key, None));
    let a1 = open(&first_key).await.expect("response");
    let a2 = open(&first_key).await.expect("response");
    assert_eq!((a1.status(), a2.status()), (StatusCode::OK, StatusCode::OK));

    let refused = crate::http::send(&router, stream_request(id, &first_key, None)).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(refused.body["error"]["details"]["scope"], "key");
    assert_eq!(refused.body["error"]["details"]["limit"], 2);
    assert_eq!(refused.retry_after(), 5);

    let b1 = open(&second_key).await.expect("response");
    assert_eq!(b1.status(), StatusCode::OK);
    let refused = crate::http::send(&router, stream_request(id, &second_key, None)).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(refused.body["error"]["details"]["scope"], "process");
    assert_eq!(refused.body["error"]["details"]["limit"], 3);
    assert_eq!(refused.retry_after(), 5);
    assert_eq!(slots.open(), 3);

    drop(a1);
    assert_eq!(slots.open(), 2, "a closed stream frees its place");
    let a3 = open(&first_key).await.expect("response");
    assert_eq!(a3.status(), StatusCode::OK);
    drop((a2, a3, b1));
    assert_eq!(slots.open(), 0);
    let missing = crate::http::send(&router, stream_request(JobId::new(), &second_key, None)).await;
    missing.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(slots.open(), 0, "a refused stream keeps no place");
}

// ---- across replicas through Redis -------------------------------------------------

fn unique_namespace() -> String {
    format!("longhaul:events:test-{}", uuid::Uuid::now_v7().simple())
}

async fn relay(url: &str, namespace: &str) -> Arc<JobEventRelay> {
    Arc::new(
        JobEventRelay::connect(url, namespace)
            .await
            .unwrap_or_else(|e| {
                panic!("Redis must be reachable for the test suite at {url} (set LONGHAUL_TEST_REDIS_URL): {e}")
            }),
    )
}

/// An API instance of its own (store pool, Redis connections, hub) over the
/// shared database, polling through `relay`.
async fn replica(db: &TestDb, relay: Arc<JobEventRelay>) -> (Router, JobEventHub, Arc<dyn Stores>) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let state_ = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_event_streams(streams_config(20, 100), Some(relay));
    let hub = state_.event_hub.clone();
    (longhaul_api::router(state_), hub, stores)
}

/// Two API instances sharing Redis: both deliver every event to their
/// streams while only the one holding the lease reads the database; once it
/// has no stream left, the other takes over.
async fn replicas_share_one_poller_through_redis(db: TestDb) {
    let url = redis_url();
    let namespace = unique_namespace();
    let (one, one_hub, stores) = replica(&db, relay(&url, &namespace).await).await;
    let (two, two_hub, _) = replica(&db, relay(&url, &namespace).await).await;
    let (tenant, key) = tenant_and_key(stores.as_ref(), "acme", Role::Viewer).await;

    // A job nobody runs keeps a stream open on the first instance, which
    // takes the lease.
    let idle = enqueue(&db.store, &tenant, Some("idle")).await;
    let anchor = open_stream(&one, idle, &key, None).await;
    wait_until("the first instance polls", || one_hub.polls() > 0).await;
    assert!(one_hub.follows_redis());

    let id = enqueue(&db.store, &tenant, None).await;
    let on_one = open_stream(&one, id, &key, None).await;
    let on_two = open_stream(&two, id, &key, None).await;
    wait_until("both instances follow the job", || {
        one_hub.streams() == 2 && two_hub.streams() == 1
    })
    .await;
    let ticks_target = two_hub.ticks() + 5;
    wait_until("the second instance ticks", || {
        two_hub.ticks() >= ticks_target
    })
    .await;
    let job = claim(&db.store, id).await;
    progress(&db.store, &job, 1).await;
    progress(&db.store, &job, 2).await;
    succeed(&db.store, &job).await;
    let all = log_ids(&db.store, &tenant, id).await;
    let expected = vec![
        state("queued"),
        logged("started", all[0]),
        logged("progress", all[1]),
        logged("progress", all[2]),
        logged("succeeded", all[3]),
        state("succeeded"),
    ];
    assert_eq!(shape(&on_one.await.expect("reader")), expected);
    assert_eq!(shape(&on_two.await.expect("reader")), expected);
    assert_eq!(
        two_hub.polls(),
        0,
        "the second instance read the database while the first held the lease"
    );
    assert!(one_hub.polls() > 0);

    // The first instance's last stream closes: it gives the lease up, and
    // the second polls for its own new stream.
    anchor.abort();
    let _ = anchor.await;
    wait_until("the first instance stops polling", || !one_hub.active()).await;
    let next = enqueue(&db.store, &tenant, None).await;
    let on_two = open_stream(&two, next, &key, None).await;
    wait_until("the second instance follows", || two_hub.streams() == 1).await;
    db.store.cancel(&tenant.id, next).await.expect("cancel");
    let cancelled = *log_ids(&db.store, &tenant, next)
        .await
        .last()
        .expect("cancelled");
    assert_eq!(
        shape(&on_two.await.expect("reader")),
        vec![
            state("queued"),
            logged("cancelled", cancelled),
            state("cancelled")
        ]
    );
    assert!(
        two_hub.polls() > 0,
        "the second instance took the lease over"
    );

    relay(&url, &namespace)
        .await
        .clear()
        .await
        .expect("clean up");
}

/// A TCP proxy to Redis that the test can cut: every connection through it
/// closes and no new one is accepted.
async fn redis_proxy(redis: &str) -> (String, CancellationToken) {
    let rest = redis.strip_prefix("redis://").expect("a redis:// URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, target) = match authority.rsplit_once('@') {
        Some((credentials, target)) => (format!("{credentials}@"), target.to_string()),
        None => (String::new(), authority.to_string()),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
    let port = listener.local_addr().expect("address").port();
    let cut = CancellationToken::new();
    let accepting = cut.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => return,
                },
                _ = accepting.cancelled() => return,
            };
            let target = target.clone();
            let closing = accepting.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = closing.cancelled() => {}
                }
            });
        }
    });
    (format!("redis://{credentials}127.0.0.1:{port}/{path}"), cut)
}

/// When Redis goes away, a replica's streams carry on: it polls the
/// database itself.
async fn a_replica_without_redis_polls_for_itself(db: TestDb) {
    let url = redis_url();
    let namespace = unique_namespace();
    let (proxied, cut) = redis_proxy(&url).await;
    let (router, hub, stores) = replica(&db, relay(&proxied, &namespace).await).await;
    let (tenant, key) = tenant_and_key(stores.as_ref(), "acme", Role::Viewer).await;

    let id = enqueue(&db.store, &tenant, None).await;
    let stream = open_stream(&router, id, &key, None).await;
    wait_until("the instance follows through Redis", || {
        hub.streams() == 1 && hub.polls() > 0
    })
    .await;

    assert!(hub.follows_redis());
    cut.cancel();
    wait_until("the instance notices Redis is gone", || {
        !hub.follows_redis()
    })
    .await;
    db.store.cancel(&tenant.id, id).await.expect("cancel");
    let cancelled = *log_ids(&db.store, &tenant, id)
        .await
        .last()
        .expect("cancelled");
    assert_eq!(
        shape(&stream.await.expect("reader")),
        vec![
            state("queued"),
            logged("cancelled", cancelled),
            state("cancelled")
        ]
    );

    relay(&url, &namespace)
        .await
        .clear()
        .await
        .expect("clean up");
}

both_stores!(
    a_client_follows_a_job_to_its_end,
    a_resumed_stream_catches_up_then_follows,
    many_streams_cost_one_poll_per_tick,
    streams_are_capped_per_key_and_per_process,
    replicas_share_one_poller_through_redis,
    a_replica_without_redis_polls_for_itself,
);
