//! Starting the actor tree, which is the supervisor's job (the design
//! card: the supervisor owns the store and starts the rest). The builder
//! opens the store and hands over the plan; this starts, in order, the
//! scheduler (dispatchers tell it about retries), the handler arbiters, one
//! dispatcher per queue with a worker per kind on each arbiter, and the
//! supervisor, and fills in the engine's [`Signals`](crate::signals::Signals).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Recipient};
use actix_rt::{Arbiter, ArbiterHandle};

use super::dispatcher::{Dispatcher, KindSlots};
use super::scheduler::Scheduler;
use super::supervisor::{Retention, Supervisor};
use super::worker::{AttemptDone, WorkerHandles};
use crate::config::JobConfig;
use crate::engine::Engine;
use crate::store::ControlRow;

/// Starts a kind's workers (one per handler arbiter); type-erased `J`.
pub(crate) type StartWorker = fn(
    &'static str,
    Arc<JobConfig>,
    Recipient<AttemptDone>,
    Arc<Engine>,
    &[ArbiterHandle],
) -> WorkerHandles;

/// One queue to start: its poll interval and its kinds.
pub(crate) struct QueuePlan {
    pub queue: &'static str,
    pub poll_interval: Duration,
    pub kinds: Vec<(&'static str, Arc<JobConfig>, StartWorker)>,
}

/// Starts every actor of an instance and answers the supervisor's address.
pub(crate) fn start(
    engine: Arc<Engine>,
    queues: Vec<QueuePlan>,
    worker_threads: usize,
    recovery_interval: Duration,
    retention: Retention,
    controls: Vec<ControlRow>,
) -> Addr<Supervisor> {
    let scheduler = Scheduler::new(engine.clone()).start();
    engine.signals.set_scheduler(scheduler);
    // Handlers run on arbiters, one thread each: a job's future is not
    // `Send`, so it stays on the arbiter it started on. The first is the
    // arbiter `start()` runs on (the dispatchers' own), so that a serial
    // kind's jobs never change threads.
    let arbiters: Vec<Arbiter> = (1..worker_threads).map(|_| Arbiter::new()).collect();
    let handles: Arc<[ArbiterHandle]> = std::iter::once(Arbiter::current())
        .chain(arbiters.iter().map(|a| a.handle()))
        .collect();
    let mut dispatchers = HashMap::new();
    for plan in queues {
        let engine = engine.clone();
        let handles = handles.clone();
        let queue = plan.queue;
        let controls: Vec<ControlRow> = controls
            .iter()
            .filter(|row| row.queue == queue)
            .cloned()
            .collect();
        let addr = Dispatcher::create(move |ctx: &mut Context<Dispatcher>| {
            let me = ctx.address();
            let kinds = plan
                .kinds
                .into_iter()
                .map(|(kind, config, start)| {
                    let slots_config = config.clone();
                    let worker = start(
                        queue,
                        config,
                        me.clone().recipient(),
                        engine.clone(),
                        &handles,
                    );
                    KindSlots::new(kind, &slots_config, worker)
                })
                .collect();
            Dispatcher::new(queue, engine, kinds, plan.poll_interval, controls)
        });
        dispatchers.insert(queue, addr);
    }
    engine.signals.set_dispatchers(dispatchers);
    Supervisor::new(engine, arbiters, recovery_interval, retention).start()
}
