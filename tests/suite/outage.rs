//! The API while its database is unavailable (issue 20, hardening):
//! requests answer `503 service_unavailable` with `Retry-After` within the
//! acquire timeout instead of hanging and answering `500`, `/readyz` answers
//! `503 not_ready`, and a role started while PostgreSQL is down says why.
//! PostgreSQL is reached through a TCP relay the test cuts (a restart: the
//! open connections drop, new ones are refused) or freezes (a server that
//! accepts and then never answers). SQLite: a database whose write lock
//! another process holds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use chrono::Utc;
use longhaul_api::clock::ManualClock;
use longhaul_api::AppState;
use longhaul_core::store::PoolSettings;
use longhaul_core::store::Stores;
use serde_json::json;
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::harness::{self, TestDb};
use crate::http::{self, call, Reply};

/// How long an API request here waits for a database connection.
const ACQUIRE: Duration = Duration::from_millis(800);
/// Well under the 10 s the API used to hang, well over `ACQUIRE`.
const BOUND: Duration = Duration::from_secs(5);

/// A TCP relay to PostgreSQL that a test can cut or freeze.
struct Relay {
    port: u16,
    accepting: JoinHandle<()>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    frozen: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("port").port();
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let frozen: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let accepting = tokio::spawn({
            let pipes = pipes.clone();
            let frozen = frozen.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let target = target.clone();
                    let frozen = frozen.clone();
                    let pipe = tokio::spawn(async move {
                        if frozen.load(std::sync::atomic::Ordering::SeqCst) {
                            // Accepted, and never answered.
                            std::future::pending::<()>().await;
                        }
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    pipes.lock().expect("pipes").push(pipe);
                }
            }
        });
        Relay {
            port,
            accepting,
            pipes,
            frozen,
        }
    }

    /// The database URL with the relay in place of `target`.
    fn url_through(&self, url: &str, target: &str) -> String {
        url.replacen(target, &format!("127.0.0.1:{}", self.port), 1)
    }

    /// Like a restart: open connections drop, new ones are refused.
    fn cut(&self) {
        self.accepting.abort();
        for pipe in self.pipes.lock().expect("pipes").drain(..) {
            pipe.abort();
        }
    }

    /// Like a hung server: open connections and new ones get no answer.
    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
        for pipe in self.pipes.lock().expect("pipes").drain(..) {
            pipe.abort();
        }
    }
}

/// The API over stores whose requests wait at most `ACQUIRE`.
async fn api_over(url: &str) -> (axum::Router, Arc<dyn Stores>) {
    let pool = PoolSettings::new(4).with_acquire_timeout(ACQUIRE);
    let stores = longhaul_core::store::connect_stores_pool(url, pool)
        .await
        .expect("stores");
    let state = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_clock(Arc::new(ManualClock::new(Utc::now())));
    (longhaul_api::router(state), stores)
}

/// Calls the API and checks the answer came within `BOUND`.
async fn timed_call(
    router: &axum::Router,
    method: Method,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> Reply {
    let started = Instant::now();
    let reply = call(router, method.clone(), path, Some(key), body).await;
    assert!(
        started.elapsed() < BOUND,
        "{method} {path} took {:?}",
        started.elapsed()
    );
    reply
}

fn assert_unavailable(reply: &Reply) {
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable");
    assert!(reply.retry_after() >= 1);
}

/// PostgreSQL restarting, then hung: requests and `/readyz` answer 503 in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_answers_503_promptly() {
    for outage in ["restart", "hang"] {
        let db = harness::postgres().await;
        let target = std::env::var("LONGHAUL_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let target = target
            .rsplit('@')
            .next()
            .and_then(|rest| rest.split('/').next())
            .expect("host:port")
            .to_string();
        let relay = Relay::start(target.clone()).await;
        let url = relay.url_through(&db.url, &target);
        let (router, stores) = api_over(&url).await;
        let (_, key) = http::tenant_with_admin_key(stores.as_ref(), "acme").await;
        let created = timed_call(
            &router,
            Method::POST,
            "/v1/jobs",
            &key,
            Some(json!({ "kind": "system.noop" })),
        )
        .await;
        created.assert_status(StatusCode::ACCEPTED);
        let job = created.body["id"].as_str().expect("id").to_string();
        call(&router, Method::GET, "/readyz", None, None)
            .await
            .assert_status(StatusCode::OK);

        match outage {
            "restart" => relay.cut(),
            _ => relay.freeze(),
        }
        let read = timed_call(&router, Method::GET, &format!("/v1/jobs/{job}"), &key, None).await;
        assert_unavailable(&read);
        let write = timed_call(
            &router,
            Method::POST,
            "/v1/jobs",
            &key,
            Some(json!({ "kind": "system.noop" })),
        )
        .await;
        assert_unavailable(&write);
        let started = Instant::now();
        let ready = call(&router, Method::GET, "/readyz", None, None).await;
        assert!(
            started.elapsed() < BOUND,
            "{outage}: /readyz took {:?}",
            started.elapsed()
        );
        ready.assert_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
        assert!(
            ready.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("database")),
            "{}",
            ready.body
        );
        assert!(ready.retry_after() >= 1);
    }
}

/// SQLite whose write lock another process holds: writes answer 503 (not
/// 500) once the busy timeout passes; reads still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_sqlite_database_answers_503() {
    let db: TestDb = harness::sqlite().await;
    let (router, stores) = api_over(&db.url).await;
    let (_, key) = http::tenant_with_admin_key(stores.as_ref(), "acme").await;
    let mut other = sqlx::SqliteConnection::connect(&db.url)
        .await
        .expect("another connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("the write lock");

    let write = timed_call(
        &router,
        Method::POST,
        "/v1/jobs",
        &key,
        Some(json!({ "kind": "system.noop" })),
    )
    .await;
    assert_unavailable(&write);
    call(&router, Method::GET, "/readyz", None, None)
        .await
        .assert_status(StatusCode::OK);

    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("released");
    timed_call(
        &router,
        Method::POST,
        "/v1/jobs",
        &key,
        Some(json!({ "kind": "system.noop" })),
    )
    .await
    .assert_status(StatusCode::ACCEPTED);
}

/// A role started while PostgreSQL is down names the refusal, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_database_that_is_down_names_the_cause() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("port").port()
    };
    let started = Instant::now();
    let pool = PoolSettings::new(2).with_acquire_timeout(Duration::from_secs(30));
    let error = match longhaul_core::store::connect_stores_pool(
        &format!("postgres://postgres@127.0.0.1:{port}/longhaul"),
        pool,
    )
    .await
    {
        Ok(_) => panic!("nothing listens on port {port}"),
        Err(error) => error,
    };
    let text = error.to_string();
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refusal must not wait for the acquire timeout: {:?}",
        started.elapsed()
    );
}
