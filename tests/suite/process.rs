//! The `longhaul` binary as operators run it: a worker process killed with
//! SIGKILL mid-job (the job is rescued and resumed from its checkpoint, and the
//! dead attempt's late writes are fenced), SIGTERM (the job is handed back),
//! and bad configuration (a clear error, nothing written).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::{AttemptOutcome, Finish, Lease, Progress};
use longhaul_core::JobKind;
use longhaul_core::{Error, JobClient, JobState};
use longhaul_worker::jobs::sleep::Sleep;
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
    JobClient::new(
        db.store.clone(),
        std::sync::Arc::new(longhaul_worker::jobs::catalogue()),
    )
}

async fn sigkill_mid_job_resumes_from_checkpoint_and_fences_the_old_attempt(db: TestDb) {
    let id = client(&db)
        .enqueue(EnqueueRequest::new(
            "t",
            Sleep::NAME,
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
            Sleep::NAME,
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

/// `LONGHAUL_LOG_FORMAT=json`: every line a JSON object; a job's lines carry
/// its span (tenant, job, kind, attempt) inside the pool's (worker id).
async fn json_logs_carry_the_job_span(db: TestDb) {
    let id = client(&db)
        .enqueue(EnqueueRequest::new(
            "t",
            Sleep::NAME,
            json!({ "durationMs": 30_000, "steps": 300 }),
        ))
        .await
        .expect("enqueue")
        .id;
    let mut worker = longhaul(&db)
        .args(["worker", "--queues", "default", "--concurrency", "1"])
        .env("LONGHAUL_LOG", "info")
        .env("LONGHAUL_LOG_FORMAT", "json")
        .env("LONGHAUL_SHUTDOWN_GRACE_SECONDS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning longhaul worker");
    let stderr = worker.stderr.take().expect("stderr");
    wait_for_job(db.store.as_ref(), "t", id, Duration::from_secs(20), |job| {
        job.checkpoint.is_some()
    })
    .await;
    signal(&worker, "TERM");
    let exited =
        wait_exit(&mut worker, Duration::from_secs(15)).expect("the worker exits after SIGTERM");
    assert!(exited.success(), "worker exit status {exited}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut { stderr }, &mut text).expect("stderr");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["fields"].is_object()));
    let handed_back = lines
        .iter()
        .find(|l| l["fields"]["message"] == "job handed back for another worker")
        .unwrap_or_else(|| panic!("no hand-back line in {text}"));
    let job_span = &handed_back["span"];
    assert_eq!(job_span["name"], "job");
    assert_eq!(job_span["job_id"], id.to_string());
    assert_eq!(job_span["tenant_id"], "t");
    assert_eq!(job_span["kind"], Sleep::NAME);
    assert_eq!(job_span["attempt"], 1);
    assert!(
        job_span["worker_id"]
            .as_str()
            .is_some_and(|w| w.starts_with("worker-")),
        "{handed_back}"
    );
    // The pool's own lines carry its span too.
    assert!(
        lines.iter().any(|l| l["span"]["name"] == "pool"
            && l["span"]["worker_id"] == job_span["worker_id"]),
        "{text}"
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
        .args(["admin", "enqueue", "--tenant", "t", "--kind", "system.nope"])
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
            "admin",
            "enqueue",
            "--tenant",
            "t",
            "--kind",
            Sleep::NAME,
            "--params",
            &oversize,
        ])
        .output()
        .expect("running longhaul");
    assert!(String::from_utf8_lossy(&too_big.stderr).contains("larger than the 65536-byte limit"));

    let bad_config = longhaul(&db)
        .args(["admin", "enqueue", "--tenant", "t", "--kind", "system.noop"])
        .env("LONGHAUL_WORKER_CONCURRENCY", "0")
        .output()
        .expect("running longhaul");
    assert_eq!(bad_config.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_config.stderr).contains("LONGHAUL_WORKER_CONCURRENCY=\"0\"")
    );

    // Span export asked of a binary built without it: refused, not ignored.
    let no_otel = longhaul(&db)
        .args(["admin", "enqueue", "--tenant", "t", "--kind", "system.noop"])
        .env("LONGHAUL_OTLP_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
        .output()
        .expect("running longhaul");
    assert_eq!(no_otel.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&no_otel.stderr).contains("built without OpenTelemetry"),
        "{}",
        String::from_utf8_lossy(&no_otel.stderr)
    );
    let bad_endpoint = longhaul(&db)
        .args(["admin", "enqueue", "--tenant", "t", "--kind", "system.noop"])
        .env("LONGHAUL_OTLP_ENDPOINT", "collector:4318")
        .output()
        .expect("running longhaul");
    assert_eq!(bad_endpoint.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_endpoint.stderr).contains("LONGHAUL_OTLP_ENDPOINT"));

    assert!(
        db.store.count_by_state().await.expect("counts").is_empty(),
        "bad input wrote a job"
    );
}

/// Lines a child writes to a pipe, read by a thread as they come.
struct Lines {
    incoming: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(pipe: impl std::io::Read + Send + 'static) -> Self {
        let (send, incoming) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)) {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            incoming,
            seen: Vec::new(),
        }
    }

    /// The first line containing `text`, waiting for it up to `within`.
    fn wait_for(&mut self, text: &str, within: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} within {within:?}; got {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Everything written, once the pipe is closed (the child exited).
    fn rest(mut self) -> String {
        while let Ok(line) = self.incoming.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name}");
}

