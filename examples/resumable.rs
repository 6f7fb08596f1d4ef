//! A resumable job, interrupted on purpose and resumed.
//!
//! A recording is downloaded (a step), then transcoded segment by segment (a
//! cursor step, checkpointed after every segment). Midway, the example shuts
//! errands down with a short timeout, which interrupts the attempt and saves
//! its progress; then it starts errands again and the job carries on: the
//! download is skipped and transcoding resumes after the last segment done.
//!
//! Run with `cargo run --example resumable`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use errands::{Errands, Event, Job, JobContext, JobResult};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Serialize, Deserialize)]
struct Remux {
    recording: u32,
    segments: u32,
}

/// Counts what really ran, across both starts.
#[derive(Default)]
struct Stats {
    downloads: AtomicU32,
    segments: AtomicU32,
    halfway: Notify,
}

impl Job for Remux {
    const KIND: &'static str = "remux";

    async fn run(self, ctx: JobContext) -> JobResult {
        let stats = ctx.data::<Arc<Stats>>()?;
        println!("attempt {} of job {} starts", ctx.attempt(), ctx.id());
        let path: String = ctx
            .step("download", async || {
                stats.downloads.fetch_add(1, Ordering::SeqCst);
                println!("  downloading recording {}", self.recording);
                Ok(format!("/tmp/recording-{}.raw", self.recording))
            })
            .await?;
        ctx.step_cursor("transcode", async |done: Option<u32>, cursor| {
            let start = done.map_or(0, |s| s + 1);
            if start > 0 {
                println!(
                    "  download skipped (saved: {path}); transcoding resumes at segment {start}"
                );
            }
            for segment in start..self.segments {
                actix_rt::time::sleep(Duration::from_millis(20)).await;
                stats.segments.fetch_add(1, Ordering::SeqCst);
                cursor.set(&segment)?;
                ctx.checkpoint().await?;
                println!("  segment {segment} done");
                if segment == self.segments / 2 {
                    stats.halfway.notify_one();
                }
            }
            Ok(())
        })
        .await?;
        println!("  published {path}");
        Ok(())
    }
}

async fn start(path: &std::path::Path, stats: &Arc<Stats>) -> errands::Result<Errands> {
    Errands::builder()
        .sqlite(path)
        .register::<Remux>()
        .data(stats.clone())
        .start()
        .await
}

#[actix_rt::main]
async fn main() -> errands::Result<()> {
    let dir = std::env::temp_dir().join("errands-resumable");
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("jobs.db");
    let stats = Arc::new(Stats::default());

    let errands = start(&path, &stats).await?;
    errands
        .enqueue(Remux {
            recording: 42,
            segments: 10,
        })
        .await?;
    stats.halfway.notified().await;
    println!("-- interrupting: shutdown with a 10 ms timeout (a deploy, say)");
    match errands.shutdown(Duration::from_millis(10)).await {
        Err(e) => println!("-- {e}: the attempt was cut short and its progress saved"),
        Ok(()) => println!("-- the job finished before the timeout"),
    }

    println!("-- starting again");
    let errands = start(&path, &stats).await?;
    let mut events = errands.subscribe();
    loop {
        if let Event::Completed { id, attempt, .. } = events.next().await.expect("events") {
            println!("-- job {id} completed on attempt {attempt}");
            break;
        }
    }
    println!(
        "-- downloads: {}, segments transcoded: {} (of 10)",
        stats.downloads.load(Ordering::SeqCst),
        stats.segments.load(Ordering::SeqCst)
    );
    errands.shutdown(Duration::from_secs(5)).await
}
