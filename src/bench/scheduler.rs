//! `longhaul bench scheduler`: `--schedules` tenant schedules (100 per
//! tenant, the default plan limit), of which `--due` fire in the same second
//! and the rest once a year; one scheduler (the real role: ticker and
//! maintenance) runs until every due schedule has its job. Prints the lag from
//! the fire time to each job's creation (the time of the transaction that
//! inserted it): p50, p99 and max, in milliseconds; and when all the jobs
//! were seen committed (`all_visible_after_ms`, polled every 100 ms).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, Timelike, Utc};
use clap::Args;
use longhaul_core::audit::Actor;
use longhaul_core::job::JobFilter;
use longhaul_core::schedule::{MisfirePolicy, NewSchedule, OverlapPolicy, DEFAULT_MAX_SCHEDULES};
use longhaul_core::store::Stores;
use longhaul_core::tenancy::NewTenant;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::scratch::Scratch;

#[derive(Args, Debug)]
pub struct SchedulerBenchArgs {
    #[arg(long)]
    pub database_url: String,
    #[arg(long, default_value_t = 100_000)]
    pub schedules: usize,
    #[arg(long, default_value_t = 1_000)]
    pub due: usize,
}

/// Schedules created at once while seeding.
const SEED_CONCURRENCY: usize = 16;

fn schedule(name: String, cron: String) -> NewSchedule {
    NewSchedule {
        name,
        cron,
        time_zone: "UTC".into(),
        kind: "system.noop".into(),
        params: json!({}),
        queue: None,
        priority: None,
        jitter_seconds: 0,
        overlap_policy: OverlapPolicy::Allow,
        misfire_policy: MisfirePolicy::Skip,
        paused: false,
    }
}

pub async fn run(args: SchedulerBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.due <= args.schedules,
        "--due must not exceed --schedules"
    );
    let scratch = Scratch::create(&args.database_url, 24).await?;
    let stores = scratch.stores.clone();
    let per_tenant = DEFAULT_MAX_SCHEDULES as usize;
    let tenant_count = args.schedules.div_ceil(per_tenant);
    let mut tenants = Vec::with_capacity(tenant_count);
    for i in 0..tenant_count {
        let tenant = stores
            .create_tenant(
                NewTenant::new(format!("bench {i}"), "us", "standard"),
                &Actor::system(),
            )
            .await?;
        tenants.push(tenant.id);
    }

    // The idle schedules (once a year), then the due ones: all at one second
    // far enough ahead for the seeding to finish.
    let seed_started = Instant::now();
    let idle = args.schedules - args.due;
    seed(&stores, &tenants, 0..idle, |_| "0 0 1 1 *".to_string()).await?;
    let fire_at = (Utc::now() + chrono::Duration::seconds(3 + (args.due / 1000) as i64))
        .duration_trunc(chrono::Duration::seconds(1))?;
    let cron = format!(
        "{} {} {} * * *",
        fire_at.second(),
        fire_at.minute(),
        fire_at.hour()
    );
    seed(&stores, &tenants, idle..args.schedules, |_| cron.clone()).await?;
    let seed_s = seed_started.elapsed().as_secs_f64();
    anyhow::ensure!(
        Utc::now() < fire_at,
        "seeding the due schedules took past their fire time; use fewer"
    );

    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(longhaul_scheduler::run(
        stores.clone(),
        Arc::new(longhaul_worker::jobs::catalogue()),
        longhaul_scheduler::SchedulerConfig {
            ticker: longhaul_scheduler::TickerConfig::default(),
            rescue_interval: Duration::from_secs(15),
            job_retention: Duration::from_secs(14 * 86_400),
        },
        None,
        shutdown.clone(),
    ));
    // Wait with one cheap count a poll; read the jobs once all exist.
    let deadline = Instant::now() + Duration::from_secs(60) + (fire_at - Utc::now()).to_std()?;
    loop {
        let jobs: i64 = stores.count_by_state().await?.iter().map(|(_, n)| n).sum();
        if jobs >= args.due as i64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {jobs} of {} due schedules fired",
            args.due
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An upper bound that includes commit and visibility (to the 100 ms poll).
    let all_visible_ms = (Utc::now() - fire_at).num_milliseconds();
    shutdown.cancel();
    scheduler.await?;
    let mut lags = fire_lags_ms(&*stores, &tenants, fire_at).await?;
    anyhow::ensure!(
        lags.len() == args.due,
        "{} jobs for {} due schedules",
        lags.len(),
        args.due
    );
    lags.sort_by(f64::total_cmp);
    let pick = |q: f64| lags[((lags.len() as f64 * q).ceil() as usize).clamp(1, lags.len()) - 1];
    println!(
        "{}",
        json!({
            "bench": "scheduler",
            "backend": scratch.backend,
            "schedules": args.schedules,
            "due": args.due,
            "seed_s": (seed_s * 10.0).round() / 10.0,
            "fire_lag_p50_ms": pick(0.50).round(),
            "fire_lag_p99_ms": pick(0.99).round(),
            "fire_lag_max_ms": pick(1.0).round(),
            "all_visible_after_ms": all_visible_ms,
        })
    );
    drop(stores);
    scratch.remove().await
}

async fn seed(
    stores: &Arc<dyn Stores>,
    tenants: &[String],
    range: std::ops::Range<usize>,
    cron: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    let per_tenant = DEFAULT_MAX_SCHEDULES as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for i in range {
        if tasks.len() >= SEED_CONCURRENCY {
            if let Some(done) = tasks.join_next().await {
                done??;
            }
        }
        let stores = stores.clone();
        let tenant = tenants[i / per_tenant].clone();
        let new = schedule(format!("schedule {i}"), cron(i));
        tasks.spawn(async move {
            stores
                .create_schedule(Some(&tenant), &new, None, Utc::now(), &Actor::system())
                .await
                .map(|_| ())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Lag from `fire_at` to each scheduled job's creation, over every tenant.
async fn fire_lags_ms(
    stores: &dyn Stores,
    tenants: &[String],
    fire_at: chrono::DateTime<Utc>,
) -> anyhow::Result<Vec<f64>> {
    let filter = JobFilter::default();
    let mut lags = vec![];
    for tenant in tenants {
        for job in stores.list_jobs(tenant, &filter, None, 200).await? {
            lags.push((job.created_at - fire_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    Ok(lags)
}
