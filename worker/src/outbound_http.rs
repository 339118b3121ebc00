//! Outbound HTTP(S) to addresses tenants name: scan GETs (URL targets, the
//! organization listings of git hosts; bodies capped, at most five redirects)
//! and webhook POSTs (no redirect followed). A host that is or resolves to a
//! private, loopback or link-local address is refused unless the deployment
//! allows it (a tenant must not make the worker reach cloud metadata or
//! internal services). The check is made by the connector's own resolver, on
//! the addresses it then connects to, so a name that changes its answer
//! between a check and the connection (DNS rebinding) gains nothing.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const MAX_REDIRECTS: usize = 5;
/// How the resolver's refusal reads (and is recognised).
const NOT_REACHABLE: &str = "does not resolve to an address scans may reach";

/// Why a name is refused, whether it does not resolve at all or resolves
/// only to private or local addresses: the same words and the same
/// (permanent) failure, so a tenant cannot learn from a scan's error which
/// internal names exist.
pub fn unreachable_name(host: &str) -> String {
    format!("{host} {NOT_REACHABLE}")
}
const TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a POST's answer is kept.
pub const ANSWER_EXCERPT: usize = 512;

/// What a POST was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostAnswer {
    pub status: StatusCode,
    /// The start of the body, lossily as UTF-8.
    pub excerpt: String,
}

/// Resolves names for the connector, keeping only the addresses scans may
/// reach.
#[derive(Clone, Copy, Debug)]
pub struct PublicResolver {
    allow_private: bool,
}

type Resolving =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addresses) => addresses.collect(),
                // Where private addresses are allowed there is nothing to
                // hide, and a failed lookup may be retried.
                Err(error) if allow_private => return Err(error),
                // Else a name that does not resolve reads as one that
                // resolves only to private addresses.
                Err(_) => Vec::new(),
            };
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|address| allow_private || is_public(address.ip()))
                .collect();
            if allowed.is_empty() {
                // The addresses are not named: they would tell a tenant
                // what internal names resolve to.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    unreachable_name(&host),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[derive(Clone)]
pub struct HttpFetcher {
    client: Client<HttpsConnector<HttpConnector<PublicResolver>>, Full<Bytes>>,
    allow_private: bool,
}

impl std::fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

/// Why a GET failed: `Refused` and 4xx statuses will not change on retry.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Refused(String),
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: larger than the {limit}-byte limit")]
    TooLarge { url: String, limit: usize },
    #[error("{0}")]
    Transient(String),
}

impl FetchError {
    pub fn is_permanent(&self) -> bool {
        match self {
            FetchError::Refused(_) | FetchError::TooLarge { .. } => true,
            FetchError::Status { status, .. } => {
                status.is_client_error() && *status != StatusCode::TOO_MANY_REQUESTS
            }
            FetchError::Transient(_) => false,
        }
    }
}

impl From<FetchError> for crate::handler::JobError {
    fn from(error: FetchError) -> Self {
        if error.is_permanent() {
            Self::permanent(error.to_string())
        } else {
            Self::retryable(error.to_string())
        }
    }
}

