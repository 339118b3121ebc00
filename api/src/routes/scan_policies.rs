//! `/v1/leakage/policies` and `/v1/classification/policies`: a tenant's scan
//! policies. Both families share the handling here (paging, patching the
//! body, audit); each has its own request and view types because their
//! bodies differ (leakage: `patterns` and `allowlist`; classification:
//! `rules`). Reading needs any key of the tenant, writing an admin key.
//! Scans take a snapshot of their policies when created, so an edit never
//! changes a scan under way.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use longhaul_core::scans::policies::{
    parse_policy_id, AllowlistSpec, ClassificationRule, ClassificationSpec, LeakagePattern,
    LeakageSpec, PolicySnapshot,
};
use longhaul_core::scans::{NewPolicy, Policy, PolicyFamily, PolicyPatch};
use longhaul_core::tenancy::{Role, Tenant};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::{BodyRejected, LockedOut, TooLarge, Unauthorized};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_leakage, list_leakage))
        .routes(routes!(read_leakage, update_leakage, delete_leakage))
        .routes(routes!(create_classification, list_classification))
        .routes(routes!(
            read_classification,
            update_classification,
            delete_classification
        ))
}

/// Largest page of a listing, and the default one.
pub const MAX_PAGE: u32 = 200;
pub const DEFAULT_PAGE: u32 = 50;

/// A listing's `limit`, checked.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::validation(
            "limit",
            format!("must be from 1 to {MAX_PAGE}"),
        )),
    }
}

/// `GET …/policies` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPolicies {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

// ---- leakage ----------------------------------------------------------------

/// `POST /v1/leakage/policies`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeakagePolicyRequest {
    /// 1 to 100 characters, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// At most 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub description: String,
    /// Default true; a disabled policy runs only when a scan names it.
    pub enabled: Option<bool>,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub patterns: Vec<LeakagePattern>,
    #[serde(default)]
    pub allowlist: AllowlistSpec,
}

/// `PATCH /v1/leakage/policies/{id}`: what is given replaces what was.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeakagePolicyPatch {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    pub enabled: Option<bool>,
    #[schema(max_items = 100)]
    pub patterns: Option<Vec<LeakagePattern>>,
    pub allowlist: Option<AllowlistSpec>,
}

/// A leakage policy.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeakagePolicyView {
    #[schema(example = "lkp_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub patterns: Vec<LeakagePattern>,
    pub allowlist: AllowlistSpec,
    /// Goes up by one with every change.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LeakagePolicyView {
    fn of(policy: Policy) -> Result<Self, ApiError> {
        let spec = LeakageSpec::parse(&policy.spec).map_err(|error| {
            tracing::error!(policy = %policy.id_text(), %error, "a stored leakage policy does not parse");
            ApiError::internal()
        })?;
        Ok(LeakagePolicyView {
            id: policy.id_text(),
            name: policy.name,
            description: policy.description,
            enabled: policy.enabled,
            patterns: spec.patterns,
            allowlist: spec.allowlist,
            version: policy.version,
            created_at: policy.created_at,
            updated_at: policy.updated_at,
        })
    }
}

/// One page of leakage policies, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeakagePolicyPage {
    pub data: Vec<LeakagePolicyView>,
    pub next_cursor: Option<String>,
}

fn to_value(value: impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|error| {
        tracing::error!(%error, "encoding a policy body");
        ApiError::internal()
    })
}

/// Create a leakage policy: `regex`, `keyword` and `entropy` patterns with
/// severities, and an allowlist of fingerprints and path globs.
///
/// Patterns are compiled here, so a stored policy always runs: a regex that
/// does not compile, matches the empty string or is too large is refused.
#[utoipa::path(
    post,
    path = "/v1/leakage/policies",
    operation_id = "createLeakagePolicy",
    tag = "leakage",
    security(("bearer" = [])),
    request_body = LeakagePolicyRequest,
    responses(
        (status = 201, description = "Created", body = LeakagePolicyView),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad pattern, severity or allowlist \
            entry (the field is named), or 200 policies already", body = ErrorBody),
        LockedOut,
    )
)]
async fn create_leakage(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<LeakagePolicyRequest>,
) -> Result<Response, ApiError> {
    let spec = to_value(LeakageSpec {
        patterns: body.patterns,
        allowlist: body.allowlist,
    })?;
    let policy = create(
        &state,
        &caller,
        PolicyFamily::Leakage,
        body.name,
        body.description,
        body.enabled,
        spec,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(LeakagePolicyView::of(policy)?)).into_response())
}

