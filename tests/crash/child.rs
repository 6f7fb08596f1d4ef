//! The child process the crash tests kill: a tiny errands application.
//!
//! Configured by environment variables; it enqueues `ENQUEUE` jobs (printing
//! their ids once acknowledged), runs jobs that write their start and end to
//! a ledger file, prints `started <id>` as each begins, and once nothing is
//! pending prints `drained` and exits.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use errands::{Backoff, Errands, Job, JobConfig, JobContext, JobResult};
use serde::{Deserialize, Serialize};

pub const ROLE: &str = "ERRANDS_TEST_CHILD";

#[derive(Serialize, Deserialize)]
struct Work {
    n: u32,
}

/// Appends `start|end id attempt pid nanos` lines; one write per line, so
/// lines from concurrent tasks and processes never interleave.
struct Ledger(std::sync::Mutex<std::fs::File>);

impl Ledger {
    fn record(&self, what: &str, id: i64, attempt: u32) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let line = format!("{what} {id} {attempt} {} {nanos}\n", std::process::id());
        self.0.lock().unwrap().write_all(line.as_bytes()).unwrap();
    }
}

struct WorkMs(u64);

impl Job for Work {
    const KIND: &'static str = "work";
    async fn run(self, ctx: JobContext) -> JobResult {
        let ledger = ctx.data::<Arc<Ledger>>()?;
        ledger.record("start", ctx.id(), ctx.attempt());
        println!("started {}", ctx.id());
        actix_rt::time::sleep(Duration::from_millis(ctx.data::<WorkMs>()?.0)).await;
        ledger.record("end", ctx.id(), ctx.attempt());
        Ok(())
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn run() {
    let db = PathBuf::from(std::env::var("ERRANDS_DB").expect("ERRANDS_DB"));
    let ledger_path = std::env::var("ERRANDS_LEDGER").expect("ERRANDS_LEDGER");
    let enqueue = env_num("ENQUEUE", 0);
    let concurrency = env_num("CONCURRENCY", 8) as usize;
    let work_ms = env_num("WORK_MS", 5);
    let max_attempts = env_num("MAX_ATTEMPTS", 1000) as u32;
    let ledger = Arc::new(Ledger(std::sync::Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(ledger_path)
            .unwrap(),
    )));
    actix_rt::System::new().block_on(async move {
        let errands = Errands::builder()
            .sqlite(&db)
            .register_with::<Work>(
                JobConfig::new()
                    .concurrency(concurrency)
                    .max_attempts(max_attempts)
                    .backoff(Backoff::Fixed(Duration::ZERO)),
            )
            .data(ledger)
            .data(WorkMs(work_ms))
            // Recovery of the killed predecessor must happen at start, not
            // on this (deliberately hour-long) timer.
            .recovery_interval(Duration::from_secs(3600))
            .start()
            .await
            .expect("start");
        let mut events = errands.subscribe();
        if enqueue > 0 {
            let ids = errands
                .enqueue_many((0..enqueue as u32).map(|n| Work { n }))
                .await
                .expect("enqueue");
            let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            println!("acked {}", list.join(","));
        }
        loop {
            let pending: u64 = errands
                .counts()
                .await
                .unwrap()
                .iter()
                .map(|c| c.pending())
                .sum();
            if pending == 0 {
                break;
            }
            // Re-check after each outcome, or each second if none comes.
            let _ = actix_rt::time::timeout(Duration::from_secs(1), events.next()).await;
        }
        errands
            .shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        println!("drained");
    });
}
