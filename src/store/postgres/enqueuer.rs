//! Group commit for enqueues on PostgreSQL, and the wake-ups they send.
//!
//! Enqueues do not each commit: a few committer tasks each take every
//! request waiting, insert all its rows with one `INSERT … SELECT FROM
//! unnest(…)`, commit once, and answer every caller. While one group
//! commits the next one gathers, and the server's own group commit shares
//! an fsync between committers.
//!
//! The `NOTIFY` that wakes other hosts is not in those transactions.
//! `NOTIFY` takes a cluster-wide lock at commit, held until the commit is
//! on disk, so it serialises every transaction that sends one (one-row
//! transactions from 16 connections: ~25k/s without, ~8k/s with). Here one
//! notifier task sends it after the rows are committed, one `NOTIFY` at a
//! time for every queue filled since the last (with the earliest `run_at`
//! of each): the inserts never wait on that lock, and a burst of enqueues
//! costs a handful of notifications. A job is never announced before it is
//! visible; if the process dies between the commit and the `NOTIFY`, other
//! hosts find the job at their fallback poll.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::liveness::channel;
use super::Shared;
use crate::error::{Error, Result};
use crate::store::NewJob;

/// Committer tasks: several commit side by side.
const COMMITTERS: usize = 4;
/// The most rows one group inserts.
const MAX_GROUP_ROWS: usize = 4096;

pub(crate) struct Request {
    pub jobs: Vec<NewJob>,
    pub reply: oneshot::Sender<Result<Vec<i64>>>,
}

/// Queues filled by a committed group, and the earliest `run_at` of each.
type Filled = BTreeMap<&'static str, i64>;

/// Starts the committers and the notifier; requests go to the returned
/// sender.
pub(crate) fn start(shared: Arc<Shared>) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel::<Request>();
    let (notify_tx, notify_rx) = mpsc::unbounded_channel::<Filled>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..COMMITTERS {
        tokio::spawn(committer(shared.clone(), rx.clone(), notify_tx.clone()));
    }
    tokio::spawn(notifier(shared, notify_rx));
    tx
}

async fn committer(
    shared: Arc<Shared>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Request>>>,
    notify: mpsc::UnboundedSender<Filled>,
) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(first) => group.push(first),
                None => return,
            }
            let mut rows = group[0].jobs.len();
            while rows < MAX_GROUP_ROWS {
                match rx.try_recv() {
                    Ok(next) => {
                        rows += next.jobs.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
        }
        let jobs: Vec<&NewJob> = group.iter().flat_map(|r| r.jobs.iter()).collect();
        match insert(&shared, &jobs).await {
            Ok(ids) => {
                let mut filled = Filled::new();
                for job in &jobs {
                    let at = filled.entry(job.queue).or_insert(job.run_at);
                    *at = (*at).min(job.run_at);
                }
                let _ = notify.send(filled);
                let mut ids = ids.into_iter();
                for request in group {
                    let mine: Vec<i64> = ids.by_ref().take(request.jobs.len()).collect();
                    let _ = request.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for request in group {
                    let _ = request.reply.send(Err(repeat(&e)));
                }
            }
        }
    }
}

/// Sends one `NOTIFY` at a time, each for everything committed since the
/// last one.
async fn notifier(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Filled>) {
    let channel = channel(&shared.schema);
    while let Some(first) = rx.recv().await {
        let mut filled = first;
        while let Ok(more) = rx.try_recv() {
            for (queue, at) in more {
                let earliest = filled.entry(queue).or_insert(at);
                *earliest = (*earliest).min(at);
            }
        }
        let payload: Vec<String> = filled
            .iter()
            .map(|(queue, at)| format!("{queue} {at}"))
            .collect();
        let sent = async {
            let client = shared.client().await?;
            client
                .execute("SELECT pg_notify($1, $2)", &[&channel, &payload.join("\n")])
                .await?;
            Ok::<_, Error>(())
        };
        if let Err(e) = sent.await {
            // Other hosts will find the jobs at their fallback poll.
            log::warn!("errands: could not notify other hosts of new jobs: {e}");
        }
    }
}

/// The group's failure, for each caller in it.
fn repeat(e: &Error) -> Error {
    match e {
        Error::Store(e) => Error::Store(e.repeat()),
        Error::Closed => Error::Closed,
        other => Error::Store(crate::StoreError::from(std::io::Error::other(
            other.to_string(),
        ))),
    }
}

/// The insert every enqueue runs: all the rows of a group in one
/// statement, in order.
pub(super) fn insert_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.jobs (queue, kind, state, payload, max_attempts, run_at, created_at)
         SELECT q, k, 'available', p, m, r, c
           FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int4[], $5::int8[], $6::int8[])
                WITH ORDINALITY AS t(q, k, p, m, r, c, n)
          ORDER BY n
         RETURNING id"
    )
}

/// Runs the insert (`statement` is [`insert_sql`], prepared or not) on
/// `client`. Answers the ids in the order of `jobs`.
pub(super) async fn insert_with<C, S>(
    client: &C,
    statement: &S,
    jobs: &[&NewJob],
) -> Result<Vec<i64>>
where
    C: tokio_postgres::GenericClient,
    S: tokio_postgres::ToStatement + Sync + Send + ?Sized,
{
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue).collect();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind).collect();
    let payloads: Vec<&[u8]> = jobs.iter().map(|j| j.payload.as_slice()).collect();
    let max: Vec<i32> = jobs
        .iter()
        .map(|j| i32::try_from(j.max_attempts).unwrap_or(i32::MAX))
        .collect();
    let run_at: Vec<i64> = jobs.iter().map(|j| j.run_at).collect();
    let created: Vec<i64> = jobs.iter().map(|j| j.created_at).collect();
    let rows = client
        .query(
            statement,
            &[&queues, &kinds, &payloads, &max, &run_at, &created],
        )
        .await?;
    // Ids come from one sequence in insertion order; RETURNING's order is
    // not promised, so sort them back.
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Inserts the rows with one statement, which commits on its own
/// (autocommit: one round trip, no `BEGIN`/`COMMIT` of its own).
async fn insert(shared: &Shared, jobs: &[&NewJob]) -> Result<Vec<i64>> {
    let client = shared.client().await?;
    let stmt = client.prepare_cached(&insert_sql(&shared.schema)).await?;
    insert_with(&**client, &stmt, jobs).await
}
