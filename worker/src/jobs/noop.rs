//! `system.noop`: does nothing and succeeds. For smoke tests and queue benchmarks.

use async_trait::async_trait;
use longhaul_core::JobKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::JobContext;
use crate::handler::{JobError, KindHandler};

/// The kind and its handler.
pub struct Noop;

/// `system.noop` takes nothing and answers nothing: `{}` both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

impl JobKind for Noop {
    const NAME: &'static str = "system.noop";
    type Params = Empty;
    type Output = Empty;
    type Checkpoint = ();

    fn spec(spec: longhaul_core::KindSpec) -> longhaul_core::KindSpec {
        spec.timeout(std::time::Duration::from_secs(60))
    }

    fn parse_params(params: &Value) -> Result<Empty, String> {
        match params {
            Value::Object(map) if map.is_empty() => Ok(Empty {}),
            Value::Object(_) => Err("system.noop takes no params: send {}".into()),
            _ => Err("params must be a JSON object".into()),
        }
    }
}

#[async_trait]
impl KindHandler for Noop {
    type Kind = Noop;

    async fn run(&self, _ctx: JobContext, _params: Empty) -> Result<Empty, JobError> {
        Ok(Empty {})
    }
}
