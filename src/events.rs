//! What happened to jobs, as it happens: a broadcast of outcomes.
//!
//! Every event is sent after the outcome it reports has been committed, so a
//! subscriber that sees `Completed` can rely on it. Tests use this to wait
//! for exactly the moment they care about instead of sleeping; applications
//! use it for metrics and notifications. A subscriber that falls too far
//! behind is told how many events it missed ([`EventsError::Lagged`]).

use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

/// One committed outcome of an attempt.
///
/// `Serialize`: as an object tagged `"event"` (`{"event":"completed","id":7,
/// "kind":"resize_image","attempt":1}`), `run_at` as an RFC 3339 string.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The handler returned `Ok`; the job is finished.
    Completed {
        /// The job's id.
        id: i64,
        /// Its kind.
        kind: &'static str,
        /// The attempt that succeeded (1 for the first).
        attempt: u32,
    },
    /// The attempt failed; the job will run again at `run_at`.
    Retrying {
        /// The job's id.
        id: i64,
        /// Its kind.
        kind: &'static str,
        /// The attempt that failed.
        attempt: u32,
        /// Why it failed (the error, panic message or timeout).
        error: String,
        /// When it will run again.
        #[serde(serialize_with = "crate::clock::rfc3339_serde::serialize")]
        run_at: SystemTime,
    },
    /// The job is dead: attempts used up, a permanent error, or a payload
    /// that does not decode.
    Dead {
        /// The job's id.
        id: i64,
        /// Its kind.
        kind: &'static str,
        /// The last attempt.
        attempt: u32,
        /// Why it failed.
        error: String,
    },
    /// Shutdown put the job back in the queue without finishing it; the
    /// attempt does not count.
    Released {
        /// The job's id.
        id: i64,
        /// Its kind.
        kind: &'static str,
        /// `true`: its handler was running and was stopped at the shutdown
        /// deadline. `false`: it was claimed ahead (prefetch) and its
        /// handler never started.
        started: bool,
    },
    /// The job was cancelled while it ran (or while claimed): its handler
    /// stopped (or was aborted after the grace period) and it will not run
    /// again.
    Cancelled {
        /// The job's id.
        id: i64,
        /// Its kind.
        kind: &'static str,
        /// The attempt that was cancelled.
        attempt: u32,
        /// The reason given to [`Errands::cancel_because`](crate::Errands::cancel_because).
        reason: String,
    },
    /// The handler snoozed ([`JobError::snooze`](crate::JobError::snooze))
    /// or throttled its kind: the job runs again at `run_at` and the
    /// attempt does not count.
    Snoozed {
        /// The job's id.
        id: i64,
        /// Its kind.
        kind: &'static str,
        /// The attempt that snoozed.
        attempt: u32,
        /// When it will run again.
        #[serde(serialize_with = "crate::clock::rfc3339_serde::serialize")]
        run_at: SystemTime,
    },
    /// A kind is throttled ([`JobError::throttle`](crate::JobError::throttle))
    /// until `until`: sent by every instance when it starts holding the
    /// kind, whether its own handler throttled or it read another
    /// instance's throttle at its poll. Not about a job.
    Throttled {
        /// The queue.
        queue: &'static str,
        /// The kind.
        kind: &'static str,
        /// When the kind may run again.
        #[serde(serialize_with = "crate::clock::rfc3339_serde::serialize")]
        until: SystemTime,
    },
    /// An adaptive kind's limit in this instance moved
    /// ([`JobConfig::adaptive`](crate::JobConfig::adaptive)). Not about a job.
    ConcurrencyChanged {
        /// The queue.
        queue: &'static str,
        /// The kind.
        kind: &'static str,
        /// The limit now in force in this instance.
        limit: usize,
    },
}

impl Event {
    /// The id of the job this event is about (`None` for an event about a
    /// kind, such as [`Event::ConcurrencyChanged`]).
    pub fn id(&self) -> Option<i64> {
        match self {
            Event::Completed { id, .. }
            | Event::Retrying { id, .. }
            | Event::Dead { id, .. }
            | Event::Released { id, .. }
            | Event::Cancelled { id, .. }
            | Event::Snoozed { id, .. } => Some(*id),
            Event::ConcurrencyChanged { .. } | Event::Throttled { .. } => None,
        }
    }
}

/// Why [`Events::next`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// The subscriber fell behind and this many events were dropped.
    #[error("missed {0} events")]
    Lagged(u64),
    /// The system shut down (after [`Errands::shutdown`](crate::Errands::shutdown)
    /// finished); no more events will come.
    #[error("errands has shut down")]
    Closed,
}

/// A subscription to [`Event`]s, from [`Errands::subscribe`](crate::Errands::subscribe).
pub struct Events {
    pub(crate) rx: broadcast::Receiver<Event>,
}

impl Events {
    /// Waits for the next event.
    pub async fn next(&mut self) -> Result<Event, EventsError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => EventsError::Lagged(n),
            broadcast::error::RecvError::Closed => EventsError::Closed,
        })
    }
}
