//! A full database makes `enqueue` fail with a clear error; everything
//! acknowledged before stays intact, and enqueueing works again once space
//! is freed.

mod common;

use std::time::Duration;

use errands::{Errands, Error, Job, JobContext, JobResult, JobState, SqliteOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Upload {
    bytes: Vec<u8>,
}

impl Job for Upload {
    const KIND: &'static str = "upload";
    async fn run(self, _: JobContext) -> JobResult {
        Ok(())
    }
}

#[actix_rt::test]
async fn a_full_database_fails_enqueue_clearly_and_keeps_acknowledged_jobs() {
    let db = common::temp_db();
    let errands = Errands::builder()
        .sqlite_options(SqliteOptions::new(&db.path).max_database_bytes(256 * 1024))
        .register::<Upload>()
        .start()
        .await
        .unwrap();
    let later = Duration::from_secs(3600);
    let mut acked = Vec::new();
    let error = loop {
        match errands
            .enqueue_in(
                Upload {
                    bytes: vec![7; 4000],
                },
                later,
            )
            .await
        {
            Ok(id) => acked.push(id),
            Err(e) => break e,
        }
        assert!(acked.len() < 1000, "the cap was never reached");
    };
    assert!(
        matches!(&error, Error::Store(e) if e.kind() == errands::StoreErrorKind::Full),
        "{error:?}"
    );
    assert!(error.to_string().contains("full"), "{error}");
    assert!(acked.len() > 10);

    for id in &acked {
        let info = errands
            .job(*id)
            .await
            .unwrap()
            .expect("acknowledged job kept");
        assert_eq!(info.state, JobState::Scheduled);
    }
    // The failed enqueue left nothing behind.
    let counts = errands.counts().await.unwrap();
    assert_eq!(counts[0].scheduled, acked.len() as u64);

    // A cancel needs room too (the row is kept, with its reason): refused
    // clearly, and the job is untouched.
    let refused = errands.cancel(acked[0]).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Store(e) if e.kind() == errands::StoreErrorKind::Full),
        "{refused:?}"
    );
    assert_eq!(
        errands.job(acked[0]).await.unwrap().unwrap().state,
        JobState::Scheduled
    );

    // Space returns: the operator deletes half of them (a delete needs
    // no room), and the same enqueue then succeeds.
    for id in &acked[..acked.len() / 2] {
        errands.purge(*id).await.unwrap();
        assert_eq!(
            errands.status(*id).await.unwrap(),
            errands::JobStatus::Cancelled
        );
    }
    errands
        .enqueue_in(
            Upload {
                bytes: vec![7; 4000],
            },
            later,
        )
        .await
        .expect("enqueue works again once space is freed");
}

/// Waits until released, then fails with a 20 KB error or completes.
#[derive(Serialize, Deserialize)]
struct Finish {
    fail_big: bool,
}

struct Release(tokio::sync::Semaphore, tokio::sync::Notify);

impl Job for Finish {
    const KIND: &'static str = "finish";
    async fn run(self, ctx: JobContext) -> JobResult {
        let release = ctx.data::<std::sync::Arc<Release>>()?;
        release.1.notify_one();
        let _permit = release.0.acquire().await?;
        if self.fail_big {
            return Err(errands::JobError::msg("x".repeat(20_000)));
        }
        Ok(())
    }
}

/// On a full database, an outcome that needs space (a failure with a big
/// error) must not keep a completion (which frees space) from committing,
/// nor keep shutdown from returning.
#[actix_rt::test]
async fn a_full_database_still_commits_completions_and_shuts_down() {
    let db = common::temp_db();
    let release = std::sync::Arc::new(Release(
        tokio::sync::Semaphore::new(0),
        tokio::sync::Notify::new(),
    ));
    let errands = Errands::builder()
        .sqlite_options(SqliteOptions::new(&db.path).max_database_bytes(256 * 1024))
        .register::<Upload>()
        .register_with::<Finish>(errands::JobConfig::new().concurrency(2))
        .data(release.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let fails = errands.enqueue(Finish { fail_big: true }).await.unwrap();
    let completes = errands.enqueue(Finish { fail_big: false }).await.unwrap();
    release.1.notified().await;
    release.1.notified().await;
    // Fill the file to the brim while both run.
    for size in [4000, 400, 40] {
        while errands
            .enqueue_in(
                Upload {
                    bytes: vec![7; size],
                },
                Duration::from_secs(3600),
            )
            .await
            .is_ok()
        {}
    }
    release.0.add_permits(2);
    let done = common::wait_for(&mut events, |e| e.id() == Some(completes)).await;
    assert!(matches!(done, errands::Event::Completed { .. }), "{done:?}");
    assert_eq!(errands.job(completes).await.unwrap(), None);
    // Whether or not the failure's outcome fit, shutdown returns.
    let _ = errands.shutdown(Duration::from_millis(500)).await;
    let info = errands.job(fails).await.unwrap().expect("never lost");
    assert!(
        matches!(info.state, JobState::Running | JobState::Scheduled),
        "{info:?}"
    );
}
