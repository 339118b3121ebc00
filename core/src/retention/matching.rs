//! Which audit events and objects a policy covers and a legal hold protects:
//! scopes compiled once (event-type and object-key globs through `globset`)
//! and asked per event or object.

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{HoldScope, LegalHold, PolicyScope};
use crate::error::{Error, Result};

/// What matching needs of an audit event.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    pub action: &'a str,
    /// `api`, `system` or `application`.
    pub source: &'a str,
    pub resource_id: Option<&'a str>,
}

/// What matching needs of an object in a data bucket.
#[derive(Debug, Clone, Copy)]
pub struct ObjectFacts<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// The level the latest classification scan recorded, if any.
    pub classification: Option<&'a str>,
}

/// Compiles glob patterns (`*` any run of characters, `?` one, `[…]`
/// classes, `{a,b}` alternatives); `field` names them in errors.
pub(crate) fn glob_set(field: &str, patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for (index, pattern) in patterns.iter().enumerate() {
        let glob = Glob::new(pattern).map_err(|e| {
            Error::validation(format!("{field}[{index}]"), format!("is not a glob: {e}"))
        })?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| Error::validation(field, format!("cannot be compiled: {e}")))
}

/// A policy's scope, compiled.
#[derive(Debug, Clone)]
pub struct ScopeMatcher {
    event_types: Option<GlobSet>,
    services: Vec<String>,
    buckets: Vec<String>,
    classifications: Vec<String>,
}

impl ScopeMatcher {
    pub fn new(scope: &PolicyScope) -> Result<Self> {
        Ok(ScopeMatcher {
            event_types: glob_set("scope.eventTypes", &scope.event_types)?,
            services: scope.services.clone(),
            buckets: scope.buckets.clone(),
            classifications: scope.classifications.clone(),
        })
    }

    /// An empty list of event types or services covers all of them.
    pub fn covers_event(&self, event: &EventFacts<'_>) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.is_match(event.action))
            && (self.services.is_empty() || self.services.iter().any(|s| s == event.source))
    }

    /// Objects of the scope's buckets; with classifications named, only
    /// objects a scan classified at one of those levels.
    pub fn covers_object(&self, object: &ObjectFacts<'_>) -> bool {
        self.buckets.iter().any(|b| b == object.bucket)
            && (self.classifications.is_empty()
                || object
                    .classification
                    .is_some_and(|level| self.classifications.iter().any(|c| c == level)))
    }
}

/// A legal hold's scope, compiled. The event criteria (event types,
/// resource ids) hold audit events, the object criteria (buckets, object
/// keys) objects; within each, every named criterion must match.
#[derive(Debug, Clone)]
pub struct HoldMatcher {
    pub hold_id: String,
    event_types: Option<GlobSet>,
    resource_ids: Vec<String>,
    buckets: Vec<String>,
    object_keys: Option<GlobSet>,
}

impl HoldMatcher {
    pub fn new(hold_id: &str, scope: &HoldScope) -> Result<Self> {
        Ok(HoldMatcher {
            hold_id: hold_id.to_string(),
            event_types: glob_set("scope.eventTypes", &scope.event_types)?,
            resource_ids: scope.resource_ids.clone(),
            buckets: scope.buckets.clone(),
            object_keys: glob_set("scope.objectKeys", &scope.object_keys)?,
        })
    }

    pub fn holds_event(&self, event: &EventFacts<'_>) -> bool {
        let has_criteria = self.event_types.is_some() || !self.resource_ids.is_empty();
        has_criteria
            && self
                .event_types
                .as_ref()
                .is_none_or(|types| types.is_match(event.action))
            && (self.resource_ids.is_empty()
                || event
                    .resource_id
                    .is_some_and(|id| self.resource_ids.iter().any(|r| r == id)))
    }

    pub fn holds_object(&self, object: &ObjectFacts<'_>) -> bool {
        let has_criteria = !self.buckets.is_empty() || self.object_keys.is_some();
        has_criteria
            && (self.buckets.is_empty() || self.buckets.iter().any(|b| b == object.bucket))
            && self
                .object_keys
                .as_ref()
                .is_none_or(|keys| keys.is_match(object.key))
    }
}

/// The holds in force for one run: those active when it looked, plus those
/// an earlier attempt of the run saw (a hold released meanwhile still
/// protects what that attempt left alone).
#[derive(Debug, Clone, Default)]
pub struct Holds(Vec<HoldMatcher>);

