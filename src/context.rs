//! What a handler knows about the attempt it is running, and the
//! application state it can reach.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::cancel_signal::CancelSignal;
use crate::engine::Engine;
use crate::job::JobError;
use crate::progress::Progress;

/// Application values registered with [`Builder::data`](crate::Builder::data),
/// looked up by type.
#[derive(Default)]
pub(crate) struct DataMap {
    values: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl DataMap {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> bool {
        self.values
            .insert(TypeId::of::<T>(), Box::new(value))
            .is_some()
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }
}

/// The context of one attempt, handed to [`Job::run`](crate::Job::run).
///
/// Besides the attempt's facts and the application data, it runs resumable
/// steps: see [`JobContext::step`], [`JobContext::step_cursor`],
/// [`JobContext::checkpoint`] and [`JobContext::transaction`].
pub struct JobContext {
    pub(crate) id: i64,
    pub(crate) kind: &'static str,
    pub(crate) queue: &'static str,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) shared: Arc<Engine>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) cancel: Arc<CancelSignal>,
}

impl JobContext {
    /// The job's id, as returned by `enqueue`.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The job's kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The queue it runs in.
    pub fn queue(&self) -> &'static str {
        self.queue
    }

    /// This attempt's number, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The attempts allowed before the job is dead.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether a failure of this attempt makes the job dead.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// Whether this job was cancelled ([`Errands::cancel`](crate::Errands::cancel)).
    /// A handler that notices should stop and return; whatever it returns
    /// other than `Ok` ends the job as cancelled (never retried), and one
    /// that does not return within the kind's
    /// [`cancel_grace`](crate::JobConfig::cancel_grace) is aborted.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.reason().is_some()
    }

    /// Resolves when this job is cancelled: select on it beside the work.
    ///
    /// ```no_run
    /// # use errands::{JobContext, JobError, JobResult};
    /// # async fn transcode_chunk() {}
    /// async fn handler(ctx: JobContext) -> JobResult {
    ///     loop {
    ///         tokio::select! {
    ///             _ = ctx.cancelled() => return Err(JobError::msg("stopped: cancelled")),
    ///             _ = transcode_chunk() => {}
    ///         }
    ///     }
    /// }
    /// ```
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The application value of type `T` registered with
    /// [`Builder::data`](crate::Builder::data). The error (usable with `?`)
    /// names the missing type.
    ///
    /// ```no_run
    /// # use errands::{JobContext, JobResult};
    /// struct Mailer;
    /// async fn handler(ctx: JobContext) -> JobResult {
    ///     let mailer: &Mailer = ctx.data::<Mailer>()?;
    ///     Ok(())
    /// }
    /// ```
    pub fn data<T: Send + Sync + 'static>(&self) -> Result<&T, JobError> {
        self.shared.data.get::<T>().ok_or_else(|| {
            JobError::msg(format!(
                "no application data of type {} was registered; pass the value to \
                 Builder::data(..) before start() (the type must match exactly, \
                 e.g. Arc<T> and T are different)",
                std::any::type_name::<T>()
            ))
        })
    }
}
