//! The handler contract: what a job kind implements, how it reports failure,
//! and the registry that maps kind names to handlers for one worker.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use longhaul_core::{Catalogue, KindSpec};

use crate::context::JobContext;

/// A small JSON summary stored on the job row when it succeeds (artifacts go
/// to object storage, never here).
pub type JobOutput = serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (back-off, then retry while attempts remain).
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help (bad params, a missing resource): fail for good.
    #[error("{0}")]
    Permanent(String),
    /// The handler stopped because its cancellation token fired.
    #[error("cancelled")]
    Cancelled,
}

impl JobError {
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError::Retryable(message.into())
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        JobError::Permanent(message.into())
    }
}

impl From<longhaul_core::Error> for JobError {
    fn from(error: longhaul_core::Error) -> Self {
        match error {
            longhaul_core::Error::LeaseLost { .. } => JobError::Cancelled,
            other => JobError::Retryable(other.to_string()),
        }
    }
}

impl From<longhaul_core::artifacts::StorageError> for JobError {
    /// A bad key or an unconfigured region stays so; the rest (network,
    /// the store's own errors) may pass.
    fn from(error: longhaul_core::artifacts::StorageError) -> Self {
        use longhaul_core::artifacts::StorageError;
        match error {
            StorageError::InvalidKey { .. } | StorageError::NoRegion(_) => {
                JobError::permanent(error.to_string())
            }
            other => JobError::retryable(other.to_string()),
        }
    }
}

#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Does the job's work. Long handlers watch `ctx.cancelled()`, report
    /// progress and save checkpoints so a later attempt can resume.
    async fn run(&self, ctx: JobContext) -> Result<JobOutput, JobError>;
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

    /// The built-in catalogue with the handlers of the kinds that need no
    /// services; add the others with [`Registry::with_services`].
    pub fn builtin() -> Self {
        Self::with_builtin_handlers(Arc::new(Catalogue::builtin()))
    }

    /// A catalogue (the built-in one plus more kinds, say) with the built-in
    /// handlers of the kinds it contains.
    pub fn with_builtin_handlers(catalogue: Arc<Catalogue>) -> Self {
        let mut registry = Registry::new(catalogue);
        for (kind, handler) in crate::jobs::builtin_handlers() {
            if registry.catalogue.get(kind).is_some() {
                registry.handlers.insert(kind.to_string(), handler);
            }
        }
        registry
    }

    /// Adds the handlers of the built-in kinds that read or write tenant data
    /// (audit exports), for the kinds the catalogue contains.
    pub fn with_services(mut self, services: &crate::JobServices) -> Self {
        for (kind, handler) in crate::jobs::data_handlers(services) {
            if self.catalogue.get(kind).is_some() {
                self.handlers.insert(kind.to_string(), handler);
            }
        }
        self
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
