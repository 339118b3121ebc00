//! longhaul-worker: the worker runtime and the job kinds it runs.
//!
//! A [`WorkerPool`] claims jobs from the store (fairly across tenants, within
//! running caps), runs each in its own task under a per-kind timeout, keeps
//! their leases alive with one batched heartbeat, reports progress and
//! checkpoints through a fenced [`JobContext`], completes successes in batches,
//! and on shutdown stops claiming, waits a grace period, then hands unfinished
//! jobs back so they are retried elsewhere. `jobs/` holds one file per kind.

mod completer;
mod context;
mod execute;
mod handler;
mod heartbeat;
pub mod jobs;
pub mod outbound_http;
mod pool;
mod presence;
mod services;
mod stop;
mod tally;
pub mod telemetry;

pub use context::JobContext;
pub use handler::{
    BuiltinKind, JobError, JobHandler, JobOutput, KindHandler, PlatformFailure, Registry,
    RegistryError,
};
pub use pool::{
    default_worker_id, PoolConfig, PoolReport, Shutdown, WorkerPool, DEFAULT_CLAIM_BATCH,
    DEFAULT_PREFETCH, SHORT_JOB,
};
pub use services::JobServices;
