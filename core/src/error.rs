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

    /// The database was briefly unreachable or overloaded, so the same call
    /// may well succeed in a while: connection errors (refused, reset, TLS),
    /// a pool that gave no connection in time or is closed, and the server's
    /// own "try again" answers (PostgreSQL connection and resource classes
    /// 08/53, shutdowns 57P01–57P03, serialization failures and deadlocks;
    /// SQLite BUSY and LOCKED). Jobs back off for minutes on it.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database { source, .. } => sqlx_error_is_transient(source),
            _ => false,
        }
    }

    /// The same test seen from the API: the request is not at fault, the
    /// database cannot answer now (`503` + `Retry-After`).
    pub fn is_store_unavailable(&self) -> bool {
        self.is_transient()
    }
}

fn sqlx_error_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                sqlite_code_is_transient(&code)
            } else {
                postgres_code_is_transient(&code)
            }
        }
        _ => false,
    }
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
fn sqlite_code_is_transient(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Connection exceptions (08), insufficient resources (53), shutdowns
/// (57P01–57P03), serialization failures and deadlocks.
fn postgres_code_is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn database(source: sqlx::Error) -> Error {
        Error::Database {
            context: "a test",
            source,
        }
    }

    #[test]
    fn outages_are_transient_and_mistakes_are_not() {
        assert!(database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(database(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        )))
        .is_transient());
        assert!(!database(sqlx::Error::RowNotFound).is_transient());
        assert!(!Error::Conflict("no".into()).is_transient());
        for code in ["08006", "53300", "57P01", "40001", "40P01"] {
            assert!(postgres_code_is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "22001"] {
            assert!(!postgres_code_is_transient(code), "{code}");
        }
        for code in ["5", "517", "6", "262"] {
            assert!(sqlite_code_is_transient(code), "{code}");
        }
        for code in ["19", "2067", "1", "11"] {
            assert!(!sqlite_code_is_transient(code), "{code}");
        }
    }
}