/// SIGINT (ctrl-c) during a long job: the worker says what it waits for and
/// how to stop waiting; a second SIGINT hands the job back at once (the
/// grace period is a minute). Its logs, going to a pipe, have no colour
/// codes.
async fn a_second_ctrl_c_hands_running_jobs_back_at_once(db: TestDb) {
    let id = client(&db)
        .enqueue(EnqueueRequest::new(
            "t",
            Sleep::NAME,
            json!({ "durationMs": 300_000, "steps": 3000 }),
        ))
        .await
        .expect("enqueue")
        .id;
    let mut worker = longhaul(&db)
        .args(["worker", "--queues", "default", "--concurrency", "2"])
        .env("LONGHAUL_LOG", "info")
        .env("LONGHAUL_POLL_INTERVAL_MS", "100")
        .env("LONGHAUL_SHUTDOWN_GRACE_SECONDS", "60")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning longhaul worker");
    let mut logs = Lines::of(worker.stderr.take().expect("stderr"));
    wait_for_job(db.store.as_ref(), "t", id, Duration::from_secs(20), |job| {
        job.checkpoint.is_some()
    })
    .await;
    signal(&worker, "INT");
    let waiting = logs.wait_for("waiting up to", Duration::from_secs(15));
    assert!(
        waiting.contains(&format!(
            "waiting up to 60 s for 1 running job ({id}) to finish; \
             press ctrl-c (or send SIGTERM) again to hand them back now"
        )),
        "{waiting}"
    );
    signal(&worker, "INT");
    let exited = wait_exit(&mut worker, Duration::from_secs(20))
        .expect("the worker exits after a second ctrl-c, well before its grace period");
    assert!(exited.success(), "worker exit status {exited}");
    let logs = logs.rest();
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in piped logs: {logs}"
    );

    let job = db.store.get_job("t", id).await.expect("job");
    assert_eq!(job.state, JobState::Queued, "handed back, not lost");
    assert_eq!(job.failed_attempts, 0);
    let attempts = db.store.job_attempts("t", id).await.expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [AttemptOutcome::Released]
    );
}

