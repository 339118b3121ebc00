//! The S3 object store (aws-sdk-s3 over one rustls+ring HTTP client): uploads
//! are S3 multipart uploads fed one buffered part at a time, sha256 computed
//! while streaming; a failed part keeps the upload for a later attempt to
//! resume (the job aborts it when it gives up, the artifact sweeper when the
//! job is gone); downloads are presigned GET links with an expiry.
//! Works with any S3-compatible server (endpoint URL + path-style option).
//! Every request is bounded by [`S3Timeouts`] (a stalled server is an
//! error, never a hang), and failures are told apart: the store being
//! unreachable, slow or overloaded is [`StorageError::Unavailable`]
//! (transient), anything else [`StorageError::S3`].

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use bytes::{Bytes, BytesMut};

use super::{
    validate_key, validate_prefix, ObjectInfo, ObjectReader, ObjectStore, Result, ResumableSha256,
    StorageError, StoredObject, Upload, UploadState, UploadedPart, DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
};

/// Where and how to reach one bucket (a region's bucket: a tenant's artifacts
/// go to the store of its region).
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// For S3-compatible servers; `None` is AWS itself.
    pub endpoint_url: Option<String>,
    /// `http://host/bucket/key` instead of `http://bucket.host/key`.
    pub force_path_style: bool,
    /// Static credentials; `None` uses the standard AWS chain (env, profile,
    /// web identity, instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Bytes buffered per part; raised to [`MIN_PART_SIZE`] if smaller.
    pub part_size: usize,
    pub timeouts: S3Timeouts,
}

/// How long the S3 client waits before it gives a request up. Each request
/// is tried up to three times by the SDK (its standard retry, with a short
/// back-off), so a store that stops answering fails an operation after about
/// three read (or attempt) timeouts; the job then retries it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S3Timeouts {
    /// To open a connection (TCP and TLS).
    pub connect: Duration,
    /// From sending a request until the first byte of its answer: includes
    /// sending the body, so a part upload must get through within it.
    pub read: Duration,
    /// One attempt of an operation, whole (with reading the answer).
    pub attempt: Duration,
}

impl Default for S3Timeouts {
    /// 5 s to connect, 30 s to the first byte of an answer, 2 min per
    /// attempt (ample for a 16 MiB part at 1 MB/s).
    fn default() -> Self {
        S3Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
            attempt: Duration::from_secs(120),
        }
    }
}

impl S3Config {
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: region.into(),
            endpoint_url: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            part_size: DEFAULT_PART_SIZE,
            timeouts: S3Timeouts::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    region: String,
    part_size: usize,
}

/// An error of the S3 SDK, told apart: no answer in time, a refused or reset
/// connection, an unreadable answer, or a 5xx / throttling answer is
/// [`StorageError::Unavailable`] (transient); the rest (access denied, no
/// such bucket, …) [`StorageError::S3`].
fn sdk_err<E>(operation: &'static str) -> impl FnOnce(SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |error| {
        let transient = match &error {
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
            SdkError::DispatchFailure(failure) => !failure.is_user(),
            SdkError::ServiceError(service) => {
                let status = service.raw().status();
                status.is_server_error()
                    || status.as_u16() == 429
                    || matches!(
                        service.err().code(),
                        Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout")
                    )
            }
            _ => false,
        };
        let timed_out = matches!(&error, SdkError::TimeoutError(_))
            || matches!(&error, SdkError::DispatchFailure(failure) if failure.is_timeout());
        let context = DisplayErrorContext(&error).to_string();
        if timed_out {
            StorageError::Unavailable {
                operation,
                message: format!("no answer within the S3 client's timeouts: {context}"),
            }
        } else if transient {
            StorageError::Unavailable {
                operation,
                message: context,
            }
        } else {
            StorageError::S3 {
                operation,
                message: context,
            }
        }
    }
}

/// Reading an answer's body failed midway (the connection broke or stalled):
/// transient.
fn body_err<E: std::error::Error>(operation: &'static str) -> impl FnOnce(E) -> StorageError {
    move |error| StorageError::Unavailable {
        operation,
        message: DisplayErrorContext(error).to_string(),
    }
}

