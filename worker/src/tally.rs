//! Attempts this pool ended since the presence heartbeat last wrote them, per
//! queue: what `job_throughput` adds up (the dashboard's jobs per minute).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use longhaul_core::workers::Ended;

#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    ended: Arc<Mutex<BTreeMap<String, Ended>>>,
}

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Ended>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An attempt in `queue` ended, successfully or not.
    pub(crate) fn ended(&self, queue: &str, succeeded: bool) {
        let mut ended = self.lock();
        let counts = ended.entry(queue.to_string()).or_default();
        if succeeded {
            counts.succeeded += 1;
        } else {
            counts.failed += 1;
        }
    }

    /// What was counted since the last take, emptied.
    pub(crate) fn take(&self) -> Vec<(String, Ended)> {
        std::mem::take(&mut *self.lock()).into_iter().collect()
    }

    /// Counts taken but not written, given back for the next write.
    pub(crate) fn restore(&self, counts: Vec<(String, Ended)>) {
        let mut ended = self.lock();
        for (queue, back) in counts {
            let counts = ended.entry(queue).or_default();
            counts.succeeded += back.succeeded;
            counts.failed += back.failed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_once_and_restored_when_not_written() {
        let tally = Tally::default();
        tally.ended("default", true);
        tally.ended("default", false);
        tally.ended("exports", true);
        let taken = tally.take();
        assert_eq!(
            taken,
            vec![
                (
                    "default".to_string(),
                    Ended {
                        succeeded: 1,
                        failed: 1
                    }
                ),
                (
                    "exports".to_string(),
                    Ended {
                        succeeded: 1,
                        failed: 0
                    }
                ),
            ]
        );
        assert!(tally.take().is_empty());
        tally.ended("default", true);
        tally.restore(taken);
        assert_eq!(
            tally.take()[0],
            (
                "default".to_string(),
                Ended {
                    succeeded: 2,
                    failed: 1
                }
            )
        );
    }
}
