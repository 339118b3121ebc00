//! Object storage for job artifacts: one [`ObjectStore`] trait with a local
//! folder backend (`longhaul dev`) and an S3 backend; uploads that stream with
//! bounded memory (one part buffered), record sha256 and size as they go, and
//! can be resumed by a later attempt from a saved [`UploadState`]; streamed and
//! ranged reads, delete and list by prefix; the key layout
//! `tenants/<tenant>/<kind>/<job>/<name>` that ties an artifact to its job.

pub mod download_token;
pub mod hashing;
pub mod local;
pub mod records;
pub mod regions;
pub mod s3;

use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use bytes::Bytes;
pub use download_token::{DownloadGrant, DownloadSigner, TokenError};
pub use hashing::{HashState, ResumableSha256};
pub use local::LocalStore;
pub use regions::{ArtifactStores, DownloadLink};
pub use s3::{S3Config, S3Store, S3Timeouts};

/// S3 refuses parts under 5 MiB (except the last), so the S3 backend never
/// sends less; the local backend accepts any part size.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// The part size both backends use unless told otherwise.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

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

    /// A saved upload cannot be resumed (it was aborted, completed or swept,
    /// or its saved state is damaged): start a new upload from the beginning.
    #[error("upload of {key:?} cannot be resumed: {reason}")]
    UploadGone { key: String, reason: String },

    #[error("local object store: {context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The S3 service refused or failed a request (access denied, a missing
    /// bucket, a malformed answer); the message carries the SDK's full error
    /// context.
    #[error("S3 {operation}: {message}")]
    S3 {
        operation: &'static str,
        message: String,
    },

    /// The object store did not answer in time (the S3 client's connect,
    /// read or attempt timeout), the connection was refused or reset, or it
    /// answered that it is overloaded or failing (5xx, throttling): the same
    /// request may well succeed in a while. The message carries the full
    /// error context.
    #[error("S3 {operation} unavailable: {message}")]
    Unavailable {
        operation: &'static str,
        message: String,
    },

    /// The configuration names no store for a tenant's region.
    #[error("no artifact storage is configured for region {0:?}")]
    NoRegion(String),
}

impl StorageError {
    /// Whether the store was only briefly unavailable ([`StorageError::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }
}

/// A completed upload: what the job records as its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// When the object was last written, where the store says (retention
    /// of data buckets expires objects by it).
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A part already stored by an upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadedPart {
    pub number: i32,
    /// The S3 ETag (None on the local store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub size: u64,
}

/// Where an upload stands after its last stored part: everything written
/// before that part's end is stored. A job saves it in its checkpoint, beside
/// its own cursor, and a later attempt hands it to
/// [`ObjectStore::resume_upload`] to go on from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadState {
    pub key: String,
    /// The S3 multipart upload id, or the local temp file's id.
    pub upload_id: String,
    pub parts: Vec<UploadedPart>,
    /// Bytes stored so far (the sum of the parts).
    pub size: u64,
    /// The sha256 of those bytes, resumable.
    pub sha256: HashState,
}

impl UploadState {
    /// The state of an upload whose stored parts hold `stored` bytes hashed
    /// by `hasher`.
    pub(crate) fn at(
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        stored: u64,
        hasher: &ResumableSha256,
    ) -> Self {
        UploadState {
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            parts: parts.to_vec(),
            size: stored,
            sha256: hasher.save(),
        }
    }

    /// The upload cannot go on from this state.
    pub(crate) fn gone(&self, reason: impl Into<String>) -> StorageError {
        StorageError::UploadGone {
            key: self.key.clone(),
            reason: reason.into(),
        }
    }

    /// The hash of the stored bytes, if the saved state is consistent (the
    /// hash covers `size` bytes, and so do the parts).
    pub(crate) fn restore_hasher(&self) -> Result<ResumableSha256> {
        ResumableSha256::restore(&self.sha256)
            .filter(|h| h.len() == self.size)
            .filter(|_| self.parts.iter().map(|p| p.size).sum::<u64>() == self.size)
            .ok_or_else(|| self.gone("the saved state is damaged"))
    }
}

/// An object's bytes as a stream, for serving downloads without holding the
/// object in memory.
pub struct ObjectReader {
    pub size: u64,
    pub body: Pin<Box<dyn tokio::io::AsyncRead + Send>>,
}

/// An upload in progress. Nothing is visible under its key until
/// [`Upload::complete`]; [`Upload::abort`] leaves nothing behind, neither an
/// object nor (S3) pending parts. A failed write or complete leaves the upload
/// as its last answered state: the caller resumes it later or aborts it (and
/// the artifact sweeper aborts uploads whose job is over).
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes. Once a part's worth is buffered, the whole buffer is
    /// stored as one part (so memory stays near one part whatever the
    /// writes' sizes) and the answer is the upload's state: everything written
    /// so far is stored and a later attempt may resume from it.
    async fn write(&mut self, bytes: Bytes) -> Result<Option<UploadState>>;
    /// Bytes written so far (stored or buffered).
    fn written(&self) -> u64;
    /// Bytes written but not yet stored in a part.
    fn buffered(&self) -> u64;
    /// A write that brings [`Upload::buffered`] to this stores a part.
    fn part_size(&self) -> usize;
    /// Sends the last part and publishes the object.
    async fn complete(self: Box<Self>) -> Result<StoredObject>;
    /// Discards everything uploaded so far.
    async fn abort(self: Box<Self>) -> Result<()>;
}

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Starts a streaming upload to `key` (see [`validate_key`]).
    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>>;
    /// Goes on with an upload from a state one of its writes answered; bytes
    /// written after that state are dropped. [`StorageError::UploadGone`]
    /// when the upload no longer exists.
    async fn resume_upload(&self, state: &UploadState) -> Result<Box<dyn Upload>>;
    /// Discards every upload in progress to `key` (attempts that died left
    /// them behind); none being there is not an error.
    async fn abort_uploads(&self, key: &str) -> Result<()>;
    /// The bytes `range` of the object; the range must lie within it.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// The whole object (for small objects; stream large ones with `read`).
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// The object as a stream.
    async fn read(&self, key: &str) -> Result<ObjectReader>;
    /// Deletes the object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// A link the client can fetch the object from directly, valid for
    /// `expires_in` (S3: presigned GET). None when the store has no links of
    /// its own (the local store: the API serves a signed token instead).
    async fn presigned_url(&self, key: &str, expires_in: Duration) -> Result<Option<String>>;
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

pub(crate) fn validate_component(part: &str) -> Result<()> {
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
