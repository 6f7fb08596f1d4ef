//! The torture suite: SIGKILL loops, several processes on one file, and a
//! read-only database.
//!
//! `ERRANDS_TORTURE_LONG=1` runs the same tests at ten times the size.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libtest_mimic::Failed;

use super::harness;

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
    let kills = 50 * scale();
    let dir = tempfile::tempdir()?;
    let (db, ledger) = (dir.path().join("jobs.db"), dir.path().join("ledger"));
    let env = |enqueue: usize| {
        vec![
            ("ENQUEUE", enqueue.to_string()),
            ("CONCURRENCY", "8".to_string()),
            ("WORK_MS", "2".to_string()),
            ("MAX_ATTEMPTS", MAX_ATTEMPTS.to_string()),
        ]
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
    let dead = harness::dead_ids(&db);
    assert_eq!(
        harness::rows_left(&db),
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
    let reruns: usize = done.values().map(|n| n - 1).sum();
    assert!(
        reruns <= cut_short,
        "{reruns} re-runs but only {cut_short} attempts were cut short"
    );
    println!(
        "kill loop: {kills} kills ({kills_before_ack} possibly before the ack), {} acknowledged jobs, \
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
    let jobs = 20_000 * scale();
    let dir = tempfile::tempdir()?;
    let (db, ledger) = (dir.path().join("jobs.db"), dir.path().join("ledger"));
    let mut producer = harness::spawn(
        &db,
        &ledger,
        &[
            ("ENQUEUE", jobs.to_string()),
            ("NO_WORKERS", "1".to_string()),
        ],
    );
    let acked = harness::parse_ids(&producer.wait_for("acked "));
    producer.wait_for("drained");
    producer.finish();
    assert_eq!(acked.len(), jobs);

    let env = [
        ("CONCURRENCY", "16".to_string()),
        ("WORK_MS", "0".to_string()),
        ("POLL_MS", "20".to_string()),
    ];
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
    assert_eq!(harness::rows_left(&db), 0);
    let mut per_process: HashMap<u32, usize> = HashMap::new();
    for e in entries.iter().filter(|e| e.end) {
        *per_process.entry(e.pid).or_default() += 1;
    }
    println!(
        "four processes: {jobs} jobs, split {:?}",
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
