//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the
//! threshold: that commit (and every enqueue and claim waiting behind it)
//! stalls while a thousand pages are copied and, with `synchronous=NORMAL`,
//! fsynced. Here a thread of its own, on its own connection, runs a
//! `PASSIVE` checkpoint every few milliseconds instead; passive checkpoints
//! never block the writer, and once everything is copied the writer's next
//! transaction starts the WAL file over, so it stays small. The writer keeps
//! a much higher automatic threshold only as a safety valve.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

/// How often the checkpointer looks at the WAL.
///
/// Small and often beats big and rare: each checkpoint ends in an fsync of
/// the WAL and of the database file, and while a big one is flushed the
/// writer's own writes (and the WAL-header sync SQLite does when the writer
/// restarts the log) stall behind it on ext4. Measured with the delayed-jobs
/// benchmark on a 2-core VM: p99 lateness 5–13 ms at 100 ms, 50–70 ms at
/// 1 s, 3–6 ms at 10–30 ms, with the drain rate unchanged. A checkpoint with
/// nothing to copy costs a few lock calls.
const EVERY: Duration = Duration::from_millis(20);

/// The writer's own automatic checkpoint threshold (pages), as a safety valve.
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 20_000;

/// Keeps the checkpointer thread alive; dropping it stops the thread
/// (without waiting), [`Checkpointer::stop`] stops it and waits.
pub(super) struct Checkpointer {
    stop: Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the checkpointer on its own connection to `path`.
    pub(super) fn start(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("errands-sqlite-checkpoint".into())
            .spawn(move || {
                // Runs until the store is dropped (the sender goes away).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        log::debug!("errands: passive checkpoint failed: {e}");
                    }
                }
            })
            .map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                    Some(e.to_string()),
                )
            })?;
        Ok(Checkpointer { stop, thread })
    }

    /// Stops the thread and waits for it (and its connection) to end.
    /// Blocks for at most one passive checkpoint.
    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}
