//! A model test of the SQLite store: random sequences of enqueue, claim,
//! complete, fail, late outcomes of earlier attempts, crash-and-recover,
//! requeue, purge and cancel, each
//! checked against a plain in-memory model of what the store must hold.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::{SqliteOptions, SqliteStore};
use crate::error::Error;
use crate::inspect::JobState;
use crate::store::{
    CancelAnswer, Claim, DeadTarget, FinishAndClaim, Finished, NewJob, Outcome, Store,
};

const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Enqueue(usize),
    /// Claims n jobs, the first half to start at once, the rest ahead.
    Claim(usize),
    /// A job claimed ahead starts (is marked started).
    Start(usize),
    Complete(usize),
    Fail(usize),
    /// An outcome of an earlier attempt of a running job arrives late: it
    /// must change nothing.
    StaleOutcome(usize),
    Crash,
    Requeue(usize),
    Purge(usize),
    Cancel(usize),
    /// A running job snoozes: back to waiting, one more attempt allowed.
    Snooze(usize),
    /// A running job's handler stopped on a cancel: kept as cancelled.
    Cancelled(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..5).prop_map(Op::Enqueue),
        3 => (1usize..4).prop_map(Op::Claim),
        2 => any::<usize>().prop_map(Op::Start),
        2 => any::<usize>().prop_map(Op::Complete),
        3 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::StaleOutcome),
        1 => Just(Op::Crash),
        1 => any::<usize>().prop_map(Op::Requeue),
        1 => any::<usize>().prop_map(Op::Purge),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Snooze),
        1 => any::<usize>().prop_map(Op::Cancelled),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Model {
    state: JobState,
    attempts: u32,
    /// Attempts given back at recovery (0 or 1).
    refunded: u32,
    /// Snoozes, each of which allowed one more attempt.
    snoozed: u32,
}

impl Model {
    /// Attempts this job may use.
    fn budget(&self) -> u32 {
        MAX_ATTEMPTS + self.refunded + self.snoozed
    }
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(&SqliteOptions::new(path), false).unwrap()
}

fn pick(ids: Vec<i64>, i: usize) -> Option<i64> {
    (!ids.is_empty()).then(|| ids[i % ids.len()])
}

fn in_state(model: &BTreeMap<i64, Model>, state: JobState) -> Vec<i64> {
    model
        .iter()
        .filter(|(_, m)| m.state == state)
        .map(|(id, _)| *id)
        .collect()
}