impl Holds {
    pub fn new(holds: &[LegalHold]) -> Result<Self> {
        holds
            .iter()
            .map(|hold| HoldMatcher::new(&hold.hold_id, &hold.scope))
            .collect::<Result<Vec<_>>>()
            .map(Holds)
    }

    pub fn ids(&self) -> Vec<String> {
        self.0.iter().map(|h| h.hold_id.clone()).collect()
    }

    pub fn holds_event(&self, event: &EventFacts<'_>) -> bool {
        self.0.iter().any(|hold| hold.holds_event(event))
    }

    pub fn holds_object(&self, object: &ObjectFacts<'_>) -> bool {
        self.0.iter().any(|hold| hold.holds_object(object))
    }
}

/// What a run deletes: covered by its scope, not by a scope it must leave
/// to other policies (the default policy leaves what explicit policies
/// cover), and not held.
#[derive(Debug, Clone)]
pub struct Selection {
    pub scope: ScopeMatcher,
    pub excluded: Vec<ScopeMatcher>,
}

impl Selection {
    pub fn new(scope: &PolicyScope, excluded: &[PolicyScope]) -> Result<Self> {
        Ok(Selection {
            scope: ScopeMatcher::new(scope)?,
            excluded: excluded
                .iter()
                .map(ScopeMatcher::new)
                .collect::<Result<_>>()?,
        })
    }

    pub fn covers_event(&self, event: &EventFacts<'_>) -> bool {
        self.scope.covers_event(event) && !self.excluded.iter().any(|x| x.covers_event(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(action: &'a str, source: &'a str, resource: Option<&'a str>) -> EventFacts<'a> {
        EventFacts {
            action,
            source,
            resource_id: resource,
        }
    }

    #[test]
    fn scopes_match_event_types_by_glob_and_services_exactly() {
        let scope = PolicyScope {
            event_types: vec!["job.*".into(), "user.log{in,out}".into()],
            services: vec!["system".into(), "application".into()],
            ..PolicyScope::default()
        };
        let matcher = ScopeMatcher::new(&scope).unwrap();
        assert!(matcher.covers_event(&event("job.succeeded", "system", None)));
        assert!(matcher.covers_event(&event("user.logout", "application", None)));
        assert!(!matcher.covers_event(&event("user.login", "api", None)));
        assert!(!matcher.covers_event(&event("tenant.update", "system", None)));
        let everything = ScopeMatcher::new(&PolicyScope::default()).unwrap();
        assert!(everything.covers_event(&event("x", "api", None)));
    }

    #[test]
    fn holds_need_every_criterion_they_name() {
        let hold = HoldMatcher::new(
            "hld_1",
            &HoldScope {
                event_types: vec!["document.*".into()],
                resource_ids: vec!["doc-7".into()],
                ..HoldScope::default()
            },
        )
        .unwrap();
        assert!(hold.holds_event(&event("document.share", "application", Some("doc-7"))));
        assert!(!hold.holds_event(&event("document.share", "application", Some("doc-8"))));
        assert!(!hold.holds_event(&event("user.login", "application", Some("doc-7"))));
        let object = ObjectFacts {
            bucket: "b",
            key: "k",
            classification: None,
        };
        assert!(!hold.holds_object(&object), "an event hold holds no object");
        let objects = HoldMatcher::new(
            "hld_2",
            &HoldScope {
                buckets: vec!["b".into()],
                object_keys: vec!["reports/**".into()],
                ..HoldScope::default()
            },
        )
        .unwrap();
        assert!(objects.holds_object(&ObjectFacts {
            key: "reports/2026/q1.csv",
            ..object
        }));
        assert!(!objects.holds_object(&object));
        assert!(!objects.holds_event(&event("document.share", "api", None)));
    }

    #[test]
    fn the_default_selection_leaves_what_explicit_policies_cover() {
        let explicit = PolicyScope {
            event_types: vec!["job.*".into()],
            ..PolicyScope::default()
        };
        let selection = Selection::new(&PolicyScope::default(), &[explicit]).unwrap();
        assert!(!selection.covers_event(&event("job.failed", "system", None)));
        assert!(selection.covers_event(&event("user.login", "application", None)));
    }
}
