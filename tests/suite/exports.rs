//! Audit exports end to end on both stores: create through the API, a real
//! worker pool runs the `audit.export` job, poll to done, download through
//! the link and compare every row with the audit log. Plus what must survive
//! trouble: a worker killed mid-export (its runtime dropped, like a process
//! kill) is resumed from the checkpoint by the next attempt; a cancel aborts
//! the upload; an object store that fails mid-upload is retried and resumed,
//! and one that disappears fails the export cleanly with nothing visible. The
//! S3 cases run against a real `moto_server`.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use longhaul_api::AppState;
use longhaul_core::artifacts::records::ArtifactStatus;
use longhaul_core::artifacts::{
    ArtifactStores, Bytes, ObjectInfo, ObjectReader, ObjectStore, StorageError, StoredObject,
    Upload, UploadState,
};
use longhaul_core::audit::{check_ingest, Actor, AuditEvent, AuditFilter, NewAuditEvent, Order};
use longhaul_core::job::{ClaimRequest, Finish};
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{KeyMode, NewTenant, Quotas, Role, Tenant};
use longhaul_core::{JobId, JobState};
use longhaul_worker::jobs::audit_export::PAGE_ROWS;
use longhaul_worker::{JobServices, PoolConfig, WorkerPool};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::artifacts::{http_get, sha256sum, Moto};
use crate::harness::TestDb;
use crate::http::{self, Reply};
use crate::support::{pool_config, wait_for_job};

const REGION: &str = "eu";
const SMALL_PART: usize = 64 * 1024;

// ---- an object store that can hold or fail an upload -------------------------

/// Holds writes once `hold_after` parts are stored (until opened), and can
/// fail the next write: how the tests stop a worker mid-upload.
pub(crate) struct Gate {
    hold_after: usize,
    open: watch::Sender<bool>,
    fail_next: AtomicBool,
    parts_stored: AtomicUsize,
}

impl Gate {
    pub(crate) fn new(hold_after: usize) -> Arc<Self> {
        Arc::new(Gate {
            hold_after,
            open: watch::channel(false).0,
            fail_next: AtomicBool::new(false),
            parts_stored: AtomicUsize::new(0),
        })
    }

    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }
}

struct GatedStore {
    inner: Arc<dyn ObjectStore>,
    gate: Arc<Gate>,
}

struct GatedUpload {
    inner: Box<dyn Upload>,
    gate: Arc<Gate>,
}

