//! One rule for bad input across the API, on both stores: every field-level
//! problem (wrong type, out of range, unknown, missing, U+0000 in any text)
//! is `422 validation_error` naming the field in camelCase by its path in the
//! body or its query parameter; integers may be written as whole floats;
//! nothing is stored for a refused request; every listing refuses a cursor
//! it did not hand out; and the OpenAPI document carries the constraints
//! the server enforces.

use axum::http::{Method, StatusCode};
use longhaul_core::audit::Actor;
use longhaul_core::tenancy::{KeyMode, NewTenant, Role, Tenant};
use serde_json::{json, Value};

use crate::harness::TestDb;
use crate::http::{self, Reply, TestApp};

struct Api {
    app: TestApp,
    tenant: Tenant,
    /// An admin key of `tenant`.
    admin: String,
    operator: String,
}

async fn api(db: &TestDb) -> Api {
    let app = http::test_app(db).await;
    let tenant = app
        .stores
        .create_tenant(
            NewTenant {
                settings: json!({"dataBuckets": {"files": "files-bucket"}}),
                ..NewTenant::new("acme", "eu", "standard")
            },
            &Actor::system(),
        )
        .await
        .expect("tenant");
    let admin = app
        .stores
        .issue_api_key(
            Some(&tenant.id),
            "admin",
            Role::Admin,
            KeyMode::Live,
            &Actor::system(),
        )
        .await
        .expect("key")
        .secret;
    let operator = app
        .stores
        .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
        .await
        .expect("operator key")
        .secret;
    Api {
        app,
        tenant,
        admin,
        operator,
    }
}

impl Api {
    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        http::call(&self.app.router, method, path, Some(key), body).await
    }

    /// Who may make a call to `path`: the operator for tenants, else the admin.
    fn key_for(&self, path: &str) -> &str {
        if path.starts_with("/v1/tenants") {
            &self.operator
        } else {
            &self.admin
        }
    }

    /// Asserts `422 validation_error` naming `field`.
    async fn refused(&self, method: Method, path: &str, body: Option<Value>, field: &str) {
        let shown = format!("{method} {path} {}", body.clone().unwrap_or(Value::Null));
        let reply = self.call(method, path, self.key_for(path), body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{shown}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert_eq!(
            reply.body["error"]["details"]["field"],
            json!(field),
            "{shown}: {}",
            reply.body
        );
    }

    /// The number of items in a listing's first page.
    async fn count(&self, path: &str) -> usize {
        let reply = self.call(Method::GET, path, self.key_for(path), None).await;
        reply.assert_status(StatusCode::OK);
        reply.body["data"].as_array().expect("data").len()
    }
}

const NUL: &str = "a\u{0}b";

fn leakage_policy() -> Value {
    json!({
        "name": "mine",
        "patterns": [
            {"id": "acme-token", "type": "regex", "pattern": "acme_[a-z]{8}", "severity": "high"},
            {"id": "words", "type": "keyword", "keywords": ["hunter2"], "severity": "low"},
        ],
        "allowlist": {"paths": ["tests/**"]},
    })
}

fn classification_policy() -> Value {
    json!({
        "name": "mine",
        "rules": [{"type": "regex", "id": "emp", "pattern": "EMP-[0-9]{6}", "level": "confidential"}],
    })
}

/// `body` with `value` at `pointer` (whose parent must exist).
fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer");
    match body.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last.to_string(), value);
        }
        Some(Value::Array(items)) => items[last.parse::<usize>().expect("an index")] = value,
        _ => panic!("{pointer}"),
    }
    body
}

