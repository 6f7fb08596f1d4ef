//! The rows and requests that cross the [`Store`](super::Store) boundary.

/// A job about to be inserted.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub queue: &'static str,
    pub kind: &'static str,
    pub payload: Vec<u8>,
    pub run_at: i64,
    pub max_attempts: u32,
    pub created_at: i64,
}

/// A job claimed by this process, handed to a worker.
#[derive(Debug)]
pub(crate) struct ClaimedJob {
    pub id: i64,
    pub kind: &'static str,
    pub payload: Vec<u8>,
    /// The number of this attempt (1 for the first).
    pub attempt: u32,
    /// Attempts it may use: the configured maximum plus any attempt given
    /// back at recovery.
    pub max_attempts: u32,
    /// Saved progress of a resumable job.
    pub checkpoint: Option<Vec<u8>>,
    /// Claimed to start at once (or given an attempt back once already),
    /// so marked started in the claim itself. Otherwise claimed ahead (prefetch): `claimed`, not `running`, until
    /// the dispatcher starts it and marks it ([`FinishAndClaim::started`]).
    pub marked: bool,
}

/// Claim up to `n` ready jobs of `kind`, the first `start_now` of them to
/// start at once (the rest are claimed ahead).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub kind: &'static str,
    pub n: usize,
    pub start_now: usize,
    /// The kind's limit across every instance: the claim takes no more
    /// than that minus the kind's rows already claimed.
    pub global_limit: Option<usize>,
}

/// How an attempt ended, as written back to the store.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The handler returned `Ok`.
    Completed,
    /// Failed; run again at `run_at`.
    Retry { run_at: i64, error: String },
    /// Failed for good (attempts used up, permanent error, bad payload).
    Dead { error: String },
    /// Not finished at shutdown: back to the queue, this attempt not
    /// counted. `started` is false for a job claimed ahead (prefetch) whose
    /// handler never ran.
    Released { started: bool },
    /// Cancelled while it ran ([`Errands::cancel`](crate::Errands::cancel)):
    /// kept as `cancelled` with this reason, never retried.
    Cancelled { reason: String },
    /// Run again at `run_at` without using an attempt (a snooze, or a
    /// throttle of its kind): one more attempt is allowed, as Oban does.
    Snooze { run_at: i64 },
}

/// One finished attempt.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub id: i64,
    /// Its kind (the batch names the queue), for the counts.
    pub kind: &'static str,
    /// The attempt this outcome belongs to: the write is conditioned on it
    /// (and on the owner), so a stale outcome can never touch a later attempt.
    pub attempt: u32,
    pub outcome: Outcome,
    /// Progress to save with the outcome (resumable jobs), if any changed.
    pub checkpoint: Option<Vec<u8>>,
    /// Whether the row was marked started (at claim, or by an earlier
    /// request), for the counts: a short job's mark is dropped when its
    /// outcome goes in the same request, and a job released from the
    /// buffer never started. Set by the dispatcher as it sends.
    pub marked: bool,
}

/// The dispatcher's request: mark these claimed-ahead jobs started, write
/// these outcomes, then claim ready jobs of each kind.
#[derive(Debug, Default)]
pub(crate) struct FinishAndClaim {
    /// Jobs claimed ahead whose handlers have started: (id, kind).
    pub started: Vec<(i64, &'static str)>,
    pub finished: Vec<Finished>,
    pub queue: &'static str,
    pub claims: Vec<Claim>,
    pub now: i64,
}

/// The store's answer to a [`FinishAndClaim`].
#[derive(Debug, Default)]
pub(crate) struct FinishedAndClaimed {
    /// The jobs claimed, in claim order.
    pub claimed: Vec<ClaimedJob>,
    /// Indexes (into the request's `finished`) of outcomes that could not be
    /// written because the database is full; everything else committed.
    /// The caller keeps them and tries again later.
    pub unwritten: Vec<usize>,
}

/// Which dead jobs a requeue or purge applies to.
#[derive(Debug, Clone)]
pub(crate) enum DeadTarget {
    One(i64),
    Queue(String),
    All,
}

/// A stored knob, shared by every instance on the database.
#[derive(Debug, Clone)]
pub(crate) enum ControlWrite {
    /// A kind's concurrency override; `None` goes back to the code's value.
    Concurrency {
        queue: String,
        kind: String,
        limit: Option<usize>,
    },
    /// Pause a queue (`kind` `None`) or a kind until a time (`i64::MAX`:
    /// until resumed); `until` `None` resumes.
    Pause {
        queue: String,
        kind: Option<String>,
        until: Option<i64>,
    },
    /// Hold a kind until `until` (kept if a later throttle is stored).
    Throttle {
        queue: String,
        kind: String,
        until: i64,
    },
}

/// One row of stored knobs: a queue's (`kind` empty) or a kind's.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ControlRow {
    pub queue: String,
    /// Empty for the queue's own row.
    pub kind: String,
    pub concurrency: Option<usize>,
    pub paused_until: Option<i64>,
    pub throttled_until: Option<i64>,
}

/// What a dispatcher reads at each poll: its queue's stored knobs, and the
/// cancel requests for jobs this instance holds in it.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueControls {
    pub rows: Vec<ControlRow>,
    /// (job id, reason)
    pub cancels: Vec<(i64, String)>,
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CancelAnswer {
    /// The job had not started: it is now `cancelled`.
    Cancelled,
    /// It is running (or claimed) in `queue`: the request is stored for
    /// the instance that holds it.
    Requested { queue: String },
}
