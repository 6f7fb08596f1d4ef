//! The behaviour every store must have, one test body run on each: SQLite
//! (a temporary file) and PostgreSQL (a schema of its own on the server at
//! `ERRANDS_PG_URL`). A job behaves the same on both.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, TestStore};
use errands::{
    Backoff, Errands, Event, Job, JobConfig, JobContext, JobError, JobResult, JobState, JobStatus,
    ManualClock,
};
use serde::{Deserialize, Serialize};

/// Every start of every job: (id, attempt).
#[derive(Default)]
struct Runs(Mutex<Vec<(i64, u32)>>);

impl Runs {
    fn of(&self, id: i64) -> Vec<u32> {
        let runs = self.0.lock().unwrap();
        runs.iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, a)| *a)
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct Work {
    n: u32,
    /// Fail the first `fail` attempts.
    fail: u32,
}

impl Job for Work {
    const KIND: &'static str = "work";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.data::<Arc<Runs>>()?
            .0
            .lock()
            .unwrap()
            .push((ctx.id(), ctx.attempt()));
        if ctx.attempt() <= self.fail {
            return Err(JobError::msg(format!("failing attempt {}", ctx.attempt())));
        }
        Ok(())
    }
}

async fn start(store: &TestStore, clock: Option<ManualClock>) -> (Errands, Arc<Runs>) {
    let runs = Arc::new(Runs::default());
    let mut builder = store
        .apply(Errands::builder())
        .register_with::<Work>(
            JobConfig::new()
                .concurrency(8)
                .max_attempts(3)
                .backoff(Backoff::Fixed(Duration::from_secs(10))),
        )
        .data(runs.clone());
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    (builder.start().await.expect("start"), runs)
}

/// Enqueued jobs each run exactly once, in one attempt, and are then
/// reported completed.
async fn every_job_runs_once(backend: Backend) {
    let store = TestStore::new(backend);
    let (errands, runs) = start(&store, None).await;
    let mut events = errands.subscribe();
    let mut ids = errands
        .enqueue_many((0..50).map(|n| Work { n, fail: 0 }))
        .await
        .unwrap();
    ids.push(errands.enqueue(Work { n: 50, fail: 0 }).await.unwrap());
    let done = common::collect(&mut events, ids.len(), |e| {
        matches!(e, Event::Completed { .. })
    })
    .await;
    let mut done: Vec<i64> = done.iter().filter_map(Event::id).collect();
    done.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(done, expected);
    for id in &ids {
        assert_eq!(runs.of(*id), [1], "job {id} ran once");
        assert_eq!(errands.status(*id).await.unwrap(), JobStatus::Completed);
    }
    let pending: u64 = errands
        .counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.pending())
        .sum();
    assert_eq!(pending, 0);
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(every_job_runs_once);

/// A failing job is retried after its backoff (on the injected clock),
/// then dead after its attempts; requeue gives it fresh attempts and purge
/// deletes it for good.
async fn retries_then_dead_then_requeue_and_purge(backend: Backend) {
    let store = TestStore::new(backend);
    let clock = ManualClock::new();
    let (errands, runs) = start(&store, Some(clock.clone())).await;
    let mut events = errands.subscribe();
    let id = errands.enqueue(Work { n: 1, fail: 99 }).await.unwrap();
    for attempt in 1..=2u32 {
        let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
        assert!(
            matches!(&event, Event::Retrying { attempt: a, error, .. } if *a == attempt && error.contains("failing attempt")),
            "{event:?}"
        );
        let info = errands.job(id).await.unwrap().unwrap();
        assert_eq!(info.state, JobState::Scheduled);
        clock.advance(Duration::from_secs(10));
    }
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(matches!(event, Event::Dead { attempt: 3, .. }), "{event:?}");
    assert_eq!(runs.of(id), [1, 2, 3]);
    let dead = errands.dead_jobs(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].last_error.as_deref(), Some("failing attempt 3"));

    errands.requeue(id).await.unwrap();
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(
        matches!(event, Event::Retrying { attempt: 1, .. }),
        "{event:?}"
    );
    clock.advance(Duration::from_secs(10));
    common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    clock.advance(Duration::from_secs(10));
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(matches!(event, Event::Dead { .. }), "{event:?}");
    errands.purge(id).await.unwrap();
    assert_eq!(errands.status(id).await.unwrap(), JobStatus::Purged);
    assert!(matches!(
        errands.purge(id).await,
        Err(errands::Error::NotFound(i)) if i == id
    ));
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(retries_then_dead_then_requeue_and_purge);

