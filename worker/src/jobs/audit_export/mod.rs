//! `audit.export`: streams a tenant's audit events (a fixed time range and
//! filters) into one object-storage artifact, as CSV or NDJSON, gzip optional.
//!
//! Rows are read by keyset pagination on the audit log's primary key (a short
//! query per page, never OFFSET, never a long transaction), encoded as they
//! come, and written to a streaming upload. Each time a part is stored the job
//! saves a checkpoint: the cursor of the last row in it, the row count, and the
//! upload's state (id, parts, size, hash state). A later attempt resumes the
//! same upload from there; if the upload is gone it starts over. Memory holds
//! one page of rows and one part. A cancel aborts the upload; a shutdown or a
//! lost lease keeps it for the next attempt, and the artifact sweeper aborts it
//! if no attempt comes.

mod encode;
mod pages;

use async_trait::async_trait;
use chrono::Utc;
use longhaul_core::artifacts::records::NewArtifact;
use longhaul_core::artifacts::{
    artifact_key, Bytes, ObjectStore, StorageError, StoredObject, Upload,
};
use longhaul_core::audit::export::{
    self, ExportArtifact, ExportCheckpoint, ExportOutput, ExportParams, AUDIT_EXPORT,
    EXPORT_ARTIFACT,
};
use longhaul_core::audit::AuditCursor;
use longhaul_core::Progress;

pub use encode::{encode_row, header, Packer, CSV_HEADER};

use crate::context::JobContext;
use crate::handler::{JobError, KindHandler};
use crate::services::JobServices;
use pages::PageReader;

/// Rows read per query.
pub const PAGE_ROWS: u32 = 5000;

pub struct AuditExport {
    services: JobServices,
}

impl AuditExport {
    pub fn new(services: JobServices) -> Self {
        Self { services }
    }
}

/// Where an attempt starts.
struct Start {
    upload: Box<dyn Upload>,
    cursor: Option<AuditCursor>,
    rows_done: u64,
    rows_estimated: Estimate,
    resumed: bool,
}

/// The row count of the export: known (from the checkpoint), or being
/// counted beside the export (it scans the whole range, so it is not waited
/// for), or unknown (the count failed; progress then has no total).
enum Estimate {
    Known(u64),
    Counting(tokio::task::JoinHandle<longhaul_core::Result<u64>>),
    Unknown,
}

impl Drop for Estimate {
    fn drop(&mut self) {
        // A cancelled or failed export does not leave its count running.
        if let Estimate::Counting(handle) = self {
            handle.abort();
        }
    }
}

impl Estimate {
    /// The count once it is known; waits for it only if `wait`.
    async fn get(&mut self, wait: bool) -> Option<u64> {
        if let Estimate::Counting(handle) = self {
            if !wait && !handle.is_finished() {
                return None;
            }
            let counted = handle.await;
            *self = match counted {
                Ok(Ok(rows)) => Estimate::Known(rows),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "counting the export's rows failed; progress has no total");
                    Estimate::Unknown
                }
                Err(error) => {
                    tracing::warn!(%error, "the row count task failed");
                    Estimate::Unknown
                }
            };
        }
        match self {
            Estimate::Known(rows) => Some(*rows),
            _ => None,
        }
    }
}

#[async_trait]
impl KindHandler for AuditExport {
    type Kind = export::AuditExport;

    async fn run(&self, ctx: JobContext, params: ExportParams) -> Result<ExportOutput, JobError> {
        let tenant = self.services.stores.get_tenant(ctx.tenant_id()).await?;
        let store = self
            .services
            .artifacts
            .store(&tenant.region)
            .map_err(JobError::from)?;
        let key = artifact_key(
            &tenant.id,
            AUDIT_EXPORT,
            &ctx.job_id().to_string(),
            &params.file_name(),
        )
        .map_err(JobError::from)?;
        self.services
            .stores
            .begin_artifact(
                ctx.lease(),
                &NewArtifact {
                    job_id: ctx.job_id(),
                    name: EXPORT_ARTIFACT.into(),
                    tenant_id: tenant.id.clone(),
                    region: tenant.region.clone(),
                    object_key: key.clone(),
                    content_type: params.content_type().into(),
                },
            )
            .await?;
        let start = self.start(&ctx, &params, store.as_ref(), &key).await?;
        let resumed_from_row = start.rows_done;
        tracing::info!(resumed = start.resumed, resumed_from_row, key = %key, "exporting audit events");
        let mut upload = start.upload;
        match self
            .export(
                &ctx,
                &params,
                upload.as_mut(),
                start.cursor,
                start.rows_done,
                start.rows_estimated,
            )
            .await
        {
            Ok(rows) => {
                let stored = upload.complete().await.map_err(JobError::from)?;
                self.record_stored(
                    &ctx,
                    &tenant,
                    &params,
                    &stored,
                    &tenant.region,
                    rows,
                    resumed_from_row,
                )
                .await
            }
            Err(error) => {
                if ctx.cancel_requested() || error.is_permanent() {
                    // Nothing of a cancelled or failed export is kept.
                    if let Err(abort) = upload.abort().await {
                        tracing::warn!(error = %abort, "aborting the export's upload failed; the sweeper will");
                    }
                }
                Err(error)
            }
        }
    }
}

