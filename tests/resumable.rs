//! Resumable jobs, in one process: finished steps are skipped by later
//! attempts (after an error, a panic or a shutdown), cursors resume where
//! they were saved, and stale step names are ignored.

mod common;

use common::{Backend, TestStore};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use errands::{
    Backoff, Errands, Event, Job, JobConfig, JobContext, JobError, JobResult, ManualClock,
};
use serde::{Deserialize, Serialize};

/// What ran, in order, across attempts.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Three steps; step 2 fails on the first attempt.
#[derive(Serialize, Deserialize)]
struct Pipeline;

impl Job for Pipeline {
    const KIND: &'static str = "pipeline";
    async fn run(self, ctx: JobContext) -> JobResult {
        let log = ctx.data::<Arc<Log>>()?;
        let url: String = ctx
            .step("upload", async || {
                log.push("upload");
                Ok(format!("s3://bucket/{}", ctx.id()))
            })
            .await?;
        ctx.step("transcode", async || {
            log.push(format!("transcode attempt {} with {url}", ctx.attempt()));
            if ctx.attempt() == 1 {
                return Err(JobError::msg("encoder crashed"));
            }
            Ok(())
        })
        .await?;
        ctx.step("publish", async || {
            log.push("publish");
            Ok(())
        })
        .await
    }
}

