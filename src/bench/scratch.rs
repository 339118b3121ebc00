//! A throw-away database for a benchmark run: a fresh schema in the given
//! PostgreSQL database, or a fresh SQLite file; removed when the run ends.

use std::sync::Arc;

use anyhow::{bail, Context};
use longhaul_core::store::JobStore;
use longhaul_core::store::{connect_stores, Stores};
use sqlx::Connection;

pub struct Scratch {
    pub store: Arc<dyn JobStore>,
    /// The same store with its tenancy and schedule faces.
    pub stores: Arc<dyn Stores>,
    pub backend: &'static str,
    /// The URL that reaches the scratch data (schema included).
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    DropSchema { url: String, schema: String },
    RemoveFile(std::path::PathBuf),
}

impl Scratch {
    pub async fn create(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let schema = format!("longhaul_bench_{}", std::process::id());
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .context("connecting to PostgreSQL")?;
            sqlx::raw_sql(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .execute(&mut conn)
            .await
            .context("creating the benchmark schema")?;
            let separator = if url.contains('?') { '&' } else { '?' };
            let scoped = format!("{url}{separator}options=-c%20search_path%3D{schema}");
            let stores = connect_stores(&scoped, max_connections).await?;
            stores.migrate().await?;
            Ok(Scratch {
                store: stores.clone(),
                stores,
                backend: "postgres",
                url: scoped,
                cleanup: Cleanup::DropSchema {
                    url: url.to_string(),
                    schema,
                },
            })
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let path = std::path::PathBuf::from(path);
            if path.exists() {
                bail!(
                    "{} exists: the benchmark needs a fresh SQLite file it can delete afterwards",
                    path.display()
                );
            }
            let stores = connect_stores(url, max_connections).await?;
            stores.migrate().await?;
            Ok(Scratch {
                store: stores.clone(),
                stores,
                backend: "sqlite",
                url: url.to_string(),
                cleanup: Cleanup::RemoveFile(path),
            })
        } else {
            bail!("--database-url must be postgres://… or sqlite://…")
        }
    }

    /// Gathers planner statistics, as autovacuum would after a big insert.
    pub async fn analyze(&self) -> anyhow::Result<()> {
        if self.backend == "postgres" {
            let mut conn = sqlx::PgConnection::connect(&self.url).await?;
            sqlx::query("ANALYZE jobs").execute(&mut conn).await?;
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
            sqlx::query("ANALYZE").execute(&mut conn).await?;
        }
        Ok(())
    }

    /// When the last job finished, by the database's clock (the same host
    /// clock as `Utc::now()` here): drains end there, not at the poll that
    /// noticed them.
    pub async fn last_finished_at(&self) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        let last = if self.backend == "postgres" {
            let mut conn = sqlx::PgConnection::connect(&self.url).await?;
            sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
                "SELECT max(finished_at) FROM jobs",
            )
            .fetch_one(&mut conn)
            .await?
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
            let micros: Option<i64> = sqlx::query_scalar("SELECT max(finished_at) FROM jobs")
                .fetch_one(&mut conn)
                .await?;
            micros.and_then(chrono::DateTime::from_timestamp_micros)
        };
        last.context("no job has finished")
    }

    /// The plan of a claim of `limit` jobs from the default queue
    /// (PostgreSQL only).
    pub async fn claim_plan(&self, limit: usize) -> anyhow::Result<Option<String>> {
        if self.backend != "postgres" {
            return Ok(None);
        }
        let store = longhaul_core::store::PgStore::connect(&self.url, 1).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(Some(
            store.explain_claim(&["default".to_string()], limit).await?,
        ))
    }

    pub async fn remove(self) -> anyhow::Result<()> {
        drop(self.store);
        drop(self.stores);
        match self.cleanup {
            Cleanup::DropSchema { url, schema } => {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut conn)
                    .await?;
            }
            Cleanup::RemoveFile(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let file = format!("{}{suffix}", path.display());
                    let _ = std::fs::remove_file(file);
                }
            }
        }
        Ok(())
    }
}
