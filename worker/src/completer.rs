//! Batched completion: successful attempts are queued here and written many at
//! a time (one fenced statement per batch), which is what lets a pool drain
//! thousands of short jobs a second. A batch that fails to write is retried
//! until it lands or the pool stops; ids refused by fencing are logged. Each
//! attempt leaves the pool's running set (and its heartbeat) once written.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use longhaul_core::job::Lease;
use longhaul_core::JobStore;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::heartbeat::RunningSet;

const MAX_BATCH: usize = 1000;

pub(crate) type CompletionSender = mpsc::UnboundedSender<(Lease, Value)>;

/// Runs until every sender is dropped and the queue is written.
pub(crate) async fn run_completer(
    store: Arc<dyn JobStore>,
    mut receiver: mpsc::UnboundedReceiver<(Lease, Value)>,
    running: RunningSet,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        write_batch(store.as_ref(), &batch).await;
        for (lease, _) in batch.drain(..) {
            running.remove(lease);
        }
    }
}

async fn write_batch(store: &dyn JobStore, batch: &[(Lease, Value)]) {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.complete_many(batch).await {
            Ok(applied) => {
                if applied.len() < batch.len() {
                    let applied: HashSet<_> = applied.into_iter().collect();
                    for (lease, _) in batch.iter().filter(|(l, _)| !applied.contains(&l.job_id)) {
                        tracing::warn!(job_id = %lease.job_id, attempt = lease.attempt,
                            "completion fenced: the attempt had lost its lease");
                    }
                }
                return;
            }
            Err(error) => {
                tracing::error!(%error, jobs = batch.len(), "writing completions failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
