//! The scheduler: one timer, set for the earliest future `run_at`.
//!
//! It never loads delayed jobs into memory. It knows one instant, the
//! earliest `run_at` it has heard of (from an enqueue with a delay, a retry
//! written by a dispatcher, or the store's answer to "what is next?"), and
//! sleeps until then. When the timer fires it wakes every dispatcher and
//! asks the store for the next instant. With a [`ManualClock`](crate::ManualClock)
//! it also re-checks whenever the clock is advanced, so tests need no sleeps.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::StopActor;
use crate::engine::Engine;

/// A job will become due at this instant (ms since the epoch).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct DueAt(pub i64);

/// The clock was advanced by hand.
#[derive(Message)]
#[rtype(result = "()")]
struct ClockMoved;

/// The longest single timer: far-future instants are reached in steps.
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);

pub(crate) struct Scheduler {
    shared: Arc<Engine>,
    /// The instant the timer is set for.
    armed_at: Option<i64>,
    timer: Option<SpawnHandle>,
}

impl Scheduler {
    pub(crate) fn new(shared: Arc<Engine>) -> Self {
        Scheduler {
            shared,
            armed_at: None,
            timer: None,
        }
    }

    fn arm(&mut self, at: i64, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.armed_at = Some(at);
        // Due at the start of millisecond `at`; measured in microseconds so
        // the timer does not add up to a millisecond of rounding. Saturating,
        // and never longer than MAX_TIMER: a far-future `run_at` (up to the
        // year 9999) re-arms when the timer fires early (see `fire`).
        let delay_us = at
            .saturating_mul(1000)
            .saturating_sub(self.shared.clock.now_us())
            .clamp(0, MAX_TIMER.as_micros() as i64) as u64;
        self.timer = Some(ctx.run_later(Duration::from_micros(delay_us), |act, ctx| {
            act.timer = None;
            act.fire(ctx);
        }));
    }

    /// Something is due (or the clock says so): wake everyone, then look
    /// for the next instant.
    fn fire(&mut self, ctx: &mut Context<Self>) {
        let now = self.shared.clock.now_ms();
        match self.armed_at {
            Some(at) if at > now => {
                // A manual clock moved, but not far enough; real timers can
                // also fire a hair early. Set the timer again.
                self.arm(at, ctx);
                return;
            }
            _ => {}
        }
        self.armed_at = None;
        self.shared.signals.wake_all();
        self.refresh(now, ctx);
    }

    /// Asks the store for the earliest `run_at` after `after`.
    fn refresh(&mut self, after: i64, ctx: &mut Context<Self>) {
        if self.shared.kinds.is_empty() {
            return;
        }
        let kinds = self
            .shared
            .kinds
            .iter()
            .map(|(queue, kind)| (queue.to_string(), kind.to_string()))
            .collect();
        let request = self.shared.store.next_run_at(kinds, after);
        ctx.spawn(
            request
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(Some(at)) if act.armed_at.is_none_or(|armed| at < armed) => act.arm(at, ctx),
                    Ok(_) => {}
                    Err(e) => log::warn!("errands: scheduler could not read the next run_at: {e}"),
                }),
        );
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        self.shared
            .clock
            .on_advance(Box::new(move || me.do_send(ClockMoved)));
        // Jobs written before this start (or by other processes) may be
        // waiting for a future run_at.
        let now = self.shared.clock.now_ms();
        self.refresh(now, ctx);
    }
}

impl Handler<StopActor> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<DueAt> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: DueAt, ctx: &mut Context<Self>) {
        if self.armed_at.is_none_or(|armed| msg.0 < armed) {
            self.arm(msg.0, ctx);
        }
    }
}

impl Handler<ClockMoved> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: ClockMoved, ctx: &mut Context<Self>) {
        if let Some(at) = self.armed_at {
            if at <= self.shared.clock.now_ms() {
                self.fire(ctx);
            } else {
                self.arm(at, ctx);
            }
        } else {
            // Jobs written by other processes or before this start may have
            // come due: ask.
            let now = self.shared.clock.now_ms();
            self.shared.signals.wake_all();
            self.refresh(now, ctx);
        }
    }
}
