//! Job creations per minute (`quotas.creationsPerMinute`): each tenant may
//! create that many jobs per calendar minute (a fixed window: `hh:mm:00` to
//! `hh:mm:59.999`); the next creation in the same minute is refused with
//! `429 rate_limited` and a `Retry-After` of the seconds until the window
//! ends. Every valid creation request counts (idempotent replays too: the
//! handler cannot know a request is a replay before it reaches the store).
//!
//! Two backends keep the counters, as for the lockout: [`MemoryRateLimiter`]
//! (one process; windows follow the API's clock, so tests can move time) and
//! [`RedisRateLimiter`] (shared by every API replica: INCR + PEXPIRE of
//! `longhaul:rate:<tenant>:<minute>`, the minute taken from the API's clock,
//! which in production is the system clock).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::lockout::redis_connection;

/// The window creations are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The default Redis key namespace.
pub const REDIS_NAMESPACE: &str = "longhaul:rate";

const WINDOW_MS: i64 = 60_000;

/// The counters could not be read or written (Redis unreachable).
#[derive(Debug, thiserror::Error)]
#[error("rate-limit counters unavailable: {0}")]
pub struct RateLimitError(String);

/// Where creations are counted.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one creation by `tenant_id` in the minute `now` falls in.
    /// `None`: within `limit`; `Some(remaining)`: over it, and the window
    /// frees after `remaining`.
    async fn acquire(
        &self,
        tenant_id: &str,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, RateLimitError>;
}

/// The minute `now` falls in (minutes since the epoch) and the time left in it.
pub fn window_of(now: DateTime<Utc>) -> (i64, Duration) {
    let ms = now.timestamp_millis();
    let left = WINDOW_MS - ms.rem_euclid(WINDOW_MS);
    (
        ms.div_euclid(WINDOW_MS),
        Duration::from_millis(u64::try_from(left).unwrap_or(60_000)),
    )
}

/// Writes between sweeps of past windows.
const SWEEP_EVERY: u32 = 256;

/// In-process counters, for a single API process.
#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    /// Per tenant: its current window (minute) and the creations in it.
    windows: HashMap<String, (i64, u64)>,
    writes_since_sweep: u32,
}

impl MemoryRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tenants with a counter held (for tests of the clean-up).
    pub fn len(&self) -> usize {
        self.lock().windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(
        &self,
        tenant_id: &str,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, RateLimitError> {
        let (minute, left) = window_of(now);
        let mut inner = self.lock();
        inner.writes_since_sweep += 1;
        if inner.writes_since_sweep >= SWEEP_EVERY {
            inner.writes_since_sweep = 0;
            inner.windows.retain(|_, (window, _)| *window >= minute);
        }
        let entry = inner
            .windows
            .entry(tenant_id.to_string())
            .or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        Ok((entry.1 > limit).then_some(left))
    }
}

/// Counters in Redis, shared by every API replica: one key per tenant and
/// minute, `<namespace>:<tenant>:<minute>`, INCR'd by each creation and
/// expiring (PEXPIRE, set by the first) a second after its minute ends.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: redis::aio::ConnectionManager,
    namespace: String,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// KEYS: the window's counter. ARGV: its time to live in ms. Returns the count.
const ACQUIRE: &str = r#"
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"#;

impl RedisRateLimiter {
    /// Connects now (an unreachable server is an error), with the lockout's
    /// connection settings, keeping keys under `namespace` (normally
    /// [`REDIS_NAMESPACE`]).
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, RateLimitError> {
        let connection = redis_connection(url).await.map_err(RateLimitError)?;
        let limiter = Self::with_connection(connection, namespace);
        // Proves the server answers commands, not only accepts connections.
        let mut connection = limiter.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map_err(|e| RateLimitError(e.to_string()))?;
        Ok(limiter)
    }

    /// Shares an open connection (normally the lockout's).
    pub fn with_connection(connection: redis::aio::ConnectionManager, namespace: &str) -> Self {
        RedisRateLimiter {
            connection,
            namespace: namespace.trim_end_matches(':').to_string(),
        }
    }

    fn key(&self, tenant_id: &str, minute: i64) -> String {
        format!("{}:{tenant_id}:{minute}", self.namespace)
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(
        &self,
        tenant_id: &str,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, RateLimitError> {
        let (minute, left) = window_of(now);
        // A second of slack for replicas whose clocks differ slightly.
        let ttl_ms = left.as_millis() as u64 + 1_000;
        let mut connection = self.connection.clone();
        let count: u64 = redis::Script::new(ACQUIRE)
            .key(self.key(tenant_id, minute))
            .arg(ttl_ms)
            .invoke_async(&mut connection)
            .await
            .map_err(|e| RateLimitError(e.to_string()))?;
        Ok((count > limit).then_some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_040_000 + ms).expect("time")
    }

    #[tokio::test]
    async fn windows_are_calendar_minutes_and_old_ones_are_swept() {
        // 1_700_000_040_000 ms is a whole minute.
        assert_eq!(window_of(at(0)).1, WINDOW);
        assert_eq!(window_of(at(59_500)).1, Duration::from_millis(500));
        let limiter = MemoryRateLimiter::new();
        for _ in 0..3 {
            assert_eq!(limiter.acquire("t", 3, at(10_000)).await.expect("ok"), None);
        }
        assert_eq!(
            limiter.acquire("t", 3, at(15_000)).await.expect("ok"),
            Some(Duration::from_secs(45))
        );
        // Another tenant has its own counter; the next minute starts again.
        assert_eq!(limiter.acquire("u", 3, at(15_000)).await.expect("ok"), None);
        assert_eq!(limiter.acquire("t", 3, at(60_000)).await.expect("ok"), None);

        for i in 0..SWEEP_EVERY {
            limiter
                .acquire(&format!("one-off-{i}"), 3, at(120_000))
                .await
                .expect("ok");
        }
        assert!(limiter.len() <= SWEEP_EVERY as usize, "{}", limiter.len());
    }
}
