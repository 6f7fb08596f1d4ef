//! The knobs a running job meets: cancellation (a handler that listens and
//! one that does not, here and from another process), snooze, throttle
//! across processes, rate limits and adaptive concurrency.

mod common;

use common::{Backend, TestStore};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use errands::{
    Cancellation, Errands, Event, Job, JobConfig, JobContext, JobError, JobResult, JobState,
    ManualClock,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Tells the test it started, then works until cancelled.
#[derive(Serialize, Deserialize)]
struct Listens;

/// Tells the test it started, then never stops by itself.
#[derive(Serialize, Deserialize)]
struct Ignores;

struct Started(mpsc::UnboundedSender<(i64, bool)>);

impl Job for Listens {
    const KIND: &'static str = "listens";
    async fn run(self, ctx: JobContext) -> JobResult {
        let _ = ctx.data::<Arc<Started>>()?.0.send((ctx.id(), false));
        ctx.cancelled().await;
        assert!(ctx.is_cancelled());
        Err(JobError::msg("stopped"))
    }
}

impl Job for Ignores {
    const KIND: &'static str = "ignores";
    fn config() -> JobConfig {
        JobConfig::new().cancel_grace(Duration::from_millis(50))
    }
    async fn run(self, ctx: JobContext) -> JobResult {
        let _ = ctx.data::<Arc<Started>>()?.0.send((ctx.id(), true));
        std::future::pending::<()>().await;
        Ok(())
    }
}

async fn started(rx: &mut mpsc::UnboundedReceiver<(i64, bool)>) -> (i64, bool) {
    actix_rt::time::timeout(common::PATIENCE, rx.recv())
        .await
        .expect("a job started")
        .expect("channel open")
}

fn builder(store: &TestStore, tx: &mpsc::UnboundedSender<(i64, bool)>) -> errands::Builder {
    store
        .apply(Errands::builder())
        .register::<Listens>()
        .register::<Ignores>()
        .data(Arc::new(Started(tx.clone())))
}

/// A running job is cancelled: one handler returns on `ctx.cancelled()`,
/// the other is aborted after its grace period. Both end cancelled, with
/// the reason, and are not retried.
async fn cancel_stops_running_handlers(backend: Backend) {
    let store = TestStore::new(backend);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let errands = builder(&store, &tx).start().await.unwrap();
    let mut events = errands.subscribe();
    for _ in 0..2 {
        let listens = errands.enqueue(Listens).await.unwrap();
        let ignores = errands.enqueue(Ignores).await.unwrap();
        for _ in 0..2 {
            started(&mut rx).await;
        }
        for id in [listens, ignores] {
            assert_eq!(
                errands.cancel_because(id, "by the test").await.unwrap(),
                Cancellation::Signalled
            );
            let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
            assert!(
                matches!(&event, Event::Cancelled { reason, attempt: 1, .. } if reason == "by the test"),
                "{event:?}"
            );
            let info = errands.job(id).await.unwrap().unwrap();
            assert_eq!(info.state, JobState::Cancelled);
            assert_eq!(info.last_error.as_deref(), Some("by the test"));
            assert_eq!(info.attempts, 1);
        }
    }
    let counts = errands.counts().await.unwrap();
    assert_eq!(counts.iter().map(|c| c.cancelled).sum::<u64>(), 4);
    assert_eq!(counts.iter().map(|c| c.pending()).sum::<u64>(), 0);
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(cancel_stops_running_handlers);

/// A cancel made by one process reaches the handler running in another
/// at that one's next poll.
async fn a_cancel_reaches_another_process(backend: Backend) {
    let store = TestStore::new(backend);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let runner = builder(&store, &tx)
        .poll_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let operator = store.apply(Errands::builder()).start().await.unwrap();
    let mut events = runner.subscribe();
    let id = operator.enqueue(Listens).await.unwrap();
    started(&mut rx).await;
    assert_eq!(operator.cancel(id).await.unwrap(), Cancellation::Signalled);
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(matches!(event, Event::Cancelled { .. }), "{event:?}");
    assert_eq!(
        operator.job(id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    runner.shutdown(Duration::from_secs(10)).await.unwrap();
    operator.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(a_cancel_reaches_another_process);

/// Tells the test it started, waits for the test's go, then fails.
#[derive(Serialize, Deserialize)]
struct FailsOnCue;

struct Cue(tokio::sync::Semaphore);

impl Job for FailsOnCue {
    const KIND: &'static str = "fails_on_cue";
    fn config() -> JobConfig {
        JobConfig::new().backoff(errands::Backoff::Fixed(Duration::from_secs(3600)))
    }
    async fn run(self, ctx: JobContext) -> JobResult {
        let _ = ctx.data::<Arc<Started>>()?.0.send((ctx.id(), false));
        ctx.data::<Arc<Cue>>()?.0.acquire().await?.forget();
        Err(JobError::msg("failed before it heard of the cancel"))
    }
}

/// A cancel that misses its handler (the job failed and went back to wait
/// before the holding process polled) is not lost: the next recovery tick
/// cancels the waiting job.
async fn a_cancel_that_races_a_retry_still_cancels(backend: Backend) {
    let store = TestStore::new(backend);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cue = Arc::new(Cue(tokio::sync::Semaphore::new(0)));
    // The runner never polls within the test: only the retry moves the job.
    let runner = store
        .apply(Errands::builder())
        .register::<FailsOnCue>()
        .data(Arc::new(Started(tx.clone())))
        .data(cue.clone())
        .poll_interval(Duration::from_secs(3600))
        .recovery_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let operator = store
        .apply(Errands::builder())
        .recovery_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let mut events = runner.subscribe();
    let id = runner.enqueue(FailsOnCue).await.unwrap();
    started(&mut rx).await;
    assert_eq!(
        operator.cancel_because(id, "too late").await.unwrap(),
        Cancellation::Signalled
    );
    cue.0.add_permits(1);
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(matches!(event, Event::Retrying { .. }), "{event:?}");
    // The operator's recovery tick (every 20 ms) settles the request.
    let settled = actix_rt::time::timeout(common::PATIENCE, async {
        loop {
            let info = operator.job(id).await.unwrap().unwrap();
            if info.state == JobState::Cancelled {
                return info;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the waiting job was never cancelled");
    assert_eq!(settled.last_error.as_deref(), Some("too late"));
    runner.shutdown(Duration::from_secs(10)).await.unwrap();
    operator.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(a_cancel_that_races_a_retry_still_cancels);

/// Snoozes twice, then completes; allowed a single attempt.
#[derive(Serialize, Deserialize)]
struct Sleepy;

#[derive(Default)]
struct Attempts(Mutex<Vec<u32>>);

impl Job for Sleepy {
    const KIND: &'static str = "sleepy";
    fn config() -> JobConfig {
        JobConfig::new().max_attempts(1)
    }
    async fn run(self, ctx: JobContext) -> JobResult {
        let seen = {
            let mut attempts = ctx.data::<Arc<Attempts>>()?.0.lock().unwrap();
            attempts.push(ctx.attempt());
            attempts.len()
        };
        if seen < 3 {
            return Err(JobError::snooze(Duration::from_secs(60)));
        }
        Ok(())
    }
}

/// A snooze runs the job again later and costs no attempt: a job allowed
/// one attempt snoozes twice and still completes.
async fn snooze_does_not_use_an_attempt(backend: Backend) {
    let store = TestStore::new(backend);
    let clock = ManualClock::new();
    let attempts = Arc::new(Attempts::default());
    let errands = store
        .apply(Errands::builder())
        .register::<Sleepy>()
        .data(attempts.clone())
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(Sleepy).await.unwrap();
    for n in 1..=2u32 {
        let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
        assert!(matches!(event, Event::Snoozed { .. }), "{event:?}");
        let info = errands.job(id).await.unwrap().unwrap();
        assert_eq!(
            (info.state, info.attempts, info.max_attempts),
            (JobState::Scheduled, n, n + 1)
        );
        clock.advance(Duration::from_secs(60));
    }
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(
        matches!(event, Event::Completed { attempt: 3, .. }),
        "{event:?}"
    );
    assert_eq!(*attempts.0.lock().unwrap(), [1, 2, 3]);
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(snooze_does_not_use_an_attempt);

/// Throttles its kind for an hour on its first attempt.
#[derive(Serialize, Deserialize)]
struct Throttler;

impl Job for Throttler {
    const KIND: &'static str = "throttler";
    async fn run(self, ctx: JobContext) -> JobResult {
        if ctx.attempt() == 1 {
            return Err(JobError::throttle_for(Duration::from_secs(3600)));
        }
        Ok(())
    }
}

/// Neighbours in the throttled kind's queue, one per process.
#[derive(Serialize, Deserialize)]
struct NextDoorA;
#[derive(Serialize, Deserialize)]
struct NextDoorB;

impl Job for NextDoorA {
    const KIND: &'static str = "next_door_a";
    async fn run(self, _: JobContext) -> JobResult {
        Ok(())
    }
}

impl Job for NextDoorB {
    const KIND: &'static str = "next_door_b";
    async fn run(self, _: JobContext) -> JobResult {
        Ok(())
    }
}

/// A throttle from one process holds the kind in both, each of which says
/// so (`Event::Throttled`); jobs of the kind wait in the queue until the
/// throttle ends, while their neighbours run.
async fn a_throttle_holds_the_kind_in_every_process(backend: Backend) {
    let store = TestStore::new(backend);
    let clock = ManualClock::new();
    let start = |next_door: bool| {
        let builder = store
            .apply(Errands::builder())
            .register::<Throttler>()
            .clock(clock.clone())
            .poll_interval(Duration::from_millis(20));
        let builder = if next_door {
            builder.register::<NextDoorA>()
        } else {
            builder.register::<NextDoorB>()
        };
        builder.start()
    };
    let a = start(true).await.unwrap();
    let b = start(false).await.unwrap();
    let (mut events_a, mut events_b) = (a.subscribe(), b.subscribe());
    let first = a.enqueue(Throttler).await.unwrap();
    for events in [&mut events_a, &mut events_b] {
        let event = common::wait_for(events, |e| matches!(e, Event::Throttled { .. })).await;
        assert!(
            matches!(
                event,
                Event::Throttled {
                    kind: "throttler",
                    ..
                }
            ),
            "{event:?}"
        );
    }
    // Each process: a throttled job enqueued before a neighbour's stays
    // waiting while the neighbour (claimed by that same process) runs.
    let held_a = a.enqueue(Throttler).await.unwrap();
    let ran = a.enqueue(NextDoorA).await.unwrap();
    common::wait_for(&mut events_a, |e| e.id() == Some(ran)).await;
    let held_b = b.enqueue(Throttler).await.unwrap();
    let ran = b.enqueue(NextDoorB).await.unwrap();
    common::wait_for(&mut events_b, |e| e.id() == Some(ran)).await;
    for id in [first, held_a, held_b] {
        let info = a.job(id).await.unwrap().unwrap();
        assert!(
            matches!(info.state, JobState::Available | JobState::Scheduled),
            "job {id}: {info:?}"
        );
    }
    assert_eq!(
        a.job(first).await.unwrap().unwrap().max_attempts,
        26,
        "the throttled attempt did not count"
    );
    // The hour passes: all three run (their first attempts throttle
    // again, so the kind holds for another hour; the first completes).
    clock.advance(Duration::from_secs(3600));
    let mut both = (a.subscribe(), b.subscribe());
    let done = actix_rt::time::timeout(common::PATIENCE, async {
        let done = |e: &Event| e.id() == Some(first) && matches!(e, Event::Completed { .. });
        loop {
            let event = tokio::select! {
                Ok(e) = both.0.next() => e,
                Ok(e) = both.1.next() => e,
            };
            if done(&event) {
                break;
            }
        }
    })
    .await;
    assert!(done.is_ok(), "the throttled job ran after the throttle");
    a.shutdown(Duration::from_secs(10)).await.unwrap();
    b.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(a_throttle_holds_the_kind_in_every_process);

/// Records the (fake) time it started.
#[derive(Serialize, Deserialize)]
struct Metered;

struct Starts {
    clock: ManualClock,
    at: Mutex<Vec<i64>>,
}

impl Job for Metered {
    const KIND: &'static str = "metered";
    fn config() -> JobConfig {
        JobConfig::new()
            .concurrency(100)
            .rate_limit(10, Duration::from_secs(1))
    }
    async fn run(self, ctx: JobContext) -> JobResult {
        use errands::Clock;
        let starts = ctx.data::<Arc<Starts>>()?;
        starts.at.lock().unwrap().push(starts.clock.now_ms());
        Ok(())
    }
}

/// Ten per second over five seconds of fake time: never more than ten
/// starts in any one-second window, and the work goes on as windows open.
#[actix_rt::test]
async fn a_rate_limit_starts_at_most_n_per_window() {
    use errands::Clock;
    let store = TestStore::new(Backend::Sqlite);
    let clock = ManualClock::new();
    let starts = Arc::new(Starts {
        clock: clock.clone(),
        at: Mutex::new(Vec::new()),
    });
    let errands = store
        .apply(Errands::builder())
        .register::<Metered>()
        .data(starts.clone())
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    errands
        .enqueue_many((0..50).map(|_| Metered))
        .await
        .unwrap();
    let t0 = clock.now_ms();
    let mut done = 0;
    for second in 0..5 {
        done += common::collect(&mut events, 10, |e| matches!(e, Event::Completed { .. }))
            .await
            .len();
        assert_eq!(done, 10 * (second + 1));
        // Half a window later nothing more may start (the check below
        // would see it); a full one later, ten more.
        clock.advance(Duration::from_millis(500));
        clock.advance(Duration::from_millis(500));
    }
    let at = starts.at.lock().unwrap().clone();
    assert_eq!(at.len(), 50);
    for &t in &at {
        let within = at.iter().filter(|&&u| u >= t && u < t + 1000).count();
        assert!(
            within <= 10,
            "{within} starts in the window from {t}: {at:?}"
        );
    }
    assert!(at.iter().all(|&t| t - t0 < 5000));
    let counts = errands.counts().await.unwrap();
    assert_eq!(counts.iter().map(|c| c.pending()).sum::<u64>(), 0);
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// Hangs on its first run (and times out), completes after.
#[derive(Serialize, Deserialize)]
struct Flaky {
    hang: bool,
}

impl Job for Flaky {
    const KIND: &'static str = "flaky";
    fn config() -> JobConfig {
        JobConfig::new()
            .adaptive(1..=4)
            .timeout(Duration::from_millis(50))
            .backoff(errands::Backoff::Fixed(Duration::ZERO))
    }
    async fn run(self, ctx: JobContext) -> JobResult {
        if self.hang && ctx.attempt() == 1 {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Adaptive concurrency: a wave of timeouts takes the limit down once, and
/// successes bring it back up to the top of the range.
#[actix_rt::test]
async fn adaptive_concurrency_shrinks_on_timeouts_and_grows_back() {
    let store = TestStore::new(Backend::Sqlite);
    let errands = store
        .apply(Errands::builder())
        .register::<Flaky>()
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    errands
        .enqueue_many((0..4).map(|_| Flaky { hang: true }))
        .await
        .unwrap();
    let event = common::wait_for(&mut events, |e| {
        matches!(e, Event::ConcurrencyChanged { .. })
    })
    .await;
    assert!(
        matches!(
            event,
            Event::ConcurrencyChanged {
                kind: "flaky",
                limit: 3,
                ..
            }
        ),
        "{event:?}"
    );
    let controls = errands.controls().await.unwrap();
    assert_eq!(controls[0].adaptive, Some([1, 4]));
    assert!(matches!(controls[0].concurrency, Some(3 | 4)));
    errands
        .enqueue_many((0..10).map(|_| Flaky { hang: false }))
        .await
        .unwrap();
    let event = common::wait_for(&mut events, |e| {
        matches!(e, Event::ConcurrencyChanged { .. })
    })
    .await;
    assert!(
        matches!(event, Event::ConcurrencyChanged { limit: 4, .. }),
        "{event:?}"
    );
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
