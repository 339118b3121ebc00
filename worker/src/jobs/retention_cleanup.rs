//! `audit.retention_cleanup`: one run of one retention policy over a
//! tenant's audit log (stored events and job transitions), in bounded
//! batches, each deleted in its own short transaction; data-bucket
//! policies go to `retention_objects.rs`.
//!
//! Without archiving, a run walks the expired events by keyset on the
//! primary key and deletes, per batch of 5,000, those the policy covers and
//! no hold protects (the store re-checks the holds inside the delete's
//! transaction). The checkpoint after each batch is the last key.
//!
//! With archiving, nothing is deleted before the archive is stored: the run
//! first writes the events it would delete to a gzipped NDJSON artifact (a
//! resumable multipart upload; a checkpoint per stored part, as exports do,
//! so a resumed attempt writes nothing twice), completes it, and only then
//! deletes, reading the keys back from the stored archive: what is deleted
//! is exactly what the archive holds (minus what a hold placed meanwhile
//! protects), whatever was written to the log in between. A dry run walks
//! and counts and changes nothing.

use std::io::{BufRead, BufReader};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flate2::read::MultiGzDecoder;
use longhaul_core::artifacts::records::NewArtifact;
use longhaul_core::artifacts::{artifact_key, Bytes, ObjectStore, StorageError, Upload};
use longhaul_core::audit::export::ExportFormat;
use longhaul_core::audit::{AuditCursor, AuditFilter, Order};
use longhaul_core::retention::{
    CleanupArchive, CleanupCheckpoint, CleanupCounts, CleanupOutput, CleanupParams, CleanupPhase,
    EventFacts, ExpiredEvent, Holds, PolicyTarget, RetentionCleanup as Kind, Selection,
    RETENTION_CLEANUP,
};
use longhaul_core::tenancy::Tenant;
use longhaul_core::Progress;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::audit_export::{encode_row, Packer};
use super::retention_objects::clean_objects;
use crate::context::JobContext;
use crate::handler::{JobError, KindHandler};
use crate::services::JobServices;

/// Events read (and deleted) per batch.
pub const BATCH: u32 = 5000;
/// The artifact name of a run's archive.
pub const ARCHIVE_ARTIFACT: &str = "archive";

pub struct RetentionCleanup {
    services: JobServices,
}

impl RetentionCleanup {
    pub fn new(services: JobServices) -> Self {
        Self { services }
    }
}

#[async_trait]
impl KindHandler for RetentionCleanup {
    type Kind = Kind;

    async fn run(&self, ctx: JobContext, params: CleanupParams) -> Result<CleanupOutput, JobError> {
        let selection = params.selection().map_err(JobError::from)?;
        let mut state = match ctx.checkpoint::<Kind>()? {
            Some(saved) => saved,
            None => CleanupCheckpoint {
                phase: if params.archive && !params.dry_run {
                    CleanupPhase::Archiving
                } else {
                    CleanupPhase::Deleting
                },
                cursor: None,
                seen_at: Utc::now(),
                hold_ids: Vec::new(),
                counts: CleanupCounts::default(),
                upload: None,
                archive: None,
                expiring: Vec::new(),
            },
        };
        tracing::info!(
            policy_id = %params.policy_id,
            dry_run = params.dry_run,
            archive = params.archive,
            cutoff = %params.cutoff,
            phase = ?state.phase,
            "retention cleanup"
        );
        if params.target == PolicyTarget::DataBuckets {
            clean_objects(&self.services, &ctx, &params, &mut state).await?;
        } else if params.dry_run {
            self.walk(&ctx, &params, &selection, &mut state, false)
                .await?;
            if params.archive {
                state.counts.events_archived = state.counts.events_deleted;
            }
        } else {
            if state.phase == CleanupPhase::Archiving {
                let tenant = self.services.stores.get_tenant(ctx.tenant_id()).await?;
                self.archive(&ctx, &params, &selection, &tenant, &mut state)
                    .await?;
            }
            match state.archive.clone() {
                Some(archive) => {
                    let tenant = self.services.stores.get_tenant(ctx.tenant_id()).await?;
                    self.delete_archived(&ctx, &tenant, &archive, &mut state)
                        .await?;
                }
                None => {
                    self.walk(&ctx, &params, &selection, &mut state, true)
                        .await?
                }
            }
        }
        Ok(CleanupOutput {
            counts: state.counts,
            archive: state.archive,
            expiring: state.expiring,
        })
    }
}

