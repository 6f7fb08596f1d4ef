//! The dispatcher: one per queue, the only place that claims its jobs.
//!
//! It keeps, per kind, the limit, the jobs running, a small buffer of
//! claimed jobs waiting for a slot (prefetch) and the slots reserved by a
//! claim in flight: `running ≤ limit` always holds (the limit lives in these
//! counters, not in a mailbox), and `running + buffered + reserved ≤ limit +
//! prefetch`. It talks to the store in one way only: "write these finished
//! attempts and claim up to N of each kind", one transaction, at most two
//! such requests in flight (the second only once it carries half a limit's
//! worth, so the writer has the next batch queued when it commits one).
//! While they wait, outcomes pile up and go together in the next request;
//! that is what lets a busy queue finish and claim hundreds of jobs per
//! commit.
//!
//! The buffer is what keeps both cores busy: when a job finishes, the next
//! one starts from the buffer at once while the store commits the outcome
//! and claims the refill. Without it the handlers would wait for every
//! commit and the store for every batch of handlers.
//!
//! It is woken by an enqueue in this process (no polling delay), by a
//! finished job (a freed slot), by the scheduler (a `run_at` came due) and by
//! a slow fallback poll for rows that other processes wrote.
//!
//! Live control lives in the same counters (`control.rs`): a paused or
//! throttled kind is left out of claims and starts, a lowered limit starts
//! nothing until fewer run, a rate window (`rate_window.rs`) caps starts,
//! and an adaptive kind's limit moves with its attempts (`adaptive.rs`).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

mod adaptive;
mod control;
mod drain;
mod failed_writes;
mod rate_window;
mod report;
mod slots;

pub(crate) use adaptive::AttemptSignal;
pub(crate) use control::{ApplyControl, Control, Inspect, KindState};

pub(crate) use drain::Drain;
use drain::Draining;

pub(crate) use slots::KindSlots;
use slots::PendingOutcome;

use super::worker::AttemptDone;
use super::StopActor;
use crate::engine::Engine;
use crate::error::Result;
use crate::store::{Claim, ClaimedJob, ControlRow, FinishAndClaim, FinishedAndClaimed, Outcome};

/// Finish-and-claim requests one dispatcher keeps in flight at most, unless
/// the store asks for more ([`Store::rounds_in_flight`](crate::store::Store)).
///
/// With one, the writer sat idle from each commit until the dispatcher had
/// handled the answer and sent the next request (measured: 8% of the
/// writer's time spent waiting in a drain). With two, the next request is
/// already queued when a commit ends. The second is only sent when it is
/// worth a transaction of its own (see [`Dispatcher::worth_second_request`]),
/// otherwise each of the two would claim a sliver.
const MAX_IN_FLIGHT: usize = 2;

/// The longest a started job's mark waits for a request going anyway.
/// Until it is written the job reads as `claimed`, and a crash in that
/// window gives its attempt back (once: see the store's recovery).
const MARK_DELAY: Duration = Duration::from_millis(20);

/// Jobs may be ready.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum Wake {
    /// Of this kind (an enqueue in this process).
    Kind(&'static str),
    /// Of any kind of the queue (a timer, a poll, a recovery, a requeue).
    All,
}

/// Runs [`Dispatcher::pump`] after the messages already in the mailbox.
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

