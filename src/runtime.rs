//! Process plumbing shared by the roles: logging, the store connection, and
//! turning SIGTERM / ctrl-c into a shutdown token.

use std::sync::Arc;

use anyhow::Context;
use longhaul_core::artifacts::ArtifactStores;
use longhaul_core::store::PoolSettings;
use longhaul_core::tenancy::Stores;
use longhaul_core::Config;
use longhaul_worker::JobServices;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

pub fn init_logging(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Connects to the configured store (jobs and tenancy).
pub async fn connect(config: &Config) -> anyhow::Result<Arc<dyn Stores>> {
    connect_pool(config, PoolSettings::new(config.database_max_connections)).await
}

/// Connects to the configured store for the API role: its requests wait
/// `LONGHAUL_API_DATABASE_ACQUIRE_TIMEOUT_MS` for a connection, then answer 503.
pub async fn connect_for_requests(config: &Config) -> anyhow::Result<Arc<dyn Stores>> {
    let pool = PoolSettings::new(config.database_max_connections)
        .with_acquire_timeout(config.api_database_acquire_timeout);
    connect_pool(config, pool).await
}

/// The API's connection limits as configured (the cap follows the open-file
/// limit unless set).
pub fn serve_options(config: &Config) -> longhaul_api::ServeOptions {
    let defaults = longhaul_api::ServeOptions::default();
    longhaul_api::ServeOptions {
        max_connections: config
            .api_max_connections
            .unwrap_or(defaults.max_connections),
        header_read_timeout: config.api_header_read_timeout,
        idle_timeout: config.api_idle_timeout,
    }
}

async fn connect_pool(config: &Config, pool: PoolSettings) -> anyhow::Result<Arc<dyn Stores>> {
    if let Some(path) = config.database_url.strip_prefix("sqlite://") {
        if let Some(parent) = std::path::Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    longhaul_core::tenancy::connect_stores_pool(&config.database_url, pool)
        .await
        .with_context(|| format!("connecting to {}", redact(&config.database_url)))
}

/// The artifact stores the configuration names (a local folder by default).
pub async fn artifact_stores(config: &Config) -> anyhow::Result<Arc<ArtifactStores>> {
    let stores = ArtifactStores::from_config(&config.artifacts, &config.data_dir)
        .await
        .context("setting up artifact storage (LONGHAUL_ARTIFACT_STORE)")?;
    tracing::info!(artifacts = ?stores, "artifact storage");
    Ok(Arc::new(stores))
}

/// What job kinds that touch tenant data need.
pub async fn job_services(
    config: &Config,
    stores: Arc<dyn Stores>,
    artifacts: Arc<ArtifactStores>,
) -> JobServices {
    JobServices {
        stores,
        artifacts,
        artifact_retention: config.artifacts.retention,
        scans: config.scans.clone(),
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A token that fires on SIGTERM or ctrl-c.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "shutdown signal received: no new claims; running jobs get the grace period"
        );
        fire.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only ctrl-c stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
