//! Where the next claim of each queue starts reading the claim index.
//!
//! A claimed job's entry stays in `jobs_claim_idx` (a partial index on queued
//! jobs) until vacuum removes it, so a claim that always starts at the head of
//! the index steps over every job claimed since the last vacuum: at the end of
//! a million-job backlog, a million dead entries per claim. Each claim
//! therefore answers, per queue, its head: the first due job still queued
//! after it (of any tenant, full ones included), or the queue clock if lower,
//! or the clock alone when nothing is due. Later claims of this store read from
//! a head on, plus the priorities more urgent than it (`CLAIM_SQL`'s
//! `stretches`).
//!
//! A head is used only once it is [`SETTLED`] old: a job enqueued at a clock
//! read just before a claim advanced the clock, and committed after that
//! claim's snapshot, may sit below the head that claim saw, never below one
//! taken before the enqueue began (the clock only grows). Jobs that become due
//! later (retries, `runAt`) may also sit below a head. So a floor is a hint,
//! never the truth: every [`FULL_SCAN_EVERY`] a claim reads each queue from
//! the start, and a job left below a floor waits at most that long.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How often a claim ignores the floor and reads its queue from the start.
pub(super) const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// How old a head must be before claims start from it: longer than an
/// enqueue statement takes.
pub(super) const SETTLED: Duration = Duration::from_millis(50);

/// The (priority, vtime) a claim passes for a queue it reads from the start.
pub(super) const NO_FLOOR: (i16, i64) = (0, i64::MIN);

/// The priority a floor takes when its queue had no due job: the default one
/// (most jobs'), so the next job of that priority is found from the clock.
const DEFAULT_PRIORITY: i16 = 5;

/// A claim's answer for one queue: the first due job's (priority, vtime),
/// the vtime alone when none was due.
pub(super) type Head = (String, Option<i16>, i64);

#[derive(Debug, Default)]
pub(super) struct ClaimFloors {
    queues: HashMap<String, QueueFloors>,
}

#[derive(Debug)]
struct QueueFloors {
    /// Heads answered by claims, oldest first, trimmed to the newest one that
    /// is settled.
    heads: VecDeque<(Instant, (i16, i64))>,
    full_scan_at: Instant,
}

impl QueueFloors {
    /// The newest settled head, dropping the older ones.
    fn settled(&mut self, now: Instant) -> Option<(i16, i64)> {
        let settled = |at: Instant| now.saturating_duration_since(at) >= SETTLED;
        while self.heads.len() >= 2 && self.heads.get(1).is_some_and(|&(at, _)| settled(at)) {
            self.heads.pop_front();
        }
        self.heads
            .front()
            .filter(|&&(at, _)| settled(at))
            .map(|&(_, head)| head)
    }
}

impl ClaimFloors {
    /// The floors to claim `queues` with (in their order), as parallel
    /// priority and vtime lists; a queue due for a full scan, or without a
    /// settled head, gets [`NO_FLOOR`].
    pub(super) fn for_claim(&mut self, queues: &[String], now: Instant) -> (Vec<i16>, Vec<i64>) {
        queues
            .iter()
            .map(|queue| {
                let entry = self
                    .queues
                    .entry(queue.clone())
                    .or_insert_with(|| QueueFloors {
                        heads: VecDeque::new(),
                        full_scan_at: now,
                    });
                if now.saturating_duration_since(entry.full_scan_at) >= FULL_SCAN_EVERY {
                    entry.full_scan_at = now;
                    return NO_FLOOR;
                }
                entry.settled(now).unwrap_or(NO_FLOOR)
            })
            .unzip()
    }

    /// Records the heads a claim answered (at `now`).
    pub(super) fn record(&mut self, heads: &[Head], now: Instant) {
        for (queue, priority, vtime) in heads {
            let Some(entry) = self.queues.get_mut(queue) else {
                continue;
            };
            let priority = priority
                .or_else(|| entry.heads.back().map(|&(_, (p, _))| p))
                .unwrap_or(DEFAULT_PRIORITY);
            entry.heads.push_back((now, (priority, *vtime)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Vec<String> {
        vec!["a".to_string(), "b".to_string()]
    }

    fn no_floors() -> (Vec<i16>, Vec<i64>) {
        (vec![NO_FLOOR.0; 2], vec![NO_FLOOR.1; 2])
    }

    #[test]
    fn a_queue_without_a_settled_head_is_read_from_the_start() {
        let mut floors = ClaimFloors::default();
        let start = Instant::now();
        assert_eq!(floors.for_claim(&queues(), start), no_floors());
        floors.record(&[("a".to_string(), Some(5), 1_000)], start);
        assert_eq!(
            floors.for_claim(&queues(), start + SETTLED / 2),
            no_floors(),
            "a head is not used before it is settled"
        );
    }

    #[test]
    fn claims_start_at_the_newest_settled_head_until_a_full_scan_is_due() {
        let mut floors = ClaimFloors::default();
        let start = Instant::now();
        floors.for_claim(&queues(), start);
        floors.record(&[("a".to_string(), Some(5), 1_000)], start);
        floors.record(&[("a".to_string(), Some(5), 2_000)], start + SETTLED);
        floors.record(&[("a".to_string(), Some(5), 3_000)], start + SETTLED * 2);

        assert_eq!(
            floors.for_claim(&queues(), start + SETTLED * 2 + SETTLED / 2),
            (vec![5, NO_FLOOR.0], vec![2_000, NO_FLOOR.1]),
            "a from its newest settled head, b (no head) from the start"
        );
        assert_eq!(
            floors.for_claim(&queues(), start + FULL_SCAN_EVERY),
            no_floors(),
            "a full scan every FULL_SCAN_EVERY finds jobs left below a floor"
        );
        assert_eq!(
            floors
                .for_claim(&queues(), start + FULL_SCAN_EVERY + SETTLED)
                .1[0],
            3_000,
            "the next claim uses the floors again"
        );
    }

    #[test]
    fn a_queue_with_nothing_due_keeps_the_last_priority_at_the_clock() {
        let mut floors = ClaimFloors::default();
        let start = Instant::now();
        floors.for_claim(&queues(), start);
        floors.record(&[("a".to_string(), Some(3), 1_000)], start);
        floors.record(
            &[("a".to_string(), None, 1_500), ("b".to_string(), None, 7)],
            start + SETTLED,
        );
        assert_eq!(
            floors.for_claim(&queues(), start + SETTLED * 2),
            (vec![3, DEFAULT_PRIORITY], vec![1_500, 7])
        );
    }
}