impl AuditExport {
    /// Resumes the saved upload, or starts from the first row.
    async fn start(
        &self,
        ctx: &JobContext,
        params: &ExportParams,
        store: &dyn ObjectStore,
        key: &str,
    ) -> Result<Start, JobError> {
        if let Some(saved) = ctx.checkpoint::<export::AuditExport>()? {
            if saved.upload.key == key {
                match store.resume_upload(&saved.upload).await {
                    Ok(upload) => {
                        let cursor = saved
                            .cursor
                            .as_deref()
                            .map(str::parse::<AuditCursor>)
                            .transpose()
                            .map_err(|e| {
                                JobError::permanent(format!("unreadable checkpoint: {e}"))
                            })?;
                        return Ok(Start {
                            upload,
                            cursor,
                            rows_done: saved.rows_done,
                            rows_estimated: saved
                                .rows_estimated
                                .map_or(Estimate::Unknown, Estimate::Known),
                            resumed: true,
                        });
                    }
                    Err(StorageError::UploadGone { reason, .. }) => {
                        tracing::warn!(%reason, "the saved upload is gone; exporting from the first row");
                    }
                    Err(other) => return Err(other.into()),
                }
            }
        }
        // Uploads of earlier attempts that never saved a checkpoint.
        store.abort_uploads(key).await.map_err(JobError::from)?;
        let (stores, tenant_id, filter) = (
            self.services.stores.clone(),
            ctx.tenant_id().to_string(),
            params.filter(),
        );
        let rows_estimated = Estimate::Counting(tokio::spawn(async move {
            stores.count_audit_events(&tenant_id, &filter).await
        }));
        let upload = store.start_upload(key).await.map_err(JobError::from)?;
        Ok(Start {
            upload,
            cursor: None,
            rows_done: 0,
            rows_estimated,
            resumed: false,
        })
    }

    /// Streams the rows after `cursor` into the upload; the number of rows
    /// the whole file holds.
    async fn export(
        &self,
        ctx: &JobContext,
        params: &ExportParams,
        upload: &mut dyn Upload,
        mut cursor: Option<AuditCursor>,
        mut rows_done: u64,
        mut rows_estimated: Estimate,
    ) -> Result<u64, JobError> {
        let reader = PageReader::new(
            self.services.stores.clone(),
            ctx.tenant_id(),
            params.filter(),
            params.format,
            PAGE_ROWS,
        );
        let mut packer = Packer::new(params.gzip);
        let mut pending = reader.start(cursor);
        let mut header = (rows_done == 0 && upload.written() == 0).then(|| header(params.format));
        loop {
            // A stop (cancel, shutdown, lost lease) is obeyed at once, even in
            // the middle of a slow read or part upload.
            let page = tokio::select! {
                biased;
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
                page = pending.wait() => page?,
            };
            if page.last.is_some() {
                cursor = page.last;
            }
            let last_page = page.rows < PAGE_ROWS as usize;
            if !last_page {
                pending = reader.start(cursor);
            }
            rows_done += page.rows as u64;
            let bytes = match header.take() {
                Some(mut first) => {
                    first.extend_from_slice(&page.bytes);
                    first
                }
                None => page.bytes,
            };
            let mut out = packer.pack(bytes).map_err(JobError::permanent)?;
            // A part is stored when the buffer reaches the part size: end
            // the gzip member first, so every stored part ends a member and a
            // resumed attempt can start the next one.
            if last_page || upload.buffered() + out.len() as u64 >= upload.part_size() as u64 {
                out.extend(packer.end_member().map_err(JobError::permanent)?);
            }
            let stored = tokio::select! {
                biased;
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
                stored = upload.write(Bytes::from(out)) => stored.map_err(JobError::from)?,
            };
            // The last progress has the total, however long the count took.
            let estimate = tokio::select! {
                biased;
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
                estimate = rows_estimated.get(last_page) => estimate,
            };
            if let Some(state) = stored {
                ctx.save_checkpoint::<export::AuditExport>(&ExportCheckpoint {
                    cursor: cursor.map(|c| c.to_string()),
                    rows_done,
                    rows_estimated: estimate,
                    upload: state,
                })
                .await?;
            }
            ctx.progress(Progress {
                current: rows_done,
                total: estimate.map(|rows| rows.max(rows_done)),
                unit: Some("rows".into()),
                message: None,
            })
            .await?;
            if last_page {
                return Ok(rows_done);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_stored(
        &self,
        ctx: &JobContext,
        tenant: &longhaul_core::tenancy::Tenant,
        params: &ExportParams,
        stored: &StoredObject,
        region: &str,
        rows: u64,
        resumed_from_row: u64,
    ) -> Result<ExportOutput, JobError> {
        let retention = tenant.artifact_retention(self.services.artifact_retention);
        let expires_at =
            Utc::now() + chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
        self.services
            .stores
            .store_artifact(
                ctx.lease(),
                EXPORT_ARTIFACT,
                stored.size,
                &stored.sha256,
                expires_at,
            )
            .await?;
        crate::telemetry::artifact_stored(AUDIT_EXPORT, stored.size);
        Ok(ExportOutput {
            rows,
            resumed_from_row,
            artifact: ExportArtifact {
                name: EXPORT_ARTIFACT.to_string(),
                file_name: params.file_name(),
                content_type: params.content_type().to_string(),
                region: region.to_string(),
                size: stored.size,
                sha256: stored.sha256.clone(),
                expires_at,
            },
        })
    }
}
