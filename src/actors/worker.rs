//! The typed worker: one actor per job kind, running each claimed job as its
//! own task.
//!
//! The dispatcher only hands a worker as many jobs as the kind has free
//! slots, so the worker never queues; it decodes each payload into `J`, runs
//! the handler under the kind's timeout with panics caught, decides the
//! outcome (done, retry at now + backoff, dead) and reports it to the
//! dispatcher, which writes it. A payload that does not decode is dead at
//! once with the decoder's message: retrying cannot fix it.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::task::JoinHandle;
use actix_rt::ArbiterHandle;

use super::attempt_outcome::{decide, Failure, Ran};
use super::dispatcher::AttemptSignal;
use super::unwind::{panic_message, CatchUnwind};
use crate::cancel_signal::CancelSignal;
use crate::codec;
use crate::config::JobConfig;
use crate::context::JobContext;
use crate::engine::Engine;
use crate::job::{Job, Later};
use crate::progress::Progress;
use crate::store::{ClaimedJob, Finished, Outcome};

/// Run these claimed jobs now.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RunJobs(pub Vec<ClaimedJob>);

/// Stop every attempt still running (shutdown deadline passed); answers
/// their job ids and unsaved progress.
#[derive(Message)]
#[rtype(result = "Vec<Aborted>")]
pub(crate) struct AbortRunning;

/// Cancel this job's attempt if it runs on this worker: signal its
/// handler, and abort it if it has not stopped after `grace`.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub(crate) struct CancelJob {
    pub id: i64,
    pub reason: String,
}

/// An attempt ended; sent by the attempt's task to the dispatcher.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AttemptDone {
    pub kind: &'static str,
    /// Which of the kind's workers ran it.
    pub worker: usize,
    /// How long the attempt ran.
    pub took: Duration,
    pub max_attempts: u32,
    pub finished: Finished,
    /// How it ended, for adaptive concurrency.
    pub signal: AttemptSignal,
    /// The handler throttled its kind until then (ms).
    pub throttle_until: Option<i64>,
}

/// An attempt stopped at the shutdown deadline, to be released.
pub(crate) struct Aborted {
    pub id: i64,
    pub attempt: u32,
    /// Progress not yet saved.
    pub checkpoint: Option<Vec<u8>>,
}

/// The workers of one kind, one on each handler arbiter, as the
/// dispatcher holds them. A job goes to the worker with the fewest jobs of
/// this kind running, the dispatcher's own arbiter (index 0) first on a
/// tie, so a CPU-heavy kind spreads over every core; but a kind whose
/// handlers take less than [`WORTH_A_HOP`] on average stays on the
/// dispatcher's arbiter, where a job costs no hop between threads (measured:
/// spreading no-op jobs cost the drain about 10%, and round-robin halved a
/// serial kind's rate). The kind's limit stays in the dispatcher's counters.
pub(crate) struct WorkerHandles {
    workers: Vec<WorkerAddr>,
    /// Jobs of this kind running on each worker.
    running: Vec<usize>,
    /// Moving average of how long this kind's attempts run, in µs.
    average_us: f64,
}

/// One worker's mailboxes, by message.
struct WorkerAddr {
    run: Recipient<RunJobs>,
    abort: Recipient<AbortRunning>,
    cancel: Recipient<CancelJob>,
}

/// Handlers shorter than this (on average) are not worth moving to another
/// thread.
const WORTH_A_HOP: Duration = Duration::from_micros(100);

impl WorkerHandles {
    /// A set with no workers, whose jobs go nowhere: for unit tests of the
    /// dispatcher's slot arithmetic.
    #[cfg(test)]
    pub(crate) fn detached() -> WorkerHandles {
        WorkerHandles {
            workers: Vec::new(),
            running: Vec::new(),
            average_us: 0.0,
        }
    }

    /// Runs these claimed jobs now, each on the least busy worker.
    pub(crate) fn run(&mut self, jobs: Vec<ClaimedJob>) {
        if self.workers.is_empty() {
            return;
        }
        let mut per_worker: Vec<Vec<ClaimedJob>> =
            (0..self.workers.len()).map(|_| Vec::new()).collect();
        let spread = self.average_us >= WORTH_A_HOP.as_micros() as f64;
        for job in jobs {
            let (index, _) = self
                .running
                .iter()
                .enumerate()
                .take(if spread { usize::MAX } else { 1 })
                .min_by_key(|(i, n)| (**n, *i))
                .expect("at least one worker");
            self.running[index] += 1;
            per_worker[index].push(job);
        }
        for (worker, jobs) in self.workers.iter().zip(per_worker) {
            if !jobs.is_empty() {
                worker.run.do_send(RunJobs(jobs));
            }
        }
    }

    /// Cancels job `id` on whichever worker runs it (the others ignore it).
    pub(crate) fn cancel(&self, cancel: &CancelJob) {
        for worker in &self.workers {
            worker.cancel.do_send(cancel.clone());
        }
    }

