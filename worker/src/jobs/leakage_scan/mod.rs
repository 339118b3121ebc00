//! `leakage.scan`: finds secrets in a scan's sources (git histories, hosted
//! repositories and organizations, URLs, inline text, data-bucket objects)
//! with the built-in ruleset and the scan's policies, and stores the
//! findings (redacted) and their incidents.
//!
//! Sources are read in order. Organizations are expanded to repositories
//! once, and the list is kept in the checkpoint, so every attempt reads the
//! same sources. The checkpoint says which sources are done and, within a
//! bucket, the last object done (objects are read in key order, several at a
//! time, their results taken in order); a retried attempt resumes there, and
//! findings it writes again are skipped by the store. Progress is in bytes
//! read. Gzip objects are scanned as the text they inflate to. Inline texts (kept as objects while the scan needs them) are
//! deleted when it ends, whatever the end.

mod git;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use longhaul_core::artifacts::{ObjectStore, StorageError};
use longhaul_core::failure::FailureCode;
use longhaul_core::scans::leakage::{
    self, LeakageCheckpoint, LeakageScanOutput, LeakageScanParams, NewFinding, Source, SourceRules,
};
use longhaul_core::scans::policies::compile_leakage;
use longhaul_core::tenancy::Tenant;
use longhaul_core::Progress;
use longhaul_scan::custom::Allowlist;
use longhaul_scan::engine::{is_gzip, Content};
use longhaul_scan::{Finding, Scanner};
use tokio::sync::OnceCell;

use crate::context::JobContext;
use crate::handler::{JobError, KindHandler};
use crate::jobs::scanning::{
    blocking, data_bucket, objects_after, ordered, scan_threads, BlockingReader, Work,
    OBJECTS_IN_FLIGHT,
};
use crate::outbound_http::HttpFetcher;
use crate::services::JobServices;

/// Largest body of a URL target.
pub const MAX_URL_BYTES: usize = 256 * 1024 * 1024;
/// Objects up to this size are read whole and scanned on all cores; larger
/// ones are streamed (memory stays at one chunk per object in flight).
const IN_MEMORY_BYTES: u64 = 32 * 1024 * 1024;
/// Most sources a scan may have once organizations are expanded.
pub const MAX_EXPANDED_SOURCES: usize = 1000;
/// Findings written per transaction.
const FINDINGS_BATCH: usize = 500;
/// How often (at most) a bucket's position is saved.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

pub struct LeakageScan {
    services: JobServices,
    /// For tenants' URLs: private addresses refused unless allowed.
    http: OnceCell<HttpFetcher>,
    /// For the git hosts' APIs the operator configured (which may well be
    /// internal servers).
    operator_http: OnceCell<HttpFetcher>,
}

/// What one attempt holds while it scans.
struct Run<'a> {
    ctx: &'a JobContext,
    tenant: Tenant,
    scanner: Arc<Scanner>,
    include: Option<Arc<Allowlist>>,
    state: LeakageCheckpoint,
    last_saved: Instant,
}

impl LeakageScan {
    pub fn new(services: JobServices) -> Self {
        Self {
            services,
            http: OnceCell::new(),
            operator_http: OnceCell::new(),
        }
    }

    async fn http(&self) -> Result<&HttpFetcher, JobError> {
        fetcher(&self.http, self.services.scans.allow_private_urls).await
    }

    async fn operator_http(&self) -> Result<&HttpFetcher, JobError> {
        fetcher(&self.operator_http, true).await
    }

    /// The sources with organizations replaced by their repositories.
    async fn expand(&self, tenant: &Tenant, sources: &[Source]) -> Result<Vec<Source>, JobError> {
        let rules = SourceRules::of(&tenant.settings, &self.services.scans);
        let mut out = Vec::with_capacity(sources.len());
        for source in sources {
            match source {
                Source::Organization {
                    provider,
                    organization,
                } => {
                    rules
                        .check_owner("organization", *provider, organization)
                        .map_err(|e| JobError::permanent(e.to_string()))?;
                    let host = git::host(&self.services.scans, *provider);
                    let repositories = git::organization_repositories(
                        self.operator_http().await?,
                        host,
                        *provider,
                        organization,
                    )
                    .await?;
                    tracing::info!(%organization, repositories = repositories.len(), "expanded an organization");
                    out.extend(
                        repositories
                            .into_iter()
                            .map(|repository| Source::Repository {
                                provider: *provider,
                                repository,
                            }),
                    );
                }
                other => out.push(other.clone()),
            }
            if out.len() > MAX_EXPANDED_SOURCES {
                return Err(JobError::permanent(format!(
                    "the organizations hold more than {MAX_EXPANDED_SOURCES} repositories: \
                     name fewer organizations, or repositories"
                )));
            }
        }
        Ok(out)
    }

