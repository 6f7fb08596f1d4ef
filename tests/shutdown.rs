//! Graceful shutdown stops claiming, waits for running jobs up to its
//! timeout, and puts unfinished ones back without counting the attempt.

mod common;

use std::sync::Arc;
use std::time::Duration;

use errands::{Errands, Error, Event, Job, JobConfig, JobContext, JobResult, JobState};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

/// Signals when it starts, then waits for a permit.
#[derive(Serialize, Deserialize)]
struct Export;

struct Gate {
    started: Notify,
    permits: Semaphore,
}

impl Job for Export {
    const KIND: &'static str = "export";
    async fn run(self, ctx: JobContext) -> JobResult {
        let gate = ctx.data::<Arc<Gate>>()?;
        gate.started.notify_one();
        let _permit = gate.permits.acquire().await?;
        Ok(())
    }
}

async fn start(db: &common::TempDb, gate: &Arc<Gate>) -> Errands {
    Errands::builder()
        .sqlite(&db.path)
        .register_with::<Export>(JobConfig::new().concurrency(1))
        .data(gate.clone())
        .start()
        .await
        .unwrap()
}

fn gate() -> Arc<Gate> {
    Arc::new(Gate {
        started: Notify::new(),
        permits: Semaphore::new(0),
    })
}

#[actix_rt::test]
async fn shutdown_waits_for_running_jobs_and_claims_no_more() {
    let db = common::temp_db();
    let gate = gate();
    let errands = start(&db, &gate).await;
    let mut events = errands.subscribe();
    let running = errands.enqueue(Export).await.unwrap();
    let waiting = errands.enqueue(Export).await.unwrap();
    gate.started.notified().await;

    let shutdown = actix_rt::spawn(errands.shutdown(common::PATIENCE));
    assert!(matches!(errands.enqueue(Export).await, Err(Error::Closed)));
    gate.permits.add_permits(10);
    shutdown.await.unwrap().unwrap();

    let done = common::wait_for(&mut events, |_| true).await;
    assert_eq!(
        done,
        Event::Completed {
            id: running,
            kind: "export",
            attempt: 1
        }
    );
    assert_eq!(errands.job(running).await.unwrap(), None);
    let info = errands.job(waiting).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.attempts),
        (JobState::Available, 0),
        "not claimed after shutdown began"
    );
}

#[actix_rt::test]
async fn shutdown_releases_what_outlives_the_timeout_and_it_runs_after_restart() {
    let db = common::temp_db();
    let gate = gate();
    let errands = start(&db, &gate).await;
    let mut events = errands.subscribe();
    let id = errands.enqueue(Export).await.unwrap();
    gate.started.notified().await;

    let result = errands.shutdown(Duration::from_millis(100)).await;
    assert!(
        matches!(result, Err(Error::ShutdownTimeout(_))),
        "{result:?}"
    );
    let released = common::wait_for(&mut events, |_| true).await;
    assert_eq!(
        released,
        Event::Released {
            id,
            kind: "export",
            started: true
        }
    );
    let info = errands.job(id).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.attempts),
        (JobState::Available, 0),
        "the interrupted attempt is not counted"
    );

    let gate = self::gate();
    gate.permits.add_permits(1);
    let errands = start(&db, &gate).await;
    let mut events = errands.subscribe();
    let done = common::wait_for(&mut events, |_| true).await;
    assert_eq!(
        done,
        Event::Completed {
            id,
            kind: "export",
            attempt: 1
        }
    );
}
