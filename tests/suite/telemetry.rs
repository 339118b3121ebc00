//! The process's metrics through `/metrics`: with the Prometheus recorder
//! installed (as the binary does), attempts per kind and outcome, run and
//! wait histograms and request latency appear beside the queue gauges, in
//! the Prometheus text format, and move as jobs run. (Each test runs in its
//! own process under nextest, so the global recorder is this test's.)

use std::time::Duration;

use axum::http::StatusCode;
use longhaul_api::AppState;
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::tenancy::{KeyMode, Role};
use longhaul_core::{JobClient, JobState};
use longhaul_worker::WorkerPool;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::harness::TestDb;
use crate::http;
use crate::support::{
    pool_config, test_catalogue, test_registry, wait_for_job, Journal, PERMANENT,
};

/// The value of the sample `line_prefix` names (the whole series, labels
/// included, up to the value).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every line is a comment or `name{labels} value` with a number.
fn well_formed(text: &str) {
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert!(value.parse::<f64>().is_ok(), "{line:?}");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line:?}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line:?}");
        }
    }
}

async fn jobs_and_requests_are_counted_and_timed(db: TestDb) {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.01, 0.1, 1.0, 10.0])
        .expect("buckets")
        .install_recorder()
        .expect("the only recorder of this process");
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let router = longhaul_api::router(
        AppState::new(stores.clone(), test_catalogue()).with_metrics(handle.clone()),
    );
    let operator = stores
        .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
        .await
        .expect("operator key")
        .secret;
    let scrape = || {
        let (router, operator) = (router.clone(), operator.clone());
        async move {
            let request = axum::http::Request::get("/metrics")
                .header(
                    axum::http::header::AUTHORIZATION,
                    format!("Bearer {operator}"),
                )
                .body(axum::body::Body::empty())
                .expect("request");
            let (status, _, text) = http::send_raw(&router, request).await;
            assert_eq!(status, StatusCode::OK, "{text}");
            text
        }
    };
    let journal = Journal::default();
    let pool = WorkerPool::new(
        stores.clone().job_store(),
        test_registry(&journal),
        pool_config(2),
    );
    let token = CancellationToken::new();
    let run = tokio::spawn(pool.run(token.clone()));
    let client = JobClient::new(stores.clone().job_store(), test_catalogue());
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            client
                .enqueue(EnqueueRequest::new("t", "system.noop", json!({})))
                .await
                .expect("enqueue")
                .id,
        );
    }
    ids.push(
        client
            .enqueue(EnqueueRequest::new("t", PERMANENT, json!({})))
            .await
            .expect("enqueue")
            .id,
    );
    for id in &ids {
        wait_for_job(stores.as_ref(), "t", *id, Duration::from_secs(30), |job| {
            job.state.is_terminal()
        })
        .await;
    }
    let first = scrape().await;
    well_formed(&first);
    assert_eq!(
        sample(&first, "longhaul_jobs_started_total{kind=\"system.noop\"}"),
        Some(3.0),
        "{first}"
    );
    assert_eq!(
        sample(
            &first,
            "longhaul_jobs_finished_total{kind=\"system.noop\",outcome=\"succeeded\"}"
        ),
        Some(3.0),
        "{first}"
    );
    assert_eq!(
        sample(
            &first,
            &format!("longhaul_jobs_finished_total{{kind=\"{PERMANENT}\",outcome=\"failed\"}}")
        ),
        Some(1.0),
        "{first}"
    );
    assert_eq!(
        sample(
            &first,
            "longhaul_job_run_seconds_count{kind=\"system.noop\"}"
        ),
        Some(3.0),
        "{first}"
    );
    assert_eq!(
        sample(
            &first,
            "longhaul_job_wait_seconds_bucket{kind=\"system.noop\",le=\"+Inf\"}"
        ),
        Some(3.0),
        "{first}"
    );
    // The first scrape itself was timed by the second.
    let second = scrape().await;
    well_formed(&second);
    assert!(
        sample(
            &second,
            "longhaul_http_request_duration_seconds_count{method=\"GET\",route=\"/metrics\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{second}"
    );
    // More jobs, higher counts.
    let more = client
        .enqueue(EnqueueRequest::new("t", "system.noop", json!({})))
        .await
        .expect("enqueue")
        .id;
    let job = wait_for_job(stores.as_ref(), "t", more, Duration::from_secs(30), |job| {
        job.state.is_terminal()
    })
    .await;
    assert_eq!(job.state, JobState::Succeeded);
    let third = scrape().await;
    assert_eq!(
        sample(&third, "longhaul_jobs_started_total{kind=\"system.noop\"}"),
        Some(4.0),
        "{third}"
    );
    token.cancel();
    let _ = run.await;
}

both_stores!(jobs_and_requests_are_counted_and_timed);

/// A request's span names the caller's tenant, and the job it created with
/// its kind (as a job's span does in the worker), so its JSON log lines and
/// exported spans carry them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_carry_the_callers_tenant() {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .init();

    let app = http::test_app(&crate::harness::sqlite().await).await;
    let (tenant, key) = http::tenant_with_admin_key(app.stores.as_ref(), "acme").await;
    http::call(
        &app.router,
        axum::http::Method::GET,
        "/v1/jobs",
        Some(&key),
        None,
    )
    .await
    .assert_status(StatusCode::OK);
    let created = http::call(
        &app.router,
        axum::http::Method::POST,
        "/v1/jobs",
        Some(&key),
        Some(json!({"kind": "system.noop", "params": {}})),
    )
    .await;
    created.assert_status(StatusCode::ACCEPTED);
    let job_id = created.body["id"].clone();

    let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("UTF-8");
    let created_line = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|line| {
            line["span"]["name"] == "request"
                && line["span"]["tenant_id"] == json!(tenant.id)
                && line["span"]["job_id"] == job_id
                && line["span"]["kind"] == "system.noop"
        });
    assert!(
        created_line,
        "no creating request line with the job:\n{text}"
    );
    let tagged = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|line| {
            line["span"]["name"] == "request"
                && line["span"]["path"] == "/v1/jobs"
                && line["span"]["tenant_id"] == json!(tenant.id)
        });
    assert!(tagged, "no request line with the tenant:\n{text}");
}
