//! The job kinds this worker runs, one file each, and the list of built-in
//! handlers that [`crate::Registry`] wires to their catalogue entries.

pub mod audit_export;
pub mod classification_scan;
pub mod leakage_scan;
pub mod noop;
pub mod scanning;
pub mod sleep;

use std::sync::Arc;

use longhaul_core::kinds::{SYSTEM_NOOP, SYSTEM_SLEEP};

use crate::handler::JobHandler;

/// The built-in kinds that need tenant data, with their handlers.
pub fn data_handlers(services: &crate::JobServices) -> Vec<(&'static str, Arc<dyn JobHandler>)> {
    vec![
        (
            longhaul_core::audit::export::AUDIT_EXPORT,
            audit_export::handler(services.clone()),
        ),
        (
            longhaul_core::scans::leakage::LEAKAGE_SCAN,
            leakage_scan::handler(services.clone()),
        ),
        (
            longhaul_core::scans::classification::CLASSIFICATION_SCAN,
            classification_scan::handler(services.clone()),
        ),
    ]
}

/// The built-in kinds that need nothing but their job, with their handlers.
pub fn builtin_handlers() -> Vec<(&'static str, Arc<dyn JobHandler>)> {
    vec![
        (SYSTEM_NOOP, Arc::new(noop::Noop)),
        (SYSTEM_SLEEP, Arc::new(sleep::Sleep)),
    ]
}
