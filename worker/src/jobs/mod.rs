//! The job kinds this worker runs, one file each, and the list of built-in
//! handlers that [`crate::Registry`] wires to their catalogue entries.

pub mod noop;
pub mod sleep;

use std::sync::Arc;

use longhaul_core::kinds::{SYSTEM_NOOP, SYSTEM_SLEEP};

use crate::handler::JobHandler;

/// Every built-in kind with its handler.
pub fn builtin_handlers() -> Vec<(&'static str, Arc<dyn JobHandler>)> {
    vec![
        (SYSTEM_NOOP, Arc::new(noop::Noop)),
        (SYSTEM_SLEEP, Arc::new(sleep::Sleep)),
    ]
}
