//! One fan-out of job events per API process. Event streams
//! (`GET /v1/jobs/{id}/events`) follow jobs through the hub instead of each
//! reading the database: while at least one stream is open, a single task
//! reads the new events of every followed job with one query per interval
//! (`JobStore::events_of_jobs`, a cursor per job) and hands them to the
//! streams of each job (a tokio broadcast channel per job). The task stops
//! when the last stream closes.
//!
//! With a [`JobEventRelay`] (Redis), one replica at a time polls, for the
//! jobs every replica follows, and publishes what it reads; every replica
//! dispatches the published events to its own streams. While Redis cannot be
//! reached the hub polls locally, as without Redis, and logs it; once the
//! subscription is back it polls once more to cover what was published while
//! it was not listening.
//!
//! Delivery to a stream is at least once: a stream drops ids it already sent.
//! What a stream missed before it joined (or while it lagged behind its
//! channel) it reads from the database itself (`routes/events.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use longhaul_core::job::JobEvent;
use longhaul_core::{JobId, JobStore};
use redis::aio::PubSubStream;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::job_event_relay::{JobEventRelay, RelayError};

/// Events read per job and tick; a job with more continues at the next tick.
const EVENTS_PER_JOB: u32 = 500;
/// Events a stream may fall behind its job's channel before it must read
/// the database itself.
const CHANNEL_CAPACITY: usize = 1024;
/// How long a new stream waits for the Redis subscription to open before it
/// goes on (the hub then polls locally).
const LINK_WAIT: Duration = Duration::from_secs(3);
/// Between attempts to reach Redis again while it is down.
const RELINK_EVERY: Duration = Duration::from_secs(2);
/// Ticks between renewals of this replica's jobs in Redis.
const REGISTER_EVERY_TICKS: u64 = 4;

/// The hub of one process (cheap to clone: a handle).
#[derive(Clone)]
pub struct JobEventHub {
    hub: Arc<Hub>,
}

struct Hub {
    store: Arc<dyn JobStore>,
    interval: Duration,
    relay: Option<Arc<JobEventRelay>>,
    followed: Mutex<Followed>,
    /// Database reads made for the streams (one per tick at most).
    polls: AtomicU64,
    /// Ticks of the polling task (whether or not this process polled).
    ticks: AtomicU64,
    /// Where the Redis subscription stands (always `Connecting` without Redis).
    link: watch::Sender<Link>,
    /// A stream's registration in Redis failed: register every job again.
    register_again: AtomicBool,
}

#[derive(Default)]
struct Followed {
    jobs: HashMap<JobId, FollowedJob>,
    /// The polling task runs (it stops, and says so here, when `jobs` empties).
    task_running: bool,
}

impl Followed {
    fn cursors(&self) -> Vec<(JobId, i64)> {
        self.jobs
            .iter()
            .map(|(id, job)| (*id, job.cursor))
            .collect()
    }
}

struct FollowedJob {
    sender: broadcast::Sender<Arc<JobEvent>>,
    /// The newest event id dispatched (or where the first stream started).
    cursor: i64,
    streams: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Not subscribed yet (or no Redis): the polling task has not decided.
    Connecting,
    /// Subscribed: events come from the replica holding the lease.
    Live,
    /// Redis unreachable: this process polls for itself.
    Down,
}

/// What a stream gets next from the hub.
#[derive(Debug)]
pub enum Next {
    Event(Arc<JobEvent>),
    /// The stream fell more than the channel holds behind: it must read what
    /// it missed from the database.
    Lagged,
}

/// A stream's subscription to one job; leaving drops it.
pub struct Following {
    hub: Arc<Hub>,
    job_id: JobId,
    receiver: broadcast::Receiver<Arc<JobEvent>>,
}

impl JobEventHub {
    /// A hub that polls the database itself.
    pub fn local(store: Arc<dyn JobStore>, interval: Duration) -> Self {
        Self::build(store, interval, None)
    }

    /// A hub that shares polling with other replicas through Redis.
    pub fn relayed(
        store: Arc<dyn JobStore>,
        interval: Duration,
        relay: Arc<JobEventRelay>,
    ) -> Self {
        Self::build(store, interval, Some(relay))
    }

