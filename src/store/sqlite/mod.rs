//! The embedded SQLite store: one writer thread with group commit, a pool of
//! read connections, and file locks that tell live owners from dead ones.
//!
//! Opening does everything that can fail before anything starts: create the
//! directory, open the file for writing, switch to WAL, check and migrate the
//! schema, take this owner's lock. After that, writes go to the [`Writer`]
//! thread and reads run on the blocking pool, so no actix arbiter thread ever
//! waits for SQLite.

mod checkpointer;
mod controls;
mod counters;
mod options;
mod owners;
mod reads;
mod schema;
mod writer;
mod writes;

#[cfg(test)]
mod model_tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

pub use options::{SqliteOptions, Synchronous};
use writer::Writer;

use super::{
    CancelAnswer, ControlRow, ControlWrite, DeadTarget, FinishAndClaim, FinishedAndClaimed, NewJob,
    QueueControls, Store, StoreFuture,
};
use crate::error::{Error, Result};
use crate::inspect::{Counts, JobInfo, JobStatus};

/// The SQLite implementation of [`Store`].
pub(crate) struct SqliteStore {
    writer: Writer,
    pool: Pool<SqliteConnectionManager>,
    owner: Arc<str>,
    lock_dir: PathBuf,
    /// The database file's canonical path.
    canonical: PathBuf,
    /// This owner's liveness lock; `None` once closed.
    lock: Arc<Mutex<Option<owners::OwnerLock>>>,
    retain_completed: bool,
    /// Stopped (dropped) at close.
    checkpointer: Mutex<Option<checkpointer::Checkpointer>>,
}

impl SqliteStore {
    /// Inserts jobs with the application's own connection, inside its
    /// transaction (`Errands::enqueue_sqlite_tx`), refused unless that
    /// connection is on this store's file.
    pub(crate) fn insert_in(&self, conn: &Connection, jobs: &[NewJob]) -> Result<Vec<i64>> {
        let same = conn
            .path()
            .filter(|p| !p.is_empty())
            .and_then(|p| std::fs::canonicalize(p).ok())
            .is_some_and(|p| p == self.canonical);
        if !same {
            return Err(Error::NotTheQueueDatabase {
                path: conn.path().unwrap_or("").into(),
            });
        }
        writes::insert_jobs(conn, jobs)
    }

    /// Runs the application's `work` and saves a running job's progress in
    /// one transaction (`ctx.transaction`), refused unless this process
    /// still owns that attempt. `work` runs on the writer thread, inside
    /// the group commit, in a savepoint of its own.
    pub(crate) fn transaction<T, F>(
        &self,
        id: i64,
        attempt: u32,
        checkpoint: Vec<u8>,
        work: F,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let owner = self.owner.clone();
        self.writer.submit(move |conn| {
            let value = work(conn)?;
            writes::save_checkpoint(conn, &owner, id, attempt, &checkpoint)?;
            Ok(value)
        })
    }

