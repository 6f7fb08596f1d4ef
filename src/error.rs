//! The one error type every public call returns.
//!
//! Modelled on rusqlite's documented error enum: each variant says what went
//! wrong in words an operator can act on, and carries the values involved
//! (both schema versions, the offending kind, the underlying SQLite error).

use std::time::Duration;

/// Everything that can go wrong when configuring, starting or talking to errands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database engine reported an error (disk full, read-only file,
    /// corruption, ...). `enqueue` returns this when the row could not be
    /// committed; nothing was acknowledged in that case.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),

    /// The database file could not be opened for writing (missing
    /// directory permissions, a read-only file or filesystem, not a
    /// database).
    #[error("could not open database {path} for writing: {source}")]
    Open {
        /// The database path given to the builder.
        path: std::path::PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },

    /// The read connection pool could not hand out a connection.
    #[error("connection pool error: {0}")]
    Pool(#[from] r2d2::Error),

    /// A filesystem operation (creating the database directory, the owner
    /// lock files) failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The database was written by a newer version of errands. Opening it
    /// with this version could corrupt it, so it is refused.
    #[error(
        "database schema version {found} is newer than the newest this errands supports ({supported}); upgrade errands"
    )]
    SchemaTooNew {
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },

    /// The builder was given a configuration that cannot work. Nothing was
    /// started.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A job value could not be serialised for storage.
    #[error("could not encode job of kind `{kind}`: {message}")]
    Encode {
        /// The job's kind.
        kind: String,
        /// What the encoder said.
        message: String,
    },

    /// A stored payload could not be decoded into the job type.
    #[error("could not decode payload: {0}")]
    Decode(String),

    /// No job with this id exists (it finished and was deleted, was purged,
    /// or never existed).
    #[error("no job with id {0}")]
    NotFound(i64),

    /// The operation does not apply to the job in its current state (for
    /// example cancelling a job that is running).
    #[error("job {id} is {state}, cannot {action}")]
    WrongState {
        /// The job's id.
        id: i64,
        /// Its current state.
        state: String,
        /// What was attempted.
        action: &'static str,
    },

    /// The errands system has shut down (or its store thread stopped), so the
    /// request was not carried out.
    #[error("errands has shut down")]
    Closed,

    /// Graceful shutdown did not finish within its timeout; unfinished jobs
    /// were put back in the queue.
    #[error("shutdown timed out after {0:?}")]
    ShutdownTimeout(Duration),
}

/// Shorthand for `Result<T, errands::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
