//! Leakage and classification scans: the tenants' scan policies, the
//! params of the two scan job kinds, and what scans found, behind one
//! [`ScanStore`] trait with a backend per database.
//!
//! - `policies.rs`: policy bodies (rules, allowlists), their validation and
//!   compilation into the scanning engine's rules (`longhaul-scan`);
//! - `leakage.rs`: `leakage.scan` params (targets, scope, the policies it
//!   runs, fixed at creation), findings and incidents;
//! - `classification.rs`: `classification.scan` params and per-object
//!   results;
//! - `store/postgres/scans.rs`, `store/sqlite/scans.rs`: all of their SQL (schema:
//!   `migrations/<backend>/0007_scans.sql`).
//!
//! A scan is its job: `lks_<hex>`/`cls_<hex>` name job `job_<hex>`. Rows a
//! scan writes are fenced by its lease, and written idempotently (a retried
//! attempt rescans a source and writes nothing twice). No row holds a whole
//! secret or a matched value.

pub mod classification;
pub mod leakage;
pub mod policies;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::audit::Actor;
use crate::error::Result;
use crate::job::Lease;
use crate::JobId;

pub use classification::{ClassificationStats, ObjectClassification, ObjectCursor};
pub use leakage::{
    FindingCursor, Incident, IncidentCursor, IncidentFilter, IncidentStatus, LeakageFinding,
    LeakageStats,
};
pub use policies::{NewPolicy, Policy, PolicyFamily, PolicyPatch};

/// Most policies of one family a tenant may keep.
pub const MAX_POLICIES: i64 = 200;

/// The id of a scan (`lks_<hex>`, `cls_<hex>`) for its job.
pub fn scan_id(prefix: &str, job: JobId) -> String {
    let text = job.to_string();
    format!(
        "{prefix}{}",
        text.split_once('_').map_or(text.as_str(), |(_, hex)| hex)
    )
}

/// The job of a scan id with `prefix`; None if it names none.
pub fn scan_job_id(prefix: &str, text: &str) -> Option<JobId> {
    text.strip_prefix(prefix)
        .and_then(|hex| format!("job_{hex}").parse().ok())
}

#[async_trait]
pub trait ScanStore: Send + Sync {
    // ---- policies (tenant-facing, audited) ---------------------------------

