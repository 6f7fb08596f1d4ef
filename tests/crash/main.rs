//! Crash tests: real child processes killed with SIGKILL mid-run.
//!
//! This binary is both the test runner and, when started with
//! `ERRANDS_TEST_CHILD` set, the child application being killed.

mod child;
#[path = "../common/mod.rs"]
mod common;
mod harness;
mod postgres;
mod resumable;
mod torture;

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    if std::env::var_os(child::ROLE).is_some() {
        child::run();
        return;
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "sigkill_mid_run_loses_no_acknowledged_job",
            sigkill_mid_run_loses_no_acknowledged_job,
        ),
        Trial::test(
            "orphans_run_before_the_backlog",
            orphans_run_before_the_backlog,
        ),
        Trial::test(
            "a_handler_that_kills_its_process_ends_dead",
            a_handler_that_kills_its_process_ends_dead,
        ),
        Trial::test(
            "a_prefetched_job_that_never_started_keeps_its_attempt",
            a_prefetched_job_that_never_started_keeps_its_attempt,
        ),
        Trial::test(
            "resumable::killed_in_step_two_resumes_at_step_two",
            resumable::killed_in_step_two_resumes_at_step_two,
        ),
        Trial::test(
            "resumable::cursor_loop_resumes_after_the_last_saved_id",
            resumable::cursor_loop_resumes_after_the_last_saved_id,
        ),
        Trial::test(
            "resumable::transaction_keeps_rows_and_checkpoint_in_agreement",
            resumable::transaction_keeps_rows_and_checkpoint_in_agreement,
        ),
        Trial::test(
            "postgres::a_killed_hosts_jobs_run_on_another",
            postgres::a_killed_hosts_jobs_run_on_another,
        ),
        Trial::test(
            "torture::kill_loop_loses_nothing",
            torture::kill_loop_loses_nothing,
        ),
        Trial::test(
            "torture::four_processes_share_one_file",
            torture::four_processes_share_one_file,
        ),
        Trial::test(
            "torture::postgres_four_processes_share_one_database",
            torture::postgres_four_processes_share_one_database,
        ),
        Trial::test(
            "torture::postgres_kill_loop_loses_nothing",
            torture::postgres_kill_loop_loses_nothing,
        ),
        Trial::test(
            "torture::postgres_four_processes_with_a_global_limit",
            torture::postgres_four_processes_with_a_global_limit,
        ),
        Trial::test(
            "torture::read_only_database_is_a_clear_error_at_start",
            torture::read_only_database_is_a_clear_error_at_start,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// Kill the application while 8 jobs run; on restart every job that was
/// running is put back at once and every acknowledged job completes.
fn sigkill_mid_run_loses_no_acknowledged_job() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("jobs.db");
    let ledger = dir.path().join("ledger");
    let env = [
        ("CONCURRENCY", "8".to_string()),
        ("WORK_MS", "20".to_string()),
    ];

    let mut first_env = env.to_vec();
    first_env.push(("ENQUEUE", "300".to_string()));
    let mut first = harness::spawn(&db, &ledger, &first_env);
    let acked = harness::parse_ids(&first.wait_for("acked "));
    assert_eq!(acked.len(), 300);
    for _ in 0..40 {
        first.wait_for("started ");
    }
    first.kill();
    let at_kill = harness::read_ledger(&ledger);
    let done_before = harness::completions(&at_kill);
    let started_before: std::collections::HashSet<i64> =
        at_kill.iter().filter(|e| !e.end).map(|e| e.id).collect();
    assert!(done_before.len() < 300, "the kill came mid-run");

    let mut second = harness::spawn(&db, &ledger, &env);
    second.wait_for("drained");
    second.finish();

    let ledger = harness::read_ledger(&ledger);
    let done = harness::completions(&ledger);
    for id in &acked {
        assert!(
            done.contains_key(id),
            "acknowledged job {id} never completed"
        );
    }
    assert_eq!(done.len(), 300, "only acknowledged jobs ran");
    assert_eq!(harness::rows_left(&db), 0, "no job left behind");
    let cut_short = harness::assert_no_overlap(&ledger);
    harness::assert_nothing_runs_after_commit(&ledger);
    // Re-runs happen only for jobs that had started when the process died.
    let rerun: Vec<i64> = done
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    let in_flight = started_before.len() - done_before.len();
    assert!(in_flight <= 8, "{in_flight} in flight with a limit of 8");
    assert_eq!(
        cut_short, in_flight,
        "every attempt cut short by the kill ran again"
    );
    // A handler runs to the end a second time only if it had started before
    // the kill: cut short, or finished but its outcome not yet committed.
    for id in &rerun {
        assert!(
            started_before.contains(id),
            "job {id} re-ran without having started"
        );
    }
    let uncommitted = rerun
        .iter()
        .filter(|id| done_before.contains_key(id))
        .count();
    assert!(rerun.len() - uncommitted <= in_flight);
    Ok(())
}

