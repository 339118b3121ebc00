//! The handler contract: what a job kind implements, how it reports failure
//! (its own errors, or failures of the platform under it, told apart as
//! transient or not), and the registry that maps kind names to handlers for
//! one worker.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use longhaul_core::failure::{FailureCode, PublicError};
use longhaul_core::{Catalogue, JobKind, KindSpec};

use crate::context::JobContext;
use crate::JobServices;

/// A small JSON summary stored on the job row when it succeeds (artifacts go
/// to object storage, never here).
pub type JobOutput = serde_json::Value;

/// How a handler run failed. Tenants see a kind's own errors
/// ([`JobError::Retryable`], [`JobError::Permanent`]) as written, and a
/// platform failure only as its code's fixed message; the raw text of every
/// error goes to the attempt history for operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The kind's own error, worth another attempt (back-off, then retry
    /// while attempts remain).
    #[error("{0}")]
    Retryable(String),
    /// The kind's own error that retrying cannot help (bad params, a missing
    /// resource): fail for good.
    #[error("{0}")]
    Permanent(String),
    /// The platform under the job failed: the object store, the database,
    /// the worker itself. Transient codes ([`FailureCode::is_transient`])
    /// are retried after a back-off of minutes.
    #[error("{}: {}", .0.code, .0.detail)]
    Platform(PlatformFailure),
    /// The handler stopped because its cancellation token fired.
    #[error("cancelled")]
    Cancelled,
}

/// A failure of the platform under a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFailure {
    pub code: FailureCode,
    /// The raw error (bucket names, hosts, SDK context): for operators only.
    pub detail: String,
    /// Retrying cannot help (a malformed key, no store for the region).
    pub permanent: bool,
}

impl JobError {
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError::Retryable(message.into())
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        JobError::Permanent(message.into())
    }

    /// A platform failure worth retrying (after the transient back-off if
    /// the code is transient).
    pub fn platform(code: FailureCode, detail: impl Into<String>) -> Self {
        JobError::Platform(PlatformFailure {
            code,
            detail: detail.into(),
            permanent: false,
        })
    }

    /// Fails the job for good whatever attempts remain.
    pub fn is_permanent(&self) -> bool {
        match self {
            JobError::Permanent(_) => true,
            JobError::Platform(failure) => failure.permanent,
            JobError::Retryable(_) | JobError::Cancelled => false,
        }
    }

    /// The platform was briefly unavailable: retry after minutes, not seconds.
    pub fn is_transient(&self) -> bool {
        matches!(self, JobError::Platform(failure) if failure.code.is_transient())
    }

    /// What tenants see of the error.
    pub fn public(&self) -> PublicError {
        match self {
            JobError::Retryable(message) | JobError::Permanent(message) => {
                PublicError::job_failed(message)
            }
            JobError::Platform(failure) => failure.code.public(),
            JobError::Cancelled => PublicError::job_failed("cancelled"),
        }
    }
}

impl From<longhaul_core::Error> for JobError {
    /// A lost lease stops the handler; database failures are platform
    /// failures (transient when the database was only unreachable or busy);
    /// the rest (conflicts, validation) are the kind's own errors.
    fn from(error: longhaul_core::Error) -> Self {
        use longhaul_core::Error;
        match error {
            Error::LeaseLost { .. } => JobError::Cancelled,
            Error::Database { .. }
            | Error::Migration(_)
            | Error::Corrupt { .. }
            | Error::Config(_) => {
                let code = if error.is_transient() {
                    FailureCode::DatabaseUnavailable
                } else {
                    FailureCode::InternalError
                };
                JobError::platform(code, error.to_string())
            }
            other => JobError::Retryable(other.to_string()),
        }
    }
}

impl From<longhaul_core::artifacts::StorageError> for JobError {
    /// Always a platform failure (its text names buckets and keys): a store
    /// that is unavailable is transient; a bad key or an unconfigured region
    /// stays so (permanent); the rest may pass on a later attempt.
    fn from(error: longhaul_core::artifacts::StorageError) -> Self {
        use longhaul_core::artifacts::StorageError;
        let (code, permanent) = match &error {
            StorageError::Unavailable { .. } => (FailureCode::StorageUnavailable, false),
            StorageError::NoRegion(_) => (FailureCode::StorageNotConfigured, true),
            StorageError::InvalidKey { .. } => (FailureCode::InternalError, true),
            StorageError::InvalidRange { .. } => (FailureCode::InternalError, false),
            StorageError::NotFound(_)
            | StorageError::UploadGone { .. }
            | StorageError::Io { .. }
            | StorageError::S3 { .. } => (FailureCode::StorageError, false),
        };
        JobError::Platform(PlatformFailure {
            code,
            detail: error.to_string(),
            permanent,
        })
    }
}

/// A kind's handler, typed: it gets its kind's params already parsed and
/// answers its kind's output, so the API reads the result through the type
/// the handler wrote it with.
#[async_trait]
pub trait KindHandler: Send + Sync + 'static {
    type Kind: JobKind;

    /// Does the job's work. Long handlers watch `ctx.cancelled()`, report
    /// progress and save checkpoints so a later attempt can resume.
    async fn run(&self, ctx: JobContext, params: Params<Self>) -> Result<Output<Self>, JobError>;
}

