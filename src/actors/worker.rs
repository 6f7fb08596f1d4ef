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
use std::sync::Arc;

use actix::prelude::*;
use actix_rt::task::JoinHandle;

use super::unwind::CatchUnwind;
use super::Shared;
use crate::codec;
use crate::config::JobConfig;
use crate::context::JobContext;
use crate::job::Job;
use crate::progress::Progress;
use crate::store::{ClaimedJob, Finished, Outcome};

/// Run these claimed jobs now.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RunJobs(pub Vec<ClaimedJob>);

/// Stop every attempt still running (shutdown deadline passed); answers
/// their job ids and unsaved progress.
#[derive(Message)]
#[rtype(result = "Vec<(i64, Option<Vec<u8>>)>")]
pub(crate) struct AbortRunning;

/// An attempt ended; sent by the attempt's task to the dispatcher.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AttemptDone {
    pub kind: &'static str,
    pub attempt: u32,
    pub finished: Finished,
}

/// The addresses a dispatcher keeps for one kind's worker.
pub(crate) struct WorkerHandles {
    pub run: Recipient<RunJobs>,
    pub abort: Recipient<AbortRunning>,
}

/// Starts the worker for `J`; stored type-erased in the kind's registration.
pub(crate) fn start_worker<J: Job>(
    queue: &'static str,
    config: Arc<JobConfig>,
    report: Recipient<AttemptDone>,
    shared: Arc<Shared>,
) -> WorkerHandles {
    let addr = Worker::<J> {
        queue,
        config,
        report,
        shared,
        tasks: Vec::new(),
        _job: PhantomData,
    }
    .start();
    WorkerHandles {
        run: addr.clone().recipient(),
        abort: addr.recipient(),
    }
}

struct Worker<J: Job> {
    queue: &'static str,
    config: Arc<JobConfig>,
    report: Recipient<AttemptDone>,
    shared: Arc<Shared>,
    /// Tasks started and possibly still running, with their progress, for
    /// shutdown.
    tasks: Vec<(i64, JoinHandle<()>, Arc<Progress>)>,
    _job: PhantomData<fn() -> J>,
}

impl<J: Job> Actor for Worker<J> {
    type Context = Context<Self>;
}

impl<J: Job> Handler<RunJobs> for Worker<J> {
    type Result = ();

    fn handle(&mut self, msg: RunJobs, _: &mut Self::Context) {
        if self.tasks.len() > 2 * self.config.concurrency {
            self.tasks.retain(|(_, task, _)| !task.is_finished());
        }
        for job in msg.0 {
            let id = job.id;
            let progress = Arc::new(Progress::from_checkpoint(id, job.checkpoint.as_deref()));
            let task = actix_rt::spawn(run_attempt::<J>(
                job,
                self.queue,
                self.config.clone(),
                self.shared.clone(),
                progress.clone(),
                self.report.clone(),
            ));
            self.tasks.push((id, task, progress));
        }
    }
}

impl<J: Job> Handler<AbortRunning> for Worker<J> {
    type Result = MessageResult<AbortRunning>;

    fn handle(&mut self, _: AbortRunning, _: &mut Self::Context) -> Self::Result {
        // A finished task has already reported its outcome; an unfinished
        // one never will once aborted, so its job is released instead.
        let mut aborted = Vec::new();
        for (id, task, progress) in self.tasks.drain(..) {
            if !task.is_finished() {
                task.abort();
                aborted.push((id, progress.take_if_dirty()));
            }
        }
        MessageResult(aborted)
    }
}

/// One attempt, start to report.
async fn run_attempt<J: Job>(
    job: ClaimedJob,
    queue: &'static str,
    config: Arc<JobConfig>,
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    report: Recipient<AttemptDone>,
) {
    let outcome = match codec::decode::<J>(&job.payload) {
        Err(e) => Outcome::Dead {
            error: format!("payload could not be decoded as `{}`: {e}", J::KIND),
        },
        Ok(value) => {
            let ctx = JobContext {
                id: job.id,
                kind: J::KIND,
                queue,
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                shared: shared.clone(),
                progress: progress.clone(),
            };
            let attempt = CatchUnwind(Box::pin(value.run(ctx)));
            let result = match config.timeout {
                None => attempt.await,
                Some(limit) => match actix_rt::time::timeout(limit, attempt).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("timed out after {limit:?}")),
                },
            };
            match result {
                Ok(Ok(())) => Outcome::Completed,
                Ok(Err(e)) if e.is_permanent() => Outcome::Dead {
                    error: e.message().to_string(),
                },
                Ok(Err(e)) => failed(&job, &config, &shared, e.message().to_string()),
                Err(panic_or_timeout) => failed(&job, &config, &shared, panic_or_timeout),
            }
        }
    };
    report.do_send(AttemptDone {
        kind: J::KIND,
        attempt: job.attempt,
        finished: Finished {
            id: job.id,
            // A completed job's row is gone; anything else keeps its progress.
            checkpoint: match outcome {
                Outcome::Completed => None,
                _ => progress.take_if_dirty(),
            },
            outcome,
        },
    });
}

/// A failed attempt: retry after the backoff, or dead if it was the last.
fn failed(job: &ClaimedJob, config: &JobConfig, shared: &Shared, error: String) -> Outcome {
    if job.attempt >= job.max_attempts {
        Outcome::Dead { error }
    } else {
        let delay = config.backoff.delay(job.attempt);
        Outcome::Retry {
            run_at: shared.clock.now_ms() + delay.as_millis() as i64,
            error,
        }
    }
}
