//! What the two scan kinds share: walking a data bucket in key order with
//! several objects in flight but results taken in order (so "every key up
//! to here is done" is a checkpoint), the engine's CPU work on blocking
//! threads, and HTTP fetches (`http.rs`).

pub mod http;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use longhaul_core::artifacts::{ObjectInfo, ObjectStore};
use longhaul_core::tenancy::Tenant;
use tokio::task::JoinHandle;

use crate::handler::JobError;
use crate::services::JobServices;

/// Objects fetched and scanned at once.
pub const OBJECTS_IN_FLIGHT: usize = 4;

/// Threads the engine may use for one scan: the worker's cores.
pub fn scan_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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

/// A unit of scan work, not started until [`Ordered`] runs it.
pub type Work<T> = Pin<Box<dyn Future<Output = Result<T, JobError>> + Send>>;

/// Runs work `width` at a time and yields the results in the order the work
/// came. Dropping it aborts what is still running.
pub struct Ordered<T> {
    work: std::vec::IntoIter<Work<T>>,
    width: usize,
    running: VecDeque<JoinHandle<Result<T, JobError>>>,
}

impl<T: Send + 'static> Ordered<T> {
    pub fn new(work: Vec<Work<T>>, width: usize) -> Self {
        Ordered {
            work: work.into_iter(),
            width: width.max(1),
            running: VecDeque::new(),
        }
    }

    /// The next result in order; None when all are done.
    pub async fn next(&mut self) -> Option<Result<T, JobError>> {
        while self.running.len() < self.width {
            match self.work.next() {
                Some(work) => self.running.push_back(tokio::spawn(work)),
                None => break,
            }
        }
        let handle = self.running.pop_front()?;
        Some(match handle.await {
            Ok(result) => result,
            Err(join) => Err(JobError::retryable(format!("a scan task failed: {join}"))),
        })
    }
}

impl<T> Drop for Ordered<T> {
    fn drop(&mut self) {
        for handle in &self.running {
            handle.abort();
        }
    }
}

/// An object's stream read from a blocking thread (the engine's readers are
/// synchronous): each read waits on the async body.
pub struct BlockingReader {
    handle: tokio::runtime::Handle,
    body: Pin<Box<dyn tokio::io::AsyncRead + Send>>,
}

impl BlockingReader {
    /// Must be made on the runtime, then moved to a blocking thread.
    pub fn new(body: Pin<Box<dyn tokio::io::AsyncRead + Send>>) -> Self {
        BlockingReader {
            handle: tokio::runtime::Handle::current(),
            body,
        }
    }
}

impl std::io::Read for BlockingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        self.handle.block_on(self.body.read(buf))
    }
}

/// Runs CPU-bound engine work on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JobError::retryable(format!("a scan thread failed: {e}")))
}
