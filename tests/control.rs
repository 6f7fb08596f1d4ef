//! Live control through the public API: a kind's limit changed while jobs
//! run, pauses of queues and kinds (and for a while), overrides that
//! survive a restart, retention of dead and cancelled jobs, and the typed
//! errors for bad input. Each runs on both stores.

mod common;

use common::{Backend, TestStore};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use errands::{
    Cancellation, ConfigProblem, Errands, Error, Event, Job, JobConfig, JobContext, JobError,
    JobResult, JobState, JobStatus, ManualClock,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

/// Held until the test releases it; reports how many run as it starts.
#[derive(Serialize, Deserialize)]
struct Gated;

struct Gate {
    running: AtomicUsize,
    starts: mpsc::UnboundedSender<usize>,
    release: Semaphore,
}

impl Job for Gated {
    const KIND: &'static str = "gated";
    fn config() -> JobConfig {
        JobConfig::new().concurrency(10)
    }
    async fn run(self, ctx: JobContext) -> JobResult {
        let gate = ctx.data::<Arc<Gate>>()?;
        let now = gate.running.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = gate.starts.send(now);
        gate.release.acquire().await?.forget();
        gate.running.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Completes at once.
#[derive(Serialize, Deserialize)]
struct Quick;

impl Job for Quick {
    const KIND: &'static str = "quick";
    async fn run(self, _: JobContext) -> JobResult {
        Ok(())
    }
}

/// Completes at once; shares `Quick`'s queue.
#[derive(Serialize, Deserialize)]
struct Other;

impl Job for Other {
    const KIND: &'static str = "other";
    async fn run(self, _: JobContext) -> JobResult {
        Ok(())
    }
}

/// Dead at once.
#[derive(Serialize, Deserialize)]
struct Doomed;

impl Job for Doomed {
    const KIND: &'static str = "doomed";
    async fn run(self, _: JobContext) -> JobResult {
        Err(JobError::permanent("no"))
    }
}

fn gate() -> (Arc<Gate>, mpsc::UnboundedReceiver<usize>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        running: AtomicUsize::new(0),
        starts: tx,
        release: Semaphore::new(0),
    });
    (gate, rx)
}

async fn start_gated(store: &TestStore, gate: &Arc<Gate>) -> Errands {
    store
        .apply(Errands::builder())
        .register::<Gated>()
        .data(gate.clone())
        .start()
        .await
        .unwrap()
}

async fn next_start(starts: &mut mpsc::UnboundedReceiver<usize>) -> usize {
    actix_rt::time::timeout(common::PATIENCE, starts.recv())
        .await
        .expect("a job started")
        .expect("channel open")
}

/// With ten running, the limit goes down to three: no job starts until
/// fewer than three run, and from then on never more than three run.
async fn lowering_a_limit_starts_nothing_until_below_it(backend: Backend) {
    let store = TestStore::new(backend);
    let (gate, mut starts) = gate();
    let errands = start_gated(&store, &gate).await;
    let mut events = errands.subscribe();
    errands.enqueue_many((0..30).map(|_| Gated)).await.unwrap();
    for _ in 0..10 {
        next_start(&mut starts).await;
    }
    errands.set_concurrency("gated", 3).await.unwrap();
    let mut seen_after = Vec::new();
    for released in 1..=30 {
        gate.release.add_permits(1);
        common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;
        // Whatever started because of that completion has reported by now
        // or will be seen at the next round.
        while let Ok(running) = starts.try_recv() {
            seen_after.push((released, running));
        }
    }
    while let Ok(running) = starts.try_recv() {
        seen_after.push((31, running));
    }
    assert_eq!(seen_after.len(), 20, "the other 20 jobs ran");
    assert!(
        seen_after.iter().all(|(_, running)| *running <= 3),
        "a job started with more than 3 running: {seen_after:?}"
    );
    // The first start after lowering came once 8 of the 10 had finished.
    assert!(seen_after[0].0 >= 8, "{seen_after:?}");
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(lowering_a_limit_starts_nothing_until_below_it);

/// The override is stored: a restarted process applies it, `controls()`
/// shows the code's value beside it, and reset brings the code's back.
async fn overrides_survive_a_restart_and_reset_restores_the_code_value(backend: Backend) {
    let store = TestStore::new(backend);
    let (gate, _starts) = gate();
    let errands = start_gated(&store, &gate).await;
    errands.set_concurrency("gated", 3).await.unwrap();
    errands.pause_kind("gated").await.unwrap();
    errands.shutdown(Duration::from_secs(10)).await.unwrap();

    let errands = start_gated(&store, &gate).await;
    let controls = errands.controls().await.unwrap();
    let gated = controls.iter().find(|c| c.kind == "gated").unwrap();
    assert_eq!(
        (
            gated.default_concurrency,
            gated.override_concurrency,
            gated.concurrency
        ),
        (Some(10), Some(3), Some(3))
    );
    assert!(gated.paused && gated.paused_until.is_none());
    errands.reset_concurrency("gated").await.unwrap();
    errands.resume_kind("gated").await.unwrap();
    let controls = errands.controls().await.unwrap();
    let gated = controls.iter().find(|c| c.kind == "gated").unwrap();
    assert_eq!(
        (gated.override_concurrency, gated.concurrency, gated.paused),
        (None, Some(10), false)
    );
    let json = serde_json::to_value(&controls).unwrap();
    assert_eq!(json[0]["kind"], "gated");
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(overrides_survive_a_restart_and_reset_restores_the_code_value);

async fn start_quick(store: &TestStore, clock: &ManualClock) -> Errands {
    store
        .apply(Errands::builder())
        .register::<Quick>()
        .register::<Other>()
        .clock(clock.clone())
        .start()
        .await
        .unwrap()
}

fn count(errands_counts: &[errands::Counts], kind: &str) -> (u64, u64, u64) {
    errands_counts
        .iter()
        .find(|c| c.kind == kind)
        .map_or((0, 0, 0), |c| (c.available, c.claimed + c.running, c.dead))
}

/// A paused queue takes jobs but claims none; resumed, it runs them. A
/// paused kind is left out of claims that take its neighbours. A pause
/// for a while ends by itself when the clock gets there.
async fn pause_then_resume_claims_nothing_in_between(backend: Backend) {
    let store = TestStore::new(backend);
    let clock = ManualClock::new();
    let errands = start_quick(&store, &clock).await;
    let mut events = errands.subscribe();

    errands.pause("default").await.unwrap();
    errands.enqueue_many((0..5).map(|_| Quick)).await.unwrap();
    // Answers once the enqueue's wake was handled and no claim is in flight.
    errands.pause("default").await.unwrap();
    let counts = errands.counts().await.unwrap();
    assert_eq!(count(&counts, "quick"), (5, 0, 0));
    errands.resume("default").await.unwrap();
    // Nothing was claimed and given back meanwhile either: the first
    // events are the five completions.
    let first = common::collect(&mut events, 5, |_| true).await;
    assert!(
        first.iter().all(|e| matches!(e, Event::Completed { .. })),
        "{first:?}"
    );

    // A paused kind: its neighbour's job runs, in a claim that would have
    // taken it too.
    errands.pause_kind("quick").await.unwrap();
    let held = errands.enqueue(Quick).await.unwrap();
    let ran = errands.enqueue(Other).await.unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(ran)).await;
    assert_eq!(
        errands.job(held).await.unwrap().unwrap().state,
        JobState::Available
    );
    errands.resume_kind("quick").await.unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(held)).await;

    // For a while: held until the clock passes the end.
    errands
        .pause_kind_for("quick", Duration::from_secs(600))
        .await
        .unwrap();
    let held = errands.enqueue(Quick).await.unwrap();
    let ran = errands.enqueue(Other).await.unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(ran)).await;
    assert_eq!(
        errands.job(held).await.unwrap().unwrap().state,
        JobState::Available
    );
    let controls = errands.controls().await.unwrap();
    let quick = controls.iter().find(|c| c.kind == "quick").unwrap();
    assert!(quick.paused && quick.paused_until.is_some());
    clock.advance(Duration::from_secs(600));
    common::wait_for(&mut events, |e| e.id() == Some(held)).await;
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(pause_then_resume_claims_nothing_in_between);

/// A pause stored by one process holds the queue in another on the same
/// database, from that one's next poll.
async fn a_pause_reaches_another_process(backend: Backend) {
    let store = TestStore::new(backend);
    let clock = ManualClock::new();
    // Only the second runs `Other`, so its completion proves the second's
    // own round.
    let first = store
        .apply(Errands::builder())
        .register::<Quick>()
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let second = store
        .apply(Errands::builder())
        .register::<Quick>()
        .register::<Other>()
        .clock(clock.clone())
        .poll_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    first.pause_kind("quick").await.unwrap();
    // The second takes it up at a poll (every 20 ms): from then on a job
    // it enqueues stays put while its neighbour, enqueued after it, runs.
    // Before then the job runs, so each try is a real round, not a sleep.
    let mut events = second.subscribe();
    let mut applied = false;
    for _ in 0..50 {
        let held = second.enqueue(Quick).await.unwrap();
        let ran = second.enqueue(Other).await.unwrap();
        common::wait_for(&mut events, |e| e.id() == Some(ran)).await;
        let state = second.job(held).await.unwrap().map(|info| info.state);
        if state == Some(JobState::Available) {
            applied = true;
            break;
        }
    }
    assert!(applied, "the second process never held the paused kind");
    first.resume_kind("quick").await.unwrap();
    first.shutdown(Duration::from_secs(10)).await.unwrap();
    second.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(a_pause_reaches_another_process);

/// Dead and cancelled jobs older than `retain_dead` are pruned (in
/// batches of a thousand: 1,200 here), leaving tombstones; younger ones
/// stay.
async fn retain_dead_prunes_dead_and_cancelled_jobs(backend: Backend) {
    let store = TestStore::new(backend);
    let clock = ManualClock::new();
    let start = || {
        store
            .apply(Errands::builder())
            .register::<Doomed>()
            .register::<Quick>()
            .clock(clock.clone())
            .retain_dead(Duration::from_secs(3600))
            .start()
    };
    let errands = start().await.unwrap();
    let mut events = errands.subscribe();
    let dead = errands.enqueue(Doomed).await.unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(dead)).await;
    let later = errands
        .enqueue_many_with(
            (0..1200).map(|_| Quick),
            errands::EnqueueOptions::new().delay(Duration::from_secs(86_400)),
        )
        .await
        .unwrap();
    for id in &later {
        assert_eq!(errands.cancel(*id).await.unwrap(), Cancellation::Cancelled);
    }
    errands.shutdown(Duration::from_secs(10)).await.unwrap();

    // Half an hour on: all kept.
    clock.advance(Duration::from_secs(1800));
    let errands = start().await.unwrap();
    let counts = errands.counts().await.unwrap();
    let cancelled: u64 = counts.iter().map(|c| c.cancelled).sum();
    assert_eq!((count(&counts, "doomed").2, cancelled), (1, 1200));
    errands.shutdown(Duration::from_secs(10)).await.unwrap();

    // Past the hour: pruned at start, every batch.
    clock.advance(Duration::from_secs(1801));
    let errands = start().await.unwrap();
    let counts = errands.counts().await.unwrap();
    let cancelled: u64 = counts.iter().map(|c| c.cancelled).sum();
    assert_eq!((count(&counts, "doomed").2, cancelled), (0, 0));
    assert_eq!(errands.status(dead).await.unwrap(), JobStatus::Purged);
    assert_eq!(
        errands.status(later[1199]).await.unwrap(),
        JobStatus::Cancelled
    );
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(retain_dead_prunes_dead_and_cancelled_jobs);

/// Every bad control call is a typed error, stores nothing, and loses
/// nothing already acknowledged.
#[actix_rt::test]
async fn bad_control_input_is_a_typed_error() {
    let store = TestStore::new(Backend::Sqlite);
    let clock = ManualClock::new();
    let errands = start_quick(&store, &clock).await;
    let mut events = errands.subscribe();
    errands.pause("default").await.unwrap();
    let kept = errands.enqueue(Quick).await.unwrap();

    assert!(matches!(
        errands.set_concurrency("nope", 3).await,
        Err(Error::UnknownKind(kind)) if kind == "nope"
    ));
    assert!(matches!(
        errands.set_concurrency("quick", 0).await,
        Err(Error::Config(p)) if p == [ConfigProblem::ZeroConcurrency { kind: "quick" }]
    ));
    assert!(matches!(
        errands.set_concurrency("quick", usize::MAX).await,
        Err(Error::Config(p)) if matches!(p[..], [ConfigProblem::TooManySlots { .. }])
    ));
    assert!(matches!(
        errands.pause("nope").await,
        Err(Error::UnknownQueue(queue)) if queue == "nope"
    ));
    assert!(matches!(
        errands.pause_kind_for("nope", Duration::from_secs(1)).await,
        Err(Error::UnknownKind(_))
    ));
    assert!(matches!(
        errands.cancel(kept + 1000).await,
        Err(Error::NotFound(_))
    ));
    let message = errands.pause("nope").await.unwrap_err().to_string();
    assert!(message.contains("no queue `nope`"), "{message}");
    let controls = errands.controls().await.unwrap();
    assert!(controls.iter().all(|c| c.override_concurrency.is_none()));

    errands.resume("default").await.unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(kept)).await;
    errands.shutdown(Duration::from_secs(10)).await.unwrap();

    // Settings that could never run are refused at start.
    #[allow(clippy::reversed_empty_ranges)] // the empty range is the point
    let problems = match store
        .apply(Errands::builder())
        .register_with::<Quick>(JobConfig::new().rate_limit(0, Duration::from_secs(1)))
        .register_with::<Other>(JobConfig::new().adaptive(5..=2))
        .start()
        .await
    {
        Err(Error::Config(problems)) => problems,
        other => panic!("expected configuration problems, got {:?}", other.err()),
    };
    assert_eq!(
        problems,
        [
            ConfigProblem::ZeroRateLimit { kind: "quick" },
            ConfigProblem::InvalidAdaptiveRange {
                kind: "other",
                min: 5,
                max: 2
            }
        ]
    );
}
