//! errands in one screen: an immediate job, a delayed one, one that fails
//! once and then succeeds, and one that fails for good and ends dead.
//! Prints what happens with timestamps and exits by itself.
//!
//! Run with `cargo run --example quickstart`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use errands::{Backoff, Errands, Event, Job, JobConfig, JobContext, JobError, JobResult};
use serde::{Deserialize, Serialize};

/// Sends a (pretend) email.
#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
    subject: String,
}

impl Job for SendEmail {
    const KIND: &'static str = "send_email";

    async fn run(self, ctx: JobContext) -> JobResult {
        let start = ctx.data::<Instant>()?;
        println!(
            "{:>7.3}s  job {} sending '{}' to {}",
            start.elapsed().as_secs_f64(),
            ctx.id(),
            self.subject,
            self.to
        );
        Ok(())
    }
}

/// Calls a (pretend) flaky API: its first `fail_times` attempts fail.
#[derive(Serialize, Deserialize)]
struct CallApi {
    endpoint: String,
    fail_times: u32,
}

static API_CALLS: AtomicU32 = AtomicU32::new(0);

impl Job for CallApi {
    const KIND: &'static str = "call_api";
    const QUEUE: &'static str = "integrations";

    fn config() -> JobConfig {
        JobConfig::new()
            .concurrency(4)
            .max_attempts(3)
            .backoff(Backoff::Fixed(Duration::from_millis(500)))
    }

    async fn run(self, ctx: JobContext) -> JobResult {
        API_CALLS.fetch_add(1, Ordering::Relaxed);
        if ctx.attempt() <= self.fail_times {
            return Err(JobError::msg(format!(
                "{} answered 503 (attempt {} of {})",
                self.endpoint,
                ctx.attempt(),
                ctx.max_attempts()
            )));
        }
        Ok(())
    }
}

#[actix_rt::main]
async fn main() -> errands::Result<()> {
    let dir = std::env::temp_dir().join("errands-quickstart");
    let _ = std::fs::remove_dir_all(&dir);
    let start = Instant::now();

    let errands = Errands::builder()
        .sqlite(dir.join("jobs.db"))
        .register::<SendEmail>()
        .register::<CallApi>()
        .data(start)
        .start()
        .await?;
    let mut events = errands.subscribe();
    let t = || format!("{:>7.3}s", start.elapsed().as_secs_f64());

    let now = errands
        .enqueue(SendEmail {
            to: "ada@example.com".into(),
            subject: "Welcome".into(),
        })
        .await?;
    let later = errands
        .enqueue_in(
            SendEmail {
                to: "ada@example.com".into(),
                subject: "How is it going?".into(),
            },
            Duration::from_secs(2),
        )
        .await?;
    let flaky = errands
        .enqueue(CallApi {
            endpoint: "https://api.example.com/sync".into(),
            fail_times: 1,
        })
        .await?;
    let broken = errands
        .enqueue(CallApi {
            endpoint: "https://down.example.com".into(),
            fail_times: 99,
        })
        .await?;
    println!(
        "{}  enqueued: now={now} delayed={later} flaky={flaky} broken={broken}",
        t()
    );

    let mut finished = 0;
    while finished < 4 {
        let event = events.next().await.expect("events");
        match &event {
            Event::Completed { id, kind, attempt } => {
                println!("{}  job {id} ({kind}) completed on attempt {attempt}", t());
                finished += 1;
            }
            Event::Retrying {
                id, attempt, error, ..
            } => {
                println!(
                    "{}  job {id} failed attempt {attempt}: {error}; will retry",
                    t()
                );
            }
            Event::Dead {
                id, attempt, error, ..
            } => {
                println!(
                    "{}  job {id} is dead after {attempt} attempts: {error}",
                    t()
                );
                finished += 1;
            }
            _ => {}
        }
    }

    let dead = errands.dead_jobs(None, 10).await?;
    println!(
        "{}  dead jobs: {:?}",
        t(),
        dead.iter().map(|j| j.id).collect::<Vec<_>>()
    );
    for row in errands.counts().await? {
        println!(
            "{}  queue {:<13} kind {:<11} pending {} dead {}",
            t(),
            row.queue,
            row.kind,
            row.pending(),
            row.dead
        );
    }
    println!(
        "{}  API called {} times",
        t(),
        API_CALLS.load(Ordering::Relaxed)
    );
    errands.shutdown(Duration::from_secs(5)).await?;
    println!("{}  shut down cleanly", t());
    Ok(())
}
