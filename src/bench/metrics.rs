//! `longhaul bench metrics`: what a `/metrics` scrape costs the database
//! with `--jobs` jobs stored (10 million by default), most of them finished
//! as in a long-running deployment, `--queued` of them queued (some due, some
//! later) and a few running: the queue gauges' two aggregates, timed over
//! `--scrapes` scrapes. Seeded server-side in a scratch schema and analysed.
//! One JSON line: `scrape_p50_ms`, `scrape_p99_ms`, `scrape_max_ms`.

use std::time::Instant;

use anyhow::bail;
use chrono::Utc;
use clap::Args;
use serde_json::json;
use sqlx::Connection;

use super::scratch::Scratch;

#[derive(Args, Debug)]
pub struct MetricsBenchArgs {
    /// A PostgreSQL database (the bench works in a scratch schema of it).
    #[arg(long)]
    pub database_url: String,
    #[arg(long, default_value_t = 10_000_000)]
    pub jobs: u64,
    /// Of which queued (a tenth of them due later).
    #[arg(long, default_value_t = 10_000)]
    pub queued: u64,
    #[arg(long, default_value_t = 50)]
    pub scrapes: usize,
}

pub async fn run(args: MetricsBenchArgs) -> anyhow::Result<()> {
    if !(args.database_url.starts_with("postgres://")
        || args.database_url.starts_with("postgresql://"))
    {
        bail!("the metrics benchmark runs on PostgreSQL: give a postgres:// URL");
    }
    let scratch = Scratch::create(&args.database_url, 4).await?;
    let result = measure(&args, &scratch).await;
    scratch.remove().await?;
    println!("{}", result?);
    Ok(())
}

async fn measure(args: &MetricsBenchArgs, scratch: &Scratch) -> anyhow::Result<serde_json::Value> {
    eprintln!("seeding {} jobs ({} queued)…", args.jobs, args.queued);
    let started = Instant::now();
    let mut conn = sqlx::PgConnection::connect(&scratch.url).await?;
    let batch = 1_000_000u64;
    let mut start = 0u64;
    while start < args.jobs {
        let end = (start + batch).min(args.jobs);
        // The first `queued` jobs are queued (every tenth due in an hour),
        // the next 20 running, the rest finished.
        sqlx::query(
            "INSERT INTO jobs (id, tenant_id, kind, queue, state, priority, vtime, params, run_at,
                               attempt, max_attempts, created_at, started_at, finished_at, lease_expires_at)
             SELECT gen_random_uuid(), 'tenant-' || (g % 100),
                    (ARRAY['system.noop','audit.export','leakage.scan'])[1 + g % 3],
                    (ARRAY['default','exports','scans'])[1 + g % 3],
                    CASE WHEN g < $3 THEN 'queued' WHEN g < $3 + 20 THEN 'running'
                         WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END,
                    5, g, '{}',
                    CASE WHEN g < $3 AND g % 10 = 0 THEN now() + interval '1 hour'
                         ELSE now() - interval '1 minute' END,
                    CASE WHEN g < $3 THEN 0 ELSE 1 END, 5, now() - interval '1 day',
                    CASE WHEN g < $3 THEN NULL ELSE now() - interval '1 day' END,
                    CASE WHEN g < $3 + 20 THEN NULL ELSE now() - interval '1 day' END,
                    CASE WHEN g >= $3 AND g < $3 + 20 THEN now() + interval '1 minute' END
             FROM generate_series($1::bigint, $2::bigint - 1) AS g",
        )
        .bind(start as i64)
        .bind(end as i64)
        .bind(args.queued as i64)
        .execute(&mut conn)
        .await?;
        start = end;
    }
    sqlx::raw_sql("VACUUM ANALYZE jobs")
        .execute(&mut conn)
        .await?;
    eprintln!("seeded in {:.1} s", started.elapsed().as_secs_f64());
    let mut times = Vec::with_capacity(args.scrapes);
    let mut queued_seen = 0;
    for _ in 0..args.scrapes {
        let started = Instant::now();
        let gauges = scratch.stores.queue_gauges(Utc::now()).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        queued_seen = gauges.iter().map(|g| g.due + g.scheduled).sum::<u64>();
    }
    if queued_seen != args.queued {
        bail!(
            "the gauges saw {queued_seen} queued jobs, not {}",
            args.queued
        );
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    Ok(json!({
        "bench": "metrics",
        "jobs": args.jobs,
        "queued": args.queued,
        "scrapes": args.scrapes,
        "scrape_p50_ms": (at(0.5) * 100.0).round() / 100.0,
        "scrape_p99_ms": (at(0.99) * 100.0).round() / 100.0,
        "scrape_max_ms": (at(1.0) * 100.0).round() / 100.0,
    }))
}
