//! A worker pool: the claim loop for a set of queues with a fixed number of
//! slots, plus its companions (heartbeat, batched completer, wake-up
//! dispatcher, lease rescuer) and graceful shutdown.
//!
//! The claim loop claims as many jobs as it has free slots whenever work may be
//! waiting: after a wake-up (NOTIFY or in-process), on every poll tick, and
//! right after a claim that filled every slot it asked for.
//!
//! **Prefetch.** While the pool's jobs are short (a moving average of their
//! run time under [`SHORT_JOB`]), it claims up to `prefetch` jobs beyond its
//! free slots and starts them as slots free: a claim is a round trip to the
//! database, and with slots that free in microseconds, claims as small as
//! the free slots would cap the drain. Prefetched jobs are leased,
//! heartbeated, cancellable and handed back at shutdown like running ones;
//! long jobs are never prefetched (they would sit leased here while other
//! workers idle).

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longhaul_core::job::{ClaimRequest, Job};
use longhaul_core::store::{Wake, WakeReceiver};
use longhaul_core::{Config, JobId, JobStore};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::completer::{run_completer, CompletionSender};
use crate::execute::{Execution, STOP_GRACE};
use crate::handler::{JobError, JobHandler, JobOutput, Registry};
use crate::heartbeat::{run_heartbeat, RunningSet};
use crate::presence::{host_name, run_presence};
use crate::stop::{StopReason, StopSignal};
use crate::JobContext;
use longhaul_core::workers::{WorkerInfo, WorkerStore};

/// How long a pool with only a few free slots waits for more before claiming.
const CLAIM_COOLDOWN: Duration = Duration::from_millis(2);

/// Most claims one pool has in flight. Claims share no lock (they skip each
/// other's rows), so while one claim's answer travels back and its jobs
/// start, the next is already being served.
const MAX_CLAIMS_IN_FLIGHT: usize = 2;

/// Jobs whose average run time is under this are prefetched.
pub const SHORT_JOB: Duration = Duration::from_millis(50);

/// Most jobs one claim takes, by default. Each claim statement has a fixed
/// cost; with prefetch, claims this large keep even a small pool busy.
pub const DEFAULT_CLAIM_BATCH: usize = 64;

/// Most short jobs claimed ahead of free slots, by default: one claim's worth.
pub const DEFAULT_PREFETCH: usize = DEFAULT_CLAIM_BATCH;

/// What landing a claim did.
struct Landed {
    claimed: usize,
    /// The claim filled every slot it asked for, so more may be waiting.
    work_may_wait: bool,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub queues: Vec<String>,
    pub concurrency: usize,
    /// Most jobs taken by one claim.
    pub claim_batch: usize,
    /// Most jobs claimed ahead of free slots while jobs are short (0: none).
    pub prefetch: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    /// How often this pool rescues expired leases and prunes old finished
    /// jobs (None: never; the scheduler may).
    pub rescue_interval: Option<Duration>,
    /// Finished jobs older than this are pruned by the maintenance pass.
    pub job_retention: Duration,
    pub default_max_running_per_tenant: Option<i32>,
    pub worker_id: String,
}

impl PoolConfig {
    pub fn from_config(config: &Config) -> Self {
        PoolConfig {
            queues: config.worker_queues.clone(),
            concurrency: config.worker_concurrency,
            claim_batch: DEFAULT_CLAIM_BATCH,
            prefetch: DEFAULT_PREFETCH,
            lease: config.lease,
            poll_interval: config.poll_interval,
            shutdown_grace: config.shutdown_grace,
            rescue_interval: Some(config.rescue_interval),
            job_retention: config.job_retention,
            default_max_running_per_tenant: config.default_max_running_per_tenant,
            worker_id: default_worker_id(),
        }
    }
}

/// `host-pid-random`: unique per pool, readable in attempt history.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// What a pool did, reported when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolReport {
    pub claimed: usize,
    /// Jobs still running at the end of the grace period, handed back.
    pub handed_back: usize,
}

/// How a pool is told to stop.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop claiming; running jobs get the grace period.
    pub stop: CancellationToken,
    /// Stop waiting: running jobs are handed back now, grace period or not
    /// (a second ctrl-c). Before `stop` it does nothing.
    pub hand_back_now: CancellationToken,
    /// How an operator fires `hand_back_now`, for the line logged when the
    /// pool starts waiting (e.g. "press ctrl-c again to hand them back now").
    pub hand_back_hint: Option<String>,
}

