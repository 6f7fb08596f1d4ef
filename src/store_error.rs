//! Errors of the storage engine behind one opaque type.
//!
//! The public [`Error`](crate::Error) must not change shape when a second
//! store (PostgreSQL) arrives, so it carries a [`StoreError`]: a message,
//! the engine's own error as its `source()`, and a [`StoreErrorKind`] for
//! the cases a program acts on (a full disk, a read-only file).

use std::fmt;

/// What kind of storage failure this was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The database or the disk is full (or at `max_database_bytes`).
    /// Nothing was written; freeing space makes it work again.
    Full,
    /// The database file or its directory cannot be written.
    ReadOnly,
    /// Another process held the database lock for longer than the busy
    /// timeout.
    Busy,
    /// The file is not a database, or is corrupt.
    Corrupt,
    /// The database server could not be reached (refused, down, or no
    /// connection came free within the connect timeout). Nothing was
    /// written; the same call works again once the server is back.
    Unavailable,
    /// The server refused the credentials, or the database does not exist.
    Refused,
    /// Anything else; see the error's `source()`.
    Other,
}

/// An error reported by the storage engine. `Display` is the engine's
/// message; [`StoreError::kind`] says what kind of failure it was, and
/// `source()` is the engine's own error.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
    /// What to show instead of the source's own `Display`, where that says
    /// too little (tokio-postgres shows a server error as "db error").
    message: Option<String>,
}

impl StoreError {
    /// What kind of failure this was.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The same failure again, for a second caller of a request that failed
    /// once for a whole group (the engine's own error is not `Clone`).
    pub(crate) fn repeat(&self) -> StoreError {
        StoreError {
            kind: self.kind,
            source: self.to_string().into(),
            message: None,
        }
    }

    /// The SQLite error behind this one, if SQLite reported it.
    pub(crate) fn sqlite(&self) -> Option<&rusqlite::Error> {
        self.source.downcast_ref::<rusqlite::Error>()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => f.write_str(message),
            None => fmt::Display::fmt(&self.source, f),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreErrorKind::Full,
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) => StoreErrorKind::ReadOnly,
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreErrorKind::Busy,
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                StoreErrorKind::Corrupt
            }
            _ => StoreErrorKind::Other,
        };
        StoreError {
            kind,
            source: Box::new(e),
            message: None,
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError {
            kind: StoreErrorKind::Other,
            source: Box::new(e),
            message: None,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let kind = match e.code() {
            Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::OUT_OF_MEMORY => {
                StoreErrorKind::Full
            }
            Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => StoreErrorKind::ReadOnly,
            Some(c)
                if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    || *c == SqlState::INVALID_CATALOG_NAME =>
            {
                StoreErrorKind::Refused
            }
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CANNOT_CONNECT_NOW => {
                StoreErrorKind::Unavailable
            }
            Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
                StoreErrorKind::Corrupt
            }
            Some(_) => StoreErrorKind::Other,
            // No SQL state: the connection itself failed or closed.
            None => StoreErrorKind::Unavailable,
        };
        let message = match e.as_db_error() {
            Some(db) => Some(format!(
                "{}: {} ({})",
                db.severity(),
                db.message(),
                db.code().code()
            )),
            None => std::error::Error::source(&e).map(|cause| format!("{e}: {cause}")),
        };
        StoreError {
            kind,
            source: Box::new(e),
            message,
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError {
                kind: StoreErrorKind::Unavailable,
                source: Box::new(other),
                message: None,
            },
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError {
            kind: StoreErrorKind::Other,
            source: Box::new(e),
            message: None,
        }
    }
}
