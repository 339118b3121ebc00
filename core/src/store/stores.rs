//! The umbrella over every store port: one `Arc<dyn Stores>` answers for
//! jobs, tenants, audit, schedules, artifacts, scans, retention, workers,
//! queue statistics and webhooks (both backends
//! implement them all), and `connect_stores` opens the one a URL names.

use std::sync::Arc;

use super::{JobStore, PgStore, PoolSettings, SqliteStore};
use crate::artifacts::records::ArtifactRecords;
use crate::audit::AuditStore;
use crate::error::{Error, Result};
use crate::queue_stats::QueueStatsStore;
use crate::retention::RetentionStore;
use crate::scans::ScanStore;
use crate::schedule::ScheduleStore;
use crate::tenancy::TenantStore;
use crate::webhooks::WebhookStore;
use crate::workers::WorkerStore;

/// A store that keeps both jobs and tenants (both backends do), so the API can
/// hold one `Arc<dyn Stores>`.
pub trait Stores:
    JobStore
    + TenantStore
    + AuditStore
    + ScheduleStore
    + ArtifactRecords
    + ScanStore
    + RetentionStore
    + WorkerStore
    + QueueStatsStore
    + WebhookStore
{
    /// The same store as a job store (for [`crate::JobClient`]): trait
    /// upcasting needs Rust 1.86 and the workspace supports 1.85.
    fn job_store(self: Arc<Self>) -> Arc<dyn JobStore>;

    /// The same store as a tenant store.
    fn tenant_store(self: Arc<Self>) -> Arc<dyn TenantStore>;
}

impl<T> Stores for T
where
    T: JobStore
        + TenantStore
        + AuditStore
        + ScheduleStore
        + ArtifactRecords
        + ScanStore
        + RetentionStore
        + WorkerStore
        + QueueStatsStore
        + WebhookStore,
{
    fn job_store(self: Arc<Self>) -> Arc<dyn JobStore> {
        self
    }

    fn tenant_store(self: Arc<Self>) -> Arc<dyn TenantStore> {
        self
    }
}

/// Opens the store a URL names (`postgres://…` or `sqlite://…`), as
/// [`crate::store::connect`] does, with both of its faces.
pub async fn connect_stores(url: &str, max_connections: u32) -> Result<Arc<dyn Stores>> {
    connect_stores_pool(url, PoolSettings::new(max_connections)).await
}

/// [`connect_stores`] with a pool's size and acquire timeout (the API's
/// requests wait less for a connection than workers do).
pub async fn connect_stores_pool(url: &str, pool: PoolSettings) -> Result<Arc<dyn Stores>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect_pool(url, pool).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect_pool(url, pool).await?))
    } else {
        Err(Error::validation(
            "database url",
            "must start with postgres:// or sqlite://",
        ))
    }
}
