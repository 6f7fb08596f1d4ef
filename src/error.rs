//! The one error type every public call returns.
//!
//! Modelled on rusqlite's documented error enum: each variant says what went
//! wrong in words an operator can act on, and carries the values involved
//! (both schema versions, the offending kind, the underlying SQLite error).
//! `Display` is a sentence meant for a log or a terminal; match on the
//! variant (and on [`ConfigProblem`]) in code.

use std::time::{Duration, SystemTime};

use crate::config_problem::{ConfigProblem, Problems};
use crate::inspect::JobState;
use crate::store_error::{StoreError, StoreErrorKind};

/// Everything that can go wrong when configuring, starting or talking to errands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database engine reported an error (disk full, read-only file,
    /// corruption, ...); [`StoreError::kind`] says which. `enqueue` returns
    /// this when the row could not be committed; nothing was acknowledged
    /// in that case.
    #[error("the job database reported an error: {0}")]
    Store(StoreError),

    /// The database file could not be opened for writing (missing
    /// directory permissions, a read-only file or filesystem, not a
    /// database).
    #[error("could not open the job database {} for writing: {source}", path.display())]
    Open {
        /// The database path given to the builder.
        path: std::path::PathBuf,
        /// What the database engine said.
        source: StoreError,
    },

    /// The PostgreSQL server could not be reached or refused the
    /// connection at `start()` (nothing listening, wrong password, no such
    /// database); [`StoreError::kind`] says which.
    #[error("could not connect to PostgreSQL at {target}: {source}")]
    Connect {
        /// Host, port and database (never the password).
        target: String,
        /// What the client or the server said.
        source: StoreError,
    },

    /// A transactional enqueue was given a transaction on another database
    /// than the queue's own SQLite file: the job would not be seen.
    #[error("the transaction is on {}, not on the queue's database", path.display())]
    NotTheQueueDatabase {
        /// The database the transaction's connection has open.
        path: std::path::PathBuf,
    },

    /// The call needs the other store: `enqueue_sqlite_tx` on an instance
    /// running on PostgreSQL, or `enqueue_pg_tx` on one running on SQLite.
    #[error("{call} needs errands on {needs}, but this instance runs on {runs}")]
    OtherBackend {
        /// The call made.
        call: &'static str,
        /// The store it needs.
        needs: &'static str,
        /// The store this instance runs on.
        runs: &'static str,
    },

    /// A filesystem operation (creating the database directory, the owner
    /// lock files) failed.
    #[error("file system error beside the job database: {0}")]
    Io(#[from] std::io::Error),

    /// The database was written by a newer version of errands. Opening it
    /// with this version could corrupt it, so it is refused.
    #[error(
        "the job database has schema version {found}, newer than the newest this errands supports ({supported}); upgrade errands"
    )]
    SchemaTooNew {
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },

    /// The builder (or an enqueue's options) was given a configuration that
    /// cannot work; every problem found is listed. Nothing was started.
    #[error("invalid errands configuration: {}", Problems(.0))]
    Config(Vec<ConfigProblem>),

    /// A job value could not be serialised for storage.
    #[error("could not encode a job of kind `{kind}`: {message}")]
    Encode {
        /// The job's kind.
        kind: String,
        /// What the encoder said.
        message: String,
    },

    /// A job's `run_at` (from `enqueue_at`, or now plus an `enqueue_in`
    /// delay) is later than 9999-12-31T23:59:59.999Z, the latest instant
    /// errands stores. Nothing was enqueued.
    #[error("run_at {0:?} is beyond the year 9999; errands cannot store it")]
    RunAtOutOfRange(SystemTime),

    /// No job with this id exists (it finished and was deleted, was purged,
    /// or never existed).
    #[error("no job with id {0} exists")]
    NotFound(i64),

    /// The operation does not apply to the job in its current state (for
    /// example cancelling a job that is dead, or requeueing one that is
    /// running).
    #[error("job {id} is {state}, so it cannot {action}")]
    WrongState {
        /// The job's id.
        id: i64,
        /// Its current state.
        state: JobState,
        /// What was attempted.
        action: &'static str,
    },

    /// A control call named a job kind that is not registered in this
    /// process ([`Errands::set_concurrency`](crate::Errands::set_concurrency),
    /// [`Errands::pause_kind`](crate::Errands::pause_kind), ...). Nothing was
    /// stored.
    #[error("no job kind `{0}` is registered in this process; register it with Builder::register before controlling it")]
    UnknownKind(String),

    /// A control call named a queue that no job type registered in this
    /// process runs in ([`Errands::pause`](crate::Errands::pause), ...).
    /// Nothing was stored.
    #[error("no queue `{0}` is run by this process (no registered job kind uses it)")]
    UnknownQueue(String),

    /// Code errands ran inside its store for the caller (a
    /// [`JobContext::transaction`](crate::JobContext::transaction) closure)
    /// panicked. Its changes were rolled back; the store carries on.
    #[error("code run inside the job database's transaction {0}; its changes were rolled back")]
    Panicked(String),

    /// The store's writer thread stopped unexpectedly (a bug in errands or
    /// SQLite). Nothing more can be written by this instance; jobs it was
    /// running are put back by the next instance to start on the file.
    #[error("the job database's writer stopped unexpectedly; restart the process")]
    StoreStopped,

    /// The errands system has shut down, so the request was not carried out.
    #[error("errands has shut down; this request was not carried out")]
    Closed,

    /// Graceful shutdown did not finish within its timeout; unfinished jobs
    /// were put back in the queue.
    #[error("shutdown did not finish within {0:?}; unfinished jobs were put back in the queue")]
    ShutdownTimeout(Duration),
}

impl Error {
    /// Whether SQLite said the database (or the disk) is full.
    pub(crate) fn is_disk_full(&self) -> bool {
        matches!(self, Error::Store(e) if e.kind() == StoreErrorKind::Full)
    }

    /// Whether this instance can no longer write at all (retrying the same
    /// request is pointless).
    pub(crate) fn is_store_gone(&self) -> bool {
        matches!(self, Error::StoreStopped | Error::Closed)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Store(e.into())
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Self {
        Error::Store(e.into())
    }
}

/// Shorthand for `Result<T, errands::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
