//! Per-job-type settings: concurrency, attempts, backoff, timeout.
//!
//! The defaults follow what production queues settled on (Sidekiq and Oban
//! both retry about 20–25 times over roughly a day): 25 attempts,
//! exponential backoff from one second capped at one hour, with jitter so
//! that a burst of failures does not come back as a burst.

use std::time::Duration;

/// How long to wait before the next attempt of a failed job.
#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    /// The same delay after every failure.
    Fixed(Duration),
    /// `base * 2^(attempt-1)`, capped at `max`, plus up to `jitter` of that
    /// delay at random (0.0–1.0).
    Exponential {
        /// Delay after the first failure.
        base: Duration,
        /// Upper bound before jitter.
        max: Duration,
        /// Random extra, as a fraction of the delay.
        jitter: f64,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.25,
        }
    }
}

impl Backoff {
    /// An exponential backoff without jitter; handy when tests need exact times.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff::Exponential {
            base,
            max,
            jitter: 0.0,
        }
    }

    /// The delay after the failed attempt number `attempt` (1-based).
    /// Never panics: huge values saturate (a retry due after the year 9999
    /// is stored as due then, i.e. never).
    ///
    /// ```
    /// use errands::Backoff;
    /// use std::time::Duration;
    /// let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(10));
    /// assert_eq!(b.delay(1), Duration::from_secs(1));
    /// assert_eq!(b.delay(3), Duration::from_secs(4));
    /// assert_eq!(b.delay(30), Duration::from_secs(10));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        match self {
            Backoff::Fixed(d) => *d,
            Backoff::Exponential { base, max, jitter } => {
                let shift = attempt.saturating_sub(1).min(40);
                let raw = base.saturating_mul(1u32 << shift.min(31));
                let raw = if shift > 31 { *max } else { raw };
                let capped = raw.min(*max);
                // Saturating throughout: `max: Duration::MAX` means "no cap",
                // and no backoff may panic on the outcome path.
                let jitter = jitter.clamp(0.0, 1.0);
                if jitter > 0.0 {
                    let extra = Duration::try_from_secs_f64(
                        capped.as_secs_f64() * fastrand::f64() * jitter,
                    )
                    .unwrap_or(Duration::MAX);
                    capped.saturating_add(extra)
                } else {
                    capped
                }
            }
        }
    }
}

/// The smallest default prefetch. A kind with `concurrency(1)` (one call at
/// a time to a rate-limited API) would otherwise claim one or two jobs per
/// transaction and wait for a commit between jobs: measured, a serial no-op
/// drain ran at 0.13× the limit-64 drain; with batches of claims it runs
/// one job at a time without waiting for the store.
pub const MIN_DEFAULT_PREFETCH: usize = 64;

/// Settings for one job type, given at registration.
///
/// ```
/// use errands::{Backoff, JobConfig};
/// use std::time::Duration;
/// let config = JobConfig::new()
///     .concurrency(8)
///     .max_attempts(5)
///     .backoff(Backoff::Fixed(Duration::from_secs(30)))
///     .timeout(Duration::from_secs(60));
/// assert_eq!(config.concurrency_limit(), 8);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    pub(crate) concurrency: usize,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) timeout: Option<Duration>,
    pub(crate) prefetch: Option<usize>,
    pub(crate) global_concurrency: Option<usize>,
    pub(crate) rate_limit: Option<(usize, Duration)>,
    pub(crate) adaptive: Option<(usize, usize)>,
    pub(crate) cancel_grace: Duration,
}

/// How long a cancelled job's handler may take to stop by default
/// ([`JobConfig::cancel_grace`]).
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            concurrency: 10,
            max_attempts: 25,
            backoff: Backoff::default(),
            timeout: None,
            prefetch: None,
            global_concurrency: None,
            rate_limit: None,
            adaptive: None,
            cancel_grace: DEFAULT_CANCEL_GRACE,
        }
    }
}

impl JobConfig {
    /// The defaults: concurrency 10, 25 attempts, exponential backoff, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many jobs of the type run at once in this process (≥ 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Attempts before the job is dead (≥ 1). Stored in each row at enqueue
    /// and fixed from then on (as Oban and Sidekiq do): a job gets
    /// `EnqueueOptions::max_attempts` if given, else the enqueuing process's
    /// registration, else `Job::config()`. A process that only enqueues a
    /// kind therefore uses `Job::config()`: put the policy there, where both
    /// the producer and the worker read it.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The delay policy between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// An attempt running longer than this is stopped and counts as failed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many jobs beyond the running ones this process may claim ahead,
    /// so the next job starts the moment a slot frees (default: twice the
    /// concurrency limit, at least [`MIN_DEFAULT_PREFETCH`], which lets the
    /// next batch be claimed while the current one runs, and lets a serial
    /// kind claim many jobs per transaction; 0 turns it off). Claimed-ahead
    /// jobs are [`JobState::Claimed`](crate::JobState::Claimed) until they
    /// start; at shutdown they go straight back to the queue, their attempt
    /// not counted.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// At most this many jobs of the type run at once across *every*
    /// instance sharing the database (≥ 1), on top of each instance's own
    /// [`JobConfig::concurrency`]. Enforced inside each claim's
    /// transaction, which counts the kind's claimed rows (on PostgreSQL
    /// under a per-kind transaction advisory lock, so two hosts cannot
    /// both take the last slot). A kind with a global limit claims no jobs
    /// ahead by default: a claimed job holds a global slot, so prefetching
    /// on one host would starve the others.
    ///
    /// ```
    /// use errands::JobConfig;
    /// // Four per process, but never more than six across the fleet: the
    /// // partner's API allows six connections.
    /// let config = JobConfig::new().concurrency(4).global_concurrency(6);
    /// assert_eq!(config.global_concurrency_limit(), Some(6));
    /// assert_eq!(config.prefetch_limit(), 0);
    /// ```
    pub fn global_concurrency(mut self, n: usize) -> Self {
        self.global_concurrency = Some(n);
        self
    }

