//! Short-lived in-process caches for the two reads every polling client makes
//! on every request: its API key (with its tenant) and its job's status.
//! Entries expire on the API clock after a fixed time to live; a zero TTL
//! disables a cache. Changes made through this process invalidate what they
//! touch at once; changes made elsewhere (another replica, a worker) show
//! within the TTL. Each cache holds at most `capacity` entries: when full,
//! expired entries are swept, and if none were, the whole cache is dropped
//! (a burst of misses, never unbounded memory).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub struct TtlCache<K, V> {
    ttl: chrono::Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (DateTime<Utc>, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::zero()),
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A cache that holds nothing.
    pub fn disabled() -> Self {
        Self::new(Duration::ZERO, 1)
    }

    pub fn is_enabled(&self) -> bool {
        self.ttl > chrono::Duration::zero()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (DateTime<Utc>, V)>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value stored for `key`, unless it expired by `now`.
    pub fn get(&self, key: &K, now: DateTime<Utc>) -> Option<V> {
        if !self.is_enabled() {
            return None;
        }
        let entries = self.lock();
        match entries.get(key) {
            Some((expires_at, value)) if *expires_at > now => Some(value.clone()),
            _ => None,
        }
    }

    /// Stores `value` until `now + ttl`.
    pub fn insert(&self, key: K, value: V, now: DateTime<Utc>) {
        if !self.is_enabled() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (expires_at, _)| *expires_at > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, value));
    }

    pub fn remove(&self, key: &K) {
        if self.is_enabled() {
            self.lock().remove(key);
        }
    }

    /// Drops every entry whose value matches.
    pub fn remove_where(&self, matches: impl Fn(&V) -> bool) {
        if self.is_enabled() {
            self.lock().retain(|_, (_, value)| !matches(value));
        }
    }

    pub fn clear(&self) {
        if self.is_enabled() {
            self.lock().clear();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = TtlCache::new(Duration::from_secs(2), 10);
        cache.insert("a", 1, at(0));
        assert_eq!(cache.get(&"a", at(1)), Some(1));
        assert_eq!(cache.get(&"a", at(2)), None);
        assert_eq!(cache.get(&"b", at(0)), None);
    }

    #[test]
    fn a_zero_ttl_stores_nothing() {
        let cache = TtlCache::disabled();
        cache.insert("a", 1, at(0));
        assert_eq!(cache.get(&"a", at(0)), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_sweeps_expired_entries_then_starts_over() {
        let cache = TtlCache::new(Duration::from_secs(10), 3);
        cache.insert(1, "one", at(0));
        cache.insert(2, "two", at(0));
        cache.insert(3, "three", at(5));
        // Full: 1 and 2 have expired at 12, 3 has not.
        cache.insert(4, "four", at(12));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&3, at(12)), Some("three"));
        cache.insert(5, "five", at(12));
        // Full of live entries: dropped whole, never past capacity.
        cache.insert(6, "six", at(12));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&6, at(12)), Some("six"));
    }

    #[test]
    fn removal_by_key_and_by_value() {
        let cache = TtlCache::new(Duration::from_secs(10), 10);
        cache.insert(1, "x", at(0));
        cache.insert(2, "y", at(0));
        cache.insert(3, "y", at(0));
        cache.remove(&1);
        assert_eq!(cache.get(&1, at(0)), None);
        cache.remove_where(|value| *value == "y");
        assert!(cache.is_empty());
    }
}