    async fn scan_source(&self, run: &mut Run<'_>, source: &Source) -> Result<(), JobError> {
        match source {
            Source::Git { location } => {
                if !location.contains("://") {
                    self.check_local(location)?;
                }
                let options = git::CloneOptions {
                    untrusted: true,
                    allow_private: self.services.scans.allow_private_urls,
                    ..Default::default()
                };
                let findings = git::scan_repository(run.scanner.clone(), location, options).await?;
                run.record(&self.services, source, findings).await?;
            }
            Source::Repository {
                provider,
                repository,
            } => {
                let host = git::host(&self.services.scans, *provider);
                let url = git::clone_url(host, repository);
                // The tenant's owners are read again: an operator may have
                // narrowed them since the scan was created.
                SourceRules::of(&run.tenant.settings, &self.services.scans)
                    .check_owner("repository", *provider, repository)
                    .map_err(|e| JobError::permanent(e.to_string()))?;
                let options = git::CloneOptions {
                    auth: git::auth_header(host, *provider),
                    ..Default::default()
                };
                let findings = git::scan_repository(run.scanner.clone(), &url, options).await?;
                run.record(&self.services, source, findings).await?;
            }
            Source::Organization { .. } => {
                return Err(JobError::permanent(
                    "an organization was not expanded before scanning",
                ))
            }
            Source::Url { url } => {
                let body = self.http().await?.get(url, None, MAX_URL_BYTES).await?;
                let size = body.len() as u64;
                let findings = scan_bytes(run.scanner.clone(), url.clone(), body).await?;
                run.state.bytes_done += size;
                run.state.objects_done += 1;
                run.record(&self.services, source, findings).await?;
            }
            Source::Inline {
                name, object_key, ..
            } => {
                let store = self.inline_store(&run.tenant)?;
                let body = store.get(object_key).await.map_err(|error| match error {
                    StorageError::NotFound(_) => JobError::permanent(format!(
                        "the inline text {name:?} is gone (deleted after a week, or by an \
                         earlier end of this scan)"
                    )),
                    other => JobError::from(other),
                })?;
                let size = body.len() as u64;
                let findings = scan_bytes(run.scanner.clone(), name.clone(), body).await?;
                run.state.bytes_done += size;
                run.state.objects_done += 1;
                run.record(&self.services, source, findings).await?;
            }
            Source::Bucket { bucket, prefix } => {
                let store = data_bucket(&self.services, &run.tenant, bucket).await?;
                let objects =
                    objects_after(store.as_ref(), prefix, run.state.after_key.as_deref()).await?;
                let work: Vec<Work<(String, u64, Vec<Finding>)>> = objects
                    .into_iter()
                    .filter(|object| {
                        run.include
                            .as_ref()
                            .is_none_or(|include| include.allows_path(&object.key))
                    })
                    .map(|object| {
                        let (store, scanner) = (store.clone(), run.scanner.clone());
                        Box::pin(async move {
                            let findings = if object.size <= IN_MEMORY_BYTES {
                                let body = store.get(&object.key).await.map_err(JobError::from)?;
                                if is_gzip(&body) {
                                    scan_stream(
                                        scanner,
                                        object.key.clone(),
                                        std::io::Cursor::new(body),
                                    )
                                    .await?
                                } else {
                                    scan_bytes(scanner, object.key.clone(), body).await?
                                }
                            } else {
                                // Streamed through one chunk at a time.
                                let reader =
                                    store.read(&object.key).await.map_err(JobError::from)?;
                                let body = BlockingReader::new(reader.body);
                                scan_stream(scanner, object.key.clone(), body).await?
                            };
                            Ok((object.key, object.size, findings))
                        }) as Work<_>
                    })
                    .collect();
                let mut results = ordered(work, OBJECTS_IN_FLIGHT);
                loop {
                    let next = tokio::select! {
                        biased;
                        _ = run.ctx.cancelled() => return Err(JobError::Cancelled),
                        next = results.next() => next,
                    };
                    let Some(result) = next else { break };
                    let (key, size, findings) = result?;
                    run.record(&self.services, source, findings).await?;
                    run.state.bytes_done += size;
                    run.state.objects_done += 1;
                    run.state.after_key = Some(key);
                    run.report(false).await?;
                }
            }
        }
        Ok(())
    }

