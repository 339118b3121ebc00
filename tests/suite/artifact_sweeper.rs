//! The artifact sweeper on both stores: it deletes stored artifacts whose
//! retention ended, aborts uploads whose job is over, deletes the artifacts of
//! purged jobs, and leaves alone what is still wanted (unexpired results,
//! uploads of running jobs).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use longhaul_core::artifacts::records::{ArtifactStatus, NewArtifact};
use longhaul_core::artifacts::{
    artifact_key, ArtifactStores, Bytes, LocalStore, ObjectStore, StorageError,
};
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::{ClaimRequest, Finish, Lease};
use longhaul_core::store::Stores;
use longhaul_core::tenancy::NewTenant;
use longhaul_core::JobKind;
use longhaul_core::{JobClient, JobId, JobInput};
use longhaul_scheduler::{ArtifactSweeper, SweepReport};
use longhaul_worker::jobs::noop::Noop;
use serde_json::json;

use crate::harness::TestDb;
use crate::http::test_signer;

both_stores!(
    sweeper_removes_expired_abandoned_and_orphaned_artifacts,
    inputs_are_recorded_with_their_job_or_not_at_all,
);

struct Fixture {
    stores: Arc<dyn Stores>,
    client: JobClient,
    local: Arc<dyn ObjectStore>,
    tenant: String,
}

impl Fixture {
    /// A running job on its own queue, with its lease.
    async fn running_job(&self, queue: &str) -> Lease {
        let mut request = EnqueueRequest::new(&self.tenant, Noop::NAME, json!({}));
        request.queue = Some(queue.into());
        let id = self.client.enqueue(request).await.expect("enqueue").id;
        let claimed = self
            .stores
            .claim(
                &ClaimRequest {
                    queues: vec![queue.into()],
                    limit: 1,
                    worker_id: "sweeper-test".into(),
                    lease: Duration::from_secs(60),
                },
                None,
            )
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, id);
        claimed[0].lease()
    }

    fn key(&self, job: JobId) -> String {
        artifact_key(&self.tenant, Noop::NAME, &job.to_string(), "out.csv").unwrap()
    }

    async fn begin(&self, lease: Lease) -> String {
        let key = self.key(lease.job_id);
        self.stores
            .begin_artifact(
                lease,
                &NewArtifact {
                    job_id: lease.job_id,
                    name: "out".into(),
                    tenant_id: self.tenant.clone(),
                    region: "eu".into(),
                    object_key: key.clone(),
                    content_type: "text/csv".into(),
                },
            )
            .await
            .expect("begin");
        key
    }

    /// A job that stored its artifact, kept until `expires_in` from now.
    async fn stored(&self, queue: &str, expires_in: chrono::Duration) -> String {
        let lease = self.running_job(queue).await;
        let key = self.begin(lease).await;
        let mut upload = self.local.start_upload(&key).await.unwrap();
        upload.write(Bytes::from_static(b"a,b\r\n")).await.unwrap();
        let object = upload.complete().await.unwrap();
        self.stores
            .store_artifact(
                lease,
                "out",
                object.size,
                &object.sha256,
                Utc::now() + expires_in,
            )
            .await
            .expect("store");
        self.stores
            .finish(lease, &Finish::Succeeded { result: json!({}) })
            .await
            .expect("finish");
        key
    }

    /// A job mid-upload (a temp file, no object yet); left running.
    async fn uploading(&self, queue: &str) -> (Lease, String) {
        let lease = self.running_job(queue).await;
        let key = self.begin(lease).await;
        let mut upload = self.local.start_upload(&key).await.unwrap();
        upload.write(Bytes::from_static(b"partial")).await.unwrap();
        drop(upload);
        (lease, key)
    }

    async fn exists(&self, key: &str) -> bool {
        match self.local.get(key).await {
            Ok(_) => true,
            Err(StorageError::NotFound(_)) => false,
            Err(other) => panic!("{other}"),
        }
    }
}

