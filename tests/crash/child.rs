//! The child process the crash tests kill: a tiny errands application.
//!
//! Configured by environment variables; it enqueues `ENQUEUE` jobs (printing
//! their ids once acknowledged), runs jobs that write their start and end to
//! a ledger file, prints `started <id>` as each begins, and once nothing is
//! pending prints `drained` and exits.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Kills its own process in every attempt (after saying which attempt).
#[derive(Serialize, Deserialize)]
struct Abort;

impl Job for Abort {
    const KIND: &'static str = "abort";
    async fn run(self, ctx: JobContext) -> JobResult {
        println!("aborting in attempt {}", ctx.attempt());
        std::process::abort();
    }
}

/// Three steps; step two hangs when `HANG` is set, so the parent can kill
/// the process inside it.
#[derive(Serialize, Deserialize)]
struct ThreeSteps;

impl Job for ThreeSteps {
    const KIND: &'static str = "three_steps";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.step("one", async || {
            println!("step one");
            Ok(())
        })
        .await?;
        ctx.step("two", async || {
            println!("step two started");
            if std::env::var_os("HANG").is_some() {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
        .await?;
        ctx.step("three", async || {
            println!("step three");
            Ok(())
        })
        .await
    }
}

/// Visits ids 0..n with a cursor saved every 100 ids.
#[derive(Serialize, Deserialize)]
struct CursorWalk {
    n: u32,
}

impl Job for CursorWalk {
    const KIND: &'static str = "cursor_walk";
    async fn run(self, ctx: JobContext) -> JobResult {
        let ledger = ctx.data::<Arc<Ledger>>()?;
        ctx.step_cursor("walk", async |last: Option<u32>, cursor| {
            let start = last.map_or(0, |l| l + 1);
            println!("resume from {start}");
            for id in start..self.n {
                ledger.record("visit", id as i64, ctx.attempt());
                if id % 100 == 99 {
                    cursor.set(&id)?;
                    ctx.checkpoint().await?;
                    println!("saved {id}");
                    actix_rt::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Ok(())
        })
        .await
    }
}

/// Copies ids 0..n into the application table `copied`, 50 per
/// transaction, each committed with the cursor.
#[derive(Serialize, Deserialize)]
struct TxCopy {
    n: u32,
}

impl Job for TxCopy {
    const KIND: &'static str = "tx_copy";
    async fn run(self, ctx: JobContext) -> JobResult {
        ctx.step_cursor("copy", async |last: Option<u32>, cursor| {
            let start = last.map_or(0, |l| l + 1);
            println!("resume from {start}");
            for first in (start..self.n).step_by(50) {
                let end = (first + 49).min(self.n - 1);
                cursor.set(&end)?;
                ctx.transaction(move |tx| {
                    let mut insert = tx.prepare_cached("INSERT INTO copied (id) VALUES (?1)")?;
                    for id in first..=end {
                        insert.execute([id])?;
                    }
                    Ok(())
                })
                .await?;
                println!("copied {end}");
                actix_rt::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(())
        })
        .await
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts error-level log records: any error errands logs (a failed
/// write, SQLITE_BUSY reaching the engine) fails the tests that check it.
struct ErrorCounter(AtomicUsize);

static LOG_ERRORS: ErrorCounter = ErrorCounter(AtomicUsize::new(0));

impl log::Log for ErrorCounter {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record) {
        if record.level() == log::Level::Error {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        if self.enabled(record.metadata()) {
            eprintln!(
                "child {}: {} {}",
                std::process::id(),
                record.level(),
                record.args()
            );
        }
    }
    fn flush(&self) {}
}

pub fn run() {
    let _ = log::set_logger(&LOG_ERRORS);
    log::set_max_level(log::LevelFilter::Warn);
    let db = PathBuf::from(std::env::var("ERRANDS_DB").expect("ERRANDS_DB"));
    let ledger_path = std::env::var("ERRANDS_LEDGER").expect("ERRANDS_LEDGER");
    let enqueue = env_num("ENQUEUE", 0);
    let concurrency = env_num("CONCURRENCY", 8) as usize;
    let work_ms = env_num("WORK_MS", 5);
    let max_attempts = env_num("MAX_ATTEMPTS", 1000) as u32;
    let poll = Duration::from_millis(env_num("POLL_MS", 1000));
    if std::env::var_os("OPEN_ONLY").is_some() {
        open_only(&db);
        return;
    }
    let app = rusqlite::Connection::open(&db).unwrap();
    app.busy_timeout(Duration::from_secs(30)).unwrap();
    app.execute_batch("CREATE TABLE IF NOT EXISTS copied (id INTEGER PRIMARY KEY)")
        .unwrap();
    drop(app);
    let ledger = Arc::new(Ledger(std::sync::Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(ledger_path)
            .unwrap(),
    )));
    actix_rt::System::new().block_on(async move {
        let committed_ledger = ledger.clone();
        let builder = match std::env::var("ERRANDS_PG_SCHEMA") {
            Ok(schema) => Errands::builder().postgres_options(
                errands::PostgresOptions::new(crate::common::pg_url()).schema(schema),
            ),
            Err(_) => Errands::builder().sqlite(&db),
        };
        let mut builder = builder
            .event_capacity(1 << 16)
            .data(ledger)
            .data(WorkMs(work_ms))
            .poll_interval(poll)
            // Recovery of a killed predecessor must happen at start, not on
            // this (deliberately hour-long) timer.
            .recovery_interval(Duration::from_millis(env_num("RECOVERY_MS", 3_600_000)));
        if std::env::var_os("NO_WORKERS").is_none() {
            let mut work = JobConfig::new()
                .concurrency(concurrency)
                .max_attempts(max_attempts)
                .backoff(Backoff::Fixed(Duration::ZERO));
            if let Some(global) = std::env::var("GLOBAL").ok().and_then(|g| g.parse().ok()) {
                work = work.global_concurrency(global);
            }
            builder = builder
                .register_with::<Work>(work)
                .register::<ThreeSteps>()
                .register_with::<Abort>(JobConfig::new().max_attempts(max_attempts))
                .register::<CursorWalk>()
                .register_with::<TxCopy>(JobConfig::new().max_attempts(2));
        }
        let errands = builder.start().await.expect("start");
        let mut events = errands.subscribe();
        // Completions are recorded once committed (events come after the
        // commit): no attempt of a job may start after this line.
        let mut committed = errands.subscribe();
        actix_rt::spawn(async move {
            while let Ok(event) = committed.next().await {
                if let errands::Event::Completed { id, attempt, .. } = event {
                    committed_ledger.record("committed", id, attempt);
                }
            }
        });
        let n = env_num("N", 0) as u32;
        let single = match std::env::var("ENQUEUE_KIND").as_deref() {
            Ok("steps") => Some(errands.enqueue(ThreeSteps).await),
            Ok("cursor") => Some(errands.enqueue(CursorWalk { n }).await),
            Ok("tx") => Some(errands.enqueue(TxCopy { n }).await),
            Ok("abort") => Some(errands.enqueue(Abort).await),
            _ => None,
        };
        if let Some(id) = single {
            println!("acked {}", id.expect("enqueue"));
        }
        if enqueue > 0 {
            let ids = errands
                .enqueue_many((0..enqueue as u32).map(|n| Work { n }))
                .await
                .expect("enqueue");
            let list: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            println!("acked {}", list.join(","));
        }
        if std::env::var_os("NO_WORKERS").is_some() {
            errands
                .shutdown(Duration::from_secs(10))
                .await
                .expect("shutdown");
            println!("drained");
            return;
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
        println!("log errors {}", LOG_ERRORS.0.load(Ordering::SeqCst));
        println!("drained");
    });
}

/// Only tries to start, and prints how that went.
fn open_only(db: &std::path::Path) {
    actix_rt::System::new().block_on(async {
        match Errands::builder()
            .sqlite(db)
            .register::<Work>()
            .start()
            .await
        {
            Ok(_) => println!("open ok"),
            Err(e) => println!("open error: {e:?} / {e}"),
        }
    });
}
