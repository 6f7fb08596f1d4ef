//! The errands side of each benchmark scenario.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use errands::{Backoff, Errands, Job, JobConfig, JobContext, JobError, JobResult, SqliteOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use super::Settings;

/// Counts finished handlers and signals when the target is reached.
#[derive(Default)]
pub struct Done {
    count: AtomicU64,
    target: AtomicU64,
    notify: Notify,
}

impl Done {
    /// Waits until `expect`'s target is reached.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    pub fn expect(&self, n: u64) {
        self.count.store(0, Ordering::SeqCst);
        self.target.store(n, Ordering::SeqCst);
    }

    pub fn one(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct Noop;

impl Job for Noop {
    const KIND: &'static str = "noop";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.data::<Arc<Done>>()?.one();
        Ok(())
    }
}

fn options(path: &Path, settings: &Settings) -> SqliteOptions {
    SqliteOptions::new(path).synchronous(settings.synchronous)
}

/// Enqueues `n` no-op jobs with no workers running, in batches.
async fn fill(path: &Path, settings: &Settings, n: usize, batch: usize) -> f64 {
    let _ = std::fs::remove_file(path);
    let producer = Errands::builder()
        .sqlite_options(options(path, settings))
        .start()
        .await
        .unwrap();
    let start = Instant::now();
    let mut left = n;
    while left > 0 {
        let take = batch.min(left);
        producer
            .enqueue_many((0..take).map(|_| Noop))
            .await
            .unwrap();
        left -= take;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    producer.shutdown(Duration::from_secs(5)).await.unwrap();
    rate
}

/// Batch enqueue: `n` jobs in batches of `batch`. Jobs per second.
pub async fn batch_enqueue(dir: &Path, settings: &Settings, n: usize, batch: usize) -> f64 {
    fill(&dir.join("batch.db"), settings, n, batch).await
}

/// Drain: `n` jobs pending first, then processed with `concurrency`.
/// Jobs per second.
pub async fn drain(dir: &Path, settings: &Settings, n: usize, concurrency: usize) -> f64 {
    drain_with(dir, settings, n, concurrency, false).await.0
}

/// [`drain`], also answering the CPU time this process spent per job (µs,
/// every thread), which a noisy neighbour disturbs far less than the
/// wall-clock rate.
pub async fn drain_measured(
    dir: &Path,
    settings: &Settings,
    n: usize,
    concurrency: usize,
) -> (f64, f64) {
    drain_with(dir, settings, n, concurrency, false).await
}

/// CPU time this process has used (user + system, every thread), in µs.
fn cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and
    // stime are the 12th and 13th, in clock ticks.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    let per_second = 100.0; // CLK_TCK on Linux
    ticks / per_second * 1e6
}

/// The drain with live control engaged on the kind: a stored concurrency
/// override (the same limit) and a rate limit that never binds (a billion
/// starts per millisecond: every claim and start goes through the window).
/// The pause and throttle checks run on every claim and start either way.
/// Jobs per second.
pub async fn drain_controlled(
    dir: &Path,
    settings: &Settings,
    n: usize,
    concurrency: usize,
) -> (f64, f64) {
    drain_with(dir, settings, n, concurrency, true).await
}

async fn drain_with(
    dir: &Path,
    settings: &Settings,
    n: usize,
    concurrency: usize,
    controlled: bool,
) -> (f64, f64) {
    let path = dir.join(format!("drain-{n}.db"));
    fill(&path, settings, n, 10_000).await;
    let mut config = JobConfig::new().concurrency(concurrency);
    if controlled {
        config = config.rate_limit(1_000_000_000, Duration::from_millis(1));
    }
    let done = Arc::new(Done::default());
    done.expect(n as u64);
    let start = Instant::now();
    let cpu_before = cpu_us();
    let consumer = Errands::builder()
        .sqlite_options(options(&path, settings))
        .register_with::<Noop>(config)
        .data(done.clone())
        .start()
        .await
        .unwrap();
    if controlled {
        // Stored and applied while the drain runs, as an operator's would be.
        consumer.set_concurrency("noop", concurrency).await.unwrap();
    }
    done.notify.notified().await;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let cpu_per_job = (cpu_us() - cpu_before) / n as f64;
    consumer.shutdown(Duration::from_secs(5)).await.unwrap();
    (rate, cpu_per_job)
}