impl S3Store {
    pub async fn connect(config: &S3Config) -> Result<Self> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.timeouts.connect)
            .read_timeout(config.timeouts.read)
            .operation_attempt_timeout(config.timeouts.attempt)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .region(Region::new(config.region.clone()));
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    id,
                    secret,
                    None,
                    None,
                    "longhaul-config",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(StorageError::S3 {
                    operation: "configure",
                    message: "set both the access key id and the secret access key, or neither"
                        .into(),
                })
            }
        }
        let shared = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .build();
        Ok(Self {
            client: Client::from_conf(s3),
            bucket: config.bucket.clone(),
            region: config.region.clone(),
            part_size: config.part_size.max(MIN_PART_SIZE),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket unless it exists already (for dev and tests; in
    /// production buckets are provisioned with their region's policies).
    pub async fn ensure_bucket(&self) -> Result<()> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        // Outside us-east-1, S3 wants the bucket's region spelled out.
        let location = (self.region != "us-east-1").then(|| {
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                .build()
        });
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .set_create_bucket_configuration(location)
            .send()
            .await
            .map_err(sdk_err("CreateBucket"))?;
        Ok(())
    }

    /// Keys of multipart uploads still pending under `prefix` (an aborted or
    /// completed upload is not pending; anything listed here costs storage).
    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .pending(prefix)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// The ids of multipart uploads pending to exactly `key`.
    async fn pending_upload_ids(&self, key: &str) -> Result<Vec<String>> {
        Ok(self
            .pending(key)
            .await?
            .into_iter()
            .filter(|(pending_key, _)| pending_key == key)
            .map(|(_, id)| id)
            .collect())
    }

    /// (key, upload id) of every pending multipart upload under `prefix`.
    async fn pending(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(sdk_err("ListMultipartUploads"))?;
            out.extend(
                page.uploads()
                    .iter()
                    .filter_map(|u| Some((u.key()?.to_string(), u.upload_id()?.to_string()))),
            );
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// A presigned GET link to the object, valid for `expires_in` (at most
    /// 7 days, S3's limit).
    pub async fn download_url(&self, key: &str, expires_in: Duration) -> Result<String> {
        validate_key(key)?;
        let presigning =
            PresigningConfig::expires_in(expires_in).map_err(|e| StorageError::S3 {
                operation: "presign",
                message: e.to_string(),
            })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(sdk_err("presign GetObject"))?;
        Ok(request.uri().to_string())
    }

    /// An upload handle on multipart upload `upload_id` of `key`, its
    /// `parts` (holding `stored` bytes hashed by `hasher`) already stored.
    fn upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<UploadedPart>,
        stored: u64,
        hasher: ResumableSha256,
    ) -> Box<dyn Upload> {
        Box::new(S3Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            part_size: self.part_size,
            buffer: BytesMut::with_capacity(self.part_size),
            parts,
            stored,
            hasher,
            broken: false,
        })
    }

    /// GetObject of `key` (a byte range, or all of it), not yet read.
    async fn send_get(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_no_such_key() => StorageError::NotFound(key.to_string()),
                _ => sdk_err("GetObject")(e),
            })
    }

    async fn get_object(&self, key: &str, range: Option<String>) -> Result<Bytes> {
        let out = self.send_get(key, range).await?;
        let body = out
            .body
            .collect()
            .await
            .map_err(body_err("GetObject body"))?;
        Ok(body.into_bytes())
    }

    async fn size_of(&self, key: &str) -> Result<u64> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(s) if s.is_not_found() => StorageError::NotFound(key.to_string()),
                _ => sdk_err("HeadObject")(e),
            })?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }
}

pub struct S3Upload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    part_size: usize,
    buffer: BytesMut,
    parts: Vec<UploadedPart>,
    /// Bytes in stored parts.
    stored: u64,
    hasher: ResumableSha256,
    /// A part failed: its bytes are lost to this handle, so it may not go on
    /// (resume from the last answered state instead).
    broken: bool,
}

impl S3Upload {
    /// Sends the buffer as the next part; a failure aborts the whole upload.
    async fn send_part(&mut self) -> Result<()> {
        let body = self.buffer.split().freeze();
        let size = body.len() as u64;
        let number = self.parts.len() as i32 + 1;
        let sent = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await;
        match sent {
            Ok(out) => {
                self.parts.push(UploadedPart {
                    number,
                    etag: out.e_tag().map(str::to_string),
                    size,
                });
                self.stored += size;
                Ok(())
            }
            Err(e) => {
                // Keep the upload: the parts stored so far are still good and
                // a later attempt resumes from the last saved state.
                self.broken = true;
                Err(sdk_err("UploadPart")(e))
            }
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(StorageError::S3 {
                operation: "UploadPart",
                message: "an earlier part of this upload failed; resume it from its last state"
                    .into(),
            });
        }
        Ok(())
    }

