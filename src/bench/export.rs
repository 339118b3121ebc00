//! `longhaul bench export`: an audit export of `--rows` events through the
//! real `audit.export` job (a worker pool, keyset pages, CSV encoding, the
//! streaming upload and its checkpoints) to the local store or S3, beside
//! `psql \copy (SELECT …) TO file CSV` of the same rows in the same run.
//!
//! The events are seeded once per row count, server-side, in the schema
//! `longhaul_bench_export_<rows>` (kept between runs; `--reseed` rebuilds it).
//! Prints one JSON line: `rows_per_s` of the export, `copy_rows_per_s` of
//! psql, their ratio, and `peak_rss_mb` (the process's high-water mark, read
//! from /proc: the export runs in this process, psql in its own).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::one_job::{run_one_job, JobRun};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use longhaul_core::artifacts::{ArtifactStores, DownloadSigner, LocalStore, ObjectStore};
use longhaul_core::audit::export::{ExportFormat, ExportParams, AUDIT_EXPORT};
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::store::{connect_stores, Stores};
use longhaul_core::tenancy::NewTenant;
use longhaul_worker::JobServices;
use serde_json::json;
use sqlx::Connection;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StoreKind {
    Local,
    S3,
}

#[derive(Args, Debug)]
pub struct ExportBenchArgs {
    /// A PostgreSQL database (the bench seeds its own schema in it).
    #[arg(long)]
    pub database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    #[arg(long, value_enum, default_value_t = StoreKind::Local)]
    pub store: StoreKind,
    /// The S3-compatible endpoint for `--store s3` (credentials from the
    /// standard AWS variables, else test/test).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub s3_endpoint: String,
    /// Where the local store writes (default: a temp folder, removed after).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Drop and seed the events again.
    #[arg(long)]
    pub reseed: bool,
    /// Skip the psql \copy comparison.
    #[arg(long)]
    pub no_copy: bool,
}

const TENANT_NAME: &str = "bench-export";

pub async fn run(args: ExportBenchArgs) -> anyhow::Result<()> {
    if !(args.database_url.starts_with("postgres://")
        || args.database_url.starts_with("postgresql://"))
    {
        bail!("the export benchmark compares with psql \\copy: give a postgres:// URL");
    }
    let schema = format!("longhaul_bench_export_{}", args.rows);
    let scoped = scoped_url(&args.database_url, &schema);
    let (stores, tenant_id) = seeded(&args, &schema, &scoped).await?;
    let (from, to) = range_of(&scoped, &tenant_id).await?;

    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("longhaul-bench-export-{}", std::process::id()))
    });
    let object_store: Arc<dyn ObjectStore> = match args.store {
        StoreKind::Local => Arc::new(LocalStore::open(&dir).await?),
        StoreKind::S3 => {
            let mut config = longhaul_core::artifacts::S3Config::new("longhaul-bench", "us-east-1");
            config.endpoint_url = Some(args.s3_endpoint.clone());
            config.force_path_style = true;
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                config.access_key_id = Some("test".into());
                config.secret_access_key = Some("test".into());
            }
            let store = longhaul_core::artifacts::S3Store::connect(&config).await?;
            store.ensure_bucket().await?;
            Arc::new(store)
        }
    };
    let artifacts = Arc::new(ArtifactStores::fixed(
        [("us".to_string(), object_store.clone())]
            .into_iter()
            .collect(),
        DownloadSigner::new(vec![0u8; 32]).map_err(anyhow::Error::msg)?,
    ));

    let (seconds, result) = export(&stores, &tenant_id, artifacts, from, to).await?;
    let rows = result["rows"].as_u64().unwrap_or(0);
    if rows != args.rows {
        bail!("the export wrote {rows} rows, not {}", args.rows);
    }
    let bytes = result["artifact"]["size"].as_u64().unwrap_or(0);
    let peak_rss_mb = peak_rss_mb();

    let copy_seconds = if args.no_copy {
        None
    } else {
        Some(psql_copy(&scoped, &tenant_id, &dir)?)
    };
    if matches!(args.store, StoreKind::Local) && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let rows_per_s = rows as f64 / seconds;
    let copy_rows_per_s = copy_seconds.map(|s| rows as f64 / s);
    println!(
        "{}",
        json!({
            "bench": "export",
            "store": format!("{:?}", args.store).to_lowercase(),
            "format": "csv",
            "rows": rows,
            "bytes": bytes,
            "seconds": round2(seconds),
            "rows_per_s": rows_per_s.round(),
            "mb_per_s": round2(bytes as f64 / 1e6 / seconds),
            "peak_rss_mb": round2(peak_rss_mb),
            "copy_seconds": copy_seconds.map(round2),
            "copy_rows_per_s": copy_rows_per_s.map(f64::round),
            "ratio_to_copy": copy_rows_per_s.map(|c| round2(rows_per_s / c)),
        })
    );
    Ok(())
}

