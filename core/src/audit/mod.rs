//! The audit log: who changed what, when and from where, per tenant. It is the
//! data of audit exports and of retention cleanup.
//!
//! Three sources make it, each in the same transaction as the change:
//!
//! - **api**: every state-changing API call (`job.create`, `job.cancel`,
//!   `tenant.update`, `api_key.rotate`, …). The store operation takes the
//!   [`Actor`] (key, IP, request id) and writes the event itself;
//! - **system**: every job transition (`job.started`, `job.succeeded`,
//!   `job.failed`, `job.requeued`, …). These are not copied: the transition's
//!   own `job_events` row (every kind but `progress` and `checkpoint`) is the
//!   event, which scans and counts map to an [`AuditEvent`] as they read it
//!   (source and actor `system`, the worker as `actorId` of `job.started`,
//!   resource `job`, details `{attempt, data}`). No code path can change a
//!   job without its row, and pruning a job keeps its transitions (see
//!   `migrations/*/0010_audit_reads_job_events.sql`);
//! - **application**: events a tenant's own applications send through
//!   `POST /v1/audit/events` ([`NewAuditEvent`], validated here).
//!
//! `audit_events` rows are keyed `(tenant_id, occurred_at, id)`: the primary
//! key is the index for time-range scans of one tenant, and the keyset of
//! [`AuditCursor`]. Transitions are read from `job_events_tenant_at_idx`
//! `(tenant_id, at, id)` in the same order: a transition's event id is its
//! `job_events.id` (a bigint from 1) as the low eight bytes, big-endian, of a
//! uuid (`KeyRange::job_event_ids`), so one keyset runs through both tables
//! and a page boundary never skips or repeats an event. Such ids sort before
//! every stored event's (v7 or v4, never zero in their first bytes) at the
//! same time.

pub mod export;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::nul::contains_nul;

/// Most events one ingest request may carry.
pub const MAX_INGEST_BATCH: usize = 1000;
/// Largest page of a listing, and the default one.
pub const MAX_PAGE: u32 = 1000;
pub const DEFAULT_PAGE: u32 = 100;
/// Largest `details` object of an ingested event, serialized.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;
/// How far in the future an ingested `occurredAt` may be (clock skew).
pub const MAX_FUTURE_SKEW: Duration = Duration::minutes(5);

const ID_PREFIX: &str = "aud_";

/// Who makes a change and from where; written with the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    /// The API key that made the call (`None` for the system).
    pub key_id: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// A tenant's API key.
    ApiKey,
    /// An operator key acting on a tenant.
    OperatorKey,
    /// Longhaul itself: the command line, the scheduler, maintenance.
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::ApiKey => "api_key",
            ActorKind::OperatorKey => "operator_key",
            ActorKind::System => "system",
        }
    }
}

impl Actor {
    /// Longhaul itself (command line, scheduler, tests of the stores).
    pub fn system() -> Self {
        Actor {
            kind: ActorKind::System,
            key_id: None,
            ip: None,
            request_id: None,
        }
    }

    /// The `source` column of the events this actor writes.
    pub(crate) fn source(&self) -> &'static str {
        match self.kind {
            ActorKind::System => "system",
            ActorKind::ApiKey | ActorKind::OperatorKey => "api",
        }
    }
}

/// One change a store operation records for its tenant.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: String,
    pub details: Value,
}

impl Change {
    pub fn new(
        action: &'static str,
        resource_type: &'static str,
        resource_id: impl Into<String>,
        details: Value,
    ) -> Self {
        Change {
            action,
            resource_type,
            resource_id: resource_id.into(),
            details,
        }
    }
}

/// An audit event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// `aud_…`
    pub id: String,
    pub tenant_id: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// `api`, `system` or `application`.
    pub source: String,
    /// `api_key`, `operator_key`, `system`, or what an application says.
    pub actor_type: String,
    pub actor_id: Option<String>,
    /// The API key that made the call or sent the event.
    pub actor_key_id: Option<String>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    /// An application's own id for the event (deduplicates resends).
    pub external_id: Option<String>,
    /// A JSON object, as stored.
    #[schema(value_type = Object)]
    pub details: RawJson,
}

