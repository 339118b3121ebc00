//! One typed configuration, read from `LONGHAUL_*` environment variables and
//! validated at start: every bad value gets its own line in the error, and an
//! unknown `LONGHAUL_*` name is an error too (a typo must not be ignored).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use crate::artifacts::S3Timeouts;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `postgres://…` or `sqlite://…`. Default: a SQLite file under `data_dir`.
    pub database_url: String,
    /// Where the embedded mode keeps its SQLite file and local artifacts.
    pub data_dir: PathBuf,
    pub database_max_connections: u32,
    /// How long a claim holds a job without a heartbeat (heartbeats every third of it).
    pub lease: Duration,
    /// How often an idle worker polls when no wake-up arrives.
    pub poll_interval: Duration,
    /// How long a stopping worker lets running jobs finish before handing them back.
    pub shutdown_grace: Duration,
    /// How often a worker looks for expired leases to rescue.
    pub rescue_interval: Duration,
    pub worker_queues: Vec<String>,
    pub worker_concurrency: usize,
    /// Per-tenant running cap for tenants without their own limit (None: no cap).
    pub default_max_running_per_tenant: Option<i32>,
    /// Finished jobs older than this are pruned.
    pub job_retention: Duration,
    /// `tracing` filter, e.g. `info` or `longhaul=debug,sqlx=warn`.
    pub log: String,
    /// `text` (default) or `json`: one JSON object per line, with the
    /// fields of the current span and its parents (tenant, job, kind,
    /// attempt, request id).
    pub log_format: LogFormat,
    /// Where spans are exported as OTLP/HTTP (`LONGHAUL_OTLP_ENDPOINT`, e.g.
    /// `http://collector:4318/v1/traces`; binaries built with the `otel`
    /// feature only). None: no export.
    pub otlp_endpoint: Option<String>,
    /// Where a worker or scheduler process serves its Prometheus metrics
    /// (`LONGHAUL_METRICS_ADDR`; none by default: the API serves its own at
    /// `/metrics`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the API listens.
    pub api_addr: std::net::SocketAddr,
    /// Most connections the API holds open at once; past it a new connection
    /// is answered `503` and closed (None: three quarters of the process's
    /// open-file limit, the rest left for the database pool, files and logs).
    pub api_max_connections: Option<usize>,
    /// How long a client has to send a request's head (request line and
    /// headers), from its first byte or from the connection's opening.
    pub api_header_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub api_idle_timeout: Duration,
    /// How long an API request waits for a database connection (or SQLite's
    /// write lock) before answering `503 service_unavailable`.
    pub api_database_acquire_timeout: Duration,
    /// `redis://…` or `rediss://…`: shared counters for API replicas (None: in-process).
    pub redis_url: Option<String>,
    /// The API is behind a trusted proxy: take the client IP from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// A schedule's fire time seen later than this is a misfire (its misfire
    /// policy decides: skip to the next time, or fire once to catch up).
    pub misfire_threshold: Duration,
    /// How long an API process reuses an authenticated key without reading it
    /// again (zero: every request reads it). A revoke or suspension made
    /// through another replica takes effect within it.
    pub auth_cache_ttl: Duration,
    /// How long an API process serves a job's status from memory (zero: every
    /// read goes to the database). Polling clients see changes made by
    /// workers or other replicas within it.
    pub job_status_cache_ttl: Duration,
    /// Where job artifacts (export files, reports) are stored and how they
    /// are handed out.
    pub artifacts: ArtifactConfig,
    /// Where leakage scans may fetch from.
    pub scans: ScanConfig,
    /// How the API serves `GET /v1/jobs/{id}/events` streams.
    pub event_streams: EventStreamConfig,
}

/// How logs are written (`LONGHAUL_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Server-Sent Event streams of jobs in an API process: one read of the
/// database per interval serves them all, and their number is capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStreamConfig {
    /// How often the process (or, with Redis, the one replica holding the
    /// lease) reads new events of the followed jobs.
    pub poll_interval: Duration,
    /// Streams one API key may hold open in one process.
    pub max_per_key: usize,
    /// Streams one process holds open at most.
    pub max_per_process: usize,
}

impl Default for EventStreamConfig {
    fn default() -> Self {
        EventStreamConfig {
            poll_interval: Duration::from_millis(250),
            max_per_key: 20,
            max_per_process: 2000,
        }
    }
}

/// Sources of leakage scans beyond what a request carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanConfig {
    /// Git repositories under this folder may be scanned by path (None: no
    /// local paths; a multi-tenant deployment leaves it unset).
    pub local_root: Option<PathBuf>,
    /// URL targets may resolve to private, loopback or link-local addresses
    /// (a single-host deployment or tests; never where tenants are untrusted).
    pub allow_private_urls: bool,
    pub github: GitHost,
    pub gitlab: GitHost,
}

impl Default for ScanConfig {
    /// No local paths, public URLs only, github.com and gitlab.com without
    /// tokens.
    fn default() -> Self {
        ScanConfig {
            local_root: None,
            allow_private_urls: false,
            github: GitHost {
                base_url: "https://github.com".into(),
                api_url: "https://api.github.com".into(),
                token: None,
            },
            gitlab: GitHost {
                base_url: "https://gitlab.com".into(),
                api_url: "https://gitlab.com/api/v4".into(),
                token: None,
            },
        }
    }
}

