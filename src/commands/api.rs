//! `longhaul api`: the HTTP API role, until SIGTERM or ctrl-c.

use std::sync::Arc;

use anyhow::Context;
use longhaul_api::job_event_relay::{self, JobEventRelay};
use longhaul_api::lockout::{Lockout, MemoryLockout, RedisLockout, REDIS_NAMESPACE};
use longhaul_api::rate_limit::{self, MemoryRateLimiter, RateLimiter, RedisRateLimiter};
use longhaul_api::AppState;
use longhaul_core::artifacts::ArtifactStores;
use longhaul_core::store::Stores;
use longhaul_core::Config;

use crate::runtime;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let stores = runtime::connect_for_requests(&config).await?;
    let artifacts = runtime::artifact_stores(&config).await?;
    let state = app_state(&config, stores, artifacts).await?;
    let listener = listen(&config).await?;
    let shutdown = runtime::shutdown_on_signal().stop;
    longhaul_api::serve_listener(
        listener,
        state,
        runtime::serve_options(&config),
        async move { shutdown.cancelled().await },
    )
    .await?;
    Ok(())
}

/// The API's listener on `LONGHAUL_API_ADDR`; the error names the address.
pub async fn listen(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    longhaul_api::bind(config.api_addr)
        .await
        .context("starting the API (set LONGHAUL_API_ADDR to listen elsewhere)")
}

/// The API's shared state as the configuration asks: counters (Redis or in
/// process), proxy trust, the key and job-status caches, artifact storage,
/// job event streams (polled through Redis by one replica when configured).
pub async fn app_state(
    config: &Config,
    stores: Arc<dyn Stores>,
    artifacts: Arc<ArtifactStores>,
) -> anyhow::Result<AppState> {
    let (lockout, rate_limiter) = counters(config).await?;
    let relay = event_relay(config).await?;
    let mut state = AppState::new(stores, Arc::new(longhaul_worker::jobs::catalogue()));
    if let Some(handle) = crate::runtime::metrics_handle() {
        state = state.with_metrics(handle);
    }
    Ok(state
        .with_event_streams(config.event_streams, relay)
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

/// The job event relay when `LONGHAUL_REDIS_URL` is set: one replica polls
/// the database for every replica's event streams (start-up fails if Redis
/// is unreachable; later outages fall back to polling in each process).
async fn event_relay(config: &Config) -> anyhow::Result<Option<Arc<JobEventRelay>>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let relay = JobEventRelay::connect(url, job_event_relay::REDIS_NAMESPACE)
        .await
        .with_context(|| {
            format!(
                "connecting to Redis at {} (LONGHAUL_REDIS_URL) for job event streams",
                runtime::redact(url)
            )
        })?;
    tracing::info!(redis = %runtime::redact(url), "job event streams shared through Redis");
    Ok(Some(Arc::new(relay)))
}
