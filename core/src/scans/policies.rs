//! Scan policies: a tenant's own leakage patterns (regex, keyword, entropy;
//! each with a severity) and allowlists, and classification rules (a regex,
//! or a built-in detector with the level it implies). A policy's `spec` is
//! stored as JSON and validated here by compiling it, so a policy that is
//! stored always compiles; scans take a snapshot of their policies when they
//! are created.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use longhaul_scan::classify::{ClassRule, Classifier};
use longhaul_scan::custom::{Allowlist, Charset, CustomRule};
use longhaul_scan::detectors::{DataType, Detector, Level};
use longhaul_scan::Severity;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Most patterns or rules in one policy.
pub const MAX_RULES: usize = 100;
/// Most allowlist entries (fingerprints and paths together) in one policy.
pub const MAX_ALLOWLIST: usize = 1000;
const MAX_NAME_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyFamily {
    Leakage,
    Classification,
}

impl PolicyFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyFamily::Leakage => "leakage",
            PolicyFamily::Classification => "classification",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "leakage" => Ok(PolicyFamily::Leakage),
            "classification" => Ok(PolicyFamily::Classification),
            other => Err(Error::corrupt(
                "scan policy family",
                format!("unknown family {other:?}"),
            )),
        }
    }

    /// The prefix of its policies' ids.
    pub fn id_prefix(self) -> &'static str {
        match self {
            PolicyFamily::Leakage => "lkp_",
            PolicyFamily::Classification => "clp_",
        }
    }

    /// Checks a policy body of this family (the error names the field).
    pub fn validate_spec(self, spec: &Value) -> Result<()> {
        match self {
            PolicyFamily::Leakage => LeakageSpec::parse(spec)?.compile().map(|_| ()),
            PolicyFamily::Classification => {
                ClassificationSpec::parse(spec)?.compile_rules().map(|_| ())
            }
        }
    }
}

/// `lkp_<hex>` / `clp_<hex>`.
pub fn policy_id_text(family: PolicyFamily, id: Uuid) -> String {
    format!("{}{}", family.id_prefix(), id.simple())
}

/// The policy id in `text`, if it is one of `family`.
pub fn parse_policy_id(family: PolicyFamily, text: &str) -> Option<Uuid> {
    text.strip_prefix(family.id_prefix())
        .filter(|hex| hex.len() == 32)
        .and_then(|hex| Uuid::try_parse(hex).ok())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: Uuid,
    pub tenant_id: String,
    pub family: PolicyFamily,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    /// The rules (and allowlist), as validated.
    pub spec: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Policy {
    pub fn id_text(&self) -> String {
        policy_id_text(self.family, self.id)
    }

    /// What a scan keeps of the policy when it is created.
    pub fn snapshot(&self) -> PolicySnapshot {
        PolicySnapshot {
            id: self.id_text(),
            version: self.version,
            spec: self.spec.clone(),
        }
    }
}

/// A policy as a scan runs it: fixed when the scan is created, so later
/// edits do not change a scan under way (or its retries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySnapshot {
    pub id: String,
    pub version: i32,
    pub spec: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewPolicy {
    pub family: PolicyFamily,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub spec: Value,
}

impl NewPolicy {
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        validate_description(&self.description)?;
        self.family.validate_spec(&self.spec)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub spec: Option<Value>,
    /// Apply only if the policy is still at this version (`Conflict`
    /// otherwise): no change made meanwhile is lost.
    pub expected_version: Option<i32>,
}

impl PolicyPatch {
    pub fn validate(&self, family: PolicyFamily) -> Result<()> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if let Some(description) = &self.description {
            validate_description(description)?;
        }
        if let Some(spec) = &self.spec {
            family.validate_spec(spec)?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.enabled.is_none()
            && self.spec.is_none()
    }
}

fn validate_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::validation(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters, no control characters"),
        ));
    }
    Ok(())
}

fn validate_description(text: &str) -> Result<()> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::validation(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(())
}

/// A rule id: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
fn validate_rule_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::validation(
            field,
            "must be 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
        ))
    }
}