impl HttpFetcher {
    /// `allow_private`: private and loopback addresses may be fetched
    /// (tests, single-host deployments).
    pub fn new(allow_private: bool) -> std::io::Result<Self> {
        let mut http = HttpConnector::new_with_resolver(PublicResolver { allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(HttpFetcher {
            client,
            allow_private,
        })
    }

    /// The body of `url` (at most `limit` bytes), following redirects;
    /// `bearer` is sent as `Authorization: Bearer …` to the first host only.
    pub async fn get(
        &self,
        url: &str,
        bearer: Option<&str>,
        limit: usize,
    ) -> Result<Bytes, FetchError> {
        let mut current: Uri = url
            .parse()
            .map_err(|e| FetchError::Refused(format!("{url} is not a URL: {e}")))?;
        // The token goes only where the first request went (scheme, host
        // and port), never to where a redirect points.
        let first_origin = (
            current.scheme_str().map(str::to_string),
            current.authority().map(|a| a.as_str().to_string()),
        );
        for _ in 0..=MAX_REDIRECTS {
            self.check_host(&current).await?;
            let mut request = Request::get(current.clone())
                .header(USER_AGENT, "longhaul-scan/1")
                .body(Full::new(Bytes::new()))
                .map_err(|e| FetchError::Refused(format!("{url}: {e}")))?;
            let origin = (
                current.scheme_str().map(str::to_string),
                current.authority().map(|a| a.as_str().to_string()),
            );
            if let Some(token) = bearer.filter(|_| origin == first_origin) {
                let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    FetchError::Refused("the configured token is not a header value".into())
                })?;
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            let response = self.send(&current, request, TIMEOUT).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchError::Status {
                        url: current.to_string(),
                        status,
                    })?;
                current = redirect_target(&current, location)?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: current.to_string(),
                    status,
                });
            }
            let body = tokio::time::timeout(
                TIMEOUT * 10,
                Limited::new(response.into_body(), limit).collect(),
            )
            .await
            .map_err(|_| FetchError::Transient(format!("{current}: the body took too long")))?
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FetchError::TooLarge {
                        url: current.to_string(),
                        limit,
                    }
                } else {
                    FetchError::Transient(format!("{current}: {e}"))
                }
            })?;
            return Ok(body.to_bytes());
        }
        Err(FetchError::Refused(format!(
            "{url}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// Sends a request, waiting at most `timeout` for the answer's head.
    async fn send(
        &self,
        uri: &Uri,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<hyper::Response<hyper::body::Incoming>, FetchError> {
        tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| FetchError::Transient(format!("{uri}: no answer in {timeout:?}")))?
            .map_err(|e| {
                // The chain holds the resolver's words, not the URL the
                // tenant wrote.
                let chain = error_chain(&e);
                let message = format!("{uri}: {chain}");
                if chain.contains(NOT_REACHABLE) {
                    FetchError::Refused(message)
                } else {
                    FetchError::Transient(message)
                }
            })
    }

    /// POSTs a JSON body with extra headers; no redirect is followed (a 3xx
    /// is an answer like any other). Answers the status and the start of
    /// the answer's body (at most [`ANSWER_EXCERPT`] bytes, for logs).
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<PostAnswer, FetchError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| FetchError::Refused(format!("{url} is not a URL: {e}")))?;
        self.check_host(&uri).await?;
        let mut request = Request::post(uri.clone())
            .header(USER_AGENT, "longhaul-webhooks/1")
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| FetchError::Refused(format!("{url}: {e}")))?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| FetchError::Refused(format!("{name}: not a header value")))?;
            request.headers_mut().insert(name.clone(), value);
        }
        let started = std::time::Instant::now();
        let response = self.send(&uri, request, timeout).await?;
        let status = response.status();
        let left = timeout.saturating_sub(started.elapsed());
        // The answer's body is only read for the log: a body that is slow,
        // large or broken does not change the status that came.
        let excerpt = match tokio::time::timeout(
            left,
            Limited::new(response.into_body(), ANSWER_EXCERPT * 16).collect(),
        )
        .await
        {
            Ok(Ok(collected)) => {
                let bytes = collected.to_bytes();
                let end = bytes.len().min(ANSWER_EXCERPT);
                String::from_utf8_lossy(&bytes[..end]).into_owned()
            }
            _ => String::new(),
        };
        Ok(PostAnswer { status, excerpt })
    }

    /// Refuses other schemes, and hosts that are addresses tenants must not
    /// reach (names are checked by the resolver, which the connector skips
    /// for a literal address).
    async fn check_host(&self, uri: &Uri) -> Result<(), FetchError> {
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(FetchError::Refused(format!("{uri}: only http and https"))),
        }
        let host = uri
            .host()
            .ok_or_else(|| FetchError::Refused(format!("{uri} has no host")))?;
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            if !self.allow_private && !is_public(ip) {
                return Err(FetchError::Refused(format!(
                    "{host} is a private or local address"
                )));
            }
        }
        Ok(())
    }
}