    fn build(
        store: Arc<dyn JobStore>,
        interval: Duration,
        relay: Option<Arc<JobEventRelay>>,
    ) -> Self {
        JobEventHub {
            hub: Arc::new(Hub {
                store,
                interval,
                relay,
                followed: Mutex::new(Followed::default()),
                polls: AtomicU64::new(0),
                ticks: AtomicU64::new(0),
                link: watch::Sender::new(Link::Connecting),
                register_again: AtomicBool::new(false),
            }),
        }
    }

    /// Database reads this process made for event streams so far.
    pub fn polls(&self) -> u64 {
        self.hub.polls.load(Ordering::Relaxed)
    }

    /// Ticks of this process's polling task so far (with Redis, most of
    /// them do not read the database).
    pub fn ticks(&self) -> u64 {
        self.hub.ticks.load(Ordering::Relaxed)
    }

    /// Jobs followed by at least one stream of this process.
    pub fn followed_jobs(&self) -> usize {
        self.hub.lock().jobs.len()
    }

    /// Streams following a job through the hub.
    pub fn streams(&self) -> usize {
        self.hub.lock().jobs.values().map(|job| job.streams).sum()
    }

    /// Events come through the Redis subscription (false without Redis,
    /// while it is down, and before the first stream).
    pub fn follows_redis(&self) -> bool {
        *self.hub.link.borrow() == Link::Live
    }

    /// The polling task runs (some stream follows a job, or the task has
    /// not yet seen the last one leave).
    pub fn active(&self) -> bool {
        self.hub.lock().task_running
    }

