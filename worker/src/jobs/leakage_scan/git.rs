//! Git sources of leakage scans: cloning (a bare mirror, every branch and
//! tag, into a temp folder removed afterwards), hosted repositories mapped to
//! clone URLs under the configured GitHub/GitLab base, organizations listed
//! through their API, and the history scan itself (`longhaul_scan::git`).
//! Tokens reach git through its environment, never its arguments or a URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use longhaul_core::config::{GitHost, ScanConfig};
use longhaul_core::scans::leakage::Provider;
use longhaul_scan::{Finding, Scanner};
use serde::Deserialize;

use crate::handler::JobError;
use crate::jobs::scanning::blocking;
use crate::outbound_http::{is_public, unreachable_name, FetchError, HttpFetcher};

/// Most repositories one organization expands to.
pub const MAX_ORGANIZATION_REPOSITORIES: usize = 1000;
const LISTING_PAGE: usize = 100;

pub fn host(config: &ScanConfig, provider: Provider) -> &GitHost {
    match provider {
        Provider::Github => &config.github,
        Provider::Gitlab => &config.gitlab,
    }
}

/// `owner/name` → `<base>/owner/name.git`.
pub fn clone_url(host: &GitHost, repository: &str) -> String {
    format!("{}/{repository}.git", host.base_url)
}

/// A clone removed when dropped.
struct TempClone(PathBuf);

impl Drop for TempClone {
    fn drop(&mut self) {
        if !self.0.exists() {
            return;
        }
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(%error, dir = %self.0.display(), "removing a scan's clone failed");
        }
    }
}

/// How a repository is cloned.
#[derive(Debug, Default)]
pub struct CloneOptions {
    /// The HTTP header with the host's token.
    pub auth: Option<String>,
    /// A URL a tenant named: http(s) only, no redirects, and its host's
    /// address checked (public unless allowed) and pinned, so git connects
    /// to the address that was checked.
    pub untrusted: bool,
    pub allow_private: bool,
}

/// The longest a clone may take.
const CLONE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// `git clone --mirror` of `location` into `dir`. A tenant's URL
/// (`untrusted`) is cloned over http(s) only, without redirects or proxies,
/// with transfers that stall aborted, and connecting to `pin` (see
/// [`pinned_address`]); a token travels in git's environment.
pub fn clone_command(
    location: &str,
    dir: &Path,
    untrusted: bool,
    pin: Option<&str>,
    auth: Option<&str>,
) -> std::process::Command {
    let mut command = std::process::Command::new("git");
    command.args([
        "-c",
        "http.lowSpeedLimit=1000",
        "-c",
        "http.lowSpeedTime=120",
    ]);
    if untrusted {
        command
            .args(["-c", "http.followRedirects=false", "-c", "http.proxy="])
            .env("GIT_ALLOW_PROTOCOL", "http:https");
        for variable in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            command.env_remove(variable);
        }
        if let Some(pin) = pin {
            command.args(["-c", pin]);
        }
    }
    command
        .args(["clone", "--quiet", "--mirror", "--", location])
        .arg(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(header) = auth {
        command
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", header);
    }
    command
}

/// `http.curloptResolve=host:port:address`, pinning a tenant's URL to a
/// checked address; None for a literal address (checked here, and nothing
/// to resolve).
async fn pinned_address(url: &str, allow_private: bool) -> Result<Option<String>, JobError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| JobError::permanent(format!("{url} is not a URL: {e}")))?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let host = uri
        .host()
        .ok_or_else(|| JobError::permanent(format!("{url} has no host")))?
        .trim_matches(['[', ']'])
        .to_string();
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        if !allow_private && !is_public(ip) {
            return Err(JobError::permanent(format!(
                "{host} is a private or local address"
            )));
        }
        return Ok(None);
    }
    let addresses: Vec<std::net::SocketAddr> =
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(addresses) => addresses.collect(),
            Err(e) if allow_private => {
                return Err(JobError::retryable(format!("resolving {host}: {e}")))
            }
            // A name that does not resolve reads as one that resolves only to
            // private addresses: a tenant learns nothing of internal names.
            Err(_) => Vec::new(),
        };
    let address = addresses
        .iter()
        .find(|a| allow_private || is_public(a.ip()))
        .ok_or_else(|| JobError::permanent(unreachable_name(&host)))?;
    let ip = match address.ip() {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    Ok(Some(format!("http.curloptResolve={host}:{port}:{ip}")))
}