/// An audit event borrowed from its database row (no allocation per field):
/// what a scan hands its visitor. Serializes exactly as [`AuditEvent`].
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventRef<'a> {
    #[serde(serialize_with = "serialize_event_id")]
    pub id: Uuid,
    pub tenant_id: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub source: &'a str,
    pub actor_type: &'a str,
    pub actor_id: Option<&'a str>,
    pub actor_key_id: Option<&'a str>,
    pub action: &'a str,
    pub resource_type: Option<&'a str>,
    pub resource_id: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub external_id: Option<&'a str>,
    /// The details object as stored JSON text.
    #[serde(serialize_with = "serialize_raw_json")]
    pub details: &'a str,
}

fn serialize_event_id<S: serde::Serializer>(
    id: &Uuid,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let mut buf = Uuid::encode_buffer();
    let hex = id.simple().encode_lower(&mut buf);
    serializer.collect_str(&format_args!("{ID_PREFIX}{hex}"))
}

fn serialize_raw_json<S: serde::Serializer>(
    text: &&str,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    let raw: &serde_json::value::RawValue =
        serde_json::from_str(text).map_err(|e| S::Error::custom(format!("stored details: {e}")))?;
    raw.serialize(serializer)
}

impl AuditEventRef<'_> {
    /// The owned event (for listings).
    pub fn to_event(&self) -> Result<AuditEvent> {
        Ok(AuditEvent {
            id: event_id_text(self.id),
            tenant_id: self.tenant_id.to_string(),
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            source: self.source.to_string(),
            actor_type: self.actor_type.to_string(),
            actor_id: self.actor_id.map(str::to_string),
            actor_key_id: self.actor_key_id.map(str::to_string),
            action: self.action.to_string(),
            resource_type: self.resource_type.map(str::to_string),
            resource_id: self.resource_id.map(str::to_string),
            ip: self.ip.map(str::to_string),
            request_id: self.request_id.map(str::to_string),
            external_id: self.external_id.map(str::to_string),
            details: RawJson::from_text(self.details.to_string())
                .map_err(|error| Error::corrupt("audit event details", error))?,
        })
    }

    /// Where the next page starts after this event.
    pub fn cursor(&self) -> AuditCursor {
        AuditCursor {
            occurred_at: self.occurred_at,
            id: self.id,
        }
    }
}

/// What a scan calls for each event, in order; an error stops the scan.
pub type AuditVisitor<'v> = dyn FnMut(&AuditEventRef<'_>) -> Result<()> + Send + 'v;

