//! The PostgreSQL schema and its forward-only migrations.
//!
//! Everything lives in one PostgreSQL schema (default `errands`), so that an
//! application's own tables never collide with errands' and a test can use a
//! schema of its own. The version lives in `<schema>.version`. Several hosts
//! start at once: each migrates inside one transaction under a transaction
//! advisory lock, so exactly one applies each step and the rest find it
//! done. A schema written by a newer errands is refused, naming both
//! versions, as on SQLite.
//!
//! Times are milliseconds since the epoch in `bigint`s, as on SQLite, so
//! that the engine (and a test's fake clock) means the same thing on both.

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// The newest schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// Migration `n` (1-based) takes the schema from version `n-1` to `n`.
/// `{s}` is replaced by the schema name.
const MIGRATIONS: &[&str] = &[
    // 1: the jobs table (as SQLite's at its version 3) and tombstones.
    "CREATE TABLE {s}.jobs (
        id           bigserial PRIMARY KEY,
        queue        text    NOT NULL,
        kind         text    NOT NULL,
        state        text    NOT NULL CHECK (state IN ('available', 'running', 'dead', 'completed')),
        payload      bytea   NOT NULL,
        attempts     integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL,
        refunded     integer NOT NULL DEFAULT 0,
        run_at       bigint  NOT NULL,
        created_at   bigint  NOT NULL,
        started_at   bigint,
        finished_at  bigint,
        owner        text,
        last_error   text,
        checkpoint   bytea,
        -- The claiming round's random token: a round whose commit was cut
        -- off puts back what it may have claimed by this.
        claim_token  bigint,
        -- Claimed under a global limit (`global_concurrency`): counted by
        -- the next claims of its kind on every host.
        global_slot  boolean NOT NULL DEFAULT false
    );
    CREATE INDEX jobs_ready ON {s}.jobs (queue, kind, run_at, id) WHERE state = 'available';
    -- No index over running rows (SQLite has one by owner): a claim is an
    -- UPDATE that moves the row into such an index, one more index insert
    -- per job, and the drain is bound by the server's CPU (measured: 0.55x
    -- raw with one, 0.59-0.62x without). Outcomes find their rows by
    -- primary key; recovery finds owners in `owners` below and scans for a
    -- dead owner's rows only when one has died. (An index by owner was
    -- worse still: each claimed job left a dead entry under the same owner,
    -- and the planner walked them all for every round's outcomes: 0.12x.)
    -- Only rows claimed under a global limit are indexed, for its count.
    CREATE INDEX jobs_global_running ON {s}.jobs (queue, kind)
        WHERE state = 'running' AND global_slot;
    CREATE INDEX jobs_dead ON {s}.jobs (queue, finished_at) WHERE state = 'dead';
    CREATE INDEX jobs_completed ON {s}.jobs (finished_at) WHERE state = 'completed';
    -- Every started instance, until recovery finds it dead (its advisory
    -- lock free) and has put back what it held, or it closes holding
    -- nothing.
    CREATE TABLE {s}.owners (
        owner      text   PRIMARY KEY,
        started_at bigint NOT NULL
    );
    CREATE TABLE {s}.tombstones (
        id    bigint PRIMARY KEY,
        state text   NOT NULL CHECK (state IN ('cancelled', 'purged')),
        at    bigint NOT NULL
    );",
    // 2: live control, as SQLite's version 4: a kept `cancelled` state,
    // the stored knobs (a queue's row has an empty kind) and the cancel
    // requests for running jobs.
    "ALTER TABLE {s}.jobs DROP CONSTRAINT jobs_state_check;
    ALTER TABLE {s}.jobs ADD CONSTRAINT jobs_state_check
        CHECK (state IN ('available', 'running', 'dead', 'completed', 'cancelled'));
    CREATE INDEX jobs_cancelled ON {s}.jobs (finished_at) WHERE state = 'cancelled';
    CREATE TABLE {s}.controls (
        queue           text   NOT NULL,
        kind            text   NOT NULL,
        concurrency     bigint,
        paused_until    bigint,
        throttled_until bigint,
        PRIMARY KEY (queue, kind)
    );
    CREATE TABLE {s}.cancels (
        id     bigint PRIMARY KEY,
        reason text   NOT NULL,
        at     bigint NOT NULL
    );",
];

/// Brings `schema` up to [`SCHEMA_VERSION`], or refuses a newer one.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<()> {
    let tx = client.transaction().await?;
    // One key per schema: hosts migrating different schemas do not wait.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('errands migrate ' || $1, 0))",
        &[&schema],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.version (one boolean PRIMARY KEY DEFAULT true CHECK (one), version bigint NOT NULL);
         INSERT INTO {schema}.version (version) VALUES (0) ON CONFLICT DO NOTHING;"
    ))
    .await?;
    let found: i64 = tx
        .query_one(&format!("SELECT version FROM {schema}.version"), &[])
        .await?
        .get(0);
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
        tx.batch_execute(&sql.replace("{s}", schema)).await?;
        tx.execute(
            &format!("UPDATE {schema}.version SET version = $1"),
            &[&version],
        )
        .await?;
        log::info!("errands: migrated PostgreSQL schema {schema} to version {version}");
    }
    tx.commit().await?;
    Ok(())
}