fn parse_spec<T: serde::de::DeserializeOwned>(spec: &Value) -> Result<T> {
    serde_json::from_value(spec.clone())
        .map_err(|error| Error::validation("spec", error.to_string()))
}

/// The built-in leakage rule ids (user patterns may not reuse them).
fn builtin_rule_ids() -> &'static BTreeSet<&'static str> {
    static IDS: OnceLock<BTreeSet<&'static str>> = OnceLock::new();
    IDS.get_or_init(|| {
        longhaul_scan::rules::builtin()
            .iter()
            .map(|rule| rule.id)
            .collect()
    })
}

// ---- leakage ---------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatternType {
    Regex,
    Keyword,
    Entropy,
}

/// One leakage pattern of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeakagePattern {
    /// Names the findings (`rule`); unique in the policy, not a built-in id.
    #[schema(
        example = "acme-api-token",
        max_length = 64,
        pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$"
    )]
    pub id: String,
    #[serde(rename = "type")]
    pub kind: PatternType,
    /// `critical`, `high`, `medium` or `low`.
    #[schema(value_type = String, example = "high")]
    pub severity: Severity,
    /// `regex`: the expression (a named group `secret` marks the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// `keyword`: literal words, matched without regard to case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    /// `entropy`: bits per character at or above which a token is reported
    /// (over 0, at most 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 8)]
    pub threshold: Option<f64>,
    /// `entropy`: `base64`, `hex` or `alphanumeric`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "base64")]
    pub charset: Option<Charset>,
    /// `entropy`: the shortest token considered (8 to 1024; default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 8, maximum = 1024)]
    pub min_length: Option<usize>,
}

/// Findings a policy drops: by fingerprint, or by path glob (`*`, `**`,
/// `?`, `[ab]`, `{a,b}`; `dir/` for a folder; a name without `/` anywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowlistSpec {
    /// Findings' fingerprints (32 hex digits).
    #[serde(default)]
    pub fingerprints: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
}

/// The body of a leakage policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeakageSpec {
    #[serde(default)]
    pub patterns: Vec<LeakagePattern>,
    #[serde(default)]
    pub allowlist: AllowlistSpec,
}

impl LeakageSpec {
    pub fn parse(spec: &Value) -> Result<Self> {
        parse_spec(spec)
    }

