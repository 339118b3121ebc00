//! `longhaul export audit …`: an audit export through the HTTP API
//! (`LONGHAUL_URL`, `LONGHAUL_API_KEY`, an admin key). Without `--wait` it
//! prints the queued export; with `--wait` it follows the export's job (a
//! progress bar on stderr), and with `--out FILE` downloads the file, checks
//! its size and sha256 against the export's, and prints the export. Exits 3
//! if the export did not succeed (1 when the command itself failed).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::jobs::{watch, Server};

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// Export the tenant's audit log to a file.
    Audit {
        #[command(flatten)]
        server: Server,
        /// csv, json or ndjson.
        #[arg(long, default_value = "ndjson")]
        format: String,
        /// Compress the file (gzip).
        #[arg(long)]
        gzip: bool,
        /// Start of the range, RFC 3339 (default: the start of the retention).
        #[arg(long)]
        from: Option<String>,
        /// End of the range, RFC 3339 (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Wait until the export ends.
        #[arg(long)]
        wait: bool,
        /// Download the file here once done (implies --wait).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

/// Runs a command; answers whether the process should exit with failure.
pub async fn run(command: ExportCommand) -> anyhow::Result<bool> {
    let ExportCommand::Audit {
        server,
        format,
        gzip,
        from,
        to,
        wait,
        out,
        idempotency_key,
    } = command;
    let client = server.client()?;
    let mut body = json!({ "format": format, "gzip": gzip });
    if let Some(from) = from {
        body["from"] = json!(from);
    }
    if let Some(to) = to {
        body["to"] = json!(to);
    }
    let headers: Vec<(&'static str, &str)> = idempotency_key
        .as_deref()
        .map(|key| vec![("idempotency-key", key)])
        .unwrap_or_default();
    let queued = client
        .json(Method::POST, "/v1/audit/exports", Some(&body), &headers)
        .await?;
    if !wait && out.is_none() {
        println!("{queued}");
        return Ok(false);
    }
    let export_id = queued["exportId"]
        .as_str()
        .context("the API answered an export without exportId")?
        .to_string();
    let job_id = queued["jobId"]
        .as_str()
        .context("the API answered an export without jobId")?
        .to_string();
    watch(&client, &job_id).await?;
    let export = client
        .get(&format!("/v1/audit/exports/{export_id}"))
        .await?;
    if export["status"] != json!("succeeded") {
        println!("{export}");
        return Ok(true);
    }
    if let Some(out) = out {
        let url = export["downloadUrl"]
            .as_str()
            .context("a succeeded export without downloadUrl")?;
        let written = client.download(url, &out).await?;
        check_file(&export, &out, written).await?;
    }
    println!("{export}");
    Ok(false)
}

/// The downloaded file has the export's size and sha256.
async fn check_file(export: &Value, out: &PathBuf, written: u64) -> anyhow::Result<()> {
    if let Some(bytes) = export["bytes"].as_u64() {
        if bytes != written {
            bail!(
                "{}: {written} bytes downloaded, the export has {bytes}",
                out.display()
            );
        }
    }
    let Some(expected) = export["sha256"].as_str() else {
        return Ok(());
    };
    let mut file = tokio::fs::File::open(out)
        .await
        .with_context(|| format!("reading {}", out.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != expected {
        bail!(
            "{}: sha256 {actual}, the export says {expected}",
            out.display()
        );
    }
    Ok(())
}