pub(crate) struct Dispatcher {
    queue: &'static str,
    shared: Arc<Engine>,
    kinds: Vec<KindSlots>,
    poll_interval: Duration,
    pending: Vec<PendingOutcome>,
    /// Finish-and-claim requests in flight.
    in_flight: usize,
    /// After a failed write: no requests until the pause ends.
    paused: bool,
    /// A [`Pump`] is queued.
    pump_queued: bool,
    /// After a failed write: wait this long before the next one.
    write_backoff: Option<Duration>,
    /// The database was full: write outcomes one request at a time, no
    /// claims, until the outcomes waiting are all written.
    isolating: bool,
    /// Jobs claimed ahead that have started and whose start is not yet
    /// written (`claimed` until then, `running` after). Marks wait up to
    /// [`MARK_DELAY`] and then go with the next request (alone if none
    /// comes); a job whose outcome is sent first drops its mark, since the
    /// outcome replaces the row: a short job costs no mark at all.
    /// Measured on a no-op drain: the mark was the one extra row write per
    /// job beside the raw loop's claim and delete.
    marks: Vec<(i64, &'static str)>,
    /// Marks have waited [`MARK_DELAY`]: send them even alone.
    marks_due: bool,
    /// A timer for `marks_due` is set.
    mark_timer: bool,
    /// Jobs whose start marks are in a request in flight. Their outcomes
    /// wait for that request's answer, so that two requests in flight never
    /// write the same row: on PostgreSQL they run side by side on separate
    /// connections, and a mark and an outcome of two jobs in two requests
    /// deadlocked (seen in the four-process test).
    marking: std::collections::HashSet<i64>,
    draining: Option<Draining>,
    /// The queue is paused until then (`i64::MAX`: until resumed).
    queue_paused_until: Option<i64>,
    /// Stored knobs read at start, applied when the actor starts.
    initial_controls: Vec<ControlRow>,
    /// Bumped by every change applied here, so that a poll's read that
    /// began before it does not undo it.
    control_generation: u64,
    controls_read_in_flight: bool,
    /// Callers of applied changes, answered once no claim is in flight.
    control_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Dispatcher {
    pub(crate) fn new(
        queue: &'static str,
        shared: Arc<Engine>,
        kinds: Vec<KindSlots>,
        poll_interval: Duration,
        initial_controls: Vec<ControlRow>,
    ) -> Self {
        Dispatcher {
            queue,
            shared,
            kinds,
            poll_interval,
            pending: Vec::new(),
            in_flight: 0,
            paused: false,
            pump_queued: false,
            write_backoff: None,
            isolating: false,
            marks: Vec::new(),
            marks_due: false,
            mark_timer: false,
            marking: std::collections::HashSet::new(),
            draining: None,
            queue_paused_until: None,
            initial_controls,
            control_generation: 0,
            controls_read_in_flight: false,
            control_waiters: Vec::new(),
        }
    }

    /// Starts buffered jobs of every kind not held (paused, throttled),
    /// within limits and rate windows; asks for a wake when a rate window
    /// holds jobs back.
    fn start_ready(&mut self) {
        if !self.may_start() {
            return;
        }
        let now = self.shared.clock.now_ms();
        let queue_paused = self.queue_paused_until;
        for slots in &mut self.kinds {
            if slots.held_until(now, queue_paused).is_some() {
                // Claimed before the hold (a claim was in flight): back to
                // the queue, where every instance sees the hold.
                if !slots.buffer.is_empty() {
                    self.pending.extend(slots.release_buffered());
                }
                continue;
            }
            slots.start_buffered(&mut self.marks, now);
            if let Some(at) = slots.rate_blocked_until(now) {
                if slots.rate_wake_at != Some(at) {
                    slots.rate_wake_at = Some(at);
                    self.shared.signals.due_at(at);
                }
            }
        }
    }

    fn slots(&mut self, kind: &'static str) -> Option<&mut KindSlots> {
        self.kinds.iter_mut().find(|k| k.kind == kind)
    }

    /// Pumps once the messages already waiting have been handled, so that a
    /// burst of finished attempts (or wakes) becomes one request, not one
    /// request for the first and another for the rest.
    fn pump_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.pump_queued {
            self.pump_queued = true;
            ctx.notify(Pump);
        }
    }

    /// Sends finish-and-claim requests while there is work and fewer than
    /// [`MAX_IN_FLIGHT`] are out.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.start_ready();
        let most = self.shared.store.rounds_in_flight().max(MAX_IN_FLIGHT);
        while self.in_flight < most && !self.paused {
            if !self.send_request(ctx) {
                break;
            }
        }
        if self.in_flight == 0 {
            self.finish_drain_if_idle();
            self.answer_control_waiters();
        }
    }

    /// Whether a request sent while another is in flight would carry
    /// enough: at least half the queue's total limit in outcomes or in jobs
    /// it could claim. Smaller ones wait for the answer in flight and go
    /// with whatever else piles up meanwhile.
    fn worth_second_request(&self, claiming: bool) -> bool {
        let worth = self
            .kinds
            .iter()
            .map(|k| k.claim_size())
            .sum::<usize>()
            .div_ceil(2)
            .max(1);
        let claimable: usize = self
            .kinds
            .iter()
            .filter(|k| claiming && k.maybe_ready)
            .map(|k| k.claimable().min(k.claim_size()))
            .sum();
        self.pending.len() >= worth || claimable >= worth
    }

    /// Sends one request if there is anything to write or claim (and, with
    /// a request already in flight, enough to be worth it).
    fn send_request(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.isolating {
            return self.send_isolated(ctx);
        }
        let claiming = self.draining.is_none() && !self.shared.is_closing();
        if self.in_flight > 0 && !self.worth_second_request(claiming) {
            return false;
        }
        // One request claims at most a limit's worth of each kind: the rest
        // of the prefetch is for the next request, so that one can claim
        // while this one's jobs run.
        let now = self.shared.clock.now_ms();
        let queue_paused = self.queue_paused_until;
        let claims: Vec<Claim> = self
            .kinds
            .iter_mut()
            .filter(|k| claiming && k.maybe_ready && k.held_until(now, queue_paused).is_none())
            .filter_map(|k| {
                let n = k.claimable_at(now).min(k.claim_size());
                if n == 0 {
                    return None;
                }
                let start_now = k.start_now(n);
                k.reserved += n;
                k.reserved_now += start_now;
                Some(Claim {
                    kind: k.kind,
                    n,
                    start_now,
                    global_limit: k.global_limit,
                })
            })
            .collect();
        let (outcomes, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| !self.marking.contains(&p.finished.id));
        self.pending = held;
        let marks_alone = self.marks_due && !self.marks.is_empty();
        if outcomes.is_empty() && claims.is_empty() && !marks_alone {
            if !self.marks.is_empty() {
                self.arm_mark_timer(ctx);
            }
            return false;
        }
        self.send(outcomes, claims, ctx);
        true
    }