impl Shutdown {
    /// Stops on `stop`; nothing cuts the grace period short.
    pub fn on(stop: CancellationToken) -> Self {
        Shutdown {
            stop,
            ..Shutdown::default()
        }
    }
}

pub struct WorkerPool {
    store: Arc<dyn JobStore>,
    registry: Arc<Registry>,
    config: PoolConfig,
    /// Where the pool shows itself to operators (`GET /v1/workers`).
    presence: Option<Arc<dyn WorkerStore>>,
}

/// State shared by the claim loop and the job tasks.
struct Slots {
    in_flight: AtomicUsize,
    freed: Notify,
    /// Moving average of job run times, in microseconds (`u64::MAX` until
    /// a job has run: nothing is prefetched before the pool knows).
    average_run_micros: AtomicU64,
    /// Attempts ended, for the throughput figures (written by presence).
    tally: crate::tally::Tally,
}

impl Slots {
    fn record_run(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let before = self.average_run_micros.load(Ordering::Relaxed);
        let average = if before == u64::MAX {
            took
        } else {
            // Weight 1/8 for the newest run.
            before - before / 8 + took / 8
        };
        self.average_run_micros.store(average, Ordering::Relaxed);
    }

    fn jobs_are_short(&self) -> bool {
        self.average_run_micros.load(Ordering::Relaxed) < SHORT_JOB.as_micros() as u64
    }
}

/// A claimed job waiting for a slot (prefetched): already in the running
/// set, so it is heartbeated and can be cancelled.
struct Waiting {
    job: Arc<Job>,
    stop: Arc<StopSignal>,
}

impl WorkerPool {
    pub fn new(store: Arc<dyn JobStore>, registry: Registry, config: PoolConfig) -> Self {
        WorkerPool {
            store,
            registry: Arc::new(registry),
            config,
            presence: None,
        }
    }

    /// Registers the pool in the worker table, heartbeats its running count
    /// and marks it stopped at the end (see `presence.rs`).
    pub fn with_presence(mut self, store: Arc<dyn WorkerStore>) -> Self {
        self.presence = Some(store);
        self
    }

    /// Runs until `shutdown` fires, then stops claiming, lets running jobs
    /// finish within the grace period, and hands the rest back.
    pub async fn run(self, shutdown: CancellationToken) -> PoolReport {
        self.run_with(Shutdown::on(shutdown)).await
    }

    /// [`WorkerPool::run`], with a second signal that ends the grace period
    /// early: the running jobs are handed back at once.
    pub async fn run_with(self, shutdown: Shutdown) -> PoolReport {
        let span = tracing::info_span!("pool", worker_id = %self.config.worker_id, queues = ?self.config.queues);
        self.run_until(shutdown).instrument(span).await
    }

