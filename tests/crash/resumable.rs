//! Resumable jobs across SIGKILL: finished steps stay finished, cursors
//! resume after the last saved position, and `ctx.transaction` keeps the
//! application's rows and the checkpoint in agreement.

use libtest_mimic::Failed;

use super::harness;

fn count(lines: &[String], exact: &str) -> usize {
    lines.iter().filter(|l| l.as_str() == exact).count()
}

/// Killed inside step two: the restart skips step one and runs two and three.
pub fn killed_in_step_two_resumes_at_step_two() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let (db, ledger) = (dir.path().join("jobs.db"), dir.path().join("ledger"));
    let mut first = harness::spawn(
        &db,
        &ledger,
        &[("ENQUEUE_KIND", "steps".into()), ("HANG", "1".into())],
    );
    let before = first.lines_until("step two started");
    first.kill();
    let mut second = harness::spawn(&db, &ledger, &[]);
    let after = second.lines_until("drained");
    second.finish();
    assert_eq!(count(&before, "step one"), 1);
    assert_eq!(
        count(&after, "step one"),
        0,
        "step one is not run again: {after:?}"
    );
    assert_eq!(count(&after, "step two started"), 1);
    assert_eq!(count(&after, "step three"), 1);
    assert_eq!(harness::rows_left(&db), 0);
    Ok(())
}

/// A loop over 10,000 ids, checkpointed every 100, killed midway: the
/// restart begins right after the last saved id and every id is visited.
pub fn cursor_loop_resumes_after_the_last_saved_id() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let (db, ledger) = (dir.path().join("jobs.db"), dir.path().join("ledger"));
    let mut first = harness::spawn(
        &db,
        &ledger,
        &[("ENQUEUE_KIND", "cursor".into()), ("N", "10000".into())],
    );
    let mut last_saved = 0;
    for _ in 0..30 {
        last_saved = first.wait_for("saved ").parse::<i64>()?;
    }
    first.kill();
    let visited_before = harness::read_ledger(&ledger)
        .iter()
        .filter(|e| !e.committed)
        .count();

    let mut second = harness::spawn(&db, &ledger, &[]);
    let resumed: i64 = second.wait_for("resume from ").parse()?;
    second.wait_for("drained");
    second.finish();

    // The kill may land after a checkpoint committed but before it printed.
    assert!(
        resumed == last_saved + 1 || resumed == last_saved + 101,
        "resumed at {resumed}, last saved id printed {last_saved}"
    );
    let visits = harness::read_ledger(&ledger);
    let mut seen = vec![0u32; 10_000];
    for v in visits.iter().filter(|e| !e.committed) {
        seen[v.id as usize] += 1;
    }
    assert!(seen.iter().all(|n| *n >= 1), "every id visited");
    let repeated = seen.iter().filter(|n| **n > 1).count();
    assert_eq!(
        repeated as i64,
        visited_before as i64 - resumed,
        "only ids after the checkpoint ran twice"
    );
    assert!(repeated < 100, "{repeated} ids re-visited");
    Ok(())
}

/// Copies 2,000 ids into an application table, 50 per `ctx.transaction`:
/// after the kill, the rows copied and the saved cursor agree exactly.
pub fn transaction_keeps_rows_and_checkpoint_in_agreement() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let (db, ledger) = (dir.path().join("jobs.db"), dir.path().join("ledger"));
    let mut first = harness::spawn(
        &db,
        &ledger,
        &[("ENQUEUE_KIND", "tx".into()), ("N", "2000".into())],
    );
    for _ in 0..12 {
        first.wait_for("copied ");
    }
    first.kill();
    let conn = rusqlite::Connection::open(&db)?;
    let (rows, max): (i64, i64) =
        conn.query_row("SELECT count(*), max(id) FROM copied", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    drop(conn);
    assert_eq!(rows, max + 1, "copied rows are contiguous");

    let mut second = harness::spawn(&db, &ledger, &[]);
    let resumed: i64 = second.wait_for("resume from ").parse()?;
    assert_eq!(
        resumed,
        max + 1,
        "the checkpoint names exactly the rows committed"
    );
    second.wait_for("drained");
    second.finish();
    let conn = rusqlite::Connection::open(&db)?;
    let (rows, max): (i64, i64) =
        conn.query_row("SELECT count(*), max(id) FROM copied", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    assert_eq!((rows, max), (2000, 1999));
    assert_eq!(
        harness::rows_left(&db),
        0,
        "the job completed (a duplicate row would have failed it)"
    );
    Ok(())
}