    /// Sends one finish-and-claim request (with every start mark waiting).
    fn send(
        &mut self,
        mut outcomes: Vec<PendingOutcome>,
        claims: Vec<Claim>,
        ctx: &mut Context<Self>,
    ) {
        let wakes: Vec<u64> = self.kinds.iter().map(|k| k.wakes).collect();
        // A job whose outcome goes now needs no mark: the outcome replaces
        // the row (a mark would be a write for nothing; on PostgreSQL a
        // dead row version per job). Such an outcome is of a row never
        // marked.
        let unsent: std::collections::HashSet<i64> = self.marks.iter().map(|(id, _)| *id).collect();
        for outcome in &mut outcomes {
            if unsent.contains(&outcome.finished.id) {
                outcome.finished.marked = false;
            }
        }
        let finishing: std::collections::HashSet<i64> =
            outcomes.iter().map(|p| p.finished.id).collect();
        self.marks.retain(|(id, _)| !finishing.contains(id));
        // The others go once they have waited [`MARK_DELAY`]: by then most
        // jobs of a busy queue have finished and need none.
        let marks = if self.marks_due {
            self.marks_due = false;
            std::mem::take(&mut self.marks)
        } else {
            Vec::new()
        };
        if !self.marks.is_empty() {
            self.arm_mark_timer(ctx);
        }
        let batch = FinishAndClaim {
            started: marks.clone(),
            finished: outcomes.iter().map(|p| p.finished.clone()).collect(),
            queue: self.queue,
            claims: claims.clone(),
            now: self.shared.clock.now_ms(),
        };
        self.in_flight += 1;
        self.marking.extend(marks.iter().map(|(id, _)| *id));
        let request = self.shared.store.finish_and_claim(batch);
        ctx.spawn(request.into_actor(self).map(move |result, act, ctx| {
            for (id, _) in &marks {
                act.marking.remove(id);
            }
            if result.is_err() {
                // Not written: they go with the next request.
                let later = std::mem::replace(&mut act.marks, marks);
                act.marks.extend(later);
            }
            act.answered(result, outcomes, claims, wakes, ctx)
        }));
    }

    /// The store answered a finish-and-claim request.
    fn answered(
        &mut self,
        result: Result<FinishedAndClaimed>,
        mut outcomes: Vec<PendingOutcome>,
        asked: Vec<Claim>,
        wakes: Vec<u64>,
        ctx: &mut Context<Self>,
    ) {
        self.in_flight -= 1;
        for claim in &asked {
            if let Some(slots) = self.slots(claim.kind) {
                slots.reserved -= claim.n;
                slots.reserved_now -= claim.start_now;
            }
        }
        match result {
            Ok(answer) => {
                let unwritten = report::take_indexes(&mut outcomes, &answer.unwritten);
                self.publish(&outcomes, ctx);
                self.start_jobs(answer.claimed, &asked, &wakes);
                self.release_buffers_if_draining();
                if unwritten.is_empty() {
                    self.write_backoff = None;
                    self.pump(ctx);
                } else {
                    self.retry_later(
                        unwritten,
                        "the database is full; outcomes that free space were written",
                        false,
                        ctx,
                    );
                }
            }
            Err(e) => {
                if e.is_disk_full() && outcomes.len() > 1 && !self.isolating {
                    self.isolating = true;
                    self.write_backoff = None;
                    // Split at once: the completions may well fit.
                    let later = std::mem::take(&mut self.pending);
                    self.pending = outcomes;
                    self.pending.extend(later);
                    self.pump(ctx);
                    return;
                }
                if e.is_disk_full() {
                    self.isolating = true;
                }
                self.retry_later(outcomes, &e.to_string(), e.is_store_gone(), ctx)
            }
        }
        self.answer_control_waiters();
    }

