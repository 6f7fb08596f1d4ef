//! The state one errands instance shares between its actors, the handle
//! and every job's context: the store, the clock, application data, the
//! event stream, the shutdown flag and the [`Signals`] that wake actors.
//! One value, created by the builder, behind an `Arc`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

use crate::actors::supervisor::ShutdownEnd;
use crate::clock::Clock;
use crate::context::DataMap;
use crate::events::Event;
use crate::signals::Signals;
use crate::store::{Backend, Store};

/// What every actor of one errands instance shares.
pub(crate) struct Engine {
    /// The store, for what every backend does.
    pub store: Arc<dyn Store>,
    /// The same store by its type, for what only it does
    /// (`ctx.transaction`).
    pub backend: Backend,
    /// How to wake the dispatchers and the scheduler.
    pub signals: Signals,
    /// The (queue, kind) pairs this instance runs.
    pub kinds: Vec<(&'static str, &'static str)>,
    pub clock: Arc<dyn Clock>,
    pub data: Arc<DataMap>,
    /// `None` once shutdown finished: subscribers then see `Closed`.
    events: RwLock<Option<broadcast::Sender<Event>>>,
    /// Set the moment shutdown is requested: from then on nothing is
    /// claimed or enqueued.
    pub closing: AtomicBool,
    /// How shutdown ended, once it has.
    shutdown_end: Mutex<Option<ShutdownEnd>>,
}

impl Engine {
    pub(crate) fn new(
        backend: Backend,
        clock: Arc<dyn Clock>,
        data: DataMap,
        event_capacity: usize,
        kinds: Vec<(&'static str, &'static str)>,
    ) -> Engine {
        let (events, _) = broadcast::channel(event_capacity);
        Engine {
            store: backend.store(),
            backend,
            signals: Signals::default(),
            kinds,
            clock,
            data: Arc::new(data),
            events: RwLock::new(Some(events)),
            closing: AtomicBool::new(false),
            shutdown_end: Mutex::new(None),
        }
    }

    /// Records how shutdown ended.
    pub(crate) fn set_shutdown_end(&self, end: ShutdownEnd) {
        *self.shutdown_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(end);
    }

    /// How shutdown ended, if it has.
    pub(crate) fn shutdown_end(&self) -> Option<ShutdownEnd> {
        *self.shutdown_end.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether shutdown has been requested.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The event sender, if the stream is open and anyone listens
    /// (building events costs, so callers skip it when nobody does). One
    /// lock for a whole batch of events, not one per event.
    pub(crate) fn event_sender(&self) -> Option<broadcast::Sender<Event>> {
        self.events
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|tx| tx.receiver_count() > 0)
            .cloned()
    }

    /// Logs and tells subscribers that this instance now holds `kind`
    /// until `until` (a throttle).
    pub(crate) fn announce_throttle(&self, queue: &'static str, kind: &'static str, until: i64) {
        let now = self.clock.now_ms();
        if until <= now {
            return;
        }
        log::warn!(
            "errands: kind `{kind}` (queue `{queue}`) is throttled until {}",
            crate::clock::rfc3339(until)
        );
        if let Some(events) = self.event_sender() {
            let _ = events.send(Event::Throttled {
                queue,
                kind,
                until: crate::clock::ms_to_system_time(until),
            });
        }
    }

    /// A new subscription; one made after shutdown is closed at once.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        match self
            .events
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// No more events will come: every subscriber sees `Closed` once it has
    /// read what was already sent.
    pub(crate) fn close_events(&self) {
        self.events
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}
