//! The pure timing logic of schedules: when a cron expression fires in a time
//! zone, how far a fire is spread by jitter, and what a scheduler does with a
//! fire time that has come (on time, late, or missed while it was down).
//! Nothing here reads a clock or a store: every instant is an argument.
//!
//! # Expressions
//!
//! Parsed by [croner](https://docs.rs/croner) with Vixie cron semantics:
//! - 5 fields (`minute hour day-of-month month day-of-week`, minute precision)
//!   or 6 fields whose first is the second; 7 fields (a year) are refused.
//!   `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` are accepted too.
//! - Weekdays are POSIX: 1 = Monday … 6 = Saturday, and both 0 and 7 are Sunday
//!   (`MON`–`SUN` work too). `L`, `W` and `MON#2` are croner extensions.
//! - When both day-of-month and day-of-week are restricted, a day matching
//!   either fires (Vixie's OR).
//! - An expression that can never fire (`0 0 30 2 *`) is refused at parse.
//!
//! # Time zones and daylight saving time
//!
//! Fields are matched against the wall clock of an IANA zone
//! (`America/New_York`, case-sensitive); every instant in and out is UTC.
//! Where the clock skips or repeats an hour, croner does what Vixie cron does,
//! observed here on 2026 dates:
//! - Spring forward (New York 2026-03-08 02:00→03:00, Berlin 2026-03-29
//!   02:00→03:00): a fixed-time job in the skipped hour (`30 2 * * *`) fires
//!   once that day, at the first instant after the gap, 03:00 local:
//!   2026-03-08T07:00Z in New York, 2026-03-29T01:00Z in Berlin. Interval and
//!   wildcard jobs (`0 * * * *`) simply have no fire in the missing hour.
//! - Fall back (New York 2026-11-01 02:00→01:00, Berlin 2026-10-25
//!   03:00→02:00): a fixed-time job in the repeated hour fires once, at the
//!   earlier instant (still on summer time): `30 1 * * *` in New York at
//!   2026-11-01T05:30Z (01:30 EDT), not 06:30Z; `30 2 * * *` in Berlin at
//!   2026-10-25T00:30Z (02:30 CEST), not 01:30Z. Interval and wildcard jobs
//!   fire in both copies of the hour, in real-time order: UTC fire times are
//!   strictly increasing with no duplicate.
//!
//! # Firing
//!
//! A schedule stores its next nominal fire time `due`. [`jitter_offset`] gives
//! the stable delay after `due` at which a scheduler acts on it; then
//! [`plan_fire`] says which fire time (if any) gets a job and what the next
//! nominal time is. `due` is a misfire when `now - due > threshold`; the
//! threshold counts from the nominal time, so keep it larger than the jitter.
//! Within the threshold every fire time gets its job, one per tick, even when
//! several are already past; beyond it the [`MisfirePolicy`] decides between
//! none and exactly one catch-up job.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How far back [`CronSpec::latest_at_or_before`] looks (a year and a day).
const LATEST_WINDOW: TimeDelta = TimeDelta::days(366);

/// The most fire times [`plan_fire`] walks to count `skipped`.
const MAX_SKIP_COUNT: u64 = 1_000;

/// A parsed cron expression in an IANA time zone.
#[derive(Debug, Clone)]
pub struct CronSpec {
    cron: Cron,
    tz: Tz,
    expression: String,
}

