//! OpenTelemetry export, behind the cargo feature `otel` and the setting
//! `LONGHAUL_OTLP_ENDPOINT` (an OTLP/HTTP traces URL such as
//! `http://collector:4318/v1/traces`): every span (requests with their request
//! id; jobs with `tenant_id`, `job_id`, kind, attempt and worker; the pools)
//! is sent as OTLP protobuf, batched on the SDK's own thread. The HTTP client
//! is the hyper stack the rest of the binary builds, on a small runtime of its
//! own (the SDK's batch thread is not a tokio thread).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// OTLP/HTTP over hyper, driven by a runtime of its own.
#[derive(Debug, Clone)]
struct HyperExport {
    runtime: Arc<tokio::runtime::Runtime>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

#[async_trait]
impl opentelemetry_http::HttpClient for HyperExport {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let client = self.client.clone();
        // The SDK calls this on its batch thread, outside any runtime.
        self.runtime.block_on(async move {
            let response = tokio::time::timeout(EXPORT_TIMEOUT, client.request(request))
                .await
                .map_err(|_| "the collector did not answer in time")??;
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await?.to_bytes();
            Ok(http::Response::from_parts(parts, bytes))
        })
    }
}

/// The tracer provider exporting to `endpoint`, and the layer feeding it
/// the process's spans. Keep the provider: shutting it down flushes.
pub fn layer<S>(endpoint: &str) -> anyhow::Result<(impl Layer<S>, SdkTracerProvider)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the OTLP exporter's runtime")?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .context("loading the TLS root certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    let client = HyperExport {
        runtime: Arc::new(runtime),
        client: Client::builder(TokioExecutor::new()).build(https),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .context("building the OTLP span exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("longhaul").build())
        .build();
    let tracer = provider.tracer("longhaul");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A collector on 127.0.0.1 that hands over the first request it gets
    /// (its request line, headers and body) and answers 200.
    fn collector() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
        let (sender, received) = mpsc::channel();
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = sender.send((head, body));
        });
        (url, received)
    }

    #[test]
    fn spans_reach_the_collector_as_otlp_protobuf() {
        let (url, received) = collector();
        let (layer, provider) = layer(&url).expect("exporter");
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("job", tenant_id = "acme", job_id = "job_0193");
            let _entered = span.enter();
            tracing::info!("working");
        });
        provider.force_flush().expect("flushed");
        let (head, body) = received
            .recv_timeout(Duration::from_secs(10))
            .expect("the collector got a request");
        assert!(head.starts_with("POST /v1/traces "), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/x-protobuf"),
            "{head}"
        );
        let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"job"), "the span's name");
        assert!(contains(b"tenant_id") && contains(b"acme"), "its fields");
        assert!(contains(b"longhaul"), "the service name");
        provider.shutdown().expect("shut down");
    }
}
