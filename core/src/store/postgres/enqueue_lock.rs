//! The enqueue lock: what keeps the maxQueued count exact although only jobs
//! of tenants with that quota are counted.
//!
//! A job is counted (`jobs.counted_in_quota`, the predicate of
//! `jobs_queued_tenant_idx`) when its tenant had a maxQueued quota as the
//! enqueue statement read the tenants table. Under READ COMMITTED, an enqueue
//! whose statement started just before an operator set the quota would insert
//! uncounted jobs after the quota's transaction marked the tenant's
//! outstanding ones. So every transaction that queues jobs first holds a
//! shared advisory lock per tenant ([`shared_begin`], [`lock_shared`]), and
//! setting a quota takes it exclusively ([`lock_exclusive`]) after updating
//! the tenant row and before marking: the exclusive lock waits for every
//! enqueue in flight, whose rows the marking then sees, and an enqueue that
//! takes its shared lock afterwards reads the new quota (its statement starts
//! after the lock was granted, that is after the quota committed).
//!
//! Shared locks never wait on each other and live in the lock manager (no
//! row is written), so enqueues of one tenant do not queue on each other.
//! The key is an FNV-1a hash of the tenant id in the advisory lock space
//! `(ENQUEUE_LOCK_CLASS, hash)`; two tenants sharing a hash only make a quota
//! change wait for the other's enqueues.

use sqlx::PgConnection;

use crate::error::{DbContext, Result};

/// First key of the two-key advisory lock space, apart from every other lock
/// of the store (the quota lock uses the one-key space).
const ENQUEUE_LOCK_CLASS: i32 = 0x4c48_4551; // "LHEQ"

/// The second key for a tenant: FNV-1a (32 bits) of its id.
fn tenant_key(tenant: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in tenant.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// A `BEGIN` that also takes the shared enqueue lock of each tenant, in the
/// same round trip (for `begin_with`). The keys are numbers written by us,
/// never the tenant ids themselves, so nothing needs quoting.
pub(crate) fn shared_begin<'a>(tenants: impl IntoIterator<Item = &'a str>) -> String {
    let mut keys: Vec<i32> = tenants.into_iter().map(tenant_key).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut statement = String::from("BEGIN");
    for key in keys {
        statement.push_str(&format!(
            "; SELECT pg_advisory_xact_lock_shared({ENQUEUE_LOCK_CLASS}, {key})"
        ));
    }
    statement
}

/// Takes the shared enqueue lock of each tenant inside a transaction the
/// caller began (enqueues inside a scheduler fire, a webhook dispatch, …).
pub(crate) async fn lock_shared<'a>(
    conn: &mut PgConnection,
    tenants: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let mut keys: Vec<i32> = tenants.into_iter().map(tenant_key).collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, k) FROM unnest($2::int4[]) AS k")
        .bind(ENQUEUE_LOCK_CLASS)
        .bind(&keys)
        .execute(conn)
        .await
        .db("taking the enqueue lock")?;
    Ok(())
}

/// Waits for every enqueue of `tenant` in flight and holds new ones off
/// until the caller's transaction ends.
pub(crate) async fn lock_exclusive(conn: &mut PgConnection, tenant: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(ENQUEUE_LOCK_CLASS)
        .bind(tenant_key(tenant))
        .execute(conn)
        .await
        .db("taking the enqueue lock of a tenant whose quota changes")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fnv1a_and_begin_names_each_tenant_once() {
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(
            tenant_key("a"),
            i32::from_ne_bytes(0xe40c_292c_u32.to_ne_bytes())
        );
        assert_ne!(tenant_key("tn_a"), tenant_key("tn_b"));
        let begin = shared_begin(["tn_b", "tn_a", "tn_b"]);
        assert!(begin.starts_with("BEGIN; SELECT pg_advisory_xact_lock_shared("));
        assert_eq!(begin.matches("pg_advisory_xact_lock_shared").count(), 2);
        assert_eq!(shared_begin([]), "BEGIN");
    }
}
