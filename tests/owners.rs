//! A live owner is never declared dead: not when its lock file is deleted,
//! and not when a second instance opens the same database through another
//! path. Either mistake used to put a running job back in the queue, where
//! it was claimed again (attempt 2) while attempt 1 still ran.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use errands::{Errands, Event, Job, JobConfig, JobContext, JobResult, JobState};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

#[derive(Serialize, Deserialize)]
struct Hold;

struct Gate {
    started: Notify,
    permits: Semaphore,
    runs: AtomicU32,
}

impl Job for Hold {
    const KIND: &'static str = "hold";
    async fn run(self, ctx: JobContext) -> JobResult {
        let gate = ctx.data::<Arc<Gate>>()?;
        gate.runs.fetch_add(1, Ordering::SeqCst);
        gate.started.notify_one();
        let _permit = gate.permits.acquire().await?;
        Ok(())
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            started: Notify::new(),
            permits: Semaphore::new(0),
            runs: AtomicU32::new(0),
        }
    }
}

async fn start(path: &std::path::Path, gate: &Arc<Gate>) -> Errands {
    Errands::builder()
        .sqlite(path)
        .register_with::<Hold>(JobConfig::new().concurrency(4))
        .data(gate.clone())
        .recovery_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap()
}

/// Starts a second instance on `second_path` while the first runs a job,
/// after `meddle`; the job must stay attempt 1 and run exactly once.
async fn second_instance_leaves_the_running_job_alone(
    db: &common::TempDb,
    second_path: &std::path::Path,
    meddle: impl FnOnce(),
) {
    let gate = Arc::new(Gate::default());
    let first = start(&db.path, &gate).await;
    let mut events = first.subscribe();
    let id = first.enqueue(Hold).await.unwrap();
    gate.started.notified().await;

    meddle();
    // Recovery runs inside start(), before it returns.
    let second = start(second_path, &gate).await;
    let info = second.job(id).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.attempts),
        (JobState::Running, 1),
        "the live owner's job was taken from it"
    );

    gate.permits.add_permits(10);
    let done = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(
        matches!(done, Event::Completed { attempt: 1, .. }),
        "{done:?}"
    );
    second.shutdown(common::PATIENCE).await.unwrap();
    first.shutdown(common::PATIENCE).await.unwrap();
    assert_eq!(gate.runs.load(Ordering::SeqCst), 1, "ran exactly once");
}

#[actix_rt::test]
async fn a_deleted_lock_directory_does_not_make_a_live_owner_dead() {
    let db = common::temp_db();
    let mut owners = db.path.clone().into_os_string();
    owners.push("-owners");
    let owners = std::path::PathBuf::from(owners);
    let path = db.path.clone();
    second_instance_leaves_the_running_job_alone(&db, &path, || {
        std::fs::remove_dir_all(&owners).expect("the lock directory exists");
    })
    .await;
}

#[actix_rt::test]
async fn a_second_path_to_the_same_file_sees_the_same_owners() {
    let db = common::temp_db();
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("link.db");
    std::os::unix::fs::symlink(&db.path, &link).unwrap();
    second_instance_leaves_the_running_job_alone(&db, &link, || {}).await;
}

/// Lock files of owners that ended holding no jobs are swept away by the
/// next recovery pass (they used to pile up, one per start).
#[actix_rt::test]
async fn lock_files_of_owners_that_ended_are_swept() {
    let db = common::temp_db();
    let gate = Arc::new(Gate::default());
    let first = start(&db.path, &gate).await;
    let mut owners = db.path.clone().into_os_string();
    owners.push("-owners");
    let owners = std::path::PathBuf::from(owners);
    // An owner that died without running jobs left its (unlocked) file.
    let stale = owners.join("4194304-1700000000000-deadbeef.lock");
    std::fs::write(&stale, b"").unwrap();
    let files = || std::fs::read_dir(&owners).unwrap().count();
    assert_eq!(files(), 2);

    let second = start(&db.path, &gate).await; // recovery runs in start()
    assert!(!stale.exists(), "the dead owner's file is swept");
    assert_eq!(files(), 2, "the two live owners keep theirs");
    second.shutdown(common::PATIENCE).await.unwrap();
    first.shutdown(common::PATIENCE).await.unwrap();
    assert_eq!(files(), 0, "a clean shutdown removes its own file");
}
