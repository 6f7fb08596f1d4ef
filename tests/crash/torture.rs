//! The torture suite: SIGKILL loops, several processes on one file, and a
//! read-only database.
//!
//! `ERRANDS_TORTURE_LONG=1` runs the same tests at ten times the size.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libtest_mimic::Failed;

use super::harness::{self, Db};
use crate::common::{Backend, TestStore};

fn scale() -> usize {
    if std::env::var_os("ERRANDS_TORTURE_LONG").is_some() {
        10
    } else {
        1
    }
}

const MAX_ATTEMPTS: u32 = 25;

/// The application is killed at random moments, over and over, while it
/// enqueues and runs jobs; a last run finishes. Every acknowledged job
/// completes (or, if kills used up its attempts, is dead, never both), no job
/// runs twice at once, attempts never exceed the maximum, and re-runs happen
/// only to attempts a kill cut short.
pub fn kill_loop_loses_nothing() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    kill_loop(&dir, Db::Sqlite(dir.path().join("jobs.db")), 50 * scale())
}

/// The kill loop on PostgreSQL (20 kills): the killed process's advisory
/// lock goes with its connection, and the next process recovers its jobs.
pub fn postgres_kill_loop_loses_nothing() -> Result<(), Failed> {
    let store = TestStore::new(Backend::Postgres);
    let dir = tempfile::tempdir()?;
    kill_loop(&dir, Db::Postgres(store.schema.clone()), 20 * scale())
}

fn kill_loop(dir: &tempfile::TempDir, store: Db, kills: usize) -> Result<(), Failed> {
    let (db, ledger) = (store.path(dir.path()), dir.path().join("ledger"));
    let env = |enqueue: usize| {
        store.env(&[
            ("ENQUEUE", enqueue.to_string()),
            ("CONCURRENCY", "8".to_string()),
            ("WORK_MS", "2".to_string()),
            ("MAX_ATTEMPTS", MAX_ATTEMPTS.to_string()),
            // The server notices a killed client's connection a moment
            // after the kill: look again soon, not only at start.
            ("RECOVERY_MS", "200".to_string()),
        ])
    };
    let mut acked: HashSet<i64> = HashSet::new();
    let mut kills_before_ack = 0;
    for round in 0..kills {
        let mut child = harness::spawn(&db, &ledger, &env(40));
        // One kill in five lands anywhere, even before the enqueue is
        // acknowledged; the rest land while jobs run.
        if round % 5 != 0 {
            acked.extend(harness::parse_ids(&child.wait_for("acked ")));
        } else {
            kills_before_ack += 1;
        }
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..20_000)));
        child.kill();
    }
    let mut last = harness::spawn(&db, &ledger, &env(0));
    last.wait_for("drained");
    last.finish();

    let entries = harness::read_ledger(&ledger);
    let cut_short = harness::assert_no_overlap(&entries);
    assert!(
        entries.iter().all(|e| e.attempt <= MAX_ATTEMPTS),
        "an attempt beyond the maximum"
    );
    let done = harness::completions(&entries);
    let dead = store.dead_ids();
    assert_eq!(
        store.rows_left(),
        dead.len() as i64,
        "only dead jobs remain"
    );
    for id in &acked {
        assert!(
            done.contains_key(id) ^ dead.contains(id),
            "acknowledged job {id}: completed {:?}, dead {}",
            done.get(id),
            dead.contains(id)
        );
    }
    // A handler runs to its end again only if a kill cut its earlier
    // attempt short, or came after that attempt's end but before its
    // completion was committed (no `committed` line: the child records
    // each completion once the commit's event arrives). Nothing starts
    // after a committed completion.
    harness::assert_nothing_runs_after_commit(&entries);
    let committed: HashSet<(i64, u32)> = entries
        .iter()
        .filter(|e| e.committed)
        .map(|e| (e.id, e.attempt))
        .collect();
    let uncommitted_ends = entries
        .iter()
        .filter(|e| e.end && !committed.contains(&(e.id, e.attempt)))
        .count();
    let reruns: usize = done.values().map(|n| n - 1).sum();
    assert!(
        reruns <= cut_short + uncommitted_ends,
        "{reruns} re-runs but only {cut_short} attempts were cut short and {uncommitted_ends} \
         completions went uncommitted"
    );
    let name = match store {
        Db::Sqlite(_) => "kill loop",
        Db::Postgres(_) => "postgres kill loop",
    };
    println!(
        "{name}: {kills} kills ({kills_before_ack} possibly before the ack), {} acknowledged jobs, \
         {} completed, {} dead, 0 lost, {cut_short} attempts cut short by kills, {reruns} handlers re-ran to the end",
        acked.len(),
        done.len(),
        dead.len()
    );
    Ok(())
}

/// Four processes share one database file and 20,000 jobs: all complete,
/// each exactly once, never two at once, and no error (SQLITE_BUSY
/// included) reaches the application or the engine's log.
pub fn four_processes_share_one_file() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    four_processes(&dir, Db::Sqlite(dir.path().join("jobs.db")), 20_000, None)
}

