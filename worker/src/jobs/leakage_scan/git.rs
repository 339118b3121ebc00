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
use crate::jobs::scanning::http::HttpFetcher;

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
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(%error, dir = %self.0.display(), "removing a scan's clone failed");
        }
    }
}

/// The findings in the whole history of the repository at `location` (a
/// local path, or a URL cloned first with `auth` as its HTTP header).
pub async fn scan_repository(
    scanner: Arc<Scanner>,
    location: &str,
    auth: Option<String>,
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
        let mut command = tokio::process::Command::new("git");
        command
            .args(["clone", "--quiet", "--mirror", "--", location])
            .arg(&dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(header) = auth {
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env("GIT_CONFIG_VALUE_0", header);
        }
        let output = command
            .output()
            .await
            .map_err(|e| JobError::retryable(format!("running git clone: {e}")))?;
        _clone = TempClone(dir.clone());
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
                "{}/groups/{}/projects?per_page={LISTING_PAGE}&page={page}&include_subgroups=true",
                host.api_url,
                organization.replace('/', "%2F")
            ),
        };
        let body = match http.get(&url, token, 8 * 1024 * 1024).await {
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
