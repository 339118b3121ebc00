//! `GET /v1/jobs/{id}/events`: Server-Sent Events for one job. The current
//! state comes first, then each new event of the job's log (progress,
//! transitions) as it is written, then the final state, and the stream ends.
//!
//! Events come from the job's event log in the database, so a subscriber on
//! any API replica sees every event; `Last-Event-ID` resumes after the last
//! event a client saw. A stream does not poll: it reads the database when it
//! opens (and to catch up after a resume or a lag), then follows the
//! process's [`JobEventHub`], which reads new events for all streams at once.
//! Streams are capped per key and per process (`429 rate_limited`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use longhaul_core::job::{Job, JobEvent};
use longhaul_core::tenancy::Role;
use longhaul_core::{JobClient, JobId};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiPath;
use crate::job_event_hub::{Following, JobEventHub, Next};
use crate::openapi::Unauthorized;
use crate::state::AppState;
use crate::stream_slots::StreamSlot;

/// Events read per query when a stream reads the database itself.
const PAGE: u32 = 500;
/// Event kinds after which the job may have ended.
const TERMINAL_KINDS: [&str; 3] = ["succeeded", "failed", "cancelled"];

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Follow a job as Server-Sent Events.
///
/// First `event: state` (data: `{id, status, progress, attempt, error, result,
/// finishedAt}`), then each new entry of the job's event log as it is written
/// (`event:` its kind: `started`, `progress`, `checkpoint`, `retry_scheduled`,
/// `succeeded`, …; `id:` its log id; data: `{at, attempt, data}`), then the
/// final `state` once the job has finished, and the stream ends.
/// `Last-Event-ID` resumes after the entry a client last saw.
///
/// A key may hold `LONGHAUL_SSE_MAX_STREAMS_PER_KEY` (20) streams open on one
/// API server, which serves `LONGHAUL_SSE_MAX_STREAMS` (2,000) at most; past
/// either, `429 rate_limited` with `Retry-After` (`details.scope`: `key` or
/// `process`). A closed stream frees its place at once.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    operation_id = "followJobEvents",
    tag = "jobs",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The job id", example = "job_01932f6e3b7a7c3e9d2a4b5c6d7e8f90"),
        ("Last-Event-ID" = Option<i64>, Header, nullable = false,
            description = "Resume after this event log id (sent by browsers on reconnect)"),
    ),
    responses(
        (status = 200, description = "A stream of `state` and job log events",
            content_type = "text/event-stream", body = String),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job in the caller's tenant",
            body = ErrorBody),
        (status = 429, description = "`rate_limited`: the key (`details.scope: key`) or the server \
            (`process`) has as many event streams open as allowed; or `brute_force_lockout`",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tenant_id = caller.tenant_role(Role::Viewer)?.id.clone();
    let id: JobId = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("job {id} not found")))?;
    let slot = state.event_streams.acquire(&caller.key.id)?;
    let resume_after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    // The log position first, then the state: an event written in between is
    // then sent, never lost (a terminal one would otherwise leave the stream
    // waiting forever).
    let after = match resume_after {
        Some(after) => after,
        None => latest_event_id(&state.jobs, &tenant_id, id).await?,
    };
    let job = state.jobs.get(&tenant_id, id).await?;
    let follow = Follow {
        jobs: state.jobs.clone(),
        hub: state.event_hub.clone(),
        tenant_id,
        id,
        after,
        pending: VecDeque::from([state_event(&job)]),
        // A resumed stream first reads what it missed; a new one has nothing
        // to read and joins the hub at once.
        phase: if resume_after.is_some() {
            Phase::Read { until: None }
        } else {
            Phase::Join
        },
        following: None,
        done: job.state.is_terminal(),
        _slot: slot,
    };
    let stream = stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The id of the job's newest event (0 if none), so a new subscriber sees
