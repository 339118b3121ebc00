//! Running one real job to its end in a worker pool of this process: what
//! the benchmarks of kinds that do work (export, scan, retention) measure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::{Job, JobClient, JobState};
use longhaul_worker::{JobServices, PoolConfig, WorkerPool};
use tokio_util::sync::CancellationToken;

/// A finished job and the seconds from its enqueue to its success.
pub struct JobRun {
    pub seconds: f64,
    pub job: Job,
}

/// Enqueues `request`, runs it in a one-slot pool on `queue`, and waits for
/// its success (an error if it fails or is cancelled).
pub async fn run_one_job(
    services: &JobServices,
    queue: &str,
    request: EnqueueRequest,
) -> anyhow::Result<JobRun> {
    let registry = longhaul_worker::jobs::registry_with_services(services);
    let job_store = services.stores.clone().job_store();
    let pool = WorkerPool::new(
        job_store.clone(),
        registry,
        PoolConfig {
            queues: vec![queue.to_string()],
            concurrency: 1,
            claim_batch: 1,
            prefetch: 0,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(10),
            shutdown_grace: Duration::from_secs(5),
            rescue_interval: None,
            job_retention: Duration::from_secs(86_400),
            default_max_running_per_tenant: None,
            worker_id: longhaul_worker::default_worker_id(),
        },
    );
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(pool.run(shutdown.clone()));
    let client = JobClient::new(
        job_store.clone(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    );
    let tenant = request.tenant_id.clone();
    let started = Instant::now();
    let id = client.enqueue(request).await?.id;
    let job = loop {
        let job = job_store.get_job(&tenant, id).await?;
        match job.state {
            JobState::Succeeded => break job,
            JobState::Failed | JobState::Cancelled => {
                shutdown.cancel();
                bail!(
                    "the {} job ended {}: {:?}",
                    job.kind,
                    job.state,
                    job.last_error
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    worker.await?;
    Ok(JobRun { seconds, job })
}
