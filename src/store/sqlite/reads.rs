//! The SQL that only reads, run on pooled connections beside the writer
//! (WAL lets readers and the writer proceed together).

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::clock::ms_to_system_time;
use crate::error::Result;
use crate::inspect::{Counts, JobInfo, JobState, JobStatus};

const JOB_COLUMNS: &str =
    "id, queue, kind, state, attempts, max_attempts + refunded, run_at, created_at,
                           started_at, finished_at, last_error";

fn job_info(row: &Row<'_>, now: i64) -> rusqlite::Result<JobInfo> {
    let state: String = row.get(3)?;
    let run_at: i64 = row.get(6)?;
    Ok(JobInfo {
        id: row.get(0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        state: JobState::from_row(&state, run_at, now, row.get::<_, Option<i64>>(8)?.is_some()),
        attempts: row.get(4)?,
        max_attempts: row.get(5)?,
        run_at: ms_to_system_time(run_at),
        created_at: ms_to_system_time(row.get(7)?),
        started_at: row.get::<_, Option<i64>>(8)?.map(ms_to_system_time),
        finished_at: row.get::<_, Option<i64>>(9)?.map(ms_to_system_time),
        last_error: row.get(10)?,
    })
}

pub(super) fn job(conn: &Connection, id: i64, now: i64) -> Result<Option<JobInfo>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM errands_jobs WHERE id = ?1"
        ))?
        .query_row(params![id], |row| job_info(row, now))
        .optional()?)
}

/// A job's row, else what its absence means: a tombstone says it was
/// cancelled or purged; otherwise an id at or below the highest ever given
/// (ids are AUTOINCREMENT, never reused) belonged to a job that completed,
/// since completion is the only other way a row is deleted.
pub(super) fn status(conn: &Connection, id: i64, now: i64) -> Result<JobStatus> {
    if let Some(info) = job(conn, id, now)? {
        return Ok(JobStatus::Stored(info));
    }
    let tombstone: Option<String> = conn
        .prepare_cached("SELECT state FROM errands_tombstones WHERE id = ?1")?
        .query_row(params![id], |row| row.get(0))
        .optional()?;
    match tombstone.as_deref() {
        Some("cancelled") => return Ok(JobStatus::Cancelled),
        Some(_) => return Ok(JobStatus::Purged),
        None => {}
    }
    let highest: Option<i64> = conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'errands_jobs'")?
        .query_row([], |row| row.get(0))
        .optional()?;
    Ok(if id >= 1 && highest.is_some_and(|highest| id <= highest) {
        JobStatus::Completed
    } else {
        JobStatus::NotFound
    })
}

pub(super) fn dead_jobs(
    conn: &Connection,
    queue: Option<&str>,
    limit: usize,
) -> Result<Vec<JobInfo>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM errands_jobs
          WHERE state = 'dead' AND (?1 IS NULL OR queue = ?1)
          ORDER BY finished_at DESC, id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(
        params![queue, i64::try_from(limit).unwrap_or(i64::MAX)],
        |row| job_info(row, 0),
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Counts by queue, kind and state. Costs a row per (queue, kind, state)
/// group, read from the counters the triggers keep, plus, for waiting jobs,
/// an index range scan over the ones not yet due (to split `scheduled` from
/// `available`); never a scan of the whole table.
pub(super) fn counts(conn: &Connection, now: i64) -> Result<Vec<Counts>> {
    let mut stmt = conn.prepare_cached(
        "SELECT queue, kind, state, n FROM errands_counts WHERE n > 0 ORDER BY 1, 2",
    )?;
    let mut rows = stmt.query([])?;
    let mut out: Vec<Counts> = Vec::new();
    while let Some(row) = rows.next()? {
        let queue: String = row.get(0)?;
        let kind: String = row.get(1)?;
        let state: String = row.get(2)?;
        let n = row.get::<_, i64>(3)?.max(0) as u64;
        let entry = match out.last_mut() {
            Some(last) if last.queue == queue && last.kind == kind => last,
            _ => {
                out.push(Counts {
                    queue,
                    kind,
                    ..Counts::default()
                });
                out.last_mut().expect("just pushed")
            }
        };
        *match state.as_str() {
            "available" => &mut entry.available,
            "claimed" => &mut entry.claimed,
            "running" => &mut entry.running,
            "dead" => &mut entry.dead,
            "cancelled" => &mut entry.cancelled,
            _ => &mut entry.completed,
        } += n;
    }
    let mut scheduled = conn.prepare_cached(
        "SELECT count(*) FROM errands_jobs
          WHERE queue = ?1 AND kind = ?2 AND state = 'available' AND run_at > ?3",
    )?;
    for entry in out.iter_mut().filter(|c| c.available > 0) {
        let n: i64 =
            scheduled.query_row(params![entry.queue, entry.kind, now], |row| row.get(0))?;
        let n = (n.max(0) as u64).min(entry.available);
        entry.scheduled = n;
        entry.available -= n;
    }
    Ok(out)
}

pub(super) fn next_run_at(
    conn: &Connection,
    kinds: &[(String, String)],
    after: i64,
) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT min(run_at) FROM errands_jobs
          WHERE queue = ?1 AND kind = ?2 AND state = 'available' AND run_at > ?3",
    )?;
    let mut earliest: Option<i64> = None;
    for (queue, kind) in kinds {
        let next: Option<i64> = stmt.query_row(params![queue, kind, after], |row| row.get(0))?;
        earliest = match (earliest, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}
