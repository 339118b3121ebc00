//! What job kinds that touch tenant data need beyond their job: the stores
//! (tenants, audit log, artifact records, scan results), the artifact object
//! stores and data buckets, and where scans may fetch from.

use std::sync::Arc;
use std::time::Duration;

use longhaul_core::artifacts::ArtifactStores;
use longhaul_core::config::ScanConfig;
use longhaul_core::store::Stores;

#[derive(Clone)]
pub struct JobServices {
    pub stores: Arc<dyn Stores>,
    pub artifacts: Arc<ArtifactStores>,
    /// How long artifacts are kept for tenants whose plan does not say.
    pub artifact_retention: Duration,
    /// Where leakage scans may fetch from (git hosts, local paths, URLs).
    pub scans: ScanConfig,
}

impl std::fmt::Debug for JobServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobServices")
            .field("artifacts", &self.artifacts)
            .field("artifact_retention", &self.artifact_retention)
            .field("scans", &self.scans)
            .finish_non_exhaustive()
    }
}
