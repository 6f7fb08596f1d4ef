//! This instance's liveness on PostgreSQL, and wake-ups from other hosts.
//!
//! One dedicated connection per instance holds a session advisory lock on
//! this owner's key for as long as the instance lives. When the process
//! dies, the server drops the connection and the lock with it, so any other
//! instance's recovery pass finds the owner dead at once (no lease to wait
//! out), exactly like the file lock on SQLite.
//!
//! The same connection `LISTEN`s on the schema's channel: enqueues are
//! announced there (by the enqueuer after its commits, or at the commit of
//! an application's transaction), naming the queues filled and when their
//! earliest job is due, so a job enqueued on one host starts on another
//! within a millisecond or so. Once it holds its lock, the connection also
//! lists this owner in `owners`, where other hosts' recovery looks.
//!
//! If the connection drops while the process lives (a network blip, a
//! server restart), this owner is no longer provably alive: the instance
//! stops claiming at once ([`Liveness::is_held`]), reconnects, takes the
//! same lock again, and wakes every dispatcher (notifications sent while it
//! was away are lost). Jobs that another host recovered meanwhile are no
//! longer this owner's, so their late outcomes are refused by the owner
//! check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::tls::Tls;

use crate::error::Result;

/// What a notification or a reconnect asks the engine to do.
pub(crate) enum Wakeup<'a> {
    /// Jobs may be ready in this queue, the earliest of them due at the
    /// given time (ms).
    Queue(&'a str, i64),
    /// Anything may have changed (notifications may have been missed).
    All,
}

/// The engine's way to act on a [`Wakeup`]; set once the actors exist.
pub(crate) type WakeFn = Box<dyn Fn(Wakeup<'_>) + Send + Sync>;

/// This owner's advisory lock key.
pub(crate) fn owner_key(owner: &str) -> i64 {
    stable_key(&["errands owner", owner])
}

/// An advisory lock key: a 64-bit FNV-1a hash of the parts, the same on
/// every host and build (std's hasher is neither), each part ended by a
/// zero byte so that `("ab", "c")` and `("a", "bc")` differ.
pub(crate) fn stable_key(parts: &[&str]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.as_bytes().iter().chain(&[0]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash as i64
}

/// The notification channel of a schema.
pub(crate) fn channel(schema: &str) -> String {
    format!("{schema}_jobs")
}

/// The liveness connection's state, shared with the store.
pub(crate) struct Liveness {
    held: AtomicBool,
    stopped: AtomicBool,
    stop_signal: tokio::sync::Notify,
    pub(crate) wake: OnceLock<WakeFn>,
}

impl Liveness {
    /// Whether this owner's lock is held right now: claim only while it is.
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    fn wake(&self, wakeup: Wakeup<'_>) {
        if let Some(wake) = self.wake.get() {
            wake(wakeup);
        }
    }

    /// Stops the liveness task: its connection closes and the lock goes
    /// with it (close, at the end of shutdown).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.held.store(false, Ordering::Release);
        self.stop_signal.notify_one();
    }
}

/// Connects, takes the owner's lock, `LISTEN`s, and keeps doing so until
/// stopped. Answers once the first lock is held (or the first connect
/// failed, which fails `start()`).
pub(crate) async fn start(
    config: tokio_postgres::Config,
    tls: Tls,
    schema: String,
    owner: Arc<str>,
    time: Arc<super::server_clock::ServerClock>,
) -> Result<(Arc<Liveness>, tokio::task::JoinHandle<()>)> {
    let liveness = Arc::new(Liveness {
        held: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
        stop_signal: tokio::sync::Notify::new(),
        wake: OnceLock::new(),
    });
    let session = Session {
        config,
        tls,
        schema,
        owner,
        time,
    };
    let first = session.connect().await?;
    liveness.held.store(true, Ordering::Release);
    let task = tokio::spawn(keep(first, session, liveness.clone()));
    Ok((liveness, task))
}

/// How to open the liveness connection again.
struct Session {
    config: tokio_postgres::Config,
    tls: Tls,
    schema: String,
    owner: Arc<str>,
    /// Notifications name server times; the engine wants local ones.
    time: Arc<super::server_clock::ServerClock>,
}

/// An open liveness connection: dropping the client closes it (and frees
/// the lock).
type Connected = (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
);

impl Session {
    async fn connect(&self) -> Result<Connected> {
        let (client, notifications) = self.tls.connect(&self.config).await?;
        let (schema, owner) = (&self.schema, &*self.owner);
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&owner_key(owner)])
            .await?
            .get(0);
        // After a reconnect, the server may not yet have noticed that the
        // old session is gone, and still holds its lock: not alive yet.
        if !taken {
            return Err(crate::Error::Store(crate::StoreError::from(
                std::io::Error::other(format!(
                    "owner {owner}'s liveness lock is still held by its previous session"
                )),
            )));
        }
        // Listed once alive, so that other hosts' recovery looks at this
        // owner (again, after a reconnect: a host that found it dead
        // meanwhile put its jobs back and removed it).
        let now = crate::clock::system_time_to_ms(std::time::SystemTime::now());
        client
            .execute(
                &format!(
                    "INSERT INTO {schema}.owners (owner, started_at) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING"
                ),
                &[&owner, &now],
            )
            .await?;
        client
            .batch_execute(&format!("LISTEN {}", channel(schema)))
            .await?;
        Ok((client, notifications))
    }
}

async fn keep(first: Connected, session: Session, liveness: Arc<Liveness>) {
    let mut current = Some(first);
    let mut delay = Duration::from_millis(50);
    loop {
        if liveness.stopped.load(Ordering::Acquire) {
            return;
        }
        let (client, mut notifications) = match current.take() {
            Some(c) => c,
            None => match session.connect().await {
                Ok(c) => {
                    log::warn!("errands: PostgreSQL liveness connection is back");
                    liveness.held.store(true, Ordering::Release);
                    liveness.wake(Wakeup::All);
                    delay = Duration::from_millis(50);
                    c
                }
                Err(e) => {
                    log::warn!("errands: PostgreSQL liveness connection failed, retrying: {e}");
                    tokio::select! {
                        _ = liveness.stop_signal.notified() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        loop {
            if liveness.stopped.load(Ordering::Acquire) {
                return;
            }
            let next = tokio::select! {
                _ = liveness.stop_signal.notified() => return,
                next = notifications.recv() => next,
            };
            let Some(n) = next else {
                log::error!("errands: PostgreSQL liveness connection lost");
                break;
            };
            for line in n.payload().lines() {
                let mut parts = line.rsplitn(2, ' ');
                let due = parts.next().and_then(|t| t.parse::<i64>().ok());
                if let (Some(due), Some(queue)) = (due, parts.next()) {
                    liveness.wake(Wakeup::Queue(queue, session.time.to_local(due)));
                }
            }
        }
        liveness.held.store(false, Ordering::Release);
        drop(client);
    }
}
