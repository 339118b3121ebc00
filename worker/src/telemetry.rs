//! The worker's metrics (the `metrics` facade; the binary installs the
//! Prometheus recorder): attempts started and finished per kind and outcome,
//! run time and the wait from due to start per kind, fencing refusals, lease
//! rescues and artifact bytes stored. Without a recorder (library use, most tests) they cost
//! nothing.

use std::time::Duration;

use chrono::Utc;
use longhaul_core::Job;

/// An attempt starts: counted, and how long the job waited since it was due.
pub(crate) fn started(job: &Job) {
    metrics::counter!("longhaul_jobs_started_total", "kind" => job.kind.clone()).increment(1);
    let due = job.run_at.max(job.created_at);
    let waited = (job.started_at.unwrap_or_else(Utc::now) - due)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("longhaul_job_wait_seconds", "kind" => job.kind.clone())
        .record(waited.as_secs_f64());
}

/// How long the handler ran.
pub(crate) fn ran(kind: &str, took: Duration) {
    metrics::histogram!("longhaul_job_run_seconds", "kind" => kind.to_string())
        .record(took.as_secs_f64());
}

/// How an attempt ended: `succeeded`, `retried`, `failed`, `cancelled`,
/// `released`.
pub(crate) fn finished(kind: &str, outcome: &'static str) {
    metrics::counter!("longhaul_jobs_finished_total", "kind" => kind.to_string(), "outcome" => outcome)
        .increment(1);
}

/// A write refused because the attempt had lost its lease.
pub(crate) fn fenced() {
    metrics::counter!("longhaul_fencing_refusals_total").increment(1);
}

/// An artifact stored in object storage by a job of `kind`.
pub(crate) fn artifact_stored(kind: &str, bytes: u64) {
    metrics::counter!("longhaul_artifact_bytes_written_total", "kind" => kind.to_string())
        .increment(bytes);
}

/// Expired leases rescued (by a pool's maintenance or the scheduler's).
pub fn rescued(jobs: usize) {
    metrics::counter!("longhaul_lease_rescues_total").increment(jobs as u64);
}
