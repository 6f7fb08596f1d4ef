//! Resumable jobs: named steps, typed cursors, transactional checkpoints.
//!
//! Long jobs get interrupted by deploys and crashes; they should not start
//! over. A handler splits its work into named steps. A step that finished
//! (and whose finish was saved) is skipped by every later attempt, which gets
//! the step's saved output instead. A cursor step gets the last cursor it
//! saved and carries on from there. `ctx.transaction` commits the
//! application's own rows and the job's progress in one SQLite transaction,
//! so the two never disagree, whatever kills the process.
//!
//! A cursor step's closure gets a typed [`Cursor`] handle for its own
//! step: `cursor.set(&c)` only accepts the type the step resumes from, and
//! steps running concurrently (`join!`) each move their own cursor.
//!
//! ```no_run
//! use errands::{Job, JobContext, JobResult};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Remux { recording: u64 }
//! # async fn upload(_: u64) -> Result<String, std::io::Error> { Ok(String::new()) }
//! # async fn transcode(_: u64, _: u32) -> Result<(), std::io::Error> { Ok(()) }
//! impl Job for Remux {
//!     const KIND: &'static str = "remux";
//!     async fn run(self, ctx: JobContext) -> JobResult {
//!         // Runs once; later attempts get the saved URL back.
//!         let url: String = ctx.step("upload", async || Ok(upload(self.recording).await?)).await?;
//!         // Resumes after the last saved segment.
//!         ctx.step_cursor("transcode", async |done: Option<u32>, cursor| {
//!             for segment in done.map_or(0, |s| s + 1)..100 {
//!                 transcode(self.recording, segment).await?;
//!                 cursor.set(&segment)?;
//!                 ctx.checkpoint().await?;
//!             }
//!             Ok(())
//!         }).await?;
//!         println!("published {url}");
//!         Ok(())
//!     }
//! }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::context::JobContext;
use crate::job::{JobError, JobResult};
use crate::progress::Progress;
use crate::store::Backend;

/// The cursor of one running [`JobContext::step_cursor`] step, handed to its
/// closure. Typed: it accepts only the cursor type the step resumes from.
///
/// A set cursor is saved by the next [`JobContext::checkpoint`] or
/// [`JobContext::transaction`], and at the latest when the attempt ends
/// (success, error, panic, timeout or shutdown). A `kill -9` loses what was
/// not saved yet.
pub struct Cursor<C> {
    step: Arc<str>,
    progress: Arc<Progress>,
    _type: PhantomData<fn(&C)>,
}

impl<C: Serialize> Cursor<C> {
    /// Records the step's progress: the next attempt resumes from `cursor`.
    /// Errors if the step already ended (the handle was kept past it).
    pub fn set(&self, cursor: &C) -> Result<(), JobError> {
        let bytes = codec::encode(cursor).map_err(|e| {
            JobError::msg(format!(
                "could not encode the cursor of step `{}`: {e}",
                self.step
            ))
        })?;
        self.progress
            .set_cursor(&self.step, bytes)
            .map_err(JobError::msg)
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        &self.step
    }
}

impl JobContext {
    /// Runs the step `name` unless an earlier attempt finished it, in which
    /// case its saved output is returned without running it. A finished step
    /// is saved at once, before the next step starts. Steps are async
    /// closures, so they may borrow the job and the context:
    /// `ctx.step("upload", async || { ... }).await?`.
    ///
    /// If the step fails, the error ends the attempt as usual; the next
    /// attempt runs this step again (and skips the ones before it).
    pub async fn step<T, F>(&self, name: &str, step: F) -> Result<T, JobError>
    where
        T: Serialize + DeserializeOwned,
        F: AsyncFnOnce() -> Result<T, JobError>,
    {
        if let Some(Some(saved)) = self.progress.finished_output(name) {
            match codec::decode::<T>(&saved) {
                Ok(value) => return Ok(value),
                Err(e) => log::warn!(
                    "errands: job {}: saved output of step `{name}` does not decode ({e}); running it again",
                    self.id
                ),
            }
        }
        self.progress.begin(name).map_err(JobError::msg)?;
        let value = match step().await {
            Ok(value) => value,
            Err(e) => {
                self.progress.abandon(name);
                return Err(e);
            }
        };
        let output = codec::encode(&value).map_err(|e| {
            self.progress.abandon(name);
            JobError::msg(format!("could not save the output of step `{name}`: {e}"))
        })?;
        self.progress.finish(name, Some(output));
        self.checkpoint().await?;
        Ok(value)
    }

