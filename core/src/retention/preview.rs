//! Reading what a policy or a hold covers from the data itself: a policy's
//! preview (what a cleanup would delete now) and the events and objects a
//! hold covers. Both walk the tenant's audit log (and, for objects, what
//! classification scans know of its data buckets) by keyset, in pages.

use chrono::{DateTime, Utc};

use super::matching::HoldMatcher;
use super::{CleanupParams, HoldScope, Holds, ObjectFacts, RetentionPreview, RetentionStore};
use crate::error::Result;

/// Events read per page.
const PAGE: u32 = 10_000;

/// What a cleanup with `params` would delete at `now`, and what holds keep.
pub async fn preview(
    store: &dyn RetentionStore,
    tenant_id: &str,
    params: &CleanupParams,
    now: DateTime<Utc>,
) -> Result<RetentionPreview> {
    let selection = params.selection()?;
    let holds = Holds::new(&store.legal_holds_in_force(tenant_id, now, &[]).await?)?;
    let mut preview = RetentionPreview {
        policy_id: params.policy_id.clone(),
        cutoff: params.cutoff,
        ..RetentionPreview::default()
    };
    each_event_before(store, tenant_id, params.cutoff, |event| {
        if !selection.covers_event(&event.facts()) {
            return;
        }
        if holds.holds_event(&event.facts()) {
            preview.events_held += 1;
            return;
        }
        preview.events_affected += 1;
        preview.size_bytes += event.size;
        let at = event.cursor.occurred_at;
        preview.oldest_event_date = Some(preview.oldest_event_date.map_or(at, |d| d.min(at)));
        preview.newest_event_date = Some(preview.newest_event_date.map_or(at, |d| d.max(at)));
    })
    .await?;
    Ok(preview)
}

/// The tenant's audit events a hold with `scope` covers.
pub async fn events_covered(
    store: &dyn RetentionStore,
    tenant_id: &str,
    scope: &HoldScope,
) -> Result<u64> {
    let matcher = HoldMatcher::new("", scope)?;
    if scope.event_types.is_empty() && scope.resource_ids.is_empty() {
        return Ok(0);
    }
    // Every event, however recent (ingest accepts events up to minutes in
    // the future): `latest()` is past them all.
    let mut covered = 0;
    each_event_before(store, tenant_id, super::latest(), |event| {
        if matcher.holds_event(&event.facts()) {
            covered += 1;
        }
    })
    .await?;
    Ok(covered)
}

/// Hands `visit` each of the tenant's audit events (stored and job
/// transitions) that occurred before `end`, in key order, a page at a time.
async fn each_event_before(
    store: &dyn RetentionStore,
    tenant_id: &str,
    end: DateTime<Utc>,
    mut visit: impl FnMut(&super::ExpiredEvent),
) -> Result<()> {
    let mut after = None;
    loop {
        let page = store
            .expired_audit_events(tenant_id, end, after, PAGE)
            .await?;
        page.iter().for_each(&mut visit);
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some(last.cursor),
            _ => return Ok(()),
        }
    }
}

/// The tenant's objects a hold with `scope` covers, among those the
/// classification scans have seen (the platform knows no other list of a
/// tenant's objects without reading its buckets).
pub async fn objects_covered(
    store: &dyn RetentionStore,
    tenant_id: &str,
    scope: &HoldScope,
) -> Result<u64> {
    if scope.buckets.is_empty() && scope.object_keys.is_empty() {
        return Ok(0);
    }
    let matcher = HoldMatcher::new("", scope)?;
    let mut covered = 0;
    let mut after = None;
    loop {
        let page = store
            .classified_objects_after(tenant_id, after, PAGE)
            .await?;
        covered += page
            .iter()
            .filter(|(bucket, key)| {
                matcher.holds_object(&ObjectFacts {
                    bucket,
                    key,
                    classification: None,
                })
            })
            .count() as u64;
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some(last.clone()),
            _ => return Ok(covered),
        }
    }
}

/// Events and objects a hold with `scope` covers.
pub async fn covered(
    store: &dyn RetentionStore,
    tenant_id: &str,
    scope: &HoldScope,
) -> Result<u64> {
    Ok(events_covered(store, tenant_id, scope).await?
        + objects_covered(store, tenant_id, scope).await?)
}
