//! `system.sleep`: sleeps `durationMs` in `steps` equal steps, reporting
//! progress and saving a checkpoint after each, stopping promptly on cancel,
//! and resuming from the saved step on a later attempt. It exercises the whole
//! long-job contract without doing real work.

use std::time::Duration;

use async_trait::async_trait;
use longhaul_core::{JobKind, KindSpec, Progress};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::JobContext;
use crate::handler::{JobError, KindHandler};

/// The kind and its handler.
pub struct Sleep;

impl JobKind for Sleep {
    const NAME: &'static str = "system.sleep";
    type Params = SleepParams;
    type Output = SleepOutput;
    type Checkpoint = SleepCheckpoint;

    fn spec(spec: KindSpec) -> KindSpec {
        spec.timeout(Duration::from_secs(25 * 3600))
    }

    fn parse_params(params: &Value) -> Result<SleepParams, String> {
        SleepParams::parse(params)
    }
}

/// Params of `system.sleep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SleepParams {
    /// Total time to sleep, in milliseconds (at most 24 h).
    pub duration_ms: u64,
    /// Number of steps; progress and a checkpoint are written after each.
    #[serde(default = "default_sleep_steps")]
    pub steps: u32,
}

fn default_sleep_steps() -> u32 {
    10
}

impl SleepParams {
    pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;
    pub const MAX_STEPS: u32 = 100_000;

    pub fn parse(params: &Value) -> Result<Self, String> {
        let parsed: SleepParams =
            serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
        if parsed.duration_ms > Self::MAX_DURATION_MS {
            return Err(format!(
                "durationMs must be at most {}",
                Self::MAX_DURATION_MS
            ));
        }
        if parsed.steps == 0 || parsed.steps > Self::MAX_STEPS {
            return Err(format!("steps must be between 1 and {}", Self::MAX_STEPS));
        }
        Ok(parsed)
    }
}

/// What `system.sleep` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SleepOutput {
    pub steps: u32,
    /// Steps an earlier attempt had done (0: ran from the start).
    pub resumed_from_step: u32,
}

/// What `system.sleep` saves after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SleepCheckpoint {
    pub steps_done: u32,
}

#[async_trait]
impl KindHandler for Sleep {
    type Kind = Sleep;

    async fn run(&self, ctx: JobContext, params: SleepParams) -> Result<SleepOutput, JobError> {
        let resumed_from = ctx
            .checkpoint::<Sleep>()?
            .map_or(0, |c| c.steps_done.min(params.steps));
        let step = Duration::from_millis(params.duration_ms / u64::from(params.steps));
        for done in resumed_from..params.steps {
            tokio::select! {
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
                _ = tokio::time::sleep(step) => {}
            }
            ctx.save_checkpoint::<Sleep>(&SleepCheckpoint {
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
        Ok(SleepOutput {
            steps: params.steps,
            resumed_from_step: resumed_from,
        })
    }
}
