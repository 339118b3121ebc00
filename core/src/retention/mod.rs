//! Retention: how long a tenant keeps its audit log (and the objects of its
//! data buckets), and what must never be deleted. Policies say what expires
//! after which period (`retentionPeriod`, ISO 8601), legal holds protect
//! events and objects whatever the policies say, and cleanup runs are jobs of
//! the `audit.retention_cleanup` kind (`rex_<hex>` = `job_<hex>`) that walk
//! the expired data in bounded batches, archive it first when asked, and
//! delete it batch by batch in short transactions.
//!
//! The tenant's `settings.auditLogRetentionDays` is the default policy
//! (`policyId: "default"`): it covers the events no explicit audit-log
//! policy covers. No audit-log policy keeps events for less than the plans'
//! minimum ([`MIN_AUDIT_RETENTION_DAYS`]).

pub mod matching;
pub mod period;
pub mod preview;
pub mod sweep;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::artifacts::UploadState;
use crate::audit::{Actor, AuditCursor};
use crate::error::{Error, Result};
use crate::ids::parse_prefixed;
use crate::kinds::{JobKind, KindSpec};
use crate::tenancy::AUDIT_LOG_RETENTION_DAYS;
use crate::JobId;
pub use matching::{EventFacts, Holds, ObjectFacts, Selection};
pub use period::RetentionPeriod;

/// `rtp_<hex>`: a retention policy.
pub const POLICY_PREFIX: &str = "rtp_";
/// `hld_<hex>`: a legal hold.
pub const HOLD_PREFIX: &str = "hld_";
/// `rex_<hex>` names the cleanup job `job_<hex>`.
pub const EXECUTION_PREFIX: &str = "rex_";
/// The policy `settings.auditLogRetentionDays` makes.
pub const DEFAULT_POLICY_ID: &str = "default";
/// The shortest an audit-log policy may keep events, on every plan.
pub const MIN_AUDIT_RETENTION_DAYS: u64 = *AUDIT_LOG_RETENTION_DAYS.start() as u64;
/// The shortest a data-bucket policy may keep objects.
pub const MIN_OBJECT_RETENTION_DAYS: u64 = 1;
/// Policies and active holds a tenant may have.
pub const MAX_POLICIES: i64 = 100;
pub const MAX_HOLDS: i64 = 100;
/// Entries of a scope list.
pub const MAX_SCOPE_ENTRIES: usize = 100;
const MAX_NAME_CHARS: usize = 200;
const MAX_TEXT_CHARS: usize = 2000;
/// Audit-event sources a policy may name.
pub const SERVICES: [&str; 3] = ["api", "system", "application"];
/// Classification levels a data-bucket policy may name.
pub const CLASSIFICATIONS: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// The earliest and latest instants the stores take (years 1 and 9999).
pub fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

pub fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

pub fn policy_id_text(id: Uuid) -> String {
    format!("{POLICY_PREFIX}{}", id.simple())
}

pub fn hold_id_text(id: Uuid) -> String {
    format!("{HOLD_PREFIX}{}", id.simple())
}

pub fn execution_id(job: JobId) -> String {
    format!("{EXECUTION_PREFIX}{}", job.as_uuid().simple())
}

pub fn parse_policy_id(text: &str) -> Result<Uuid> {
    parse_prefixed("retention policy", POLICY_PREFIX, text)
}

pub fn parse_hold_id(text: &str) -> Result<Uuid> {
    parse_prefixed("legal hold", HOLD_PREFIX, text)
}

pub fn parse_execution_id(text: &str) -> Result<JobId> {
    parse_prefixed("retention execution", EXECUTION_PREFIX, text).map(JobId::from_uuid)
}

/// What a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum PolicyTarget {
    /// The audit log (events stored and job transitions).
    AuditLog,
    /// Objects in the tenant's data buckets.
    DataBuckets,
}

impl PolicyTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyTarget::AuditLog => "audit_log",
            PolicyTarget::DataBuckets => "data_buckets",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "audit_log" => Ok(PolicyTarget::AuditLog),
            "data_buckets" => Ok(PolicyTarget::DataBuckets),
            other => Err(Error::corrupt("reading a retention policy", other)),
        }
    }
}

/// What happens to an expired object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnExpiry {
    #[default]
    Delete,
    /// Copied to the tenant's artifact store, then deleted.
    Archive,
    /// Listed in the run's result; nothing is touched.
    Notify,
}

