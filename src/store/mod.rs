//! The persistent store, behind a trait so that the engine never sees SQL.
//!
//! The actors speak only [`Store`]: enqueue rows, finish attempts and claim
//! new ones in one round trip, recover what dead processes left running, and
//! answer the operator's questions. SQLite ([`sqlite::SqliteStore`]) is the
//! embedded default; PostgreSQL ([`postgres::PgStore`]) serves several hosts
//! behind the same trait, and one conformance suite (`tests/backends.rs`
//! and the test files built with its `both!` macro) runs against both.
//!
//! What only one backend can do (run the application's SQL in the store's
//! own transaction type) is not on the trait: [`Backend`] names the store
//! by its type, so `ctx.transaction` and `ctx.pg_transaction` (and the
//! enqueues inside an application's transaction) reach each store's typed
//! methods directly, without boxing a result or downcasting it.
//!
//! Every method returns a boxed future: the SQLite implementation runs its
//! blocking calls on its own threads and answers through a channel, so no
//! actix arbiter thread ever blocks on the database.

mod backend;
mod owner_id;
pub(crate) mod postgres;
pub(crate) mod sqlite;
mod types;

use std::future::Future;
use std::pin::Pin;

pub(crate) use backend::Backend;
pub(crate) use owner_id::new_owner_id;
pub(crate) use types::*;

use crate::error::Result;
use crate::inspect::{Counts, JobInfo, JobStatus};

/// A boxed future answering a store request.
pub(crate) type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// What the engine needs from a persistent store.
pub(crate) trait Store: Send + Sync + 'static {
    /// Inserts the jobs in one transaction; answers their ids after commit.
    fn enqueue(&self, jobs: Vec<NewJob>) -> StoreFuture<Vec<i64>>;

    /// Writes finished attempts and claims new jobs, atomically, in one
    /// transaction: the dispatcher's whole conversation with the store.
    /// On a full database, outcomes that free space (completions) still
    /// commit; those that need space are answered as unwritten.
    fn finish_and_claim(&self, batch: FinishAndClaim) -> StoreFuture<FinishedAndClaimed>;

    /// Puts back every running job whose owner is no longer alive (a job at
    /// its last attempt goes dead instead). Answers how many rows moved.
    fn recover_orphans(&self, now: i64) -> StoreFuture<usize>;

    /// The earliest `run_at` later than `after` among waiting jobs of the
    /// given (queue, kind) pairs.
    fn next_run_at(&self, kinds: Vec<(String, String)>, after: i64) -> StoreFuture<Option<i64>>;

    /// Job counts by queue and state.
    fn counts(&self, now: i64) -> StoreFuture<Vec<Counts>>;

    /// One job, if it still exists.
    fn job(&self, id: i64, now: i64) -> StoreFuture<Option<JobInfo>>;

    /// One job, or what became of it.
    fn status(&self, id: i64, now: i64) -> StoreFuture<JobStatus>;

    /// Dead jobs, newest first, optionally of one queue.
    fn dead_jobs(&self, queue: Option<String>, limit: usize) -> StoreFuture<Vec<JobInfo>>;

    /// Moves dead jobs back to the queue with fresh attempts: one job
    /// (`Some(id)`), or every dead job (of one queue, or all). Answers the count.
    fn requeue(&self, target: DeadTarget, now: i64) -> StoreFuture<u64>;

    /// Deletes dead jobs for good. Answers the count.
    fn purge(&self, target: DeadTarget) -> StoreFuture<u64>;

    /// Cancels a job: one that has not started at once (kept as
    /// `cancelled`), a running or claimed one by a stored request that its
    /// instance reads. Errors if it is dead, finished or gone.
    fn cancel(&self, id: i64, reason: String, now: i64) -> StoreFuture<CancelAnswer>;

    /// Stores a knob for every instance on the database.
    fn write_control(&self, change: ControlWrite) -> StoreFuture<()>;

    /// The stored knobs, of one queue or of all.
    fn controls(&self, queue: Option<String>) -> StoreFuture<Vec<ControlRow>>;

    /// A dispatcher's poll: its queue's knobs, and cancel requests for the
    /// jobs this instance holds in it.
    fn queue_controls(&self, queue: &'static str) -> StoreFuture<QueueControls>;

    /// Cancels the jobs whose cancel request found them waiting again (a
    /// retry raced the request), and drops requests of finished jobs.
    fn settle_cancels(&self, now: i64) -> StoreFuture<u64>;

    /// Deletes up to `batch` dead and cancelled jobs finished before
    /// `before` (tombstones keep their fate). Answers how many.
    fn prune_dead(&self, before: i64, batch: usize, now: i64) -> StoreFuture<u64>;

    /// Deletes retained completed jobs that finished before `before`.
    fn prune_completed(&self, before: i64) -> StoreFuture<u64>;

    /// Saves a running job's progress (only while this process owns that
    /// attempt).
    fn save_checkpoint(&self, id: i64, attempt: u32, checkpoint: Vec<u8>) -> StoreFuture<()>;

    /// How many finish-and-claim rounds one dispatcher may keep in flight.
    /// SQLite commits on one writer thread, so two keep it busy; a server
    /// runs rounds side by side on several connections.
    fn rounds_in_flight(&self) -> usize {
        2
    }

    /// Marks this process as gone: its lock is released so that others may
    /// recover anything it still holds, and the database is left
    /// self-contained (SQLite: the WAL checkpointed into the file and the
    /// writer's connection closed). Called last at shutdown.
    fn close(&self) -> StoreFuture<()>;
}
