//! Retry back-off: exponential with jitter, capped.

use std::time::Duration;

/// `base * 2^(failures-1)`, capped at `max`, then spread by ±`jitter` so that
/// many jobs failing together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// Fraction of the delay to spread by, in `0.0..=1.0`.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// After failures of the platform under a job (the object store or the
    /// database unavailable, see [`crate::failure::FailureCode::is_transient`]):
    /// 15 s, 30 s, 1 min, 2 min, 4 min, 8 min, then 10 min (±20 %), so that
    /// an outage of a few minutes does not use up a job's attempts in
    /// seconds (5 attempts span about 4 minutes of back-off, 8 about 25).
    pub const fn transient() -> Backoff {
        Backoff {
            base: Duration::from_secs(15),
            max: Duration::from_secs(600),
            jitter: 0.2,
        }
    }

    /// The delay before the next attempt after `failures` failed attempts (1-based).
    pub fn delay(&self, failures: i32) -> Duration {
        let exponent = failures.saturating_sub(1).clamp(0, 30) as u32;
        let raw = self.base.saturating_mul(1u32 << exponent).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
        raw.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_failure_within_jitter() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(60),
            jitter: 0.1,
        };
        for (failures, expected_ms) in [(1, 100.0), (2, 200.0), (3, 400.0), (6, 3200.0)] {
            for _ in 0..50 {
                let got = backoff.delay(failures).as_secs_f64() * 1000.0;
                assert!(
                    got >= expected_ms * 0.9 - 0.001 && got <= expected_ms * 1.1 + 0.001,
                    "failures={failures}: {got}ms not within 10% of {expected_ms}ms"
                );
            }
        }
    }

    #[test]
    fn transient_failures_back_off_for_minutes() {
        let backoff = Backoff::transient();
        let expected = [15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0];
        for (failures, seconds) in (1..).zip(expected) {
            let got = backoff.delay(failures).as_secs_f64();
            assert!(
                got >= seconds * 0.8 - 0.001 && got <= seconds * 1.2 + 0.001,
                "failures={failures}: {got}s not within 20% of {seconds}s"
            );
        }
        let four: f64 = (1..=4).map(|f| backoff.delay(f).as_secs_f64()).sum();
        assert!(four >= 180.0, "4 back-offs span {four}s");
    }

    #[test]
    fn is_capped_and_jitter_spreads() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            jitter: 0.5,
        };
        let delays: Vec<Duration> = (0..200).map(|_| backoff.delay(40)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(15)));
        let distinct: std::collections::HashSet<_> = delays.iter().map(|d| d.as_millis()).collect();
        assert!(
            distinct.len() > 50,
            "jitter should spread delays, got {} distinct",
            distinct.len()
        );
    }
}
