//! The job model and its state machine.
//!
//! ```text
//!             claim                 complete
//!   queued ─────────────► running ───────────► succeeded
//!     ▲  │                 │  │ │
//!     │  │ cancel          │  │ └─ fail, attempts left ──► queued (run_at = now + back-off)
//!     │  ▼                 │  ├─── fail, attempts spent ─► failed ──(manual retry)──► queued
//!     │ cancelled ◄────────┘  └─── lease expired (rescue) ► queued or failed
//!     │      (cancel requested, handler stopped)
//!     └──────── released on graceful shutdown (the attempt does not count)
//! ```
//!
//! Every transition is one SQL statement guarded by the expected state (and, for
//! worker writes, by the attempt number: the fencing token), and writes a
//! `job_events` row.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::Error;
use crate::failure::PublicError;
use crate::ids::JobId;
use crate::kinds::JobKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to run: due now, not yet due (`run_at`), or backing off before a retry.
    Queued,
    /// Claimed by a worker that holds a lease.
    Running,
    Succeeded,
    /// Attempts exhausted or a permanent error: the dead-letter set, retryable by hand.
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| Error::validation("state", format!("unknown job state {s:?}")))
    }
}

/// How far a job has come: `{current, total, unit, message}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub current: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: String,
    pub kind: String,
    pub queue: String,
    pub state: JobState,
    pub priority: i16,
    pub params: Value,
    pub run_at: DateTime<Utc>,
    /// Number of times the job was claimed; the fencing token of the current attempt.
    pub attempt: i32,
    /// Attempts that counted against `max_attempts` (failures, timeouts, lost leases).
    pub failed_attempts: i32,
    pub max_attempts: i32,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    pub progress: Option<Progress>,
    pub checkpoint: Option<Value>,
    pub result: Option<Value>,
    /// The last failed attempt's raw error, for operators (may name buckets,
    /// hosts, request ids); cleared when the job succeeds.
    pub last_error: Option<String>,
    /// What tenants see of that error: a stable code and a short message.
    pub public_error: Option<PublicError>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    /// The lease this job's current attempt holds (meaningful while `running`).
    pub fn lease(&self) -> Lease {
        Lease {
            job_id: self.id,
            attempt: self.attempt,
        }
    }

    /// The job's params as its kind's type. A job of another kind, or params
    /// its kind no longer reads, is an error naming the job.
    pub fn params_of<K: JobKind>(&self) -> crate::Result<K::Params> {
        self.expect_kind::<K>()?;
        K::parse_params(&self.params).map_err(|error| {
            crate::Error::corrupt("reading job params", format!("{}: {error}", self.id))
        })
    }

    /// The result its handler stored, as its kind's type (`None` until the
    /// job succeeded).
    pub fn output_of<K: JobKind>(&self) -> crate::Result<Option<K::Output>> {
        self.expect_kind::<K>()?;
        self.result
            .as_ref()
            .map(K::Output::deserialize)
            .transpose()
            .map_err(|error| {
                crate::Error::corrupt("reading job result", format!("{}: {error}", self.id))
            })
    }

    /// Where the job's last attempt stood, as its kind's checkpoint type.
    pub fn checkpoint_of<K: JobKind>(&self) -> crate::Result<Option<K::Checkpoint>> {
        self.expect_kind::<K>()?;
        self.checkpoint
            .as_ref()
            .map(K::Checkpoint::deserialize)
            .transpose()
            .map_err(|error| {
                crate::Error::corrupt("reading a job checkpoint", format!("{}: {error}", self.id))
            })
    }

    fn expect_kind<K: JobKind>(&self) -> crate::Result<()> {
        if self.kind == K::NAME {
            return Ok(());
        }
        Err(crate::Error::corrupt(
            "reading a typed job",
            format!("{} is a {} job, not {}", self.id, self.kind, K::NAME),
        ))
    }

    /// The error a tenant may see: none once the job succeeded, otherwise
    /// the last failure's code and short message (never the raw error).
    pub fn tenant_error(&self) -> Option<PublicError> {
        if self.state == JobState::Succeeded {
            return None;
        }
        tenant_view(&self.public_error, &self.last_error)
    }
}

/// The public pair, or for an error stored without one (before codes
/// existed) a generic one: a raw error is never shown to tenants.
fn tenant_view(public: &Option<PublicError>, raw: &Option<String>) -> Option<PublicError> {
    match (public, raw) {
        (Some(public), _) => Some(public.clone()),
        (None, Some(_)) => Some(PublicError::uncoded()),
        (None, None) => None,
    }
}

