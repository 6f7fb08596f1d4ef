//! Starting the child, reading what it prints, killing it with SIGKILL, and
//! reading its ledger back.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use super::child::ROLE;

/// How long to wait for a line from the child before failing.
const PATIENCE: Duration = Duration::from_secs(60);

pub struct Running {
    child: Child,
    lines: Receiver<String>,
}

/// Starts the test binary itself as a child application.
pub fn spawn(db: &Path, ledger: &Path, env: &[(&str, String)]) -> Running {
    spawn_as(&std::env::current_exe().unwrap(), db, ledger, env, None)
}

/// Like [`spawn`], running `exe` (a copy of this binary) as the given user
/// id, to be refused writes when the tests run as root, which ignores file
/// modes.
pub fn spawn_as(
    exe: &Path,
    db: &Path,
    ledger: &Path,
    env: &[(&str, String)],
    uid: Option<u32>,
) -> Running {
    let mut command = Command::new(exe);
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(uid);
    }
    command
        .env(ROLE, "1")
        .env("ERRANDS_DB", db)
        .env("ERRANDS_LEDGER", ledger)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running { child, lines }
}

impl Running {
    /// The next line the child prints; panics if it exits or stalls first.
    pub fn next_line(&mut self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("child printed nothing more ({e})"))
    }

    /// Reads lines until one starts with `prefix`; returns every line read.
    pub fn lines_until(&mut self, prefix: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.next_line();
            let done = line.starts_with(prefix);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        loop {
            let line = self.next_line();
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    /// Every line the child prints until it exits (however it exits).
    pub fn lines_until_exit(mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            lines.push(line);
        }
        let _ = self.child.wait();
        lines
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Waits for a clean exit.
    pub fn finish(mut self) {
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "child failed: {status}");
    }
}

/// One ledger line: the start or end of an attempt, or its committed
/// completion.
#[derive(Debug, Clone)]
pub struct Entry {
    pub end: bool,
    pub committed: bool,
    pub id: i64,
    pub attempt: u32,
    pub pid: u32,
    pub nanos: u128,
}

pub fn read_ledger(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            Entry {
                end: f[0] == "end",
                committed: f[0] == "committed",
                id: f[1].parse().unwrap(),
                attempt: f[2].parse().unwrap(),
                pid: f[3].parse().unwrap(),
                nanos: f[4].parse().unwrap(),
            }
        })
        .collect()
}

/// How many times each job's handler ran to the end.
pub fn completions(ledger: &[Entry]) -> HashMap<i64, usize> {
    let mut done = HashMap::new();
    for e in ledger.iter().filter(|e| e.end) {
        *done.entry(e.id).or_insert(0) += 1;
    }
    done
}

pub fn parse_ids(list: &str) -> Vec<i64> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

/// Rows left in the jobs table.
pub fn rows_left(db: &PathBuf) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM errands_jobs", [], |r| r.get(0))
        .unwrap()
}

/// Asserts that no job ever ran twice at the same time: for each job, each
/// attempt starts after the previous one ended, or after the process running
/// the previous one died (an attempt with no end line was killed). Attempt
/// numbers only grow. Returns how many attempts were cut short by a kill.
pub fn assert_no_overlap(ledger: &[Entry]) -> usize {
    #[derive(Debug)]
    struct Run {
        attempt: u32,
        pid: u32,
        start: u128,
        end: Option<u128>,
    }
    let mut runs: HashMap<i64, Vec<Run>> = HashMap::new();
    for e in ledger.iter().filter(|e| !e.committed) {
        let list = runs.entry(e.id).or_default();
        if e.end {
            let run = list
                .iter_mut()
                .find(|r| r.attempt == e.attempt && r.pid == e.pid && r.end.is_none())
                .unwrap_or_else(|| panic!("end without start: {e:?}"));
            run.end = Some(e.nanos);
        } else {
            list.push(Run {
                attempt: e.attempt,
                pid: e.pid,
                start: e.nanos,
                end: None,
            });
        }
    }
    let mut killed = 0;
    for (id, mut list) in runs {
        list.sort_by_key(|r| r.start);
        for pair in list.windows(2) {
            let (prev, next) = (&pair[0], &pair[1]);
            assert!(
                next.attempt > prev.attempt,
                "job {id}: attempts out of order: {list:?}"
            );
            match prev.end {
                Some(end) => assert!(next.start >= end, "job {id} ran twice at once: {list:?}"),
                None => {
                    assert_ne!(
                        next.pid, prev.pid,
                        "job {id} restarted while its attempt ran: {list:?}"
                    );
                    killed += 1;
                }
            }
        }
    }
    killed
}

