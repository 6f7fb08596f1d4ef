//! Durations and times at the edge of what can be stored: never a job run
//! early because a conversion wrapped, never a panic, a clear error where a
//! time cannot be stored.

mod common;

use common::{Backend, TestStore};

use std::time::{Duration, UNIX_EPOCH};

use errands::{
    Backoff, Clock, Errands, Error, Event, Job, JobConfig, JobContext, JobError, JobResult,
    JobState, ManualClock,
};
use serde::{Deserialize, Serialize};

/// 9999-12-31T23:59:59.999Z, the latest run_at errands stores.
const END_OF_TIME_MS: u64 = 253_402_300_799_999;

#[derive(Serialize, Deserialize)]
struct Ping {
    fail: bool,
}

impl Job for Ping {
    const KIND: &'static str = "ping";
    async fn run(self, _: JobContext) -> JobResult {
        if self.fail {
            return Err(JobError::msg("failed on purpose"));
        }
        Ok(())
    }
}

async fn start(db: &TestStore, clock: &ManualClock, config: JobConfig) -> Errands {
    start_retaining(db, clock, config, None).await
}

async fn start_retaining(
    db: &TestStore,
    clock: &ManualClock,
    config: JobConfig,
    retain: Option<Duration>,
) -> Errands {
    let builder = db
        .apply(Errands::builder())
        .register_with::<Ping>(config)
        .clock(clock.clone());
    let builder = match retain {
        Some(retention) => builder.retain_completed(retention),
        None => builder,
    };
    builder.start().await.unwrap()
}

async fn times_beyond_the_year_9999_are_refused_and_nothing_runs_early(backend: Backend) {
    let db = TestStore::new(backend);
    let clock = ManualClock::new();
    let errands = start(&db, &clock, JobConfig::new()).await;
    let mut events = errands.subscribe();

    for delay in [Duration::MAX, Duration::from_secs(u64::MAX)] {
        let result = errands.enqueue_in(Ping { fail: false }, delay).await;
        assert!(
            matches!(result, Err(Error::RunAtOutOfRange(_))),
            "{result:?}"
        );
    }
    let far = UNIX_EPOCH + Duration::from_secs(300_000 * 365 * 24 * 3600);
    let result = errands.enqueue_at(Ping { fail: false }, far).await;
    assert!(
        matches!(result, Err(Error::RunAtOutOfRange(_))),
        "{result:?}"
    );
    let just_past = UNIX_EPOCH + Duration::from_millis(END_OF_TIME_MS + 1);
    let result = errands.enqueue_at(Ping { fail: false }, just_past).await;
    assert!(
        matches!(result, Err(Error::RunAtOutOfRange(_))),
        "{result:?}"
    );
    assert!(
        errands.counts().await.unwrap().is_empty(),
        "nothing enqueued"
    );

    // The last storable instant is fine, and waits.
    let last = UNIX_EPOCH + Duration::from_millis(END_OF_TIME_MS);
    let patient = errands
        .enqueue_at(Ping { fail: false }, last)
        .await
        .unwrap();
    let info = errands.job(patient).await.unwrap().unwrap();
    assert_eq!((info.state, info.run_at), (JobState::Scheduled, last));

    // The scheduler, armed for the year 9999, still fires a job due soon.
    let soon = errands
        .enqueue_in(Ping { fail: false }, Duration::from_millis(10))
        .await
        .unwrap();
    clock.advance(Duration::from_millis(10));
    let done = common::wait_for(&mut events, |_| true).await;
    assert_eq!(done.id(), Some(soon));
    assert_eq!(
        errands.job(patient).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
}
both!(times_beyond_the_year_9999_are_refused_and_nothing_runs_early);

async fn a_delay_of_a_fraction_of_a_millisecond_rounds_up(backend: Backend) {
    let db = TestStore::new(backend);
    let clock = ManualClock::new();
    let errands = start(&db, &clock, JobConfig::new()).await;
    let now = clock.now_ms();
    let id = errands
        .enqueue_in(Ping { fail: false }, Duration::from_micros(1))
        .await
        .unwrap();
    let info = errands.job(id).await.unwrap().unwrap();
    assert_eq!(
        info.run_at,
        UNIX_EPOCH + Duration::from_millis(now as u64 + 1),
        "never before now + delay"
    );
    assert_eq!(info.state, JobState::Scheduled);
}
both!(a_delay_of_a_fraction_of_a_millisecond_rounds_up);

async fn an_endless_fixed_backoff_waits_until_the_end_of_time(backend: Backend) {
    let db = TestStore::new(backend);
    let clock = ManualClock::new();
    let config = JobConfig::new().backoff(Backoff::Fixed(Duration::MAX));
    let errands = start(&db, &clock, config).await;
    let mut events = errands.subscribe();
    let id = errands.enqueue(Ping { fail: true }).await.unwrap();
    let retry = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    let end_of_time = UNIX_EPOCH + Duration::from_millis(END_OF_TIME_MS);
    assert!(
        matches!(retry, Event::Retrying { attempt: 1, run_at, .. } if run_at == end_of_time),
        "{retry:?}"
    );
    let info = errands.job(id).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Scheduled, 1));
}
both!(an_endless_fixed_backoff_waits_until_the_end_of_time);

async fn completed_jobs_are_kept_for_their_retention_and_pruned_after_it(backend: Backend) {
    for (retention, advance, kept) in [
        (Duration::MAX, Duration::from_secs(3600 * 24 * 365), true),
        (Duration::from_secs(3600), Duration::from_secs(1800), true),
        (Duration::from_secs(3600), Duration::from_secs(7200), false),
    ] {
        let db = TestStore::new(backend);
        let clock = ManualClock::new();
        let errands = start_retaining(&db, &clock, JobConfig::new(), Some(retention)).await;
        let mut events = errands.subscribe();
        let id = errands.enqueue(Ping { fail: false }).await.unwrap();
        common::wait_for(&mut events, |e| e.id() == Some(id)).await;
        errands.shutdown(common::PATIENCE).await.unwrap();
        drop(errands);

        // Pruning runs at start: restart after the clock moved.
        clock.advance(advance);
        let errands = start_retaining(&db, &clock, JobConfig::new(), Some(retention)).await;
        let info = errands.job(id).await.unwrap();
        match (kept, info) {
            (true, Some(info)) => assert_eq!(info.state, JobState::Completed),
            (false, None) => {}
            (kept, info) => {
                panic!("retention {retention:?}, advanced {advance:?}: kept={kept}, found {info:?}")
            }
        }
        errands.shutdown(common::PATIENCE).await.unwrap();
    }
}
both!(completed_jobs_are_kept_for_their_retention_and_pruned_after_it);
