//! Bad input gets a clear error and loses nothing: undecodable payloads go
//! dead with the decoder's message, unknown kinds stay queued and visible,
//! and invalid configuration is refused before anything starts.

mod common;

use std::time::Duration;

use errands::{
    ConfigProblem, Errands, Error, Event, Job, JobConfig, JobContext, JobResult, JobState,
    QueueConfig, SqliteOptions,
};
use serde::{Deserialize, Serialize};

/// The shape a kind had in an older deploy.
#[derive(Serialize, Deserialize)]
struct InvoiceV1 {
    note: String,
}

impl Job for InvoiceV1 {
    const KIND: &'static str = "invoice";
    async fn run(self, _: JobContext) -> JobResult {
        unreachable!("not registered in these tests")
    }
}

/// The shape it has now: same kind, incompatible fields.
#[derive(Serialize, Deserialize)]
struct InvoiceV2 {
    customer: u64,
    cents: u64,
}

impl Job for InvoiceV2 {
    const KIND: &'static str = "invoice";
    async fn run(self, _: JobContext) -> JobResult {
        Ok(())
    }
}

/// A kind no worker in this process knows.
#[derive(Serialize, Deserialize)]
struct Unknown;

impl Job for Unknown {
    const KIND: &'static str = "kind_from_another_service";
    async fn run(self, _: JobContext) -> JobResult {
        unreachable!("never registered")
    }
}

#[actix_rt::test]
async fn a_payload_that_does_not_decode_goes_dead_with_the_reason() {
    let db = common::temp_db();
    let errands = Errands::builder()
        .sqlite(&db.path)
        .register::<InvoiceV2>()
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands
        .enqueue(InvoiceV1 {
            note: "x".repeat(40),
        })
        .await
        .unwrap();
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    let Event::Dead { attempt, error, .. } = event else {
        panic!("expected dead, got {event:?}");
    };
    assert_eq!(attempt, 1, "no retry loop for a payload that cannot decode");
    assert!(
        error.starts_with("payload could not be decoded as `invoice`"),
        "{error}"
    );
    let info = errands.job(id).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert_eq!(info.last_error.as_deref(), Some(error.as_str()));

    // Corrupted bytes on disk: same treatment.
    let corrupt = errands
        .enqueue(InvoiceV2 {
            customer: 1,
            cents: 2,
        })
        .await
        .unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(corrupt)).await;
    errands.shutdown(common::PATIENCE).await.unwrap();
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    conn.execute(
        "INSERT INTO errands_jobs (queue, kind, state, payload, max_attempts, run_at, created_at)
         VALUES ('default', 'invoice', 'available', x'01ffffffffffffffffffff', 5, 0, 0)",
        [],
    )
    .unwrap();
    let bad_id = conn.last_insert_rowid();
    drop(conn);
    let errands = Errands::builder()
        .sqlite(&db.path)
        .register::<InvoiceV2>()
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let event = common::wait_for(&mut events, |e| e.id() == Some(bad_id)).await;
    assert!(
        matches!(&event, Event::Dead { attempt: 1, error, .. } if error.contains("could not be decoded")),
        "{event:?}"
    );
}

#[actix_rt::test]
async fn an_unknown_kind_is_left_queued_untouched_and_visible() {
    let db = common::temp_db();
    let errands = Errands::builder()
        .sqlite(&db.path)
        .register::<InvoiceV2>()
        .poll_interval(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let unknown = errands.enqueue(Unknown).await.unwrap();
    // Several dispatcher rounds happen: a known job completes after it.
    for _ in 0..3 {
        let id = errands
            .enqueue(InvoiceV2 {
                customer: 1,
                cents: 1,
            })
            .await
            .unwrap();
        common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    }
    let info = errands.job(unknown).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Available);
    assert_eq!(info.attempts, 0);
    let counts = errands.counts().await.unwrap();
    let row = counts
        .iter()
        .find(|c| c.kind == "kind_from_another_service")
        .unwrap();
    assert_eq!((row.queue.as_str(), row.available), ("default", 1));
}

