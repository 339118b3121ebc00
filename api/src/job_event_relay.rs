//! Job events shared by API replicas through Redis (`LONGHAUL_REDIS_URL`), so
//! that one replica at a time reads the database for every replica's event
//! streams. Under a namespace (normally [`REDIS_NAMESPACE`]):
//!
//! - `<ns>:leader`: the replica that polls, a lease (`SET NX PX`) it renews
//!   every tick and deletes when its own streams are gone;
//! - `<ns>:jobs`: the followed jobs (a sorted set, scored by when the
//!   registration expires; every replica renews its jobs, the leader drops the
//!   expired ones);
//! - `<ns>:cursors`: per followed job, the newest event id published (set by
//!   the first registration, moved by the leader after each publish), so a
//!   new leader carries on where the last one stopped;
//! - `<ns>:channel`: the pub/sub channel the leader publishes each tick's
//!   events on, as one JSON array; every replica has one subscription.
//!
//! This module only speaks to Redis; `job_event_hub.rs` decides when.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use longhaul_core::job::JobEvent;
use longhaul_core::JobId;
use redis::aio::{ConnectionManager, PubSubStream};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lockout::redis_connection;

/// The default Redis namespace.
pub const REDIS_NAMESPACE: &str = "longhaul:events";
/// How long opening the subscription may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Redis could not be reached or answered something unexpected.
#[derive(Debug, thiserror::Error)]
#[error("job event relay: {0}")]
pub struct RelayError(String);

impl RelayError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        RelayError(message.into())
    }
}

impl From<redis::RedisError> for RelayError {
    fn from(error: redis::RedisError) -> Self {
        RelayError(error.to_string())
    }
}

/// One replica's side of the relay: its Redis connections and its name in
/// the lease.
pub struct JobEventRelay {
    client: redis::Client,
    connection: ConnectionManager,
    namespace: String,
    /// This replica's name in the lease (unique per process).
    instance: String,
}

impl fmt::Debug for JobEventRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobEventRelay")
            .field("namespace", &self.namespace)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// An event as published: the job log row and its job.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    id: i64,
    job: JobId,
    at: DateTime<Utc>,
    attempt: Option<i32>,
    kind: String,
    data: Option<Value>,
}

