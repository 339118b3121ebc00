//! `longhaul bench retention`: a retention cleanup of `--rows` expired audit
//! events through the real `audit.retention_cleanup` job (a worker pool,
//! keyset batches, a short transaction per batch) on PostgreSQL, while a
//! writer keeps inserting audit events one by one; then the same with
//! archiving on (gzipped NDJSON to a local artifact store, deleted from the
//! stored archive).
//!
//! The events are seeded server-side in a scratch schema, 200 days old, and
//! analysed. Prints one JSON line: `deleted_per_s` (events deleted over the
//! job's run, enqueue to success), `writer_insert_p99_ms` during it (and
//! `writer_idle_p99_ms` before it, for comparison), and the same with
//! archiving (`archived_deleted_per_s`, `archived_writer_insert_p99_ms`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use clap::Args;
use longhaul_core::artifacts::{ArtifactStores, DownloadSigner, LocalStore, ObjectStore};
use longhaul_core::audit::{check_ingest, Actor, NewAuditEvent};
use longhaul_core::client::EnqueueRequest;
use longhaul_core::retention::{
    CleanupOutput, CleanupParams, NewRetentionPolicy, RetentionCleanup, Trigger,
};
use longhaul_core::store::Stores;
use longhaul_core::tenancy::NewTenant;
use longhaul_worker::JobServices;
use serde_json::json;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use super::one_job::{run_one_job, JobRun};
use super::scratch::Scratch;

#[derive(Args, Debug)]
pub struct RetentionBenchArgs {
    /// A PostgreSQL database (the bench works in a scratch schema of it).
    #[arg(long)]
    pub database_url: String,
    /// Expired events to delete.
    #[arg(long, default_value_t = 5_000_000)]
    pub rows: u64,
    /// The writer inserts one event every this many milliseconds.
    #[arg(long, default_value_t = 5)]
    pub writer_interval_ms: u64,
    /// Skip the run with archiving.
    #[arg(long)]
    pub no_archive: bool,
}

pub async fn run(args: RetentionBenchArgs) -> anyhow::Result<()> {
    if !(args.database_url.starts_with("postgres://")
        || args.database_url.starts_with("postgresql://"))
    {
        bail!("the retention benchmark runs on PostgreSQL: give a postgres:// URL");
    }
    let scratch = Scratch::create(&args.database_url, 16).await?;
    let result = measure(&args, &scratch).await;
    scratch.remove().await?;
    let line = result?;
    println!("{line}");
    Ok(())
}

async fn measure(
    args: &RetentionBenchArgs,
    scratch: &Scratch,
) -> anyhow::Result<serde_json::Value> {
    let stores = scratch.stores.clone();
    let tenant = stores
        .create_tenant(
            NewTenant::new("bench-retention", "us", "bench"),
            &Actor::system(),
        )
        .await?;
    let dir = std::env::temp_dir().join(format!("longhaul-bench-retention-{}", std::process::id()));
    let object_store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(&dir).await?);
    let artifacts = Arc::new(ArtifactStores::fixed(
        [("us".to_string(), object_store)].into_iter().collect(),
        DownloadSigner::new(vec![0u8; 32]).map_err(anyhow::Error::msg)?,
    ));

    seed(&scratch.url, &tenant.id, args.rows).await?;
    let idle = writer_latencies(&stores, &tenant.id, args, None).await?;
    let plain = cleanup(&stores, &tenant.id, artifacts.clone(), args, false).await?;
    let archived = if args.no_archive {
        None
    } else {
        seed(&scratch.url, &tenant.id, args.rows).await?;
        Some(cleanup(&stores, &tenant.id, artifacts, args, true).await?)
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "bench": "retention",
        "rows": args.rows,
        "deleted": plain.deleted,
        "seconds": round2(plain.seconds),
        "deleted_per_s": (plain.deleted as f64 / plain.seconds).round(),
        "writer_inserts": plain.writer.len(),
        "writer_insert_p50_ms": round2(percentile(&plain.writer, 0.50)),
        "writer_insert_p99_ms": round2(percentile(&plain.writer, 0.99)),
        "writer_insert_max_ms": round2(percentile(&plain.writer, 1.0)),
        "writer_idle_p99_ms": round2(percentile(&idle, 0.99)),
        "archived_deleted": archived.as_ref().map(|a| a.deleted),
        "archived_seconds": archived.as_ref().map(|a| round2(a.seconds)),
        "archived_deleted_per_s": archived.as_ref().map(|a| (a.deleted as f64 / a.seconds).round()),
        "archive_bytes": archived.as_ref().map(|a| a.archive_bytes),
        "archived_writer_insert_p99_ms": archived.as_ref().map(|a| round2(percentile(&a.writer, 0.99))),
    }))
}

