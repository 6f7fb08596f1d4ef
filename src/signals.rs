//! The one way to wake things: "jobs of this kind may be ready", "wake
//! every dispatcher", "a job comes due at t". Every actor and the handle go
//! through these; nobody else keeps a list of dispatchers.
//!
//! The addresses are filled in once the actors are started (the scheduler
//! first, since dispatchers tell it about retries); a signal sent before
//! that reaches nobody, which is harmless: every dispatcher looks for ready
//! jobs when it starts.

use std::collections::HashMap;
use std::sync::OnceLock;

use actix::Addr;

use crate::actors::dispatcher::{Dispatcher, Wake};
use crate::actors::scheduler::{DueAt, Scheduler};
use crate::actors::StopActor;

/// How to reach the dispatchers and the scheduler of one instance.
#[derive(Default)]
pub(crate) struct Signals {
    scheduler: OnceLock<Addr<Scheduler>>,
    dispatchers: OnceLock<HashMap<&'static str, Addr<Dispatcher>>>,
}

impl Signals {
    /// Records the scheduler's address (once).
    pub(crate) fn set_scheduler(&self, scheduler: Addr<Scheduler>) {
        let _ = self.scheduler.set(scheduler);
    }

    /// Records the dispatchers' addresses by queue (once).
    pub(crate) fn set_dispatchers(&self, dispatchers: HashMap<&'static str, Addr<Dispatcher>>) {
        let _ = self.dispatchers.set(dispatchers);
    }

    /// Jobs of `kind` in `queue` may be ready now.
    pub(crate) fn kind_ready(&self, queue: &str, kind: &'static str) {
        if let Some(dispatcher) = self.dispatchers.get().and_then(|d| d.get(queue)) {
            dispatcher.do_send(Wake::Kind(kind));
        }
    }

    /// Jobs of any kind in `queue` may be ready (another host enqueued).
    pub(crate) fn queue_ready(&self, queue: &str) {
        if let Some(dispatcher) = self.dispatchers.get().and_then(|d| d.get(queue)) {
            dispatcher.do_send(Wake::All);
        }
    }

    /// Jobs of any kind may be ready (a timer fired, jobs were requeued or
    /// recovered).
    pub(crate) fn wake_all(&self) {
        for dispatcher in self.dispatchers() {
            dispatcher.do_send(Wake::All);
        }
    }

    /// A job comes due at `at` (ms since the epoch).
    pub(crate) fn due_at(&self, at: i64) {
        if let Some(scheduler) = self.scheduler.get() {
            scheduler.do_send(DueAt(at));
        }
    }

    /// The dispatcher of `queue`, if this instance runs it.
    pub(crate) fn dispatcher(&self, queue: &str) -> Option<&Addr<Dispatcher>> {
        self.dispatchers.get().and_then(|d| d.get(queue))
    }

    /// Every dispatcher, with its queue.
    pub(crate) fn dispatchers_by_queue(
        &self,
    ) -> impl Iterator<Item = (&'static str, &Addr<Dispatcher>)> {
        self.dispatchers
            .get()
            .into_iter()
            .flat_map(|d| d.iter().map(|(queue, addr)| (*queue, addr)))
    }

    /// Every dispatcher.
    pub(crate) fn dispatchers(&self) -> impl Iterator<Item = &Addr<Dispatcher>> {
        self.dispatchers.get().into_iter().flat_map(|d| d.values())
    }

    /// Stops every dispatcher and the scheduler (end of shutdown).
    pub(crate) fn stop_all(&self) {
        for dispatcher in self.dispatchers() {
            dispatcher.do_send(StopActor);
        }
        if let Some(scheduler) = self.scheduler.get() {
            scheduler.do_send(StopActor);
        }
    }
}
