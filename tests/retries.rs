//! A failing job is retried at now + backoff (by the injected clock) until
//! its attempts are used up, then it is dead with its last error.

mod common;

use common::{Backend, TestStore};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use errands::{
    Backoff, Clock, Errands, Event, Job, JobConfig, JobContext, JobError, JobResult, JobState,
    ManualClock,
};
use serde::{Deserialize, Serialize};

/// Fails until attempt `succeed_on` (0 = always fails).
#[derive(Serialize, Deserialize)]
struct Flaky {
    succeed_on: u32,
}

#[derive(Default)]
struct Calls(AtomicU32);

impl Job for Flaky {
    const KIND: &'static str = "flaky";

    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.data::<Arc<Calls>>()?.0.fetch_add(1, Ordering::SeqCst);
        if ctx.attempt() == self.succeed_on {
            Ok(())
        } else {
            Err(JobError::msg(format!(
                "upstream said no on attempt {}",
                ctx.attempt()
            )))
        }
    }
}

async fn start(db: &TestStore, clock: &ManualClock, calls: &Arc<Calls>) -> Errands {
    db.apply(Errands::builder())
        .register_with::<Flaky>(
            JobConfig::new()
                .max_attempts(4)
                .backoff(Backoff::exponential(
                    Duration::from_secs(10),
                    Duration::from_secs(25),
                )),
        )
        .clock(clock.clone())
        .data(calls.clone())
        .start()
        .await
        .unwrap()
}

fn ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn retries_with_exponential_backoff_then_dies_with_last_error(backend: Backend) {
    let db = TestStore::new(backend);
    let clock = ManualClock::new();
    let calls = Arc::new(Calls::default());
    let errands = start(&db, &clock, &calls).await;
    let mut events = errands.subscribe();
    let id = errands.enqueue(Flaky { succeed_on: 0 }).await.unwrap();

    // Backoff 10 s, 20 s, then capped at 25 s.
    for (attempt, backoff_s) in [(1u32, 10i64), (2, 20), (3, 25)] {
        let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
        let Event::Retrying {
            attempt: a,
            run_at,
            error,
            ..
        } = event
        else {
            panic!("expected a retry, got {event:?}");
        };
        assert_eq!(a, attempt);
        assert_eq!(error, format!("upstream said no on attempt {attempt}"));
        assert_eq!(ms(run_at) - clock.now_ms(), backoff_s * 1000);
        let info = errands.job(id).await.unwrap().unwrap();
        assert_eq!(info.state, JobState::Scheduled);
        assert_eq!(info.attempts, attempt);
        // A second short of the backoff nothing runs. Observed, not assumed:
        // a sentinel enqueued now is claimed (in run_at order) by a claim at
        // the advanced time, which would have taken the retry first had it
        // been due. Then the full backoff runs it.
        clock.advance(Duration::from_secs(backoff_s as u64 - 1));
        let sentinel = errands.enqueue(Flaky { succeed_on: 1 }).await.unwrap();
        common::wait_for(&mut events, |e| e.id() == Some(sentinel)).await;
        let info = errands.job(id).await.unwrap().unwrap();
        assert_eq!((info.state, info.attempts), (JobState::Scheduled, attempt));
        clock.advance(Duration::from_secs(1));
    }
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert_eq!(
        event,
        Event::Dead {
            id,
            kind: "flaky",
            attempt: 4,
            error: "upstream said no on attempt 4".into()
        }
    );
    let info = errands.job(id).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert_eq!(info.attempts, 4);
    assert_eq!(
        info.last_error.as_deref(),
        Some("upstream said no on attempt 4")
    );
    assert_eq!(
        calls.0.load(Ordering::SeqCst),
        4 + 3,
        "never more than max_attempts (plus one run per sentinel)"
    );
}
both!(retries_with_exponential_backoff_then_dies_with_last_error);

async fn a_job_that_succeeds_on_a_retry_completes(backend: Backend) {
    let db = TestStore::new(backend);
    let clock = ManualClock::new();
    let calls = Arc::new(Calls::default());
    let errands = start(&db, &clock, &calls).await;
    let mut events = errands.subscribe();
    let id = errands.enqueue(Flaky { succeed_on: 2 }).await.unwrap();
    common::wait_for(&mut events, |e| matches!(e, Event::Retrying { .. })).await;
    clock.advance(Duration::from_secs(10));
    let done = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert_eq!(
        done,
        Event::Completed {
            id,
            kind: "flaky",
            attempt: 2
        }
    );
    assert_eq!(errands.job(id).await.unwrap(), None);
}
both!(a_job_that_succeeds_on_a_retry_completes);

async fn a_permanent_error_skips_the_remaining_attempts(backend: Backend) {
    #[derive(Serialize, Deserialize)]
    struct Invalid;
    impl Job for Invalid {
        const KIND: &'static str = "invalid";
        async fn run(self, _: JobContext) -> JobResult {
            Err(JobError::permanent("address does not exist"))
        }
    }
    let db = TestStore::new(backend);
    let errands = db
        .apply(Errands::builder())
        .register::<Invalid>()
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(Invalid).await.unwrap();
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert_eq!(
        event,
        Event::Dead {
            id,
            kind: "invalid",
            attempt: 1,
            error: "address does not exist".into()
        }
    );
}
both!(a_permanent_error_skips_the_remaining_attempts);

/// A clock that moves 5 ms forward every time anyone reads it: whatever
/// errands does between computing a retry's run_at and committing it takes
/// "longer" than a short backoff, every time.
struct HurryingClock(std::sync::atomic::AtomicI64);

impl errands::Clock for HurryingClock {
    fn now_ms(&self) -> i64 {
        self.0.fetch_add(5, std::sync::atomic::Ordering::SeqCst)
    }
}

#[derive(Serialize, Deserialize)]
struct FailsOnce;

impl Job for FailsOnce {
    const KIND: &'static str = "fails_once";
    async fn run(self, ctx: JobContext) -> JobResult {
        if ctx.attempt() == 1 {
            return Err(errands::JobError::msg("first attempt fails"));
        }
        Ok(())
    }
}

/// A retry that came due while its outcome was being committed woke
/// nothing, and waited for the fallback poll (here an hour).
async fn a_retry_due_by_the_time_its_outcome_commits_runs_without_waiting_for_the_poll(
    backend: Backend,
) {
    let db = TestStore::new(backend);
    let clock = HurryingClock(std::sync::atomic::AtomicI64::new(1_700_000_000_000));
    let errands = db
        .apply(Errands::builder())
        .register_with::<FailsOnce>(
            JobConfig::new().backoff(Backoff::Fixed(Duration::from_millis(10))),
        )
        .clock(clock)
        .poll_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    // One job alone: no other claim can pick its retry up by chance.
    let id = errands.enqueue(FailsOnce).await.unwrap();
    let done = common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;
    assert_eq!(
        done,
        Event::Completed {
            id,
            kind: "fails_once",
            attempt: 2
        }
    );
}
both!(a_retry_due_by_the_time_its_outcome_commits_runs_without_waiting_for_the_poll);
