//! The SQL that changes rows. Each function runs on the writer thread, inside
//! the current group transaction.
//!
//! Every update of a running job is conditioned on `owner = ?`: if this
//! process was presumed dead and its job recovered by another, the late
//! outcome changes nothing rather than clobbering the new attempt.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::counters::Deltas;
use super::owners;
use crate::error::{Error, Result};
use crate::inspect::JobState;
use crate::store::{
    Claim, ClaimedJob, DeadTarget, FinishAndClaim, Finished, FinishedAndClaimed, NewJob, Outcome,
};

/// Rows per multi-row `INSERT`: fewer statements for big batches.
const INSERT_CHUNK: usize = 32;

pub(super) fn insert_jobs(conn: &Connection, jobs: &[NewJob]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(jobs.len());
    let mut chunks = jobs.chunks_exact(INSERT_CHUNK);
    if jobs.len() >= INSERT_CHUNK {
        let values = vec!["(?, ?, 'available', ?, ?, ?, ?)"; INSERT_CHUNK].join(", ");
        let mut stmt = conn.prepare_cached(&format!(
            "INSERT INTO errands_jobs (queue, kind, state, payload, max_attempts, run_at, created_at)
             VALUES {values} RETURNING id"
        ))?;
        for chunk in &mut chunks {
            let mut index = 1;
            for job in chunk {
                stmt.raw_bind_parameter(index, job.queue)?;
                stmt.raw_bind_parameter(index + 1, job.kind)?;
                stmt.raw_bind_parameter(index + 2, &job.payload)?;
                stmt.raw_bind_parameter(index + 3, job.max_attempts)?;
                stmt.raw_bind_parameter(index + 4, job.run_at)?;
                stmt.raw_bind_parameter(index + 5, job.created_at)?;
                index += 6;
            }
            let mut rows = stmt.raw_query();
            let first = ids.len();
            while let Some(row) = rows.next()? {
                ids.push(row.get::<_, i64>(0)?);
            }
            // Rowids are assigned in insertion order; RETURNING's order is
            // not promised, so restore it.
            ids[first..].sort_unstable();
        }
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO errands_jobs (queue, kind, state, payload, max_attempts, run_at, created_at)
         VALUES (?1, ?2, 'available', ?3, ?4, ?5, ?6)",
    )?;
    for job in chunks.remainder() {
        let id = stmt.insert(params![
            job.queue,
            job.kind,
            job.payload,
            job.max_attempts,
            job.run_at,
            job.created_at
        ])?;
        ids.push(id);
    }
    let mut deltas = Deltas::default();
    for job in jobs {
        deltas.add(job.queue, job.kind, "available", 1);
    }
    deltas.apply(conn)?;
    Ok(ids)
}

pub(super) fn finish_and_claim(
    conn: &Connection,
    owner: &str,
    retain_completed: bool,
    batch: &FinishAndClaim,
) -> Result<FinishedAndClaimed> {
    let mut answer = FinishedAndClaimed::default();
    // Completions first: on a full database their deletes free the pages
    // that the other outcomes' updates may need.
    let completions = batch
        .finished
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.outcome, Outcome::Completed));
    let others = batch
        .finished
        .iter()
        .enumerate()
        .filter(|(_, f)| !matches!(f.outcome, Outcome::Completed));
    let mut deltas = Deltas::default();
    // Marks first: an outcome of the same job may be in this batch.
    let mut mark = conn.prepare_cached(
        "UPDATE errands_jobs SET started_at = ?3
          WHERE id = ?1 AND owner = ?2 AND state = 'running' AND started_at IS NULL",
    )?;
    for (id, kind) in &batch.started {
        let n = mark.execute(params![id, owner, batch.now])? as i64;
        deltas.moved(batch.queue, kind, "claimed", "running", n);
    }
    for (index, finished) in completions.chain(others) {
        match write_outcome(conn, owner, retain_completed, batch, finished, &mut deltas) {
            Ok(()) => {}
            // One statement failed and SQLite undid just that statement:
            // keep the others, hand this one back to be tried again. One
            // outcome that grows a row must not hold back the rest.
            Err(e) if e.is_disk_full() && !conn.is_autocommit() => answer.unwritten.push(index),
            Err(e) => return Err(e),
        }
    }
    for request in &batch.claims {
        if request.n == 0 {
            continue;
        }
        let claimed = claim(conn, owner, batch, request, &mut answer.claimed);
        match claimed {
            Ok((now, ahead)) => {
                deltas.moved(batch.queue, request.kind, "available", "running", now);
                deltas.moved(batch.queue, request.kind, "available", "claimed", ahead);
            }
            // No room to mark jobs running: claim nothing more this round.
            Err(e) if e.is_disk_full() && !conn.is_autocommit() => break,
            Err(e) => return Err(e),
        }
    }
    deltas.apply(conn)?;
    Ok(answer)
}

