//! Configuring and starting errands.
//!
//! Every mistake the builder can see (no database, a kind registered twice,
//! zero concurrency, a declared queue no job type uses, ...) is reported by
//! [`Builder::start`] before anything is opened or started, with all the
//! problems listed at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::actors::supervisor::Retention;
use crate::actors::tree::{self, QueuePlan, StartWorker};
use crate::actors::worker::start_worker;
use crate::client::{Errands, KindInfo};
use crate::clock::{Clock, SystemClock};
use crate::config::JobConfig;
use crate::config_problem::{ConfigProblem, MAX_BUSY_TIMEOUT, MAX_CONCURRENCY, MAX_EVENT_CAPACITY};
use crate::context::DataMap;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::store::postgres::{PgStore, PostgresOptions, Wakeup};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::Backend;

/// One registered job type.
struct Registration {
    kind: &'static str,
    queue: &'static str,
    config: Arc<JobConfig>,
    start: StartWorker,
}

/// Settings for one queue, declared with [`Builder::queue`].
#[derive(Debug, Clone)]
pub struct QueueConfig {
    poll_interval: Option<Duration>,
}

impl QueueConfig {
    /// The defaults: the builder's poll interval.
    pub fn new() -> Self {
        QueueConfig {
            poll_interval: None,
        }
    }

