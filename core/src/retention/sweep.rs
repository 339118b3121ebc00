//! The nightly retention sweep: the `retention.sweep` kind a system
//! schedule fires once a day. It runs as the system tenant and queues, for
//! every tenant, one `audit.retention_cleanup` run of the default policy and
//! of each enabled policy (audit log and data buckets), keyed by policy and day so that a sweep that runs
//! twice (a retry, a second scheduler) queues each run once.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::kinds::{JobKind, KindSpec};

/// The system schedule that fires the sweep.
pub const NIGHTLY_SCHEDULE: &str = "retention.nightly";
/// 03:00 UTC every day.
pub const NIGHTLY_CRON: &str = "0 3 * * *";

pub struct RetentionSweep;

pub const RETENTION_SWEEP: &str = RetentionSweep::NAME;

impl JobKind for RetentionSweep {
    const NAME: &'static str = "retention.sweep";
    type Params = SweepParams;
    type Output = SweepProgress;
    type Checkpoint = SweepCheckpoint;

    fn spec(spec: KindSpec) -> KindSpec {
        spec.queue("maintenance")
            .internal()
            .timeout(std::time::Duration::from_secs(3600))
    }
}

/// No params: the sweep covers every tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepParams {}

/// What a sweep queued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepProgress {
    pub tenants: u64,
    /// Runs queued by this sweep.
    pub runs_queued: u64,
    /// Runs an earlier sweep of the same day had queued already.
    pub runs_existing: u64,
}

/// Where a sweep stands: its day (fixed by its first attempt) and the last
/// tenant done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepCheckpoint {
    pub day: NaiveDate,
    pub after_tenant: Option<String>,
    pub progress: SweepProgress,
}

/// The idempotency key of a day's run of a policy.
pub fn run_key(policy_id: &str, day: NaiveDate) -> String {
    format!("retention:{policy_id}:{day}")
}