    /// An attempt on worker `index` ended after running for `took`.
    pub(crate) fn finished(&mut self, index: usize, took: Duration) {
        if let Some(n) = self.running.get_mut(index) {
            *n = n.saturating_sub(1);
        }
        self.average_us += (took.as_micros() as f64 - self.average_us) / 16.0;
    }

    /// Stops every attempt still running on any arbiter; answers them.
    pub(crate) fn abort_all(
        &mut self,
    ) -> impl std::future::Future<Output = Vec<Aborted>> + 'static {
        self.running.iter_mut().for_each(|n| *n = 0);
        let asks: Vec<_> = self
            .workers
            .iter()
            .map(|worker| worker.abort.send(AbortRunning))
            .collect();
        async move {
            let mut aborted = Vec::new();
            for ask in asks {
                aborted.extend(ask.await.unwrap_or_default());
            }
            aborted
        }
    }
}

/// Starts the workers for `J`, one on each handler arbiter; stored
/// type-erased in the kind's registration.
pub(crate) fn start_worker<J: Job>(
    queue: &'static str,
    config: Arc<JobConfig>,
    dispatcher: Recipient<AttemptDone>,
    shared: Arc<Engine>,
    arbiters: &[ArbiterHandle],
) -> WorkerHandles {
    let workers: Vec<_> = arbiters
        .iter()
        .enumerate()
        .map(|(index, arbiter)| {
            let (config, dispatcher, shared) = (config.clone(), dispatcher.clone(), shared.clone());
            let addr = Worker::<J>::start_in_arbiter(arbiter, move |_| Worker::<J> {
                index,
                queue,
                config,
                dispatcher,
                shared,
                tasks: Vec::new(),
                _job: PhantomData,
            });
            WorkerAddr {
                run: addr.clone().recipient(),
                abort: addr.clone().recipient(),
                cancel: addr.recipient(),
            }
        })
        .collect();
    WorkerHandles {
        running: vec![0; workers.len()],
        workers,
        average_us: 0.0,
    }
}

struct Worker<J: Job> {
    /// This worker's place in its kind's [`WorkerHandles`].
    index: usize,
    queue: &'static str,
    config: Arc<JobConfig>,
    dispatcher: Recipient<AttemptDone>,
    shared: Arc<Engine>,
    /// Attempts started and possibly still running, for shutdown and
    /// cancellation.
    tasks: Vec<Running>,
    _job: PhantomData<fn() -> J>,
}

/// An attempt this worker started.
struct Running {
    job: Aborted,
    max_attempts: u32,
    began: Instant,
    task: JoinHandle<()>,
    progress: Arc<Progress>,
    cancel: Arc<CancelSignal>,
}

impl<J: Job> Actor for Worker<J> {
    type Context = Context<Self>;
}

impl<J: Job> Handler<RunJobs> for Worker<J> {
    type Result = ();

    fn handle(&mut self, msg: RunJobs, _: &mut Self::Context) {
        if self.tasks.len() > self.config.concurrency.saturating_mul(2) {
            self.tasks.retain(|running| !running.task.is_finished());
        }
        for job in msg.0 {
            let started = Aborted {
                id: job.id,
                attempt: job.attempt,
                checkpoint: None,
            };
            let max_attempts = job.max_attempts;
            let progress = Arc::new(Progress::from_checkpoint(job.id, job.checkpoint.as_deref()));
            let cancel = Arc::new(CancelSignal::default());
            let task = actix_rt::spawn(run_attempt::<J>(
                job,
                self.queue,
                self.config.clone(),
                self.shared.clone(),
                Attempt {
                    progress: progress.clone(),
                    cancel: cancel.clone(),
                },
                self.dispatcher.clone(),
                self.index,
            ));
            self.tasks.push(Running {
                job: started,
                max_attempts,
                began: Instant::now(),
                task,
                progress,
                cancel,
            });
        }
    }
}

impl<J: Job> Handler<AbortRunning> for Worker<J> {
    type Result = MessageResult<AbortRunning>;

    fn handle(&mut self, _: AbortRunning, _: &mut Self::Context) -> Self::Result {
        // A finished task has already reported its outcome; an unfinished
        // one never will once aborted, so its job is released instead.
        let mut aborted = Vec::new();
        for Running {
            mut job,
            task,
            progress,
            ..
        } in self.tasks.drain(..)
        {
            if !task.is_finished() {
                task.abort();
                job.checkpoint = progress.take_if_dirty().map(|snapshot| snapshot.bytes);
                aborted.push(job);
            }
        }
        MessageResult(aborted)
    }
}

impl<J: Job> Handler<CancelJob> for Worker<J> {
    type Result = ();

    fn handle(&mut self, msg: CancelJob, ctx: &mut Self::Context) {
        let Some(running) = self
            .tasks
            .iter()
            .find(|r| r.job.id == msg.id && !r.task.is_finished())
        else {
            return;
        };
        if !running.cancel.cancel(msg.reason) {
            return;
        }
        let attempt = running.job.attempt;
        ctx.run_later(self.config.cancel_grace, move |worker, _| {
            worker.abort_cancelled(msg.id, attempt)
        });
    }
}

