//! The queue client: validates work against the catalogue and limits, then
//! hands it to the store. Everything that enqueues (API, scheduler, CLI,
//! benchmarks) goes through here, so bad input is refused the same way
//! everywhere and nothing invalid is ever written.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::audit::Actor;
use crate::config::validate_queue_name;
use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::job::{Attempt, Enqueued, Job, JobEvent, JobFilter, JobInput, NewJob};
use crate::kinds::{encode_params, Catalogue, JobKind};
use crate::nul::contains_nul;
use crate::store::JobStore;
use crate::usage::{KindUsage, Period};

/// Params larger than this (serialized JSON) are refused.
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i16> = 0..=9;
pub const DEFAULT_PRIORITY: i16 = 5;
pub const MAX_ATTEMPTS_RANGE: std::ops::RangeInclusive<i32> = 1..=100;
/// `run_at` in Unix seconds: 2000-01-01 to 9999-12-31 (PostgreSQL's
/// timestamptz cannot hold every date chrono parses, such as year -5000).
pub const RUN_AT_RANGE: std::ops::RangeInclusive<i64> = 946_684_800..=253_402_300_799;
/// How many jobs one page of a listing may hold.
pub const LIST_LIMIT_RANGE: std::ops::RangeInclusive<u32> = 1..=200;

/// A request to run one job. Unset fields take the kind's defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnqueueRequest {
    pub tenant_id: String,
    pub kind: String,
    pub params: Value,
    pub queue: Option<String>,
    /// 0 (most urgent) to 9; default 5.
    pub priority: Option<i16>,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: Option<i32>,
    pub idempotency_key: Option<String>,
    /// Files already stored for the job, recorded with it ([`JobInput`]).
    pub inputs: Vec<JobInput>,
}

impl EnqueueRequest {
    pub fn new(tenant_id: impl Into<String>, kind: impl Into<String>, params: Value) -> Self {
        EnqueueRequest {
            tenant_id: tenant_id.into(),
            kind: kind.into(),
            params,
            ..Default::default()
        }
    }

    /// A job of a typed kind, its params encoded through the kind's type.
    pub fn of<K: JobKind>(tenant_id: impl Into<String>, params: &K::Params) -> Result<Self> {
        Ok(Self::new(tenant_id, K::NAME, encode_params::<K>(params)?))
    }

    /// The same request under an idempotency key.
    pub fn idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }
}

/// One page of a job listing.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// The `after` of the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

#[derive(Debug, Clone)]
pub struct JobClient {
    store: Arc<dyn JobStore>,
    catalogue: Arc<Catalogue>,
}

