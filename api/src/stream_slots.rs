//! Caps on open Server-Sent Event streams in one API process: so many per API
//! key and so many in all (`LONGHAUL_SSE_MAX_STREAMS_PER_KEY`,
//! `LONGHAUL_SSE_MAX_STREAMS`). A stream holds a [`StreamSlot`] for as long as
//! it is open; dropping the stream (the job ended, or the client went away)
//! frees the slot. Past a cap the request is refused with `429 rate_limited`
//! and a `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::StatusCode;
use serde_json::json;

use crate::error::ApiError;

/// `Retry-After` (seconds) of a refused stream: slots free as streams end,
/// which the API cannot foresee, so this is a suggestion.
pub const STREAM_RETRY_AFTER_SECS: u64 = 5;

/// Open streams, counted per key and in all.
#[derive(Debug)]
pub struct StreamSlots {
    max_per_key: usize,
    max_per_process: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_key: HashMap<String, usize>,
}

/// Which cap refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCap {
    PerKey(usize),
    PerProcess(usize),
}

impl From<StreamCap> for ApiError {
    fn from(cap: StreamCap) -> Self {
        let (message, scope, limit) = match cap {
            StreamCap::PerKey(limit) => (
                format!("this API key already has {limit} event streams open here; close one or try again later"),
                "key",
                limit,
            ),
            StreamCap::PerProcess(limit) => (
                format!("this API server already serves {limit} event streams; try again later"),
                "process",
                limit,
            ),
        };
        let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            .with_details(json!({
                "scope": scope,
                "limit": limit,
                "retryAfterSeconds": STREAM_RETRY_AFTER_SECS,
            }));
        error.retry_after = Some(STREAM_RETRY_AFTER_SECS);
        error
    }
}

impl StreamSlots {
    pub fn new(max_per_key: usize, max_per_process: usize) -> Self {
        StreamSlots {
            max_per_key,
            max_per_process,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Takes a slot for a stream of `key_id`, or names the cap that refuses it.
    pub fn acquire(self: &Arc<Self>, key_id: &str) -> Result<StreamSlot, StreamCap> {
        let mut counts = self.lock();
        if counts.total >= self.max_per_process {
            return Err(StreamCap::PerProcess(self.max_per_process));
        }
        let of_key = counts.per_key.get(key_id).copied().unwrap_or(0);
        if of_key >= self.max_per_key {
            return Err(StreamCap::PerKey(self.max_per_key));
        }
        counts.total += 1;
        counts.per_key.insert(key_id.to_string(), of_key + 1);
        Ok(StreamSlot {
            slots: self.clone(),
            key_id: key_id.to_string(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, key_id: &str) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(of_key) = counts.per_key.get_mut(key_id) {
            *of_key = of_key.saturating_sub(1);
            if *of_key == 0 {
                counts.per_key.remove(key_id);
            }
        }
    }
}

/// One open stream's place; freed when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    key_id: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.slots.release(&self.key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_key_and_per_process_and_frees_on_drop() {
        let slots = Arc::new(StreamSlots::new(2, 3));
        let a1 = slots.acquire("a").expect("first of a");
        let a2 = slots.acquire("a").expect("second of a");
        assert_eq!(slots.acquire("a").err(), Some(StreamCap::PerKey(2)));
        let b1 = slots.acquire("b").expect("first of b");
        assert_eq!(slots.acquire("c").err(), Some(StreamCap::PerProcess(3)));
        drop(a1);
        assert_eq!(slots.open(), 2);
        let a3 = slots.acquire("a").expect("a's freed slot");
        drop((a2, a3, b1));
        assert_eq!(slots.open(), 0);
        assert!(
            slots.lock().per_key.is_empty(),
            "keys without streams are forgotten"
        );
    }
}