/// List the tenant's leakage policies, oldest first.
#[utoipa::path(
    get,
    path = "/v1/leakage/policies",
    operation_id = "listLeakagePolicies",
    tag = "leakage",
    security(("bearer" = [])),
    params(ListPolicies),
    responses(
        (status = 200, description = "One page", body = LeakagePolicyPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_leakage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListPolicies>,
) -> Result<Json<LeakagePolicyPage>, ApiError> {
    let (policies, next_cursor) = list(&state, &caller, PolicyFamily::Leakage, query).await?;
    Ok(Json(LeakagePolicyPage {
        data: policies
            .into_iter()
            .map(LeakagePolicyView::of)
            .collect::<Result<_, _>>()?,
        next_cursor,
    }))
}

/// A leakage policy.
#[utoipa::path(
    get,
    path = "/v1/leakage/policies/{id}",
    operation_id = "getLeakagePolicy",
    tag = "leakage",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`lkp_…`")),
    responses(
        (status = 200, description = "The policy", body = LeakagePolicyView),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn read_leakage(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<LeakagePolicyView>, ApiError> {
    let policy = read(&state, &caller, PolicyFamily::Leakage, &id).await?;
    Ok(Json(LeakagePolicyView::of(policy)?))
}

/// Change a leakage policy; `patterns` and `allowlist`, when given, replace
/// the old ones whole.
#[utoipa::path(
    patch,
    path = "/v1/leakage/policies/{id}",
    operation_id = "updateLeakagePolicy",
    tag = "leakage",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "`lkp_…`"),
        ("If-Match" = Option<String>, Header, nullable = false,
            description = "The `version` the change was made against: refused (409) if the policy changed since"),
    ),
    request_body = LeakagePolicyPatch,
    responses(
        (status = 200, description = "The changed policy", body = LeakagePolicyView),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken, or the policy is no longer at the `If-Match` version", body = ErrorBody),
        (status = 422, description = "`validation_error`", body = ErrorBody),
        LockedOut,
    )
)]
async fn update_leakage(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<LeakagePolicyPatch>,
) -> Result<Json<LeakagePolicyView>, ApiError> {
    let family = PolicyFamily::Leakage;
    let mut expected_version = if_match(&headers)?;
    let spec = if body.patterns.is_some() || body.allowlist.is_some() {
        let current = read(&state, &caller, family, &id).await?;
        // The body is merged into what was read: applied only to that.
        expected_version.get_or_insert(current.version);
        let mut spec = LeakageSpec::parse(&current.spec)?;
        if let Some(patterns) = body.patterns {
            spec.patterns = patterns;
        }
        if let Some(allowlist) = body.allowlist {
            spec.allowlist = allowlist;
        }
        Some(to_value(spec)?)
    } else {
        None
    };
    let patch = PolicyPatch {
        name: body.name,
        description: body.description,
        enabled: body.enabled,
        spec,
        expected_version,
    };
    let policy = update(&state, &caller, family, &id, patch).await?;
    Ok(Json(LeakagePolicyView::of(policy)?))
}

/// Delete a leakage policy (scans already created keep their snapshot).
#[utoipa::path(
    delete,
    path = "/v1/leakage/policies/{id}",
    operation_id = "deleteLeakagePolicy",
    tag = "leakage",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`lkp_…`")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn delete_leakage(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    delete(&state, &caller, PolicyFamily::Leakage, &id).await
}

// ---- classification -----------------------------------------------------------

/// `POST /v1/classification/policies`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassificationPolicyRequest {
    /// 1 to 100 characters, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// At most 1000 characters.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub description: String,
    pub enabled: Option<bool>,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub rules: Vec<ClassificationRule>,
}

/// `PATCH /v1/classification/policies/{id}`: `rules`, when given, replaces
/// the old ones whole.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassificationPolicyPatch {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    pub enabled: Option<bool>,
    #[schema(max_items = 100)]
    pub rules: Option<Vec<ClassificationRule>>,
}

/// A classification policy.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationPolicyView {
    #[schema(example = "clp_01932f6e3b7a7c3e9d2a4b5c6d7e8f90")]
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub rules: Vec<ClassificationRule>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ClassificationPolicyView {
    fn of(policy: Policy) -> Result<Self, ApiError> {
        let spec = ClassificationSpec::parse(&policy.spec).map_err(|error| {
            tracing::error!(policy = %policy.id_text(), %error, "a stored classification policy does not parse");
            ApiError::internal()
        })?;
        Ok(ClassificationPolicyView {
            id: policy.id_text(),
            name: policy.name,
            description: policy.description,
            enabled: policy.enabled,
            rules: spec.rules,
            version: policy.version,
            created_at: policy.created_at,
            updated_at: policy.updated_at,
        })
    }
}

