//! How long finished jobs are kept, and the pruning that enforces it.
//!
//! Completed jobs are deleted when they finish unless
//! [`Builder::retain_completed`](crate::Builder::retain_completed) keeps
//! them; dead and cancelled jobs are kept until an operator requeues or
//! purges them, unless [`Builder::retain_dead`](crate::Builder::retain_dead)
//! prunes them. Dead and cancelled jobs are pruned in batches of
//! [`PRUNE_BATCH`], each its own transaction, so that a backlog of a
//! million dead jobs never holds the write lock for long (every enqueue
//! and outcome waits behind it); a tombstone per job keeps `status(id)`
//! truthful.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::ms_before;
use crate::engine::Engine;
use crate::error::Result;

/// Dead or cancelled jobs deleted per transaction.
pub(crate) const PRUNE_BATCH: usize = 1000;

/// What the builder keeps, and for how long.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Retention {
    pub completed: Option<Duration>,
    pub dead: Option<Duration>,
}

impl Retention {
    /// How often to prune: a tenth of the shortest retention, between one
    /// second and a minute; `None` if nothing is pruned.
    pub(crate) fn every(&self) -> Option<Duration> {
        [self.completed, self.dead]
            .into_iter()
            .flatten()
            .min()
            .map(|shortest| (shortest / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)))
    }
}

/// Prunes what has outlived its retention. Answers how many jobs went.
pub(crate) async fn prune(engine: Arc<Engine>, retention: Retention) -> Result<u64> {
    let now = engine.clock.now_ms();
    let mut gone = 0;
    if let Some(keep) = retention.completed {
        gone += engine.store.prune_completed(ms_before(now, keep)).await?;
    }
    if let Some(keep) = retention.dead {
        let before = ms_before(now, keep);
        loop {
            let n = engine.store.prune_dead(before, PRUNE_BATCH, now).await?;
            gone += n;
            // Two states per batch: fewer than one batch's worth means done.
            if n < PRUNE_BATCH as u64 || engine.is_closing() {
                break;
            }
        }
    }
    Ok(gone)
}
