//! `retention.sweep`: queues every tenant's retention runs for the day (the
//! default policy and each enabled policy), keyed by policy and
//! day, with a checkpoint per tenant. The runs themselves are
//! `audit.retention_cleanup` jobs of their tenants.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::retention::sweep::{
    run_key, RetentionSweep as Kind, SweepCheckpoint, SweepParams, SweepProgress,
};
use longhaul_core::retention::{
    all_policies, CleanupParams, RetentionCleanup, RetentionPolicy, Trigger,
};
use longhaul_core::JobClient;

use crate::context::JobContext;
use crate::handler::{JobError, KindHandler};
use crate::services::JobServices;

/// Tenants read per page.
const TENANT_PAGE: u32 = 100;

pub struct RetentionSweep {
    services: JobServices,
}

impl RetentionSweep {
    pub fn new(services: JobServices) -> Self {
        Self { services }
    }
}

#[async_trait]
impl KindHandler for RetentionSweep {
    type Kind = Kind;

    async fn run(&self, ctx: JobContext, _params: SweepParams) -> Result<SweepProgress, JobError> {
        let stores = &self.services.stores;
        let client = JobClient::new(
            stores.clone().job_store(),
            Arc::new(crate::jobs::catalogue()),
        );
        let mut state = ctx.checkpoint::<Kind>()?.unwrap_or(SweepCheckpoint {
            day: Utc::now().date_naive(),
            after_tenant: None,
            progress: SweepProgress::default(),
        });
        let day_start = state.day.and_time(chrono::NaiveTime::MIN).and_utc();
        loop {
            let tenants = stores
                .list_tenants(state.after_tenant.as_deref(), TENANT_PAGE)
                .await?;
            for tenant in &tenants {
                if ctx.cancel_requested() {
                    return Err(JobError::Cancelled);
                }
                let policies = all_policies(stores.as_ref(), &tenant.id)
                    .await
                    .map_err(JobError::from)?;
                let default = RetentionPolicy::default_for(
                    tenant.audit_log_retention_days(),
                    tenant.created_at,
                );
                let runs = std::iter::once(&default).chain(policies.iter().filter(|p| p.enabled));
                for policy in runs {
                    // The day's runs are the same whichever sweep of the day
                    // queues them: cutoffs count from the day's start.
                    let params =
                        CleanupParams::of(policy, &policies, false, Trigger::Scheduled, day_start)
                            .map_err(JobError::from)?;
                    let request =
                        EnqueueRequest::of::<RetentionCleanup>(tenant.id.clone(), &params)
                            .map_err(JobError::from)?
                            .idempotency_key(Some(run_key(&policy.policy_id, state.day)));
                    match client.enqueue(request).await {
                        Ok(enqueued) if enqueued.created => state.progress.runs_queued += 1,
                        Ok(_) => state.progress.runs_existing += 1,
                        // The policy changed since an earlier sweep of the
                        // day queued its run: that run stands.
                        Err(longhaul_core::Error::Conflict(_)) => state.progress.runs_existing += 1,
                        Err(other) => return Err(other.into()),
                    }
                }
                state.progress.tenants += 1;
                state.after_tenant = Some(tenant.id.clone());
                ctx.save_checkpoint::<Kind>(&state).await?;
            }
            if tenants.len() < TENANT_PAGE as usize {
                tracing::info!(
                    tenants = state.progress.tenants,
                    queued = state.progress.runs_queued,
                    existing = state.progress.runs_existing,
                    "retention sweep done"
                );
                return Ok(state.progress);
            }
        }
    }
}
