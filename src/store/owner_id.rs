//! Owner ids: who claimed a running job.
//!
//! Every started instance gets a fresh one, so that a restarted process is
//! never mistaken for its dead predecessor. The pid comes first because
//! the SQLite store reads it back (a missing lock file of a live pid is not
//! death).

/// A new owner id, unique across processes and restarts:
/// `<pid>-<start ms>-<random>`.
pub(crate) fn new_owner_id() -> String {
    format!(
        "{}-{}-{:08x}",
        std::process::id(),
        crate::clock::system_time_to_ms(std::time::SystemTime::now()),
        fastrand::u32(..)
    )
}
