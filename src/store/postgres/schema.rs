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
pub(crate) const SCHEMA_VERSION: i64 = 1;

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
        claim_token  bigint
    );
    CREATE INDEX jobs_ready ON {s}.jobs (queue, kind, run_at, id) WHERE state = 'available';
    -- Running rows by id, not by owner (as SQLite has it): every claimed
    -- row leaves a dead entry behind in this index until vacuum, all under
    -- the same owner, and the planner used an owner index for the round's
    -- outcomes, walking them all (a 200,000-job drain fell to 0.12x raw).
    -- Keyed by id, lookups go straight to the rows.
    CREATE INDEX jobs_running ON {s}.jobs (id) WHERE state = 'running';
    CREATE INDEX jobs_dead ON {s}.jobs (queue, finished_at) WHERE state = 'dead';
    CREATE INDEX jobs_completed ON {s}.jobs (finished_at) WHERE state = 'completed';
    CREATE TABLE {s}.tombstones (
        id    bigint PRIMARY KEY,
        state text   NOT NULL CHECK (state IN ('cancelled', 'purged')),
        at    bigint NOT NULL
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