/// One page of classification policies, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationPolicyPage {
    pub data: Vec<ClassificationPolicyView>,
    pub next_cursor: Option<String>,
}

/// Create a classification policy: rules that are a regex (with the level
/// and data types a match implies) or a built-in detector (with the level
/// it implies in this tenant).
#[utoipa::path(
    post,
    path = "/v1/classification/policies",
    operation_id = "createClassificationPolicy",
    tag = "classification",
    security(("bearer" = [])),
    request_body = ClassificationPolicyRequest,
    responses(
        (status = 201, description = "Created", body = ClassificationPolicyView),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad rule, level, data type or \
            detector (the field is named), or 200 policies already", body = ErrorBody),
        LockedOut,
    )
)]
async fn create_classification(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ClassificationPolicyRequest>,
) -> Result<Response, ApiError> {
    let spec = to_value(ClassificationSpec { rules: body.rules })?;
    let policy = create(
        &state,
        &caller,
        PolicyFamily::Classification,
        body.name,
        body.description,
        body.enabled,
        spec,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(ClassificationPolicyView::of(policy)?),
    )
        .into_response())
}

/// List the tenant's classification policies, oldest first.
#[utoipa::path(
    get,
    path = "/v1/classification/policies",
    operation_id = "listClassificationPolicies",
    tag = "classification",
    security(("bearer" = [])),
    params(ListPolicies),
    responses(
        (status = 200, description = "One page", body = ClassificationPolicyPage),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad limit or cursor", body = ErrorBody),
        LockedOut,
    )
)]
async fn list_classification(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListPolicies>,
) -> Result<Json<ClassificationPolicyPage>, ApiError> {
    let (policies, next_cursor) =
        list(&state, &caller, PolicyFamily::Classification, query).await?;
    Ok(Json(ClassificationPolicyPage {
        data: policies
            .into_iter()
            .map(ClassificationPolicyView::of)
            .collect::<Result<_, _>>()?,
        next_cursor,
    }))
}

/// A classification policy.
#[utoipa::path(
    get,
    path = "/v1/classification/policies/{id}",
    operation_id = "getClassificationPolicy",
    tag = "classification",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`clp_…`")),
    responses(
        (status = 200, description = "The policy", body = ClassificationPolicyView),
        Unauthorized,
        (status = 403, description = "`forbidden`: not a tenant key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn read_classification(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ClassificationPolicyView>, ApiError> {
    let policy = read(&state, &caller, PolicyFamily::Classification, &id).await?;
    Ok(Json(ClassificationPolicyView::of(policy)?))
}

/// Change a classification policy.
#[utoipa::path(
    patch,
    path = "/v1/classification/policies/{id}",
    operation_id = "updateClassificationPolicy",
    tag = "classification",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "`clp_…`"),
        ("If-Match" = Option<String>, Header, nullable = false,
            description = "The `version` the change was made against: refused (409) if the policy changed since"),
    ),
    request_body = ClassificationPolicyPatch,
    responses(
        (status = 200, description = "The changed policy", body = ClassificationPolicyView),
        BodyRejected,
        TooLarge,
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken, or the policy is no longer at the `If-Match` version", body = ErrorBody),
        (status = 422, description = "`validation_error`", body = ErrorBody),
        LockedOut,
    )
)]
async fn update_classification(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ClassificationPolicyPatch>,
) -> Result<Json<ClassificationPolicyView>, ApiError> {
    let spec = body
        .rules
        .map(|rules| to_value(ClassificationSpec { rules }))
        .transpose()?;
    let patch = PolicyPatch {
        name: body.name,
        description: body.description,
        enabled: body.enabled,
        spec,
        expected_version: if_match(&headers)?,
    };
    let policy = update(&state, &caller, PolicyFamily::Classification, &id, patch).await?;
    Ok(Json(ClassificationPolicyView::of(policy)?))
}

/// Delete a classification policy.
#[utoipa::path(
    delete,
    path = "/v1/classification/policies/{id}",
    operation_id = "deleteClassificationPolicy",
    tag = "classification",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "`clp_…`")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized,
        (status = 403, description = "`forbidden`: needs an admin key", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        LockedOut,
    )
)]
async fn delete_classification(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    delete(&state, &caller, PolicyFamily::Classification, &id).await
}

// ---- shared -----------------------------------------------------------------------

/// `If-Match: <version>` (quoted or not): the version a change was made
/// against.
fn if_match(headers: &HeaderMap) -> Result<Option<i32>, ApiError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|text| text.trim().trim_matches('"'))
        .and_then(|text| text.parse::<i32>().ok())
        .filter(|version| *version > 0)
        .map(Some)
        .ok_or_else(|| ApiError::validation("If-Match", "must be a policy version, e.g. \"3\""))
}