    async fn run_until(self, shutdown: Shutdown) -> PoolReport {
        let running = RunningSet::default();
        let tally = crate::tally::Tally::default();
        let companions = CancellationToken::new();
        let claim_wanted = Arc::new(Notify::new());

        let presence = self.presence.clone().map(|store| {
            tokio::spawn(run_presence(
                store,
                WorkerInfo {
                    id: self.config.worker_id.clone(),
                    host: host_name(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    queues: self.config.queues.clone(),
                    concurrency: u32::try_from(self.config.concurrency).unwrap_or(u32::MAX),
                },
                running.clone(),
                tally.clone(),
                companions.clone(),
            ))
        });
        let heartbeat = tokio::spawn(run_heartbeat(
            self.store.clone(),
            running.clone(),
            self.config.lease,
            companions.clone(),
        ));
        let dispatcher = tokio::spawn(dispatch_wakes(
            self.store.subscribe(),
            self.config.queues.clone(),
            running.clone(),
            claim_wanted.clone(),
            companions.clone(),
        ));
        let maintenance = self.config.rescue_interval.map(|every| {
            tokio::spawn(run_maintenance(
                self.store.clone(),
                every,
                self.config.job_retention,
                companions.clone(),
            ))
        });
        let (completions, completion_queue) = mpsc::unbounded_channel();
        let completer = tokio::spawn(run_completer(
            self.store.clone(),
            completion_queue,
            running.clone(),
        ));

        let slots = Arc::new(Slots {
            in_flight: AtomicUsize::new(0),
            freed: Notify::new(),
            average_run_micros: AtomicU64::new(u64::MAX),
            tally: tally.clone(),
        });
        let mut tasks = JoinSet::new();
        let claimed = self
            .claim_loop(
                &shutdown.stop,
                &running,
                &claim_wanted,
                &slots,
                &completions,
                &mut tasks,
            )
            .await;

        let handed_back = self.drain(&running, &mut tasks, &shutdown).await;
        drop(completions);
        if tokio::time::timeout(STOP_GRACE, completer).await.is_err() {
            tracing::error!(
                "completions could not be written before stopping; those jobs will be rescued"
            );
        }
        companions.cancel();
        let _ = heartbeat.await;
        let _ = dispatcher.await;
        if let Some(presence) = presence {
            let _ = presence.await;
        }
        if let Some(maintenance) = maintenance {
            let _ = maintenance.await;
        }
        tracing::info!(claimed, handed_back, "worker pool stopped");
        PoolReport {
            claimed,
            handed_back,
        }
    }

    async fn claim_loop(
        &self,
        shutdown: &CancellationToken,
        running: &RunningSet,
        claim_wanted: &Notify,
        slots: &Arc<Slots>,
        completions: &CompletionSender,
        tasks: &mut JoinSet<()>,
    ) -> usize {
        let half_batch = self
            .config
            .claim_batch
            .min(self.config.concurrency)
            .div_ceil(2);
        let mut claimed_total = 0;
        let mut work_may_wait = true;
        let mut cooldown_until: Option<tokio::time::Instant> = None;
        let mut next_poll = tokio::time::Instant::now() + self.config.poll_interval;
        let mut claims: JoinSet<longhaul_core::Result<Vec<Job>>> = JoinSet::new();
        // Slots promised to the claims in flight, by claim task.
        let mut reserved: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Reap finished tasks so the JoinSet does not grow without bound.
            while tasks.try_join_next().is_some() {}
            while slots.in_flight.load(Ordering::SeqCst) < self.config.concurrency {
                let Some(next) = waiting.pop_front() else {
                    break;
                };
                self.launch(next, running, slots, completions, tasks);
            }
            let ahead = if slots.jobs_are_short() {
                self.config.prefetch
            } else {
                0
            };
            let busy = slots.in_flight.load(Ordering::SeqCst)
                + waiting.len()
                + reserved.values().sum::<usize>();
            let free = (self.config.concurrency + ahead).saturating_sub(busy);
            if free > 0 && work_may_wait && claims.len() < MAX_CLAIMS_IN_FLIGHT {
                // A few free slots while others are busy: let more free up, for
                // at most CLAIM_COOLDOWN, so claims stay batched (a claim per
                // slot would spend the database on round trips). An idle pool
                // claims at once.
                let now = tokio::time::Instant::now();
                let deadline = *cooldown_until.get_or_insert(now + CLAIM_COOLDOWN);
                if busy == 0 || free >= half_batch || now >= deadline {
                    cooldown_until = None;
                    let asked = free.min(self.config.claim_batch);
                    let claim = self.claim(asked);
                    let id = claims.spawn(claim).id();
                    reserved.insert(id, asked);
                    continue;
                }
            } else {
                cooldown_until = None;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(joined) = claims.join_next_with_id(), if !claims.is_empty() => {
                    let landed = self.land_claim(joined, &mut reserved, running, &mut waiting);
                    claimed_total += landed.claimed;
                    work_may_wait = landed.work_may_wait;
                }
                _ = slots.freed.notified(), if free == 0 || cooldown_until.is_some() || !waiting.is_empty() => {}
                _ = tokio::time::sleep_until(cooldown_until.unwrap_or(next_poll)), if cooldown_until.is_some() => {}
                _ = claim_wanted.notified() => work_may_wait = true,
                _ = tokio::time::sleep_until(next_poll) => {
                    work_may_wait = true;
                    next_poll = tokio::time::Instant::now() + self.config.poll_interval;
                }
            }
        }
        // Claims in flight still land; jobs that never got a slot are handed
        // back at once (their attempt records itself as released, unrun).
        while let Some(joined) = claims.join_next_with_id().await {
            claimed_total += self
                .land_claim(joined, &mut reserved, running, &mut waiting)
                .claimed;
        }
        for next in waiting.drain(..) {
            next.stop.stop(StopReason::Shutdown);
            self.launch(next, running, slots, completions, tasks);
        }
        claimed_total
    }