/// U+0000 in any text of a scan policy, created or patched, leakage or
/// classification, is refused naming the field, and nothing changes: on
/// PostgreSQL it used to be a 500, on SQLite it was stored.
async fn nul_in_scan_policies_is_refused_naming_the_field(db: TestDb) {
    let api = api(&db).await;
    let leakage = "/v1/leakage/policies";
    let classification = "/v1/classification/policies";
    let cases = [
        (
            leakage,
            with(leakage_policy(), "/description", json!(NUL)),
            "description",
        ),
        (leakage, with(leakage_policy(), "/name", json!(NUL)), "name"),
        (
            leakage,
            with(leakage_policy(), "/patterns/0/pattern", json!(NUL)),
            "patterns[0].pattern",
        ),
        (
            leakage,
            with(leakage_policy(), "/patterns/1/keywords/0", json!(NUL)),
            "patterns[1].keywords[0]",
        ),
        (
            leakage,
            with(leakage_policy(), "/allowlist/paths/0", json!(NUL)),
            "allowlist.paths[0]",
        ),
        (
            classification,
            with(classification_policy(), "/description", json!(NUL)),
            "description",
        ),
        (
            classification,
            with(classification_policy(), "/rules/0/pattern", json!(NUL)),
            "rules[0].pattern",
        ),
    ];
    for (path, body, field) in &cases {
        api.refused(Method::POST, path, Some(body.clone()), field)
            .await;
    }
    assert_eq!(api.count(leakage).await, 0, "a refused policy was stored");
    assert_eq!(api.count(classification).await, 0);

    // The same through PATCH: the stored policies stay as they were.
    let mut stored = Vec::new();
    for (path, body) in [
        (leakage, leakage_policy()),
        (classification, classification_policy()),
    ] {
        let created = api.call(Method::POST, path, &api.admin, Some(body)).await;
        created.assert_status(StatusCode::CREATED);
        stored.push((path, created.body));
    }
    let (_, leakage_view) = &stored[0];
    let (_, classification_view) = &stored[1];
    let leakage_one = format!("{leakage}/{}", leakage_view["id"].as_str().expect("id"));
    let classification_one = format!(
        "{classification}/{}",
        classification_view["id"].as_str().expect("id")
    );
    let patches = [
        (&leakage_one, json!({"description": NUL}), "description"),
        (
            &leakage_one,
            json!({"patterns": with(leakage_policy(), "/patterns/0/pattern", json!(NUL))["patterns"].clone()}),
            "patterns[0].pattern",
        ),
        (
            &leakage_one,
            json!({"allowlist": {"paths": ["ok/**", NUL]}}),
            "allowlist.paths[1]",
        ),
        (
            &classification_one,
            json!({"description": NUL}),
            "description",
        ),
        (
            &classification_one,
            json!({"rules": [{"type": "regex", "id": "x", "pattern": NUL, "level": "internal"}]}),
            "rules[0].pattern",
        ),
    ];
    for (path, body, field) in patches {
        api.refused(Method::PATCH, path, Some(body), field).await;
    }
    for ((_, before), path) in stored.iter().zip([&leakage_one, &classification_one]) {
        let now = api.call(Method::GET, path, &api.admin, None).await;
        now.assert_status(StatusCode::OK);
        assert_eq!(&now.body, before, "a refused PATCH changed {path}");
    }
}

