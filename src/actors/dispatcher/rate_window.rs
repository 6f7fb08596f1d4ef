//! A kind's rate limit ([`JobConfig::rate_limit`](crate::JobConfig::rate_limit)):
//! no more than `n` starts in any window of `per`, in this instance.
//!
//! A sliding log of the last `n` start times, not a token bucket: a bucket
//! lets a burst of `n` through right after another burst of `n` at the end
//! of the previous window (2n within one `per`); the log answers exactly
//! "how many started in the last `per`". It costs one `VecDeque` of `n`
//! times per rate-limited kind, and nothing for the others.

use std::collections::VecDeque;

/// The starts of one kind within the last window.
#[derive(Debug)]
pub(crate) struct RateWindow {
    n: usize,
    per_ms: i64,
    /// Start times (ms), oldest first; at most `n`.
    starts: VecDeque<i64>,
}

impl RateWindow {
    /// At most `n` starts per `per_ms` milliseconds (both ≥ 1).
    pub(crate) fn new(n: usize, per_ms: i64) -> RateWindow {
        RateWindow {
            n,
            per_ms: per_ms.max(1),
            starts: VecDeque::with_capacity(n.min(1024)),
        }
    }

    /// How many more may start at `now`.
    pub(crate) fn room(&mut self, now: i64) -> usize {
        while self
            .starts
            .front()
            .is_some_and(|t| *t <= now.saturating_sub(self.per_ms))
        {
            self.starts.pop_front();
        }
        self.n.saturating_sub(self.starts.len())
    }

    /// `k` jobs started at `now`.
    pub(crate) fn record(&mut self, now: i64, k: usize) {
        for _ in 0..k {
            if self.starts.len() == self.n {
                self.starts.pop_front();
            }
            self.starts.push_back(now);
        }
    }

    /// When the next start is allowed, if none is now.
    pub(crate) fn next_opening(&self) -> Option<i64> {
        if self.starts.len() < self.n {
            return None;
        }
        self.starts.front().map(|t| t.saturating_add(self.per_ms))
    }

    /// The limit, for inspection: `(n, per_ms)`.
    pub(crate) fn limit(&self) -> (usize, i64) {
        (self.n, self.per_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_n_in_any_window() {
        let mut w = RateWindow::new(3, 1000);
        assert_eq!(w.room(0), 3);
        w.record(0, 2);
        w.record(400, 1);
        assert_eq!(w.room(999), 0);
        assert_eq!(w.next_opening(), Some(1000));
        assert_eq!(w.room(1000), 2, "the two at 0 left the window");
        w.record(1000, 2);
        assert_eq!(w.room(1399), 0);
        assert_eq!(w.room(1400), 1);
    }
}
