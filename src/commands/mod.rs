//! One module per `longhaul` subcommand.

pub mod admin;
pub mod api;
pub mod dev;
pub mod export;
pub mod jobs;
pub mod migrate;
pub mod scan;
pub mod scheduler;
pub mod worker;
