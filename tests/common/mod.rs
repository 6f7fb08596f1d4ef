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

/// The store a behavioural test runs on: the same test body runs against
/// each (see [`both!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests use: `ERRANDS_PG_URL`, else the local
/// server (`.ci/run` makes sure it is up; the tests never skip it).
pub fn pg_url() -> String {
    std::env::var("ERRANDS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh store for one test: a SQLite file in a temporary directory, or a
/// PostgreSQL schema of its own (dropped at the end), so tests run in
/// parallel without meeting.
pub struct TestStore {
    pub backend: Backend,
    pub db: TempDb,
    pub schema: String,
}

impl TestStore {
    pub fn new(backend: Backend) -> TestStore {
        TestStore {
            backend,
            db: temp_db(),
            schema: format!("t_{}_{:08x}", std::process::id(), fastrand_u32()),
        }
    }

    /// `builder` on this store.
    pub fn apply(&self, builder: errands::Builder) -> errands::Builder {
        match self.backend {
            Backend::Sqlite => builder.sqlite(&self.db.path),
            Backend::Postgres => builder.postgres_options(
                errands::PostgresOptions::new(pg_url()).schema(self.schema.clone()),
            ),
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if self.backend == Backend::Postgres {
            let schema = self.schema.clone();
            // Best effort, on a thread of its own (this may run inside an
            // actix runtime, which must not block on another).
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    if let Ok((client, connection)) =
                        errands::tokio_postgres::connect(&pg_url(), errands::tokio_postgres::NoTls)
                            .await
                    {
                        tokio::spawn(connection);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

fn fastrand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish() as u32
}

/// Runs one async test body, `async fn(Backend)`, once per store: makes a
/// module `$name` with tests `sqlite` and `postgres`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[actix_rt::test]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[actix_rt::test]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    };
}
