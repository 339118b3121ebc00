//! The job kinds this worker runs, one module each, and [`kinds`]: the one
//! list that ties each kind to its handler. The catalogue every role uses
//! (API validation, schedules, the worker) is built from that list.

pub mod audit_export;
pub mod classification_scan;
pub mod leakage_scan;
pub mod noop;
pub mod retention_cleanup;
mod retention_objects;
pub mod retention_sweep;
pub mod scanning;
pub mod sleep;
pub mod webhook_delivery;

use std::sync::Arc;

use longhaul_core::Catalogue;

use crate::handler::{BuiltinKind, Registry};
use crate::JobServices;

/// Every kind this worker knows. Adding a kind: write its module (the
/// `JobKind` and its `KindHandler`), then add one line here.
pub fn kinds() -> Vec<BuiltinKind> {
    vec![
        BuiltinKind::standalone(noop::Noop),
        BuiltinKind::standalone(sleep::Sleep),
        BuiltinKind::with_services(audit_export::AuditExport::new),
        BuiltinKind::with_services(leakage_scan::LeakageScan::new),
        BuiltinKind::with_services(classification_scan::ClassificationScan::new),
        BuiltinKind::with_services(retention_cleanup::RetentionCleanup::new),
        BuiltinKind::with_services(retention_sweep::RetentionSweep::new),
        BuiltinKind::with_services(webhook_delivery::WebhookDelivery::new),
    ]
}

/// Every kind with the handlers that need no services.
pub fn registry() -> Registry {
    registry_for(Arc::new(catalogue()))
}

/// A catalogue (every kind plus test kinds, say) with the handlers, among
/// [`kinds`], that need no services.
pub fn registry_for(catalogue: Arc<Catalogue>) -> Registry {
    Registry::from_kinds(catalogue, &kinds())
}

/// Every kind with every handler: what a worker process runs.
pub fn registry_with_services(services: &JobServices) -> Registry {
    registry().with_services(&kinds(), services)
}

/// The specs of every kind in [`kinds`]: what the API, the scheduler and
/// the worker validate jobs against.
pub fn catalogue() -> Catalogue {
    let mut catalogue = Catalogue::empty();
    for kind in kinds() {
        catalogue.register(kind.spec);
    }
    catalogue
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_catalogue_holds_every_kind_with_its_validator() {
        let catalogue = catalogue();
        let names: Vec<_> = catalogue.names().collect();
        assert_eq!(
            names,
            [
                "audit.export",
                "audit.retention_cleanup",
                "classification.scan",
                "leakage.scan",
                "retention.sweep",
                "system.noop",
                "system.sleep",
                "webhook.deliver"
            ]
        );
        let noop = catalogue.get("system.noop").expect("noop");
        assert!((noop.validate)(&json!({})).is_ok());
        assert!((noop.validate)(&json!({"x": 1})).is_err());
        assert!((noop.validate)(&json!([1])).is_err());

        let sleep = catalogue.get("system.sleep").expect("sleep");
        assert!((sleep.validate)(&json!({"durationMs": 100, "steps": 4})).is_ok());
        assert!((sleep.validate)(&json!({"durationMs": 100})).is_ok());
        assert!((sleep.validate)(&json!({"durationMs": -1})).is_err());
        assert!((sleep.validate)(&json!({"durationMs": 100, "steps": 0})).is_err());
        assert!((sleep.validate)(&json!({"duration": 100})).is_err());
        assert!((sleep.validate)(&json!({"durationMs": 90_000_000})).is_err());
        assert!(catalogue.get("system.unknown").is_none());

        let export = catalogue.get("audit.export").expect("export");
        assert!(export.internal);
        assert_eq!(export.queue, "exports");
        assert_eq!(catalogue.get("leakage.scan").expect("scan").queue, "scans");
    }
}
