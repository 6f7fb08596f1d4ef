//! The SQL that changes rows on PostgreSQL: the dispatcher's
//! finish-and-claim round, recovery, and the operator's requeue, purge,
//! cancel and prune. Same rules as SQLite's `writes.rs`: every update of a
//! running job is conditioned on its owner *and* its attempt, claims take
//! the oldest due rows in `run_at, id` order, and a claim never waits for a
//! row another host is claiming (`FOR UPDATE SKIP LOCKED`).
//!
//! Outcomes go in one statement per kind of outcome, over `unnest`ed
//! arrays, not a statement per job: a round of 64 completions is one
//! `DELETE`.

use deadpool_postgres::{ClientWrapper, Transaction};

use super::liveness::owner_key;
use crate::error::{Error, Result};
use crate::inspect::JobState;
use crate::store::{Claim, ClaimedJob, DeadTarget, FinishAndClaim, FinishedAndClaimed, Outcome};

/// How a round claims: whether it may (not while this instance's liveness
/// lock is lost: it then only writes what finished), and the token its
/// claimed rows carry.
pub(super) struct Claiming {
    pub token: i64,
    pub claim: bool,
}

/// One dispatcher round: marks, outcomes, claims. The caller runs it
/// inside a transaction it began on `tx` (see `PgStore::finish_and_claim`:
/// the `BEGIN` is pipelined with these statements).
pub(super) async fn finish_and_claim(
    tx: &ClientWrapper,
    s: &str,
    owner: &str,
    retain_completed: bool,
    batch: &FinishAndClaim,
    claiming: Claiming,
) -> Result<FinishedAndClaimed> {
    let Claiming { token, claim } = claiming;
    // Every statement of the round is sent at once (tokio-postgres pipelines
    // queries polled together, and runs them in the order sent): marks,
    // then outcomes, then claims, in one round trip instead of one each.
    // A job whose outcome is in this same round needs no mark: the outcome
    // replaces the row anyway, and on PostgreSQL every UPDATE writes a new
    // row version (no counters to keep here, unlike SQLite).
    let finished: std::collections::HashSet<i64> = batch.finished.iter().map(|f| f.id).collect();
    let ids: Vec<i64> = batch
        .started
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !finished.contains(id))
        .collect();
    let marks = async {
        if !ids.is_empty() {
            tx.execute(
                &format!(
                    "UPDATE {s}.jobs SET started_at = $3
                      WHERE id = ANY($1) AND owner = $2 AND state = 'running' AND started_at IS NULL"
                ),
                &[&ids, &owner, &batch.now],
            )
            .await?;
        }
        Ok::<_, Error>(())
    };
    let outcomes = write_outcomes(tx, s, owner, retain_completed, batch);
    let claims = futures_util::future::try_join_all(
        batch
            .claims
            .iter()
            .filter(|request| claim && request.n > 0)
            .map(|request| claim_kind(tx, s, owner, token, batch, request)),
    );
    let ((), (), claimed) = tokio::try_join!(marks, outcomes, claims)?;
    Ok(FinishedAndClaimed {
        claimed: claimed.into_iter().flatten().collect(),
        unwritten: Vec::new(),
    })
}

/// Arrays of the outcomes of one kind, for one `unnest`.
#[derive(Default)]
struct Group {
    ids: Vec<i64>,
    attempts: Vec<i32>,
    run_at: Vec<i64>,
    errors: Vec<Option<String>>,
    checkpoints: Vec<Option<Vec<u8>>>,
}

impl Group {
    fn push(&mut self, id: i64, attempt: u32, run_at: i64, error: Option<&str>, cp: Option<&[u8]>) {
        self.ids.push(id);
        self.attempts
            .push(i32::try_from(attempt).unwrap_or(i32::MAX));
        self.run_at.push(run_at);
        self.errors.push(error.map(str::to_string));
        self.checkpoints.push(cp.map(<[u8]>::to_vec));
    }
}

