//! Billable usage: operations per tenant, job kind and calendar month (UTC),
//! kept in the `usage` table. Every job the API accepts adds one operation for
//! its kind, in the same transaction as the insert (see
//! [`crate::store::JobStore::enqueue_within_quota`]), so metering never
//! disagrees with accepted work.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Utc};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use crate::error::{Error, Result};

/// A calendar month (UTC), written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    /// The month `at` falls in (UTC).
    pub fn of(at: DateTime<Utc>) -> Self {
        Period {
            year: at.year(),
            month: at.month(),
        }
    }

    /// A month from its year (1970–9999) and month (1–12).
    pub fn new(year: i32, month: u32) -> Result<Self> {
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(period_error(&format!("{year:04}-{month:02}")));
        }
        Ok(Period { year, month })
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn month(&self) -> u32 {
        self.month
    }
}

fn period_error(text: &str) -> Error {
    Error::validation(
        "period",
        format!("{text:?} is not a month written YYYY-MM (1970-01 to 9999-12), e.g. 2025-01"),
    )
}

impl FromStr for Period {
    type Err = Error;

    /// Exactly `YYYY-MM`.
    fn from_str(text: &str) -> Result<Self> {
        let bytes = text.as_bytes();
        let shaped = bytes.len() == 7
            && bytes[4] == b'-'
            && bytes[..4].iter().all(u8::is_ascii_digit)
            && bytes[5..].iter().all(u8::is_ascii_digit);
        if !shaped {
            return Err(period_error(text));
        }
        let year = text[..4].parse().map_err(|_| period_error(text))?;
        let month = text[5..].parse().map_err(|_| period_error(text))?;
        Period::new(year, month).map_err(|_| period_error(text))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Billable operations of one job kind in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindUsage {
    pub kind: String,
    pub operations: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_print_as_yyyy_mm() {
        let period: Period = "2025-01".parse().expect("valid");
        assert_eq!(period.to_string(), "2025-01");
        assert_eq!((period.year(), period.month()), (2025, 1));
        for bad in [
            "",
            "2025",
            "2025-1",
            "2025-13",
            "2025-00",
            "25-01",
            "2025/01",
            "2025-01-01",
            "+025-01",
            "1969-12",
            "２０２５-01",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad:?} accepted");
        }
        let at = DateTime::parse_from_rfc3339("2024-02-29T23:59:59Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(Period::of(at).to_string(), "2024-02");
    }
}
