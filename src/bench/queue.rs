//! `longhaul bench queue`: the queue engine's figures on one store.
//! - `enqueue_per_s`: bulk enqueue of `--jobs` system.noop jobs (batches of 5,000).
//! - `drain_per_s`: a pool of `--concurrency` slots runs them all to `succeeded`,
//!   from the pool's start to the last job's `finished_at`.
//! - `latency_p50_ms` / `latency_p99_ms`: enqueue→handler start of 200 single
//!   jobs on an idle queue (wake-up path: NOTIFY on PostgreSQL, in-process on SQLite).
//! - `--backlog N`: N jobs of another tenant are queued first and the tables
//!   analysed (as autovacuum would); the drain then covers the backlog too,
//!   and a third tenant enqueues one job every 10 ms while it runs:
//!   `other_tenant_start_p99_ms` is how long those waited to start. On
//!   PostgreSQL the claim's plan is printed to stderr.
//! - `--processes N`: the jobs are drained by N `longhaul worker` processes
//!   (this binary, `--concurrency` slots each) instead of a pool in this
//!   process; `drain_per_s` spans the first claim to the last completion as
//!   the database recorded them, and the latencies are the database's
//!   enqueue→claim times (`created_at` → `started_at`) of single jobs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::Args;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::JobKind;
use longhaul_core::{JobClient, JobId, JobState, JobStore};
use longhaul_worker::jobs::noop::Noop;
use longhaul_worker::{
    JobContext, JobError, JobHandler, JobOutput, PoolConfig, Registry, WorkerPool,
    DEFAULT_CLAIM_BATCH, DEFAULT_PREFETCH,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::scratch::Scratch;

mod processes;

#[derive(Args, Debug)]
pub struct QueueBenchArgs {
    #[arg(long)]
    pub database_url: String,
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    #[arg(long, default_value_t = 24)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Jobs of another tenant queued (and analysed) before the measured run.
    #[arg(long, default_value_t = 0)]
    pub backlog: usize,
    /// Drain with this many `longhaul worker` processes (0: a pool in this
    /// process).
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
}

const ENQUEUE_BATCH: usize = 5_000;
pub(super) const TENANT: &str = "bench";
const BACKLOG_TENANT: &str = "backlog";
const OTHER_TENANT: &str = "other";

/// `system.noop` that also reports which job started when (jobs of the
/// backlog tenant are not reported: there may be a million).
/// It also counts the runs of the bench and backlog tenants' jobs, so that
/// waiting for the drain needs no count over the jobs table (at a million
/// jobs each count would load the database being measured).
struct StartProbe {
    starts: mpsc::UnboundedSender<(JobId, Instant)>,
    drained: Arc<AtomicUsize>,
}

#[async_trait]
impl JobHandler for StartProbe {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        if ctx.tenant_id() != BACKLOG_TENANT {
            let _ = self.starts.send((ctx.job_id(), Instant::now()));
        }
        if ctx.tenant_id() != OTHER_TENANT {
            self.drained.fetch_add(1, Ordering::Relaxed);
        }
        Ok(json!({}))
    }
}

