//! A panic or a timeout ends the attempt as a failure with a message; the
//! worker survives and keeps running other jobs.

mod common;

use common::{Backend, TestStore};

use std::time::Duration;

use errands::Clock;

use errands::{Backoff, Errands, Event, Job, JobConfig, JobContext, JobResult, ManualClock};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum Behaviour {
    Panic,
    Hang,
    Succeed,
}

#[derive(Serialize, Deserialize)]
struct Chaos(Behaviour);

impl Job for Chaos {
    const KIND: &'static str = "chaos";
    async fn run(self, _: JobContext) -> JobResult {
        match self.0 {
            Behaviour::Panic => panic!("boom at step 3"),
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Succeed => Ok(()),
        }
    }
}

async fn panics_and_timeouts_are_failed_attempts_and_the_worker_lives_on(backend: Backend) {
    let db = TestStore::new(backend);
    let errands = db
        .apply(Errands::builder())
        .register_with::<Chaos>(
            JobConfig::new()
                .concurrency(2)
                .max_attempts(2)
                .backoff(Backoff::Fixed(Duration::ZERO))
                .timeout(Duration::from_millis(50)),
        )
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let panics = errands.enqueue(Chaos(Behaviour::Panic)).await.unwrap();
    let hangs = errands.enqueue(Chaos(Behaviour::Hang)).await.unwrap();

    // Each goes: a retry after attempt 1, then dead after attempt 2.
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e| matches!(e, Event::Dead { .. }))
        .count()
        < 2
    {
        seen.push(common::wait_for(&mut events, |_| true).await);
    }
    for id in [panics, hangs] {
        let of_job: Vec<&Event> = seen.iter().filter(|e| e.id() == Some(id)).collect();
        assert_eq!(of_job.len(), 2, "{of_job:?}");
        assert!(
            matches!(of_job[0], Event::Retrying { attempt: 1, .. }),
            "{of_job:?}"
        );
    }
    let mut finals: Vec<Event> = seen
        .into_iter()
        .filter(|e| matches!(e, Event::Dead { .. }))
        .collect();
    finals.sort_by_key(|e| e.id());
    match finals.as_slice() {
        [Event::Dead {
            id: a,
            attempt: 2,
            error: panic,
            ..
        }, Event::Dead {
            id: b,
            attempt: 2,
            error: timeout,
            ..
        }] => {
            assert_eq!((*a, *b), (panics, hangs));
            assert_eq!(panic, "panicked: boom at step 3");
            assert_eq!(timeout, "timed out after 50ms");
        }
        other => panic!("expected two dead jobs, got {other:?}"),
    }
    // Both slots are free again and the worker still runs jobs.
    let ok = errands
        .enqueue_many([Chaos(Behaviour::Succeed), Chaos(Behaviour::Succeed)])
        .await
        .unwrap();
    let done = common::collect(&mut events, 2, |e| matches!(e, Event::Completed { .. })).await;
    let mut done: Vec<i64> = done.iter().filter_map(|e| e.id()).collect();
    done.sort();
    assert_eq!(done, ok);
}
both!(panics_and_timeouts_are_failed_attempts_and_the_worker_lives_on);

/// Panics inside its `ctx.transaction` closure on the first attempt.
#[derive(Serialize, Deserialize)]
struct PanicsInSql;

impl Job for PanicsInSql {
    const KIND: &'static str = "panics_in_sql";
    async fn run(self, ctx: JobContext) -> JobResult {
        let attempt = ctx.attempt();
        ctx.transaction(move |tx| {
            tx.execute("CREATE TABLE IF NOT EXISTS notes (attempt INTEGER)", [])?;
            tx.execute("INSERT INTO notes VALUES (?1)", [attempt])?;
            if attempt == 1 {
                panic!("boom inside the transaction");
            }
            Ok(())
        })
        .await
    }
}

#[actix_rt::test]
async fn a_panic_inside_a_transaction_fails_the_attempt_and_the_store_lives_on() {
    let db = common::temp_db();
    let errands = Errands::builder()
        .sqlite(&db.path)
        .register_with::<PanicsInSql>(JobConfig::new().backoff(Backoff::Fixed(Duration::ZERO)))
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(PanicsInSql).await.unwrap();
    let first = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    match &first {
        Event::Retrying {
            attempt: 1, error, ..
        } => assert!(error.contains("boom inside the transaction"), "{error}"),
        other => panic!("expected a retry, got {other:?}"),
    }
    let second = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(
        matches!(second, Event::Completed { attempt: 2, .. }),
        "{second:?}"
    );
    // The writer lives: enqueue works, and shutdown returns.
    errands
        .enqueue(PanicsInSql)
        .await
        .expect("enqueue after the panic");
    errands.shutdown(common::PATIENCE).await.unwrap();
    // The panicking attempt's row was rolled back with it.
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    let notes: Vec<u32> = conn
        .prepare("SELECT attempt FROM notes ORDER BY attempt")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(notes[0], 2, "{notes:?}");
}

/// Always fails.
#[derive(Serialize, Deserialize)]
struct AlwaysFails;

impl Job for AlwaysFails {
    const KIND: &'static str = "always_fails";
    async fn run(self, _: JobContext) -> JobResult {
        Err(errands::JobError::msg("nope"))
    }
}

/// An uncapped exponential backoff with jitter overflowed `Duration` at
/// attempt 33, after the handler returned: the slot leaked and shutdown
/// hung. Now the delay saturates at the end of time.
async fn an_uncapped_backoff_saturates_instead_of_panicking(backend: Backend) {
    let db = TestStore::new(backend);
    let clock = ManualClock::new();
    let errands = db
        .apply(Errands::builder())
        .register_with::<AlwaysFails>(JobConfig::new().max_attempts(40).backoff(
            Backoff::Exponential {
                base: Duration::from_millis(1),
                max: Duration::MAX,
                jitter: 0.5,
            },
        ))
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(AlwaysFails).await.unwrap();
    let end_of_time = std::time::UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    loop {
        let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
        let Event::Retrying {
            attempt, run_at, ..
        } = event
        else {
            panic!("expected retries, got {event:?}");
        };
        if attempt == 33 {
            assert_eq!(run_at, end_of_time);
            break;
        }
        let wait = run_at
            .duration_since(std::time::UNIX_EPOCH + Duration::from_millis(clock.now_ms() as u64))
            .unwrap_or_default();
        clock.advance(wait);
    }
    let info = errands.job(id).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.attempts),
        (errands::JobState::Scheduled, 33)
    );
    errands
        .shutdown(Duration::from_secs(5))
        .await
        .expect("no attempt left running");
}
both!(an_uncapped_backoff_saturates_instead_of_panicking);