async fn a_failing_step_is_retried_with_backoff_and_earlier_steps_are_not_rerun(backend: Backend) {
    let db = TestStore::new(backend);
    let clock = ManualClock::new();
    let log = Arc::new(Log::default());
    let errands = db
        .apply(Errands::builder())
        .register_with::<Pipeline>(
            JobConfig::new().backoff(Backoff::Fixed(Duration::from_secs(30))),
        )
        .clock(clock.clone())
        .data(log.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(Pipeline).await.unwrap();
    let retry = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(
        matches!(&retry, Event::Retrying { error, .. } if error == "encoder crashed"),
        "{retry:?}"
    );
    clock.advance(Duration::from_secs(30));
    let done = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert_eq!(
        done,
        Event::Completed {
            id,
            kind: "pipeline",
            attempt: 2
        }
    );
    let url = format!("s3://bucket/{id}");
    assert_eq!(
        log.all(),
        vec![
            "upload".to_string(),
            format!("transcode attempt 1 with {url}"),
            // The saved output of "upload" is handed to attempt 2.
            format!("transcode attempt 2 with {url}"),
            "publish".to_string(),
        ]
    );
}
both!(a_failing_step_is_retried_with_backoff_and_earlier_steps_are_not_rerun);

/// Walks 0..1000 with a cursor; panics once at 500 after saving cursor 499.
#[derive(Serialize, Deserialize)]
struct Walk;

struct Visits(Mutex<Vec<u32>>);

impl Job for Walk {
    const KIND: &'static str = "walk";
    async fn run(self, ctx: JobContext) -> JobResult {
        let visits = ctx.data::<Arc<Visits>>()?;
        ctx.step_cursor("ids", async |last: Option<u32>, cursor| {
            for id in last.map_or(0, |l| l + 1)..1000 {
                if id == 500 && ctx.attempt() == 1 {
                    panic!("disk on fire at {id}");
                }
                visits.0.lock().unwrap().push(id);
                cursor.set(&id)?;
            }
            Ok(())
        })
        .await
    }
}

async fn a_cursor_set_before_a_panic_is_saved_and_the_retry_resumes_after_it(backend: Backend) {
    let db = TestStore::new(backend);
    let visits = Arc::new(Visits(Mutex::new(Vec::new())));
    let errands = db
        .apply(Errands::builder())
        .register_with::<Walk>(JobConfig::new().backoff(Backoff::Fixed(Duration::ZERO)))
        .data(visits.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(Walk).await.unwrap();
    let first = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(
        matches!(&first, Event::Retrying { error, .. } if error.contains("disk on fire at 500"))
    );
    let done = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(
        matches!(done, Event::Completed { attempt: 2, .. }),
        "{done:?}"
    );
    let visits = visits.0.lock().unwrap().clone();
    assert_eq!(
        visits,
        (0..1000).collect::<Vec<u32>>(),
        "every id once, in order"
    );
}
both!(a_cursor_set_before_a_panic_is_saved_and_the_retry_resumes_after_it);

/// Attempt 1 runs step "old" then fails; the "new code" of attempt 2 no
/// longer has that step and must still run.
#[derive(Serialize, Deserialize)]
struct Renamed;

/// Runs of `Renamed` in one test (each test registers its own).
struct RenamedRuns(AtomicU32);

impl Job for Renamed {
    const KIND: &'static str = "renamed";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.data::<Arc<RenamedRuns>>()?
            .0
            .fetch_add(1, Ordering::SeqCst);
        if ctx.attempt() == 1 {
            ctx.step("old_name", async || Ok(41u64)).await?;
            return Err(JobError::msg("deploying new code"));
        }
        let value: u64 = ctx.step("new_name", async || Ok(42u64)).await?;
        assert_eq!(value, 42);
        Ok(())
    }
}

async fn stale_step_names_are_ignored(backend: Backend) {
    let db = TestStore::new(backend);
    let runs = Arc::new(RenamedRuns(AtomicU32::new(0)));
    let errands = db
        .apply(Errands::builder())
        .register_with::<Renamed>(JobConfig::new().backoff(Backoff::Fixed(Duration::ZERO)))
        .data(runs.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(Renamed).await.unwrap();
    common::wait_for(&mut events, |e| matches!(e, Event::Retrying { .. })).await;
    let done = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(
        matches!(done, Event::Completed { attempt: 2, .. }),
        "{done:?}"
    );
    assert_eq!(runs.0.load(Ordering::SeqCst), 2);
}
both!(stale_step_names_are_ignored);

/// Step 1, then a cursor step that waits between items; shutdown interrupts
/// it and the next start resumes.
#[derive(Serialize, Deserialize)]
struct Export;

struct Gate {
    log: Log,
    reached: tokio::sync::Notify,
    resume: tokio::sync::Semaphore,
}

impl Job for Export {
    const KIND: &'static str = "export";
    async fn run(self, ctx: JobContext) -> JobResult {
        let gate = ctx.data::<Arc<Gate>>()?;
        ctx.step("prepare", async || {
            gate.log.push("prepare");
            Ok(())
        })
        .await?;
        ctx.step_cursor("rows", async |last: Option<u32>, cursor| {
            for row in last.map_or(0, |l| l + 1)..10 {
                gate.log.push(format!("row {row}"));
                cursor.set(&row)?;
                if row == 4 {
                    gate.reached.notify_one();
                    let _permit = gate.resume.acquire().await.map_err(JobError::msg)?;
                }
            }
            Ok(())
        })
        .await
    }
}

async fn progress_is_saved_when_shutdown_interrupts_an_attempt(backend: Backend) {
    let db = TestStore::new(backend);
    let gate = Arc::new(Gate {
        log: Log::default(),
        reached: tokio::sync::Notify::new(),
        resume: tokio::sync::Semaphore::new(0),
    });
    let start = || {
        db.apply(Errands::builder())
            .register::<Export>()
            .data(gate.clone())
            .start()
    };
    let errands = start().await.unwrap();
    errands.enqueue(Export).await.unwrap();
    gate.reached.notified().await;
    assert!(
        errands.shutdown(Duration::from_millis(50)).await.is_err(),
        "the attempt was cut short"
    );

    gate.resume.add_permits(100);
    let errands = start().await.unwrap();
    let mut events = errands.subscribe();
    common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;
    let mut expected = vec!["prepare".to_string()];
    expected.extend((0..10).map(|r| format!("row {r}")));
    assert_eq!(gate.log.all(), expected, "nothing ran twice");
}
both!(progress_is_saved_when_shutdown_interrupts_an_attempt);

/// Starts errands with `J` retried at once, runs `job`, and checks that it
/// completed on its second attempt. Answers the handle and the log.
async fn run_to_completion_on_attempt_two<J: Job>(db: &TestStore, job: J) -> (Errands, Arc<Log>) {
    let log = Arc::new(Log::default());
    let errands = db
        .apply(Errands::builder())
        .register_with::<J>(JobConfig::new().backoff(Backoff::Fixed(Duration::ZERO)))
        .data(log.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(job).await.unwrap();
    let done = common::wait_for(&mut events, |e| {
        e.id() == Some(id) && !matches!(e, Event::Retrying { .. })
    })
    .await;
    assert!(
        matches!(done, Event::Completed { attempt: 2, .. }),
        "{done:?}"
    );
    (errands, log)
}

/// Copies ten numbers per attempt into the job's own database; the first
/// attempt's transaction fails after setting the cursor past its rows.
#[derive(Serialize, Deserialize)]
struct CopyTen;

impl Job for CopyTen {
    const KIND: &'static str = "copy_ten";
    async fn run(self, ctx: JobContext) -> JobResult {
        let log = ctx.data::<Arc<Log>>()?;
        ctx.step_cursor("copy", async |from: Option<u32>, cursor| {
            log.push(format!("attempt {} from {from:?}", ctx.attempt()));
            let start = from.unwrap_or(0);
            let end = start + 10;
            cursor.set(&end)?;
            let fail = ctx.attempt() == 1;
            ctx.transaction(move |tx| {
                tx.execute("CREATE TABLE IF NOT EXISTS copied (n INTEGER)", [])?;
                for n in start..end {
                    tx.execute("INSERT INTO copied VALUES (?1)", [n])?;
                }
                if fail {
                    return Err(errands::rusqlite::Error::QueryReturnedNoRows);
                }
                Ok(())
            })
            .await?;
            Ok(())
        })
        .await
    }
}

#[actix_rt::test]
async fn a_rolled_back_transaction_rolls_back_the_cursor_it_would_have_saved() {
    let db = TestStore::new(Backend::Sqlite);
    let (errands, log) = run_to_completion_on_attempt_two(&db, CopyTen).await;
    assert_eq!(
        log.all(),
        ["attempt 1 from None", "attempt 2 from None"],
        "attempt 2 redoes the rows attempt 1's rollback undid"
    );
    errands.shutdown(Duration::from_secs(5)).await.unwrap();
    let conn = rusqlite::Connection::open(&db.db.path).unwrap();
    let rows: Vec<u32> = conn
        .prepare("SELECT n FROM copied ORDER BY n")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, (0..10).collect::<Vec<u32>>());
}

/// Two cursor steps run concurrently; each sets its own cursor, then the
/// attempt fails.
#[derive(Serialize, Deserialize)]
struct TwoWalks;

impl Job for TwoWalks {
    const KIND: &'static str = "two_walks";
    async fn run(self, ctx: JobContext) -> JobResult {
        let log = ctx.data::<Arc<Log>>()?;
        let a = ctx.step_cursor("a", async |from: Option<u32>, cursor| {
            log.push(format!("a from {from:?}"));
            // Let b begin before a sets its cursor.
            tokio::task::yield_now().await;
            cursor.set(&700)?;
            tokio::task::yield_now().await;
            Err(JobError::msg("a stops"))
        });
        let b = ctx.step_cursor("b", async |from: Option<u32>, cursor| {
            log.push(format!("b from {from:?}"));
            cursor.set(&5)?;
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            if ctx.attempt() == 1 {
                return Err(JobError::msg("b stops"));
            }
            Ok(())
        });
        let (a, b) = tokio::join!(a, b);
        b?;
        if ctx.attempt() == 1 {
            a?;
        }
        Ok(())
    }
}

async fn concurrent_cursor_steps_keep_their_own_cursors(backend: Backend) {
    let db = TestStore::new(backend);
    let (_errands, log) = run_to_completion_on_attempt_two(&db, TwoWalks).await;
    assert_eq!(
        log.all(),
        [
            "a from None",
            "b from None",
            "a from Some(700)",
            "b from Some(5)"
        ]
    );
}
both!(concurrent_cursor_steps_keep_their_own_cursors);
