//! One kind's slots, as its dispatcher counts them: the limit, the jobs
//! running, the buffer of jobs claimed ahead, and the slots claims in
//! flight have reserved. Plain arithmetic, no actor: the dispatcher owns one
//! per kind and keeps `running ≤ limit` and
//! `running + buffered + reserved ≤ limit + prefetch`.

use std::collections::VecDeque;

use super::adaptive::Adaptive;
use super::rate_window::RateWindow;
use crate::actors::worker::WorkerHandles;
use crate::config::JobConfig;
use crate::store::{ClaimedJob, Finished, Outcome};

/// The smallest batch a claim asks for (see [`KindSlots::claim_size`]).
const MIN_CLAIM: usize = 32;

/// A finished attempt waiting to be written, with what its event needs.
pub(super) struct PendingOutcome {
    pub kind: &'static str,
    pub max_attempts: u32,
    pub finished: Finished,
}

/// One kind's slots, as the dispatcher counts them.
pub(crate) struct KindSlots {
    pub kind: &'static str,
    pub limit: usize,
    pub worker: WorkerHandles,
    pub(super) prefetch: usize,
    pub(super) running: usize,
    /// Claimed, waiting for a free slot.
    pub(super) buffer: VecDeque<ClaimedJob>,
    pub(super) reserved: usize,
    /// Of `reserved`, the jobs claims in flight will mark started.
    pub(super) reserved_now: usize,
    /// Whether ready jobs of this kind may exist; cleared when a claim
    /// returns fewer jobs than asked (unless a wake came meanwhile), set by
    /// any wake and by a claim that got all it asked for.
    pub(super) maybe_ready: bool,
    /// Wakes so far; a claim remembers the count when it was sent.
    pub(super) wakes: u64,
    /// The kind's limit across every instance on the database, if any.
    pub(super) global_limit: Option<usize>,
    /// The code's limit (`JobConfig::concurrency`).
    pub(super) default_limit: usize,
    /// A stored override (`Errands::set_concurrency`); wins over the
    /// code's limit and over adaptive concurrency until reset.
    pub(super) override_limit: Option<usize>,
    pub(super) adaptive: Option<Adaptive>,
    pub(super) rate: Option<RateWindow>,
    /// Paused (this kind) until then; `i64::MAX` until resumed.
    pub(super) paused_until: Option<i64>,
    /// Throttled (`JobError::throttle`) until then.
    pub(super) throttled_until: Option<i64>,
    /// A wake for the rate window's next opening is set for this time.
    pub(super) rate_wake_at: Option<i64>,
}

impl KindSlots {
    pub(crate) fn new(kind: &'static str, config: &JobConfig, worker: WorkerHandles) -> Self {
        let limit = config.concurrency;
        KindSlots {
            kind,
            limit,
            worker,
            prefetch: config.prefetch_limit(),
            running: 0,
            buffer: VecDeque::new(),
            reserved: 0,
            reserved_now: 0,
            maybe_ready: true,
            wakes: 0,
            global_limit: config.global_concurrency,
            default_limit: limit,
            override_limit: None,
            adaptive: config.adaptive.map(|(min, max)| Adaptive::new(min, max)),
            rate: config.rate_limit.map(|(n, per)| {
                RateWindow::new(n, i64::try_from(per.as_millis()).unwrap_or(i64::MAX))
            }),
            paused_until: None,
            throttled_until: None,
            rate_wake_at: None,
        }
    }

    /// Sets `limit` from the override, the adaptive value or the code's
    /// default, in that order. Answers whether it changed.
    pub(super) fn refresh_limit(&mut self) -> bool {
        let limit = self
            .override_limit
            .or(self.adaptive.as_ref().map(Adaptive::current))
            .unwrap_or(self.default_limit);
        std::mem::replace(&mut self.limit, limit) != limit
    }

    /// Until when this kind may not start or claim jobs (its own pause, its
    /// queue's, or a throttle), if that is later than `now`.
    pub(super) fn held_until(&self, now: i64, queue_paused: Option<i64>) -> Option<i64> {
        [self.paused_until, self.throttled_until, queue_paused]
            .into_iter()
            .flatten()
            .filter(|until| *until > now)
            .max()
    }

    /// How many jobs a claim may take now, within the rate limit: no more
    /// than may start in the current window, so that no claimed job waits
    /// in the buffer for the window to open (another process could have
    /// run it).
    pub(super) fn claimable_at(&mut self, now: i64) -> usize {
        let claimable = self.claimable();
        match self.rate.as_mut() {
            None => claimable,
            Some(rate) => claimable.min(
                rate.room(now)
                    .saturating_sub(self.buffer.len() + self.reserved),
            ),
        }
    }

    /// Jobs of this kind may be ready.
    pub(super) fn wake(&mut self) {
        self.maybe_ready = true;
        self.wakes += 1;
    }

    /// How many more jobs a claim may take now.
    pub(super) fn claimable(&self) -> usize {
        self.limit
            .saturating_add(self.prefetch)
            .saturating_sub(self.running + self.buffer.len() + self.reserved)
    }

