//! The error type of core operations, with the context a caller or an API
//! handler needs to answer clearly (validation vs. not found vs. conflict vs.
//! a store failure).

use crate::ids::JobId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something we will not store; nothing was written.
    #[error("invalid {field}: {message}")]
    Validation { field: String, message: String },

    /// Params larger than the cap; nothing was written.
    #[error("params are {size} bytes, larger than the {limit}-byte limit")]
    PayloadTooLarge { size: usize, limit: usize },

    /// The job kind is not in the catalogue; nothing was written.
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),

    /// No such job for this tenant (a job of another tenant is "not found" too).
    #[error("job {0} not found")]
    NotFound(JobId),

    /// No such tenant or API key (another tenant's key is "not found" too).
    #[error("{kind} {id} not found")]
    NoSuchResource { kind: &'static str, id: String },

    /// The request contradicts the current state (for example cancelling a
    /// finished job, or an idempotency key reused with other params).
    #[error("{0}")]
    Conflict(String),

    /// Accepting the work would take the tenant past its cap on queued jobs
    /// (`current` were queued before the request); nothing was written.
    #[error("the tenant already has {current} queued jobs, at its limit of {limit}")]
    QuotaExceeded { limit: i64, current: i64 },

    /// The tenant already holds as many of `what` (e.g. "schedules") as its
    /// plan allows; nothing was written.
    #[error("the tenant already has {current} {what}, at its limit of {limit}")]
    LimitReached {
        what: &'static str,
        limit: i64,
        current: i64,
    },

    /// A worker write was fenced: the attempt no longer holds the job's lease.
    #[error("job {job_id} attempt {attempt} no longer holds the lease")]
    LeaseLost { job_id: JobId, attempt: i32 },

    /// Bad configuration, one line per problem.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),

    #[error("database error during {context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    #[error("stored data is corrupt ({context}): {message}")]
    Corrupt {
        context: &'static str,
        message: String,
    },
}

impl Error {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn no_such(kind: &'static str, id: impl Into<String>) -> Self {
        Error::NoSuchResource {
            kind,
            id: id.into(),
        }
    }

    pub fn corrupt(context: &'static str, message: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            context,
            message: message.to_string(),
        }
    }

    /// Whether the database could not be reached or could not answer now
    /// (no connection within the acquire timeout, a connection refused or
    /// dropped, a server shutting down or starting up, too many connections,
    /// a SQLite database locked past the busy timeout): worth retrying later,
    /// not a fault of the request or of the data.
    pub fn is_store_unavailable(&self) -> bool {
        match self {
            Error::Database { source, .. } => unavailable(source),
            _ => false,
        }
    }
}

fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                // Class 08: connection exceptions; 57P01-57P03: admin or
                // crash shutdown, cannot connect now; 53300: too many
                // connections.
                code.starts_with("08") || ["57P01", "57P02", "57P03", "53300"].contains(&&*code)
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Extended result codes whose primary code is SQLITE_BUSY (5)
                // or SQLITE_LOCKED (6).
                code.parse::<i32>()
                    .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Attaches the name of the store operation to a sqlx error.
pub(crate) trait DbContext<T> {
    fn db(self, context: &'static str) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, sqlx::Error> {
    fn db(self, context: &'static str) -> Result<T> {
        self.map_err(|source| Error::Database { context, source })
    }
}
