//! Tenancy: tenants (region, plan, quotas, settings, status) and their API
//! keys, behind one [`TenantStore`] trait that both job stores implement on
//! their own pools (`store/postgres/tenancy.rs` and `store/sqlite/tenancy.rs` hold all of each backend's
//! tenancy SQL; the schema is `migrations/<backend>/0002_tenancy.sql`).
//!
//! This module owns the model, every rule checked before a write (so a refused
//! request writes nothing and both backends refuse alike), and the key
//! material. A token is `lh_live_` or `lh_test_`, a 12-character public prefix
//! (lowercase base32; unique, the lookup), `_`, and 32 random characters of
//! `[A-Za-z0-9]`, all drawn from the operating system's random source. Only the
//! SHA-256 of the whole token is stored; the token itself is shown once.
//!
//! A tenant's `quotas.max_running` is mirrored into the job engine's
//! `tenant_limits` (what the claim reads) in the same transaction as the
//! tenant write, so the cap the API shows is the cap the workers keep.

mod merge_patch;

pub use merge_patch::merge_patch;

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{Actor, Change};
use crate::error::{Error, Result};
use crate::nul::contains_nul;

// ---- model -------------------------------------------------------------------

/// Implements `as_str`, `Display` and `FromStr` (a validation error naming
/// `field`) for a fieldless enum stored and shown as text.
macro_rules! text_enum {
    ($name:ident, $field:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(Error::validation(
                        $field,
                        format!(
                            "unknown {} {s:?} (expected one of: {})",
                            $field,
                            [$($text),+].join(", ")
                        ),
                    )),
                }
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    /// The tenant's keys still authenticate; the API decides what they may do
    /// (read, but not start work).
    Suspended,
}

text_enum!(TenantStatus, "status", {
    Active => "active",
    Suspended => "suspended",
});

/// What a key may do. Tenant roles are ordered `Viewer < Developer < Admin`;
/// `Operator` (keys without a tenant, across tenants) sorts last but is not a
/// tenant role: no tenant key has it and no operator key has another.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Developer,
    Admin,
    Operator,
}

text_enum!(Role, "role", {
    Viewer => "viewer",
    Developer => "developer",
    Admin => "admin",
    Operator => "operator",
});

/// A tenant's own limits; `None` means no limit of its own (for `max_running`,
/// the configured default applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    /// Running jobs at once (enforced by the claim through `tenant_limits`).
    #[schema(minimum = 1)]
    pub max_running: Option<i32>,
    /// Queued jobs at once (enforced by the API).
    #[schema(minimum = 1)]
    pub max_queued: Option<i64>,
    /// Jobs created per minute (enforced by the API).
    #[schema(minimum = 1)]
    pub creations_per_minute: Option<i32>,
    /// Schedules held at once (default 100; enforced when one is created).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_schedules: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub region: String,
    pub plan: String,
    pub status: TenantStatus,
    pub suspended_reason: Option<String>,
    pub quotas: Quotas,
    /// A JSON object, for example `{"auditLogRetentionDays": 365}`.
    pub settings: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTenant {
    pub name: String,
    pub region: String,
    pub plan: String,
    #[serde(default)]
    pub quotas: Quotas,
    #[serde(default = "empty_object")]
    pub settings: Value,
}

impl NewTenant {
    /// A tenant without quotas of its own and with empty settings.
    pub fn new(
        name: impl Into<String>,
        region: impl Into<String>,
        plan: impl Into<String>,
    ) -> Self {
        NewTenant {
            name: name.into(),
            region: region.into(),
            plan: plan.into(),
            quotas: Quotas::default(),
            settings: empty_object(),
        }
    }
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A change to a tenant: each `Some` field replaces the stored value whole
/// (`quotas` replaces all four quotas, an absent one becoming "no limit of
/// its own"), except `settings`, a JSON Merge Patch (RFC 7396) of the stored
/// settings: the keys it names change, `null` removes a key, the others stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
}

impl TenantPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.region.is_none()
            && self.plan.is_none()
            && self.quotas.is_none()
            && self.settings.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    Live,
    Test,
}

text_enum!(KeyMode, "mode", {
    Live => "live",
    Test => "test",
});

impl KeyMode {
    /// How a token of this mode starts: `lh_live_` or `lh_test_`.
    pub fn token_start(self) -> &'static str {
        match self {
            KeyMode::Live => "lh_live_",
            KeyMode::Test => "lh_test_",
        }
    }
}

