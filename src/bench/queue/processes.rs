//! `bench queue --processes N`: the drain by N separate `longhaul worker`
//! processes (this very binary) against the scratch database, as users scale.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::JobKind;
use longhaul_core::{JobClient, JobState};
use longhaul_worker::jobs::noop::Noop;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::process::{Child, Command};

use super::{percentile, round2, wait_until_succeeded, QueueBenchArgs, TENANT};
use crate::bench::scratch::Scratch;

/// Workers are told to poll this often, so that a process that starts after
/// the NOTIFY of the bulk enqueue still finds the jobs at once.
const POLL_INTERVAL_MS: &str = "50";

pub(super) async fn run(
    args: &QueueBenchArgs,
    scratch: &Scratch,
    client: &JobClient,
    enqueue_per_s: f64,
) -> anyhow::Result<Value> {
    anyhow::ensure!(
        scratch.backend == "postgres",
        "--processes needs PostgreSQL (SQLite has one writer per file)"
    );
    let data_dir = std::env::temp_dir().join(format!("longhaul-bench-{}", std::process::id()));
    let mut workers = Vec::with_capacity(args.processes);
    for _ in 0..args.processes {
        workers.push(spawn_worker(args, scratch, &data_dir)?);
    }
    let drained = args.backlog + args.jobs;
    let outcome = measure(args, scratch, client, drained, enqueue_per_s).await;
    for worker in &mut workers {
        let _ = worker.start_kill();
    }
    for worker in &mut workers {
        let _ = worker.wait().await;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome
}

fn spawn_worker(
    args: &QueueBenchArgs,
    scratch: &Scratch,
    data_dir: &std::path::Path,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the longhaul binary")?;
    let connections = (args.concurrency / 2).clamp(4, 16);
    Command::new(exe)
        .args(["worker", "--queues", "default", "--concurrency"])
        .arg(args.concurrency.to_string())
        .env("LONGHAUL_DATABASE_URL", &scratch.url)
        .env("LONGHAUL_DATABASE_MAX_CONNECTIONS", connections.to_string())
        .env("LONGHAUL_DATA_DIR", data_dir)
        .env("LONGHAUL_POLL_INTERVAL_MS", POLL_INTERVAL_MS)
        .env("LONGHAUL_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting a longhaul worker process")
}

async fn measure(
    args: &QueueBenchArgs,
    scratch: &Scratch,
    client: &JobClient,
    drained: usize,
    enqueue_per_s: f64,
) -> anyhow::Result<Value> {
    wait_until_succeeded(scratch.store.as_ref(), drained).await?;
    let mut conn = sqlx::PgConnection::connect(&scratch.url).await?;
    // The database's own clock: first claim to last completion, whatever the
    // processes' start-up times.
    let span_s: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 FROM jobs",
    )
    .fetch_one(&mut conn)
    .await?;
    let mut latencies = Vec::with_capacity(args.latency_samples);
    for _ in 0..args.latency_samples {
        let job = client
            .enqueue(EnqueueRequest::new(TENANT, Noop::NAME, json!({})))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = loop {
            let job = client.store().get_job(TENANT, job.id).await?;
            if job.state == JobState::Succeeded {
                break job;
            }
            anyhow::ensure!(Instant::now() < deadline, "job {} did not run", job.id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let started_at = started
            .started_at
            .context("a succeeded job without a start time")?;
        let waited = (started_at - started.created_at)
            .num_microseconds()
            .unwrap_or(0);
        latencies.push(waited as f64 / 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(json!({
        "bench": "queue",
        "backend": scratch.backend,
        "jobs": args.jobs,
        "backlog": args.backlog,
        "processes": args.processes,
        "concurrency": args.concurrency,
        "enqueue_per_s": enqueue_per_s.round(),
        "drain_per_s": (drained as f64 / span_s.max(1e-6)).round(),
        "latency_p50_ms": round2(percentile(&latencies, 0.50)),
        "latency_p99_ms": round2(percentile(&latencies, 0.99)),
        "latency_measured": "database created_at -> started_at",
    }))
}