    /// Opens (creating and migrating if needed) the database. Blocks: call
    /// it from a thread that may block.
    pub(crate) fn open(options: &SqliteOptions, retain_completed: bool) -> Result<SqliteStore> {
        let path = options.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let open_error = |source: rusqlite::Error| Error::Open {
            path: path.clone(),
            source: source.into(),
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        configure_writer(&conn, options).map_err(open_error)?;
        schema::migrate(&conn)?;

        let lock_dir = owners::lock_dir(&path)?;
        let canonical = std::fs::canonicalize(&path)?;
        let owner = crate::store::new_owner_id();
        let lock = owners::OwnerLock::acquire(&lock_dir, &owner)?;

        let busy = options.busy_timeout;
        let manager = SqliteConnectionManager::file(&path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |c| c.busy_timeout(busy));
        let pool = Pool::builder()
            .max_size(options.read_pool_size)
            .min_idle(Some(0))
            .thread_pool(pool_helper_threads())
            .build(manager)?;

        let checkpointer =
            checkpointer::Checkpointer::start(&path, options.busy_timeout).map_err(|source| {
                Error::Open {
                    path: path.clone(),
                    source: source.into(),
                }
            })?;
        let writer = Writer::start(conn)?;
        Ok(SqliteStore {
            writer,
            pool,
            owner: owner.into(),
            lock_dir,
            canonical,
            lock: Arc::new(Mutex::new(Some(lock))),
            retain_completed,
            checkpointer: Mutex::new(Some(checkpointer)),
        })
    }

    /// Runs a read on a pooled connection on the blocking thread pool.
    fn read<T, F>(&self, read: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        Box::pin(async move {
            actix_rt::task::spawn_blocking(move || {
                let conn = pool.get()?;
                read(&conn)
            })
            .await
            .map_err(|_| Error::Closed)?
        })
    }
}

/// The helper thread r2d2 uses to open and reap connections, one for the
/// whole process. r2d2 otherwise starts three per pool and does not join
/// them when the pool is dropped, so every start/shutdown cycle left threads
/// behind.
fn pool_helper_threads() -> Arc<scheduled_thread_pool::ScheduledThreadPool> {
    static POOL: std::sync::OnceLock<Arc<scheduled_thread_pool::ScheduledThreadPool>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        Arc::new(
            scheduled_thread_pool::ScheduledThreadPool::builder()
                .num_threads(1)
                .thread_name_pattern("errands-pool-{}")
                .build(),
        )
    })
    .clone()
}

/// The largest `max_page_count` SQLite accepts.
const SQLITE_MAX_PAGE_COUNT: u64 = 4_294_967_294;

