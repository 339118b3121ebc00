//! Retention periods as ISO 8601 durations of whole days and more (`P90D`,
//! `P1Y`, `P1Y6M`, `P2W`): parsed, checked against a minimum, and turned
//! into the cutoff before which data expires (calendar months and years, as
//! a person counts them).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, Months, Utc};

use crate::error::{Error, Result};

/// The longest period a policy may name.
const MAX_YEARS: u32 = 100;

/// `PnYnMnWnD`: years, months, weeks and days (at least one, each ≥ 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPeriod {
    years: u32,
    months: u32,
    weeks: u32,
    days: u32,
}

impl RetentionPeriod {
    pub fn days(days: u32) -> Self {
        RetentionPeriod {
            years: 0,
            months: 0,
            weeks: 0,
            days,
        }
    }

    /// The fewest days the period can span (a month counted as 28 days, a
    /// year as 365): what a minimum is checked against.
    pub fn min_days(&self) -> u64 {
        u64::from(self.years) * 365
            + u64::from(self.months) * 28
            + u64::from(self.weeks) * 7
            + u64::from(self.days)
    }

    /// The instant before which data kept for this period has expired.
    pub fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let months = self.years * 12 + self.months;
        let days = u64::from(self.weeks) * 7 + u64::from(self.days);
        now.checked_sub_months(Months::new(months))
            .and_then(|at| at.checked_sub_days(Days::new(days)))
            .map_or_else(super::earliest, |at| at.max(super::earliest()))
    }
}

fn period_error(text: &str, why: &str) -> Error {
    Error::validation(
        "retentionPeriod",
        format!(
            "{text:?} is not an ISO 8601 duration of days or more ({why}); e.g. P90D, P1Y, P1Y6M"
        ),
    )
}

impl FromStr for RetentionPeriod {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let rest = text
            .strip_prefix('P')
            .ok_or_else(|| period_error(text, "it starts with P"))?;
        if rest.contains('T') {
            return Err(period_error(
                text,
                "hours, minutes and seconds are not retention periods",
            ));
        }
        let mut period = RetentionPeriod::days(0);
        let mut seen = String::new();
        let mut number = String::new();
        for c in rest.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let value: u32 = number
                .parse()
                .map_err(|_| period_error(text, "each unit needs a whole number before it"))?;
            number.clear();
            let order = "YMWD";
            let Some(position) = order.find(c) else {
                return Err(period_error(text, "units are Y, M, W and D"));
            };
            if seen
                .chars()
                .any(|s| order.find(s).is_some_and(|p| p >= position))
            {
                return Err(period_error(
                    text,
                    "units come once each, in the order Y, M, W, D",
                ));
            }
            seen.push(c);
            match c {
                'Y' => period.years = value,
                'M' => period.months = value,
                'W' => period.weeks = value,
                _ => period.days = value,
            }
        }
        if !number.is_empty() || seen.is_empty() {
            return Err(period_error(text, "every number needs its unit"));
        }
        if period.min_days() > u64::from(MAX_YEARS) * 366 {
            return Err(Error::validation(
                "retentionPeriod",
                format!("{text:?} is longer than {MAX_YEARS} years"),
            ));
        }
        Ok(period)
    }
}

impl fmt::Display for RetentionPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P")?;
        for (value, unit) in [
            (self.years, 'Y'),
            (self.months, 'M'),
            (self.weeks, 'W'),
            (self.days, 'D'),
        ] {
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        if self.min_days() == 0 {
            f.write_str("0D")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn reads_the_units_in_order_and_counts_calendar_months() {
        let period: RetentionPeriod = "P1Y6M".parse().unwrap();
        assert_eq!(period.to_string(), "P1Y6M");
        let now = Utc.with_ymd_and_hms(2026, 8, 31, 12, 0, 0).unwrap();
        assert_eq!(
            period.cutoff(now),
            Utc.with_ymd_and_hms(2025, 2, 28, 12, 0, 0).unwrap()
        );
        let days: RetentionPeriod = "P90D".parse().unwrap();
        assert_eq!(days.min_days(), 90);
        assert_eq!(days.cutoff(now), now - chrono::Duration::days(90));
        assert_eq!("P2W".parse::<RetentionPeriod>().unwrap().min_days(), 14);
        assert_eq!("P3M".parse::<RetentionPeriod>().unwrap().min_days(), 84);
    }

    #[test]
    fn refuses_what_is_not_a_period_of_days() {
        for bad in [
            "", "P", "90D", "P90", "PT24H", "P1DT1H", "P1D1Y", "P1Y1Y", "P-1D", "P1.5D", "P1H",
            "P200Y", "p90d",
        ] {
            assert!(bad.parse::<RetentionPeriod>().is_err(), "{bad:?}");
        }
    }
}
