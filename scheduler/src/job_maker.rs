//! The job of a fire: the schedule's kind, params, queue and priority,
//! validated by the catalogue exactly as an API request is (a schedule whose
//! kind was removed fails its fires, logged, and moves on).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::NewJob;
use longhaul_core::schedule::{JobMaker, Schedule};
use longhaul_core::{Catalogue, Result};

pub struct CatalogueJobs {
    catalogue: Arc<Catalogue>,
}

impl CatalogueJobs {
    pub fn new(catalogue: Arc<Catalogue>) -> Self {
        CatalogueJobs { catalogue }
    }
}

impl JobMaker for CatalogueJobs {
    fn job_for(&self, schedule: &Schedule, fire_time: DateTime<Utc>) -> Result<NewJob> {
        let request = EnqueueRequest {
            tenant_id: schedule.job_tenant().to_string(),
            kind: schedule.kind.clone(),
            params: schedule.params.clone(),
            queue: schedule.queue.clone(),
            priority: schedule.priority,
            run_at: None,
            max_attempts: None,
            // Names the fire on the job, and is a second guard: the same
            // fire time can never make two jobs of the tenant.
            idempotency_key: Some(fire_key(schedule, fire_time)),
            inputs: Vec::new(),
        };
        longhaul_core::client::prepare_with(&self.catalogue, request)
    }
}

/// `schedule:<schedule id>:<fire time, RFC 3339 UTC>`.
pub fn fire_key(schedule: &Schedule, fire_time: DateTime<Utc>) -> String {
    format!(
        "schedule:{}:{}",
        schedule.id,
        fire_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}
