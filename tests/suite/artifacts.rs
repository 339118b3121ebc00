//! The object-store contract (core::artifacts) run against both backends: the
//! local folder in a temp dir, and S3 against a real S3-compatible server
//! (`moto_server` from PyPI, started on 127.0.0.1 by the test; the test fails,
//! never skips, when it cannot start).

use std::process::Stdio;
use std::time::Duration;

use longhaul_core::artifacts::{
    artifact_key, Bytes, LocalStore, ObjectStore, S3Config, S3Store, S3Timeouts, StorageError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// 11 MiB + 12345 bytes of a deterministic, non-repeating pattern: three parts
/// of 5 MiB with the minimum part size.
fn payload() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..11 * MIB + 12345)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// sha256 by an independent tool, not by the code under test.
pub fn sha256sum(bytes: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("longhaul-sha-{}", uuid::Uuid::now_v7()));
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum runs");
    std::fs::remove_file(&path).unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Upload, read whole and by range, list, abort, delete: what every backend
/// must do alike. Returns the key of a stored object left for backend checks.
async fn contract(store: &dyn ObjectStore, tenant: &str) -> (String, Vec<u8>) {
    let data = payload();
    let key = artifact_key(tenant, "audit.export", "job_1", "export.csv").unwrap();

    // Streamed in small, odd-sized chunks that cross part boundaries.
    let mut upload = store.start_upload(&key).await.unwrap();
    for chunk in data.chunks(100_003) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    // Nothing is visible before complete.
    assert!(store
        .list(&format!("tenants/{tenant}/"))
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.get(&key).await,
        Err(StorageError::NotFound(_))
    ));
    let stored = upload.complete().await.unwrap();
    assert_eq!(stored.key, key);
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.sha256, sha256sum(&data));

    let back = store.get(&key).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back[..] == data[..], "the object round-trips byte-exact");
    let mut reader = store.read(&key).await.unwrap();
    assert_eq!(reader.size, data.len() as u64);
    let mut streamed = Vec::new();
    reader.body.read_to_end(&mut streamed).await.unwrap();
    assert!(streamed == data, "the streamed read is byte-exact");

    resume_contract(store, tenant, &data).await;

    // Ranges inside a part, across the 5 MiB part boundary, and at the end.
    for (start, end) in [
        (0u64, 1u64),
        (1000, 70_000),
        ((5 * MIB - 10) as u64, (5 * MIB + 10) as u64),
        ((data.len() - 7) as u64, data.len() as u64),
    ] {
        let slice = store.get_range(&key, start..end).await.unwrap();
        assert!(
            slice[..] == data[start as usize..end as usize],
            "range {start}..{end}"
        );
    }
    assert!(matches!(
        store.get_range(&key, 0..data.len() as u64 + 1).await,
        Err(StorageError::InvalidRange { .. })
    ));

    // A second object of another job; list filters by prefix.
    let other = artifact_key(tenant, "audit.export", "job_2", "small.json").unwrap();
    let mut upload = store.start_upload(&other).await.unwrap();
    upload.write(Bytes::from_static(b"{}\n")).await.unwrap();
    let small = upload.complete().await.unwrap();
    assert_eq!(small.size, 3);
    assert_eq!(small.sha256, sha256sum(b"{}\n"));

    let all = store.list(&format!("tenants/{tenant}/")).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|o| (o.key.as_str(), o.size))
            .collect::<Vec<_>>(),
        vec![(key.as_str(), data.len() as u64), (other.as_str(), 3)]
    );
    let job1 = store
        .list(&format!("tenants/{tenant}/audit.export/job_1/"))
        .await
        .unwrap();
    assert_eq!(job1.len(), 1);
    assert_eq!(job1[0].key, key);
    assert!(store
        .list(&format!("tenants/{tenant}-other/"))
        .await
        .unwrap()
        .is_empty());

    // Abort after a full part was sent: no object under the key.
    let aborted = artifact_key(tenant, "audit.export", "job_3", "aborted.csv").unwrap();
    let mut upload = store.start_upload(&aborted).await.unwrap();
    let stored = upload
        .write(Bytes::copy_from_slice(&data[..9 * MIB]))
        .await
        .unwrap();
    assert!(stored.is_some(), "9 MiB stores a part");
    upload.abort().await.unwrap();
    assert!(matches!(
        store.get(&aborted).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(store
        .list(&format!("tenants/{tenant}/audit.export/job_3/"))
        .await
        .unwrap()
        .is_empty());

    // Delete removes; deleting again is not an error.
    store.delete(&other).await.unwrap();
    store.delete(&other).await.unwrap();
    assert!(matches!(
        store.get(&other).await,
        Err(StorageError::NotFound(_))
    ));
    let left = store.list(&format!("tenants/{tenant}/")).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, key);

    // Keys that could escape are refused before any I/O.
    for bad in ["/etc/passwd", "tenants/../x", "tenants/a\0b", "tenants//x"] {
        assert!(
            matches!(
                store.start_upload(bad).await.err(),
                Some(StorageError::InvalidKey { .. })
            ),
            "{bad:?}"
        );
    }
    (key, data)
}