fn scoped_url(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

/// The schema with `rows` events of one tenant, seeded if it is not there.
async fn seeded(
    args: &ExportBenchArgs,
    schema: &str,
    scoped: &str,
) -> anyhow::Result<(Arc<dyn Stores>, String)> {
    let mut conn = sqlx::PgConnection::connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    if args.reseed {
        sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await?;
    }
    sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut conn)
        .await?;
    let stores = connect_stores(scoped, 8).await?;
    stores.migrate().await?;
    let tenant = match stores
        .list_tenants(None, 200)
        .await?
        .into_iter()
        .find(|t| t.name == TENANT_NAME)
    {
        Some(tenant) => tenant,
        None => {
            stores
                .create_tenant(NewTenant::new(TENANT_NAME, "us", "bench"), &Actor::system())
                .await?
        }
    };
    let mut scoped_conn = sqlx::PgConnection::connect(scoped).await?;
    let have: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND source = 'application'",
    )
    .bind(&tenant.id)
    .fetch_one(&mut scoped_conn)
    .await?;
    if have != args.rows as i64 {
        eprintln!("seeding {} audit events in {schema} (once)…", args.rows);
        let started = Instant::now();
        sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1")
            .bind(&tenant.id)
            .execute(&mut scoped_conn)
            .await?;
        // Server-side, in batches of 500,000: realistic rows, one per ms
        // over the last days.
        let batch = 500_000u64;
        let mut start = 0u64;
        while start < args.rows {
            let end = (start + batch).min(args.rows);
            sqlx::query(
                "INSERT INTO audit_events (tenant_id, occurred_at, id, recorded_at, source,
                     actor_type, actor_id, actor_key_id, action, resource_type, resource_id,
                     ip, request_id, external_id, details)
                 SELECT $1, ts, gen_random_uuid(), ts, 'application', 'user', 'user-' || (g % 5000),
                        NULL, (ARRAY['user.login','document.share','document.view'])[1 + g % 3],
                        'document', 'doc-' || g, '198.51.100.' || (g % 250), NULL, 'ext-' || g,
                        jsonb_build_object('n', g, 'note', 'exported by the benchmark, row ' || g)
                 FROM generate_series($2::bigint, $3::bigint - 1) AS g,
                      LATERAL (SELECT now() - interval '30 days' + g * interval '1 millisecond') AS t(ts)",
            )
            .bind(&tenant.id)
            .bind(start as i64)
            .bind(end as i64)
            .execute(&mut scoped_conn)
            .await
            .context("seeding audit events")?;
            start = end;
        }
        sqlx::raw_sql("ANALYZE audit_events")
            .execute(&mut scoped_conn)
            .await?;
        eprintln!("seeded in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok((stores, tenant.id))
}

/// The seeded events' time range: [first, last + 1 µs).
async fn range_of(scoped: &str, tenant: &str) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let mut conn = sqlx::PgConnection::connect(scoped).await?;
    let (first, last): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT min(occurred_at), max(occurred_at) FROM audit_events
         WHERE tenant_id = $1 AND source = 'application'",
    )
    .bind(tenant)
    .fetch_one(&mut conn)
    .await?;
    Ok((first, last + chrono::Duration::microseconds(1)))
}

/// Runs one export job to the end; seconds from enqueue to success, and its
/// result.
async fn export(
    stores: &Arc<dyn Stores>,
    tenant: &str,
    artifacts: Arc<ArtifactStores>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<(f64, serde_json::Value)> {
    let services = JobServices {
        stores: stores.clone(),
        artifacts,
        artifact_retention: Duration::from_secs(86_400),
        scans: Default::default(),
    };
    let params = ExportParams {
        format: ExportFormat::Csv,
        gzip: false,
        from,
        to,
        filters: Default::default(),
    };
    let JobRun { seconds, job } = run_one_job(
        &services,
        "exports",
        EnqueueRequest::new(tenant, AUDIT_EXPORT, serde_json::to_value(&params)?),
    )
    .await?;
    Ok((seconds, job.result.unwrap_or_default()))
}

/// `psql \copy` of the same rows to a CSV file; its seconds.
fn psql_copy(scoped: &str, tenant: &str, dir: &std::path::Path) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("psql-copy.csv");
    let command = format!(
        "\\copy (SELECT * FROM audit_events WHERE tenant_id = '{tenant}' AND source = 'application' \
         ORDER BY tenant_id, occurred_at, id) TO '{}' CSV HEADER",
        file.display()
    );
    let started = Instant::now();
    let status = std::process::Command::new("psql")
        .arg(scoped)
        .args(["-X", "-q", "-c", &command])
        .status()
        .context("running psql (install the PostgreSQL client)")?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("psql \\copy failed: {status}");
    }
    let _ = std::fs::remove_file(&file);
    Ok(seconds)
}

/// The process's peak resident set (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
