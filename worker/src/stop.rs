//! Why a running handler was told to stop: the first reason wins, and it
//! decides how the attempt is recorded (cancelled, released, timed out, or not
//! at all when the lease was lost).

use std::sync::atomic::{AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A client asked to cancel the job.
    CancelRequested,
    /// The attempt no longer holds the lease: another attempt owns the job.
    LeaseLost,
    /// The worker is shutting down: hand the job back.
    Shutdown,
    /// The kind's timeout passed.
    Timeout,
}

/// A cancellation token plus the reason it fired.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    token: CancellationToken,
    reason: AtomicU8,
}

impl StopSignal {
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Records the reason (unless one is already set) and fires the token.
    pub(crate) fn stop(&self, reason: StopReason) {
        let code = match reason {
            StopReason::CancelRequested => 1,
            StopReason::LeaseLost => 2,
            StopReason::Shutdown => 3,
            StopReason::Timeout => 4,
        };
        let _ = self
            .reason
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.token.cancel();
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::SeqCst) {
            1 => Some(StopReason::CancelRequested),
            2 => Some(StopReason::LeaseLost),
            3 => Some(StopReason::Shutdown),
            4 => Some(StopReason::Timeout),
            _ => None,
        }
    }
}
