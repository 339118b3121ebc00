//! Public identifiers: prefixed strings (`job_0193…`) over UUIDv7 values, so
//! ids sort by creation time, index well, and say what they name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::Error;

const JOB_PREFIX: &str = "job_";

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Uuid);

impl JobId {
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        JobId(uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{JOB_PREFIX}{}", self.0.simple())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for JobId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix(JOB_PREFIX).ok_or_else(|| {
            Error::validation(
                "job id",
                format!("{s:?} does not start with {JOB_PREFIX:?}"),
            )
        })?;
        if hex.len() != 32 {
            return Err(Error::validation(
                "job id",
                format!("{s:?} is not a job id"),
            ));
        }
        Uuid::try_parse(hex)
            .map(JobId)
            .map_err(|_| Error::validation("job id", format!("{s:?} is not a job id")))
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The UUID of an id written `<prefix><32 hex digits>` (`rtp_…`, `wh_…`); any
/// other text is "no such `kind`", as an unknown id would be.
pub fn parse_prefixed(kind: &'static str, prefix: &str, text: &str) -> crate::Result<Uuid> {
    text.strip_prefix(prefix)
        .filter(|hex| hex.len() == 32)
        .and_then(|hex| Uuid::try_parse(hex).ok())
        .ok_or_else(|| crate::Error::no_such(kind, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let id = JobId::new();
        let text = id.to_string();
        assert!(text.starts_with("job_"));
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<JobId>().expect("parses"), id);
    }

    #[test]
    fn rejects_other_prefixes_and_garbage() {
        assert!("exp_0193a4b2c3d47e8f9a0b1c2d3e4f5a6b"
            .parse::<JobId>()
            .is_err());
        assert!("job_nothex".parse::<JobId>().is_err());
        assert!("job_0193a4b2-c3d4-7e8f-9a0b-1c2d3e4f5a6b"
            .parse::<JobId>()
            .is_err());
    }

    #[test]
    fn newer_ids_sort_after_older_ones() {
        let a = JobId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = JobId::new();
        assert!(a < b);
    }
}