/// An API key as stored, without its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    /// `None` for an operator key.
    pub tenant_id: Option<String>,
    pub name: String,
    pub role: Role,
    pub mode: KeyMode,
    /// The public 12-character part of the token (after `lh_live_`/`lh_test_`).
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// Written at most once a minute (see [`LAST_USED_GRANULARITY`]).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Set when the key was rotated: it works until then.
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// The start of the token a person can recognise: `lh_live_abcdefghijkl`.
    pub fn display_prefix(&self) -> String {
        format!("{}{}", self.mode.token_start(), self.prefix)
    }

    /// Not revoked and not past its rotation grace at `now`.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires| now < expires)
    }
}

/// A key just issued, with the whole token: the only time it is ever seen.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: String,
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

// ---- limits --------------------------------------------------------------------

pub const TENANT_ID_PREFIX: &str = "tnt_";
pub const KEY_ID_PREFIX: &str = "key_";
/// Tenant names, key names: 1–200 characters.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_PLAN_CHARS: usize = 64;
pub const MAX_REGION_CHARS: usize = 64;
pub const MAX_REASON_CHARS: usize = 1000;
/// Settings are read with every authenticated request: keep them small.
pub const MAX_SETTINGS_BYTES: usize = 16 * 1024;
pub const AUDIT_LOG_RETENTION_DAYS: RangeInclusive<i64> = 90..=2555;

/// A tenant's audit log retention when its settings name none.
pub const DEFAULT_AUDIT_LOG_RETENTION_DAYS: i64 = 365;

impl Tenant {
    /// Days of audit log the tenant keeps: `settings.auditLogRetentionDays`,
    /// else [`DEFAULT_AUDIT_LOG_RETENTION_DAYS`].
    pub fn audit_log_retention_days(&self) -> i64 {
        self.settings
            .get("auditLogRetentionDays")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_AUDIT_LOG_RETENTION_DAYS)
    }

    /// How long the tenant's job artifacts are kept after their job
    /// succeeded: `settings.artifactRetentionDays` (the plan's), else
    /// `default` (the deployment's `LONGHAUL_ARTIFACT_RETENTION_DAYS`).
    pub fn artifact_retention(&self, default: Duration) -> Duration {
        self.settings
            .get("artifactRetentionDays")
            .and_then(Value::as_u64)
            .map_or(default, |days| Duration::from_secs(days * 86_400))
    }
}
/// `last_used_at` is written at most this often per key.
pub const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);
pub const KEY_PREFIX_LEN: usize = 12;
pub const KEY_SECRET_LEN: usize = 32;

const PREFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

// ---- tokens --------------------------------------------------------------------

/// The mode and public prefix of a well-formed token; `None` for anything
/// else. Checks the shape only: whether the key exists and matches is the
/// store's [`TenantStore::authenticate`].
pub fn parse_token(token: &str) -> Option<(KeyMode, &str)> {
    let (mode, rest) = KeyMode::ALL
        .iter()
        .find_map(|mode| Some((*mode, token.strip_prefix(mode.token_start())?)))?;
    let bytes = rest.as_bytes();
    if bytes.len() != KEY_PREFIX_LEN + 1 + KEY_SECRET_LEN || bytes[KEY_PREFIX_LEN] != b'_' {
        return None;
    }
    let prefix_ok = bytes[..KEY_PREFIX_LEN]
        .iter()
        .all(|b| PREFIX_ALPHABET.contains(b));
    let secret_ok = bytes[KEY_PREFIX_LEN + 1..]
        .iter()
        .all(|b| b.is_ascii_alphanumeric());
    // Every byte is ASCII, so the split falls on a character boundary.
    (prefix_ok && secret_ok).then(|| (mode, &rest[..KEY_PREFIX_LEN]))
}