impl<J: Job> Worker<J> {
    /// The grace period of a cancelled attempt ended: if its handler is
    /// still running, abort it and report it cancelled. (A task that has
    /// finished already reported its own outcome: tasks and this actor
    /// share one thread, so a task cannot be half-way through reporting.)
    fn abort_cancelled(&mut self, id: i64, attempt: u32) {
        let Some(index) = self
            .tasks
            .iter()
            .position(|r| r.job.id == id && r.job.attempt == attempt && !r.task.is_finished())
        else {
            return;
        };
        let running = self.tasks.swap_remove(index);
        running.task.abort();
        let reason = running.cancel.reason().unwrap_or_default().to_string();
        log::warn!(
            "errands: job {id} (kind `{}`) did not stop within {:?} of being cancelled; aborted",
            J::KIND,
            self.config.cancel_grace
        );
        self.dispatcher.do_send(AttemptDone {
            kind: J::KIND,
            worker: self.index,
            took: running.began.elapsed(),
            max_attempts: running.max_attempts,
            finished: Finished {
                id,
                kind: J::KIND,
                attempt,
                outcome: Outcome::Cancelled { reason },
                checkpoint: None,
                marked: true,
            },
            signal: AttemptSignal::Neutral,
            throttle_until: None,
        });
    }
}

/// What a running attempt shares with its worker.
struct Attempt {
    progress: Arc<Progress>,
    cancel: Arc<CancelSignal>,
}

/// One attempt, start to dispatcher.
async fn run_attempt<J: Job>(
    job: ClaimedJob,
    queue: &'static str,
    config: Arc<JobConfig>,
    shared: Arc<Engine>,
    attempt: Attempt,
    dispatcher: Recipient<AttemptDone>,
    worker: usize,
) {
    let Attempt { progress, cancel } = attempt;
    let began = Instant::now();
    let ran = match codec::decode::<J>(&job.payload) {
        Err(e) => Ran::Undecodable(e),
        Ok(value) => {
            let ctx = JobContext {
                id: job.id,
                kind: J::KIND,
                queue,
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                shared: shared.clone(),
                progress: progress.clone(),
                cancel: cancel.clone(),
            };
            let attempt = CatchUnwind(Box::pin(value.run(ctx)));
            let attempt = async { attempt.await.map_err(Failure::Panicked) };
            Ran::Finished(match config.timeout {
                None => attempt.await,
                Some(limit) => match actix_rt::time::timeout(limit, attempt).await {
                    Ok(result) => result,
                    Err(_) => Err(Failure::TimedOut(limit)),
                },
            })
        }
    };
    let cancelled = cancel.reason().map(str::to_string);
    // Deciding the outcome is errands' own code, but nothing in it may keep
    // the attempt from ending: a panic here would leak the kind's slot and
    // make shutdown wait forever. So it is guarded too, with a fallback
    // that cannot panic.
    let signal = match &ran {
        Ran::Finished(Ok(Ok(()))) => AttemptSignal::Succeeded,
        Ran::Finished(Err(Failure::TimedOut(_))) => AttemptSignal::Strained,
        Ran::Finished(Ok(Err(e))) if e.later().is_some_and(Later::holds_kind) => {
            AttemptSignal::Strained
        }
        _ => AttemptSignal::Neutral,
    };
    let now = shared.clock.now_ms();
    let throttle_until = match &ran {
        Ran::Finished(Ok(Err(e))) => e
            .later()
            .filter(|later| later.holds_kind())
            .map(|later| later.at(now)),
        _ => None,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        decide::<J>(&job, &config, &shared, ran, cancelled)
    }))
    .unwrap_or_else(|payload| {
        let error = format!(
            "errands could not decide this attempt's outcome ({})",
            panic_message(payload)
        );
        log::error!("errands: job {} of kind `{}`: {error}", job.id, J::KIND);
        if job.attempt >= job.max_attempts {
            Outcome::Dead { error }
        } else {
            Outcome::Retry {
                run_at: shared.clock.now_ms().saturating_add(60_000),
                error,
            }
        }
    });
    // A completed job's row is gone; anything else keeps its progress.
    let checkpoint = match outcome {
        Outcome::Completed => None,
        _ => progress.take_if_dirty().map(|snapshot| snapshot.bytes),
    };
    dispatcher.do_send(AttemptDone {
        kind: J::KIND,
        worker,
        took: began.elapsed(),
        max_attempts: job.max_attempts,
        finished: Finished {
            id: job.id,
            kind: J::KIND,
            attempt: job.attempt,
            checkpoint,
            outcome,
            // Unless the dispatcher finds its mark still unsent.
            marked: true,
        },
        signal,
        throttle_until,
    });
}
