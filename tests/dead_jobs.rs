//! Dead jobs can be listed, requeued (fresh attempts) and purged, one or
//! all; operations on jobs that are not dead get clear errors.

mod common;

use common::{Backend, TestStore};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use errands::{Errands, Error, Event, Job, JobConfig, JobContext, JobError, JobResult, JobState};
use serde::{Deserialize, Serialize};

/// Fails while the switch is off.
#[derive(Serialize, Deserialize)]
struct Charge {
    order: u32,
}

struct Switch(AtomicBool);

impl Job for Charge {
    const KIND: &'static str = "charge";
    const QUEUE: &'static str = "billing";
    async fn run(self, ctx: JobContext) -> JobResult {
        if ctx.data::<Arc<Switch>>()?.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(JobError::msg(format!(
                "card declined for order {}",
                self.order
            )))
        }
    }
}

async fn start(db: &TestStore, switch: &Arc<Switch>) -> Errands {
    db.apply(Errands::builder())
        .register_with::<Charge>(JobConfig::new().max_attempts(1))
        .data(switch.clone())
        .start()
        .await
        .unwrap()
}

async fn dead_jobs_are_listed_requeued_and_purged(backend: Backend) {
    let db = TestStore::new(backend);
    let switch = Arc::new(Switch(AtomicBool::new(false)));
    let errands = start(&db, &switch).await;
    let mut events = errands.subscribe();

    let ids = errands
        .enqueue_many((1..=3).map(|order| Charge { order }))
        .await
        .unwrap();
    common::collect(&mut events, 3, |e| matches!(e, Event::Dead { .. })).await;

    let dead = errands.dead_jobs(Some("billing"), 10).await.unwrap();
    let mut dead_ids: Vec<i64> = dead.iter().map(|j| j.id).collect();
    dead_ids.sort();
    assert_eq!(dead_ids, ids);
    assert!(dead
        .iter()
        .all(|j| j.state == JobState::Dead && j.attempts == 1));
    let first = dead.iter().find(|j| j.id == ids[0]).unwrap();
    assert_eq!(
        first.last_error.as_deref(),
        Some("card declined for order 1")
    );
    assert!(errands
        .dead_jobs(Some("other"), 10)
        .await
        .unwrap()
        .is_empty());

    // Requeue one: it runs again with fresh attempts and now succeeds.
    switch.0.store(true, Ordering::SeqCst);
    errands.requeue(ids[0]).await.unwrap();
    let event = common::wait_for(&mut events, |e| e.id() == Some(ids[0])).await;
    assert_eq!(
        event,
        Event::Completed {
            id: ids[0],
            kind: "charge",
            attempt: 1
        }
    );

    // Purge one: gone for good.
    errands.purge(ids[1]).await.unwrap();
    assert_eq!(errands.job(ids[1]).await.unwrap(), None);
    assert!(matches!(errands.purge(ids[1]).await, Err(Error::NotFound(id)) if id == ids[1]));

    // Requeue of something that is not dead is refused clearly.
    assert!(matches!(
        errands.requeue(ids[0]).await,
        Err(Error::NotFound(_))
    ));
    let counts = errands.counts().await.unwrap();
    assert_eq!(counts[0].dead, 1, "{counts:?}");

    // Requeue all of the queue.
    assert_eq!(errands.requeue_dead(Some("billing")).await.unwrap(), 1);
    common::wait_for(
        &mut events,
        |e| matches!(e, Event::Completed { id, .. } if *id == ids[2]),
    )
    .await;
}
both!(dead_jobs_are_listed_requeued_and_purged);

async fn purge_all_and_wrong_state_errors(backend: Backend) {
    let db = TestStore::new(backend);
    let switch = Arc::new(Switch(AtomicBool::new(false)));
    let errands = start(&db, &switch).await;
    let mut events = errands.subscribe();
    errands
        .enqueue_many((1..=5).map(|order| Charge { order }))
        .await
        .unwrap();
    common::collect(&mut events, 5, |e| matches!(e, Event::Dead { .. })).await;
    assert_eq!(errands.purge_dead(None).await.unwrap(), 5);
    assert!(errands.dead_jobs(None, 10).await.unwrap().is_empty());

    // A scheduled job is not dead: requeue says so; cancel keeps it as
    // cancelled, purge then deletes it.
    let later = errands
        .enqueue_in(Charge { order: 9 }, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    match errands.requeue(later).await {
        Err(Error::WrongState { id, state, action }) => {
            assert_eq!((id, state, action), (later, JobState::Scheduled, "requeue"));
        }
        other => panic!("expected WrongState, got {other:?}"),
    }
    errands.cancel(later).await.unwrap();
    assert_eq!(
        errands.job(later).await.unwrap().map(|info| info.state),
        Some(JobState::Cancelled)
    );
    assert!(matches!(
        errands.cancel(later).await,
        Err(Error::WrongState {
            state: JobState::Cancelled,
            ..
        })
    ));
    errands.purge(later).await.unwrap();
    assert_eq!(
        errands.status(later).await.unwrap(),
        errands::JobStatus::Cancelled
    );
    assert!(matches!(
        errands.purge(later).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        errands.cancel(later + 1000).await,
        Err(Error::NotFound(_))
    ));
}
both!(purge_all_and_wrong_state_errors);

/// `status(id)` tells what became of a job after its row is gone:
/// completed, cancelled, purged, or never enqueued at all. (Cancelled
/// and dead jobs are kept until pruned: `retain_dead`, tested in
/// `control.rs`.)
async fn status_tells_completed_cancelled_purged_and_unknown_apart(backend: Backend) {
    let db = TestStore::new(backend);
    let switch = Arc::new(Switch(AtomicBool::new(true)));
    let errands = start(&db, &switch).await;
    let mut events = errands.subscribe();
    let ok = errands.enqueue(Charge { order: 1 }).await.unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(ok)).await;
    switch.0.store(false, Ordering::SeqCst);
    let dies = errands.enqueue(Charge { order: 13 }).await.unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(dies)).await;
    let later = errands
        .enqueue_in(Charge { order: 2 }, std::time::Duration::from_secs(3600))
        .await
        .unwrap();

    use errands::JobStatus;
    assert_eq!(errands.status(ok).await.unwrap(), JobStatus::Completed);
    assert!(matches!(
        errands.status(dies).await.unwrap(),
        JobStatus::Stored(info) if info.state == errands::JobState::Dead
    ));
    errands.purge(dies).await.unwrap();
    assert_eq!(errands.status(dies).await.unwrap(), JobStatus::Purged);
    errands.cancel(later).await.unwrap();
    assert!(matches!(
        errands.status(later).await.unwrap(),
        JobStatus::Stored(info) if info.state == errands::JobState::Cancelled
    ));
    assert_eq!(
        errands.status(later + 1).await.unwrap(),
        JobStatus::NotFound
    );
    assert_eq!(errands.status(0).await.unwrap(), JobStatus::NotFound);
    assert_eq!(
        serde_json::to_value(errands.status(ok).await.unwrap()).unwrap(),
        serde_json::json!({"status": "completed"})
    );
}
both!(status_tells_completed_cancelled_purged_and_unknown_apart);