    /// The policy's rules and allowlist for the engine.
    pub fn compile(&self) -> Result<(Vec<CustomRule>, Allowlist)> {
        if self.patterns.len() > MAX_RULES {
            return Err(Error::validation(
                "patterns",
                format!("at most {MAX_RULES} per policy"),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut rules = Vec::with_capacity(self.patterns.len());
        for (index, pattern) in self.patterns.iter().enumerate() {
            let field = |name: &str| format!("patterns[{index}].{name}");
            validate_rule_id(&field("id"), &pattern.id)?;
            if builtin_rule_ids().contains(pattern.id.as_str()) {
                return Err(Error::validation(
                    field("id"),
                    format!("{:?} is a built-in rule's id", pattern.id),
                ));
            }
            if !ids.insert(pattern.id.as_str()) {
                return Err(Error::validation(
                    field("id"),
                    format!("{:?} is used twice", pattern.id),
                ));
            }
            let unexpected = |name: &str, present: bool| {
                if present {
                    Err(Error::validation(
                        field(name),
                        format!("does not apply to a {:?} pattern", pattern.kind),
                    ))
                } else {
                    Ok(())
                }
            };
            let missing = |name: &str| Error::validation(field(name), "is required");
            let rule = match pattern.kind {
                PatternType::Regex => {
                    unexpected("keywords", pattern.keywords.is_some())?;
                    unexpected("threshold", pattern.threshold.is_some())?;
                    unexpected("charset", pattern.charset.is_some())?;
                    unexpected("minLength", pattern.min_length.is_some())?;
                    let text = pattern
                        .pattern
                        .as_deref()
                        .ok_or_else(|| missing("pattern"))?;
                    CustomRule::regex(&pattern.id, pattern.severity, text)
                        .map_err(|message| Error::validation(field("pattern"), message))?
                }
                PatternType::Keyword => {
                    unexpected("pattern", pattern.pattern.is_some())?;
                    unexpected("threshold", pattern.threshold.is_some())?;
                    unexpected("charset", pattern.charset.is_some())?;
                    unexpected("minLength", pattern.min_length.is_some())?;
                    let words = pattern
                        .keywords
                        .as_ref()
                        .ok_or_else(|| missing("keywords"))?;
                    CustomRule::keywords(&pattern.id, pattern.severity, words)
                        .map_err(|message| Error::validation(field("keywords"), message))?
                }
                PatternType::Entropy => {
                    unexpected("pattern", pattern.pattern.is_some())?;
                    unexpected("keywords", pattern.keywords.is_some())?;
                    let threshold = pattern.threshold.ok_or_else(|| missing("threshold"))?;
                    if pattern
                        .min_length
                        .is_some_and(|length| !(8..=1024).contains(&length))
                    {
                        return Err(Error::validation(
                            field("minLength"),
                            "must be from 8 to 1024",
                        ));
                    }
                    CustomRule::entropy(
                        &pattern.id,
                        pattern.severity,
                        threshold,
                        pattern.charset.unwrap_or(Charset::Base64),
                        pattern.min_length.unwrap_or(20),
                    )
                    .map_err(|message| Error::validation(field("threshold"), message))?
                }
            };
            rules.push(rule);
        }
        let entries = self.allowlist.fingerprints.len() + self.allowlist.paths.len();
        if entries > MAX_ALLOWLIST {
            return Err(Error::validation(
                "allowlist",
                format!("at most {MAX_ALLOWLIST} entries per policy"),
            ));
        }
        for (index, fingerprint) in self.allowlist.fingerprints.iter().enumerate() {
            if fingerprint.len() != 32 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::validation(
                    format!("allowlist.fingerprints[{index}]"),
                    "must be a finding's fingerprint (32 hex digits)",
                ));
            }
        }
        let allowlist = Allowlist::new(
            self.allowlist
                .fingerprints
                .iter()
                .map(|f| f.to_ascii_lowercase()),
            self.allowlist.paths.iter().cloned(),
        )
        .map_err(|message| Error::validation("allowlist.paths", message))?;
        Ok((rules, allowlist))
    }
}

/// The rules and allowlist of the leakage policies a scan runs (their
/// allowlists are joined: each applies to every finding of the scan).
pub fn compile_leakage(policies: &[PolicySnapshot]) -> Result<(Vec<CustomRule>, Allowlist)> {
    let mut rules = Vec::new();
    let mut fingerprints = Vec::new();
    let mut paths = Vec::new();
    for policy in policies {
        let spec = LeakageSpec::parse(&policy.spec)?;
        rules.extend(spec.compile()?.0);
        fingerprints.extend(
            spec.allowlist
                .fingerprints
                .iter()
                .map(|f| f.to_ascii_lowercase()),
        );
        paths.extend(spec.allowlist.paths.iter().cloned());
    }
    let allowlist = Allowlist::new(fingerprints, paths)
        .map_err(|message| Error::validation("allowlist.paths", message))?;
    Ok((rules, allowlist))
}

// ---- classification -------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClassRuleType {
    Regex,
    Detector,
}

/// One classification rule of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassificationRule {
    #[serde(rename = "type")]
    pub kind: ClassRuleType,
    /// `regex`: names its counts (not a built-in detector's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64, pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub id: Option<String>,
    /// `regex`: the expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// `detector`: a built-in detector (`email`, `phone`, `us-ssn`,
    /// `payment-card`, `iban`, `ipv4`, `ipv6`, `date-of-birth`, `icd10`,
    /// `medical-record-number`, `de-tax-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<String>,
    /// The level a match implies: `public` < `internal` < `confidential` <
    /// `restricted`.
    #[schema(value_type = String, example = "confidential")]
    pub level: Level,
    /// `regex`: `pii`, `phi`, `pci` (a detector has its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub data_types: Option<Vec<DataType>>,
}

