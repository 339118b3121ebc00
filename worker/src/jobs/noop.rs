//! `system.noop`: does nothing and succeeds. For smoke tests and queue benchmarks.

use async_trait::async_trait;
use serde_json::json;

use crate::context::JobContext;
use crate::handler::{JobError, JobHandler, JobOutput};

pub struct Noop;

#[async_trait]
impl JobHandler for Noop {
    async fn run(&self, _ctx: JobContext) -> Result<JobOutput, JobError> {
        Ok(json!({}))
    }
}