impl GitHost {
    /// Whether tenants may only name owners their settings list
    /// (`settings.gitOwners`): when the deployment holds a token (it would
    /// read any repository the token can), or the host is not a public
    /// default (an internal server the worker can reach).
    pub fn owners_restricted(&self) -> bool {
        self.token.is_some()
            || !["https://github.com", "https://gitlab.com"].contains(&self.base_url.as_str())
    }
}

/// A git hosting service: where its repositories are cloned from, where its
/// API lists an organization's repositories, and the token for both.
#[derive(Debug, Clone, PartialEq)]
pub struct GitHost {
    /// `owner/name` is cloned from `<base_url>/owner/name.git`.
    pub base_url: String,
    pub api_url: String,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactConfig {
    pub backend: ArtifactBackend,
    /// How long a download link stays valid.
    pub download_link_ttl: Duration,
    /// The HMAC secret of local download tokens (None: a random secret kept
    /// in `data_dir`, created on first start).
    pub signing_secret: Option<Secret>,
    /// The API's address as clients reach it, for local download links.
    pub public_url: String,
    /// How long an artifact is kept after its job succeeded, unless the
    /// tenant's plan says otherwise (`artifactRetentionDays`).
    pub retention: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ArtifactBackend {
    /// A folder; each region is a sub-folder.
    Local { dir: PathBuf },
    /// S3 or an S3-compatible server, one bucket per tenant region.
    S3 {
        /// Tenant region → bucket and its AWS region.
        buckets: BTreeMap<String, S3Bucket>,
        endpoint_url: Option<String>,
        force_path_style: bool,
        /// Bounds on every request (artifact and data buckets alike).
        timeouts: S3Timeouts,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Bucket {
    pub bucket: String,
    pub aws_region: String,
}

/// A secret value: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Parses `us=bucket-us@us-east-1,eu=bucket-eu@eu-central-1` (the AWS region
/// defaults to us-east-1).
pub fn parse_bucket_map(text: &str) -> std::result::Result<BTreeMap<String, S3Bucket>, String> {
    let mut buckets = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (region, target) = entry.split_once('=').ok_or_else(|| {
            format!("{entry:?} must be region=bucket or region=bucket@aws-region")
        })?;
        let (bucket, aws_region) = target.split_once('@').unwrap_or((target, "us-east-1"));
        let (region, bucket, aws_region) = (region.trim(), bucket.trim(), aws_region.trim());
        if region.is_empty() || bucket.is_empty() || aws_region.is_empty() {
            return Err(format!("{entry:?} has an empty region or bucket"));
        }
        if buckets
            .insert(
                region.to_string(),
                S3Bucket {
                    bucket: bucket.to_string(),
                    aws_region: aws_region.to_string(),
                },
            )
            .is_some()
        {
            return Err(format!("region {region:?} is named twice"));
        }
    }
    if buckets.is_empty() {
        return Err("name at least one region=bucket".into());
    }
    Ok(buckets)
}

struct Setting {
    name: &'static str,
    help: &'static str,
}

const SETTINGS: &[Setting] = &[
    Setting {
        name: "LONGHAUL_DATABASE_URL",
        help: "postgres://… or sqlite://… (default: sqlite file in LONGHAUL_DATA_DIR)",
    },
    Setting {
        name: "LONGHAUL_DATA_DIR",
        help: "folder for the embedded store (default ./longhaul-data)",
    },
    Setting {
        name: "LONGHAUL_DATABASE_MAX_CONNECTIONS",
        help: "1..=1000 (default 16)",
    },
    Setting {
        name: "LONGHAUL_LEASE_SECONDS",
        help: "3..=3600 (default 30)",
    },
    Setting {
        name: "LONGHAUL_POLL_INTERVAL_MS",
        help: "10..=60000 (default 1000)",
    },
    Setting {
        name: "LONGHAUL_SHUTDOWN_GRACE_SECONDS",
        help: "0..=3600 (default 30)",
    },
    Setting {
        name: "LONGHAUL_RESCUE_INTERVAL_SECONDS",
        help: "1..=3600 (default 15)",
    },
    Setting {
        name: "LONGHAUL_WORKER_QUEUES",
        help: "comma-separated queue names (default 'default')",
    },
    Setting {
        name: "LONGHAUL_WORKER_CONCURRENCY",
        help: "1..=4096 (default 8)",
    },
    Setting {
        name: "LONGHAUL_DEFAULT_MAX_RUNNING_PER_TENANT",
        help: "1..=100000, or 'none' (default none)",
    },
    Setting {
        name: "LONGHAUL_JOB_RETENTION_DAYS",
        help: "1..=3650 (default 14)",
    },
    Setting {
        name: "LONGHAUL_LOG",
        help: "tracing filter (default info)",
    },
    Setting {
        name: "LONGHAUL_METRICS_ADDR",
        help: "address a worker or scheduler process serves Prometheus metrics on (none by default)",
    },
    Setting {
        name: "LONGHAUL_LOG_FORMAT",
        help: "text (default) or json: one JSON object per line with the span fields",
    },
    Setting {
        name: "LONGHAUL_OTLP_ENDPOINT",
        help: "OTLP/HTTP traces URL spans are exported to, e.g. http://collector:4318/v1/traces (binaries built with --features otel; none by default)",
    },
    Setting {
        name: "LONGHAUL_URL",
        help: "the API's URL for the client commands (`longhaul jobs`, `longhaul export`; default http://127.0.0.1:8080)",
    },
    Setting {
        name: "LONGHAUL_API_KEY",
        help: "the API key the client commands (`longhaul jobs`, `longhaul export`) call with",
    },
    Setting {
        name: "LONGHAUL_API_ADDR",
        help: "address the API listens on (default 127.0.0.1:8080)",
    },
    Setting {
        name: "LONGHAUL_API_MAX_CONNECTIONS",
        help: "1..=1000000: connections the API holds at once, more get 503 (default 3/4 of the open-file limit)",
    },
    Setting {
        name: "LONGHAUL_API_HEADER_READ_TIMEOUT_SECONDS",
        help: "1..=300: time a client has to send a request's headers (default 10)",
    },
    Setting {
        name: "LONGHAUL_API_IDLE_TIMEOUT_SECONDS",
        help: "1..=3600: an idle keep-alive connection is closed after this (default 60)",
    },
    Setting {
        name: "LONGHAUL_API_DATABASE_ACQUIRE_TIMEOUT_MS",
        help: "100..=60000: an API request's wait for a database connection before 503 (default 3000)",
    },
    Setting {
        name: "LONGHAUL_REDIS_URL",
        help: "redis://… or rediss://… shared by API replicas (default: none, in-process)",
    },
    Setting {
        name: "LONGHAUL_MISFIRE_THRESHOLD_SECONDS",
        help: "1..=3600: a fire time seen later than this is a misfire (default 60)",
    },
    Setting {
        name: "LONGHAUL_AUTH_CACHE_MS",
        help:
            "0..=60000: API reuse of an authenticated key; 0 reads it every request (default 2000)",
    },
    Setting {
        name: "LONGHAUL_JOB_STATUS_CACHE_MS",
        help:
            "0..=10000: API reuse of a job's status for polling clients; 0 disables (default 250)",
    },
    Setting {
        name: "LONGHAUL_SSE_POLL_INTERVAL_MS",
        help: "10..=60000: how often an API process reads new events for its job event streams (default 250)",
    },
    Setting {
        name: "LONGHAUL_SSE_MAX_STREAMS_PER_KEY",
        help: "1..=100000: open job event streams per API key and process (default 20)",
    },
    Setting {
        name: "LONGHAUL_SSE_MAX_STREAMS",
        help: "1..=1000000: open job event streams per API process (default 2000)",
    },
    Setting {
        name: "LONGHAUL_ARTIFACT_STORE",
        help: "local or s3: where job artifacts go (default local)",
    },
    Setting {
        name: "LONGHAUL_ARTIFACTS_DIR",
        help: "folder of the local artifact store (default LONGHAUL_DATA_DIR/artifacts)",
    },
    Setting {
        name: "LONGHAUL_S3_BUCKETS",
        help: "tenant region to bucket, e.g. us=lh-us@us-east-1,eu=lh-eu@eu-central-1 (s3 only)",
    },
    Setting {
        name: "LONGHAUL_S3_ENDPOINT_URL",
        help: "S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS)",
    },
    Setting {
        name: "LONGHAUL_S3_FORCE_PATH_STYLE",
        help: "true/false: path-style bucket addressing (default false)",
    },
    Setting {
        name: "LONGHAUL_S3_CONNECT_TIMEOUT_SECONDS",
        help: "1..=300: time to open a connection to S3 (default 5)",
    },
    Setting {
        name: "LONGHAUL_S3_READ_TIMEOUT_SECONDS",
        help: "1..=3600: time from sending an S3 request (body included) to the first byte of its answer (default 30)",
    },
    Setting {
        name: "LONGHAUL_S3_ATTEMPT_TIMEOUT_SECONDS",
        help: "1..=3600: time for one attempt of an S3 operation, whole (default 120)",
    },
    Setting {
        name: "LONGHAUL_DOWNLOAD_LINK_SECONDS",
        help: "10..=604800: validity of download links (default 300)",
    },
    Setting {
        name: "LONGHAUL_DOWNLOAD_SIGNING_KEY",
        help: "secret (32+ bytes) signing local download links (default: a file in LONGHAUL_DATA_DIR)",
    },
    Setting {
        name: "LONGHAUL_PUBLIC_URL",
        help: "the API's URL as clients reach it, for download links (default http://LONGHAUL_API_ADDR)",
    },
    Setting {
        name: "LONGHAUL_ARTIFACT_RETENTION_DAYS",
        help: "1..=3650: artifacts kept after their job succeeded, unless the plan says (default 7)",
    },
    Setting {
        name: "LONGHAUL_SCAN_LOCAL_ROOT",
        help: "folder whose git repositories leakage scans may read by path (default: none)",
    },
    Setting {
        name: "LONGHAUL_SCAN_ALLOW_PRIVATE_URLS",
        help: "true/false: url scan targets may reach private and loopback addresses (default false)",
    },
    Setting {
        name: "LONGHAUL_GITHUB_URL",
        help: "where `github` scan targets are cloned from (default https://github.com)",
    },
    Setting {
        name: "LONGHAUL_GITHUB_API_URL",
        help: "GitHub API listing organizations' repositories (default https://api.github.com)",
    },
    Setting {
        name: "LONGHAUL_GITHUB_TOKEN",
        help: "token for cloning and listing GitHub repositories (default: none, public only)",
    },
    Setting {
        name: "LONGHAUL_GITLAB_URL",
        help: "where `gitlab` scan targets are cloned from (default https://gitlab.com)",
    },
    Setting {
        name: "LONGHAUL_GITLAB_API_URL",
        help: "GitLab API listing groups' projects (default LONGHAUL_GITLAB_URL/api/v4)",
    },
    Setting {
        name: "LONGHAUL_GITLAB_TOKEN",
        help: "token for cloning and listing GitLab projects (default: none, public only)",
    },
    Setting {
        name: "LONGHAUL_TRUST_FORWARDED_FOR",
        help: "true/false: client IP from X-Forwarded-For, behind a trusted proxy (default false)",
    },
];

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables (only `LONGHAUL_*` ones are looked at).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        // LONGHAUL_TEST_* is the test suite's namespace, not a setting.
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(name, _)| {
                name.starts_with("LONGHAUL_") && !name.starts_with("LONGHAUL_TEST_")
            })
            .collect();
        let mut problems = Vec::new();
        for name in vars.keys() {
            if !SETTINGS.iter().any(|s| s.name == name) {
                problems.push(format!(
                    "{name} is not a Longhaul setting (known: {})",
                    Self::known_names()
                ));
            }
        }
        let mut reader = Reader {
            vars: &vars,
            problems: &mut problems,
        };

        let data_dir = PathBuf::from(
            reader
                .text("LONGHAUL_DATA_DIR")
                .unwrap_or("./longhaul-data"),
        );
        let database_url = match reader.text("LONGHAUL_DATABASE_URL") {
            Some(url) => url.to_string(),
            None => format!("sqlite://{}", data_dir.join("longhaul.db").display()),
        };
        if !(database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
            || database_url.starts_with("sqlite:"))
        {
            reader.problem(
                "LONGHAUL_DATABASE_URL",
                &database_url,
                "must start with postgres:// or sqlite://",
            );
        }
        let database_max_connections =
            reader.number("LONGHAUL_DATABASE_MAX_CONNECTIONS", 16u32, 1, 1000);
        let lease = Duration::from_secs(reader.number("LONGHAUL_LEASE_SECONDS", 30u64, 3, 3600));
        let poll_interval =
            Duration::from_millis(reader.number("LONGHAUL_POLL_INTERVAL_MS", 1000u64, 10, 60_000));
        let shutdown_grace =
            Duration::from_secs(reader.number("LONGHAUL_SHUTDOWN_GRACE_SECONDS", 30u64, 0, 3600));
        let rescue_interval =
            Duration::from_secs(reader.number("LONGHAUL_RESCUE_INTERVAL_SECONDS", 15u64, 1, 3600));
        let worker_queues = match reader.text("LONGHAUL_WORKER_QUEUES") {
            Some(text) => match parse_queue_list(text) {
                Ok(queues) => queues,
                Err(message) => {
                    reader.problem("LONGHAUL_WORKER_QUEUES", text, &message);
                    vec![]
                }
            },
            None => vec!["default".to_string()],
        };
        let worker_concurrency = reader.number("LONGHAUL_WORKER_CONCURRENCY", 8usize, 1, 4096);
        let default_max_running_per_tenant =
            match reader.text("LONGHAUL_DEFAULT_MAX_RUNNING_PER_TENANT") {
                None | Some("none") => None,
                Some(_) => {
                    Some(reader.number("LONGHAUL_DEFAULT_MAX_RUNNING_PER_TENANT", 0i32, 1, 100_000))
                }
            };
        let retention_days = reader.number("LONGHAUL_JOB_RETENTION_DAYS", 14u64, 1, 3650);
        let log = reader.text("LONGHAUL_LOG").unwrap_or("info").to_string();
        let metrics_addr = match reader.text("LONGHAUL_METRICS_ADDR") {
            None => None,
            Some(text) => text.parse().map(Some).unwrap_or_else(|_| {
                reader.problem(
                    "LONGHAUL_METRICS_ADDR",
                    text,
                    "must be an address such as 0.0.0.0:9090",
                );
                None
            }),
        };
        let otlp_endpoint = reader.text("LONGHAUL_OTLP_ENDPOINT").and_then(|text| {
            if text.starts_with("http://") || text.starts_with("https://") {
                Some(text.to_string())
            } else {
                reader.problem(
                    "LONGHAUL_OTLP_ENDPOINT",
                    text,
                    "must be an http(s) URL such as http://collector:4318/v1/traces",
                );
                None
            }
        });
        let log_format = match reader.text("LONGHAUL_LOG_FORMAT") {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                reader.problem("LONGHAUL_LOG_FORMAT", other, "must be text or json");
                LogFormat::Text
            }
        };
        let default_api_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
        let api_addr = match reader.text("LONGHAUL_API_ADDR") {
            None => default_api_addr,
            Some(text) => text.parse().unwrap_or_else(|_| {
                reader.problem(
                    "LONGHAUL_API_ADDR",
                    text,
                    "must be an address and port, e.g. 0.0.0.0:8080",
                );
                default_api_addr
            }),
        };
        let api_max_connections = reader
            .text("LONGHAUL_API_MAX_CONNECTIONS")
            .map(|_| reader.number("LONGHAUL_API_MAX_CONNECTIONS", 1usize, 1, 1_000_000));
        let api_header_read_timeout = Duration::from_secs(reader.number(
            "LONGHAUL_API_HEADER_READ_TIMEOUT_SECONDS",
            10u64,
            1,
            300,
        ));
        let api_idle_timeout =
            Duration::from_secs(reader.number("LONGHAUL_API_IDLE_TIMEOUT_SECONDS", 60u64, 1, 3600));
        let api_database_acquire_timeout = Duration::from_millis(reader.number(
            "LONGHAUL_API_DATABASE_ACQUIRE_TIMEOUT_MS",
            3000u64,
            100,
            60_000,
        ));
        let redis_url = reader.text("LONGHAUL_REDIS_URL").map(str::to_string);
        if let Some(url) = &redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                reader.problem(
                    "LONGHAUL_REDIS_URL",
                    url,
                    "must start with redis:// or rediss://",
                );
            }
        }
        let trust_forwarded_for = reader.flag("LONGHAUL_TRUST_FORWARDED_FOR", false);
        let misfire_seconds = reader.number("LONGHAUL_MISFIRE_THRESHOLD_SECONDS", 60u64, 1, 3600);
        let auth_cache_ms = reader.number("LONGHAUL_AUTH_CACHE_MS", 2000u64, 0, 60_000);
        let job_status_cache_ms = reader.number("LONGHAUL_JOB_STATUS_CACHE_MS", 250u64, 0, 10_000);
        let event_streams = EventStreamConfig {
            poll_interval: Duration::from_millis(reader.number(
                "LONGHAUL_SSE_POLL_INTERVAL_MS",
                250u64,
                10,
                60_000,
            )),
            max_per_key: reader.number("LONGHAUL_SSE_MAX_STREAMS_PER_KEY", 20usize, 1, 100_000),
            max_per_process: reader.number("LONGHAUL_SSE_MAX_STREAMS", 2000usize, 1, 1_000_000),
        };

        let artifacts = reader.artifacts(&data_dir, api_addr);
        let scans = reader.scans();

        if !problems.is_empty() {
            return Err(Error::Config(problems));
        }
        Ok(Config {
            database_url,
            data_dir,
            database_max_connections,
            lease,
            poll_interval,
            shutdown_grace,
            rescue_interval,
            worker_queues,
            worker_concurrency,
            default_max_running_per_tenant,
            job_retention: Duration::from_secs(retention_days * 86_400),
            log,
            log_format,
            otlp_endpoint,
            metrics_addr,
            api_addr,
            api_max_connections,
            api_header_read_timeout,
            api_idle_timeout,
            api_database_acquire_timeout,
            redis_url,
            trust_forwarded_for,
            misfire_threshold: Duration::from_secs(misfire_seconds),
            auth_cache_ttl: Duration::from_millis(auth_cache_ms),
            job_status_cache_ttl: Duration::from_millis(job_status_cache_ms),
            artifacts,
            scans,
            event_streams,
        })
    }

    fn known_names() -> String {
        SETTINGS
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line per setting, for `--help` and the README.
    pub fn describe() -> String {
        SETTINGS
            .iter()
            .map(|s| format!("  {:<42} {}\n", s.name, s.help))
            .collect()
    }
}

