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
pub mod scan_policies;
pub mod schedules;
pub mod tenants;
pub mod usage;
