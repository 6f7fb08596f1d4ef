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

/// Why an attempt failed.
///
/// Any error type converts into it with `?`. [`JobError::permanent`] marks a
/// failure that retrying cannot fix: the job goes straight to dead.
pub struct JobError {
    message: String,
    permanent: bool,
}

impl JobError {
    /// A retryable failure with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            permanent: false,
        }
    }

    /// A failure that retrying cannot fix: the job is marked dead at once,
    /// keeping this message as its last error.
    pub fn permanent(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            permanent: true,
        }
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
