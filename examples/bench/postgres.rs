//! PostgreSQL scenarios, each beside raw tokio-postgres doing the same SQL
//! on the same server in the same run: batch insert then drain by claim
//! (`FOR UPDATE SKIP LOCKED … RETURNING`) and delete; one row per commit
//! from 16 connections; and the time from an enqueue on one instance to
//! the job's start on another (the `NOTIFY` path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use errands::tokio_postgres::{self, Client, NoTls};
use errands::{Errands, Job, JobConfig, JobContext, JobResult, PostgresOptions};
use serde::{Deserialize, Serialize};

use super::scenarios::{Done, Noop};

/// The server: `ERRANDS_PG_URL`, else the local one.
pub fn url() -> String {
    std::env::var("ERRANDS_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

async fn connect() -> Client {
    let (client, connection) = tokio_postgres::connect(&url(), NoTls)
        .await
        .expect("PostgreSQL for the bench (set ERRANDS_PG_URL)");
    actix_rt::spawn(connection);
    client
}

/// A fresh, empty schema.
async fn fresh(schema: &str) {
    connect()
        .await
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

/// Enqueues `n` no-op jobs in batches of 10,000, with no worker running.
async fn fill(schema: &str, n: usize) {
    let producer = Errands::builder()
        .postgres_options(options(schema))
        .start()
        .await
        .unwrap();
    let mut left = n;
    while left > 0 {
        let take = left.min(10_000);
        producer
            .enqueue_many((0..take).map(|_| Noop))
            .await
            .unwrap();
        left -= take;
    }
    producer.shutdown(Duration::from_secs(5)).await.unwrap();
}

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions::new(url()).schema(schema)
}

/// errands: `n` no-op jobs enqueued in batches of 10,000, then drained
/// with `concurrency`. Jobs per second of the drain.
pub async fn drain(n: usize, concurrency: usize) -> f64 {
    let schema = "errands_bench_drain";
    fresh(schema).await;
    fill(schema, n).await;
    let done = Arc::new(Done::default());
    done.expect(n as u64);
    let start = Instant::now();
    let consumer = Errands::builder()
        .postgres_options(options(schema))
        .register_with::<Noop>(JobConfig::new().concurrency(concurrency))
        .data(done.clone())
        .start()
        .await
        .unwrap();
    done.wait().await;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    consumer.shutdown(Duration::from_secs(5)).await.unwrap();
    fresh(schema).await;
    rate
}

/// Raw: the same table, `n` rows inserted in batches, then 4 connections
/// each loop on one transaction that deletes its previous batch and claims
/// the next 100 with `SKIP LOCKED`. Jobs per second of the drain.
pub async fn raw_drain(n: usize) -> f64 {
    let schema = "errands_bench_raw";
    fresh(schema).await;
    let client = connect().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.jobs (id bigserial PRIMARY KEY, queue text NOT NULL,
                kind text NOT NULL, state text NOT NULL, payload bytea NOT NULL,
                attempts int NOT NULL DEFAULT 0, run_at bigint NOT NULL, owner text);
             CREATE INDEX ON {schema}.jobs (queue, kind, run_at, id) WHERE state = 'available';"
        ))
        .await
        .unwrap();
    let mut left = n as i64;
    while left > 0 {
        let take = left.min(10_000);
        client
            .execute(
                &format!(
                    "INSERT INTO {schema}.jobs (queue, kind, state, payload, run_at)
                     SELECT 'default', 'noop', 'available', '\\x0100'::bytea, 0
                       FROM generate_series(1, $1::int8)"
                ),
                &[&take],
            )
            .await
            .unwrap();
        left -= take;
    }
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..4 {
        let total = total.clone();
        workers.push(actix_rt::spawn(async move {
            let mut client = connect().await;
            let owner = format!("raw-owner-{worker}-0123456789abcdef");
            let mut previous: Vec<i64> = Vec::new();
            loop {
                let tx = client.transaction().await.unwrap();
                if !previous.is_empty() {
                    tx.execute(
                        &format!("DELETE FROM {schema}.jobs WHERE id = ANY($1) AND owner = $2"),
                        &[&previous, &owner],
                    )
                    .await
                    .unwrap();
                    total.fetch_add(previous.len() as u64, Ordering::Relaxed);
                }
                let rows = tx
                    .query(
                        &format!(
                            "UPDATE {schema}.jobs j SET state = 'running', owner = $1,
                                    attempts = j.attempts + 1
                               FROM (SELECT id FROM {schema}.jobs
                                      WHERE queue = 'default' AND kind = 'noop'
                                        AND state = 'available' AND run_at <= 1
                                      ORDER BY run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED) c
                              WHERE j.id = c.id RETURNING j.id, j.payload"
                        ),
                        &[&owner],
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                previous = rows.iter().map(|r| r.get(0)).collect();
                if previous.is_empty() {
                    return;
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let rate = total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    fresh(schema).await;
    rate
}

/// errands: one job per `enqueue` call from 16 concurrent callers, each
/// call committed on return. Jobs per second.
pub async fn enqueue_single(n: usize) -> f64 {
    let schema = "errands_bench_enqueue";
    fresh(schema).await;
    let errands = Errands::builder()
        .postgres_options(options(schema))
        .start()
        .await
        .unwrap();
    let start = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..16 {
        let errands = errands.clone();
        producers.push(actix_rt::spawn(async move {
            for _ in 0..n / 16 {
                errands.enqueue(Noop).await.unwrap();
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let rate = (n / 16 * 16) as f64 / start.elapsed().as_secs_f64();
    errands.shutdown(Duration::from_secs(5)).await.unwrap();
    fresh(schema).await;
    rate
}

/// Raw: 16 connections, each inserting one row per commit; with `notify`,
/// each transaction also sends the `NOTIFY` that wakes other hosts (the
/// same work errands does per enqueue; without it, rows no other host
/// hears about until it polls).
pub async fn raw_enqueue_single(n: usize, notify: bool) -> f64 {
    let schema = "errands_bench_raw_enqueue";
    fresh(schema).await;
    connect()
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.jobs (id bigserial PRIMARY KEY, queue text NOT NULL,
                kind text NOT NULL, state text NOT NULL, payload bytea NOT NULL,
                attempts int NOT NULL DEFAULT 0, max_attempts int NOT NULL,
                run_at bigint NOT NULL, created_at bigint NOT NULL);
             CREATE INDEX ON {schema}.jobs (queue, kind, run_at, id) WHERE state = 'available';"
        ))
        .await
        .unwrap();
    let start = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..16 {
        producers.push(actix_rt::spawn(async move {
            let client = connect().await;
            let insert = client
                .prepare(&format!(
                    "INSERT INTO {schema}.jobs (queue, kind, state, payload, max_attempts, run_at, created_at)
                     VALUES ('default', 'noop', 'available', $1, 25, $2, $2) RETURNING id"
                ))
                .await
                .unwrap();
            let channel = format!("{schema}_jobs");
            let mut client = client;
            for i in 0..n / 16 {
                let payload: &[u8] = &[1, 0];
                if notify {
                    let tx = client.transaction().await.unwrap();
                    tx.query_one(&insert, &[&payload, &(i as i64)]).await.unwrap();
                    tx.execute("SELECT pg_notify($1, 'default 0')", &[&channel])
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                } else {
                    client.query_one(&insert, &[&payload, &(i as i64)]).await.unwrap();
                }
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    let rate = (n / 16 * 16) as f64 / start.elapsed().as_secs_f64();
    fresh(schema).await;
    rate
}

#[derive(Serialize, Deserialize)]
struct Stamp {
    sent_ns: u64,
}

/// Start delays, in µs.
#[derive(Default)]
struct Delays(std::sync::Mutex<Vec<f64>>, tokio::sync::Notify);

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

impl Job for Stamp {
    const KIND: &'static str = "stamp";
    async fn run(self, ctx: JobContext) -> JobResult {
        let delays = ctx.data::<Arc<Delays>>()?;
        let us = now_ns().saturating_sub(self.sent_ns) as f64 / 1000.0;
        delays.0.lock().unwrap().push(us);
        delays.1.notify_one();
        Ok(())
    }
}

/// From `enqueue` returning on one instance to the handler starting on
/// another (woken by `NOTIFY`; its poll is an hour). Start delays in µs,
/// one job at a time.
pub async fn cross_instance_latency(n: usize) -> Vec<f64> {
    let schema = "errands_bench_latency";
    fresh(schema).await;
    let delays = Arc::new(Delays::default());
    let worker = Errands::builder()
        .postgres_options(options(schema))
        .register::<Stamp>()
        .data(delays.clone())
        .poll_interval(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let producer = Errands::builder()
        .postgres_options(options(schema))
        .start()
        .await
        .unwrap();
    for _ in 0..n {
        producer.enqueue(Stamp { sent_ns: now_ns() }).await.unwrap();
        delays.1.notified().await;
    }
    producer.shutdown(Duration::from_secs(5)).await.unwrap();
    worker.shutdown(Duration::from_secs(5)).await.unwrap();
    fresh(schema).await;
    let samples = delays.0.lock().unwrap().clone();
    samples
}

/// Set in a child process of the four-process drain: the schema to drain.
pub const DRAIN_CHILD: &str = "ERRANDS_BENCH_DRAIN_SCHEMA";

/// The child side of [`drain_four_processes`]: runs the no-op kind on the
/// schema until the table is empty, then exits.
pub fn drain_child(schema: &str, concurrency: usize) {
    actix_rt::System::new().block_on(async {
        let done = Arc::new(Done::default());
        let errands = Errands::builder()
            .postgres_options(options(schema))
            .register_with::<Noop>(JobConfig::new().concurrency(concurrency))
            .data(done)
            .start()
            .await
            .unwrap();
        let client = connect().await;
        let empty = format!("SELECT NOT EXISTS (SELECT 1 FROM {schema}.jobs)");
        while !client
            .query_one(&empty, &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
        {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        errands.shutdown(Duration::from_secs(5)).await.unwrap();
    });
}

/// Four processes drain `n` jobs from one schema together (this binary,
/// started again as a child). Jobs per second from the children's start to
/// the last one's exit, process start-up included.
pub async fn drain_four_processes(n: usize, concurrency: usize) -> f64 {
    let schema = "errands_bench_drain4";
    fresh(schema).await;
    fill(schema, n).await;
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let children: Vec<std::process::Child> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .env(DRAIN_CHILD, schema)
                .env("ERRANDS_BENCH_CONCURRENCY", concurrency.to_string())
                .spawn()
                .expect("spawn a drain child")
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a drain child failed");
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    fresh(schema).await;
    rate
}
