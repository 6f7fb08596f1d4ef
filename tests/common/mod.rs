//! Helpers shared by the integration tests: a fresh database per test and
//! ways to wait for events instead of sleeping.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use errands::{Event, Events};

/// A temporary directory holding a fresh database path; deleted on drop.
pub struct TempDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn temp_db() -> TempDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.db");
    TempDb { dir, path }
}

/// How long a test waits for an event before failing (a hang guard, not a
/// synchronisation device).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Waits for the next event matching `pred`, failing the test after PATIENCE.
pub async fn wait_for(events: &mut Events, mut pred: impl FnMut(&Event) -> bool) -> Event {
    let found = actix_rt::time::timeout(PATIENCE, async {
        loop {
            let event = events.next().await.expect("event stream");
            if pred(&event) {
                return event;
            }
        }
    })
    .await;
    found.expect("timed out waiting for an event")
}

/// Waits for `n` events matching `pred` and returns them.
pub async fn collect(
    events: &mut Events,
    n: usize,
    mut pred: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(wait_for(events, &mut pred).await);
    }
    out
}