/// only what happens from now on.
async fn latest_event_id(jobs: &JobClient, tenant_id: &str, id: JobId) -> Result<i64, ApiError> {
    let mut after = 0;
    loop {
        let page = jobs.events(tenant_id, id, after, PAGE).await?;
        match page.last() {
            Some(last) => after = last.id,
            None => return Ok(after),
        }
        if page.len() < PAGE as usize {
            return Ok(after);
        }
    }
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the job's log from the database after `after`, a page per
    /// step, until a short page or past `until`.
    Read { until: Option<i64> },
    /// Joining the hub (then reading what the hub will not deliver).
    Join,
    /// Following the hub.
    Live,
}

/// The state of one stream.
struct Follow {
    jobs: JobClient,
    hub: JobEventHub,
    tenant_id: String,
    id: JobId,
    /// The newest event sent (or where the stream started).
    after: i64,
    /// Events ready to send, oldest first.
    pending: VecDeque<Event>,
    phase: Phase,
    following: Option<Following>,
    /// The job reached a terminal state (or the stream failed): send what is
    /// pending, then end.
    done: bool,
    /// The stream's place under the caps, freed when it is dropped.
    _slot: StreamSlot,
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if let Err(error) = self.step().await {
                tracing::warn!(job_id = %self.id, %error, "event stream ended on a read error");
                self.done = true;
            }
        }
    }

    /// Moves the stream on: reads a page, joins the hub, or waits for the
    /// hub's next event.
    async fn step(&mut self) -> longhaul_core::Result<()> {
        match self.phase {
            Phase::Read { until } => {
                let page = self
                    .jobs
                    .events(&self.tenant_id, self.id, self.after, PAGE)
                    .await?;
                let full = page.len() == PAGE as usize;
                self.accept(page.iter()).await?;
                if !full || until.is_some_and(|until| self.after >= until) {
                    self.phase = if self.following.is_some() {
                        Phase::Live
                    } else {
                        Phase::Join
                    };
                }
            }
            Phase::Join => {
                let (following, cursor) = self.hub.follow(self.id, self.after).await;
                self.following = Some(following);
                // Events up to the hub's cursor were dispatched before this
                // stream listened: read them here.
                self.phase = if cursor > self.after {
                    Phase::Read {
                        until: Some(cursor),
                    }
                } else {
                    Phase::Live
                };
            }
            Phase::Live => {
                let Some(following) = self.following.as_mut() else {
                    self.phase = Phase::Join;
                    return Ok(());
                };
                match following.next().await {
                    Some(Next::Event(event)) => self.accept([event.as_ref()]).await?,
                    // Read what the channel dropped, then follow again.
                    Some(Next::Lagged) => self.phase = Phase::Read { until: None },
                    None => {
                        tracing::warn!(job_id = %self.id, "the job event hub closed a stream");
                        self.done = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues the events not sent yet; after a terminal one, the final
    /// state if the job has indeed ended.
    async fn accept<'e>(
        &mut self,
        events: impl IntoIterator<Item = &'e JobEvent>,
    ) -> longhaul_core::Result<()> {
        let mut terminal = false;
        for event in events {
            if event.id <= self.after {
                continue;
            }
            self.after = event.id;
            terminal |= TERMINAL_KINDS.contains(&event.kind.as_str());
            self.pending.push_back(log_event(event));
        }
        if terminal {
            let job = self.jobs.get(&self.tenant_id, self.id).await?;
            if job.state.is_terminal() {
                self.pending.push_back(state_event(&job));
                self.done = true;
            }
        }
        Ok(())
    }
}

/// `event: state`: where the job stands.
fn state_event(job: &Job) -> Event {
    let data = json!({
        "id": job.id,
        "status": job.state,
        "progress": job.progress,
        "attempt": job.attempt,
        "error": job.tenant_error(),
        "result": job.result,
        "finishedAt": job.finished_at,
    });
    Event::default().event("state").data(data.to_string())
}

/// One entry of the job's event log, named by its kind, with its log id.
fn log_event(event: &JobEvent) -> Event {
    let data = json!({ "at": event.at, "attempt": event.attempt, "data": event.data });
    Event::default()
        .id(event.id.to_string())
        .event(event.kind.as_str())
        .data(data.to_string())
}
