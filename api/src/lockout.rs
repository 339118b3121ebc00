//! Brute-force protection: failed authentications are counted per key prefix
//! and per client IP; 10 failures of one prefix or 20 from one IP within a
//! 5-minute window lock that prefix or IP for 15 minutes. While locked, every
//! request naming it is refused with `429 brute_force_lockout` and
//! `Retry-After`, even with a correct key.
//!
//! Two backends keep the counters: [`MemoryLockout`] (one process; windows
//! follow the API's clock, so tests can move time) and [`RedisLockout`]
//! (shared by every API replica; windows and locks are Redis TTLs, so they
//! follow real time).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Failures of one key prefix that lock it.
pub const MAX_FAILURES_PER_PREFIX: u32 = 10;
/// Failures from one client IP that lock it.
pub const MAX_FAILURES_PER_IP: u32 = 20;
/// The window failures are counted in (fixed: it starts at the first failure).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long a lock lasts.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// The default Redis key namespace.
pub const REDIS_NAMESPACE: &str = "longhaul:lockout";

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockKey {
    /// The public prefix of a well-formed API key.
    Prefix(String),
    /// The client's IP address (or `unknown`).
    Ip(String),
}

impl LockKey {
    /// Failures within the window that lock this key.
    pub fn threshold(&self) -> u32 {
        match self {
            LockKey::Prefix(_) => MAX_FAILURES_PER_PREFIX,
            LockKey::Ip(_) => MAX_FAILURES_PER_IP,
        }
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockKey::Prefix(prefix) => write!(f, "prefix:{prefix}"),
            LockKey::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// The counters could not be read or written (Redis unreachable).
#[derive(Debug, thiserror::Error)]
#[error("lockout counters unavailable: {0}")]
pub struct LockoutError(String);

/// Where failed authentications are counted.
#[async_trait::async_trait]
pub trait Lockout: Send + Sync + 'static {
    /// The longest remaining lock among `keys`, if any is locked.
    async fn check(
        &self,
        keys: &[LockKey],
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, LockoutError>;

    /// Counts one failed authentication against every key; returns the
    /// longest lock among them if this failure (or an earlier one) locked any.
    async fn record_failure(
        &self,
        keys: &[LockKey],
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, LockoutError>;
}

/// Rounds a remaining lock up to whole seconds (at least 1) for `Retry-After`.
pub fn retry_after_secs(remaining: Duration) -> u64 {
    let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    secs.max(1)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: DateTime<Utc>,
    failures: u32,
    locked_until: Option<DateTime<Utc>>,
}

impl Entry {
    fn remaining_lock(&self, now: DateTime<Utc>) -> Option<Duration> {
        let until = self.locked_until?;
        (until > now).then(|| (until - now).to_std().unwrap_or_default())
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.remaining_lock(now).is_none() && now >= self.window_start + window()
    }
}

fn window() -> chrono::Duration {
    chrono::Duration::from_std(FAILURE_WINDOW).unwrap_or(chrono::Duration::MAX)
}

fn lockout() -> chrono::Duration {
    chrono::Duration::from_std(LOCKOUT).unwrap_or(chrono::Duration::MAX)
}

/// Writes between sweeps of expired entries.
const SWEEP_EVERY: u32 = 256;
/// Above this many entries, counting (unlocked) entries are dropped on a sweep:
/// memory stays bounded under a flood of distinct IPs or prefixes, and locks are kept.
const MAX_ENTRIES: usize = 100_000;

/// In-process counters, for a single API process.
#[derive(Debug, Default)]
pub struct MemoryLockout {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: HashMap<LockKey, Entry>,
    writes_since_sweep: u32,
}

impl MemoryLockout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries currently held (for tests of the clean-up).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MemoryInner {
    fn sweep(&mut self, now: DateTime<Utc>) {
        self.writes_since_sweep = 0;
        self.entries.retain(|_, entry| !entry.expired(now));
        if self.entries.len() > MAX_ENTRIES {
            self.entries
                .retain(|_, entry| entry.remaining_lock(now).is_some());
        }
    }
}

#[async_trait::async_trait]
impl Lockout for MemoryLockout {
    async fn check(
        &self,
        keys: &[LockKey],
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, LockoutError> {
        let inner = self.lock();
        Ok(keys
            .iter()
            .filter_map(|key| inner.entries.get(key)?.remaining_lock(now))
            .max())
    }

    async fn record_failure(
        &self,
        keys: &[LockKey],
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, LockoutError> {
        let mut inner = self.lock();
        inner.writes_since_sweep += 1;
        if inner.writes_since_sweep >= SWEEP_EVERY || inner.entries.len() > MAX_ENTRIES {
            inner.sweep(now);
        }
        let mut longest = None;
        for key in keys {
            let entry = inner.entries.entry(key.clone()).or_insert(Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
            });
            if entry.expired(now) {
                *entry = Entry {
                    window_start: now,
                    failures: 0,
                    locked_until: None,
                };
            }
            if entry.remaining_lock(now).is_none() {
                entry.failures += 1;
                if entry.failures >= key.threshold() {
                    entry.locked_until = Some(now + lockout());
                    entry.failures = 0;
                    entry.window_start = now;
                }
            }
            longest = longest.max(entry.remaining_lock(now));
        }
        Ok(longest)
    }
}

/// Counters in Redis, shared by every API replica. Per key:
/// `<namespace>:count:<key>` (INCR; expires one window after the first
/// failure) and `<namespace>:lock:<key>` (set with a 15-minute TTL when the
/// count reaches the threshold). Times are Redis TTLs: real time, not the
/// API's clock.
#[derive(Clone)]
pub struct RedisLockout {
    connection: redis::aio::ConnectionManager,
    namespace: String,
}

impl fmt::Debug for RedisLockout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLockout")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// KEYS: count and lock key of each lock key in turn. ARGV: window ms,
/// lockout ms, then the threshold of each lock key. Returns the longest
/// remaining lock in ms (0: none).
const RECORD_FAILURE: &str = r#"
local window = tonumber(ARGV[1])
local lockout = tonumber(ARGV[2])
local longest = 0
for i = 1, #KEYS, 2 do
  local count_key = KEYS[i]
  local lock_key = KEYS[i + 1]
  local remaining = redis.call('PTTL', lock_key)
  if remaining <= 0 then
    local count = redis.call('INCR', count_key)
    if count == 1 then
      redis.call('PEXPIRE', count_key, window)
    end
    if count >= tonumber(ARGV[2 + (i + 1) / 2]) then
      redis.call('SET', lock_key, '1', 'PX', lockout)
      redis.call('DEL', count_key)
      remaining = lockout
    end
  end
  if remaining > longest then
    longest = remaining
  end
end
return longest
"#;

/// KEYS: lock keys. Returns the longest remaining lock in ms (0: none).
const CHECK: &str = r#"
local longest = 0
for i = 1, #KEYS do
  local remaining = redis.call('PTTL', KEYS[i])
  if remaining > longest then
    longest = remaining
  end
end
return longest
"#;

impl RedisLockout {
    /// Connects now (an unreachable server is an error, not a later surprise),
    /// keeping keys under `namespace` (normally [`REDIS_NAMESPACE`]).
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, LockoutError> {
        let connection = redis_connection(url).await.map_err(LockoutError)?;
        let lockout = RedisLockout {
            connection,
            namespace: namespace.trim_end_matches(':').to_string(),
        };
        // Proves the server answers commands, not only accepts connections.
        let _: Option<Duration> = lockout.check(&[], Utc::now()).await?;
        Ok(lockout)
    }

    /// The connection, to share with other Redis-backed counters (the rate
    /// limiter).
    pub fn connection(&self) -> redis::aio::ConnectionManager {
        self.connection.clone()
    }

    fn count_key(&self, key: &LockKey) -> String {
        format!("{}:count:{key}", self.namespace)
    }

    fn lock_key(&self, key: &LockKey) -> String {
        format!("{}:lock:{key}", self.namespace)
    }

    /// Deletes every counter and lock under this namespace (tests, and an
    /// operator lifting all locks at once).
    pub async fn clear(&self) -> Result<u64, LockoutError> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}:*", self.namespace);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut connection)
                .await
                .map_err(|e| LockoutError(e.to_string()))?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| LockoutError(e.to_string()))?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// A reconnecting Redis connection with the API's settings (5 s to connect,
/// 2 s per answer, 2 retries), shared by the lockout and the rate limiter.
pub async fn redis_connection(url: &str) -> Result<redis::aio::ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    redis::aio::ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| e.to_string())
}

fn millis(ms: i64) -> Option<Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

#[async_trait::async_trait]
impl Lockout for RedisLockout {
    async fn check(
        &self,
        keys: &[LockKey],
        _now: DateTime<Utc>,
    ) -> Result<Option<Duration>, LockoutError> {
        let script = redis::Script::new(CHECK);
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(self.lock_key(key));
        }
        let mut connection = self.connection.clone();
        let ms: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| LockoutError(e.to_string()))?;
        Ok(millis(ms))
    }

    async fn record_failure(
        &self,
        keys: &[LockKey],
        _now: DateTime<Utc>,
    ) -> Result<Option<Duration>, LockoutError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let script = redis::Script::new(RECORD_FAILURE);
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(FAILURE_WINDOW.as_millis() as u64)
            .arg(LOCKOUT.as_millis() as u64);
        for key in keys {
            invocation
                .key(self.count_key(key))
                .key(self.lock_key(key))
                .arg(key.threshold());
        }
        let mut connection = self.connection.clone();
        let ms: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| LockoutError(e.to_string()))?;
        Ok(millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    #[tokio::test]
    async fn windows_reset_and_expired_entries_are_swept() {
        let lockout = MemoryLockout::new();
        let key = [LockKey::Prefix("abc".into())];
        for _ in 0..9 {
            assert_eq!(lockout.record_failure(&key, at(0)).await.expect("ok"), None);
        }
        // The window has passed: the count starts again.
        for _ in 0..9 {
            assert_eq!(
                lockout.record_failure(&key, at(300)).await.expect("ok"),
                None
            );
        }
        assert_eq!(
            lockout.record_failure(&key, at(301)).await.expect("ok"),
            Some(LOCKOUT)
        );
        assert_eq!(
            lockout.check(&key, at(301 + 899)).await.expect("ok"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(lockout.check(&key, at(301 + 900)).await.expect("ok"), None);

        // Many one-off IPs: swept once their windows pass.
        for i in 0..1000 {
            let ip = [LockKey::Ip(format!("10.0.{}.{}", i / 256, i % 256))];
            lockout.record_failure(&ip, at(2000)).await.expect("ok");
        }
        assert!(lockout.len() > 700, "{}", lockout.len());
        for i in 0..SWEEP_EVERY {
            let ip = [LockKey::Ip(format!("10.9.0.{i}"))];
            lockout.record_failure(&ip, at(4000)).await.expect("ok");
        }
        assert!(lockout.len() <= SWEEP_EVERY as usize, "{}", lockout.len());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(900)), 900);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