fn temp_files(root: &std::path::Path) -> usize {
    let mut count = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else if entry
                .file_name()
                .to_string_lossy()
                .contains(".longhaul-upload-")
            {
                count += 1;
            }
        }
    }
    count
}

async fn sweeper_removes_expired_abandoned_and_orphaned_artifacts(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let tenant = stores
        .create_tenant(NewTenant::new("acme", "eu", "standard"), &Actor::system())
        .await
        .expect("tenant");
    let root = std::env::temp_dir().join(format!("longhaul-sweep-{}", uuid::Uuid::now_v7()));
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::at(&root));
    let artifacts = Arc::new(ArtifactStores::fixed(
        [("eu".to_string(), local.clone())].into_iter().collect(),
        test_signer(),
    ));
    let job_store: Arc<dyn longhaul_core::JobStore> = stores.clone();
    let fx = Fixture {
        stores: stores.clone(),
        client: JobClient::new(job_store, Arc::new(longhaul_worker::jobs::catalogue())),
        local,
        tenant: tenant.id.clone(),
    };
    let sweeper = ArtifactSweeper::new(stores.clone(), artifacts);

    let expired = fx.stored("q-expired", chrono::Duration::seconds(-1)).await;
    let kept = fx.stored("q-kept", chrono::Duration::days(7)).await;
    let (abandoned_lease, abandoned) = fx.uploading("q-abandoned").await;
    stores
        .finish(
            abandoned_lease,
            &Finish::Failed {
                error: "gave up".into(),
                public: longhaul_core::failure::PublicError::job_failed("gave up"),
                retry_at: Utc::now(),
                permanent: true,
            },
        )
        .await
        .expect("fail");
    let (running_lease, running) = fx.uploading("q-running").await;
    assert_eq!(temp_files(&root), 2);

    let report = sweeper.sweep(Utc::now()).await.expect("sweep");
    assert_eq!(
        report,
        SweepReport {
            expired: 1,
            abandoned: 1,
            ..SweepReport::default()
        }
    );
    assert!(!fx.exists(&expired).await, "the expired result is deleted");
    assert!(fx.exists(&kept).await, "an unexpired result stays");
    assert!(!fx.exists(&abandoned).await);
    assert!(!fx.exists(&running).await);
    assert_eq!(
        temp_files(&root),
        1,
        "only the running job's upload is left"
    );
    let left = stores
        .job_artifacts(&tenant.id, running_lease.job_id)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, ArtifactStatus::Uploading);
    // Nothing more is due: a second sweep removes nothing.
    assert_eq!(
        sweeper.sweep(Utc::now()).await.unwrap(),
        SweepReport::default()
    );

    // Purging finished jobs orphans their artifacts: the sweep deletes them.
    let purged = stores
        .prune_finished(Utc::now() + chrono::Duration::minutes(1), 1000)
        .await
        .expect("prune");
    assert!(purged >= 2, "{purged}");
    let report = sweeper.sweep(Utc::now()).await.expect("sweep");
    assert_eq!(report.job_gone, 1, "{report:?}");
    assert!(!fx.exists(&kept).await, "a purged job's result is deleted");
    assert_eq!(temp_files(&root), 1, "a running job is never purged");

    // The claim only takes a row unchanged since it was read: a retried
    // job's new `begin_artifact` renews it, and its upload is kept.
    let seen = stores
        .job_artifacts(&tenant.id, running_lease.job_id)
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    fx.begin(running_lease).await;
    assert!(!stores.claim_for_sweep(&seen, Utc::now()).await.unwrap());
    // A claimed row refuses a new upload until the sweep is done with it...
    let current = stores
        .job_artifacts(&tenant.id, running_lease.job_id)
        .await
        .unwrap()
        .remove(0);
    assert!(stores.claim_for_sweep(&current, Utc::now()).await.unwrap());
    let refused = stores
        .begin_artifact(
            running_lease,
            &NewArtifact {
                job_id: running_lease.job_id,
                name: "out".into(),
                tenant_id: tenant.id.clone(),
                region: "eu".into(),
                object_key: running.clone(),
                content_type: "text/csv".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, longhaul_core::Error::Conflict(_)),
        "{refused:?}"
    );
    // ...and a sweep that stopped after its claim is finished by the next.
    let report = sweeper.sweep(Utc::now()).await.expect("sweep");
    assert_eq!(report.abandoned, 1, "{report:?}");
    assert_eq!(temp_files(&root), 0);
    assert!(stores
        .job_artifacts(&tenant.id, running_lease.job_id)
        .await
        .unwrap()
        .is_empty());
    fx.begin(running_lease).await;

    // Another tenant's view of a job never shows these records.
    assert!(stores
        .job_artifacts("someone-else", running_lease.job_id)
        .await
        .unwrap()
        .is_empty());
    let _ = std::fs::remove_dir_all(root);
}