impl CronSpec {
    /// Parses `expression`: 5 fields (minute precision) or 6 fields (first =
    /// seconds), in the IANA zone `time_zone`. Errors: field "cron" (with
    /// croner's message, or for an expression that can never fire), field
    /// "timeZone" for an unknown zone.
    pub fn parse(expression: &str, time_zone: &str) -> Result<CronSpec> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| Error::validation("cron", e.to_string()))?;
        let tz = Tz::from_str(time_zone).map_err(|_| {
            Error::validation(
                "timeZone",
                format!("unknown time zone {time_zone:?}: expected an IANA name such as \"Europe/Berlin\""),
            )
        })?;
        let spec = CronSpec {
            cron,
            tz,
            expression: expression.to_string(),
        };
        // Without a year field a pattern repeats (the calendar does every 400
        // years), so one that fires at all fires after any fixed start;
        // croner's bounded search answers quickly for one that never does.
        let reference = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        if spec.next_after(reference).is_none() {
            return Err(Error::validation(
                "cron",
                format!("{expression:?} never fires"),
            ));
        }
        Ok(spec)
    }

    /// The expression as it was given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of the time zone.
    pub fn time_zone(&self) -> &str {
        self.tz.name()
    }

    /// The first fire time strictly after `after`, in UTC. None when croner's
    /// bounded search finds none; never for an expression [`CronSpec::parse`]
    /// accepted, though a rare one may be years away (`0 0 29 2 *`: up to 8).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = after.with_timezone(&self.tz);
        // croner steps one whole second from the start's wall clock second;
        // the loop only guards the contract against sub-second starts.
        for _ in 0..3 {
            let found = self.cron.find_next_occurrence(&from, false).ok()?;
            let found_utc = found.with_timezone(&Utc);
            if found_utc > after {
                return Some(found_utc);
            }
            from = found;
        }
        None
    }

    /// Up to `count` fire times strictly after `after`, strictly increasing.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::with_capacity(count.min(1024));
        let mut cursor = after;
        while times.len() < count {
            match self.next_after(cursor) {
                Some(next) => {
                    times.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        times
    }

    /// The latest fire time at or before `at`, if any within a year and a day
    /// before it (for misfire catch-up). A fire time in a repeated or skipped
    /// hour is the same instant [`CronSpec::next_after`] gives.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let found = self
            .cron
            .find_previous_occurrence(&at.with_timezone(&self.tz), true)
            .ok()?
            .with_timezone(&Utc);
        (found <= at && at - found <= LATEST_WINDOW).then_some(found)
    }

    /// croner's human-readable description, for example "At 02:30.".
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// `at` in the schedule's time zone, as RFC 3339 with its offset.
    pub fn local_rfc3339(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.tz).to_rfc3339()
    }
}

/// A deterministic offset in [0, jitter) for a schedule's fire time: the same
/// inputs give the same offset, and many tenants' identical schedules spread
/// over the window. Whole microseconds (the stores' timestamp precision), from
/// SHA-256 of (schedule_id, fire time in microseconds); a jitter under a
/// microsecond gives zero.
pub fn jitter_offset(schedule_id: &str, fire_time: DateTime<Utc>, jitter: Duration) -> Duration {
    let window = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
    if window == 0 {
        return Duration::ZERO;
    }
    let mut hasher = Sha256::new();
    hasher.update(schedule_id.as_bytes());
    hasher.update([0u8]);
    hasher.update(fire_time.timestamp_micros().to_be_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let hash = u64::from_be_bytes(first);
    // Multiply-shift maps the hash onto [0, window) without modulo bias.
    let micros = ((u128::from(hash) * u128::from(window)) >> 64) as u64;
    Duration::from_micros(micros)
}

/// What to do with fire times missed by more than the misfire threshold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Run nothing for them; wait for the next fire time after now.
    Skip,
    /// Run exactly one job, for the latest of them.
    FireOnce,
}

impl MisfirePolicy {
    /// "skip" or "fire_once".
    pub fn as_str(self) -> &'static str {
        match self {
            MisfirePolicy::Skip => "skip",
            MisfirePolicy::FireOnce => "fire_once",
        }
    }
}

impl FromStr for MisfirePolicy {
    type Err = Error;

    /// Parses "skip" or "fire_once"; otherwise a validation error on field
    /// "misfirePolicy".
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(MisfirePolicy::Skip),
            "fire_once" => Ok(MisfirePolicy::FireOnce),
            _ => Err(Error::validation(
                "misfirePolicy",
                format!("unknown misfire policy {s:?}: expected \"skip\" or \"fire_once\""),
            )),
        }
    }
}

/// What to do when a fire time comes while the schedule's previous job is
/// still running.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Start no new job for that fire time.
    Skip,
    /// Start it anyway, beside the running one.
    Allow,
}

