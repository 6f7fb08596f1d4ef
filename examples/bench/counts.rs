//! `counts()` with a million jobs kept: errands reads its per-group
//! counters; the baseline is the `GROUP BY` scan of the whole table that
//! answered `counts()` before (and that any status page would otherwise run).

use std::path::Path;
use std::time::{Duration, Instant};

use errands::Errands;

use super::Settings;

/// The same query `counts()` used to run: every row, every call.
const SCAN: &str = "SELECT queue, kind, state, run_at > ?1, count(*) FROM errands_jobs
                    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2";

/// Calls timed per side; the median is reported.
const CALLS: usize = 9;

/// Fills a database with `n` jobs kept (90% dead, 10% completed, plus a
/// thousand waiting over four kinds), then times `counts()` and the scan.
/// Answers (errands ms, baseline ms), medians.
pub async fn counts(dir: &Path, settings: &Settings, n: usize) -> (f64, f64) {
    let path = dir.join("counts.db");
    let _ = std::fs::remove_file(&path);
    // Create the schema the way errands does, then write rows directly
    // (a million through the API would take most of the bench's time).
    let errands = Errands::builder()
        .sqlite_options(errands::SqliteOptions::new(&path).synchronous(settings.synchronous))
        .start()
        .await
        .unwrap();
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
    drop(errands);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        let mut insert = conn
            .prepare(
                "INSERT INTO errands_jobs (queue, kind, state, payload, max_attempts, run_at,
                    created_at, finished_at, last_error)
                 VALUES ('default', ?1, ?2, x'0100', 25, ?3, 0, 1, ?4)",
            )
            .unwrap();
        for i in 0..n + 1000 {
            let kind = ["a", "b", "c", "d"][i % 4];
            let (state, run_at) = if i >= n {
                ("available", if i % 2 == 0 { 0 } else { i64::MAX / 2 })
            } else if i % 10 == 0 {
                ("completed", 0)
            } else {
                ("dead", 0)
            };
            let error = (state == "dead").then_some("failed on purpose");
            insert
                .execute(rusqlite::params![kind, state, run_at, error])
                .unwrap();
        }
        drop(insert);
        // Rows written behind errands' back: rebuild its counters, as the
        // migration that introduced them does.
        conn.execute_batch(
            "DELETE FROM errands_counts;
             INSERT INTO errands_counts (queue, kind, state, n)
                 SELECT queue, kind, state, count(*) FROM errands_jobs GROUP BY 1, 2, 3;
             COMMIT;",
        )
        .unwrap();
    }

    let errands = Errands::builder()
        .sqlite_options(errands::SqliteOptions::new(&path).synchronous(settings.synchronous))
        .start()
        .await
        .unwrap();
    let mut ours = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        let counts = errands.counts().await.unwrap();
        ours.push(start.elapsed().as_secs_f64() * 1000.0);
        let total: u64 = counts
            .iter()
            .map(|c| c.pending() + c.dead + c.completed)
            .sum();
        assert_eq!(total as usize, n + 1000);
    }
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
    drop(errands);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut scans = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        let groups: usize = conn
            .prepare_cached(SCAN)
            .unwrap()
            .query_map([0i64], |_| Ok(()))
            .unwrap()
            .count();
        scans.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(groups >= 8);
    }
    (median(&mut ours), median(&mut scans))
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}