#[async_trait]
impl Upload for GatedUpload {
    async fn write(&mut self, bytes: Bytes) -> Result<Option<UploadState>, StorageError> {
        if self.gate.parts_stored.load(Ordering::SeqCst) >= self.gate.hold_after {
            let mut open = self.gate.open.subscribe();
            let _ = open.wait_for(|open| *open).await;
        }
        if self.gate.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StorageError::S3 {
                operation: "UploadPart",
                message: "injected: 503 Slow Down".into(),
            });
        }
        let stored = self.inner.write(bytes).await?;
        if stored.is_some() {
            self.gate.parts_stored.fetch_add(1, Ordering::SeqCst);
        }
        Ok(stored)
    }
    fn written(&self) -> u64 {
        self.inner.written()
    }
    fn buffered(&self) -> u64 {
        self.inner.buffered()
    }
    fn part_size(&self) -> usize {
        self.inner.part_size()
    }
    async fn complete(self: Box<Self>) -> Result<StoredObject, StorageError> {
        self.inner.complete().await
    }
    async fn abort(self: Box<Self>) -> Result<(), StorageError> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for GatedStore {
    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, StorageError> {
        Ok(Box::new(GatedUpload {
            inner: self.inner.start_upload(key).await?,
            gate: self.gate.clone(),
        }))
    }
    async fn resume_upload(&self, state: &UploadState) -> Result<Box<dyn Upload>, StorageError> {
        Ok(Box::new(GatedUpload {
            inner: self.inner.resume_upload(state).await?,
            gate: self.gate.clone(),
        }))
    }
    async fn abort_uploads(&self, key: &str) -> Result<(), StorageError> {
        self.inner.abort_uploads(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StorageError> {
        self.inner.get_range(key, range).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.inner.get(key).await
    }
    async fn read(&self, key: &str) -> Result<ObjectReader, StorageError> {
        self.inner.read(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.inner.list(prefix).await
    }
    async fn presigned_url(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        self.inner.presigned_url(key, expires_in).await
    }
}

pub(crate) fn stores_of(store: Arc<dyn ObjectStore>) -> Arc<ArtifactStores> {
    Arc::new(ArtifactStores::fixed(
        [(REGION.to_string(), store)].into_iter().collect(),
        http::test_signer(),
    ))
}

pub(crate) fn gated(inner: Arc<dyn ObjectStore>, gate: &Arc<Gate>) -> Arc<ArtifactStores> {
    stores_of(Arc::new(GatedStore {
        inner,
        gate: gate.clone(),
    }))
}

/// A local folder store with small parts (many checkpoints from little data).
pub(crate) fn local_store(root: &std::path::Path) -> Arc<dyn ObjectStore> {
    Arc::new(longhaul_core::artifacts::LocalStore::at(root).with_part_size(SMALL_PART))
}

// ---- the API, tenants, a worker ---------------------------------------------

struct Rig {
    router: Router,
    stores: Arc<dyn Stores>,
    url: String,
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
        url: db.url.clone(),
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
        let key = self
            .stores
            .issue_api_key(
                Some(&tenant.id),
                "admin",
                Role::Admin,
                KeyMode::Test,
                &Actor::system(),
            )
            .await
            .expect("key");
        (tenant, key.secret)
    }

    async fn key(&self, tenant: &Tenant, role: Role) -> String {
        self.stores
            .issue_api_key(
                Some(&tenant.id),
                "another",
                role,
                KeyMode::Test,
                &Actor::system(),
            )
            .await
            .expect("key")
            .secret
    }

    /// `POST /v1/audit/exports` with an `Idempotency-Key`.
    async fn create_keyed(&self, key: &str, idempotency_key: &str, body: Value) -> Reply {
        http::send(
            &self.router,
            http::request(
                Method::POST,
                "/v1/audit/exports",
                Some(key),
                &[("idempotency-key", idempotency_key)],
                Some(body),
            ),
        )
        .await
    }

    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        http::call(&self.router, method, path, Some(key), body).await
    }

    /// Creates an export; its id and job id.
    async fn export(&self, key: &str, body: Value) -> (String, JobId) {
        let reply = self
            .call(Method::POST, "/v1/audit/exports", key, Some(body))
            .await;
        reply.assert_status(StatusCode::ACCEPTED);
        // Queued when stored; a fast worker may have started it already.
        assert!(
            ["queued", "running", "succeeded"].contains(&reply.body["status"].as_str().unwrap()),
            "{}",
            reply.body
        );
        assert_eq!(reply.body["downloadUrl"], Value::Null);
        let id = reply.body["exportId"]
            .as_str()
            .expect("exportId")
            .to_string();
        assert_eq!(
            reply.headers["location"].to_str().unwrap(),
            format!("/v1/audit/exports/{id}")
        );
        let job: JobId = reply.body["jobId"].as_str().unwrap().parse().unwrap();
        (id, job)
    }

    /// Polls the export until it ends; its last answer.
    async fn poll(&self, key: &str, id: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let reply = self
                .call(Method::GET, &format!("/v1/audit/exports/{id}"), key, None)
                .await;
            reply.assert_status(StatusCode::OK);
            let status = reply.body["status"].as_str().unwrap().to_string();
            if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
                return reply.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "export {id} still {status}: {}",
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Downloads through the export's link: a local token link through the
    /// router, an S3 presigned link over plain HTTP.
    async fn download(&self, view: &Value) -> Vec<u8> {
        let url = view["downloadUrl"].as_str().expect("a download link");
        if let Some(at) = url.find("/v1/artifacts/") {
            let (status, _, body) = send_bytes(&self.router, &url[at..]).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            body
        } else {
            let (status, body) = http_get(url).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            body
        }
    }

    /// Every event of the tenant the export selects, oldest first.
    async fn source_rows(&self, tenant: &str, filter: &AuditFilter) -> Vec<AuditEvent> {
        let mut rows = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .stores
                .list_audit_events(tenant, filter, after, Order::OldestFirst, 1000)
                .await
                .expect("listing");
            if let Some(last) = page.last() {
                after = Some(last.cursor().unwrap());
            }
            let done = page.len() < 1000;
            rows.extend(page);
            if done {
                return rows;
            }
        }
    }

    /// Seeds `n` application events with awkward contents over the last hour.
    async fn seed(&self, tenant: &str, n: usize) {
        let now = Utc::now();
        for start in (0..n).step_by(1000) {
            let batch: Vec<NewAuditEvent> = (start..n.min(start + 1000))
                .map(|i| {
                    let awkward = match i % 7 {
                        0 => "=HYPERLINK(\"http://evil\")".to_string(),
                        1 => "comma, \"quoted\"".to_string(),
                        2 => "semi;colon, \"and\" more".to_string(),
                        3 => "-1+2".to_string(),
                        4 => "@SUM(A1)".to_string(),
                        5 => "ünïcödé ✓".to_string(),
                        _ => format!("plain-{i}"),
                    };
                    serde_json::from_value(json!({
                        "action": if i % 3 == 0 { "document.share" } else { "user.login" },
                        "occurredAt": (now - chrono::Duration::milliseconds((n - i) as i64 * 50))
                            .to_rfc3339_opts(SecondsFormat::Micros, true),
                        "actorId": awkward,
                        "resourceType": "document",
                        "resourceId": format!("doc-{i}"),
                        "ip": "198.51.100.7",
                        "externalId": format!("ext-{i}"),
                        "details": {"note": awkward, "n": i, "padding": "x".repeat(120)},
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
}

pub(crate) async fn send_bytes(
    router: &Router,
    path: &str,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = axum::http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

fn exports_pool() -> PoolConfig {
    PoolConfig {
        // Retention runs and the scans they read (tests/suite/retention.rs)
        // share these workers.
        queues: vec!["exports".into(), "maintenance".into(), "scans".into()],
        ..pool_config(2)
    }
}

/// A worker pool over its own connections, until the token fires.
pub(crate) async fn start_worker(
    url: &str,
    artifacts: Arc<ArtifactStores>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stores = longhaul_core::store::connect_stores(url, 8)
        .await
        .expect("worker stores");
    let services = JobServices {
        stores: stores.clone(),
        artifacts,
        artifact_retention: Duration::from_secs(7 * 86_400),
        scans: Default::default(),
    };
    let registry = longhaul_worker::jobs::registry_with_services(&services);
    let job_store: Arc<dyn longhaul_core::JobStore> = stores;
    let pool = WorkerPool::new(job_store, registry, exports_pool());
    let token = CancellationToken::new();
    let run = pool.run(token.clone());
    let handle = tokio::spawn(async move {
        run.await;
    });
    (token, handle)
}

/// A worker in a runtime of its own, as a separate process would be: killing
/// it (dropping the runtime) stops everything it was doing at once, with no
/// clean-up, its lease left to expire.
pub(crate) struct KillableWorker {
    runtime: Option<tokio::runtime::Runtime>,
}

impl KillableWorker {
    pub(crate) fn start(
        url: String,
        artifacts: impl FnOnce() -> Arc<ArtifactStores> + Send + 'static,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.spawn(async move {
            let (_token, handle) = start_worker(&url, artifacts()).await;
            let _ = handle.await;
        });
        KillableWorker {
            runtime: Some(runtime),
        }
    }

    pub(crate) fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn wait_for_checkpoint(stores: &dyn Stores, tenant: &str, job: JobId) -> Value {
    let seen = wait_for_job(stores, tenant, job, Duration::from_secs(60), |job| {
        job.checkpoint
            .as_ref()
            .and_then(|c| c["rowsDone"].as_u64())
            .is_some_and(|rows| rows > 0)
    })
    .await;
    seen.checkpoint.expect("a checkpoint")
}

// ---- checking a file against the log ----------------------------------------

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip file");
    out
}

/// RFC 4180 records (CRLF line ends, quoted cells may hold anything).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut cell = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                other => cell.push(other),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => record.push(std::mem::take(&mut cell)),
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "a bare CR ends a record");
                record.push(std::mem::take(&mut cell));
                records.push(std::mem::take(&mut record));
            }
            '\n' => panic!("a record ends with LF, not CRLF"),
            other => cell.push(other),
        }
    }
    assert!(
        cell.is_empty() && record.is_empty(),
        "the last record has no CRLF"
    );
    records
}

/// What the export must write for a cell: a formula neutralised.
fn neutralised(value: &str) -> String {
    match value.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{value}"),
        _ => value.to_string(),
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn assert_csv_matches(file: &[u8], source: &[AuditEvent]) {
    let records = parse_csv(std::str::from_utf8(file).expect("UTF-8"));
    assert_eq!(
        records[0],
        longhaul_worker::jobs::audit_export::CSV_HEADER
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(records.len() - 1, source.len(), "one record per event");
    for (record, event) in records[1..].iter().zip(source) {
        let opt = |v: &Option<String>| v.as_deref().map(neutralised).unwrap_or_default();
        let expected = vec![
            event.id.clone(),
            time(&event.occurred_at),
            time(&event.recorded_at),
            neutralised(&event.source),
            neutralised(&event.actor_type),
            opt(&event.actor_id),
            opt(&event.actor_key_id),
            neutralised(&event.action),
            opt(&event.resource_type),
            opt(&event.resource_id),
            opt(&event.ip),
            opt(&event.request_id),
            opt(&event.external_id),
            neutralised(event.details.as_str()),
        ];
        assert_eq!(record, &expected, "row of {}", event.id);
    }
}

fn assert_ndjson_matches(file: &[u8], source: &[AuditEvent]) {
    let text = std::str::from_utf8(file).expect("UTF-8");
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert!(text.is_empty() || text.ends_with('\n'));
    assert_eq!(lines.len(), source.len(), "one line per event");
    for (line, event) in lines.iter().zip(source) {
        let parsed: Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(parsed, serde_json::to_value(event).unwrap());
    }
}

/// The finished export's file, checked against its own figures.
async fn downloaded(rig: &Rig, view: &Value) -> Vec<u8> {
    assert_eq!(view["status"], "succeeded", "{view}");
    let bytes = rig.download(view).await;
    assert_eq!(view["bytes"].as_u64(), Some(bytes.len() as u64), "{view}");
    assert_eq!(view["sha256"].as_str(), Some(sha256sum(&bytes).as_str()));
    bytes
}

// ---- the tests ----------------------------------------------------------------

both_stores!(
    exports_round_trip_every_row,
    killed_worker_resumes_from_its_checkpoint,
    cancel_aborts_the_upload,
    a_stalled_store_fails_the_attempt_which_backs_off_for_minutes,
    exports_show_a_pruned_jobs_transitions,
);

/// A job's transitions are the audit log's record of it: pruning the job
/// (its retention is shorter than the log's) leaves them in the export.
async fn exports_show_a_pruned_jobs_transitions(db: TestDb) {
    let root = std::env::temp_dir().join(format!("longhaul-exports-{}", uuid::Uuid::now_v7()));
    let artifacts = stores_of(local_store(&root));
    let rig = rig(&db, artifacts.clone()).await;
    let (tenant, key) = rig.tenant("acme").await;
    let created = rig
        .call(
            Method::POST,
            "/v1/jobs",
            &key,
            Some(json!({"kind": "system.noop"})),
        )
        .await;
    created.assert_status(StatusCode::ACCEPTED);
    let job = created.body["id"].as_str().unwrap().to_string();
    let claimed = db
        .store
        .claim(
            &ClaimRequest {
                queues: vec![created.body["queue"].as_str().unwrap().to_string()],
                limit: 1,
                worker_id: "worker-1".into(),
                lease: Duration::from_secs(30),
            },
            None,
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    db.store
        .save_checkpoint(claimed[0].lease(), &json!({"cursor": 1}))
        .await
        .expect("checkpoint");
    db.store
        .finish(
            claimed[0].lease(),
            &Finish::Succeeded {
                result: json!({"ok": true}),
            },
        )
        .await
        .expect("succeed");
    let pruned = db
        .store
        .prune_finished(Utc::now() + chrono::Duration::hours(1), 100)
        .await
        .expect("prune");
    assert_eq!(pruned, 1);

    let (_token, _worker) = start_worker(&rig.url, artifacts).await;
    let (of_job, _) = rig
        .export(
            &key,
            json!({"format": "json", "filters": {"resourceId": job}}),
        )
        .await;
    let (everything, _) = rig.export(&key, json!({"format": "csv"})).await;

    let view = rig.poll(&key, &of_job, Duration::from_secs(60)).await;
    let filter = AuditFilter {
        from: Some(view["from"].as_str().unwrap().parse().unwrap()),
        to: Some(view["to"].as_str().unwrap().parse().unwrap()),
        ..AuditFilter::default()
    };
    let job_filter = AuditFilter {
        resource_id: Some(job.clone()),
        ..filter.clone()
    };
    let source = rig.source_rows(&tenant.id, &job_filter).await;
    let actions: Vec<&str> = source.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["job.create", "job.started", "job.succeeded"]);
    assert_eq!(source[1].actor_id.as_deref(), Some("worker-1"));
    assert_ndjson_matches(&downloaded(&rig, &view).await, &source);
    assert_eq!(view["rowCount"], 3);
    assert_eq!(view["progress"]["rowsEstimated"], 3);

    let view = rig.poll(&key, &everything, Duration::from_secs(60)).await;
    let filter = AuditFilter {
        from: Some(view["from"].as_str().unwrap().parse().unwrap()),
        to: Some(view["to"].as_str().unwrap().parse().unwrap()),
        ..AuditFilter::default()
    };
    let source = rig.source_rows(&tenant.id, &filter).await;
    assert!(
        source
            .iter()
            .any(|e| e.action == "job.succeeded" && e.resource_id.as_deref() == Some(&job)),
        "{source:#?}"
    );
    assert_csv_matches(&downloaded(&rig, &view).await, &source);
    let _ = std::fs::remove_dir_all(root);
}

/// An object store that accepts connections and never answers: the export's
/// attempt fails within the S3 client's timeouts (instead of sitting
/// `running` until the kind's 6 h limit), with a transient error that is
/// retried after the transient back-off; the tenant sees its code, not the
/// bucket or the SDK's text.
async fn a_stalled_store_fails_the_attempt_which_backs_off_for_minutes(db: TestDb) {
    let (port, server) = crate::artifacts::silent_server().await;
    let timeouts = longhaul_core::artifacts::S3Timeouts {
        connect: Duration::from_millis(500),
        read: Duration::from_millis(500),
        attempt: Duration::from_secs(1),
    };
    let artifacts = stores_of_stalled(port, timeouts).await;
    let rig = rig(&db, artifacts.clone()).await;
    let (tenant, key) = rig.tenant("acme").await;
    let (worker, handle) = start_worker(&rig.url, artifacts).await;
    let (id, job) = rig.export(&key, json!({"format": "csv"})).await;
    let failed = wait_for_job(
        rig.stores.as_ref(),
        &tenant.id,
        job,
        Duration::from_secs(30),
        |job| job.failed_attempts >= 1,
    )
    .await;
    worker.cancel();
    handle.await.expect("worker");
    server.abort();
    assert_eq!(failed.state, JobState::Queued, "retried, not failed");
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("timeouts")),
        "{failed:#?}"
    );
    let events = rig
        .stores
        .job_events(&tenant.id, job, 0, 100)
        .await
        .expect("events");
    let retry = events
        .iter()
        .find(|e| e.kind == "retry_scheduled")
        .expect("a retry");
    let run_at: DateTime<Utc> =
        serde_json::from_value(retry.data.as_ref().expect("data")["runAt"].clone()).expect("runAt");
    assert!(
        run_at - retry.at >= chrono::Duration::seconds(12),
        "backed off only {}",
        run_at - retry.at
    );
    let view = rig
        .call(Method::GET, &format!("/v1/audit/exports/{id}"), &key, None)
        .await;
    assert_eq!(
        view.body["error"]["code"], "storage_unavailable",
        "{}",
        view.body
    );
    assert!(
        !view.body.to_string().contains("longhaul-stalled"),
        "{}",
        view.body
    );
}

async fn stores_of_stalled(
    port: u16,
    timeouts: longhaul_core::artifacts::S3Timeouts,
) -> Arc<ArtifactStores> {
    let store =
        longhaul_core::artifacts::S3Store::connect(&crate::artifacts::s3_config_at(port, timeouts))
            .await
            .expect("an S3 client");
    stores_of(Arc::new(store))
}

async fn exports_round_trip_every_row(db: TestDb) {
    let root = std::env::temp_dir().join(format!("longhaul-exports-{}", uuid::Uuid::now_v7()));
    let artifacts = stores_of(local_store(&root));
    let rig = rig(&db, artifacts.clone()).await;
    let (tenant, key) = rig.tenant("acme").await;
    let (_other, other_key) = rig.tenant("globex").await;
    rig.seed(&tenant.id, 1200).await;
    let (_token, _worker) = start_worker(&rig.url, artifacts).await;

    let (csv_id, csv_job) = rig.export(&key, json!({"format": "csv"})).await;
    let (json_id, _) = rig
        .export(
            &key,
            json!({"format": "json", "filters": {"action": "document.share"}}),
        )
        .await;
    let (gz_id, _) = rig
        .export(
            &key,
            json!({"format": "csv", "gzip": true, "filters": {"resourceId": "doc-7"}}),
        )
        .await;
    let (empty_id, _) = rig
        .export(
            &key,
            json!({"format": "json", "filters": {"action": "never.happened"}}),
        )
        .await;

    // CSV of everything: every row, as in the log at the export's range.
    let view = rig.poll(&key, &csv_id, Duration::from_secs(60)).await;
    let filter = AuditFilter {
        from: Some(view["from"].as_str().unwrap().parse().unwrap()),
        to: Some(view["to"].as_str().unwrap().parse().unwrap()),
        ..AuditFilter::default()
    };
    let source = rig.source_rows(&tenant.id, &filter).await;
    assert!(source.len() >= 1200, "{}", source.len());
    let file = downloaded(&rig, &view).await;
    assert_csv_matches(&file, &source);
    assert_eq!(view["rowCount"].as_u64(), Some(source.len() as u64));
    assert_eq!(
        view["progress"]["rowsDone"].as_u64(),
        Some(source.len() as u64)
    );
    assert_eq!(
        view["progress"]["rowsEstimated"].as_u64(),
        Some(source.len() as u64)
    );
    assert_eq!(view["fileName"], "audit-export.csv");
    let expires: DateTime<Utc> = view["downloadExpiresAt"].as_str().unwrap().parse().unwrap();
    assert!(expires > Utc::now() && expires < Utc::now() + chrono::Duration::minutes(6));

    // NDJSON with a filter.
    let view = rig.poll(&key, &json_id, Duration::from_secs(60)).await;
    let shares = AuditFilter {
        action: Some("document.share".into()),
        ..filter.clone()
    };
    let source = rig.source_rows(&tenant.id, &shares).await;
    assert_eq!(source.len(), 400);
    assert_ndjson_matches(&downloaded(&rig, &view).await, &source);

    // gzip: a valid gzip file of the CSV.
    let view = rig.poll(&key, &gz_id, Duration::from_secs(60)).await;
    let one = AuditFilter {
        resource_id: Some("doc-7".into()),
        ..filter.clone()
    };
    let gz = downloaded(&rig, &view).await;
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    assert_csv_matches(&gunzip(&gz), &rig.source_rows(&tenant.id, &one).await);
    assert_eq!(view["fileName"], "audit-export.csv.gz");

    // No rows: a valid empty file.
    let view = rig.poll(&key, &empty_id, Duration::from_secs(60)).await;
    assert_eq!(view["rowCount"], 0);
    assert!(downloaded(&rig, &view).await.is_empty());

    // The list shows all four, newest first, without links.
    let list = rig
        .call(Method::GET, "/v1/audit/exports?limit=3", &key, None)
        .await;
    list.assert_status(StatusCode::OK);
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["exportId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![empty_id.as_str(), gz_id.as_str(), json_id.as_str()]
    );
    let next = list.body["nextCursor"].as_str().unwrap();
    let rest = rig
        .call(
            Method::GET,
            &format!("/v1/audit/exports?cursor={next}"),
            &key,
            None,
        )
        .await;
    assert_eq!(rest.body["data"][0]["exportId"], csv_id.as_str());
    assert_eq!(rest.body["nextCursor"], Value::Null);

    // The job's result redirects to a link too.
    let (status, headers, _) = {
        let request = http::request(
            Method::GET,
            &format!("/v1/jobs/{csv_job}/result"),
            Some(&key),
            &[],
            None,
        );
        let response = tower::ServiceExt::oneshot(rig.router.clone(), request)
            .await
            .unwrap();
        (response.status(), response.headers().clone(), ())
    };
    assert_eq!(status, StatusCode::FOUND);
    let location = headers["location"].to_str().unwrap();
    let at = location.find("/v1/artifacts/").expect("a token link");
    let (status, headers, body) = send_bytes(&rig.router, &location[at..]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, file);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("audit-export.csv"));

    // A token altered by one character names nothing.
    let token = &location[at + "/v1/artifacts/".len()..];
    let mut altered = token.to_string();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _, _) = send_bytes(&rig.router, &format!("/v1/artifacts/{altered}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Another tenant sees none of it.
    rig.call(
        Method::GET,
        &format!("/v1/audit/exports/{csv_id}"),
        &other_key,
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    rig.call(
        Method::GET,
        &format!("/v1/jobs/{csv_job}/result"),
        &other_key,
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    let list = rig
        .call(Method::GET, "/v1/audit/exports", &other_key, None)
        .await;
    assert_eq!(list.body["data"], json!([]));

    // A retried create with the same key answers the same export, though
    // its defaulted range would resolve to a later "now"; another body with
    // that key is a conflict.
    let replay = rig
        .create_keyed(&key, "nightly-1", json!({"format": "csv"}))
        .await;
    replay.assert_status(StatusCode::ACCEPTED);
    let first_id = replay.body["exportId"].clone();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = rig
        .create_keyed(&key, "nightly-1", json!({"format": "csv"}))
        .await;
    again.assert_status(StatusCode::ACCEPTED);
    assert_eq!(again.body["exportId"], first_id);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    rig.create_keyed(&key, "nightly-1", json!({"format": "json"}))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // Exports are made only through their endpoint, and only admins read them.
    rig.call(
        Method::POST,
        "/v1/jobs",
        &key,
        Some(json!({"kind": "audit.export", "params": {
            "format": "csv", "gzip": false, "from": "2001-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}})),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    rig.call(
        Method::POST,
        "/v1/schedules",
        &key,
        Some(json!({"name": "exp", "cron": "0 3 * * *", "kind": "audit.export", "params": {
            "format": "csv", "gzip": false, "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}})),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let viewer = rig.key(&tenant, Role::Viewer).await;
    rig.call(
        Method::GET,
        &format!("/v1/jobs/{csv_job}/result"),
        &viewer,
        None,
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
    rig.call(
        Method::GET,
        &format!("/v1/audit/exports/{csv_id}"),
        &viewer,
        None,
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");

    // Bad requests change nothing.
    let before = rig.call(Method::GET, "/v1/audit/exports", &key, None).await;
    for (body, field) in [
        (json!({"format": "xml"}), None),
        (
            json!({"format": "csv", "from": "2001-01-01T00:00:00Z"}),
            Some("from"),
        ),
        (
            json!({"format": "csv", "to": "2999-01-01T00:00:00Z"}),
            Some("to"),
        ),
        (
            json!({"format": "csv", "filters": {"source": "elsewhere"}}),
            Some("filters.source"),
        ),
        (json!({"format": "csv", "filters": {"colour": "red"}}), None),
    ] {
        let reply = rig
            .call(Method::POST, "/v1/audit/exports", &key, Some(body.clone()))
            .await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        if let Some(field) = field {
            assert_eq!(reply.body["error"]["details"]["field"], field, "{body}");
        }
    }
    let after = rig.call(Method::GET, "/v1/audit/exports", &key, None).await;
    let ids = |reply: &Reply| -> Vec<Value> {
        reply.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["exportId"].clone())
            .collect()
    };
    assert_eq!(
        ids(&before),
        ids(&after),
        "a refused request created nothing"
    );
    let _ = std::fs::remove_dir_all(root);
}

async fn killed_worker_resumes_from_its_checkpoint(db: TestDb) {
    let root = std::env::temp_dir().join(format!("longhaul-exports-{}", uuid::Uuid::now_v7()));
    let rig = rig(&db, stores_of(local_store(&root))).await;
    let (tenant, key) = rig.tenant("acme").await;
    rig.seed(&tenant.id, 3 * PAGE_ROWS as usize).await;

    // The first worker stops dead once two parts are stored.
    let gate = Gate::new(2);
    let first_root = root.clone();
    let first_gate = gate.clone();
    let first = KillableWorker::start(rig.url.clone(), move || {
        gated(local_store(&first_root), &first_gate)
    });
    let (id, job) = rig.export(&key, json!({"format": "csv"})).await;
    let checkpoint = wait_for_checkpoint(rig.stores.as_ref(), &tenant.id, job).await;
    let saved_rows = checkpoint["rowsDone"].as_u64().unwrap();
    assert!(saved_rows > 0);
    first.kill();

    // The next worker (after the lease expires) resumes from the checkpoint.
    let (_token, _worker) = start_worker(&rig.url, stores_of(local_store(&root))).await;
    let view = rig.poll(&key, &id, Duration::from_secs(60)).await;
    let done = rig.stores.get_job(&tenant.id, job).await.unwrap();
    assert_eq!(done.attempt, 2, "one attempt killed, one resumed");
    let resumed_from = done.result.as_ref().unwrap()["resumedFromRow"]
        .as_u64()
        .unwrap();
    assert!(
        resumed_from >= saved_rows && resumed_from > 0,
        "resumed from row {resumed_from}, the checkpoint had {saved_rows}"
    );
    let filter = AuditFilter {
        from: Some(view["from"].as_str().unwrap().parse().unwrap()),
        to: Some(view["to"].as_str().unwrap().parse().unwrap()),
        ..AuditFilter::default()
    };
    let source = rig.source_rows(&tenant.id, &filter).await;
    assert_csv_matches(&downloaded(&rig, &view).await, &source);
    // No temp file of either attempt is left.
    assert_no_temp_files(&root);
    let _ = std::fs::remove_dir_all(root);
}

fn assert_no_temp_files(root: &std::path::Path) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                let name = entry.file_name().to_string_lossy().to_string();
                assert!(!name.contains(".longhaul-upload-"), "left behind: {name}");
            }
        }
    }
}

async fn cancel_aborts_the_upload(db: TestDb) {
    let root = std::env::temp_dir().join(format!("longhaul-exports-{}", uuid::Uuid::now_v7()));
    let gate = Gate::new(1);
    let artifacts = gated(local_store(&root), &gate);
    let rig = rig(&db, artifacts.clone()).await;
    let (tenant, key) = rig.tenant("acme").await;
    rig.seed(&tenant.id, 3 * PAGE_ROWS as usize).await;
    let (_token, _worker) = start_worker(&rig.url, artifacts).await;
    let (id, job) = rig.export(&key, json!({"format": "json"})).await;
    wait_for_checkpoint(rig.stores.as_ref(), &tenant.id, job).await;
    rig.call(Method::POST, &format!("/v1/jobs/{job}/cancel"), &key, None)
        .await
        .assert_status(StatusCode::OK);
    // The worker sees the cancel at its next heartbeat; then let it write.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gate.open();
    let view = rig.poll(&key, &id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    assert_eq!(view["downloadUrl"], Value::Null);
    assert_no_temp_files(&root);
    let listed = local_store(&root).list("tenants/").await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    let _ = std::fs::remove_dir_all(root);
}

/// S3 (moto): a failed part is retried and the retry resumes; a cancel
/// aborts the multipart upload; a server that disappears fails the export
/// cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_exports_survive_faults() {
    let db = crate::harness::postgres().await;
    let mut moto = Moto::start().await;
    let s3: Arc<dyn ObjectStore> = Arc::new(moto.store("longhaul-exports").await);
    let gate = Gate::new(1);
    let artifacts = gated(s3.clone(), &gate);
    let rig = rig(&db, artifacts.clone()).await;
    let (tenant, key) = rig.tenant("acme").await;
    // Over two 5 MiB parts of CSV.
    rig.seed(&tenant.id, 40_000).await;
    let (_token, _worker) = start_worker(&rig.url, artifacts).await;

    // 1. The second part fails (a 503 from S3): the attempt fails, the retry
    //    resumes from the checkpoint, and the file is exact.
    let (id, job) = rig.export(&key, json!({"format": "csv"})).await;
    let checkpoint = wait_for_checkpoint(rig.stores.as_ref(), &tenant.id, job).await;
    assert_eq!(checkpoint["upload"]["parts"].as_array().unwrap().len(), 1);
    gate.fail_next.store(true, Ordering::SeqCst);
    gate.open();
    let view = rig.poll(&key, &id, Duration::from_secs(120)).await;
    let done = rig.stores.get_job(&tenant.id, job).await.unwrap();
    assert_eq!(done.attempt, 2, "{done:#?}");
    assert!(
        done.result.as_ref().unwrap()["resumedFromRow"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        view["downloadUrl"]
            .as_str()
            .unwrap()
            .contains("X-Amz-Signature="),
        "an S3 presigned link: {view}"
    );
    let filter = AuditFilter {
        from: Some(view["from"].as_str().unwrap().parse().unwrap()),
        to: Some(view["to"].as_str().unwrap().parse().unwrap()),
        ..AuditFilter::default()
    };
    let source = rig.source_rows(&tenant.id, &filter).await;
    assert_csv_matches(&downloaded(&rig, &view).await, &source);
    let records = rig.stores.job_artifacts(&tenant.id, job).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, ArtifactStatus::Stored);
    assert_eq!(records[0].size, view["bytes"].as_u64());

    // 2. A cancel mid-upload aborts the multipart upload: no parts are left.
    let s3_store = moto.store("longhaul-exports").await;
    gate.parts_stored.store(0, Ordering::SeqCst);
    gate.open.send_replace(false);
    let (id, job) = rig.export(&key, json!({"format": "json"})).await;
    wait_for_checkpoint(rig.stores.as_ref(), &tenant.id, job).await;
    let prefix = format!("tenants/{}/audit.export/{job}/", tenant.id);
    assert_eq!(s3_store.pending_uploads(&prefix).await.unwrap().len(), 1);
    rig.call(Method::POST, &format!("/v1/jobs/{job}/cancel"), &key, None)
        .await
        .assert_status(StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gate.open();
    let view = rig.poll(&key, &id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "cancelled");
    assert_eq!(
        s3_store.pending_uploads(&prefix).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(s3.list(&prefix).await.unwrap().is_empty());

    // 3. The server disappears mid-upload: the export fails (after its
    //    retries) with nothing to download.
    gate.parts_stored.store(0, Ordering::SeqCst);
    gate.open.send_replace(false);
    let (id, job) = rig.export(&key, json!({"format": "csv"})).await;
    wait_for_checkpoint(rig.stores.as_ref(), &tenant.id, job).await;
    moto.kill().await;
    gate.open();
    let failed = wait_for_job(
        rig.stores.as_ref(),
        &tenant.id,
        job,
        Duration::from_secs(60),
        |job| job.attempt >= 2 && job.state != JobState::Running,
    )
    .await;
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("S3")),
        "{failed:#?}"
    );
    let view = rig
        .call(Method::GET, &format!("/v1/audit/exports/{id}"), &key, None)
        .await;
    assert_ne!(view.body["status"], "succeeded");
    assert_eq!(view.body["downloadUrl"], Value::Null);
    rig.call(Method::GET, &format!("/v1/jobs/{job}/result"), &key, None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
}
