//! Leakage and classification scans end to end on both stores: policies
//! through the API, scans created through the API and run by a real worker
//! pool over real sources (a git repository's history, a data bucket, an
//! HTTP URL, inline text, a GitHub-style organization behind a mock API),
//! then findings, incidents, stats and per-object classifications read back
//! through the API. Redaction is checked on every answer and on the audit
//! log: no planted secret may appear anywhere. Bad requests get 422 and
//! create nothing; store writes of a scan are fenced by its lease.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use axum::Router;
use longhaul_api::AppState;
use longhaul_core::artifacts::{
    ArtifactStores, Bytes, LocalStore, ObjectInfo, ObjectReader, ObjectStore, StorageError, Upload,
    UploadState,
};
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::config::{GitHost, ScanConfig};
use longhaul_core::job::{ClaimRequest, Lease};
use longhaul_core::scans::leakage::NewFinding;
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{KeyMode, NewTenant, Role, Tenant};
use longhaul_core::{JobId, JobState};
use longhaul_scan::Severity;
use longhaul_worker::{JobServices, PoolConfig, WorkerPool};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::harness::TestDb;
use crate::http::{self, Reply};
use crate::support::{pool_config, wait_for_job};

const REGION: &str = "eu";

/// Where a test keeps its files: artifacts (and data buckets under
/// `.buckets/`), and repositories under `repos/` (the local root).
struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("longhaul-scans-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(root.join("repos")).expect("dirs");
        Dirs { root }
    }

    fn artifacts(&self) -> Arc<ArtifactStores> {
        Arc::new(ArtifactStores::local(
            self.root.join("artifacts"),
            http::test_signer(),
        ))
    }

    fn bucket(&self, bucket: &str) -> PathBuf {
        self.root.join("artifacts").join(".buckets").join(bucket)
    }

    fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let path = self.bucket(bucket).join(key);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("dir");
        std::fs::write(path, bytes).expect("object");
    }

    fn repos(&self) -> PathBuf {
        self.root.join("repos")
    }

    fn scan_config(&self) -> ScanConfig {
        ScanConfig {
            local_root: Some(self.repos()),
            allow_private_urls: true,
            ..ScanConfig::default()
        }
    }
}

struct Rig {
    router: Router,
    stores: Arc<dyn Stores>,
}

async fn rig(db: &TestDb, dirs: &Dirs) -> Rig {
    rig_with(db, dirs, dirs.scan_config()).await
}

async fn rig_with(db: &TestDb, dirs: &Dirs, scans: ScanConfig) -> Rig {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let state = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_artifacts(dirs.artifacts())
        .with_scan_config(scans);
    Rig {
        router: longhaul_api::router(state),
        stores,
    }
}

impl Rig {
    /// A tenant whose data buckets are `code` and `files`; an admin key.
    async fn tenant(&self, name: &str) -> (Tenant, String) {
        let tenant = self
            .stores
            .create_tenant(
                NewTenant {
                    settings: json!({
                        "dataBuckets": {"code": "code-bucket", "files": "files-bucket"},
                        "gitOwners": {"github": ["acme-org"]},
                    }),
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
            .issue_api_key(
                Some(&tenant.id),
                "scans",
                role,
                KeyMode::Test,
                &Actor::system(),
            )
            .await
            .expect("key")
            .secret
    }

    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        http::call(&self.router, method, path, Some(key), body).await
    }

    /// Every item of a paged listing, `limit` at a time.
    async fn all(&self, path: &str, key: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let page_path = match &cursor {
                Some(c) => format!("{path}{separator}limit={limit}&cursor={c}"),
                None => format!("{path}{separator}limit={limit}"),
            };
            let reply = self.call(Method::GET, &page_path, key, None).await;
            reply.assert_status(StatusCode::OK);
            let page = reply.body["data"].as_array().expect("data").clone();
            assert!(page.len() <= limit as usize);
            items.extend(page);
            match reply.body["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return items,
            }
        }
    }

    async fn job_count(&self, tenant: &Tenant) -> usize {
        self.stores
            .list_jobs(&tenant.id, &Default::default(), None, 1000)
            .await
            .expect("jobs")
            .len()
    }

    /// Creates a scan (202 with Location); its id and job id.
    async fn scan(&self, path: &str, key: &str, body: Value) -> (String, JobId) {
        let reply = self.call(Method::POST, path, key, Some(body)).await;
        reply.assert_status(StatusCode::ACCEPTED);
        // Queued when created; a fast worker may have started it already.
        assert!(
            reply.body["status"] == "queued" || reply.body["status"] == "running",
            "{}",
            reply.body
        );
        assert!(
            reply.body["estimatedCompletionAt"].is_string(),
            "{}",
            reply.body
        );
        let id = reply.body["scanId"].as_str().expect("scanId").to_string();
        assert_eq!(
            reply.headers["location"].to_str().unwrap(),
            format!("{path}/{id}")
        );
        let job: JobId = reply.body["jobId"].as_str().unwrap().parse().unwrap();
        (id, job)
    }

    async fn wait_succeeded(&self, tenant: &Tenant, job: JobId) {
        let done = wait_for_job(
            self.stores.as_ref(),
            &tenant.id,
            job,
            Duration::from_secs(90),
            |job| job.state.is_terminal(),
        )
        .await;
        assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    }
}

fn scans_pool() -> PoolConfig {
    PoolConfig {
        queues: vec!["scans".into()],
        ..pool_config(2)
    }
}

async fn start_worker(db: &TestDb, dirs: &Dirs, scans: ScanConfig) -> CancellationToken {
    start_worker_with(&db.url, dirs.artifacts(), scans).await
}

async fn start_worker_with(
    url: &str,
    artifacts: Arc<ArtifactStores>,
    scans: ScanConfig,
) -> CancellationToken {
    let stores = longhaul_core::store::connect_stores(url, 8)
        .await
        .expect("worker stores");
    let services = JobServices {
        stores: stores.clone(),
        artifacts,
        artifact_retention: Duration::from_secs(86_400),
        scans,
    };
    let registry = longhaul_worker::jobs::registry_with_services(&services);
    let job_store: Arc<dyn longhaul_core::JobStore> = stores;
    let pool = WorkerPool::new(job_store, registry, scans_pool());
    let token = CancellationToken::new();
    let run = pool.run(token.clone());
    tokio::spawn(run);
    token
}

/// A valid secret of the built-in rule `id` in a realistic line.
fn planted(id: &str, rng: &mut fastrand::Rng) -> (String, String) {
    let rules = longhaul_scan::rules::builtin();
    let rule = rules.iter().find(|r| r.id == id).expect("a built-in rule");
    (rule.sample)(rng)
}

/// `bytes` as one gzip member.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Longhaul Test",
            "-c",
            "user.email=test@example.com",
        ])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

/// A repository whose second commit removes the secret the first added.
fn repository_with_removed_secret(dir: &Path, file_line: &str) {
    std::fs::create_dir_all(dir).expect("repo dir");
    git(dir, &["init", "--quiet", "-b", "main"]);
    let mut file = std::fs::File::create(dir.join("config.py")).expect("file");
    writeln!(file, "import os\n\n{file_line}\n").expect("write");
    git(dir, &["add", "."]);
    git(dir, &["commit", "--quiet", "-m", "add config"]);
    std::fs::write(
        dir.join("config.py"),
        "import os\n\nKEY = os.environ['KEY']\n",
    )
    .expect("rewrite");
    git(dir, &["commit", "--quiet", "-am", "use the environment"]);
}