    /// Follows a job whose events up to `after` the stream has sent. Returns
    /// the subscription and the id up to which the hub will not deliver
    /// events (its cursor): if that is past `after`, the stream reads the
    /// events in between from the database.
    pub async fn follow(&self, job_id: JobId, after: i64) -> (Following, i64) {
        let (following, mut cursor, start_task) = {
            let mut followed = self.hub.lock();
            let job = followed.jobs.entry(job_id).or_insert_with(|| FollowedJob {
                sender: broadcast::channel(CHANNEL_CAPACITY).0,
                cursor: after,
                streams: 0,
            });
            job.streams += 1;
            let following = Following {
                hub: self.hub.clone(),
                job_id,
                receiver: job.sender.subscribe(),
            };
            let cursor = job.cursor;
            let start_task = !followed.task_running;
            followed.task_running = true;
            (following, cursor, start_task)
        };
        if start_task {
            tokio::spawn(run(self.hub.clone()));
        }
        if let Some(relay) = &self.hub.relay {
            if self.hub.wait_for_link().await == Link::Live {
                let ttl = registration_ttl(self.hub.interval);
                match relay.register(&[(job_id, cursor)], ttl).await {
                    Ok(held) => {
                        cursor = held.into_iter().fold(cursor, i64::max);
                    }
                    Err(error) => {
                        tracing::warn!(%error, %job_id, "registering a followed job in Redis");
                        self.hub.register_again.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        (following, cursor)
    }
}

impl Following {
    /// The next event of the job (waits for it).
    pub async fn next(&mut self) -> Option<Next> {
        match self.receiver.recv().await {
            Ok(event) => Some(Next::Event(event)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Next::Lagged),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut followed = self.hub.lock();
        if let Some(job) = followed.jobs.get_mut(&self.job_id) {
            job.streams = job.streams.saturating_sub(1);
            if job.streams == 0 {
                followed.jobs.remove(&self.job_id);
            }
        }
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Followed> {
        self.followed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every followed job and its cursor.
    fn cursors(&self) -> Vec<(JobId, i64)> {
        self.lock().cursors()
    }

    /// Every followed job and its cursor, or `None` after marking the task
    /// stopped when no stream is left (atomically with `follow`'s check).
    fn cursors_or_stop(&self) -> Option<Vec<(JobId, i64)>> {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        let mut followed = self.lock();
        if followed.jobs.is_empty() {
            followed.task_running = false;
            self.link.send_replace(Link::Connecting);
            return None;
        }
        Some(followed.cursors())
    }

    /// Hands events to the streams of their jobs (each id once per job).
    fn dispatch(&self, events: Vec<JobEvent>) {
        let mut followed = self.lock();
        for event in events {
            if let Some(job) = followed.jobs.get_mut(&event.job_id) {
                if event.id > job.cursor {
                    job.cursor = event.id;
                    // No receiver left: the job leaves with its last stream.
                    let _ = job.sender.send(Arc::new(event));
                }
            }
        }
    }

    /// One read of the database for `cursors`.
    async fn read(&self, cursors: &[(JobId, i64)]) -> longhaul_core::Result<Vec<JobEvent>> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.store.events_of_jobs(cursors, EVENTS_PER_JOB).await
    }

    /// Reads and dispatches the new events of this process's jobs.
    async fn poll_locally(&self, cursors: &[(JobId, i64)], failing: &mut bool) {
        match self.read(cursors).await {
            Ok(events) => {
                if std::mem::take(failing) {
                    tracing::info!("job event streams read the database again");
                }
                self.dispatch(events);
            }
            Err(error) => {
                if !std::mem::replace(failing, true) {
                    tracing::warn!(%error, "job event streams cannot read new events");
                }
            }
        }
    }

    async fn wait_for_link(&self) -> Link {
        let mut link = self.link.subscribe();
        let decided = tokio::time::timeout(LINK_WAIT, async {
            link.wait_for(|l| *l != Link::Connecting)
                .await
                .map(|state| *state)
        })
        .await;
        match decided {
            Ok(Ok(state)) => state,
            _ => Link::Connecting,
        }
    }
}

/// How long a replica's registration of a job lasts without renewal.
fn registration_ttl(interval: Duration) -> Duration {
    (interval * (REGISTER_EVERY_TICKS as u32 * 3)).max(Duration::from_secs(3))
}

/// How long the polling replica's lease lasts without renewal.
fn lease(interval: Duration) -> Duration {
    (interval * 8).max(Duration::from_secs(2))
}

fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// The polling task: runs while any stream follows a job.
async fn run(hub: Arc<Hub>) {
    match hub.relay.clone() {
        None => run_local(&hub).await,
        Some(relay) => run_relayed(&hub, &relay).await,
    }
}

async fn run_local(hub: &Hub) {
    let mut ticker = ticker(hub.interval);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let Some(cursors) = hub.cursors_or_stop() else {
            return;
        };
        hub.poll_locally(&cursors, &mut failing).await;
    }
}

/// The relayed task's view of Redis.
struct Relayed<'a> {
    hub: &'a Hub,
    relay: &'a Arc<JobEventRelay>,
    /// The open subscription.
    messages: Option<PubSubStream>,
    /// A subscription being opened.
    opening: Option<tokio::task::JoinHandle<Result<PubSubStream, RelayError>>>,
    /// When to try Redis again while it is down.
    relink_at: Instant,
    /// Redis has been down since the last subscription (not the first start).
    was_down: bool,
    /// The database could not be read at the last local poll.
    failing: bool,
    /// Live ticks since this replica's jobs were last renewed in Redis.
    since_renewal: u64,
}

async fn run_relayed(hub: &Hub, relay: &Arc<JobEventRelay>) {
    let mut ticker = ticker(hub.interval);
    let mut state = Relayed {
        hub,
        relay,
        messages: None,
        opening: None,
        relink_at: Instant::now(),
        was_down: false,
        failing: false,
        since_renewal: 0,
    };
    loop {
        if state.messages.is_none() && state.opening.is_none() && Instant::now() >= state.relink_at
        {
            let relay = relay.clone();
            state.opening = Some(tokio::spawn(async move { relay.subscribe().await }));
        }
        tokio::select! {
            Some(opened) = when_some(state.opening.as_mut()) => {
                state.opening = None;
                let opened = opened.unwrap_or_else(|e| {
                    Err(RelayError::new(format!("the subscription task failed: {e}")))
                });
                state.opened(opened).await;
            }
            Some(message) = when_some(state.messages.as_mut().map(|m| m.next())) => {
                match message {
                    Some(message) => match JobEventRelay::decode(&message) {
                        Ok(events) => hub.dispatch(events),
                        Err(error) => tracing::warn!(%error, "ignoring a relayed message"),
                    },
                    None => state.down("the Redis subscription closed"),
                }
            }
            _ = ticker.tick() => {
                let Some(cursors) = hub.cursors_or_stop() else {
                    if let Err(error) = relay.release().await {
                        tracing::debug!(%error, "releasing the job event lease");
                    }
                    return;
                };
                state.tick(&cursors).await;
            }
        }
    }
}

impl Relayed<'_> {
    async fn opened(&mut self, opened: Result<PubSubStream, RelayError>) {
        match opened {
            Ok(messages) => {
                self.messages = Some(messages);
                self.hub.link.send_replace(Link::Live);
                let cursors = self.hub.cursors();
                if let Err(error) = self.register(&cursors).await {
                    self.down(&error.to_string());
                    return;
                }
                if std::mem::take(&mut self.was_down) {
                    tracing::info!("job event streams follow Redis again");
                    // What was published while this replica was not listening.
                    self.hub.poll_locally(&cursors, &mut self.failing).await;
                }
            }
            Err(error) => self.down(&error.to_string()),
        }
    }

    async fn tick(&mut self, cursors: &[(JobId, i64)]) {
        let link = *self.hub.link.borrow();
        match link {
            Link::Live => {}
            // Redis is down: poll for this process, as without Redis.
            Link::Down => return self.poll_down(cursors).await,
            // The first subscription is opening: its streams wait for it.
            Link::Connecting => return,
        }
        self.since_renewal += 1;
        let renew = self.since_renewal >= REGISTER_EVERY_TICKS
            || self.hub.register_again.swap(false, Ordering::Relaxed);
        if renew {
            self.since_renewal = 0;
            if let Err(error) = self.register(cursors).await {
                self.down(&error.to_string());
                return self.poll_down(cursors).await;
            }
        }
        if let Err(error) = self.lead().await {
            self.down(&error.to_string());
            self.poll_down(cursors).await;
        }
    }

    async fn poll_down(&mut self, cursors: &[(JobId, i64)]) {
        self.hub.poll_locally(cursors, &mut self.failing).await;
    }

    async fn register(&self, cursors: &[(JobId, i64)]) -> Result<(), RelayError> {
        self.relay
            .register(cursors, registration_ttl(self.hub.interval))
            .await
            .map(drop)
    }

    /// If this replica holds the lease: one read for every replica's jobs,
    /// published (this replica's streams get it back from the channel).
    async fn lead(&mut self) -> Result<(), RelayError> {
        let Some(all) = self.relay.lead(lease(self.hub.interval)).await? else {
            return Ok(());
        };
        if all.is_empty() {
            return Ok(());
        }
        let events = match self.hub.read(&all).await {
            Ok(events) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("job event streams read the database again");
                }
                events
            }
            Err(error) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(%error, "job event streams cannot read new events");
                }
                return Ok(());
            }
        };
        if !events.is_empty() && !self.relay.publish(&events).await? {
            tracing::debug!(
                "lost the job event lease before publishing; the next holder reads again"
            );
        }
        Ok(())
    }

    /// Redis failed: poll locally until the subscription is back.
    fn down(&mut self, reason: &str) {
        self.messages = None;
        self.relink_at = Instant::now() + RELINK_EVERY;
        self.hub.link.send_replace(Link::Down);
        if !std::mem::replace(&mut self.was_down, true) {
            tracing::warn!(
                reason,
                "Redis unreachable: job event streams poll the database from this process"
            );
        }
    }
}

/// Awaits the future if there is one, else never completes (a disabled
/// `select!` branch).
async fn when_some<F: Future + Unpin>(future: Option<F>) -> Option<F::Output> {
    match future {
        Some(future) => Some(future.await),
        None => std::future::pending().await,
    }
}
