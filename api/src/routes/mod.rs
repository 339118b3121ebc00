//! One module per resource; each exposes `routes()` for the router.

pub mod artifacts;
pub mod audit;
pub mod classification;
pub mod events;
pub mod exports;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod leakage;
pub mod queues;
pub mod retention;
pub mod scan_policies;
pub mod schedules;
pub mod tenants;
pub mod usage;
pub mod webhooks;
pub mod workers;

/// A page read with one row more than `limit` (keyset paging): drops the
/// extra row and answers the last row kept when there was one, i.e. when a
/// next page exists (its cursor names where the next page starts).
pub(crate) fn trim_page<T>(rows: &mut Vec<T>, limit: u32) -> Option<&T> {
    let limit = limit as usize;
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last()
    } else {
        None
    }
}
