//! How the stores open their connection pools: how many connections, how
//! long a caller waits for one before giving up (an API request answers 503
//! then, rather than hanging), and a first direct connection to PostgreSQL
//! that names why a database cannot be reached (a pool retries a refused
//! connection until its acquire timeout and then reports only the timeout).

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::error::{Error, Result};

/// How long a caller waits for a connection unless told otherwise: long
/// enough for a worker's writes to ride out a busy pool.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The size of a pool and how long a caller waits for one of its connections
/// (for SQLite also how long a write waits for the database's write lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl PoolSettings {
    /// `max_connections` with the default acquire timeout.
    pub fn new(max_connections: u32) -> Self {
        PoolSettings {
            max_connections,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }

    pub fn with_acquire_timeout(mut self, acquire_timeout: Duration) -> Self {
        self.acquire_timeout = acquire_timeout;
        self
    }
}

/// Opens and closes one connection of its own, so that a database that is
/// down is reported with the driver's own error ("Connection refused", a bad
/// password, an unknown database), or as not answering within `within`.
pub(crate) async fn probe_postgres(options: &PgConnectOptions, within: Duration) -> Result<()> {
    const CONTEXT: &str = "connecting to PostgreSQL";
    match tokio::time::timeout(within, options.connect()).await {
        Ok(Ok(connection)) => {
            // The pool opens its own connections; this one only had to succeed.
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(source)) => Err(Error::Database {
            context: CONTEXT,
            source,
        }),
        Err(_) => Err(Error::Database {
            context: CONTEXT,
            source: sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the server did not answer within {within:?}"),
            )),
        }),
    }
}
