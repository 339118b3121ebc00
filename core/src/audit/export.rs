//! Audit exports: what a tenant asks for (`POST /v1/audit/exports`), checked
//! here, and the params of the `audit.export` job that carries it out (the
//! handler is `worker/src/jobs/audit_export/`). The time range is fixed when
//! the export is created (the log itself is not frozen: an application may
//! still send events dated inside it).

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AuditFilter;
use crate::artifacts::UploadState;
use crate::error::{Error, Result};
use crate::kinds::{JobKind, KindSpec};

/// The job kind of audit exports.
pub const AUDIT_EXPORT: &str = AuditExport::NAME;

/// The `audit.export` kind: created through `POST /v1/audit/exports` only.
pub struct AuditExport;

impl JobKind for AuditExport {
    const NAME: &'static str = "audit.export";
    type Params = ExportParams;
    type Output = ExportOutput;
    type Checkpoint = ExportCheckpoint;

    fn spec(spec: KindSpec) -> KindSpec {
        spec.queue("exports")
            .internal()
            .timeout(std::time::Duration::from_secs(6 * 3600))
    }

    fn parse_params(params: &Value) -> std::result::Result<ExportParams, String> {
        ExportParams::parse(params)
    }
}

/// What the export saves each time a part is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportCheckpoint {
    /// The last exported row (None: only the header so far).
    pub cursor: Option<String>,
    pub rows_done: u64,
    /// None while the count had not finished.
    #[serde(default)]
    pub rows_estimated: Option<u64>,
    pub upload: UploadState,
}

/// What a finished export stores on its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportOutput {
    pub rows: u64,
    /// Where this attempt resumed (0: from the start).
    pub resumed_from_row: u64,
    pub artifact: ExportArtifact,
}

/// The file an export wrote, as its job result names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportArtifact {
    /// The artifact's name under the job ([`EXPORT_ARTIFACT`]).
    pub name: String,
    pub file_name: String,
    pub content_type: String,
    pub region: String,
    pub size: u64,
    pub sha256: String,
    pub expires_at: DateTime<Utc>,
}
/// The artifact an export writes (the name under the job's key prefix).
pub const EXPORT_ARTIFACT: &str = "export";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// NDJSON: one JSON object per line.
    Json,
}

/// Which events an export selects, beside its time range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// `api`, `system` or `application`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The body of `POST /v1/audit/exports`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportRequest {
    pub format: ExportFormat,
    /// Compress the file (gzip).
    #[serde(default)]
    pub gzip: bool,
    /// Start of the range, inclusive (default: the start of the tenant's
    /// audit retention).
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
    /// End of the range, exclusive (default: now; never in the future).
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
    #[serde(default)]
    pub filters: ExportFilters,
}

/// The params of an `audit.export` job: the request with its range fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportParams {
    pub format: ExportFormat,
    pub gzip: bool,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[serde(default)]
    pub filters: ExportFilters,
}

const MAX_FILTER_LEN: usize = 512;

impl ExportRequest {
    /// The job params, with the range defaulted and checked against the
    /// tenant's audit retention (`retention_days`) as of `now`.
    pub fn resolve(self, now: DateTime<Utc>, retention_days: i64) -> Result<ExportParams> {
        // Whole microseconds: what both stores keep.
        let now = now.trunc_subsecs(6);
        let oldest = now - Duration::days(retention_days);
        let from = self.from.unwrap_or(oldest).trunc_subsecs(6);
        let to = self.to.unwrap_or(now).trunc_subsecs(6);
        if from < oldest {
            return Err(Error::validation(
                "from",
                format!(
                    "is older than the tenant's audit retention of {retention_days} days \
                     (earliest: {})",
                    oldest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            ));
        }
        if to > now {
            return Err(Error::validation(
                "to",
                "must not be in the future: an export is a snapshot of events up to now",
            ));
        }
        if from >= to {
            return Err(Error::validation("from", "must be before to"));
        }
        let params = ExportParams {
            format: self.format,
            gzip: self.gzip,
            from,
            to,
            filters: self.filters,
        };
        params.check()?;
        Ok(params)
    }
}

impl ExportRequest {
    /// Whether an export made from this request could be `params`: the same
    /// format, compression and filters, and the same range where the request
    /// names one (a defaulted range depends on when it was resolved).
    pub fn matches(&self, params: &ExportParams) -> bool {
        self.format == params.format
            && self.gzip == params.gzip
            && self.filters == params.filters
            && self
                .from
                .is_none_or(|from| from.trunc_subsecs(6) == params.from)
            && self.to.is_none_or(|to| to.trunc_subsecs(6) == params.to)
    }
}

impl ExportParams {
    /// Parses and checks a job's params (the catalogue's validator).
    pub fn parse(params: &Value) -> std::result::Result<Self, String> {
        let parsed: ExportParams =
            serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
        parsed.check().map_err(|e| e.to_string())?;
        Ok(parsed)
    }