impl OnExpiry {
    pub fn as_str(self) -> &'static str {
        match self {
            OnExpiry::Delete => "delete",
            OnExpiry::Archive => "archive",
            OnExpiry::Notify => "notify",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "delete" => Ok(OnExpiry::Delete),
            "archive" => Ok(OnExpiry::Archive),
            "notify" => Ok(OnExpiry::Notify),
            other => Err(Error::corrupt("reading a retention policy", other)),
        }
    }
}

/// What a policy covers: audit events (`eventTypes` globs such as `job.*`,
/// `services` = sources; empty lists cover all), or objects of data buckets
/// (`buckets`, optionally only those classified at `classifications`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyScope {
    #[serde(default)]
    pub event_types: Vec<String>,
    /// `api`, `system`, `application`.
    #[serde(default)]
    pub services: Vec<String>,
    /// Names from the tenant's `settings.dataBuckets`.
    #[serde(default)]
    pub buckets: Vec<String>,
    /// `public`, `internal`, `confidential`, `restricted`.
    #[serde(default)]
    pub classifications: Vec<String>,
}

/// Archiving of an audit-log policy's events before they are deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchiveConfig {
    pub enabled: bool,
    /// Where the archive goes: `artifacts` (the tenant's artifact store in
    /// its region; the only destination today, and the default).
    #[serde(default = "default_destination")]
    pub destination: String,
}

fn default_destination() -> String {
    "artifacts".to_string()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyActions {
    pub on_expiry: OnExpiry,
}

/// `POST /v1/retention/policies`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRetentionPolicy {
    pub name: String,
    /// ISO 8601 duration of days or more: `P90D`, `P1Y`, `P1Y6M`.
    #[schema(example = "P1Y")]
    pub retention_period: String,
    #[serde(default)]
    pub scope: PolicyScope,
    /// Audit-log policies: archive the events before deleting them.
    #[serde(default)]
    pub archive_config: Option<ArchiveConfig>,
    /// Data-bucket policies: what happens to expired objects (default delete).
    #[serde(default)]
    pub actions: Option<PolicyActions>,
    /// Whether the nightly run applies it (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PATCH /v1/retention/policies/{id}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionPolicyPatch {
    pub name: Option<String>,
    pub retention_period: Option<String>,
    pub scope: Option<PolicyScope>,
    pub archive_config: Option<ArchiveConfig>,
    pub actions: Option<PolicyActions>,
    pub enabled: Option<bool>,
}

impl RetentionPolicyPatch {
    pub fn is_empty(&self) -> bool {
        *self == RetentionPolicyPatch::default()
    }

    /// The policy with the patch applied (validated again as a whole).
    pub fn apply(&self, policy: &RetentionPolicy) -> NewRetentionPolicy {
        NewRetentionPolicy {
            name: self.name.clone().unwrap_or_else(|| policy.name.clone()),
            retention_period: self
                .retention_period
                .clone()
                .unwrap_or_else(|| policy.retention_period.clone()),
            scope: self.scope.clone().unwrap_or_else(|| policy.scope.clone()),
            archive_config: Some(
                self.archive_config
                    .clone()
                    .unwrap_or_else(|| policy.archive_config.clone()),
            ),
            actions: match policy.target {
                PolicyTarget::DataBuckets => Some(
                    self.actions
                        .clone()
                        .unwrap_or_else(|| policy.actions.clone()),
                ),
                PolicyTarget::AuditLog => self.actions.clone(),
            },
            enabled: Some(self.enabled.unwrap_or(policy.enabled)),
        }
    }
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    #[schema(example = "rtp_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub policy_id: String,
    pub name: String,
    pub target: PolicyTarget,
    pub retention_period: String,
    pub scope: PolicyScope,
    pub archive_config: ArchiveConfig,
    pub actions: PolicyActions,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RetentionPolicy {
    /// The tenant's default policy: `days` of everything no explicit
    /// audit-log policy covers.
    pub fn default_for(days: i64, created_at: DateTime<Utc>) -> Self {
        RetentionPolicy {
            policy_id: DEFAULT_POLICY_ID.to_string(),
            name: "auditLogRetentionDays".to_string(),
            target: PolicyTarget::AuditLog,
            retention_period: format!("P{days}D"),
            scope: PolicyScope::default(),
            archive_config: ArchiveConfig {
                enabled: false,
                destination: default_destination(),
            },
            actions: PolicyActions::default(),
            enabled: true,
            created_at,
            updated_at: created_at,
        }
    }

    pub fn period(&self) -> Result<RetentionPeriod> {
        self.retention_period.parse()
    }

    /// The instant before which this policy's data has expired at `now`;
    /// never later than the plans' minimum allows for the audit log.
    pub fn cutoff(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let cutoff = self.period()?.cutoff(now);
        Ok(match self.target {
            PolicyTarget::AuditLog => {
                cutoff.min(now - chrono::Duration::days(MIN_AUDIT_RETENTION_DAYS as i64))
            }
            PolicyTarget::DataBuckets => cutoff,
        })
    }
}

/// A policy checked and ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedPolicy {
    pub name: String,
    pub target: PolicyTarget,
    pub retention_period: String,
    pub scope: PolicyScope,
    pub archive: bool,
    pub on_expiry: OnExpiry,
    pub enabled: bool,
}

