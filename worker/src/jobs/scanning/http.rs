//! HTTP(S) GETs for scans: URL targets and the organization listings of git
//! hosts. Bodies are capped, at most five redirects are followed, and a URL
//! whose host resolves to a private, loopback or link-local address is
//! refused unless the deployment allows it (a tenant must not make the
//! worker read cloud metadata or internal services).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, LOCATION, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const MAX_REDIRECTS: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct HttpFetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
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

impl HttpFetcher {
    /// `allow_private`: private and loopback addresses may be fetched
    /// (tests, single-host deployments).
    pub fn new(allow_private: bool) -> std::io::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .build();
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
        let first_host = current.host().map(str::to_string);
        for _ in 0..=MAX_REDIRECTS {
            self.check_host(&current).await?;
            let mut request = Request::get(current.clone())
                .header(USER_AGENT, "longhaul-scan/1")
                .body(Empty::<Bytes>::new())
                .map_err(|e| FetchError::Refused(format!("{url}: {e}")))?;
            if let Some(token) = bearer.filter(|_| current.host() == first_host.as_deref()) {
                let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    FetchError::Refused("the configured token is not a header value".into())
                })?;
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
                .await
                .map_err(|_| FetchError::Transient(format!("{current}: no answer in {TIMEOUT:?}")))?
                .map_err(|e| FetchError::Transient(format!("{current}: {e}")))?;
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

    /// Refuses hosts that resolve to addresses tenants must not reach.
    async fn check_host(&self, uri: &Uri) -> Result<(), FetchError> {
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(FetchError::Refused(format!("{uri}: only http and https"))),
        }
        if self.allow_private {
            return Ok(());
        }
        let host = uri
            .host()
            .ok_or_else(|| FetchError::Refused(format!("{uri} has no host")))?;
        let port = uri.port_u16().unwrap_or(443);
        let addresses = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| FetchError::Transient(format!("resolving {host}: {e}")))?;
        for address in addresses {
            if !is_public(address.ip()) {
                return Err(FetchError::Refused(format!(
                    "{host} resolves to {}, a private or local address",
                    address.ip()
                )));
            }
        }
        Ok(())
    }
}

fn redirect_target(from: &Uri, location: &str) -> Result<Uri, FetchError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location
            .parse()
            .map_err(|e| FetchError::Refused(format!("redirect to {location}: {e}")));
    }
    let scheme = from.scheme_str().unwrap_or("https");
    let authority = from.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let base = from.path();
        format!("{}/{location}", &base[..base.rfind('/').unwrap_or(0)])
    };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| FetchError::Refused(format!("redirect to {location}: {e}")))
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
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(!is_public(text.parse().unwrap()), "{text}");
        }
        for text in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
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
    }
}
