//! The SQL of live control on SQLite: the stored knobs
//! (`errands_controls`), cancelling (at once for a waiting job, by a stored
//! request for a running one), and the upkeep that goes with them
//! (requests whose job stopped running, retention of dead and cancelled
//! jobs).
//!
//! The knobs are read by every dispatcher at each poll, so a change made by
//! one process reaches the others within their poll interval. Reads of
//! this table never sit on the claim path: a dispatcher keeps what it read
//! in its own counters.

use rusqlite::{params, Connection, OptionalExtension};

use super::counters::Deltas;
use super::writes::{forget, groups, groups_and_ids, refusal};
use crate::error::Result;
use crate::store::{CancelAnswer, ControlRow, ControlWrite, QueueControls};

/// Stores one knob.
pub(super) fn write(conn: &Connection, change: &ControlWrite) -> Result<()> {
    let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    match change {
        ControlWrite::Concurrency { queue, kind, limit } => conn
            .prepare_cached(
                "INSERT INTO errands_controls (queue, kind, concurrency) VALUES (?1, ?2, ?3)
                 ON CONFLICT (queue, kind) DO UPDATE SET concurrency = excluded.concurrency",
            )?
            .execute(params![queue, kind, limit.map(as_i64)])?,
        ControlWrite::Pause { queue, kind, until } => conn
            .prepare_cached(
                "INSERT INTO errands_controls (queue, kind, paused_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (queue, kind) DO UPDATE SET paused_until = excluded.paused_until",
            )?
            .execute(params![queue, kind.as_deref().unwrap_or(""), until])?,
        // A throttle never shortens a later one already stored.
        ControlWrite::Throttle { queue, kind, until } => conn
            .prepare_cached(
                "INSERT INTO errands_controls (queue, kind, throttled_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (queue, kind) DO UPDATE SET throttled_until =
                     max(coalesce(throttled_until, excluded.throttled_until), excluded.throttled_until)",
            )?
            .execute(params![queue, kind, until])?,
    };
    Ok(())
}

/// Every stored knob, of one queue or of all.
pub(super) fn rows(conn: &Connection, queue: Option<&str>) -> Result<Vec<ControlRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT queue, kind, concurrency, paused_until, throttled_until FROM errands_controls
          WHERE ?1 IS NULL OR queue = ?1 ORDER BY queue, kind",
    )?;
    let rows = stmt.query_map(params![queue], |row| {
        Ok(ControlRow {
            queue: row.get(0)?,
            kind: row.get(1)?,
            concurrency: row
                .get::<_, Option<i64>>(2)?
                .map(|n| usize::try_from(n).unwrap_or(0)),
            paused_until: row.get(3)?,
            throttled_until: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A dispatcher's poll: its queue's knobs and the cancel requests for the
/// jobs `owner` holds in it.
pub(super) fn for_queue(conn: &Connection, queue: &str, owner: &str) -> Result<QueueControls> {
    let rows = rows(conn, Some(queue))?;
    // Driven from the requests (almost always none), each job found by
    // its rowid: `CROSS JOIN` keeps SQLite from starting at the jobs.
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.reason FROM errands_cancels c CROSS JOIN errands_jobs j ON j.id = c.id
          WHERE j.queue = ?1 AND j.owner = ?2 AND j.state = 'running'",
    )?;
    let cancels = stmt
        .query_map(params![queue, owner], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(QueueControls { rows, cancels })
}

/// Cancels a job: a waiting one at once (kept as `cancelled` with the
/// reason), a running or claimed one by a request its instance reads.
pub(super) fn cancel(conn: &Connection, id: i64, reason: &str, now: i64) -> Result<CancelAnswer> {
    let moved = groups(
        conn,
        "UPDATE errands_jobs SET state = 'cancelled', finished_at = ?2, last_error = ?3
          WHERE id = ?1 AND state = 'available' RETURNING queue, kind",
        params![id, now, reason],
    )?;
    if let Some((queue, kind)) = moved.first() {
        let mut deltas = Deltas::default();
        deltas.moved(queue, kind, "available", "cancelled", 1);
        deltas.apply(conn)?;
        return Ok(CancelAnswer::Cancelled);
    }
    let running: Option<String> = conn
        .prepare_cached("SELECT queue FROM errands_jobs WHERE id = ?1 AND state = 'running'")?
        .query_row(params![id], |row| row.get(0))
        .optional()?;
    let Some(queue) = running else {
        return Err(refusal(conn, id, "cancel", now));
    };
    conn.prepare_cached(
        "INSERT INTO errands_cancels (id, reason, at) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![id, reason, now])?;
    Ok(CancelAnswer::Requested { queue })
}

/// Settles cancel requests whose job is no longer running: one that went
/// back to waiting (it failed and will retry, or was released) is
/// cancelled now; one that finished drops its request. Answers how many
/// jobs were cancelled.
pub(super) fn settle_cancels(conn: &Connection, now: i64) -> Result<u64> {
    let any: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM errands_cancels)")?
        .query_row([], |row| row.get(0))?;
    if !any {
        return Ok(0);
    }
    let moved = groups(
        conn,
        "UPDATE errands_jobs SET state = 'cancelled', finished_at = ?1,
                last_error = (SELECT reason FROM errands_cancels c WHERE c.id = errands_jobs.id)
          WHERE state = 'available' AND id IN (SELECT id FROM errands_cancels)
          RETURNING queue, kind",
        params![now],
    )?;
    let mut deltas = Deltas::default();
    for (queue, kind) in &moved {
        deltas.moved(queue, kind, "available", "cancelled", 1);
    }
    deltas.apply(conn)?;
    conn.prepare_cached(
        "DELETE FROM errands_cancels WHERE NOT EXISTS (
            SELECT 1 FROM errands_jobs j WHERE j.id = errands_cancels.id AND j.state = 'running')",
    )?
    .execute([])?;
    Ok(moved.len() as u64)
}

/// Deletes up to `batch` dead and cancelled jobs that finished before
/// `before`, leaving tombstones so that `status(id)` still says what
/// became of them. Answers how many.
pub(super) fn prune_dead(conn: &Connection, before: i64, batch: usize, now: i64) -> Result<u64> {
    let mut total = 0;
    for (state, how) in [("dead", "purged"), ("cancelled", "cancelled")] {
        let gone = groups_and_ids(
            conn,
            &format!(
                "DELETE FROM errands_jobs WHERE id IN (
                    SELECT id FROM errands_jobs WHERE state = '{state}' AND finished_at < ?1
                     LIMIT ?2)
                 RETURNING queue, kind, id"
            ),
            params![before, i64::try_from(batch).unwrap_or(i64::MAX)],
        )?;
        forget(conn, &gone, state, how, now)?;
        total += gone.len() as u64;
    }
    Ok(total)
}
