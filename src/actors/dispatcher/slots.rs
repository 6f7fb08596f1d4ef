//! One kind's slots, as its dispatcher counts them: the limit, the jobs
//! running, the buffer of jobs claimed ahead, and the slots claims in
//! flight have reserved. Plain arithmetic, no actor: the dispatcher owns one
//! per kind and keeps `running ≤ limit` and
//! `running + buffered + reserved ≤ limit + prefetch`.

use std::collections::VecDeque;

use crate::actors::worker::WorkerHandles;
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
}

impl KindSlots {
    pub(crate) fn new(
        kind: &'static str,
        limit: usize,
        prefetch: usize,
        worker: WorkerHandles,
    ) -> Self {
        KindSlots {
            kind,
            limit,
            worker,
            prefetch,
            running: 0,
            buffer: VecDeque::new(),
            reserved: 0,
            reserved_now: 0,
            maybe_ready: true,
            wakes: 0,
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
    pub(super) fn start_buffered(&mut self, marks: &mut Vec<(i64, &'static str)>) {
        let n = self
            .limit
            .saturating_sub(self.running)
            .min(self.buffer.len());
        if n == 0 {
            return;
        }
        self.running += n;
        let jobs: Vec<ClaimedJob> = self.buffer.drain(..n).collect();
        marks.extend(jobs.iter().filter(|j| !j.marked).map(|j| (j.id, self.kind)));
        self.worker.run(jobs);
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
                    outcome: Outcome::Released {
                        started: false,
                        marked: job.marked,
                    },
                    checkpoint: None,
                },
            })
            .collect()
    }
}