fn check_name(field: &str, name: &str, max: usize) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::validation(field, "must not be empty"));
    }
    if name.chars().count() > max {
        return Err(Error::validation(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if name.contains('\0') {
        return Err(Error::validation(
            field,
            "must not contain the character U+0000",
        ));
    }
    Ok(())
}

fn check_list(field: &str, values: &[String]) -> Result<()> {
    if values.len() > MAX_SCOPE_ENTRIES {
        return Err(Error::validation(
            field,
            format!("at most {MAX_SCOPE_ENTRIES} entries"),
        ));
    }
    for (index, value) in values.iter().enumerate() {
        check_name(&format!("{field}[{index}]"), value, MAX_NAME_CHARS)?;
    }
    Ok(())
}

impl NewRetentionPolicy {
    /// Checks the policy; `data_buckets` are the names the tenant's
    /// `settings.dataBuckets` define.
    pub fn check(&self, data_buckets: &[String]) -> Result<CheckedPolicy> {
        check_name("name", &self.name, MAX_NAME_CHARS)?;
        let period: RetentionPeriod = self.retention_period.parse()?;
        let scope = &self.scope;
        for (field, list) in [
            ("scope.eventTypes", &scope.event_types),
            ("scope.services", &scope.services),
            ("scope.buckets", &scope.buckets),
            ("scope.classifications", &scope.classifications),
        ] {
            check_list(field, list)?;
        }
        let target = if scope.buckets.is_empty() {
            PolicyTarget::AuditLog
        } else {
            PolicyTarget::DataBuckets
        };
        match target {
            PolicyTarget::AuditLog => {
                if !scope.classifications.is_empty() {
                    return Err(Error::validation(
                        "scope.classifications",
                        "applies to data buckets: name scope.buckets too",
                    ));
                }
                if self.actions.is_some() {
                    return Err(Error::validation(
                        "actions",
                        "applies to data-bucket policies (scope.buckets); audit-log policies archive with archiveConfig",
                    ));
                }
                if period.min_days() < MIN_AUDIT_RETENTION_DAYS {
                    return Err(Error::validation(
                        "retentionPeriod",
                        format!(
                            "keeps audit events for less than the plan's minimum of {MIN_AUDIT_RETENTION_DAYS} days"
                        ),
                    ));
                }
                for (index, service) in scope.services.iter().enumerate() {
                    if !SERVICES.contains(&service.as_str()) {
                        return Err(Error::validation(
                            format!("scope.services[{index}]"),
                            format!("must be one of {}", SERVICES.join(", ")),
                        ));
                    }
                }
                matching::glob_set("scope.eventTypes", &scope.event_types)?;
            }
            PolicyTarget::DataBuckets => {
                if !scope.event_types.is_empty() || !scope.services.is_empty() {
                    return Err(Error::validation(
                        "scope",
                        "a policy covers audit events (eventTypes, services) or data buckets (buckets, classifications), not both",
                    ));
                }
                if self.archive_config.as_ref().is_some_and(|a| a.enabled) {
                    return Err(Error::validation(
                        "archiveConfig",
                        "applies to audit-log policies; data-bucket policies archive with actions.onExpiry: archive",
                    ));
                }
                if period.min_days() < MIN_OBJECT_RETENTION_DAYS {
                    return Err(Error::validation("retentionPeriod", "must be at least P1D"));
                }
                for (index, bucket) in scope.buckets.iter().enumerate() {
                    if !data_buckets.contains(bucket) {
                        return Err(Error::validation(
                            format!("scope.buckets[{index}]"),
                            format!("{bucket:?} is not one of the tenant's data buckets"),
                        ));
                    }
                }
                for (index, level) in scope.classifications.iter().enumerate() {
                    if !CLASSIFICATIONS.contains(&level.as_str()) {
                        return Err(Error::validation(
                            format!("scope.classifications[{index}]"),
                            format!("must be one of {}", CLASSIFICATIONS.join(", ")),
                        ));
                    }
                }
            }
        }
        if let Some(archive) = &self.archive_config {
            if archive.destination != "artifacts" {
                return Err(Error::validation(
                    "archiveConfig.destination",
                    "must be \"artifacts\" (the tenant's artifact store)",
                ));
            }
        }
        Ok(CheckedPolicy {
            name: self.name.trim().to_string(),
            target,
            retention_period: period.to_string(),
            scope: scope.clone(),
            archive: self.archive_config.as_ref().is_some_and(|a| a.enabled),
            on_expiry: self
                .actions
                .as_ref()
                .map(|a| a.on_expiry)
                .unwrap_or_default(),
            enabled: self.enabled.unwrap_or(true),
        })
    }
}

/// What a legal hold protects: audit events (`eventTypes` globs and/or
/// `resourceIds`) and objects (`buckets` and/or `objectKeys` globs). Within
/// each group every named criterion must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HoldScope {
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub resource_ids: Vec<String>,
    #[serde(default)]
    pub buckets: Vec<String>,
    #[serde(default)]
    pub object_keys: Vec<String>,
}

/// `POST /v1/retention/holds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewLegalHold {
    pub name: String,
    pub reason: String,
    pub scope: HoldScope,
    /// When the hold lapses on its own (default: never).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewLegalHold {
    pub fn check(&self, now: DateTime<Utc>) -> Result<()> {
        check_name("name", &self.name, MAX_NAME_CHARS)?;
        check_name("reason", &self.reason, MAX_TEXT_CHARS)?;
        let scope = &self.scope;
        for (field, list) in [
            ("scope.eventTypes", &scope.event_types),
            ("scope.resourceIds", &scope.resource_ids),
            ("scope.buckets", &scope.buckets),
            ("scope.objectKeys", &scope.object_keys),
        ] {
            check_list(field, list)?;
        }
        if scope == &HoldScope::default() {
            return Err(Error::validation(
                "scope",
                "name at least one of eventTypes, resourceIds, buckets, objectKeys",
            ));
        }
        matching::glob_set("scope.eventTypes", &scope.event_types)?;
        matching::glob_set("scope.objectKeys", &scope.object_keys)?;
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(Error::validation("expiresAt", "must be in the future"));
        }
        Ok(())
    }
}