/// `longhaul jobs` is a client of the HTTP API (`LONGHAUL_URL`,
/// `LONGHAUL_API_KEY`, no database setting): it prints what the API answers,
/// follows a job to its end (exit 0 if it succeeded, 3 if not), and says
/// the API's errors; `longhaul admin counts` counts one tenant's jobs, or all
/// of them when asked, on the database.
async fn cli_follows_jobs_through_the_api_and_admin_counts_per_tenant(db: TestDb) {
    let stores = longhaul_core::store::connect_stores(&db.url, 8)
        .await
        .expect("stores");
    let router = longhaul_api::router(longhaul_api::AppState::new(
        stores.clone(),
        std::sync::Arc::new(longhaul_worker::jobs::catalogue()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let (tenant, key) = crate::http::tenant_with_admin_key(stores.as_ref(), "t").await;
    let t = tenant.id.clone();
    let client = client(&db);
    client
        .enqueue(EnqueueRequest {
            queue: Some("elsewhere".into()),
            ..EnqueueRequest::new("u", Sleep::NAME, json!({"durationMs": 10}))
        })
        .await
        .expect("enqueue");

    // A client run: no database setting at all, only the API's URL and key.
    let run = |args: &[&str]| {
        let mut command = Command::new(BINARY);
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("LONGHAUL_")) {
            command.env_remove(name);
        }
        let output = command
            .env("LONGHAUL_URL", &url)
            .env("LONGHAUL_API_KEY", &key)
            .env("LONGHAUL_LOG", "warn")
            .args(args)
            .output()
            .expect("running longhaul");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        (output.status, stdout, stderr)
    };
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");

    let (status, created, stderr) = run(&[
        "jobs",
        "enqueue",
        "--kind",
        Sleep::NAME,
        "--params",
        r#"{"durationMs": 300, "steps": 3}"#,
    ]);
    assert!(status.success(), "{stderr}");
    let created = parse(&created);
    let id = created["id"].as_str().expect("id").to_string();
    let mine: longhaul_core::JobId = id.parse().expect("a job id");

    let (status, printed, stderr) = run(&["jobs", "get", &id]);
    assert!(status.success(), "{stderr}");
    let printed = parse(&printed);
    let job = db.store.get_job(&t, mine).await.expect("job");
    let attempts = db.store.job_attempts(&t, mine).await.expect("attempts");
    assert_eq!(
        printed,
        serde_json::to_value(longhaul_api::routes::jobs::JobView::of(job, Some(attempts)))
            .expect("JSON"),
        "the API's own view of the job"
    );
    assert_eq!(printed["status"], "queued", "{printed}");

    let (status, listed, stderr) = run(&["jobs", "list", "--status", "queued", "--limit", "5"]);
    assert!(status.success(), "{stderr}");
    let listed = parse(&listed);
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("a page")
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "the tenant's own queued jobs only");

    // watch follows the job while a worker runs it, then prints its end.
    let mut worker = spawn_worker(&db);
    let (status, watched, stderr) = run(&["jobs", "watch", &id]);
    assert!(status.success(), "{stderr}");
    let watched = parse(&watched);
    assert_eq!(watched["status"], "succeeded", "{watched}");
    assert_eq!(watched["progress"]["current"], 3, "{watched}");

    // A job cancelled while queued: cancel prints it, watch exits 3.
    client_cancel_watch(&run, &parse, &db, &t).await;
    worker.kill().expect("stop the worker");
    worker.wait().expect("reap the worker");

    let (status, _, stderr) = run(&["jobs", "get", "job_0193000000007000800000000000000a"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("404 not_found"), "{stderr}");
    let (status, _, stderr) = run(&["jobs", "retry", &id]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("409 conflict"),
        "a succeeded job is not retried: {stderr}"
    );

    let counts = |args: &[&str]| {
        let output = longhaul(&db).args(args).output().expect("running longhaul");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON")
    };
    assert_eq!(
        counts(&["admin", "counts", "--tenant", &t]),
        json!({"cancelled": 1, "succeeded": 1})
    );
    assert_eq!(
        counts(&["admin", "counts", "--tenant", "u"]),
        json!({"queued": 1}),
        "u's job is on a queue no worker serves"
    );
    assert_eq!(
        counts(&["admin", "counts", "--all-tenants"]),
        json!({"cancelled": 1, "queued": 1, "succeeded": 1})
    );
    let output = longhaul(&db)
        .args(["admin", "counts"])
        .output()
        .expect("running longhaul");
    assert_eq!(output.status.code(), Some(2), "whose counts must be said");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--tenant") && stderr.contains("--all-tenants"),
        "{stderr}"
    );
}

/// Enqueues a job due in an hour through the CLI, cancels it, and watches it:
/// the stream ends at once with `cancelled`, and watch exits 3.
async fn client_cancel_watch(
    run: &impl Fn(&[&str]) -> (std::process::ExitStatus, String, String),
    parse: &impl Fn(&str) -> serde_json::Value,
    db: &TestDb,
    tenant: &str,
) {
    let (status, created, stderr) = run(&[
        "jobs",
        "enqueue",
        "--kind",
        Sleep::NAME,
        "--params",
        r#"{"durationMs": 10}"#,
        "--priority",
        "9",
        "--queue",
        "elsewhere",
    ]);
    assert!(status.success(), "{stderr}");
    let id = parse(&created)["id"].as_str().expect("id").to_string();
    let (status, cancelled, stderr) = run(&["jobs", "cancel", &id]);
    assert!(status.success(), "{stderr}");
    let cancelled = parse(&cancelled);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled.get("finishedAt").is_some() && cancelled.get("finished_at").is_none());
    let (status, watched, stderr) = run(&["jobs", "watch", &id]);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert_eq!(parse(&watched)["status"], "cancelled");
    let job = db
        .store
        .get_job(tenant, id.parse().expect("id"))
        .await
        .expect("job");
    assert_eq!(job.state, JobState::Cancelled);
}