/// An upload whose writer died after its first stored part goes on, in a new
/// upload handle, from the state that part answered; bytes the dead writer
/// wrote after it are dropped; the object is byte-exact with the right sha256.
/// A leftover upload is removed by `abort_uploads`.
async fn resume_contract(store: &dyn ObjectStore, tenant: &str, data: &[u8]) {
    let key = artifact_key(tenant, "audit.export", "job_4", "resumed.csv").unwrap();
    let mut upload = store.start_upload(&key).await.unwrap();
    let mut saved = None;
    let mut offset = 0;
    for chunk in data.chunks(100_003) {
        offset += chunk.len();
        let state = upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        if let Some(state) = state {
            saved = Some(state);
            break;
        }
    }
    let state = saved.expect("a part was stored");
    assert_eq!(state.size, offset as u64);
    assert_eq!(state.parts.len(), 1);
    assert_eq!(upload.buffered(), 0);
    // Written but never saved by the dying writer.
    upload
        .write(Bytes::copy_from_slice(&data[offset..offset + 70_000]))
        .await
        .unwrap();
    drop(upload);
    // The state survives a JSON round trip (it lives in a job checkpoint).
    let state: longhaul_core::artifacts::UploadState =
        serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap();

    let mut upload = store.resume_upload(&state).await.unwrap();
    assert_eq!(upload.written(), offset as u64);
    for chunk in data[offset..].chunks(1_000_003) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let stored = upload.complete().await.unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.sha256, sha256sum(data));
    let back = store.get(&key).await.unwrap();
    assert!(back[..] == data[..], "the resumed object is byte-exact");
    assert!(matches!(
        store.resume_upload(&state).await.err(),
        Some(StorageError::UploadGone { .. })
    ));
    store.delete(&key).await.unwrap();

    // A writer that dies mid-upload leaves it pending until abort_uploads.
    let mut upload = store.start_upload(&key).await.unwrap();
    let state = upload
        .write(Bytes::copy_from_slice(&data[..9 * MIB]))
        .await
        .unwrap()
        .expect("a part was stored");
    drop(upload);
    store.abort_uploads(&key).await.unwrap();
    store.abort_uploads(&key).await.unwrap();
    assert!(matches!(
        store.resume_upload(&state).await.err(),
        Some(StorageError::UploadGone { .. })
    ));
    assert!(matches!(
        store.get(&key).await,
        Err(StorageError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_contract() {
    let root = std::env::temp_dir().join(format!("longhaul-artifacts-{}", uuid::Uuid::now_v7()));
    let store = LocalStore::open(&root).await.unwrap();
    let (key, _) = contract(&store, "t_local").await;
    // Only the object itself is on disk: no temp files left by the aborted
    // upload or the completed ones.
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    assert_eq!(files, vec![root.join(&key)]);
    std::fs::remove_dir_all(&root).unwrap();
}

/// The oldest moto the S3 tests work with: 5.2.1 answers
/// CompleteMultipartUpload with a root element aws-sdk-s3 cannot parse (the
/// tests then fail with an XML error that does not say why).
const MIN_MOTO: (u32, u32, u32) = (5, 2, 5);

/// `5.2.1` → (5, 2, 1); suffixes such as `.dev3` or `rc1` are ignored.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split('.').map(|part| {
        part.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// The version of the moto that `moto_server` runs: asked of the Python of
/// its script's `#!` line (a virtualenv's), else of `python3` (pyenv shims,
/// system installs). None when it cannot be told.
fn installed_moto_version() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    let script = std::env::split_paths(&path)
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.is_file())?;
    let first_line = std::fs::read(&script)
        .ok()
        .and_then(|bytes| bytes.split(|b| *b == b'\n').next().map(<[u8]>::to_vec))
        .map(|line| String::from_utf8_lossy(&line).into_owned())
        .unwrap_or_default();
    let python = first_line
        .strip_prefix("#!")
        .map(str::trim)
        .filter(|interpreter| interpreter.contains("python") && !interpreter.contains(' '))
        .unwrap_or("python3")
        .to_string();
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('moto'))",
        ])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Fails at once, naming both versions, when the installed moto is too old.