fn input(name: &str) -> JobInput {
    let now = Utc::now();
    JobInput {
        name: format!("input-{name}"),
        region: "eu".into(),
        object_key: format!("tenants/acme/leakage.scan/input-x/{name}"),
        content_type: "text/plain".into(),
        size: 3,
        sha256: "ab".repeat(32),
        stored_at: now,
        expires_at: now + chrono::Duration::days(7),
    }
}

/// A job's inputs (files stored before it, such as a scan's inline texts)
/// are recorded in the transaction that creates it: with the job, or not at
/// all when the job is refused; an idempotent replay records nothing more.
async fn inputs_are_recorded_with_their_job_or_not_at_all(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    // A quota of one queued job, as the API would pass it from the tenant.
    let tenant = stores
        .create_tenant(
            NewTenant {
                quotas: longhaul_core::tenancy::Quotas {
                    max_queued: Some(1),
                    ..Default::default()
                },
                ..NewTenant::new("acme", "eu", "standard")
            },
            &Actor::system(),
        )
        .await
        .expect("tenant");
    let client = JobClient::new(
        stores.clone().job_store(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    );
    let period = longhaul_core::usage::Period::of(Utc::now());
    let request = |inputs: Vec<JobInput>| EnqueueRequest {
        inputs,
        idempotency_key: Some("scan-1".into()),
        ..EnqueueRequest::new(&tenant.id, Noop::NAME, json!({}))
    };

    let created = client
        .enqueue_within_quota(
            request(vec![input("a"), input("b")]),
            None,
            period,
            &Actor::system(),
        )
        .await
        .expect("enqueue with inputs");
    assert!(created.created);
    let recorded = stores
        .job_artifacts(&tenant.id, created.id)
        .await
        .expect("artifacts");
    let names: Vec<_> = recorded.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["input-a", "input-b"]);
    assert!(recorded.iter().all(|a| a.status == ArtifactStatus::Stored
        && a.size == Some(3)
        && a.object_key.ends_with(&a.name[6..])));

    // A replay of the same key answers the job and records nothing more.
    let replay = client
        .enqueue_within_quota(request(vec![input("c")]), None, period, &Actor::system())
        .await
        .expect("replay");
    assert_eq!((replay.id, replay.created), (created.id, false));
    assert_eq!(
        stores
            .job_artifacts(&tenant.id, created.id)
            .await
            .expect("artifacts")
            .len(),
        2
    );

    // A job refused by its tenant's quota leaves no input record behind.
    let refused = client.prepare(EnqueueRequest {
        inputs: vec![input("d")],
        ..EnqueueRequest::new(&tenant.id, Noop::NAME, json!({}))
    });
    let refused = refused.expect("valid");
    let refused_id = refused.id;
    let error = client
        .admit(refused, Some(1), period, &Actor::system())
        .await
        .expect_err("over the queued quota");
    assert!(
        matches!(error, longhaul_core::Error::QuotaExceeded { .. }),
        "{error:?}"
    );
    assert!(stores
        .job_artifacts(&tenant.id, refused_id)
        .await
        .expect("artifacts")
        .is_empty());
}