/// One job per call from `producers` concurrent callers, each call durable
/// on return. Jobs per second.
pub async fn enqueue_single(dir: &Path, settings: &Settings, n: usize, producers: usize) -> f64 {
    let path = dir.join("enqueue.db");
    let _ = std::fs::remove_file(&path);
    let errands = Errands::builder()
        .sqlite_options(options(&path, settings))
        .start()
        .await
        .unwrap();
    let per = n / producers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let errands = errands.clone();
            actix_rt::spawn(async move {
                for _ in 0..per {
                    errands.enqueue(Noop).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rate = (per * producers) as f64 / start.elapsed().as_secs_f64();
    errands.shutdown(Duration::from_secs(5)).await.unwrap();
    rate
}

#[derive(Serialize, Deserialize)]
struct Ping;

impl Job for Ping {
    const KIND: &'static str = "ping";
    async fn run(self, ctx: JobContext) -> JobResult {
        let _ = ctx
            .data::<mpsc::UnboundedSender<Instant>>()?
            .send(Instant::now());
        Ok(())
    }
}

/// Idle system, `n` jobs one after another: enqueue call → handler start,
/// in microseconds.
pub async fn latency(dir: &Path, settings: &Settings, n: usize) -> Vec<f64> {
    let path = dir.join("latency.db");
    let _ = std::fs::remove_file(&path);
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let errands = Errands::builder()
        .sqlite_options(options(&path, settings))
        .register::<Ping>()
        .data(tx)
        .start()
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        errands.enqueue(Ping).await.unwrap();
        let started = rx.recv().await.unwrap();
        samples.push(started.duration_since(t0).as_secs_f64() * 1e6);
    }
    errands.shutdown(Duration::from_secs(5)).await.unwrap();
    samples
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[derive(Serialize, Deserialize)]
struct Delayed {
    due_us: i64,
}

impl Job for Delayed {
    const KIND: &'static str = "delayed";
    async fn run(self, ctx: JobContext) -> JobResult {
        let late_us = now_us() - self.due_us;
        let _ = ctx.data::<mpsc::UnboundedSender<i64>>()?.send(late_us);
        Ok(())
    }
}

/// `n` jobs delayed 10–1000 ms: how late each started, in milliseconds.
pub async fn delayed(dir: &Path, settings: &Settings, n: usize) -> Vec<f64> {
    let path = dir.join("delayed.db");
    let _ = std::fs::remove_file(&path);
    let (tx, mut rx) = mpsc::unbounded_channel::<i64>();
    let errands = Errands::builder()
        .sqlite_options(options(&path, settings))
        .register_with::<Delayed>(JobConfig::new().concurrency(64))
        .data(tx)
        .start()
        .await
        .unwrap();
    for _ in 0..n {
        let delay_ms = fastrand::u64(10..=1000);
        // run_at is stored in whole milliseconds: the job is due at the
        // millisecond errands computes, which is this one or the next.
        let due_us = (now_us() / 1000 + delay_ms as i64) * 1000;
        errands
            .enqueue_in(Delayed { due_us }, Duration::from_millis(delay_ms))
            .await
            .unwrap();
    }
    let mut late = Vec::with_capacity(n);
    for _ in 0..n {
        late.push(rx.recv().await.unwrap() as f64 / 1000.0);
    }
    errands.shutdown(Duration::from_secs(5)).await.unwrap();
    late
}

/// Peak concurrency per kind, measured by the handlers.
#[derive(Default)]
pub struct Peaks {
    running: [AtomicUsize; 4],
    peak: [AtomicUsize; 4],
}

#[derive(Serialize, Deserialize)]
struct Mixed<const K: usize> {
    fail_once: bool,
}

macro_rules! mixed_kind {
    ($k:literal, $name:literal) => {
        impl Job for Mixed<$k> {
            const KIND: &'static str = $name;
            async fn run(self, ctx: JobContext) -> JobResult {
                let peaks = ctx.data::<Arc<Peaks>>()?;
                let now = peaks.running[$k].fetch_add(1, Ordering::SeqCst) + 1;
                peaks.peak[$k].fetch_max(now, Ordering::SeqCst);
                actix_rt::task::yield_now().await;
                peaks.running[$k].fetch_sub(1, Ordering::SeqCst);
                if self.fail_once && ctx.attempt() == 1 {
                    return Err(JobError::msg("failing once on purpose"));
                }
                ctx.data::<Arc<Done>>()?.one();
                Ok(())
            }
        }
    };
}
mixed_kind!(0, "mixed_1");
mixed_kind!(1, "mixed_4");
mixed_kind!(2, "mixed_16");
mixed_kind!(3, "mixed_64");

pub const MIXED_LIMITS: [usize; 4] = [1, 4, 16, 64];

/// Four kinds with limits 1, 4, 16 and 64, jobs split in proportion to the
/// limits, 10% failing once. Returns jobs per second and the peaks seen.
pub async fn mixed(dir: &Path, settings: &Settings, n: usize) -> (f64, [usize; 4]) {
    let path = dir.join("mixed.db");
    let _ = std::fs::remove_file(&path);
    let done = Arc::new(Done::default());
    let peaks = Arc::new(Peaks::default());
    let config = |limit| {
        JobConfig::new()
            .concurrency(limit)
            .backoff(Backoff::Fixed(Duration::ZERO))
    };
    let errands = Errands::builder()
        .sqlite_options(options(&path, settings))
        .register_with::<Mixed<0>>(config(MIXED_LIMITS[0]))
        .register_with::<Mixed<1>>(config(MIXED_LIMITS[1]))
        .register_with::<Mixed<2>>(config(MIXED_LIMITS[2]))
        .register_with::<Mixed<3>>(config(MIXED_LIMITS[3]))
        .data(done.clone())
        .data(peaks.clone())
        .start()
        .await
        .unwrap();
    let total_limit: usize = MIXED_LIMITS.iter().sum();
    let counts: Vec<usize> = MIXED_LIMITS.iter().map(|l| n * l / total_limit).collect();
    done.expect(counts.iter().sum::<usize>() as u64);
    let start = Instant::now();
    let job = |i: usize| i.is_multiple_of(10);
    errands
        .enqueue_many((0..counts[0]).map(|i| Mixed::<0> { fail_once: job(i) }))
        .await
        .unwrap();
    errands
        .enqueue_many((0..counts[1]).map(|i| Mixed::<1> { fail_once: job(i) }))
        .await
        .unwrap();
    errands
        .enqueue_many((0..counts[2]).map(|i| Mixed::<2> { fail_once: job(i) }))
        .await
        .unwrap();
    errands
        .enqueue_many((0..counts[3]).map(|i| Mixed::<3> { fail_once: job(i) }))
        .await
        .unwrap();
    done.notify.notified().await;
    let rate = counts.iter().sum::<usize>() as f64 / start.elapsed().as_secs_f64();
    errands.shutdown(Duration::from_secs(5)).await.unwrap();
    let peaks = [0, 1, 2, 3].map(|k| peaks.peak[k].load(Ordering::SeqCst));
    (rate, peaks)
}