fn write_outcome(
    conn: &Connection,
    owner: &str,
    retain_completed: bool,
    batch: &FinishAndClaim,
    finished: &Finished,
    deltas: &mut Deltas,
) -> Result<()> {
    let now = batch.now;
    let checkpoint = finished.checkpoint.as_deref();
    let (id, attempt) = (finished.id, finished.attempt);
    // Every statement is conditioned on this owner *and* this attempt: if the
    // job was recovered and claimed again meanwhile (even by this process,
    // under the same owner id), a stale outcome changes nothing.
    let (changed, to) = match &finished.outcome {
        Outcome::Completed if retain_completed => (
            conn.prepare_cached(
                "UPDATE errands_jobs SET state = 'completed', owner = NULL, finished_at = ?4
                 WHERE id = ?1 AND owner = ?2 AND attempts = ?3 AND state = 'running'",
            )?
            .execute(params![id, owner, attempt, now])?,
            Some("completed"),
        ),
        Outcome::Completed => (
            conn.prepare_cached(
                "DELETE FROM errands_jobs
                 WHERE id = ?1 AND owner = ?2 AND attempts = ?3 AND state = 'running'",
            )?
            .execute(params![id, owner, attempt])?,
            None,
        ),
        Outcome::Retry { run_at, error } => (
            conn.prepare_cached(
                "UPDATE errands_jobs SET state = 'available', owner = NULL, run_at = ?4,
                    last_error = ?5, checkpoint = coalesce(?6, checkpoint)
                 WHERE id = ?1 AND owner = ?2 AND attempts = ?3 AND state = 'running'",
            )?
            .execute(params![id, owner, attempt, run_at, error, checkpoint])?,
            Some("available"),
        ),
        Outcome::Dead { error } => (
            conn.prepare_cached(
                "UPDATE errands_jobs SET state = 'dead', owner = NULL, finished_at = ?4,
                    last_error = ?5, checkpoint = coalesce(?6, checkpoint)
                 WHERE id = ?1 AND owner = ?2 AND attempts = ?3 AND state = 'running'",
            )?
            .execute(params![id, owner, attempt, now, error, checkpoint])?,
            Some("dead"),
        ),
        Outcome::Released { .. } => (
            conn.prepare_cached(
                "UPDATE errands_jobs SET state = 'available', owner = NULL,
                    attempts = max(attempts - 1, 0), checkpoint = coalesce(?4, checkpoint)
                 WHERE id = ?1 AND owner = ?2 AND attempts = ?3 AND state = 'running'",
            )?
            .execute(params![id, owner, attempt, checkpoint])?,
            Some("available"),
        ),
        Outcome::Cancelled { reason } => {
            let n = conn
                .prepare_cached(
                    "UPDATE errands_jobs SET state = 'cancelled', owner = NULL, finished_at = ?4,
                        last_error = ?5
                     WHERE id = ?1 AND owner = ?2 AND attempts = ?3 AND state = 'running'",
                )?
                .execute(params![id, owner, attempt, now, reason])?;
            conn.prepare_cached("DELETE FROM errands_cancels WHERE id = ?1")?
                .execute(params![id])?;
            (n, Some("cancelled"))
        }
        // One more attempt allowed, so that this one does not count
        // (attempt numbers keep rising; the budget moves with them).
        Outcome::Snooze { run_at } => (
            conn.prepare_cached(
                "UPDATE errands_jobs SET state = 'available', owner = NULL, run_at = ?4,
                    max_attempts = max_attempts + 1, checkpoint = coalesce(?5, checkpoint)
                 WHERE id = ?1 AND owner = ?2 AND attempts = ?3 AND state = 'running'",
            )?
            .execute(params![id, owner, attempt, run_at, checkpoint])?,
            Some("available"),
        ),
    };
    // Counted only if the row really changed (a stale outcome changes none).
    let changed = changed as i64;
    // A row never marked started was counted as claimed.
    let from = if finished.marked {
        "running"
    } else {
        "claimed"
    };
    deltas.add(batch.queue, finished.kind, from, -changed);
    if let Some(to) = to {
        deltas.add(batch.queue, finished.kind, to, changed);
    }
    Ok(())
}