/// One HTTP/1.1 request to a `longhaul dev` process: status and JSON body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting to longhaul dev");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("writing a request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("reading the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Polls a scan until it ends; its last answer.
fn wait_for_scan(addr: &str, key: &str, path: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, scan) = http(addr, "GET", path, key, None);
        assert_eq!(status, 200, "{scan}");
        if scan["status"] != "queued" && scan["status"] != "running" {
            return scan;
        }
        assert!(std::time::Instant::now() < deadline, "{scan}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `longhaul dev` process on the test store, its data folder and any free
/// port (or `addr`).
fn dev(db: &TestDb, data_dir: &std::path::Path, addr: &str) -> Command {
    let mut command = longhaul(db);
    command
        .args(["dev", "--concurrency", "2"])
        .env("LONGHAUL_DATA_DIR", data_dir)
        .env("LONGHAUL_API_ADDR", addr)
        .env("LONGHAUL_POLL_INTERVAL_MS", "100");
    command
}

/// A started `longhaul dev`: the process, the API address and key it printed.
struct Dev {
    child: Child,
    addr: String,
    key: String,
    key_line: String,
}

fn start_dev(db: &TestDb, data_dir: &std::path::Path) -> Dev {
    let mut child = dev(db, data_dir, "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning longhaul dev");
    let mut out = Lines::of(child.stdout.take().expect("stdout"));
    let api = out.wait_for("  API  ", Duration::from_secs(60));
    let addr = api
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the API address")
        .to_string();
    let key_line = out.wait_for("  API key", Duration::from_secs(10));
    let key = key_line
        .split_whitespace()
        .find(|word| word.starts_with("lh_test_"))
        .expect("a key")
        .to_string();
    out.wait_for("stop with ctrl-c", Duration::from_secs(10));
    Dev {
        child,
        addr,
        key,
        key_line,
    }
}

fn stop_dev(mut dev: Dev) {
    signal(&dev.child, "INT");
    let exited = wait_exit(&mut dev.child, Duration::from_secs(30)).expect("dev stops on ctrl-c");
    assert!(exited.success(), "dev exit status {exited}");
}

/// `longhaul dev` from a first start: a demo data bucket that both scan
/// kinds read (as the README shows), the same key on every start (kept
/// 0600 in the data folder, one valid at a time, a new one if it was
/// revoked), and a taken port refused before anything is printed or issued,
/// naming the address.
async fn dev_mode_keeps_its_key_serves_a_data_bucket_and_names_a_taken_port(db: TestDb) {
    let data_dir = std::env::temp_dir().join(format!("longhaul-dev-{}", uuid::Uuid::now_v7()));
    let stores = longhaul_core::store::connect_stores(&db.url, 2)
        .await
        .expect("stores");
    let first = start_dev(&db, &data_dir);
    assert!(first.key_line.contains("(new;"), "{}", first.key_line);
    let (addr, key) = (first.addr.clone(), first.key.clone());

    let bucket = data_dir.join("buckets").join("demo");
    assert!(bucket.join("customers.csv").is_file());
    assert!(bucket.join("config/app.env").is_file());
    let (status, leakage) = http(
        &addr,
        "POST",
        "/v1/leakage/scans",
        &key,
        Some(json!({"targets": [{"type": "bucket", "bucket": "demo"}]})),
    );
    assert_eq!(status, 202, "{leakage}");
    let scan_path = format!(
        "/v1/leakage/scans/{}",
        leakage["scanId"].as_str().expect("id")
    );
    assert_eq!(
        wait_for_scan(&addr, &key, &scan_path)["status"],
        "succeeded"
    );
    let (_, findings) = http(&addr, "GET", &format!("{scan_path}/findings"), &key, None);
    let mut found: Vec<(String, String)> = findings["data"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| (f["path"].to_string(), f["rule"].to_string()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("\"config/app.env\"".into(), "\"aws-access-key-id\"".into()),
            ("\"config/app.env\"".into(), "\"github-token\"".into()),
        ],
        "{findings}"
    );
    let (status, classification) = http(
        &addr,
        "POST",
        "/v1/classification/scans",
        &key,
        Some(json!({"scope": {"buckets": ["demo"]}})),
    );
    assert_eq!(status, 202, "{classification}");
    let scan_path = format!(
        "/v1/classification/scans/{}",
        classification["scanId"].as_str().expect("id")
    );
    assert_eq!(
        wait_for_scan(&addr, &key, &scan_path)["status"],
        "succeeded"
    );
    let (_, results) = http(&addr, "GET", &format!("{scan_path}/results"), &key, None);
    let customers = results["data"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r.to_string().contains("customers.csv"))
        .unwrap_or_else(|| panic!("customers.csv not classified: {results}"))
        .clone();
    assert_eq!(customers["level"], "confidential", "{customers}");
    assert!(customers.to_string().contains("email") && customers.to_string().contains("phone"));
    stop_dev(first);

    // A restart prints the same key; it is the tenant's one valid dev key.
    let second = start_dev(&db, &data_dir);
    assert_eq!(second.key, key);
    assert!(
        second.key_line.contains("the same as last time"),
        "{}",
        second.key_line
    );
    stop_dev(second);
    let kept = data_dir.join("dev-api-key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is readable by others");
    }
    let (api_key, tenant) = stores
        .authenticate(&key, chrono::Utc::now())
        .await
        .expect("authenticate")
        .expect("the dev key works");
    let tenant = tenant.expect("a tenant key");
    assert_eq!(tenant.settings["dataBuckets"], json!({"demo": "demo"}));
    let valid = |keys: Vec<longhaul_core::tenancy::ApiKey>| -> Vec<String> {
        keys.into_iter()
            .filter(|k| k.is_valid_at(chrono::Utc::now()))
            .map(|k| k.id)
            .collect()
    };
    assert_eq!(
        valid(stores.list_api_keys(&tenant.id).await.expect("keys")),
        std::slice::from_ref(&api_key.id)
    );

    // Revoked: the next start issues a new one, still the only valid one.
    stores
        .revoke_api_key(
            &tenant.id,
            &api_key.id,
            chrono::Utc::now(),
            &longhaul_core::audit::Actor::system(),
        )
        .await
        .expect("revoke");
    let third = start_dev(&db, &data_dir);
    assert_ne!(third.key, key);
    assert!(third.key_line.contains("(new;"), "{}", third.key_line);
    let new_key = third.key.clone();
    stop_dev(third);
    assert_eq!(
        std::fs::read_to_string(&kept).expect("key file").trim(),
        new_key
    );
    let valid_now = valid(stores.list_api_keys(&tenant.id).await.expect("keys"));
    assert_eq!(valid_now.len(), 1);

    // A taken port: the error names it; no banner, no key.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let taken_addr = taken.local_addr().expect("address").to_string();
    let refused = dev(&db, &data_dir, &taken_addr)
        .output()
        .expect("running longhaul dev");
    let stdout = String::from_utf8_lossy(&refused.stdout);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains(&taken_addr) && stderr.to_lowercase().contains("address already in use"),
        "{stderr}"
    );
    assert!(!stdout.contains("API key"), "{stdout}");
    assert_eq!(
        valid(stores.list_api_keys(&tenant.id).await.expect("keys")),
        valid_now
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

both_stores!(
    sigkill_mid_job_resumes_from_checkpoint_and_fences_the_old_attempt,
    sigterm_hands_the_running_job_back,
    json_logs_carry_the_job_span,
    bad_input_on_the_command_line_writes_nothing,
    a_second_ctrl_c_hands_running_jobs_back_at_once,
    cli_follows_jobs_through_the_api_and_admin_counts_per_tenant,
    dev_mode_keeps_its_key_serves_a_data_bucket_and_names_a_taken_port,
);