/// The events a batch covers and no hold protects.
fn doomed(
    batch: &[ExpiredEvent],
    selection: &Selection,
    holds: &Holds,
    counts: &mut CleanupCounts,
) -> Vec<ExpiredEvent> {
    let mut doomed = Vec::with_capacity(batch.len());
    for event in batch {
        counts.events_processed += 1;
        if !selection.covers_event(&event.facts()) {
            continue;
        }
        if holds.holds_event(&event.facts()) {
            counts.events_held += 1;
            continue;
        }
        doomed.push(event.clone());
    }
    doomed
}

/// The holds in force for the run now (active ones, and those it has
/// honoured before), remembered in its checkpoint for the rest of the run.
pub(crate) async fn holds_in_force(
    services: &JobServices,
    ctx: &JobContext,
    state: &mut CleanupCheckpoint,
) -> Result<Holds, JobError> {
    let holds = services
        .stores
        .legal_holds_in_force(ctx.tenant_id(), Utc::now(), &state.hold_ids)
        .await?;
    let holds = Holds::new(&holds).map_err(JobError::from)?;
    for id in holds.ids() {
        if !state.hold_ids.contains(&id) {
            state.hold_ids.push(id);
        }
    }
    Ok(holds)
}

impl RetentionCleanup {
    async fn report(
        &self,
        ctx: &JobContext,
        state: &CleanupCheckpoint,
        unit: &str,
    ) -> Result<(), JobError> {
        ctx.progress(Progress {
            current: state.counts.events_processed,
            total: None,
            unit: Some(unit.into()),
            message: None,
        })
        .await?;
        Ok(())
    }

