//! Process plumbing shared by the roles: logging, the store connection, and
//! turning SIGTERM / ctrl-c into a shutdown token.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;
use longhaul_core::artifacts::ArtifactStores;
use longhaul_core::config::LogFormat;
use longhaul_core::store::PoolSettings;
use longhaul_core::store::Stores;
use longhaul_core::Config;
use longhaul_worker::JobServices;
use longhaul_worker::Shutdown;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Logs to stderr: as text, in colour only when stderr is a terminal and
/// `NO_COLOR` is unset or empty (no-color.org), so files, pipes and CI logs
/// get plain text; or as JSON, one object per line with the fields of the
/// current span and its parents (`LONGHAUL_LOG_FORMAT=json`). With
/// `LONGHAUL_OTLP_ENDPOINT` (binaries built with `--features otel`) the
/// spans are also exported over OTLP; keep the guard until the process ends
/// (dropping it flushes the export).
pub fn init_logging(
    filter: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<LoggingGuard> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    #[cfg(feature = "otel")]
    let (otel, provider) = match otlp_endpoint {
        Some(endpoint) => {
            let (layer, provider) = crate::otel::layer(endpoint)?;
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otel"))]
    let otel: Option<tracing_subscriber::layer::Identity> = match otlp_endpoint {
        Some(_) => anyhow::bail!(
            "LONGHAUL_OTLP_ENDPOINT is set, but this binary was built without OpenTelemetry \
             (cargo build --release --features otel)"
        ),
        None => None,
    };
    let base = tracing_subscriber::registry().with(otel).with(filter);
    let installed = match format {
        LogFormat::Json => base
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => base
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour_wanted(
                        std::io::stderr().is_terminal(),
                        std::env::var_os("NO_COLOR").as_deref(),
                    ))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    installed.context("installing the log subscriber")?;
    Ok(LoggingGuard {
        #[cfg(feature = "otel")]
        provider,
    })
}

/// Keeps the span export alive; dropping it flushes what is batched.
pub struct LoggingGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for LoggingGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("longhaul: flushing the span export: {error}");
            }
        }
    }
}

/// Histogram buckets, in seconds: from a no-op job's wait to an hour-long
/// export.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
];

static METRICS: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();

/// Installs the process's Prometheus recorder (what the `metrics` facade
/// records is rendered by the API's `/metrics`), and, given `listen`
/// (`LONGHAUL_METRICS_ADDR`), serves it on that address too: how worker and
/// scheduler processes, which serve no API, are scraped. Call inside the
/// runtime.
pub fn install_metrics(listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let mut builder = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .context("histogram buckets")?;
    if let Some(addr) = listen {
        builder = builder.with_http_listener(addr);
    }
    let (recorder, exporter) = builder.build().context("building the metrics recorder")?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    if listen.is_some() {
        tokio::spawn(async move {
            if let Err(error) = exporter.await {
                tracing::error!(?error, "the metrics listener stopped");
            }
        });
    }
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let _ = METRICS.set(handle);
    Ok(())
}

/// The recorder [`install_metrics`] installed, if it did.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    METRICS.get().cloned()
}

/// Colour for a terminal, unless `NO_COLOR` is set to anything but "".
fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Connects to the configured store (jobs and tenancy).
pub async fn connect(config: &Config) -> anyhow::Result<Arc<dyn Stores>> {
    connect_pool(config, PoolSettings::new(config.database_max_connections)).await
}

/// Connects to the configured store for the API role: its requests wait
/// `LONGHAUL_API_DATABASE_ACQUIRE_TIMEOUT_MS` for a connection, then answer 503.
pub async fn connect_for_requests(config: &Config) -> anyhow::Result<Arc<dyn Stores>> {
    let pool = PoolSettings::new(config.database_max_connections)
        .with_acquire_timeout(config.api_database_acquire_timeout);
    connect_pool(config, pool).await
}

/// The API's connection limits as configured (the cap follows the open-file
/// limit unless set).
pub fn serve_options(config: &Config) -> longhaul_api::ServeOptions {
    let defaults = longhaul_api::ServeOptions::default();
    longhaul_api::ServeOptions {
        max_connections: config
            .api_max_connections
            .unwrap_or(defaults.max_connections),
        header_read_timeout: config.api_header_read_timeout,
        idle_timeout: config.api_idle_timeout,
    }
}

async fn connect_pool(config: &Config, pool: PoolSettings) -> anyhow::Result<Arc<dyn Stores>> {
    if let Some(path) = config.database_url.strip_prefix("sqlite://") {
        if let Some(parent) = std::path::Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    longhaul_core::store::connect_stores_pool(&config.database_url, pool)
        .await
        .with_context(|| format!("connecting to {}", redact(&config.database_url)))
}

/// The artifact stores the configuration names (a local folder by default).
pub async fn artifact_stores(config: &Config) -> anyhow::Result<Arc<ArtifactStores>> {
    let stores = ArtifactStores::from_config(&config.artifacts, &config.data_dir)
        .await
        .context("setting up artifact storage (LONGHAUL_ARTIFACT_STORE)")?;
    tracing::info!(artifacts = ?stores, "artifact storage");
    Ok(Arc::new(stores))
}

/// What job kinds that touch tenant data need.
pub async fn job_services(
    config: &Config,
    stores: Arc<dyn Stores>,
    artifacts: Arc<ArtifactStores>,
) -> JobServices {
    JobServices {
        stores,
        artifacts,
        artifact_retention: config.artifacts.retention,
        scans: config.scans.clone(),
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// How to cut a worker's grace period short, as its waiting line says.
pub const HAND_BACK_HINT: &str = "press ctrl-c (or send SIGTERM) again to hand them back now";

/// Call before announcing that ctrl-c stops the process. The first SIGTERM
/// or ctrl-c fires `stop` (no new claims; running jobs
/// get the grace period; the API closes); a second one fires
/// `hand_back_now` (running jobs are handed back at once).
pub fn shutdown_on_signal() -> Shutdown {
    let shutdown = Shutdown {
        stop: CancellationToken::new(),
        hand_back_now: CancellationToken::new(),
        hand_back_hint: Some(HAND_BACK_HINT.to_string()),
    };
    let (stop, hand_back_now) = (shutdown.stop.clone(), shutdown.hand_back_now.clone());
    // Listening from here on (not from when the task first runs): a signal
    // right after this call is ours, not the default that kills the process.
    let mut signals = Signals::listen();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!(
            "shutdown signal received: no new claims; running jobs get the grace period"
        );
        stop.cancel();
        signals.next().await;
        tracing::info!("second shutdown signal: handing running jobs back now");
        hand_back_now.cancel();
    });
    shutdown
}

/// SIGTERM and SIGINT (ctrl-c), listened to for the life of the process.
#[cfg(unix)]
struct Signals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn listen() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let terminate = signal(SignalKind::terminate())
            .inspect_err(|error| {
                tracing::warn!(%error, "cannot listen for SIGTERM; only ctrl-c stops this process")
            })
            .ok();
        let interrupt = signal(SignalKind::interrupt())
            .inspect_err(|error| tracing::warn!(%error, "cannot listen for ctrl-c (SIGINT)"))
            .ok();
        Signals {
            terminate,
            interrupt,
        }
    }

    /// The next SIGTERM or SIGINT (never, if neither can be listened to).
    async fn next(&mut self) {
        async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.terminate) => {}
            _ = one(&mut self.interrupt) => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn listen() -> Self {
        Signals
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::colour_wanted;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(false, Some(OsStr::new(""))));
    }
}
