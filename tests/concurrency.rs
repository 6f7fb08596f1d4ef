//! Per-kind concurrency limits are never exceeded, as measured by the
//! handlers themselves, and are reached when there is enough work.

mod common;

use common::{Backend, TestStore};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use errands::{Errands, Event, Job, JobConfig, JobContext, JobResult};
use serde::{Deserialize, Serialize};

/// Running and peak counts, one pair per kind.
#[derive(Default)]
struct Gauge {
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    async fn hold(&self) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        // Simulated work, long enough for the others to pile up.
        actix_rt::time::sleep(Duration::from_millis(3)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Gauges {
    serial: Gauge,
    narrow: Gauge,
    wide: Gauge,
}

/// One at a time (claimed in batches, run singly).
#[derive(Serialize, Deserialize)]
struct Serial;
#[derive(Serialize, Deserialize)]
struct Narrow;
#[derive(Serialize, Deserialize)]
struct Wide;

impl Job for Serial {
    const KIND: &'static str = "serial";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.data::<Arc<Gauges>>()?.serial.hold().await;
        Ok(())
    }
}

impl Job for Narrow {
    const KIND: &'static str = "narrow";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.data::<Arc<Gauges>>()?.narrow.hold().await;
        Ok(())
    }
}

impl Job for Wide {
    const KIND: &'static str = "wide";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.data::<Arc<Gauges>>()?.wide.hold().await;
        Ok(())
    }
}

async fn limits_per_kind_are_never_exceeded_and_are_reached(backend: Backend) {
    let db = TestStore::new(backend);
    let gauges = Arc::new(Gauges {
        serial: Gauge::default(),
        narrow: Gauge::default(),
        wide: Gauge::default(),
    });
    let errands = db
        .apply(Errands::builder())
        .register_with::<Serial>(JobConfig::new().concurrency(1))
        .register_with::<Narrow>(JobConfig::new().concurrency(3))
        .register_with::<Wide>(JobConfig::new().concurrency(17))
        .data(gauges.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    errands
        .enqueue_many((0..120).map(|_| Narrow))
        .await
        .unwrap();
    errands.enqueue_many((0..400).map(|_| Wide)).await.unwrap();
    errands.enqueue_many((0..40).map(|_| Serial)).await.unwrap();
    common::collect(&mut events, 560, |e| matches!(e, Event::Completed { .. })).await;

    assert_eq!(gauges.serial.peak.load(Ordering::SeqCst), 1);
    assert_eq!(gauges.narrow.peak.load(Ordering::SeqCst), 3);
    assert_eq!(gauges.wide.peak.load(Ordering::SeqCst), 17);
    assert_eq!(gauges.narrow.running.load(Ordering::SeqCst), 0);
}
both!(limits_per_kind_are_never_exceeded_and_are_reached);

/// Records the thread each attempt ran on.
#[derive(Serialize, Deserialize)]
struct WhereAmI;

#[derive(Default)]
struct Threads(std::sync::Mutex<std::collections::HashSet<std::thread::ThreadId>>);

impl Job for WhereAmI {
    const KIND: &'static str = "where_am_i";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.data::<Arc<Threads>>()?
            .0
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        // Long enough that the others start while this one runs.
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

/// With several handler threads, a kind's jobs spread over them (a CPU-heavy
/// kind is not held to one core), and its limit still holds overall.
async fn handlers_spread_over_the_worker_threads(backend: Backend) {
    let db = TestStore::new(backend);
    let threads = Arc::new(Threads::default());
    let errands = db
        .apply(Errands::builder())
        .worker_threads(3)
        .register_with::<WhereAmI>(JobConfig::new().concurrency(6))
        .data(threads.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    errands
        .enqueue_many((0..12).map(|_| WhereAmI))
        .await
        .unwrap();
    common::collect(&mut events, 12, |e| matches!(e, Event::Completed { .. })).await;
    assert_eq!(threads.0.lock().unwrap().len(), 3, "one per worker thread");
    errands.shutdown(common::PATIENCE).await.unwrap();

    let refused = db
        .apply(Errands::builder())
        .worker_threads(0)
        .register::<WhereAmI>()
        .start()
        .await;
    assert!(matches!(
        refused,
        Err(errands::Error::Config(problems))
            if problems == vec![errands::ConfigProblem::ZeroWorkerThreads]
    ));
}
both!(handlers_spread_over_the_worker_threads);
