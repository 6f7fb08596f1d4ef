//! Live control on PostgreSQL, as SQLite's `controls.rs`: the stored knobs
//! (`controls`), cancelling (at once for a waiting job, by a stored
//! request for a running one), settling requests whose job stopped
//! running, and the retention of dead and cancelled jobs.
//!
//! Times in the knobs (a pause's or a throttle's end) are stored in the
//! server's clock, like every `run_at`, so hosts with skewed clocks agree
//! on when a pause ends; "until resumed" is `i64::MAX` on every clock.

use super::writes::{refusal, remember};
use super::PgStore;
use crate::error::Result;
use crate::store::{CancelAnswer, ControlRow, ControlWrite, QueueControls, StoreFuture};

/// A pause's or throttle's end as the server's time (`i64::MAX` stays).
fn to_server(store: &super::Shared, at: i64) -> i64 {
    if at == i64::MAX {
        at
    } else {
        store.time.to_server(at)
    }
}

fn to_local(store: &super::Shared, at: i64) -> i64 {
    if at == i64::MAX {
        at
    } else {
        store.time.to_local(at)
    }
}

pub(super) fn write(store: &PgStore, change: ControlWrite) -> StoreFuture<()> {
    let shared = store.shared.clone();
    store.spawn(async move {
        let client = shared.client().await?;
        let s = &shared.schema;
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        match &change {
            ControlWrite::Concurrency { queue, kind, limit } => {
                client
                    .execute(
                        &format!(
                            "INSERT INTO {s}.controls (queue, kind, concurrency) VALUES ($1, $2, $3)
                             ON CONFLICT (queue, kind) DO UPDATE SET concurrency = excluded.concurrency"
                        ),
                        &[queue, kind, &limit.map(as_i64)],
                    )
                    .await?
            }
            ControlWrite::Pause { queue, kind, until } => {
                let until = until.map(|at| to_server(&shared, at));
                client
                    .execute(
                        &format!(
                            "INSERT INTO {s}.controls (queue, kind, paused_until) VALUES ($1, $2, $3)
                             ON CONFLICT (queue, kind) DO UPDATE SET paused_until = excluded.paused_until"
                        ),
                        &[queue, &kind.as_deref().unwrap_or(""), &until],
                    )
                    .await?
            }
            ControlWrite::Throttle { queue, kind, until } => {
                let until = to_server(&shared, *until);
                client
                    .execute(
                        &format!(
                            "INSERT INTO {s}.controls (queue, kind, throttled_until) VALUES ($1, $2, $3)
                             ON CONFLICT (queue, kind) DO UPDATE SET throttled_until =
                                 greatest({s}.controls.throttled_until, excluded.throttled_until)"
                        ),
                        &[queue, kind, &until],
                    )
                    .await?
            }
        };
        Ok(())
    })
}

async fn read_rows(
    client: &deadpool_postgres::Object,
    shared: &super::Shared,
    queue: Option<&str>,
) -> Result<Vec<ControlRow>> {
    let s = &shared.schema;
    let rows = client
        .query(
            &format!(
                "SELECT queue, kind, concurrency, paused_until, throttled_until FROM {s}.controls
                  WHERE $1::text IS NULL OR queue = $1 ORDER BY queue, kind"
            ),
            &[&queue],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ControlRow {
            queue: row.get(0),
            kind: row.get(1),
            concurrency: row
                .get::<_, Option<i64>>(2)
                .map(|n| usize::try_from(n).unwrap_or(0)),
            paused_until: row.get::<_, Option<i64>>(3).map(|at| to_local(shared, at)),
            throttled_until: row.get::<_, Option<i64>>(4).map(|at| to_local(shared, at)),
        })
        .collect())
}

pub(super) fn rows(store: &PgStore, queue: Option<String>) -> StoreFuture<Vec<ControlRow>> {
    let shared = store.shared.clone();
    store.spawn(async move {
        let client = shared.client().await?;
        read_rows(&client, &shared, queue.as_deref()).await
    })
}

