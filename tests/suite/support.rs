//! Shared pieces for runtime tests: test job kinds with observable behaviour,
//! pool settings sized for tests, and waiting helpers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use longhaul_core::artifacts::StorageError;
use longhaul_core::backoff::Backoff;
use longhaul_core::job::Job;
use longhaul_core::{Catalogue, JobId, JobState, JobStore, KindSpec};
use longhaul_worker::{JobContext, JobError, JobHandler, JobOutput, PoolConfig, Registry};
use serde_json::{json, Value};

pub const RECORD: &str = "test.record";
pub const FLAKY: &str = "test.flaky";
pub const PANIC: &str = "test.panic";
pub const HANG: &str = "test.hang";
pub const PERMANENT: &str = "test.permanent";
pub const OUTAGE: &str = "test.outage";

/// The bucket an [`OUTAGE`] job's raw errors name: tenants must never see it.
pub const SECRET_BUCKET: &str = "lh-secret-eu-7f3a";

/// Every start of a `test.record` job: (job, tenant, attempt), in start order,
/// plus the most jobs of one tenant seen running at once.
#[derive(Default, Clone)]
pub struct Journal {
    pub starts: Arc<Mutex<Vec<(JobId, String, i32)>>>,
    running: Arc<Mutex<HashMap<String, i64>>>,
    pub max_running: Arc<Mutex<HashMap<String, i64>>>,
    pub total: Arc<AtomicI64>,
}

impl Journal {
    pub fn runs_per_job(&self) -> HashMap<JobId, usize> {
        let mut runs = HashMap::new();
        for (id, _, _) in self.starts.lock().expect("journal").iter() {
            *runs.entry(*id).or_default() += 1;
        }
        runs
    }

    pub fn starts_of(&self, tenant: &str) -> usize {
        self.starts
            .lock()
            .expect("journal")
            .iter()
            .filter(|(_, t, _)| t == tenant)
            .count()
    }

    pub fn max_running_of(&self, tenant: &str) -> i64 {
        self.max_running
            .lock()
            .expect("journal")
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }
}

/// Records its start, holds the slot for `params.ms` milliseconds, succeeds.
struct Record(Journal);

#[async_trait]
impl JobHandler for Record {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let tenant = ctx.tenant_id().to_string();
        self.0
            .starts
            .lock()
            .expect("journal")
            .push((ctx.job_id(), tenant.clone(), ctx.attempt()));
        {
            let mut running = self.0.running.lock().expect("journal");
            let now = running.entry(tenant.clone()).or_default();
            *now += 1;
            let mut max = self.0.max_running.lock().expect("journal");
            let seen = max.entry(tenant.clone()).or_default();
            *seen = (*seen).max(*now);
        }
        let ms = ctx
            .job()
            .params
            .get("ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        *self
            .0
            .running
            .lock()
            .expect("journal")
            .entry(tenant)
            .or_default() -= 1;
        self.0.total.fetch_add(1, Ordering::SeqCst);
        Ok(json!({ "attempt": ctx.attempt() }))
    }
}

/// Fails (retryably) until attempt `params.succeedOn`.
struct Flaky;

#[async_trait]
impl JobHandler for Flaky {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let succeed_on = ctx
            .job()
            .params
            .get("succeedOn")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        if i64::from(ctx.attempt()) < succeed_on {
            return Err(JobError::retryable(format!(
                "flaky failure on attempt {}",
                ctx.attempt()
            )));
        }
        Ok(json!({ "succeededOn": ctx.attempt() }))
    }
}

struct Panics;

#[async_trait]
impl JobHandler for Panics {
    async fn run(&self, _ctx: JobContext) -> Result<JobOutput, JobError> {
        panic!("boom from a test handler")
    }
}

/// Waits for its cancellation token, then reports cancelled.
struct Hang;

#[async_trait]
impl JobHandler for Hang {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        ctx.cancelled().await;
        Err(JobError::Cancelled)
    }
}

struct Permanent;

#[async_trait]
impl JobHandler for Permanent {
    async fn run(&self, _ctx: JobContext) -> Result<JobOutput, JobError> {
        Err(JobError::permanent("the input can never work"))
    }
}

/// Fails until attempt `params.succeedOn` the way a kind fails when the
/// platform under it does: `params.cause` is `storage` (the object store
/// unavailable: transient), `database` (a pool timeout: transient) or
/// `refused` (S3 refused the request: not transient). The raw errors carry
/// what an SDK dump does (bucket, request id, XML).
struct Outage;

