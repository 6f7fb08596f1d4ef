//! Graceful shutdown of one queue: stop claiming, release what was
//! claimed ahead, let running jobs finish until the deadline, then stop and
//! release the rest, and answer once nothing is in flight.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::slots::PendingOutcome;
use super::Dispatcher;
use crate::store::{Finished, Outcome};

/// Stop claiming, let running jobs finish until `deadline`, then release the
/// rest. Answers how many jobs were released unfinished.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct Drain {
    pub deadline: Duration,
}

pub(super) struct Draining {
    pub(super) waiters: Vec<oneshot::Sender<usize>>,
    pub(super) released: usize,
    /// The shutdown deadline passed: outcomes that still cannot be written
    /// are given up (their rows stay `running` under this owner, whose lock
    /// goes at close, so the next instance recovers them) rather than
    /// keeping shutdown waiting forever.
    pub(super) deadline_passed: bool,
}

impl Dispatcher {
    /// While draining, buffered jobs (which never started) go back to the
    /// queue at once, including those a claim in flight brings in late.
    pub(super) fn release_buffers_if_draining(&mut self) {
        if self.draining.is_none() {
            return;
        }
        for slots in &mut self.kinds {
            let released = slots.release_buffered();
            self.pending.extend(released);
        }
    }

    pub(super) fn finish_drain_if_idle(&mut self) {
        let idle = self.in_flight == 0
            && self.pending.is_empty()
            && self.marks.is_empty()
            && self
                .kinds
                .iter()
                .all(|k| k.running == 0 && k.reserved == 0 && k.buffer.is_empty());
        if !idle {
            return;
        }
        if let Some(draining) = self.draining.as_mut() {
            for waiter in draining.waiters.drain(..) {
                let _ = waiter.send(draining.released);
            }
        }
    }

    /// The shutdown deadline passed: stop what still runs and release it.
    pub(super) fn abort_running(&mut self, ctx: &mut Context<Self>) {
        if let Some(draining) = self.draining.as_mut() {
            draining.deadline_passed = true;
        }
        let aborts: Vec<_> = self
            .kinds
            .iter_mut()
            .filter(|slots| slots.running > 0)
            .map(|slots| (slots.kind, slots.worker.abort_all()))
            .collect();
        for (kind, abort) in aborts {
            ctx.spawn(abort.into_actor(self).map(move |aborted, act, ctx| {
                if let Some(draining) = act.draining.as_mut() {
                    draining.released += aborted.len();
                }
                if let Some(slots) = act.slots(kind) {
                    slots.running = slots.running.saturating_sub(aborted.len());
                }
                for job in aborted {
                    act.pending.push(PendingOutcome {
                        kind,
                        max_attempts: 0,
                        finished: Finished {
                            id: job.id,
                            kind,
                            attempt: job.attempt,
                            outcome: Outcome::Released { started: true },
                            checkpoint: job.checkpoint,
                            marked: true,
                        },
                    });
                }
                act.pump(ctx);
            }));
        }
    }
}

impl Handler<Drain> for Dispatcher {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let draining = self.draining.get_or_insert(Draining {
            waiters: Vec::new(),
            released: 0,
            deadline_passed: false,
        });
        draining.waiters.push(tx);
        self.release_buffers_if_draining();
        ctx.run_later(msg.deadline, |act, ctx| act.abort_running(ctx));
        self.pump(ctx);
        Box::pin(async move { rx.await.unwrap_or(0) })
    }
}