/// The params type of a handler's kind.
pub type Params<H> = <<H as KindHandler>::Kind as JobKind>::Params;
/// The output type of a handler's kind.
pub type Output<H> = <<H as KindHandler>::Kind as JobKind>::Output;

/// A handler as the registry runs it: params and output as JSON. Typed
/// handlers ([`KindHandler`]) are wrapped into it; tests and kinds defined at
/// run time implement it directly.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Does the job's work (see [`KindHandler::run`]).
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError>;
}

/// A typed handler behind the JSON contract: params its kind cannot read
/// fail the job for good; an output that cannot be encoded is an internal
/// failure.
pub(crate) struct Typed<H>(pub H);

#[async_trait]
impl<H: KindHandler> JobHandler for Typed<H> {
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError> {
        let params =
            <H::Kind as JobKind>::parse_params(&ctx.job().params).map_err(JobError::permanent)?;
        let output = self.0.run(ctx, params).await?;
        serde_json::to_value(&output).map_err(|error| {
            JobError::Platform(PlatformFailure {
                code: FailureCode::InternalError,
                detail: format!("encoding the {} result: {error}", H::Kind::NAME),
                permanent: true,
            })
        })
    }
}

/// A kind's spec and how its handler is built.
pub struct BuiltinKind {
    pub spec: KindSpec,
    build: Build,
}

type WithServices = Box<dyn Fn(&JobServices) -> Arc<dyn JobHandler> + Send + Sync>;

enum Build {
    /// Needs nothing but its job.
    Standalone(Arc<dyn JobHandler>),
    /// Reads or writes tenant data through the worker's services.
    WithServices(WithServices),
}

impl BuiltinKind {
    /// A kind whose handler needs nothing but its job.
    pub fn standalone<H: KindHandler>(handler: H) -> Self {
        BuiltinKind {
            spec: KindSpec::of::<H::Kind>(),
            build: Build::Standalone(Arc::new(Typed(handler))),
        }
    }

    /// A kind whose handler is built from the worker's services.
    pub fn with_services<H: KindHandler>(build: fn(JobServices) -> H) -> Self {
        BuiltinKind {
            spec: KindSpec::of::<H::Kind>(),
            build: Build::WithServices(Box::new(move |services| {
                Arc::new(Typed(build(services.clone())))
            })),
        }
    }

    pub(crate) fn standalone_handler(&self) -> Option<Arc<dyn JobHandler>> {
        match &self.build {
            Build::Standalone(handler) => Some(handler.clone()),
            Build::WithServices(_) => None,
        }
    }

    pub(crate) fn handler_with(&self, services: &JobServices) -> Option<Arc<dyn JobHandler>> {
        match &self.build {
            Build::Standalone(_) => None,
            Build::WithServices(build) => Some(build(services)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("job kind {0:?} is not in the catalogue: register its KindSpec first")]
    NotInCatalogue(String),
}

/// The kinds one worker can run: each handler paired with its catalogue spec.
#[derive(Clone)]
pub struct Registry {
    catalogue: Arc<Catalogue>,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    pub fn new(catalogue: Arc<Catalogue>) -> Self {
        Registry {
            catalogue,
            handlers: HashMap::new(),
        }
    }

    /// A catalogue with the handlers, among `kinds`, of the kinds it
    /// contains that need no services; add the others with
    /// [`Registry::with_services`]. The kinds come from the caller (the
    /// worker's are [`crate::jobs::kinds`]): the runtime knows none itself.
    pub fn from_kinds(catalogue: Arc<Catalogue>, kinds: &[BuiltinKind]) -> Self {
        let mut registry = Registry::new(catalogue);
        for kind in kinds {
            if let Some(handler) = kind.standalone_handler() {
                registry.insert(&kind.spec.name, handler);
            }
        }
        registry
    }

    /// Adds the handlers, among `kinds`, of the kinds that read or write
    /// tenant data (exports, scans), for the kinds the catalogue contains.
    pub fn with_services(mut self, kinds: &[BuiltinKind], services: &crate::JobServices) -> Self {
        for kind in kinds {
            if let Some(handler) = kind.handler_with(services) {
                self.insert(&kind.spec.name, handler);
            }
        }
        self
    }

    fn insert(&mut self, kind: &str, handler: Arc<dyn JobHandler>) {
        if self.catalogue.get(kind).is_some() {
            self.handlers.insert(kind.to_string(), handler);
        }
    }

    /// Adds a typed handler under its kind's name (the kind must be in the
    /// catalogue).
    pub fn add<H: KindHandler>(&mut self, handler: H) -> Result<&mut Self, RegistryError> {
        self.register(H::Kind::NAME, Typed(handler))
    }

    /// Adds the handler of a kind the catalogue knows.
    pub fn register(
        &mut self,
        kind: &str,
        handler: impl JobHandler,
    ) -> Result<&mut Self, RegistryError> {
        if self.catalogue.get(kind).is_none() {
            return Err(RegistryError::NotInCatalogue(kind.to_string()));
        }
        self.handlers.insert(kind.to_string(), Arc::new(handler));
        Ok(self)
    }

    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    pub(crate) fn lookup(&self, kind: &str) -> Option<(Arc<dyn JobHandler>, &KindSpec)> {
        let handler = self.handlers.get(kind)?;
        let spec = self.catalogue.get(kind)?;
        Some((handler.clone(), spec))
    }
}
