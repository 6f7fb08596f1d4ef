//! A process that enqueues a kind without running it (a web front end) and
//! a worker process that registered the kind with other settings: the
//! attempt budget is the one stored in the row at enqueue, as Oban and
//! Sidekiq do. It comes from `EnqueueOptions::max_attempts`, else the
//! enqueuing process's registration, else `Job::config()`; so put the
//! policy in `Job::config()`, which both processes compile.

mod common;

use common::{Backend, TestStore};

use std::time::Duration;

use errands::{Backoff, Errands, Event, Job, JobConfig, JobContext, JobError, JobResult};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Notify;

impl Job for Notify {
    const KIND: &'static str = "notify";
    fn config() -> JobConfig {
        JobConfig::new().max_attempts(2)
    }
    async fn run(self, _: JobContext) -> JobResult {
        Err(JobError::msg("always fails"))
    }
}

async fn the_attempts_stored_at_enqueue_win_over_the_workers_registration(backend: Backend) {
    let db = TestStore::new(backend);
    // The worker registers Notify with 5 attempts.
    let worker = db
        .apply(Errands::builder())
        .register_with::<Notify>(
            JobConfig::new()
                .max_attempts(5)
                .backoff(Backoff::Fixed(Duration::ZERO)),
        )
        .start()
        .await
        .unwrap();
    let mut events = worker.subscribe();
    // The producer does not register it: its row gets Job::config()'s 2.
    let producer = db.apply(Errands::builder()).start().await.unwrap();
    let from_producer = producer.enqueue(Notify).await.unwrap();
    // Enqueued by the worker itself: its registration's 5.
    let from_worker = worker.enqueue(Notify).await.unwrap();
    // Explicit options win over both.
    let explicit = producer
        .enqueue_with(Notify, errands::EnqueueOptions::new().max_attempts(3))
        .await
        .unwrap();
    let dead = common::collect(&mut events, 3, |e| matches!(e, Event::Dead { .. })).await;
    let attempts_of = |id| {
        dead.iter()
            .find_map(|e| match e {
                Event::Dead { id: i, attempt, .. } if *i == id => Some(*attempt),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(attempts_of(from_producer), 2);
    assert_eq!(attempts_of(from_worker), 5);
    assert_eq!(attempts_of(explicit), 3);
    producer.shutdown(common::PATIENCE).await.unwrap();
    worker.shutdown(common::PATIENCE).await.unwrap();
}
both!(the_attempts_stored_at_enqueue_win_over_the_workers_registration);