/// Claims for one kind: the first `start_now` jobs marked started (their
/// handlers start at once), the rest claimed ahead (`started_at` NULL until
/// the dispatcher starts them, so inspection shows them as `claimed`). Both
/// count the attempt at claim, so a job whose handler kills the process
/// still runs out of attempts. A job whose attempt was given back at
/// recovery (`refunded`) is marked even when claimed ahead: it gets an
/// attempt back at most once. Answers how many were marked and how many
/// claimed ahead.
fn claim(
    conn: &Connection,
    owner: &str,
    batch: &FinishAndClaim,
    request: &Claim,
    out: &mut Vec<ClaimedJob>,
) -> Result<(i64, i64)> {
    let (n, start_now) = within_global_limit(conn, batch.queue, request)?;
    let request = &Claim { n, ..*request };
    let start_now = start_now.min(request.n);
    let mut counts = [0i64; 2];
    for (start, limit) in [(true, start_now), (false, request.n - start_now)] {
        if limit == 0 {
            continue;
        }
        let mut stmt = conn.prepare_cached(
            "UPDATE errands_jobs
                SET state = 'running', owner = ?1, attempts = attempts + 1,
                    started_at = CASE WHEN ?6 OR refunded > 0 THEN ?5 END
              WHERE id IN (SELECT id FROM errands_jobs
                            WHERE queue = ?2 AND kind = ?3 AND state = 'available' AND run_at <= ?5
                            ORDER BY run_at, id LIMIT ?4)
              RETURNING id, payload, attempts, max_attempts + refunded, checkpoint,
                        started_at IS NOT NULL",
        )?;
        let kind = request.kind;
        let rows = stmt.query_map(
            params![
                owner,
                batch.queue,
                kind,
                i64::try_from(limit).unwrap_or(i64::MAX),
                batch.now,
                start
            ],
            |row| {
                Ok(ClaimedJob {
                    id: row.get(0)?,
                    kind,
                    payload: row.get(1)?,
                    attempt: row.get(2)?,
                    max_attempts: row.get(3)?,
                    checkpoint: row.get(4)?,
                    marked: row.get(5)?,
                })
            },
        )?;
        for row in rows {
            let job = row?;
            counts[usize::from(!job.marked)] += 1;
            out.push(job);
        }
    }
    Ok((counts[0], counts[1]))
}

/// A claim cut to what the kind's global limit leaves, counted inside this
/// transaction (which holds the write lock, so no other process claims
/// meanwhile): `(n, start_now)`.
fn within_global_limit(conn: &Connection, queue: &str, request: &Claim) -> Result<(usize, usize)> {
    let Some(limit) = request.global_limit else {
        return Ok((request.n, request.start_now));
    };
    let held: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM errands_jobs WHERE state = 'running' AND queue = ?1 AND kind = ?2",
        )?
        .query_row(params![queue, request.kind], |row| row.get(0))?;
    let free = limit.saturating_sub(usize::try_from(held).unwrap_or(usize::MAX));
    Ok((request.n.min(free), request.start_now.min(free)))
}

