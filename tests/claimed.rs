//! Inspection tells jobs claimed ahead (prefetched, waiting in this process
//! for a slot) from jobs whose handlers run: `claimed` until the handler
//! starts, then `running` with a `started_at`.

mod common;

use common::{Backend, TestStore};

use std::sync::Arc;
use std::time::Duration;

use errands::{Errands, Job, JobConfig, JobContext, JobResult, JobState};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

#[derive(Serialize, Deserialize)]
struct Step;

struct Gate {
    started: Notify,
    permits: Semaphore,
}

impl Job for Step {
    const KIND: &'static str = "step";
    async fn run(self, ctx: JobContext) -> JobResult {
        let gate = ctx.data::<Arc<Gate>>()?;
        gate.started.notify_one();
        // One permit lets exactly one job finish.
        gate.permits.acquire().await?.forget();
        Ok(())
    }
}

/// Polls `job(id)` until `pred` holds (bounded), and returns what it saw.
async fn until(
    errands: &Errands,
    id: i64,
    pred: impl Fn(&errands::JobInfo) -> bool,
) -> errands::JobInfo {
    actix_rt::time::timeout(common::PATIENCE, async {
        loop {
            let info = errands.job(id).await.unwrap().unwrap();
            if pred(&info) {
                return info;
            }
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the state was reached")
}

async fn a_claimed_job_reads_as_claimed_until_its_handler_starts(backend: Backend) {
    let db = TestStore::new(backend);
    let gate = Arc::new(Gate {
        started: Notify::new(),
        permits: Semaphore::new(0),
    });
    let errands = db
        .apply(Errands::builder())
        .register_with::<Step>(JobConfig::new().concurrency(1).prefetch(1))
        .data(gate.clone())
        .start()
        .await
        .unwrap();
    let ids = errands.enqueue_many([Step, Step]).await.unwrap();
    gate.started.notified().await;
    let waiting = until(&errands, ids[1], |i| i.state == JobState::Claimed).await;
    assert_eq!((waiting.attempts, waiting.started_at), (1, None));
    let counts = errands.counts().await.unwrap();
    assert_eq!((counts[0].running, counts[0].claimed), (1, 1));

    // The first finishes; the second starts from the buffer and is marked.
    gate.permits.add_permits(1);
    gate.started.notified().await;
    let running = until(&errands, ids[1], |i| i.state == JobState::Running).await;
    assert_eq!(running.attempts, 1);
    assert!(running.started_at.is_some());
    let counts = errands.counts().await.unwrap();
    assert_eq!((counts[0].running, counts[0].claimed), (1, 0));

    gate.permits.add_permits(1);
    errands.shutdown(common::PATIENCE).await.unwrap();
}
both!(a_claimed_job_reads_as_claimed_until_its_handler_starts);