impl JobClient {
    pub fn new(store: Arc<dyn JobStore>, catalogue: Arc<Catalogue>) -> Self {
        JobClient { store, catalogue }
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// Validates a request into a job ready to store (no I/O).
    pub fn prepare(&self, request: EnqueueRequest) -> Result<NewJob> {
        prepare_with(&self.catalogue, request)
    }

    /// Stores one job (or finds the one its idempotency key already names).
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<Enqueued> {
        let job = self.prepare(request)?;
        let mut stored = self.store.enqueue(std::slice::from_ref(&job)).await?;
        stored
            .pop()
            .ok_or_else(|| Error::corrupt("enqueue", "the store answered no job"))
    }

    /// Admits one job a tenant submitted (the API's path): refused with
    /// [`Error::QuotaExceeded`] if it would take the tenant past `max_queued`
    /// queued jobs (an idempotent replay is never refused), and metered as
    /// one billable operation of its kind in `period` when it is created.
    /// See [`JobStore::enqueue_within_quota`].
    pub async fn enqueue_within_quota(
        &self,
        request: EnqueueRequest,
        max_queued: Option<i64>,
        period: Period,
        actor: &Actor,
    ) -> Result<Enqueued> {
        let job = self.prepare(request)?;
        self.admit(job, max_queued, period, actor).await
    }

    /// [`JobClient::enqueue_within_quota`] for a job already [prepared]
    /// (validated), for callers that act between validation and the write
    /// (the API counts creations per minute there).
    ///
    /// [prepared]: JobClient::prepare
    pub async fn admit(
        &self,
        job: NewJob,
        max_queued: Option<i64>,
        period: Period,
        actor: &Actor,
    ) -> Result<Enqueued> {
        let mut stored = self
            .store
            .enqueue_within_quota(std::slice::from_ref(&job), max_queued, period, actor)
            .await?;
        stored
            .pop()
            .ok_or_else(|| Error::corrupt("enqueue", "the store answered no job"))
    }

    /// A tenant's billable operations per kind in `period`.
    pub async fn usage(&self, tenant_id: &str, period: Period) -> Result<Vec<KindUsage>> {
        self.store.usage(tenant_id, period).await
    }

    /// Stores a batch atomically: if any request is invalid, nothing is written
    /// and the error names the request's index.
    pub async fn enqueue_many(&self, requests: Vec<EnqueueRequest>) -> Result<Vec<Enqueued>> {
        let jobs = requests
            .into_iter()
            .enumerate()
            .map(|(index, request)| self.prepare(request).map_err(|e| at_index(index, e)))
            .collect::<Result<Vec<_>>>()?;
        self.store.enqueue(&jobs).await
    }

    pub async fn get(&self, tenant_id: &str, id: JobId) -> Result<Job> {
        self.store.get_job(tenant_id, id).await
    }

    /// The tenant's job created with this idempotency key, if any.
    pub async fn find_by_idempotency_key(&self, tenant_id: &str, key: &str) -> Result<Option<Job>> {
        self.store.find_job_by_idempotency_key(tenant_id, key).await
    }

    /// A page of up to `limit` (1–200) of a tenant's jobs matching `filter`,
    /// newest first, older than the job `after` (the previous page's
    /// `next_cursor`) when it is set. One more job is read to know whether
    /// another page follows.
    pub async fn list(
        &self,
        tenant_id: &str,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<JobsPage> {
        if !LIST_LIMIT_RANGE.contains(&limit) {
            return Err(Error::validation(
                "limit",
                format!(
                    "must be from {} to {}",
                    LIST_LIMIT_RANGE.start(),
                    LIST_LIMIT_RANGE.end()
                ),
            ));
        }
        if let (Some(from), Some(to)) = (filter.created_from, filter.created_to) {
            if from >= to {
                return Err(Error::validation(
                    "createdTo",
                    "must be later than the start of the range (the range is [from, to))",
                ));
            }
        }
        if let Some(kind) = &filter.kind {
            if kind.is_empty() || kind.chars().any(char::is_control) {
                return Err(Error::validation(
                    "kind",
                    "must be a job kind: not empty, no control characters",
                ));
            }
        }
        if let Some(queue) = &filter.queue {
            validate_queue_name(queue).map_err(|message| Error::validation("queue", message))?;
        }
        let mut jobs = self
            .store
            .list_jobs(tenant_id, filter, after, limit + 1)
            .await?;
        let next_cursor = if jobs.len() > limit as usize {
            jobs.truncate(limit as usize);
            jobs.last().map(|job| job.id)
        } else {
            None
        };
        Ok(JobsPage { jobs, next_cursor })
    }

    /// A job with its finished attempts (one call for a status read).
    pub async fn get_with_attempts(
        &self,
        tenant_id: &str,
        id: JobId,
    ) -> Result<(Job, Vec<Attempt>)> {
        self.store.get_job_with_attempts(tenant_id, id).await
    }

    pub async fn attempts(&self, tenant_id: &str, id: JobId) -> Result<Vec<Attempt>> {
        self.store.job_attempts(tenant_id, id).await
    }

    pub async fn events(
        &self,
        tenant_id: &str,
        id: JobId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<JobEvent>> {
        self.store.job_events(tenant_id, id, after, limit).await
    }

    /// Queued → cancelled at once; running → cancel requested (cooperative).
    pub async fn cancel(&self, tenant_id: &str, id: JobId) -> Result<Job> {
        self.store.cancel(tenant_id, id).await
    }

    /// `cancel` on behalf of `actor` (recorded in the audit log).
    pub async fn cancel_as(&self, tenant_id: &str, id: JobId, actor: &Actor) -> Result<Job> {
        self.store.cancel_as(tenant_id, id, actor).await
    }

    /// Failed or cancelled → queued again with a fresh attempt budget.
    pub async fn retry(&self, tenant_id: &str, id: JobId) -> Result<Job> {
        self.store.retry(tenant_id, id).await
    }

    /// `retry` on behalf of `actor`, unless it would take the tenant past
    /// `max_queued` queued jobs.
    pub async fn retry_within_quota(
        &self,
        tenant_id: &str,
        id: JobId,
        max_queued: Option<i64>,
        actor: &Actor,
    ) -> Result<Job> {
        self.store
            .retry_within_quota(tenant_id, id, max_queued, actor)
            .await
    }
}

/// Validates a request against a catalogue into a job ready to store (no
/// I/O): what [`JobClient::prepare`] does, for callers without a store (the
/// scheduler builds the jobs of its fires inside the store's transaction).
pub fn prepare_with(catalogue: &Catalogue, request: EnqueueRequest) -> Result<NewJob> {
    validate_tenant_id(&request.tenant_id)?;
    let spec = catalogue
        .get(&request.kind)
        .ok_or_else(|| Error::UnknownKind(request.kind.clone()))?;
    let size = serde_json::to_vec(&request.params)
        .map_err(|e| Error::validation("params", e.to_string()))?
        .len();
    if size > MAX_PARAMS_BYTES {
        return Err(Error::PayloadTooLarge {
            size,
            limit: MAX_PARAMS_BYTES,
        });
    }
    if contains_nul(&request.params) {
        return Err(Error::validation(
            "params",
            "must not contain the NUL character (\\u0000)",
        ));
    }
    (spec.validate)(&request.params).map_err(|message| Error::validation("params", message))?;
    let queue = request.queue.unwrap_or_else(|| spec.queue.clone());
    validate_queue_name(&queue).map_err(|message| Error::validation("queue", message))?;
    if let Some(run_at) = request.run_at {
        if !RUN_AT_RANGE.contains(&run_at.timestamp()) {
            return Err(Error::validation(
                "runAt",
                "must be between the years 2000 and 9999",
            ));
        }
    }
    let priority = request.priority.unwrap_or(DEFAULT_PRIORITY);
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(Error::validation(
            "priority",
            "must be from 0 (most urgent) to 9",
        ));
    }
    let max_attempts = request.max_attempts.unwrap_or(spec.max_attempts);
    if !MAX_ATTEMPTS_RANGE.contains(&max_attempts) {
        return Err(Error::validation("maxAttempts", "must be from 1 to 100"));
    }
    if let Some(key) = &request.idempotency_key {
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_LEN
            || key.chars().any(char::is_control)
        {
            return Err(Error::validation(
                "idempotencyKey",
                "must be 1-255 characters without control characters",
            ));
        }
    }
    Ok(NewJob {
        id: JobId::new(),
        tenant_id: request.tenant_id,
        kind: request.kind,
        queue,
        priority,
        params: request.params,
        run_at: request.run_at,
        max_attempts,
        idempotency_key: request.idempotency_key,
        inputs: request.inputs,
    })
}

fn at_index(index: usize, error: Error) -> Error {
    match error {
        Error::Validation { field, message } => Error::Validation {
            field: format!("jobs[{index}].{field}"),
            message,
        },
        Error::UnknownKind(kind) => Error::validation(
            format!("jobs[{index}].kind"),
            format!("unknown job kind {kind:?}"),
        ),
        Error::PayloadTooLarge { size, limit } => Error::validation(
            format!("jobs[{index}].params"),
            format!("params are {size} bytes, larger than the {limit}-byte limit"),
        ),
        other => other,
    }
}

/// Tenant ids: 1–64 characters of `A-Z a-z 0-9 _ -`.
pub fn validate_tenant_id(tenant_id: &str) -> Result<()> {
    let ok = !tenant_id.is_empty()
        && tenant_id.len() <= 64
        && tenant_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::validation(
            "tenant_id",
            format!("{tenant_id:?} must be 1-64 characters of A-Z, a-z, 0-9, '_', '-'"),
        ))
    }
}
