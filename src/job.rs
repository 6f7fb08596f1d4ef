//! What a user implements: the [`Job`] trait, and what a handler returns.
//!
//! A job is a serde value plus an async handler. Its [`Job::KIND`] is the
//! stable name stored in each row, so renaming the Rust type does not orphan
//! rows already on disk; its [`Job::QUEUE`] names the lane (and dispatcher)
//! it runs in. Per-type settings live in [`JobConfig`](crate::JobConfig).

use std::fmt;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::JobConfig;
use crate::context::JobContext;

/// A durable background job.
///
/// ```
/// use errands::{Job, JobContext, JobResult};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendWelcome { user_id: u64 }
///
/// impl Job for SendWelcome {
///     const KIND: &'static str = "send_welcome";
///     async fn run(self, ctx: JobContext) -> JobResult {
///         println!("attempt {} for user {}", ctx.attempt(), self.user_id);
///         Ok(())
///     }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + 'static {
    /// The stable name stored with each row. Never change it once jobs of
    /// this type may be on disk.
    const KIND: &'static str;

    /// The queue this job type runs in. Each queue has its own dispatcher.
    const QUEUE: &'static str = "default";

    /// The settings used when the type is registered with
    /// [`Builder::register`](crate::Builder::register).
    fn config() -> JobConfig {
        JobConfig::default()
    }

    /// Runs one attempt. `Ok` completes the job; `Err`, a panic or a timeout
    /// ends the attempt as a failure, retried with backoff until the job's
    /// attempts are used up.
    fn run(self, ctx: JobContext) -> impl Future<Output = JobResult> + 'static;
}

/// What a handler returns.
pub type JobResult = Result<(), JobError>;

/// Why an attempt failed, or why it ends early without failing.
///
/// Any error type converts into it with `?`. [`JobError::permanent`] marks a
/// failure that retrying cannot fix: the job goes straight to dead.
/// [`JobError::snooze`] and [`JobError::throttle`] are not failures: the job
/// runs again later and the attempt does not count.
pub struct JobError {
    message: String,
    permanent: bool,
    later: Option<Later>,
}

/// When a snoozed or throttled job runs again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Later {
    /// This long from now (by the engine's clock): a snooze.
    Snooze(std::time::Duration),
    /// At this time, and its whole kind holds until then.
    ThrottleUntil(std::time::SystemTime),
    /// This long from now, and its whole kind holds until then.
    ThrottleFor(std::time::Duration),
}

impl Later {
    /// The instant meant, in ms since the epoch, given `now`.
    pub(crate) fn at(self, now: i64) -> i64 {
        match self {
            Later::Snooze(delay) | Later::ThrottleFor(delay) => crate::clock::ms_after(now, delay),
            Later::ThrottleUntil(at) => crate::clock::run_at_ms(at),
        }
    }

    /// Whether its whole kind holds until then (a throttle).
    pub(crate) fn holds_kind(self) -> bool {
        !matches!(self, Later::Snooze(_))
    }
}

impl JobError {
    /// A retryable failure with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            permanent: false,
            later: None,
        }
    }

    /// A failure that retrying cannot fix: the job is marked dead at once,
    /// keeping this message as its last error.
    pub fn permanent(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            permanent: true,
            later: None,
        }
    }

    /// Not a failure: run this job again after `delay`, without using an
    /// attempt (the job is allowed one more attempt, as Oban does, so
    /// [`JobContext::attempt`](crate::JobContext::attempt) keeps counting
    /// up while the retry budget stays whole). For "not yet": the upload
    /// is still being written, the report's data is not in.
    ///
    /// ```
    /// use errands::{JobContext, JobError, JobResult};
    /// use std::time::Duration;
    /// async fn handler(ctx: JobContext, ready: bool) -> JobResult {
    ///     if !ready {
    ///         return Err(JobError::snooze(Duration::from_secs(30)));
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn snooze(delay: std::time::Duration) -> Self {
        JobError {
            message: format!("snoozed for {delay:?}"),
            permanent: false,
            later: Some(Later::Snooze(delay)),
        }
    }

    /// Not a failure: the upstream said "too many requests". Holds this
    /// job's whole kind until `until`, in every process sharing the
    /// database (stored, and read by the others within their poll
    /// interval), and runs this job again then without using an attempt.
    /// Adaptive kinds ([`JobConfig::adaptive`](crate::JobConfig::adaptive))
    /// also lower their limit.
    ///
    /// ```
    /// use errands::JobError;
    /// use std::time::{Duration, SystemTime};
    /// // A 429 with `Retry-After: 60`:
    /// let e = JobError::throttle(SystemTime::now() + Duration::from_secs(60));
    /// assert!(!e.is_permanent());
    /// ```
    pub fn throttle(until: std::time::SystemTime) -> Self {
        JobError {
            message: format!(
                "throttled until {}",
                crate::clock::rfc3339(crate::clock::system_time_to_ms(until))
            ),
            permanent: false,
            later: Some(Later::ThrottleUntil(until)),
        }
    }

    /// [`JobError::throttle`] for `delay` from now, by the engine's clock
    /// (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn throttle_for(delay: std::time::Duration) -> Self {
        JobError {
            message: format!("throttled for {delay:?}"),
            permanent: false,
            later: Some(Later::ThrottleFor(delay)),
        }
    }

    /// A snooze or throttle, if this is one.
    pub(crate) fn later(&self) -> Option<Later> {
        self.later
    }

    /// The message stored as the job's last error.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this failure skips the remaining attempts.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError")
            .field("message", &self.message)
            .field("permanent", &self.permanent)
            .finish()
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError::msg(e)
    }
}
