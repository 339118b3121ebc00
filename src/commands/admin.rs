//! `longhaul admin …`: bootstrap tenants and operator keys from the command
//! line (the API needs a key before anyone can call it). Prints JSON; the
//! secret is shown this once.

use clap::Subcommand;
use longhaul_core::audit::Actor;
use longhaul_core::tenancy::{KeyMode, NewTenant, Quotas, Role};
use longhaul_core::Config;
use serde_json::json;

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
    };
    println!("{output}");
    Ok(())
}