    /// Buffers claimed jobs, starts as many as slots allow, and notes which
    /// kinds have nothing more ready.
    fn start_jobs(&mut self, claimed: Vec<ClaimedJob>, asked: &[Claim], wakes_at_send: &[u64]) {
        for (slots, wakes) in self.kinds.iter_mut().zip(wakes_at_send) {
            let Some(asked) = asked.iter().find(|c| c.kind == slots.kind).map(|c| &c.n) else {
                continue;
            };
            let got = claimed.iter().filter(|j| j.kind == slots.kind).count();
            // Nothing more is ready, unless a wake came while the claim was
            // in flight (a job came due after the claim looked).
            if got < *asked && slots.wakes == *wakes {
                slots.maybe_ready = false;
            } else if got == *asked {
                // A full claim: more may be waiting, whatever an earlier
                // short answer from the other request in flight said.
                slots.maybe_ready = true;
            }
        }
        for job in claimed {
            if let Some(slots) = self.slots(job.kind) {
                slots.buffer.push_back(job);
            }
        }
        self.start_ready();
    }

    /// Sends waiting marks after [`MARK_DELAY`] if no other request has
    /// taken them by then (a long job's start is recorded within it).
    fn arm_mark_timer(&mut self, ctx: &mut Context<Self>) {
        if self.mark_timer {
            return;
        }
        self.mark_timer = true;
        ctx.run_later(MARK_DELAY, |act, ctx| {
            act.mark_timer = false;
            if !act.marks.is_empty() {
                act.marks_due = true;
                act.pump(ctx);
            }
        });
    }

    /// Whether buffered jobs may start (not shutting down).
    fn may_start(&self) -> bool {
        self.draining.is_none() && !self.shared.is_closing()
    }

    /// Now that these outcomes are committed: makes retries run when due,
    /// logs failures, and tells subscribers.
    fn publish(&mut self, outcomes: &[PendingOutcome], ctx: &mut Context<Self>) {
        let now = self.shared.clock.now_ms();
        let mut next_retry: Option<i64> = None;
        for p in outcomes {
            let (Outcome::Retry { run_at, .. } | Outcome::Snooze { run_at }) = &p.finished.outcome
            else {
                continue;
            };
            if *run_at <= now {
                // Came due while its outcome was being written: nothing else
                // would wake anyone for it before the next poll.
                if let Some(slots) = self.slots(p.kind) {
                    slots.wake();
                }
                self.pump_soon(ctx);
            } else {
                next_retry = Some(next_retry.map_or(*run_at, |n| n.min(*run_at)));
            }
        }
        if let Some(run_at) = next_retry {
            self.shared.signals.due_at(run_at);
        }
        for p in outcomes {
            report::log(self.queue, p);
        }
        if let Some(events) = self.shared.event_sender() {
            for p in outcomes {
                let _ = events.send(report::event(p));
            }
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let initial = std::mem::take(&mut self.initial_controls);
        self.apply_rows(&initial, ctx);
        ctx.run_interval(self.poll_interval, |act, ctx| {
            for slots in &mut act.kinds {
                slots.wake();
            }
            act.poll_controls(ctx);
            act.pump(ctx);
        });
        self.pump(ctx);
    }
}

impl Handler<StopActor> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: StopActor, ctx: &mut Context<Self>) {
        // Dropping the dispatcher drops its workers' addresses, and with
        // them the workers.
        ctx.stop();
    }
}

impl Handler<Wake> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Wake, ctx: &mut Context<Self>) {
        for slots in &mut self.kinds {
            if matches!(msg, Wake::All) || matches!(msg, Wake::Kind(kind) if kind == slots.kind) {
                slots.wake();
            }
        }
        self.pump_soon(ctx);
    }
}

impl Handler<Pump> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: Pump, ctx: &mut Context<Self>) {
        self.pump_queued = false;
        self.pump(ctx);
    }
}

impl Handler<AttemptDone> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: AttemptDone, ctx: &mut Context<Self>) {
        // A retry due already (no backoff) is claimable at once.
        let due_now = matches!(msg.finished.outcome,
            Outcome::Retry { run_at, .. } | Outcome::Snooze { run_at }
                if run_at <= self.shared.clock.now_ms());
        if let Some(slots) = self.kinds.iter_mut().find(|k| k.kind == msg.kind) {
            slots.running = slots.running.saturating_sub(1);
            slots.worker.finished(msg.worker, msg.took);
            // A finished job of a globally limited kind frees a global
            // slot: look again even if the last claim came back short.
            if due_now || slots.global_limit.is_some() {
                slots.wake();
            }
        }
        self.adapt(msg.kind, msg.signal, msg.took);
        if let Some(until) = msg.throttle_until {
            self.throttle(msg.kind, until, ctx);
        }
        self.start_ready();
        self.pending.push(PendingOutcome {
            kind: msg.kind,
            max_attempts: msg.max_attempts,
            finished: msg.finished,
        });
        self.pump_soon(ctx);
    }
}
