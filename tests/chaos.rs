//! Chaos handlers: 10,000 jobs of which 30% panic and 10% hang past their
//! timeout, over two kinds with different limits. Every job is accounted
//! for (completed, or retried and then dead with the reason), the queue
//! keeps flowing, and no kind ever exceeds its limit.
//!
//! `ERRANDS_TORTURE_LONG=1` runs ten times as many jobs.

mod common;

use common::{Backend, TestStore};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use errands::{Backoff, Errands, Event, Job, JobConfig, JobContext, JobResult};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Serialize, Deserialize)]
enum Fate {
    Succeed,
    Panic,
    Hang,
}

/// Running and peak counts of one kind. The guard decrements on drop, so a
/// handler cancelled by its timeout is counted out too.
#[derive(Default)]
struct Gauge {
    running: AtomicUsize,
    peak: AtomicUsize,
}

struct Running<'a>(&'a Gauge);

impl Gauge {
    fn enter(&self) -> Running<'_> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Running(self)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Gauges([Gauge; 2]);

async fn act(fate: Fate, gauge: &Gauge) -> JobResult {
    let _running = gauge.enter();
    actix_rt::task::yield_now().await;
    match fate {
        Fate::Succeed => Ok(()),
        Fate::Panic => panic!("chaos"),
        Fate::Hang => std::future::pending().await,
    }
}

#[derive(Serialize, Deserialize)]
struct Narrow(Fate);
#[derive(Serialize, Deserialize)]
struct Wide(Fate);

impl Job for Narrow {
    const KIND: &'static str = "narrow";
    async fn run(self, ctx: JobContext) -> JobResult {
        act(self.0, &ctx.data::<Arc<Gauges>>()?.0[0]).await
    }
}

impl Job for Wide {
    const KIND: &'static str = "wide";
    async fn run(self, ctx: JobContext) -> JobResult {
        act(self.0, &ctx.data::<Arc<Gauges>>()?.0[1]).await
    }
}

const LIMITS: [usize; 2] = [4, 32];
const ATTEMPTS: u32 = 3;

fn fate(i: usize) -> Fate {
    match i % 10 {
        0..=2 => Fate::Panic,
        3 => Fate::Hang,
        _ => Fate::Succeed,
    }
}

async fn panics_and_hangs_are_all_accounted_for_and_limits_hold(backend: Backend) {
    // Thousands of expected panics: keep their messages out of the output.
    std::panic::set_hook(Box::new(|_| {}));
    let scale = if std::env::var_os("ERRANDS_TORTURE_LONG").is_some() {
        10
    } else {
        1
    };
    let jobs = 10_000 * scale;
    let db = TestStore::new(backend);
    let gauges = Arc::new(Gauges([Gauge::default(), Gauge::default()]));
    let config = |limit| {
        JobConfig::new()
            .concurrency(limit)
            .max_attempts(ATTEMPTS)
            .backoff(Backoff::Fixed(Duration::ZERO))
            .timeout(Duration::from_millis(10))
    };
    let errands = db
        .apply(Errands::builder())
        .register_with::<Narrow>(config(LIMITS[0]))
        .register_with::<Wide>(config(LIMITS[1]))
        .data(gauges.clone())
        .event_capacity(1 << 20)
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    // One job in ten is narrow, so both kinds finish at about the same time.
    let narrow: Vec<i64> = errands
        .enqueue_many((0..jobs / 10).map(|i| Narrow(fate(i))))
        .await
        .unwrap();
    let wide: Vec<i64> = errands
        .enqueue_many((0..jobs - jobs / 10).map(|i| Wide(fate(i))))
        .await
        .unwrap();

    let mut fates = std::collections::HashMap::new();
    for (i, id) in narrow.iter().enumerate() {
        fates.insert(*id, fate(i));
    }
    for (i, id) in wide.iter().enumerate() {
        fates.insert(*id, fate(i));
    }
    let mut finals = std::collections::HashMap::new();
    let mut retries = 0;
    while finals.len() < jobs {
        match common::wait_for(&mut events, |_| true).await {
            Event::Retrying { .. } => retries += 1,
            event => {
                assert!(
                    finals
                        .insert(event.id().expect("a job event"), event)
                        .is_none(),
                    "a job finished twice"
                );
            }
        }
    }

    for (id, fate) in &fates {
        match (fate, &finals[id]) {
            (Fate::Succeed, Event::Completed { attempt: 1, .. }) => {}
            (
                Fate::Panic,
                Event::Dead {
                    attempt: ATTEMPTS,
                    error,
                    ..
                },
            ) if error == "panicked: chaos" => {}
            (
                Fate::Hang,
                Event::Dead {
                    attempt: ATTEMPTS,
                    error,
                    ..
                },
            ) if error == "timed out after 10ms" => {}
            (_, other) => panic!("job {id} ended as {other:?}"),
        }
    }
    let failing = fates
        .values()
        .filter(|f| !matches!(f, Fate::Succeed))
        .count();
    assert_eq!(
        retries,
        failing * (ATTEMPTS as usize - 1),
        "every failing job retried, then dead"
    );
    for (gauge, limit) in gauges.0.iter().zip(LIMITS) {
        let peak = gauge.peak.load(Ordering::SeqCst);
        assert!(peak <= limit, "peak {peak} over the limit {limit}");
        assert_eq!(gauge.running.load(Ordering::SeqCst), 0);
    }

    // The queue still flows.
    let id = errands.enqueue(Wide(Fate::Succeed)).await.unwrap();
    let done = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(matches!(done, Event::Completed { .. }));
    let dead = errands
        .counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.dead)
        .sum::<u64>();
    assert_eq!(dead as usize, failing);
}
both!(panics_and_hangs_are_all_accounted_for_and_limits_hold);