/// A delayed job is scheduled until its time, then runs; a cancelled one
/// never runs and is kept as cancelled with its reason; cancelling it
/// twice is a clear error.
async fn delays_and_cancel(backend: Backend) {
    let store = TestStore::new(backend);
    let clock = ManualClock::new();
    let (errands, runs) = start(&store, Some(clock.clone())).await;
    let mut events = errands.subscribe();
    let later = errands
        .enqueue_in(Work { n: 1, fail: 0 }, Duration::from_secs(60))
        .await
        .unwrap();
    let cancelled = errands
        .enqueue_in(Work { n: 2, fail: 0 }, Duration::from_secs(60))
        .await
        .unwrap();
    let counts = errands.counts().await.unwrap();
    assert_eq!(counts.iter().map(|c| c.scheduled).sum::<u64>(), 2);
    assert_eq!(
        errands.job(later).await.unwrap().unwrap().state,
        JobState::Scheduled
    );
    assert_eq!(
        errands
            .cancel_because(cancelled, "not needed")
            .await
            .unwrap(),
        errands::Cancellation::Cancelled
    );
    let info = errands.job(cancelled).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(info.last_error.as_deref(), Some("not needed"));
    assert!(matches!(
        errands.status(cancelled).await.unwrap(),
        JobStatus::Stored(info) if info.state == JobState::Cancelled
    ));
    assert!(matches!(
        errands.cancel(cancelled).await,
        Err(errands::Error::WrongState {
            state: JobState::Cancelled,
            ..
        })
    ));
    clock.advance(Duration::from_secs(60));
    let event = common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;
    assert_eq!(event.id(), Some(later));
    assert_eq!(runs.of(later), [1]);
    assert!(runs.of(cancelled).is_empty());
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(delays_and_cancel);

#[derive(Serialize, Deserialize)]
struct Steps;

/// Progress of the `Steps` job: which steps ran, per attempt.
#[derive(Default)]
struct StepLog(Mutex<Vec<(&'static str, u32)>>);

impl Job for Steps {
    const KIND: &'static str = "steps";
    async fn run(self, ctx: JobContext) -> JobResult {
        let log = ctx.data::<Arc<StepLog>>()?;
        ctx.step("one", async || {
            log.0.lock().unwrap().push(("one", ctx.attempt()));
            Ok(())
        })
        .await?;
        ctx.step("two", async || {
            log.0.lock().unwrap().push(("two", ctx.attempt()));
            if ctx.attempt() == 1 {
                return Err(JobError::msg("two fails once"));
            }
            Ok(())
        })
        .await
    }
}

/// A finished step is not run again by the next attempt: its checkpoint is
/// stored with the failed attempt's outcome.
async fn finished_steps_are_skipped_on_retry(backend: Backend) {
    let store = TestStore::new(backend);
    let log = Arc::new(StepLog::default());
    let errands = store
        .apply(Errands::builder())
        .register_with::<Steps>(JobConfig::new().backoff(Backoff::Fixed(Duration::ZERO)))
        .data(log.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(Steps).await.unwrap();
    let event = common::wait_for(&mut events, |e| {
        e.id() == Some(id) && matches!(e, Event::Completed { .. })
    })
    .await;
    assert!(matches!(event, Event::Completed { attempt: 2, .. }));
    assert_eq!(*log.0.lock().unwrap(), [("one", 1), ("two", 1), ("two", 2)]);
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(finished_steps_are_skipped_on_retry);

/// Jobs enqueued by a process that runs no worker wait, visible in the
/// counts; a second instance on the same store runs them.
async fn a_second_instance_runs_what_the_first_enqueued(backend: Backend) {
    let store = TestStore::new(backend);
    let producer = store
        .apply(Errands::builder())
        .start()
        .await
        .expect("a producer with no workers starts");
    let ids = producer
        .enqueue_many((0..20).map(|n| Work { n, fail: 0 }))
        .await
        .unwrap();
    let counts = producer.counts().await.unwrap();
    assert_eq!(counts.iter().map(|c| c.available).sum::<u64>(), 20);
    let (worker, runs) = start(&store, None).await;
    let mut events = worker.subscribe();
    common::collect(&mut events, ids.len(), |e| {
        matches!(e, Event::Completed { .. })
    })
    .await;
    let mut ran: HashMap<i64, usize> = HashMap::new();
    for (id, _) in runs.0.lock().unwrap().iter() {
        *ran.entry(*id).or_default() += 1;
    }
    assert_eq!(ran.len(), 20);
    assert!(ran.values().all(|n| *n == 1));
    worker.shutdown(Duration::from_secs(10)).await.unwrap();
    producer.shutdown(Duration::from_secs(10)).await.unwrap();
}
both!(a_second_instance_runs_what_the_first_enqueued);

/// A `Work` instance that polls once an hour: a job it starts soon was
/// started by a wake-up from another instance.
async fn hourly_worker(store: &TestStore) -> (Errands, Arc<Runs>) {
    let runs = Arc::new(Runs::default());
    let worker = store
        .apply(Errands::builder())
        .register::<Work>()
        .data(runs.clone())
        .poll_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    (worker, runs)
}

/// On PostgreSQL a job enqueued by one instance wakes another at once
/// (`NOTIFY` at the enqueue's commit, `LISTEN` on each instance): the
/// worker here polls only once an hour, so without the notification the
/// job would wait an hour and the test would time out.
#[actix_rt::test]
async fn postgres_enqueue_on_one_instance_wakes_another() {
    let store = TestStore::new(Backend::Postgres);
    let (worker, _runs) = hourly_worker(&store).await;
    let mut events = worker.subscribe();
    let producer = store.apply(Errands::builder()).start().await.unwrap();
    for n in 0..5 {
        let id = producer.enqueue(Work { n, fail: 0 }).await.unwrap();
        let event = common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;
        assert_eq!(event.id(), Some(id));
    }
    producer.shutdown(Duration::from_secs(10)).await.unwrap();
    worker.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// Bad PostgreSQL settings are clear errors from `start()`, not hangs.
#[actix_rt::test]
async fn postgres_connection_problems_are_clear_errors() {
    let refused = Errands::builder()
        .postgres_options(
            errands::PostgresOptions::new("postgres://postgres@127.0.0.1:1/test")
                .connect_timeout(Duration::from_secs(2)),
        )
        .start()
        .await;
    match refused {
        Err(errands::Error::Connect { target, source }) => {
            assert_eq!(target, "127.0.0.1:1/test");
            assert_eq!(source.kind(), errands::StoreErrorKind::Unavailable);
        }
        other => panic!("expected a connect error, got {:?}", other.err()),
    }
    let url = format!("{}_no_such_database", common::pg_url());
    match Errands::builder().postgres(url).start().await {
        Err(errands::Error::Connect { source, .. }) => {
            assert_eq!(source.kind(), errands::StoreErrorKind::Refused);
            assert!(source.to_string().contains("does not exist"), "{source}");
        }
        other => panic!("expected a connect error, got {:?}", other.err()),
    }
    match Errands::builder().postgres("postgres://[bad").start().await {
        Err(errands::Error::Config(problems)) => assert!(matches!(
            problems[..],
            [errands::ConfigProblem::InvalidPostgresUrl { .. }]
        )),
        other => panic!("expected a config error, got {:?}", other.err()),
    }
    let bad_schema = Errands::builder()
        .postgres_options(errands::PostgresOptions::new(common::pg_url()).schema("Jobs; DROP"))
        .start()
        .await;
    assert!(matches!(
        bad_schema.err(),
        Some(errands::Error::Config(p)) if matches!(p[..], [errands::ConfigProblem::InvalidSchemaName { .. }])
    ));
}

/// A schema written by a newer errands is refused, naming both versions.
#[actix_rt::test]
async fn postgres_refuses_a_newer_schema() {
    let store = TestStore::new(Backend::Postgres);
    let first = store.apply(Errands::builder()).start().await.unwrap();
    first.shutdown(Duration::from_secs(10)).await.unwrap();
    let (client, connection) =
        errands::tokio_postgres::connect(&common::pg_url(), errands::tokio_postgres::NoTls)
            .await
            .unwrap();
    actix_rt::spawn(connection);
    client
        .batch_execute(&format!("UPDATE {}.version SET version = 99", store.schema))
        .await
        .unwrap();
    match store.apply(Errands::builder()).start().await {
        Err(errands::Error::SchemaTooNew { found, supported }) => {
            assert_eq!(found, 99);
            assert!(supported < 99);
        }
        other => panic!("expected SchemaTooNew, got {:?}", other.err()),
    }
}

#[derive(Serialize, Deserialize)]
struct Limited;

/// Concurrent runs of `Limited` across every instance in this process.
#[derive(Default)]
struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
    all_done: tokio::sync::Notify,
}

const LIMITED_JOBS: usize = 60;

impl Job for Limited {
    const KIND: &'static str = "limited";
    async fn run(self, ctx: JobContext) -> JobResult {
        use std::sync::atomic::Ordering::SeqCst;
        let gauge = ctx.data::<Arc<Gauge>>()?;
        let now = gauge.now.fetch_add(1, SeqCst) + 1;
        gauge.peak.fetch_max(now, SeqCst);
        actix_rt::time::sleep(Duration::from_millis(10)).await;
        gauge.now.fetch_sub(1, SeqCst);
        if gauge.done.fetch_add(1, SeqCst) + 1 == LIMITED_JOBS {
            gauge.all_done.notify_one();
        }
        Ok(())
    }
}

/// Three instances, each allowed 4 at once, share a global limit of 3:
/// never more than 3 run at once across them, and 3 do.
async fn a_global_limit_holds_across_instances(backend: Backend) {
    let store = TestStore::new(backend);
    let gauge = Arc::new(Gauge::default());
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(
            store
                .apply(Errands::builder())
                .register_with::<Limited>(JobConfig::new().concurrency(4).global_concurrency(3))
                .data(gauge.clone())
                .poll_interval(Duration::from_millis(100))
                .start()
                .await
                .unwrap(),
        );
    }
    instances[0]
        .enqueue_many((0..LIMITED_JOBS).map(|_| Limited))
        .await
        .unwrap();
    actix_rt::time::timeout(common::PATIENCE, gauge.all_done.notified())
        .await
        .expect("all limited jobs done");
    let peak = gauge.peak.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(peak, 3, "the global limit was reached and never exceeded");
    for errands in instances {
        errands.shutdown(Duration::from_secs(10)).await.unwrap();
    }
}
both!(a_global_limit_holds_across_instances);

/// A delayed job enqueued on one PostgreSQL instance is started on time by
/// another that polls once an hour: the `NOTIFY` names when the job is due,
/// and the other instance's scheduler sets its timer for then.
#[actix_rt::test]
async fn postgres_a_delayed_job_from_another_instance_starts_on_time() {
    let store = TestStore::new(Backend::Postgres);
    let (worker, _runs) = hourly_worker(&store).await;
    let mut events = worker.subscribe();
    let producer = store.apply(Errands::builder()).start().await.unwrap();
    let delay = Duration::from_millis(300);
    let sent = std::time::Instant::now();
    let id = producer
        .enqueue_in(Work { n: 1, fail: 0 }, delay)
        .await
        .unwrap();
    let event = common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;
    assert_eq!(event.id(), Some(id));
    assert!(sent.elapsed() >= delay, "not before it was due");
    producer.shutdown(Duration::from_secs(10)).await.unwrap();
    worker.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// A host clock `skew_ms` off the real one.
struct Skewed(i64);

impl errands::Clock for Skewed {
    fn now_ms(&self) -> i64 {
        errands::SystemClock.now_ms() + self.0
    }
}

/// Start times of `Work` jobs, by id.
#[derive(Default)]
struct Started(Mutex<HashMap<i64, std::time::Instant>>);

#[derive(Serialize, Deserialize)]
struct Stamped;

impl Job for Stamped {
    const KIND: &'static str = "stamped";
    async fn run(self, ctx: JobContext) -> JobResult {
        let started = ctx.data::<Arc<Started>>()?;
        started
            .0
            .lock()
            .unwrap()
            .insert(ctx.id(), std::time::Instant::now());
        Ok(())
    }
}

/// Hosts whose clocks are 10 s fast and 10 s slow each enqueue a job due
/// in 500 ms; a third host runs both 500 ms after their enqueue, not 10 s
/// late nor at once: what is due is decided by the server's clock.
#[actix_rt::test]
async fn postgres_hosts_with_skewed_clocks_agree_on_when_a_job_is_due() {
    let store = TestStore::new(Backend::Postgres);
    let started = Arc::new(Started::default());
    let worker = store
        .apply(Errands::builder())
        .register::<Stamped>()
        .data(started.clone())
        .poll_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let mut events = worker.subscribe();
    let skewed = |skew_ms| {
        Errands::builder()
            .postgres_options(
                errands::PostgresOptions::new(common::pg_url())
                    .schema(store.schema.clone())
                    .server_clock(true),
            )
            .clock(Skewed(skew_ms))
            .start()
    };
    let fast = skewed(10_000).await.unwrap();
    let slow = skewed(-10_000).await.unwrap();
    let delay = Duration::from_millis(500);
    let mut sent = HashMap::new();
    for producer in [&fast, &slow] {
        let at = std::time::Instant::now();
        let id = producer.enqueue_in(Stamped, delay).await.unwrap();
        sent.insert(id, at);
    }
    common::collect(&mut events, 2, |e| matches!(e, Event::Completed { .. })).await;
    let started = started.0.lock().unwrap().clone();
    for (id, at) in sent {
        let waited = started[&id].duration_since(at);
        assert!(
            waited >= Duration::from_millis(490) && waited < Duration::from_secs(5),
            "job {id} started {waited:?} after its enqueue, due after {delay:?}"
        );
    }
    for errands in [fast, slow, worker] {
        errands.shutdown(Duration::from_secs(10)).await.unwrap();
    }
}
