//! `system.sleep`: sleeps `durationMs` in `steps` equal steps, reporting
//! progress and saving a checkpoint after each, stopping promptly on cancel,
//! and resuming from the saved step on a later attempt. It exercises the whole
//! long-job contract without doing real work.

use std::time::Duration;

use async_trait::async_trait;
use longhaul_core::kinds::SleepParams;
use longhaul_core::Progress;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::context::JobContext;
use crate::handler::{JobError, JobHandler, JobOutput};

pub struct Sleep;

/// What `system.sleep` saves after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SleepCheckpoint {
    pub steps_done: u32,
}

#[async_trait]
impl JobHandler for Sleep {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let params = SleepParams::parse(&ctx.job().params).map_err(JobError::permanent)?;
        let resumed_from = ctx
            .checkpoint::<SleepCheckpoint>()?
            .map_or(0, |c| c.steps_done.min(params.steps));
        let step = Duration::from_millis(params.duration_ms / u64::from(params.steps));
        for done in resumed_from..params.steps {
            tokio::select! {
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
                _ = tokio::time::sleep(step) => {}
            }
            ctx.save_checkpoint(&SleepCheckpoint {
                steps_done: done + 1,
            })
            .await?;
            ctx.progress(Progress {
                current: u64::from(done + 1),
                total: Some(u64::from(params.steps)),
                unit: Some("steps".into()),
                message: None,
            })
            .await?;
        }
        Ok(json!({ "steps": params.steps, "resumedFromStep": resumed_from }))
    }
}
