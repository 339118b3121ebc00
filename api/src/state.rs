//! What every handler shares: the stores, the validating job client, the
//! clock, the brute-force lockout and creation rate counters, the
//! short-lived caches of keys and job status (`cache.rs`), and the job event
//! hub with the caps on event streams.

use std::sync::Arc;

use longhaul_core::config::{EventStreamConfig, ScanConfig};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use longhaul_core::artifacts::records::ArtifactRecord;
use longhaul_core::artifacts::{
    ArtifactStores, DownloadGrant, DownloadLink, ObjectStore, TokenError,
};
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{ApiKey, Tenant};
use longhaul_core::{Catalogue, JobClient, JobId};

use crate::cache::TtlCache;
use crate::clock::{Clock, SystemClock};
use crate::error::ApiError;
use crate::job_event_hub::JobEventHub;
use crate::job_event_relay::JobEventRelay;
use crate::lockout::{Lockout, MemoryLockout};
use crate::metrics::HttpMetrics;
use crate::rate_limit::{MemoryRateLimiter, RateLimiter};
use crate::stream_slots::StreamSlots;

#[derive(Clone)]
pub struct AppState {
    pub stores: Arc<dyn Stores>,
    pub jobs: JobClient,
    pub clock: Arc<dyn Clock>,
    /// Failed-authentication counters (in-process unless Redis is configured).
    pub lockout: Arc<dyn Lockout>,
    /// Job creations per tenant and minute (in-process unless Redis is configured).
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// Take the client IP from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Requests served per route, for `/metrics`.
    pub http_metrics: Arc<HttpMetrics>,
    /// The process's Prometheus recorder, rendered by `/metrics` after the
    /// queue gauges (none: only those and the request counters).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Authenticated keys by the SHA-256 of their token (disabled by default).
    pub auth_cache: Arc<AuthCache>,
    /// `GET /v1/jobs/{id}` answers (JSON) by tenant and job (disabled by default).
    pub job_status_cache: Arc<JobStatusCache>,
    /// Where job artifacts are and how links to them are made (None: no
    /// storage configured; exports and downloads answer 503).
    pub artifacts: Option<Arc<ArtifactStores>>,
    /// Where leakage scans may read (local paths are checked against it).
    pub scans: ScanConfig,
    /// New job events for every event stream of the process, read once per
    /// interval (shared with other replicas through Redis when configured).
    pub event_hub: JobEventHub,
    /// Open event streams per key and in all.
    pub event_streams: Arc<StreamSlots>,
}

/// A key and its tenant, by the SHA-256 of the token.
pub type AuthCache = TtlCache<[u8; 32], (ApiKey, Option<Tenant>)>;
/// An encoded `GET /v1/jobs/{id}` answer, by tenant and job.
pub type JobStatusCache = TtlCache<(String, JobId), Bytes>;

/// Most keys the auth cache holds.
const AUTH_CACHE_CAPACITY: usize = 10_000;
/// Most job answers the status cache holds (each at most 4 KiB: 40 MB).
const JOB_STATUS_CACHE_CAPACITY: usize = 10_000;

impl AppState {
    pub fn new(stores: Arc<dyn Stores>, catalogue: Arc<Catalogue>) -> Self {
        let job_store: Arc<dyn longhaul_core::JobStore> = stores.clone();
        let defaults = EventStreamConfig::default();
        AppState {
            event_hub: JobEventHub::local(job_store.clone(), defaults.poll_interval),
            event_streams: Arc::new(StreamSlots::new(
                defaults.max_per_key,
                defaults.max_per_process,
            )),
            jobs: JobClient::new(job_store, catalogue),
            stores,
            clock: Arc::new(SystemClock),
            lockout: Arc::new(MemoryLockout::new()),
            rate_limiter: Arc::new(MemoryRateLimiter::new()),
            trust_forwarded_for: false,
            http_metrics: Arc::new(HttpMetrics::default()),
            metrics: None,
            auth_cache: Arc::new(TtlCache::disabled()),
            job_status_cache: Arc::new(TtlCache::disabled()),
            artifacts: None,
            scans: ScanConfig::default(),
        }
    }

