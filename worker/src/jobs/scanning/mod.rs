//! What the two scan kinds share: walking a data bucket in key order with
//! several objects in flight but results taken in order (so "every key up
//! to here is done" is a checkpoint), the engine's CPU work on blocking
//! threads (HTTP fetches are `crate::outbound_http`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::{self, Stream, StreamExt};
use longhaul_core::artifacts::{ObjectInfo, ObjectStore};
use longhaul_core::tenancy::Tenant;
use tokio_util::io::SyncIoBridge;
use tokio_util::task::AbortOnDropHandle;

use crate::handler::JobError;
use crate::services::JobServices;

/// Objects fetched and scanned at once.
pub const OBJECTS_IN_FLIGHT: usize = 4;

/// Segments a big object is split into: one per thread of the engine's
/// CPU pool, which every scan of the worker shares.
pub fn scan_threads() -> usize {
    longhaul_scan::engine::cpu_threads()
}

/// The store of one of the tenant's data buckets, if its settings still name
/// it (an operator may have removed it since the scan was created).
pub async fn data_bucket(
    services: &JobServices,
    tenant: &Tenant,
    name: &str,
) -> Result<Arc<dyn ObjectStore>, JobError> {
    let buckets = longhaul_core::scans::leakage::data_buckets(&tenant.settings);
    let bucket = buckets.get(name).ok_or_else(|| {
        JobError::permanent(format!("{name:?} is no longer a data bucket of the tenant"))
    })?;
    services
        .artifacts
        .data_bucket(&tenant.region, bucket)
        .await
        .map_err(JobError::from)
}

/// The objects under `prefix` after key `after`, in key order.
pub async fn objects_after(
    store: &dyn ObjectStore,
    prefix: &str,
    after: Option<&str>,
) -> Result<Vec<ObjectInfo>, JobError> {
    let mut objects = store.list(prefix).await.map_err(JobError::from)?;
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some(after) = after {
        objects.retain(|object| object.key.as_str() > after);
    }
    Ok(objects)
}

/// A unit of scan work, not started until [`ordered`] runs it.
pub type Work<T> = Pin<Box<dyn Future<Output = Result<T, JobError>> + Send>>;

/// Runs work `width` at a time, each on a task of its own, and yields the
/// results in the order the work came (so "every key up to here is done"
/// holds for what has been yielded). Dropping the stream aborts what is
/// still running.
pub fn ordered<T: Send + 'static>(
    work: Vec<Work<T>>,
    width: usize,
) -> impl Stream<Item = Result<T, JobError>> + Unpin + Send {
    stream::iter(work)
        .map(|work| AbortOnDropHandle::new(tokio::spawn(work)))
        .buffered(width.max(1))
        .map(|joined| {
            joined.unwrap_or_else(|join| {
                Err(JobError::retryable(format!("a scan task failed: {join}")))
            })
        })
}

/// An object's stream read from a blocking thread (the engine's readers are
/// synchronous): each read waits on the async body. Made on the runtime,
/// then moved to a blocking thread.
pub type BlockingReader = SyncIoBridge<Pin<Box<dyn tokio::io::AsyncRead + Send>>>;

/// Runs CPU-bound engine work on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JobError::retryable(format!("a scan thread failed: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn ordered_yields_in_order_at_most_width_at_once_and_aborts_on_drop() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let work: Vec<Work<usize>> = (0..8usize)
            .map(|i| {
                let (running, most, finished) = (running.clone(), most.clone(), finished.clone());
                Box::pin(async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Later work finishes first: order must come from the stream.
                    tokio::time::sleep(Duration::from_millis(40 - 5 * i as u64)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok(i)
                }) as Work<usize>
            })
            .collect();
        let results: Vec<usize> = ordered(work, 3)
            .map(|r| r.expect("no failure"))
            .collect()
            .await;
        assert_eq!(results, (0..8).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 3);

        finished.store(0, Ordering::SeqCst);
        let slow: Vec<Work<usize>> = (0..4)
            .map(|_| {
                let finished = finished.clone();
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok(0usize)
                }) as Work<usize>
            })
            .collect();
        let mut stream = ordered(slow, 2);
        // Starts the first two, then gives up on them.
        let _ = tokio::time::timeout(Duration::from_millis(20), stream.next()).await;
        drop(stream);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "dropped work was aborted"
        );
    }
}
