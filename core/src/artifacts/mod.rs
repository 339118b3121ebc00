//! Object storage for job artifacts: one [`ObjectStore`] trait with a local
//! folder backend (`longhaul dev`) and an S3 backend, streaming multipart
//! uploads with bounded memory (one part buffered), sha256 and size recorded
//! while streaming, ranged reads, delete and list by prefix; and the key layout
//! `tenants/<tenant>/<kind>/<job>/<name>` that ties an artifact to its job.

pub mod local;
pub mod s3;

use std::ops::Range;

use async_trait::async_trait;

pub use bytes::Bytes;
pub use local::LocalStore;
pub use s3::{S3Config, S3Store};

/// S3 refuses parts under 5 MiB (except the last), so no backend buffers less.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A key or key component that could escape its prefix or is malformed.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    #[error("object {0:?} not found")]
    NotFound(String),

    /// The requested byte range does not lie within the object.
    #[error("range {start}..{end} is outside object {key:?} of {size} bytes")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },

    #[error("local object store: {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The S3 service (or the network to it) failed; the message carries the
    /// SDK's full error context.
    #[error("S3 {operation}: {message}")]
    S3 {
        operation: &'static str,
        message: String,
    },
}

/// A completed upload: what the job records as its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    /// Lower-case hex sha256 of the whole object, computed while streaming.
    pub sha256: String,
}

/// One entry of [`ObjectStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// An upload in progress. Nothing is visible under its key until
/// [`Upload::complete`]; [`Upload::abort`] (or a failed part) leaves nothing
/// behind, neither an object nor (S3) pending parts.
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes; a part is sent once a full part has been buffered, so at
    /// most one part is held in memory.
    async fn put_part(&mut self, bytes: Bytes) -> Result<()>;
    /// Sends the last part and publishes the object.
    async fn complete(self: Box<Self>) -> Result<StoredObject>;
    /// Discards everything uploaded so far.
    async fn abort(self: Box<Self>) -> Result<()>;
}

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Starts a streaming upload to `key` (see [`validate_key`]).
    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>>;
    /// The bytes `range` of the object; the range must lie within it.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// The whole object (for small objects; stream large ones by ranges).
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Deletes the object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
}

/// The key of an artifact: `tenants/<tenant>/<kind>/<job>/<name>`. Each
/// component must be non-empty and free of `/`, NUL and `.`/`..`.
pub fn artifact_key(tenant_id: &str, kind: &str, job_id: &str, name: &str) -> Result<String> {
    for part in [tenant_id, kind, job_id, name] {
        validate_component(part)?;
    }
    Ok(format!("tenants/{tenant_id}/{kind}/{job_id}/{name}"))
}

/// The prefix under which all of a job's artifacts live (for delete/list).
pub fn job_prefix(tenant_id: &str, kind: &str, job_id: &str) -> Result<String> {
    for part in [tenant_id, kind, job_id] {
        validate_component(part)?;
    }
    Ok(format!("tenants/{tenant_id}/{kind}/{job_id}/"))
}

fn validate_component(part: &str) -> Result<()> {
    let bad = |reason| {
        Err(StorageError::InvalidKey {
            key: part.to_string(),
            reason,
        })
    };
    if part.is_empty() {
        return bad("a key component is empty");
    }
    if part.contains('/') || part.contains('\\') {
        return bad("a key component contains a path separator");
    }
    if part.contains('\0') {
        return bad("a key contains NUL");
    }
    if part == "." || part == ".." {
        return bad("a key component is . or ..");
    }
    Ok(())
}

/// Every key a store accepts: relative (no leading `/`), `/`-separated
/// non-empty components, none `.` or `..`, no NUL or backslash.
pub fn validate_key(key: &str) -> Result<()> {
    if key.starts_with('/') {
        return Err(StorageError::InvalidKey {
            key: key.to_string(),
            reason: "a key must not start with /",
        });
    }
    for part in key.split('/') {
        validate_component(part).map_err(|_| StorageError::InvalidKey {
            key: key.to_string(),
            reason: "a key needs non-empty components without NUL, \\, . or ..",
        })?;
    }
    Ok(())
}

/// Validates a list prefix: like a key, but it may be empty or end with `/`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return if prefix.is_empty() {
            Ok(())
        } else {
            Err(StorageError::InvalidKey {
                key: prefix.to_string(),
                reason: "a prefix must not start with /",
            })
        };
    }
    validate_key(trimmed)
}

pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_keys_are_laid_out_and_validated() {
        assert_eq!(
            artifact_key("t1", "audit.export", "job_1", "export.csv").unwrap(),
            "tenants/t1/audit.export/job_1/export.csv"
        );
        for bad in ["", "..", ".", "a/b", "a\0b", "/x", "a\\b"] {
            assert!(artifact_key("t1", "k", "j", bad).is_err(), "{bad:?}");
            assert!(artifact_key(bad, "k", "j", "n").is_err(), "{bad:?}");
        }
        assert!(validate_key("/tenants/x").is_err());
        assert!(validate_key("tenants/../x").is_err());
        assert!(validate_key("tenants//x").is_err());
        assert!(validate_key("tenants/t/k/j/n").is_ok());
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("tenants/t/").is_ok());
        assert!(validate_prefix("/").is_err());
        assert!(validate_prefix("../").is_err());
    }
}