    /// Stores a policy (validated by the caller); `Conflict` if the name is
    /// taken in its family, `QuotaExceeded` past [`MAX_POLICIES`].
    async fn create_policy(
        &self,
        tenant_id: &str,
        new: &NewPolicy,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Policy>;

    async fn get_policy(&self, tenant_id: &str, family: PolicyFamily, id: Uuid) -> Result<Policy>;

    /// Up to `limit` policies of the family, oldest first, after `after`.
    async fn list_policies(
        &self,
        tenant_id: &str,
        family: PolicyFamily,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Policy>>;

    /// Applies a patch (validated by the caller); the version goes up by one.
    async fn update_policy(
        &self,
        tenant_id: &str,
        family: PolicyFamily,
        id: Uuid,
        patch: &PolicyPatch,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Policy>;

    async fn delete_policy(
        &self,
        tenant_id: &str,
        family: PolicyFamily,
        id: Uuid,
        actor: &Actor,
    ) -> Result<()>;

    // ---- leakage results -----------------------------------------------------

    /// Stores a scan's findings (fenced by its lease); a finding already
    /// stored for the scan is skipped. Each new finding opens or updates the
    /// incident of its fingerprint. Answers how many were new.
    async fn record_findings(
        &self,
        lease: Lease,
        findings: &[leakage::NewFinding],
        now: DateTime<Utc>,
    ) -> Result<u64>;

    async fn count_findings(&self, tenant_id: &str, job_id: JobId) -> Result<u64>;

    /// Up to `limit` findings of a scan in the order they were found.
    async fn list_findings(
        &self,
        tenant_id: &str,
        job_id: JobId,
        after: Option<&FindingCursor>,
        limit: u32,
    ) -> Result<Vec<LeakageFinding>>;

    /// Up to `limit` incidents, newest first (by when first seen).
    async fn list_incidents(
        &self,
        tenant_id: &str,
        filter: &IncidentFilter,
        after: Option<&IncidentCursor>,
        limit: u32,
    ) -> Result<Vec<Incident>>;

    async fn get_incident(&self, tenant_id: &str, fingerprint: &str) -> Result<Incident>;

    /// Resolves or reopens an incident, recording who and when.
    async fn set_incident_status(
        &self,
        tenant_id: &str,
        fingerprint: &str,
        status: IncidentStatus,
        note: Option<&str>,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Incident>;

    async fn leakage_stats(&self, tenant_id: &str) -> Result<LeakageStats>;

    // ---- classification results ---------------------------------------------

    /// Stores a scan's conclusions per object (fenced by its lease; an object
    /// already stored for the scan is overwritten) and makes each the
    /// object's latest unless a later scan already concluded.
    async fn record_classifications(
        &self,
        lease: Lease,
        results: &[ObjectClassification],
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Up to `limit` results of a scan, by bucket and key.
    async fn list_classifications(
        &self,
        tenant_id: &str,
        job_id: JobId,
        after: Option<&ObjectCursor>,
        limit: u32,
    ) -> Result<Vec<ObjectClassification>>;

    async fn count_classifications(&self, tenant_id: &str, job_id: JobId) -> Result<u64>;

    /// The tenant's objects by their latest classification.
    async fn classification_stats(&self, tenant_id: &str) -> Result<ClassificationStats>;
}

/// A policy changed since the version a caller named.
pub(crate) fn stale_version(family: PolicyFamily, id: uuid::Uuid, version: i32) -> crate::Error {
    crate::Error::Conflict(format!(
        "policy {} is at version {version}, not the one this change was made against; \
         read it again",
        policies::policy_id_text(family, id)
    ))
}

pub(crate) fn classification_status(text: &str) -> Result<classification::ObjectStatus> {
    match text {
        "classified" => Ok(classification::ObjectStatus::Classified),
        "skipped" => Ok(classification::ObjectStatus::Skipped),
        other => Err(crate::Error::corrupt(
            "classification status",
            format!("unknown status {other:?}"),
        )),
    }
}

/// What an audit event of a policy update says (the fields changed, not the
/// rules themselves).
pub(crate) fn patch_details(patch: &PolicyPatch, version: i32) -> serde_json::Value {
    let mut changed = Vec::new();
    for (field, set) in [
        ("name", patch.name.is_some()),
        ("description", patch.description.is_some()),
        ("enabled", patch.enabled.is_some()),
        ("spec", patch.spec.is_some()),
    ] {
        if set {
            changed.push(field);
        }
    }
    serde_json::json!({"changed": changed, "enabled": patch.enabled, "version": version})
}

const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];
const LEVELS: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// Stats from (severity, status, count) groups of incidents.
pub(crate) fn leakage_stats_of(
    findings: i64,
    groups: Vec<(String, String, i64)>,
) -> Result<LeakageStats> {
    let mut stats = LeakageStats {
        findings: findings.max(0) as u64,
        ..LeakageStats::default()
    };
    for severity in SEVERITIES {
        stats
            .by_severity
            .insert(severity.to_string(), Default::default());
    }
    for (severity, status, n) in groups {
        let n = n.max(0) as u64;
        let counts = stats.by_severity.entry(severity).or_default();
        match IncidentStatus::parse(&status)? {
            IncidentStatus::Open => {
                counts.open += n;
                stats.incidents.open += n;
            }
            IncidentStatus::Resolved => {
                counts.resolved += n;
                stats.incidents.resolved += n;
            }
        }
    }
    Ok(stats)
}

/// Stats from per-level groups: (level or None for skipped, [objects,
/// bytes, pii, phi, pci]).
pub(crate) fn classification_stats_of(
    groups: Vec<(Option<String>, [i64; 5])>,
) -> ClassificationStats {
    let mut stats = ClassificationStats::default();
    for level in LEVELS {
        stats.by_level.insert(level.to_string(), 0);
    }
    for data_type in ["pii", "phi", "pci"] {
        stats.by_data_type.insert(data_type.to_string(), 0);
    }
    for (level, [objects, bytes, pii, phi, pci]) in groups {
        let objects = objects.max(0) as u64;
        stats.bytes += bytes.max(0) as u64;
        match level {
            Some(level) => {
                stats.objects += objects;
                *stats.by_level.entry(level).or_default() += objects;
            }
            None => stats.skipped += objects,
        }
        for (data_type, n) in [("pii", pii), ("phi", phi), ("pci", pci)] {
            *stats.by_data_type.entry(data_type.to_string()).or_default() += n.max(0) as u64;
        }
    }
    stats
}