/// Four processes share one PostgreSQL database and 20,000 jobs, as on
/// SQLite.
pub fn postgres_four_processes_share_one_database() -> Result<(), Failed> {
    let store = TestStore::new(Backend::Postgres);
    let dir = tempfile::tempdir()?;
    four_processes(&dir, Db::Postgres(store.schema.clone()), 20_000, None)
}

/// Four processes on one PostgreSQL database, 4 at once each but 8 at
/// once across all four (`global_concurrency`): all 400 jobs (20 ms each)
/// complete, each once, and the ledger never shows more than 8 running,
/// yet more than one process's 4 (unenforced, it reaches 16).
pub fn postgres_four_processes_with_a_global_limit() -> Result<(), Failed> {
    let store = TestStore::new(Backend::Postgres);
    let dir = tempfile::tempdir()?;
    // Fewer, longer jobs: every claim of a globally limited kind holds the
    // kind's lock until it commits, so such claims go one at a time across
    // hosts (measured: 20,000 one-millisecond jobs took 45 s).
    four_processes(&dir, Db::Postgres(store.schema.clone()), 400, Some(8))
}

fn four_processes(
    dir: &tempfile::TempDir,
    store: Db,
    jobs: usize,
    global: Option<usize>,
) -> Result<(), Failed> {
    let jobs = jobs * scale();
    let (db, ledger) = (store.path(dir.path()), dir.path().join("ledger"));
    let mut producer = harness::spawn(
        &db,
        &ledger,
        &store.env(&[
            ("ENQUEUE", jobs.to_string()),
            ("NO_WORKERS", "1".to_string()),
        ]),
    );
    let acked = harness::parse_ids(&producer.wait_for("acked "));
    producer.wait_for("drained");
    producer.finish();
    assert_eq!(acked.len(), jobs);

    let mut env = vec![
        ("CONCURRENCY", "16".to_string()),
        ("WORK_MS", "0".to_string()),
        ("POLL_MS", "20".to_string()),
    ];
    if let Some(global) = global {
        env.push(("GLOBAL", global.to_string()));
        // Half the global limit each, so reaching it takes two processes,
        // and jobs that last, so that the limit is what holds them back.
        env[0].1 = (global / 2).to_string();
        env[1].1 = "20".to_string();
    }
    let env = store.env(&env);
    let mut workers: Vec<_> = (0..4).map(|_| harness::spawn(&db, &ledger, &env)).collect();
    for worker in &mut workers {
        assert_eq!(worker.wait_for("log errors "), "0", "errors were logged");
        worker.wait_for("drained");
    }
    for worker in workers {
        worker.finish();
    }

    let entries = harness::read_ledger(&ledger);
    harness::assert_no_overlap(&entries);
    let done = harness::completions(&entries);
    assert_eq!(done.len(), jobs, "every job completed");
    assert!(done.values().all(|n| *n == 1), "no job ran twice");
    assert_eq!(store.rows_left(), 0);
    let peak = harness::peak_running(&entries);
    if let Some(global) = global {
        assert!(
            peak <= global,
            "{peak} ran at once, over the global {global}"
        );
        assert!(
            peak > global / 2,
            "only {peak} at once: one process's worth"
        );
    }
    let mut per_process: HashMap<u32, usize> = HashMap::new();
    for e in entries.iter().filter(|e| e.end) {
        *per_process.entry(e.pid).or_default() += 1;
    }
    println!(
        "four processes{}: {jobs} jobs, split {:?}, at most {peak} at once",
        global.map_or(String::new(), |g| format!(" (global limit {g})")),
        per_process.values().collect::<Vec<_>>()
    );
    Ok(())
}

/// A database file the process may not write is refused at start with an
/// error that says so.
pub fn read_only_database_is_a_clear_error_at_start() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let (db, ledger) = (dir.path().join("jobs.db"), dir.path().join("ledger"));
    let mut create = harness::spawn(&db, &ledger, &[("NO_WORKERS", "1".to_string())]);
    create.wait_for("drained");
    create.finish();

    // Root ignores file modes: run the child as `nobody` then, from a copy
    // of this binary that `nobody` can reach (the build directory may not
    // be).
    let exe = dir.path().join("child");
    std::fs::copy(std::env::current_exe()?, &exe)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555))?;
    let uid = (effective_uid() == 0).then_some(65534);
    let env = [("OPEN_ONLY", "1".to_string())];
    let mut child = harness::spawn_as(&exe, &db, &ledger, &env, uid);
    let line = child.wait_for("open ");
    child.finish();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    assert!(line.starts_with("error: Open"), "{line}");
    assert!(
        line.contains("readonly") || line.contains("read-only") || line.contains("read only"),
        "{line}"
    );
    assert!(line.contains("jobs.db"), "the error names the file: {line}");
    Ok(())
}

/// The effective user id, read from /proc (no libc binding needed).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}