impl OverlapPolicy {
    /// "skip" or "allow".
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::Allow => "allow",
        }
    }
}

impl FromStr for OverlapPolicy {
    type Err = Error;

    /// Parses "skip" or "allow"; otherwise a validation error on field
    /// "overlapPolicy".
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(OverlapPolicy::Skip),
            "allow" => Ok(OverlapPolicy::Allow),
            _ => Err(Error::validation(
                "overlapPolicy",
                format!("unknown overlap policy {s:?}: expected \"skip\" or \"allow\""),
            )),
        }
    }
}

/// What a scheduler does with a schedule whose nominal fire time `due` has
/// come (now >= due + its jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirePlan {
    /// The fire time to run a job for now (None: nothing to run).
    pub fire: Option<DateTime<Utc>>,
    /// The schedule's next nominal fire time after this tick (None: never again).
    pub next: Option<DateTime<Utc>>,
    /// Fire times passed over without a job (for logs/metrics).
    pub skipped: u64,
}

/// Plans one tick for a schedule whose nominal fire time `due` has come.
///
/// `due` is late (a misfire) when `now - due > threshold`.
/// - On time: fire `due`, next = `next_after(due)`, skipped 0. That next may
///   already be past too (the scheduler fell behind by less than the
///   threshold); it then fires on the next tick. (It can never be past the
///   threshold when `due` is not, since it is later than `due`.)
/// - Misfire with [`MisfirePolicy::Skip`]: fire nothing, next =
///   `next_after(now)`.
/// - Misfire with [`MisfirePolicy::FireOnce`]: fire the latest fire time at or
///   before `now` (never earlier than `due`; exactly one catch-up job), next =
///   `next_after(now)`.
///
/// `skipped` counts the nominal fire times from `due` through `now`, both
/// included, that got no job; the count stops at 100,000.
/// A `due` still in the future (a caller's mistake) plans nothing: fire None,
/// next = `due`, skipped 0.
pub fn plan_fire(
    spec: &CronSpec,
    misfire: MisfirePolicy,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    threshold: Duration,
) -> FirePlan {
    if now < due {
        return FirePlan {
            fire: None,
            next: Some(due),
            skipped: 0,
        };
    }
    // A threshold too large for chrono is never exceeded.
    let late = TimeDelta::from_std(threshold).is_ok_and(|threshold| now - due > threshold);
    if !late {
        return FirePlan {
            fire: Some(due),
            next: spec.next_after(due),
            skipped: 0,
        };
    }

    let missed = count_fire_times(spec, due, now);
    let next = spec.next_after(now);
    match misfire {
        MisfirePolicy::Skip => FirePlan {
            fire: None,
            next,
            skipped: missed,
        },
        MisfirePolicy::FireOnce => {
            let fire = spec
                .latest_at_or_before(now)
                .filter(|latest| *latest >= due)
                .unwrap_or(due);
            FirePlan {
                fire: Some(fire),
                next,
                skipped: missed.saturating_sub(1),
            }
        }
    }
}