/// A legal hold's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum HoldStatus {
    Active,
    Released,
    Expired,
}

/// A stored legal hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegalHold {
    #[schema(example = "hld_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub hold_id: String,
    pub name: String,
    pub reason: String,
    pub scope: HoldScope,
    pub status: HoldStatus,
    /// Audit events and objects (those classification scans know of) the
    /// hold covered when it was placed.
    pub objects_held: u64,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    /// Audit events and objects it covered when it was released.
    pub objects_released: Option<u64>,
}

impl LegalHold {
    pub fn status_at(
        released_at: Option<DateTime<Utc>>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> HoldStatus {
        if released_at.is_some() {
            HoldStatus::Released
        } else if expires_at.is_some_and(|at| at <= now) {
            HoldStatus::Expired
        } else {
            HoldStatus::Active
        }
    }
}

/// An audit event past a cutoff, as a cleanup walks it: its key, what
/// matching needs, and its size (bytes of its main columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredEvent {
    pub cursor: AuditCursor,
    /// A job transition (a `job_events` row) rather than a stored event.
    pub transition: Option<i64>,
    pub recorded_at: DateTime<Utc>,
    pub source: String,
    pub action: String,
    pub resource_id: Option<String>,
    pub size: u64,
}

impl ExpiredEvent {
    pub fn facts(&self) -> EventFacts<'_> {
        EventFacts {
            action: &self.action,
            source: &self.source,
            resource_id: self.resource_id.as_deref(),
        }
    }
}