/// Ids of the jobs left dead in the database.
pub fn dead_ids(db: &PathBuf) -> HashSet<i64> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id FROM errands_jobs WHERE state = 'dead'")
        .unwrap();
    let ids = stmt.query_map([], |r| r.get(0)).unwrap();
    ids.map(|id| id.unwrap()).collect()
}

/// Asserts that no attempt of a job started after its completion was
/// committed: re-runs only ever follow completions that a kill kept from
/// committing. Returns how many completions were seen committed.
pub fn assert_nothing_runs_after_commit(ledger: &[Entry]) -> usize {
    let mut committed_at: HashMap<i64, u128> = HashMap::new();
    for e in ledger.iter().filter(|e| e.committed) {
        committed_at.entry(e.id).or_insert(e.nanos);
    }
    for e in ledger.iter().filter(|e| !e.end && !e.committed) {
        if let Some(at) = committed_at.get(&e.id) {
            assert!(
                e.nanos < *at,
                "job {} started attempt {} after its completion was committed",
                e.id,
                e.attempt
            );
        }
    }
    committed_at.len()
}

/// The store the children share: a SQLite file, or a PostgreSQL schema
/// (given to the children as `ERRANDS_PG_SCHEMA`).
pub enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Db {
    /// The variables a child needs to open this store, with `env`.
    pub fn env(&self, env: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut all = env.to_vec();
        if let Db::Postgres(schema) = self {
            all.push(("ERRANDS_PG_SCHEMA", schema.clone()));
        }
        all
    }

    /// The SQLite path the children are given (unused on PostgreSQL).
    pub fn path(&self, dir: &Path) -> PathBuf {
        match self {
            Db::Sqlite(path) => path.clone(),
            Db::Postgres(_) => dir.join("unused.db"),
        }
    }

    /// Job rows left.
    pub fn rows_left(&self) -> i64 {
        match self {
            Db::Sqlite(path) => rows_left(path),
            Db::Postgres(schema) => pg_query(&format!("SELECT count(*) FROM {schema}.jobs"))[0],
        }
    }

    /// Ids of the jobs left dead.
    pub fn dead_ids(&self) -> HashSet<i64> {
        match self {
            Db::Sqlite(path) => dead_ids(path),
            Db::Postgres(schema) => pg_query(&format!(
                "SELECT id FROM {schema}.jobs WHERE state = 'dead'"
            ))
            .into_iter()
            .collect(),
        }
    }
}

/// Runs a query answering one bigint column, on a runtime of its own.
fn pg_query(sql: &str) -> Vec<i64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = errands::tokio_postgres::connect(
            &crate::common::pg_url(),
            errands::tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        client
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    })
}

/// The most attempts running at once across every process, from the
/// ledger's start and end lines (attempts a kill cut short have no end and
/// are not counted past their start).
pub fn peak_running(ledger: &[Entry]) -> usize {
    let mut edges: Vec<(u128, i32)> = ledger
        .iter()
        .filter(|e| !e.committed)
        .map(|e| (e.nanos, if e.end { -1 } else { 1 }))
        .collect();
    // Ends before starts at the same instant.
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        peak = peak.max(now);
    }
    peak as usize
}
