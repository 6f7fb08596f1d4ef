//! PostgreSQL going away while errands runs: connections killed by the
//! server (`pg_terminate_backend`), and the server unreachable for a while
//! (a TCP proxy in front of it, stopped and started again). The engine
//! reconnects by itself, `enqueue` during the outage is a clear error
//! within the connect timeout (never a hang), and nothing acknowledged is
//! lost.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, TestStore};
use errands::{Errands, Event, Job, JobContext, JobResult, PostgresOptions, StoreErrorKind};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Work;

#[derive(Default)]
struct Done(Mutex<HashSet<i64>>);

impl Job for Work {
    const KIND: &'static str = "work";
    async fn run(self, ctx: JobContext) -> JobResult {
        actix_rt::time::sleep(Duration::from_millis(2)).await;
        ctx.data::<Arc<Done>>()?.0.lock().unwrap().insert(ctx.id());
        Ok(())
    }
}

/// Waits until every id in `acked` has completed (events, with the
/// test's patience as a hang guard).
async fn all_complete(events: &mut errands::Events, done: &Done, acked: &HashSet<i64>) {
    let finished = actix_rt::time::timeout(Duration::from_secs(60), async {
        loop {
            if acked.is_subset(&done.0.lock().unwrap()) {
                return;
            }
            let _ = actix_rt::time::timeout(Duration::from_millis(500), events.next()).await;
        }
    })
    .await;
    let missing: Vec<i64> = acked.difference(&done.0.lock().unwrap()).copied().collect();
    assert!(
        finished.is_ok(),
        "acknowledged jobs never completed: {missing:?}"
    );
}

fn config(url: &str, app: &str) -> errands::tokio_postgres::Config {
    let mut config: errands::tokio_postgres::Config = url.parse().unwrap();
    config.application_name(app);
    config
}

#[actix_rt::test]
async fn killed_connections_are_replaced_and_nothing_acknowledged_is_lost() {
    let store = TestStore::new(Backend::Postgres);
    let app = format!("errands_{}", store.schema);
    let done = Arc::new(Done::default());
    let errands = Errands::builder()
        .postgres_options(
            PostgresOptions::from_config(config(&common::pg_url(), &app))
                .schema(store.schema.clone())
                .connect_timeout(Duration::from_secs(2)),
        )
        .register::<Work>()
        .data(done.clone())
        .poll_interval(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let mut acked: HashSet<i64> = errands
        .enqueue_many((0..2000).map(|_| Work))
        .await
        .unwrap()
        .into_iter()
        .collect();
    common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;

    assert!(
        done.0.lock().unwrap().len() < acked.len(),
        "the kill comes mid-run"
    );
    // Every connection errands has (pool and liveness) is killed.
    let (admin, connection) =
        errands::tokio_postgres::connect(&common::pg_url(), errands::tokio_postgres::NoTls)
            .await
            .unwrap();
    actix_rt::spawn(connection);
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 2, "killed {killed} connections");

    // Enqueues go on; one may meet a dead connection and fail (not
    // acknowledged, so free to be lost), the rest are acknowledged.
    let mut failed = 0;
    for _ in 0..50 {
        match errands.enqueue(Work).await {
            Ok(id) => {
                acked.insert(id);
            }
            Err(errands::Error::Store(e)) => {
                assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}");
                failed += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(failed < 50, "enqueues work again after the kill");
    all_complete(&mut events, &done, &acked).await;
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// A TCP proxy in front of the PostgreSQL server that the test can take
/// down (every connection cut, the port refusing) and bring back on the
/// same port.
struct Proxy {
    port: u16,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Proxy {
    async fn start() -> Arc<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(Proxy {
            port: listener.local_addr().unwrap().port(),
            tasks: Mutex::new(Vec::new()),
        });
        proxy.serve(listener);
        proxy
    }

    fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let me = self.clone();
        let accept = actix_rt::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let relay = actix_rt::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                me.tasks.lock().unwrap().push(relay.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Cuts every connection and stops listening.
    fn down(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port.
    async fn up(self: &Arc<Self>) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }
}

#[actix_rt::test]
async fn an_outage_is_a_clear_error_within_the_timeout_and_work_resumes_by_itself() {
    let store = TestStore::new(Backend::Postgres);
    let proxy = Proxy::start().await;
    let url = format!("postgres://postgres@127.0.0.1:{}/test", proxy.port);
    let done = Arc::new(Done::default());
    let errands = Errands::builder()
        .postgres_options(
            PostgresOptions::new(url)
                .schema(store.schema.clone())
                .connect_timeout(Duration::from_secs(1)),
        )
        .register::<Work>()
        .data(done.clone())
        .poll_interval(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let mut acked: HashSet<i64> = errands
        .enqueue_many((0..1000).map(|_| Work))
        .await
        .unwrap()
        .into_iter()
        .collect();
    common::wait_for(&mut events, |e| matches!(e, Event::Completed { .. })).await;

    assert!(
        done.0.lock().unwrap().len() < acked.len(),
        "the outage comes mid-run"
    );
    proxy.down();
    let began = Instant::now();
    let during = errands.enqueue(Work).await;
    let took = began.elapsed();
    match during {
        Err(errands::Error::Store(e)) => assert_eq!(e.kind(), StoreErrorKind::Unavailable, "{e}"),
        other => panic!("expected an unavailable store, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(5),
        "the error took {took:?}, beyond the connect timeout"
    );

    proxy.up().await;
    // Work resumes by itself: a new job enqueues and every acknowledged
    // one completes.
    let after = loop {
        match errands.enqueue(Work).await {
            Ok(id) => break id,
            Err(errands::Error::Store(e)) if e.kind() == StoreErrorKind::Unavailable => {
                actix_rt::time::sleep(Duration::from_millis(100)).await
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    };
    acked.insert(after);
    all_complete(&mut events, &done, &acked).await;
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