    /// Walks the expired events from the checkpoint on; deletes what the
    /// policy covers unless `dry` (then only counts).
    async fn walk(
        &self,
        ctx: &JobContext,
        params: &CleanupParams,
        selection: &Selection,
        state: &mut CleanupCheckpoint,
        delete: bool,
    ) -> Result<(), JobError> {
        let stores = &self.services.stores;
        let read = |after: Option<AuditCursor>| {
            let (stores, tenant, cutoff) =
                (stores.clone(), ctx.tenant_id().to_string(), params.cutoff);
            AbortOnDropHandle::new(tokio::spawn(async move {
                stores
                    .expired_audit_events(&tenant, cutoff, after, BATCH)
                    .await
            }))
        };
        // The next batch is read while this one is deleted (disjoint keys).
        let mut pending = read(parse_cursor(state.cursor.as_deref())?);
        loop {
            if ctx.cancel_requested() {
                return Err(JobError::Cancelled);
            }
            let batch = pending
                .await
                .map_err(|e| JobError::retryable(format!("reading expired events: {e}")))??;
            let full = batch.len() == BATCH as usize;
            pending = read(batch.last().map(|last| last.cursor));
            let holds = holds_in_force(&self.services, ctx, state).await?;
            let doomed = doomed(&batch, selection, &holds, &mut state.counts);
            if delete {
                let deleted = stores
                    .delete_audit_events(ctx.tenant_id(), &doomed, Utc::now(), &state.hold_ids)
                    .await?;
                state.counts.events_deleted += deleted.events;
                state.counts.events_held += deleted.held;
                state.counts.bytes_reclaimed += deleted.bytes;
            } else {
                state.counts.events_deleted += doomed.len() as u64;
                state.counts.bytes_reclaimed += doomed.iter().map(|e| e.size).sum::<u64>();
            }
            if let Some(last) = batch.last() {
                state.cursor = Some(last.cursor.to_string());
            }
            if delete {
                ctx.save_checkpoint::<Kind>(state).await?;
            }
            self.report(ctx, state, "events").await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Writes what the run will delete to the archive and stores it.
    async fn archive(
        &self,
        ctx: &JobContext,
        params: &CleanupParams,
        selection: &Selection,
        tenant: &Tenant,
        state: &mut CleanupCheckpoint,
    ) -> Result<(), JobError> {
        let stores = &self.services.stores;
        let store = self
            .services
            .artifacts
            .store(&tenant.region)
            .map_err(JobError::from)?;
        let file_name = format!("audit-archive-{}.ndjson.gz", params.cutoff.format("%Y%m%d"));
        let key = artifact_key(
            &tenant.id,
            RETENTION_CLEANUP,
            &ctx.job_id().to_string(),
            &file_name,
        )
        .map_err(JobError::from)?;
        stores
            .begin_artifact(
                ctx.lease(),
                &NewArtifact {
                    job_id: ctx.job_id(),
                    name: ARCHIVE_ARTIFACT.into(),
                    tenant_id: tenant.id.clone(),
                    region: tenant.region.clone(),
                    object_key: key.clone(),
                    content_type: "application/gzip".into(),
                },
            )
            .await?;
        let mut upload = self.open_upload(store.as_ref(), &key, state).await?;
        let mut packer = Packer::new(true);
        let filter = AuditFilter {
            to: Some(params.cutoff),
            ..AuditFilter::default()
        };
        let result: Result<(), JobError> = async {
            loop {
                if ctx.cancel_requested() {
                    return Err(JobError::Cancelled);
                }
                let holds = holds_in_force(&self.services, ctx, state).await?;
                let cursor = parse_cursor(state.cursor.as_deref())?;
                let mut bytes = Vec::new();
                let mut last = None;
                let mut counts = state.counts.clone();
                let rows = stores
                    .scan_audit_events(
                        ctx.tenant_id(),
                        &filter,
                        cursor,
                        Order::OldestFirst,
                        BATCH,
                        &mut |event| {
                            last = Some(event.cursor());
                            counts.events_processed += 1;
                            let facts = EventFacts {
                                action: event.action,
                                source: event.source,
                                resource_id: event.resource_id,
                            };
                            if selection.covers_event(&facts) {
                                if holds.holds_event(&facts) {
                                    counts.events_held += 1;
                                } else {
                                    encode_row(ExportFormat::Json, event, &mut bytes).map_err(
                                        |e| longhaul_core::Error::corrupt("archiving an event", e),
                                    )?;
                                    counts.events_archived += 1;
                                }
                            }
                            Ok(())
                        },
                    )
                    .await?;
                let last_page = rows < BATCH as usize;
                let mut out = packer.pack(bytes).map_err(JobError::permanent)?;
                if last_page || upload.buffered() + out.len() as u64 >= upload.part_size() as u64 {
                    out.extend(packer.end_member().map_err(JobError::permanent)?);
                }
                let stored = upload
                    .write(Bytes::from(out))
                    .await
                    .map_err(JobError::from)?;
                state.counts = counts;
                if let Some(last) = last {
                    state.cursor = Some(last.to_string());
                }
                if let Some(upload_state) = stored {
                    state.upload = Some(upload_state);
                    ctx.save_checkpoint::<Kind>(state).await?;
                }
                self.report(ctx, state, "events").await?;
                if last_page {
                    return Ok(());
                }
            }
        }
        .await;
        if let Err(error) = result {
            if ctx.cancel_requested() || error.is_permanent() {
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(error = %abort, "aborting the archive's upload failed; the sweeper will");
                }
            }
            return Err(error);
        }
        let stored = upload.complete().await.map_err(JobError::from)?;
        let retention = tenant.artifact_retention(self.services.artifact_retention);
        let expires_at =
            Utc::now() + chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
        stores
            .store_artifact(
                ctx.lease(),
                ARCHIVE_ARTIFACT,
                stored.size,
                &stored.sha256,
                expires_at,
            )
            .await?;
        crate::telemetry::artifact_stored(RETENTION_CLEANUP, stored.size);
        state.archive = Some(CleanupArchive {
            name: ARCHIVE_ARTIFACT.to_string(),
            file_name,
            size: stored.size,
            sha256: stored.sha256,
            events: state.counts.events_archived,
            expires_at,
        });
        state.phase = CleanupPhase::Deleting;
        state.cursor = None;
        state.upload = None;
        ctx.save_checkpoint::<Kind>(state).await?;
        Ok(())
    }

    /// The saved upload, resumed; or a new one (every count of the phase
    /// starts over with it).
    async fn open_upload(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        state: &mut CleanupCheckpoint,
    ) -> Result<Box<dyn Upload>, JobError> {
        if let Some(saved) = state.upload.clone().filter(|saved| saved.key == key) {
            match store.resume_upload(&saved).await {
                Ok(upload) => return Ok(upload),
                Err(StorageError::UploadGone { reason, .. }) => {
                    tracing::warn!(%reason, "the archive's upload is gone; archiving from the first event");
                }
                Err(other) => return Err(other.into()),
            }
        }
        store.abort_uploads(key).await.map_err(JobError::from)?;
        state.cursor = None;
        state.upload = None;
        state.counts = CleanupCounts::default();
        store.start_upload(key).await.map_err(JobError::from)
    }

    /// Deletes the events the stored archive holds, batch by batch; the
    /// checkpoint counts the archive's lines done.
    async fn delete_archived(
        &self,
        ctx: &JobContext,
        tenant: &Tenant,
        archive: &CleanupArchive,
        state: &mut CleanupCheckpoint,
    ) -> Result<(), JobError> {
        let stores = &self.services.stores;
        let store = self
            .services
            .artifacts
            .store(&tenant.region)
            .map_err(JobError::from)?;
        let key = artifact_key(
            &tenant.id,
            RETENTION_CLEANUP,
            &ctx.job_id().to_string(),
            &archive.file_name,
        )
        .map_err(JobError::from)?;
        let mut lines_done: u64 = match state.cursor.as_deref() {
            Some(text) => text
                .parse()
                .map_err(|_| JobError::permanent(format!("unreadable checkpoint line {text:?}")))?,
            None => 0,
        };
        let reader = store.read(&key).await.map_err(JobError::from)?;
        let mut batches = archived_batches(reader, lines_done);
        loop {
            let batch = tokio::select! {
                biased;
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
                batch = batches.recv() => batch,
            };
            let Some(batch) = batch else {
                return Ok(());
            };
            let batch =
                batch.map_err(|e| JobError::permanent(format!("reading the archive back: {e}")))?;
            let deleted = stores
                .delete_audit_events(ctx.tenant_id(), &batch, Utc::now(), &state.hold_ids)
                .await?;
            state.counts.events_deleted += deleted.events;
            state.counts.events_held += deleted.held;
            state.counts.bytes_reclaimed += deleted.bytes;
            lines_done += batch.len() as u64;
            state.cursor = Some(lines_done.to_string());
            ctx.save_checkpoint::<Kind>(state).await?;
            ctx.progress(Progress {
                current: lines_done,
                total: Some(archive.events.max(lines_done)),
                unit: Some("events".into()),
                message: Some("deleting archived events".into()),
            })
            .await?;
        }
    }
}

fn parse_cursor(text: Option<&str>) -> Result<Option<AuditCursor>, JobError> {
    text.map(str::parse::<AuditCursor>)
        .transpose()
        .map_err(|e| JobError::permanent(format!("unreadable checkpoint: {e}")))
}

/// What deleting needs of an archived event (a line of the archive).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchivedEvent<'a> {
    id: &'a str,
    occurred_at: DateTime<Utc>,
    source: String,
    action: String,
    actor_id: Option<String>,
    resource_id: Option<String>,
    #[serde(borrow)]
    details: &'a serde_json::value::RawValue,
}

