//! `classification.scan`: classifies the objects of a tenant's data buckets
//! under the scan's prefixes with the validated built-in detectors and the
//! scan's policies: per object a level, data types and counts per detector
//! (never the values); text, CSV, JSON/NDJSON and gzip are read as such,
//! binaries are skipped, and only the first `maxObjectBytes` of an object
//! are read.
//!
//! Buckets × prefixes are read in order, objects in key order, several at a
//! time with their results taken in order; results are stored in batches
//! and the checkpoint (pair done, last key done) saved after each batch, so
//! a retried attempt resumes after the last stored object.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use futures_util::StreamExt;
use longhaul_core::failure::FailureCode;
use longhaul_core::scans::classification::{
    self, ClassificationCheckpoint, ClassificationScanOutput, ClassificationScanParams,
    ObjectClassification, ObjectStatus,
};
use longhaul_core::scans::policies::compile_classification;
use longhaul_core::Progress;
use longhaul_scan::classify::Outcome;
use serde::Serialize;

use crate::context::JobContext;
use crate::handler::{JobError, KindHandler};
use crate::jobs::scanning::{
    blocking, data_bucket, objects_after, ordered, BlockingReader, Work, OBJECTS_IN_FLIGHT,
};
use crate::services::JobServices;

/// Results stored per transaction (and per checkpoint).
const RESULTS_BATCH: usize = 100;

pub struct ClassificationScan {
    services: JobServices,
}

fn to_result(
    job_id: longhaul_core::JobId,
    bucket: &str,
    key: String,
    size: u64,
    outcome: Outcome,
) -> ObjectClassification {
    match outcome {
        Outcome::Classified(found) => ObjectClassification {
            job_id,
            bucket: bucket.to_string(),
            key,
            size,
            status: ObjectStatus::Classified,
            level: Some(serde_name(&found.level)),
            data_types: found.data_types.iter().map(serde_name).collect(),
            counts: found
                .counts
                .into_iter()
                .map(|(id, n)| (id, n as u64))
                .collect(),
            format: Some(serde_name(&found.format)),
            gzip: found.gzip,
            truncated: found.truncated,
            skip_reason: None,
            classified_at: Utc::now(),
        },
        Outcome::Skipped { reason, .. } => ObjectClassification {
            job_id,
            bucket: bucket.to_string(),
            key,
            size,
            status: ObjectStatus::Skipped,
            level: None,
            data_types: Vec::new(),
            counts: Default::default(),
            format: None,
            gzip: false,
            truncated: false,
            skip_reason: Some(serde_name(&reason)),
            classified_at: Utc::now(),
        },
    }
}

/// The serde name of an engine enum (`"confidential"`, `"pii"`, …).
fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

#[async_trait]
impl KindHandler for ClassificationScan {
    type Kind = classification::ClassificationScan;