    fn state(&self) -> UploadState {
        UploadState::at(
            &self.key,
            &self.upload_id,
            &self.parts,
            self.stored,
            &self.hasher,
        )
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, bytes: Bytes) -> Result<Option<UploadState>> {
        self.check_usable()?;
        self.hasher.update(&bytes);
        self.buffer.extend_from_slice(&bytes);
        if self.buffer.len() < self.part_size {
            return Ok(None);
        }
        self.send_part().await?;
        Ok(Some(self.state()))
    }

    fn written(&self) -> u64 {
        self.hasher.len()
    }

    fn buffered(&self) -> u64 {
        self.hasher.len() - self.stored
    }

    fn part_size(&self) -> usize {
        self.part_size
    }

    async fn complete(mut self: Box<Self>) -> Result<StoredObject> {
        self.check_usable()?;
        // The last part may be short; an empty object still needs one part.
        if !self.buffer.is_empty() || self.parts.is_empty() {
            self.send_part().await?;
        }
        let parts = self
            .parts
            .iter()
            .map(|part| {
                CompletedPart::builder()
                    .set_e_tag(part.etag.clone())
                    .part_number(part.number)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_err("CompleteMultipartUpload"))?;
        let size = self.hasher.len();
        Ok(StoredObject {
            key: std::mem::take(&mut self.key),
            size,
            sha256: std::mem::take(&mut self.hasher).finalize_hex(),
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        abort_multipart(&self.client, &self.bucket, &self.key, &self.upload_id).await
    }
}

async fn abort_multipart(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
    let aborted = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    match aborted {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
        Err(e) => Err(sdk_err("AbortMultipartUpload")(e)),
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        validate_key(key)?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(sdk_err("CreateMultipartUpload"))?;
        let upload_id = out.upload_id().ok_or_else(|| StorageError::S3 {
            operation: "CreateMultipartUpload",
            message: "the response has no upload id".into(),
        })?;
        Ok(self.upload(key, upload_id, Vec::new(), 0, ResumableSha256::new()))
    }

    async fn resume_upload(&self, state: &UploadState) -> Result<Box<dyn Upload>> {
        validate_key(&state.key)?;
        let hasher = state.restore_hasher()?;
        // The upload must still be open (not aborted, completed or expired by
        // a lifecycle rule); parts stored after the saved state are replaced
        // by the next part numbers and left out of the completion.
        // (ListMultipartUploads rather than ListParts: S3-compatible servers
        // such as moto answer ListParts in a shape the SDK cannot parse.)
        if !self
            .pending_upload_ids(&state.key)
            .await?
            .contains(&state.upload_id)
        {
            return Err(state.gone("the multipart upload no longer exists"));
        }
        Ok(self.upload(
            &state.key,
            &state.upload_id,
            state.parts.clone(),
            state.size,
            hasher,
        ))
    }

    async fn abort_uploads(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        for upload_id in self.pending_upload_ids(key).await? {
            abort_multipart(&self.client, &self.bucket, key, &upload_id).await?;
        }
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<ObjectReader> {
        validate_key(key)?;
        let out = self.send_get(key, None).await?;
        Ok(ObjectReader {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            body: Box::pin(out.body.into_async_read()),
        })
    }

    async fn presigned_url(&self, key: &str, expires_in: Duration) -> Result<Option<String>> {
        self.download_url(key, expires_in).await.map(Some)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        validate_key(key)?;
        let size = self.size_of(key).await?;
        if range.start > range.end || range.end > size {
            return Err(StorageError::InvalidRange {
                key: key.to_string(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        self.get_object(
            key,
            Some(format!("bytes={}-{}", range.start, range.end - 1)),
        )
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        validate_key(key)?;
        self.get_object(key, None).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(sdk_err("DeleteObject"))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        validate_prefix(prefix)?;
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(sdk_err("ListObjectsV2"))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push(ObjectInfo {
                        key: key.to_string(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        last_modified: object.last_modified().and_then(|at| {
                            chrono::DateTime::from_timestamp(at.secs(), at.subsec_nanos())
                        }),
                    });
                }
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