/// SHA-256 of the whole token: what the store keeps instead of the token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares a stored digest with a computed one in time independent of where
/// they differ.
fn digests_equal(stored: &[u8], computed: &[u8; 32]) -> bool {
    if stored.len() != computed.len() {
        return false;
    }
    let difference = stored
        .iter()
        .zip(computed)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// A new key's id, token, prefix and hash.
pub(crate) struct KeyMaterial {
    pub(crate) id: String,
    pub(crate) prefix: String,
    pub(crate) token: String,
    pub(crate) hash: [u8; 32],
}

impl KeyMaterial {
    pub(crate) fn generate(mode: KeyMode) -> Result<Self> {
        let prefix = random_chars(PREFIX_ALPHABET, KEY_PREFIX_LEN)?;
        let secret = random_chars(SECRET_ALPHABET, KEY_SECRET_LEN)?;
        let token = format!("{}{prefix}_{secret}", mode.token_start());
        let hash = hash_token(&token);
        Ok(KeyMaterial {
            id: new_id(KEY_ID_PREFIX),
            prefix,
            token,
            hash,
        })
    }
}

/// `n` characters drawn uniformly from `alphabet` (at most 256 symbols) with
/// the operating system's random source: bytes past the largest multiple of
/// the alphabet's size are discarded so that no symbol is more likely.
fn random_chars(alphabet: &[u8], n: usize) -> Result<String> {
    let accept_below = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::getrandom(&mut buf).map_err(|e| {
            Error::Config(vec![format!(
                "the operating system's random source failed: {e}"
            )])
        })?;
        for &byte in &buf {
            if out.len() == n {
                break;
            }
            if usize::from(byte) < accept_below {
                out.push(char::from(alphabet[usize::from(byte) % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::now_v7().simple())
}

/// Could `id` be an id this module hands out? Anything else (including text a
/// database would refuse, such as U+0000) is "not found" without a query.
fn is_plausible_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub(crate) fn tenant_id_checked(id: &str) -> Result<&str> {
    if is_plausible_id(id, TENANT_ID_PREFIX) {
        Ok(id)
    } else {
        Err(Error::no_such("tenant", id))
    }
}

/// A listing's cursor (the id of the last tenant of the previous page): a
/// malformed one is refused, as every listing refuses a cursor it did not
/// hand out.
pub(crate) fn tenant_cursor_checked(after: Option<&str>) -> Result<Option<&str>> {
    match after {
        Some(id) if !is_plausible_id(id, TENANT_ID_PREFIX) => Err(Error::validation(
            "cursor",
            "is not a cursor this API returned",
        )),
        after => Ok(after),
    }
}

/// A tenant's key: a malformed key or tenant id is "api key not found".
pub(crate) fn key_of_tenant_checked<'a>(
    tenant_id: &'a str,
    key_id: &'a str,
) -> Result<(&'a str, &'a str)> {
    if is_plausible_id(tenant_id, TENANT_ID_PREFIX) && is_plausible_id(key_id, KEY_ID_PREFIX) {
        Ok((tenant_id, key_id))
    } else {
        Err(Error::no_such("api key", key_id))
    }
}

// ---- validation ----------------------------------------------------------------

fn validate_text(field: &str, text: &str, max_chars: usize) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::validation(field, "must not be empty"));
    }
    if text.chars().count() > max_chars {
        return Err(Error::validation(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// `us`, `eu`, `eu-west`, `us-east-1`: two lowercase letters, then any number
/// of `-` and lowercase letters or digits.
fn validate_region(region: &str) -> Result<()> {
    let mut parts = region.split('-');
    let head_ok = parts
        .next()
        .is_some_and(|head| head.len() == 2 && head.bytes().all(|b| b.is_ascii_lowercase()));
    let rest_ok = parts.all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if head_ok && rest_ok && region.len() <= MAX_REGION_CHARS {
        Ok(())
    } else {
        Err(Error::validation(
            "region",
            format!(
                "{region:?} must be a region code such as \"us\", \"eu\" or \"eu-west\" \
                 (at most {MAX_REGION_CHARS} characters)"
            ),
        ))
    }
}

fn validate_quotas(quotas: &Quotas) -> Result<()> {
    let positive = |field: &str, value: Option<i64>| match value {
        Some(v) if v < 1 => Err(Error::validation(
            field,
            "must be at least 1 (or null for no limit)",
        )),
        _ => Ok(()),
    };
    positive("quotas.maxRunning", quotas.max_running.map(i64::from))?;
    positive("quotas.maxQueued", quotas.max_queued)?;
    positive("quotas.maxSchedules", quotas.max_schedules)?;
    positive(
        "quotas.creationsPerMinute",
        quotas.creations_per_minute.map(i64::from),
    )
}

fn validate_settings(settings: &Value) -> Result<()> {
    let Value::Object(map) = settings else {
        return Err(Error::validation("settings", "must be a JSON object"));
    };
    if contains_nul(settings) {
        return Err(Error::validation(
            "settings",
            "must not contain the character U+0000",
        ));
    }
    let size = settings.to_string().len();
    if size > MAX_SETTINGS_BYTES {
        return Err(Error::validation(
            "settings",
            format!("are {size} bytes, larger than the {MAX_SETTINGS_BYTES}-byte limit"),
        ));
    }
    if let Some(days) = map.get("auditLogRetentionDays") {
        if !days
            .as_i64()
            .is_some_and(|days| AUDIT_LOG_RETENTION_DAYS.contains(&days))
        {
            return Err(Error::validation(
                "settings.auditLogRetentionDays",
                format!(
                    "must be a whole number of days from {} to {}",
                    AUDIT_LOG_RETENTION_DAYS.start(),
                    AUDIT_LOG_RETENTION_DAYS.end()
                ),
            ));
        }
    }
    if let Some(days) = map.get("artifactRetentionDays") {
        if !days
            .as_i64()
            .is_some_and(|days| ARTIFACT_RETENTION_DAYS.contains(&days))
        {
            return Err(Error::validation(
                "settings.artifactRetentionDays",
                format!(
                    "must be a whole number of days from {} to {}",
                    ARTIFACT_RETENTION_DAYS.start(),
                    ARTIFACT_RETENTION_DAYS.end()
                ),
            ));
        }
    }
    if let Some(buckets) = map.get("dataBuckets") {
        validate_data_buckets(buckets)?;
    }
    if let Some(owners) = map.get("gitOwners") {
        validate_git_owners(owners)?;
    }
    Ok(())
}

/// `settings.gitOwners`: `{"github": ["org", …], "gitlab": ["group", …]}`,
/// the owners a tenant's leakage scans may name on hosts this deployment
/// reads with its own token (or internal hosts).
fn validate_git_owners(owners: &Value) -> Result<()> {
    let field = "settings.gitOwners";
    let map = owners.as_object().ok_or_else(|| {
        Error::validation(
            field,
            "must be an object: {\"github\": [...], \"gitlab\": [...]}",
        )
    })?;
    for (provider, list) in map {
        if provider != "github" && provider != "gitlab" {
            return Err(Error::validation(
                field,
                format!("{provider:?} is not github or gitlab"),
            ));
        }
        let names = list.as_array().filter(|l| l.len() <= 100).ok_or_else(|| {
            Error::validation(
                format!("{field}.{provider}"),
                "must be a list of at most 100 owners",
            )
        })?;
        for name in names {
            let ok = name.as_str().is_some_and(|n| {
                !n.is_empty()
                    && n.len() <= 100
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
            if !ok {
                return Err(Error::validation(
                    format!("{field}.{provider}"),
                    "owners are names of letters, digits, '.', '_' and '-'",
                ));
            }
        }
    }
    Ok(())
}

/// Most data buckets one tenant may name.
pub const MAX_DATA_BUCKETS: usize = 50;

/// `settings.dataBuckets`: `{"<name>": "<bucket>"}`, the object-store
/// buckets (S3) or folders (local store) whose objects the tenant's
/// classification and leakage scans may read. Set by operators only (tenant
/// settings are), so a tenant never names another's bucket.
fn validate_data_buckets(buckets: &Value) -> Result<()> {
    let field = "settings.dataBuckets";
    let map = buckets
        .as_object()
        .ok_or_else(|| Error::validation(field, "must be an object of name → bucket"))?;
    if map.len() > MAX_DATA_BUCKETS {
        return Err(Error::validation(
            field,
            format!("at most {MAX_DATA_BUCKETS} buckets"),
        ));
    }
    let component = |text: &str, min: usize| {
        (min..=63).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
            && text.as_bytes()[0].is_ascii_alphanumeric()
            && !text.contains("..")
    };
    for (name, bucket) in map {
        if !component(name, 1) {
            return Err(Error::validation(
                field,
                format!("{name:?} is not a bucket name: 1 to 63 of a-z, 0-9, '-', '.'"),
            ));
        }
        if !bucket.as_str().is_some_and(|b| component(b, 3)) {
            return Err(Error::validation(
                format!("{field}.{name}"),
                "must be an S3 bucket name: 3 to 63 of a-z, 0-9, '-', '.'",
            ));
        }
    }
    Ok(())
}

/// The range `settings.artifactRetentionDays` may take.
pub const ARTIFACT_RETENTION_DAYS: RangeInclusive<i64> = 1..=3650;

pub(crate) fn validate_new_tenant(new: &NewTenant) -> Result<()> {
    validate_text("name", &new.name, MAX_NAME_CHARS)?;
    validate_region(&new.region)?;
    validate_text("plan", &new.plan, MAX_PLAN_CHARS)?;
    validate_quotas(&new.quotas)?;
    validate_settings(&new.settings)
}

pub(crate) fn validate_patch(patch: &TenantPatch) -> Result<()> {
    if let Some(name) = &patch.name {
        validate_text("name", name, MAX_NAME_CHARS)?;
    }
    if let Some(region) = &patch.region {
        validate_region(region)?;
    }
    if let Some(plan) = &patch.plan {
        validate_text("plan", plan, MAX_PLAN_CHARS)?;
    }
    if let Some(quotas) = &patch.quotas {
        validate_quotas(quotas)?;
    }
    if let Some(settings) = &patch.settings {
        validate_settings_patch(settings)?;
    }
    Ok(())
}

/// A `settings` merge patch before it is applied: an object (a patch of
/// anything else would replace the settings with a non-object), without
/// U+0000, within the size limit. The merged settings are checked whole.
fn validate_settings_patch(patch: &Value) -> Result<()> {
    if !patch.is_object() {
        return Err(Error::validation(
            "settings",
            "must be a JSON object (a merge patch of the settings: null removes a key)",
        ));
    }
    if contains_nul(patch) {
        return Err(Error::validation(
            "settings",
            "must not contain the character U+0000",
        ));
    }
    let size = patch.to_string().len();
    if size > MAX_SETTINGS_BYTES {
        return Err(Error::validation(
            "settings",
            format!("are {size} bytes, larger than the {MAX_SETTINGS_BYTES}-byte limit"),
        ));
    }
    Ok(())
}

/// The stored settings with a patch's merge patch applied, checked as a
/// whole (what a tenant is created with must hold after every change too).
pub(crate) fn merged_settings(mut stored: Value, patch: &Value) -> Result<Value> {
    merge_patch(&mut stored, patch);
    validate_settings(&stored)?;
    Ok(stored)
}

/// The reason stored with a status: kept when suspending, cleared on resume.
pub(crate) fn reason_for(status: TenantStatus, reason: Option<String>) -> Result<Option<String>> {
    match (status, reason) {
        (TenantStatus::Active, _) => Ok(None),
        (TenantStatus::Suspended, None) => Ok(None),
        (TenantStatus::Suspended, Some(reason)) => {
            validate_text("reason", &reason, MAX_REASON_CHARS)?;
            Ok(Some(reason))
        }
    }
}

/// Operator keys have no tenant; tenant keys are never operators.
pub(crate) fn validate_key_request(tenant_id: Option<&str>, name: &str, role: Role) -> Result<()> {
    validate_text("name", name, MAX_NAME_CHARS)?;
    match (tenant_id, role) {
        (None, Role::Operator) | (Some(_), Role::Viewer | Role::Developer | Role::Admin) => Ok(()),
        (None, role) => Err(Error::validation(
            "role",
            format!("a key without a tenant must be an operator key, not {role}"),
        )),
        (Some(_), Role::Operator) => Err(Error::validation(
            "role",
            "operator keys belong to no tenant",
        )),
    }
}

/// When a key rotated at `now` stops working.
pub(crate) fn grace_end(now: DateTime<Utc>, grace: Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(grace)
        .ok()
        .and_then(|grace| now.checked_add_signed(grace))
        .ok_or_else(|| Error::validation("grace", "is too long"))
}

/// A key can be rotated once, while it is valid: rotate its successor next.
pub(crate) fn check_rotatable(key: &ApiKey) -> Result<()> {
    if key.revoked_at.is_some() {
        Err(Error::Conflict(format!(
            "cannot rotate api key {}: it is revoked",
            key.id
        )))
    } else if key.expires_at.is_some() {
        Err(Error::Conflict(format!(
            "cannot rotate api key {}: it was already rotated (rotate its successor)",
            key.id
        )))
    } else {
        Ok(())
    }
}

/// Does `key` (found by the token's prefix, stored with `stored_hash`) accept
/// `token` of `mode` at `now`?
pub(crate) fn key_accepts(
    key: &ApiKey,
    stored_hash: &[u8],
    mode: KeyMode,
    token: &str,
    now: DateTime<Utc>,
) -> bool {
    let hash_ok = digests_equal(stored_hash, &hash_token(token));
    hash_ok && key.mode == mode && key.is_valid_at(now)
}

/// If `last_used_at` is due a write at `now`: the time a stored value must be
/// older than (or absent) for the write to happen (so concurrent requests
/// write it once).
pub(crate) fn last_used_due(key: &ApiKey, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let threshold = now - chrono::Duration::from_std(LAST_USED_GRANULARITY).ok()?;
    match key.last_used_at {
        Some(last) if last > threshold => None,
        _ => Some(threshold),
    }
}

/// A tenant row's column names: as stored, or as renamed (`t_…`) where a key
/// is read with its tenant (each backend's `AUTHENTICATE_SQL`).
pub(crate) struct TenantColumns {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) region: &'static str,
    pub(crate) plan: &'static str,
    pub(crate) status: &'static str,
    pub(crate) suspended_reason: &'static str,
    pub(crate) max_running: &'static str,
    pub(crate) max_queued: &'static str,
    pub(crate) creations_per_minute: &'static str,
    pub(crate) max_schedules: &'static str,
    pub(crate) settings: &'static str,
    pub(crate) created_at: &'static str,
    pub(crate) updated_at: &'static str,
}

pub(crate) const TENANT: TenantColumns = TenantColumns {
    id: "id",
    name: "name",
    region: "region",
    plan: "plan",
    status: "status",
    suspended_reason: "suspended_reason",
    max_running: "max_running",
    max_queued: "max_queued",
    creations_per_minute: "creations_per_minute",
    max_schedules: "max_schedules",
    settings: "settings",
    created_at: "created_at",
    updated_at: "updated_at",
};

pub(crate) const JOINED_TENANT: TenantColumns = TenantColumns {
    id: "t_id",
    name: "t_name",
    region: "t_region",
    plan: "t_plan",
    status: "t_status",
    suspended_reason: "t_suspended_reason",
    max_running: "t_max_running",
    max_queued: "t_max_queued",
    creations_per_minute: "t_creations_per_minute",
    max_schedules: "t_max_schedules",
    settings: "t_settings",
    created_at: "t_created_at",
    updated_at: "t_updated_at",
};

// ---- audit events of tenancy changes (both backends write the same) ----------

pub(crate) fn tenant_created(tenant: &Tenant) -> Change {
    Change::new(
        "tenant.create",
        "tenant",
        &tenant.id,
        serde_json::json!({"name": tenant.name, "region": tenant.region, "plan": tenant.plan}),
    )
}

pub(crate) fn tenant_updated(id: &str, patch: &TenantPatch) -> Change {
    Change::new(
        "tenant.update",
        "tenant",
        id,
        serde_json::to_value(patch).unwrap_or(Value::Null),
    )
}

pub(crate) fn tenant_status_set(id: &str, status: TenantStatus, reason: Option<&str>) -> Change {
    let action = match status {
        TenantStatus::Suspended => "tenant.suspend",
        TenantStatus::Active => "tenant.resume",
    };
    Change::new(action, "tenant", id, serde_json::json!({"reason": reason}))
}

pub(crate) fn key_issued(key: &ApiKey) -> Change {
    Change::new(
        "api_key.create",
        "api_key",
        &key.id,
        serde_json::json!({"name": key.name, "role": key.role, "mode": key.mode, "prefix": key.prefix}),
    )
}

pub(crate) fn key_revoked(key: &ApiKey) -> Change {
    Change::new("api_key.revoke", "api_key", &key.id, serde_json::json!({}))
}

pub(crate) fn key_rotated(
    old_key_id: &str,
    successor: &ApiKey,
    old_expires_at: DateTime<Utc>,
) -> Change {
    Change::new(
        "api_key.rotate",
        "api_key",
        old_key_id,
        serde_json::json!({"successorKeyId": successor.id, "oldKeyExpiresAt": old_expires_at}),
    )
}

// ---- the store contract --------------------------------------------------------

/// Tenants and API keys. Missing tenants and keys (and another tenant's keys)
/// answer [`Error::NoSuchResource`]; bad input answers [`Error::Validation`]
/// before anything is written. Every change is written to the tenant's audit
/// log as done by `actor`, in the same transaction (operator keys, which have
/// no tenant, leave no audit event).
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// A new active tenant (`tnt_…`); its `max_running` is written to
    /// `tenant_limits` in the same transaction.
    async fn create_tenant(&self, new: NewTenant, actor: &Actor) -> Result<Tenant>;

    async fn get_tenant(&self, id: &str) -> Result<Tenant>;

    /// Tenants ordered by id, after the id `after` (keyset pagination).
    async fn list_tenants(&self, after: Option<&str>, limit: u32) -> Result<Vec<Tenant>>;

    /// Applies the patch's `Some` fields (`settings` merged into the stored
    /// ones, read in the same transaction); new quotas update
    /// `tenant_limits` in the same transaction.
    async fn update_tenant(&self, id: &str, patch: TenantPatch, actor: &Actor) -> Result<Tenant>;

    /// Suspends (with an optional reason) or resumes (clearing the reason).
    async fn set_tenant_status(
        &self,
        id: &str,
        status: TenantStatus,
        reason: Option<String>,
        actor: &Actor,
    ) -> Result<Tenant>;

    /// A new key (`key_…`) for the tenant, or an operator key (`tenant_id`
    /// `None`, role `Operator`). The answer holds the token; it is not stored.
    async fn issue_api_key(
        &self,
        tenant_id: Option<&str>,
        name: &str,
        role: Role,
        mode: KeyMode,
        actor: &Actor,
    ) -> Result<IssuedKey>;

    /// The key a token names with its tenant (`None` for operator keys), or
    /// `None` when the token is malformed, unknown, wrong, revoked or expired
    /// at `now`. A suspended tenant's keys still authenticate. Records
    /// `last_used_at = now`, at most once a [`LAST_USED_GRANULARITY`].
    async fn authenticate(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(ApiKey, Option<Tenant>)>>;

    /// All the tenant's keys (revoked and expired ones too), oldest first.
    async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>>;

    /// Revokes at once (`revoked_at = now`); revoking again changes nothing
    /// (and records nothing).
    async fn revoke_api_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<ApiKey>;

    /// Issues a successor with the same name, role and mode; the old key keeps
    /// working until `now + grace`. A revoked or already rotated key is a conflict.
    async fn rotate_api_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: DateTime<Utc>,
        grace: Duration,
        actor: &Actor,
    ) -> Result<IssuedKey>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issued(mode: KeyMode) -> KeyMaterial {
        KeyMaterial::generate(mode).expect("random source")
    }

    #[test]
    fn generated_tokens_parse_back_to_their_mode_and_prefix() {
        for mode in [KeyMode::Live, KeyMode::Test] {
            let key = issued(mode);
            assert!(key.token.starts_with(mode.token_start()));
            assert_eq!(key.token.len(), 8 + KEY_PREFIX_LEN + 1 + KEY_SECRET_LEN);
            assert_eq!(parse_token(&key.token), Some((mode, key.prefix.as_str())));
            assert_eq!(key.hash, hash_token(&key.token));
            assert!(key.id.starts_with("key_") && is_plausible_id(&key.id, KEY_ID_PREFIX));
        }
    }

    #[test]
    fn generated_tokens_differ_and_use_their_whole_alphabets() {
        let keys: Vec<KeyMaterial> = (0..200).map(|_| issued(KeyMode::Live)).collect();
        let prefixes: std::collections::HashSet<&str> =
            keys.iter().map(|k| k.prefix.as_str()).collect();
        assert_eq!(prefixes.len(), keys.len(), "prefixes must not repeat");
        let prefix_chars: std::collections::HashSet<u8> =
            keys.iter().flat_map(|k| k.prefix.bytes()).collect();
        assert_eq!(prefix_chars.len(), PREFIX_ALPHABET.len());
        let secret_chars: std::collections::HashSet<u8> = keys
            .iter()
            .flat_map(|k| {
                k.token[8 + KEY_PREFIX_LEN + 1..]
                    .bytes()
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(secret_chars.len(), SECRET_ALPHABET.len());
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let good = issued(KeyMode::Test).token;
        assert!(parse_token(&good).is_some());
        let bad = [
            String::new(),
            "lh_live_".to_string(),
            good.replacen("lh_test_", "lh_prod_", 1),
            good.replacen("lh_test_", "LH_TEST_", 1),
            good[..good.len() - 1].to_string(),
            format!("{good}x"),
            // The separator after the prefix.
            format!("{}-{}", &good[..20], &good[21..]),
            // Uppercase and digits 0, 1, 8, 9 are not in the prefix alphabet.
            format!("lh_test_ABCDEFGHIJKL_{}", &good[21..]),
            format!("lh_test_abcdefghij01_{}", &good[21..]),
            // A non-ASCII character in the secret (same byte length).
            format!("{}é", &good[..good.len() - 2]),
            format!("Bearer {good}"),
        ];
        for token in bad {
            assert_eq!(parse_token(&token), None, "{token:?} must not parse");
        }
    }

    #[test]
    fn digest_comparison() {
        let a = hash_token("lh_live_a");
        let mut b = a;
        assert!(digests_equal(&a, &b));
        b[31] ^= 1;
        assert!(!digests_equal(&a, &b));
        assert!(!digests_equal(&a[..31], &a));
    }

    #[test]
    fn roles_order_and_text() {
        assert!(Role::Viewer < Role::Developer);
        assert!(Role::Developer < Role::Admin);
        assert!(Role::Admin < Role::Operator);
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().expect("parses"), *role);
            assert_eq!(json!(role), json!(role.as_str()));
        }
        assert!("owner".parse::<Role>().is_err());
        assert!("suspended".parse::<TenantStatus>().is_ok());
        assert!("Active".parse::<TenantStatus>().is_err());
    }

    #[test]
    fn regions() {
        for ok in ["us", "eu", "eu-west", "us-east-1", "ap-southeast-2b"] {
            assert!(validate_region(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "u", "usa", "US", "eu-", "eu--west", "-eu", "eu-West", "eu_west", "é",
        ] {
            assert!(validate_region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_rules() {
        assert!(validate_settings(&json!({})).is_ok());
        assert!(validate_settings(&json!({"auditLogRetentionDays": 90})).is_ok());
        assert!(validate_settings(&json!({"artifactRetentionDays": 30})).is_ok());
        assert!(validate_settings(&json!({"artifactRetentionDays": 0})).is_err());
        assert!(validate_settings(&json!({"artifactRetentionDays": "7"})).is_err());
        assert!(validate_settings(&json!({"auditLogRetentionDays": 2555})).is_ok());
        for bad in [
            json!(null),
            json!([]),
            json!("x"),
            json!({"auditLogRetentionDays": 89}),
            json!({"auditLogRetentionDays": 2556}),
            json!({"auditLogRetentionDays": 365.5}),
            json!({"auditLogRetentionDays": "365"}),
            json!({"note": "a\u{0}b"}),
            json!({"blob": "x".repeat(MAX_SETTINGS_BYTES)}),
        ] {
            assert!(validate_settings(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_roles_match_tenancy() {
        let tenant = Some("tnt_0");
        assert!(validate_key_request(None, "ops", Role::Operator).is_ok());
        assert!(validate_key_request(tenant, "ci", Role::Developer).is_ok());
        assert!(validate_key_request(None, "ops", Role::Admin).is_err());
        assert!(validate_key_request(tenant, "ci", Role::Operator).is_err());
        assert!(validate_key_request(tenant, " ", Role::Viewer).is_err());
        assert!(validate_key_request(tenant, &"k".repeat(201), Role::Viewer).is_err());
        assert!(validate_key_request(tenant, &"é".repeat(200), Role::Viewer).is_ok());
    }

    #[test]
    fn issued_key_debug_hides_the_secret() {
        let key = IssuedKey {
            key: ApiKey {
                id: "key_1".into(),
                tenant_id: None,
                name: "ops".into(),
                role: Role::Operator,
                mode: KeyMode::Live,
                prefix: "abcdefghijkl".into(),
                created_at: Utc::now(),
                last_used_at: None,
                expires_at: None,
                revoked_at: None,
            },
            secret: "lh_live_abcdefghijkl_SECRETSECRETSECRETSECRETSECRET12".into(),
        };
        assert!(!format!("{key:?}").contains("SECRET"));
        assert_eq!(key.key.display_prefix(), "lh_live_abcdefghijkl");
    }

    #[test]
    fn serialized_names_are_camel_case() {
        let quotas = Quotas {
            max_running: Some(2),
            max_queued: None,
            creations_per_minute: Some(60),
            max_schedules: Some(5),
        };
        assert_eq!(
            json!(quotas),
            json!({"maxRunning": 2, "maxQueued": null, "creationsPerMinute": 60, "maxSchedules": 5})
        );
        let patch: TenantPatch =
            serde_json::from_value(json!({"quotas": {"maxRunning": 3}})).expect("patch");
        assert_eq!(patch.quotas.and_then(|q| q.max_running), Some(3));
        assert!(serde_json::from_value::<TenantPatch>(json!({"nmae": "x"})).is_err());
    }
}
