//! The single writer thread and its group commit.
//!
//! Every write of this process goes through one connection on one thread.
//! The thread takes the first request waiting in its channel and then every
//! other request already queued behind it, runs them all in a single
//! `BEGIN IMMEDIATE` transaction (each inside its own savepoint, so that one
//! failing request does not undo the others), commits once, and only then
//! answers each caller. Under load, hundreds of enqueues and outcomes share
//! one commit (and one fsync with `synchronous=FULL`); idle, a request is
//! committed on its own at once. One writer per process also means
//! `SQLITE_BUSY` can only come from another process, which the busy timeout
//! and the retry below absorb.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};
use tokio::sync::oneshot;

use crate::actors::unwind::panic_message;
use crate::error::{Error, Result};

/// A unit of work for the writer: it runs inside the group transaction,
/// then is told whether that transaction committed and answers its caller.
trait Request: Send {
    /// Runs the work. `Ok` when it succeeded and its changes should stay;
    /// otherwise the SQLite error behind the failure, if there was one.
    fn run(&mut self, conn: &Connection) -> std::result::Result<(), Option<rusqlite::Error>>;
    /// Answers the caller once the transaction has ended.
    fn answer(self: Box<Self>, commit: std::result::Result<(), &rusqlite::Error>);
    /// Whether the work writes with a single statement, which SQLite undoes
    /// by itself if it fails: no savepoint needed around it.
    fn single_statement(&self) -> bool;
}

struct Op<T, F> {
    single_statement: bool,
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Request for Op<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> std::result::Result<(), Option<rusqlite::Error>> {
        let work = self.work.take().expect("a request runs once");
        // Requests may run the application's own code (`ctx.transaction`):
        // a panic there fails that request only, and its savepoint is rolled
        // back like any failed request's. It must never take the writer down.
        let result = match catch_unwind(AssertUnwindSafe(|| work(conn))) {
            Ok(result) => result,
            Err(payload) => Err(Error::Panicked(panic_message(payload))),
        };
        let outcome = match &result {
            Ok(_) => Ok(()),
            Err(Error::Store(e)) => Err(e.sqlite().map(clone_sqlite_error)),
            Err(_) => Err(None),
        };
        self.result = Some(result);
        outcome
    }

    fn answer(self: Box<Self>, commit: std::result::Result<(), &rusqlite::Error>) {
        let answer = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(Error::Store(clone_sqlite_error(e).into())),
            (Ok(()), None) => Err(Error::StoreStopped),
        };
        let _ = self.reply.send(answer);
    }

    fn single_statement(&self) -> bool {
        self.single_statement
    }
}

/// The most requests committed together; bounds a transaction's size.
const MAX_GROUP: usize = 2048;

/// What the writer thread receives.
enum Message {
    /// Run this in the next group transaction.
    Work(Box<dyn Request>),
    /// Finish what came before, then checkpoint the WAL into the database
    /// file, close the connection and answer.
    Close(oneshot::Sender<()>),
}

/// A handle to the writer thread. Cloning it shares the thread.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: Sender<Message>,
    /// Set once [`Writer::close`] was asked for: from then on a request that
    /// finds the thread gone gets [`Error::Closed`], not
    /// [`Error::StoreStopped`].
    closing: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn start(conn: Connection) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Message>();
        thread::Builder::new()
            .name("errands-sqlite-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok(Writer {
            tx,
            closing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Lets every request sent before this one commit, then checkpoints the
    /// whole WAL into the database file (`TRUNCATE`), closes the writer's
    /// connection and ends the thread. Resolves once that is done.
    pub(crate) fn close(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.closing.store(true, Ordering::Release);
        let (done, done_rx) = oneshot::channel();
        let sent = self.tx.send(Message::Close(done)).is_ok();
        async move {
            if sent {
                let _ = done_rx.await;
            }
        }
    }

    /// The error for a request the thread will never answer.
    fn gone(closing: &AtomicBool) -> Error {
        if closing.load(Ordering::Acquire) {
            Error::Closed
        } else {
            log::error!("errands: the SQLite writer thread stopped unexpectedly");
            Error::StoreStopped
        }
    }

    /// Runs `work` in the next group transaction and answers its result once
    /// that transaction has committed. If `work` fails, its changes are
    /// rolled back and its error returned; if the commit fails, every
    /// request in the group gets the commit's error.
    pub(crate) fn submit<T, F>(
        &self,
        work: F,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit_as(false, work)
    }

    /// Like [`Writer::submit`]; with `single_statement` set, for work that
    /// writes with one statement, which SQLite undoes by itself if it fails,
    /// so it runs without a savepoint (two statements fewer under load).
    pub(crate) fn submit_as<T, F>(
        &self,
        single_statement: bool,
        work: F,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, reply_rx) = oneshot::channel::<Result<T>>();
        let sent = self.tx.send(Message::Work(Box::new(Op {
            single_statement,
            work: Some(work),
            result: None,
            reply,
        })));
        let closing = self.closing.clone();
        async move {
            sent.map_err(|_| Writer::gone(&closing))?;
            reply_rx.await.map_err(|_| Writer::gone(&closing))?
        }
    }
}

