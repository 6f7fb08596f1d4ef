//! Live control, the operator's side: tune a kind's concurrency, pause and
//! resume queues and kinds, cancel jobs, and see what is in force.
//!
//! Every knob is stored in the database first (so it survives restarts and
//! reaches every process sharing the database within its poll interval),
//! then applied by this process's dispatcher, and the call returns once it
//! is in force here. Bad input (a kind or queue this process does not run,
//! a limit of 0) is refused before anything is stored.

use std::time::Duration;

use crate::actors::dispatcher::{ApplyControl, Control};
use crate::client::Errands;
use crate::clock::ms_after;
use crate::config_problem::{ConfigProblem, MAX_CONCURRENCY};
use crate::error::{Error, Result};
use crate::kind_controls::KindControls;
use crate::store::{CancelAnswer, ControlWrite};

/// What [`Errands::cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cancellation {
    /// The job had not started (scheduled, available, or waiting for a
    /// retry): it is now [`JobState::Cancelled`](crate::JobState::Cancelled)
    /// and will never run.
    Cancelled,
    /// The job is running (or claimed) in some process: its handler is
    /// being told ([`JobContext::cancelled`](crate::JobContext::cancelled)),
    /// at once if it runs here, within the holding process's poll interval
    /// otherwise. It ends as cancelled unless it completes first; one that
    /// does not stop within its kind's
    /// [`cancel_grace`](crate::JobConfig::cancel_grace) is aborted.
    Signalled,
}

/// The reason stored for [`Errands::cancel`].
const DEFAULT_REASON: &str = "cancelled by Errands::cancel";

