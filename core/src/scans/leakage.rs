//! Leakage scans: the request (`POST /v1/leakage/scans`), the sources it
//! resolves to (what the `leakage.scan` job reads, fixed at creation), and
//! what scans find: findings per scan, incidents per secret across scans,
//! stats. Secrets appear only redacted; a fingerprint names a secret.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use longhaul_scan::custom::Allowlist;
use longhaul_scan::Severity;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::policies::PolicySnapshot;
use crate::error::{Error, Result};
use crate::kinds::{JobKind, KindSpec};
use crate::JobId;

pub const LEAKAGE_SCAN: &str = LeakageScan::NAME;

/// The `leakage.scan` kind: created through `POST /v1/leakage/scans` only.
pub struct LeakageScan;

impl JobKind for LeakageScan {
    const NAME: &'static str = "leakage.scan";
    type Params = LeakageScanParams;
    type Output = LeakageScanOutput;
    type Checkpoint = LeakageCheckpoint;

    fn spec(spec: KindSpec) -> KindSpec {
        spec.queue("scans")
            .internal()
            .timeout(std::time::Duration::from_secs(6 * 3600))
    }

    fn parse_params(params: &Value) -> std::result::Result<LeakageScanParams, String> {
        LeakageScanParams::parse(params)
    }
}

/// Where a scan stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeakageCheckpoint {
    /// The sources, organizations expanded.
    pub sources: Vec<Source>,
    /// Sources done.
    pub next: usize,
    /// In the source `next` (a bucket): the last object done.
    #[serde(default)]
    pub after_key: Option<String>,
    pub bytes_done: u64,
    pub objects_done: u64,
}

/// What a finished leakage scan stores on its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeakageScanOutput {
    /// Findings stored for the scan.
    pub findings: u64,
    pub sources: u64,
    pub objects: u64,
    pub bytes: u64,
    /// Rules the scan ran.
    pub rules: u64,
    /// The source this attempt resumed at, if it resumed.
    pub resumed_from_source: Option<u64>,
}
/// `lks_<hex>` names job `job_<hex>`.
pub const SCAN_PREFIX: &str = "lks_";
/// Largest inline text of one target.
pub const MAX_INLINE_BYTES: usize = 512 * 1024;
/// Most targets (and bucket × prefix pairs) in one scan.
pub const MAX_SOURCES: usize = 100;
/// Most repositories or organizations in one hosted target.
pub const MAX_REPOSITORIES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    /// A git repository by URL (`https://…`) or, where the operator allows
    /// local paths, by path: its whole history, every branch.
    Git,
    /// GitHub `repositories` (`owner/name`) or `organizations` (all their
    /// repositories), under the configured GitHub base URL.
    Github,
    /// GitLab projects (`group/name`) or groups, under the configured base.
    Gitlab,
    /// An HTTP(S) resource, fetched with GET.
    Url,
    /// Text sent with the request (`content`; stored as an object until the
    /// scan ends, never in the job).
    Inline,
    /// Objects of one of the tenant's data buckets under `prefixes`.
    Bucket,
}

/// One thing to scan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRequest {
    #[serde(rename = "type")]
    #[schema(value_type = TargetType)]
    pub kind: Option<TargetType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<String>>,
    /// `inline`: a name for the text (the findings' path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefixes: Option<Vec<String>>,
}

/// Where to look within the targets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanScope {
    /// Data buckets to scan (besides `bucket` targets), each under every one
    /// of `prefixes` (all objects when there are none).
    #[serde(default)]
    pub buckets: Vec<String>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Only files and objects whose path matches one of these globs (all
    /// when empty).
    #[serde(default)]
    pub paths: Vec<String>,
}

/// `POST /v1/leakage/scans`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeakageScanRequest {
    #[serde(default)]
    pub targets: Vec<TargetRequest>,
    #[serde(default)]
    pub scope: ScanScope,
    /// Policies to run (`lkp_…`); absent: all of the tenant's enabled ones.
    #[serde(default)]
    pub policy_ids: Option<Vec<String>>,
    /// Run the built-in ruleset too (default true).
    #[serde(default)]
    pub builtin_rules: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
}

/// A source as the job reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Source {
    /// A clone URL, or a local path (checked against the allowed root).
    #[serde(rename_all = "camelCase")]
    Git { location: String },
    #[serde(rename_all = "camelCase")]
    Repository {
        provider: Provider,
        repository: String,
    },
    #[serde(rename_all = "camelCase")]
    Organization {
        provider: Provider,
        organization: String,
    },
    #[serde(rename_all = "camelCase")]
    Url { url: String },
    /// Inline text, stored in the tenant's artifact store at `object_key`.
    #[serde(rename_all = "camelCase")]
    Inline {
        name: String,
        object_key: String,
        size: u64,
    },
    #[serde(rename_all = "camelCase")]
    Bucket { bucket: String, prefix: String },
}

