//! `longhaul migrate`: applies the embedded migrations of the configured store.

use longhaul_core::Config;

use crate::runtime;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = runtime::connect(&config).await?;
    store.migrate().await?;
    println!(
        "migrations applied to {}",
        runtime::redact(&config.database_url)
    );
    Ok(())
}