async fn finish(store: &SqliteStore, id: i64, attempt: u32, outcome: Outcome) {
    let batch = FinishAndClaim {
        finished: vec![Finished {
            id,
            kind: "k",
            attempt,
            outcome,
            checkpoint: None,
            marked: true,
        }],
        queue: "q",
        ..FinishAndClaim::default()
    };
    store.finish_and_claim(batch).await.unwrap();
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.db");
    let mut store = open(&path);
    let mut model: BTreeMap<i64, Model> = BTreeMap::new();
    let mut gone: Vec<i64> = Vec::new();
    for op in ops {
        match op {
            Op::Enqueue(n) => {
                let jobs = (0..n)
                    .map(|_| NewJob {
                        queue: "q",
                        kind: "k",
                        payload: vec![1, 0],
                        run_at: 0,
                        max_attempts: MAX_ATTEMPTS,
                        created_at: 0,
                    })
                    .collect();
                for id in store.enqueue(jobs).await.unwrap() {
                    assert!(model
                        .insert(
                            id,
                            Model {
                                state: JobState::Available,
                                attempts: 0,
                                refunded: 0,
                                snoozed: 0,
                            }
                        )
                        .is_none());
                }
            }
            Op::Claim(n) => {
                let start_now = n.div_ceil(2);
                let batch = FinishAndClaim {
                    claims: vec![Claim {
                        kind: "k",
                        n,
                        start_now,
                        global_limit: None,
                    }],
                    queue: "q",
                    ..FinishAndClaim::default()
                };
                let mut got: Vec<i64> = store
                    .finish_and_claim(batch)
                    .await
                    .unwrap()
                    .claimed
                    .iter()
                    .map(|j| j.id)
                    .collect();
                got.sort();
                let expected: Vec<i64> = in_state(&model, JobState::Available)
                    .into_iter()
                    .take(n)
                    .collect();
                assert_eq!(got, expected, "claims the oldest ready jobs");
                for (i, id) in got.into_iter().enumerate() {
                    let m = model.get_mut(&id).unwrap();
                    // A job that was given an attempt back is marked
                    // started even when claimed ahead.
                    m.state = if i < start_now || m.refunded > 0 {
                        JobState::Running
                    } else {
                        JobState::Claimed
                    };
                    m.attempts += 1;
                }
            }
            Op::Start(i) => {
                if let Some(id) = pick(in_state(&model, JobState::Claimed), i) {
                    let batch = FinishAndClaim {
                        started: vec![(id, "k")],
                        queue: "q",
                        ..FinishAndClaim::default()
                    };
                    store.finish_and_claim(batch).await.unwrap();
                    model.get_mut(&id).unwrap().state = JobState::Running;
                }
            }
            Op::Complete(i) => {
                if let Some(id) = pick(in_state(&model, JobState::Running), i) {
                    finish(&store, id, model[&id].attempts, Outcome::Completed).await;
                    model.remove(&id);
                    gone.push(id);
                }
            }
            Op::Fail(i) => {
                if let Some(id) = pick(in_state(&model, JobState::Running), i) {
                    let m = model.get_mut(&id).unwrap();
                    let outcome = if m.attempts >= m.budget() {
                        m.state = JobState::Dead;
                        Outcome::Dead { error: "no".into() }
                    } else {
                        m.state = JobState::Available;
                        Outcome::Retry {
                            run_at: 0,
                            error: "again".into(),
                        }
                    };
                    let attempt = m.attempts;
                    finish(&store, id, attempt, outcome).await;
                }
            }
            Op::Snooze(i) => {
                if let Some(id) = pick(in_state(&model, JobState::Running), i) {
                    let m = model.get_mut(&id).unwrap();
                    m.state = JobState::Available;
                    m.snoozed += 1;
                    let attempt = m.attempts;
                    finish(&store, id, attempt, Outcome::Snooze { run_at: 0 }).await;
                }
            }
            Op::Cancelled(i) => {
                if let Some(id) = pick(in_state(&model, JobState::Running), i) {
                    let attempt = model[&id].attempts;
                    let outcome = Outcome::Cancelled {
                        reason: "stop".into(),
                    };
                    finish(&store, id, attempt, outcome).await;
                    model.get_mut(&id).unwrap().state = JobState::Cancelled;
                }
            }
            Op::StaleOutcome(i) => {
                let running = in_state(&model, JobState::Running);
                let stale = running.into_iter().filter(|id| model[id].attempts > 1);
                if let Some(id) = pick(stale.collect(), i) {
                    let attempt = model[&id].attempts - 1;
                    finish(&store, id, attempt, Outcome::Completed).await;
                    finish(
                        &store,
                        id,
                        attempt,
                        Outcome::Dead {
                            error: "late".into(),
                        },
                    )
                    .await;
                }
            }
            Op::Crash => {
                // Dropped without close: its lock file stays, unlocked, as
                // after a kill.
                drop(store);
                store = open(&path);
                let moved = store.recover_orphans(0).await.unwrap();
                let running = in_state(&model, JobState::Running);
                let claimed = in_state(&model, JobState::Claimed);
                assert_eq!(moved, running.len() + claimed.len());
                // Claimed ahead and never started: the attempt is given back
                // (once; a refunded job is never left claimed ahead).
                for id in claimed {
                    let m = model.get_mut(&id).unwrap();
                    assert_eq!(m.refunded, 0);
                    m.refunded = 1;
                    m.state = JobState::Available;
                }
                // Running: the attempt counted.
                for id in running {
                    let m = model.get_mut(&id).unwrap();
                    m.state = if m.attempts >= m.budget() {
                        JobState::Dead
                    } else {
                        JobState::Available
                    };
                }
            }
            Op::Requeue(i) => {
                if let Some(id) = pick(in_state(&model, JobState::Dead), i) {
                    assert_eq!(store.requeue(DeadTarget::One(id), 0).await.unwrap(), 1);
                    model.insert(
                        id,
                        Model {
                            state: JobState::Available,
                            attempts: 0,
                            refunded: 0,
                            // The allowance a snooze added stays with the row.
                            snoozed: model[&id].snoozed,
                        },
                    );
                }
            }
            Op::Purge(i) => {
                if let Some(id) = pick(in_state(&model, JobState::Dead), i) {
                    assert_eq!(store.purge(DeadTarget::One(id)).await.unwrap(), 1);
                    model.remove(&id);
                    gone.push(id);
                }
            }
            Op::Cancel(i) => {
                if let Some(id) = pick(model.keys().copied().collect(), i) {
                    match (model[&id].state, store.cancel(id, "why".into(), 0).await) {
                        (JobState::Available, Ok(CancelAnswer::Cancelled)) => {
                            model.get_mut(&id).expect("picked").state = JobState::Cancelled;
                        }
                        (JobState::Available, Err(e)) => panic!("cancel failed: {e}"),
                        // Running: a request its owner reads; nothing else moves.
                        (
                            JobState::Running | JobState::Claimed,
                            Ok(CancelAnswer::Requested { .. }),
                        ) => {}
                        (_, Err(Error::WrongState { .. })) => {}
                        (state, other) => panic!("cancel of a {state} job answered {other:?}"),
                    }
                }
            }
        }
        // The store holds exactly what the model holds.
        for (id, m) in &model {
            let info = store.job(*id, 0).await.unwrap().expect("job present");
            assert_eq!(
                (info.state, info.attempts, info.max_attempts),
                (m.state, m.attempts, m.budget()),
                "job {id}"
            );
        }
        for id in &gone {
            assert_eq!(store.job(*id, 0).await.unwrap(), None, "job {id} is gone");
        }
        // The counters kept by every write agree with the model, per state.
        let counts = store.counts(0).await.unwrap();
        let stored = |f: fn(&crate::inspect::Counts) -> u64| -> usize {
            counts.iter().map(f).sum::<u64>() as usize
        };
        let modelled = |state| model.values().filter(|m| m.state == state).count();
        assert_eq!(stored(|c| c.available), modelled(JobState::Available));
        assert_eq!(stored(|c| c.running), modelled(JobState::Running));
        assert_eq!(stored(|c| c.claimed), modelled(JobState::Claimed));
        assert_eq!(stored(|c| c.dead), modelled(JobState::Dead));
        assert_eq!(stored(|c| c.cancelled), modelled(JobState::Cancelled));
        assert_eq!(stored(|c| c.scheduled + c.completed), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        actix_rt::System::new().block_on(run(ops));
    }
}
