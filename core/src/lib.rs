//! longhaul-core: what every Longhaul role shares and no role owns.
//!
//! Config, errors, ids, the job model and its state machine, the catalogue of job
//! kinds, the queue client that validates work before it is stored, and the two
//! store backends (PostgreSQL and SQLite) behind one [`store::JobStore`] trait;
//! tenants and API keys on the same stores behind [`tenancy::TenantStore`], and
//! the audit log of every change behind [`audit::AuditStore`].
//! Core knows no role: it never runs a job and never serves HTTP.

pub mod artifacts;
pub mod audit;
pub mod backoff;
pub mod client;
pub mod config;
pub mod error;
pub mod failure;
pub mod ids;
pub mod job;
pub mod kinds;
pub mod nul;
pub mod queue_stats;
pub mod retention;
pub mod scans;
pub mod schedule;
pub mod store;
pub mod tenancy;
pub mod usage;
pub mod webhooks;
pub mod workers;

pub use client::JobClient;
pub use config::Config;
pub use error::{Error, Result};
pub use ids::JobId;
pub use job::{Job, JobInput, JobState, NewJob, Progress};
pub use kinds::{Catalogue, JobKind, KindSpec};
pub use store::JobStore;
