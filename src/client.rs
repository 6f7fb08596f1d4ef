//! The handle applications hold: enqueue, inspect, manage dead jobs, shut down.
//!
//! [`Errands`] is cheap to clone and `Send + Sync`; put it in actix-web's
//! `web::Data`. Enqueueing goes straight to the store's writer thread (no
//! actor hop on the hot path) and, once the row is committed, wakes the
//! queue's dispatcher, so the job starts without waiting for a poll.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::Addr;

use crate::actors::supervisor::{Shutdown, Supervisor};
use crate::builder::Builder;
use crate::clock::{duration_ms_ceil, ms_to_system_time, run_at_ms, MAX_TIME_MS};
use crate::codec;
use crate::config_problem::ConfigProblem;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::inspect::{Counts, JobInfo, JobStatus};
use crate::job::Job;
use crate::store::{DeadTarget, NewJob};

/// When an enqueued job is due, for waking its dispatcher or the scheduler.
pub(crate) struct Announced {
    queue: &'static str,
    kind: &'static str,
    run_at: i64,
}

impl From<&NewJob> for Announced {
    fn from(job: &NewJob) -> Self {
        Announced {
            queue: job.queue,
            kind: job.kind,
            run_at: job.run_at,
        }
    }
}

/// What the handle knows about a kind registered in this process.
pub(crate) struct KindInfo {
    pub queue: &'static str,
    pub max_attempts: u32,
}

/// Per-enqueue settings: when to run, and how many attempts to allow.
///
/// ```
/// use errands::EnqueueOptions;
/// use std::time::Duration;
/// let options = EnqueueOptions::new().delay(Duration::from_secs(3600)).max_attempts(3);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    run_at: Option<SystemTime>,
    delay: Option<Duration>,
    max_attempts: Option<u32>,
}

impl EnqueueOptions {
    /// Run now, with the kind's configured attempts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run no earlier than `at`.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self.delay = None;
        self
    }

    /// Run no earlier than `delay` from now (by the configured clock).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self.run_at = None;
        self
    }

    /// Allow this many attempts (≥ 1) instead of the kind's setting.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }
}

/// The handle to a running errands system. Clone it freely.
#[derive(Clone)]
pub struct Errands {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Engine>,
    supervisor: Addr<Supervisor>,
    kinds: HashMap<&'static str, KindInfo>,
}