/// The body of a classification policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassificationSpec {
    #[serde(default)]
    pub rules: Vec<ClassificationRule>,
}

/// What a classification policy changes: levels of built-in detectors, and
/// rules of its own.
pub struct CompiledClassification {
    pub detector_levels: Vec<(String, Level)>,
    pub rules: Vec<ClassRule>,
}

impl ClassificationSpec {
    pub fn parse(spec: &Value) -> Result<Self> {
        parse_spec(spec)
    }

    pub fn compile_rules(&self) -> Result<CompiledClassification> {
        if self.rules.len() > MAX_RULES {
            return Err(Error::validation(
                "rules",
                format!("at most {MAX_RULES} per policy"),
            ));
        }
        let detectors = builtin_detector_ids();
        let mut compiled = CompiledClassification {
            detector_levels: Vec::new(),
            rules: Vec::new(),
        };
        let mut ids = BTreeSet::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let field = |name: &str| format!("rules[{index}].{name}");
            match rule.kind {
                ClassRuleType::Detector => {
                    if rule.id.is_some() || rule.pattern.is_some() || rule.data_types.is_some() {
                        return Err(Error::validation(
                            field("type"),
                            "a detector rule takes only `detector` and `level`",
                        ));
                    }
                    let name = rule
                        .detector
                        .as_deref()
                        .ok_or_else(|| Error::validation(field("detector"), "is required"))?;
                    if !detectors.contains(name) {
                        return Err(Error::validation(
                            field("detector"),
                            format!(
                                "{name:?} is not a built-in detector (one of {})",
                                detectors.iter().copied().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                    compiled
                        .detector_levels
                        .push((name.to_string(), rule.level));
                }
                ClassRuleType::Regex => {
                    if rule.detector.is_some() {
                        return Err(Error::validation(
                            field("detector"),
                            "does not apply to a regex rule",
                        ));
                    }
                    let id = rule
                        .id
                        .as_deref()
                        .ok_or_else(|| Error::validation(field("id"), "is required"))?;
                    validate_rule_id(&field("id"), id)?;
                    if detectors.contains(id) || !ids.insert(id.to_string()) {
                        return Err(Error::validation(
                            field("id"),
                            format!("{id:?} is a detector's id or used twice"),
                        ));
                    }
                    let pattern = rule
                        .pattern
                        .as_deref()
                        .ok_or_else(|| Error::validation(field("pattern"), "is required"))?;
                    let types: BTreeSet<DataType> =
                        rule.data_types.iter().flatten().copied().collect();
                    compiled.rules.push(
                        ClassRule::regex(id, rule.level, types, pattern)
                            .map_err(|message| Error::validation(field("pattern"), message))?,
                    );
                }
            }
        }
        Ok(compiled)
    }
}

fn builtin_detector_ids() -> &'static BTreeSet<&'static str> {
    static IDS: OnceLock<BTreeSet<&'static str>> = OnceLock::new();
    IDS.get_or_init(|| {
        longhaul_scan::detectors::builtin()
            .iter()
            .map(|d| d.id)
            .collect()
    })
}

/// The classifier of a scan: the built-in detectors (each at the highest
/// level any of the policies gives it, else its own) and the policies' rules.
pub fn compile_classification(policies: &[PolicySnapshot]) -> Result<Classifier> {
    let mut detectors: Vec<Detector> = longhaul_scan::detectors::builtin();
    let mut overridden: BTreeSet<String> = BTreeSet::new();
    let mut rules = Vec::new();
    for policy in policies {
        let compiled = ClassificationSpec::parse(&policy.spec)?.compile_rules()?;
        for (id, level) in compiled.detector_levels {
            if let Some(detector) = detectors.iter_mut().find(|d| d.id == id) {
                detector.level = if overridden.insert(id) {
                    level
                } else {
                    detector.level.max(level)
                };
            }
        }
        rules.extend(compiled.rules);
    }
    Ok(Classifier::new(detectors, rules))
}