/// JSON text passed through as it is (validated when read, never parsed into
/// a tree): an event's details on their way to a listing or an export.
#[derive(Debug, Clone)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// Checks that `text` is JSON.
    pub fn from_text(text: String) -> std::result::Result<Self, serde_json::Error> {
        serde_json::value::RawValue::from_string(text).map(RawJson)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl AuditEvent {
    /// Where the next page starts after this event.
    pub fn cursor(&self) -> Result<AuditCursor> {
        Ok(AuditCursor {
            occurred_at: self.occurred_at,
            id: parse_event_id(&self.id)?,
        })
    }
}

pub(crate) fn event_id_text(id: Uuid) -> String {
    format!("{ID_PREFIX}{}", id.simple())
}

fn parse_event_id(text: &str) -> Result<Uuid> {
    text.strip_prefix(ID_PREFIX)
        .filter(|hex| hex.len() == 32)
        .and_then(|hex| Uuid::try_parse(hex).ok())
        .ok_or_else(|| Error::validation("audit event id", format!("{text:?} is not one")))
}

/// An event a tenant's application sends (`POST /v1/audit/events`).
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAuditEvent {
    /// `user.login`, `document.share`, …: letters, digits and `._:/-`.
    #[schema(max_length = 128, pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
    pub action: String,
    /// When it happened (default: when it is received).
    pub occurred_at: Option<DateTime<Utc>>,
    /// Who did it, in the application's terms (default `application`).
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
    pub actor_type: Option<String>,
    /// 1 to 256 bytes, no control characters.
    #[schema(min_length = 1, max_length = 256)]
    pub actor_id: Option<String>,
    #[schema(max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
    pub resource_type: Option<String>,
    /// 1 to 256 bytes, no control characters.
    #[schema(min_length = 1, max_length = 256)]
    pub resource_id: Option<String>,
    /// The end user's IP address, if the application knows it.
    pub ip: Option<String>,
    /// The application's own id for the event: sending it again is not a
    /// second event. 1 to 128 bytes.
    #[schema(min_length = 1, max_length = 128)]
    pub external_id: Option<String>,
    /// A JSON object (at most 16 KiB).
    pub details: Option<Value>,
}

/// A batch checked and normalized for storage: times in whole microseconds
/// (what both stores keep), defaults filled in.
#[derive(Debug, Clone)]
pub struct CheckedEvents(pub(crate) Vec<CheckedEvent>);

#[derive(Debug, Clone)]
pub(crate) struct CheckedEvent {
    pub occurred_at: DateTime<Utc>,
    pub action: String,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub ip: Option<String>,
    pub external_id: Option<String>,
    pub details: Value,
}

impl CheckedEvents {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks an ingest batch: 1 to [`MAX_INGEST_BATCH`] events, each valid, its
/// time within the tenant's retention (`retention_days` back from `now`) and
/// no more than [`MAX_FUTURE_SKEW`] ahead. Errors name the field as
/// `events[i].field`.
pub fn check_ingest(
    events: Vec<NewAuditEvent>,
    now: DateTime<Utc>,
    retention_days: i64,
) -> Result<CheckedEvents> {
    if events.is_empty() {
        return Err(Error::validation("events", "must hold at least one event"));
    }
    if events.len() > MAX_INGEST_BATCH {
        return Err(Error::validation(
            "events",
            format!(
                "holds {} events; send at most {MAX_INGEST_BATCH} per request",
                events.len()
            ),
        ));
    }
    let oldest = now - Duration::days(retention_days);
    let newest = now + MAX_FUTURE_SKEW;
    let mut seen_external = std::collections::HashSet::new();
    let mut checked = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let field = |name: &str| format!("events[{i}].{name}");
        check_name(&field("action"), &event.action, 128)?;
        let actor_type = event.actor_type.unwrap_or_else(|| "application".into());
        check_name(&field("actorType"), &actor_type, 64)?;
        if let Some(resource_type) = &event.resource_type {
            check_name(&field("resourceType"), resource_type, 64)?;
        }
        check_text(&field("actorId"), event.actor_id.as_deref(), 256)?;
        check_text(&field("resourceId"), event.resource_id.as_deref(), 256)?;
        check_text(&field("externalId"), event.external_id.as_deref(), 128)?;
        if let Some(external_id) = &event.external_id {
            if !seen_external.insert(external_id.clone()) {
                return Err(Error::validation(
                    field("externalId"),
                    format!("{external_id:?} appears twice in the batch"),
                ));
            }
        }
        let ip = match event.ip {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| Error::validation(field("ip"), "is not an IPv4 or IPv6 address"))?
                    .to_string(),
            ),
            None => None,
        };
        let occurred_at = event.occurred_at.unwrap_or(now).trunc_subsecs(6);
        if occurred_at < oldest {
            return Err(Error::validation(
                field("occurredAt"),
                format!("is older than the tenant's audit log retention of {retention_days} days"),
            ));
        }
        if occurred_at > newest {
            return Err(Error::validation(
                field("occurredAt"),
                "is more than 5 minutes in the future",
            ));
        }
        let details = event
            .details
            .unwrap_or_else(|| Value::Object(Default::default()));
        if !details.is_object() {
            return Err(Error::validation(field("details"), "must be a JSON object"));
        }
        if contains_nul(&details) {
            return Err(Error::validation(
                field("details"),
                "must not contain the character U+0000",
            ));
        }
        let size = details.to_string().len();
        if size > MAX_DETAILS_BYTES {
            return Err(Error::validation(
                field("details"),
                format!("is {size} bytes, larger than the {MAX_DETAILS_BYTES}-byte limit"),
            ));
        }
        checked.push(CheckedEvent {
            occurred_at,
            action: event.action,
            actor_type,
            actor_id: event.actor_id,
            resource_type: event.resource_type,
            resource_id: event.resource_id,
            ip,
            external_id: event.external_id,
            details,
        });
    }
    Ok(CheckedEvents(checked))
}

