//! The raw-SQLite baseline: the same durable work errands does (insert;
//! claim with `UPDATE … RETURNING`; delete), written directly with rusqlite
//! on the same pragmas and connection settings, the same table and indexes,
//! the same statements and values of the same shape (an owner id as long as
//! errands' own, real timestamps), with none of the engine around it.
//! Every errands figure is reported as a ratio to this, measured in the
//! same run, because the machines are noisy.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use super::Settings;

const SCHEMA: &str = "
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
        payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
        run_at INTEGER NOT NULL, created_at INTEGER NOT NULL, started_at INTEGER,
        finished_at INTEGER, owner TEXT, last_error TEXT, checkpoint BLOB);
    CREATE INDEX jobs_ready ON jobs (queue, kind, run_at) WHERE state = 'available';
    CREATE INDEX jobs_running ON jobs (owner) WHERE state = 'running';
    CREATE INDEX jobs_dead ON jobs (queue, finished_at) WHERE state = 'dead';
    CREATE INDEX jobs_completed ON jobs (finished_at) WHERE state = 'completed';";

fn open(path: &Path, settings: &Settings) -> Connection {
    let _ = std::fs::remove_file(path);
    let conn = Connection::open(path).unwrap();
    // As errands' writer: plan each statement once (see the store's
    // `configure_writer`); without it SQLite re-prepares the claim on
    // every run, which slows both sides alike.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};",
        settings.synchronous_pragma()
    ))
    .unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn
}

/// An owner id shaped like errands' own (pid, start time, random suffix).
const OWNER: &str = "104729-1795000000000-9e3779b9";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn insert(conn: &Connection, payload: &[u8]) {
    conn.prepare_cached(
        "INSERT INTO jobs (queue, kind, state, payload, max_attempts, run_at, created_at)
         VALUES ('default', 'noop', 'available', ?1, 25, ?2, ?2)",
    )
    .unwrap()
    .execute(params![payload, now_ms()])
    .unwrap();
}

/// Inserts `n` rows, one commit per row: what a queue without group commit
/// does for one durable enqueue per call. Returns rows per second.
pub fn enqueue_one_per_commit(dir: &Path, settings: &Settings, n: usize) -> f64 {
    let conn = open(&dir.join("baseline-enqueue.db"), settings);
    let payload = [1u8, 0];
    let start = Instant::now();
    for _ in 0..n {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        insert(&conn, &payload);
        conn.execute_batch("COMMIT").unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Inserts `n` rows in transactions of `batch`. Returns rows per second.
pub fn enqueue_batched(
    dir: &Path,
    settings: &Settings,
    n: usize,
    batch: usize,
) -> (Connection, f64) {
    let conn = open(&dir.join("baseline-drain.db"), settings);
    let payload = [1u8, 0];
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..batch.min(n - done) {
            insert(&conn, &payload);
        }
        conn.execute_batch("COMMIT").unwrap();
        done += batch;
    }
    (conn, n as f64 / start.elapsed().as_secs_f64())
}

/// Drains every row: each transaction deletes the previous batch's claimed
/// rows and claims the next `batch`, the best a hand-written loop can do.
/// Returns rows per second.
pub fn drain(conn: &Connection, batch: usize) -> f64 {
    let start = Instant::now();
    let mut claimed: Vec<i64> = Vec::with_capacity(batch);
    let mut total = 0usize;
    loop {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        {
            let mut delete = conn
                .prepare_cached(
                    "DELETE FROM jobs WHERE id = ?1 AND owner = ?2 AND state = 'running'",
                )
                .unwrap();
            for id in claimed.drain(..) {
                delete.execute(params![id, OWNER]).unwrap();
            }
            let mut claim = conn
                .prepare_cached(
                    "UPDATE jobs SET state = 'running', owner = ?3, attempts = attempts + 1, started_at = ?2
                      WHERE id IN (SELECT id FROM jobs WHERE queue = ?4 AND kind = ?5
                                     AND state = 'available' AND run_at <= ?2 ORDER BY run_at, id LIMIT ?1)
                      RETURNING id, payload, attempts, max_attempts, checkpoint",
                )
                .unwrap();
            let rows = claim
                .query_map(
                    params![batch as i64, now_ms(), OWNER, "default", "noop"],
                    |r| {
                        let _payload: Vec<u8> = r.get(1)?;
                        r.get::<_, i64>(0)
                    },
                )
                .unwrap();
            for id in rows {
                claimed.push(id.unwrap());
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        if claimed.is_empty() {
            break;
        }
        total += claimed.len();
    }
    total as f64 / start.elapsed().as_secs_f64()
}
