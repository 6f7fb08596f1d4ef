//! Enqueue inside the application's own transaction: the job exists if and
//! only if the application's transaction commits.
//!
//! This is why teams pick a database-backed queue: "create the invoice row
//! *and* the job that mails it" either both happen or neither does, with no
//! window where one exists without the other. Each store does it with its
//! own transaction type:
//!
//! - **SQLite**: the application opens its own `rusqlite` connection on the
//!   queue's file. [`Errands::sqlite_transaction`] begins an `IMMEDIATE`
//!   transaction, runs the application's closure (which calls
//!   [`Errands::enqueue_sqlite_tx`] for its jobs), commits, and only then
//!   wakes the dispatchers. `enqueue_sqlite_tx` alone (with a transaction
//!   the application commits itself) leaves the job to the fallback poll.
//! - **PostgreSQL**: [`Errands::enqueue_pg_tx`] inserts with the
//!   application's `tokio_postgres::Transaction` and queues a `NOTIFY` in
//!   it. PostgreSQL delivers the notification at commit, to every instance,
//!   and drops it on rollback, so the wake-up follows the commit by itself.

use crate::client::{Announced, EnqueueOptions, Errands};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::store::Backend;

impl Errands {
    /// Enqueues `job` inside the application's transaction on the queue's
    /// own SQLite file. The job exists if and only if `tx` commits.
    /// Prefer [`Errands::sqlite_transaction`], which also wakes the
    /// dispatchers at once after the commit; called on its own, the job is
    /// found by the next fallback poll (`poll_interval`, 1 s by default).
    ///
    /// Fails with [`Error::NotTheQueueDatabase`] if `tx` is on another
    /// file, and [`Error::OtherBackend`] if this instance runs on
    /// PostgreSQL. This call blocks on SQLite: run it where blocking is
    /// allowed (as any `rusqlite` call).
    pub fn enqueue_sqlite_tx<J: Job>(&self, tx: &rusqlite::Transaction<'_>, job: J) -> Result<i64> {
        self.enqueue_sqlite_tx_with(tx, job, EnqueueOptions::new())
    }

    /// [`Errands::enqueue_sqlite_tx`] with options (a delay, a time, a
    /// number of attempts).
    pub fn enqueue_sqlite_tx_with<J: Job>(
        &self,
        tx: &rusqlite::Transaction<'_>,
        job: J,
        options: EnqueueOptions,
    ) -> Result<i64> {
        self.check_open()?;
        let Backend::Sqlite(store) = &self.engine().backend else {
            return Err(self.other_backend("enqueue_sqlite_tx", "SQLite"));
        };
        let now = self.now();
        let row = self.new_job(&job, &options, now)?;
        let ids = store.insert_in(tx, std::slice::from_ref(&row))?;
        PENDING.with(|pending| {
            if let Some(pending) = pending.borrow_mut().as_mut() {
                pending.push(Announced::from(&row));
            }
        });
        Ok(ids[0])
    }

    /// Runs `work` in an `IMMEDIATE` transaction on `conn` (the
    /// application's own connection to the queue's SQLite file), commits
    /// it, and then wakes the dispatchers for the jobs `work` enqueued with
    /// [`Errands::enqueue_sqlite_tx`]. If `work` fails, or the commit does,
    /// everything rolls back: the application's rows and the jobs alike.
    ///
    /// ```no_run
    /// # use errands::{Errands, Job, JobContext, JobResult};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct MailInvoice { id: i64 }
    /// # impl Job for MailInvoice { const KIND: &'static str = "mail_invoice";
    /// #   async fn run(self, _: JobContext) -> JobResult { Ok(()) } }
    /// # fn demo(errands: &Errands, conn: &mut errands::rusqlite::Connection) -> errands::Result<()> {
    /// let job = errands.sqlite_transaction(conn, |tx| {
    ///     tx.execute("INSERT INTO invoices (total) VALUES (?1)", [42])?;
    ///     let invoice = tx.last_insert_rowid();
    ///     errands.enqueue_sqlite_tx(tx, MailInvoice { id: invoice })
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn sqlite_transaction<T, E>(
        &self,
        conn: &mut rusqlite::Connection,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error> + From<rusqlite::Error>,
    {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let outer = PENDING.with(|pending| pending.borrow_mut().replace(Vec::new()));
        let value = work(&tx);
        let announced =
            PENDING.with(|pending| std::mem::replace(&mut *pending.borrow_mut(), outer));
        let value = value?;
        tx.commit()?;
        self.announce(&announced.unwrap_or_default(), self.now());
        Ok(value)
    }

    /// Enqueues `job` inside the application's PostgreSQL transaction, on
    /// the database and schema this instance runs on. The job exists if
    /// and only if `tx` commits; the `NOTIFY` sent with it wakes every
    /// instance at that commit (and vanishes with a rollback).
    ///
    /// ```no_run
    /// # use errands::{Errands, Job, JobContext, JobResult};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct MailInvoice { id: i64 }
    /// # impl Job for MailInvoice { const KIND: &'static str = "mail_invoice";
    /// #   async fn run(self, _: JobContext) -> JobResult { Ok(()) } }
    /// # async fn demo(errands: &Errands, client: &mut errands::tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let tx = client.transaction().await?;
    /// let row = tx.query_one("INSERT INTO invoices (total) VALUES (42) RETURNING id", &[]).await?;
    /// errands.enqueue_pg_tx(&tx, MailInvoice { id: row.get(0) }).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_pg_tx<J: Job>(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        job: J,
    ) -> Result<i64> {
        self.enqueue_pg_tx_with(tx, job, EnqueueOptions::new())
            .await
    }

    /// [`Errands::enqueue_pg_tx`] with options.
    pub async fn enqueue_pg_tx_with<J: Job>(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        job: J,
        options: EnqueueOptions,
    ) -> Result<i64> {
        self.check_open()?;
        let Backend::Postgres(store) = &self.engine().backend else {
            return Err(self.other_backend("enqueue_pg_tx", "PostgreSQL"));
        };
        let row = self.new_job(&job, &options, self.now())?;
        let ids = store.insert_in_tx(tx, std::slice::from_ref(&row)).await?;
        Ok(ids[0])
    }

    fn other_backend(&self, call: &'static str, needs: &'static str) -> Error {
        let runs = match self.engine().backend {
            Backend::Sqlite(_) => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        };
        Error::OtherBackend { call, needs, runs }
    }
}

thread_local! {
    /// Jobs enqueued by `enqueue_sqlite_tx` on this thread since the
    /// current `sqlite_transaction` began, announced once it commits
    /// (`work` runs on the caller's thread, synchronously). `None` outside
    /// one: nothing is collected for a transaction errands does not commit.
    static PENDING: std::cell::RefCell<Option<Vec<Announced>>> = const { std::cell::RefCell::new(None) };
}
