//! `longhaul dev`: the embedded mode, zero set-up. Migrates the configured
//! store (a SQLite file under ./longhaul-data by default), makes sure a demo
//! tenant exists and prints a fresh admin key for it, then runs the API and a
//! worker pool for every queue of the catalogue, and the scheduler, in this one
//! process.

use std::collections::BTreeSet;
use std::sync::Arc;

use clap::Args;
use longhaul_core::audit::Actor;
use longhaul_core::tenancy::{KeyMode, NewTenant, Quotas, Role, Stores, Tenant};
use longhaul_core::{Config, JobStore};
use longhaul_worker::{PoolConfig, Registry, WorkerPool};
use serde_json::json;

use crate::runtime;

const DEMO_TENANT: &str = "demo";

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Jobs run at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
}

pub async fn run(config: Config, args: DevArgs) -> anyhow::Result<()> {
    let stores = runtime::connect(&config).await?;
    stores.migrate().await?;
    let tenant = demo_tenant(stores.as_ref()).await?;
    let key = stores
        .issue_api_key(
            Some(&tenant.id),
            "dev session",
            Role::Admin,
            KeyMode::Test,
            &Actor::system(),
        )
        .await?;

    let artifacts = runtime::artifact_stores(&config).await?;
    let state = super::api::app_state(&config, stores.clone(), artifacts.clone()).await?;
    let services = runtime::job_services(&config, stores.clone(), artifacts.clone()).await;

    let registry = Registry::builtin().with_services(&services);
    let queues: BTreeSet<String> = registry
        .catalogue()
        .names()
        .filter_map(|kind| {
            registry
                .catalogue()
                .get(kind)
                .map(|spec| spec.queue.clone())
        })
        .collect();
    let mut pool_config = PoolConfig::from_config(&config);
    pool_config.queues = queues.into_iter().collect();
    pool_config.concurrency = usize::from(args.concurrency);

    let base = format!("http://{}", config.api_addr);
    println!(
        "Longhaul dev: store {}",
        runtime::redact(&config.database_url)
    );
    println!("  API        {base}  (health: {base}/healthz)");
    println!("  tenant     {} ({})", tenant.name, tenant.id);
    println!("  API key    {}", key.secret);
    println!(
        "  worker     queues {:?}, concurrency {}",
        pool_config.queues, pool_config.concurrency
    );
    println!(
        "  try:       curl -s -X POST {base}/v1/jobs -H 'Authorization: Bearer {}' \\",
        key.secret
    );
    println!(
        "               -H 'Content-Type: application/json' -d '{}'",
        json!({"kind": "system.sleep", "params": {"durationMs": 3000, "steps": 6}})
    );
    println!("  stop with ctrl-c");

    let shutdown = runtime::shutdown_on_signal();
    let job_store: Arc<dyn JobStore> = stores.clone();
    let pool = WorkerPool::new(job_store, registry, pool_config);
    let worker = tokio::spawn(pool.run(shutdown.clone()));
    let scheduler_store: Arc<dyn longhaul_scheduler::SchedulerStore> = stores.clone();
    let scheduler = tokio::spawn(longhaul_scheduler::run(
        scheduler_store,
        Arc::new(longhaul_core::Catalogue::builtin()),
        longhaul_scheduler::SchedulerConfig::from_config(&config),
        Some(artifacts),
        shutdown.clone(),
    ));
    let api_shutdown = shutdown.clone();
    let served = longhaul_api::serve(
        config.api_addr,
        state,
        runtime::serve_options(&config),
        async move { api_shutdown.cancelled().await },
    )
    .await;
    shutdown.cancel();
    worker.await?;
    scheduler.await?;
    served?;
    Ok(())
}

/// The tenant named "demo", created on first start.
async fn demo_tenant(stores: &dyn Stores) -> anyhow::Result<Tenant> {
    let mut cursor: Option<String> = None;
    loop {
        let page = stores.list_tenants(cursor.as_deref(), 200).await?;
        if let Some(found) = page.iter().find(|t| t.name == DEMO_TENANT) {
            return Ok(found.clone());
        }
        match page.last() {
            Some(last) if page.len() == 200 => cursor = Some(last.id.clone()),
            _ => break,
        }
    }
    Ok(stores
        .create_tenant(
            NewTenant {
                name: DEMO_TENANT.into(),
                region: "us".into(),
                plan: "dev".into(),
                quotas: Quotas::default(),
                settings: json!({}),
            },
            &Actor::system(),
        )
        .await?)
}
