//! Retention end to end on both stores: policies (validation, the plan's
//! minimum, CRUD, roles, isolation), previews counted from the data, dry
//! runs that count what real runs then delete, legal holds that win over
//! every policy (and are audited), job transitions under the same policies,
//! metrics, and an archiving run killed mid-way that loses no event and
//! archives none twice.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::Router;
use chrono::{SecondsFormat, Utc};
use longhaul_api::AppState;
use longhaul_core::artifacts::{ArtifactStores, ObjectStore};
use longhaul_core::audit::{check_ingest, Actor, AuditFilter, NewAuditEvent};
use longhaul_core::store::{PgStore, SqliteStore, Stores};
use longhaul_core::tenancy::{KeyMode, NewTenant, Quotas, Role, Tenant};
use serde_json::{json, Value};

use crate::exports::{
    gated, local_store, send_bytes, start_worker, stores_of, Gate, KillableWorker,
};
use crate::harness::TestDb;
use crate::http::{self, Reply};

const REGION: &str = "eu";
const OLD_DAYS: i64 = 200;

struct Rig {
    router: Router,
    stores: Arc<dyn Stores>,
}

async fn rig(db: &TestDb, artifacts: Arc<ArtifactStores>) -> Rig {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let state = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_artifacts(artifacts);
    Rig {
        router: longhaul_api::router(state),
        stores,
    }
}

impl Rig {
    async fn tenant(&self, name: &str) -> (Tenant, String) {
        let tenant = self
            .stores
            .create_tenant(
                NewTenant {
                    quotas: Quotas::default(),
                    ..NewTenant::new(name, REGION, "standard")
                },
                &Actor::system(),
            )
            .await
            .expect("tenant");
        let key = self.key(&tenant, Role::Admin).await;
        (tenant, key)
    }

    async fn key(&self, tenant: &Tenant, role: Role) -> String {
        self.stores
            .issue_api_key(Some(&tenant.id), "k", role, KeyMode::Test, &Actor::system())
            .await
            .expect("key")
            .secret
    }

    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        http::call(&self.router, method, path, Some(key), body).await
    }

    /// `n` application events `days` old: `user.login` and, every third,
    /// `document.share` of `doc-<i>`.
    async fn seed(&self, tenant: &str, n: usize, days: i64) {
        let at = Utc::now() - chrono::Duration::days(days);
        for start in (0..n).step_by(1000) {
            let batch: Vec<NewAuditEvent> = (start..n.min(start + 1000))
                .map(|i| {
                    serde_json::from_value(json!({
                        "action": if i % 3 == 0 { "document.share" } else { "user.login" },
                        "occurredAt": (at + chrono::Duration::milliseconds(i as i64))
                            .to_rfc3339_opts(SecondsFormat::Micros, true),
                        "actorId": format!("user-{}", i % 7),
                        "resourceType": "document",
                        "resourceId": format!("doc-{i}"),
                        "details": {"n": i, "padding": "x".repeat(40)},
                    }))
                    .expect("an event")
                })
                .collect();
            let checked = check_ingest(batch, Utc::now(), 365).expect("valid events");
            self.stores
                .ingest_audit_events(tenant, &Actor::system(), &checked)
                .await
                .expect("seeding");
        }
    }

    /// The tenant's events older than `days`.
    async fn count_older(&self, tenant: &str, days: i64) -> u64 {
        self.stores
            .count_audit_events(
                tenant,
                &AuditFilter {
                    to: Some(Utc::now() - chrono::Duration::days(days)),
                    ..AuditFilter::default()
                },
            )
            .await
            .expect("count")
    }

    async fn count(&self, tenant: &str) -> u64 {
        self.stores
            .count_audit_events(tenant, &AuditFilter::default())
            .await
            .expect("count")
    }

    /// Starts a cleanup through the API; its execution id.
    async fn start_cleanup(&self, key: &str, body: Value) -> String {
        let reply = self
            .call(Method::POST, "/v1/retention/cleanup", key, Some(body))
            .await;
        reply.assert_status(StatusCode::ACCEPTED);
        reply.body["executionId"]
            .as_str()
            .expect("executionId")
            .to_string()
    }

    /// Runs a cleanup through the API and waits for its end.
    async fn cleanup(&self, key: &str, body: Value) -> Value {
        let id = self.start_cleanup(key, body).await;
        self.poll(key, &id).await
    }

    /// Polls a run until `done` holds of its view (60 s at most).
    async fn wait_for(&self, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let reply = self
                .call(
                    Method::GET,
                    &format!("/v1/retention/executions/{id}"),
                    key,
                    None,
                )
                .await;
            reply.assert_status(StatusCode::OK);
            if done(&reply.body) {
                return reply.body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}", reply.body);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls a run until it ends.
    async fn poll(&self, key: &str, id: &str) -> Value {
        self.wait_for(key, id, |view| {
            ["succeeded", "failed", "cancelled"]
                .contains(&view["status"].as_str().unwrap_or_default())
        })
        .await
    }

    /// A `P90D` policy of everything, archived first; its id.
    async fn archive_policy(&self, key: &str) -> String {
        let policy = self
            .call(
                Method::POST,
                "/v1/retention/policies",
                key,
                Some(json!({"name": "archive", "retentionPeriod": "P90D",
                            "archiveConfig": {"enabled": true}})),
            )
            .await;
        policy.assert_status(StatusCode::CREATED);
        policy.body["policyId"]
            .as_str()
            .expect("policyId")
            .to_string()
    }
}