/// Puts back the running jobs of every owner that is no longer alive. A job
/// that was on its last attempt goes dead instead of running once more.
///
/// A recovered job keeps its `run_at`: it was due before the work enqueued
/// after it, so it runs before that work (claims go in `run_at, id` order),
/// not behind the whole backlog.
pub(super) fn recover_orphans(
    conn: &Connection,
    me: &str,
    lock_dir: &Path,
    now: i64,
) -> Result<usize> {
    let owners: Vec<String> = conn
        .prepare_cached(
            "SELECT DISTINCT owner FROM errands_jobs WHERE state = 'running' AND owner IS NOT NULL",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut moved = 0;
    let mut deltas = Deltas::default();
    let busy: HashSet<String> = owners.iter().cloned().collect();
    let swept = owners::sweep(lock_dir, &busy);
    if swept > 0 {
        log::debug!("errands: removed {swept} lock files of owners that ended");
    }
    for owner in owners {
        if owner == me || !owners::is_dead(lock_dir, &owner) {
            continue;
        }
        // A job claimed ahead whose start was never recorded gets its
        // attempt back, once (`refunded`): it may never have run, and
        // nothing a job did may cost it an attempt. It keeps its attempt
        // number (the kill may have fallen between its start and its mark's
        // commit, so that number may have been seen). Every other running
        // job's attempt counts: at its budget it goes dead, so a handler
        // that kills its process does not loop forever.
        let mut stmt = conn.prepare_cached(
            "UPDATE errands_jobs SET
                refunded = refunded + (started_at IS NULL AND refunded = 0),
                state = CASE WHEN started_at IS NULL AND refunded = 0 THEN 'available'
                             WHEN attempts >= max_attempts + refunded THEN 'dead'
                             ELSE 'available' END,
                finished_at = CASE WHEN started_at IS NULL AND refunded = 0 THEN NULL
                                   WHEN attempts >= max_attempts + refunded THEN ?2
                                   ELSE NULL END,
                last_error = CASE WHEN started_at IS NULL AND refunded = 0 THEN last_error
                                  WHEN attempts >= max_attempts + refunded
                    THEN 'the process running its last attempt died (owner ' || ?1 || ')'
                    ELSE last_error END,
                owner = NULL
             WHERE state = 'running' AND owner = ?1
             RETURNING queue, kind, state = 'dead', started_at IS NULL",
        )?;
        let mut rows = stmt.query(params![owner, now])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            let (queue, kind): (String, String) = (row.get(0)?, row.get(1)?);
            let to = if row.get(2)? { "dead" } else { "available" };
            let from = if row.get(3)? { "claimed" } else { "running" };
            deltas.moved(&queue, &kind, from, to, 1);
            n += 1;
        }
        if n > 0 {
            log::warn!("errands: recovered {n} jobs left running by dead owner {owner}");
        }
        moved += n;
    }
    deltas.apply(conn)?;
    Ok(moved)
}

/// How many jobs `owner` holds running.
pub(super) fn running_count(conn: &Connection, owner: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM errands_jobs WHERE owner = ?1 AND state = 'running'")?
        .query_row(params![owner], |row| row.get(0))?)
}

/// Saves a running job's progress; refused unless this process still owns
/// this very attempt.
pub(super) fn save_checkpoint(
    conn: &Connection,
    owner: &str,
    id: i64,
    attempt: u32,
    checkpoint: &[u8],
) -> Result<()> {
    let n = conn
        .prepare_cached(
            "UPDATE errands_jobs SET checkpoint = ?4
              WHERE id = ?1 AND owner = ?2 AND attempts = ?3 AND state = 'running'",
        )?
        .execute(params![id, owner, attempt, checkpoint])?;
    if n == 0 {
        let now = crate::clock::system_time_to_ms(std::time::SystemTime::now());
        return Err(refusal(
            conn,
            id,
            "save progress (not running in this process)",
            now,
        ));
    }
    Ok(())
}

pub(super) fn requeue(conn: &Connection, target: &DeadTarget, now: i64) -> Result<u64> {
    let set =
        "UPDATE errands_jobs SET state = 'available', attempts = 0, refunded = 0, run_at = ?1,
                  finished_at = NULL, owner = NULL WHERE state = 'dead'";
    let returning = "RETURNING queue, kind";
    let moved = match target {
        DeadTarget::One(id) => {
            let moved = groups(
                conn,
                &format!("{set} AND id = ?2 {returning}"),
                params![now, id],
            )?;
            if moved.is_empty() {
                return Err(refusal(conn, *id, "requeue", now));
            }
            moved
        }
        DeadTarget::Queue(queue) => groups(
            conn,
            &format!("{set} AND queue = ?2 {returning}"),
            params![now, queue],
        )?,
        DeadTarget::All => groups(conn, &format!("{set} {returning}"), params![now])?,
    };
    let mut deltas = Deltas::default();
    for (queue, kind) in &moved {
        deltas.moved(queue, kind, "dead", "available", 1);
    }
    deltas.apply(conn)?;
    Ok(moved.len() as u64)
}