    /// No more than `n` jobs of the type start in any window of `per`, in
    /// this instance (both ≥ 1; [`Builder::start`](crate::Builder::start)
    /// refuses 0). Jobs wait in the queue, not in memory: a rate-limited
    /// kind claims no more than its window lets start.
    ///
    /// ```
    /// use errands::JobConfig;
    /// use std::time::Duration;
    /// // The SMS gateway allows ten messages a second.
    /// let config = JobConfig::new().rate_limit(10, Duration::from_secs(1));
    /// assert_eq!(config.rate(), Some((10, Duration::from_secs(1))));
    /// ```
    pub fn rate_limit(mut self, n: usize, per: Duration) -> Self {
        self.rate_limit = Some((n, per));
        self
    }

    /// The configured rate limit, if any: `(n, per)`.
    pub fn rate(&self) -> Option<(usize, Duration)> {
        self.rate_limit
    }

    /// Lets errands move the type's limit in this instance within
    /// `range`: down by a quarter when attempts time out or throttle
    /// ([`JobError::throttle`](crate::JobError::throttle)), up by one after
    /// a limit's worth of successes. It starts at the top of the range
    /// (which becomes the [`JobConfig::concurrency`]). A stored override
    /// ([`Errands::set_concurrency`](crate::Errands::set_concurrency)) wins
    /// until reset. Each move is an
    /// [`Event::ConcurrencyChanged`](crate::Event::ConcurrencyChanged) and
    /// shows in [`Errands::controls`](crate::Errands::controls).
    ///
    /// ```
    /// use errands::JobConfig;
    /// use std::time::Duration;
    /// let config = JobConfig::new().adaptive(2..=16).timeout(Duration::from_secs(30));
    /// assert_eq!(config.concurrency_limit(), 16);
    /// assert_eq!(config.adaptive_range(), Some(2..=16));
    /// ```
    pub fn adaptive(mut self, range: std::ops::RangeInclusive<usize>) -> Self {
        let (min, max) = range.into_inner();
        self.adaptive = Some((min, max));
        self.concurrency = max;
        self
    }

    /// The adaptive range, if any.
    pub fn adaptive_range(&self) -> Option<std::ops::RangeInclusive<usize>> {
        self.adaptive.map(|(min, max)| min..=max)
    }

    /// How long a cancelled job's handler has to stop (return after
    /// [`JobContext::cancelled`](crate::JobContext::cancelled)) before it
    /// is aborted. Default [`DEFAULT_CANCEL_GRACE`].
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// The configured global limit, if any.
    pub fn global_concurrency_limit(&self) -> Option<usize> {
        self.global_concurrency
    }

    /// The configured prefetch (by default twice the concurrency limit, at
    /// least [`MIN_DEFAULT_PREFETCH`]; 0 for a kind with a global limit).
    pub fn prefetch_limit(&self) -> usize {
        if self.global_concurrency.is_some() && self.prefetch.is_none() {
            return 0;
        }
        self.prefetch.unwrap_or(
            self.concurrency
                .saturating_mul(2)
                .clamp(MIN_DEFAULT_PREFETCH, crate::MAX_CONCURRENCY),
        )
    }

    /// The configured concurrency limit.
    pub fn concurrency_limit(&self) -> usize {
        self.concurrency
    }

    /// The configured maximum number of attempts.
    pub fn attempts_allowed(&self) -> u32 {
        self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_up_to_its_fraction_and_varies() {
        let backoff = Backoff::Exponential {
            base: Duration::from_secs(4),
            max: Duration::from_secs(3600),
            jitter: 0.25,
        };
        let delays: Vec<Duration> = (0..200).map(|_| backoff.delay(2)).collect();
        let (low, high) = (Duration::from_secs(8), Duration::from_secs(10));
        assert!(delays.iter().all(|d| *d >= low && *d <= high), "{delays:?}");
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads retries out");
        assert!(delays.iter().any(|d| *d > Duration::from_millis(9_500)));
    }

    #[test]
    fn huge_settings_saturate_instead_of_panicking() {
        let uncapped = Backoff::Exponential {
            base: Duration::from_secs(1),
            max: Duration::MAX,
            jitter: 1.0,
        };
        assert_eq!(uncapped.delay(40), Duration::MAX);
        assert_eq!(Backoff::Fixed(Duration::MAX).delay(1), Duration::MAX);
        assert_eq!(
            JobConfig::new().concurrency(usize::MAX).prefetch_limit(),
            crate::MAX_CONCURRENCY
        );
        assert_eq!(
            JobConfig::new().concurrency(1).prefetch_limit(),
            MIN_DEFAULT_PREFETCH
        );
    }
}
