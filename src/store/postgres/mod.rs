//! The PostgreSQL store: several hosts on one queue.
//!
//! The engine is the same as on SQLite; only this module knows the server.
//! Its calls run on a small tokio runtime of its own (two threads), where
//! the pool's connections live, so no actix arbiter ever drives a database
//! connection and stopping an arbiter never kills one. Each call spawns
//! there and the caller awaits the answer.
//!
//! - Enqueues are grouped into shared inserts, and other hosts are woken by
//!   one `NOTIFY` per burst, sent after the commit (`enqueuer.rs`).
//! - A dispatcher round is one transaction: marks, outcomes (one statement
//!   per kind of outcome), then claims with `FOR UPDATE SKIP LOCKED`, sent
//!   together with its `BEGIN` (`writes.rs`); four rounds may be in flight.
//! - Liveness is a session advisory lock on a dedicated connection, which
//!   also `LISTEN`s for other hosts' enqueues (`liveness.rs`); instances
//!   are listed in `owners` for recovery.
//! - TLS, when configured, for every connection (`tls.rs`).

mod controls;
mod cut_off;
mod enqueuer;
mod liveness;
mod options;
mod reads;
mod schema;
mod server_clock;
mod tls;
mod writes;

#[cfg(test)]
mod round_tests;

use std::sync::{Arc, Mutex};

use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};

use liveness::Liveness;
pub(crate) use liveness::Wakeup;
use options::target;
pub(crate) use options::{parse_config, valid_schema_name};
pub use options::{PostgresOptions, DEFAULT_PG_SCHEMA};

use super::{
    CancelAnswer, ControlRow, ControlWrite, DeadTarget, FinishAndClaim, FinishedAndClaimed, NewJob,
    QueueControls, Store, StoreFuture,
};
use crate::error::{Error, Result};
use crate::inspect::{Counts, JobInfo, JobStatus};
use crate::store_error::StoreError;

/// Finish-and-claim rounds a dispatcher keeps in flight on PostgreSQL,
/// each on its own connection: a round is a few round trips and a commit,
/// and the server runs them side by side (`SKIP LOCKED` keeps their claims
/// apart).
const ROUNDS_IN_FLIGHT: usize = 4;

/// What every task of the store shares.
pub(crate) struct Shared {
    pool: Pool,
    pub(crate) schema: String,
    owner: Arc<str>,
    retain_completed: bool,
    /// Translates between the engine's clock and the server's.
    time: Arc<server_clock::ServerClock>,
}

impl Shared {
    /// A pooled connection; an error (not a hang) if none comes within the
    /// connect timeout.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }
}

