//! `longhaul jobs …`: operator tools over the configured store. Every command
//! prints JSON, so it composes with jq and scripts: a job is printed as the
//! API answers it (camelCase, `status`, attempts as in `GET /v1/jobs/{id}`).

use anyhow::Context;
use clap::Subcommand;
use longhaul_api::routes::jobs::JobView;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::{Config, JobClient, JobId};
use serde_json::{json, Value};

use crate::runtime;

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Enqueue one job and print its id.
    Enqueue {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        kind: String,
        /// Params as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        #[arg(long)]
        queue: Option<String>,
        /// 0 (most urgent) to 9.
        #[arg(long)]
        priority: Option<i16>,
        #[arg(long)]
        max_attempts: Option<i32>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Print a job with its attempts.
    Get {
        #[arg(long)]
        tenant: String,
        id: String,
    },
    /// Cancel a queued job, or ask a running one to stop.
    Cancel {
        #[arg(long)]
        tenant: String,
        id: String,
    },
    /// Queue a failed or cancelled job again.
    Retry {
        #[arg(long)]
        tenant: String,
        id: String,
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

pub async fn run(config: Config, command: JobsCommand) -> anyhow::Result<()> {
    let store: std::sync::Arc<dyn longhaul_core::JobStore> = runtime::connect(&config).await?;
    let client = JobClient::new(
        store.clone(),
        std::sync::Arc::new(longhaul_worker::jobs::catalogue()),
    );
    let output = match command {
        JobsCommand::Enqueue {
            tenant,
            kind,
            params,
            queue,
            priority,
            max_attempts,
            idempotency_key,
        } => {
            let params: Value = serde_json::from_str(&params).context("--params must be JSON")?;
            let enqueued = client
                .enqueue(EnqueueRequest {
                    queue,
                    priority,
                    max_attempts,
                    idempotency_key,
                    ..EnqueueRequest::new(tenant, kind, params)
                })
                .await?;
            json!({ "id": enqueued.id, "created": enqueued.created })
        }
        JobsCommand::Get { tenant, id } => {
            let id: JobId = id.parse()?;
            let job = client.get(&tenant, id).await?;
            let attempts = client.attempts(&tenant, id).await?;
            json!(JobView::of(job, Some(attempts)))
        }
        JobsCommand::Cancel { tenant, id } => {
            json!(JobView::of(
                client.cancel(&tenant, id.parse()?).await?,
                None
            ))
        }
        JobsCommand::Retry { tenant, id } => {
            json!(JobView::of(client.retry(&tenant, id.parse()?).await?, None))
        }
        JobsCommand::Counts { tenant, .. } => {
            let counts = match &tenant {
                Some(tenant) => store.count_by_state_of(tenant).await?,
                None => store.count_by_state().await?,
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