async fn write_outcomes(
    tx: &ClientWrapper,
    s: &str,
    owner: &str,
    retain_completed: bool,
    batch: &FinishAndClaim,
) -> Result<()> {
    // Completed, retry, dead, released, cancelled, snoozed.
    let mut groups: [Group; 6] = Default::default();
    for f in &batch.finished {
        let (index, run_at, error) = match &f.outcome {
            Outcome::Completed => (0, 0, None),
            Outcome::Retry { run_at, error } => (1, *run_at, Some(error.as_str())),
            Outcome::Dead { error } => (2, 0, Some(error.as_str())),
            Outcome::Released { .. } => (3, 0, None),
            Outcome::Cancelled { reason } => (4, 0, Some(reason.as_str())),
            Outcome::Snooze { run_at } => (5, *run_at, None),
        };
        groups[index].push(f.id, f.attempt, run_at, error, f.checkpoint.as_deref());
    }
    let unnest = "unnest($1::int8[], $2::int4[], $3::int8[], $4::text[], $5::bytea[])
                  AS f(id, attempt, run_at, error, checkpoint)";
    // `j.id = ANY($1)` as well as the join: without it the planner may hash
    // the unnested rows against a scan of the whole table (measured: a
    // 100,000-job drain at 0.12x raw).
    let mine = "j.id = ANY($1) AND j.id = f.id AND j.attempts = f.attempt AND j.owner = $6
                AND j.state = 'running'";
    // Completions, the hot path, carry no values but the attempt: a
    // semi-join against two arrays (measured: a third of the time of the
    // five-array join the other outcomes need, per 64 rows).
    let done_rows = "j.id = ANY($1) AND j.owner = $3 AND j.state = 'running'
                     AND (j.id, j.attempts) IN (SELECT * FROM unnest($1::int8[], $2::int4[]))";
    let completions = &groups[0];
    let completed = async {
        if completions.ids.is_empty() {
            return Ok::<_, Error>(());
        }
        if retain_completed {
            let stmt = tx
                .prepare_cached(&format!(
                    "UPDATE {s}.jobs j SET state = 'completed', owner = NULL, finished_at = $4
                      WHERE {done_rows}"
                ))
                .await?;
            tx.execute(
                &stmt,
                &[&completions.ids, &completions.attempts, &owner, &batch.now],
            )
            .await?;
        } else {
            let stmt = tx
                .prepare_cached(&format!("DELETE FROM {s}.jobs j WHERE {done_rows}"))
                .await?;
            tx.execute(&stmt, &[&completions.ids, &completions.attempts, &owner])
                .await?;
        }
        Ok(())
    };
    let sql = [
        format!(
            "UPDATE {s}.jobs j SET state = 'available', owner = NULL, run_at = f.run_at,
                    last_error = f.error, checkpoint = coalesce(f.checkpoint, j.checkpoint)
               FROM {unnest} WHERE {mine}"
        ),
        format!(
            "UPDATE {s}.jobs j SET state = 'dead', owner = NULL, finished_at = $7,
                    last_error = f.error, checkpoint = coalesce(f.checkpoint, j.checkpoint)
               FROM {unnest} WHERE {mine}"
        ),
        format!(
            "UPDATE {s}.jobs j SET state = 'available', owner = NULL,
                    attempts = greatest(j.attempts - 1, 0),
                    checkpoint = coalesce(f.checkpoint, j.checkpoint)
               FROM {unnest} WHERE {mine}"
        ),
        // The job's cancel request is settled with it.
        format!(
            "WITH done AS (
                UPDATE {s}.jobs j SET state = 'cancelled', owner = NULL, finished_at = $7,
                       last_error = f.error
                  FROM {unnest} WHERE {mine} RETURNING j.id)
             DELETE FROM {s}.cancels WHERE id IN (SELECT id FROM done)"
        ),
        // One more attempt allowed, so that this one does not count.
        format!(
            "UPDATE {s}.jobs j SET state = 'available', owner = NULL, run_at = f.run_at,
                    max_attempts = j.max_attempts + 1,
                    checkpoint = coalesce(f.checkpoint, j.checkpoint)
               FROM {unnest} WHERE {mine}"
        ),
    ];
    let writes = groups[1..]
        .iter()
        .zip(sql)
        .filter(|(group, _)| !group.ids.is_empty())
        .map(|(group, sql)| async move {
            let stmt = tx.prepare_cached(&sql).await?;
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
                &group.ids,
                &group.attempts,
                &group.run_at,
                &group.errors,
                &group.checkpoints,
                &owner,
            ];
            if stmt.params().len() == 7 {
                params.push(&batch.now);
            }
            tx.execute(&stmt, &params).await?;
            Ok::<_, Error>(())
        });
    tokio::try_join!(completed, futures_util::future::try_join_all(writes))?;
    Ok(())
}

