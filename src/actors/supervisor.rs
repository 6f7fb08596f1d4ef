//! The supervisor: owns the store's lifecycle, watches for dead processes,
//! prunes retained jobs, and runs graceful shutdown.
//!
//! The builder opens the store and recovers orphaned jobs before anything
//! is claimed, then starts the scheduler and one dispatcher per queue under
//! actix's `Supervisor` (restarted if they ever stop) and hands them to this
//! actor. From then on it checks every `recovery_interval` for other
//! processes sharing the file that died, puts their jobs back and wakes the
//! dispatchers.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::dispatcher::{Dispatcher, Drain, Wake};
use super::Shared;
use crate::error::{Error, Result};

/// Drain every queue, release what is still running at the deadline, and
/// let go of the store.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub(crate) struct Shutdown {
    pub timeout: Duration,
}

pub(crate) struct Supervisor {
    shared: Arc<Shared>,
    dispatchers: Vec<Addr<Dispatcher>>,
    recovery_interval: Duration,
    retain_completed: Option<Duration>,
    stopping: bool,
}

impl Supervisor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        dispatchers: Vec<Addr<Dispatcher>>,
        recovery_interval: Duration,
        retain_completed: Option<Duration>,
    ) -> Self {
        Supervisor {
            shared,
            dispatchers,
            recovery_interval,
            retain_completed,
            stopping: false,
        }
    }

    fn recover(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now = self.shared.clock.now_ms();
        let request = self.shared.store.recover_orphans(now);
        ctx.spawn(request.into_actor(self).map(|result, act, _| match result {
            Ok(0) => {}
            Ok(_) => {
                for dispatcher in &act.dispatchers {
                    dispatcher.do_send(Wake(None));
                }
            }
            Err(e) => log::warn!("errands: recovery check failed: {e}"),
        }));
    }

    fn prune(&mut self, ctx: &mut Context<Self>) {
        let Some(retention) = self.retain_completed else {
            return;
        };
        let before = self.shared.clock.now_ms() - retention.as_millis() as i64;
        let request = self.shared.store.prune_completed(before);
        ctx.spawn(request.into_actor(self).map(|result, _, _| {
            if let Err(e) = result {
                log::warn!("errands: pruning completed jobs failed: {e}");
            }
        }));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.recovery_interval, |act, ctx| act.recover(ctx));
        if let Some(retention) = self.retain_completed {
            let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
            ctx.run_interval(every, |act, ctx| act.prune(ctx));
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, msg: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let drains: Vec<_> = self
            .dispatchers
            .iter()
            .map(|d| {
                d.send(Drain {
                    deadline: msg.timeout,
                })
            })
            .collect();
        let store = self.shared.store.clone();
        let timeout = msg.timeout;
        Box::pin(
            async move {
                let mut released = 0;
                for drain in drains {
                    released += drain.await.unwrap_or(0);
                }
                store.close().await?;
                if released > 0 {
                    log::warn!(
                        "errands: shutdown released {released} unfinished jobs back to the queue"
                    );
                    Err(Error::ShutdownTimeout(timeout))
                } else {
                    Ok(())
                }
            }
            .into_actor(self)
            .map(|result, _, ctx| {
                ctx.stop();
                result
            }),
        )
    }
}