fn configure_writer(conn: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    // SQLite quietly opens a write-protected file read-only; writing is the
    // point, so say so now rather than at the first enqueue.
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            Some("the database file is read-only for this process".into()),
        ));
    }
    conn.busy_timeout(options.busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(writer::other_error(format!(
            "could not switch to WAL journal mode (got {mode})"
        )));
    }
    // SQLite's default page cache (2 MiB) is kept on purpose: the writer
    // touches few pages per transaction, and at every commit SQLite walks
    // the cache's whole hash table, so a bigger cache made commits slower
    // (measured: 2.4% of the writer's time at 8 MiB, 0.8% at the default).
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = {};",
        options.synchronous.pragma(),
        checkpointer::WRITER_AUTOCHECKPOINT_PAGES
    ))?;
    // Plan each statement once. Since 3.53 SQLite reads a bound `LIMIT ?`
    // while planning and so re-prepares the claim statement every time it
    // is bound again (6–11% of the writer's time, measured);
    // the query planner stability guarantee turns that off, and the plans
    // errands needs do not depend on bound values.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    if let Some(bytes) = options.max_database_bytes {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let page_size = page_size.max(512) as u64;
        // SQLite's own ceiling; a cap at or above it (`u64::MAX`) is no cap.
        let pages = (bytes / page_size).clamp(1, SQLITE_MAX_PAGE_COUNT);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    }
    // Writing is the point: fail now, at open, on a read-only file.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl Store for SqliteStore {
    fn enqueue(&self, jobs: Vec<NewJob>) -> StoreFuture<Vec<i64>> {
        // One row is one INSERT statement.
        let single_statement = jobs.len() == 1;
        Box::pin(self.writer.submit_as(single_statement, move |conn| {
            writes::insert_jobs(conn, &jobs)
        }))
    }

    fn finish_and_claim(&self, batch: FinishAndClaim) -> StoreFuture<FinishedAndClaimed> {
        let owner = self.owner.clone();
        let retain = self.retain_completed;
        Box::pin(
            self.writer
                .submit(move |conn| writes::finish_and_claim(conn, &owner, retain, &batch)),
        )
    }

    fn recover_orphans(&self, now: i64) -> StoreFuture<usize> {
        let owner = self.owner.clone();
        let dir = self.lock_dir.clone();
        let lock = self.lock.clone();
        Box::pin(self.writer.submit(move |conn| {
            if let Some(lock) = lock.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                lock.ensure_present();
            }
            writes::recover_orphans(conn, &owner, &dir, now)
        }))
    }

    fn next_run_at(&self, kinds: Vec<(String, String)>, after: i64) -> StoreFuture<Option<i64>> {
        self.read(move |conn| reads::next_run_at(conn, &kinds, after))
    }

    fn counts(&self, now: i64) -> StoreFuture<Vec<Counts>> {
        self.read(move |conn| reads::counts(conn, now))
    }

    fn job(&self, id: i64, now: i64) -> StoreFuture<Option<JobInfo>> {
        self.read(move |conn| reads::job(conn, id, now))
    }

    fn status(&self, id: i64, now: i64) -> StoreFuture<JobStatus> {
        self.read(move |conn| reads::status(conn, id, now))
    }

    fn dead_jobs(&self, queue: Option<String>, limit: usize) -> StoreFuture<Vec<JobInfo>> {
        self.read(move |conn| reads::dead_jobs(conn, queue.as_deref(), limit))
    }

    fn requeue(&self, target: DeadTarget, now: i64) -> StoreFuture<u64> {
        Box::pin(
            self.writer
                .submit(move |conn| writes::requeue(conn, &target, now)),
        )
    }

    fn purge(&self, target: DeadTarget) -> StoreFuture<u64> {
        let now = crate::clock::system_time_to_ms(std::time::SystemTime::now());
        Box::pin(
            self.writer
                .submit(move |conn| writes::purge(conn, &target, now)),
        )
    }

    fn cancel(&self, id: i64, reason: String, now: i64) -> StoreFuture<CancelAnswer> {
        Box::pin(
            self.writer
                .submit(move |conn| controls::cancel(conn, id, &reason, now)),
        )
    }

    fn write_control(&self, change: ControlWrite) -> StoreFuture<()> {
        Box::pin(
            self.writer
                .submit_as(true, move |conn| controls::write(conn, &change)),
        )
    }

    fn controls(&self, queue: Option<String>) -> StoreFuture<Vec<ControlRow>> {
        self.read(move |conn| controls::rows(conn, queue.as_deref()))
    }

    fn queue_controls(&self, queue: &'static str) -> StoreFuture<QueueControls> {
        let owner = self.owner.clone();
        self.read(move |conn| controls::for_queue(conn, queue, &owner))
    }

    fn settle_cancels(&self, now: i64) -> StoreFuture<u64> {
        Box::pin(
            self.writer
                .submit(move |conn| controls::settle_cancels(conn, now)),
        )
    }

    fn prune_dead(&self, before: i64, batch: usize, now: i64) -> StoreFuture<u64> {
        Box::pin(
            self.writer
                .submit(move |conn| controls::prune_dead(conn, before, batch, now)),
        )
    }

    fn prune_completed(&self, before: i64) -> StoreFuture<u64> {
        Box::pin(
            self.writer
                .submit(move |conn| writes::prune_completed(conn, before)),
        )
    }

    fn save_checkpoint(&self, id: i64, attempt: u32, checkpoint: Vec<u8>) -> StoreFuture<()> {
        let owner = self.owner.clone();
        Box::pin(
            self.writer.submit(move |conn| {
                writes::save_checkpoint(conn, &owner, id, attempt, &checkpoint)
            }),
        )
    }

    fn close(&self) -> StoreFuture<()> {
        let lock = self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let writer = self.writer.clone();
        let owner = self.owner.clone();
        Box::pin(async move {
            // The checkpointer first, so that the writer's final TRUNCATE
            // checkpoint does not wait for (or race) a passive one.
            if let Some(checkpointer) = checkpointer {
                actix_rt::task::spawn_blocking(move || checkpointer.stop())
                    .await
                    .map_err(|_| Error::Closed)?;
            }
            let holds_jobs = writer
                .submit(move |conn| writes::running_count(conn, &owner))
                .await
                .map_or(true, |n| n > 0);
            writer.close().await;
            // Last: only now may others recover what this owner still holds.
            // Its file stays if it does hold jobs (outcomes that could not be
            // written), so that the next recovery pass finds it dead.
            if let Some(lock) = lock {
                lock.release(!holds_jobs);
            }
            Ok(())
        })
    }
}
