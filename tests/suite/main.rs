//! The integration suite: one test binary (one link step) with a module per
//! area. Every test runs against both PostgreSQL and SQLite through the
//! `both_stores!` macro; PostgreSQL must be reachable (no silent skips).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failure

#[macro_use]
mod harness;
mod http;
mod wire;

mod api;
mod artifact_sweeper;
mod artifacts;
mod audit;
mod backlog;
mod caches;
mod conformance;
mod dashboard;
mod events;
mod exports;
mod failures;
mod freezing_proxy;
mod lockout;
mod openapi;
mod outage;
mod prefetch;
mod process;
mod quotas;
mod request_ids;
mod retention;
mod running_caps;
mod runtime;
mod scans;
mod scheduler_processes;
mod schedules;
mod schema_parity;
mod stalls;
mod support;
mod telemetry;
mod tenancy;
mod transport;
mod validation;
mod webhooks;
mod workers;