/// The nominal fire times from `due` through `now`: `due` itself (it was
/// scheduled) and every fire time after it up to `now`, at most
/// [`MAX_SKIP_COUNT`].
fn count_fire_times(spec: &CronSpec, due: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let mut count = 1;
    let mut cursor = due;
    while count < MAX_SKIP_COUNT {
        match spec.next_after(cursor) {
            Some(next) if next <= now => {
                count += 1;
                cursor = next;
            }
            _ => break,
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn utcs(list: &[&str]) -> Vec<DateTime<Utc>> {
        list.iter().map(|s| utc(s)).collect()
    }

    fn spec(expression: &str, time_zone: &str) -> CronSpec {
        CronSpec::parse(expression, time_zone).unwrap()
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::Validation { field, .. } => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn assert_strictly_increasing(times: &[DateTime<Utc>]) {
        for pair in times.windows(2) {
            assert!(pair[0] < pair[1], "not strictly increasing: {pair:?}");
        }
    }

    /// Fire times whose local date in `time_zone` is `date` (from a search
    /// starting two days before it).
    fn fires_on_local_date(spec: &CronSpec, date: &str) -> Vec<DateTime<Utc>> {
        let tz: Tz = spec.time_zone().parse().unwrap();
        let day: chrono::NaiveDate = date.parse().unwrap();
        let start =
            Utc.from_utc_datetime(&(day - TimeDelta::days(2)).and_hms_opt(0, 0, 0).unwrap());
        spec.upcoming(start, 10)
            .into_iter()
            .filter(|t| t.with_timezone(&tz).date_naive() == day)
            .collect()
    }

    #[test]
    fn five_field_expressions_fire_on_minutes() {
        let s = spec("*/15 * * * *", "UTC");
        assert_eq!(
            s.upcoming(utc("2026-01-01T00:07:00Z"), 3),
            utcs(&[
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:30:00Z",
                "2026-01-01T00:45:00Z"
            ])
        );
    }

    #[test]
    fn six_field_expressions_start_with_seconds() {
        let s = spec("*/10 * * * * *", "UTC");
        assert_eq!(
            s.upcoming(utc("2026-01-01T00:00:05Z"), 3),
            utcs(&[
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:30Z"
            ])
        );
        let s = spec("30 0 9 * * *", "UTC");
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T09:00:30Z"))
        );
    }

    #[test]
    fn weekdays_are_posix_monday_is_one_sunday_is_zero_and_seven() {
        // 2026-01-01 is a Thursday.
        let after = utc("2026-01-01T00:00:00Z");
        assert_eq!(
            spec("0 9 * * 1", "UTC").next_after(after),
            Some(utc("2026-01-05T09:00:00Z"))
        );
        assert_eq!(
            spec("0 9 * * 0", "UTC").next_after(after),
            Some(utc("2026-01-04T09:00:00Z"))
        );
        assert_eq!(
            spec("0 9 * * 7", "UTC").next_after(after),
            Some(utc("2026-01-04T09:00:00Z"))
        );
        assert_eq!(
            spec("0 9 * * MON", "UTC").next_after(after),
            Some(utc("2026-01-05T09:00:00Z"))
        );
    }

    #[test]
    fn zone_shifts_the_fire_time() {
        let s = spec("0 9 * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-01T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-07-01T00:00:00Z")),
            Some(utc("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn next_after_is_strictly_after_even_on_a_fire_time() {
        let s = spec("* * * * * *", "UTC");
        let t = utc("2026-05-01T10:00:00Z");
        assert_eq!(s.next_after(t), Some(utc("2026-05-01T10:00:01Z")));
        let t = utc("2026-05-01T10:00:00.500Z");
        assert_eq!(s.next_after(t), Some(utc("2026-05-01T10:00:01Z")));
        let s = spec("0 12 * * *", "UTC");
        assert_eq!(
            s.next_after(utc("2026-05-01T12:00:00Z")),
            Some(utc("2026-05-02T12:00:00Z"))
        );
    }

    #[test]
    fn upcoming_is_strictly_increasing_and_counts() {
        let s = spec("*/7 * * * *", "America/New_York");
        let times = s.upcoming(utc("2026-03-07T00:00:00Z"), 500);
        assert_eq!(times.len(), 500);
        assert_strictly_increasing(&times);
        assert!(times[0] > utc("2026-03-07T00:00:00Z"));
        assert!(s.upcoming(utc("2026-03-07T00:00:00Z"), 0).is_empty());
    }

    #[test]
    fn spring_forward_new_york_daily_0230_fires_once_at_0300_edt() {
        let s = spec("30 2 * * *", "America/New_York");
        assert_eq!(
            s.upcoming(utc("2026-03-07T00:00:00Z"), 3),
            utcs(&[
                "2026-03-07T07:30:00Z", // 02:30 EST
                "2026-03-08T07:00:00Z", // 02:30 does not exist: 03:00 EDT
                "2026-03-09T06:30:00Z", // 02:30 EDT
            ])
        );
        assert_eq!(
            fires_on_local_date(&s, "2026-03-08"),
            utcs(&["2026-03-08T07:00:00Z"])
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-08T12:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
    }

    #[test]
    fn spring_forward_berlin_daily_0230_fires_once_at_0300_cest() {
        let s = spec("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            s.upcoming(utc("2026-03-28T00:00:00Z"), 3),
            utcs(&[
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 02:30 does not exist: 03:00 CEST
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ])
        );
        assert_eq!(
            fires_on_local_date(&s, "2026-03-29"),
            utcs(&["2026-03-29T01:00:00Z"])
        );
    }

    #[test]
    fn spring_forward_hourly_has_no_fire_in_the_missing_hour() {
        let s = spec("0 * * * *", "America/New_York");
        let times = s.upcoming(utc("2026-03-08T05:30:00Z"), 3);
        assert_eq!(
            times,
            utcs(&[
                "2026-03-08T06:00:00Z", // 01:00 EST
                "2026-03-08T07:00:00Z", // 03:00 EDT
                "2026-03-08T08:00:00Z", // 04:00 EDT
            ])
        );
    }

    #[test]
    fn fall_back_new_york_daily_0130_fires_once_at_the_edt_instant() {
        let s = spec("30 1 * * *", "America/New_York");
        assert_eq!(
            s.upcoming(utc("2026-10-31T00:00:00Z"), 3),
            utcs(&[
                "2026-10-31T05:30:00Z", // 01:30 EDT
                "2026-11-01T05:30:00Z", // first 01:30 (EDT), not 06:30Z (EST)
                "2026-11-02T06:30:00Z", // 01:30 EST
            ])
        );
        assert_eq!(
            fires_on_local_date(&s, "2026-11-01"),
            utcs(&["2026-11-01T05:30:00Z"])
        );
        // From inside the repeated hour, the second 01:30 is not a fire time.
        assert_eq!(
            s.next_after(utc("2026-11-01T05:45:00Z")),
            Some(utc("2026-11-02T06:30:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-11-01T07:00:00Z")),
            Some(utc("2026-11-01T05:30:00Z"))
        );
    }

    #[test]
    fn fall_back_berlin_daily_0230_fires_once_at_the_cest_instant() {
        let s = spec("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            s.upcoming(utc("2026-10-24T00:00:00Z"), 3),
            utcs(&[
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // first 02:30 (CEST), not 01:30Z (CET)
                "2026-10-26T01:30:00Z", // 02:30 CET
            ])
        );
        assert_eq!(
            fires_on_local_date(&s, "2026-10-25"),
            utcs(&["2026-10-25T00:30:00Z"])
        );
    }

    #[test]
    fn fall_back_hourly_fires_in_both_copies_of_the_hour_in_order() {
        let s = spec("0 * * * *", "America/New_York");
        let times = s.upcoming(utc("2026-11-01T03:30:00Z"), 5);
        assert_eq!(
            times,
            utcs(&[
                "2026-11-01T04:00:00Z", // 00:00 EDT
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T06:00:00Z", // 01:00 EST
                "2026-11-01T07:00:00Z", // 02:00 EST
                "2026-11-01T08:00:00Z", // 03:00 EST
            ])
        );
        let s = spec("0 * * * *", "Europe/Berlin");
        let times = s.upcoming(utc("2026-10-24T23:30:00Z"), 4);
        assert_eq!(
            times,
            utcs(&[
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
                "2026-10-25T03:00:00Z", // 04:00 CET
            ])
        );
    }

    #[test]
    fn fall_back_per_minute_keeps_real_time_order_without_duplicates() {
        for (zone, start) in [
            ("America/New_York", "2026-11-01T04:30:00Z"),
            ("Europe/Berlin", "2026-10-24T23:30:00Z"),
        ] {
            let s = spec("* * * * *", zone);
            let start = utc(start);
            let times = s.upcoming(start, 180);
            assert_eq!(times.len(), 180);
            assert_strictly_increasing(&times);
            // Every real minute, both copies of the repeated hour included.
            for (i, t) in times.iter().enumerate() {
                assert_eq!(*t, start + TimeDelta::minutes(i as i64 + 1), "{zone}");
            }
        }
    }

    #[test]
    fn latest_at_or_before_includes_at_and_looks_back_a_year() {
        let s = spec("0 12 * * *", "UTC");
        let noon = utc("2026-05-01T12:00:00Z");
        assert_eq!(s.latest_at_or_before(noon), Some(noon));
        assert_eq!(
            s.latest_at_or_before(utc("2026-05-01T11:59:59Z")),
            Some(utc("2026-04-30T12:00:00Z"))
        );
        let yearly = spec("0 0 1 1 *", "UTC");
        assert_eq!(
            yearly.latest_at_or_before(utc("2027-06-01T00:00:00Z")),
            Some(utc("2027-01-01T00:00:00Z"))
        );
        // The last 29 February before mid-2027 is in 2024: too far back.
        let leap = spec("0 0 29 2 *", "UTC");
        assert_eq!(leap.latest_at_or_before(utc("2027-06-01T00:00:00Z")), None);
        assert_eq!(
            leap.next_after(utc("2026-06-01T00:00:00Z")),
            Some(utc("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn parse_keeps_the_text_and_the_zone_and_describes() {
        let s = spec("30 2 * * *", "Europe/Berlin");
        assert_eq!(s.expression(), "30 2 * * *");
        assert_eq!(s.time_zone(), "Europe/Berlin");
        assert_eq!(s.describe(), "At 02:30.");
        assert_eq!(
            spec("@daily", "UTC").next_after(utc("2026-01-01T10:00:00Z")),
            Some(utc("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn parse_errors_name_the_field() {
        for bad in [
            "",
            "bogus",
            "61 * * * *",
            "* * * *",
            "0 0 0 1 1 * 2027",
            "0 0 * * 8",
        ] {
            let err = CronSpec::parse(bad, "UTC").unwrap_err();
            assert_eq!(field_of(err), "cron", "{bad:?}");
        }
        let err = CronSpec::parse("0 9 * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(field_of(err), "timeZone");
        let err = CronSpec::parse("0 9 * * *", "").unwrap_err();
        assert_eq!(field_of(err), "timeZone");
    }

    #[test]
    fn parse_refuses_expressions_that_never_fire() {
        for never in ["0 0 30 2 *", "0 0 31 4 *"] {
            let err = CronSpec::parse(never, "America/New_York").unwrap_err();
            let message = err.to_string();
            assert_eq!(field_of(err), "cron", "{never:?}");
            assert!(message.contains("never fires"), "{message}");
        }
        // Rare is not never: 29 February, the 5th Monday of February (2044).
        spec("0 0 29 2 *", "UTC");
        let s = spec("0 0 * 2 MON#5", "UTC");
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2044-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn jitter_offset_is_deterministic_and_below_the_jitter() {
        let fire = utc("2026-06-01T10:00:00Z");
        let jitter = Duration::from_secs(60);
        let a = jitter_offset("sch_1", fire, jitter);
        assert_eq!(a, jitter_offset("sch_1", fire, jitter));
        assert!(a < jitter);
        for i in 0..1000 {
            let offset = jitter_offset(&format!("sch_{i}"), fire, jitter);
            assert!(offset < jitter);
        }
        // A one-microsecond window has exactly one offset.
        assert_eq!(
            jitter_offset("sch_1", fire, Duration::from_micros(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn jitter_offset_spreads_schedule_ids_and_fire_times() {
        let fire = utc("2026-06-01T10:00:00Z");
        let jitter = Duration::from_secs(60);
        let offsets: HashSet<Duration> = (0..100)
            .map(|i| jitter_offset(&format!("sch_{i}"), fire, jitter))
            .collect();
        assert!(
            offsets.len() >= 95,
            "only {} distinct offsets",
            offsets.len()
        );
        // Spread over the window, not bunched at one end.
        let early = offsets.iter().filter(|o| **o < jitter / 2).count();
        assert!(
            (25..=75).contains(&early),
            "{early} of 100 in the first half"
        );
        let by_time: HashSet<Duration> = (0..100)
            .map(|i| jitter_offset("sch_1", fire + TimeDelta::minutes(i), jitter))
            .collect();
        assert!(by_time.len() >= 95);
    }

    #[test]
    fn jitter_offset_of_zero_jitter_is_zero() {
        let fire = utc("2026-06-01T10:00:00Z");
        assert_eq!(jitter_offset("sch_1", fire, Duration::ZERO), Duration::ZERO);
        assert_eq!(
            jitter_offset("sch_1", fire, Duration::from_nanos(999)),
            Duration::ZERO
        );
    }

    #[test]
    fn plan_fire_on_time_fires_due() {
        let s = spec("*/5 * * * *", "UTC");
        let due = utc("2026-06-01T10:00:00Z");
        for policy in [MisfirePolicy::Skip, MisfirePolicy::FireOnce] {
            let plan = plan_fire(
                &s,
                policy,
                due,
                utc("2026-06-01T10:00:02Z"),
                Duration::from_secs(60),
            );
            assert_eq!(
                plan,
                FirePlan {
                    fire: Some(due),
                    next: Some(utc("2026-06-01T10:05:00Z")),
                    skipped: 0,
                }
            );
        }
    }

    #[test]
    fn plan_fire_late_within_threshold_still_fires_due() {
        let s = spec("*/5 * * * *", "UTC");
        let due = utc("2026-06-01T10:00:00Z");
        let threshold = Duration::from_secs(60);
        // Exactly at the threshold is still on time.
        for now in ["2026-06-01T10:00:45Z", "2026-06-01T10:01:00Z"] {
            let plan = plan_fire(&s, MisfirePolicy::Skip, due, utc(now), threshold);
            assert_eq!(plan.fire, Some(due), "{now}");
            assert_eq!(plan.next, Some(utc("2026-06-01T10:05:00Z")));
            assert_eq!(plan.skipped, 0);
        }
        // A microsecond past it is a misfire.
        let plan = plan_fire(
            &s,
            MisfirePolicy::Skip,
            due,
            utc("2026-06-01T10:01:00.000001Z"),
            threshold,
        );
        assert_eq!(plan.fire, None);
    }

    #[test]
    fn plan_fire_within_threshold_catches_up_one_fire_per_tick() {
        // Per minute with a 5-minute threshold, the scheduler 3.5 minutes behind:
        // each tick fires the oldest fire time, and the next one is already due.
        let s = spec("* * * * *", "UTC");
        let now = utc("2026-06-01T10:03:30Z");
        let threshold = Duration::from_secs(300);
        let mut due = utc("2026-06-01T10:00:00Z");
        let mut fired = Vec::new();
        loop {
            let plan = plan_fire(&s, MisfirePolicy::Skip, due, now, threshold);
            assert_eq!(plan.skipped, 0);
            fired.push(plan.fire.unwrap());
            due = plan.next.unwrap();
            if due > now {
                break;
            }
        }
        assert_eq!(
            fired,
            utcs(&[
                "2026-06-01T10:00:00Z",
                "2026-06-01T10:01:00Z",
                "2026-06-01T10:02:00Z",
                "2026-06-01T10:03:00Z",
            ])
        );
        assert_eq!(due, utc("2026-06-01T10:04:00Z"));
    }

    #[test]
    fn plan_fire_missed_several_with_skip_fires_nothing() {
        let s = spec("0 * * * *", "UTC");
        let due = utc("2026-06-01T10:00:00Z");
        let plan = plan_fire(
            &s,
            MisfirePolicy::Skip,
            due,
            utc("2026-06-01T13:20:00Z"),
            Duration::from_secs(60),
        );
        // 10:00, 11:00, 12:00 and 13:00 got no job.
        assert_eq!(
            plan,
            FirePlan {
                fire: None,
                next: Some(utc("2026-06-01T14:00:00Z")),
                skipped: 4,
            }
        );
        // `now` on a fire time counts it, and next is strictly after it.
        let plan = plan_fire(
            &s,
            MisfirePolicy::Skip,
            due,
            utc("2026-06-01T13:00:00Z"),
            Duration::from_secs(60),
        );
        assert_eq!(plan.skipped, 4);
        assert_eq!(plan.next, Some(utc("2026-06-01T14:00:00Z")));
    }

    #[test]
    fn plan_fire_missed_with_fire_once_fires_the_latest() {
        let s = spec("0 * * * *", "UTC");
        let due = utc("2026-06-01T10:00:00Z");
        let plan = plan_fire(
            &s,
            MisfirePolicy::FireOnce,
            due,
            utc("2026-06-01T13:20:00Z"),
            Duration::from_secs(60),
        );
        assert_eq!(
            plan,
            FirePlan {
                fire: Some(utc("2026-06-01T13:00:00Z")),
                next: Some(utc("2026-06-01T14:00:00Z")),
                skipped: 3,
            }
        );
        // Only `due` itself missed: it is the one that fires.
        let plan = plan_fire(
            &s,
            MisfirePolicy::FireOnce,
            due,
            utc("2026-06-01T10:30:00Z"),
            Duration::from_secs(60),
        );
        assert_eq!(plan.fire, Some(due));
        assert_eq!(plan.next, Some(utc("2026-06-01T11:00:00Z")));
        assert_eq!(plan.skipped, 0);
    }

    #[test]
    fn plan_fire_across_a_dst_change_uses_real_fire_times() {
        // Daily 02:30 in New York, scheduler down from 2026-03-07 to 2026-03-10 noon.
        let s = spec("30 2 * * *", "America/New_York");
        let due = utc("2026-03-07T07:30:00Z");
        let now = utc("2026-03-10T12:00:00Z");
        let plan = plan_fire(
            &s,
            MisfirePolicy::FireOnce,
            due,
            now,
            Duration::from_secs(600),
        );
        assert_eq!(plan.fire, Some(utc("2026-03-10T06:30:00Z")));
        assert_eq!(plan.next, Some(utc("2026-03-11T06:30:00Z")));
        // 03-07, 03-08 (03:00 EDT), 03-09 passed over; 03-10 fired.
        assert_eq!(plan.skipped, 3);
    }

    #[test]
    fn plan_fire_counts_skips_up_to_a_cap() {
        let s = spec("* * * * * *", "UTC");
        let due = utc("2026-06-01T00:00:00Z");
        let plan = plan_fire(
            &s,
            MisfirePolicy::Skip,
            due,
            utc("2026-06-03T00:00:00Z"),
            Duration::from_secs(60),
        );
        assert_eq!(plan.skipped, MAX_SKIP_COUNT);
        assert_eq!(plan.next, Some(utc("2026-06-03T00:00:01Z")));
    }

    #[test]
    fn plan_fire_before_due_plans_nothing() {
        let s = spec("0 * * * *", "UTC");
        let due = utc("2026-06-01T10:00:00Z");
        let plan = plan_fire(
            &s,
            MisfirePolicy::FireOnce,
            due,
            utc("2026-06-01T09:59:59Z"),
            Duration::from_secs(60),
        );
        assert_eq!(
            plan,
            FirePlan {
                fire: None,
                next: Some(due),
                skipped: 0,
            }
        );
    }

    #[test]
    fn policies_round_trip_as_text_and_json() {
        for p in [MisfirePolicy::Skip, MisfirePolicy::FireOnce] {
            assert_eq!(p.as_str().parse::<MisfirePolicy>().unwrap(), p);
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.as_str())
            );
        }
        for p in [OverlapPolicy::Skip, OverlapPolicy::Allow] {
            assert_eq!(p.as_str().parse::<OverlapPolicy>().unwrap(), p);
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.as_str())
            );
        }
        assert_eq!(MisfirePolicy::FireOnce.as_str(), "fire_once");
        assert_eq!(
            serde_json::from_str::<MisfirePolicy>("\"fire_once\"").unwrap(),
            MisfirePolicy::FireOnce
        );
        assert_eq!(
            field_of("FireOnce".parse::<MisfirePolicy>().unwrap_err()),
            "misfirePolicy"
        );
        assert_eq!(
            field_of("never".parse::<OverlapPolicy>().unwrap_err()),
            "overlapPolicy"
        );
    }
}