/// KEYS: jobs, cursors. ARGV: registration ttl ms, then job and cursor pairs.
/// Registers (or renews) each job; a job's cursor is set only if it has none.
/// Returns the cursor Redis holds for each job, in order.
const REGISTER: &str = r#"
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local held = {}
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], expires, ARGV[i])
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  held[#held + 1] = redis.call('HGET', KEYS[2], ARGV[i])
end
return held
"#;

/// KEYS: leader, jobs, cursors. ARGV: this instance, lease ms. Takes or renews
/// the lease; if held, drops expired registrations and returns every followed
/// job and its cursor (HGETALL), else nil.
const LEAD: &str = r#"
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, job in ipairs(expired) do
  redis.call('ZREM', KEYS[2], job)
  redis.call('HDEL', KEYS[3], job)
end
return redis.call('HGETALL', KEYS[3])
"#;

/// KEYS: leader, jobs, cursors. ARGV: this instance, channel, payload, then
/// job and cursor pairs. Only while this instance holds the lease: moves the
/// cursors of jobs still followed and publishes. Returns 1 if published.
const PUBLISH: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
for i = 4, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// KEYS: leader. ARGV: this instance. Gives the lease up if held.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

impl JobEventRelay {
    /// Connects now (an unreachable server is an error), keeping keys under
    /// `namespace`.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, RelayError> {
        let client = redis::Client::open(url)?;
        let connection = redis_connection(url).await.map_err(RelayError)?;
        let relay = JobEventRelay {
            client,
            connection,
            namespace: namespace.trim_end_matches(':').to_string(),
            instance: uuid::Uuid::now_v7().simple().to_string(),
        };
        // Proves the server answers commands, not only accepts connections.
        let mut connection = relay.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await?;
        Ok(relay)
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.namespace)
    }

    /// Opens this replica's subscription to the channel.
    pub(crate) async fn subscribe(&self) -> Result<PubSubStream, RelayError> {
        let channel = self.key("channel");
        let opening = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RelayError>(pubsub.into_on_message())
        };
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, opening)
            .await
            .map_err(|_| RelayError(format!("subscribing took over {SUBSCRIBE_TIMEOUT:?}")))?
    }

    /// Registers (or renews) followed jobs for `ttl`; a job new to Redis
    /// starts from the cursor given. Returns the cursor Redis holds for each.
    pub(crate) async fn register(
        &self,
        cursors: &[(JobId, i64)],
        ttl: Duration,
    ) -> Result<Vec<i64>, RelayError> {
        if cursors.is_empty() {
            return Ok(Vec::new());
        }
        let script = redis::Script::new(REGISTER);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.key("jobs"))
            .key(self.key("cursors"))
            .arg(millis(ttl));
        for (job, cursor) in cursors {
            invocation.arg(job.to_string()).arg(*cursor);
        }
        let mut connection = self.connection.clone();
        let held: Vec<i64> = invocation.invoke_async(&mut connection).await?;
        Ok(held)
    }

    /// Takes or renews the lease for `lease`. `Some`: this replica polls,
    /// for every job any replica follows, from these cursors; `None`:
    /// another replica holds the lease.
    pub(crate) async fn lead(
        &self,
        lease: Duration,
    ) -> Result<Option<Vec<(JobId, i64)>>, RelayError> {
        let mut connection = self.connection.clone();
        let answer: Option<Vec<String>> = redis::Script::new(LEAD)
            .key(self.key("leader"))
            .key(self.key("jobs"))
            .key(self.key("cursors"))
            .arg(&self.instance)
            .arg(millis(lease))
            .invoke_async(&mut connection)
            .await?;
        let Some(flat) = answer else {
            return Ok(None);
        };
        let mut cursors = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [job, cursor] = pair else {
                return Err(RelayError("an odd HGETALL answer".into()));
            };
            let job: JobId = job
                .parse()
                .map_err(|_| RelayError(format!("a followed job named {job:?}")))?;
            let cursor: i64 = cursor
                .parse()
                .map_err(|_| RelayError(format!("a cursor {cursor:?} for {job}")))?;
            cursors.push((job, cursor));
        }
        Ok(Some(cursors))
    }

    /// Publishes one tick's events and moves the cursors past them, if this
    /// replica still holds the lease (`false`: it lost it, nothing sent).
    pub(crate) async fn publish(&self, events: &[JobEvent]) -> Result<bool, RelayError> {
        let wire: Vec<WireEvent> = events
            .iter()
            .map(|event| WireEvent {
                id: event.id,
                job: event.job_id,
                at: event.at,
                attempt: event.attempt,
                kind: event.kind.clone(),
                data: event.data.clone(),
            })
            .collect();
        let payload = serde_json::to_string(&wire)
            .map_err(|e| RelayError(format!("encoding events: {e}")))?;
        // The newest id per job (events come ordered by id).
        let mut newest: Vec<(JobId, i64)> = Vec::new();
        for event in events {
            match newest.iter_mut().find(|(job, _)| *job == event.job_id) {
                Some(entry) => entry.1 = entry.1.max(event.id),
                None => newest.push((event.job_id, event.id)),
            }
        }
        let script = redis::Script::new(PUBLISH);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.key("leader"))
            .key(self.key("jobs"))
            .key(self.key("cursors"))
            .arg(&self.instance)
            .arg(self.key("channel"))
            .arg(payload);
        for (job, cursor) in &newest {
            invocation.arg(job.to_string()).arg(*cursor);
        }
        let mut connection = self.connection.clone();
        let published: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(published == 1)
    }

    /// Gives the lease up (this replica has no streams left), so another
    /// replica with streams takes it at its next tick.
    pub(crate) async fn release(&self) -> Result<(), RelayError> {
        let mut connection = self.connection.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(self.key("leader"))
            .arg(&self.instance)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    /// Deletes the lease, registrations and cursors under this namespace
    /// (tests; harmless in production: replicas register again within a
    /// few ticks).
    pub async fn clear(&self) -> Result<(), RelayError> {
        let mut connection = self.connection.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.key("leader"))
            .arg(self.key("jobs"))
            .arg(self.key("cursors"))
            .query_async(&mut connection)
            .await?;
        Ok(())
    }

    /// The events of one published message.
    pub(crate) fn decode(message: &redis::Msg) -> Result<Vec<JobEvent>, RelayError> {
        let payload: String = message.get_payload()?;
        let wire: Vec<WireEvent> = serde_json::from_str(&payload)
            .map_err(|e| RelayError(format!("decoding published events: {e}")))?;
        Ok(wire
            .into_iter()
            .map(|event| JobEvent {
                id: event.id,
                job_id: event.job,
                at: event.at,
                attempt: event.attempt,
                kind: event.kind,
                data: event.data,
            })
            .collect())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
