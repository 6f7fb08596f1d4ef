//! The SQLite schema and its forward-only migrations.
//!
//! The version lives in `PRAGMA user_version`. Each migration runs in its own
//! `IMMEDIATE` transaction together with the version bump, so a crash during
//! an upgrade leaves the file at the old version, never half-migrated. A file
//! whose version is newer than [`SCHEMA_VERSION`] was written by a newer
//! errands and is refused.
//!
//! One table, `errands_jobs`, holds every job. Its ids are `AUTOINCREMENT`:
//! finished jobs are deleted, and without it SQLite would hand a deleted
//! job's id to the next job, so `job(id)` could answer about a stranger. Completed jobs are deleted
//! when they finish (or kept for a retention period and pruned), so the
//! table the dispatchers scan holds only live work. The claim query reads
//! the partial index `errands_jobs_ready`, which holds only waiting jobs,
//! ordered the way they are claimed.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// The newest schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 4;

/// Migration `n` (1-based) takes the schema from version `n-1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: the jobs table and its indexes.
    "CREATE TABLE errands_jobs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        queue        TEXT    NOT NULL,
        kind         TEXT    NOT NULL,
        state        TEXT    NOT NULL CHECK (state IN ('available', 'running', 'dead', 'completed')),
        payload      BLOB    NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        run_at       INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER,
        owner        TEXT,
        last_error   TEXT,
        checkpoint   BLOB
    );
    CREATE INDEX errands_jobs_ready ON errands_jobs (queue, kind, run_at) WHERE state = 'available';
    CREATE INDEX errands_jobs_running ON errands_jobs (owner) WHERE state = 'running';
    CREATE INDEX errands_jobs_dead ON errands_jobs (queue, finished_at) WHERE state = 'dead';
    CREATE INDEX errands_jobs_completed ON errands_jobs (finished_at) WHERE state = 'completed';",
    // 2: job counts by (queue, kind, state), kept by every write request in
    // its own transaction (see `counters.rs`), so `counts()` reads a row per
    // group instead of scanning every job (670 ms with a million jobs kept).
    "CREATE TABLE errands_counts (
        queue TEXT    NOT NULL,
        kind  TEXT    NOT NULL,
        state TEXT    NOT NULL,
        n     INTEGER NOT NULL,
        PRIMARY KEY (queue, kind, state)
    ) WITHOUT ROWID;
    INSERT INTO errands_counts (queue, kind, state, n)
        SELECT queue, kind, state, count(*) FROM errands_jobs GROUP BY 1, 2, 3;
    -- Jobs deleted by an operator (cancelled, purged), so that a job whose
    -- row is gone without a tombstone is known to have completed.
    CREATE TABLE errands_tombstones (
        id    INTEGER PRIMARY KEY,
        state TEXT    NOT NULL CHECK (state IN ('cancelled', 'purged')),
        at    INTEGER NOT NULL
    );",
    // 3: attempts given back at recovery. A job claimed ahead (prefetch)
    // whose start was never recorded had its attempt counted at claim; if
    // its process died, recovery gives that attempt back once (`refunded`
    // = 1) and keeps the attempt number, so numbers never repeat. The
    // job's budget is `max_attempts + refunded`. A refunded job is always
    // marked started when claimed, so it is never given back twice: a
    // handler that kills its process still runs out of attempts.
    "ALTER TABLE errands_jobs ADD COLUMN refunded INTEGER NOT NULL DEFAULT 0;",
    // 4: live control. A `cancelled` state (kept, with its reason, until
    // pruned), which needs the table rebuilt: SQLite cannot change a CHECK
    // constraint in place. The AUTOINCREMENT sequence is carried over, so
    // no id of a deleted (completed) job is ever handed out again. Then the
    // stored knobs (`errands_controls`: a queue's row has an empty kind)
    // and the cancel requests for running jobs, which the instance holding
    // the job reads at its next poll.
    "CREATE TABLE errands_jobs_v4 (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        queue        TEXT    NOT NULL,
        kind         TEXT    NOT NULL,
        state        TEXT    NOT NULL
                     CHECK (state IN ('available', 'running', 'dead', 'completed', 'cancelled')),
        payload      BLOB    NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        run_at       INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER,
        owner        TEXT,
        last_error   TEXT,
        checkpoint   BLOB,
        refunded     INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO errands_jobs_v4
        (id, queue, kind, state, payload, attempts, max_attempts, run_at, created_at,
         started_at, finished_at, owner, last_error, checkpoint, refunded)
        SELECT id, queue, kind, state, payload, attempts, max_attempts, run_at, created_at,
               started_at, finished_at, owner, last_error, checkpoint, refunded
          FROM errands_jobs;
    DELETE FROM sqlite_sequence WHERE name = 'errands_jobs_v4';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'errands_jobs_v4', seq FROM sqlite_sequence WHERE name = 'errands_jobs';
    DROP TABLE errands_jobs;
    ALTER TABLE errands_jobs_v4 RENAME TO errands_jobs;
    CREATE INDEX errands_jobs_ready ON errands_jobs (queue, kind, run_at) WHERE state = 'available';
    CREATE INDEX errands_jobs_running ON errands_jobs (owner) WHERE state = 'running';
    CREATE INDEX errands_jobs_dead ON errands_jobs (queue, finished_at) WHERE state = 'dead';
    CREATE INDEX errands_jobs_completed ON errands_jobs (finished_at) WHERE state = 'completed';
    CREATE INDEX errands_jobs_cancelled ON errands_jobs (finished_at) WHERE state = 'cancelled';
    CREATE TABLE errands_controls (
        queue           TEXT    NOT NULL,
        kind            TEXT    NOT NULL,
        concurrency     INTEGER,
        paused_until    INTEGER,
        throttled_until INTEGER,
        PRIMARY KEY (queue, kind)
    ) WITHOUT ROWID;
    CREATE TABLE errands_cancels (
        id     INTEGER PRIMARY KEY,
        reason TEXT    NOT NULL,
        at     INTEGER NOT NULL
    );",
];

