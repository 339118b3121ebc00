//! `longhaul dev`: the embedded mode. Migrates the configured store (a SQLite
//! file under ./longhaul-data by default) and runs a worker pool for every
//! queue of the catalogue in this one process, until ctrl-c.

use std::collections::BTreeSet;

use clap::Args;
use longhaul_core::Config;
use longhaul_worker::{PoolConfig, Registry, WorkerPool};

use crate::runtime;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Jobs run at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
}

pub async fn run(config: Config, args: DevArgs) -> anyhow::Result<()> {
    let store = runtime::connect(&config).await?;
    store.migrate().await?;
    let registry = Registry::builtin();
    let queues: BTreeSet<String> = registry
        .catalogue()
        .names()
        .filter_map(|kind| {
            registry
                .catalogue()
                .get(kind)
                .map(|spec| spec.queue.clone())
        })
        .collect();
    let mut pool_config = PoolConfig::from_config(&config);
    pool_config.queues = queues.into_iter().collect();
    pool_config.concurrency = usize::from(args.concurrency);
    println!(
        "Longhaul dev: store {}",
        runtime::redact(&config.database_url)
    );
    println!(
        "  worker pool: queues {:?}, concurrency {}",
        pool_config.queues, pool_config.concurrency
    );
    println!("  try: longhaul jobs enqueue --tenant demo --kind system.sleep --params '{{\"durationMs\":3000}}'");
    println!("  stop with ctrl-c");
    let pool = WorkerPool::new(store, registry, pool_config);
    pool.run(runtime::shutdown_on_signal()).await;
    Ok(())
}