    fn check_local(&self, path: &str) -> Result<(), JobError> {
        let allowed = self
            .services
            .scans
            .local_root
            .as_ref()
            .is_some_and(|root| std::path::Path::new(path).starts_with(root));
        if allowed {
            Ok(())
        } else {
            Err(JobError::permanent(format!(
                "{path} is not under this worker's LONGHAUL_SCAN_LOCAL_ROOT"
            )))
        }
    }

    fn inline_store(&self, tenant: &Tenant) -> Result<Arc<dyn ObjectStore>, JobError> {
        self.services
            .artifacts
            .store(&tenant.region)
            .map_err(JobError::from)
    }

    /// Deletes the scan's inline texts (best effort: the texts are the
    /// tenant's, and a failure is logged).
    async fn delete_inline(&self, tenant: &Tenant, sources: &[Source]) {
        let Ok(store) = self.inline_store(tenant) else {
            return;
        };
        for source in sources {
            if let Source::Inline { object_key, .. } = source {
                if let Err(error) = store.delete(object_key).await {
                    tracing::warn!(%error, key = %object_key, "deleting a scan's inline text failed");
                }
            }
        }
    }
}

impl Run<'_> {
    /// Stores findings (of files in the scope's paths; the engine already
    /// dropped allowlisted ones) in batches.
    async fn record(
        &mut self,
        services: &JobServices,
        source: &Source,
        findings: Vec<Finding>,
    ) -> Result<(), JobError> {
        // The scope's path globs are about files and objects: a URL or an
        // inline text is scanned whatever its name.
        let by_path = matches!(
            source,
            Source::Git { .. } | Source::Repository { .. } | Source::Bucket { .. }
        );
        let label = source.label();
        let findings: Vec<NewFinding> = findings
            .into_iter()
            .filter(|f| {
                !by_path
                    || self
                        .include
                        .as_ref()
                        .is_none_or(|include| include.allows_path(&f.file))
            })
            .map(|f| NewFinding {
                fingerprint: f.fingerprint,
                rule: f.rule,
                severity: f.severity,
                source: label.clone(),
                commit: f.commit,
                path: f.file,
                line: f.line as u64,
                column: f.column as u64,
                redacted: f.redacted,
            })
            .collect();
        for batch in findings.chunks(FINDINGS_BATCH) {
            services
                .stores
                .record_findings(self.ctx.lease(), batch, chrono::Utc::now())
                .await?;
        }
        Ok(())
    }

    /// Progress, and the checkpoint when due (or `force`).
    async fn report(&mut self, force: bool) -> Result<(), JobError> {
        if force || self.last_saved.elapsed() >= CHECKPOINT_EVERY {
            self.ctx
                .save_checkpoint::<leakage::LeakageScan>(&self.state)
                .await?;
            self.last_saved = Instant::now();
        }
        self.ctx
            .progress(Progress {
                current: self.state.bytes_done,
                total: None,
                unit: Some("bytes".into()),
                message: Some(format!(
                    "source {} of {}, {} objects",
                    (self.state.next + 1).min(self.state.sources.len()),
                    self.state.sources.len(),
                    self.state.objects_done
                )),
            })
            .await
    }
}

async fn fetcher(
    cell: &OnceCell<HttpFetcher>,
    allow_private: bool,
) -> Result<&HttpFetcher, JobError> {
    cell.get_or_try_init(|| async move {
        HttpFetcher::new(allow_private)
            .map_err(|e| JobError::retryable(format!("loading the TLS root certificates: {e}")))
    })
    .await
}

/// Scans one object's bytes on the worker's cores.
async fn scan_bytes(
    scanner: Arc<Scanner>,
    name: String,
    body: Bytes,
) -> Result<Vec<Finding>, JobError> {
    blocking(move || scanner.scan_bytes(&name, &body, scan_threads())).await
}