fn check_moto_version() {
    let Some(installed) = installed_moto_version() else {
        return; // Starting it reports what is wrong.
    };
    let (major, minor, patch) = MIN_MOTO;
    if parse_version(&installed).is_some_and(|version| version < MIN_MOTO) {
        panic!(
            "moto {installed} is installed, but the S3 tests need moto {major}.{minor}.{patch} \
             or later (older versions answer multipart uploads with XML aws-sdk-s3 cannot \
             parse): pip install 'moto[server]>={major}.{minor}.{patch}'"
        );
    }
}

#[test]
fn moto_versions_are_compared_by_number() {
    assert_eq!(parse_version("5.2.1"), Some((5, 2, 1)));
    assert_eq!(parse_version("5.10.0.dev3\n"), Some((5, 10, 0)));
    assert_eq!(parse_version("6.0"), Some((6, 0, 0)));
    assert_eq!(parse_version("unknown"), None);
    assert!(parse_version("5.2.1").unwrap() < MIN_MOTO);
    assert!(parse_version("5.2.5").unwrap() >= MIN_MOTO);
    assert!(parse_version("5.10.0").unwrap() >= MIN_MOTO);
}

/// What to do when `moto_server` cannot be started (5.2.1 answers
/// CompleteMultipartUpload with a root element aws-sdk-s3 cannot parse).
const MOTO_MISSING: &str = "moto_server (moto 5.2.5 or later) must be installed: \
    pip install 'moto[server]>=5.2.5' (see the README's prerequisites)";

/// A `moto_server` on a free 127.0.0.1 port, killed when dropped.
pub struct Moto {
    child: tokio::process::Child,
    pub port: u16,
}

impl Moto {
    pub async fn start() -> Moto {
        check_moto_version();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = tokio::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{MOTO_MISSING}: {error}"));
        for _ in 0..300 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("moto_server exited at start: {status}; {MOTO_MISSING}");
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Moto { child, port };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not answer on 127.0.0.1:{port} within 30 s");
    }
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An S3 store on this server, the bucket created.
    pub async fn store(&self, bucket: &str) -> S3Store {
        let mut config = S3Config::new(bucket, "eu-west-1");
        config.endpoint_url = Some(self.endpoint());
        config.force_path_style = true;
        config.access_key_id = Some("test".into());
        config.secret_access_key = Some("test".into());
        config.part_size = 0; // raised to the 5 MiB minimum
        let store = S3Store::connect(&config).await.expect("an S3 client");
        store.ensure_bucket().await.expect("the bucket");
        store
    }