/// What one delete batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub events: u64,
    pub bytes: u64,
    /// Events left because a hold placed meanwhile covers them.
    pub held: u64,
}

/// `POST /v1/retention/preview`: what a cleanup of the policy would delete
/// now, read from the data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPreview {
    pub policy_id: String,
    pub cutoff: DateTime<Utc>,
    pub events_affected: u64,
    /// Expired and covered, but kept by a legal hold.
    pub events_held: u64,
    pub oldest_event_date: Option<DateTime<Utc>>,
    pub newest_event_date: Option<DateTime<Utc>>,
    pub size_bytes: u64,
}

/// Events by age.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventsByAge {
    pub last7_days: u64,
    pub last30_days: u64,
    pub last90_days: u64,
    pub older: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSavings {
    pub events_deleted: u64,
    pub bytes_reclaimed: u64,
    pub objects_deleted: u64,
}

/// `GET /v1/retention/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionMetrics {
    pub total_events: u64,
    pub total_size_bytes: u64,
    pub by_age: EventsByAge,
    pub retention_savings: RetentionSavings,
}

/// The `audit.retention_cleanup` kind: one run of one policy (or the
/// default one) for one tenant; created by `POST /v1/retention/cleanup` and
/// by the nightly sweep.
pub struct RetentionCleanup;

pub const RETENTION_CLEANUP: &str = RetentionCleanup::NAME;

impl JobKind for RetentionCleanup {
    const NAME: &'static str = "audit.retention_cleanup";
    type Params = CleanupParams;
    type Output = CleanupOutput;
    type Checkpoint = CleanupCheckpoint;

    fn spec(spec: KindSpec) -> KindSpec {
        spec.queue("maintenance")
            .internal()
            .timeout(std::time::Duration::from_secs(6 * 3600))
    }

    fn parse_params(params: &Value) -> std::result::Result<CleanupParams, String> {
        let params: CleanupParams =
            serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
        Selection::new(&params.scope, &params.excluded).map_err(|e| e.to_string())?;
        Ok(params)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    Manual,
    Scheduled,
}

/// A run's params: the policy as it was when the run was created (a later
/// change of the policy does not change a run under way), and the cutoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupParams {
    pub policy_id: String,
    pub dry_run: bool,
    pub trigger: Trigger,
    pub target: PolicyTarget,
    /// Data older than this has expired.
    pub cutoff: DateTime<Utc>,
    pub scope: PolicyScope,
    /// Scopes left to other policies (the default policy's run).
    #[serde(default)]
    pub excluded: Vec<PolicyScope>,
    pub archive: bool,
    #[serde(default)]
    pub on_expiry: OnExpiry,
}

impl CleanupParams {
    /// The params of a run of `policy` at `now`; `explicit` are the tenant's
    /// enabled audit-log policies (what the default policy leaves alone).
    pub fn of(
        policy: &RetentionPolicy,
        explicit: &[RetentionPolicy],
        dry_run: bool,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let excluded = if policy.policy_id == DEFAULT_POLICY_ID {
            explicit
                .iter()
                .filter(|p| p.enabled && p.target == PolicyTarget::AuditLog)
                .map(|p| p.scope.clone())
                .collect()
        } else {
            Vec::new()
        };
        Ok(CleanupParams {
            policy_id: policy.policy_id.clone(),
            dry_run,
            trigger,
            target: policy.target,
            cutoff: policy.cutoff(now)?,
            scope: policy.scope.clone(),
            excluded,
            archive: policy.archive_config.enabled && policy.target == PolicyTarget::AuditLog,
            on_expiry: policy.actions.on_expiry,
        })
    }

    pub fn selection(&self) -> Result<Selection> {
        Selection::new(&self.scope, &self.excluded)
    }
}

/// The archive a run stored (gzipped NDJSON, one audit event per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupArchive {
    pub name: String,
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
    pub events: u64,
    pub expires_at: DateTime<Utc>,
}

/// An object a data-bucket run found expired (notify lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpiringObject {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub classification: Option<String>,
}

