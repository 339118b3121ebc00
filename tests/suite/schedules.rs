//! Schedules on both stores: exactly one job per fire time with several
//! tickers at once, misfire policies after a gap, daylight-saving days in
//! America/New_York and Europe/Berlin on a test clock, overlap `skip` with a
//! long job, and the `/v1/schedules` API (validation, plan limit, preview,
//! isolation, roles). The multi-process run is in `scheduler_processes.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use longhaul_core::audit::Actor;
use longhaul_core::job::{ClaimRequest, Finish, Lease};
use longhaul_core::schedule::{MisfirePolicy, NewSchedule, OverlapPolicy, Schedule};
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{self, KeyMode, NewTenant, Quotas, Role, Tenant};
use longhaul_core::JobState;
use longhaul_scheduler::{CatalogueJobs, Ticker, TickerConfig};
use serde_json::{json, Value};

use crate::harness::TestDb;
use crate::http::{self, Reply};

const MINUTE: Duration = Duration::from_secs(60);

async fn stores(db: &TestDb) -> Arc<dyn Stores> {
    longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores")
}

async fn tenant(stores: &dyn Stores, quotas: Quotas) -> Tenant {
    stores
        .create_tenant(
            NewTenant {
                quotas,
                ..NewTenant::new("acme", "eu", "standard")
            },
            &Actor::system(),
        )
        .await
        .expect("tenant")
}

fn schedule(name: &str, cron: &str, zone: &str) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        cron: cron.into(),
        time_zone: zone.into(),
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

fn jobs() -> CatalogueJobs {
    CatalogueJobs::new(Arc::new(longhaul_worker::jobs::catalogue()))
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("time")
        .with_timezone(&Utc)
}

async fn create(
    stores: &dyn Stores,
    tenant: &Tenant,
    new: NewSchedule,
    now: DateTime<Utc>,
) -> Schedule {
    stores
        .create_schedule(Some(&tenant.id), &new, None, now, &Actor::system())
        .await
        .expect("schedule")
}

/// Fire times of a schedule's jobs, read from their idempotency keys
/// (`schedule:<id>:<fire time>`), in order, with how many jobs each had.
async fn fire_times(
    stores: &dyn Stores,
    tenant: &Tenant,
    schedule: &Schedule,
) -> Vec<(String, usize)> {
    let filter = longhaul_core::job::JobFilter::default();
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    let mut after = None;
    loop {
        let page = stores
            .list_jobs(&tenant.id, &filter, after, 500)
            .await
            .expect("jobs");
        for job in &page {
            let key = job.idempotency_key.clone().unwrap_or_default();
            if let Some(rest) = key.strip_prefix(&format!("schedule:{}:", schedule.id)) {
                *seen.entry(rest.to_string()).or_default() += 1;
            }
        }
        match page.last() {
            Some(last) if page.len() == 500 => after = Some(last.id),
            _ => break,
        }
    }
    seen.into_iter().collect()
}