    /// Stops the server at once (its buckets are gone with it).
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("killing moto_server");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A plain HTTP/1.1 GET (no SDK, no signing): status and body.
pub async fn http_get(url: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "this minimal client reads identity bodies only: {head}"
    );
    (status, response[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_contract_against_moto() {
    let moto = Moto::start().await;
    let mut config = S3Config::new("longhaul-artifacts-test", "eu-west-1");
    config.endpoint_url = Some(format!("http://127.0.0.1:{}", moto.port));
    config.force_path_style = true;
    config.access_key_id = Some("test".into());
    config.secret_access_key = Some("test".into());
    config.part_size = 0; // raised to the 5 MiB minimum: three parts
    let store = S3Store::connect(&config).await.unwrap();
    store.ensure_bucket().await.unwrap();
    store.ensure_bucket().await.unwrap();

    let (key, data) = contract(&store, "t_s3").await;

    // The aborted upload left no pending multipart upload (no orphan parts).
    assert_eq!(
        store.pending_uploads("tenants/").await.unwrap(),
        Vec::<String>::new()
    );

    // A presigned GET fetched without the SDK returns the bytes.
    let url = store
        .download_url(&key, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(url.contains("X-Amz-Expires=300"), "{url}");
    let (status, body) = http_get(&url).await;
    assert_eq!(status, 200);
    assert!(body == data, "the presigned download is byte-exact");
    drop(moto);
}

/// A server that accepts connections and never answers (a stalled store):
/// its port, and the task holding the accepted sockets open.
pub async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

pub fn s3_config_at(port: u16, timeouts: S3Timeouts) -> S3Config {
    let mut config = S3Config::new("longhaul-stalled", "eu-west-1");
    config.endpoint_url = Some(format!("http://127.0.0.1:{port}"));
    config.force_path_style = true;
    config.access_key_id = Some("test".into());
    config.secret_access_key = Some("test".into());
    config.timeouts = timeouts;
    config
}

/// A store that accepts the connection and never answers makes every
/// operation fail within its timeouts (three tries of the read timeout, not
/// a hang), with a transient error that says so; a refused connection is
/// transient too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_s3_fails_within_its_timeouts() {
    let (port, server) = silent_server().await;
    let store = S3Store::connect(&s3_config_at(
        port,
        S3Timeouts {
            connect: Duration::from_millis(500),
            read: Duration::from_millis(500),
            attempt: Duration::from_secs(1),
        },
    ))
    .await
    .unwrap();
    let key = artifact_key("t_stall", "audit.export", "job_1", "export.csv").unwrap();
    // Far above three read timeouts and the SDK's back-off between them; far
    // below forever, which is what no timeout means.
    let bound = Duration::from_secs(30);
    let started = tokio::time::timeout(bound, store.start_upload(&key))
        .await
        .expect("starting an upload on a stalled store must not hang");
    let error = started
        .err()
        .expect("a stalled store cannot start an upload");
    assert!(error.is_transient(), "{error}");
    assert!(
        matches!(
            error,
            StorageError::Unavailable {
                operation: "CreateMultipartUpload",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("timeouts"), "{error}");
    let read = tokio::time::timeout(bound, store.get(&key))
        .await
        .expect("a read of a stalled store must not hang");
    assert!(read.err().is_some_and(|e| e.is_transient()));
    server.abort();

    // Nothing listens on the port any more: refused, transient.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let store = S3Store::connect(&s3_config_at(closed, S3Timeouts::default()))
        .await
        .unwrap();
    let refused = tokio::time::timeout(bound, store.list("tenants/"))
        .await
        .expect("a refused connection fails at once");
    assert!(refused.err().is_some_and(|e| e.is_transient()));
}
