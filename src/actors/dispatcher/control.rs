//! Live control as one dispatcher applies it: limits, pauses, throttles,
//! cancels.
//!
//! Every knob is stored first (by the handle, or by the dispatcher for a
//! throttle) and then applied here, in the dispatcher's own counters: a
//! paused or throttled kind is simply left out of claims and starts, a
//! lowered limit starts nothing until fewer than the new limit run. None of
//! it reads the store on the claim path. Changes made by other processes
//! arrive with the poll: each poll reads the queue's stored knobs and the
//! cancel requests for jobs this instance holds.
//!
//! A change applied here answers its caller only once no claim is in
//! flight, so that when `pause` returns, nothing more is claimed.

use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::slots::PendingOutcome;
use super::Dispatcher;
use crate::actors::worker::CancelJob;
use crate::events::Event;
use crate::store::{ControlRow, ControlWrite, Finished, Outcome, QueueControls};

/// One change to apply, already stored.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    /// A kind's override (`None`: back to the code's value).
    Concurrency {
        kind: &'static str,
        limit: Option<usize>,
    },
    /// Pause the queue (`kind` `None`) or a kind until then; `None` resumes.
    Pause {
        kind: Option<&'static str>,
        until: Option<i64>,
    },
    /// Cancel this job if this instance holds it.
    Cancel { id: i64, reason: String },
}

/// Applies a [`Control`]; answers once it is in force and no claim is in
/// flight.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ApplyControl(pub Control);

/// What this dispatcher has in force for each of its kinds.
#[derive(Message)]
#[rtype(result = "Vec<KindState>")]
pub(crate) struct Inspect;

/// One kind's knobs in force in this instance.
#[derive(Debug, Clone)]
pub(crate) struct KindState {
    pub kind: &'static str,
    pub default_limit: usize,
    pub limit: usize,
    pub adaptive: Option<(usize, usize)>,
    pub rate: Option<(usize, i64)>,
    pub running: usize,
}

impl Dispatcher {
    /// Applies stored knobs: the rows of this queue (read at start or at a
    /// poll). A knob with no row is off.
    pub(super) fn apply_rows(&mut self, rows: &[ControlRow], ctx: &mut Context<Self>) {
        let queue_row = rows
            .iter()
            .find(|r| r.queue == self.queue && r.kind.is_empty());
        self.queue_paused_until = queue_row.and_then(|r| r.paused_until);
        for i in 0..self.kinds.len() {
            let row = rows
                .iter()
                .find(|r| r.queue == self.queue && r.kind == self.kinds[i].kind);
            let slots = &mut self.kinds[i];
            slots.override_limit = row.and_then(|r| r.concurrency);
            slots.paused_until = row.and_then(|r| r.paused_until);
            // A throttle stored by this instance may not have landed yet.
            let stored = row.and_then(|r| r.throttled_until);
            if stored > slots.throttled_until {
                slots.throttled_until = stored;
                let (queue, kind) = (self.queue, slots.kind);
                if let Some(until) = stored {
                    self.shared.announce_throttle(queue, kind, until);
                }
            }
            if slots.refresh_limit() {
                log::info!(
                    "errands: kind `{}` now runs up to {} at once here (stored setting)",
                    slots.kind,
                    slots.limit
                );
            }
        }
        self.after_control_change(ctx);
    }

    /// Reads this queue's stored knobs and cancel requests; applies them
    /// unless a change was applied here meanwhile (the read may predate it).
    pub(super) fn poll_controls(&mut self, ctx: &mut Context<Self>) {
        if self.controls_read_in_flight {
            return;
        }
        self.controls_read_in_flight = true;
        let generation = self.control_generation;
        let read = self.shared.store.queue_controls(self.queue);
        ctx.spawn(read.into_actor(self).map(
            move |result: crate::error::Result<QueueControls>, act, ctx| {
                act.controls_read_in_flight = false;
                match result {
                    Ok(controls) => {
                        if act.control_generation == generation {
                            act.apply_rows(&controls.rows, ctx);
                        }
                        for (id, reason) in controls.cancels {
                            act.cancel_job(id, reason, ctx);
                        }
                    }
                    Err(e) => log::warn!(
                        "errands: queue `{}`: could not read the stored controls: {e}",
                        act.queue
                    ),
                }
            },
        ));
    }

    /// After any change: release what held kinds had buffered, set wakes
    /// for holds that end, start what may start, and claim.
    fn after_control_change(&mut self, ctx: &mut Context<Self>) {
        let now = self.shared.clock.now_ms();
        let queue_paused = self.queue_paused_until;
        for slots in &mut self.kinds {
            match slots.held_until(now, queue_paused) {
                Some(until) => {
                    let released = slots.release_buffered();
                    self.pending.extend(released);
                    if until != i64::MAX {
                        self.shared.signals.due_at(until);
                    }
                }
                None => slots.wake(),
            }
        }
        self.pump(ctx);
    }

