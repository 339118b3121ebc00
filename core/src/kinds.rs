//! The catalogue of job kinds: for each kind its default queue, timeout,
//! attempts, back-off and a params validator. The API validates requests
//! against it; the worker looks up how to run a kind in it. Core holds the
//! specs; the worker holds the handlers (one file per kind in `worker/src/jobs/`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::backoff::Backoff;

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

/// The kinds Longhaul knows, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    kinds: BTreeMap<String, KindSpec>,
}

pub const SYSTEM_NOOP: &str = "system.noop";
pub const SYSTEM_SLEEP: &str = "system.sleep";

/// Params of `system.sleep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SleepParams {
    /// Total time to sleep, in milliseconds (at most 24 h).
    pub duration_ms: u64,
    /// Number of steps; progress and a checkpoint are written after each.
    #[serde(default = "default_sleep_steps")]
    pub steps: u32,
}

fn default_sleep_steps() -> u32 {
    10
}

impl SleepParams {
    pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;
    pub const MAX_STEPS: u32 = 100_000;

    pub fn parse(params: &Value) -> Result<Self, String> {
        let parsed: SleepParams =
            serde_json::from_value(params.clone()).map_err(|e| e.to_string())?;
        if parsed.duration_ms > Self::MAX_DURATION_MS {
            return Err(format!(
                "durationMs must be at most {}",
                Self::MAX_DURATION_MS
            ));
        }
        if parsed.steps == 0 || parsed.steps > Self::MAX_STEPS {
            return Err(format!("steps must be between 1 and {}", Self::MAX_STEPS));
        }
        Ok(parsed)
    }
}

impl Catalogue {
    pub fn empty() -> Self {
        Catalogue::default()
    }

    /// The built-in kinds.
    pub fn builtin() -> Self {
        let mut catalogue = Catalogue::empty();
        catalogue.register(
            KindSpec::new(SYSTEM_NOOP)
                .timeout(Duration::from_secs(60))
                .validate_with(|params| match params {
                    Value::Object(map) if map.is_empty() => Ok(()),
                    Value::Object(_) => Err("system.noop takes no params: send {}".into()),
                    _ => Err("params must be a JSON object".into()),
                }),
        );
        catalogue.register(
            KindSpec::new(crate::audit::export::AUDIT_EXPORT)
                .queue("exports")
                .internal()
                .timeout(Duration::from_secs(6 * 3600))
                .validate_with(|params| {
                    crate::audit::export::ExportParams::parse(params).map(|_| ())
                }),
        );
        catalogue.register(
            KindSpec::new(crate::scans::leakage::LEAKAGE_SCAN)
                .queue("scans")
                .internal()
                .timeout(Duration::from_secs(6 * 3600))
                .validate_with(|params| {
                    crate::scans::leakage::LeakageScanParams::parse(params).map(|_| ())
                }),
        );
        catalogue.register(
            KindSpec::new(crate::scans::classification::CLASSIFICATION_SCAN)
                .queue("scans")
                .internal()
                .timeout(Duration::from_secs(6 * 3600))
                .validate_with(|params| {
                    crate::scans::classification::ClassificationScanParams::parse(params)
                        .map(|_| ())
                }),
        );
        catalogue.register(
            KindSpec::new(SYSTEM_SLEEP)
                .timeout(Duration::from_secs(25 * 3600))
                .validate_with(|params| SleepParams::parse(params).map(|_| ())),
        );
        catalogue
    }

    /// Adds or replaces a kind.
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
    use serde_json::json;

    #[test]
    fn builtin_kinds_validate_their_params() {
        let catalogue = Catalogue::builtin();
        let noop = catalogue.get(SYSTEM_NOOP).expect("noop");
        assert!((noop.validate)(&json!({})).is_ok());
        assert!((noop.validate)(&json!({"x": 1})).is_err());
        assert!((noop.validate)(&json!([1])).is_err());

        let sleep = catalogue.get(SYSTEM_SLEEP).expect("sleep");
        assert!((sleep.validate)(&json!({"durationMs": 100, "steps": 4})).is_ok());
        assert!((sleep.validate)(&json!({"durationMs": 100})).is_ok());
        assert!((sleep.validate)(&json!({"durationMs": -1})).is_err());
        assert!((sleep.validate)(&json!({"durationMs": 100, "steps": 0})).is_err());
        assert!((sleep.validate)(&json!({"duration": 100})).is_err());
        assert!((sleep.validate)(&json!({"durationMs": 90_000_000})).is_err());
        assert!(catalogue.get("system.unknown").is_none());
    }
}
