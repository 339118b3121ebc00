//! The data-bucket side of `audit.retention_cleanup`: objects of the
//! policy's buckets last modified before the cutoff (and, when the policy
//! names classifications, classified at one of those levels by the latest
//! scan) are deleted, archived (copied to the tenant's artifact store under
//! the run's prefix, then deleted) or only listed (`notify`), unless a legal
//! hold covers them. Buckets are walked in name order and objects in key
//! order, 100 at a time, with a checkpoint after each group; an archived
//! object is copied under a key fixed by its name, so an attempt that dies
//! between the copy and the delete copies it again over the same file.

use std::collections::HashMap;

use chrono::Utc;
use longhaul_core::artifacts::records::NewArtifact;
use longhaul_core::artifacts::{job_prefix, validate_key, Bytes, ObjectInfo, ObjectStore};
use longhaul_core::retention::matching::ScopeMatcher;
use longhaul_core::retention::{
    CleanupCheckpoint, CleanupParams, ExpiringObject, ObjectFacts, OnExpiry, RetentionCleanup,
    RETENTION_CLEANUP,
};
use longhaul_core::tenancy::Tenant;
use longhaul_core::Progress;
use sha2::{Digest, Sha256};

use super::retention_cleanup::holds_in_force;
use super::scanning::{data_bucket, objects_after};
use crate::context::JobContext;
use crate::handler::JobError;
use crate::services::JobServices;

/// Objects handled between checkpoints.
const GROUP: usize = 100;
/// Expiring objects a run lists in its result.
const MAX_LISTED: usize = 1000;

/// Where the walk stands: `<bucket index>` and the last key done there.
fn parse_cursor(cursor: Option<&str>) -> Result<(usize, Option<String>), JobError> {
    let Some(cursor) = cursor else {
        return Ok((0, None));
    };
    let (index, key) = cursor
        .split_once('\n')
        .ok_or_else(|| JobError::permanent(format!("unreadable checkpoint {cursor:?}")))?;
    let index = index
        .parse()
        .map_err(|_| JobError::permanent(format!("unreadable checkpoint {cursor:?}")))?;
    Ok((index, Some(key.to_string())))
}

/// Runs the policy over its buckets (see the module docs).
pub(crate) async fn clean_objects(
    services: &JobServices,
    ctx: &JobContext,
    params: &CleanupParams,
    state: &mut CleanupCheckpoint,
) -> Result<(), JobError> {
    let stores = &services.stores;
    let tenant = stores.get_tenant(ctx.tenant_id()).await?;
    let scope = ScopeMatcher::new(&params.scope).map_err(JobError::from)?;
    let mut buckets = params.scope.buckets.clone();
    buckets.sort();
    buckets.dedup();
    let (start, mut after) = parse_cursor(state.cursor.as_deref())?;
    for (index, name) in buckets.iter().enumerate().skip(start) {
        let store = data_bucket(services, &tenant, name).await?;
        let objects = objects_after(store.as_ref(), "", after.take().as_deref()).await?;
        for group in objects.chunks(GROUP) {
            if ctx.cancel_requested() {
                return Err(JobError::Cancelled);
            }
            let holds = holds_in_force(services, ctx, state).await?;
            let levels = levels_of(services, ctx, name, group).await?;
            let mut gone = Vec::new();
            let mut bytes = 0;
            for object in group {
                state.counts.objects_processed += 1;
                let expired = object.last_modified.is_some_and(|at| at < params.cutoff);
                let level = levels.get(&object.key).cloned().flatten();
                let facts = ObjectFacts {
                    bucket: name,
                    key: &object.key,
                    classification: level.as_deref(),
                };
                if !expired || !scope.covers_object(&facts) {
                    continue;
                }
                if holds.holds_object(&facts) {
                    state.counts.objects_held += 1;
                    continue;
                }
                if params.on_expiry == OnExpiry::Notify || params.dry_run {
                    if state.expiring.len() < MAX_LISTED {
                        state.expiring.push(ExpiringObject {
                            bucket: name.clone(),
                            key: object.key.clone(),
                            size: object.size,
                            last_modified: object.last_modified.unwrap_or(params.cutoff),
                            classification: level.clone(),
                        });
                    }
                    match params.on_expiry {
                        OnExpiry::Notify => state.counts.objects_notified += 1,
                        OnExpiry::Delete => state.counts.objects_deleted += 1,
                        OnExpiry::Archive => {
                            state.counts.objects_archived += 1;
                            state.counts.objects_deleted += 1;
                        }
                    }
                    continue;
                }
                if params.on_expiry == OnExpiry::Archive {
                    archive_object(services, ctx, &tenant, store.as_ref(), name, object).await?;
                    state.counts.objects_archived += 1;
                }
                store.delete(&object.key).await.map_err(JobError::from)?;
                state.counts.objects_deleted += 1;
                state.counts.bytes_reclaimed += object.size;
                bytes += object.size;
                gone.push(object.key.clone());
            }
            if !gone.is_empty() {
                stores
                    .forget_classified_objects(ctx.tenant_id(), name, &gone)
                    .await?;
                stores
                    .add_retention_savings(ctx.tenant_id(), gone.len() as u64, bytes)
                    .await?;
            }
            if let Some(last) = group.last() {
                state.cursor = Some(format!("{index}\n{}", last.key));
            }
            ctx.save_checkpoint::<RetentionCleanup>(state).await?;
            ctx.progress(Progress {
                current: state.counts.objects_processed,
                total: None,
                unit: Some("objects".into()),
                message: Some(format!("bucket {name}")),
            })
            .await?;
        }
        // The next bucket starts from its first key.
        state.cursor = Some(format!("{}\n", index + 1));
    }
    Ok(())
}

