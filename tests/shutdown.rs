//! Graceful shutdown stops claiming, waits for running jobs up to its
//! timeout, and puts unfinished ones back without counting the attempt.

mod common;

use common::{Backend, TestStore};

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

async fn start(db: &TestStore, gate: &Arc<Gate>) -> Errands {
    db.apply(Errands::builder())
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

async fn shutdown_waits_for_running_jobs_and_claims_no_more(backend: Backend) {
    let db = TestStore::new(backend);
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

    // The waiting job either was never claimed, or was claimed ahead
    // (prefetch) and released unstarted: never run.
    let done = common::wait_for(&mut events, |e| {
        if e.id() == Some(waiting) {
            assert_eq!(
                e,
                &Event::Released {
                    id: waiting,
                    kind: "export",
                    started: false
                }
            );
        }
        e.id() == Some(running)
    })
    .await;
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
both!(shutdown_waits_for_running_jobs_and_claims_no_more);

async fn shutdown_releases_what_outlives_the_timeout_and_it_runs_after_restart(backend: Backend) {
    let db = TestStore::new(backend);
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
both!(shutdown_releases_what_outlives_the_timeout_and_it_runs_after_restart);

/// Polls a future once, without waiting.
fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(future).poll(&mut cx)
}

async fn a_second_shutdown_waits_for_the_first_and_gets_its_answer(backend: Backend) {
    let db = TestStore::new(backend);
    let gate = gate();
    let errands = start(&db, &gate).await;
    let mut events = errands.subscribe();
    let id = errands.enqueue(Export).await.unwrap();
    gate.started.notified().await;

    let mut first = Box::pin(errands.shutdown(common::PATIENCE));
    let mut second = Box::pin(errands.shutdown(common::PATIENCE));
    assert!(poll_once(&mut first).is_pending());
    assert!(
        poll_once(&mut second).is_pending(),
        "the second shutdown answered while the first still drains"
    );
    actix_rt::task::yield_now().await;
    assert!(poll_once(&mut second).is_pending(), "still draining");

    gate.permits.add_permits(1);
    first.await.unwrap();
    second.await.unwrap();
    let done = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(matches!(done, Event::Completed { .. }), "{done:?}");
    // And once it is over, a third answers the same at once.
    errands.shutdown(Duration::ZERO).await.unwrap();
}
both!(a_second_shutdown_waits_for_the_first_and_gets_its_answer);

async fn events_end_with_closed_once_shutdown_is_done(backend: Backend) {
    let db = TestStore::new(backend);
    let gate = gate();
    gate.permits.add_permits(1);
    let errands = start(&db, &gate).await;
    let mut events = errands.subscribe();
    let id = errands.enqueue(Export).await.unwrap();
    errands.shutdown(common::PATIENCE).await.unwrap();
    drop(errands);
    let next = actix_rt::time::timeout(common::PATIENCE, async {
        loop {
            match events.next().await {
                Ok(event) => assert_eq!(event.id(), Some(id)),
                Err(end) => return end,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(next, errands::EventsError::Closed);
}
both!(events_end_with_closed_once_shutdown_is_done);

async fn shutdown_says_which_released_jobs_had_started(backend: Backend) {
    let db = TestStore::new(backend);
    let gate = gate();
    let errands = db
        .apply(Errands::builder())
        .register_with::<Export>(JobConfig::new().concurrency(1).prefetch(2))
        .data(gate.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let ids = errands
        .enqueue_many([Export, Export, Export])
        .await
        .unwrap();
    gate.started.notified().await;
    // Wait until the other two are claimed ahead (polling the store's
    // view): inspection tells them from the one running.
    let claimed_ahead = actix_rt::time::timeout(common::PATIENCE, async {
        loop {
            let counts = errands.counts().await.unwrap();
            if counts.first().is_some_and(|c| c.claimed == 2) {
                return counts[0].clone();
            }
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let counts = claimed_ahead.await.expect("prefetch claims the other two");
    assert_eq!((counts.running, counts.claimed), (1, 2));
    let first = errands.job(ids[0]).await.unwrap().unwrap();
    assert_eq!(first.state, JobState::Running);
    assert!(first.started_at.is_some());
    for id in &ids[1..] {
        let info = errands.job(*id).await.unwrap().unwrap();
        assert_eq!((info.state, info.started_at), (JobState::Claimed, None));
    }

    let result = errands.shutdown(Duration::from_millis(100)).await;
    assert!(
        matches!(result, Err(Error::ShutdownTimeout(_))),
        "{result:?}"
    );
    let mut released: Vec<(i64, bool)> = common::collect(&mut events, 3, |_| true)
        .await
        .into_iter()
        .map(|e| match e {
            Event::Released { id, started, .. } => (id, started),
            other => panic!("expected releases, got {other:?}"),
        })
        .collect();
    released.sort();
    let started: Vec<bool> = released.iter().map(|(_, s)| *s).collect();
    assert_eq!(released.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert_eq!(started.iter().filter(|s| **s).count(), 1, "{released:?}");
    for id in ids {
        let info = errands.job(id).await.unwrap().unwrap();
        assert_eq!((info.state, info.attempts), (JobState::Available, 0));
    }
}
both!(shutdown_says_which_released_jobs_had_started);
