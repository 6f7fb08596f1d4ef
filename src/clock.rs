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
        self.now_ms().saturating_mul(1000)
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
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
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
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        // Saturating: a test that advances by `Duration::MAX` reaches the end of time.
        let _ = self
            .inner
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
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

/// The latest instant errands stores: 9999-12-31T23:59:59.999Z, in ms since
/// the epoch. A `run_at` beyond it is refused at enqueue
/// ([`Error::RunAtOutOfRange`](crate::Error::RunAtOutOfRange)); computed
/// times (backoff, retention) saturate at it.
pub(crate) const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Milliseconds since the Unix epoch (negative before it), rounded down and
/// saturating: used for "now", where rounding down never makes a job early.
pub(crate) fn system_time_to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// A `run_at` given as a `SystemTime`, in ms, rounded *up*: a job asked to
/// run at 12:00:00.0004 must not start at 12:00:00.000.
pub(crate) fn run_at_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms_ceil(d),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// A duration in whole milliseconds, rounded up, saturating at `i64::MAX`.
pub(crate) fn duration_ms_ceil(d: Duration) -> i64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// `now + delay`, rounded up to the millisecond and saturating at
/// [`MAX_TIME_MS`]: the one way errands turns "in this long" into a `run_at`.
pub(crate) fn ms_after(now: i64, delay: Duration) -> i64 {
    now.saturating_add(duration_ms_ceil(delay)).min(MAX_TIME_MS)
}

/// `now - age`, saturating: the instant before which something is older
/// than `age` (a `Duration::MAX` retention means "never").
pub(crate) fn ms_before(now: i64, age: Duration) -> i64 {
    now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// `ms` since the epoch as an RFC 3339 UTC timestamp with milliseconds,
/// e.g. `2026-11-24T10:28:28.123Z` (for logs and serialised times).
pub(crate) fn rfc3339(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, sec, milli) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{milli:03}Z")
}

/// Serde helpers: a `SystemTime` as an RFC 3339 UTC string with
/// milliseconds (`"2026-11-24T10:28:28.123Z"`), as status endpoints want.
pub(crate) mod rfc3339_serde {
    use serde::Serializer;
    use std::time::SystemTime;

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(super::system_time_to_ms(*t)))
    }

    pub(crate) fn option<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => serialize(t, s),
            None => s.serialize_none(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_up_and_saturate() {
        assert_eq!(duration_ms_ceil(Duration::from_micros(1)), 1);
        assert_eq!(duration_ms_ceil(Duration::from_millis(5)), 5);
        assert_eq!(duration_ms_ceil(Duration::from_micros(5_001)), 6);
        assert_eq!(duration_ms_ceil(Duration::MAX), i64::MAX);
        assert_eq!(ms_after(1_000, Duration::MAX), MAX_TIME_MS);
        assert_eq!(ms_after(1_000, Duration::from_micros(1)), 1_001);
        assert_eq!(ms_before(1_000, Duration::MAX), 1_000 - i64::MAX);
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 2);
        assert_eq!(system_time_to_ms(far), i64::MAX);
        assert_eq!(run_at_ms(UNIX_EPOCH + Duration::from_micros(1_500)), 2);
        assert_eq!(
            system_time_to_ms(UNIX_EPOCH + Duration::from_micros(1_500)),
            1
        );
    }

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(MAX_TIME_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
