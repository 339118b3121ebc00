//! `longhaul bench scan`: a leakage or classification scan of a folder (the
//! labelled corpus of `longhaul scan corpus`, say) through the real job: a
//! worker pool, the folder as a tenant's data bucket, objects listed, read
//! four at a time and scanned on all cores, findings or results written to
//! the database with their checkpoints. Prints one JSON line: seconds from
//! enqueue to success, MB/s, and what the scan found — to set beside
//! `longhaul scan leakage DIR`, the engine alone.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use longhaul_core::artifacts::{ArtifactStores, DownloadSigner, LocalStore};
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::scans::classification::{
    ClassificationScanParams, CLASSIFICATION_SCAN, DEFAULT_MAX_OBJECT_BYTES,
};
use longhaul_core::scans::leakage::{LeakageScanParams, Source, LEAKAGE_SCAN};
use longhaul_core::tenancy::NewTenant;
use longhaul_worker::JobServices;
use serde_json::json;

use super::one_job::{run_one_job, JobRun};
use super::scratch::Scratch;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScanKind {
    Leakage,
    Classification,
}

#[derive(Args, Debug)]
pub struct ScanBenchArgs {
    /// `postgres://…` (a scratch schema) or `sqlite://…` (a scratch file).
    #[arg(long)]
    pub database_url: String,
    /// The folder scanned (as a data bucket).
    #[arg(long)]
    pub dir: std::path::PathBuf,
    #[arg(long, value_enum, default_value_t = ScanKind::Leakage)]
    pub kind: ScanKind,
}

const BUCKET: &str = "corpus";

pub async fn run(args: ScanBenchArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        bail!("{} is not a folder", args.dir.display());
    }
    let scratch = Scratch::create(&args.database_url, 8).await?;
    let result = bench(&scratch, &args).await;
    scratch.remove().await?;
    let line = result?;
    println!("{line}");
    Ok(())
}

async fn bench(scratch: &Scratch, args: &ScanBenchArgs) -> anyhow::Result<serde_json::Value> {
    let stores = scratch.stores.clone();
    let tenant = stores
        .create_tenant(
            NewTenant {
                settings: json!({"dataBuckets": {BUCKET: BUCKET}}),
                ..NewTenant::new("bench-scan", "eu", "standard")
            },
            &Actor::system(),
        )
        .await?;
    let artifacts_dir =
        std::env::temp_dir().join(format!("longhaul-bench-scan-{}", std::process::id()));
    let signer = DownloadSigner::random().map_err(anyhow::Error::msg)?;
    let artifacts = Arc::new(
        ArtifactStores::local(&artifacts_dir, signer)
            .with_data_bucket(BUCKET, Arc::new(LocalStore::at(&args.dir)))
            .await,
    );
    let services = JobServices {
        stores: stores.clone(),
        artifacts,
        artifact_retention: Duration::from_secs(86_400),
        scans: Default::default(),
    };
    let (kind, params) = match args.kind {
        ScanKind::Leakage => (
            LEAKAGE_SCAN,
            serde_json::to_value(LeakageScanParams {
                sources: vec![Source::Bucket {
                    bucket: BUCKET.into(),
                    prefix: String::new(),
                }],
                include_paths: Vec::new(),
                builtin_rules: true,
                policies: Vec::new(),
                request_sha256: None,
            })?,
        ),
        ScanKind::Classification => (
            CLASSIFICATION_SCAN,
            serde_json::to_value(ClassificationScanParams {
                buckets: vec![BUCKET.into()],
                prefixes: vec![String::new()],
                max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
                policies: Vec::new(),
                request_sha256: None,
            })?,
        ),
    };
    let JobRun { seconds, job } = run_one_job(
        &services,
        "scans",
        EnqueueRequest::new(&tenant.id, kind, params),
    )
    .await?;
    let _ = std::fs::remove_dir_all(&artifacts_dir);
    let result = job.result.unwrap_or_default();
    let bytes = result["bytes"].as_u64().unwrap_or(0);
    Ok(json!({
        "bench": "scan",
        "kind": kind,
        "backend": scratch.backend,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "bytes": bytes,
        "mb_per_s": ((bytes as f64 / 1e6 / seconds) * 10.0).round() / 10.0,
        "result": result,
    }))
}
