//! `longhaul admin …`: operator tools on the database itself (configured by
//! LONGHAUL_DATABASE_URL): bootstrap tenants and operator keys (the API needs
//! a key before anyone can call it; the secret is shown this once), enqueue a
//! job for any tenant, count jobs per state. Prints JSON. Tenants' own
//! clients use `longhaul jobs` and `longhaul export`, through the API.

use clap::Subcommand;
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::tenancy::{KeyMode, NewTenant, Quotas, Role};
use longhaul_core::{Config, JobClient};
use serde_json::{json, Value};

use super::jobs::JobArgs;
use crate::runtime;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create a tenant and print its first admin API key.
    CreateTenant {
        name: String,
        #[arg(long, default_value = "us")]
        region: String,
        #[arg(long, default_value = "standard")]
        plan: String,
    },
    /// Issue an operator key (spans tenants: manages tenants and plans).
    CreateOperatorKey { name: String },
    /// Enqueue one job for a tenant and print its id.
    Enqueue {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Jobs per state: one tenant's (--tenant), or the whole store's
    /// (--all-tenants).
    #[command(group(clap::ArgGroup::new("whose").required(true).args(["tenant", "all_tenants"])))]
    Counts {
        #[arg(long)]
        tenant: Option<String>,
        /// Every tenant's jobs together.
        #[arg(long)]
        all_tenants: bool,
    },
}

pub async fn run(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    let stores = runtime::connect(&config).await?;
    let output = match command {
        AdminCommand::CreateTenant { name, region, plan } => {
            let tenant = stores
                .create_tenant(
                    NewTenant {
                        name,
                        region,
                        plan,
                        quotas: Quotas::default(),
                        settings: json!({}),
                    },
                    &Actor::system(),
                )
                .await?;
            let issued = stores
                .issue_api_key(
                    Some(&tenant.id),
                    "bootstrap admin",
                    Role::Admin,
                    KeyMode::Live,
                    &Actor::system(),
                )
                .await?;
            json!({ "tenant": tenant, "apiKey": issued.secret, "keyId": issued.key.id })
        }
        AdminCommand::CreateOperatorKey { name } => {
            let issued = stores
                .issue_api_key(None, &name, Role::Operator, KeyMode::Live, &Actor::system())
                .await?;
            json!({ "apiKey": issued.secret, "keyId": issued.key.id })
        }
        AdminCommand::Enqueue { tenant, job } => {
            let params = job.params()?;
            let client = JobClient::new(
                stores.clone().job_store(),
                std::sync::Arc::new(longhaul_worker::jobs::catalogue()),
            );
            let enqueued = client
                .enqueue(EnqueueRequest {
                    queue: job.queue,
                    priority: job.priority,
                    max_attempts: job.max_attempts,
                    idempotency_key: job.idempotency_key,
                    ..EnqueueRequest::new(tenant, job.kind, params)
                })
                .await?;
            json!({ "id": enqueued.id, "created": enqueued.created })
        }
        AdminCommand::Counts { tenant, .. } => {
            let counts = match &tenant {
                Some(tenant) => stores.count_by_state_of(tenant).await?,
                None => stores.count_by_state().await?,
            };
            Value::Object(
                counts
                    .into_iter()
                    .map(|(state, n)| (state.to_string(), json!(n)))
                    .collect(),
            )
        }
    };
    println!("{output}");
    Ok(())
}