    /// How often this queue's dispatcher looks for jobs written by other
    /// processes (jobs enqueued in this process start without waiting).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = Some(every);
        self
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Configures and starts errands. Get one with [`Errands::builder`].
///
/// ```no_run
/// # use errands::{Errands, Job, JobConfig, JobContext, JobResult};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize;
/// # impl Job for Resize { const KIND: &'static str = "resize";
/// #   async fn run(self, _: JobContext) -> JobResult { Ok(()) } }
/// # async fn demo() -> errands::Result<()> {
/// let errands = Errands::builder()
///     .sqlite("data/jobs.db")
///     .register_with::<Resize>(JobConfig::new().concurrency(4))
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
pub struct Builder {
    sqlite: Option<SqliteOptions>,
    postgres: Option<PostgresOptions>,
    registrations: Vec<Registration>,
    queues: HashMap<String, QueueConfig>,
    data: DataMap,
    problems: Vec<ConfigProblem>,
    clock: Arc<dyn Clock>,
    /// A clock was given (`.clock()`): PostgreSQL then keeps to it.
    clock_given: bool,
    poll_interval: Duration,
    recovery_interval: Duration,
    retain_completed: Option<Duration>,
    retain_dead: Option<Duration>,
    event_capacity: usize,
    worker_threads: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            sqlite: None,
            postgres: None,
            registrations: Vec::new(),
            queues: HashMap::new(),
            data: DataMap::default(),
            problems: Vec::new(),
            clock: Arc::new(SystemClock),
            clock_given: false,
            poll_interval: Duration::from_secs(1),
            recovery_interval: Duration::from_secs(5),
            retain_completed: None,
            retain_dead: None,
            event_capacity: 4096,
            worker_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl Builder {
    /// Stores jobs in the SQLite database at `path` (created if missing),
    /// with default options.
    pub fn sqlite(self, path: impl Into<PathBuf>) -> Self {
        self.sqlite_options(SqliteOptions::new(path))
    }

    /// Stores jobs in SQLite with these options.
    pub fn sqlite_options(mut self, options: SqliteOptions) -> Self {
        self.sqlite = Some(options);
        self
    }

    /// Stores jobs on the PostgreSQL server at `url`
    /// (`postgres://user:password@host/database`), in the schema `errands`,
    /// with default options. Every instance on the same server and schema
    /// shares the same queues: run one per host.
    ///
    /// ```no_run
    /// # use errands::{Errands, Job, JobContext, JobResult};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize;
    /// # impl Job for Resize { const KIND: &'static str = "resize";
    /// #   async fn run(self, _: JobContext) -> JobResult { Ok(()) } }
    /// # async fn demo() -> errands::Result<()> {
    /// let errands = Errands::builder()
    ///     .postgres("postgres://app@127.0.0.1/app")
    ///     .register::<Resize>()
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn postgres(self, url: impl Into<String>) -> Self {
        self.postgres_options(PostgresOptions::new(url))
    }

    /// Stores jobs on PostgreSQL with these options (schema, pool size, or
    /// the application's own `tokio_postgres::Config`).
    pub fn postgres_options(mut self, options: PostgresOptions) -> Self {
        self.postgres = Some(options);
        self
    }

    /// Runs jobs of type `J` in this process, with `J::config()`.
    pub fn register<J: Job>(self) -> Self {
        self.register_with::<J>(J::config())
    }

    /// Runs jobs of type `J` in this process, with these settings.
    pub fn register_with<J: Job>(mut self, config: JobConfig) -> Self {
        let kind = J::KIND;
        if kind.is_empty() {
            self.problems.push(ConfigProblem::EmptyKind {
                type_name: std::any::type_name::<J>(),
            });
        }
        if J::QUEUE.is_empty() {
            self.problems.push(ConfigProblem::EmptyQueue { kind });
        }
        if config.concurrency == 0 {
            self.problems.push(ConfigProblem::ZeroConcurrency { kind });
        }
        if config.global_concurrency == Some(0) {
            self.problems
                .push(ConfigProblem::ZeroGlobalConcurrency { kind });
        }
        for (setting, value) in [
            ("concurrency", config.concurrency),
            ("prefetch", config.prefetch.unwrap_or(0)),
            ("global_concurrency", config.global_concurrency.unwrap_or(0)),
        ] {
            if value > MAX_CONCURRENCY {
                self.problems.push(ConfigProblem::TooManySlots {
                    kind,
                    setting,
                    value,
                });
            }
        }
        if config.max_attempts == 0 {
            self.problems.push(ConfigProblem::ZeroMaxAttempts { kind });
        }
        if config
            .rate_limit
            .is_some_and(|(n, per)| n == 0 || per < Duration::from_millis(1))
        {
            self.problems.push(ConfigProblem::ZeroRateLimit { kind });
        }
        if let Some((min, max)) = config.adaptive {
            if min == 0 || min > max || max > MAX_CONCURRENCY {
                self.problems
                    .push(ConfigProblem::InvalidAdaptiveRange { kind, min, max });
            }
        }
        if self.registrations.iter().any(|r| r.kind == kind) {
            self.problems.push(ConfigProblem::DuplicateKind { kind });
        }
        self.registrations.push(Registration {
            kind: J::KIND,
            queue: J::QUEUE,
            config: Arc::new(config),
            start: start_worker::<J>,
        });
        self
    }

    /// Declares settings for a queue. A declared queue that no registered
    /// job type uses is a configuration error (most likely a typo).
    pub fn queue(mut self, name: impl Into<String>, config: QueueConfig) -> Self {
        let name = name.into();
        if self.queues.insert(name.clone(), config).is_some() {
            self.problems
                .push(ConfigProblem::DuplicateQueue { queue: name });
        }
        self
    }

    /// Makes `value` available to handlers through
    /// [`JobContext::data`](crate::JobContext::data), looked up by its type.
    pub fn data<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        if self.data.insert(value) {
            self.problems.push(ConfigProblem::DuplicateData {
                type_name: std::any::type_name::<T>(),
            });
        }
        self
    }

    /// The clock used for every `run_at`; a [`ManualClock`](crate::ManualClock)
    /// in tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self.clock_given = true;
        self
    }

    /// How often dispatchers look for jobs written by other processes.
    /// Default 1 s.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// How often to check whether other processes sharing the database died
    /// and put their running jobs back. Default 5 s. (Jobs left by a process
    /// that died before this one started are recovered at start, at once.)
    pub fn recovery_interval(mut self, every: Duration) -> Self {
        self.recovery_interval = every;
        self
    }

