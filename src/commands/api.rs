//! `longhaul api`: the HTTP API role, until SIGTERM or ctrl-c.

use std::sync::Arc;

use longhaul_api::AppState;
use longhaul_core::{Catalogue, Config};

use crate::runtime;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let stores = runtime::connect(&config).await?;
    let state = AppState::new(stores, Arc::new(Catalogue::builtin()));
    let shutdown = runtime::shutdown_on_signal();
    longhaul_api::serve(
        config.api_addr,
        state,
        async move { shutdown.cancelled().await },
    )
    .await?;
    Ok(())
}