/// Jobs a kill interrupted go back to the queue keeping their place: on
/// restart they start before work enqueued after them (they used to go
/// behind the whole backlog, waiting 10–47 s under load).
fn orphans_run_before_the_backlog() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("jobs.db");
    let ledger = dir.path().join("ledger");
    let hanging = [
        ("CONCURRENCY", "4".to_string()),
        ("WORK_MS", "600000".to_string()),
        ("ENQUEUE", "4".to_string()),
    ];
    let mut first = harness::spawn(&db, &ledger, &hanging);
    // The jobs may start before the ack is printed: take both, in any order
    // (waiting for the ack first would skip starts and wait forever).
    let mut orphans = std::collections::HashSet::new();
    let mut started = 0;
    while orphans.is_empty() || started < 4 {
        let line = first.next_line();
        if let Some(ids) = line.strip_prefix("acked ") {
            orphans.extend(harness::parse_ids(ids.trim()));
        } else if line.starts_with("started ") {
            started += 1;
        }
    }
    // A backlog arrives from another process while the four run.
    let producer = [
        ("NO_WORKERS", "1".to_string()),
        ("ENQUEUE", "200".to_string()),
    ];
    let mut second = harness::spawn(&db, &ledger, &producer);
    second.wait_for("drained");
    second.finish();
    first.kill();

    let quick = [
        ("CONCURRENCY", "4".to_string()),
        ("WORK_MS", "1".to_string()),
    ];
    let mut restart = harness::spawn(&db, &ledger, &quick);
    restart.wait_for("drained");
    restart.finish();

    let ledger = harness::read_ledger(&ledger);
    let restart_pid = ledger.last().expect("entries").pid;
    let first_four: std::collections::HashSet<i64> = ledger
        .iter()
        .filter(|e| e.pid == restart_pid && !e.end && !e.committed)
        .take(4)
        .map(|e| e.id)
        .collect();
    assert_eq!(first_four, orphans, "the interrupted jobs start first");
    assert_eq!(harness::completions(&ledger).len(), 204);
    Ok(())
}

/// A job whose handler kills its process every time (`abort()`) must not
/// loop forever: each restart counts the attempt, and the last one ends it
/// dead, saying its process died.
fn a_handler_that_kills_its_process_ends_dead() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("jobs.db");
    let ledger = dir.path().join("ledger");
    let env = [("MAX_ATTEMPTS", "3".to_string())];
    let mut first_env = env.to_vec();
    first_env.push(("ENQUEUE_KIND", "abort".to_string()));
    // The handler may abort the process before it prints the ack: read
    // what the child printed until it died, whatever it was.
    let mut run = harness::spawn(&db, &ledger, &first_env);
    let mut attempts_seen = Vec::new();
    for restart in 0..10 {
        let lines = run.lines_until_exit();
        for line in &lines {
            if let Some(n) = line.strip_prefix("aborting in attempt ") {
                attempts_seen.push(n.parse::<u32>()?);
            }
        }
        if lines.iter().any(|l| l == "drained") {
            break;
        }
        assert!(restart < 9, "still looping after {restart} restarts");
        run = harness::spawn(&db, &ledger, &env);
    }
    assert_eq!(attempts_seen, [1, 2, 3], "each attempt counted once");
    let dead: Vec<i64> = harness::dead_ids(&db).into_iter().collect();
    assert_eq!(dead.len(), 1, "the job ended dead");
    let id = dead[0];
    let conn = rusqlite::Connection::open(&db)?;
    let error: String = conn.query_row(
        "SELECT last_error FROM errands_jobs WHERE id = ?1",
        [id],
        |row| row.get(0),
    )?;
    assert!(
        error.contains("process running its last attempt died"),
        "{error}"
    );
    Ok(())
}

/// Jobs claimed ahead (prefetch) that never started must not lose the
/// attempt their claim counted: with one attempt allowed, a kill while one
/// job runs and 49 wait in the dispatcher's buffer ends only the running
/// one dead; the 49 run after the restart.
fn a_prefetched_job_that_never_started_keeps_its_attempt() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("jobs.db");
    let ledger = dir.path().join("ledger");
    let hanging = [
        ("CONCURRENCY", "1".to_string()),
        ("MAX_ATTEMPTS", "1".to_string()),
        ("WORK_MS", "600000".to_string()),
        ("ENQUEUE", "50".to_string()),
    ];
    let mut first = harness::spawn(&db, &ledger, &hanging);
    let mut acked = Vec::new();
    let mut started = None;
    while acked.is_empty() || started.is_none() {
        let line = first.next_line();
        if let Some(ids) = line.strip_prefix("acked ") {
            acked = harness::parse_ids(ids.trim());
        } else if let Some(id) = line.strip_prefix("started ") {
            started = Some(id.trim().parse::<i64>()?);
        }
    }
    let started = started.expect("one started");
    first.kill();
    // The claim that started the first job claimed the rest ahead, in the
    // same transaction: they are held, unstarted, by the dead process.
    let conn = rusqlite::Connection::open(&db)?;
    let held: i64 = conn.query_row(
        "SELECT count(*) FROM errands_jobs WHERE state = 'running' AND started_at IS NULL",
        [],
        |row| row.get(0),
    )?;
    drop(conn);
    assert!(held > 0, "jobs were claimed ahead when the process died");

    let quick = [
        ("CONCURRENCY", "1".to_string()),
        ("MAX_ATTEMPTS", "1".to_string()),
        ("WORK_MS", "1".to_string()),
    ];
    let mut restart = harness::spawn(&db, &ledger, &quick);
    restart.wait_for("drained");
    restart.finish();

    let dead = harness::dead_ids(&db);
    assert_eq!(
        dead,
        [started].into_iter().collect(),
        "only the job that started used its one attempt"
    );
    let ledger = harness::read_ledger(&ledger);
    let done = harness::completions(&ledger);
    assert_eq!(done.len(), acked.len() - 1, "every other job completed");
    assert!(!done.contains_key(&started));
    // Attempt numbers never repeat: the given-back attempt was number 1.
    let restarted: Vec<u32> = ledger
        .iter()
        .filter(|e| e.end && !e.committed)
        .map(|e| e.attempt)
        .collect();
    assert!(restarted.iter().all(|&a| a == 2), "{restarted:?}");
    Ok(())
}