impl Errands {
    /// Runs at most `n` jobs of `kind` at once in each process, overriding
    /// the code's [`JobConfig::concurrency`](crate::JobConfig::concurrency)
    /// (and adaptive concurrency) until [`Errands::reset_concurrency`]. Stored:
    /// survives restarts, and every process on the database takes it up
    /// within its poll interval. Lowering it lets running jobs finish and
    /// starts no new one until fewer than `n` run.
    ///
    /// ```no_run
    /// # async fn demo(errands: errands::Errands) -> errands::Result<()> {
    /// // The image service is struggling: two at a time for now.
    /// errands.set_concurrency("resize_image", 2).await?;
    /// // ...and back to what the code says.
    /// errands.reset_concurrency("resize_image").await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_concurrency(&self, kind: &str, n: usize) -> Result<()> {
        let (kind, queue) = self.known_kind(kind)?;
        if n == 0 {
            return Err(Error::Config(vec![ConfigProblem::ZeroConcurrency { kind }]));
        }
        if n > MAX_CONCURRENCY {
            return Err(Error::Config(vec![ConfigProblem::TooManySlots {
                kind,
                setting: "concurrency",
                value: n,
            }]));
        }
        self.set_limit(queue, kind, Some(n)).await
    }

    /// Removes `kind`'s stored override: the code's limit is in force again
    /// in every process.
    pub async fn reset_concurrency(&self, kind: &str) -> Result<()> {
        let (kind, queue) = self.known_kind(kind)?;
        self.set_limit(queue, kind, None).await
    }

    async fn set_limit(
        &self,
        queue: &'static str,
        kind: &'static str,
        limit: Option<usize>,
    ) -> Result<()> {
        self.check_open()?;
        self.engine()
            .store
            .write_control(ControlWrite::Concurrency {
                queue: queue.into(),
                kind: kind.into(),
                limit,
            })
            .await?;
        self.apply(queue, Control::Concurrency { kind, limit })
            .await
    }

    /// Pauses `queue` until resumed: nothing more is claimed from it (by
    /// any process on the database, within its poll interval), running
    /// jobs finish, jobs claimed ahead go back, and enqueueing still works.
    /// When it returns, this process claims nothing more from the queue.
    pub async fn pause(&self, queue: &str) -> Result<()> {
        let queue = self.known_queue(queue)?;
        self.set_pause(queue, None, Some(i64::MAX)).await
    }

    /// Pauses `queue` for `duration` (by the engine's clock), then it
    /// resumes by itself.
    pub async fn pause_for(&self, queue: &str, duration: Duration) -> Result<()> {
        let queue = self.known_queue(queue)?;
        let until = ms_after(self.now(), duration);
        self.set_pause(queue, None, Some(until)).await
    }

    /// Resumes a paused queue.
    pub async fn resume(&self, queue: &str) -> Result<()> {
        let queue = self.known_queue(queue)?;
        self.set_pause(queue, None, None).await
    }

    /// Pauses one kind until resumed, as [`Errands::pause`] does a queue.
    pub async fn pause_kind(&self, kind: &str) -> Result<()> {
        let (kind, queue) = self.known_kind(kind)?;
        self.set_pause(queue, Some(kind), Some(i64::MAX)).await
    }

    /// Pauses one kind for `duration`.
    pub async fn pause_kind_for(&self, kind: &str, duration: Duration) -> Result<()> {
        let (kind, queue) = self.known_kind(kind)?;
        let until = ms_after(self.now(), duration);
        self.set_pause(queue, Some(kind), Some(until)).await
    }

    /// Resumes a paused kind.
    pub async fn resume_kind(&self, kind: &str) -> Result<()> {
        let (kind, queue) = self.known_kind(kind)?;
        self.set_pause(queue, Some(kind), None).await
    }

    async fn set_pause(
        &self,
        queue: &'static str,
        kind: Option<&'static str>,
        until: Option<i64>,
    ) -> Result<()> {
        self.check_open()?;
        self.engine()
            .store
            .write_control(ControlWrite::Pause {
                queue: queue.into(),
                kind: kind.map(str::to_string),
                until,
            })
            .await?;
        self.apply(queue, Control::Pause { kind, until }).await
    }

    /// Cancels a job. One that has not started will never run; a running
    /// one's handler is told to stop (see [`Cancellation`]). Either way the
    /// job ends as [`JobState::Cancelled`](crate::JobState::Cancelled),
    /// kept with the reason as its last error, never retried. A job that
    /// is dead, finished or gone is refused ([`Error::WrongState`],
    /// [`Error::NotFound`]).
    pub async fn cancel(&self, id: i64) -> Result<Cancellation> {
        self.cancel_because(id, DEFAULT_REASON).await
    }

    /// [`Errands::cancel`], storing `reason` (who and why) as the job's
    /// last error.
    ///
    /// ```no_run
    /// # async fn demo(errands: errands::Errands, id: i64) -> errands::Result<()> {
    /// errands.cancel_because(id, "cancelled by alice: wrong recipient list").await?;
    /// # Ok(()) }
    /// ```
    pub async fn cancel_because(&self, id: i64, reason: &str) -> Result<Cancellation> {
        let answer = self
            .engine()
            .store
            .cancel(id, reason.to_string(), self.now())
            .await?;
        match answer {
            CancelAnswer::Cancelled => Ok(Cancellation::Cancelled),
            CancelAnswer::Requested { queue } => {
                if let Some(dispatcher) = self.engine().signals.dispatcher(&queue) {
                    let control = Control::Cancel {
                        id,
                        reason: reason.to_string(),
                    };
                    // Answered once passed on; the job may run elsewhere.
                    let _ = dispatcher.send(ApplyControl(control)).await;
                }
                Ok(Cancellation::Signalled)
            }
        }
    }

    /// The knobs in force: per kind, the code's limit, any stored override,
    /// the limit this process applies (adaptive kinds: its current value),
    /// pauses, throttles and rate limits. Kinds with stored knobs that this
    /// process does not run are listed too.
    pub async fn controls(&self) -> Result<Vec<KindControls>> {
        let rows = self.engine().store.controls(None).await?;
        let mut states = Vec::new();
        for (queue, dispatcher) in self.engine().signals.dispatchers_by_queue() {
            if let Ok(kinds) = dispatcher.send(crate::actors::dispatcher::Inspect).await {
                states.extend(kinds.into_iter().map(|k| (queue, k)));
            }
        }
        Ok(KindControls::merge(&rows, &states, self.now()))
    }

    /// A kind registered here, or [`Error::UnknownKind`].
    fn known_kind(&self, kind: &str) -> Result<(&'static str, &'static str)> {
        self.registered_kind(kind)
            .ok_or_else(|| Error::UnknownKind(kind.to_string()))
    }

    /// A queue run here, or [`Error::UnknownQueue`].
    fn known_queue(&self, queue: &str) -> Result<&'static str> {
        self.engine()
            .signals
            .dispatchers_by_queue()
            .map(|(name, _)| name)
            .find(|name| *name == queue)
            .ok_or_else(|| Error::UnknownQueue(queue.to_string()))
    }

    /// Applies a stored change in this process; returns once it is in force.
    async fn apply(&self, queue: &'static str, control: Control) -> Result<()> {
        let dispatcher = self
            .engine()
            .signals
            .dispatcher(queue)
            .ok_or(Error::Closed)?;
        dispatcher
            .send(ApplyControl(control))
            .await
            .map_err(|_| Error::Closed)
    }
}
