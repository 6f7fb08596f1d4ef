//! Enqueue inside the application's own transaction: the job exists if and
//! only if that transaction commits, and the dispatcher is woken after the
//! commit. The workers here poll once an hour, so a job that starts at all
//! was started by the wake-up.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, TestStore};
use errands::{Errands, Event, Job, JobContext, JobResult};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct MailInvoice {
    invoice: i64,
}

#[derive(Default)]
struct Mailed(Mutex<Vec<i64>>);

impl Job for MailInvoice {
    const KIND: &'static str = "mail_invoice";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.data::<Arc<Mailed>>()?
            .0
            .lock()
            .unwrap()
            .push(self.invoice);
        Ok(())
    }
}

/// A worker that polls once an hour, already past its first look for
/// jobs (one job run through it), so only a wake-up can start another.
async fn worker(store: &TestStore) -> (Errands, Arc<Mailed>) {
    let mailed = Arc::new(Mailed::default());
    let errands = store
        .apply(Errands::builder())
        .register::<MailInvoice>()
        .data(mailed.clone())
        .poll_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let first = errands.enqueue(MailInvoice { invoice: 0 }).await.unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(first)).await;
    mailed.0.lock().unwrap().clear();
    (errands, mailed)
}

#[derive(Debug)]
#[allow(dead_code)] // the fields are read through Debug
enum AppError {
    Errands(errands::Error),
    Sqlite(errands::rusqlite::Error),
    Declined,
}

impl From<errands::Error> for AppError {
    fn from(e: errands::Error) -> Self {
        AppError::Errands(e)
    }
}

impl From<errands::rusqlite::Error> for AppError {
    fn from(e: errands::rusqlite::Error) -> Self {
        AppError::Sqlite(e)
    }
}

#[actix_rt::test]
async fn sqlite_a_rolled_back_transaction_leaves_no_job_and_a_committed_one_runs() {
    let store = TestStore::new(Backend::Sqlite);
    let (errands, mailed) = worker(&store).await;
    let mut events = errands.subscribe();
    let mut app = errands::rusqlite::Connection::open(&store.db.path).unwrap();
    app.busy_timeout(Duration::from_secs(5)).unwrap();
    app.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
        .unwrap();

    let mut rolled_back = None;
    let declined = errands.sqlite_transaction(&mut app, |tx| {
        tx.execute("INSERT INTO invoices (total) VALUES (1)", [])?;
        let invoice = tx.last_insert_rowid();
        rolled_back = Some(errands.enqueue_sqlite_tx(tx, MailInvoice { invoice })?);
        Err::<(), _>(AppError::Declined)
    });
    assert!(matches!(declined, Err(AppError::Declined)));
    let rolled_back = rolled_back.expect("the job was inserted before the rollback");

    let committed = errands
        .sqlite_transaction(&mut app, |tx| {
            tx.execute("INSERT INTO invoices (total) VALUES (2)", [])?;
            let invoice = tx.last_insert_rowid();
            errands.enqueue_sqlite_tx(tx, MailInvoice { invoice })
        })
        .map_err(|e| format!("{e:?}"))
        .unwrap();

    let event = common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;
    assert_eq!(
        event.id(),
        Some(committed),
        "the committed job ran, woken at once"
    );
    let invoices: Vec<i64> = app
        .prepare("SELECT id FROM invoices")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(invoices.len(), 1, "the declined invoice rolled back");
    assert_eq!(*mailed.0.lock().unwrap(), invoices);
    assert_eq!(errands.job(rolled_back).await.unwrap(), None);
    let pending: u64 = errands
        .counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.pending())
        .sum();
    assert_eq!(pending, 0, "nothing else waits");
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[actix_rt::test]
async fn sqlite_a_transaction_on_another_file_is_refused() {
    let store = TestStore::new(Backend::Sqlite);
    let (errands, _) = worker(&store).await;
    let other = common::temp_db();
    let mut app = errands::rusqlite::Connection::open(&other.path).unwrap();
    let refused = errands.sqlite_transaction(&mut app, |tx| {
        errands.enqueue_sqlite_tx(tx, MailInvoice { invoice: 1 })
    });
    assert!(
        matches!(refused, Err(errands::Error::NotTheQueueDatabase { .. })),
        "{refused:?}"
    );
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[actix_rt::test]
async fn postgres_a_rolled_back_transaction_leaves_no_job_and_a_committed_one_runs() {
    let store = TestStore::new(Backend::Postgres);
    let (errands, mailed) = worker(&store).await;
    let mut events = errands.subscribe();
    let (mut app, connection) =
        errands::tokio_postgres::connect(&common::pg_url(), errands::tokio_postgres::NoTls)
            .await
            .unwrap();
    actix_rt::spawn(connection);
    let table = format!("{}.invoices", store.schema);
    app.batch_execute(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, total int)"
    ))
    .await
    .unwrap();

    let tx = app.transaction().await.unwrap();
    let row = tx
        .query_one(
            &format!("INSERT INTO {table} (total) VALUES (1) RETURNING id"),
            &[],
        )
        .await
        .unwrap();
    let rolled_back = errands
        .enqueue_pg_tx(
            &tx,
            MailInvoice {
                invoice: row.get(0),
            },
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let tx = app.transaction().await.unwrap();
    let row = tx
        .query_one(
            &format!("INSERT INTO {table} (total) VALUES (2) RETURNING id"),
            &[],
        )
        .await
        .unwrap();
    let invoice: i64 = row.get(0);
    let committed = errands
        .enqueue_pg_tx(&tx, MailInvoice { invoice })
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let event = common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;
    assert_eq!(
        event.id(),
        Some(committed),
        "the committed job ran, woken by its NOTIFY"
    );
    assert_eq!(*mailed.0.lock().unwrap(), [invoice]);
    assert_eq!(errands.job(rolled_back).await.unwrap(), None);
    let pending: u64 = errands
        .counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.pending())
        .sum();
    assert_eq!(pending, 0, "nothing else waits");
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[actix_rt::test]
async fn a_transaction_of_the_other_store_is_a_clear_error() {
    let store = TestStore::new(Backend::Postgres);
    let (errands, _) = worker(&store).await;
    let sqlite = common::temp_db();
    let mut app = errands::rusqlite::Connection::open(&sqlite.path).unwrap();
    let refused = errands.sqlite_transaction(&mut app, |tx| {
        errands.enqueue_sqlite_tx(tx, MailInvoice { invoice: 1 })
    });
    assert!(
        matches!(
            refused,
            Err(errands::Error::OtherBackend {
                needs: "SQLite",
                runs: "PostgreSQL",
                ..
            })
        ),
        "{refused:?}"
    );
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
