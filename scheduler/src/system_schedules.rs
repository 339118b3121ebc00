//! The platform's own schedules (tenant-less, their jobs run as the system
//! tenant): created when the scheduler starts if their kind is in the
//! catalogue and they do not exist yet; an operator may pause or change
//! them afterwards, and a restart leaves them as they are.

use chrono::Utc;
use longhaul_core::audit::Actor;
use longhaul_core::retention::sweep::{NIGHTLY_CRON, NIGHTLY_SCHEDULE, RETENTION_SWEEP};
use longhaul_core::schedule::NewSchedule;
use longhaul_core::{Catalogue, Error, Result};

use crate::SchedulerStore;

/// `(name, cron in UTC, kind)` of each system schedule.
pub const SYSTEM_SCHEDULES: &[(&str, &str, &str)] =
    &[(NIGHTLY_SCHEDULE, NIGHTLY_CRON, RETENTION_SWEEP)];

/// Creates the system schedules that are missing; how many it created.
pub async fn ensure_system_schedules(
    store: &dyn SchedulerStore,
    catalogue: &Catalogue,
) -> Result<usize> {
    let mut created = 0;
    for (name, cron, kind) in SYSTEM_SCHEDULES {
        if catalogue.get(kind).is_none() {
            continue;
        }
        let new: NewSchedule = serde_json::from_value(serde_json::json!({
            "name": name,
            "cron": cron,
            "kind": kind,
        }))
        .map_err(|e| Error::corrupt("a system schedule", e))?;
        match store
            .create_schedule(None, &new, None, Utc::now(), &Actor::system())
            .await
        {
            Ok(schedule) => {
                tracing::info!(schedule_id = %schedule.id, name, "created a system schedule");
                created += 1;
            }
            Err(Error::Conflict(_)) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(created)
}
