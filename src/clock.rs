//! Time, behind a trait, so that tests (ours and our users') can move it.
//!
//! Every `run_at`, backoff and delay is computed from a [`Clock`]. The
//! [`SystemClock`] is the default. A [`ManualClock`] only moves when told to;
//! when it moves, the scheduler is told at once and fires whatever became
//! due, so a test of a one-hour backoff takes no time and needs no sleep.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now", in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// The current time in microseconds since the Unix epoch. Timers use it
    /// to wake at the right moment within a millisecond; the default is
    /// `now_ms() * 1000`.
    fn now_us(&self) -> i64 {
        self.now_ms() * 1000
    }

    /// Registers a callback run every time this clock jumps (a manual clock
    /// being advanced). Real clocks never jump, so the default does nothing.
    fn on_advance(&self, _callback: Box<dyn Fn() + Send + Sync>) {}
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_time_to_ms(SystemTime::now())
    }

    fn now_us(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        }
    }
}

/// A clock that stands still until [`ManualClock::advance`] is called.
///
/// ```
/// use errands::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new();
/// let before = clock.now_ms();
/// clock.advance(Duration::from_secs(3600));
/// assert_eq!(clock.now_ms() - before, 3_600_000);
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    now: AtomicI64,
    listeners: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl ManualClock {
    /// A manual clock starting at the current wall-clock time.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A manual clock starting at `start`.
    pub fn starting_at(start: SystemTime) -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                now: AtomicI64::new(system_time_to_ms(start)),
                listeners: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Moves the clock forward and tells every listener (the scheduler).
    pub fn advance(&self, by: Duration) {
        self.inner
            .now
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        let listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for listener in listeners.iter() {
            listener();
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualClock")
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.inner.now.load(Ordering::SeqCst)
    }

    fn on_advance(&self, callback: Box<dyn Fn() + Send + Sync>) {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(callback);
    }
}

/// Milliseconds since the Unix epoch (negative before it).
pub(crate) fn system_time_to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The inverse of [`system_time_to_ms`].
pub(crate) fn ms_to_system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}