/// The findings in the whole history of the repository at `location` (a
/// local path, or a URL cloned first).
pub async fn scan_repository(
    scanner: Arc<Scanner>,
    location: &str,
    options: CloneOptions,
) -> Result<Vec<Finding>, JobError> {
    let _clone;
    let path = if Path::new(location).is_absolute() && !location.contains("://") {
        if !Path::new(location).exists() {
            return Err(JobError::permanent(format!(
                "{location}: no such repository"
            )));
        }
        PathBuf::from(location)
    } else {
        let dir = std::env::temp_dir().join(format!(
            "longhaul-leakage-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        // Removed however this ends, a cancel mid-clone included.
        _clone = TempClone(dir.clone());
        let pin = if options.untrusted {
            pinned_address(location, options.allow_private).await?
        } else {
            None
        };
        let mut command = tokio::process::Command::from(clone_command(
            location,
            &dir,
            options.untrusted,
            pin.as_deref(),
            options.auth.as_deref(),
        ));
        command.kill_on_drop(true);
        let output = tokio::time::timeout(CLONE_TIMEOUT, command.output())
            .await
            .map_err(|_| {
                JobError::retryable(format!("git clone {location}: over {CLONE_TIMEOUT:?}"))
            })?
            .map_err(|e| JobError::retryable(format!("running git clone: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = format!("git clone {location} failed: {}", stderr.trim());
            // A repository that does not exist (or is not readable) stays so.
            return Err(
                if stderr.contains("not found")
                    || stderr.contains("does not exist")
                    || stderr.contains("Authentication failed")
                {
                    JobError::permanent(message)
                } else {
                    JobError::retryable(message)
                },
            );
        }
        dir
    };
    let target = path.display().to_string();
    blocking(move || longhaul_scan::git::scan_history(&scanner, &target))
        .await?
        .map_err(|e| JobError::retryable(format!("scanning the history of {location}: {e}")))
}

/// The HTTP header git sends to a host with a token.
pub fn auth_header(host: &GitHost, provider: Provider) -> Option<String> {
    let token = host.token.as_ref()?;
    let user = match provider {
        Provider::Github => "x-access-token",
        Provider::Gitlab => "oauth2",
    };
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", token.0));
    Some(format!("Authorization: Basic {credentials}"))
}

#[derive(Deserialize)]
struct GithubRepository {
    full_name: String,
}

#[derive(Deserialize)]
struct GitlabProject {
    path_with_namespace: String,
}

/// The repositories of an organization (GitHub; a user's when no such
/// organization) or group (GitLab, subgroups included), sorted.
pub async fn organization_repositories(
    http: &HttpFetcher,
    host: &GitHost,
    provider: Provider,
    organization: &str,
) -> Result<Vec<String>, JobError> {
    let token = host.token.as_ref().map(|t| t.0.as_str());
    let mut repositories = Vec::new();
    for page in 1.. {
        let url = match provider {
            Provider::Github => format!(
                "{}/orgs/{organization}/repos?per_page={LISTING_PAGE}&page={page}",
                host.api_url
            ),
            Provider::Gitlab => format!(
                "{}/groups/{}/projects?per_page={LISTING_PAGE}&page={page}&include_subgroups=true&with_shared=false",
                host.api_url,
                organization.replace('/', "%2F")
            ),
        };
        let mut answer = http.get(&url, token, 8 * 1024 * 1024).await;
        // GitHub: a user's repositories when no organization has the name.
        if provider == Provider::Github
            && matches!(&answer, Err(FetchError::Status { status, .. }) if status.as_u16() == 404)
        {
            let user_url = format!(
                "{}/users/{organization}/repos?per_page={LISTING_PAGE}&page={page}",
                host.api_url
            );
            answer = http.get(&user_url, token, 8 * 1024 * 1024).await;
        }
        let body = match answer {
            Ok(body) => body,
            Err(error) if error.is_permanent() => {
                return Err(JobError::permanent(format!(
                    "listing the repositories of {organization}: {error}"
                )))
            }
            Err(error) => {
                return Err(JobError::retryable(format!(
                    "listing the repositories of {organization}: {error}"
                )))
            }
        };
        let names: Vec<String> = match provider {
            Provider::Github => serde_json::from_slice::<Vec<GithubRepository>>(&body)
                .map(|list| list.into_iter().map(|r| r.full_name).collect()),
            Provider::Gitlab => serde_json::from_slice::<Vec<GitlabProject>>(&body)
                .map(|list| list.into_iter().map(|p| p.path_with_namespace).collect()),
        }
        .map_err(|e| JobError::retryable(format!("the repository list of {organization}: {e}")))?;
        let last = names.len() < LISTING_PAGE;
        repositories.extend(names);
        if last || repositories.len() >= MAX_ORGANIZATION_REPOSITORIES {
            break;
        }
    }
    repositories.truncate(MAX_ORGANIZATION_REPOSITORIES);
    repositories.sort();
    repositories.dedup();
    Ok(repositories)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &std::process::Command) -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_tenants_url_is_cloned_pinned_without_redirects_or_proxies() {
        let dir = Path::new("/tmp/clone");
        let pin = "http.curloptResolve=example.com:443:93.184.216.34";
        let command = clone_command("https://example.com/r.git", dir, true, Some(pin), None);
        let args = args(&command);
        let clone_at = args.iter().position(|a| a == "clone").unwrap();
        // Options before the subcommand, the URL after `--`.
        for option in [pin, "http.followRedirects=false", "http.proxy="] {
            let at = args.iter().position(|a| a == option).unwrap();
            assert!(at < clone_at && args[at - 1] == "-c", "{args:?}");
        }
        assert_eq!(args[args.len() - 3], "--");
        assert_eq!(args[args.len() - 2], "https://example.com/r.git");
        let envs: Vec<_> = command.get_envs().collect();
        assert!(envs.contains(&(
            std::ffi::OsStr::new("GIT_ALLOW_PROTOCOL"),
            Some(std::ffi::OsStr::new("http:https"))
        )));
        assert!(envs.contains(&(std::ffi::OsStr::new("https_proxy"), None)));
    }

    #[test]
    fn an_operators_host_keeps_its_protocols_and_gets_the_token_by_environment() {
        let command = clone_command(
            "file:///srv/mirror/acme/api.git",
            Path::new("/tmp/clone"),
            false,
            None,
            Some("Authorization: Basic abc"),
        );
        let args = args(&command);
        assert!(
            !args.iter().any(|a| a.contains("followRedirects")),
            "{args:?}"
        );
        assert!(
            !args.iter().any(|a| a.contains("Authorization")),
            "{args:?}"
        );
        assert!(command.get_envs().any(|(k, v)| k == "GIT_CONFIG_VALUE_0"
            && v == Some(std::ffi::OsStr::new("Authorization: Basic abc"))));
    }

    #[tokio::test]
    async fn private_literals_and_names_are_refused_before_cloning() {
        for url in ["http://127.0.0.1/r.git", "http://[::1]/r.git"] {
            let refused = pinned_address(url, false).await;
            assert!(
                matches!(&refused, Err(JobError::Permanent(m)) if m.contains("private or local")),
                "{url}: {refused:?}"
            );
        }
        // A name resolving to loopback and one resolving to nothing are
        // refused alike, word for word.
        let private = pinned_address("http://localhost/r.git", false).await;
        let missing = pinned_address("http://no-such-host.invalid/r.git", false).await;
        match (&private, &missing) {
            (Err(JobError::Permanent(a)), Err(JobError::Permanent(b))) => assert_eq!(
                a.replace("localhost", "HOST"),
                b.replace("no-such-host.invalid", "HOST")
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            pinned_address("http://127.0.0.1/r.git", true).await,
            Ok(None)
        );
        let pinned = pinned_address("http://localhost:8080/r.git", true)
            .await
            .unwrap()
            .unwrap();
        assert!(
            pinned.starts_with("http.curloptResolve=localhost:8080:"),
            "{pinned}"
        );
    }
}