async fn concurrent_tickers_fire_each_time_once(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = tenant(&*stores, Quotas::default()).await;
    let mut schedules = vec![];
    for i in 0..10 {
        schedules.push(
            create(
                &*stores,
                &tenant,
                schedule(&format!("every second {i}"), "* * * * * *", "UTC"),
                Utc::now(),
            )
            .await,
        );
    }
    // Three tickers, each with its own pool, as three replicas would be.
    let mut handles = vec![];
    let started = Utc::now();
    for _ in 0..3 {
        let replica: Arc<dyn longhaul_scheduler::SchedulerStore> = stores_of(&db).await;
        handles.push(tokio::spawn(async move {
            let ticker = Ticker::new(replica, jobs(), TickerConfig::default());
            let until = Utc::now() + Span::seconds(4);
            while Utc::now() < until {
                ticker.tick().await.expect("tick");
                tokio::time::sleep(Duration::from_millis(37)).await;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("ticker");
    }
    let ended = Utc::now();
    for schedule in &schedules {
        let fires = fire_times(&*stores, &tenant, schedule).await;
        assert!(
            fires.iter().all(|(_, n)| *n == 1),
            "a fire time got two jobs: {fires:?}"
        );
        // Every second from the first fire to the last has its job: none missing.
        let times: Vec<DateTime<Utc>> = fires.iter().map(|(t, _)| at(t)).collect();
        assert!(times.len() >= 3, "only {} fires in 4 s", times.len());
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], Span::seconds(1), "a gap in {times:?}");
        }
        assert!(times[0] > started - Span::seconds(1) && *times.last().expect("last") <= ended);
    }
}

async fn stores_of(db: &TestDb) -> Arc<dyn longhaul_scheduler::SchedulerStore> {
    let stores = longhaul_core::store::connect_stores(&db.url, 4)
        .await
        .expect("stores");
    stores
}

async fn misfires_skip_or_fire_once_after_a_gap(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = tenant(&*stores, Quotas::default()).await;
    let t0 = at("2026-06-01T10:00:30Z");
    let skip = create(&*stores, &tenant, schedule("skip", "* * * * *", "UTC"), t0).await;
    let once = create(
        &*stores,
        &tenant,
        NewSchedule {
            misfire_policy: MisfirePolicy::FireOnce,
            ..schedule("once", "* * * * *", "UTC")
        },
        t0,
    )
    .await;
    assert_eq!(skip.next_fire_at, Some(at("2026-06-01T10:01:00Z")));
    // On time: both fire 10:01.
    let report = stores
        .fire_due(at("2026-06-01T10:01:00.200Z"), 100, MINUTE, &jobs())
        .await
        .expect("tick");
    assert_eq!(report.fired.len(), 2);
    // The scheduler is down from 10:01 to 10:30:10: 29 fire times pass.
    let after_gap = at("2026-06-01T10:30:10Z");
    let report = stores
        .fire_due(after_gap, 100, MINUTE, &jobs())
        .await
        .expect("tick after the gap");
    let fired: Vec<&String> = report.fired.iter().map(|(id, _, _)| id).collect();
    assert_eq!(
        fired,
        vec![&once.id],
        "skip fires nothing, fire_once fires once"
    );
    assert_eq!(
        report.fired[0].1,
        at("2026-06-01T10:30:00Z"),
        "the latest missed time"
    );
    for s in [&skip, &once] {
        let now = stores
            .get_schedule(Some(&tenant.id), &s.id)
            .await
            .expect("read");
        assert_eq!(
            now.next_fire_at,
            Some(at("2026-06-01T10:31:00Z")),
            "{}",
            s.name
        );
    }
    assert_eq!(fire_times(&*stores, &tenant, &skip).await.len(), 1);
    assert_eq!(fire_times(&*stores, &tenant, &once).await.len(), 2);
    // Scheduled jobs are billed as the API's are: three jobs, three operations.
    let usage = stores
        .usage(&tenant.id, longhaul_core::usage::Period::of(after_gap))
        .await
        .expect("usage");
    assert_eq!(usage.iter().map(|u| u.operations).sum::<i64>(), 3);
    // A second look at the same moment fires nothing more.
    let again = stores
        .fire_due(after_gap, 100, MINUTE, &jobs())
        .await
        .expect("tick");
    assert!(again.fired.is_empty());
}

/// Ticks every `step` from `from` to `to` (a scheduler on a test clock) and
/// answers the fire times of the schedule, in UTC.
async fn run_clock(
    stores: &dyn Stores,
    tenant: &Tenant,
    schedule: &Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Span,
) -> Vec<DateTime<Utc>> {
    let mut now = from;
    while now <= to {
        stores
            .fire_due(now, 100, MINUTE, &jobs())
            .await
            .expect("tick");
        now += step;
    }
    fire_times(stores, tenant, schedule)
        .await
        .into_iter()
        .map(|(t, n)| {
            assert_eq!(n, 1);
            at(&t)
        })
        .collect()
}

async fn daylight_saving_days_fire_once(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = tenant(&*stores, Quotas::default()).await;
    let step = Span::minutes(5);
    // New York springs forward on 2026-03-08: 02:30 does not exist that day.
    let ny_spring = create(
        &*stores,
        &tenant,
        schedule("ny spring", "30 2 * * *", "America/New_York"),
        at("2026-03-07T12:00:00Z"),
    )
    .await;
    let fires = run_clock(
        &*stores,
        &tenant,
        &ny_spring,
        at("2026-03-07T12:00:00Z"),
        at("2026-03-09T12:00:00Z"),
        step,
    )
    .await;
    assert_eq!(fires.len(), 2, "{fires:?}");
    let on_the_day: Vec<_> = fires
        .iter()
        .filter(|t| chrono_tz_date(t, -5, -4) == "2026-03-08")
        .collect();
    assert_eq!(
        on_the_day.len(),
        1,
        "once on the day that skips 02:30: {fires:?}"
    );

    // New York falls back on 2026-11-01: 01:30 happens twice; one job.
    let ny_fall = create(
        &*stores,
        &tenant,
        schedule("ny fall", "30 1 * * *", "America/New_York"),
        at("2026-10-31T12:00:00Z"),
    )
    .await;
    let fires = run_clock(
        &*stores,
        &tenant,
        &ny_fall,
        at("2026-10-31T12:00:00Z"),
        at("2026-11-02T12:00:00Z"),
        step,
    )
    .await;
    let nov_1: Vec<_> = fires
        .iter()
        .filter(|t| **t >= at("2026-11-01T04:00:00Z") && **t < at("2026-11-02T05:00:00Z"))
        .collect();
    assert_eq!(nov_1.len(), 1, "once in the repeated hour: {fires:?}");

    // Berlin: spring forward 2026-03-29 (02:30 skipped), fall back 2026-10-25.
    let berlin = create(
        &*stores,
        &tenant,
        schedule("berlin", "30 2 * * *", "Europe/Berlin"),
        at("2026-03-28T12:00:00Z"),
    )
    .await;
    let fires = run_clock(
        &*stores,
        &tenant,
        &berlin,
        at("2026-03-28T12:00:00Z"),
        at("2026-03-30T12:00:00Z"),
        step,
    )
    .await;
    let on_the_day: Vec<_> = fires
        .iter()
        .filter(|t| **t >= at("2026-03-28T23:00:00Z") && **t < at("2026-03-29T22:00:00Z"))
        .collect();
    assert_eq!(on_the_day.len(), 1, "{fires:?}");
    let berlin_fall = create(
        &*stores,
        &tenant,
        schedule("berlin fall", "30 2 * * *", "Europe/Berlin"),
        at("2026-10-24T12:00:00Z"),
    )
    .await;
    let fires = run_clock(
        &*stores,
        &tenant,
        &berlin_fall,
        at("2026-10-24T12:00:00Z"),
        at("2026-10-26T12:00:00Z"),
        step,
    )
    .await;
    let oct_25: Vec<_> = fires
        .iter()
        .filter(|t| **t >= at("2026-10-24T22:00:00Z") && **t < at("2026-10-25T23:00:00Z"))
        .collect();
    assert_eq!(oct_25.len(), 1, "once in the repeated hour: {fires:?}");
}

/// The local date of a New York instant around the spring change (EST before
/// 07:00 UTC on 2026-03-08, EDT after).
fn chrono_tz_date(t: &DateTime<Utc>, standard: i32, summer: i32) -> String {
    let offset = if *t < at("2026-03-08T07:00:00Z") {
        standard
    } else {
        summer
    };
    let local = *t + Span::hours(i64::from(offset));
    local.format("%Y-%m-%d").to_string()
}

async fn overlap_skip_waits_for_the_previous_run(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = tenant(&*stores, Quotas::default()).await;
    let long = create(
        &*stores,
        &tenant,
        NewSchedule {
            kind: "system.sleep".into(),
            params: json!({ "durationMs": 60000, "steps": 10 }),
            overlap_policy: OverlapPolicy::Skip,
            ..schedule("long", "* * * * * *", "UTC")
        },
        at("2026-06-01T10:00:00.500Z"),
    )
    .await;
    let second = |s: u32| {
        Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, s)
            .single()
            .expect("time")
    };
    let first = stores
        .fire_due(second(1), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert_eq!(first.fired.len(), 1);
    let job_id = first.fired[0].2;
    // The job is queued, then running: the next fires are skipped.
    let skipped = stores
        .fire_due(second(2), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert!(skipped.fired.is_empty());
    assert_eq!(skipped.skipped, 1);
    let claimed = stores
        .claim(
            &ClaimRequest {
                queues: vec![stores.get_job(&tenant.id, job_id).await.expect("job").queue],
                limit: 1,
                worker_id: "w".into(),
                lease: Duration::from_secs(30),
            },
            None,
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(stores
        .fire_due(second(3), 10, MINUTE, &jobs())
        .await
        .expect("tick")
        .fired
        .is_empty());
    // Finished: the next fire runs again.
    stores
        .finish(
            Lease {
                job_id,
                attempt: claimed[0].attempt,
            },
            &Finish::Succeeded { result: json!({}) },
        )
        .await
        .expect("finish");
    let again = stores
        .fire_due(second(4), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert_eq!(again.fired.len(), 1);
    assert_eq!(again.fired[0].1, second(4));
    let state = stores.get_job(&tenant.id, job_id).await.expect("job").state;
    assert_eq!(state, JobState::Succeeded);
    assert_eq!(fire_times(&*stores, &tenant, &long).await.len(), 2);
}

async fn paused_schedules_do_not_fire_and_resume_from_now(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = tenant(&*stores, Quotas::default()).await;
    let s = create(
        &*stores,
        &tenant,
        schedule("p", "* * * * *", "UTC"),
        at("2026-06-01T10:00:30Z"),
    )
    .await;
    stores
        .set_schedule_paused(
            Some(&tenant.id),
            &s.id,
            true,
            at("2026-06-01T10:00:40Z"),
            &Actor::system(),
        )
        .await
        .expect("pause");
    let report = stores
        .fire_due(at("2026-06-01T10:05:00Z"), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert!(report.fired.is_empty());
    let resumed = stores
        .set_schedule_paused(
            Some(&tenant.id),
            &s.id,
            false,
            at("2026-06-01T10:05:10Z"),
            &Actor::system(),
        )
        .await
        .expect("resume");
    assert_eq!(resumed.next_fire_at, Some(at("2026-06-01T10:06:00Z")));
    stores
        .delete_schedule(Some(&tenant.id), &s.id, &Actor::system())
        .await
        .expect("delete");
    let report = stores
        .fire_due(at("2026-06-01T10:07:00Z"), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert!(report.fired.is_empty(), "a deleted schedule does not fire");
}

async fn jitter_longer_than_the_misfire_threshold_is_not_a_misfire(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = tenant(&*stores, Quotas::default()).await;
    let jittered = create(
        &*stores,
        &tenant,
        NewSchedule {
            jitter_seconds: 3600,
            ..schedule("hourly, jittered", "0 * * * *", "UTC")
        },
        at("2026-06-01T10:30:00Z"),
    )
    .await;
    // Ticks every 20 s for five hours: every hour fires (with `skip`, most
    // would be dropped if lateness were measured from the nominal time).
    let mut now = at("2026-06-01T11:00:00Z");
    while now < at("2026-06-01T16:00:00Z") {
        stores
            .fire_due(now, 10, MINUTE, &jobs())
            .await
            .expect("tick");
        now += Span::seconds(20);
    }
    let fires = fire_times(&*stores, &tenant, &jittered).await;
    let hours: Vec<DateTime<Utc>> = fires.iter().map(|(t, _)| at(t)).collect();
    let expected: Vec<DateTime<Utc>> = (11..15)
        .map(|h| {
            Utc.with_ymd_and_hms(2026, 6, 1, h, 0, 0)
                .single()
                .expect("time")
        })
        .collect();
    assert_eq!(&hours[..4], &expected[..], "{hours:?}");
}

async fn pruned_fire_records_do_not_fire_again(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = tenant(&*stores, Quotas::default()).await;
    let s = create(
        &*stores,
        &tenant,
        schedule("m", "* * * * *", "UTC"),
        at("2026-06-01T10:00:30Z"),
    )
    .await;
    let fired = stores
        .fire_due(at("2026-06-01T10:01:00Z"), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert_eq!(fired.fired.len(), 1);
    let pruned = stores
        .prune_fires(at("2026-06-01T10:01:01Z"), 100)
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    assert_eq!(
        stores
            .prune_fires(at("2026-06-01T10:01:01Z"), 100)
            .await
            .expect("prune"),
        0
    );
    // The same moment again: the schedule has moved past 10:01 (the fence).
    let again = stores
        .fire_due(at("2026-06-01T10:01:00Z"), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert!(again.fired.is_empty());
    assert_eq!(fire_times(&*stores, &tenant, &s).await.len(), 1);
}

async fn a_suspended_tenants_schedules_start_no_work(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = tenant(&*stores, Quotas::default()).await;
    let s = create(
        &*stores,
        &tenant,
        schedule("s", "* * * * *", "UTC"),
        at("2026-06-01T10:00:30Z"),
    )
    .await;
    let status = |status| {
        let stores = stores.clone();
        let id = tenant.id.clone();
        async move {
            stores
                .set_tenant_status(
                    &id,
                    status,
                    Some("unpaid".into()).filter(|_| status == tenancy::TenantStatus::Suspended),
                    &Actor::system(),
                )
                .await
                .expect("status")
        }
    };
    status(tenancy::TenantStatus::Suspended).await;
    let report = stores
        .fire_due(at("2026-06-01T10:01:00Z"), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert!(
        report.fired.is_empty(),
        "a suspended tenant's schedule started work"
    );
    assert_eq!(report.skipped, 1);
    let moved = stores
        .get_schedule(Some(&tenant.id), &s.id)
        .await
        .expect("read");
    assert_eq!(
        moved.next_fire_at,
        Some(at("2026-06-01T10:02:00Z")),
        "the fire time passed by"
    );
    status(tenancy::TenantStatus::Active).await;
    let report = stores
        .fire_due(at("2026-06-01T10:02:00Z"), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert_eq!(report.fired.len(), 1, "fires again once resumed");
}

/// Fires count against the tenant's `maxQueued` like `POST /v1/jobs`: past
/// it a fire creates no job; the schedule moves on and records the skip, and
/// the audit log says why. Room made by a worker lets the next fire through;
/// two schedules due together share the room.
async fn fires_over_max_queued_are_skipped_and_recorded(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = tenant(
        &*stores,
        Quotas {
            max_queued: Some(3),
            ..Quotas::default()
        },
    )
    .await;
    let every_second = |name: &str| schedule(name, "* * * * * *", "UTC");
    let first = create(
        &*stores,
        &tenant,
        every_second("first"),
        at("2026-06-01T10:00:00.500Z"),
    )
    .await;
    let second = |s: u32| {
        Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, s)
            .single()
            .expect("time")
    };
    let queued = || async {
        stores
            .list_jobs(
                &tenant.id,
                &longhaul_core::job::JobFilter {
                    states: vec![JobState::Queued],
                    ..Default::default()
                },
                None,
                100,
            )
            .await
            .expect("jobs")
            .len()
    };
    for s in 1..=3 {
        let report = stores
            .fire_due(second(s), 10, MINUTE, &jobs())
            .await
            .expect("tick");
        assert_eq!(report.fired.len(), 1, "fire {s} is within the quota");
    }
    let over = stores
        .fire_due(second(4), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert!(over.fired.is_empty(), "a fire over maxQueued queued a job");
    assert_eq!((over.skipped, over.over_quota), (1, 1));
    assert_eq!(queued().await, 3);
    let read = stores
        .get_schedule(Some(&tenant.id), &first.id)
        .await
        .expect("read");
    assert_eq!(read.next_fire_at, Some(second(5)), "the schedule moved on");
    assert_eq!(read.last_fire_at, Some(second(3)));
    assert_eq!(read.last_skipped_at, Some(second(4)));
    assert_eq!(read.last_skip_reason.as_deref(), Some("quota_exceeded"));
    let shown = serde_json::to_value(&read).expect("json");
    assert_eq!(shown["lastSkipReason"], "quota_exceeded");
    let skips = stores
        .list_audit_events(
            &tenant.id,
            &longhaul_core::audit::AuditFilter {
                action: Some("schedule.fire_skipped".into()),
                ..Default::default()
            },
            None,
            longhaul_core::audit::Order::NewestFirst,
            10,
        )
        .await
        .expect("audit");
    assert_eq!(skips.len(), 1);
    assert_eq!(skips[0].resource_id.as_deref(), Some(first.id.as_str()));
    let details: Value = serde_json::from_str(skips[0].details.as_str()).expect("details");
    assert_eq!(details["reason"], "quota_exceeded");
    assert_eq!(details["fireTime"], json!(second(4)));
    assert_eq!(
        (details["limit"].clone(), details["queued"].clone()),
        (json!(3), json!(3))
    );

    // A worker takes one job: room for one fire, shared by two schedules.
    create(
        &*stores,
        &tenant,
        every_second("second"),
        at("2026-06-01T10:00:04.500Z"),
    )
    .await;
    let claimed = stores
        .claim(
            &ClaimRequest {
                queues: vec!["default".into()],
                limit: 1,
                worker_id: "w".into(),
                lease: Duration::from_secs(30),
            },
            None,
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let shared = stores
        .fire_due(second(5), 10, MINUTE, &jobs())
        .await
        .expect("tick");
    assert_eq!((shared.schedules, shared.fired.len()), (2, 1));
    assert_eq!((shared.skipped, shared.over_quota), (1, 1));
    assert_eq!(queued().await, 3, "never past maxQueued");
}

// ---- the API ------------------------------------------------------------------

struct Api {
    router: axum::Router,
    stores: Arc<dyn Stores>,
}

impl Api {
    async fn new(db: &TestDb) -> Api {
        let app = http::test_app(db).await;
        Api {
            router: app.router,
            stores: app.stores,
        }
    }

    async fn key(&self, tenant: &Tenant, role: Role) -> String {
        self.stores
            .issue_api_key(Some(&tenant.id), "k", role, KeyMode::Live, &Actor::system())
            .await
            .expect("key")
            .secret
    }

    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        http::call(&self.router, method, path, Some(key), body).await
    }
}

async fn schedules_api_validates_limits_and_isolates(db: TestDb) {
    let api = Api::new(&db).await;
    let tenant = tenant(
        &*api.stores,
        Quotas {
            max_schedules: Some(2),
            ..Quotas::default()
        },
    )
    .await;
    let developer = api.key(&tenant, Role::Developer).await;
    let viewer = api.key(&tenant, Role::Viewer).await;
    let good = json!({
        "name": "nightly", "cron": "0 3 * * *", "timeZone": "Europe/Berlin",
        "kind": "system.sleep", "params": { "durationMs": 10, "steps": 1 },
        "overlapPolicy": "skip", "misfirePolicy": "fire_once", "jitterSeconds": 30
    });
    let created = api
        .call(
            Method::POST,
            "/v1/schedules",
            &developer,
            Some(good.clone()),
        )
        .await;
    created.assert_status(StatusCode::CREATED);
    let id = created.body["id"].as_str().expect("id").to_string();
    assert!(created.headers[header::LOCATION]
        .to_str()
        .expect("ascii")
        .ends_with(&id));
    assert_eq!(created.body["misfirePolicy"], "fire_once");
    assert!(created.body["nextFireAt"].is_string());

    // Bad input: 4xx in the error format, nothing created.
    for (change, field) in [
        (json!({ "cron": "61 * * * *" }), "cron"),
        (json!({ "cron": "0 0 30 2 *" }), "cron"),
        (json!({ "timeZone": "Mars/Olympus" }), "timeZone"),
        (json!({ "kind": "no.such.kind" }), ""),
        (json!({ "params": { "durationMs": "soon" } }), "params"),
        (json!({ "jitterSeconds": 7200 }), "jitterSeconds"),
        (json!({ "name": "" }), "name"),
    ] {
        let mut body = good.clone();
        for (k, v) in change.as_object().expect("object") {
            body[k] = v.clone();
        }
        body["name"] = body
            .get("name")
            .cloned()
            .filter(|n| n != "nightly")
            .unwrap_or(json!("other"));
        if field == "name" {
            body["name"] = json!("");
        }
        let reply = api
            .call(Method::POST, "/v1/schedules", &developer, Some(body))
            .await;
        assert!(
            reply.status.is_client_error(),
            "{change}: {} {}",
            reply.status,
            reply.body
        );
        assert!(reply.body["error"]["code"].is_string(), "{}", reply.body);
        if !field.is_empty() {
            assert_eq!(
                reply.body["error"]["details"]["field"],
                json!(field),
                "{}",
                reply.body
            );
        }
    }
    for bad in [
        json!({ "name": "x" }),
        json!({ "name": "x", "cron": "* * * * *", "kind": "system.noop", "extra": 1 }),
    ] {
        let reply = api
            .call(Method::POST, "/v1/schedules", &developer, Some(bad))
            .await;
        assert!(reply.status.is_client_error(), "{}", reply.body);
    }
    // The same name twice is a conflict.
    api.call(
        Method::POST,
        "/v1/schedules",
        &developer,
        Some(good.clone()),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "conflict");
    // The plan limit: 2 schedules.
    let mut second = good.clone();
    second["name"] = json!("second");
    api.call(Method::POST, "/v1/schedules", &developer, Some(second))
        .await
        .assert_status(StatusCode::CREATED);
    let mut third = good.clone();
    third["name"] = json!("third");
    let refused = api
        .call(Method::POST, "/v1/schedules", &developer, Some(third))
        .await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(
        refused.body["error"]["details"],
        json!({ "limit": 2, "current": 2, "resource": "schedules" })
    );
    let list = api.call(Method::GET, "/v1/schedules", &viewer, None).await;
    assert_eq!(list.body["data"].as_array().expect("data").len(), 2);

    // Preview: 10 times, increasing, in the schedule's zone (03:00 local).
    let next = api
        .call(
            Method::GET,
            &format!("/v1/schedules/{id}/next?count=10"),
            &viewer,
            None,
        )
        .await;
    next.assert_status(StatusCode::OK);
    let times = next.body["data"].as_array().expect("data");
    assert_eq!(times.len(), 10);
    let utc: Vec<DateTime<Utc>> = times
        .iter()
        .map(|t| at(t["at"].as_str().expect("at")))
        .collect();
    assert!(utc.windows(2).all(|w| w[0] < w[1]));
    assert!(times
        .iter()
        .all(|t| t["local"].as_str().expect("local").contains("T03:00:00")));
    api.call(
        Method::GET,
        &format!("/v1/schedules/{id}/next?count=0"),
        &viewer,
        None,
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");

    // Update, pause, resume; viewers cannot change anything.
    let updated = api
        .call(
            Method::PATCH,
            &format!("/v1/schedules/{id}"),
            &developer,
            Some(json!({ "cron": "0 4 * * *" })),
        )
        .await;
    updated.assert_status(StatusCode::OK);
    assert_eq!(updated.body["cron"], "0 4 * * *");
    api.call(
        Method::PATCH,
        &format!("/v1/schedules/{id}"),
        &developer,
        Some(json!({ "timeZone": "Nowhere/Land" })),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    // A client cannot take a fire's idempotency key.
    let reserved = http::send(
        &api.router,
        http::request(
            Method::POST,
            "/v1/jobs",
            Some(&developer),
            &[("idempotency-key", "schedule:sch_x:2026-01-01T00:00:00Z")],
            Some(json!({ "kind": "system.noop" })),
        ),
    )
    .await;
    reserved.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let paused = api
        .call(
            Method::POST,
            &format!("/v1/schedules/{id}/pause"),
            &developer,
            None,
        )
        .await;
    assert_eq!(paused.body["paused"], true);
    // Pausing a paused schedule changes nothing and records nothing.
    api.call(
        Method::POST,
        &format!("/v1/schedules/{id}/pause"),
        &developer,
        None,
    )
    .await
    .assert_status(StatusCode::OK);
    let events = api
        .stores
        .list_audit_events(
            &tenant.id,
            &longhaul_core::audit::AuditFilter {
                action: Some("schedule.pause".into()),
                ..Default::default()
            },
            None,
            longhaul_core::audit::Order::NewestFirst,
            10,
        )
        .await
        .expect("audit");
    assert_eq!(events.len(), 1, "one pause recorded");
    let resumed = api
        .call(
            Method::POST,
            &format!("/v1/schedules/{id}/resume"),
            &developer,
            None,
        )
        .await;
    assert_eq!(resumed.body["paused"], false);
    for (method, path) in [
        (Method::POST, "/v1/schedules".to_string()),
        (Method::PATCH, format!("/v1/schedules/{id}")),
        (Method::DELETE, format!("/v1/schedules/{id}")),
        (Method::POST, format!("/v1/schedules/{id}/pause")),
    ] {
        api.call(method, &path, &viewer, Some(good.clone()))
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }

    // Another tenant: 404 for every id route, nothing leaked.
    let other = api
        .stores
        .create_tenant(NewTenant::new("globex", "us", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let stranger = api.key(&other, Role::Admin).await;
    for (method, path) in [
        (Method::GET, format!("/v1/schedules/{id}")),
        (Method::PATCH, format!("/v1/schedules/{id}")),
        (Method::DELETE, format!("/v1/schedules/{id}")),
        (Method::POST, format!("/v1/schedules/{id}/pause")),
        (Method::POST, format!("/v1/schedules/{id}/resume")),
        (Method::GET, format!("/v1/schedules/{id}/next")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({ "name": "mine" }));
        let reply = api.call(method.clone(), &path, &stranger, body).await;
        reply.assert_error(StatusCode::NOT_FOUND, "not_found");
        assert!(
            !reply.body.to_string().contains("nightly"),
            "{method} {path}"
        );
    }
    let theirs = api
        .call(Method::GET, "/v1/schedules", &stranger, None)
        .await;
    assert_eq!(theirs.body["data"], json!([]));

    // Delete: gone.
    api.call(
        Method::DELETE,
        &format!("/v1/schedules/{id}"),
        &developer,
        None,
    )
    .await
    .assert_status(StatusCode::NO_CONTENT);
    api.call(
        Method::GET,
        &format!("/v1/schedules/{id}"),
        &developer,
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    let _: BTreeSet<()> = BTreeSet::new();
}

both_stores!(
    concurrent_tickers_fire_each_time_once,
    misfires_skip_or_fire_once_after_a_gap,
    daylight_saving_days_fire_once,
    overlap_skip_waits_for_the_previous_run,
    paused_schedules_do_not_fire_and_resume_from_now,
    a_suspended_tenants_schedules_start_no_work,
    fires_over_max_queued_are_skipped_and_recorded,
    jitter_longer_than_the_misfire_threshold_is_not_a_misfire,
    pruned_fire_records_do_not_fire_again,
    schedules_api_validates_limits_and_isolates,
);
