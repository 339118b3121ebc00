//! `longhaul scheduler`: fires due schedules and runs the maintenance loops
//! (lease rescue, pruning, artifact sweeping) until SIGTERM or ctrl-c. Any number may run.

use std::sync::Arc;

use longhaul_core::Config;
use longhaul_scheduler::{SchedulerConfig, SchedulerStore};

use crate::runtime;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let stores = runtime::connect(&config).await?;
    let artifacts = runtime::artifact_stores(&config).await?;
    let store: Arc<dyn SchedulerStore> = stores;
    tracing::info!("scheduler starting");
    longhaul_scheduler::run(
        store,
        Arc::new(longhaul_worker::jobs::catalogue()),
        SchedulerConfig::from_config(&config),
        Some(artifacts),
        runtime::shutdown_on_signal().stop,
    )
    .await;
    Ok(())
}