    /// Runs the cursor step `name` unless it already finished. The closure
    /// gets the last cursor the step saved (`None` the first time) and a
    /// [`Cursor`] handle to record progress with. Cursors are any serde
    /// type; different steps of one job may use different types, and steps
    /// may run concurrently (each has its own cursor; their names must
    /// differ).
    pub async fn step_cursor<C, F>(&self, name: &str, step: F) -> JobResult
    where
        C: Serialize + DeserializeOwned,
        F: AsyncFnOnce(Option<C>, Cursor<C>) -> JobResult,
    {
        if self.progress.finished_output(name).is_some() {
            return Ok(());
        }
        let start = self.progress.cursor(name).and_then(|bytes| {
            codec::decode::<C>(&bytes)
                .map_err(|e| {
                    log::warn!(
                        "errands: job {}: saved cursor of step `{name}` does not decode ({e}); starting the step over",
                        self.id
                    )
                })
                .ok()
        });
        self.progress.begin(name).map_err(JobError::msg)?;
        let cursor = Cursor {
            step: name.into(),
            progress: self.progress.clone(),
            _type: PhantomData,
        };
        if let Err(e) = step(start, cursor).await {
            self.progress.abandon(name);
            return Err(e);
        }
        self.progress.finish(name, None);
        self.checkpoint().await
    }

    /// Saves the progress now (one write, shared with other writes by group
    /// commit). Does nothing if nothing changed.
    pub async fn checkpoint(&self) -> JobResult {
        let Some(snapshot) = self.progress.take_if_dirty() else {
            return Ok(());
        };
        let saved = self
            .shared
            .store
            .save_checkpoint(self.id, self.attempt, snapshot.bytes.clone())
            .await;
        match saved {
            Ok(()) => {
                self.progress.committed(snapshot);
                Ok(())
            }
            Err(e) => {
                self.progress.mark_dirty();
                Err(JobError::msg(format!("could not save progress: {e}")))
            }
        }
    }

    /// Runs `work` in a transaction on the queue's own SQLite database and
    /// saves the job's current progress in the same transaction: the
    /// application's rows and the checkpoint commit together or not at all.
    /// Set the cursor to the position *after* this work before calling it.
    ///
    /// `work` runs on the store's writer thread, inside its group commit:
    /// keep it to quick SQL. If it returns an error or panics, everything it
    /// wrote is rolled back, and so is the progress it would have saved
    /// (the cursor goes back to its last committed value), so the next
    /// attempt redoes that work rather than skipping it.
    ///
    /// ```no_run
    /// # use errands::{Cursor, JobContext, JobResult};
    /// # async fn copy(ctx: &JobContext, cursor: &Cursor<i64>, from: i64, to: i64) -> JobResult {
    /// cursor.set(&to)?;
    /// ctx.transaction(move |tx| {
    ///     tx.execute("INSERT INTO archive SELECT * FROM events WHERE id > ?1 AND id <= ?2", (from, to))?;
    ///     Ok(())
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, F>(&self, work: F) -> Result<T, JobError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let Some(snapshot) = self.progress.take() else {
            return Err(JobError::msg("could not encode the job's progress"));
        };
        let result = match &self.shared.backend {
            Backend::Sqlite(store) => {
                store
                    .transaction(self.id, self.attempt, snapshot.bytes.clone(), work)
                    .await
            }
            Backend::Postgres(_) => {
                self.progress.roll_back();
                return Err(JobError::permanent(
                    "ctx.transaction runs SQLite SQL, but this instance runs on PostgreSQL: use ctx.pg_transaction",
                ));
            }
        };
        self.settle(snapshot, result)
    }

    /// Runs `work` in a transaction on errands' PostgreSQL database and
    /// saves the job's current progress in the same transaction, as
    /// [`JobContext::transaction`] does on SQLite: the application's rows
    /// and the checkpoint commit together or not at all, and the commit is
    /// refused if this process no longer owns the attempt.
    ///
    /// ```no_run
    /// # use errands::{Cursor, JobContext, JobResult};
    /// # async fn copy(ctx: &JobContext, cursor: &Cursor<i64>, from: i64, to: i64) -> JobResult {
    /// cursor.set(&to)?;
    /// ctx.pg_transaction(async |tx| {
    ///     tx.execute("INSERT INTO archive SELECT * FROM events WHERE id > $1 AND id <= $2", &[&from, &to])
    ///         .await?;
    ///     Ok(())
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn pg_transaction<T, F>(&self, work: F) -> Result<T, JobError>
    where
        F: AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, tokio_postgres::Error>,
    {
        let Some(snapshot) = self.progress.take() else {
            return Err(JobError::msg("could not encode the job's progress"));
        };
        let result = match &self.shared.backend {
            Backend::Postgres(store) => {
                let now = self.shared.clock.now_ms();
                store
                    .transaction(self.id, self.attempt, snapshot.bytes.clone(), now, work)
                    .await
            }
            Backend::Sqlite(_) => {
                self.progress.roll_back();
                return Err(JobError::permanent(
                    "ctx.pg_transaction runs PostgreSQL SQL, but this instance runs on SQLite: use ctx.transaction",
                ));
            }
        };
        self.settle(snapshot, result)
    }

    /// The progress after a transaction: committed with it, or rolled back.
    fn settle<T>(
        &self,
        snapshot: crate::progress::Snapshot,
        result: crate::Result<T>,
    ) -> Result<T, JobError> {
        match result {
            Ok(value) => {
                self.progress.committed(snapshot);
                Ok(value)
            }
            Err(e) => {
                self.progress.roll_back();
                Err(JobError::msg(format!("transaction failed: {e}")))
            }
        }
    }
}
