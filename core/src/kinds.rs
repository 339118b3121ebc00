//! Job kinds, typed: a [`JobKind`] ties a kind's name to its params type,
//! its result type and its defaults (queue, timeout, attempts, back-off), so
//! the API, the scheduler and the worker read and write a kind's JSON through
//! the same types. The [`Catalogue`] holds the specs of the kinds a process
//! knows; the worker crate assembles it from its job modules (core lists no
//! kinds), and the handlers live there too, one module per kind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::backoff::Backoff;

/// A job kind: its name, what it takes and what it answers.
///
/// `Params` is what `POST /v1/jobs`, schedules and the kind's own endpoints
/// store as the job's params; `Output` is the small JSON summary the handler
/// stores on success and the API reads back. Both go through serde, so a
/// renamed field or a handler written for another kind fails to compile.
pub trait JobKind: Send + Sync + 'static {
    /// The kind's name as stored on jobs (`audit.export`).
    const NAME: &'static str;
    type Params: Serialize + DeserializeOwned + Send + Sync + 'static;
    type Output: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What an attempt saves so a later one resumes (`()` for kinds that
    /// save none); the API reads progress details from it.
    type Checkpoint: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The kind's defaults, starting from [`KindSpec::new`]'s.
    fn spec(spec: KindSpec) -> KindSpec {
        spec
    }

    /// Reads and checks params (shape, then ranges and limits); the message
    /// says what is wrong. The API, the scheduler and the worker all use it.
    fn parse_params(params: &Value) -> Result<Self::Params, String> {
        serde_json::from_value(params.clone()).map_err(|error| error.to_string())
    }
}

/// A kind's params, encoded as stored on its job.
pub fn encode_params<K: JobKind>(params: &K::Params) -> crate::Result<Value> {
    serde_json::to_value(params).map_err(|error| {
        crate::Error::corrupt("encoding job params", format!("{}: {error}", K::NAME))
    })
}

/// Checks a kind's params; the message says what is wrong.
pub type ParamsValidator = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
pub struct KindSpec {
    pub name: String,
    pub queue: String,
    pub timeout: Duration,
    pub max_attempts: i32,
    /// Before retrying a failure of the job itself.
    pub backoff: Backoff,
    /// Before retrying a transient failure of the platform under it (object
    /// store or database unavailable): minutes, not seconds.
    pub transient_backoff: Backoff,
    pub validate: ParamsValidator,
    /// Created only through its own API (e.g. audit exports, whose range
    /// and role checks `POST /v1/jobs` and schedules would skip).
    pub internal: bool,
}

impl std::fmt::Debug for KindSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindSpec")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl KindSpec {
    /// A kind on the `default` queue, 1 h timeout, 5 attempts, default
    /// back-off (transient failures: [`Backoff::transient`]), params any JSON
    /// object.
    pub fn new(name: impl Into<String>) -> Self {
        KindSpec {
            name: name.into(),
            queue: "default".into(),
            timeout: Duration::from_secs(3600),
            max_attempts: 5,
            backoff: Backoff::default(),
            transient_backoff: Backoff::transient(),
            validate: Arc::new(|_| Ok(())),
            internal: false,
        }
    }

    /// Not creatable through `POST /v1/jobs` or schedules.
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn transient_backoff(mut self, backoff: Backoff) -> Self {
        self.transient_backoff = backoff;
        self
    }

    pub fn validate_with(
        mut self,
        validate: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validate = Arc::new(validate);
        self
    }
}

/// The kinds a process knows, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    kinds: BTreeMap<String, KindSpec>,
}

impl KindSpec {
    /// The spec of a typed kind: its name, its defaults, and its params
    /// parser as the validator.
    pub fn of<K: JobKind>() -> Self {
        let mut spec = K::spec(KindSpec::new(K::NAME));
        spec.name = K::NAME.to_string();
        spec.validate_with(|params| K::parse_params(params).map(|_| ()))
    }
}

impl Catalogue {
    pub fn empty() -> Self {
        Catalogue::default()
    }

    /// Adds (or replaces) a typed kind.
    pub fn add<K: JobKind>(&mut self) -> &mut Self {
        self.register(KindSpec::of::<K>())
    }

    /// Adds or replaces a kind by its spec (kinds defined at run time, e.g. in tests).
    pub fn register(&mut self, spec: KindSpec) -> &mut Self {
        self.kinds.insert(spec.name.clone(), spec);
        self
    }

    pub fn get(&self, name: &str) -> Option<&KindSpec> {
        self.kinds.get(name)
    }

    /// Refuses kinds that only their own API creates (a validation error
    /// naming `kind`); unknown kinds are left to the job validation.
    pub fn check_public(&self, name: &str) -> crate::Result<()> {
        match self.get(name) {
            Some(spec) if spec.internal => Err(crate::Error::validation(
                "kind",
                format!("{name} jobs are created through their own endpoint, not as plain jobs"),
            )),
            _ => Ok(()),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    struct Resize;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct ResizeParams {
        width_px: u32,
    }

    impl JobKind for Resize {
        const NAME: &'static str = "test.resize";
        type Params = ResizeParams;
        type Output = u32;
        type Checkpoint = ();

        fn spec(mut spec: KindSpec) -> KindSpec {
            spec.name = "renamed".into();
            spec.queue("images").max_attempts(2)
        }

        fn parse_params(params: &Value) -> Result<ResizeParams, String> {
            let parsed: ResizeParams =
                serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
            if parsed.width_px == 0 {
                return Err("widthPx must be positive".into());
            }
            Ok(parsed)
        }
    }

    #[test]
    fn a_typed_kind_brings_its_name_defaults_and_parser() {
        let mut catalogue = Catalogue::empty();
        catalogue.add::<Resize>();
        assert!(catalogue.get("renamed").is_none(), "the name is the kind's");
        let spec = catalogue
            .get("test.resize")
            .expect("registered by its NAME");
        assert_eq!(spec.queue, "images");
        assert_eq!(spec.max_attempts, 2);
        assert!((spec.validate)(&json!({"widthPx": 10})).is_ok());
        assert_eq!(
            (spec.validate)(&json!({"widthPx": 0})),
            Err("widthPx must be positive".to_string())
        );
        assert!((spec.validate)(&json!({"width": 10})).is_err());
        assert_eq!(
            encode_params::<Resize>(&ResizeParams { width_px: 3 }).expect("encodes"),
            json!({"widthPx": 3})
        );
    }
}
