//! `GET /v1/jobs/{id}/events`: Server-Sent Events for one job. The current
//! state comes first, then each new event of the job's log (progress,
//! transitions) as it is written, then the final state, and the stream ends.
//!
//! Events come from the job's event log in the database, so a subscriber on
//! any API replica sees every event, Redis or not; `Last-Event-ID` resumes
//! after the last event a client saw.

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
use crate::openapi::{LockedOut, Unauthorized};
use crate::state::AppState;

/// How often a stream looks for new events.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
const PAGE: u32 = 500;

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
        LockedOut,
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
        tenant_id,
        id,
        after,
        pending: vec![state_event(&job)],
        done: job.state.is_terminal(),
        finished: false,
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

/// The state of one stream.
struct Follow {
    jobs: JobClient,
    tenant_id: String,
    id: JobId,
    after: i64,
    /// Events ready to send, oldest last.
    pending: Vec<Event>,
    /// The job reached a terminal state: send what is pending, then end.
    done: bool,
    finished: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop() {
                return Some(event);
            }
            if self.done || self.finished {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            if let Err(error) = self.poll().await {
                tracing::warn!(job_id = %self.id, %error, "event stream ended on a read error");
                self.finished = true;
            }
        }
    }

    /// Reads new events; on a terminal one, appends the final state.
    async fn poll(&mut self) -> longhaul_core::Result<()> {
        let events = self
            .jobs
            .events(&self.tenant_id, self.id, self.after, PAGE)
            .await?;
        let mut ready = Vec::with_capacity(events.len() + 1);
        let mut terminal = false;
        for event in &events {
            self.after = event.id;
            terminal |= matches!(event.kind.as_str(), "succeeded" | "failed" | "cancelled");
            ready.push(log_event(event));
        }
        if terminal || events.is_empty() {
            let job = self.jobs.get(&self.tenant_id, self.id).await?;
            if job.state.is_terminal() {
                ready.push(state_event(&job));
                self.done = true;
            }
        }
        ready.reverse();
        self.pending = ready;
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
