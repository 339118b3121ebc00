//! Wake-ups for idle workers. They carry identifiers only (a queue name or a
//! job id), never payloads: the worker reads the database for the rest.
//! PostgreSQL delivers them with LISTEN/NOTIFY across processes; SQLite only
//! within the process that wrote (the poll fallback covers the rest).

use tokio::sync::broadcast;

use crate::ids::JobId;

/// NOTIFY channel for "this queue has due work" (payload: queue name).
pub(crate) const QUEUE_CHANNEL: &str = "longhaul_jobs";
/// NOTIFY channel for "this running job was asked to cancel" (payload: job id).
pub(crate) const CANCEL_CHANNEL: &str = "longhaul_cancels";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    Queue(String),
    Cancel(JobId),
}

pub type WakeReceiver = broadcast::Receiver<Wake>;

/// The in-process fan-out of wake-ups.
#[derive(Debug, Clone)]
pub(crate) struct WakeHub {
    sender: broadcast::Sender<Wake>,
}

impl WakeHub {
    pub(crate) fn new() -> Self {
        WakeHub {
            sender: broadcast::channel(1024).0,
        }
    }

    pub(crate) fn send(&self, wake: Wake) {
        // No subscriber is fine: nobody is idle.
        let _ = self.sender.send(wake);
    }

    pub(crate) fn subscribe(&self) -> WakeReceiver {
        self.sender.subscribe()
    }

    pub(crate) fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }
}