impl Errands {
    /// Starts configuring a new errands system.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn new(
        shared: Arc<Engine>,
        supervisor: Addr<Supervisor>,
        kinds: HashMap<&'static str, KindInfo>,
    ) -> Self {
        Errands {
            inner: Arc::new(Inner {
                shared,
                supervisor,
                kinds,
            }),
        }
    }

    /// The engine behind this handle.
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.shared
    }

    /// A kind registered in this process: its static name and queue.
    pub(crate) fn registered_kind(&self, kind: &str) -> Option<(&'static str, &'static str)> {
        self.inner
            .kinds
            .get_key_value(kind)
            .map(|(name, info)| (*name, info.queue))
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.shared.is_closing() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The current time by the configured clock, in ms since the epoch.
    pub(crate) fn now(&self) -> i64 {
        self.inner.shared.clock.now_ms()
    }

    pub(crate) fn new_job<J: Job>(
        &self,
        job: &J,
        options: &EnqueueOptions,
        now: i64,
    ) -> Result<NewJob> {
        if J::KIND.is_empty() {
            return Err(Error::Config(vec![ConfigProblem::EmptyKind {
                type_name: std::any::type_name::<J>(),
            }]));
        }
        if J::QUEUE.is_empty() {
            return Err(Error::Config(vec![ConfigProblem::EmptyQueue {
                kind: J::KIND,
            }]));
        }
        if options.max_attempts == Some(0) {
            return Err(Error::Config(vec![ConfigProblem::ZeroMaxAttempts {
                kind: J::KIND,
            }]));
        }
        let payload = codec::encode(job).map_err(|message| Error::Encode {
            kind: J::KIND.to_string(),
            message,
        })?;
        let run_at = match (options.run_at, options.delay) {
            (Some(at), _) => run_at_ms(at),
            (None, Some(delay)) => now.saturating_add(duration_ms_ceil(delay)),
            (None, None) => now,
        };
        if run_at > MAX_TIME_MS {
            let asked = options.run_at.unwrap_or_else(|| {
                let delay = options.delay.unwrap_or_default();
                ms_to_system_time(now)
                    .checked_add(delay)
                    .unwrap_or(ms_to_system_time(i64::MAX))
            });
            return Err(Error::RunAtOutOfRange(asked));
        }
        let max_attempts = options.max_attempts.unwrap_or_else(|| {
            self.inner
                .kinds
                .get(J::KIND)
                .map_or_else(|| J::config().max_attempts, |k| k.max_attempts)
        });
        Ok(NewJob {
            queue: J::QUEUE,
            kind: J::KIND,
            payload,
            run_at,
            max_attempts,
            created_at: now,
        })
    }

    /// After a commit: wake the dispatchers of due jobs, tell the scheduler
    /// about future ones.
    pub(crate) fn announce(&self, jobs: &[Announced], now: i64) {
        let mut woken: Vec<(&'static str, &'static str)> = Vec::new();
        let mut next: Option<i64> = None;
        for job in jobs {
            if job.run_at <= now {
                if !woken.contains(&(job.queue, job.kind)) {
                    woken.push((job.queue, job.kind));
                    self.inner.shared.signals.kind_ready(job.queue, job.kind);
                }
            } else {
                next = Some(next.map_or(job.run_at, |n: i64| n.min(job.run_at)));
            }
        }
        if let Some(at) = next {
            self.inner.shared.signals.due_at(at);
        }
    }

    /// Enqueues `job` to run now. Returns its id once the row is committed.
    pub async fn enqueue<J: Job>(&self, job: J) -> Result<i64> {
        self.enqueue_with(job, EnqueueOptions::new()).await
    }

    /// Enqueues `job` to run no earlier than `at`.
    pub async fn enqueue_at<J: Job>(&self, job: J, at: SystemTime) -> Result<i64> {
        self.enqueue_with(job, EnqueueOptions::new().run_at(at))
            .await
    }

    /// Enqueues `job` to run no earlier than `delay` from now.
    pub async fn enqueue_in<J: Job>(&self, job: J, delay: Duration) -> Result<i64> {
        self.enqueue_with(job, EnqueueOptions::new().delay(delay))
            .await
    }

    /// Enqueues `job` with these options.
    pub async fn enqueue_with<J: Job>(&self, job: J, options: EnqueueOptions) -> Result<i64> {
        let ids = self
            .enqueue_many_with(std::iter::once(job), options)
            .await?;
        Ok(ids[0])
    }

    /// Enqueues many jobs in one transaction: all are committed or none.
    /// Returns their ids in order.
    pub async fn enqueue_many<J: Job>(
        &self,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<Vec<i64>> {
        self.enqueue_many_with(jobs, EnqueueOptions::new()).await
    }

    /// Enqueues many jobs with the same options, in one transaction.
    pub async fn enqueue_many_with<J: Job>(
        &self,
        jobs: impl IntoIterator<Item = J>,
        options: EnqueueOptions,
    ) -> Result<Vec<i64>> {
        self.check_open()?;
        let now = self.now();
        let rows = jobs
            .into_iter()
            .map(|job| self.new_job(&job, &options, now))
            .collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let announce: Vec<Announced> = rows.iter().map(Announced::from).collect();
        let ids = self.inner.shared.store.enqueue(rows).await?;
        self.announce(&announce, now);
        Ok(ids)
    }

    /// One job's state, attempts, times and last error; `None` if it no
    /// longer exists (completed jobs are deleted unless retained).
    pub async fn job(&self, id: i64) -> Result<Option<JobInfo>> {
        self.inner.shared.store.job(id, self.now()).await
    }

    /// What became of a job: its stored state, or whether it completed, was
    /// cancelled, was purged, or never existed. For status endpoints, where
    /// [`Errands::job`]'s `None` cannot tell "done" from "no such job".
    /// Costs one indexed read; the engine keeps nothing extra per job for it.
    ///
    /// ```no_run
    /// # async fn demo(errands: errands::Errands, id: i64) -> errands::Result<()> {
    /// match errands.status(id).await? {
    ///     errands::JobStatus::Completed => println!("done"),
    ///     errands::JobStatus::Stored(info) => println!("{}", info.state),
    ///     other => println!("{other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn status(&self, id: i64) -> Result<JobStatus> {
        self.inner.shared.store.status(id, self.now()).await
    }

    /// Job counts by queue, kind and state, including kinds no worker in
    /// this process knows.
    pub async fn counts(&self) -> Result<Vec<Counts>> {
        self.inner.shared.store.counts(self.now()).await
    }

    /// Dead jobs, most recently dead first; of one queue, or all.
    pub async fn dead_jobs(&self, queue: Option<&str>, limit: usize) -> Result<Vec<JobInfo>> {
        self.inner
            .shared
            .store
            .dead_jobs(queue.map(str::to_string), limit)
            .await
    }

    /// Moves one dead job back to the queue with its attempts reset.
    pub async fn requeue(&self, id: i64) -> Result<()> {
        self.requeue_target(DeadTarget::One(id)).await.map(|_| ())
    }

    /// Moves every dead job (of one queue, or all) back to the queue.
    /// Returns how many.
    pub async fn requeue_dead(&self, queue: Option<&str>) -> Result<u64> {
        self.requeue_target(queue.map_or(DeadTarget::All, |q| DeadTarget::Queue(q.into())))
            .await
    }

    async fn requeue_target(&self, target: DeadTarget) -> Result<u64> {
        self.check_open()?;
        let n = self.inner.shared.store.requeue(target, self.now()).await?;
        self.inner.shared.signals.wake_all();
        Ok(n)
    }

    /// Deletes one job that is not running, for good: a dead one
    /// (`status(id)` then answers `Purged`), a cancelled one, or one still
    /// waiting (both then answer `Cancelled`). Unlike
    /// [`Errands::cancel`], which keeps the row, a delete needs no room:
    /// on a full database it is how an operator frees space.
    pub async fn purge(&self, id: i64) -> Result<()> {
        self.inner
            .shared
            .store
            .purge(DeadTarget::One(id))
            .await
            .map(|_| ())
    }

    /// Deletes every dead job (of one queue, or all). Returns how many.
    pub async fn purge_dead(&self, queue: Option<&str>) -> Result<u64> {
        let target = queue.map_or(DeadTarget::All, |q| DeadTarget::Queue(q.into()));
        self.inner.shared.store.purge(target).await
    }

    /// Subscribes to committed outcomes ([`Event`](crate::Event)s).
    pub fn subscribe(&self) -> Events {
        Events {
            rx: self.inner.shared.subscribe(),
        }
    }

    /// Graceful shutdown: stop claiming, wait up to `timeout` for running
    /// jobs, put unfinished ones back in the queue (their attempt is not
    /// counted) and release the database. Resolves to
    /// [`Error::ShutdownTimeout`] if some jobs had to be put back.
    ///
    /// The handle closes as soon as this is called, before the returned
    /// future is awaited: from then on `enqueue` returns [`Error::Closed`].
    ///
    /// Calling it again (from another task, or after it finished) waits for
    /// the same shutdown and answers the same result; the later `timeout`
    /// is ignored. Once shutdown has finished, [`Events`] subscriptions end
    /// with [`EventsError::Closed`](crate::EventsError::Closed) and, once
    /// the handle and its clones are dropped, every thread, connection and
    /// file descriptor errands opened is released.
    pub fn shutdown(
        &self,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<()>> + 'static {
        self.inner.shared.closing.store(true, Ordering::Release);
        let request = self.inner.supervisor.send(Shutdown { timeout });
        let shared = self.inner.shared.clone();
        async move {
            match request.await {
                Ok(result) => result,
                // The supervisor stops once shutdown is done: answer alike.
                Err(_) => shared
                    .shutdown_end()
                    .map_or(Err(Error::Closed), |end| end.result()),
            }
        }
    }
}
