//! `longhaul scheduler` processes on one PostgreSQL database: three for 24
//! seconds, one of them killed with SIGKILL just as 50 schedules come due
//! together and restarted 4 s later (a per-second schedule and 50 every-five-
//! seconds ones get exactly one job per fire time, none missing, none
//! doubled); and a lone scheduler killed and restarted after a gap longer
//! than the misfire threshold (`skip` leaves the gap empty, `fire_once`
//! fills it with one job). Seconds-level crons give the burst of 50 due
//! schedules that replicas contend for every five seconds, where per-minute
//! ones needed more than two minutes for two bursts.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use longhaul_core::audit::Actor;
use longhaul_core::job::JobFilter;
use longhaul_core::schedule::{MisfirePolicy, NewSchedule, OverlapPolicy, Schedule};
use longhaul_core::store::Stores;
use longhaul_core::tenancy::NewTenant;
use serde_json::json;

use crate::harness::{self, TestDb};

const BINARY: &str = env!("CARGO_BIN_EXE_longhaul");
/// How long the replicas run.
const RUN_FOR: Duration = Duration::from_secs(24);
/// How often the 50 burst schedules fire together (their cron: `*/5 * * * * *`).
const BURST_EVERY_SECONDS: i64 = 5;
/// How long the killed replica stays down.
const DOWN_FOR: Duration = Duration::from_secs(4);

fn spawn_scheduler(db: &TestDb) -> Child {
    spawn_scheduler_with(db, &[])
}

fn spawn_scheduler_with(db: &TestDb, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("LONGHAUL_")) {
        command.env_remove(name);
    }
    command
        .arg("scheduler")
        .env("LONGHAUL_DATABASE_URL", &db.url)
        .env("LONGHAUL_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning longhaul scheduler")
}

fn new_schedule(name: &str, cron: &str) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        cron: cron.into(),
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