    fn check(&self) -> Result<()> {
        if self.from >= self.to {
            return Err(Error::validation("from", "must be before to"));
        }
        let f = &self.filters;
        for (field, value) in [
            ("filters.action", &f.action),
            ("filters.actorId", &f.actor_id),
            ("filters.actorKeyId", &f.actor_key_id),
            ("filters.resourceType", &f.resource_type),
            ("filters.resourceId", &f.resource_id),
            ("filters.source", &f.source),
        ] {
            if let Some(value) = value {
                if value.is_empty() || value.len() > MAX_FILTER_LEN {
                    return Err(Error::validation(
                        field,
                        format!("must be 1 to {MAX_FILTER_LEN} bytes"),
                    ));
                }
            }
        }
        if let Some(source) = &f.source {
            if !["api", "system", "application"].contains(&source.as_str()) {
                return Err(Error::validation(
                    "filters.source",
                    "must be api, system or application",
                ));
            }
        }
        self.filter().check()
    }

    /// The audit-log selection the export reads.
    pub fn filter(&self) -> AuditFilter {
        let f = &self.filters;
        AuditFilter {
            from: Some(self.from),
            to: Some(self.to),
            action: f.action.clone(),
            actor_id: f.actor_id.clone(),
            actor_key_id: f.actor_key_id.clone(),
            resource_type: f.resource_type.clone(),
            resource_id: f.resource_id.clone(),
            source: f.source.clone(),
        }
    }

    /// The file name clients download (`audit-export.csv.gz`, …).
    pub fn file_name(&self) -> String {
        let extension = match self.format {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "ndjson",
        };
        if self.gzip {
            format!("audit-export.{extension}.gz")
        } else {
            format!("audit-export.{extension}")
        }
    }

    pub fn content_type(&self) -> &'static str {
        match (self.gzip, self.format) {
            (true, _) => "application/gzip",
            (false, ExportFormat::Csv) => "text/csv; charset=utf-8",
            (false, ExportFormat::Json) => "application/x-ndjson",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(body: Value) -> ExportRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_request_gets_its_range_fixed_and_checked() {
        let now: DateTime<Utc> = "2026-11-23T12:00:00Z".parse().unwrap();
        let params = request(json!({"format": "csv"})).resolve(now, 30).unwrap();
        assert_eq!(params.to, now);
        assert_eq!(params.from, now - Duration::days(30));
        assert!(!params.gzip);
        assert_eq!(params.file_name(), "audit-export.csv");

        let err = request(json!({"format": "json", "from": "2026-10-01T00:00:00Z"}))
            .resolve(now, 30)
            .unwrap_err();
        assert!(err.to_string().contains("retention of 30 days"), "{err}");
        assert!(
            request(json!({"format": "csv", "to": "2026-11-24T00:00:00Z"}))
                .resolve(now, 30)
                .is_err()
        );
        assert!(request(
            json!({"format": "csv", "from": "2026-11-23T11:00:00Z", "to": "2026-11-23T11:00:00Z"})
        )
        .resolve(now, 30)
        .is_err());
        assert!(
            request(json!({"format": "csv", "filters": {"source": "nope"}}))
                .resolve(now, 30)
                .is_err()
        );
        assert!(request(json!({"format": "csv", "filters": {"action": ""}}))
            .resolve(now, 30)
            .is_err());
        assert!(serde_json::from_value::<ExportRequest>(json!({"format": "xml"})).is_err());
        assert!(
            serde_json::from_value::<ExportRequest>(json!({"format": "csv", "extra": 1})).is_err()
        );

        let gz =
            request(json!({"format": "json", "gzip": true, "filters": {"action": "job.create"}}))
                .resolve(now, 30)
                .unwrap();
        assert_eq!(gz.file_name(), "audit-export.ndjson.gz");
        assert_eq!(gz.filter().action.as_deref(), Some("job.create"));
        let round = ExportParams::parse(&serde_json::to_value(&gz).unwrap()).unwrap();
        assert_eq!(round, gz);
    }
}