fn policy_id(family: PolicyFamily, text: &str) -> Result<uuid::Uuid, ApiError> {
    parse_policy_id(family, text)
        .ok_or_else(|| ApiError::not_found(format!("policy {text} not found")))
}

async fn create(
    state: &AppState,
    caller: &Caller,
    family: PolicyFamily,
    name: String,
    description: String,
    enabled: Option<bool>,
    spec: Value,
) -> Result<Policy, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let new = NewPolicy {
        family,
        name,
        description,
        enabled: enabled.unwrap_or(true),
        spec,
    };
    new.validate()?;
    Ok(state
        .stores
        .create_policy(&tenant.id, &new, state.clock.now(), &caller.actor())
        .await?)
}

async fn read(
    state: &AppState,
    caller: &Caller,
    family: PolicyFamily,
    id: &str,
) -> Result<Policy, ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    Ok(state
        .stores
        .get_policy(&tenant.id, family, policy_id(family, id)?)
        .await?)
}

async fn list(
    state: &AppState,
    caller: &Caller,
    family: PolicyFamily,
    query: ListPolicies,
) -> Result<(Vec<Policy>, Option<String>), ApiError> {
    let tenant = caller.tenant_role(Role::Viewer)?;
    let limit = page_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(|text| {
            parse_policy_id(family, text)
                .ok_or_else(|| ApiError::validation("cursor", "is not a cursor this API returned"))
        })
        .transpose()?;
    let mut policies = state
        .stores
        .list_policies(&tenant.id, family, after, limit + 1)
        .await?;
    let next = crate::routes::trim_page(&mut policies, limit).map(Policy::id_text);
    Ok((policies, next))
}

async fn update(
    state: &AppState,
    caller: &Caller,
    family: PolicyFamily,
    id: &str,
    patch: PolicyPatch,
) -> Result<Policy, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    let id = policy_id(family, id)?;
    if patch.is_empty() {
        return Err(ApiError::validation("body", "change at least one field"));
    }
    patch.validate(family)?;
    Ok(state
        .stores
        .update_policy(
            &tenant.id,
            family,
            id,
            &patch,
            state.clock.now(),
            &caller.actor(),
        )
        .await?)
}

async fn delete(
    state: &AppState,
    caller: &Caller,
    family: PolicyFamily,
    id: &str,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_role(Role::Admin)?;
    state
        .stores
        .delete_policy(&tenant.id, family, policy_id(family, id)?, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The snapshots of the policies a scan runs: those named (each must exist;
/// disabled ones run when named), or else every enabled one.
pub async fn scan_policies(
    state: &AppState,
    tenant: &Tenant,
    family: PolicyFamily,
    ids: Option<&[String]>,
) -> Result<Vec<PolicySnapshot>, ApiError> {
    match ids {
        Some(ids) => {
            if ids.len() > 50 {
                return Err(ApiError::validation("policyIds", "at most 50 policies"));
            }
            let mut out: Vec<PolicySnapshot> = Vec::with_capacity(ids.len());
            for (index, text) in ids.iter().enumerate() {
                let field = format!("policyIds[{index}]");
                let id = parse_policy_id(family, text).ok_or_else(|| {
                    ApiError::validation(&field, format!("is not a {} policy id", family.as_str()))
                })?;
                let policy = match state.stores.get_policy(&tenant.id, family, id).await {
                    Ok(policy) => policy,
                    Err(longhaul_core::Error::NoSuchResource { .. }) => {
                        return Err(ApiError::validation(
                            &field,
                            format!("no policy {text} in this tenant"),
                        ))
                    }
                    Err(other) => return Err(other.into()),
                };
                if !out.iter().any(|p| p.id == *text) {
                    out.push(policy.snapshot());
                }
            }
            Ok(out)
        }
        None => {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let page = state
                    .stores
                    .list_policies(&tenant.id, family, after, MAX_PAGE)
                    .await?;
                let done = page.len() < MAX_PAGE as usize;
                after = page.last().map(|p| p.id);
                out.extend(page.iter().filter(|p| p.enabled).map(Policy::snapshot));
                if done {
                    return Ok(out);
                }
            }
        }
    }
}

/// The ids of the policies a scan ran, for its view.
pub fn snapshot_ids(policies: &[PolicySnapshot]) -> Value {
    json!(policies
        .iter()
        .map(|p| json!({"id": p.id, "version": p.version}))
        .collect::<Vec<_>>())
}