/// Claims for one kind, as on SQLite: the first `start_now` marked started,
/// the rest claimed ahead (a job given an attempt back is always marked).
async fn claim_kind(
    tx: &ClientWrapper,
    s: &str,
    owner: &str,
    token: i64,
    batch: &FinishAndClaim,
    request: &Claim,
) -> Result<Vec<ClaimedJob>> {
    let mut out = Vec::new();
    let (n, start_now) = within_global_limit(tx, s, batch.queue, request).await?;
    let request = &Claim { n, ..*request };
    let start_now = start_now.min(request.n);
    if request.n == 0 {
        return Ok(out);
    }
    // One statement: the first `start_now` rows in claim order are marked
    // started, the rest claimed ahead. (Two statements, as SQLite has it,
    // each see their own snapshot here: rows committed between them went
    // "ahead" although a slot was free, and read as claimed while they ran.)
    let stmt = tx
        .prepare_cached(&format!(
            "UPDATE {s}.jobs j
                SET state = 'running', owner = $1, attempts = j.attempts + 1,
                    started_at = CASE WHEN c.n <= $6 OR j.refunded > 0 THEN $5::int8 END,
                    claim_token = $7, global_slot = $8
               FROM (SELECT id, row_number() OVER (ORDER BY run_at, id) AS n
                       FROM (SELECT id, run_at FROM {s}.jobs
                              WHERE queue = $2 AND kind = $3 AND state = 'available'
                                AND run_at <= $5
                              ORDER BY run_at, id LIMIT $4
                              FOR UPDATE SKIP LOCKED) ready) c
              WHERE j.id = c.id
              RETURNING j.id, j.payload, j.attempts, j.max_attempts + j.refunded, j.checkpoint,
                        j.started_at IS NOT NULL, j.run_at"
        ))
        .await?;
    let limit = i64::try_from(request.n).unwrap_or(i64::MAX);
    let start_now = i64::try_from(start_now).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            &stmt,
            &[
                &owner,
                &batch.queue,
                &request.kind,
                &limit,
                &batch.now,
                &start_now,
                &token,
                &request.global_limit.is_some(),
            ],
        )
        .await?;
    let mut claimed: Vec<(i64, ClaimedJob)> = rows
        .iter()
        .map(|row| {
            let job = ClaimedJob {
                id: row.get(0),
                kind: request.kind,
                payload: row.get(1),
                attempt: row.get::<_, i32>(2).max(0) as u32,
                max_attempts: row.get::<_, i32>(3).max(0) as u32,
                checkpoint: row.get(4),
                marked: row.get(5),
            };
            (row.get::<_, i64>(6), job)
        })
        .collect();
    claimed.sort_by_key(|(run_at, job)| (*run_at, job.id));
    out.extend(claimed.into_iter().map(|(_, job)| job));
    Ok(out)
}