/// An identifier-like name: 1 to `max` of letters, digits and `._:/-`,
/// starting with a letter or digit.
fn check_name(field: &str, value: &str, max: usize) -> Result<()> {
    let well_formed = !value.is_empty()
        && value.len() <= max
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c));
    if well_formed {
        Ok(())
    } else {
        Err(Error::validation(
            field,
            format!(
                "must be 1 to {max} letters, digits or ._:/- (starting with a letter or digit)"
            ),
        ))
    }
}

/// Free text: 1 to `max` bytes, no control characters.
fn check_text(field: &str, value: Option<&str>, max: usize) -> Result<()> {
    let Some(value) = value else { return Ok(()) };
    if value.is_empty() || value.len() > max {
        return Err(Error::validation(
            field,
            format!("must be 1 to {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// What a listing or an export selects; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Events that occurred at or after it.
    pub from: Option<DateTime<Utc>>,
    /// Events that occurred before it.
    pub to: Option<DateTime<Utc>>,
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub actor_key_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub source: Option<String>,
}

impl AuditFilter {
    /// Rejects values no event can have (a NUL, which PostgreSQL cannot
    /// store, or an empty range).
    pub fn check(&self) -> Result<()> {
        for (field, value) in [
            ("action", &self.action),
            ("actorId", &self.actor_id),
            ("actorKeyId", &self.actor_key_id),
            ("resourceType", &self.resource_type),
            ("resourceId", &self.resource_id),
            ("source", &self.source),
        ] {
            if value.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(Error::validation(
                    field,
                    "must not contain the character U+0000",
                ));
            }
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from >= to {
                return Err(Error::validation("to", "must be later than from"));
            }
        }
        Ok(())
    }

    /// The job whose transitions a `resourceId` filter selects: `job_` and
    /// 32 lowercase hex digits, as transitions spell their resource. `None`
    /// when the filter is absent or names no job (no transition matches it).
    pub(crate) fn job_resource(&self) -> Option<Uuid> {
        let hex = self.resource_id.as_deref()?.strip_prefix("job_")?;
        let lower_hex =
            hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        lower_hex.then(|| Uuid::try_parse(hex).ok()).flatten()
    }
}

/// Listing order: by `(occurred_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// A position in a tenant's log: `<microseconds since the epoch>.<id hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub occurred_at: DateTime<Utc>,
    pub id: Uuid,
}

impl fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            self.occurred_at.timestamp_micros(),
            self.id.simple()
        )
    }
}

impl FromStr for AuditCursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::validation("cursor", "is not a cursor this API returned");
        let (micros, hex) = s.split_once('.').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let occurred_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        if hex.len() != 32 {
            return Err(bad());
        }
        let id = Uuid::try_parse(hex).map_err(|_| bad())?;
        Ok(AuditCursor { occurred_at, id })
    }
}

/// The keyset range a page scans: rows strictly between `low` and `high` in
/// `(occurred_at, id)` order. It folds the filter's time range and the cursor
/// into the two bounds, so that both backends scan the primary key from one
/// bound towards the other and stop at `limit` rows, however deep the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub low: (DateTime<Utc>, Uuid),
    pub high: (DateTime<Utc>, Uuid),
}

impl KeyRange {
    pub fn new(filter: &AuditFilter, after: Option<AuditCursor>, order: Order) -> Self {
        // The nil uuid is never an event's id (v7 or random v4, or a
        // job_events id from 1), so an exclusive bound at (t, nil) keeps
        // every event at t above it.
        let earliest = DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::UNIX_EPOCH);
        let latest = DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::UNIX_EPOCH);
        let mut low = (filter.from.unwrap_or(earliest), Uuid::nil());
        let mut high = (filter.to.unwrap_or(latest), Uuid::nil());
        if let Some(cursor) = after {
            let at = (cursor.occurred_at, cursor.id);
            match order {
                Order::NewestFirst => high = high.min(at),
                Order::OldestFirst => low = low.max(at),
            }
        }
        KeyRange { low, high }
    }

    pub fn is_empty(&self) -> bool {
        self.low >= self.high
    }

    /// The same range on `job_events` rows, whose event id is their id in
    /// the low eight bytes of a uuid, big-endian: `(at, id) > (low time, low
    /// id)` and `(at, id) <= (high time, high id)`. A bound past every bigint
    /// (a stored event's uuid) has every row at its time below it.
    pub fn job_event_ids(&self) -> (i64, i64) {
        let low = i64::try_from(self.low.1.as_u128()).unwrap_or(i64::MAX);
        let high = i64::try_from(self.high.1.as_u128()).map_or(i64::MAX, |high| high - 1);
        (low, high)
    }
}

