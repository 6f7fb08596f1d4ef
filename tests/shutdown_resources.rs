//! Shutdown closes the database and gives back what `start()` took: the
//! `.db` file alone holds every acknowledged job (the WAL is checkpointed
//! into it), and start/shutdown cycles leak no threads or file descriptors.
//! Alone in its binary, so that no other test's threads or files are counted.

mod common;

use std::time::Duration;

use errands::{Errands, Job, JobContext, JobResult};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Later(u32);

impl Job for Later {
    const KIND: &'static str = "later";
    async fn run(self, _: JobContext) -> JobResult {
        Ok(())
    }
}

/// Threads of this process, but for the async runtime's own blocking pool
/// (`tokio-rt-worker`: shared, grown on demand, retired after 10 s idle).
fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name != "tokio-rt-worker")
        .collect();
    names.sort();
    names
}

fn open_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| !target.starts_with("/proc/"))
        .collect();
    files.sort();
    files
}

/// Starts, enqueues `n` jobs for later, shuts down, drops the handle.
async fn cycle(db: &common::TempDb, n: u32) -> Vec<i64> {
    let errands = Errands::builder()
        .sqlite(&db.path)
        .register::<Later>()
        .start()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            errands
                .enqueue_in(Later(i), Duration::from_secs(3600))
                .await
                .unwrap(),
        );
    }
    // A read, so the read pool has opened a connection too.
    errands.counts().await.unwrap();
    errands.shutdown(common::PATIENCE).await.unwrap();
    drop(errands);
    ids
}

#[actix_rt::test]
async fn shutdown_leaves_one_self_contained_file_and_gives_back_threads_and_files() {
    let db = common::temp_db();
    let ids = cycle(&db, 200).await;

    // The .db alone, copied without its -wal and -shm, holds every job.
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("copy.db");
    std::fs::copy(&db.path, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM errands_jobs", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored as usize, ids.len());
    drop(conn);

    // One cycle has started the process-wide helpers (the runtime's
    // reactor, errands' one pool helper thread); three more add nothing.
    // The first cycle's own threads may still be exiting (seen under load:
    // the writer thread's name was in the snapshot): wait for them first.
    let first_gone = actix_rt::time::timeout(common::PATIENCE, async {
        while threads().iter().any(|t| t.starts_with("errands-sqlite")) {
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(
        first_gone.is_ok(),
        "threads left after shutdown: {:?}",
        threads()
    );
    let (files_before, threads_before) = (open_files(), threads());
    for _ in 0..3 {
        cycle(&db, 10).await;
    }
    // A stopping thread may still be finishing its last instructions when
    // shutdown returns: wait for the condition, bounded.
    let settled = actix_rt::time::timeout(common::PATIENCE, async {
        while threads() != threads_before || open_files() != files_before {
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "leaked: files {files_before:?} -> {:?}, threads {threads_before:?} -> {:?}",
        open_files(),
        threads()
    );
}
