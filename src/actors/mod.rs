//! The actors that run jobs, and the state they share.
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

pub(crate) mod dispatcher;
pub(crate) mod scheduler;
pub(crate) mod supervisor;
mod unwind;
pub(crate) mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::context::DataMap;
use crate::events::Event;
use crate::store::Store;

/// What every actor of one errands instance shares.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub data: Arc<DataMap>,
    pub events: broadcast::Sender<Event>,
    /// Set the moment shutdown is requested: from then on nothing is
    /// claimed or enqueued.
    pub closing: AtomicBool,
}

impl Shared {
    /// Sends an event if anyone listens (building events costs, so skip it
    /// when nobody does).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn wants_events(&self) -> bool {
        self.events.receiver_count() > 0
    }
}