/// Jobs per fire time of every schedule, from the jobs' idempotency keys
/// (`schedule:<id>:<fire time>`).
async fn fires(
    stores: &dyn Stores,
    tenant_id: &str,
) -> BTreeMap<String, BTreeMap<DateTime<Utc>, usize>> {
    let mut by_schedule: BTreeMap<String, BTreeMap<DateTime<Utc>, usize>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = stores
            .list_jobs(tenant_id, &JobFilter::default(), after, 1000)
            .await
            .expect("jobs");
        for job in &page {
            let key = job
                .idempotency_key
                .as_deref()
                .expect("a scheduled job names its fire");
            let rest = key.strip_prefix("schedule:").expect("schedule key");
            let (schedule, time) = rest.split_once(':').expect("schedule:<id>:<time>");
            let time = DateTime::parse_from_rfc3339(time)
                .expect("fire time")
                .with_timezone(&Utc);
            *by_schedule
                .entry(schedule.to_string())
                .or_default()
                .entry(time)
                .or_default() += 1;
        }
        match page.last() {
            Some(last) if page.len() == 1000 => after = Some(last.id),
            _ => return by_schedule,
        }
    }
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_scheduler_processes_fire_every_time_exactly_once() {
    let db = harness::postgres().await;
    let stores = longhaul_core::store::connect_stores(&db.url, 4)
        .await
        .expect("stores");
    let tenant = stores
        .create_tenant(NewTenant::new("acme", "eu", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let created_at = Utc::now();
    let mut schedules: Vec<Schedule> = vec![];
    let every_second = stores
        .create_schedule(
            Some(&tenant.id),
            &new_schedule("every second", "* * * * * *"),
            None,
            created_at,
            &Actor::system(),
        )
        .await
        .expect("schedule");
    for i in 0..50 {
        schedules.push(
            stores
                .create_schedule(
                    Some(&tenant.id),
                    &new_schedule(&format!("every five seconds {i}"), "*/5 * * * * *"),
                    None,
                    created_at,
                    &Actor::system(),
                )
                .await
                .expect("schedule"),
        );
    }

    let started = tokio::time::Instant::now();
    let mut replicas: Vec<Child> = (0..3).map(|_| spawn_scheduler(&db)).collect();
    // A replica dies without warning just as the 50 schedules come due
    // together (it may be inside their fire transaction), and comes back
    // DOWN_FOR later.
    tokio::time::sleep(RUN_FOR / 2 - Duration::from_secs(3)).await;
    let burst = chrono::Duration::seconds(BURST_EVERY_SECONDS);
    let next_burst = Utc::now().duration_trunc(burst).expect("burst") + burst;
    let until_burst = (next_burst - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_burst + Duration::from_millis(15)).await;
    replicas[0].kill().expect("SIGKILL a scheduler");
    replicas[0].wait().expect("reaping it");
    tokio::time::sleep(DOWN_FOR).await;
    replicas[0] = spawn_scheduler(&db);
    tokio::time::sleep_until(started + RUN_FOR).await;
    let stopping_at = Utc::now();
    for replica in &mut replicas {
        stop(replica);
    }
    let stopped_at = Utc::now();

    let fired = fires(&*stores, &tenant.id).await;
    // The per-second schedule: one job a second from its first fire to its
    // last, and those span the run.
    let seconds = fired.get(&every_second.id).expect("per-second fires");
    assert!(seconds.values().all(|n| *n == 1), "a second fired twice");
    let times: Vec<DateTime<Utc>> = seconds.keys().copied().collect();
    for pair in times.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "a second is missing after {}",
            pair[0]
        );
    }
    let first = *times.first().expect("fires");
    let last = *times.last().expect("fires");
    assert!(
        first - created_at < chrono::Duration::seconds(5),
        "first fire {first}"
    );
    assert!(
        stopping_at - last < chrono::Duration::seconds(3),
        "last fire {last}"
    );
    assert!(last <= stopped_at);

    // The burst schedules: every five-second boundary of the run, once.
    let mut boundary = created_at.duration_trunc(burst).expect("burst") + burst;
    let mut expected = vec![];
    while boundary + chrono::Duration::seconds(2) < stopping_at {
        expected.push(boundary);
        boundary += burst;
    }
    assert!(
        expected.len() >= 4,
        "the run covers at least four bursts: {expected:?}"
    );
    assert!(
        expected.contains(&next_burst),
        "the kill was inside the run"
    );
    for schedule in &schedules {
        let got = fired.get(&schedule.id).expect("burst fires");
        let got_times: Vec<DateTime<Utc>> = got
            .keys()
            .copied()
            .filter(|t| *t < stopping_at - chrono::Duration::seconds(2))
            .collect();
        assert_eq!(got_times, expected, "{}", schedule.name);
        assert!(
            got.values().all(|n| *n == 1),
            "{} fired twice",
            schedule.name
        );
    }
    assert_eq!(fired.len(), 51, "no job from anywhere else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_restarted_after_a_gap_skips_or_fires_once() {
    let db = harness::postgres().await;
    let stores = longhaul_core::store::connect_stores(&db.url, 4)
        .await
        .expect("stores");
    let tenant = stores
        .create_tenant(NewTenant::new("acme", "eu", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let mut ids = BTreeMap::new();
    for policy in [MisfirePolicy::Skip, MisfirePolicy::FireOnce] {
        let schedule = stores
            .create_schedule(
                Some(&tenant.id),
                &NewSchedule {
                    misfire_policy: policy,
                    ..new_schedule(policy.as_str(), "* * * * * *")
                },
                None,
                Utc::now(),
                &Actor::system(),
            )
            .await
            .expect("schedule");
        ids.insert(policy.as_str(), schedule.id);
    }
    let settings = [("LONGHAUL_MISFIRE_THRESHOLD_SECONDS", "2")];
    let mut scheduler = spawn_scheduler_with(&db, &settings);
    tokio::time::sleep(Duration::from_secs(4)).await;
    scheduler.kill().expect("SIGKILL the scheduler");
    scheduler.wait().expect("reaping it");
    let down_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let restarted_at = Utc::now();
    let mut scheduler = spawn_scheduler_with(&db, &settings);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop(&mut scheduler);

    let fired = fires(&*stores, &tenant.id).await;
    for (policy, times) in &fired {
        assert!(
            times.values().all(|n| *n == 1),
            "{policy}: a second fired twice"
        );
    }
    let after_gap = |policy: &str| -> Vec<DateTime<Utc>> {
        fired[&ids[policy]]
            .keys()
            .copied()
            .filter(|t| *t > down_at + chrono::Duration::seconds(1))
            .collect()
    };
    let (skip, once) = (after_gap("skip"), after_gap("fire_once"));
    // skip: nothing for the seconds the scheduler was down; the first fire
    // after the gap is the first second after the restart.
    let first_skip = *skip.first().expect("skip fires after the restart");
    assert!(
        first_skip >= restarted_at - chrono::Duration::seconds(1),
        "skip filled the gap: {skip:?}"
    );
    // fire_once: exactly one more job, for the latest missed second, then
    // the same seconds as skip.
    assert_eq!(
        once.len(),
        skip.len() + 1,
        "skip {skip:?}, fire_once {once:?}"
    );
    assert_eq!(once[0] + chrono::Duration::seconds(1), first_skip);
    assert_eq!(&once[1..], &skip[..]);
    // Both fired before the gap too.
    for policy in ["skip", "fire_once"] {
        assert!(
            fired[&ids[policy]].keys().any(|t| *t < down_at),
            "{policy} before the gap"
        );
    }
}