impl Source {
    /// How findings name the source (no secrets: URLs carry no credentials).
    pub fn label(&self) -> String {
        match self {
            Source::Git { location } => format!("git:{location}"),
            Source::Repository {
                provider,
                repository,
            } => format!("{}:{repository}", provider_name(*provider)),
            Source::Organization {
                provider,
                organization,
            } => format!("{}:{organization}/*", provider_name(*provider)),
            Source::Url { url } => format!("url:{url}"),
            Source::Inline { name, .. } => format!("inline:{name}"),
            Source::Bucket { bucket, prefix } => format!("bucket:{bucket}/{prefix}"),
        }
    }
}

pub fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Github => "github",
        Provider::Gitlab => "gitlab",
    }
}

/// A resolved target, or inline text the caller still has to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingSource<'a> {
    Ready(Source),
    Inline { name: String, content: &'a str },
}

/// What sources a tenant may name.
#[derive(Debug, Clone, Default)]
pub struct SourceRules {
    /// The tenant's data buckets (`settings.dataBuckets`: name → bucket).
    pub data_buckets: BTreeMap<String, String>,
    /// Local paths under this folder may be scanned (none when unset).
    pub local_root: Option<PathBuf>,
    /// Per provider whose owners are restricted, the owners the tenant may
    /// name (`settings.gitOwners`); providers absent are unrestricted.
    pub git_owners: BTreeMap<Provider, Vec<String>>,
}

impl SourceRules {
    /// The rules of a tenant on a deployment.
    pub fn of(settings: &Value, config: &crate::config::ScanConfig) -> Self {
        let mut git_owners = BTreeMap::new();
        for (provider, host) in [
            (Provider::Github, &config.github),
            (Provider::Gitlab, &config.gitlab),
        ] {
            if host.owners_restricted() {
                git_owners.insert(provider, tenant_git_owners(settings, provider));
            }
        }
        SourceRules {
            data_buckets: data_buckets(settings),
            local_root: config.local_root.clone(),
            git_owners,
        }
    }

    /// Refuses a repository or organization whose owner the tenant may not
    /// name on this deployment.
    pub fn check_owner(&self, field: &str, provider: Provider, path: &str) -> Result<()> {
        let Some(owners) = self.git_owners.get(&provider) else {
            return Ok(());
        };
        let owner = path.split('/').next().unwrap_or_default();
        if owners.iter().any(|o| o.eq_ignore_ascii_case(owner)) {
            return Ok(());
        }
        Err(Error::validation(
            field,
            format!(
                "{owner:?} is not among the tenant's settings.gitOwners.{} (this deployment \
                 reads {} with its own token or from an internal server, so an operator lists \
                 each tenant's owners)",
                provider_name(provider),
                provider_name(provider)
            ),
        ))
    }
}