/// A claim cut to what the kind's global limit leaves: the kind's claimed
/// rows are counted under a transaction advisory lock on (schema, queue,
/// kind), held to commit, so two hosts cannot both take the last slot.
/// `(n, start_now)`.
async fn within_global_limit(
    tx: &ClientWrapper,
    s: &str,
    queue: &str,
    request: &Claim,
) -> Result<(usize, usize)> {
    let Some(limit) = request.global_limit else {
        return Ok((request.n, request.start_now));
    };
    let key = super::liveness::stable_key(&["errands global limit", s, queue, request.kind]);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await?;
    let held: i64 = tx
        .query_one(
            &format!(
                "SELECT count(*) FROM {s}.jobs
                  WHERE state = 'running' AND global_slot AND queue = $1 AND kind = $2"
            ),
            &[&queue, &request.kind],
        )
        .await?
        .get(0);
    let free = limit.saturating_sub(usize::try_from(held).unwrap_or(usize::MAX));
    Ok((request.n.min(free), request.start_now.min(free)))
}

/// Puts back the running jobs of owners that are no longer alive: an
/// owner (from `owners`) whose session advisory lock this transaction can
/// take has no session left. Its rows are found by a scan (there is no
/// index over running rows, see the schema), once, and it leaves the list.
/// The rules are SQLite's (see `sqlite/writes.rs`): a job
/// claimed ahead and never started gets its attempt back once; any other
/// at its budget goes dead.
pub(super) async fn recover_orphans(
    tx: &Transaction<'_>,
    s: &str,
    me: &str,
    now: i64,
) -> Result<usize> {
    let owners: Vec<String> = tx
        .query(
            &format!("SELECT owner FROM {s}.owners WHERE owner <> $1"),
            &[&me],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut moved = 0;
    for owner in owners {
        let dead: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1)",
                &[&owner_key(&owner)],
            )
            .await?
            .get(0);
        if !dead {
            continue;
        }
        let n = tx
            .execute(
                &format!(
                    "UPDATE {s}.jobs SET
                        refunded = refunded + (started_at IS NULL AND refunded = 0)::int,
                        state = CASE WHEN started_at IS NULL AND refunded = 0 THEN 'available'
                                     WHEN attempts >= max_attempts + refunded THEN 'dead'
                                     ELSE 'available' END,
                        finished_at = CASE WHEN started_at IS NULL AND refunded = 0 THEN NULL
                                           WHEN attempts >= max_attempts + refunded THEN $2::int8
                                           ELSE NULL END,
                        last_error = CASE WHEN started_at IS NULL AND refunded = 0 THEN last_error
                                          WHEN attempts >= max_attempts + refunded
                            THEN 'the process running its last attempt died (owner ' || $1 || ')'
                            ELSE last_error END,
                        owner = NULL
                     WHERE state = 'running' AND owner = $1"
                ),
                &[&owner, &now],
            )
            .await?;
        tx.execute(
            &format!("DELETE FROM {s}.owners WHERE owner = $1"),
            &[&owner],
        )
        .await?;
        if n > 0 {
            log::warn!("errands: recovered {n} jobs left running by dead owner {owner}");
        }
        moved += n as usize;
    }
    Ok(moved)
}

/// Puts back the jobs a round claimed (by its token) while they are still
/// this owner's and running: none of them was handed to a handler.
pub(super) async fn release_round(
    client: &impl tokio_postgres::GenericClient,
    s: &str,
    owner: &str,
    token: i64,
) -> Result<u64> {
    Ok(client
        .execute(
            &format!(
                "UPDATE {s}.jobs SET state = 'available', owner = NULL, started_at = NULL,
                        attempts = greatest(attempts - 1, 0)
                  WHERE owner = $1 AND claim_token = $2 AND state = 'running'"
            ),
            &[&owner, &token],
        )
        .await?)
}

pub(super) async fn save_checkpoint(
    tx: &Transaction<'_>,
    s: &str,
    owner: &str,
    id: i64,
    attempt: u32,
    checkpoint: &[u8],
    now: i64,
) -> Result<()> {
    let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
    let n = tx
        .execute(
            &format!(
                "UPDATE {s}.jobs SET checkpoint = $4
                  WHERE id = $1 AND owner = $2 AND attempts = $3 AND state = 'running'"
            ),
            &[&id, &owner, &attempt, &checkpoint],
        )
        .await?;
    if n == 0 {
        return Err(refusal(
            tx,
            s,
            id,
            "save progress (not running in this process)",
            now,
        )
        .await);
    }
    Ok(())
}

