//! `longhaul dev`: the embedded mode, zero set-up. Migrates the configured
//! store (a SQLite file under ./longhaul-data by default), binds the API's
//! address (a taken port stops it here, before anything is printed or
//! issued), makes sure a demo tenant exists with a data bucket of sample
//! files (`bucket.rs`) and prints its admin key (kept across restarts,
//! `key.rs`), then runs the API, a worker pool for every queue of the
//! catalogue, and the scheduler, in this one process. The first ctrl-c
//! closes the API and lets running jobs finish within the grace period; a
//! second one hands them back at once.

mod bucket;
mod key;

use std::collections::BTreeSet;
use std::sync::Arc;

use clap::Args;
use longhaul_core::audit::Actor;
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{NewTenant, Quotas, Tenant};
use longhaul_core::{Config, JobStore};
use longhaul_worker::{PoolConfig, WorkerPool};
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
    let listener = super::api::listen(&config).await?;
    let api_addr = listener.local_addr().unwrap_or(config.api_addr);
    let tenant = demo_tenant(stores.as_ref()).await?;
    let demo_bucket = bucket::demo_bucket(stores.as_ref(), &tenant, &config).await?;
    let key = key::demo_key(stores.as_ref(), &tenant, &config.data_dir).await?;

    let artifacts = runtime::artifact_stores(&config).await?;
    let state = super::api::app_state(&config, stores.clone(), artifacts.clone()).await?;
    let services = runtime::job_services(&config, stores.clone(), artifacts.clone()).await;

    let registry = longhaul_worker::jobs::registry_with_services(&services);
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

    // Signals are ours before the banner says how to stop.
    let shutdown = runtime::shutdown_on_signal();
    let base = format!("http://{api_addr}");
    println!(
        "Longhaul dev: store {}",
        runtime::redact(&config.database_url)
    );
    println!("  API        {base}  (health: {base}/healthz)");
    println!("  tenant     {} ({})", tenant.name, tenant.id);
    let kept = if key.reused {
        "the same as last time"
    } else {
        "new"
    };
    println!(
        "  API key    {}  ({kept}; kept in {})",
        key.secret,
        key.path.display()
    );
    if let Some(bucket) = &demo_bucket {
        let added = if bucket.samples.is_empty() {
            String::new()
        } else {
            format!("; samples written: {}", bucket.samples.join(", "))
        };
        println!(
            "  data       bucket {:?} = {}{added}",
            bucket.name,
            bucket.folder.display()
        );
    }
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
    if let Some(bucket) = &demo_bucket {
        println!(
            "  scan:      curl -s -X POST {base}/v1/classification/scans -H 'Authorization: Bearer {}' \\",
            key.secret
        );
        println!(
            "               -H 'Content-Type: application/json' -d '{}'",
            json!({"scope": {"buckets": [bucket.name]}})
        );
    }
    println!(
        "  stop with ctrl-c (running jobs get {} s to finish; ctrl-c again hands them back)",
        pool_config.shutdown_grace.as_secs()
    );

    let job_store: Arc<dyn JobStore> = stores.clone();
    let presence: Arc<dyn longhaul_core::workers::WorkerStore> = stores.clone();
    let pool = WorkerPool::new(job_store, registry, pool_config).with_presence(presence);
    let worker = tokio::spawn(pool.run_with(shutdown.clone()));
    let scheduler_store: Arc<dyn longhaul_scheduler::SchedulerStore> = stores.clone();
    let scheduler = tokio::spawn(longhaul_scheduler::run(
        scheduler_store,
        Arc::new(longhaul_worker::jobs::catalogue()),
        longhaul_scheduler::SchedulerConfig::from_config(&config),
        Some(artifacts),
        shutdown.stop.clone(),
    ));
    let api_shutdown = shutdown.stop.clone();
    let served = longhaul_api::serve_listener(
        listener,
        state,
        runtime::serve_options(&config),
        async move { api_shutdown.cancelled().await },
    )
    .await;
    shutdown.stop.cancel();
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