    /// Cancels job `id` if this instance holds it: a buffered job (claimed
    /// ahead, not started) is written back as cancelled at once; a running
    /// one's handler is signalled, and aborted after the grace period.
    ///
    /// A request stays stored until the job's outcome is written, so each
    /// poll passes it on again; a worker that already signalled the job
    /// ignores the repeat (and one that does not run it ignores it too).
    pub(super) fn cancel_job(&mut self, id: i64, reason: String, ctx: &mut Context<Self>) {
        for slots in &mut self.kinds {
            if let Some(index) = slots.buffer.iter().position(|job| job.id == id) {
                let job = slots.buffer.remove(index).expect("found");
                self.pending.push(PendingOutcome {
                    kind: slots.kind,
                    max_attempts: job.max_attempts,
                    finished: Finished {
                        id,
                        kind: slots.kind,
                        attempt: job.attempt,
                        outcome: Outcome::Cancelled { reason },
                        checkpoint: None,
                        marked: job.marked,
                    },
                });
                self.pump_soon(ctx);
                return;
            }
        }
        let cancel = CancelJob { id, reason };
        for slots in &self.kinds {
            slots.worker.cancel(&cancel);
        }
    }

    /// A handler throttled its kind until `until`: hold it here at once,
    /// and store it for every instance.
    pub(super) fn throttle(&mut self, kind: &'static str, until: i64, ctx: &mut Context<Self>) {
        let Some(slots) = self.slots(kind) else {
            return;
        };
        if slots.throttled_until.is_some_and(|t| t >= until) {
            return;
        }
        slots.throttled_until = Some(until);
        self.shared.announce_throttle(self.queue, kind, until);
        let write = self.shared.store.write_control(ControlWrite::Throttle {
            queue: self.queue.to_string(),
            kind: kind.to_string(),
            until,
        });
        ctx.spawn(write.into_actor(self).map(move |result, _, _| {
            if let Err(e) = result {
                log::error!("errands: could not store the throttle of kind `{kind}`: {e}");
            }
        }));
        self.after_control_change(ctx);
    }

    /// Records an attempt's signal for an adaptive kind; tells subscribers
    /// when its limit moves.
    pub(super) fn adapt(
        &mut self,
        kind: &'static str,
        signal: super::AttemptSignal,
        took: std::time::Duration,
    ) {
        let queue = self.queue;
        let Some(slots) = self.slots(kind) else {
            return;
        };
        let Some(adaptive) = slots.adaptive.as_mut() else {
            return;
        };
        if adaptive.record(signal, took, Instant::now()).is_none() || !slots.refresh_limit() {
            return;
        }
        let limit = slots.limit;
        log::info!("errands: kind `{kind}` adapts its concurrency to {limit}");
        if let Some(events) = self.shared.event_sender() {
            let _ = events.send(Event::ConcurrencyChanged { queue, kind, limit });
        }
    }

    /// Answers waiters of applied changes once no claim is in flight.
    pub(super) fn answer_control_waiters(&mut self) {
        if self.in_flight == 0 {
            for waiter in self.control_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Handler<ApplyControl> for Dispatcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: ApplyControl, ctx: &mut Context<Self>) -> Self::Result {
        self.control_generation += 1;
        match msg.0 {
            Control::Concurrency { kind, limit } => {
                if let Some(slots) = self.slots(kind) {
                    slots.override_limit = limit;
                    slots.refresh_limit();
                }
            }
            Control::Pause { kind: None, until } => self.queue_paused_until = until,
            Control::Pause {
                kind: Some(kind),
                until,
            } => {
                if let Some(slots) = self.slots(kind) {
                    slots.paused_until = until;
                }
            }
            Control::Cancel { id, reason } => self.cancel_job(id, reason, ctx),
        }
        self.after_control_change(ctx);
        let (tx, rx) = oneshot::channel();
        self.control_waiters.push(tx);
        self.answer_control_waiters();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Inspect> for Dispatcher {
    type Result = MessageResult<Inspect>;

    fn handle(&mut self, _: Inspect, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.kinds
                .iter()
                .map(|slots| KindState {
                    kind: slots.kind,
                    default_limit: slots.default_limit,
                    limit: slots.limit,
                    adaptive: slots.adaptive.as_ref().map(|a| (a.min, a.max)),
                    rate: slots.rate.as_ref().map(|r| r.limit()),
                    running: slots.running,
                })
                .collect(),
        )
    }
}
