//! What every handler shares: the stores, the validating job client, the
//! clock, the brute-force lockout and creation rate counters.

use std::sync::Arc;

use longhaul_core::tenancy::Stores;
use longhaul_core::{Catalogue, JobClient};

use crate::clock::{Clock, SystemClock};
use crate::lockout::{Lockout, MemoryLockout};
use crate::metrics::HttpMetrics;
use crate::rate_limit::{MemoryRateLimiter, RateLimiter};

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
}

impl AppState {
    pub fn new(stores: Arc<dyn Stores>, catalogue: Arc<Catalogue>) -> Self {
        let job_store: Arc<dyn longhaul_core::JobStore> = stores.clone();
        AppState {
            jobs: JobClient::new(job_store, catalogue),
            stores,
            clock: Arc::new(SystemClock),
            lockout: Arc::new(MemoryLockout::new()),
            rate_limiter: Arc::new(MemoryRateLimiter::new()),
            trust_forwarded_for: false,
            http_metrics: Arc::new(HttpMetrics::default()),
        }
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