/// The PostgreSQL implementation of [`Store`].
pub(crate) struct PgStore {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    /// Shut down when the store is dropped (inspection still answers
    /// after `close`).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    enqueue: mpsc::UnboundedSender<enqueuer::Request>,
    liveness: Arc<Liveness>,
    /// The liveness task, awaited at close so that the lock is gone when
    /// close returns.
    liveness_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PgStore {
    /// Connects, migrates the schema and takes this owner's liveness lock.
    /// Every failure here is an error from `start()`.
    /// With `clock`, what is due follows the server's clock (see
    /// `server_clock.rs`); without, the engine's own.
    pub(crate) async fn open(
        options: PostgresOptions,
        retain_completed: bool,
        clock: Option<Arc<dyn crate::clock::Clock>>,
    ) -> Result<PgStore> {
        let config = parse_config(&options).map_err(|message| {
            Error::Config(vec![crate::ConfigProblem::InvalidPostgresUrl { message }])
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("errands-pg")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let time = Arc::new(server_clock::ServerClock::new(clock));
        let opened = handle.spawn(Self::connect(config, options, retain_completed, time));
        match opened.await {
            Ok(Ok((shared, liveness, liveness_task))) => {
                let enqueue = {
                    let _entered = handle.enter();
                    enqueuer::start(shared.clone())
                };
                Ok(PgStore {
                    shared,
                    handle,
                    runtime: Mutex::new(Some(runtime)),
                    enqueue,
                    liveness,
                    liveness_task: Mutex::new(Some(liveness_task)),
                })
            }
            Ok(Err(e)) => {
                runtime.shutdown_background();
                Err(e)
            }
            Err(_) => {
                runtime.shutdown_background();
                Err(Error::Closed)
            }
        }
    }

    async fn connect(
        config: tokio_postgres::Config,
        options: PostgresOptions,
        retain_completed: bool,
        time: Arc<server_clock::ServerClock>,
    ) -> Result<(Arc<Shared>, Arc<Liveness>, tokio::task::JoinHandle<()>)> {
        let target = target(&config);
        let refused = |e: StoreError| Error::Connect {
            target: target.clone(),
            source: e,
        };
        let tls = tls::Tls::new(options.tls.as_ref());
        // Connect once directly first: a refused connection, a wrong
        // password or a missing database is the server's own message.
        let (mut client, _) = tls.connect(&config).await.map_err(|e| match e {
            Error::Store(e) => refused(e),
            other => other,
        })?;
        schema::migrate(&mut client, &options.schema).await?;
        time.measure(&client).await?;
        drop(client);

        let manager = tls.manager(
            config.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(options.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|e| refused(std::io::Error::other(e.to_string()).into()))?;
        let owner: Arc<str> = crate::store::new_owner_id().into();
        let (liveness, task) = liveness::start(
            config,
            tls,
            options.schema.clone(),
            owner.clone(),
            time.clone(),
        )
        .await
        .map_err(|e| match e {
            Error::Store(e) => refused(e),
            other => other,
        })?;
        let shared = Arc::new(Shared {
            pool,
            schema: options.schema,
            owner,
            retain_completed,
            time,
        });
        Ok((shared, liveness, task))
    }

    /// Tells the store how to wake the engine when another host enqueues
    /// (or the liveness connection comes back). Set once, after the actors
    /// start.
    pub(crate) fn on_wakeup(&self, wake: impl Fn(Wakeup<'_>) + Send + Sync + 'static) {
        let _ = self.liveness.wake.set(Box::new(wake));
    }

    /// Runs `work` on the store's runtime and answers its result.
    fn spawn<T, F>(&self, work: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let task = self.handle.spawn(work);
        Box::pin(async move { task.await.map_err(|_| Error::Closed)? })
    }

    /// Runs `work` in one transaction on a pooled connection, on the
    /// store's runtime.
    fn in_transaction<T, W>(&self, work: W) -> StoreFuture<T>
    where
        T: Send + 'static,
        W: for<'t> FnOnce(
                &'t deadpool_postgres::Transaction<'t>,
                &'t Shared,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<T>> + Send + 't>,
            > + Send
            + 'static,
    {
        let shared = self.shared.clone();
        self.spawn(async move {
            let mut client = shared.client().await?;
            let tx = client.transaction().await?;
            let value = work(&tx, &shared).await?;
            tx.commit().await?;
            Ok(value)
        })
    }

    /// Inserts jobs inside the application's own transaction
    /// (`Errands::enqueue_pg_tx`), with the `NOTIFY` that wakes every
    /// instance (this one too) once that transaction commits; a rollback
    /// takes both back.
    pub(crate) async fn insert_in_tx(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        jobs: &[NewJob],
    ) -> Result<Vec<i64>> {
        let s = &self.shared.schema;
        let time = &self.shared.time;
        let jobs: Vec<NewJob> = jobs
            .iter()
            .map(|job| NewJob {
                run_at: time.to_server(job.run_at),
                created_at: time.to_server(job.created_at),
                ..job.clone()
            })
            .collect();
        let jobs: Vec<&NewJob> = jobs.iter().collect();
        let ids = enqueuer::insert_with(tx, enqueuer::insert_sql(s).as_str(), &jobs).await?;
        let mut earliest: std::collections::BTreeMap<&str, i64> = Default::default();
        for job in &jobs {
            let at = earliest.entry(job.queue).or_insert(job.run_at);
            *at = (*at).min(job.run_at);
        }
        let payload: Vec<String> = earliest
            .iter()
            .map(|(queue, at)| format!("{queue} {at}"))
            .collect();
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&liveness::channel(s), &payload.join("\n")],
        )
        .await?;
        Ok(ids)
    }

    /// Runs the application's `work` and saves a running job's progress in
    /// one PostgreSQL transaction (`ctx.pg_transaction`), refused unless
    /// this process still owns that attempt. `work` runs on the caller's
    /// task; the connection comes from errands' pool.
    pub(crate) async fn transaction<T, F>(
        &self,
        id: i64,
        attempt: u32,
        checkpoint: Vec<u8>,
        now: i64,
        work: F,
    ) -> Result<T>
    where
        F: AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, tokio_postgres::Error>,
    {
        let shared = self.shared.clone();
        let mut client = self
            .handle
            .spawn(async move { shared.client().await })
            .await
            .map_err(|_| Error::Closed)??;
        let tx = client.transaction().await?;
        let value = work(&tx).await?;
        let s = &self.shared.schema;
        let now = self.shared.time.to_server(now);
        writes::save_checkpoint(&tx, s, &self.shared.owner, id, attempt, &checkpoint, now).await?;
        tx.commit().await?;
        Ok(value)
    }
}

impl Drop for PgStore {
    /// A store dropped without `close` (the handle dropped during a panic,
    /// say) must not drop its runtime in place: inside an async context
    /// that panics. Its tasks end in the background; the liveness
    /// connection closes with them, and others recover this owner's jobs.
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

impl Store for PgStore {
    fn rounds_in_flight(&self) -> usize {
        ROUNDS_IN_FLIGHT
    }

    fn enqueue(&self, jobs: Vec<NewJob>) -> StoreFuture<Vec<i64>> {
        let time = &self.shared.time;
        let jobs = jobs
            .into_iter()
            .map(|job| NewJob {
                run_at: time.to_server(job.run_at),
                created_at: time.to_server(job.created_at),
                ..job
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        let sent = self.enqueue.send(enqueuer::Request { jobs, reply });
        Box::pin(async move {
            sent.map_err(|_| Error::Closed)?;
            answer.await.map_err(|_| Error::Closed)?
        })
    }

    /// One round in one transaction, its `BEGIN` sent with its statements.
    /// A round whose `COMMIT` is cut off puts back what it may have
    /// claimed (`cut_off.rs`).
    fn finish_and_claim(&self, mut batch: FinishAndClaim) -> StoreFuture<FinishedAndClaimed> {
        let time = &self.shared.time;
        batch.now = time.to_server(batch.now);
        for finished in &mut batch.finished {
            match &mut finished.outcome {
                crate::store::Outcome::Retry { run_at, .. }
                | crate::store::Outcome::Snooze { run_at } => *run_at = time.to_server(*run_at),
                _ => {}
            }
        }
        let claim = self.liveness.is_held();
        let shared = self.shared.clone();
        let token = fastrand::i64(..);
        self.spawn(async move {
            let client = shared.client().await?;
            let s = &shared.schema;
            let claims = writes::Claiming { token, claim };
            // `BEGIN` goes in the same round trip as the statements
            // (tokio-postgres sends requests polled together in order).
            let round = writes::finish_and_claim(
                &client,
                s,
                &shared.owner,
                shared.retain_completed,
                &batch,
                claims,
            );
            let (begun, answer) = tokio::join!(client.batch_execute("BEGIN"), round);
            let answer = match begun.map_err(Error::from).and(answer) {
                Ok(answer) => answer,
                Err(e) => {
                    // The transaction is aborted or the connection gone:
                    // never hand it back to the pool.
                    let _ = deadpool_postgres::Object::take(client);
                    return Err(e);
                }
            };
            match client.batch_execute("COMMIT").await {
                Ok(()) => Ok(answer),
                Err(e) => {
                    let _ = deadpool_postgres::Object::take(client);
                    if !answer.claimed.is_empty() {
                        tokio::spawn(cut_off::release_round(shared.clone(), token));
                    }
                    Err(e.into())
                }
            }
        })
    }

    /// Also measures the distance to the server's clock again.
    fn recover_orphans(&self, now: i64) -> StoreFuture<usize> {
        self.in_transaction(move |tx, shared| {
            Box::pin(async move {
                shared.time.measure(&**tx).await?;
                let now = shared.time.to_server(now);
                writes::recover_orphans(tx, &shared.schema, &shared.owner, now).await
            })
        })
    }

    fn next_run_at(&self, kinds: Vec<(String, String)>, after: i64) -> StoreFuture<Option<i64>> {
        let shared = self.shared.clone();
        self.spawn(async move {
            let client = shared.client().await?;
            let after = shared.time.to_server(after);
            let next = reads::next_run_at(&**client, &shared.schema, &kinds, after).await?;
            Ok(next.map(|at| shared.time.to_local(at)))
        })
    }

    fn counts(&self, now: i64) -> StoreFuture<Vec<Counts>> {
        let shared = self.shared.clone();
        self.spawn(async move {
            let client = shared.client().await?;
            reads::counts(&**client, &shared.schema, shared.time.to_server(now)).await
        })
    }

    fn job(&self, id: i64, now: i64) -> StoreFuture<Option<JobInfo>> {
        let shared = self.shared.clone();
        self.spawn(async move {
            let client = shared.client().await?;
            let now = shared.time.to_server(now);
            let info = reads::job(&**client, &shared.schema, id, now).await?;
            Ok(info.map(|info| shared.time.localize(info)))
        })
    }

    fn status(&self, id: i64, now: i64) -> StoreFuture<JobStatus> {
        let shared = self.shared.clone();
        self.spawn(async move {
            let client = shared.client().await?;
            let now = shared.time.to_server(now);
            Ok(
                match reads::status(&**client, &shared.schema, id, now).await? {
                    JobStatus::Stored(info) => JobStatus::Stored(shared.time.localize(info)),
                    other => other,
                },
            )
        })
    }

    fn dead_jobs(&self, queue: Option<String>, limit: usize) -> StoreFuture<Vec<JobInfo>> {
        let shared = self.shared.clone();
        self.spawn(async move {
            let client = shared.client().await?;
            let dead = reads::dead_jobs(&**client, &shared.schema, queue.as_deref(), limit).await?;
            Ok(dead
                .into_iter()
                .map(|info| shared.time.localize(info))
                .collect())
        })
    }

    fn requeue(&self, target: DeadTarget, now: i64) -> StoreFuture<u64> {
        self.in_transaction(move |tx, shared| {
            Box::pin(async move {
                let now = shared.time.to_server(now);
                writes::requeue(tx, &shared.schema, &target, now).await
            })
        })
    }

    fn purge(&self, target: DeadTarget) -> StoreFuture<u64> {
        let now = crate::clock::system_time_to_ms(std::time::SystemTime::now());
        self.in_transaction(move |tx, shared| {
            Box::pin(async move { writes::purge(tx, &shared.schema, &target, now).await })
        })
    }

    fn cancel(&self, id: i64, reason: String, now: i64) -> StoreFuture<CancelAnswer> {
        controls::cancel(self, id, reason, now)
    }

    fn write_control(&self, change: ControlWrite) -> StoreFuture<()> {
        controls::write(self, change)
    }

    fn controls(&self, queue: Option<String>) -> StoreFuture<Vec<ControlRow>> {
        controls::rows(self, queue)
    }

    fn queue_controls(&self, queue: &'static str) -> StoreFuture<QueueControls> {
        controls::for_queue(self, queue)
    }

    fn settle_cancels(&self, now: i64) -> StoreFuture<u64> {
        controls::settle_cancels(self, now)
    }

    fn prune_dead(&self, before: i64, batch: usize, now: i64) -> StoreFuture<u64> {
        controls::prune_dead(self, before, batch, now)
    }

    fn prune_completed(&self, before: i64) -> StoreFuture<u64> {
        self.in_transaction(move |tx, shared| {
            Box::pin(writes::prune_completed(
                tx,
                &shared.schema,
                shared.time.to_server(before),
            ))
        })
    }

    fn save_checkpoint(&self, id: i64, attempt: u32, checkpoint: Vec<u8>) -> StoreFuture<()> {
        let now = crate::clock::system_time_to_ms(std::time::SystemTime::now());
        self.in_transaction(move |tx, shared| {
            Box::pin(async move {
                writes::save_checkpoint(
                    tx,
                    &shared.schema,
                    &shared.owner,
                    id,
                    attempt,
                    &checkpoint,
                    now,
                )
                .await
            })
        })
    }

    /// Releases this owner's liveness lock (others may now recover what it
    /// still holds). The pool and its runtime stay until the store is
    /// dropped, so that inspection (`job`, `counts`) still answers after
    /// shutdown, as on SQLite; nothing writes any more (the engine refuses).
    fn close(&self) -> StoreFuture<()> {
        // Off the owners list if this instance holds nothing (otherwise the
        // next recovery elsewhere finds it dead and puts its jobs back).
        let shared = self.shared.clone();
        let unlisted = self.spawn(async move {
            let client = shared.client().await?;
            let s = &shared.schema;
            client
                .execute(
                    &format!(
                        "DELETE FROM {s}.owners WHERE owner = $1 AND NOT EXISTS
                           (SELECT 1 FROM {s}.jobs WHERE owner = $1 AND state = 'running')"
                    ),
                    &[&&*shared.owner],
                )
                .await?;
            Ok(())
        });
        let liveness = self.liveness.clone();
        let task = self
            .liveness_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Box::pin(async move {
            if let Err(e) = unlisted.await {
                log::warn!("errands: could not remove this instance from the owners list: {e}");
            }
            liveness.stop();
            // The liveness task returns at once; its connection, and this
            // owner's lock, close with it.
            if let Some(task) = task {
                let _ = task.await;
            }
            Ok(())
        })
    }
}
