//! What every handler shares: the stores, the validating job client, the clock.

use std::sync::Arc;

use longhaul_core::tenancy::Stores;
use longhaul_core::{Catalogue, JobClient};

use crate::clock::{Clock, SystemClock};

#[derive(Clone)]
pub struct AppState {
    pub stores: Arc<dyn Stores>,
    pub jobs: JobClient,
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    pub fn new(stores: Arc<dyn Stores>, catalogue: Arc<Catalogue>) -> Self {
        let job_store: Arc<dyn longhaul_core::JobStore> = stores.clone();
        AppState {
            jobs: JobClient::new(job_store, catalogue),
            stores,
            clock: Arc::new(SystemClock),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}
