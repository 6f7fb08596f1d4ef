//! The SQL that only reads, on PostgreSQL.
//!
//! `counts()` groups the live rows here rather than reading counters kept
//! by every write (as SQLite does): with several hosts, one counter row per
//! (queue, kind, state) would be a row every host's every claim updates,
//! serialising them all. The partial indexes keep the scan to live work.

use tokio_postgres::{GenericClient, Row};

use crate::clock::ms_to_system_time;
use crate::error::Result;
use crate::inspect::{Counts, JobInfo, JobState, JobStatus};

const JOB_COLUMNS: &str = "id, queue, kind, state, attempts, max_attempts + refunded, run_at,
                           created_at, started_at, finished_at, last_error";

fn job_info(row: &Row, now: i64) -> JobInfo {
    let run_at: i64 = row.get(6);
    let started_at: Option<i64> = row.get(8);
    JobInfo {
        id: row.get(0),
        queue: row.get(1),
        kind: row.get(2),
        state: JobState::from_row(row.get(3), run_at, now, started_at.is_some()),
        attempts: row.get::<_, i32>(4).max(0) as u32,
        max_attempts: row.get::<_, i32>(5).max(0) as u32,
        run_at: ms_to_system_time(run_at),
        created_at: ms_to_system_time(row.get(7)),
        started_at: started_at.map(ms_to_system_time),
        finished_at: row.get::<_, Option<i64>>(9).map(ms_to_system_time),
        last_error: row.get(10),
    }
}

pub(super) async fn job(
    client: &impl GenericClient,
    s: &str,
    id: i64,
    now: i64,
) -> Result<Option<JobInfo>> {
    Ok(client
        .query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM {s}.jobs WHERE id = $1"),
            &[&id],
        )
        .await?
        .map(|row| job_info(&row, now)))
}

/// A job's row, else what its absence means: a tombstone says cancelled or
/// purged; an id the sequence has handed out otherwise completed. (Unlike
/// SQLite's, a PostgreSQL sequence also moves for inserts that rolled
/// back; such an id was never acknowledged to anyone, and reads as
/// completed.)
pub(super) async fn status(
    client: &impl GenericClient,
    s: &str,
    id: i64,
    now: i64,
) -> Result<JobStatus> {
    if let Some(info) = job(client, s, id, now).await? {
        return Ok(JobStatus::Stored(info));
    }
    let tombstone = client
        .query_opt(
            &format!("SELECT state FROM {s}.tombstones WHERE id = $1"),
            &[&id],
        )
        .await?;
    if let Some(row) = tombstone {
        return Ok(match row.get::<_, &str>(0) {
            "cancelled" => JobStatus::Cancelled,
            _ => JobStatus::Purged,
        });
    }
    let row = client
        .query_one(
            &format!("SELECT last_value, is_called FROM {s}.jobs_id_seq"),
            &[],
        )
        .await?;
    let (last, called): (i64, bool) = (row.get(0), row.get(1));
    let highest = if called { last } else { 0 };
    Ok(if id >= 1 && id <= highest {
        JobStatus::Completed
    } else {
        JobStatus::NotFound
    })
}

pub(super) async fn dead_jobs(
    client: &impl GenericClient,
    s: &str,
    queue: Option<&str>,
    limit: usize,
) -> Result<Vec<JobInfo>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM {s}.jobs
                  WHERE state = 'dead' AND ($1::text IS NULL OR queue = $1)
                  ORDER BY finished_at DESC, id DESC LIMIT $2"
            ),
            &[&queue, &limit],
        )
        .await?;
    Ok(rows.iter().map(|row| job_info(row, 0)).collect())
}

pub(super) async fn counts(client: &impl GenericClient, s: &str, now: i64) -> Result<Vec<Counts>> {
    let rows = client
        .query(
            &format!(
                "SELECT queue, kind,
                        count(*) FILTER (WHERE state = 'available' AND run_at > $1),
                        count(*) FILTER (WHERE state = 'available' AND run_at <= $1),
                        count(*) FILTER (WHERE state = 'running' AND started_at IS NULL),
                        count(*) FILTER (WHERE state = 'running' AND started_at IS NOT NULL),
                        count(*) FILTER (WHERE state = 'dead'),
                        count(*) FILTER (WHERE state = 'completed'),
                        count(*) FILTER (WHERE state = 'cancelled')
                   FROM {s}.jobs GROUP BY queue, kind ORDER BY queue, kind"
            ),
            &[&now],
        )
        .await?;
    let n = |row: &Row, i: usize| row.get::<_, i64>(i).max(0) as u64;
    Ok(rows
        .iter()
        .map(|row| Counts {
            queue: row.get(0),
            kind: row.get(1),
            scheduled: n(row, 2),
            available: n(row, 3),
            claimed: n(row, 4),
            running: n(row, 5),
            dead: n(row, 6),
            completed: n(row, 7),
            cancelled: n(row, 8),
        })
        .collect())
}

pub(super) async fn next_run_at(
    client: &impl GenericClient,
    s: &str,
    kinds: &[(String, String)],
    after: i64,
) -> Result<Option<i64>> {
    let (queues, kinds): (Vec<&str>, Vec<&str>) =
        kinds.iter().map(|(q, k)| (q.as_str(), k.as_str())).unzip();
    let row = client
        .query_one(
            &format!(
                "SELECT min(next) FROM unnest($1::text[], $2::text[]) AS w(q, k),
                        LATERAL (SELECT min(run_at) AS next FROM {s}.jobs
                                  WHERE queue = w.q AND kind = w.k AND state = 'available'
                                    AND run_at > $3) n"
            ),
            &[&queues, &kinds, &after],
        )
        .await?;
    Ok(row.get(0))
}