    /// Keeps completed jobs (state `completed`) for this long instead of
    /// deleting them when they finish. They are pruned at start and then
    /// every tenth of the retention (at least every second, at most every
    /// minute). `Duration::MAX` keeps them for good.
    pub fn retain_completed(mut self, retention: Duration) -> Self {
        self.retain_completed = Some(retention);
        self
    }

    /// Deletes dead and cancelled jobs this long after they ended (by
    /// default they are kept until requeued or purged). Pruned at start and
    /// then every tenth of the retention (1 s to 60 s), a thousand jobs per
    /// transaction so that a large backlog never holds up enqueues; each
    /// leaves a tombstone, so [`Errands::status`](crate::Errands::status)
    /// then answers `Purged` (dead) or `Cancelled`.
    ///
    /// ```no_run
    /// # async fn demo() -> errands::Result<()> {
    /// use std::time::Duration;
    /// let errands = errands::Errands::builder()
    ///     .sqlite("jobs.db")
    ///     .retain_dead(Duration::from_secs(14 * 24 * 3600))
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn retain_dead(mut self, retention: Duration) -> Self {
        self.retain_dead = Some(retention);
        self
    }

    /// How many events a slow [`Events`](crate::Events) subscriber may fall
    /// behind before it misses some. Default 4096; at most
    /// [`MAX_EVENT_CAPACITY`](crate::MAX_EVENT_CAPACITY) (the buffer is
    /// allocated up front), 0 is taken as 1.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// How many threads run job handlers: the arbiter `start()` is called
    /// on, plus `n - 1` arbiters of errands' own, each with a worker per
    /// kind. Default: the number of cores, as actix-web's
    /// `HttpServer::workers`. A kind's concurrency limit holds across all of
    /// them; each job goes to the thread running fewest jobs of its kind.
    /// Handlers that are `!Send` are fine: each job runs on one thread from
    /// start to end. Must be at least 1 (1: every handler on the arbiter
    /// `start()` ran on).
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = n;
        self
    }

    fn validate(&mut self) -> Result<StoreChoice> {
        let mut problems = std::mem::take(&mut self.problems);
        let mut unused: Vec<&String> = self
            .queues
            .keys()
            .filter(|name| !self.registrations.iter().any(|r| r.queue == *name))
            .collect();
        unused.sort();
        for queue in unused {
            problems.push(ConfigProblem::UnusedQueue {
                queue: queue.clone(),
            });
        }
        for (setting, every) in [
            ("poll_interval", self.poll_interval),
            ("recovery_interval", self.recovery_interval),
        ] {
            if every.is_zero() {
                problems.push(ConfigProblem::ZeroInterval { setting });
            }
        }
        if self.worker_threads == 0 {
            problems.push(ConfigProblem::ZeroWorkerThreads);
        }
        if self.event_capacity > MAX_EVENT_CAPACITY {
            problems.push(ConfigProblem::EventCapacityTooLarge {
                value: self.event_capacity,
            });
        }
        let choice = match (self.sqlite.take(), self.postgres.take()) {
            (None, None) => {
                problems.push(ConfigProblem::NoDatabase);
                None
            }
            (Some(_), Some(_)) => {
                problems.push(ConfigProblem::TwoDatabases);
                None
            }
            (Some(options), None) => {
                if options.busy_timeout > MAX_BUSY_TIMEOUT {
                    problems.push(ConfigProblem::BusyTimeoutTooLong {
                        value: options.busy_timeout,
                    });
                }
                Some(StoreChoice::Sqlite(options))
            }
            (None, Some(options)) => {
                if let Err(message) = crate::store::postgres::parse_config(&options) {
                    problems.push(ConfigProblem::InvalidPostgresUrl { message });
                }
                if !crate::store::postgres::valid_schema_name(&options.schema) {
                    problems.push(ConfigProblem::InvalidSchemaName {
                        name: options.schema.clone(),
                    });
                }
                Some(StoreChoice::Postgres(options))
            }
        };
        match choice {
            Some(choice) if problems.is_empty() => Ok(choice),
            _ => Err(Error::Config(problems)),
        }
    }

    /// Each queue's dispatcher settings and kinds, for the supervisor to
    /// start.
    fn queue_plans(&self) -> Vec<QueuePlan> {
        let mut names: Vec<&'static str> = self.registrations.iter().map(|r| r.queue).collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|queue| QueuePlan {
                queue,
                poll_interval: self
                    .queues
                    .get(queue)
                    .and_then(|q| q.poll_interval)
                    .unwrap_or(self.poll_interval),
                kinds: self
                    .registrations
                    .iter()
                    .filter(|r| r.queue == queue)
                    .map(|r| (r.kind, r.config.clone(), r.start))
                    .collect(),
            })
            .collect()
    }

    /// Validates the configuration, opens and migrates the database, puts
    /// back jobs left running by dead processes, starts the actors and
    /// returns the handle. Must run inside an actix system
    /// (`#[actix_web::main]`, `#[actix_rt::main]` or `actix_rt::System`).
    pub async fn start(mut self) -> Result<Errands> {
        let retain = self.retain_completed.is_some();
        let backend = match self.validate()? {
            StoreChoice::Sqlite(options) => {
                let store =
                    actix_rt::task::spawn_blocking(move || SqliteStore::open(&options, retain))
                        .await
                        .map_err(|_| Error::Closed)??;
                Backend::Sqlite(Arc::new(store))
            }
            StoreChoice::Postgres(options) => {
                let server_clock = options.server_clock.unwrap_or(!self.clock_given);
                let clock = server_clock.then(|| self.clock.clone());
                Backend::Postgres(Arc::new(PgStore::open(options, retain, clock).await?))
            }
        };
        let store = backend.store();
        let recovered = store.recover_orphans(self.clock.now_ms()).await?;
        if recovered > 0 {
            log::info!("errands: put {recovered} interrupted jobs back in the queue");
        }
        // The stored knobs (overrides, pauses, throttles) are in force from
        // the first claim.
        let controls = store.controls(None).await?;

        let shared = Arc::new(Engine::new(
            backend,
            self.clock.clone(),
            std::mem::take(&mut self.data),
            self.event_capacity,
            self.registrations
                .iter()
                .map(|r| (r.queue, r.kind))
                .collect(),
        ));

        if let Backend::Postgres(store) = &shared.backend {
            let engine = Arc::downgrade(&shared);
            store.on_wakeup(move |wakeup| {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                match wakeup {
                    Wakeup::Queue(_, due) if due > engine.clock.now_ms() => {
                        engine.signals.due_at(due)
                    }
                    Wakeup::Queue(queue, _) => engine.signals.queue_ready(queue),
                    Wakeup::All => engine.signals.wake_all(),
                }
            });
        }

        let retention = Retention {
            completed: self.retain_completed,
            dead: self.retain_dead,
        };
        // Pruned at start too, so a restart cleans up at once; then every
        // tenth of the retention (1 s to 60 s) by the supervisor.
        crate::actors::retention::prune(shared.clone(), retention).await?;

        let queues = self.queue_plans();
        let supervisor = tree::start(
            shared.clone(),
            queues,
            self.worker_threads,
            self.recovery_interval,
            retention,
            controls,
        );

        let kinds = self
            .registrations
            .iter()
            .map(|r| {
                (
                    r.kind,
                    KindInfo {
                        queue: r.queue,
                        max_attempts: r.config.max_attempts,
                    },
                )
            })
            .collect();
        Ok(Errands::new(shared, supervisor, kinds))
    }
}

/// The store `start()` opens.
enum StoreChoice {
    Sqlite(SqliteOptions),
    Postgres(PostgresOptions),
}