#[actix_rt::test]
async fn a_newer_schema_is_refused_naming_both_versions() {
    let db = common::temp_db();
    let conn = rusqlite::Connection::open(&db.path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let result = Errands::builder()
        .sqlite(&db.path)
        .register::<InvoiceV2>()
        .start()
        .await;
    match result {
        Err(
            e @ Error::SchemaTooNew {
                found: 99,
                supported: 4,
            },
        ) => {
            let message = e.to_string();
            assert!(
                message.contains("99") && message.contains("(4)"),
                "{message}"
            );
        }
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("expected SchemaTooNew, got a running system"),
    }
}

#[actix_rt::test]
async fn invalid_configuration_is_refused_with_every_problem_listed() {
    let db = common::temp_db();
    let result = Errands::builder()
        .sqlite(&db.path)
        .register_with::<InvoiceV2>(JobConfig::new().concurrency(0))
        .register::<InvoiceV2>()
        .queue("emails", QueueConfig::new())
        .start()
        .await;
    let Err(e @ Error::Config(_)) = result else {
        panic!("expected a configuration error");
    };
    let Error::Config(problems) = &e else {
        unreachable!()
    };
    assert_eq!(
        problems,
        &vec![
            ConfigProblem::ZeroConcurrency { kind: "invoice" },
            ConfigProblem::DuplicateKind { kind: "invoice" },
            ConfigProblem::UnusedQueue {
                queue: "emails".into()
            },
        ]
    );
    // One sentence a person can act on, every problem in it.
    let message = e.to_string();
    assert!(
        message.contains("`invoice` has concurrency 0") && message.contains("queue `emails`"),
        "{message}"
    );
    assert!(!db.path.exists(), "nothing was opened");

    let Err(Error::Config(problems)) = Errands::builder().register::<InvoiceV2>().start().await
    else {
        panic!("expected a configuration error");
    };
    assert_eq!(problems, vec![ConfigProblem::NoDatabase]);

    let Err(Error::Config(problems)) = Errands::builder()
        .sqlite(&db.path)
        .register_with::<InvoiceV2>(JobConfig::new().max_attempts(0))
        .start()
        .await
    else {
        panic!("expected a configuration error");
    };
    assert_eq!(
        problems,
        vec![ConfigProblem::ZeroMaxAttempts { kind: "invoice" }]
    );
}

/// Values that used to panic inside `start()` or overflow later are
/// refused up front, each as its own problem.
#[actix_rt::test]
async fn extreme_settings_are_typed_problems_not_panics() {
    let db = common::temp_db();
    let too_long = Duration::from_secs(30 * 24 * 3600);
    let result = Errands::builder()
        .sqlite_options(SqliteOptions::new(&db.path).busy_timeout(too_long))
        .register_with::<InvoiceV2>(JobConfig::new().concurrency(usize::MAX))
        .event_capacity(usize::MAX)
        .start()
        .await;
    let Err(Error::Config(problems)) = result else {
        panic!("expected a configuration error");
    };
    assert!(problems.contains(&ConfigProblem::TooManySlots {
        kind: "invoice",
        setting: "concurrency",
        value: usize::MAX
    }));
    assert!(problems.contains(&ConfigProblem::EventCapacityTooLarge { value: usize::MAX }));
    assert!(problems.contains(&ConfigProblem::BusyTimeoutTooLong { value: too_long }));
    assert_eq!(problems.len(), 3, "{problems:?}");
}

/// `max_database_bytes(u64::MAX)` means "no cap": the store starts and
/// takes jobs (it used to set a one-page cap and fail as full).
#[actix_rt::test]
async fn the_largest_database_cap_means_no_cap() {
    let db = common::temp_db();
    let errands = Errands::builder()
        .sqlite_options(SqliteOptions::new(&db.path).max_database_bytes(u64::MAX))
        .register::<InvoiceV2>()
        .start()
        .await
        .expect("starts");
    errands
        .enqueue_in(
            InvoiceV2 {
                customer: 1,
                cents: 5,
            },
            Duration::from_secs(60),
        )
        .await
        .expect("enqueues");
    errands.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[actix_rt::test]
async fn a_path_that_cannot_be_a_database_is_a_clear_open_error() {
    let db = common::temp_db();
    std::fs::write(&db.path, b"this is not a database, it is a text file ......................................................").unwrap();
    let result = Errands::builder()
        .sqlite(&db.path)
        .register::<InvoiceV2>()
        .start()
        .await;
    match result {
        Err(Error::Open { path, source }) => {
            assert_eq!(path, db.path);
            assert_eq!(source.kind(), errands::StoreErrorKind::Corrupt);
            assert!(
                std::error::Error::source(&source).is_some(),
                "the engine's own error"
            );
        }
        Err(other) => panic!("expected Open, got {other}"),
        Ok(_) => panic!("expected an error"),
    }
}
