//! Handlers that burn CPU: do they use every core? Each job spins for 1 ms; with the limit at 4 × cores, jobs per second ÷ 1,000 is the
//! number of cores the handlers kept busy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use errands::{Errands, Job, JobConfig, JobContext, JobResult};
use serde::{Deserialize, Serialize};

use super::scenarios::Done;
use super::Settings;

#[derive(Serialize, Deserialize)]
struct Burn;

impl Job for Burn {
    const KIND: &'static str = "burn";
    async fn run(self, ctx: JobContext) -> JobResult {
        burn(Duration::from_millis(1));
        ctx.data::<Arc<Done>>()?.one();
        Ok(())
    }
}

/// Spins the thread for `cpu` (wall time, busy: on an otherwise idle
/// machine that is CPU time; the per-thread CPU clock in
/// `/proc/thread-self/schedstat` only moves at scheduler ticks, measured to
/// stretch a 1 ms burn to several).
fn burn(cpu: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < cpu {
        for i in 0..1_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
}

/// Runs `n` CPU-burning jobs; answers the cores used (jobs/s ÷ 1,000).
pub async fn cpu(dir: &std::path::Path, settings: &Settings, n: usize) -> f64 {
    let path = dir.join("cpu.db");
    let _ = std::fs::remove_file(&path);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let done = Arc::new(Done::default());
    done.expect(n as u64);
    let errands = Errands::builder()
        .sqlite_options(errands::SqliteOptions::new(&path).synchronous(settings.synchronous))
        .register_with::<Burn>(JobConfig::new().concurrency(4 * cores))
        .data(done.clone())
        .start()
        .await
        .unwrap();
    let start = Instant::now();
    errands.enqueue_many((0..n).map(|_| Burn)).await.unwrap();
    done.wait().await;
    let jobs_per_second = n as f64 / start.elapsed().as_secs_f64();
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
    jobs_per_second / 1_000.0
}