/// Moves the tenant's job transitions `days` into the past.
async fn age_transitions(db: &TestDb, tenant: &str, days: i64) {
    if db.url.starts_with("sqlite:") {
        let store = SqliteStore::connect(&db.url, 1).await.expect("store");
        sqlx::query("UPDATE job_events SET at = at - ?2 WHERE tenant_id = ?1")
            .bind(tenant)
            .bind(days * 86_400_000_000)
            .execute(store.pool())
            .await
            .expect("ageing");
    } else {
        let store = PgStore::connect(&db.url, 1).await.expect("store");
        sqlx::query(
            "UPDATE job_events SET at = at - make_interval(days => $2) WHERE tenant_id = $1",
        )
        .bind(tenant)
        .bind(days as i32)
        .execute(store.pool())
        .await
        .expect("ageing");
    }
}

fn local(dir: &tempdir::Dir) -> Arc<ArtifactStores> {
    stores_of(local_store(dir.path()))
}

mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let path =
                std::env::temp_dir().join(format!("longhaul-retention-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir(path)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn policies_are_checked_and_kept_per_tenant(db: TestDb) {
    let dir = tempdir::Dir::new();
    let rig = rig(&db, local(&dir)).await;
    let (tenant, admin) = rig.tenant("acme").await;
    let (_, other_admin) = rig.tenant("other").await;
    let viewer = rig.key(&tenant, Role::Viewer).await;
    let body = json!({"name": "jobs", "retentionPeriod": "P180D",
                      "scope": {"eventTypes": ["job.*"], "services": ["system"]},
                      "archiveConfig": {"enabled": true}});
    rig.call(
        Method::POST,
        "/v1/retention/policies",
        &viewer,
        Some(body.clone()),
    )
    .await
    .assert_status(StatusCode::FORBIDDEN);
    let created = rig
        .call(
            Method::POST,
            "/v1/retention/policies",
            &admin,
            Some(body.clone()),
        )
        .await;
    created.assert_status(StatusCode::CREATED);
    let id = created.body["policyId"].as_str().unwrap().to_string();
    assert!(id.starts_with("rtp_"), "{}", created.body);
    assert_eq!(created.body["target"], "auditLog");
    assert_eq!(created.body["archiveConfig"]["destination"], "artifacts");
    rig.call(Method::POST, "/v1/retention/policies", &admin, Some(body))
        .await
        .assert_status(StatusCode::CONFLICT);
    for (bad, field) in [
        (
            json!({"name": "x", "retentionPeriod": "P30D"}),
            "retentionPeriod",
        ),
        (
            json!({"name": "x", "retentionPeriod": "PT48H"}),
            "retentionPeriod",
        ),
        (
            json!({"name": "x", "retentionPeriod": "90 days"}),
            "retentionPeriod",
        ),
        (
            json!({"name": "x", "retentionPeriod": "P1Y", "scope": {"services": ["cron"]}}),
            "scope.services[0]",
        ),
        (
            json!({"name": "x", "retentionPeriod": "P1Y", "scope": {"buckets": ["nope"]}}),
            "scope.buckets[0]",
        ),
        (
            json!({"name": "x", "retentionPeriod": "P1Y", "scope": {"eventTypes": ["a[b"]}}),
            "scope.eventTypes[0]",
        ),
        (
            json!({"name": "x", "retentionPeriod": "P1Y", "archiveConfig": {"enabled": true, "destination": "s3://elsewhere"}}),
            "archiveConfig.destination",
        ),
        (json!({"name": "", "retentionPeriod": "P1Y"}), "name"),
    ] {
        let reply = rig
            .call(
                Method::POST,
                "/v1/retention/policies",
                &admin,
                Some(bad.clone()),
            )
            .await;
        reply.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            reply.body["error"]["details"]["field"], field,
            "{bad}: {}",
            reply.body
        );
    }
    let listed = rig
        .call(Method::GET, "/v1/retention/policies", &admin, None)
        .await;
    listed.assert_status(StatusCode::OK);
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["defaultPolicy"]["policyId"], "default");
    assert_eq!(listed.body["defaultPolicy"]["retentionPeriod"], "P365D");
    let path = format!("/v1/retention/policies/{id}");
    rig.call(Method::GET, &path, &other_admin, None)
        .await
        .assert_status(StatusCode::NOT_FOUND);
    let patched = rig
        .call(
            Method::PATCH,
            &path,
            &admin,
            Some(json!({"retentionPeriod": "P1Y", "enabled": false})),
        )
        .await;
    patched.assert_status(StatusCode::OK);
    assert_eq!(patched.body["retentionPeriod"], "P1Y");
    assert_eq!(patched.body["enabled"], false);
    assert_eq!(patched.body["scope"]["eventTypes"], json!(["job.*"]));
    rig.call(
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"retentionPeriod": "P10D"})),
    )
    .await
    .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    rig.call(Method::DELETE, &path, &other_admin, None)
        .await
        .assert_status(StatusCode::NOT_FOUND);
    rig.call(Method::DELETE, &path, &admin, None)
        .await
        .assert_status(StatusCode::NO_CONTENT);
    rig.call(Method::GET, &path, &admin, None)
        .await
        .assert_status(StatusCode::NOT_FOUND);
    let audited = rig
        .stores
        .count_audit_events(
            &tenant.id,
            &AuditFilter {
                resource_id: Some(id.clone()),
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(audited, 3, "create, update and delete are audited");
}

async fn holds_win_and_dry_runs_count_what_runs_delete(db: TestDb) {
    let dir = tempdir::Dir::new();
    let artifacts = local(&dir);
    let rig = rig(&db, artifacts.clone()).await;
    let (tenant, admin) = rig.tenant("acme").await;
    let (other, other_admin) = rig.tenant("other").await;
    rig.seed(&tenant.id, 600, OLD_DAYS).await;
    rig.seed(&tenant.id, 90, 10).await;
    rig.seed(&other.id, 300, OLD_DAYS).await;
    let other_before = rig.count(&other.id).await;
    // A job transition, aged past the policy too.
    let job = rig
        .call(
            Method::POST,
            "/v1/jobs",
            &admin,
            Some(json!({"kind": "system.noop", "params": {}})),
        )
        .await;
    job.assert_status(StatusCode::ACCEPTED);
    let job_id = job.body["id"].as_str().unwrap().to_string();
    rig.call(
        Method::POST,
        &format!("/v1/jobs/{job_id}/cancel"),
        &admin,
        None,
    )
    .await;
    age_transitions(&db, &tenant.id, OLD_DAYS).await;

    let policy = rig
        .call(
            Method::POST,
            "/v1/retention/policies",
            &admin,
            Some(json!({"name": "six months", "retentionPeriod": "P180D",
                        "scope": {"eventTypes": ["user.*", "document.*", "job.*"]}})),
        )
        .await;
    policy.assert_status(StatusCode::CREATED);
    let policy_id = policy.body["policyId"].as_str().unwrap().to_string();
    // doc-3 and doc-6 are document.share events: held.
    let hold = rig
        .call(
            Method::POST,
            "/v1/retention/holds",
            &admin,
            Some(json!({"name": "case 42", "reason": "litigation",
                        "scope": {"eventTypes": ["document.*"], "resourceIds": ["doc-3", "doc-6"]}})),
        )
        .await;
    hold.assert_status(StatusCode::CREATED);
    // Two old events and two recent ones.
    assert_eq!(hold.body["objectsHeld"], 4, "{}", hold.body);
    assert_eq!(hold.body["status"], "active");
    let hold_id = hold.body["holdId"].as_str().unwrap().to_string();
    rig.call(
        Method::POST,
        "/v1/retention/holds",
        &admin,
        Some(json!({"name": "empty", "reason": "r", "scope": {}})),
    )
    .await
    .assert_status(StatusCode::UNPROCESSABLE_ENTITY);

    let expired = rig.count_older(&tenant.id, 180).await;
    assert!(
        expired > 600,
        "the job's transitions expired too: {expired}"
    );
    let expected = expired - 2;
    let preview = rig
        .call(
            Method::POST,
            "/v1/retention/preview",
            &admin,
            Some(json!({"policyId": policy_id})),
        )
        .await;
    preview.assert_status(StatusCode::OK);
    assert_eq!(preview.body["eventsAffected"], expected, "{}", preview.body);
    assert_eq!(preview.body["eventsHeld"], 2);
    assert!(preview.body["sizeBytes"].as_u64().unwrap() > expected * 40);

    let (token, worker) = start_worker(&db.url, artifacts.clone()).await;
    let dry = rig
        .cleanup(&admin, json!({"policyId": policy_id, "dryRun": true}))
        .await;
    assert_eq!(dry["status"], "succeeded", "{dry}");
    assert_eq!(dry["dryRun"], true);
    assert_eq!(dry["eventsDeleted"], expected, "{dry}");
    assert_eq!(dry["eventsHeld"], 2);
    let still_expired = rig.count_older(&tenant.id, 180).await;
    assert_eq!(still_expired, expired, "a dry run deletes nothing");

    let real = rig.cleanup(&admin, json!({"policyId": policy_id})).await;
    assert_eq!(real["status"], "succeeded", "{real}");
    for field in [
        "eventsProcessed",
        "eventsDeleted",
        "eventsHeld",
        "bytesReclaimed",
    ] {
        assert_eq!(real[field], dry[field], "{field}: {real} vs {dry}");
    }
    assert_eq!(real["bytesReclaimed"], preview.body["sizeBytes"]);
    // What is left: the recent events, the two held ones, and the run's own
    // audit trail (its transitions are recent).
    let left = rig
        .stores
        .list_audit_events(
            &tenant.id,
            &AuditFilter {
                to: Some(Utc::now() - chrono::Duration::days(180)),
                ..AuditFilter::default()
            },
            None,
            longhaul_core::audit::Order::OldestFirst,
            100,
        )
        .await
        .unwrap();
    let left: Vec<_> = left
        .iter()
        .map(|e| e.resource_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(left, ["doc-3", "doc-6"]);
    assert_eq!(
        rig.count(&other.id).await,
        other_before,
        "another tenant's log is untouched"
    );
    let execution = real["executionId"].as_str().unwrap();
    rig.call(
        Method::GET,
        &format!("/v1/retention/executions/{execution}"),
        &other_admin,
        None,
    )
    .await
    .assert_status(StatusCode::NOT_FOUND);

    let metrics = rig
        .call(Method::GET, "/v1/retention/metrics", &admin, None)
        .await;
    metrics.assert_status(StatusCode::OK);
    assert_eq!(metrics.body["retentionSavings"]["eventsDeleted"], expected);
    assert_eq!(metrics.body["byAge"]["older"], 2, "{}", metrics.body);
    assert!(metrics.body["byAge"]["last30Days"].as_u64().unwrap() >= 90);

    // Released, the hold stops protecting; the release is audited.
    let released = rig
        .call(
            Method::POST,
            &format!("/v1/retention/holds/{hold_id}/release"),
            &admin,
            None,
        )
        .await;
    released.assert_status(StatusCode::OK);
    assert_eq!(released.body["objectsReleased"], 4);
    rig.call(
        Method::POST,
        &format!("/v1/retention/holds/{hold_id}/release"),
        &admin,
        None,
    )
    .await
    .assert_status(StatusCode::CONFLICT);
    let again = rig.cleanup(&admin, json!({"policyId": policy_id})).await;
    assert_eq!(again["eventsDeleted"], 2, "{again}");
    let audited = rig
        .stores
        .count_audit_events(
            &tenant.id,
            &AuditFilter {
                resource_id: Some(hold_id.clone()),
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(audited, 2, "placing and releasing the hold are audited");
    let viewer = rig.key(&tenant, Role::Viewer).await;
    rig.call(
        Method::POST,
        "/v1/retention/cleanup",
        &viewer,
        Some(json!({"policyId": "default"})),
    )
    .await
    .assert_status(StatusCode::FORBIDDEN);
    rig.call(
        Method::POST,
        "/v1/retention/cleanup",
        &admin,
        Some(json!({"policyId": "rtp_00000000000000000000000000000000"})),
    )
    .await
    .assert_status(StatusCode::NOT_FOUND);
    token.cancel();
    let _ = worker.await;
}

/// The events of an archive (gzipped NDJSON): their ids.
fn archive_ids(bytes: &[u8]) -> Vec<String> {
    let reader = BufReader::new(flate2::read::MultiGzDecoder::new(bytes));
    reader
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(&line.expect("a line")).expect("json");
            event["id"].as_str().expect("id").to_string()
        })
        .collect()
}

async fn an_archiving_run_killed_mid_way_loses_no_event(db: TestDb) {
    let dir = tempdir::Dir::new();
    let inner: Arc<dyn ObjectStore> = local_store(dir.path());
    let rig = rig(&db, stores_of(inner.clone())).await;
    let (tenant, admin) = rig.tenant("acme").await;
    rig.seed(&tenant.id, 12_000, OLD_DAYS).await;
    let old: BTreeSet<String> = rig
        .stores
        .list_audit_events(
            &tenant.id,
            &AuditFilter::default(),
            None,
            longhaul_core::audit::Order::OldestFirst,
            1000,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(old.len(), 1000);
    let policy_id = rig.archive_policy(&admin).await;
    // The first worker stops after one stored part of the archive and is
    // killed there, its lease left to expire.
    let gate = Gate::new(1);
    let first = {
        let (inner, gate) = (inner.clone(), gate.clone());
        KillableWorker::start(db.url.clone(), move || gated(inner, &gate))
    };
    let id = rig
        .start_cleanup(&admin, json!({"policyId": policy_id}))
        .await;
    rig.wait_for(&admin, &id, |view| {
        view["eventsArchived"].as_u64().unwrap_or(0) > 0
    })
    .await;
    first.kill();
    assert_eq!(
        rig.count(&tenant.id).await - count_recent(&rig, &tenant.id).await,
        12_000,
        "nothing deleted before the archive is stored"
    );
    let (token, worker) = start_worker(&db.url, stores_of(inner.clone())).await;
    let done = rig.poll(&admin, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["eventsArchived"], 12_000, "{done}");
    assert_eq!(done["eventsDeleted"], 12_000, "{done}");
    let archive = &done["archive"];
    let url = archive["downloadUrl"].as_str().expect("a link");
    let at = url.find("/v1/artifacts/").expect("a local link");
    let (status, _, bytes) = send_bytes(&rig.router, &url[at..]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes.len() as u64, archive["size"].as_u64().unwrap());
    let ids = archive_ids(&bytes);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 12_000, "every event archived");
    assert_eq!(unique.len(), 12_000, "none archived twice");
    assert!(old.iter().all(|id| unique.contains(id)));
    assert_eq!(
        rig.count(&tenant.id).await - count_recent(&rig, &tenant.id).await,
        0
    );
    token.cancel();
    let _ = worker.await;
}

/// An object store whose reads stop after `pass` bytes until opened: how
/// the test holds a run in its delete phase (which reads the archive back).
struct SlowReads {
    inner: Arc<dyn ObjectStore>,
    pass: usize,
    open: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl ObjectStore for SlowReads {
    async fn start_upload(
        &self,
        key: &str,
    ) -> Result<Box<dyn longhaul_core::artifacts::Upload>, longhaul_core::artifacts::StorageError>
    {
        self.inner.start_upload(key).await
    }
    async fn resume_upload(
        &self,
        state: &longhaul_core::artifacts::UploadState,
    ) -> Result<Box<dyn longhaul_core::artifacts::Upload>, longhaul_core::artifacts::StorageError>
    {
        self.inner.resume_upload(state).await
    }
    async fn abort_uploads(&self, key: &str) -> Result<(), longhaul_core::artifacts::StorageError> {
        self.inner.abort_uploads(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<longhaul_core::artifacts::Bytes, longhaul_core::artifacts::StorageError> {
        self.inner.get_range(key, range).await
    }
    async fn get(
        &self,
        key: &str,
    ) -> Result<longhaul_core::artifacts::Bytes, longhaul_core::artifacts::StorageError> {
        self.inner.get(key).await
    }
    async fn read(
        &self,
        key: &str,
    ) -> Result<longhaul_core::artifacts::ObjectReader, longhaul_core::artifacts::StorageError>
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut source = self.inner.read(key).await?;
        let size = source.size;
        let (mut writer, reader) = tokio::io::duplex(16 * 1024);
        let (pass, mut open) = (self.pass, self.open.subscribe());
        tokio::spawn(async move {
            let mut head = vec![0u8; pass];
            let n = source.body.read(&mut head).await.unwrap_or(0);
            let mut sent = n;
            let _ = writer.write_all(&head[..n]).await;
            while sent < pass {
                let n = source
                    .body
                    .read(&mut head[..pass - sent])
                    .await
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                let _ = writer.write_all(&head[..n]).await;
                sent += n;
            }
            let _ = open.wait_for(|open| *open).await;
            let _ = tokio::io::copy(&mut source.body, &mut writer).await;
        });
        Ok(longhaul_core::artifacts::ObjectReader {
            size,
            body: Box::pin(reader),
        })
    }
    async fn delete(&self, key: &str) -> Result<(), longhaul_core::artifacts::StorageError> {
        self.inner.delete(key).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<longhaul_core::artifacts::ObjectInfo>, longhaul_core::artifacts::StorageError>
    {
        self.inner.list(prefix).await
    }
    async fn presigned_url(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, longhaul_core::artifacts::StorageError> {
        self.inner.presigned_url(key, expires_in).await
    }
}

async fn an_archiving_run_killed_while_deleting_deletes_each_event_once(db: TestDb) {
    let dir = tempdir::Dir::new();
    let inner: Arc<dyn ObjectStore> = local_store(dir.path());
    let rig = rig(&db, stores_of(inner.clone())).await;
    let (tenant, admin) = rig.tenant("acme").await;
    rig.seed(&tenant.id, 24_000, OLD_DAYS).await;
    let policy_id = rig.archive_policy(&admin).await;
    // The first worker reads the first 256 KiB of the archive back (one or
    // two batches of the 24,000 events), deletes them, then stalls there
    // and is killed.
    let first = {
        let inner = inner.clone();
        KillableWorker::start(db.url.clone(), move || {
            stores_of(Arc::new(SlowReads {
                inner,
                pass: 256 * 1024,
                open: tokio::sync::watch::channel(false).0,
            }))
        })
    };
    let id = rig
        .start_cleanup(&admin, json!({"policyId": policy_id}))
        .await;
    rig.wait_for(&admin, &id, |view| view["archive"].is_object())
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if rig.count_older(&tenant.id, 90).await < 24_000 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no batch was deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill();
    let left = rig.count_older(&tenant.id, 90).await;
    assert!(left > 0 && left < 24_000, "killed mid-delete: {left} left");
    let (token, worker) = start_worker(&db.url, stores_of(inner.clone())).await;
    let done = rig.poll(&admin, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["eventsArchived"], 24_000, "{done}");
    assert_eq!(done["eventsDeleted"], 24_000, "{done}");
    assert_eq!(rig.count_older(&tenant.id, 90).await, 0);
    let job = rig
        .stores
        .get_job(&tenant.id, done["jobId"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        job.attempt, 2,
        "the second attempt resumed the delete phase"
    );
    token.cancel();
    let _ = worker.await;
}

/// The archive's bytes are counted in the process's metrics (the recorder
/// installed as the binary does; this test's process is its own).
async fn archived_bytes_are_counted(db: TestDb) {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this process");
    let dir = tempdir::Dir::new();
    let artifacts = local(&dir);
    let rig = rig(&db, artifacts.clone()).await;
    let (tenant, admin) = rig.tenant("acme").await;
    rig.seed(&tenant.id, 200, OLD_DAYS).await;
    let policy_id = rig.archive_policy(&admin).await;
    let (token, worker) = start_worker(&db.url, artifacts).await;
    let done = rig.cleanup(&admin, json!({"policyId": policy_id})).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let size = done["archive"]["size"].as_u64().expect("an archive");
    let text = handle.render();
    let counted = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "longhaul_artifact_bytes_written_total{kind=\"audit.retention_cleanup\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no artifact bytes in {text}"));
    assert_eq!(counted.parse::<u64>().ok(), Some(size));
    token.cancel();
    let _ = worker.await;
}

/// Events of the last day (the run's own transitions and audit trail).
async fn count_recent(rig: &Rig, tenant: &str) -> u64 {
    rig.stores
        .count_audit_events(
            tenant,
            &AuditFilter {
                from: Some(Utc::now() - chrono::Duration::days(1)),
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap()
}

/// Sets a file's modification time `days` in the past.
fn age_file(path: &std::path::Path, days: u64) {
    let when = std::time::SystemTime::now() - Duration::from_secs(days * 86_400);
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("the object's file")
        .set_modified(when)
        .expect("setting its modification time");
}

async fn data_bucket_policies_use_classifications_and_holds(db: TestDb) {
    let dir = tempdir::Dir::new();
    let root = dir.path().join("artifacts");
    let artifacts = Arc::new(ArtifactStores::local(&root, http::test_signer()));
    let rig = rig(&db, artifacts.clone()).await;
    let tenant = rig
        .stores
        .create_tenant(
            NewTenant {
                settings: json!({"dataBuckets": {"files": "files-bucket"}}),
                ..NewTenant::new("acme", REGION, "standard")
            },
            &Actor::system(),
        )
        .await
        .expect("tenant");
    let admin = rig.key(&tenant, Role::Admin).await;
    let bucket = root.join(".buckets").join("files-bucket");
    let put = |key: &str, body: &str, days: u64| {
        let path = bucket.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        if days > 0 {
            age_file(&path, days);
        }
    };
    put(
        "old/cards.csv",
        "name,card_number\nAlice,4111 1111 1111 1111\nBob,5500 0000 0000 0004\n",
        60,
    );
    put("old/plain.txt", "nothing to see here\n", 60);
    put("old/held.txt", "kept for the court\n", 60);
    put(
        "new/cards.csv",
        "name,card_number\nCarol,4111 1111 1111 1111\n",
        0,
    );
    let (token, worker) = start_worker(&db.url, artifacts.clone()).await;
    let scan = rig
        .call(
            Method::POST,
            "/v1/classification/scans",
            &admin,
            Some(json!({"scope": {"buckets": ["files"]}})),
        )
        .await;
    scan.assert_status(StatusCode::ACCEPTED);
    let scan_id = scan.body["scanId"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = rig
            .call(
                Method::GET,
                &format!("/v1/classification/scans/{scan_id}"),
                &admin,
                None,
            )
            .await;
        if view.body["status"] == "succeeded" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", view.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let results = rig
        .call(
            Method::GET,
            &format!("/v1/classification/scans/{scan_id}/results"),
            &admin,
            None,
        )
        .await;
    let level_of = |key: &str| {
        results.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .map(|r| r["level"].clone())
    };
    assert_eq!(
        level_of("old/cards.csv"),
        Some(json!("restricted")),
        "{}",
        results.body
    );
    assert_ne!(level_of("old/plain.txt"), Some(json!("restricted")));

    let hold = rig
        .call(
            Method::POST,
            "/v1/retention/holds",
            &admin,
            Some(json!({"name": "court", "reason": "subpoena",
                        "scope": {"buckets": ["files"], "objectKeys": ["old/held*"]}})),
        )
        .await;
    hold.assert_status(StatusCode::CREATED);
    assert_eq!(hold.body["objectsHeld"], 1, "{}", hold.body);
    let policy = |body: Value| async {
        let reply = rig
            .call(Method::POST, "/v1/retention/policies", &admin, Some(body))
            .await;
        reply.assert_status(StatusCode::CREATED);
        reply.body["policyId"].as_str().unwrap().to_string()
    };
    let restricted = policy(json!({"name": "restricted", "retentionPeriod": "P30D",
        "scope": {"buckets": ["files"], "classifications": ["restricted"]},
        "actions": {"onExpiry": "delete"}}))
    .await;
    let notify = policy(json!({"name": "tell me", "retentionPeriod": "P30D",
        "scope": {"buckets": ["files"]}, "actions": {"onExpiry": "notify"}}))
    .await;
    let archive = policy(json!({"name": "archive", "retentionPeriod": "P30D",
        "scope": {"buckets": ["files"]}, "actions": {"onExpiry": "archive"}}))
    .await;

    let run = rig.cleanup(&admin, json!({"policyId": restricted})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["objectsDeleted"], 1, "{run}");
    assert!(!bucket.join("old/cards.csv").exists());
    assert!(bucket.join("new/cards.csv").exists(), "not expired");
    assert!(bucket.join("old/plain.txt").exists(), "not restricted");

    let told = rig.cleanup(&admin, json!({"policyId": notify})).await;
    assert_eq!(told["objectsNotified"], 1, "{told}");
    assert_eq!(told["objectsHeld"], 1, "{told}");
    assert_eq!(told["expiring"][0]["key"], "old/plain.txt", "{told}");
    assert_eq!(told["expiring"][0]["bucket"], "files");
    assert_eq!(told["expiring"].as_array().unwrap().len(), 1);
    assert!(
        bucket.join("old/plain.txt").exists(),
        "notify touches nothing"
    );

    let dry = rig
        .cleanup(&admin, json!({"policyId": archive, "dryRun": true}))
        .await;
    assert_eq!(dry["objectsArchived"], 1, "{dry}");
    assert!(
        bucket.join("old/plain.txt").exists(),
        "a dry run touches nothing"
    );
    let archived = rig.cleanup(&admin, json!({"policyId": archive})).await;
    assert_eq!(archived["status"], "succeeded", "{archived}");
    assert_eq!(archived["objectsArchived"], 1, "{archived}");
    assert_eq!(archived["objectsDeleted"], 1, "{archived}");
    assert_eq!(archived["objectsHeld"], 1);
    assert!(!bucket.join("old/plain.txt").exists());
    assert!(bucket.join("old/held.txt").exists(), "held");
    let job = archived["jobId"].as_str().unwrap();
    let copy = root
        .join(REGION)
        .join("tenants")
        .join(&tenant.id)
        .join("audit.retention_cleanup")
        .join(job)
        .join("objects/files/old/plain.txt");
    assert_eq!(
        std::fs::read_to_string(&copy).expect("the archived copy"),
        "nothing to see here\n"
    );
    let metrics = rig
        .call(Method::GET, "/v1/retention/metrics", &admin, None)
        .await;
    assert_eq!(
        metrics.body["retentionSavings"]["objectsDeleted"], 2,
        "{}",
        metrics.body
    );
    let stats = rig
        .call(Method::GET, "/v1/classification/stats", &admin, None)
        .await;
    stats.assert_status(StatusCode::OK);
    assert!(!stats.body.to_string().contains("old/cards.csv"));
    token.cancel();
    let _ = worker.await;
}

async fn the_nightly_sweep_queues_each_run_of_the_day_once(db: TestDb) {
    use longhaul_core::client::EnqueueRequest;
    use longhaul_core::retention::sweep::{RetentionSweep, SweepParams, NIGHTLY_SCHEDULE};
    use longhaul_core::retention::RETENTION_CLEANUP;
    use longhaul_core::schedule::SYSTEM_TENANT;
    use longhaul_core::JobClient;

    let dir = tempdir::Dir::new();
    let artifacts = local(&dir);
    let rig = rig(&db, artifacts.clone()).await;
    let catalogue = longhaul_worker::jobs::catalogue();
    let created = longhaul_scheduler::ensure_system_schedules(rig.stores.as_ref(), &catalogue)
        .await
        .expect("system schedules");
    assert_eq!(created, 1);
    let again = longhaul_scheduler::ensure_system_schedules(rig.stores.as_ref(), &catalogue)
        .await
        .expect("system schedules");
    assert_eq!(again, 0, "a restart creates nothing twice");
    let schedules = rig.stores.list_schedules(None, None, 100).await.unwrap();
    let nightly: Vec<_> = schedules
        .iter()
        .filter(|s| s.name == NIGHTLY_SCHEDULE)
        .collect();
    assert_eq!(nightly.len(), 1);
    assert_eq!(nightly[0].kind, "retention.sweep");

    let (a, admin_a) = rig.tenant("a").await;
    let (b, _) = rig.tenant("b").await;
    for (name, enabled) in [("kept", true), ("off", false)] {
        rig.call(
            Method::POST,
            "/v1/retention/policies",
            &admin_a,
            Some(
                json!({"name": name, "retentionPeriod": "P2Y", "enabled": enabled,
                        "scope": {"eventTypes": ["user.*"]}}),
            ),
        )
        .await
        .assert_status(StatusCode::CREATED);
    }
    let (token, worker) = start_worker(&db.url, artifacts).await;
    let client = JobClient::new(rig.stores.clone().job_store(), Arc::new(catalogue));
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let id = client
            .enqueue(EnqueueRequest::of::<RetentionSweep>(SYSTEM_TENANT, &SweepParams {}).unwrap())
            .await
            .expect("a sweep")
            .id;
        let job = crate::support::wait_for_job(
            rig.stores.as_ref(),
            SYSTEM_TENANT,
            id,
            Duration::from_secs(60),
            |job| job.state.is_terminal(),
        )
        .await;
        assert_eq!(
            job.state,
            longhaul_core::JobState::Succeeded,
            "{:?}",
            job.last_error
        );
        outputs.push(job.output_of::<RetentionSweep>().unwrap().unwrap());
    }
    assert_eq!(
        (outputs[0].runs_queued, outputs[0].runs_existing),
        (3, 0),
        "{outputs:?}"
    );
    assert_eq!(
        (outputs[1].runs_queued, outputs[1].runs_existing),
        (0, 3),
        "{outputs:?}"
    );
    for (tenant, runs) in [(&a, 2), (&b, 1)] {
        let jobs = rig
            .stores
            .list_jobs(&tenant.id, &Default::default(), None, 100)
            .await
            .unwrap();
        let cleanups: Vec<_> = jobs
            .iter()
            .filter(|j| j.kind == RETENTION_CLEANUP)
            .collect();
        assert_eq!(cleanups.len(), runs, "{}", tenant.name);
        for job in cleanups {
            let done = crate::support::wait_for_job(
                rig.stores.as_ref(),
                &tenant.id,
                job.id,
                Duration::from_secs(60),
                |job| job.state.is_terminal(),
            )
            .await;
            assert_eq!(
                done.state,
                longhaul_core::JobState::Succeeded,
                "{:?}",
                done.last_error
            );
        }
    }
    token.cancel();
    let _ = worker.await;
}

both_stores!(
    the_nightly_sweep_queues_each_run_of_the_day_once,
    data_bucket_policies_use_classifications_and_holds,
    policies_are_checked_and_kept_per_tenant,
    holds_win_and_dry_runs_count_what_runs_delete,
    an_archiving_run_killed_mid_way_loses_no_event,
    archived_bytes_are_counted,
    an_archiving_run_killed_while_deleting_deletes_each_event_once,
);
