//! How to open the SQLite database: where, and how durable a commit is.

use std::path::PathBuf;
use std::time::Duration;

/// What a commit promises, i.e. SQLite's `PRAGMA synchronous` (always in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is fsynced before `enqueue` returns: an acknowledged job
    /// survives a crash of the process *and* of the machine (power loss).
    #[default]
    Full,
    /// Commits reach the operating system before `enqueue` returns but are
    /// fsynced only at WAL checkpoints: an acknowledged job survives the
    /// process being killed, but the last commits before a power loss or
    /// kernel crash may be lost. The database is never corrupted either way.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Options for the embedded SQLite store.
///
/// ```
/// use errands::{SqliteOptions, Synchronous};
/// let options = SqliteOptions::new("data/jobs.db").synchronous(Synchronous::Normal);
/// assert_eq!(options.path().to_str(), Some("data/jobs.db"));
/// ```
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub(crate) path: PathBuf,
    pub(crate) synchronous: Synchronous,
    pub(crate) read_pool_size: u32,
    pub(crate) busy_timeout: Duration,
    pub(crate) max_database_bytes: Option<u64>,
}

impl SqliteOptions {
    /// A database at `path`, created (with its directory) if missing.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            synchronous: Synchronous::Full,
            read_pool_size: 4,
            busy_timeout: Duration::from_secs(5),
            max_database_bytes: None,
        }
    }

    /// The durability of a commit; [`Synchronous::Full`] by default.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Connections kept for reads (status, counts, dead-job lists). Default 4.
    pub fn read_pool_size(mut self, size: u32) -> Self {
        self.read_pool_size = size.max(1);
        self
    }

    /// How long one statement waits for another process's write lock before
    /// the writer backs off and tries again. Default 5 s; at most
    /// [`MAX_BUSY_TIMEOUT`](crate::MAX_BUSY_TIMEOUT) (longer is a
    /// [`ConfigProblem`](crate::ConfigProblem) at start).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Caps the database file's size. Past it, `enqueue` fails with a
    /// "database or disk is full" error while everything already stored stays
    /// intact, exactly as on a full disk. Default: no cap; a cap beyond
    /// SQLite's own maximum (e.g. `u64::MAX`) is the same as no cap.
    pub fn max_database_bytes(mut self, bytes: u64) -> Self {
        self.max_database_bytes = Some(bytes);
        self
    }

    /// The database path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}