pub async fn run(args: QueueBenchArgs) -> anyhow::Result<()> {
    let scratch = Scratch::create(
        &args.database_url,
        (args.concurrency as u32 / 2).clamp(8, 32),
    )
    .await?;
    let store = scratch.store.clone();
    let catalogue = Arc::new(longhaul_worker::jobs::catalogue());
    let client = JobClient::new(store.clone(), catalogue.clone());

    if args.backlog > 0 {
        bulk_enqueue(&client, BACKLOG_TENANT, args.backlog).await?;
        scratch.analyze().await?;
        if let Some(plan) = scratch.claim_plan(args.concurrency).await? {
            eprintln!("claim plan with {} jobs queued:\n{plan}", args.backlog);
        }
    }
    let enqueue_per_s = bulk_enqueue(&client, TENANT, args.jobs).await?;
    if args.processes > 0 {
        let figures = processes::run(&args, &scratch, &client, enqueue_per_s).await;
        scratch.remove().await?;
        println!("{}", figures?);
        return Ok(());
    }

    let (starts, mut started) = mpsc::unbounded_channel();
    let mut registry = Registry::new(catalogue);
    let ran = Arc::new(AtomicUsize::new(0));
    registry.register(
        Noop::NAME,
        StartProbe {
            starts,
            drained: ran.clone(),
        },
    )?;
    let pool = WorkerPool::new(store.clone(), registry, pool_config(args.concurrency));
    let shutdown = CancellationToken::new();
    let drain_started = chrono::Utc::now();
    let pool_task = tokio::spawn(pool.run(shutdown.clone()));
    let drained = args.backlog + args.jobs;
    let others = if args.backlog > 0 {
        Some(tokio::spawn(trickle(client.clone(), ran.clone(), drained)))
    } else {
        None
    };
    while ran.load(Ordering::Relaxed) < drained {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_until_succeeded(store.as_ref(), drained).await?;
    let drain_s = (scratch.last_finished_at().await? - drain_started)
        .to_std()
        .unwrap_or_default()
        .as_secs_f64();
    let drain_per_s = drained as f64 / drain_s.max(1e-6);
    let other_tenant_start_p99_ms = match others {
        Some(task) => {
            let enqueued = task.await??;
            wait_until_succeeded(store.as_ref(), drained + enqueued.len()).await?;
            let mut waits = Vec::with_capacity(enqueued.len());
            while let Ok((id, at)) = started.try_recv() {
                if let Some(queued_at) = enqueued.get(&id) {
                    waits.push(at.saturating_duration_since(*queued_at).as_secs_f64() * 1000.0);
                }
            }
            waits.sort_by(f64::total_cmp);
            Some(round2(percentile(&waits, 0.99)))
        }
        None => None,
    };
    while started.try_recv().is_ok() {}

    let mut latencies = Vec::with_capacity(args.latency_samples);
    let mut enqueue_calls = Vec::with_capacity(args.latency_samples);
    for _ in 0..args.latency_samples {
        let enqueued_at = Instant::now();
        client
            .enqueue(EnqueueRequest::new(TENANT, Noop::NAME, json!({})))
            .await?;
        enqueue_calls.push(enqueued_at.elapsed().as_secs_f64() * 1000.0);
        let (_, started_at) = tokio::time::timeout(Duration::from_secs(10), started.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the pool stopped"))?;
        latencies.push(
            started_at
                .saturating_duration_since(enqueued_at)
                .as_secs_f64()
                * 1000.0,
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    pool_task.await?;
    latencies.sort_by(f64::total_cmp);
    enqueue_calls.sort_by(f64::total_cmp);

    let figures = json!({
        "bench": "queue",
        "backend": scratch.backend,
        "jobs": args.jobs,
        "backlog": args.backlog,
        "concurrency": args.concurrency,
        "other_tenant_start_p99_ms": other_tenant_start_p99_ms,
        "enqueue_per_s": enqueue_per_s.round(),
        "drain_per_s": drain_per_s.round(),
        "latency_p50_ms": round2(percentile(&latencies, 0.50)),
        "latency_p99_ms": round2(percentile(&latencies, 0.99)),
        "enqueue_call_p50_ms": round2(percentile(&enqueue_calls, 0.50)),
    });
    scratch.remove().await?;
    println!("{figures}");
    Ok(())
}

fn pool_config(concurrency: usize) -> PoolConfig {
    PoolConfig {
        queues: vec!["default".into()],
        concurrency,
        // As a `longhaul worker` pool has them.
        claim_batch: DEFAULT_CLAIM_BATCH,
        prefetch: DEFAULT_PREFETCH,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(5),
        rescue_interval: None,
        job_retention: Duration::from_secs(86_400),
        default_max_running_per_tenant: None,
        worker_id: "bench".into(),
    }
}

/// Enqueues one job of a third tenant every 10 ms until the other tenants'
/// `drained` jobs ran; answers when each was enqueued.
async fn trickle(
    client: JobClient,
    ran: Arc<AtomicUsize>,
    drained: usize,
) -> anyhow::Result<HashMap<JobId, Instant>> {
    let mut enqueued = HashMap::new();
    let mut every = tokio::time::interval(Duration::from_millis(10));
    loop {
        every.tick().await;
        if ran.load(Ordering::Relaxed) >= drained {
            return Ok(enqueued);
        }
        let at = Instant::now();
        let job = client
            .enqueue(EnqueueRequest::new(OTHER_TENANT, Noop::NAME, json!({})))
            .await?;
        enqueued.insert(job.id, at);
    }
}

async fn bulk_enqueue(client: &JobClient, tenant: &str, jobs: usize) -> anyhow::Result<f64> {
    let requests: Vec<EnqueueRequest> = (0..jobs)
        .map(|_| EnqueueRequest::new(tenant, Noop::NAME, json!({})))
        .collect();
    let started = Instant::now();
    let mut stored = 0;
    for batch in requests.chunks(ENQUEUE_BATCH) {
        stored += client.enqueue_many(batch.to_vec()).await?.len();
    }
    anyhow::ensure!(stored == jobs, "enqueued {stored} of {jobs} jobs");
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

pub(super) async fn wait_until_succeeded(store: &dyn JobStore, jobs: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let succeeded = succeeded(store).await?;
        if succeeded as usize >= jobs {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "drain did not finish in an hour ({succeeded}/{jobs})"
        );
        // Counting is a scan of the jobs table: polling often would load the
        // database being measured. The drain's end is read afterwards from
        // the jobs' finish times, so the poll only has to notice it.
        let every = if jobs > 50_000 { 250 } else { 100 };
        tokio::time::sleep(Duration::from_millis(every)).await;
    }
}

async fn succeeded(store: &dyn JobStore) -> anyhow::Result<i64> {
    Ok(store
        .count_by_state()
        .await?
        .into_iter()
        .find(|(state, _)| *state == JobState::Succeeded)
        .map_or(0, |(_, n)| n))
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
