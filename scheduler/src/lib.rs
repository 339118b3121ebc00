//! longhaul-scheduler: the `longhaul scheduler` role (also inside `longhaul
//! dev`). It fires due schedules (`ticker.rs`: exactly one job per fire time
//! whatever the number of replicas, see `longhaul_core::schedule`) and runs
//! the maintenance loops (`maintenance.rs`: lease rescue and pruning;
//! `artifact_sweeper.rs`: expired and abandoned artifacts), each safe with
//! several replicas, and creates the platform's own schedules when they are
//! missing (`system_schedules.rs`: the nightly retention sweep), and queues
//! webhook deliveries for jobs that ended (`webhook_dispatcher.rs`). It keeps
//! no schedule in memory.

mod artifact_sweeper;
mod job_maker;
mod maintenance;
mod system_schedules;
mod ticker;
mod webhook_dispatcher;

use std::sync::Arc;
use std::time::Duration;

use longhaul_core::artifacts::ArtifactStores;
use longhaul_core::{Catalogue, Config};
use tokio_util::sync::CancellationToken;

pub use artifact_sweeper::{ArtifactSweeper, SweepReport};
pub use job_maker::CatalogueJobs;
pub use maintenance::Maintenance;
pub use system_schedules::{ensure_system_schedules, SYSTEM_SCHEDULES};
pub use ticker::{Ticker, TickerConfig};
pub use webhook_dispatcher::{DispatchReport, WebhookDispatcher, DISPATCH_INTERVAL, SETTLE};

/// The store the scheduler uses: jobs and schedules (both backends are).
pub use longhaul_core::store::Stores as SchedulerStore;

/// What the role runs, from the configuration.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub ticker: TickerConfig,
    /// How often expired leases are rescued.
    pub rescue_interval: Duration,
    /// How long finished jobs are kept.
    pub job_retention: Duration,
}

impl SchedulerConfig {
    pub fn from_config(config: &Config) -> Self {
        SchedulerConfig {
            ticker: TickerConfig {
                misfire_threshold: config.misfire_threshold,
                ..TickerConfig::default()
            },
            rescue_interval: config.rescue_interval,
            job_retention: config.job_retention,
        }
    }
}

/// Runs the ticker and the maintenance loops until `shutdown`; the artifact
/// sweeper too when `artifacts` is given.
pub async fn run(
    store: Arc<dyn SchedulerStore>,
    catalogue: Arc<Catalogue>,
    config: SchedulerConfig,
    artifacts: Option<Arc<ArtifactStores>>,
    shutdown: CancellationToken,
) {
    if let Err(error) = ensure_system_schedules(store.as_ref(), &catalogue).await {
        tracing::error!(%error, "creating the system schedules failed; they are created at the next start");
    }
    let mut maintenance =
        Maintenance::new(store.clone(), config.rescue_interval, config.job_retention);
    if let Some(artifacts) = artifacts {
        maintenance = maintenance.with_sweeper(ArtifactSweeper::new(store.clone(), artifacts));
    }
    let dispatcher = WebhookDispatcher::new(store.clone(), catalogue.clone());
    let ticker = Ticker::new(store, CatalogueJobs::new(catalogue), config.ticker);
    tokio::join!(
        ticker.run(shutdown.clone()),
        maintenance.run(shutdown.clone()),
        dispatcher.run(shutdown)
    );
}
