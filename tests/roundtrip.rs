//! A typed job goes in, the same value comes out in the handler, and the
//! finished job is gone from the store.

mod common;

use common::{Backend, TestStore};

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

async fn start(db: &TestStore) -> (Errands, std::sync::Arc<Seen>) {
    let seen = std::sync::Arc::new(Seen::default());
    let errands = db
        .apply(Errands::builder())
        .register::<Resize>()
        .data(seen.clone())
        .start()
        .await
        .unwrap();
    (errands, seen)
}

async fn typed_job_round_trips_and_is_deleted_when_done(backend: Backend) {
    let db = TestStore::new(backend);
    let (errands, seen) = start(&db).await;
    let mut events = errands.subscribe();

    let job = Resize {
        upload_id: 7,
        path: "uploads/ünïcode.png".into(),
        sizes: vec![64, 256, 1024],
        crop: Some((3, 4)),
    };
    let id = errands.enqueue(job.clone()).await.unwrap();
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
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
both!(typed_job_round_trips_and_is_deleted_when_done);

async fn enqueue_many_returns_ids_in_order_and_runs_them_all(backend: Backend) {
    let db = TestStore::new(backend);
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
both!(enqueue_many_returns_ids_in_order_and_runs_them_all);

/// Status endpoints return errands' own types as JSON: states as lower-case
/// strings, times as RFC 3339.
async fn job_info_counts_and_events_serialise_for_a_status_endpoint(backend: Backend) {
    let db = TestStore::new(backend);
    let (errands, _seen) = start(&db).await;
    let mut events = errands.subscribe();
    let later = errands
        .enqueue_in(
            Resize {
                upload_id: 1,
                path: "a.png".into(),
                sizes: vec![],
                crop: None,
            },
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let info = errands.job(later).await.unwrap().unwrap();
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["id"], later);
    assert_eq!(json["state"], "scheduled");
    assert_eq!(json["kind"], "resize");
    assert_eq!(json["started_at"], serde_json::Value::Null);
    let run_at = json["run_at"].as_str().unwrap();
    assert!(
        run_at.len() == 24 && run_at.ends_with('Z') && run_at.as_bytes()[10] == b'T',
        "{run_at}"
    );

    let counts = serde_json::to_value(errands.counts().await.unwrap()).unwrap();
    assert_eq!(counts[0]["queue"], "media");
    assert_eq!(counts[0]["scheduled"], 1);

    let now = errands
        .enqueue(Resize {
            upload_id: 2,
            path: "b.png".into(),
            sizes: vec![],
            crop: None,
        })
        .await
        .unwrap();
    let event = common::wait_for(&mut events, |e| e.id() == Some(now)).await;
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        serde_json::json!({"event": "completed", "id": now, "kind": "resize", "attempt": 1})
    );
}
both!(job_info_counts_and_events_serialise_for_a_status_endpoint);