pub(super) fn purge(conn: &Connection, target: &DeadTarget, now: i64) -> Result<u64> {
    let delete = "DELETE FROM errands_jobs WHERE state = 'dead'";
    let returning = "RETURNING queue, kind, id";
    let gone = match target {
        // One job may be any that is not running: dead, cancelled (kept
        // until pruned) or still waiting (deleted before it ran, which is
        // what a cancel does, so its tombstone says cancelled). A delete
        // needs no room: on a full database it is what frees space.
        DeadTarget::One(id) => {
            for (state, how) in [
                ("dead", "purged"),
                ("cancelled", "cancelled"),
                ("available", "cancelled"),
            ] {
                let gone = groups_and_ids(
                    conn,
                    &format!(
                        "DELETE FROM errands_jobs WHERE state = '{state}' AND id = ?1 {returning}"
                    ),
                    params![id],
                )?;
                if !gone.is_empty() {
                    forget(conn, &gone, state, how, now)?;
                    return Ok(1);
                }
            }
            return Err(refusal(conn, *id, "purge", now));
        }
        DeadTarget::Queue(queue) => groups_and_ids(
            conn,
            &format!("{delete} AND queue = ?1 {returning}"),
            params![queue],
        )?,
        DeadTarget::All => groups_and_ids(conn, &format!("{delete} {returning}"), [])?,
    };
    forget(conn, &gone, "dead", "purged", now)?;
    Ok(gone.len() as u64)
}

pub(super) fn prune_completed(conn: &Connection, before: i64) -> Result<u64> {
    let gone = groups(
        conn,
        "DELETE FROM errands_jobs WHERE state = 'completed' AND finished_at < ?1
         RETURNING queue, kind",
        params![before],
    )?;
    let mut deltas = Deltas::default();
    for (queue, kind) in &gone {
        deltas.add(queue, kind, "completed", -1);
    }
    deltas.apply(conn)?;
    Ok(gone.len() as u64)
}

/// Deleted jobs: counted out of `state`, and remembered as `how`
/// (cancelled, purged) so that `status(id)` can tell them from completed
/// jobs, whose rows are deleted without a trace.
pub(super) fn forget(
    conn: &Connection,
    gone: &[(String, String, i64)],
    state: &'static str,
    how: &'static str,
    now: i64,
) -> Result<()> {
    let mut deltas = Deltas::default();
    let mut remember = conn.prepare_cached(
        "INSERT OR REPLACE INTO errands_tombstones (id, state, at) VALUES (?1, ?2, ?3)",
    )?;
    for (queue, kind, id) in gone {
        deltas.add(queue, kind, state, -1);
        remember.execute(params![id, how, now])?;
    }
    deltas.apply(conn)
}

/// Runs a statement that returns `queue, kind` per row changed.
pub(super) fn groups(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Runs a statement that returns `queue, kind, id` per row changed.
pub(super) fn groups_and_ids(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(String, String, i64)>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Why an operation on job `id` changed nothing: it is gone, or in a state
/// the operation does not apply to.
pub(super) fn refusal(conn: &Connection, id: i64, action: &'static str, now: i64) -> Error {
    match state_of(conn, id, now) {
        Ok(None) => Error::NotFound(id),
        Ok(Some(state)) => Error::WrongState { id, state, action },
        Err(e) => e,
    }
}

fn state_of(conn: &Connection, id: i64, now: i64) -> Result<Option<JobState>> {
    Ok(conn
        .prepare_cached(
            "SELECT state, run_at, started_at IS NOT NULL FROM errands_jobs WHERE id = ?1",
        )?
        .query_row(params![id], |row| {
            let state: String = row.get(0)?;
            Ok(JobState::from_row(&state, row.get(1)?, now, row.get(2)?))
        })
        .optional()?)
}
