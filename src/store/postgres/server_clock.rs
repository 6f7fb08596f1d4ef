//! What is due, by the server's clock.
//!
//! Hosts' clocks drift; a job stored as due at `t` must come due at the same
//! moment for every host. Each instance measures how far its own clock
//! (the engine's) is from the server's, at start and at every recovery
//! pass, and translates every time that crosses the store boundary: times
//! going in (`run_at`, "now" for claims) become server times, times coming
//! out (`next_run_at`, inspection, notifications) become local ones. The
//! engine itself never sees a server time.
//!
//! Off (a plain identity) when the application gave the builder a clock of
//! its own: a test's `ManualClock` is the only clock then.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::clock::{ms_to_system_time, system_time_to_ms, Clock};
use crate::error::Result;
use crate::inspect::JobInfo;

/// The engine's clock and its distance from the server's.
pub(crate) struct ServerClock {
    clock: Option<Arc<dyn Clock>>,
    /// Server time minus local time, in ms.
    offset: AtomicI64,
}

impl ServerClock {
    pub(crate) fn new(clock: Option<Arc<dyn Clock>>) -> ServerClock {
        ServerClock {
            clock,
            offset: AtomicI64::new(0),
        }
    }

    fn offset(&self) -> i64 {
        if self.clock.is_some() {
            self.offset.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// A local time as the server's.
    pub(crate) fn to_server(&self, local: i64) -> i64 {
        local.saturating_add(self.offset())
    }

    /// A server time as the local clock's.
    pub(crate) fn to_local(&self, server: i64) -> i64 {
        server.saturating_sub(self.offset())
    }

    /// A job's times as the local clock's.
    pub(crate) fn localize(&self, mut info: JobInfo) -> JobInfo {
        let shift = |t| ms_to_system_time(self.to_local(system_time_to_ms(t)));
        info.run_at = shift(info.run_at);
        info.created_at = shift(info.created_at);
        info.started_at = info.started_at.map(shift);
        info.finished_at = info.finished_at.map(shift);
        info
    }

    /// Measures the offset again (half the round trip is the error).
    pub(crate) async fn measure(&self, client: &impl tokio_postgres::GenericClient) -> Result<()> {
        let Some(clock) = &self.clock else {
            return Ok(());
        };
        let before = clock.now_ms();
        let server: i64 = client
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8",
                &[],
            )
            .await?
            .get(0);
        let after = clock.now_ms();
        let local = before + (after - before) / 2;
        self.offset.store(server - local, Ordering::Relaxed);
        Ok(())
    }
}