    /// Queues the jobs a claim returned for a slot (the loop starts them)
    /// and frees its reservation.
    fn land_claim(
        &self,
        joined: Result<(tokio::task::Id, longhaul_core::Result<Vec<Job>>), tokio::task::JoinError>,
        reserved: &mut HashMap<tokio::task::Id, usize>,
        running: &RunningSet,
        waiting: &mut VecDeque<Waiting>,
    ) -> Landed {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => {
                reserved.remove(&error.id());
                tracing::error!(%error, "claim task failed");
                return Landed {
                    claimed: 0,
                    work_may_wait: false,
                };
            }
        };
        let asked = reserved.remove(&id).unwrap_or(0);
        match result {
            Ok(jobs) => {
                let landed = Landed {
                    claimed: jobs.len(),
                    work_may_wait: jobs.len() == asked,
                };
                for job in jobs {
                    waiting.push_back(admit(job, running));
                }
                landed
            }
            Err(error) => {
                tracing::error!(%error, "claim failed; retrying after the poll interval");
                Landed {
                    claimed: 0,
                    work_may_wait: false,
                }
            }
        }
    }

    fn claim(
        &self,
        limit: usize,
    ) -> impl std::future::Future<Output = longhaul_core::Result<Vec<Job>>> + Send + 'static {
        let request = ClaimRequest {
            queues: self.config.queues.clone(),
            limit,
            worker_id: self.config.worker_id.clone(),
            lease: self.config.lease,
        };
        let store = self.store.clone();
        let default_cap = self.config.default_max_running_per_tenant;
        async move { store.claim(&request, default_cap).await }
    }

    /// Runs an admitted job in a slot of its own.
    fn launch(
        &self,
        Waiting { job, stop }: Waiting,
        running: &RunningSet,
        slots: &Arc<Slots>,
        completions: &CompletionSender,
        tasks: &mut JoinSet<()>,
    ) {
        let (handler, spec) = match self.registry.lookup(&job.kind) {
            Some((handler, spec)) => (handler, spec.clone()),
            None => (
                Arc::new(MissingHandler) as Arc<dyn JobHandler>,
                longhaul_core::KindSpec::new(job.kind.clone()),
            ),
        };
        slots.in_flight.fetch_add(1, Ordering::SeqCst);
        let execution = Execution {
            job,
            handler,
            spec,
            stop,
            running: running.clone(),
            tally: slots.tally.clone(),
        };
        let store = self.store.clone();
        let completions = completions.clone();
        let slots = slots.clone();
        tasks.spawn(async move {
            let started = std::time::Instant::now();
            execution.run(store, completions).await;
            slots.record_run(started.elapsed());
            slots.in_flight.fetch_sub(1, Ordering::SeqCst);
            slots.freed.notify_one();
        });
    }

    /// Waits up to the grace period for running jobs (saying which, and for
    /// how long), or until `hand_back_now` fires, then stops the rest (they
    /// record themselves as released) and waits for them to return.
    async fn drain(
        &self,
        running: &RunningSet,
        tasks: &mut JoinSet<()>,
        shutdown: &Shutdown,
    ) -> usize {
        let grace = self.config.shutdown_grace;
        let waiting = running.job_ids();
        if !waiting.is_empty() && !grace.is_zero() && !shutdown.hand_back_now.is_cancelled() {
            tracing::info!(
                "{}",
                waiting_line(&waiting, grace, shutdown.hand_back_hint.as_deref())
            );
        }
        let in_grace = async { while tasks.join_next().await.is_some() {} };
        let cut_short = tokio::select! {
            biased;
            _ = shutdown.hand_back_now.cancelled() => true,
            finished = tokio::time::timeout(grace, in_grace) => {
                if finished.is_ok() {
                    return 0;
                }
                false
            }
        };
        let handed_back = running.handlers_running();
        if cut_short {
            tracing::info!(
                jobs = handed_back,
                "handing running jobs back now, as asked"
            );
        } else {
            tracing::info!(
                jobs = handed_back,
                "grace period over; handing running jobs back"
            );
        }
        running.stop_all(StopReason::Shutdown);
        let stopping = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_GRACE * 2, stopping)
            .await
            .is_err()
        {
            tasks.abort_all();
        }
        handed_back
    }
}