/// Scans one object as a stream on a blocking thread: gzip objects as the
/// text they inflate to (one chunk in memory whatever the size); a corrupt
/// gzip object is skipped (and logged), as classification skips it.
async fn scan_stream(
    scanner: Arc<Scanner>,
    name: String,
    body: impl std::io::Read + Send + 'static,
) -> Result<Vec<Finding>, JobError> {
    let key = name.clone();
    let content = blocking(move || scanner.scan_content(&name, body, false))
        .await?
        .map_err(|e| {
            // The body broke off midway: the store, not the scan.
            JobError::platform(
                FailureCode::StorageUnavailable,
                format!("reading {key}: {e}"),
            )
        })?;
    Ok(match content {
        Content::Findings(findings) => findings,
        Content::Skipped(reason) => {
            tracing::warn!(object = %key, ?reason, "skipped an object of a leakage scan");
            Vec::new()
        }
    })
}

#[async_trait]
impl KindHandler for LeakageScan {
    type Kind = leakage::LeakageScan;

    async fn run(
        &self,
        ctx: JobContext,
        params: LeakageScanParams,
    ) -> Result<LeakageScanOutput, JobError> {
        let tenant = self.services.stores.get_tenant(ctx.tenant_id()).await?;
        let result = self.scan(&ctx, &params, tenant.clone()).await;
        // Ends for good: delete the inline texts now. Otherwise (a retry, a
        // shutdown, a lost lease) the next attempt needs them; if none
        // comes, the artifact sweeper removes them (they are the job's
        // inputs, kept at most a week).
        let finished = match &result {
            Ok(_) => true,
            Err(JobError::Cancelled) => ctx.cancel_requested(),
            Err(error) => error.is_permanent(),
        };
        if finished {
            self.delete_inline(&tenant, &params.sources).await;
        }
        result
    }
}

impl LeakageScan {
    async fn scan(
        &self,
        ctx: &JobContext,
        params: &LeakageScanParams,
        tenant: Tenant,
    ) -> Result<LeakageScanOutput, JobError> {
        let (custom, allowlist) = compile_leakage(&params.policies)
            .map_err(|e| JobError::permanent(format!("the scan's policies: {e}")))?;
        let builtin = if params.builtin_rules {
            longhaul_scan::rules::builtin()
        } else {
            Vec::new()
        };
        let rule_count = builtin.len() + custom.len();
        let mut scanner = Scanner::with_rules(builtin, custom, allowlist);
        if let Some(key) = self.services.artifacts.fingerprint_key(&tenant.id) {
            scanner = scanner.with_fingerprint_key(key);
        }
        let scanner = Arc::new(scanner);
        let include = params
            .include_filter()
            .map_err(JobError::permanent)?
            .map(Arc::new);
        let run_tenant = tenant.clone();
        let resumed = ctx.checkpoint::<leakage::LeakageScan>()?;
        let resumed_at = resumed.as_ref().map(|s| (s.next, s.objects_done));
        let state = match resumed {
            Some(state) => state,
            None => {
                let sources = self.expand(&run_tenant, &params.sources).await?;
                let state = LeakageCheckpoint {
                    sources,
                    next: 0,
                    after_key: None,
                    bytes_done: 0,
                    objects_done: 0,
                };
                ctx.save_checkpoint::<leakage::LeakageScan>(&state).await?;
                state
            }
        };
        tracing::info!(
            sources = state.sources.len(),
            rules = rule_count,
            ?resumed_at,
            "scanning for leaked secrets"
        );
        let mut run = Run {
            ctx,
            tenant,
            scanner,
            include,
            state,
            last_saved: Instant::now(),
        };
        while run.state.next < run.state.sources.len() {
            let source = run.state.sources[run.state.next].clone();
            tokio::select! {
                biased;
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
                done = self.scan_source(&mut run, &source) => done?,
            }
            run.state.next += 1;
            run.state.after_key = None;
            run.report(true).await?;
        }
        let findings = self
            .services
            .stores
            .count_findings(ctx.tenant_id(), ctx.job_id())
            .await?;
        Ok(LeakageScanOutput {
            findings,
            sources: run.state.sources.len() as u64,
            objects: run.state.objects_done,
            bytes: run.state.bytes_done,
            rules: rule_count as u64,
            resumed_from_source: resumed_at.map(|(next, _)| next as u64),
        })
    }
}
