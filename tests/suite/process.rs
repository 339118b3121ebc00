//! The `longhaul` binary as operators run it: a worker process killed with
//! SIGKILL mid-job (the job is rescued and resumed from its checkpoint, and the
//! dead attempt's late writes are fenced), SIGTERM (the job is handed back),
//! and bad configuration (a clear error, nothing written).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::{AttemptOutcome, Finish, Lease, Progress};
use longhaul_core::kinds::SYSTEM_SLEEP;
use longhaul_core::{Catalogue, Error, JobClient, JobState};
use serde_json::json;

use crate::harness::TestDb;
use crate::support::{wait_for_job, wait_for_state};

const BINARY: &str = env!("CARGO_BIN_EXE_longhaul");

/// `longhaul worker` on the test store, with a 3 s lease and fast rescue.
fn spawn_worker(db: &TestDb) -> Child {
    longhaul(db)
        .args(["worker", "--queues", "default", "--concurrency", "2"])
        .env("LONGHAUL_LEASE_SECONDS", "3")
        .env("LONGHAUL_POLL_INTERVAL_MS", "100")
        .env("LONGHAUL_RESCUE_INTERVAL_SECONDS", "1")
        .env("LONGHAUL_SHUTDOWN_GRACE_SECONDS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning longhaul worker")
}

/// The binary with only this test's settings (none inherited from the shell).
fn longhaul(db: &TestDb) -> Command {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("LONGHAUL_")) {
        command.env_remove(name);
    }
    command
        .env("LONGHAUL_DATABASE_URL", &db.url)
        .env("LONGHAUL_LOG", "warn");
    command
}

fn client(db: &TestDb) -> JobClient {
    JobClient::new(db.store.clone(), std::sync::Arc::new(Catalogue::builtin()))
}

async fn sigkill_mid_job_resumes_from_checkpoint_and_fences_the_old_attempt(db: TestDb) {
    let id = client(&db)
        .enqueue(EnqueueRequest::new(
            "t",
            SYSTEM_SLEEP,
            json!({ "durationMs": 6000, "steps": 30 }),
        ))
        .await
        .expect("enqueue")
        .id;
    let mut first = spawn_worker(&db);
    let before_kill = wait_for_job(db.store.as_ref(), "t", id, Duration::from_secs(20), |job| {
        job.checkpoint
            .as_ref()
            .and_then(|c| c["stepsDone"].as_u64())
            .is_some_and(|n| n >= 5)
    })
    .await;
    first.kill().expect("SIGKILL the worker");
    first.wait().expect("reaping the killed worker");
    let killed_at_step = before_kill
        .checkpoint
        .as_ref()
        .and_then(|c| c["stepsDone"].as_u64())
        .expect("checkpoint");
    assert_eq!(before_kill.attempt, 1);

    let mut second = spawn_worker(&db);
    let job = wait_for_state(
        db.store.as_ref(),
        "t",
        id,
        JobState::Succeeded,
        Duration::from_secs(40),
    )
    .await;
    let _ = second.kill();
    let _ = second.wait();

    assert_eq!(job.attempt, 2, "exactly one more attempt ran");
    let resumed = job
        .result
        .as_ref()
        .and_then(|r| r["resumedFromStep"].as_u64())
        .expect("result");
    assert!(
        resumed >= killed_at_step,
        "resumed from step {resumed}, but step {killed_at_step} was checkpointed"
    );
    assert!(resumed > 0, "the retry restarted from step 0");
    let attempts = db.store.job_attempts("t", id).await.expect("attempts");
    let outcomes: Vec<_> = attempts.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (1, AttemptOutcome::LeaseExpired),
            (2, AttemptOutcome::Succeeded)
        ]
    );

    // The dead attempt's late writes change nothing.
    let stale = Lease {
        job_id: id,
        attempt: 1,
    };
    let late = db
        .store
        .finish(
            stale,
            &Finish::Succeeded {
                result: json!({ "late": true }),
            },
        )
        .await;
    assert!(
        matches!(late, Err(Error::LeaseLost { attempt: 1, .. })),
        "{late:?}"
    );
    let progress = Progress {
        current: 1,
        total: None,
        unit: None,
        message: None,
    };
    assert!(matches!(
        db.store.set_progress(stale, &progress).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(
        db.store.get_job("t", id).await.expect("job"),
        job,
        "a fenced write changed the job"
    );
}

async fn sigterm_hands_the_running_job_back(db: TestDb) {
    let id = client(&db)
        .enqueue(EnqueueRequest::new(
            "t",
            SYSTEM_SLEEP,
            json!({ "durationMs": 30_000, "steps": 300 }),
        ))
        .await
        .expect("enqueue")
        .id;
    let mut worker = spawn_worker(&db);
    wait_for_job(db.store.as_ref(), "t", id, Duration::from_secs(20), |job| {
        job.checkpoint.is_some()
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exited =
        wait_exit(&mut worker, Duration::from_secs(15)).expect("the worker exits after SIGTERM");
    assert!(exited.success(), "worker exit status {exited}");
    let job = db.store.get_job("t", id).await.expect("job");
    assert_eq!(
        job.state,
        JobState::Queued,
        "the job is handed back, not lost"
    );
    assert_eq!(job.failed_attempts, 0);
    let attempts = db.store.job_attempts("t", id).await.expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [AttemptOutcome::Released]
    );
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

async fn bad_input_on_the_command_line_writes_nothing(db: TestDb) {
    let unknown = longhaul(&db)
        .args(["jobs", "enqueue", "--tenant", "t", "--kind", "system.nope"])
        .output()
        .expect("running longhaul");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown job kind \"system.nope\""));

    let oversize = format!(
        "{{\"durationMs\": 10, \"pad\": \"{}\"}}",
        "x".repeat(70_000)
    );
    let too_big = longhaul(&db)
        .args([
            "jobs",
            "enqueue",
            "--tenant",
            "t",
            "--kind",
            SYSTEM_SLEEP,
            "--params",
            &oversize,
        ])
        .output()
        .expect("running longhaul");
    assert!(String::from_utf8_lossy(&too_big.stderr).contains("larger than the 65536-byte limit"));

    let bad_config = longhaul(&db)
        .args(["jobs", "enqueue", "--tenant", "t", "--kind", "system.noop"])
        .env("LONGHAUL_WORKER_CONCURRENCY", "0")
        .output()
        .expect("running longhaul");
    assert_eq!(bad_config.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_config.stderr).contains("LONGHAUL_WORKER_CONCURRENCY=\"0\"")
    );

    assert!(
        db.store.count_by_state().await.expect("counts").is_empty(),
        "bad input wrote a job"
    );
}

both_stores!(
    sigkill_mid_job_resumes_from_checkpoint_and_fences_the_old_attempt,
    sigterm_hands_the_running_job_back,
    bad_input_on_the_command_line_writes_nothing,
);
