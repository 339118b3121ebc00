//! How a failed attempt is described. Two audiences: tenants get a stable
//! [`FailureCode`] and a short message ([`PublicError`]: no bucket names,
//! request ids or SDK dumps), operators get the raw error, kept in the job
//! row (`last_error`) and the attempt history (`job_attempts.error`) and
//! shown by `longhaul jobs get`. A code also says whether its cause is
//! transient (the platform underneath was briefly unavailable), which the
//! worker answers with a longer back-off.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why an attempt failed, as tenants may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// The kind's own error (bad input, a source that cannot be read, …):
    /// its message is shown as the kind wrote it.
    JobFailed,
    /// The object store did not answer (timeout, refused or reset
    /// connection) or answered that it was overloaded or failing (5xx,
    /// throttling). Transient.
    StorageUnavailable,
    /// The object store refused or failed a request for another reason.
    StorageError,
    /// No object store is configured for the tenant's region.
    StorageNotConfigured,
    /// The job database was unreachable or overloaded (connection errors,
    /// pool timeouts, serialization failures). Transient.
    DatabaseUnavailable,
    /// Anything else inside the platform (a database error that is not
    /// transient, a panic, corrupt stored data, a missing handler).
    InternalError,
    /// The job ran past its kind's time limit.
    TimedOut,
    /// The worker running the job stopped heartbeating; the job was taken
    /// back by the lease rescue.
    WorkerLost,
}

impl FailureCode {
    pub const ALL: [FailureCode; 8] = [
        FailureCode::JobFailed,
        FailureCode::StorageUnavailable,
        FailureCode::StorageError,
        FailureCode::StorageNotConfigured,
        FailureCode::DatabaseUnavailable,
        FailureCode::InternalError,
        FailureCode::TimedOut,
        FailureCode::WorkerLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::JobFailed => "job_failed",
            FailureCode::StorageUnavailable => "storage_unavailable",
            FailureCode::StorageError => "storage_error",
            FailureCode::StorageNotConfigured => "storage_not_configured",
            FailureCode::DatabaseUnavailable => "database_unavailable",
            FailureCode::InternalError => "internal_error",
            FailureCode::TimedOut => "timed_out",
            FailureCode::WorkerLost => "worker_lost",
        }
    }

    /// The fixed message tenants see for this code (a kind's own error,
    /// [`FailureCode::JobFailed`], shows its own message instead).
    pub fn message(self) -> &'static str {
        match self {
            FailureCode::JobFailed => "The job failed.",
            FailureCode::StorageUnavailable => {
                "The object store did not answer or was unavailable."
            }
            FailureCode::StorageError => "The object store refused or failed a request.",
            FailureCode::StorageNotConfigured => {
                "No object store is configured for the tenant's region."
            }
            FailureCode::DatabaseUnavailable => "The job database was unavailable.",
            FailureCode::InternalError => "An internal error stopped the attempt.",
            FailureCode::TimedOut => "The job did not finish within its time limit.",
            FailureCode::WorkerLost => "The worker running the job stopped responding.",
        }
    }

    /// The platform was briefly unavailable: worth retrying after a while
    /// (minutes), not at once.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            FailureCode::StorageUnavailable | FailureCode::DatabaseUnavailable
        )
    }

    /// The tenant-facing description: the fixed message of the code.
    pub fn public(self) -> PublicError {
        PublicError {
            code: self.as_str().to_string(),
            message: self.message().to_string(),
        }
    }
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest message of a kind's own error shown to tenants (the whole
/// text stays in the attempt history).
pub const MAX_PUBLIC_MESSAGE_CHARS: usize = 1000;

/// What a tenant sees of a failed attempt: `{"code", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublicError {
    /// Stable: `job_failed`, `storage_unavailable`, `storage_error`,
    /// `storage_not_configured`, `database_unavailable`, `internal_error`,
    /// `timed_out`, `worker_lost`.
    #[schema(example = "storage_unavailable")]
    pub code: String,
    #[schema(example = "The object store did not answer or was unavailable.")]
    pub message: String,
}

impl PublicError {
    /// A kind's own error, shown as written (cut to
    /// [`MAX_PUBLIC_MESSAGE_CHARS`]).
    pub fn job_failed(message: &str) -> Self {
        let message = match message.char_indices().nth(MAX_PUBLIC_MESSAGE_CHARS) {
            Some((cut, _)) => format!("{}…", &message[..cut]),
            None => message.to_string(),
        };
        PublicError {
            code: FailureCode::JobFailed.as_str().to_string(),
            message,
        }
    }

    /// What a stored error without a code (written before codes existed)
    /// is shown as: nothing of its raw text.
    pub fn uncoded() -> Self {
        FailureCode::InternalError.public()
    }

    /// The pair as the stores keep it: `(code, message)`, each optional.
    pub fn from_columns(code: Option<String>, message: Option<String>) -> Option<Self> {
        let code = code?;
        let message = message.unwrap_or_else(|| {
            FailureCode::ALL
                .into_iter()
                .find(|known| known.as_str() == code)
                .map_or("The job failed.", FailureCode::message)
                .to_string()
        });
        Some(PublicError { code, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_only_outages_are_transient() {
        let names: std::collections::HashSet<_> =
            FailureCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), FailureCode::ALL.len());
        let transient: Vec<_> = FailureCode::ALL
            .into_iter()
            .filter(|c| c.is_transient())
            .collect();
        assert_eq!(
            transient,
            [
                FailureCode::StorageUnavailable,
                FailureCode::DatabaseUnavailable
            ]
        );
    }

    #[test]
    fn a_kinds_message_is_kept_but_cut() {
        let short = PublicError::job_failed("bad input");
        assert_eq!(short.code, "job_failed");
        assert_eq!(short.message, "bad input");
        let long = PublicError::job_failed(&"é".repeat(5000));
        assert_eq!(long.message.chars().count(), MAX_PUBLIC_MESSAGE_CHARS + 1);
        assert!(long.message.ends_with('…'));
    }
}