/// An error with its sources, for messages.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where a redirect's `Location` points, resolved against the request as a
/// browser would (RFC 3986: protocol-relative, query-only, `../`); the
/// fragment is dropped and only http(s) targets are followed.
fn redirect_target(from: &Uri, location: &str) -> Result<Uri, FetchError> {
    let refused = |why: String| FetchError::Refused(format!("redirect to {location}: {why}"));
    let base = url::Url::parse(&from.to_string()).map_err(|e| refused(e.to_string()))?;
    let mut target = base.join(location).map_err(|e| refused(e.to_string()))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(refused(format!("{} is not http(s)", target.scheme())));
    }
    target.set_fragment(None);
    target
        .as_str()
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| refused(e.to_string()))
}

/// Not loopback, private, link-local (cloud metadata), shared (CGNAT),
/// unspecified, multicast or documentation space.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240
                || a == 0)
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let embedded = |high: u16, low: u16| {
                std::net::Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
            };
            // IPv4 inside IPv6: mapped, compatible (::a.b.c.d), NAT64
            // (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address.
            if let Some(v4) = v6.to_ipv4() {
                if !v6.is_loopback() && !v6.is_unspecified() {
                    return is_public(IpAddr::V4(v4));
                }
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(embedded(segments[6], segments[7])));
            }
            if segments[0] == 0x2002 {
                return is_public(IpAddr::V4(embedded(segments[1], segments[2])));
            }
            let first = segments[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                // Site-local (deprecated), Teredo, local-use NAT64.
                || (first & 0xffc0) == 0xfec0
                || (first == 0x2001 && segments[1] == 0)
                || (first == 0x64 && segments[1] == 0xff9b && segments[2] == 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_name_and_a_private_one_fail_alike() {
        let fetcher = HttpFetcher::new(false).expect("fetcher");
        let mut errors = Vec::new();
        for host in ["localhost", "no-such-host.invalid"] {
            let error = fetcher
                .get(&format!("http://{host}:9/x"), None, 1024)
                .await
                .expect_err(host);
            assert!(error.is_permanent(), "{host}: {error}");
            errors.push(error.to_string().replace(host, "HOST"));
        }
        assert_eq!(errors[0], errors[1]);
        assert!(errors[0].contains(NOT_REACHABLE), "{}", errors[0]);
    }

    #[test]
    fn private_and_metadata_addresses_are_not_public() {
        for text in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "fec0::1",
            "2001:0:4136:e378::1",
            "64:ff9b:1::a00:1",
        ] {
            assert!(!is_public(text.parse().unwrap()), "{text}");
        }
        for text in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(text.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn relative_redirects_resolve_against_the_request() {
        let from: Uri = "https://example.com/a/b?x=1".parse().unwrap();
        assert_eq!(
            redirect_target(&from, "/c").unwrap().to_string(),
            "https://example.com/c"
        );
        assert_eq!(
            redirect_target(&from, "d").unwrap().to_string(),
            "https://example.com/a/d"
        );
        assert_eq!(
            redirect_target(&from, "http://other.test/e")
                .unwrap()
                .to_string(),
            "http://other.test/e"
        );
        for (location, expected) in [
            ("//other.test/f", "https://other.test/f"),
            ("?y=2", "https://example.com/a/b?y=2"),
            ("../g", "https://example.com/g"),
            ("h#part", "https://example.com/a/h"),
            ("HTTPS://Other.Test/i", "https://other.test/i"),
        ] {
            assert_eq!(
                redirect_target(&from, location).unwrap().to_string(),
                expected,
                "{location}"
            );
        }
        for refused in ["ftp://other.test/x", "javascript:alert(1)", "http://"] {
            assert!(
                matches!(redirect_target(&from, refused), Err(FetchError::Refused(_))),
                "{refused}"
            );
        }
    }
}
