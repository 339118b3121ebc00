//! `longhaul jobs …`: a tenant's jobs through the HTTP API, as a client app
//! sees them (`LONGHAUL_URL`, `LONGHAUL_API_KEY`; never the database). Every
//! command prints the API's JSON, so it composes with jq and scripts;
//! `watch` draws a progress bar on stderr from the job's event stream, then
//! prints the final state and exits 0 if the job succeeded, 3 if it failed
//! or was cancelled (1 when the command itself failed).

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::api_client::ApiClient;

/// Where the API is and the key to call it with.
#[derive(Args, Debug, Clone)]
pub struct Server {
    /// The API's URL.
    #[arg(long, env = "LONGHAUL_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A key of the tenant (`lh_live_…`).
    #[arg(long, env = "LONGHAUL_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

impl Server {
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(&self.url, &self.api_key)
    }
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List the tenant's jobs, newest first (one page; `nextCursor` for the next).
    List {
        #[command(flatten)]
        server: Server,
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// 1 to 200 (default 50).
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Print a job with its attempts.
    Get {
        #[command(flatten)]
        server: Server,
        id: String,
    },
    /// Cancel a queued job, or ask a running one to stop.
    Cancel {
        #[command(flatten)]
        server: Server,
        id: String,
    },
    /// Queue a failed or cancelled job again.
    Retry {
        #[command(flatten)]
        server: Server,
        id: String,
    },
    /// Follow a job until it ends: a progress bar, then its final state.
    Watch {
        #[command(flatten)]
        server: Server,
        id: String,
    },
    /// Create a job (`POST /v1/jobs`) and print it.
    Enqueue {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        job: JobArgs,
    },
}

/// A job to create, as `jobs enqueue` and `admin enqueue` take it.
#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    #[arg(long)]
    pub kind: String,
    /// Params as a JSON object.
    #[arg(long, default_value = "{}")]
    pub params: String,
    #[arg(long)]
    pub queue: Option<String>,
    /// 0 (most urgent) to 9.
    #[arg(long)]
    pub priority: Option<i16>,
    #[arg(long)]
    pub max_attempts: Option<i32>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

impl JobArgs {
    pub fn params(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.params).context("--params must be JSON")
    }
}

/// Path segments and query values as the API expects them.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs a command; answers whether the process should exit with failure
/// (a watched job that did not succeed).
pub async fn run(command: JobsCommand) -> anyhow::Result<bool> {
    let output = match command {
        JobsCommand::List {
            server,
            status,
            kind,
            limit,
            cursor,
        } => {
            let mut query = Vec::new();
            if let Some(status) = status {
                query.push(format!("state={}", encode(&status)));
            }
            if let Some(kind) = kind {
                query.push(format!("kind={}", encode(&kind)));
            }
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(cursor) = cursor {
                query.push(format!("cursor={}", encode(&cursor)));
            }
            let path = if query.is_empty() {
                "/v1/jobs".to_string()
            } else {
                format!("/v1/jobs?{}", query.join("&"))
            };
            server.client()?.get(&path).await?
        }
        JobsCommand::Get { server, id } => {
            server
                .client()?
                .get(&format!("/v1/jobs/{}", encode(&id)))
                .await?
        }
        JobsCommand::Cancel { server, id } => {
            server
                .client()?
                .json(
                    Method::POST,
                    &format!("/v1/jobs/{}/cancel", encode(&id)),
                    None,
                    &[],
                )
                .await?
        }
        JobsCommand::Retry { server, id } => {
            server
                .client()?
                .json(
                    Method::POST,
                    &format!("/v1/jobs/{}/retry", encode(&id)),
                    None,
                    &[],
                )
                .await?
        }
        JobsCommand::Watch { server, id } => {
            let state = watch(&server.client()?, &id).await?;
            let succeeded = state["status"] == json!("succeeded");
            println!("{state}");
            return Ok(!succeeded);
        }
        JobsCommand::Enqueue { server, job } => {
            let mut body = json!({ "kind": job.kind, "params": job.params()? });
            if let Some(queue) = &job.queue {
                body["queue"] = json!(queue);
            }
            if let Some(priority) = job.priority {
                body["priority"] = json!(priority);
            }
            if let Some(max_attempts) = job.max_attempts {
                body["maxAttempts"] = json!(max_attempts);
            }
            let headers: Vec<(&'static str, &str)> = job
                .idempotency_key
                .as_deref()
                .map(|key| vec![("idempotency-key", key)])
                .unwrap_or_default();
            server
                .client()?
                .json(Method::POST, "/v1/jobs", Some(&body), &headers)
                .await?
        }
    };
    println!("{output}");
    Ok(false)
}

/// Follows a job's event stream until it ends, drawing its progress on
/// stderr; answers the final `state` event's data.
pub async fn watch(client: &ApiClient, id: &str) -> anyhow::Result<Value> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_bar} {pos}/{len} {msg}")
            .context("the progress bar's template")?,
    );
    bar.set_prefix(id.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut events = client
        .events(&format!("/v1/jobs/{}/events", encode(id)))
        .await?;
    let mut last_state = Value::Null;
    while let Some(event) = events.next().await? {
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        match event.event.as_str() {
            "state" => {
                show_progress(&bar, &data["progress"]);
                bar.set_message(data["status"].as_str().unwrap_or_default().to_string());
                last_state = data;
            }
            "progress" => show_progress(&bar, &data["data"]),
            other => bar.set_message(other.to_string()),
        }
    }
    bar.finish_and_clear();
    if last_state.is_null() {
        anyhow::bail!("the event stream of {id} ended without the job's state");
    }
    let status = last_state["status"].as_str().unwrap_or_default();
    if !matches!(status, "succeeded" | "failed" | "cancelled") {
        anyhow::bail!("the event stream of {id} ended while the job was {status}");
    }
    Ok(last_state)
}

fn show_progress(bar: &ProgressBar, progress: &Value) {
    if let Some(total) = progress["total"].as_u64() {
        bar.set_length(total);
    }
    if let Some(current) = progress["current"].as_u64() {
        bar.set_position(current);
    }
    if let Some(message) = progress["message"].as_str() {
        bar.set_message(message.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_and_query_values_are_encoded() {
        assert_eq!(encode("job_0193abc"), "job_0193abc");
        assert_eq!(encode("a b/c?d&e"), "a%20b%2Fc%3Fd%26e");
    }
}