/// `settings.gitOwners.<provider>`: the owners (users, organizations,
/// groups) a tenant may scan on a restricted host.
pub fn tenant_git_owners(settings: &Value, provider: Provider) -> Vec<String> {
    settings
        .get("gitOwners")
        .and_then(|owners| owners.get(provider_name(provider)))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The params of a `leakage.scan` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeakageScanParams {
    pub sources: Vec<Source>,
    #[serde(default)]
    pub include_paths: Vec<String>,
    pub builtin_rules: bool,
    #[serde(default)]
    pub policies: Vec<PolicySnapshot>,
    /// The hex sha256 of the request that created the scan: a retry with
    /// the same `Idempotency-Key` and another body is refused.
    #[serde(default)]
    pub request_sha256: Option<String>,
}

impl LeakageScanParams {
    pub fn parse(params: &Value) -> std::result::Result<Self, String> {
        let parsed: Self = serde_json::from_value(params.clone())
            .map_err(|error| format!("invalid leakage scan params: {error}"))?;
        if parsed.sources.is_empty() {
            return Err("a leakage scan needs at least one source".into());
        }
        Ok(parsed)
    }

    /// Files and objects outside the scope's `paths` are not read.
    pub fn include_filter(&self) -> std::result::Result<Option<Allowlist>, String> {
        if self.include_paths.is_empty() {
            return Ok(None);
        }
        Allowlist::new(Vec::new(), self.include_paths.iter().cloned()).map(Some)
    }
}

/// The tenant's data buckets from its settings.
pub fn data_buckets(settings: &Value) -> BTreeMap<String, String> {
    settings
        .get("dataBuckets")
        .and_then(Value::as_object)
        .map(|buckets| {
            buckets
                .iter()
                .filter_map(|(name, bucket)| Some((name.clone(), bucket.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl LeakageScanRequest {
    /// Checks the targets and scope and resolves them to sources, in order
    /// (targets, then the scope's buckets).
    pub fn sources(&self, rules: &SourceRules) -> Result<Vec<PendingSource<'_>>> {
        let mut sources = Vec::new();
        for (index, target) in self.targets.iter().enumerate() {
            resolve_target(index, target, rules, &mut sources)?;
        }
        let prefixes = scope_prefixes(&self.scope.prefixes, "scope.prefixes")?;
        for (index, bucket) in self.scope.buckets.iter().enumerate() {
            check_bucket(&format!("scope.buckets[{index}]"), bucket, rules)?;
            for prefix in &prefixes {
                sources.push(PendingSource::Ready(Source::Bucket {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                }));
            }
        }
        if sources.is_empty() {
            return Err(Error::validation(
                "targets",
                "name at least one target or scope bucket",
            ));
        }
        if sources.len() > MAX_SOURCES {
            return Err(Error::validation(
                "targets",
                format!("at most {MAX_SOURCES} sources (targets and bucket prefixes) per scan"),
            ));
        }
        if !self.scope.paths.is_empty() {
            Allowlist::new(Vec::new(), self.scope.paths.iter().cloned())
                .map_err(|message| Error::validation("scope.paths", message))?;
        }
        Ok(sources)
    }
}

fn resolve_target<'a>(
    index: usize,
    target: &'a TargetRequest,
    rules: &SourceRules,
    out: &mut Vec<PendingSource<'a>>,
) -> Result<()> {
    let field = |name: &str| format!("targets[{index}].{name}");
    let kind = target
        .kind
        .ok_or_else(|| Error::validation(field("type"), "is required"))?;
    let allowed: &[&str] = match kind {
        TargetType::Git => &["url", "path"],
        TargetType::Github | TargetType::Gitlab => &["repositories", "organizations"],
        TargetType::Url => &["url"],
        TargetType::Inline => &["name", "content"],
        TargetType::Bucket => &["bucket", "prefixes"],
    };
    let present = [
        ("url", target.url.is_some()),
        ("path", target.path.is_some()),
        ("repositories", target.repositories.is_some()),
        ("organizations", target.organizations.is_some()),
        ("name", target.name.is_some()),
        ("content", target.content.is_some()),
        ("bucket", target.bucket.is_some()),
        ("prefixes", target.prefixes.is_some()),
    ];
    for (name, is_set) in present {
        if is_set && !allowed.contains(&name) {
            return Err(Error::validation(
                field(name),
                format!("does not apply to a {kind:?} target"),
            ));
        }
    }
    match kind {
        TargetType::Git => match (&target.url, &target.path) {
            (Some(url), None) => {
                check_url(&field("url"), url)?;
                out.push(PendingSource::Ready(Source::Git {
                    location: url.clone(),
                }));
            }
            (None, Some(path)) => {
                let path = check_local_path(&field("path"), path, rules)?;
                out.push(PendingSource::Ready(Source::Git { location: path }));
            }
            _ => {
                return Err(Error::validation(
                    field("url"),
                    "a git target takes exactly one of `url` and `path`",
                ))
            }
        },
        TargetType::Github | TargetType::Gitlab => {
            let provider = if kind == TargetType::Github {
                Provider::Github
            } else {
                Provider::Gitlab
            };
            let repositories = target.repositories.as_deref().unwrap_or_default();
            let organizations = target.organizations.as_deref().unwrap_or_default();
            if repositories.is_empty() && organizations.is_empty() {
                return Err(Error::validation(
                    field("repositories"),
                    "name at least one repository or organization",
                ));
            }
            if repositories.len() > MAX_REPOSITORIES || organizations.len() > MAX_REPOSITORIES {
                return Err(Error::validation(
                    field("repositories"),
                    format!("at most {MAX_REPOSITORIES} repositories and organizations"),
                ));
            }
            for (i, repository) in repositories.iter().enumerate() {
                let name = field(&format!("repositories[{i}]"));
                check_hosted_path(&name, repository, 2)?;
                rules.check_owner(&name, provider, repository)?;
                out.push(PendingSource::Ready(Source::Repository {
                    provider,
                    repository: repository.clone(),
                }));
            }
            for (i, organization) in organizations.iter().enumerate() {
                let name = field(&format!("organizations[{i}]"));
                check_hosted_path(&name, organization, 1)?;
                rules.check_owner(&name, provider, organization)?;
                out.push(PendingSource::Ready(Source::Organization {
                    provider,
                    organization: organization.clone(),
                }));
            }
        }
        TargetType::Url => {
            let url = target
                .url
                .as_ref()
                .ok_or_else(|| Error::validation(field("url"), "is required"))?;
            check_url(&field("url"), url)?;
            out.push(PendingSource::Ready(Source::Url { url: url.clone() }));
        }
        TargetType::Inline => {
            let content = target
                .content
                .as_deref()
                .ok_or_else(|| Error::validation(field("content"), "is required"))?;
            if content.is_empty() || content.len() > MAX_INLINE_BYTES {
                return Err(Error::validation(
                    field("content"),
                    format!("must be 1 to {MAX_INLINE_BYTES} bytes"),
                ));
            }
            let name = target
                .name
                .clone()
                .unwrap_or_else(|| format!("inline-{index}"));
            if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
                return Err(Error::validation(
                    field("name"),
                    "must be 1 to 200 bytes without control characters",
                ));
            }
            out.push(PendingSource::Inline { name, content });
        }
        TargetType::Bucket => {
            let bucket = target
                .bucket
                .as_ref()
                .ok_or_else(|| Error::validation(field("bucket"), "is required"))?;
            check_bucket(&field("bucket"), bucket, rules)?;
            let prefixes = scope_prefixes(
                target.prefixes.as_deref().unwrap_or_default(),
                &field("prefixes"),
            )?;
            for prefix in prefixes {
                out.push(PendingSource::Ready(Source::Bucket {
                    bucket: bucket.clone(),
                    prefix,
                }));
            }
        }
    }
    Ok(())
}

/// `http(s)://host/…` without credentials (configure tokens instead: a
/// credential in a URL would be stored with the job).
pub(crate) fn check_url(field: &str, url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| Error::validation(field, "must be an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if url.contains(['?', '#']) {
        return Err(Error::validation(
            field,
            "must not have a query string or fragment (they often carry credentials, which \
             would be stored with the scan)",
        ));
    }
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']'))
        .map_or(authority, |(host, _)| host);
    let plain_host = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
        || (host.starts_with('[')
            && host.ends_with(']')
            && host[1..host.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b)));
    if !authority.contains('@') && !plain_host {
        return Err(Error::validation(
            field,
            "the host must be a plain name (letters, digits, '.', '-') or an address",
        ));
    }
    if authority.contains('@') {
        return Err(Error::validation(
            field,
            "must not carry credentials (user:password@); configure a token for the provider",
        ));
    }
    if authority.is_empty()
        || url.len() > 2048
        || url.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::validation(
            field,
            "must be a URL with a host, at most 2048 characters, no spaces",
        ));
    }
    Ok(())
}