/// Brings the database up to [`SCHEMA_VERSION`], or refuses a newer one.
pub(crate) fn migrate(conn: &Connection) -> Result<()> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= found {
            continue;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        // Another process may have migrated while we waited for the lock.
        let current = user_version(conn)?;
        if current >= version {
            conn.execute_batch("COMMIT")?;
            continue;
        }
        let applied = conn
            .execute_batch(sql)
            .and_then(|_| conn.execute_batch(&format!("PRAGMA user_version = {version}")));
        match applied {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
        log::info!("errands: migrated database schema to version {version}");
    }
    Ok(())
}

fn user_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written by the previous version keeps its jobs and gains the
    /// new column with its default.
    /// The rebuild of version 4 keeps every job and the id sequence: the
    /// next id is past every id ever handed out, not just past the rows
    /// still there.
    #[test]
    fn a_version_3_file_keeps_its_jobs_and_its_id_sequence() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 3;
             INSERT INTO errands_jobs (queue, kind, state, payload, max_attempts, run_at, created_at)
             VALUES ('q', 'k', 'dead', x'00', 3, 0, 0), ('q', 'k', 'available', x'00', 3, 0, 0),
                    ('q', 'k', 'available', x'00', 3, 0, 0);
             DELETE FROM errands_jobs WHERE id = 3;",
        )
        .unwrap();
        migrate(&conn).unwrap();
        let states: Vec<String> = conn
            .prepare("SELECT state FROM errands_jobs ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(states, ["dead", "available"]);
        conn.execute(
            "INSERT INTO errands_jobs (queue, kind, state, payload, max_attempts, run_at, created_at)
             VALUES ('q', 'k', 'cancelled', x'00', 3, 0, 0)",
            [],
        )
        .unwrap();
        assert_eq!(
            conn.last_insert_rowid(),
            4,
            "id 3 was handed out once already"
        );
    }

    #[test]
    fn a_version_2_file_migrates_with_its_jobs() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 2;
             INSERT INTO errands_jobs (queue, kind, state, payload, max_attempts, run_at, created_at)
             VALUES ('q', 'k', 'available', x'00', 3, 0, 0);",
        )
        .unwrap();
        migrate(&conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let (n, refunded): (i64, i64) = conn
            .query_row(
                "SELECT count(*), sum(refunded) FROM errands_jobs",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((n, refunded), (1, 0));
    }
}
