//! What an operator can see: one job's state, and counts by queue and kind.
//!
//! Every type here is `Serialize`, so a status endpoint can return it as it
//! is (`HttpResponse::Ok().json(info)`): states as lower-case strings, times
//! as RFC 3339 UTC strings with milliseconds (`"2026-11-24T10:28:28.123Z"`).

use std::fmt;

use serde::Serialize;
use std::time::SystemTime;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for its `run_at` (a delayed job, or a retry in backoff).
    Scheduled,
    /// Ready to run as soon as a worker has a free slot.
    Available,
    /// Claimed ahead by a process (prefetch) and waiting there for a free
    /// slot; its handler has not started.
    Claimed,
    /// Its handler is running (an attempt is in progress).
    Running,
    /// Attempts used up, a permanent error, or an undecodable payload.
    /// Kept with its last error until requeued or purged.
    Dead,
    /// Finished successfully; only seen when completed jobs are retained.
    Completed,
    /// Cancelled ([`Errands::cancel`](crate::Errands::cancel)) before or
    /// while it ran; never retried. Kept with the reason as its last error
    /// until pruned ([`Builder::retain_dead`](crate::Builder::retain_dead)).
    Cancelled,
}

impl JobState {
    /// The lower-case name used in logs and counts.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Claimed => "claimed",
            JobState::Running => "running",
            JobState::Dead => "dead",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Reads a stored state; `available` rows whose `run_at` is later than
    /// `now` are reported as `Scheduled`, `running` rows not marked started
    /// as `Claimed`.
    pub(crate) fn from_row(state: &str, run_at: i64, now: i64, started: bool) -> JobState {
        match state {
            "available" if run_at > now => JobState::Scheduled,
            "available" => JobState::Available,
            "running" if !started => JobState::Claimed,
            "running" => JobState::Running,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Completed,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything stored about one job, except its payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    /// The job's id, as returned by `enqueue`.
    pub id: i64,
    /// The queue it runs in.
    pub queue: String,
    /// Its kind (`Job::KIND`).
    pub kind: String,
    /// Its current state.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed before it is dead: the configured maximum, plus one
    /// if a crash once took an attempt that never started (a prefetched job
    /// whose process died before it began gets that attempt back, once).
    pub max_attempts: u32,
    /// The earliest time it may (next) run.
    #[serde(serialize_with = "crate::clock::rfc3339_serde::serialize")]
    pub run_at: SystemTime,
    /// When it was enqueued.
    #[serde(serialize_with = "crate::clock::rfc3339_serde::serialize")]
    pub created_at: SystemTime,
    /// When its latest attempt started.
    #[serde(serialize_with = "crate::clock::rfc3339_serde::option")]
    pub started_at: Option<SystemTime>,
    /// When it became dead or completed.
    #[serde(serialize_with = "crate::clock::rfc3339_serde::option")]
    pub finished_at: Option<SystemTime>,
    /// The error of its latest failed attempt.
    pub last_error: Option<String>,
}

/// What became of a job, from [`Errands::status`](crate::Errands::status):
/// unlike [`Errands::job`](crate::Errands::job), it tells a job that
/// finished (and whose row was deleted) from one that never existed.
///
/// Serialises as an object tagged `"status"`: `{"status":"completed"}`, or
/// `{"status":"stored","id":7,"state":"running",…}` with the job's fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    /// The job is stored: waiting, running, dead, or completed and retained.
    Stored(JobInfo),
    /// The job completed successfully and its row was deleted (no details
    /// are kept unless [`Builder::retain_completed`](crate::Builder::retain_completed)
    /// is set, in which case it reads as `Stored` while retained).
    Completed,
    /// The job was cancelled ([`Errands::cancel`](crate::Errands::cancel))
    /// and its row has since been pruned
    /// ([`Builder::retain_dead`](crate::Builder::retain_dead)); while kept,
    /// it reads as `Stored` with [`JobState::Cancelled`].
    Cancelled,
    /// The job was dead and was purged ([`Errands::purge`](crate::Errands::purge)),
    /// or pruned after [`Builder::retain_dead`](crate::Builder::retain_dead).
    Purged,
    /// No job with this id was ever enqueued in this database.
    NotFound,
}

/// How many jobs of one kind in one queue are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// The queue.
    pub queue: String,
    /// The job kind.
    pub kind: String,
    /// Waiting for a future `run_at`.
    pub scheduled: u64,
    /// Ready to run.
    pub available: u64,
    /// Claimed ahead by a process, waiting there for a slot (not started).
    pub claimed: u64,
    /// Running now.
    pub running: u64,
    /// Dead.
    pub dead: u64,
    /// Completed and retained.
    pub completed: u64,
    /// Cancelled and kept.
    pub cancelled: u64,
}

impl Counts {
    /// Jobs of this kind that have not finished (scheduled, available,
    /// claimed or running).
    pub fn pending(&self) -> u64 {
        self.scheduled + self.available + self.claimed + self.running
    }
}