/// The event id of the `job_events` row `id`, as both stores' SQL computes it
/// (`lpad(to_hex(id), 32, '0')::uuid`, `unhex(printf('%032x', id))`).
#[cfg(test)]
fn job_event_uuid(id: i64) -> Uuid {
    Uuid::from_u128(u128::from(id.unsigned_abs()))
}

/// What an ingest stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ingested {
    /// New events.
    pub stored: usize,
    /// Events whose `externalId` was already in the log (not stored again).
    pub duplicates: usize,
}

/// The audit log of both backends.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Stores an application's events in one transaction, skipping those whose
    /// `externalId` the tenant's log already holds.
    async fn ingest_audit_events(
        &self,
        tenant_id: &str,
        actor: &Actor,
        events: &CheckedEvents,
    ) -> Result<Ingested>;

    /// Up to `limit` of the tenant's events matching `filter`, in `order`,
    /// strictly past `after` (keyset pagination on the primary key), each
    /// handed to `visit` borrowed from its row; how many there were.
    async fn scan_audit_events(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
        after: Option<AuditCursor>,
        order: Order,
        limit: u32,
        visit: &mut AuditVisitor<'_>,
    ) -> Result<usize>;

    /// [`AuditStore::scan_audit_events`] collected as owned events.
    async fn list_audit_events(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
        after: Option<AuditCursor>,
        order: Order,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let mut events = Vec::with_capacity(limit.min(MAX_PAGE) as usize);
        self.scan_audit_events(tenant_id, filter, after, order, limit, &mut |event| {
            events.push(event.to_event()?);
            Ok(())
        })
        .await?;
        Ok(events)
    }

    /// How many of the tenant's events match `filter` (an export's estimate).
    async fn count_audit_events(&self, tenant_id: &str, filter: &AuditFilter) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(action: &str) -> NewAuditEvent {
        NewAuditEvent {
            action: action.into(),
            occurred_at: None,
            actor_type: None,
            actor_id: None,
            resource_type: None,
            resource_id: None,
            ip: None,
            external_id: None,
            details: None,
        }
    }

    fn field_of(error: Error) -> String {
        match error {
            Error::Validation { field, .. } => field,
            other => panic!("not a validation error: {other}"),
        }
    }

    #[test]
    fn a_valid_batch_gets_defaults_and_whole_microseconds() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456789Z")
            .expect("time")
            .with_timezone(&Utc);
        let mut with_ip = event("user.login");
        with_ip.ip = Some("::ffff:10.0.0.1".into());
        let checked = check_ingest(vec![event("document.share"), with_ip], now, 365).expect("ok");
        assert_eq!(checked.len(), 2);
        assert_eq!(checked.0[0].actor_type, "application");
        assert_eq!(
            checked.0[0].occurred_at.timestamp_subsec_nanos(),
            123_456_000
        );
        assert_eq!(checked.0[0].details, json!({}));
        assert_eq!(checked.0[1].ip.as_deref(), Some("::ffff:10.0.0.1"));
    }

    #[test]
    fn bad_events_name_their_field_and_index() {
        let now = Utc::now();
        let cases: Vec<(NewAuditEvent, &str)> = vec![
            (event(""), "events[1].action"),
            (event("has space"), "events[1].action"),
            (event(&"a".repeat(129)), "events[1].action"),
            (
                NewAuditEvent {
                    ip: Some("999.1.1.1".into()),
                    ..event("a")
                },
                "events[1].ip",
            ),
            (
                NewAuditEvent {
                    details: Some(json!([1])),
                    ..event("a")
                },
                "events[1].details",
            ),
            (
                NewAuditEvent {
                    details: Some(json!({"x": "a\u{0}b"})),
                    ..event("a")
                },
                "events[1].details",
            ),
            (
                NewAuditEvent {
                    details: Some(json!({"x": "y".repeat(MAX_DETAILS_BYTES)})),
                    ..event("a")
                },
                "events[1].details",
            ),
            (
                NewAuditEvent {
                    occurred_at: Some(now - Duration::days(91)),
                    ..event("a")
                },
                "events[1].occurredAt",
            ),
            (
                NewAuditEvent {
                    occurred_at: Some(now + Duration::minutes(6)),
                    ..event("a")
                },
                "events[1].occurredAt",
            ),
            (
                NewAuditEvent {
                    actor_id: Some("a\nb".into()),
                    ..event("a")
                },
                "events[1].actorId",
            ),
            (
                NewAuditEvent {
                    actor_type: Some("".into()),
                    ..event("a")
                },
                "events[1].actorType",
            ),
        ];
        for (bad, expected) in cases {
            let error = check_ingest(vec![event("ok"), bad], now, 90).expect_err("refused");
            assert_eq!(field_of(error), expected);
        }
    }

    #[test]
    fn batches_are_one_to_a_thousand_events_with_distinct_external_ids() {
        let now = Utc::now();
        assert_eq!(
            field_of(check_ingest(vec![], now, 90).expect_err("empty")),
            "events"
        );
        let many = vec![event("a"); MAX_INGEST_BATCH + 1];
        assert_eq!(
            field_of(check_ingest(many, now, 90).expect_err("too many")),
            "events"
        );
        assert!(check_ingest(vec![event("a"); MAX_INGEST_BATCH], now, 90).is_ok());
        let twice = NewAuditEvent {
            external_id: Some("e-1".into()),
            ..event("a")
        };
        assert_eq!(
            field_of(check_ingest(vec![twice.clone(), twice], now, 90).expect_err("dup")),
            "events[1].externalId"
        );
    }

    #[test]
    fn job_event_ids_bound_the_rows_whose_uuids_the_range_holds() {
        assert_eq!(
            job_event_uuid(42).simple().to_string(),
            format!("{:032x}", 42),
            "what the SQL computes"
        );
        let at = Utc::now();
        let bounds = [
            Uuid::nil(),
            job_event_uuid(1),
            job_event_uuid(42),
            job_event_uuid(i64::MAX),
            Uuid::from_u128(u128::from(u64::MAX)),
            Uuid::now_v7(),
            Uuid::from_u128(u128::MAX),
        ];
        for low in bounds {
            for high in bounds {
                let range = KeyRange {
                    low: (at, low),
                    high: (at, high),
                };
                let (low_id, high_id) = range.job_event_ids();
                for id in [1, 2, 41, 42, 43, i64::MAX - 1, i64::MAX] {
                    let uuid = job_event_uuid(id);
                    assert_eq!(uuid > low, id > low_id, "{id} above {low}");
                    assert_eq!(uuid < high, id <= high_id, "{id} below {high}");
                }
            }
        }
    }

    #[test]
    fn only_a_job_id_as_transitions_spell_it_selects_transitions() {
        let of = |resource_id: Option<&str>| AuditFilter {
            resource_id: resource_id.map(str::to_string),
            ..AuditFilter::default()
        };
        let job = Uuid::try_parse("0193a4b2c3d47e8f9a0b1c2d3e4f5a6b").expect("uuid");
        assert_eq!(
            of(Some("job_0193a4b2c3d47e8f9a0b1c2d3e4f5a6b")).job_resource(),
            Some(job)
        );
        for other in [
            None,
            Some("job_0193A4B2C3D47E8F9A0B1C2D3E4F5A6B"),
            Some("job_"),
            Some("f-3"),
            Some("sch_0193a4b2c3d47e8f9a0b1c2d3e4f5a6b"),
            Some("job_0193a4b2-c3d4-7e8f-9a0b-1c2d3e4f5a6b"),
        ] {
            assert_eq!(of(other).job_resource(), None, "{other:?}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = AuditCursor {
            occurred_at: DateTime::from_timestamp_micros(1_763_892_000_123_456).expect("time"),
            id: Uuid::now_v7(),
        };
        assert_eq!(
            cursor.to_string().parse::<AuditCursor>().expect("parses"),
            cursor
        );
        for bad in [
            "",
            "12",
            "x.y",
            "12.abc",
            "12.0193a4b2-c3d4-7e8f-9a0b-1c2d3e4f5a6b",
        ] {
            assert!(bad.parse::<AuditCursor>().is_err(), "{bad}");
        }
    }
}