/// An archive line as the event to delete.
pub fn archived_event(line: &str) -> Result<ExpiredEvent, String> {
    let event: ArchivedEvent<'_> =
        serde_json::from_str(line).map_err(|e| format!("an archive line: {e}"))?;
    let id = event
        .id
        .strip_prefix("aud_")
        .and_then(|hex| Uuid::try_parse(hex).ok())
        .ok_or_else(|| format!("an archive line's id {:?}", event.id))?;
    // Job transitions' ids are their job_events id in the low 64 bits.
    let transition = (id.as_u128() >> 63 == 0).then(|| id.as_u128() as i64);
    let size = 40
        + event.action.len()
        + event.actor_id.as_deref().map_or(0, str::len)
        + event.resource_id.as_deref().map_or(0, str::len)
        + event.details.get().len();
    Ok(ExpiredEvent {
        cursor: AuditCursor {
            occurred_at: event.occurred_at,
            id,
        },
        transition,
        recorded_at: event.occurred_at,
        source: event.source,
        action: event.action,
        resource_id: event.resource_id,
        size: size as u64,
    })
}

/// The archive's events after the first `skip` lines, in batches, read on
/// a blocking thread (gzip is synchronous) as the deletes go.
fn archived_batches(
    reader: longhaul_core::artifacts::ObjectReader,
    skip: u64,
) -> mpsc::Receiver<Result<Vec<ExpiredEvent>, String>> {
    let (sender, receiver) = mpsc::channel(2);
    let bridge = SyncIoBridge::new(reader.body);
    tokio::task::spawn_blocking(move || {
        let lines = BufReader::new(MultiGzDecoder::new(BufReader::new(bridge))).lines();
        let mut batch = Vec::with_capacity(BATCH as usize);
        for (index, line) in lines.enumerate() {
            if (index as u64) < skip {
                continue;
            }
            let event = line
                .map_err(|e| e.to_string())
                .and_then(|line| archived_event(&line));
            match event {
                Ok(event) => batch.push(event),
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            }
            if batch.len() == BATCH as usize
                && sender
                    .blocking_send(Ok(std::mem::take(&mut batch)))
                    .is_err()
            {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = sender.blocking_send(Ok(batch));
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_lines_name_stored_events_and_job_transitions() {
        let stored = archived_event(
            r#"{"id":"aud_0193a0b1c2d37e4f8a9b0c1d2e3f4a5b","tenantId":"t","occurredAt":"2025-01-02T03:04:05.000006Z","recordedAt":"2025-01-02T03:04:05Z","source":"application","actorType":"user","actorId":"u1","action":"user.login","resourceId":"r1","details":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(stored.transition, None);
        assert_eq!(stored.action, "user.login");
        assert_eq!(stored.size, 40 + 10 + 2 + 2 + 7);
        let transition = archived_event(
            r#"{"id":"aud_0000000000000000000000000000002a","tenantId":"t","occurredAt":"2025-01-02T03:04:05Z","recordedAt":"2025-01-02T03:04:05Z","source":"system","actorType":"system","action":"job.succeeded","resourceType":"job","resourceId":"job_0193a0b1c2d37e4f8a9b0c1d2e3f4a5b","details":{"attempt":1}}"#,
        )
        .unwrap();
        assert_eq!(transition.transition, Some(42));
        assert!(archived_event("{}").is_err());
        assert!(archived_event(r#"{"id":"x"}"#).is_err());
    }
}
