//! Adaptive concurrency ([`JobConfig::adaptive`](crate::JobConfig::adaptive)):
//! a kind's limit in this instance moves within `min..=max`, down when its
//! attempts strain (time out, or throttle their kind) and up again while
//! they succeed.
//!
//! It is additive increase, multiplicative decrease, as TCP's congestion
//! window: one more slot after a limit's worth of successes in a row, a
//! quarter fewer (at least one) on a strained attempt. Only attempts that
//! started after the last decrease can cause another: when an upstream
//! slows down, the ten jobs already running all time out together, and
//! that is one signal, not ten (which would drop the limit to `min` at
//! once).

use std::time::{Duration, Instant};

/// How an attempt ended, as adaptive concurrency reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptSignal {
    /// It completed.
    Succeeded,
    /// It timed out, or throttled its kind.
    Strained,
    /// Anything else (an error of its own says nothing about load).
    Neutral,
}

/// One adaptive kind's limit.
#[derive(Debug)]
pub(crate) struct Adaptive {
    pub(crate) min: usize,
    pub(crate) max: usize,
    current: usize,
    successes: usize,
    last_decrease: Option<Instant>,
}

impl Adaptive {
    /// Starts at `max`: a kind is trusted until it strains.
    pub(crate) fn new(min: usize, max: usize) -> Adaptive {
        Adaptive {
            min,
            max,
            current: max,
            successes: 0,
            last_decrease: None,
        }
    }

    /// The limit now.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// An attempt that ran for `took` ended at `now`; answers the new
    /// limit if it moved.
    pub(crate) fn record(
        &mut self,
        signal: AttemptSignal,
        took: Duration,
        now: Instant,
    ) -> Option<usize> {
        match signal {
            AttemptSignal::Succeeded => {
                self.successes += 1;
                if self.successes >= self.current && self.current < self.max {
                    self.successes = 0;
                    self.current += 1;
                    return Some(self.current);
                }
                None
            }
            AttemptSignal::Strained => {
                self.successes = 0;
                let started = now.checked_sub(took).unwrap_or(now);
                if self.last_decrease.is_some_and(|at| started < at) {
                    return None;
                }
                let next = self
                    .current
                    .saturating_sub((self.current / 4).max(1))
                    .max(self.min);
                self.last_decrease = Some(now);
                (next != self.current).then(|| {
                    self.current = next;
                    next
                })
            }
            AttemptSignal::Neutral => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_once_per_wave_of_strain_and_grows_back_while_attempts_succeed() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(2, 8);
        let second = Duration::from_secs(1);
        // Eight attempts started together all time out: one decrease.
        let t1 = t0 + second;
        assert_eq!(a.record(AttemptSignal::Strained, second, t1), Some(6));
        for _ in 0..7 {
            assert_eq!(a.record(AttemptSignal::Strained, second, t1), None);
        }
        // One that started after the decrease strains again.
        let t2 = t1 + 2 * second;
        assert_eq!(a.record(AttemptSignal::Strained, second, t2), Some(5));
        let t3 = t2 + 2 * second;
        assert_eq!(a.record(AttemptSignal::Strained, second, t3), Some(4));
        let t4 = t3 + 2 * second;
        assert_eq!(a.record(AttemptSignal::Strained, second, t4), Some(3));
        let t5 = t4 + 2 * second;
        assert_eq!(a.record(AttemptSignal::Strained, second, t5), Some(2));
        let t6 = t5 + 2 * second;
        assert_eq!(a.record(AttemptSignal::Strained, second, t6), None, "min");
        // A limit's worth of successes adds one, up to max.
        let grown: Vec<usize> = (0..100)
            .filter_map(|_| a.record(AttemptSignal::Succeeded, second, t6))
            .collect();
        assert_eq!(grown, [3, 4, 5, 6, 7, 8]);
        assert_eq!(a.current(), 8);
    }
}
