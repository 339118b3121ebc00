//! Classification scans: the request (`POST /v1/classification/scans`), the
//! `classification.scan` params (buckets × prefixes and the policies, fixed
//! at creation), per-object results and the stats over each object's latest
//! result. Results hold levels, data types and counts, never values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::leakage::{check_bucket, scope_prefixes, SourceRules};
use super::policies::PolicySnapshot;
use crate::error::{Error, Result};
use crate::kinds::{JobKind, KindSpec};
use crate::JobId;

pub const CLASSIFICATION_SCAN: &str = ClassificationScan::NAME;

/// The `classification.scan` kind: created through
/// `POST /v1/classification/scans` only.
pub struct ClassificationScan;

impl JobKind for ClassificationScan {
    const NAME: &'static str = "classification.scan";
    type Params = ClassificationScanParams;
    type Output = ClassificationScanOutput;
    type Checkpoint = ClassificationCheckpoint;

    fn spec(spec: KindSpec) -> KindSpec {
        spec.queue("scans")
            .internal()
            .timeout(std::time::Duration::from_secs(6 * 3600))
    }

    fn parse_params(params: &Value) -> std::result::Result<ClassificationScanParams, String> {
        ClassificationScanParams::parse(params)
    }
}

/// Where a classification scan stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationCheckpoint {
    /// Bucket × prefix pairs done (buckets outer, prefixes inner).
    pub next: usize,
    #[serde(default)]
    pub after_key: Option<String>,
    pub objects_done: u64,
    pub bytes_done: u64,
}

/// What a finished classification scan stores on its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationScanOutput {
    /// Objects with a stored result.
    pub objects: u64,
    pub bytes: u64,
    /// Objects an earlier attempt had done when this one resumed.
    pub resumed_from_object: Option<u64>,
}
/// `cls_<hex>` names job `job_<hex>`.
pub const SCAN_PREFIX: &str = "cls_";
/// Bytes of one object classified unless the request says otherwise.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 16 * 1024 * 1024;
/// The most a request may ask for (what is read is held in memory, four
/// objects at a time).
pub const MAX_OBJECT_BYTES: u64 = 64 * 1024 * 1024;

/// Which objects to classify.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassificationScope {
    /// The tenant's data buckets (`settings.dataBuckets`), at least one.
    pub buckets: Vec<String>,
    /// Key prefixes within every bucket (all objects when empty).
    #[serde(default)]
    pub prefixes: Vec<String>,
}

/// `POST /v1/classification/scans`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassificationScanRequest {
    pub scope: ClassificationScope,
    /// Policies to apply (`clp_…`); absent: the tenant's enabled ones.
    #[serde(default)]
    pub policy_ids: Option<Vec<String>>,
    /// Bytes of one object classified (after gzip); the rest is not read
    /// and the result says `truncated`. Default 16 MiB, at most 64 MiB.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 67_108_864)]
    pub max_object_bytes: Option<u64>,
}

impl ClassificationScanRequest {
    /// The buckets and prefixes, checked.
    pub fn scope(&self, rules: &SourceRules) -> Result<(Vec<String>, Vec<String>)> {
        if self.scope.buckets.is_empty() {
            return Err(Error::validation(
                "scope.buckets",
                "name at least one data bucket",
            ));
        }
        if self.scope.buckets.len() * self.scope.prefixes.len().max(1) > super::leakage::MAX_SOURCES
        {
            return Err(Error::validation(
                "scope",
                format!(
                    "at most {} bucket × prefix pairs per scan",
                    super::leakage::MAX_SOURCES
                ),
            ));
        }
        for (index, bucket) in self.scope.buckets.iter().enumerate() {
            check_bucket(&format!("scope.buckets[{index}]"), bucket, rules)?;
        }
        let prefixes = scope_prefixes(&self.scope.prefixes, "scope.prefixes")?;
        Ok((self.scope.buckets.clone(), prefixes))
    }

    pub fn max_object_bytes(&self) -> Result<u64> {
        match self.max_object_bytes {
            None => Ok(DEFAULT_MAX_OBJECT_BYTES),
            Some(bytes) if (1..=MAX_OBJECT_BYTES).contains(&bytes) => Ok(bytes),
            Some(_) => Err(Error::validation(
                "maxObjectBytes",
                format!("must be from 1 to {MAX_OBJECT_BYTES}"),
            )),
        }
    }
}

/// The params of a `classification.scan` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationScanParams {
    pub buckets: Vec<String>,
    pub prefixes: Vec<String>,
    pub max_object_bytes: u64,
    #[serde(default)]
    pub policies: Vec<PolicySnapshot>,
    /// The hex sha256 of the request that created the scan: a retry with
    /// the same `Idempotency-Key` and another body is refused.
    #[serde(default)]
    pub request_sha256: Option<String>,
}

impl ClassificationScanParams {
    pub fn parse(params: &Value) -> std::result::Result<Self, String> {
        let parsed: Self = serde_json::from_value(params.clone())
            .map_err(|error| format!("invalid classification scan params: {error}"))?;
        if parsed.buckets.is_empty() || parsed.prefixes.is_empty() {
            return Err("a classification scan needs buckets and prefixes".into());
        }
        Ok(parsed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStatus {
    Classified,
    /// Not classified: `skipReason` says why (binary, corrupt gzip).
    Skipped,
}

/// What a scan concluded about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectClassification {
    #[serde(skip)]
    pub job_id: JobId,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub status: ObjectStatus,
    /// `public`, `internal`, `confidential` or `restricted`.
    pub level: Option<String>,
    /// `pii`, `phi`, `pci`.
    pub data_types: Vec<String>,
    /// Validated matches per detector or rule id (never the values).
    pub counts: BTreeMap<String, u64>,
    /// `text`, `csv`, `json`, `ndjson`.
    pub format: Option<String>,
    pub gzip: bool,
    /// Larger than the scan's `maxObjectBytes`: only its start was read.
    pub truncated: bool,
    pub skip_reason: Option<String>,
    pub classified_at: DateTime<Utc>,
}

/// (bucket, key) of the last result of a page.
pub type ObjectCursor = (String, String);

/// The tenant's objects by their latest classification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationStats {
    /// Objects classified (latest result per object).
    pub objects: u64,
    /// Objects whose latest scan skipped them.
    pub skipped: u64,
    pub bytes: u64,
    /// `public`, `internal`, `confidential`, `restricted` (all present).
    pub by_level: BTreeMap<String, u64>,
    /// `pii`, `phi`, `pci` (all present; an object may count in several).
    pub by_data_type: BTreeMap<String, u64>,
}