pub(super) fn for_queue(store: &PgStore, queue: &'static str) -> StoreFuture<QueueControls> {
    let shared = store.shared.clone();
    store.spawn(async move {
        let client = shared.client().await?;
        let rows = read_rows(&client, &shared, Some(queue)).await?;
        let s = &shared.schema;
        // The requests first (almost always none), then their jobs by
        // primary key: a join lets the planner scan every job (seen in
        // EXPLAIN: a sequential scan of `jobs` at every poll).
        let requests: Vec<(i64, String)> = client
            .query(&format!("SELECT id, reason FROM {s}.cancels"), &[])
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        if requests.is_empty() {
            return Ok(QueueControls {
                rows,
                cancels: Vec::new(),
            });
        }
        let ids: Vec<i64> = requests.iter().map(|(id, _)| *id).collect();
        let held: std::collections::HashSet<i64> = client
            .query(
                &format!(
                    "SELECT id FROM {s}.jobs
                      WHERE id = ANY($1) AND queue = $2 AND owner = $3 AND state = 'running'"
                ),
                &[&ids, &queue, &&*shared.owner],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let cancels = requests
            .into_iter()
            .filter(|(id, _)| held.contains(id))
            .collect();
        Ok(QueueControls { rows, cancels })
    })
}

pub(super) fn cancel(
    store: &PgStore,
    id: i64,
    reason: String,
    now: i64,
) -> StoreFuture<CancelAnswer> {
    store.in_transaction(move |tx, shared| {
        Box::pin(async move {
            let s = &shared.schema;
            let now = shared.time.to_server(now);
            let n = tx
                .execute(
                    &format!(
                        "UPDATE {s}.jobs SET state = 'cancelled', finished_at = $2, last_error = $3
                          WHERE id = $1 AND state = 'available'"
                    ),
                    &[&id, &now, &reason],
                )
                .await?;
            if n > 0 {
                return Ok(CancelAnswer::Cancelled);
            }
            // Locks the row: its outcome cannot slip in between.
            let running = tx
                .query_opt(
                    &format!(
                        "SELECT queue FROM {s}.jobs WHERE id = $1 AND state = 'running' FOR UPDATE"
                    ),
                    &[&id],
                )
                .await?;
            let Some(row) = running else {
                return Err(refusal(tx, s, id, "cancel", now).await);
            };
            tx.execute(
                &format!(
                    "INSERT INTO {s}.cancels (id, reason, at) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[&id, &reason, &now],
            )
            .await?;
            Ok(CancelAnswer::Requested { queue: row.get(0) })
        })
    })
}

pub(super) fn settle_cancels(store: &PgStore, now: i64) -> StoreFuture<u64> {
    store.in_transaction(move |tx, shared| {
        Box::pin(async move {
            let s = &shared.schema;
            let now = shared.time.to_server(now);
            // By primary key, as in `for_queue`: a join scanned every job.
            let ids: Vec<i64> = tx
                .query(&format!("SELECT id FROM {s}.cancels"), &[])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if ids.is_empty() {
                return Ok(0);
            }
            let n = tx
                .execute(
                    &format!(
                        "UPDATE {s}.jobs j SET state = 'cancelled', finished_at = $1,
                                last_error = c.reason
                           FROM {s}.cancels c
                          WHERE j.id = ANY($2) AND j.id = c.id AND j.state = 'available'"
                    ),
                    &[&now, &ids],
                )
                .await?;
            tx.execute(
                &format!(
                    "DELETE FROM {s}.cancels c WHERE c.id = ANY($1) AND c.id NOT IN (
                        SELECT id FROM {s}.jobs WHERE id = ANY($1) AND state = 'running')"
                ),
                &[&ids],
            )
            .await?;
            Ok(n)
        })
    })
}

pub(super) fn prune_dead(store: &PgStore, before: i64, batch: usize, now: i64) -> StoreFuture<u64> {
    store.in_transaction(move |tx, shared| {
        Box::pin(async move {
            let s = &shared.schema;
            let (before, now) = (shared.time.to_server(before), shared.time.to_server(now));
            let batch = i64::try_from(batch).unwrap_or(i64::MAX);
            let mut total = 0;
            for (state, how) in [("dead", "purged"), ("cancelled", "cancelled")] {
                let ids: Vec<i64> = tx
                    .query(
                        &format!(
                            "DELETE FROM {s}.jobs WHERE id IN (
                                SELECT id FROM {s}.jobs WHERE state = '{state}' AND finished_at < $1
                                 LIMIT $2 FOR UPDATE SKIP LOCKED)
                             RETURNING id"
                        ),
                        &[&before, &batch],
                    )
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                remember(tx, s, &ids, how, now).await?;
                total += ids.len() as u64;
            }
            Ok(total)
        })
    })
}
