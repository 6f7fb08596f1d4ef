//! The supervisor: owns the store's lifecycle, watches for dead processes,
//! prunes retained jobs, and runs graceful shutdown.
//!
//! The builder opens the store and recovers orphaned jobs before anything
//! is claimed; the tree is then started (scheduler, handler arbiters, one
//! dispatcher per queue, this actor) by [`super::tree::start`]. From then
//! on it checks every
//! `recovery_interval` for other processes sharing the file that died, puts
//! their jobs back and wakes the dispatchers.
//!
//! Shutdown is one sequence, however many callers ask for it: drain every
//! queue (running jobs get until the deadline, the rest go back), close the
//! store (the SQLite file is left self-contained), close the event stream,
//! then stop every actor so that the threads, connections and memory that
//! `start()` took are given back once the handle is dropped. A second
//! `shutdown()` waits for the first and gets the same answer.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::dispatcher::Drain;
pub(crate) use super::retention::Retention;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Drain every queue, release what is still running at the deadline, and
/// let go of the store.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub(crate) struct Shutdown {
    pub timeout: Duration,
}

/// How a finished shutdown went, kept to answer later callers alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownEnd {
    /// Every job finished or was never started.
    Clean,
    /// Some jobs were stopped at this deadline and put back.
    Released(Duration),
}

impl ShutdownEnd {
    pub(crate) fn result(self) -> Result<()> {
        match self {
            ShutdownEnd::Clean => Ok(()),
            ShutdownEnd::Released(timeout) => Err(Error::ShutdownTimeout(timeout)),
        }
    }
}

enum ShutdownState {
    Running,
    Draining(Vec<oneshot::Sender<ShutdownEnd>>),
}

pub(crate) struct Supervisor {
    shared: Arc<Engine>,
    /// The arbiters handlers run on; stopped and joined at shutdown.
    arbiters: Vec<actix_rt::Arbiter>,
    recovery_interval: Duration,
    retention: Retention,
    shutdown: ShutdownState,
}

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<Engine>,
        arbiters: Vec<actix_rt::Arbiter>,
        recovery_interval: Duration,
        retention: Retention,
    ) -> Self {
        Supervisor {
            shared,
            arbiters,
            recovery_interval,
            retention,
            shutdown: ShutdownState::Running,
        }
    }

    fn recover(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.shutdown, ShutdownState::Running) {
            return;
        }
        let now = self.shared.clock.now_ms();
        let request = self.shared.store.recover_orphans(now);
        ctx.spawn(request.into_actor(self).map(|result, act, _| match result {
            Ok(0) => {}
            Ok(_) => act.shared.signals.wake_all(),
            Err(e) => log::warn!("errands: recovery check failed: {e}"),
        }));
        // Cancel requests that raced a retry (the job is waiting again) are
        // settled on the same beat.
        let settle = self.shared.store.settle_cancels(now);
        ctx.spawn(settle.into_actor(self).map(|result, _, _| {
            if let Err(e) = result {
                log::warn!("errands: settling cancel requests failed: {e}");
            }
        }));
    }

    fn prune(&mut self, ctx: &mut Context<Self>) {
        let request = super::retention::prune(self.shared.clone(), self.retention);
        ctx.spawn(request.into_actor(self).map(|result, _, _| {
            if let Err(e) = result {
                log::warn!("errands: pruning finished jobs failed: {e}");
            }
        }));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.recovery_interval, |act, ctx| act.recover(ctx));
        if let Some(every) = self.retention.every() {
            ctx.run_interval(every, |act, ctx| act.prune(ctx));
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let answer = Box::pin(async move {
            // The supervisor stops only after answering every waiter.
            rx.await.unwrap_or(ShutdownEnd::Clean).result()
        });
        match &mut self.shutdown {
            ShutdownState::Draining(waiters) => {
                waiters.push(tx);
                return answer;
            }
            ShutdownState::Running => self.shutdown = ShutdownState::Draining(vec![tx]),
        }
        let drains: Vec<_> = self
            .shared
            .signals
            .dispatchers()
            .map(|d| {
                d.send(Drain {
                    deadline: msg.timeout,
                })
            })
            .collect();
        let store = self.shared.store.clone();
        let timeout = msg.timeout;
        let arbiters = std::mem::take(&mut self.arbiters);
        let sequence = async move {
            let mut released = 0;
            for drain in drains {
                released += drain.await.unwrap_or(0);
            }
            // Every attempt has ended or been released: stop the handler
            // threads and wait for them.
            for arbiter in &arbiters {
                arbiter.stop();
            }
            let _ = actix_rt::task::spawn_blocking(move || {
                for arbiter in arbiters {
                    let _ = arbiter.join();
                }
            })
            .await;
            if let Err(e) = store.close().await {
                log::error!("errands: closing the store failed: {e}");
            }
            if released > 0 {
                log::warn!(
                    "errands: shutdown released {released} unfinished jobs back to the queue"
                );
                ShutdownEnd::Released(timeout)
            } else {
                ShutdownEnd::Clean
            }
        };
        ctx.spawn(sequence.into_actor(self).map(|end, act, ctx| {
            act.shared.close_events();
            act.shared.set_shutdown_end(end);
            act.shared.signals.stop_all();
            if let ShutdownState::Draining(waiters) =
                std::mem::replace(&mut act.shutdown, ShutdownState::Running)
            {
                for waiter in waiters {
                    let _ = waiter.send(end);
                }
            }
            ctx.stop();
        }));
        answer
    }
}
