//! SIGKILL on PostgreSQL: several processes share one queue; one is killed
//! and the others finish its work, at once (its advisory lock went with
//! its connection), and no job ever runs twice at the same time.

use std::collections::HashSet;
use std::time::Instant;

use libtest_mimic::Failed;

use crate::common::{Backend, TestStore};
use crate::harness;

/// A process holding 4 running jobs and up to 64 claimed ahead is killed;
/// a second process, already running, recovers them within its recovery
/// interval and runs them all. Every acknowledged job completes.
pub fn a_killed_hosts_jobs_run_on_another() -> Result<(), Failed> {
    let store = TestStore::new(Backend::Postgres);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("unused.db");
    let ledger = dir.path().join("ledger");
    let schema = ("ERRANDS_PG_SCHEMA", store.schema.clone());
    let hanging = [
        schema.clone(),
        ("CONCURRENCY", "4".to_string()),
        ("WORK_MS", "600000".to_string()),
        ("ENQUEUE", "200".to_string()),
    ];
    let mut first = harness::spawn(&db, &ledger, &hanging);
    let mut acked = HashSet::new();
    let mut started = 0;
    while acked.is_empty() || started < 4 {
        let line = first.next_line();
        if let Some(ids) = line.strip_prefix("acked ") {
            acked.extend(harness::parse_ids(ids.trim()));
        } else if line.starts_with("started ") {
            started += 1;
        }
    }
    let quick = [
        schema,
        ("CONCURRENCY", "8".to_string()),
        ("WORK_MS", "1".to_string()),
        ("RECOVERY_MS", "100".to_string()),
    ];
    let mut second = harness::spawn(&db, &ledger, &quick);
    // The second host works through what the first did not hold; then the
    // first dies.
    let mut seen = 0;
    while seen < 20 {
        if second.next_line().starts_with("started ") {
            seen += 1;
        }
    }
    let killed_at = Instant::now();
    first.kill();
    second.wait_for("drained");
    let drained_after = killed_at.elapsed();
    second.finish();

    let ledger = harness::read_ledger(&ledger);
    let done: HashSet<i64> = harness::completions(&ledger).keys().copied().collect();
    assert_eq!(done, acked, "every acknowledged job completed");
    let cut = harness::assert_no_overlap(&ledger);
    assert_eq!(
        cut, 4,
        "the four hanging attempts were cut short and re-run"
    );
    println!(
        "postgres kill: {} jobs, the killed host's work done elsewhere {} ms after the kill",
        acked.len(),
        drained_after.as_millis()
    );
    Ok(())
}