/// Serves `body` at every path on 127.0.0.1; its address.
async fn serve(routes: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, routes).await });
    address
}

/// No answer, audit event or file under `dirs` may hold a secret.
fn assert_redacted(texts: &[String], secrets: &[String]) {
    for secret in secrets {
        for text in texts {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked: {secret} in {}",
                &text[..text.len().min(400)]
            );
        }
    }
}

both_stores!(
    leakage_scans_find_redact_and_deduplicate,
    leakage_bad_requests_change_nothing,
    leakage_policies_crud,
    classification_scans_classify_objects,
    hosted_organizations_expand_to_repositories,
    scan_writes_are_fenced_and_idempotent,
    killed_leakage_scan_resumes_after_its_last_object,
    scans_cannot_reach_private_addresses,
);

async fn leakage_scans_find_redact_and_deduplicate(db: TestDb) {
    let dirs = Dirs::new();
    let rig = rig(&db, &dirs).await;
    let (tenant, key) = rig.tenant("acme").await;
    let (other, other_key) = rig.tenant("globex").await;
    let mut rng = fastrand::Rng::with_seed(7);

    // A git repository whose history holds a secret the tip no longer has.
    let (git_line, git_secret) = planted("github-token", &mut rng);
    let repo = dirs.repos().join("service");
    repository_with_removed_secret(&repo, &git_line);

    // Bucket objects: secrets at known lines; one under an allowlisted path.
    let (aws_line, aws_secret) = planted("aws-access-key-id", &mut rng);
    let (stripe_line, stripe_secret) = planted("stripe-secret-key", &mut rng);
    let (vendor_line, vendor_secret) = planted("slack-bot-token", &mut rng);
    dirs.put(
        "code-bucket",
        "src/app.py",
        format!("# app\nimport boto3\n\n{aws_line}\n").as_bytes(),
    );
    dirs.put(
        "code-bucket",
        "src/pay.js",
        format!("const x = 1;\n{stripe_line}\n").as_bytes(),
    );
    dirs.put(
        "code-bucket",
        "vendor/lib.py",
        format!("{vendor_line}\n").as_bytes(),
    );
    dirs.put("code-bucket", "README.md", b"nothing to see here\n");
    // A gzip object (two members, as the audit export writes them): scanned
    // as the text it inflates to.
    let (gzip_line, gzip_secret) = planted("npm-token", &mut rng);
    let mut gzipped = gzip(b"deploy started\n");
    gzipped.extend(gzip(format!("step 2\n{gzip_line}\n").as_bytes()));
    dirs.put("code-bucket", "src/deploy.log.gz", &gzipped);

    // A URL and inline text.
    let (url_line, url_secret) = planted("sendgrid-api-key", &mut rng);
    let page = format!("<html>\n<script>\n{url_line}\n</script>\n");
    let address = serve(Router::new().route(
        "/config.js",
        axum::routing::get(move || {
            let page = page.clone();
            async move { page }
        }),
    ))
    .await;
    let acme_token = format!("acme_{}", "3f9a0c1b2d4e5f60718293a4b5c6d7e8");
    let inline = format!("line one\nexport ACME={acme_token}\nINTERNAL-ONLY marker\n");

    // A policy: a regex, a keyword, an allowlisted folder.
    let policy = rig
        .call(
            Method::POST,
            "/v1/leakage/policies",
            &key,
            Some(json!({
                "name": "acme",
                "patterns": [
                    {"id": "acme-token", "type": "regex", "pattern": "acme_[0-9a-f]{32}", "severity": "high"},
                    {"id": "internal-marker", "type": "keyword", "keywords": ["internal-only"], "severity": "low"}
                ],
                "allowlist": {"paths": ["vendor/"]}
            })),
        )
        .await;
    policy.assert_status(StatusCode::CREATED);

    let _worker = start_worker(&db, &dirs, dirs.scan_config()).await;
    let body = json!({
        "targets": [
            {"type": "git", "path": repo.display().to_string()},
            {"type": "bucket", "bucket": "code", "prefixes": ["src/", "vendor/"]},
            {"type": "url", "url": format!("http://{address}/config.js")},
            {"type": "inline", "name": "snippet.env", "content": inline},
        ],
    });
    let (scan_id, job) = rig.scan("/v1/leakage/scans", &key, body.clone()).await;
    assert!(scan_id.starts_with("lks_"));
    rig.wait_succeeded(&tenant, job).await;

    let scan = rig
        .call(
            Method::GET,
            &format!("/v1/leakage/scans/{scan_id}"),
            &key,
            None,
        )
        .await;
    scan.assert_status(StatusCode::OK);
    assert_eq!(scan.body["status"], "succeeded");
    assert!(scan.body["completedAt"].is_string() && scan.body["startedAt"].is_string());
    assert!(scan.body["progress"]["bytesScanned"].as_u64().unwrap() > 0);

    let findings = rig
        .all(&format!("/v1/leakage/scans/{scan_id}/findings"), &key, 2)
        .await;
    assert_eq!(
        scan.body["findingsCount"].as_u64().unwrap() as usize,
        findings.len()
    );
    // Listed in the order found: a file's findings by line.
    for pair in findings.windows(2) {
        let same_file = ["source", "commit", "path"]
            .iter()
            .all(|k| pair[0][*k] == pair[1][*k]);
        if same_file {
            assert!(
                pair[0]["line"].as_u64() <= pair[1]["line"].as_u64(),
                "{pair:?}"
            );
        }
    }
    let at = |rule: &str, path: &str, line: u64| {
        findings
            .iter()
            .find(|f| f["rule"] == rule && f["path"] == path && f["line"] == line)
            .unwrap_or_else(|| panic!("no {rule} at {path}:{line} in {findings:#?}"))
            .clone()
    };
    let in_history = at("github-token", "config.py", 3);
    assert!(in_history["commit"].as_str().is_some_and(|c| c.len() == 40));
    assert_eq!(in_history["severity"], "critical");
    at("aws-access-key-id", "src/app.py", 4);
    at("stripe-secret-key", "src/pay.js", 2);
    at("npm-token", "src/deploy.log.gz", 3);
    at(
        "sendgrid-api-key",
        &format!("http://{address}/config.js"),
        3,
    );
    let custom = at("acme-token", "snippet.env", 2);
    assert_eq!(custom["severity"], "high");
    assert_eq!(custom["column"], 13);
    at("internal-marker", "snippet.env", 3);
    assert!(
        !findings.iter().any(|f| f["path"] == "vendor/lib.py"),
        "the allowlisted folder was reported"
    );
    for finding in &findings {
        let redacted = finding["redacted"].as_str().unwrap();
        assert!(redacted.contains("****"), "{finding}");
    }

    // A second scan of the same inline text: the incident is shared.
    let (second, second_job) = rig
        .scan(
            "/v1/leakage/scans",
            &key,
            json!({"targets": [{"type": "inline", "name": "again.env", "content": format!("ACME={acme_token}\n")}],
                   "builtinRules": false}),
        )
        .await;
    rig.wait_succeeded(&tenant, second_job).await;
    let second_findings = rig
        .all(&format!("/v1/leakage/scans/{second}/findings"), &key, 50)
        .await;
    assert_eq!(second_findings.len(), 1, "{second_findings:#?}");
    assert_eq!(second_findings[0]["fingerprint"], custom["fingerprint"]);

    let incidents = rig.all("/v1/leakage/incidents", &key, 3).await;
    let distinct: BTreeSet<&str> = findings
        .iter()
        .map(|f| f["fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(incidents.len(), distinct.len());
    let incident_id = format!("inc_{}", custom["fingerprint"].as_str().unwrap());
    let incident = rig
        .call(
            Method::GET,
            &format!("/v1/leakage/incidents/{incident_id}"),
            &key,
            None,
        )
        .await;
    incident.assert_status(StatusCode::OK);
    assert_eq!(incident.body["occurrences"], 2);
    assert_eq!(incident.body["status"], "open");
    assert_eq!(incident.body["firstScanId"], json!(scan_id));
    assert_eq!(incident.body["lastScanId"], json!(second));

    // Resolve it: who and when are kept, and audited.
    let viewer = rig.key(&tenant, Role::Viewer).await;
    rig.call(
        Method::PATCH,
        &format!("/v1/leakage/incidents/{incident_id}"),
        &viewer,
        Some(json!({"status": "resolved"})),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let resolved = rig
        .call(
            Method::PATCH,
            &format!("/v1/leakage/incidents/{incident_id}"),
            &key,
            Some(json!({"status": "resolved", "note": "rotated"})),
        )
        .await;
    resolved.assert_status(StatusCode::OK);
    assert_eq!(resolved.body["status"], "resolved");
    assert!(resolved.body["resolvedBy"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    assert!(resolved.body["resolvedAt"].is_string());
    assert_eq!(resolved.body["note"], "rotated");
    let open = rig.all("/v1/leakage/incidents?status=open", &key, 50).await;
    assert_eq!(open.len(), distinct.len() - 1);
    let critical = rig
        .all("/v1/leakage/incidents?severity=critical", &key, 50)
        .await;
    assert!(critical.iter().all(|i| i["severity"] == "critical"));
    assert!(!critical.is_empty());

    let stats = rig.call(Method::GET, "/v1/leakage/stats", &key, None).await;
    stats.assert_status(StatusCode::OK);
    assert_eq!(
        stats.body["findings"].as_u64().unwrap() as usize,
        findings.len() + 1
    );
    assert_eq!(stats.body["incidents"]["resolved"], 1);
    assert_eq!(
        stats.body["incidents"]["open"].as_u64().unwrap() as usize,
        distinct.len() - 1
    );
    assert_eq!(stats.body["bySeverity"]["high"]["resolved"], 1);

    // Another tenant sees none of it.
    rig.call(
        Method::GET,
        &format!("/v1/leakage/scans/{scan_id}"),
        &other_key,
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    rig.call(
        Method::GET,
        &format!("/v1/leakage/incidents/{incident_id}"),
        &other_key,
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    let other_stats = rig
        .call(Method::GET, "/v1/leakage/stats", &other_key, None)
        .await;
    assert_eq!(other_stats.body["findings"], 0);
    // The same secret in another tenant: another fingerprint (keyed per
    // tenant), so incidents cannot be matched across tenants.
    let (copy, copy_job) = rig
        .scan(
            "/v1/leakage/scans",
            &other_key,
            json!({"targets": [{"type": "inline", "name": "copy.py", "content": format!("{aws_line}\n")}]}),
        )
        .await;
    rig.wait_succeeded(&other, copy_job).await;
    let copied = rig
        .all(
            &format!("/v1/leakage/scans/{copy}/findings"),
            &other_key,
            10,
        )
        .await;
    assert_eq!(copied.len(), 1, "{copied:#?}");
    let original = at("aws-access-key-id", "src/app.py", 4);
    assert_eq!(copied[0]["rule"], original["rule"]);
    assert_eq!(copied[0]["redacted"], original["redacted"]);
    assert_ne!(copied[0]["fingerprint"], original["fingerprint"]);

    // Redaction everywhere: answers, the job, its events, the audit log.
    let mut texts = Vec::new();
    for path in [
        format!("/v1/leakage/scans/{scan_id}"),
        format!("/v1/leakage/scans/{scan_id}/findings?limit=200"),
        "/v1/leakage/incidents?limit=200".to_string(),
        format!("/v1/jobs/{job}"),
        "/v1/jobs?limit=100".to_string(),
        "/v1/audit/events?limit=1000".to_string(),
        "/v1/leakage/scans".to_string(),
    ] {
        let (status, _, text) = http::send_raw(
            &rig.router,
            http::request(Method::GET, &path, Some(&key), &[], None),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
        texts.push(text);
    }
    let secrets = vec![
        git_secret,
        aws_secret,
        stripe_secret,
        url_secret,
        acme_token.clone(),
        vendor_secret,
        gzip_secret,
    ];
    assert_redacted(&texts, &secrets);
    // The inline texts were deleted when their scans ended.
    let leftovers: Vec<_> = walk(&dirs.root.join("artifacts").join(REGION));
    assert!(
        leftovers.iter().all(|p| !p.contains("inline")),
        "{leftovers:?}"
    );

    // An idempotent replay answers the same scan; another body is refused.
    let keyed = |body: Value| {
        http::request(
            Method::POST,
            "/v1/leakage/scans",
            Some(&key),
            &[("idempotency-key", "scan-1")],
            Some(body),
        )
    };
    let small = json!({"targets": [{"type": "bucket", "bucket": "code", "prefixes": ["src/"]}]});
    let first = http::send(&rig.router, keyed(small.clone())).await;
    first.assert_status(StatusCode::ACCEPTED);
    let replay = http::send(&rig.router, keyed(small)).await;
    replay.assert_status(StatusCode::ACCEPTED);
    assert_eq!(replay.body["scanId"], first.body["scanId"]);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    http::send(
        &rig.router,
        keyed(json!({"targets": [{"type": "bucket", "bucket": "files"}]})),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "conflict");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path().display().to_string());
            }
        }
    }
    out
}

async fn leakage_bad_requests_change_nothing(db: TestDb) {
    let dirs = Dirs::new();
    let rig = rig(&db, &dirs).await;
    let (tenant, key) = rig.tenant("acme").await;
    let viewer = rig.key(&tenant, Role::Viewer).await;
    let before = rig.job_count(&tenant).await;
    let cases = [
        (json!({}), "targets"),
        (json!({"targets": []}), "targets"),
        (json!({"targets": [{"type": "git"}]}), "targets[0].url"),
        (
            json!({"targets": [{"type": "git", "url": "ftp://example.com/r.git"}]}),
            "targets[0].url",
        ),
        (
            json!({"targets": [{"type": "git", "url": "https://user:pw@example.com/r.git"}]}),
            "targets[0].url",
        ),
        (
            json!({"targets": [{"type": "git", "path": "/etc"}]}),
            "targets[0].path",
        ),
        (
            json!({"targets": [{"type": "git", "path": format!("{}/../x", dirs.repos().display())}]}),
            "targets[0].path",
        ),
        (
            json!({"targets": [{"type": "bucket", "bucket": "nope"}]}),
            "targets[0].bucket",
        ),
        (
            json!({"targets": [{"type": "inline", "content": ""}]}),
            "targets[0].content",
        ),
        (
            json!({"targets": [{"type": "github"}]}),
            "targets[0].repositories",
        ),
        (
            json!({"targets": [{"type": "github", "repositories": ["no-slash"]}]}),
            "targets[0].repositories[0]",
        ),
        (
            json!({"targets": [{"type": "url", "url": "http://x/", "bucket": "code"}]}),
            "targets[0].bucket",
        ),
        (
            json!({"scope": {"buckets": ["code"], "prefixes": ["../up"]}}),
            "scope.prefixes[0]",
        ),
        (
            json!({"scope": {"buckets": ["code"], "prefixes": ["a//b"]}}),
            "scope.prefixes[0]",
        ),
        (
            json!({"targets": [{"type": "url", "url": "https://x.test/a?sig=abc"}]}),
            "targets[0].url",
        ),
        (
            json!({"targets": [{"type": "git", "url": "https://x.test/r.git#frag"}]}),
            "targets[0].url",
        ),
        (
            json!({"targets": [{"type": "url", "url": "https://ex%61mple.com/x"}]}),
            "targets[0].url",
        ),
        (
            json!({"targets": [{"type": "url", "url": "https://x.test/"}], "policyIds": ["lkp_nope"]}),
            "policyIds[0]",
        ),
        (
            json!({"targets": [{"type": "url", "url": "https://x.test/"}], "builtinRules": false}),
            "builtinRules",
        ),
    ];
    for (body, field) in cases {
        let reply = rig
            .call(Method::POST, "/v1/leakage/scans", &key, Some(body.clone()))
            .await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert_eq!(
            reply.body["error"]["details"]["field"], field,
            "{body}: {}",
            reply.body
        );
    }
    rig.call(
        Method::POST,
        "/v1/leakage/scans",
        &key,
        Some(json!({"targets": [{"type": "carrier-pigeon"}]})),
    )
    .await
    .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    rig.call(
        Method::POST,
        "/v1/leakage/scans",
        &viewer,
        Some(json!({"targets": [{"type": "url", "url": "https://x.test/"}]})),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
    rig.call(
        Method::POST,
        "/v1/classification/scans",
        &key,
        Some(json!({"scope": {"buckets": []}})),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    for bytes in [0, 64 * 1024 * 1024 + 1] {
        rig.call(
            Method::POST,
            "/v1/classification/scans",
            &key,
            Some(json!({"scope": {"buckets": ["code"]}, "maxObjectBytes": bytes})),
        )
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    }
    // The kinds are not for POST /v1/jobs.
    rig.call(
        Method::POST,
        "/v1/jobs",
        &key,
        Some(json!({"kind": "leakage.scan", "params": {"sources": [{"type": "url", "url": "http://169.254.169.254/"}], "builtinRules": true}})),
    )
    .await
    .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        rig.job_count(&tenant).await,
        before,
        "a refused request created a job"
    );
    assert!(
        walk(&dirs.root.join("artifacts")).is_empty(),
        "a refused request stored an object"
    );
    for path in [
        "/v1/leakage/scans/lks_nope",
        "/v1/leakage/scans/job_x/findings",
        "/v1/leakage/incidents/inc_zz",
    ] {
        rig.call(Method::GET, path, &key, None)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    rig.call(
        Method::GET,
        "/v1/leakage/incidents?cursor=garbage",
        &key,
        None,
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    rig.call(Method::GET, "/v1/leakage/scans?limit=0", &key, None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
}

async fn leakage_policies_crud(db: TestDb) {
    let dirs = Dirs::new();
    let rig = rig(&db, &dirs).await;
    let (tenant, key) = rig.tenant("acme").await;
    let (_other, other_key) = rig.tenant("globex").await;
    let viewer = rig.key(&tenant, Role::Viewer).await;
    let good = json!({
        "name": "tokens",
        "description": "our own tokens",
        "patterns": [
            {"id": "acme-token", "type": "regex", "pattern": "acme_(?P<secret>[0-9a-f]{32})", "severity": "critical"},
            {"id": "marker", "type": "keyword", "keywords": ["do not share"], "severity": "low"},
            {"id": "random", "type": "entropy", "threshold": 4.5, "charset": "base64", "minLength": 32, "severity": "medium"}
        ],
        "allowlist": {"fingerprints": ["0123456789abcdef0123456789abcdef"], "paths": ["tests/**"]}
    });
    let bad = [
        (
            json!({"name": "x", "patterns": [{"id": "a", "type": "regex", "pattern": "(", "severity": "high"}]}),
            "patterns[0].pattern",
        ),
        (
            json!({"name": "x", "patterns": [{"id": "a", "type": "regex", "pattern": "a*", "severity": "high"}]}),
            "patterns[0].pattern",
        ),
        (
            json!({"name": "x", "patterns": [{"id": "a", "type": "regex", "severity": "high"}]}),
            "patterns[0].pattern",
        ),
        (
            json!({"name": "x", "patterns": [{"id": "a", "type": "keyword", "keywords": [], "severity": "high"}]}),
            "patterns[0].keywords",
        ),
        (
            json!({"name": "x", "patterns": [{"id": "a", "type": "entropy", "threshold": 9.5, "severity": "high"}]}),
            "patterns[0].threshold",
        ),
        (
            json!({"name": "x", "patterns": [{"id": "a", "type": "regex", "pattern": "x", "keywords": ["y"], "severity": "high"}]}),
            "patterns[0].keywords",
        ),
        (
            json!({"name": "x", "patterns": [{"id": "github-token", "type": "regex", "pattern": "x", "severity": "high"}]}),
            "patterns[0].id",
        ),
        (
            json!({"name": "x", "patterns": [{"id": "Bad Id", "type": "regex", "pattern": "x", "severity": "high"}]}),
            "patterns[0].id",
        ),
        (
            json!({"name": "x", "allowlist": {"fingerprints": ["not-hex"]}}),
            "allowlist.fingerprints[0]",
        ),
        (json!({"name": ""}), "name"),
    ];
    for (body, field) in bad {
        let reply = rig
            .call(
                Method::POST,
                "/v1/leakage/policies",
                &key,
                Some(body.clone()),
            )
            .await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert_eq!(reply.body["error"]["details"]["field"], field, "{body}");
    }
    rig.call(
        Method::POST,
        "/v1/leakage/policies",
        &key,
        Some(json!({"name": "x", "patterns": [{"id": "a", "type": "regex", "pattern": "x", "severity": "urgent"}]})),
    )
    .await
    .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    rig.call(
        Method::POST,
        "/v1/leakage/policies",
        &viewer,
        Some(good.clone()),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(rig.all("/v1/leakage/policies", &key, 10).await.is_empty());

    let created = rig
        .call(
            Method::POST,
            "/v1/leakage/policies",
            &key,
            Some(good.clone()),
        )
        .await;
    created.assert_status(StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("lkp_"));
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["enabled"], true);
    assert_eq!(created.body["patterns"], good["patterns"]);
    rig.call(
        Method::POST,
        "/v1/leakage/policies",
        &key,
        Some(good.clone()),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "conflict");
    for n in 0..4 {
        rig.call(
            Method::POST,
            "/v1/leakage/policies",
            &key,
            Some(json!({"name": format!("p{n}"), "enabled": n % 2 == 0})),
        )
        .await
        .assert_status(StatusCode::CREATED);
    }
    let listed = rig.all("/v1/leakage/policies", &viewer, 2).await;
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0]["id"], json!(id));
    assert!(rig
        .all("/v1/leakage/policies", &other_key, 10)
        .await
        .is_empty());
    rig.call(
        Method::GET,
        &format!("/v1/leakage/policies/{id}"),
        &other_key,
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    // A classification id is not a leakage policy.
    rig.call(
        Method::GET,
        &format!("/v1/classification/policies/{}", id.replace("lkp_", "clp_")),
        &key,
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");

    let patched = rig
        .call(
            Method::PATCH,
            &format!("/v1/leakage/policies/{id}"),
            &key,
            Some(json!({"enabled": false, "allowlist": {"paths": ["docs/"]}})),
        )
        .await;
    patched.assert_status(StatusCode::OK);
    assert_eq!(patched.body["version"], 2);
    assert_eq!(patched.body["enabled"], false);
    assert_eq!(patched.body["patterns"], good["patterns"], "patterns kept");
    assert_eq!(patched.body["allowlist"]["paths"], json!(["docs/"]));
    let refused = rig
        .call(
            Method::PATCH,
            &format!("/v1/leakage/policies/{id}"),
            &key,
            Some(json!({"patterns": [{"id": "a", "type": "regex", "pattern": "[", "severity": "low"}]})),
        )
        .await;
    refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let unchanged = rig
        .call(
            Method::GET,
            &format!("/v1/leakage/policies/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(unchanged.body["version"], 2);
    // A change made against an older version is refused, and changes
    // nothing; against the current one it applies.
    let stale = http::send(
        &rig.router,
        http::request(
            Method::PATCH,
            &format!("/v1/leakage/policies/{id}"),
            Some(&key),
            &[("if-match", "\"1\"")],
            Some(json!({"enabled": true})),
        ),
    )
    .await;
    stale.assert_error(StatusCode::CONFLICT, "conflict");
    let current = http::send(
        &rig.router,
        http::request(
            Method::PATCH,
            &format!("/v1/leakage/policies/{id}"),
            Some(&key),
            &[("if-match", "2")],
            Some(json!({"description": "checked"})),
        ),
    )
    .await;
    current.assert_status(StatusCode::OK);
    assert_eq!(current.body["version"], 3);
    assert_eq!(
        current.body["enabled"], false,
        "the stale change did nothing"
    );
    http::send(
        &rig.router,
        http::request(
            Method::PATCH,
            &format!("/v1/leakage/policies/{id}"),
            Some(&key),
            &[("if-match", "soon")],
            Some(json!({"enabled": true})),
        ),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    rig.call(
        Method::PATCH,
        &format!("/v1/leakage/policies/{id}"),
        &key,
        Some(json!({})),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");

    // A scan snapshots the enabled policies (p0 and p2; "tokens" is off now).
    let scan = rig
        .call(
            Method::POST,
            "/v1/leakage/scans",
            &key,
            Some(json!({"targets": [{"type": "url", "url": "https://example.com/"}]})),
        )
        .await;
    scan.assert_status(StatusCode::ACCEPTED);
    assert_eq!(scan.body["policies"].as_array().unwrap().len(), 2);
    let named = rig
        .call(
            Method::POST,
            "/v1/leakage/scans",
            &key,
            Some(json!({"targets": [{"type": "url", "url": "https://example.com/"}], "policyIds": [id]})),
        )
        .await;
    named.assert_status(StatusCode::ACCEPTED);
    assert_eq!(named.body["policies"], json!([{"id": id, "version": 3}]));

    rig.call(
        Method::DELETE,
        &format!("/v1/leakage/policies/{id}"),
        &key,
        None,
    )
    .await
    .assert_status(StatusCode::NO_CONTENT);
    rig.call(
        Method::DELETE,
        &format!("/v1/leakage/policies/{id}"),
        &key,
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    let events = rig
        .call(Method::GET, "/v1/audit/events?limit=100", &key, None)
        .await;
    let actions: Vec<&str> = events.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "scan_policy.create",
        "scan_policy.update",
        "scan_policy.delete",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }

    // Classification policies: a regex rule and a detector's level.
    let class = rig
        .call(
            Method::POST,
            "/v1/classification/policies",
            &key,
            Some(json!({"name": "hr", "rules": [
                {"type": "regex", "id": "employee-id", "pattern": "EMP-[0-9]{6}", "level": "confidential", "dataTypes": ["pii"]},
                {"type": "detector", "detector": "email", "level": "restricted"}
            ]})),
        )
        .await;
    class.assert_status(StatusCode::CREATED);
    assert!(class.body["id"].as_str().unwrap().starts_with("clp_"));
    for (rules, field) in [
        (
            json!([{"type": "detector", "detector": "horoscope", "level": "internal"}]),
            "rules[0].detector",
        ),
        (
            json!([{"type": "regex", "id": "x", "pattern": "(", "level": "internal"}]),
            "rules[0].pattern",
        ),
        (
            json!([{"type": "regex", "pattern": "x", "level": "internal"}]),
            "rules[0].id",
        ),
        (
            json!([{"type": "detector", "detector": "email", "level": "internal", "pattern": "x"}]),
            "rules[0].type",
        ),
    ] {
        let reply = rig
            .call(
                Method::POST,
                "/v1/classification/policies",
                &key,
                Some(json!({"name": "bad", "rules": rules})),
            )
            .await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert_eq!(reply.body["error"]["details"]["field"], field);
    }
    assert_eq!(
        rig.all("/v1/classification/policies", &key, 10).await.len(),
        1
    );
}

async fn classification_scans_classify_objects(db: TestDb) {
    let dirs = Dirs::new();
    let rig = rig(&db, &dirs).await;
    let (tenant, key) = rig.tenant("acme").await;
    let mut rng = fastrand::Rng::with_seed(11);
    let detectors = longhaul_scan::detectors::builtin();
    let sample = |id: &str, rng: &mut fastrand::Rng| {
        let detector = detectors.iter().find(|d| d.id == id).expect("a detector");
        (detector.sample)(rng)
    };
    let card = sample("payment-card", &mut rng);
    let email = sample("email", &mut rng);
    let ssn = sample("us-ssn", &mut rng);
    let iban = sample("iban", &mut rng);
    let csv = format!(
        "name,email,date_of_birth,card\nAda,{email},1990-04-12,{card}\nBob,bob@example.org,1985-11-30,none\n"
    );
    dirs.put("files-bucket", "hr/people.csv", csv.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(csv.as_bytes()).unwrap();
    dirs.put("files-bucket", "hr/people.csv.gz", &gz.finish().unwrap());
    dirs.put(
        "files-bucket",
        "hr/records.ndjson",
        format!("{{\"ssn\": \"{ssn}\", \"note\": \"EMP-123456\"}}\n{{\"iban\": \"{iban}\"}}\n")
            .as_bytes(),
    );
    dirs.put(
        "files-bucket",
        "hr/readme.txt",
        b"Quarterly plans, nothing personal.\n",
    );
    dirs.put(
        "files-bucket",
        "hr/photo.bin",
        &[0u8, 1, 2, 3, 0, 255, 0, 7],
    );
    dirs.put(
        "files-bucket",
        "other/skip.txt",
        format!("{email}\n").as_bytes(),
    );

    rig.call(
        Method::POST,
        "/v1/classification/policies",
        &key,
        Some(json!({"name": "hr", "rules": [
            {"type": "regex", "id": "employee-id", "pattern": "EMP-[0-9]{6}", "level": "confidential", "dataTypes": ["pii"]}
        ]})),
    )
    .await
    .assert_status(StatusCode::CREATED);
    let _worker = start_worker(&db, &dirs, dirs.scan_config()).await;
    let (scan_id, job) = rig
        .scan(
            "/v1/classification/scans",
            &key,
            json!({"scope": {"buckets": ["files"], "prefixes": ["hr/"]}}),
        )
        .await;
    assert!(scan_id.starts_with("cls_"));
    rig.wait_succeeded(&tenant, job).await;
    let results = rig
        .all(
            &format!("/v1/classification/scans/{scan_id}/results"),
            &key,
            2,
        )
        .await;
    let keys: Vec<&str> = results.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        vec![
            "hr/people.csv",
            "hr/people.csv.gz",
            "hr/photo.bin",
            "hr/readme.txt",
            "hr/records.ndjson"
        ]
    );
    let of = |key: &str| results.iter().find(|r| r["key"] == key).unwrap().clone();
    let people = of("hr/people.csv");
    assert_eq!(people["status"], "classified");
    assert_eq!(people["format"], "csv");
    assert_eq!(people["level"], "restricted", "{people}");
    assert_eq!(people["counts"]["payment-card"], 1);
    assert_eq!(people["counts"]["email"], 2);
    assert_eq!(people["counts"]["date-of-birth"], 2, "{people}");
    let types: BTreeSet<&str> = people["dataTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(types.contains("pci") && types.contains("pii"), "{people}");
    let gz = of("hr/people.csv.gz");
    assert_eq!(gz["gzip"], true);
    assert_eq!(gz["counts"], people["counts"]);
    let records = of("hr/records.ndjson");
    assert_eq!(records["format"], "ndjson");
    assert_eq!(records["counts"]["us-ssn"], 1);
    assert_eq!(records["counts"]["iban"], 1);
    assert_eq!(records["counts"]["employee-id"], 1, "{records}");
    assert_eq!(of("hr/photo.bin")["status"], "skipped");
    assert_eq!(of("hr/photo.bin")["skipReason"], "binary");
    assert_eq!(of("hr/readme.txt")["level"], "public");

    let scan = rig
        .call(
            Method::GET,
            &format!("/v1/classification/scans/{scan_id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(scan.body["objectsClassified"], 5);
    let on_disk: u64 = walk(&dirs.bucket("files-bucket").join("hr"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(scan.body["progress"]["bytesScanned"], on_disk);
    assert_eq!(scan.body["progress"]["bytesTotal"], on_disk);
    assert_eq!(scan.body["status"], "succeeded");
    let stats = rig
        .call(Method::GET, "/v1/classification/stats", &key, None)
        .await;
    stats.assert_status(StatusCode::OK);
    assert_eq!(stats.body["objects"], 4);
    assert_eq!(stats.body["skipped"], 1);
    assert_eq!(stats.body["byLevel"]["public"], 1);
    assert_eq!(stats.body["byDataType"]["pci"], 2);

    // A byte cap truncates; a rescan replaces the object's latest result.
    let (capped, capped_job) = rig
        .scan(
            "/v1/classification/scans",
            &key,
            json!({"scope": {"buckets": ["files"], "prefixes": ["hr/people.csv"]}, "maxObjectBytes": 40}),
        )
        .await;
    rig.wait_succeeded(&tenant, capped_job).await;
    let capped_results = rig
        .all(
            &format!("/v1/classification/scans/{capped}/results"),
            &key,
            10,
        )
        .await;
    let plain = capped_results
        .iter()
        .find(|r| r["key"] == "hr/people.csv")
        .unwrap();
    assert_eq!(plain["truncated"], true, "{plain}");
    assert!(plain["counts"].get("payment-card").is_none(), "{plain}");
    let stats = rig
        .call(Method::GET, "/v1/classification/stats", &key, None)
        .await;
    assert_eq!(stats.body["objects"], 4, "still one result per object");

    // No value anywhere.
    let mut texts = Vec::new();
    for path in [
        format!("/v1/classification/scans/{scan_id}/results?limit=200"),
        format!("/v1/jobs/{job}"),
        "/v1/classification/stats".to_string(),
    ] {
        let (_, _, text) = http::send_raw(
            &rig.router,
            http::request(Method::GET, &path, Some(&key), &[], None),
        )
        .await;
        texts.push(text);
    }
    assert_redacted(&texts, &[card, email, ssn, iban]);
}

async fn hosted_organizations_expand_to_repositories(db: TestDb) {
    let dirs = Dirs::new();
    let mut rng = fastrand::Rng::with_seed(5);
    // Two bare repositories under a "hosting" folder, as <base>/<org>/<name>.git.
    let hosting = dirs.root.join("hosting");
    let mut secrets = Vec::new();
    for name in ["api", "web"] {
        let (line, secret) = planted("npm-token", &mut rng);
        let work = dirs.root.join("work").join(name);
        repository_with_removed_secret(&work, &line);
        let bare = hosting.join("acme-org").join(format!("{name}.git"));
        let status = Command::new("git")
            .args(["clone", "--quiet", "--bare"])
            .arg(&work)
            .arg(&bare)
            .status()
            .expect("git clone --bare");
        assert!(status.success());
        secrets.push(secret);
    }
    // A GitHub-style API listing the organization, two pages of one.
    let api = serve(Router::new().route(
        "/orgs/acme-org/repos",
        axum::routing::get(
            |axum::extract::Query(query): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| async move {
                match query.get("page").map(String::as_str) {
                    Some("1") => axum::Json(
                        json!([{"full_name": "acme-org/api"}, {"full_name": "acme-org/web"}]),
                    ),
                    _ => axum::Json(json!([])),
                }
            },
        ),
    ))
    .await;
    let scans = ScanConfig {
        github: GitHost {
            base_url: format!("file://{}", hosting.display()),
            api_url: format!("http://{api}"),
            token: None,
        },
        ..dirs.scan_config()
    };
    // The host is not public GitHub: tenants name only their listed owners.
    let rig = rig_with(&db, &dirs, scans.clone()).await;
    let (tenant, key) = rig.tenant("acme").await;
    for target in [
        json!({"type": "github", "organizations": ["other-org"]}),
        json!({"type": "github", "repositories": ["other-org/secret"]}),
    ] {
        let reply = rig
            .call(
                Method::POST,
                "/v1/leakage/scans",
                &key,
                Some(json!({"targets": [target]})),
            )
            .await;
        reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gitOwners"));
    }
    let _worker = start_worker(&db, &dirs, scans).await;
    let (scan_id, job) = rig
        .scan(
            "/v1/leakage/scans",
            &key,
            json!({"targets": [{"type": "github", "organizations": ["acme-org"]}]}),
        )
        .await;
    rig.wait_succeeded(&tenant, job).await;
    let findings = rig
        .all(&format!("/v1/leakage/scans/{scan_id}/findings"), &key, 10)
        .await;
    let sources: BTreeSet<&str> = findings
        .iter()
        .filter(|f| f["rule"] == "npm-token")
        .map(|f| f["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        BTreeSet::from(["github:acme-org/api", "github:acme-org/web"]),
        "{findings:#?}"
    );
    let scan = rig
        .call(
            Method::GET,
            &format!("/v1/leakage/scans/{scan_id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(scan.body["sources"], json!(["github:acme-org/*"]));
    let job = rig.stores.get_job(&tenant.id, job).await.unwrap();
    assert_eq!(
        job.checkpoint.unwrap()["sources"].as_array().unwrap().len(),
        2
    );

    // A repository that does not exist fails the scan for good, with a reason.
    let (_, missing) = rig
        .scan(
            "/v1/leakage/scans",
            &key,
            json!({"targets": [{"type": "github", "repositories": ["acme-org/gone"]}]}),
        )
        .await;
    let failed = wait_for_job(
        rig.stores.as_ref(),
        &tenant.id,
        missing,
        Duration::from_secs(60),
        |job| job.state.is_terminal(),
    )
    .await;
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.last_error.unwrap().contains("acme-org/gone"));
}

async fn scan_writes_are_fenced_and_idempotent(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 4)
        .await
        .expect("stores");
    let tenant = stores
        .create_tenant(NewTenant::new("acme", REGION, "standard"), &Actor::system())
        .await
        .expect("tenant");
    let client = longhaul_core::JobClient::new(
        stores.clone().job_store(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    );
    client
        .enqueue(EnqueueRequest::new(&tenant.id, "system.noop", json!({})))
        .await
        .expect("enqueue");
    let claimed = stores
        .claim(
            &ClaimRequest {
                queues: vec!["default".into()],
                limit: 1,
                worker_id: "w".into(),
                lease: Duration::from_secs(30),
            },
            None,
        )
        .await
        .expect("claim");
    let lease = claimed[0].lease();
    let finding = |line: u64| NewFinding {
        fingerprint: "0123456789abcdef0123456789abcdef".into(),
        rule: "aws-access-key-id".into(),
        severity: Severity::Critical,
        source: "inline:a".into(),
        commit: None,
        path: "a".into(),
        line,
        column: 1,
        redacted: "AKIA****(20 chars)".into(),
    };
    let now = chrono::Utc::now();
    let batch = [finding(1), finding(2)];
    assert_eq!(stores.record_findings(lease, &batch, now).await.unwrap(), 2);
    // A retried attempt writing the same findings adds nothing.
    assert_eq!(stores.record_findings(lease, &batch, now).await.unwrap(), 0);
    let incident = stores
        .get_incident(&tenant.id, "0123456789abcdef0123456789abcdef")
        .await
        .unwrap();
    assert_eq!(incident.occurrences, 2);
    assert_eq!(incident.last_line, 2);
    // An attempt that lost its lease writes nothing.
    let stale = Lease {
        job_id: lease.job_id,
        attempt: lease.attempt + 1,
    };
    let refused = stores.record_findings(stale, &[finding(3)], now).await;
    assert!(
        matches!(refused, Err(longhaul_core::Error::LeaseLost { .. })),
        "{refused:?}"
    );
    assert_eq!(
        stores
            .count_findings(&tenant.id, lease.job_id)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        stores
            .count_findings("another-tenant", lease.job_id)
            .await
            .unwrap(),
        0
    );
}

/// A data bucket that counts (and can slow down) its reads.
struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    delay: Duration,
    reads: Arc<AtomicUsize>,
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, StorageError> {
        self.inner.start_upload(key).await
    }
    async fn resume_upload(&self, state: &UploadState) -> Result<Box<dyn Upload>, StorageError> {
        self.inner.resume_upload(state).await
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
        tokio::time::sleep(self.delay).await;
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn read(&self, key: &str) -> Result<ObjectReader, StorageError> {
        tokio::time::sleep(self.delay).await;
        self.reads.fetch_add(1, Ordering::SeqCst);
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

async fn counting_artifacts(
    dirs: &Dirs,
    delay: Duration,
    reads: &Arc<AtomicUsize>,
) -> Arc<ArtifactStores> {
    let bucket: Arc<dyn ObjectStore> = Arc::new(CountingStore {
        inner: Arc::new(LocalStore::at(dirs.bucket("code-bucket"))),
        delay,
        reads: reads.clone(),
    });
    Arc::new(
        ArtifactStores::local(dirs.root.join("artifacts"), http::test_signer())
            .with_data_bucket("code-bucket", bucket)
            .await,
    )
}

/// A worker killed mid-scan (its runtime dropped, like a process kill): the
/// next attempt reads only the objects after the checkpoint's last one, and
/// every secret is reported once.
async fn killed_leakage_scan_resumes_after_its_last_object(db: TestDb) {
    const OBJECTS: usize = 600;
    let dirs = Dirs::new();
    let rig = rig(&db, &dirs).await;
    let (tenant, key) = rig.tenant("acme").await;
    let mut rng = fastrand::Rng::with_seed(3);
    let mut planted_secrets = 0;
    for n in 0..OBJECTS {
        let mut text = format!("object {n}\nnothing here\n");
        if n % 50 == 7 {
            let (line, _) = planted("aws-access-key-id", &mut rng);
            text.push_str(&line);
            text.push('\n');
            planted_secrets += 1;
        }
        dirs.put("code-bucket", &format!("obj/{n:05}.txt"), text.as_bytes());
    }

    let first_reads = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    {
        let (url, scans, reads) = (db.url.clone(), dirs.scan_config(), first_reads.clone());
        let root = dirs.root.clone();
        runtime.spawn(async move {
            let dirs = Dirs { root };
            let artifacts = counting_artifacts(&dirs, Duration::from_millis(25), &reads).await;
            let _token = start_worker_with(&url, artifacts, scans).await;
            std::future::pending::<()>().await;
        });
    }
    let (scan_id, job) = rig
        .scan(
            "/v1/leakage/scans",
            &key,
            json!({"targets": [{"type": "bucket", "bucket": "code", "prefixes": ["obj/"]}]}),
        )
        .await;
    let seen = wait_for_job(
        rig.stores.as_ref(),
        &tenant.id,
        job,
        Duration::from_secs(60),
        |job| {
            job.checkpoint
                .as_ref()
                .and_then(|c| c["objectsDone"].as_u64())
                .is_some_and(|n| n > 0)
        },
    )
    .await;
    runtime.shutdown_background();
    let checkpoint = seen.checkpoint.expect("a checkpoint");
    let done_before = checkpoint["objectsDone"].as_u64().unwrap() as usize;
    assert!(
        done_before < OBJECTS,
        "the first worker finished: {checkpoint}"
    );
    assert_eq!(
        checkpoint["afterKey"],
        json!(format!("obj/{:05}.txt", done_before - 1)),
        "the checkpoint names the last object done, in key order"
    );

    let second_reads = Arc::new(AtomicUsize::new(0));
    let artifacts = counting_artifacts(&dirs, Duration::ZERO, &second_reads).await;
    let _worker = start_worker_with(&db.url, artifacts, dirs.scan_config()).await;
    rig.wait_succeeded(&tenant, job).await;
    let done = rig.stores.get_job(&tenant.id, job).await.unwrap();
    assert_eq!(done.attempt, 2, "{done:#?}");
    assert_eq!(second_reads.load(Ordering::SeqCst), OBJECTS - done_before);
    let result = done.result.expect("a result");
    assert_eq!(result["objects"], OBJECTS, "{result}");
    let findings = rig
        .all(&format!("/v1/leakage/scans/{scan_id}/findings"), &key, 200)
        .await;
    assert_eq!(findings.len(), planted_secrets, "{findings:#?}");
    let paths: BTreeSet<&str> = findings
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), planted_secrets);
}

/// Data buckets on S3 (a real `moto_server`): both scan kinds list and read
/// objects through the S3 store, gzip included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_data_buckets_are_scanned() {
    let db = crate::harness::postgres().await;
    let moto = crate::artifacts::Moto::start().await;
    let bucket = moto.store("customer-data").await;
    let mut rng = fastrand::Rng::with_seed(9);
    let (line, secret) = planted("github-token", &mut rng);
    let detectors = longhaul_scan::detectors::builtin();
    let card = (detectors
        .iter()
        .find(|d| d.id == "payment-card")
        .unwrap()
        .sample)(&mut rng);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!("id,card\n1,{card}\n").as_bytes())
        .unwrap();
    for (key, bytes) in [
        (
            "app/settings.py",
            format!("DEBUG = False\n{line}\n").into_bytes(),
        ),
        ("exports/cards.csv.gz", gz.finish().unwrap()),
    ] {
        let mut upload = bucket.start_upload(key).await.unwrap();
        upload.write(Bytes::from(bytes)).await.unwrap();
        upload.complete().await.unwrap();
    }
    let dirs = Dirs::new();
    let artifacts = Arc::new(
        ArtifactStores::local(dirs.root.join("artifacts"), http::test_signer())
            .with_data_bucket("code-bucket", Arc::new(bucket))
            .await,
    );
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let state = AppState::new(stores.clone(), Arc::new(longhaul_worker::jobs::catalogue()))
        .with_artifacts(artifacts.clone())
        .with_scan_config(dirs.scan_config());
    let rig = Rig {
        router: longhaul_api::router(state),
        stores,
    };
    let (tenant, key) = rig.tenant("acme").await;
    let _worker = start_worker_with(&db.url, artifacts, dirs.scan_config()).await;

    let (leak, leak_job) = rig
        .scan(
            "/v1/leakage/scans",
            &key,
            json!({"scope": {"buckets": ["code"]}}),
        )
        .await;
    let (class, class_job) = rig
        .scan(
            "/v1/classification/scans",
            &key,
            json!({"scope": {"buckets": ["code"], "prefixes": ["exports/"]}}),
        )
        .await;
    rig.wait_succeeded(&tenant, leak_job).await;
    rig.wait_succeeded(&tenant, class_job).await;
    let findings = rig
        .all(&format!("/v1/leakage/scans/{leak}/findings"), &key, 10)
        .await;
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["path"], "app/settings.py");
    assert_eq!(findings[0]["line"], 2);
    assert_eq!(findings[0]["source"], "bucket:code/");
    let results = rig
        .all(
            &format!("/v1/classification/scans/{class}/results"),
            &key,
            10,
        )
        .await;
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_eq!(results[0]["gzip"], true);
    assert_eq!(results[0]["level"], "restricted");
    assert_eq!(results[0]["counts"]["payment-card"], 1);
    let (_, _, text) = http::send_raw(
        &rig.router,
        http::request(
            Method::GET,
            &format!("/v1/leakage/scans/{leak}/findings"),
            Some(&key),
            &[],
            None,
        ),
    )
    .await;
    assert_redacted(&[text], &[secret]);
}

/// Where the deployment does not allow it, neither a URL nor a git target
/// reaches loopback (by address or by a name that resolves to it); the scan
/// fails for good and says why. A scan's inline text is its input, never its
/// result.
async fn scans_cannot_reach_private_addresses(db: TestDb) {
    let dirs = Dirs::new();
    let rig = rig(&db, &dirs).await;
    let (tenant, key) = rig.tenant("acme").await;
    let address =
        serve(Router::new().route("/x", axum::routing::get(|| async { "internal data" }))).await;
    let strict = ScanConfig {
        allow_private_urls: false,
        ..dirs.scan_config()
    };
    let _worker = start_worker(&db, &dirs, strict).await;
    let port = address.port();
    let refused = |target: Value| {
        let rig = &rig;
        let tenant = &tenant;
        let key = &key;
        async move {
            let (_, job) = rig
                .scan(
                    "/v1/leakage/scans",
                    key,
                    json!({"targets": [target.clone()]}),
                )
                .await;
            let failed = wait_for_job(
                rig.stores.as_ref(),
                &tenant.id,
                job,
                Duration::from_secs(60),
                |job| job.state.is_terminal(),
            )
            .await;
            assert_eq!(failed.state, JobState::Failed, "{target}: {failed:#?}");
            assert_eq!(failed.attempt, 1, "refused for good, not retried: {target}");
            failed.last_error.unwrap_or_default()
        }
    };
    let error = refused(json!({"type": "url", "url": format!("http://127.0.0.1:{port}/x")})).await;
    assert!(error.contains("private or local"), "{error}");
    // A name that resolves to loopback and one that resolves to nothing
    // fail alike, word for word: a scan does not tell a tenant which
    // internal names exist.
    for kind in ["url", "git"] {
        let mut errors = Vec::new();
        for host in ["localhost", "no-such-host.invalid"] {
            let url = format!("http://{host}:{port}/repo.git");
            let error = refused(json!({"type": kind, "url": url})).await;
            assert!(
                error.contains("does not resolve to an address"),
                "{kind} {host}: {error}"
            );
            errors.push(error.replace(host, "HOST"));
        }
        assert_eq!(errors[0], errors[1], "{kind}");
    }

    let (_, job) = rig
        .scan(
            "/v1/leakage/scans",
            &key,
            json!({"targets": [{"type": "inline", "name": "a.env", "content": "nothing\n"}]}),
        )
        .await;
    rig.wait_succeeded(&tenant, job).await;
    let inputs = rig.stores.job_artifacts(&tenant.id, job).await.unwrap();
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert!(inputs[0].name.starts_with("input-"));
    assert!(inputs[0].expires_at.is_some());
    rig.call(Method::GET, &format!("/v1/jobs/{job}/result"), &key, None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}