fn check_local_path(field: &str, path: &str, rules: &SourceRules) -> Result<String> {
    let Some(root) = &rules.local_root else {
        return Err(Error::validation(
            field,
            "local paths are not enabled on this deployment (LONGHAUL_SCAN_LOCAL_ROOT)",
        ));
    };
    let candidate = Path::new(path);
    let normal = candidate.is_absolute()
        && candidate
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal || !candidate.starts_with(root) {
        return Err(Error::validation(
            field,
            format!(
                "must be an absolute path under {} without `..`",
                root.display()
            ),
        ));
    }
    Ok(path.to_string())
}

/// `owner/name` (GitLab: `group/sub/name`), or an organization with
/// `min_parts` = 1.
fn check_hosted_path(field: &str, path: &str, min_parts: usize) -> Result<()> {
    let parts: Vec<&str> = path.split('/').collect();
    let ok = parts.len() >= min_parts
        && parts.len() <= 8
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.len() <= 100
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else if min_parts == 2 {
        Err(Error::validation(
            field,
            "must be `owner/name` of letters, digits, '.', '_' and '-'",
        ))
    } else {
        Err(Error::validation(
            field,
            "must be an organization or group name of letters, digits, '.', '_' and '-'",
        ))
    }
}

pub(crate) fn check_bucket(field: &str, bucket: &str, rules: &SourceRules) -> Result<()> {
    if rules.data_buckets.contains_key(bucket) {
        return Ok(());
    }
    let known: Vec<&str> = rules.data_buckets.keys().map(String::as_str).collect();
    Err(Error::validation(
        field,
        if known.is_empty() {
            format!("{bucket:?} is not a data bucket of this tenant (it has none; an operator sets settings.dataBuckets)")
        } else {
            format!(
                "{bucket:?} is not a data bucket of this tenant (it has {})",
                known.join(", ")
            )
        },
    ))
}