/// A claimed job enters the running set (heartbeats, cancels) at once,
/// whether it starts now or waits for a slot.
fn admit(job: Job, running: &RunningSet) -> Waiting {
    let stop = Arc::new(StopSignal::default());
    running.insert(job.lease(), stop.clone());
    Waiting {
        job: Arc::new(job),
        stop,
    }
}

/// Most job ids named in the waiting line.
const JOBS_NAMED: usize = 5;

/// "waiting up to 30 s for 2 running jobs (job_…, job_…); <hint>".
fn waiting_line(jobs: &[JobId], grace: Duration, hint: Option<&str>) -> String {
    let count = jobs.len();
    let noun = if count == 1 { "job" } else { "jobs" };
    let mut named: Vec<String> = jobs.iter().take(JOBS_NAMED).map(JobId::to_string).collect();
    if count > JOBS_NAMED {
        named.push(format!("and {} more", count - JOBS_NAMED));
    }
    let wait = if grace.subsec_millis() == 0 {
        format!("{} s", grace.as_secs())
    } else {
        format!("{} ms", grace.as_millis())
    };
    let mut line = format!(
        "waiting up to {wait} for {count} running {noun} ({}) to finish",
        named.join(", ")
    );
    if let Some(hint) = hint {
        line.push_str("; ");
        line.push_str(hint);
    }
    line
}

/// Runs in place of a handler this worker does not have (a kind added to the
/// catalogue but not deployed here yet): the attempt fails and is retried.
struct MissingHandler;

#[async_trait::async_trait]
impl JobHandler for MissingHandler {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        Err(JobError::platform(
            longhaul_core::failure::FailureCode::InternalError,
            format!("this worker has no handler for kind {:?}", ctx.job().kind),
        ))
    }
}

/// Turns wake-ups into claims (for our queues) and cancel signals.
async fn dispatch_wakes(
    mut wakes: WakeReceiver,
    queues: Vec<String>,
    running: RunningSet,
    claim_wanted: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let wake = tokio::select! {
            _ = stop.cancelled() => return,
            wake = wakes.recv() => wake,
        };
        match wake {
            Ok(Wake::Queue(queue)) if queues.contains(&queue) => claim_wanted.notify_one(),
            Ok(Wake::Queue(_)) => {}
            Ok(Wake::Cancel(job_id)) => running.stop(job_id, None, StopReason::CancelRequested),
            Err(broadcast::error::RecvError::Lagged(_)) => claim_wanted.notify_one(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Rescues expired leases and prunes finished jobs past retention, every
/// `every`. Both are fenced or idempotent, so any number of pools may run it.
async fn run_maintenance(
    store: Arc<dyn JobStore>,
    every: Duration,
    retention: Duration,
    stop: CancellationToken,
) {
    const PRUNE_BATCH: u32 = 1000;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.rescue_expired(1000).await {
            Ok(rescued) => {
                crate::telemetry::rescued(rescued.len());
                for job in rescued {
                    tracing::warn!(tenant_id = %job.tenant_id, job_id = %job.job_id, state = %job.state,
                        "rescued a job whose lease expired");
                }
            }
            Err(error) => tracing::error!(%error, "rescuing expired leases failed"),
        }
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        loop {
            match store.prune_finished(cutoff, PRUNE_BATCH).await {
                Ok(pruned) if pruned == u64::from(PRUNE_BATCH) && !stop.is_cancelled() => continue,
                Ok(pruned) => {
                    if pruned > 0 {
                        tracing::info!(pruned, "pruned finished jobs past retention");
                    }
                    break;
                }
                Err(error) => {
                    tracing::error!(%error, "pruning finished jobs failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waiting_line_names_the_jobs_the_wait_and_the_way_out() {
        let ids: Vec<JobId> = (0..7).map(|_| JobId::new()).collect();
        let one = waiting_line(
            &ids[..1],
            Duration::from_secs(30),
            Some("press ctrl-c again"),
        );
        assert_eq!(
            one,
            format!(
                "waiting up to 30 s for 1 running job ({}) to finish; press ctrl-c again",
                ids[0]
            )
        );
        let many = waiting_line(&ids, Duration::from_millis(1500), None);
        assert!(
            many.starts_with("waiting up to 1500 ms for 7 running jobs ("),
            "{many}"
        );
        assert!(many.contains(&ids[4].to_string()) && !many.contains(&ids[5].to_string()));
        assert!(many.ends_with(", and 2 more) to finish"), "{many}");
    }
}