/// Parses `a,b,c` into queue names, each validated.
pub fn parse_queue_list(text: &str) -> std::result::Result<Vec<String>, String> {
    let queues: Vec<String> = text
        .split(',')
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .collect();
    if queues.is_empty() {
        return Err("name at least one queue".into());
    }
    for queue in &queues {
        validate_queue_name(queue)?;
    }
    Ok(queues)
}

/// Queue names: 1–64 characters of `a-z 0-9 _ - .`.
pub fn validate_queue_name(queue: &str) -> std::result::Result<(), String> {
    let ok = !queue.is_empty()
        && queue.len() <= 64
        && queue
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "queue name {queue:?} must be 1-64 characters of a-z, 0-9, '_', '-', '.'"
        ))
    }
}

struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    problems: &'a mut Vec<String>,
}

impl<'a> Reader<'a> {
    fn text(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn problem(&mut self, name: &str, value: &str, message: &str) {
        self.problems.push(format!("{name}={value:?}: {message}"));
    }

    fn scans(&mut self) -> ScanConfig {
        let local_root = self.text("LONGHAUL_SCAN_LOCAL_ROOT").map(PathBuf::from);
        if let Some(root) = &local_root {
            if !root.is_absolute() {
                self.problem(
                    "LONGHAUL_SCAN_LOCAL_ROOT",
                    &root.display().to_string(),
                    "must be an absolute path",
                );
            }
        }
        let github_base = self.url("LONGHAUL_GITHUB_URL", "https://github.com");
        let github = GitHost {
            api_url: self.url("LONGHAUL_GITHUB_API_URL", "https://api.github.com"),
            base_url: github_base,
            token: self
                .text("LONGHAUL_GITHUB_TOKEN")
                .map(|t| Secret(t.to_string())),
        };
        let gitlab_base = self.url("LONGHAUL_GITLAB_URL", "https://gitlab.com");
        let gitlab = GitHost {
            api_url: self.url("LONGHAUL_GITLAB_API_URL", &format!("{gitlab_base}/api/v4")),
            base_url: gitlab_base,
            token: self
                .text("LONGHAUL_GITLAB_TOKEN")
                .map(|t| Secret(t.to_string())),
        };
        ScanConfig {
            local_root,
            allow_private_urls: self.flag("LONGHAUL_SCAN_ALLOW_PRIVATE_URLS", false),
            github,
            gitlab,
        }
    }

    /// A base URL (http, https or, for operators' mirrors, file), without
    /// its trailing slash.
    fn url(&mut self, name: &str, default: &str) -> String {
        let Some(text) = self.text(name) else {
            return default.to_string();
        };
        if !["http://", "https://", "file://"]
            .iter()
            .any(|scheme| text.starts_with(scheme))
        {
            self.problem(name, text, "must start with http://, https:// or file://");
            return default.to_string();
        }
        text.trim_end_matches('/').to_string()
    }

    fn artifacts(
        &mut self,
        data_dir: &std::path::Path,
        api_addr: std::net::SocketAddr,
    ) -> ArtifactConfig {
        let backend = match self.text("LONGHAUL_ARTIFACT_STORE").unwrap_or("local") {
            "local" => {
                for name in [
                    "LONGHAUL_S3_BUCKETS",
                    "LONGHAUL_S3_ENDPOINT_URL",
                    "LONGHAUL_S3_CONNECT_TIMEOUT_SECONDS",
                    "LONGHAUL_S3_READ_TIMEOUT_SECONDS",
                    "LONGHAUL_S3_ATTEMPT_TIMEOUT_SECONDS",
                ] {
                    if let Some(value) = self.text(name) {
                        self.problem(name, value, "is only read when LONGHAUL_ARTIFACT_STORE=s3");
                    }
                }
                ArtifactBackend::Local {
                    dir: self
                        .text("LONGHAUL_ARTIFACTS_DIR")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| data_dir.join("artifacts")),
                }
            }
            "s3" => {
                let buckets = match self.text("LONGHAUL_S3_BUCKETS") {
                    Some(text) => parse_bucket_map(text).unwrap_or_else(|message| {
                        self.problem("LONGHAUL_S3_BUCKETS", text, &message);
                        BTreeMap::new()
                    }),
                    None => {
                        self.problems.push(
                            "LONGHAUL_S3_BUCKETS is required when LONGHAUL_ARTIFACT_STORE=s3"
                                .into(),
                        );
                        BTreeMap::new()
                    }
                };
                let endpoint_url = self.text("LONGHAUL_S3_ENDPOINT_URL").map(str::to_string);
                if let Some(url) = &endpoint_url {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        self.problem(
                            "LONGHAUL_S3_ENDPOINT_URL",
                            url,
                            "must start with http:// or https://",
                        );
                    }
                }
                ArtifactBackend::S3 {
                    buckets,
                    endpoint_url,
                    force_path_style: self.flag("LONGHAUL_S3_FORCE_PATH_STYLE", false),
                    timeouts: self.s3_timeouts(),
                }
            }
            other => {
                let other = other.to_string();
                self.problem("LONGHAUL_ARTIFACT_STORE", &other, "must be local or s3");
                ArtifactBackend::Local {
                    dir: data_dir.join("artifacts"),
                }
            }
        };
        let signing_secret = self
            .text("LONGHAUL_DOWNLOAD_SIGNING_KEY")
            .map(|secret| Secret(secret.to_string()));
        if let Some(Secret(secret)) = &signing_secret {
            if secret.len() < 32 {
                self.problems
                    .push("LONGHAUL_DOWNLOAD_SIGNING_KEY must be at least 32 bytes long".into());
            }
        }
        let public_url = self
            .text("LONGHAUL_PUBLIC_URL")
            .map(|url| url.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{api_addr}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            self.problem(
                "LONGHAUL_PUBLIC_URL",
                &public_url.clone(),
                "must start with http:// or https://",
            );
        }
        let link_seconds = self.number("LONGHAUL_DOWNLOAD_LINK_SECONDS", 300u64, 10, 604_800);
        let retention_days = self.number("LONGHAUL_ARTIFACT_RETENTION_DAYS", 7u64, 1, 3650);
        ArtifactConfig {
            backend,
            download_link_ttl: Duration::from_secs(link_seconds),
            signing_secret,
            public_url,
            retention: Duration::from_secs(retention_days * 86_400),
        }
    }

    fn s3_timeouts(&mut self) -> S3Timeouts {
        let default = S3Timeouts::default();
        let seconds = |reader: &mut Self, name: &str, default: Duration, max: u64| {
            Duration::from_secs(reader.number(name, default.as_secs(), 1, max))
        };
        S3Timeouts {
            connect: seconds(
                self,
                "LONGHAUL_S3_CONNECT_TIMEOUT_SECONDS",
                default.connect,
                300,
            ),
            read: seconds(self, "LONGHAUL_S3_READ_TIMEOUT_SECONDS", default.read, 3600),
            attempt: seconds(
                self,
                "LONGHAUL_S3_ATTEMPT_TIMEOUT_SECONDS",
                default.attempt,
                3600,
            ),
        }
    }

    fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.text(name) {
            None => default,
            Some("true") => true,
            Some("false") => false,
            Some(text) => {
                self.problem(name, text, "must be true or false");
                default
            }
        }
    }

    fn number<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let Some(text) = self.text(name) else {
            return default;
        };
        let text = text.to_string();
        match text.parse::<T>() {
            Ok(value) if value >= min && value <= max => value,
            _ => {
                self.problem(
                    name,
                    &text,
                    &format!("must be a whole number from {min} to {max}"),
                );
                default
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_to_sqlite_in_the_data_dir() {
        let config = Config::from_vars(vars(&[("PATH", "/bin")])).expect("defaults are valid");
        assert_eq!(config.database_url, "sqlite://./longhaul-data/longhaul.db");
        assert_eq!(config.lease, Duration::from_secs(30));
        assert_eq!(config.worker_queues, vec!["default"]);
        assert_eq!(config.default_max_running_per_tenant, None);
        assert_eq!(config.redis_url, None);
        assert!(!config.trust_forwarded_for);
        assert_eq!(config.event_streams, EventStreamConfig::default());
        assert_eq!(
            config.artifacts.backend,
            ArtifactBackend::Local {
                dir: PathBuf::from("./longhaul-data/artifacts")
            }
        );
        assert_eq!(config.artifacts.public_url, "http://127.0.0.1:8080");
        assert_eq!(config.artifacts.download_link_ttl, Duration::from_secs(300));
        assert_eq!(config.api_max_connections, None);
        assert_eq!(config.api_header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.api_idle_timeout, Duration::from_secs(60));
        assert_eq!(
            config.api_database_acquire_timeout,
            Duration::from_millis(3000)
        );
    }

    #[test]
    fn reads_the_log_format_and_refuses_others() {
        let text = Config::from_vars(vars(&[])).expect("defaults");
        assert_eq!(text.log_format, LogFormat::Text);
        let json = Config::from_vars(vars(&[("LONGHAUL_LOG_FORMAT", "json")])).expect("json");
        assert_eq!(json.log_format, LogFormat::Json);
        let error = Config::from_vars(vars(&[("LONGHAUL_LOG_FORMAT", "xml")]))
            .expect_err("xml is no log format")
            .to_string();
        assert!(error.contains("LONGHAUL_LOG_FORMAT"), "{error}");
    }

    #[test]
    fn reads_the_api_connection_limits() {
        let config = Config::from_vars(vars(&[
            ("LONGHAUL_API_MAX_CONNECTIONS", "500"),
            ("LONGHAUL_API_HEADER_READ_TIMEOUT_SECONDS", "5"),
            ("LONGHAUL_API_IDLE_TIMEOUT_SECONDS", "30"),
            ("LONGHAUL_API_DATABASE_ACQUIRE_TIMEOUT_MS", "1500"),
        ]))
        .expect("valid");
        assert_eq!(config.api_max_connections, Some(500));
        assert_eq!(config.api_header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.api_idle_timeout, Duration::from_secs(30));
        assert_eq!(
            config.api_database_acquire_timeout,
            Duration::from_millis(1500)
        );
        let text = Config::from_vars(vars(&[
            ("LONGHAUL_API_MAX_CONNECTIONS", "0"),
            ("LONGHAUL_API_DATABASE_ACQUIRE_TIMEOUT_MS", "10"),
        ]))
        .expect_err("invalid")
        .to_string();
        for needle in [
            "LONGHAUL_API_MAX_CONNECTIONS=\"0\": must be a whole number from 1 to 1000000",
            "LONGHAUL_API_DATABASE_ACQUIRE_TIMEOUT_MS=\"10\": must be a whole number from 100 to 60000",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn reads_s3_timeouts_and_refuses_them_without_s3() {
        let config = Config::from_vars(vars(&[
            ("LONGHAUL_ARTIFACT_STORE", "s3"),
            ("LONGHAUL_S3_BUCKETS", "us=lh-us"),
            ("LONGHAUL_S3_CONNECT_TIMEOUT_SECONDS", "2"),
            ("LONGHAUL_S3_READ_TIMEOUT_SECONDS", "10"),
            ("LONGHAUL_S3_ATTEMPT_TIMEOUT_SECONDS", "60"),
        ]))
        .expect("valid");
        let ArtifactBackend::S3 { timeouts, .. } = &config.artifacts.backend else {
            panic!("expected s3, got {:?}", config.artifacts.backend)
        };
        assert_eq!(
            *timeouts,
            S3Timeouts {
                connect: Duration::from_secs(2),
                read: Duration::from_secs(10),
                attempt: Duration::from_secs(60),
            }
        );
        let err = Config::from_vars(vars(&[
            ("LONGHAUL_ARTIFACT_STORE", "s3"),
            ("LONGHAUL_S3_BUCKETS", "us=lh-us"),
            ("LONGHAUL_S3_READ_TIMEOUT_SECONDS", "0"),
        ]))
        .expect_err("zero is refused")
        .to_string();
        assert!(err.contains("LONGHAUL_S3_READ_TIMEOUT_SECONDS"), "{err}");
        let err = Config::from_vars(vars(&[("LONGHAUL_S3_ATTEMPT_TIMEOUT_SECONDS", "60")]))
            .expect_err("only read for s3")
            .to_string();
        assert!(
            err.contains("only read when LONGHAUL_ARTIFACT_STORE=s3"),
            "{err}"
        );
    }

    #[test]
    fn reads_s3_buckets_per_region_and_refuses_half_settings() {
        let config = Config::from_vars(vars(&[
            ("LONGHAUL_ARTIFACT_STORE", "s3"),
            ("LONGHAUL_S3_BUCKETS", "us=lh-us, eu=lh-eu@eu-central-1"),
            ("LONGHAUL_S3_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("LONGHAUL_S3_FORCE_PATH_STYLE", "true"),
            (
                "LONGHAUL_DOWNLOAD_SIGNING_KEY",
                "0123456789abcdef0123456789abcdef",
            ),
        ]))
        .expect("valid");
        let ArtifactBackend::S3 {
            buckets,
            endpoint_url,
            force_path_style,
            timeouts,
        } = &config.artifacts.backend
        else {
            panic!("expected s3, got {:?}", config.artifacts.backend)
        };
        assert_eq!(*timeouts, S3Timeouts::default());
        assert_eq!(
            buckets["us"],
            S3Bucket {
                bucket: "lh-us".into(),
                aws_region: "us-east-1".into()
            }
        );
        assert_eq!(buckets["eu"].aws_region, "eu-central-1");
        assert_eq!(endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(force_path_style);
        assert!(
            !format!("{config:?}").contains("0123456789abcdef"),
            "the secret must not be printed"
        );

        let err = Config::from_vars(vars(&[
            ("LONGHAUL_ARTIFACT_STORE", "s3"),
            ("LONGHAUL_DOWNLOAD_SIGNING_KEY", "short"),
        ]))
        .expect_err("invalid")
        .to_string();
        assert!(err.contains("LONGHAUL_S3_BUCKETS is required"), "{err}");
        assert!(err.contains("at least 32 bytes"), "{err}");
        let err = Config::from_vars(vars(&[
            ("LONGHAUL_ARTIFACT_STORE", "ftp"),
            ("LONGHAUL_S3_BUCKETS", "us=x"),
        ]))
        .expect_err("invalid")
        .to_string();
        assert!(err.contains("must be local or s3"), "{err}");
        assert!(parse_bucket_map("us=a,us=b").is_err());
        assert!(parse_bucket_map("us").is_err());
        assert!(parse_bucket_map("=a").is_err());
    }

    #[test]
    fn reads_redis_and_proxy_settings() {
        let config = Config::from_vars(vars(&[
            ("LONGHAUL_REDIS_URL", "redis://127.0.0.1:6379/2"),
            ("LONGHAUL_TRUST_FORWARDED_FOR", "true"),
        ]))
        .expect("valid");
        assert_eq!(
            config.redis_url.as_deref(),
            Some("redis://127.0.0.1:6379/2")
        );
        assert!(config.trust_forwarded_for);
        let err = Config::from_vars(vars(&[
            ("LONGHAUL_REDIS_URL", "http://cache:6379"),
            ("LONGHAUL_TRUST_FORWARDED_FOR", "yes"),
        ]))
        .expect_err("invalid");
        let text = err.to_string();
        for needle in [
            "LONGHAUL_REDIS_URL=\"http://cache:6379\": must start with redis:// or rediss://",
            "LONGHAUL_TRUST_FORWARDED_FOR=\"yes\": must be true or false",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn reads_every_setting() {
        let config = Config::from_vars(vars(&[
            ("LONGHAUL_DATABASE_URL", "postgres://u@h/db"),
            ("LONGHAUL_LEASE_SECONDS", "12"),
            ("LONGHAUL_WORKER_QUEUES", "scans, exports"),
            ("LONGHAUL_WORKER_CONCURRENCY", "24"),
            ("LONGHAUL_DEFAULT_MAX_RUNNING_PER_TENANT", "3"),
            ("LONGHAUL_POLL_INTERVAL_MS", "50"),
            ("LONGHAUL_SSE_POLL_INTERVAL_MS", "40"),
            ("LONGHAUL_SSE_MAX_STREAMS_PER_KEY", "3"),
            ("LONGHAUL_SSE_MAX_STREAMS", "100"),
        ]))
        .expect("valid");
        assert_eq!(config.database_url, "postgres://u@h/db");
        assert_eq!(config.lease, Duration::from_secs(12));
        assert_eq!(config.worker_queues, vec!["scans", "exports"]);
        assert_eq!(config.worker_concurrency, 24);
        assert_eq!(config.default_max_running_per_tenant, Some(3));
        assert_eq!(config.poll_interval, Duration::from_millis(50));
        assert_eq!(
            config.event_streams,
            EventStreamConfig {
                poll_interval: Duration::from_millis(40),
                max_per_key: 3,
                max_per_process: 100,
            }
        );
    }

    #[test]
    fn names_every_bad_value() {
        let err = Config::from_vars(vars(&[
            ("LONGHAUL_DATABASE_URL", "mysql://x"),
            ("LONGHAUL_LEASE_SECONDS", "1"),
            ("LONGHAUL_WORKER_CONCURRENCY", "lots"),
            ("LONGHAUL_WORKER_QUEUES", "Bad Queue"),
            ("LONGHAUL_DATABSE_URL", "typo"),
        ]))
        .expect_err("invalid");
        let Error::Config(problems) = &err else {
            panic!("expected a config error, got {err}")
        };
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let text = err.to_string();
        for needle in [
            "LONGHAUL_DATABASE_URL=\"mysql://x\"",
            "LONGHAUL_LEASE_SECONDS=\"1\": must be a whole number from 3 to 3600",
            "LONGHAUL_WORKER_CONCURRENCY=\"lots\"",
            "queue name \"Bad Queue\"",
            "LONGHAUL_DATABSE_URL is not a Longhaul setting",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
