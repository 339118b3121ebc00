//! The HTTP client of the CLI's server commands (`longhaul jobs …`,
//! `longhaul export …`): a base URL and an API key (`LONGHAUL_URL`,
//! `LONGHAUL_API_KEY`), JSON in and out, answers in the API's error format
//! turned into messages, Server-Sent Events read as they come, and
//! downloads streamed to a file. It talks to the API only, never to the
//! database.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// How long a plain request may take (event streams and downloads have none).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects a download follows (object stores answer links with one).
const MAX_REDIRECTS: usize = 5;

pub struct ApiClient {
    base: String,
    key: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// One Server-Sent Event: its name (`message` if none) and data.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEvent {
    pub event: String,
    pub data: String,
}

/// A `text/event-stream` answer, read event by event.
pub struct EventStream {
    body: Incoming,
    buffer: String,
}

impl ApiClient {
    /// `base`: the API's URL (`http://127.0.0.1:8080`); `key`: an API key.
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        base.parse::<Uri>()
            .with_context(|| format!("LONGHAUL_URL {base:?} is not a URL"))?;
        if key.is_empty() {
            bail!("no API key: set LONGHAUL_API_KEY or pass --api-key");
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .context("loading the TLS root certificates")?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(ApiClient {
            base,
            key: key.to_string(),
            http: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// A URL of the API: `path` joined to the base, or `path` itself if it
    /// is absolute.
    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&'static str, &str)],
        with_key: bool,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut request = Request::builder().method(method).uri(url).header(
            USER_AGENT,
            concat!("longhaul-cli/", env!("CARGO_PKG_VERSION")),
        );
        if with_key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", self.key));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        request
            .body(body)
            .with_context(|| format!("building a request to {url}"))
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Response<Incoming>> {
        let target = request.uri().to_string();
        self.http
            .request(request)
            .await
            .with_context(|| format!("cannot reach {target}"))
    }

    /// Sends a JSON request; answers the JSON body of a 2xx answer, or an
    /// error saying the status, the error code and its message.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&'static str, &str)],
    ) -> anyhow::Result<Value> {
        let request = self.request(method, &self.url(path), body, headers, true)?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let response = self.send(request).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .context("reading the answer")?
                .to_bytes();
            anyhow::Ok((status, bytes))
        })
        .await
        .map_err(|_| anyhow!("{path}: no answer in {REQUEST_TIMEOUT:?}"))??;
        let (status, bytes) = response;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if !status.is_success() {
            return Err(api_error(status, &value));
        }
        Ok(value)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(Method::GET, path, None, &[]).await
    }

    /// Follows `path` as Server-Sent Events.
    pub async fn events(&self, path: &str) -> anyhow::Result<EventStream> {
        let request = self.request(
            Method::GET,
            &self.url(path),
            None,
            &[("accept", "text/event-stream")],
            true,
        )?;
        let response = self.send(request).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(refusal(response).await);
        }
        Ok(EventStream {
            body: response.into_body(),
            buffer: String::new(),
        })
    }

    /// Streams `url` (a path of the API, or a signed link elsewhere) into
    /// `out`, following redirects; the key goes to the API's origin only.
    /// Answers the bytes written.
    pub async fn download(&self, url: &str, out: &Path) -> anyhow::Result<u64> {
        let mut current = self.url(url);
        for _ in 0..=MAX_REDIRECTS {
            let with_key = current.starts_with(&self.base);
            let request = self.request(Method::GET, &current, None, &[], with_key)?;
            let mut response = self.send(request).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| anyhow!("{current} answered {status} without a Location"))?;
                current = self.url(location);
                continue;
            }
            if !status.is_success() {
                return Err(refusal(response).await);
            }
            let partial = out.with_extension("part");
            let mut file = tokio::fs::File::create(&partial)
                .await
                .with_context(|| format!("creating {}", partial.display()))?;
            let mut written = 0u64;
            while let Some(frame) = response.body_mut().frame().await {
                let frame = frame.context("reading the download")?;
                if let Some(chunk) = frame.data_ref() {
                    file.write_all(chunk)
                        .await
                        .with_context(|| format!("writing {}", partial.display()))?;
                    written += chunk.len() as u64;
                }
            }
            file.flush().await?;
            drop(file);
            tokio::fs::rename(&partial, out)
                .await
                .with_context(|| format!("moving the download to {}", out.display()))?;
            return Ok(written);
        }
        bail!("{url}: more than {MAX_REDIRECTS} redirects")
    }
}

/// The error a non-2xx answer carries (its body read, in the error format).
async fn refusal(response: Response<Incoming>) -> anyhow::Error {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    api_error(status, &value)
}

/// `404 not_found: job … not found`, from an answer in the error format.
fn api_error(status: StatusCode, body: &Value) -> anyhow::Error {
    let code = body["error"]["code"].as_str().unwrap_or("error");
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    anyhow!("{} {code}: {message}", status.as_u16())
}

impl EventStream {
    /// The next event, or `None` once the server ends the stream. Comments
    /// (keep-alives) are skipped.
    pub async fn next(&mut self) -> anyhow::Result<Option<ServerEvent>> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    let frame = frame.context("reading the event stream")?;
                    if let Some(chunk) = frame.data_ref() {
                        self.buffer.push_str(&String::from_utf8_lossy(chunk));
                    }
                }
            }
        }
    }

    /// Parses one complete event off the buffer, if there is one.
    fn take_event(&mut self) -> Option<ServerEvent> {
        loop {
            let normalized = self.buffer.replace("\r\n", "\n");
            let end = normalized.find("\n\n")?;
            let block = normalized[..end].to_string();
            self.buffer = normalized[end + 2..].to_string();
            if let Some(event) = parse_event(&block) {
                return Some(event);
            }
        }
    }
}

/// One event block (`event:`, `data:` lines; comments and `id:` ignored);
/// `None` for a block of comments only.
fn parse_event(block: &str) -> Option<ServerEvent> {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(ServerEvent {
        event: event.unwrap_or_else(|| "message".to_string()),
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_blocks_are_parsed() {
        assert_eq!(
            parse_event("event: state\ndata: {\"status\":\"running\"}"),
            Some(ServerEvent {
                event: "state".into(),
                data: "{\"status\":\"running\"}".into()
            })
        );
        assert_eq!(
            parse_event("id: 7\nevent: progress\ndata: a\ndata: b"),
            Some(ServerEvent {
                event: "progress".into(),
                data: "a\nb".into()
            })
        );
        assert_eq!(parse_event(": keep-alive"), None);
        assert_eq!(
            parse_event("data: x").map(|e| e.event),
            Some("message".to_string())
        );
    }

    #[test]
    fn errors_say_status_code_and_message() {
        let body =
            serde_json::json!({"error": {"code": "not_found", "message": "job x not found"}});
        assert_eq!(
            api_error(StatusCode::NOT_FOUND, &body).to_string(),
            "404 not_found: job x not found"
        );
    }
}
