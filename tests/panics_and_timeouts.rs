//! A panic or a timeout ends the attempt as a failure with a message; the
//! worker survives and keeps running other jobs.

mod common;

use std::time::Duration;

use errands::{Backoff, Errands, Event, Job, JobConfig, JobContext, JobResult};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum Behaviour {
    Panic,
    Hang,
    Succeed,
}

#[derive(Serialize, Deserialize)]
struct Chaos(Behaviour);

impl Job for Chaos {
    const KIND: &'static str = "chaos";
    async fn run(self, _: JobContext) -> JobResult {
        match self.0 {
            Behaviour::Panic => panic!("boom at step 3"),
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Succeed => Ok(()),
        }
    }
}

#[actix_rt::test]
async fn panics_and_timeouts_are_failed_attempts_and_the_worker_lives_on() {
    let db = common::temp_db();
    let errands = Errands::builder()
        .sqlite(&db.path)
        .register_with::<Chaos>(
            JobConfig::new()
                .concurrency(2)
                .max_attempts(2)
                .backoff(Backoff::Fixed(Duration::ZERO))
                .timeout(Duration::from_millis(50)),
        )
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let panics = errands.enqueue(Chaos(Behaviour::Panic)).await.unwrap();
    let hangs = errands.enqueue(Chaos(Behaviour::Hang)).await.unwrap();

    // Each goes: a retry after attempt 1, then dead after attempt 2.
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e| matches!(e, Event::Dead { .. }))
        .count()
        < 2
    {
        seen.push(common::wait_for(&mut events, |_| true).await);
    }
    for id in [panics, hangs] {
        let of_job: Vec<&Event> = seen.iter().filter(|e| e.id() == id).collect();
        assert_eq!(of_job.len(), 2, "{of_job:?}");
        assert!(
            matches!(of_job[0], Event::Retrying { attempt: 1, .. }),
            "{of_job:?}"
        );
    }
    let mut finals: Vec<Event> = seen
        .into_iter()
        .filter(|e| matches!(e, Event::Dead { .. }))
        .collect();
    finals.sort_by_key(|e| e.id());
    // Both slots are free again and the worker still runs jobs.
    let ok = errands
        .enqueue_many([Chaos(Behaviour::Succeed), Chaos(Behaviour::Succeed)])
        .await
        .unwrap();
    let done = common::collect(&mut events, 2, |e| matches!(e, Event::Completed { .. })).await;
    let mut done: Vec<i64> = done.iter().map(|e| e.id()).collect();
    done.sort();
    assert_eq!(done, ok);
}