    /// Starts buffered jobs while slots are free. Jobs claimed ahead are
    /// added to `marks`: the next request marks them started.
    /// Under a rate limit, starts no more than the window allows (see
    /// [`KindSlots::rate_blocked_until`]).
    pub(super) fn start_buffered(&mut self, marks: &mut Vec<(i64, &'static str)>, now: i64) {
        let mut n = self
            .limit
            .saturating_sub(self.running)
            .min(self.buffer.len());
        if let Some(rate) = self.rate.as_mut() {
            n = n.min(rate.room(now));
            rate.record(now, n);
        }
        if n == 0 {
            return;
        }
        self.running += n;
        let jobs: Vec<ClaimedJob> = self.buffer.drain(..n).collect();
        marks.extend(jobs.iter().filter(|j| !j.marked).map(|j| (j.id, self.kind)));
        self.worker.run(jobs);
    }

    /// When the rate window next lets a job start, if jobs are waiting for
    /// it (buffered, or maybe ready in the store) and none may start now.
    pub(super) fn rate_blocked_until(&mut self, now: i64) -> Option<i64> {
        let rate = self.rate.as_mut()?;
        let waiting = !self.buffer.is_empty() || self.maybe_ready;
        (waiting && rate.room(now) == 0)
            .then(|| rate.next_opening())
            .flatten()
    }

    /// The most one request claims for this kind: a limit's worth (the rest
    /// of the prefetch is for the next request, so that one can claim while
    /// this one's jobs run), but at least [`MIN_CLAIM`] so that a low limit
    /// does not cost a transaction per job.
    pub(super) fn claim_size(&self) -> usize {
        self.limit.max(MIN_CLAIM)
    }

    /// How many of a claim of `n` can start at once: the slots free now
    /// that no buffered job or claim in flight will take.
    pub(super) fn start_now(&self, n: usize) -> usize {
        self.limit
            .saturating_sub(self.running + self.buffer.len() + self.reserved_now)
            .min(n)
    }

    /// Releases every buffered job: none of them started.
    pub(super) fn release_buffered(&mut self) -> Vec<PendingOutcome> {
        let kind = self.kind;
        self.buffer
            .drain(..)
            .map(|job| PendingOutcome {
                kind,
                max_attempts: job.max_attempts,
                finished: Finished {
                    id: job.id,
                    kind,
                    attempt: job.attempt,
                    outcome: Outcome::Released { started: false },
                    checkpoint: None,
                    marked: job.marked,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, marked: bool) -> ClaimedJob {
        ClaimedJob {
            id,
            kind: "k",
            payload: Vec::new(),
            attempt: 1,
            max_attempts: 3,
            checkpoint: None,
            marked,
        }
    }

    fn slots(limit: usize, prefetch: usize) -> KindSlots {
        let config = JobConfig::new().concurrency(limit).prefetch(prefetch);
        KindSlots::new("k", &config, WorkerHandles::detached())
    }

    /// `running ≤ limit` and `running + buffered + reserved ≤ limit + prefetch`.
    fn assert_invariants(s: &KindSlots) {
        assert!(
            s.running <= s.limit,
            "running {} > limit {}",
            s.running,
            s.limit
        );
        assert!(
            s.running + s.buffer.len() + s.reserved <= s.limit + s.prefetch,
            "running {} + buffered {} + reserved {} > {}",
            s.running,
            s.buffer.len(),
            s.reserved,
            s.limit + s.prefetch
        );
    }

    #[test]
    fn claims_never_take_more_than_limit_plus_prefetch_and_starts_never_exceed_the_limit() {
        let mut s = slots(4, 8);
        let mut marks = Vec::new();
        assert_eq!(s.claimable(), 12);
        // A claim in flight reserves its slots...
        let n = s.claimable().min(s.claim_size());
        let now = s.start_now(n);
        assert_eq!((n, now), (12, 4));
        s.reserved += n;
        s.reserved_now += now;
        assert_eq!(s.claimable(), 0);
        assert_eq!(s.start_now(5), 0, "nothing more starts at once");
        assert_invariants(&s);
        // ...and its answer fills the buffer; only `limit` start.
        s.reserved -= n;
        s.reserved_now -= now;
        s.buffer.extend((0..12).map(|id| job(id, id < 4)));
        s.start_buffered(&mut marks, 0);
        assert_eq!((s.running, s.buffer.len()), (4, 8));
        assert!(
            marks.is_empty(),
            "the four started at once were marked in the claim"
        );
        assert_invariants(&s);
        // One finishes: the next starts from the buffer and needs a mark.
        s.running -= 1;
        s.start_buffered(&mut marks, 0);
        assert_eq!((s.running, s.buffer.len()), (4, 7));
        assert_eq!(marks, [(4, "k")]);
        assert_eq!(s.claimable(), 1);
        assert_invariants(&s);
    }

    #[test]
    fn a_serial_kind_claims_in_batches_but_runs_one_at_a_time() {
        let mut s = slots(1, 64);
        let mut marks = Vec::new();
        assert_eq!(s.claim_size(), MIN_CLAIM);
        let n = s.claimable().min(s.claim_size());
        assert_eq!((n, s.start_now(n)), (MIN_CLAIM, 1));
        s.buffer.extend((0..n as i64).map(|id| job(id, id == 0)));
        s.start_buffered(&mut marks, 0);
        assert_eq!(s.running, 1);
        s.start_buffered(&mut marks, 0);
        assert_eq!(s.running, 1, "never more than one");
        assert_invariants(&s);
    }

    #[test]
    fn a_wake_keeps_the_kind_ready_and_release_returns_every_buffered_job() {
        let mut s = slots(2, 2);
        s.maybe_ready = false;
        let before = s.wakes;
        s.wake();
        assert!(s.maybe_ready);
        assert_eq!(
            s.wakes,
            before + 1,
            "a claim in flight can tell a wake came"
        );
        s.buffer.extend([job(1, false), job(2, true)]);
        let released = s.release_buffered();
        assert!(s.buffer.is_empty());
        let unstarted: Vec<i64> = released
            .iter()
            .filter(|p| matches!(p.finished.outcome, Outcome::Released { started: false }))
            .map(|p| p.finished.id)
            .collect();
        assert_eq!(unstarted, [1, 2]);
    }
}