/// How long the writer keeps polling for the next request before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// The next request: polled for a moment first (under load the next one is
/// usually a few microseconds away, and a sleeping thread wakes slowly and
/// on a cold cache), then waited for.
fn next_request(rx: &Receiver<Message>) -> Option<Message> {
    let spin_until = Instant::now() + SPIN;
    loop {
        match rx.try_recv() {
            Ok(request) => return Some(request),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() < spin_until => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

fn run(conn: Connection, rx: Receiver<Message>) {
    let mut group: Vec<Box<dyn Request>> = Vec::with_capacity(64);
    let mut close: Option<oneshot::Sender<()>> = None;
    while let Some(first) = next_request(&rx) {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Work(request) => group.push(request),
                Message::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            if group.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            // A panic in errands' own code here (the application's code is
            // already caught per request) must not end the thread either:
            // undo the transaction; the group's callers, whose answers were
            // dropped, get an error, and the next group goes on.
            if catch_unwind(AssertUnwindSafe(|| commit_group(&conn, &mut group))).is_err() {
                log::error!("errands: the SQLite writer panicked; its transaction was rolled back");
                if !conn.is_autocommit() {
                    let _ = exec(&conn, "ROLLBACK");
                }
                group.clear();
            }
        }
        if close.is_some() {
            break;
        }
    }
    // Leave one self-contained database file: copy the whole WAL into it and
    // truncate the WAL, so that a copy of the `.db` alone holds every commit.
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        log::warn!(
            "errands: final checkpoint failed (the -wal file still holds the latest commits): {e}"
        );
    }
    if let Err((_, e)) = conn.close() {
        log::warn!("errands: closing the database failed: {e}");
    }
    log::debug!("errands: writer thread stopped");
    if let Some(done) = close {
        let _ = done.send(());
    }
}

/// Runs one group in one transaction and answers every request in it.
fn commit_group(conn: &Connection, group: &mut Vec<Box<dyn Request>>) {
    if let Err(e) = begin_immediate(conn) {
        log::error!("errands: could not begin a write transaction: {e}");
        for request in group.drain(..) {
            request.answer(Err(&e));
        }
        return;
    }
    // SQLite may roll a whole transaction back by itself on some errors
    // (a full disk, an I/O error); then every request in it is lost and
    // all of them are answered with that error, none acknowledged.
    let mut rolled_back: Option<rusqlite::Error> = None;
    if group.len() == 1 {
        // Alone in the transaction: no savepoint needed.
        if let Err(e) = group[0].run(conn) {
            rolled_back = Some(e.unwrap_or_else(|| other_error("request failed".into())));
        }
    } else {
        for request in group.iter_mut() {
            if request.single_statement() {
                if let Err(e) = request.run(conn) {
                    if conn.is_autocommit() {
                        rolled_back = Some(
                            e.unwrap_or_else(|| other_error("transaction rolled back".into())),
                        );
                        break;
                    }
                }
                continue;
            }
            if let Err(e) = exec(conn, "SAVEPOINT errands_op") {
                rolled_back = Some(e);
                break;
            }
            if let Err(e) = request.run(conn) {
                if conn.is_autocommit() {
                    rolled_back =
                        Some(e.unwrap_or_else(|| other_error("transaction rolled back".into())));
                    break;
                }
                let _ = exec(conn, "ROLLBACK TO errands_op");
            }
            let _ = exec(conn, "RELEASE errands_op");
        }
    }
    let end = match rolled_back {
        None => exec(conn, "COMMIT"),
        // The lone request failed and answers its own error; undo it.
        Some(_) if group.len() == 1 => {
            if conn.is_autocommit() {
                Ok(())
            } else {
                exec(conn, "ROLLBACK")
            }
        }
        Some(e) => Err(e),
    };
    match end {
        Ok(()) => {
            for request in group.drain(..) {
                request.answer(Ok(()));
            }
        }
        Err(e) => {
            log::error!("errands: commit failed: {e}");
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            for request in group.drain(..) {
                request.answer(Err(&e));
            }
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// `BEGIN IMMEDIATE`, retried while another process holds the write lock
/// past the busy timeout, so that `SQLITE_BUSY` never reaches a caller.
fn begin_immediate(conn: &Connection) -> rusqlite::Result<()> {
    let mut delay = Duration::from_millis(1);
    loop {
        match exec(conn, "BEGIN IMMEDIATE") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::DatabaseBusy || e.code == ErrorCode::DatabaseLocked =>
            {
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// rusqlite errors are not `Clone`; rebuild one for each caller of a failed commit.
fn clone_sqlite_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => other_error(other.to_string()),
    }
}

/// A generic SQLite error carrying `message`.
pub(super) fn other_error(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(message),
    )
}
