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

/// How long the WAL must stay fully copied and unchanged (the database is
/// idle) before it is truncated to zero bytes.
const IDLE_BEFORE_TRUNCATE: Duration = Duration::from_secs(1);

// How big the WAL gets, measured with the bench (every scenario): about
// 82 MB, i.e. WRITER_AUTOCHECKPOINT_PAGES of 4 KiB. Under continuous writes
// the passive checkpoints rarely find the instant when every frame is copied
// and no transaction is open, which SQLite needs to start the log over, so
// the writer's own automatic checkpoint is what restarts it: that threshold
// is the bound (a 10-minute soak saw the same 79 MB). Shrinking it sooner
// costs latency, measured: `journal_size_limit` (trimmed at every restart)
// took the delayed-jobs p99 from 2.2 ms to 18 ms, and a TRUNCATE checkpoint
// whenever the file passed 16 or 64 MiB to 18–32 ms (it stalls the writer
// while a big file is copied and synced). So the file is given back only
// when the database is idle.

/// The writer's own automatic checkpoint threshold (pages): a safety valve
/// for checkpoints, and in practice the WAL's size bound (see above).
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
                let mut idle = IdleWal::default();
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                    }) {
                        Ok((frames, copied)) if idle.should_truncate(frames, copied) => {
                            // Idle: give the WAL's disk space back. TRUNCATE
                            // waits for readers and blocks writers, so only now.
                            if let Err(e) =
                                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                            {
                                log::debug!("errands: truncating checkpoint failed: {e}");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => log::debug!("errands: passive checkpoint failed: {e}"),
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

/// Tells when the WAL has been fully copied into the database and left
/// alone for [`IDLE_BEFORE_TRUNCATE`].
#[derive(Default)]
struct IdleWal {
    /// The WAL's frame count at the last look, and for how many looks in a
    /// row it was fully copied and unchanged.
    frames: i64,
    quiet_looks: u32,
}

impl IdleWal {
    fn should_truncate(&mut self, frames: i64, copied: i64) -> bool {
        let quiet = frames > 0 && frames == copied && frames == self.frames;
        self.frames = frames;
        self.quiet_looks = if quiet { self.quiet_looks + 1 } else { 0 };
        let needed = (IDLE_BEFORE_TRUNCATE.as_millis() / EVERY.as_millis()) as u32;
        if self.quiet_looks >= needed {
            self.quiet_looks = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_only_after_a_quiet_second() {
        let mut idle = IdleWal::default();
        let looks = (IDLE_BEFORE_TRUNCATE.as_millis() / EVERY.as_millis()) as usize;
        assert!(!idle.should_truncate(0, 0), "an empty WAL needs nothing");
        assert!(!idle.should_truncate(100, 50), "not fully copied");
        for _ in 0..looks - 1 {
            assert!(!idle.should_truncate(100, 100));
        }
        assert!(!idle.should_truncate(120, 120), "it moved: start over");
        for _ in 0..looks - 1 {
            assert!(!idle.should_truncate(120, 120));
        }
        assert!(idle.should_truncate(120, 120));
    }
}
