//! Test harness: a fresh, migrated store per test.
//!
//! PostgreSQL: a new schema per test inside the `longhaul_test` database
//! (created on first use), selected through the connection's `search_path`, so
//! tests run in parallel without seeing each other's rows. The server comes
//! from `LONGHAUL_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`);
//! if it is unreachable the test fails — it never skips.
//! SQLite: a new database file per test in the system temp folder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use longhaul_core::store::{self, JobStore};
use sqlx::Connection;

/// A migrated store plus the URL other processes can use to reach the same data.
pub struct TestDb {
    pub url: String,
    pub store: Arc<dyn JobStore>,
}

impl TestDb {
    /// Another independent connection pool to the same data (another "process").
    pub async fn reconnect(&self) -> Arc<dyn JobStore> {
        store::connect(&self.url, 8)
            .await
            .expect("reconnecting to the test store")
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}_{}_{}_{n}", std::process::id(), fastrand_suffix())
}

fn fastrand_suffix() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % 100_000
}

/// The Redis server of the tests that need one (they fail, never skip, if it
/// is unreachable).
pub fn redis_url() -> String {
    std::env::var("LONGHAUL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn server_url() -> String {
    std::env::var("LONGHAUL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

const TEST_DATABASE: &str = "longhaul_test";

async fn ensure_test_database() {
    let admin_url = format!("{}/postgres", server_url());
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL must be reachable for the test suite at {admin_url} (set LONGHAUL_TEST_DATABASE_URL): {e}")
    });
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(TEST_DATABASE)
            .fetch_one(&mut conn)
            .await
            .expect("checking for the test database");
    if !exists {
        // Two test processes may race to create it; the loser's error is harmless.
        let _ = sqlx::query(&format!("CREATE DATABASE {TEST_DATABASE}"))
            .execute(&mut conn)
            .await;
    }
}

/// A fresh migrated PostgreSQL schema.
pub async fn postgres() -> TestDb {
    let db = postgres_unmigrated().await;
    db.store.migrate().await.expect("migrating the test schema");
    db
}

/// A fresh empty PostgreSQL schema (for tests of the migrations themselves).
pub async fn postgres_unmigrated() -> TestDb {
    ensure_test_database().await;
    let schema = unique_name("lh_t");
    let base = format!("{}/{TEST_DATABASE}", server_url());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connecting to the test database");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("creating a test schema");
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    let store = store::connect(&url, 16)
        .await
        .expect("connecting the test store");
    TestDb { url, store }
}

/// A fresh migrated SQLite file.
pub async fn sqlite() -> TestDb {
    let db = sqlite_unmigrated().await;
    db.store
        .migrate()
        .await
        .expect("migrating the test SQLite store");
    db
}

/// A fresh empty SQLite file (for tests of the migrations themselves).
pub async fn sqlite_unmigrated() -> TestDb {
    let path = std::env::temp_dir().join(format!("{}.db", unique_name("longhaul_test")));
    let url = format!("sqlite://{}", path.display());
    let store = store::connect(&url, 8)
        .await
        .expect("opening the test SQLite store");
    TestDb { url, store }
}

/// Runs an `async fn(TestDb)` against both stores, as `<name>::postgres` and `<name>::sqlite`.
macro_rules! both_stores {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::harness::postgres().await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::harness::sqlite().await).await
                }
            }
        )+
    };
}