/// Everywhere else tenant text reaches the database (bodies, query values),
/// U+0000 is refused the same way, on both stores.
async fn nul_anywhere_in_tenant_text_is_refused_naming_the_field(db: TestDb) {
    let api = api(&db).await;
    let tenant = format!("/v1/tenants/{}", api.tenant.id);
    let incident = format!("/v1/leakage/incidents/inc_{}", "ab".repeat(16));
    let schedule = json!({"name": "nightly", "cron": "0 3 * * *", "kind": "system.noop"});
    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::POST,
            "/v1/schedules".into(),
            Some(with(schedule.clone(), "/name", json!(NUL))),
            "name",
        ),
        (
            Method::POST,
            "/v1/schedules".into(),
            Some(with(schedule.clone(), "/cron", json!(NUL))),
            "cron",
        ),
        (
            Method::POST,
            "/v1/tenants".into(),
            Some(json!({"name": NUL})),
            "name",
        ),
        (
            Method::PATCH,
            tenant.clone(),
            Some(json!({"settings": {"note": NUL}})),
            "settings.note",
        ),
        (
            Method::POST,
            format!("{tenant}/suspend"),
            Some(json!({"reason": NUL})),
            "reason",
        ),
        (
            Method::POST,
            "/v1/api-keys".into(),
            Some(json!({"name": NUL, "role": "viewer"})),
            "name",
        ),
        (
            Method::POST,
            "/v1/leakage/scans".into(),
            Some(json!({"targets": [{"type": "url", "url": "https://example.com/a\u{0}"}]})),
            "targets[0].url",
        ),
        (
            Method::POST,
            "/v1/leakage/scans".into(),
            Some(json!({"targets": [{"type": "inline", "name": "a.env", "content": NUL}]})),
            "targets[0].content",
        ),
        (
            Method::POST,
            "/v1/classification/scans".into(),
            Some(json!({"scope": {"buckets": ["files"], "prefixes": [NUL]}})),
            "scope.prefixes[0]",
        ),
        (
            Method::POST,
            "/v1/audit/exports".into(),
            Some(json!({"format": "csv", "filters": {"action": NUL}})),
            "filters.action",
        ),
        (
            Method::POST,
            "/v1/audit/events".into(),
            Some(json!({"events": [{"action": "login", "details": {"who": NUL}}]})),
            "events[0].details.who",
        ),
        (
            Method::PATCH,
            incident.clone(),
            Some(json!({"status": "resolved", "note": NUL})),
            "note",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            Some(json!({"kind": "system.noop", "queue": NUL})),
            "queue",
        ),
        (
            Method::GET,
            "/v1/audit/events?action=a%00b".into(),
            None,
            "action",
        ),
        (
            Method::GET,
            "/v1/leakage/scans?cursor=%00".into(),
            None,
            "cursor",
        ),
        (Method::GET, "/v1/tenants?cursor=%00".into(), None, "cursor"),
    ];
    for (method, path, body, field) in cases {
        api.refused(method, &path, body, field).await;
    }
    // Nothing was stored.
    assert_eq!(api.count("/v1/schedules").await, 0);
    assert_eq!(api.count("/v1/tenants").await, 1);
    assert_eq!(api.count("/v1/jobs").await, 0);
    assert_eq!(api.count("/v1/audit/exports").await, 0);
    let keys = api
        .call(Method::GET, "/v1/api-keys", &api.admin, None)
        .await;
    assert_eq!(keys.body["data"].as_array().expect("keys").len(), 1);
    let read = api.call(Method::GET, &tenant, &api.operator, None).await;
    assert_eq!(read.body["status"], "active", "{}", read.body);
    assert_eq!(
        read.body["settings"]["dataBuckets"]["files"], "files-bucket",
        "{}",
        read.body
    );
    // A path segment holding U+0000 names nothing.
    api.call(Method::GET, "/v1/schedules/sch_%00", &api.admin, None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    api.call(Method::GET, "/v1/tenants/tnt_%00", &api.operator, None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

/// `GET /v1/tenants` refuses a cursor it did not hand out, as every other
/// listing does (it used to ignore it and answer a page).
async fn tenant_listing_refuses_a_garbage_cursor(db: TestDb) {
    let api = api(&db).await;
    for cursor in [
        "garbage",
        "tnt_nothex",
        "job_0193a4b2c3d47e8f9a0b1c2d3e4f5a6b",
    ] {
        api.refused(
            Method::GET,
            &format!("/v1/tenants?cursor={cursor}"),
            None,
            "cursor",
        )
        .await;
    }
    for other in [
        "/v1/jobs",
        "/v1/schedules",
        "/v1/leakage/policies",
        "/v1/leakage/scans",
        "/v1/leakage/incidents",
        "/v1/classification/scans",
        "/v1/audit/events",
        "/v1/audit/exports",
    ] {
        api.refused(
            Method::GET,
            &format!("{other}?cursor=garbage"),
            None,
            "cursor",
        )
        .await;
    }
    // A cursor it did hand out still pages.
    let first = api
        .call(Method::GET, "/v1/tenants?limit=1", &api.operator, None)
        .await;
    first.assert_status(StatusCode::OK);
    let cursor = first.body["nextCursor"].as_str().map(str::to_string);
    let cursor = cursor.unwrap_or_else(|| api.tenant.id.clone());
    api.call(
        Method::GET,
        &format!("/v1/tenants?cursor={cursor}"),
        &api.operator,
        None,
    )
    .await
    .assert_status(StatusCode::OK);
}

/// Wrong types and out-of-range values, in bodies and query strings, across
/// endpoints: all `422` with the documented camelCase field.
async fn bad_fields_are_422_with_their_camel_case_name(db: TestDb) {
    let api = api(&db).await;
    let job = |extra: Value| {
        let mut body = json!({"kind": "system.noop"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    let schedule = json!({"name": "nightly", "cron": "0 3 * * *", "kind": "system.noop"});
    let tenant = format!("/v1/tenants/{}", api.tenant.id);
    let bodies: Vec<(Method, String, Value, &str)> = vec![
        (Method::POST, "/v1/jobs".into(), json!({}), "kind"),
        (Method::POST, "/v1/jobs".into(), json!({"kind": 5}), "kind"),
        (
            Method::POST,
            "/v1/jobs".into(),
            job(json!({"priority": "high"})),
            "priority",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            job(json!({"priority": 7.5})),
            "priority",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            job(json!({"priority": 99})),
            "priority",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            job(json!({"priority": 70000})),
            "priority",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            job(json!({"maxAttempts": 0})),
            "maxAttempts",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            job(json!({"maxAttempts": 2.5})),
            "maxAttempts",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            job(json!({"runAt": "1900-01-01T00:00:00Z"})),
            "runAt",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            job(json!({"runAt": "tomorrow"})),
            "runAt",
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            job(json!({"colour": "red"})),
            "colour",
        ),
        (Method::POST, "/v1/jobs".into(), json!([1, 2]), "body"),
        (
            Method::POST,
            "/v1/schedules".into(),
            with(schedule.clone(), "/name", json!(7)),
            "name",
        ),
        (
            Method::POST,
            "/v1/schedules".into(),
            json!({"name": "n", "cron": "0 3 * * *", "kind": "system.noop", "jitterSeconds": -1}),
            "jitterSeconds",
        ),
        (
            Method::POST,
            "/v1/schedules".into(),
            json!({"name": "n", "cron": "0 3 * * *", "kind": "system.noop", "jitterSeconds": 4000}),
            "jitterSeconds",
        ),
        (
            Method::POST,
            "/v1/schedules".into(),
            json!({"name": "n", "cron": "0 3 * * *", "kind": "system.noop", "priority": 10}),
            "priority",
        ),
        (
            Method::POST,
            "/v1/schedules".into(),
            json!({"name": "n", "cron": "0 3 * * *", "kind": "system.noop", "overlapPolicy": "never"}),
            "overlapPolicy",
        ),
        (
            Method::PATCH,
            tenant.clone(),
            json!({"quotas": {"maxRunning": "ten"}}),
            "quotas.maxRunning",
        ),
        (
            Method::PATCH,
            tenant.clone(),
            json!({"quotas": {"maxQueued": 0}}),
            "quotas.maxQueued",
        ),
        (
            Method::POST,
            "/v1/api-keys".into(),
            json!({"name": "ci", "role": "boss"}),
            "role",
        ),
        (
            Method::POST,
            "/v1/leakage/policies".into(),
            json!({"name": "p", "patterns": [{"id": "e", "type": "entropy", "severity": "high",
                "threshold": 4.5, "minLength": 8.5}]}),
            "patterns[0].minLength",
        ),
        (
            Method::POST,
            "/v1/leakage/scans".into(),
            json!({"targets": [{"type": "url", "url": 5}]}),
            "targets[0].url",
        ),
        (
            Method::POST,
            "/v1/classification/scans".into(),
            json!({"scope": {"buckets": ["files"]}, "maxObjectBytes": "big"}),
            "maxObjectBytes",
        ),
        (
            Method::POST,
            "/v1/classification/scans".into(),
            json!({"scope": {"buckets": ["files"]}, "maxObjectBytes": -1}),
            "maxObjectBytes",
        ),
        (
            Method::POST,
            "/v1/audit/exports".into(),
            json!({"format": "xml"}),
            "format",
        ),
        (
            Method::POST,
            "/v1/audit/events".into(),
            json!({"events": [{"action": "login", "occurredAt": 12}]}),
            "events[0].occurredAt",
        ),
    ];
    for (method, path, body, field) in bodies {
        api.refused(method, &path, Some(body), field).await;
    }
    let queries = [
        ("/v1/jobs?limit=ten", "limit"),
        ("/v1/jobs?limit=2.5", "limit"),
        ("/v1/tenants?limit=abc", "limit"),
        ("/v1/tenants?limit=0", "limit"),
        ("/v1/schedules?limit=201", "limit"),
        ("/v1/schedules?colour=red", "colour"),
        (
            "/v1/schedules/sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90/next?count=1000",
            "count",
        ),
        (
            "/v1/schedules/sch_01932f6e3b7a7c3e9d2a4b5c6d7e8f90/next?count=x",
            "count",
        ),
        ("/v1/audit/events?limit=5000", "limit"),
        ("/v1/audit/events?order=sideways", "order"),
        ("/v1/leakage/incidents?status=closed", "status"),
        ("/v1/leakage/incidents?limit=-3", "limit"),
        ("/v1/leakage/policies?limit=1e3", "limit"),
        ("/v1/classification/scans?limit=9999999999999", "limit"),
        ("/v1/audit/exports?limit=0", "limit"),
        ("/v1/usage?period=2025-13", "period"),
    ];
    for (path, field) in queries {
        api.refused(Method::GET, path, None, field).await;
    }
    // A header is a field too.
    let long_key = "k".repeat(256);
    let reply = http::send(
        &api.app.router,
        http::request(
            Method::POST,
            "/v1/jobs",
            Some(&api.admin),
            &[("Idempotency-Key", long_key.as_str())],
            Some(json!({"kind": "system.noop"})),
        ),
    )
    .await;
    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert_eq!(reply.body["error"]["details"]["field"], "Idempotency-Key");
    assert_eq!(api.count("/v1/jobs").await, 0, "a refused job was stored");
    assert_eq!(api.count("/v1/schedules").await, 0);

    // Only a body that is not JSON at all is a 400.
    let broken = http::send(
        &api.app.router,
        axum::http::Request::post("/v1/jobs")
            .header("authorization", format!("Bearer {}", api.admin))
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{\"kind\": "))
            .expect("request"),
    )
    .await;
    broken.assert_error(StatusCode::BAD_REQUEST, "bad_request");
}

/// A number PostgreSQL would store but not give back (near `f64::MAX`) is
/// refused: stored in a tenant's settings it made every read of the tenant,
/// and so every request of its keys, a 500 (found by Schemathesis).
async fn numbers_that_would_not_read_back_are_refused(db: TestDb) {
    let api = api(&db).await;
    let tenant = format!("/v1/tenants/{}", api.tenant.id);
    api.refused(
        Method::PATCH,
        &tenant,
        Some(json!({"settings": {"limit": 1.797_693_134_862_315_5e308}})),
        "settings.limit",
    )
    .await;
    api.refused(
        Method::POST,
        "/v1/jobs",
        Some(json!({"kind": "system.noop", "params": {"x": [-1.797_693_134_862_315_5e308]}})),
        "params.x[0]",
    )
    .await;
    let read = api.call(Method::GET, &tenant, &api.operator, None).await;
    read.assert_status(StatusCode::OK);
    // Large numbers short of it are kept.
    let patched = api
        .call(
            Method::PATCH,
            &tenant,
            &api.operator,
            Some(json!({"settings": {"limit": 1e300}})),
        )
        .await;
    patched.assert_status(StatusCode::OK);
    let read = api.call(Method::GET, &tenant, &api.operator, None).await;
    read.assert_status(StatusCode::OK);
    assert_eq!(read.body["settings"]["limit"].as_f64(), Some(1e300));
    api.call(Method::GET, "/v1/jobs", &api.admin, None)
        .await
        .assert_status(StatusCode::OK);
}

/// An integer written as a whole float (`7.0`) is that integer, in bodies
/// and query strings.
async fn whole_floats_are_accepted_where_integers_are_expected(db: TestDb) {
    let api = api(&db).await;
    let created = api
        .call(
            Method::POST,
            "/v1/jobs",
            &api.admin,
            Some(json!({"kind": "system.noop", "priority": 7.0, "maxAttempts": 3.0})),
        )
        .await;
    created.assert_status(StatusCode::ACCEPTED);
    assert_eq!(created.body["priority"], json!(7), "{}", created.body);
    assert_eq!(created.body["maxAttempts"], json!(3), "{}", created.body);

    let schedule = api
        .call(
            Method::POST,
            "/v1/schedules",
            &api.admin,
            Some(
                json!({"name": "n", "cron": "0 3 * * *", "kind": "system.noop",
                "priority": 2.0, "jitterSeconds": 60.0}),
            ),
        )
        .await;
    schedule.assert_status(StatusCode::CREATED);
    assert_eq!(
        schedule.body["jitterSeconds"],
        json!(60),
        "{}",
        schedule.body
    );

    let patched = api
        .call(
            Method::PATCH,
            &format!("/v1/tenants/{}", api.tenant.id),
            &api.operator,
            Some(json!({"quotas": {"maxQueued": 100.0}, "settings": {"auditLogRetentionDays": 400.0}})),
        )
        .await;
    patched.assert_status(StatusCode::OK);
    assert_eq!(
        patched.body["quotas"]["maxQueued"],
        json!(100),
        "{}",
        patched.body
    );

    let page = api
        .call(Method::GET, "/v1/jobs?limit=1.0", &api.admin, None)
        .await;
    page.assert_status(StatusCode::OK);
    assert_eq!(page.body["data"].as_array().expect("data").len(), 1);
}

/// The document states the constraints the server enforces, for bodies and
/// query parameters.
async fn openapi_carries_the_enforced_constraints(db: TestDb) {
    let api = api(&db).await;
    let reply = http::send(
        &api.app.router,
        axum::http::Request::get("/openapi.json")
            .body(axum::body::Body::empty())
            .expect("request"),
    )
    .await;
    reply.assert_status(StatusCode::OK);
    let spec = reply.body;
    let schema = |name: &str| spec["components"]["schemas"][name].clone();
    let property = |name: &str, field: &str| {
        let found = schema(name)["properties"][field].clone();
        assert!(!found.is_null(), "{name}.{field} is not documented");
        found
    };
    let query = |path: &str, method: &str, name: &str| {
        spec["paths"][path][method]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name && p["in"] == "query")
            .unwrap_or_else(|| panic!("{method} {path}: no query parameter {name}"))["schema"]
            .clone()
    };
    let expected: Vec<(String, Value, &str, Value)> = vec![
        (
            "CreateJob.priority".into(),
            property("CreateJob", "priority"),
            "minimum",
            json!(0),
        ),
        (
            "CreateJob.priority".into(),
            property("CreateJob", "priority"),
            "maximum",
            json!(9),
        ),
        (
            "CreateJob.maxAttempts".into(),
            property("CreateJob", "maxAttempts"),
            "maximum",
            json!(100),
        ),
        (
            "NewSchedule.jitterSeconds".into(),
            property("NewSchedule", "jitterSeconds"),
            "maximum",
            json!(3600),
        ),
        (
            "NewSchedule.name".into(),
            property("NewSchedule", "name"),
            "maxLength",
            json!(100),
        ),
        (
            "CreateTenant.name".into(),
            property("CreateTenant", "name"),
            "maxLength",
            json!(200),
        ),
        (
            "SuspendTenant.reason".into(),
            property("SuspendTenant", "reason"),
            "maxLength",
            json!(500),
        ),
        (
            "IssueKey.name".into(),
            property("IssueKey", "name"),
            "maxLength",
            json!(200),
        ),
        (
            "LeakagePolicyRequest.name".into(),
            property("LeakagePolicyRequest", "name"),
            "maxLength",
            json!(100),
        ),
        (
            "LeakagePolicyRequest.description".into(),
            property("LeakagePolicyRequest", "description"),
            "maxLength",
            json!(1000),
        ),
        (
            "LeakagePattern.id".into(),
            property("LeakagePattern", "id"),
            "maxLength",
            json!(64),
        ),
        (
            "LeakagePattern.minLength".into(),
            property("LeakagePattern", "minLength"),
            "minimum",
            json!(8),
        ),
        (
            "LeakagePattern.minLength".into(),
            property("LeakagePattern", "minLength"),
            "maximum",
            json!(1024),
        ),
        (
            "IncidentPatch.note".into(),
            property("IncidentPatch", "note"),
            "maxLength",
            json!(1000),
        ),
        (
            "ClassificationScanRequest.maxObjectBytes".into(),
            property("ClassificationScanRequest", "maxObjectBytes"),
            "maximum",
            json!(64 * 1024 * 1024),
        ),
        (
            "GET /v1/tenants limit".into(),
            query("/v1/tenants", "get", "limit"),
            "maximum",
            json!(200),
        ),
        (
            "GET /v1/leakage/policies limit".into(),
            query("/v1/leakage/policies", "get", "limit"),
            "maximum",
            json!(200),
        ),
        (
            "GET /v1/leakage/incidents limit".into(),
            query("/v1/leakage/incidents", "get", "limit"),
            "minimum",
            json!(1),
        ),
        (
            "GET /v1/audit/exports limit".into(),
            query("/v1/audit/exports", "get", "limit"),
            "maximum",
            json!(200),
        ),
        (
            "GET /v1/audit/events limit".into(),
            query("/v1/audit/events", "get", "limit"),
            "maximum",
            json!(1000),
        ),
        (
            "GET /v1/schedules/{id}/next count".into(),
            query("/v1/schedules/{id}/next", "get", "count"),
            "maximum",
            json!(100),
        ),
    ];
    for (name, schema, keyword, value) in expected {
        // An optional field's schema may be a `oneOf` with null.
        let found = schema.get(keyword).cloned().or_else(|| {
            schema["oneOf"]
                .as_array()
                .and_then(|list| list.iter().find_map(|s| s.get(keyword).cloned()))
        });
        assert_eq!(found, Some(value), "{name}: {keyword} in {schema}");
    }
    // Patterns of ids and periods.
    let pattern = property("LeakagePattern", "id")["pattern"].clone();
    assert!(pattern.is_string(), "LeakagePattern.id has no pattern");
    let period = query("/v1/usage", "get", "period");
    assert!(period["pattern"].is_string(), "{period}");
    // Query type errors are 422 now: no operation documents a 400 without a body.
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if operation.get("requestBody").is_none() {
                assert!(
                    operation["responses"].get("400").is_none(),
                    "{method} {path} documents a 400 without a body"
                );
            }
        }
    }
}

both_stores!(
    nul_in_scan_policies_is_refused_naming_the_field,
    nul_anywhere_in_tenant_text_is_refused_naming_the_field,
    tenant_listing_refuses_a_garbage_cursor,
    bad_fields_are_422_with_their_camel_case_name,
    whole_floats_are_accepted_where_integers_are_expected,
    numbers_that_would_not_read_back_are_refused,
    openapi_carries_the_enforced_constraints,
);