/// Counts of a run, saved in its checkpoint as it goes and stored as its
/// result at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupCounts {
    /// Expired events (or objects) the run looked at.
    pub events_processed: u64,
    /// Deleted (in a dry run: that would be).
    pub events_deleted: u64,
    pub events_archived: u64,
    /// Expired and covered but kept by a legal hold.
    pub events_held: u64,
    pub bytes_reclaimed: u64,
    pub objects_processed: u64,
    pub objects_deleted: u64,
    pub objects_archived: u64,
    pub objects_notified: u64,
    pub objects_held: u64,
}

/// A finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupOutput {
    #[serde(flatten)]
    pub counts: CleanupCounts,
    pub archive: Option<CleanupArchive>,
    /// Objects a notify policy found expired (the first 1,000).
    #[serde(default)]
    pub expiring: Vec<ExpiringObject>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CleanupPhase {
    /// Writing the archive (nothing deleted yet).
    Archiving,
    /// Deleting what the archive holds (or, without archive, what expired).
    Deleting,
}

/// What a later attempt resumes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupCheckpoint {
    pub phase: CleanupPhase,
    /// The last event (or object key) done in this phase.
    pub cursor: Option<String>,
    /// When the run began looking: events recorded later are not its own
    /// (they may land in a range already archived).
    pub seen_at: DateTime<Utc>,
    /// Holds the run has honoured: they keep protecting what they covered
    /// for the rest of the run, even if released meanwhile.
    pub hold_ids: Vec<String>,
    pub counts: CleanupCounts,
    /// The archive's upload while archiving.
    #[serde(default)]
    pub upload: Option<UploadState>,
    /// The stored archive, once complete.
    #[serde(default)]
    pub archive: Option<CleanupArchive>,
    #[serde(default)]
    pub expiring: Vec<ExpiringObject>,
}

