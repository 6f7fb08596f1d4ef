//! The store an instance runs on, by its concrete type.
//!
//! The engine's own conversation with a store (claims, outcomes, recovery,
//! inspection) goes through the object-safe [`Store`] trait. The
//! application's transaction (`ctx.transaction`) cannot: each backend has
//! its own transaction type and runs the closure its own way (SQLite on the
//! writer thread, inside the group commit). Naming the backend by type lets
//! that call reach the store's generic method, so the closure's result keeps
//! its type end to end.

use std::sync::Arc;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::Store;

/// The store behind one errands instance.
#[derive(Clone)]
pub(crate) enum Backend {
    /// The embedded default: one SQLite file.
    Sqlite(Arc<SqliteStore>),
    /// A PostgreSQL server shared by several hosts.
    Postgres(Arc<PgStore>),
}

impl Backend {
    /// The store, for the operations every backend has.
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }
}
