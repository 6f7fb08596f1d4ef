//! A typed job goes in, the same value comes out in the handler, and the
//! finished job is gone from the store.

mod common;

use std::sync::Mutex;

use errands::{Errands, Event, Job, JobContext, JobResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Resize {
    upload_id: u64,
    path: String,
    sizes: Vec<u32>,
    crop: Option<(u16, u16)>,
}

/// What the handler saw, handed back to the test through registered data.
#[derive(Default)]
struct Seen(Mutex<Vec<(Resize, i64, u32, &'static str)>>);

impl Job for Resize {
    const KIND: &'static str = "resize";
    const QUEUE: &'static str = "media";

    async fn run(self, ctx: JobContext) -> JobResult {
        let seen = ctx.data::<std::sync::Arc<Seen>>()?;
        seen.0
            .lock()
            .unwrap()
            .push((self, ctx.id(), ctx.attempt(), ctx.queue()));
        Ok(())
    }
}

async fn start(db: &common::TempDb) -> (Errands, std::sync::Arc<Seen>) {
    let seen = std::sync::Arc::new(Seen::default());
    let errands = Errands::builder()
        .sqlite(&db.path)
        .register::<Resize>()
        .data(seen.clone())
        .start()
        .await
        .unwrap();
    (errands, seen)
}

#[actix_rt::test]
async fn typed_job_round_trips_and_is_deleted_when_done() {
    let db = common::temp_db();
    let (errands, seen) = start(&db).await;
    let mut events = errands.subscribe();

    let job = Resize {
        upload_id: 7,
        path: "uploads/ünïcode.png".into(),
        sizes: vec![64, 256, 1024],
        crop: Some((3, 4)),
    };
    let id = errands.enqueue(job.clone()).await.unwrap();
    let event = common::wait_for(&mut events, |e| e.id() == id).await;
    assert_eq!(
        event,
        Event::Completed {
            id,
            kind: "resize",
            attempt: 1
        }
    );

    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(seen, vec![(job, id, 1, "media")]);
    assert_eq!(
        errands.job(id).await.unwrap(),
        None,
        "completed jobs are deleted"
    );
    let counts = errands.counts().await.unwrap();
    assert!(counts.iter().all(|c| c.pending() == 0), "{counts:?}");
    errands.shutdown(common::PATIENCE).await.unwrap();
}

#[actix_rt::test]
async fn enqueue_many_returns_ids_in_order_and_runs_them_all() {
    let db = common::temp_db();
    let (errands, seen) = start(&db).await;
    let mut events = errands.subscribe();
    let jobs: Vec<Resize> = (0..100)
        .map(|i| Resize {
            upload_id: i,
            path: format!("p{i}"),
            sizes: vec![],
            crop: None,
        })
        .collect();
    let ids = errands.enqueue_many(jobs).await.unwrap();
    assert_eq!(ids.len(), 100);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    common::collect(&mut events, 100, |e| matches!(e, Event::Completed { .. })).await;
    let seen = seen.0.lock().unwrap();
    for (job, id, _, _) in seen.iter() {
        let index = ids.iter().position(|i| i == id).unwrap();
        assert_eq!(job.upload_id, index as u64);
    }
    assert_eq!(seen.len(), 100);
}
