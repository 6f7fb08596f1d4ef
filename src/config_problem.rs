//! What [`Builder::start`](crate::Builder::start) can find wrong with a
//! configuration, as values a program can match.
//!
//! `start()` checks everything before it opens or starts anything and
//! answers every problem at once in [`Error::Config`](crate::Error::Config),
//! so a deploy with three mistakes fails once, not three times.

use std::fmt;
use std::time::Duration;

/// The most jobs of one kind that may run at once (or be claimed ahead)
/// in one process. Larger values are refused rather than clamped: they are
/// almost always a mistake (`usize::MAX` as "unlimited"), and each claimed
/// job holds its payload in memory.
pub const MAX_CONCURRENCY: usize = 1_000_000;

/// The largest [`Builder::event_capacity`](crate::Builder::event_capacity):
/// the event buffer is allocated up front, one slot per event.
pub const MAX_EVENT_CAPACITY: usize = 1 << 24;

/// The longest [`SqliteOptions::busy_timeout`](crate::SqliteOptions::busy_timeout)
/// SQLite accepts: `i32::MAX` milliseconds (about 24.8 days).
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// One thing wrong with a configuration. [`Display`](fmt::Display) says
/// what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// No store was configured: call [`Builder::sqlite`](crate::Builder::sqlite)
    /// or [`Builder::postgres`](crate::Builder::postgres).
    NoDatabase,
    /// Both a SQLite file and a PostgreSQL server were configured; an
    /// instance runs on one store.
    TwoDatabases,
    /// The PostgreSQL connection string does not parse.
    InvalidPostgresUrl {
        /// What the parser said.
        message: String,
    },
    /// The PostgreSQL schema name is not a plain lower-case identifier
    /// (`[a-z_][a-z0-9_]*`, at most 63 bytes, not starting with `pg_`).
    InvalidSchemaName {
        /// The name given.
        name: String,
    },
    /// A job type's `KIND` is the empty string.
    EmptyKind {
        /// The Rust type.
        type_name: &'static str,
    },
    /// A job type's `QUEUE` is the empty string.
    EmptyQueue {
        /// The job's kind.
        kind: &'static str,
    },
    /// Two job types (or one type twice) registered under the same kind.
    DuplicateKind {
        /// The kind.
        kind: &'static str,
    },
    /// A kind's concurrency is 0 (it could never run).
    ZeroConcurrency {
        /// The kind.
        kind: &'static str,
    },
    /// A kind's global concurrency is 0 (it could never run anywhere).
    ZeroGlobalConcurrency {
        /// The kind.
        kind: &'static str,
    },
    /// A kind's rate limit allows 0 starts, or per a zero window
    /// ([`JobConfig::rate_limit`](crate::JobConfig::rate_limit)).
    ZeroRateLimit {
        /// The kind.
        kind: &'static str,
    },
    /// A kind's adaptive range is empty, starts at 0 or ends above
    /// [`MAX_CONCURRENCY`] ([`JobConfig::adaptive`](crate::JobConfig::adaptive)).
    InvalidAdaptiveRange {
        /// The kind.
        kind: &'static str,
        /// The range's lower end.
        min: usize,
        /// The range's upper end.
        max: usize,
    },
    /// A kind's concurrency, prefetch or global concurrency is above
    /// [`MAX_CONCURRENCY`].
    TooManySlots {
        /// The kind.
        kind: &'static str,
        /// `"concurrency"`, `"prefetch"` or `"global_concurrency"`.
        setting: &'static str,
        /// The value given.
        value: usize,
    },
    /// A kind (or an enqueue) allows 0 attempts.
    ZeroMaxAttempts {
        /// The kind.
        kind: &'static str,
    },
    /// [`Builder::queue`](crate::Builder::queue) was called twice for one name.
    DuplicateQueue {
        /// The queue's name.
        queue: String,
    },
    /// A queue was declared but no registered job type runs in it (most
    /// likely a typo).
    UnusedQueue {
        /// The queue's name.
        queue: String,
    },
    /// Two values of one type were given to [`Builder::data`](crate::Builder::data).
    DuplicateData {
        /// The Rust type.
        type_name: &'static str,
    },
    /// [`Builder::worker_threads`](crate::Builder::worker_threads) is 0.
    ZeroWorkerThreads,
    /// A poll or recovery interval is zero.
    ZeroInterval {
        /// Which setting: `"poll_interval"` or `"recovery_interval"`.
        setting: &'static str,
    },
    /// The SQLite busy timeout is longer than [`MAX_BUSY_TIMEOUT`].
    BusyTimeoutTooLong {
        /// The value given.
        value: Duration,
    },
    /// The event capacity is larger than [`MAX_EVENT_CAPACITY`].
    EventCapacityTooLarge {
        /// The value given.
        value: usize,
    },
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigProblem::NoDatabase => f.write_str(
                "no database: call Builder::sqlite(path) or Builder::postgres(url) before start()",
            ),
            ConfigProblem::TwoDatabases => f.write_str(
                "both Builder::sqlite and Builder::postgres were called; choose one store",
            ),
            ConfigProblem::InvalidPostgresUrl { message } => {
                write!(f, "the PostgreSQL connection string is invalid: {message}")
            }
            ConfigProblem::InvalidSchemaName { name } => write!(
                f,
                "PostgreSQL schema name `{name}` is not a plain lower-case identifier ([a-z_][a-z0-9_]*, not pg_*)"
            ),
            ConfigProblem::EmptyKind { type_name } => {
                write!(f, "{type_name} has an empty KIND; give it a stable name")
            }
            ConfigProblem::EmptyQueue { kind } => {
                write!(f, "job kind `{kind}` has an empty QUEUE name")
            }
            ConfigProblem::DuplicateKind { kind } => write!(
                f,
                "job kind `{kind}` is registered twice; each KIND must be unique"
            ),
            ConfigProblem::ZeroConcurrency { kind } => write!(
                f,
                "job kind `{kind}` has concurrency 0, so it could never run; use at least 1"
            ),
            ConfigProblem::ZeroGlobalConcurrency { kind } => write!(
                f,
                "job kind `{kind}` has global_concurrency 0, so it could never run; use at least 1"
            ),
            ConfigProblem::ZeroRateLimit { kind } => write!(
                f,
                "job kind `{kind}` has a rate limit of 0 starts or a zero window, so it could \
                 never run; allow at least 1 start per window of at least 1 ms"
            ),
            ConfigProblem::InvalidAdaptiveRange { kind, min, max } => write!(
                f,
                "job kind `{kind}` has adaptive concurrency {min}..={max}; the range must start \
                 at 1 or more, not be empty, and end at most at {MAX_CONCURRENCY}"
            ),
            ConfigProblem::TooManySlots {
                kind,
                setting,
                value,
            } => write!(
                f,
                "job kind `{kind}` has {setting} {value}, above the maximum {MAX_CONCURRENCY}"
            ),
            ConfigProblem::ZeroMaxAttempts { kind } => write!(
                f,
                "job kind `{kind}` has max_attempts 0, so it could never run; use at least 1"
            ),
            ConfigProblem::DuplicateQueue { queue } => {
                write!(f, "queue `{queue}` is declared twice")
            }
            ConfigProblem::UnusedQueue { queue } => write!(
                f,
                "queue `{queue}` has no job types registered (a typo in Builder::queue or Job::QUEUE?)"
            ),
            ConfigProblem::DuplicateData { type_name } => write!(
                f,
                "application data of type {type_name} is registered twice; wrap them in distinct types"
            ),
            ConfigProblem::ZeroWorkerThreads => {
                f.write_str("worker_threads is 0, so no job could run; use at least 1")
            }
            ConfigProblem::ZeroInterval { setting } => {
                write!(f, "{setting} must be longer than zero")
            }
            ConfigProblem::BusyTimeoutTooLong { value } => write!(
                f,
                "SQLite busy_timeout {value:?} is longer than the {MAX_BUSY_TIMEOUT:?} SQLite accepts"
            ),
            ConfigProblem::EventCapacityTooLarge { value } => write!(
                f,
                "event_capacity {value} is larger than the maximum {MAX_EVENT_CAPACITY}"
            ),
        }
    }
}

/// Formats a list of problems as one sentence per problem.
pub(crate) struct Problems<'a>(pub &'a [ConfigProblem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