/// The prefixes of a bucket scope (`[""]` = everything).
pub(crate) fn scope_prefixes(prefixes: &[String], field: &str) -> Result<Vec<String>> {
    if prefixes.is_empty() {
        return Ok(vec![String::new()]);
    }
    for (index, prefix) in prefixes.iter().enumerate() {
        let bad = prefix.len() > 1024
            || prefix.chars().any(char::is_control)
            || crate::artifacts::validate_prefix(prefix).is_err();
        if bad {
            return Err(Error::validation(
                format!("{field}[{index}]"),
                "must be an object key prefix: at most 1024 characters, relative, no empty, \
                 `.` or `..` parts",
            ));
        }
    }
    Ok(prefixes.to_vec())
}

// ---- findings and incidents ------------------------------------------------

/// A finding as a scan reports it (the secret only redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFinding {
    pub fingerprint: String,
    pub rule: String,
    pub severity: Severity,
    /// Which source ([`Source::label`]).
    pub source: String,
    pub commit: Option<String>,
    pub path: String,
    pub line: u64,
    pub column: u64,
    pub redacted: String,
}

impl NewFinding {
    /// Names the finding within its scan: the same secret at the same place
    /// found again by a retried attempt is the same finding.
    pub fn key(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.fingerprint.as_str(),
            self.source.as_str(),
            self.commit.as_deref().unwrap_or(""),
            self.path.as_str(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hasher.update(self.line.to_be_bytes());
        hasher.update(self.column.to_be_bytes());
        crate::artifacts::hex(&hasher.finalize()[..16])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeakageFinding {
    #[serde(skip)]
    pub key: String,
    /// The incident of the secret (`inc_<fingerprint>`).
    pub fingerprint: String,
    /// The rule or pattern id: the kind of secret.
    pub rule: String,
    #[schema(value_type = String, example = "critical")]
    pub severity: Severity,
    pub source: String,
    pub commit: Option<String>,
    pub path: String,
    pub line: u64,
    pub column: u64,
    /// A short prefix and the length, never the secret.
    #[schema(example = "ghp_****(40 chars)")]
    pub redacted: String,
    pub found_at: DateTime<Utc>,
}

/// (found_at, key) of the last finding of a page.
pub type FindingCursor = (DateTime<Utc>, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Resolved => "resolved",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "open" => Ok(IncidentStatus::Open),
            "resolved" => Ok(IncidentStatus::Resolved),
            other => Err(Error::corrupt(
                "incident status",
                format!("unknown status {other:?}"),
            )),
        }
    }
}

pub(crate) fn severity_text(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
    }
}

pub(crate) fn parse_severity(text: &str) -> Result<Severity> {
    match text {
        "critical" => Ok(Severity::Critical),
        "high" => Ok(Severity::High),
        "medium" => Ok(Severity::Medium),
        "low" => Ok(Severity::Low),
        other => Err(Error::corrupt(
            "finding severity",
            format!("unknown severity {other:?}"),
        )),
    }
}

/// A leaked secret, across every scan that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub fingerprint: String,
    pub rule: String,
    pub severity: Severity,
    pub redacted: String,
    pub status: IncidentStatus,
    pub occurrences: u64,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub first_job_id: JobId,
    pub last_job_id: JobId,
    pub last_source: String,
    pub last_path: String,
    pub last_line: u64,
    /// The key that resolved (or reopened) it.
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// `inc_<fingerprint>`.
pub const INCIDENT_PREFIX: &str = "inc_";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    pub severity: Option<Severity>,
}

/// (first_seen_at, fingerprint) of the last incident of a page.
pub type IncidentCursor = (DateTime<Utc>, String);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentCounts {
    pub open: u64,
    pub resolved: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeakageStats {
    /// Findings of every scan (a secret found twice counts twice).
    pub findings: u64,
    /// Distinct secrets.
    pub incidents: IncidentCounts,
    /// Incidents by severity: `critical`, `high`, `medium`, `low` (all four
    /// always present).
    pub by_severity: BTreeMap<String, IncidentCounts>,
}