    /// Event streams as configured: the hub polls every `poll_interval`
    /// (through `relay` when Redis is configured) and streams are capped.
    /// Replaces the hub, so call it before serving.
    pub fn with_event_streams(
        mut self,
        config: EventStreamConfig,
        relay: Option<Arc<JobEventRelay>>,
    ) -> Self {
        let store = self.jobs.store().clone();
        self.event_hub = match relay {
            Some(relay) => JobEventHub::relayed(store, config.poll_interval, relay),
            None => JobEventHub::local(store, config.poll_interval),
        };
        self.event_streams = Arc::new(StreamSlots::new(config.max_per_key, config.max_per_process));
        self
    }

    pub fn with_scan_config(mut self, scans: ScanConfig) -> Self {
        self.scans = scans;
        self
    }

    pub fn with_artifacts(mut self, artifacts: Arc<ArtifactStores>) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    fn artifact_stores(&self) -> Result<&ArtifactStores, ApiError> {
        self.artifacts.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "no artifact storage is configured",
            )
        })
    }

    /// The object store of a region (503 when the deployment has none).
    pub fn artifact_store(&self, region: &str) -> Result<Arc<dyn ObjectStore>, ApiError> {
        self.artifact_stores()?.store(region).map_err(|error| {
            tracing::error!(%error, region, "no artifact store for a tenant's region");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("no artifact storage is configured for region {region:?}"),
            )
        })
    }

    /// A fresh download link to a stored artifact.
    pub async fn download_link(&self, record: &ArtifactRecord) -> Result<DownloadLink, ApiError> {
        self.artifact_stores()?
            .download_link(&record.region, &record.object_key, self.clock.now())
            .await
            .map_err(|error| {
                tracing::error!(%error, key = %record.object_key, "making a download link");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the artifact storage could not make a download link",
                )
            })
    }

    /// The grant of a download token (404 for anything not genuine, 410 once
    /// expired).
    pub fn verify_download(&self, token: &str) -> Result<DownloadGrant, ApiError> {
        self.artifact_stores()?
            .verify_token(token, self.clock.now())
            .map_err(|error| match error {
                TokenError::Expired(at) => ApiError::new(
                    StatusCode::GONE,
                    "link_expired",
                    format!("the download link expired at {at}; ask for a new one"),
                ),
                TokenError::Malformed | TokenError::BadSignature => {
                    ApiError::not_found("no such download")
                }
            })
    }

    /// Reuse authenticated keys for `ttl` (zero disables).
    pub fn with_auth_cache(mut self, ttl: Duration) -> Self {
        self.auth_cache = Arc::new(TtlCache::new(ttl, AUTH_CACHE_CAPACITY));
        self
    }

    /// Serve job status reads from memory for `ttl` (zero disables).
    pub fn with_job_status_cache(mut self, ttl: Duration) -> Self {
        self.job_status_cache = Arc::new(TtlCache::new(ttl, JOB_STATUS_CACHE_CAPACITY));
        self
    }

    /// Forgets the cached keys of a tenant (its status, quotas or role
    /// checks changed).
    pub fn forget_tenant_keys(&self, tenant_id: &str) {
        self.auth_cache
            .remove_where(|(_, tenant)| tenant.as_ref().is_some_and(|t| t.id == tenant_id));
    }

    /// Forgets a cached key (revoked or rotated).
    pub fn forget_key(&self, key_id: &str) {
        self.auth_cache.remove_where(|(key, _)| key.id == key_id);
    }

    /// Forgets a job's cached status (changed through this process).
    pub fn forget_job_status(&self, tenant_id: &str, id: JobId) {
        self.job_status_cache.remove(&(tenant_id.to_string(), id));
    }

    pub fn with_metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_lockout(mut self, lockout: Arc<dyn Lockout>) -> Self {
        self.lockout = lockout;
        self
    }

    pub fn with_rate_limiter(mut self, rate_limiter: Arc<dyn RateLimiter>) -> Self {
        self.rate_limiter = rate_limiter;
        self
    }

    pub fn with_trust_forwarded_for(mut self, trust: bool) -> Self {
        self.trust_forwarded_for = trust;
        self
    }
}
