//! The actors that run jobs. The state they share is [`crate::engine`].
//!
//! ```text
//!  enqueue ──► Store (writer thread, group commit)
//!     │ wake                 ▲ finish + claim, one round trip
//!     ▼                      │
//!  Dispatcher (one per queue) ──RunJobs──► Worker<J> (one per kind, ≤ limit tasks)
//!     ▲          ▲                              │
//!     │ wake     └────────AttemptDone───────────┘
//!  Scheduler (one timer at the earliest run_at)
//!  Supervisor: recovery of dead owners, pruning, graceful shutdown
//! ```

mod attempt_outcome;
pub(crate) mod dispatcher;
pub(crate) mod retention;
pub(crate) mod scheduler;
pub(crate) mod supervisor;
pub(crate) mod tree;
pub(crate) mod unwind;
pub(crate) mod worker;

use actix::Message;

/// Stops the actor that receives it (sent to each actor at the end of
/// shutdown, so that it drops its share of the engine).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopActor;