/// The retention side of the stores (both backends, written once).
#[async_trait]
pub trait RetentionStore: Send + Sync {
    async fn create_retention_policy(
        &self,
        tenant_id: &str,
        policy: &CheckedPolicy,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RetentionPolicy>;

    async fn get_retention_policy(&self, tenant_id: &str, id: Uuid) -> Result<RetentionPolicy>;

    /// Policies by id after `after` (keyset pagination).
    async fn list_retention_policies(
        &self,
        tenant_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<RetentionPolicy>>;

    /// Applies `patch` to the stored policy, checks the result as a whole
    /// (`data_buckets`: the tenant's) and stores it, in one transaction.
    async fn update_retention_policy(
        &self,
        tenant_id: &str,
        id: Uuid,
        patch: &RetentionPolicyPatch,
        data_buckets: &[String],
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RetentionPolicy>;

    async fn delete_retention_policy(
        &self,
        tenant_id: &str,
        id: Uuid,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<()>;

    /// Places a hold; `objects_held` is what it covers now.
    async fn create_legal_hold(
        &self,
        tenant_id: &str,
        hold: &NewLegalHold,
        objects_held: u64,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<LegalHold>;

    async fn get_legal_hold(
        &self,
        tenant_id: &str,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<LegalHold>;

    async fn list_legal_holds(
        &self,
        tenant_id: &str,
        after: Option<Uuid>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<LegalHold>>;

    /// Releases an active hold (`Conflict` if it is not active).
    async fn release_legal_hold(
        &self,
        tenant_id: &str,
        id: Uuid,
        objects_released: u64,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<LegalHold>;

    /// The holds active at `now`, and those named in `also` whatever their
    /// state.
    async fn legal_holds_in_force(
        &self,
        tenant_id: &str,
        now: DateTime<Utc>,
        also: &[String],
    ) -> Result<Vec<LegalHold>>;

    /// Up to `limit` of the tenant's audit events (stored and job
    /// transitions) that occurred before `cutoff`, in `(occurred_at, id)`
    /// order strictly after `after`.
    async fn expired_audit_events(
        &self,
        tenant_id: &str,
        cutoff: DateTime<Utc>,
        after: Option<AuditCursor>,
        limit: u32,
    ) -> Result<Vec<ExpiredEvent>>;

    /// Deletes `events` in one short transaction, except those a hold in
    /// force (active at `now`, or named in `also`) covers when the
    /// transaction runs; adds what it deleted to the tenant's savings.
    async fn delete_audit_events(
        &self,
        tenant_id: &str,
        events: &[ExpiredEvent],
        now: DateTime<Utc>,
        also: &[String],
    ) -> Result<Deleted>;

    /// The latest classification level of the bucket's objects with keys
    /// from `first` to `last` (objects never classified are absent).
    async fn classification_levels(
        &self,
        tenant_id: &str,
        bucket: &str,
        first: &str,
        last: &str,
    ) -> Result<Vec<(String, Option<String>)>>;

    /// The tenant's objects classification scans know of, by `(bucket,
    /// key)` after `after` (keyset pagination).
    async fn classified_objects_after(
        &self,
        tenant_id: &str,
        after: Option<(String, String)>,
        limit: u32,
    ) -> Result<Vec<(String, String)>>;

    /// Drops what classification scans concluded of deleted objects.
    async fn forget_classified_objects(
        &self,
        tenant_id: &str,
        bucket: &str,
        keys: &[String],
    ) -> Result<()>;

    /// Adds deleted objects to the tenant's savings.
    async fn add_retention_savings(&self, tenant_id: &str, objects: u64, bytes: u64) -> Result<()>;

    /// Counts and sizes of the tenant's audit log by age, and what cleanups
    /// have deleted so far.
    async fn retention_metrics(
        &self,
        tenant_id: &str,
        now: DateTime<Utc>,
    ) -> Result<RetentionMetrics>;
}

/// Every policy of the tenant (what the default policy leaves to the
/// others, and what the nightly sweep runs), read 1,000 at a time.
pub async fn all_policies(
    store: &dyn RetentionStore,
    tenant_id: &str,
) -> Result<Vec<RetentionPolicy>> {
    const PAGE: u32 = 1000;
    let mut all: Vec<RetentionPolicy> = Vec::new();
    loop {
        let after = all.last().and_then(|p| parse_policy_id(&p.policy_id).ok());
        let page = store
            .list_retention_policies(tenant_id, after, PAGE)
            .await?;
        let done = page.len() < PAGE as usize;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy(period: &str, scope: PolicyScope) -> NewRetentionPolicy {
        NewRetentionPolicy {
            name: "p".into(),
            retention_period: period.into(),
            scope,
            ..NewRetentionPolicy::default()
        }
    }

    #[test]
    fn audit_policies_keep_at_least_the_plan_minimum() {
        assert!(policy("P90D", PolicyScope::default()).check(&[]).is_ok());
        assert!(policy("P1Y", PolicyScope::default()).check(&[]).is_ok());
        let short = policy("P89D", PolicyScope::default())
            .check(&[])
            .unwrap_err();
        assert!(short.to_string().contains("minimum"), "{short}");
        assert!(policy("P2M", PolicyScope::default()).check(&[]).is_err());
    }

    #[test]
    fn a_policy_covers_audit_events_or_buckets_never_both() {
        let buckets = vec!["uploads".to_string()];
        let bucket_policy = policy(
            "P30D",
            PolicyScope {
                buckets: buckets.clone(),
                classifications: vec!["restricted".into()],
                ..PolicyScope::default()
            },
        );
        let checked = bucket_policy.check(&buckets).unwrap();
        assert_eq!(checked.target, PolicyTarget::DataBuckets);
        assert!(bucket_policy.check(&[]).is_err(), "unknown bucket");
        let mixed = policy(
            "P1Y",
            PolicyScope {
                buckets,
                event_types: vec!["job.*".into()],
                ..PolicyScope::default()
            },
        );
        assert!(mixed.check(&["uploads".into()]).is_err());
        let bad_service = policy(
            "P1Y",
            PolicyScope {
                services: vec!["cron".into()],
                ..PolicyScope::default()
            },
        );
        assert!(bad_service.check(&[]).is_err());
    }

    #[test]
    fn the_cutoff_of_an_audit_policy_never_passes_the_minimum() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let mut p = RetentionPolicy::default_for(365, now);
        assert_eq!(p.cutoff(now).unwrap(), now - chrono::Duration::days(365));
        p.retention_period = "P3M".into();
        // Three calendar months before March 1st are 89 days: the minimum wins.
        assert_eq!(p.cutoff(now).unwrap(), now - chrono::Duration::days(90));
    }

    #[test]
    fn ids_round_trip_and_foreign_ids_are_not_found() {
        let id = Uuid::now_v7();
        assert_eq!(parse_policy_id(&policy_id_text(id)).unwrap(), id);
        assert!(parse_policy_id(&hold_id_text(id)).is_err());
        assert!(parse_hold_id("hld_xyz").is_err());
    }
}