/// The latest classification level of each object of `group` (a key range
/// of one bucket).
async fn levels_of(
    services: &JobServices,
    ctx: &JobContext,
    bucket: &str,
    group: &[ObjectInfo],
) -> Result<HashMap<String, Option<String>>, JobError> {
    let (Some(first), Some(last)) = (group.first(), group.last()) else {
        return Ok(HashMap::new());
    };
    Ok(services
        .stores
        .classification_levels(ctx.tenant_id(), bucket, &first.key, &last.key)
        .await?
        .into_iter()
        .collect())
}

/// Copies an object into the run's artifacts (its own artifact row, named
/// by a digest of bucket and key, kept for the tenant's artifact retention).
async fn archive_object(
    services: &JobServices,
    ctx: &JobContext,
    tenant: &Tenant,
    bucket_store: &dyn ObjectStore,
    bucket: &str,
    object: &ObjectInfo,
) -> Result<(), JobError> {
    let artifacts = services
        .artifacts
        .store(&tenant.region)
        .map_err(JobError::from)?;
    let prefix = job_prefix(&tenant.id, RETENTION_CLEANUP, &ctx.job_id().to_string())
        .map_err(JobError::from)?;
    let key = format!("{prefix}objects/{bucket}/{}", object.key);
    validate_key(&key).map_err(JobError::from)?;
    let digest = Sha256::digest(format!("{bucket}\0{}", object.key).as_bytes());
    let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name = format!("object-{name}");
    services
        .stores
        .begin_artifact(
            ctx.lease(),
            &NewArtifact {
                job_id: ctx.job_id(),
                name: name.clone(),
                tenant_id: tenant.id.clone(),
                region: tenant.region.clone(),
                object_key: key.clone(),
                content_type: "application/octet-stream".into(),
            },
        )
        .await?;
    artifacts
        .abort_uploads(&key)
        .await
        .map_err(JobError::from)?;
    let mut upload = artifacts.start_upload(&key).await.map_err(JobError::from)?;
    let mut reader = bucket_store
        .read(&object.key)
        .await
        .map_err(JobError::from)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut reader.body, &mut buffer)
            .await
            .map_err(|e| JobError::retryable(format!("reading {bucket}/{}: {e}", object.key)))?;
        if n == 0 {
            break;
        }
        upload
            .write(Bytes::copy_from_slice(&buffer[..n]))
            .await
            .map_err(JobError::from)?;
    }
    let stored = upload.complete().await.map_err(JobError::from)?;
    let retention = tenant.artifact_retention(services.artifact_retention);
    let expires_at =
        Utc::now() + chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
    services
        .stores
        .store_artifact(ctx.lease(), &name, stored.size, &stored.sha256, expires_at)
        .await?;
    crate::telemetry::artifact_stored(RETENTION_CLEANUP, stored.size);
    Ok(())
}