pub(super) async fn requeue(
    tx: &Transaction<'_>,
    s: &str,
    target: &DeadTarget,
    now: i64,
) -> Result<u64> {
    let set = format!(
        "UPDATE {s}.jobs SET state = 'available', attempts = 0, refunded = 0, run_at = $1,
                finished_at = NULL, owner = NULL WHERE state = 'dead'"
    );
    Ok(match target {
        DeadTarget::One(id) => {
            let n = tx
                .execute(&format!("{set} AND id = $2"), &[&now, id])
                .await?;
            if n == 0 {
                return Err(refusal(tx, s, *id, "requeue", now).await);
            }
            n
        }
        DeadTarget::Queue(queue) => {
            tx.execute(&format!("{set} AND queue = $2"), &[&now, queue])
                .await?
        }
        DeadTarget::All => tx.execute(&set, &[&now]).await?,
    })
}

pub(super) async fn purge(
    tx: &Transaction<'_>,
    s: &str,
    target: &DeadTarget,
    now: i64,
) -> Result<u64> {
    let delete = format!("DELETE FROM {s}.jobs WHERE state = 'dead'");
    let rows = match target {
        // One job may be any that is not running, as on SQLite: dead,
        // cancelled, or still waiting (its tombstone then says cancelled).
        DeadTarget::One(id) => {
            let rows = tx
                .query(
                    &format!(
                        "DELETE FROM {s}.jobs
                          WHERE state IN ('dead', 'cancelled', 'available') AND id = $1
                         RETURNING state"
                    ),
                    &[id],
                )
                .await?;
            let Some(row) = rows.first() else {
                return Err(refusal(tx, s, *id, "purge", now).await);
            };
            let state: String = row.get(0);
            let how = if state == "dead" {
                "purged"
            } else {
                "cancelled"
            };
            remember(tx, s, &[*id], how, now).await?;
            return Ok(1);
        }
        DeadTarget::Queue(queue) => {
            tx.query(&format!("{delete} AND queue = $1 RETURNING id"), &[queue])
                .await?
        }
        DeadTarget::All => tx.query(&format!("{delete} RETURNING id"), &[]).await?,
    };
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    remember(tx, s, &ids, "purged", now).await?;
    Ok(ids.len() as u64)
}

pub(super) async fn prune_completed(tx: &Transaction<'_>, s: &str, before: i64) -> Result<u64> {
    Ok(tx
        .execute(
            &format!("DELETE FROM {s}.jobs WHERE state = 'completed' AND finished_at < $1"),
            &[&before],
        )
        .await?)
}

/// Tombstones for jobs an operator deleted, so `status(id)` can tell them
/// from completed ones.
pub(super) async fn remember(
    tx: &Transaction<'_>,
    s: &str,
    ids: &[i64],
    how: &str,
    now: i64,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO {s}.tombstones (id, state, at) SELECT unnest($1::int8[]), $2, $3
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, at = excluded.at"
        ),
        &[&ids, &how, &now],
    )
    .await?;
    Ok(())
}

/// Why an operation on job `id` changed nothing.
pub(super) async fn refusal(
    tx: &Transaction<'_>,
    s: &str,
    id: i64,
    action: &'static str,
    now: i64,
) -> Error {
    let row = tx
        .query_opt(
            &format!("SELECT state, run_at, started_at IS NOT NULL FROM {s}.jobs WHERE id = $1"),
            &[&id],
        )
        .await;
    match row {
        Ok(None) => Error::NotFound(id),
        Ok(Some(row)) => Error::WrongState {
            id,
            state: JobState::from_row(row.get(0), row.get(1), now, row.get(2)),
            action,
        },
        Err(e) => e.into(),
    }
}