/// Which of a tenant's jobs a listing answers. The default matches every job;
/// each field that is set narrows the listing (all of them must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Jobs in any of these states (empty: any state).
    pub states: Vec<JobState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this time (the range is `[created_from, created_to)`).
    pub created_to: Option<DateTime<Utc>>,
}

/// A validated job ready to be stored (built by [`crate::JobClient`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: JobId,
    pub tenant_id: String,
    pub kind: String,
    pub queue: String,
    pub priority: i16,
    pub params: Value,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub idempotency_key: Option<String>,
    /// Files stored for the job before it exists, recorded with it.
    pub inputs: Vec<JobInput>,
}

/// A file a job reads that was stored before the job (a scan's inline
/// text). It is recorded as the job's artifact in the transaction that
/// creates the job, so the artifact sweeper knows it whatever happens next
/// (no orphan if the caller dies in between); not recorded when an
/// idempotency key answers an existing job. Its job and tenant are the job's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInput {
    /// The artifact's name under the job.
    pub name: String,
    pub region: String,
    pub object_key: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub stored_at: DateTime<Utc>,
    /// When the sweeper removes it if the job has not (the job may never run).
    pub expires_at: DateTime<Utc>,
}

/// What enqueue answers for each job: its id, and whether this call created it
/// (`false` when an idempotency key matched an existing job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: JobId,
    pub created: bool,
}

/// The fencing pair every worker write carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub job_id: JobId,
    pub attempt: i32,
}

/// One finished attempt, from the `job_attempts` history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub attempt: i32,
    pub worker_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    /// The raw error, for operators.
    pub error: Option<String>,
    /// What tenants see of it.
    pub public_error: Option<PublicError>,
}

impl Attempt {
    /// The attempt's error as a tenant may see it (see [`Job::tenant_error`]).
    pub fn tenant_error(&self) -> Option<PublicError> {
        tenant_view(&self.public_error, &self.error)
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    /// Failed; the job was queued again after a back-off.
    Retried,
    /// Failed for good (attempts spent or a permanent error).
    Failed,
    Cancelled,
    /// The lease expired (worker lost) and the rescuer took the job back.
    LeaseExpired,
    /// Handed back on graceful shutdown; does not count against `max_attempts`.
    Released,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retried => "retried",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::LeaseExpired => "lease_expired",
            AttemptOutcome::Released => "released",
        }
    }
}

impl FromStr for AttemptOutcome {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AttemptOutcome::Succeeded,
            AttemptOutcome::Retried,
            AttemptOutcome::Failed,
            AttemptOutcome::Cancelled,
            AttemptOutcome::LeaseExpired,
            AttemptOutcome::Released,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| Error::corrupt("attempt outcome", format!("unknown outcome {s:?}")))
    }
}

/// One row of a job's event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEvent {
    pub id: i64,
    pub job_id: JobId,
    pub at: DateTime<Utc>,
    pub attempt: Option<i32>,
    /// `started`, `progress`, `checkpoint`, `succeeded`, `retry_scheduled`, `failed`,
    /// `cancel_requested`, `cancelled`, `lease_expired`, `released`, `requeued`.
    pub kind: String,
    pub data: Option<Value>,
}

/// How a worker finished an attempt. Applied only if the attempt still holds
/// the lease (fencing); otherwise the store reports the job as fenced.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Succeeded {
        result: Value,
    },
    /// Failed. `error` is the raw error (kept for operators), `public` what
    /// tenants see of it; `retry_at` is when to run again if attempts remain;
    /// `permanent` fails the job for good whatever attempts remain.
    Failed {
        error: String,
        public: PublicError,
        retry_at: DateTime<Utc>,
        permanent: bool,
    },
    /// Stopped on a cancel request.
    Cancelled,
    /// Handed back on graceful shutdown: queued again at once, attempt not counted.
    Released,
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub queues: Vec<String>,
    pub limit: usize,
    pub worker_id: String,
    pub lease: std::time::Duration,
}

/// The heartbeat's answer for one lease still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub job_id: JobId,
    pub cancel_requested: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().expect("parses"), state);
        }
        assert!("done".parse::<JobState>().is_err());
    }

    #[test]
    fn only_finished_states_are_terminal() {
        assert!(!JobState::Queued.is_terminal());
        assert!(!JobState::Running.is_terminal());
        assert!(JobState::Succeeded.is_terminal());
        assert!(JobState::Failed.is_terminal());
        assert!(JobState::Cancelled.is_terminal());
    }
}