/// `rows` application events of the tenant, 200 days old, one per
/// millisecond, inserted server-side; then `ANALYZE`.
async fn seed(url: &str, tenant: &str, rows: u64) -> anyhow::Result<()> {
    eprintln!("seeding {rows} expired audit events…");
    let started = Instant::now();
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let batch = 500_000u64;
    let mut start = 0u64;
    while start < rows {
        let end = (start + batch).min(rows);
        sqlx::query(
            "INSERT INTO audit_events (tenant_id, occurred_at, id, recorded_at, source,
                 actor_type, actor_id, action, resource_type, resource_id, ip, details)
             SELECT $1, ts, gen_random_uuid(), ts, 'application', 'user', 'user-' || (g % 5000),
                    (ARRAY['user.login','document.share','document.view'])[1 + g % 3],
                    'document', 'doc-' || g, '198.51.100.' || (g % 250),
                    jsonb_build_object('n', g, 'note', 'seeded by the benchmark, row ' || g)
             FROM generate_series($2::bigint, $3::bigint - 1) AS g,
                  LATERAL (SELECT now() - interval '200 days' + g * interval '1 millisecond') AS t(ts)",
        )
        .bind(tenant)
        .bind(start as i64)
        .bind(end as i64)
        .execute(&mut conn)
        .await
        .context("seeding audit events")?;
        start = end;
    }
    sqlx::raw_sql("ANALYZE audit_events")
        .execute(&mut conn)
        .await?;
    eprintln!("seeded in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Inserts one event every `writer_interval_ms` until `stop` fires (or for
/// two seconds without one); the latency of each insert in milliseconds.
async fn writer_latencies(
    stores: &Arc<dyn Stores>,
    tenant: &str,
    args: &RetentionBenchArgs,
    stop: Option<CancellationToken>,
) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(args.writer_interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let until = Instant::now() + Duration::from_secs(2);
    let mut n = 0u64;
    loop {
        match &stop {
            Some(stop) if stop.is_cancelled() => break,
            None if Instant::now() >= until => break,
            _ => {}
        }
        tick.tick().await;
        n += 1;
        let event: NewAuditEvent = serde_json::from_value(json!({
            "action": "document.view",
            "actorId": format!("writer-{}", n % 100),
            "resourceType": "document",
            "resourceId": format!("live-{n}"),
            "details": {"n": n},
        }))?;
        let checked = check_ingest(vec![event], Utc::now(), 365)?;
        let started = Instant::now();
        stores
            .ingest_audit_events(tenant, &Actor::system(), &checked)
            .await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(latencies)
}

struct Run {
    deleted: u64,
    seconds: f64,
    archive_bytes: u64,
    writer: Vec<f64>,
}

/// One cleanup of everything older than 90 days, beside the writer.
async fn cleanup(
    stores: &Arc<dyn Stores>,
    tenant: &str,
    artifacts: Arc<ArtifactStores>,
    args: &RetentionBenchArgs,
    archive: bool,
) -> anyhow::Result<Run> {
    let policy = NewRetentionPolicy {
        name: format!("bench-{}", if archive { "archive" } else { "delete" }),
        retention_period: "P90D".into(),
        archive_config: Some(longhaul_core::retention::ArchiveConfig {
            enabled: archive,
            destination: "artifacts".into(),
        }),
        ..NewRetentionPolicy::default()
    }
    .check(&[])?;
    let policy = stores
        .create_retention_policy(tenant, &policy, Utc::now(), &Actor::system())
        .await?;
    let params = CleanupParams::of(&policy, &[], false, Trigger::Manual, Utc::now())?;

    let services = JobServices {
        stores: stores.clone(),
        artifacts,
        artifact_retention: Duration::from_secs(86_400),
        scans: Default::default(),
    };
    let stop_writer = CancellationToken::new();
    let writer = {
        let (stores, tenant, stop) = (stores.clone(), tenant.to_string(), stop_writer.clone());
        let args = RetentionBenchArgs {
            database_url: String::new(),
            rows: 0,
            writer_interval_ms: args.writer_interval_ms,
            no_archive: true,
        };
        tokio::spawn(async move { writer_latencies(&stores, &tenant, &args, Some(stop)).await })
    };
    let run = run_one_job(
        &services,
        "maintenance",
        EnqueueRequest::of::<RetentionCleanup>(tenant, &params)?,
    )
    .await;
    stop_writer.cancel();
    let latencies = writer.await??;
    let JobRun { seconds, job } = run?;
    let output: CleanupOutput = job
        .output_of::<RetentionCleanup>()?
        .context("the cleanup stored no result")?;
    if output.counts.events_deleted < args.rows {
        bail!(
            "the cleanup deleted {} events, not {}",
            output.counts.events_deleted,
            args.rows
        );
    }
    Ok(Run {
        deleted: output.counts.events_deleted,
        seconds,
        archive_bytes: output.archive.map_or(0, |a| a.size),
        writer: latencies,
    })
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