#[async_trait]
impl JobHandler for Outage {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let params = &ctx.job().params;
        let succeed_on = params
            .get("succeedOn")
            .and_then(Value::as_i64)
            .unwrap_or(99);
        if i64::from(ctx.attempt()) >= succeed_on {
            return Ok(json!({ "succeededOn": ctx.attempt() }));
        }
        let dump = format!(
            "dispatch failure: bucket {SECRET_BUCKET}, request id 4442587FB7D0A2F9, \
             <Error><Code>SlowDown</Code></Error>"
        );
        Err(match params.get("cause").and_then(Value::as_str) {
            Some("database") => JobError::from(longhaul_core::Error::Database {
                context: "saving progress",
                source: sqlx::Error::PoolTimedOut,
            }),
            Some("refused") => JobError::from(StorageError::S3 {
                operation: "UploadPart",
                message: format!("AccessDenied: {dump}"),
            }),
            _ => JobError::from(StorageError::Unavailable {
                operation: "UploadPart",
                message: dump,
            }),
        })
    }
}

/// The built-in kinds plus the test kinds (retry back-off 300 ms ±10%;
/// `test.outage` keeps the default transient back-off).
pub fn test_catalogue() -> Arc<Catalogue> {
    let backoff = Backoff {
        base: Duration::from_millis(300),
        max: Duration::from_secs(5),
        jitter: 0.1,
    };
    let mut catalogue = longhaul_worker::jobs::catalogue();
    catalogue.register(KindSpec::new(RECORD).max_attempts(3).backoff(backoff));
    catalogue.register(KindSpec::new(FLAKY).max_attempts(3).backoff(backoff));
    catalogue.register(KindSpec::new(PANIC).max_attempts(1));
    catalogue.register(
        KindSpec::new(HANG)
            .max_attempts(1)
            .timeout(Duration::from_millis(300)),
    );
    catalogue.register(KindSpec::new(PERMANENT).max_attempts(5));
    catalogue.register(KindSpec::new(OUTAGE).max_attempts(3).backoff(backoff));
    Arc::new(catalogue)
}

pub fn test_registry(journal: &Journal) -> Registry {
    let mut registry = longhaul_worker::jobs::registry_for(test_catalogue());
    registry
        .register(RECORD, Record(journal.clone()))
        .expect("record kind");
    registry.register(FLAKY, Flaky).expect("flaky kind");
    registry.register(PANIC, Panics).expect("panic kind");
    registry.register(HANG, Hang).expect("hang kind");
    registry
        .register(PERMANENT, Permanent)
        .expect("permanent kind");
    registry.register(OUTAGE, Outage).expect("outage kind");
    registry
}

/// A pool for tests: fast polling, a 3 s lease, a short grace period.
pub fn pool_config(concurrency: usize) -> PoolConfig {
    PoolConfig {
        queues: vec!["default".into()],
        concurrency,
        claim_batch: concurrency,
        prefetch: concurrency,
        lease: Duration::from_secs(3),
        poll_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(2),
        rescue_interval: Some(Duration::from_millis(500)),
        job_retention: Duration::from_secs(86_400),
        default_max_running_per_tenant: None,
        worker_id: longhaul_worker::default_worker_id(),
    }
}

/// Polls a job until `done` holds (panics with the last state after `within`).
pub async fn wait_for_job(
    store: &dyn JobStore,
    tenant: &str,
    id: JobId,
    within: Duration,
    done: impl Fn(&Job) -> bool,
) -> Job {
    let deadline = Instant::now() + within;
    loop {
        let job = store.get_job(tenant, id).await.expect("reading the job");
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not get there in {within:?}; last seen: {job:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn wait_for_state(
    store: &dyn JobStore,
    tenant: &str,
    id: JobId,
    state: JobState,
    within: Duration,
) -> Job {
    wait_for_job(store, tenant, id, within, |job| job.state == state).await
}

pub async fn count(store: &dyn JobStore, state: JobState) -> i64 {
    store
        .count_by_state()
        .await
        .expect("counting jobs")
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

/// Waits until `n` jobs are in `state`.
pub async fn wait_for_count(store: &dyn JobStore, state: JobState, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen = count(store, state).await;
        if seen >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {seen} of {n} jobs reached {state} in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
