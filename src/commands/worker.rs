//! `longhaul worker`: a worker pool for some queues, until SIGTERM or ctrl-c
//! (running jobs then get the grace period; a second signal hands them back
//! at once).

use clap::Args;
use longhaul_core::config::parse_queue_list;
use longhaul_core::Config;
use longhaul_worker::{PoolConfig, WorkerPool};

use crate::runtime;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Comma-separated queues to serve (default: LONGHAUL_WORKER_QUEUES).
    #[arg(long, value_parser = parse_queues)]
    pub queues: Option<QueueList>,
    /// Jobs run at once (default: LONGHAUL_WORKER_CONCURRENCY).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: Option<u16>,
}

/// `--queues a,b` as one argument.
#[derive(Clone, Debug)]
pub struct QueueList(Vec<String>);

fn parse_queues(text: &str) -> Result<QueueList, String> {
    parse_queue_list(text).map(QueueList)
}

pub async fn run(config: Config, args: WorkerArgs) -> anyhow::Result<()> {
    let stores = runtime::connect(&config).await?;
    let artifacts = runtime::artifact_stores(&config).await?;
    let services = runtime::job_services(&config, stores.clone(), artifacts).await;
    let presence: std::sync::Arc<dyn longhaul_core::workers::WorkerStore> = stores.clone();
    let store: std::sync::Arc<dyn longhaul_core::JobStore> = stores;
    let mut pool_config = PoolConfig::from_config(&config);
    if let Some(QueueList(queues)) = args.queues {
        pool_config.queues = queues;
    }
    if let Some(concurrency) = args.concurrency {
        pool_config.concurrency = usize::from(concurrency);
    }
    tracing::info!(worker_id = %pool_config.worker_id, queues = ?pool_config.queues,
        concurrency = pool_config.concurrency, "worker starting");
    let pool = WorkerPool::new(
        store,
        longhaul_worker::jobs::registry_with_services(&services),
        pool_config,
    )
    .with_presence(presence);
    let report = pool.run_with(runtime::shutdown_on_signal()).await;
    tracing::info!(
        claimed = report.claimed,
        handed_back = report.handed_back,
        "worker stopped"
    );
    Ok(())
}
