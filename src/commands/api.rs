//! `longhaul api`: the HTTP API role, until SIGTERM or ctrl-c.

use std::sync::Arc;

use anyhow::Context;
use longhaul_api::lockout::{Lockout, MemoryLockout, RedisLockout, REDIS_NAMESPACE};
use longhaul_api::rate_limit::{self, MemoryRateLimiter, RateLimiter, RedisRateLimiter};
use longhaul_api::AppState;
use longhaul_core::artifacts::ArtifactStores;
use longhaul_core::tenancy::Stores;
use longhaul_core::{Catalogue, Config};

use crate::runtime;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let stores = runtime::connect_for_requests(&config).await?;
    let artifacts = runtime::artifact_stores(&config).await?;
    let state = app_state(&config, stores, artifacts).await?;
    let shutdown = runtime::shutdown_on_signal();
    longhaul_api::serve(
        config.api_addr,
        state,
        runtime::serve_options(&config),
        async move { shutdown.cancelled().await },
    )
    .await?;
    Ok(())
}

/// The API's shared state as the configuration asks: counters (Redis or in
/// process), proxy trust, the key and job-status caches, artifact storage.
pub async fn app_state(
    config: &Config,
    stores: Arc<dyn Stores>,
    artifacts: Arc<ArtifactStores>,
) -> anyhow::Result<AppState> {
    let (lockout, rate_limiter) = counters(config).await?;
    Ok(AppState::new(stores, Arc::new(Catalogue::builtin()))
        .with_artifacts(artifacts)
        .with_scan_config(config.scans.clone())
        .with_lockout(lockout)
        .with_rate_limiter(rate_limiter)
        .with_trust_forwarded_for(config.trust_forwarded_for)
        .with_auth_cache(config.auth_cache_ttl)
        .with_job_status_cache(config.job_status_cache_ttl))
}

/// The brute-force lockout and creation-rate counters: in Redis when
/// `LONGHAUL_REDIS_URL` is set (shared by every API replica, over one
/// connection; start-up fails if it is unreachable), else in this process.
pub async fn counters(config: &Config) -> anyhow::Result<(Arc<dyn Lockout>, Arc<dyn RateLimiter>)> {
    match &config.redis_url {
        Some(url) => {
            let lockout = RedisLockout::connect(url, REDIS_NAMESPACE)
                .await
                .with_context(|| {
                    format!(
                        "connecting to Redis at {} (LONGHAUL_REDIS_URL) for the API's counters",
                        runtime::redact(url)
                    )
                })?;
            let rate_limiter = RedisRateLimiter::with_connection(
                lockout.connection(),
                rate_limit::REDIS_NAMESPACE,
            );
            tracing::info!(redis = %runtime::redact(url), "lockout and rate-limit counters in Redis");
            Ok((Arc::new(lockout), Arc::new(rate_limiter)))
        }
        None => Ok((
            Arc::new(MemoryLockout::new()),
            Arc::new(MemoryRateLimiter::new()),
        )),
    }
}