    async fn run(
        &self,
        ctx: JobContext,
        params: ClassificationScanParams,
    ) -> Result<ClassificationScanOutput, JobError> {
        let tenant = self.services.stores.get_tenant(ctx.tenant_id()).await?;
        let classifier = Arc::new(
            compile_classification(&params.policies)
                .map_err(|e| JobError::permanent(format!("the scan's policies: {e}")))?,
        );
        let pairs: Vec<(&String, &String)> = params
            .buckets
            .iter()
            .flat_map(|bucket| params.prefixes.iter().map(move |prefix| (bucket, prefix)))
            .collect();
        let mut state = ctx
            .checkpoint::<classification::ClassificationScan>()?
            .unwrap_or(ClassificationCheckpoint {
                next: 0,
                after_key: None,
                objects_done: 0,
                bytes_done: 0,
            });
        let resumed_from = (state.objects_done > 0).then_some(state.objects_done);
        // Every pair still to do is listed first: progress then has a total.
        let mut listings = Vec::with_capacity(pairs.len() - state.next.min(pairs.len()));
        for (index, (bucket, prefix)) in pairs.iter().enumerate().skip(state.next) {
            let store = data_bucket(&self.services, &tenant, bucket).await?;
            let after = (index == state.next)
                .then_some(state.after_key.as_deref())
                .flatten();
            let objects = objects_after(store.as_ref(), prefix, after).await?;
            listings.push((store, objects));
        }
        let remaining: u64 = listings
            .iter()
            .flat_map(|(_, objects)| objects.iter().map(|o| o.size))
            .sum();
        let total = state.bytes_done + remaining;
        let mut listings = listings.into_iter();
        while state.next < pairs.len() {
            let (bucket, _) = pairs[state.next];
            let Some((store, objects)) = listings.next() else {
                break;
            };
            let max_bytes = params.max_object_bytes;
            let work: Vec<Work<ObjectClassification>> = objects
                .into_iter()
                .map(|object| {
                    let (store, classifier) = (store.clone(), classifier.clone());
                    let (job_id, bucket) = (ctx.job_id(), bucket.clone());
                    Box::pin(async move {
                        // Streamed: only what the classifier needs is read
                        // (the first `max_bytes`, decompressed for gzip).
                        let reader = store.read(&object.key).await.map_err(JobError::from)?;
                        let body = BlockingReader::new(reader.body);
                        let key = object.key.clone();
                        let outcome =
                            blocking(move || classifier.classify_reader(&key, body, max_bytes))
                                .await?
                                .map_err(|e| {
                                    // The body broke off midway: the store, not the scan.
                                    JobError::platform(
                                        FailureCode::StorageUnavailable,
                                        format!("reading {}: {e}", object.key),
                                    )
                                })?;
                        Ok(to_result(job_id, &bucket, object.key, object.size, outcome))
                    }) as Work<_>
                })
                .collect();
            let mut results = ordered(work, OBJECTS_IN_FLIGHT);
            let mut batch = Vec::with_capacity(RESULTS_BATCH);
            loop {
                let next = tokio::select! {
                    biased;
                    _ = ctx.cancelled() => return Err(JobError::Cancelled),
                    next = results.next() => next,
                };
                let done = next.is_none();
                if let Some(result) = next {
                    batch.push(result?);
                }
                if batch.len() >= RESULTS_BATCH || (done && !batch.is_empty()) {
                    self.store(&ctx, &mut state, &mut batch, total).await?;
                }
                if done {
                    break;
                }
            }
            state.next += 1;
            state.after_key = None;
            ctx.save_checkpoint::<classification::ClassificationScan>(&state)
                .await?;
        }
        let stored = self
            .services
            .stores
            .count_classifications(ctx.tenant_id(), ctx.job_id())
            .await?;
        Ok(ClassificationScanOutput {
            objects: stored,
            bytes: state.bytes_done,
            resumed_from_object: resumed_from,
        })
    }
}

impl ClassificationScan {
    pub fn new(services: JobServices) -> Self {
        Self { services }
    }

    /// Stores a batch, then saves where the scan is.
    async fn store(
        &self,
        ctx: &JobContext,
        state: &mut ClassificationCheckpoint,
        batch: &mut Vec<ObjectClassification>,
        total: u64,
    ) -> Result<(), JobError> {
        self.services
            .stores
            .record_classifications(ctx.lease(), batch, Utc::now())
            .await?;
        for result in batch.iter() {
            state.objects_done += 1;
            state.bytes_done += result.size;
        }
        state.after_key = batch.last().map(|r| r.key.clone());
        batch.clear();
        ctx.save_checkpoint::<classification::ClassificationScan>(state)
            .await?;
        ctx.progress(Progress {
            current: state.bytes_done,
            // Objects added since the listing can take it past the total.
            total: Some(total.max(state.bytes_done)),
            unit: Some("bytes".into()),
            message: Some(format!("{} objects", state.objects_done)),
        })
        .await
    }
}
