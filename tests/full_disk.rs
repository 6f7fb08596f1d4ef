//! A full database makes `enqueue` fail with a clear error; everything
//! acknowledged before stays intact, and enqueueing works again once space
//! is freed.

mod common;

use std::time::Duration;

use errands::{Errands, Error, Job, JobContext, JobResult, JobState, SqliteOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Upload {
    bytes: Vec<u8>,
}

impl Job for Upload {
    const KIND: &'static str = "upload";
    async fn run(self, _: JobContext) -> JobResult {
        Ok(())
    }
}

#[actix_rt::test]
async fn a_full_database_fails_enqueue_clearly_and_keeps_acknowledged_jobs() {
    let db = common::temp_db();
    let errands = Errands::builder()
        .sqlite_options(SqliteOptions::new(&db.path).max_database_bytes(256 * 1024))
        .register::<Upload>()
        .start()
        .await
        .unwrap();
    let later = Duration::from_secs(3600);
    let mut acked = Vec::new();
    let error = loop {
        match errands
            .enqueue_in(
                Upload {
                    bytes: vec![7; 4000],
                },
                later,
            )
            .await
        {
            Ok(id) => acked.push(id),
            Err(e) => break e,
        }
        assert!(acked.len() < 1000, "the cap was never reached");
    };
    assert!(matches!(error, Error::Database(_)), "{error:?}");
    assert!(error.to_string().contains("full"), "{error}");
    assert!(acked.len() > 10);

    for id in &acked {
        let info = errands
            .job(*id)
            .await
            .unwrap()
            .expect("acknowledged job kept");
        assert_eq!(info.state, JobState::Scheduled);
    }
    // The failed enqueue left nothing behind.
    let counts = errands.counts().await.unwrap();
    assert_eq!(counts[0].scheduled, acked.len() as u64);

    // Space returns: the same enqueue now succeeds.
    for id in &acked[..acked.len() / 2] {
        errands.cancel(*id).await.unwrap();
    }
    errands
        .enqueue_in(
            Upload {
                bytes: vec![7; 4000],
            },
            later,
        )
        .await
        .expect("enqueue works again once space is freed");
}
