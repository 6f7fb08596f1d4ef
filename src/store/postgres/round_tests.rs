//! A round whose commit was cut off: what it claimed is put back by its
//! token, and nothing else is touched. (Cutting a real connection between
//! `COMMIT` and its answer cannot be done on demand; this commits the round
//! and then releases it as the cut-off path would.)

use std::sync::Arc;

use super::{PgStore, PostgresOptions};
use crate::store::{Claim, FinishAndClaim, NewJob, Store};

fn url() -> String {
    std::env::var("ERRANDS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

#[actix_rt::test]
async fn a_cut_off_rounds_claims_are_put_back_by_token() {
    let schema = format!("round_{}_{:08x}", std::process::id(), fastrand::u32(..));
    let store = Arc::new(
        PgStore::open(
            PostgresOptions::new(url()).schema(schema.clone()),
            false,
            None,
        )
        .await
        .unwrap(),
    );
    let job = |n: u8| NewJob {
        queue: "q",
        kind: "k",
        payload: vec![n],
        run_at: 0,
        max_attempts: 3,
        created_at: 0,
    };
    store.enqueue((0..6).map(job).collect()).await.unwrap();
    let claim = |n| FinishAndClaim {
        queue: "q",
        claims: vec![Claim {
            kind: "k",
            n,
            start_now: n,
            global_limit: None,
        }],
        now: 1,
        ..FinishAndClaim::default()
    };
    // An earlier round, answered: its jobs are running here and stay so.
    let kept = store.finish_and_claim(claim(2)).await.unwrap().claimed;
    // The cut-off round, with a token of its own.
    let shared = store.shared.clone();
    let token = 42;
    let client = shared.client().await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let lost = super::writes::finish_and_claim(
        &client,
        &schema,
        &shared.owner,
        false,
        &claim(3),
        super::writes::Claiming { token, claim: true },
    )
    .await
    .unwrap()
    .claimed;
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(lost.len(), 3);

    let released = super::writes::release_round(&**client, &schema, &shared.owner, token)
        .await
        .unwrap();
    assert_eq!(released, 3);
    for job in &lost {
        let info = store.job(job.id, 1).await.unwrap().unwrap();
        assert_eq!(
            (info.state, info.attempts),
            (crate::JobState::Available, 0),
            "job {} is back, its attempt not counted",
            job.id
        );
    }
    for job in &kept {
        let info = store.job(job.id, 1).await.unwrap().unwrap();
        assert_eq!(info.state, crate::JobState::Running, "job {}", job.id);
    }
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    drop(client);
    store.close().await.unwrap();
}
