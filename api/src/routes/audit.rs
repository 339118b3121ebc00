//! `/v1/audit/events`: a tenant's audit log. `GET` lists it newest first (or
//! oldest first with `order=asc`) with filters and cursor pagination; `POST`
//! lets the tenant's own applications add events, up to 1,000 per request,
//! validated as a whole (one bad event refuses the batch, naming it).
//! Reading needs `admin` (the log names keys and IPs); sending needs
//! `developer`, as creating jobs does.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use longhaul_core::audit::{
    check_ingest, AuditCursor, AuditEvent, AuditFilter, Ingested, NewAuditEvent, Order,
    DEFAULT_PAGE, MAX_PAGE,
};
use longhaul_core::tenancy::Role;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::{BodyRejected, LockedOut, TooLarge, Unauthorized};
use crate::routes::jobs::time_param;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, ingest))
}

/// `GET /v1/audit/events` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAuditEvents {
    /// RFC 3339; events that occurred at or after it.
    pub from: Option<String>,
    /// RFC 3339; events that occurred before it.
    pub to: Option<String>,
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub actor_key_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// `api`, `system` or `application`.
    pub source: Option<String>,
    /// `desc` (newest first, the default) or `asc`.
    pub order: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of audit events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub data: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/audit/events` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestAuditEvents {
    /// 1 to 1,000 events.
    #[schema(min_items = 1, max_items = 1000)]
    pub events: Vec<NewAuditEvent>,
}

impl ListAuditEvents {
    fn filter(&self) -> Result<AuditFilter, ApiError> {
        if let Some(source) = &self.source {
            if !["api", "system", "application"].contains(&source.as_str()) {
                return Err(ApiError::validation(
                    "source",
                    "must be api, system or application",
                ));
            }
        }
        let filter = AuditFilter {
            from: time_param("from", self.from.as_deref())?,
            to: time_param("to", self.to.as_deref())?,
            action: self.action.clone(),
            actor_id: self.actor_id.clone(),
            actor_key_id: self.actor_key_id.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            source: self.source.clone(),
        };
        filter.check()?;
        Ok(filter)
    }

    fn order(&self) -> Result<Order, ApiError> {
        match self.order.as_deref() {
            None | Some("desc") => Ok(Order::NewestFirst),
            Some("asc") => Ok(Order::OldestFirst),
            Some(_) => Err(ApiError::validation("order", "must be asc or desc")),
        }
    }

    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
            Some(_) => Err(ApiError::validation(
                "limit",
                format!("must be from 1 to {MAX_PAGE}"),
            )),
        }
    }

    fn cursor(&self) -> Result<Option<AuditCursor>, ApiError> {
        self.cursor
            .as_deref()
            .map(|text| text.parse::<AuditCursor>().map_err(ApiError::from))
            .transpose()
    }
}

/// List the tenant's audit log, newest first (or oldest first with `order=asc`).
#[utoipa::path(
    get,
    path = "/v1/audit/events",
    operation_id = "listAuditEvents",
    tag = "audit",
    security(("bearer" = [])),
    params(ListAuditEvents),
    responses(
        (status = 200, description = "One page of events", body = AuditPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad time, source, order, limit or \
            cursor (`details.field` names it)", body = ErrorBody),
        LockedOut,
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListAuditEvents>,
) -> Result<Json<AuditPage>, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let filter = query.filter()?;
    let order = query.order()?;
    let limit = query.limit()?;
    let after = query.cursor()?;
    // One row more than the page tells whether another page follows.
    let mut data = state
        .stores
        .list_audit_events(&tenant.id, &filter, after, order, limit + 1)
        .await?;
    let next_cursor = crate::routes::trim_page(&mut data, limit)
        .map(|event| event.cursor().map(|cursor| cursor.to_string()))
        .transpose()?;
    Ok(Json(AuditPage { data, next_cursor }))
}

/// Add the tenant's own application events to its audit log.
///
/// Validated as a whole: one bad event refuses the batch, naming it
/// (`events[i].field`). An event whose `externalId` the log already holds is
/// counted as a duplicate and not stored again.
#[utoipa::path(
    post,
    path = "/v1/audit/events",
    operation_id = "ingestAuditEvents",
    tag = "audit",
    security(("bearer" = [])),
    request_body = IngestAuditEvents,
    responses(
        (status = 201, description = "Stored (and duplicates skipped)", body = Ingested),
        BodyRejected,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs a developer key; `tenant_suspended`",
            body = ErrorBody),
        TooLarge,
        (status = 422, description = "`validation_error`: an invalid event (`events[i].field`), \
            none or over 1,000", body = ErrorBody),
        LockedOut,
    )
)]
async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<IngestAuditEvents>,
) -> Result<(StatusCode, Json<Ingested>), ApiError> {
    let tenant = caller.tenant_writer(Role::Developer)?;
    let events = check_ingest(
        body.events,
        state.clock.now(),
        tenant.audit_log_retention_days(),
    )?;
    let ingested = state
        .stores
        .ingest_audit_events(&tenant.id, &caller.actor(), &events)
        .await?;
    Ok((StatusCode::CREATED, Json(ingested)))
}
