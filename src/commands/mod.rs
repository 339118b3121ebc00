//! One module per `longhaul` subcommand.

pub mod dev;
pub mod jobs;
pub mod migrate;
pub mod worker;
