//! How to reach the PostgreSQL server, and where errands keeps its tables.

use std::time::Duration;

/// The default PostgreSQL schema errands creates its tables in.
pub const DEFAULT_PG_SCHEMA: &str = "errands";

/// Options for the PostgreSQL store.
///
/// ```
/// use errands::PostgresOptions;
/// let options = PostgresOptions::new("postgres://app@db.internal/app")
///     .schema("jobs")
///     .pool_size(16);
/// assert_eq!(options.schema_name(), "jobs");
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub(crate) source: ConfigSource,
    pub(crate) schema: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub(crate) server_clock: Option<bool>,
}

/// Where the connection settings come from.
#[derive(Debug, Clone)]
pub(crate) enum ConfigSource {
    /// A connection string (`postgres://…` or `host=… user=…`), parsed at start.
    Url(String),
    /// The application's own, already parsed configuration.
    Config(Box<tokio_postgres::Config>),
}

impl PostgresOptions {
    /// A server given by a connection string: a URL
    /// (`postgres://user:password@host:5432/database`) or key-value pairs
    /// (`host=/run/postgresql dbname=app`). Parsed at `start()`; a string
    /// that does not parse is a [`ConfigProblem`](crate::ConfigProblem).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_source(ConfigSource::Url(url.into()))
    }

    /// A server given by the application's own `tokio_postgres::Config`
    /// (the one its pool was built from, say).
    pub fn from_config(config: tokio_postgres::Config) -> Self {
        Self::with_source(ConfigSource::Config(Box::new(config)))
    }

    fn with_source(source: ConfigSource) -> Self {
        PostgresOptions {
            source,
            schema: DEFAULT_PG_SCHEMA.to_string(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            tls: None,
            server_clock: None,
        }
    }

    /// The PostgreSQL schema for errands' tables (created if missing).
    /// Default [`DEFAULT_PG_SCHEMA`]. Instances sharing a queue must use
    /// the same schema; a different schema is a separate set of queues.
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = name.into();
        self
    }

    /// Connections in errands' pool (enqueues, claims, reads). Default 16:
    /// each queue's dispatcher keeps up to four rounds in flight, four
    /// enqueue committers and reads share the rest. Each instance holds one
    /// more for its liveness lock and `LISTEN`. A call that finds none free
    /// within the connect timeout is an `Unavailable` error.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long `enqueue` and every other call waits for a connection
    /// before answering an error (the server is down or unreachable).
    /// Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects with TLS (rustls), verifying the server with `config`
    /// (for a provider's own CA, load it into the config's root store). The
    /// connection string's `sslmode` still applies: `prefer` (the default)
    /// uses TLS when the server offers it, `require` refuses a server that
    /// does not. Without this, errands connects without TLS.
    ///
    /// ```
    /// use errands::{rustls, PostgresOptions};
    /// let mut roots = rustls::RootCertStore::empty();
    /// roots.extend(errands::webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    /// let config = rustls::ClientConfig::builder_with_provider(
    ///     rustls::crypto::ring::default_provider().into(),
    /// )
    /// .with_safe_default_protocol_versions()
    /// .unwrap()
    /// .with_root_certificates(roots)
    /// .with_no_client_auth();
    /// let options = PostgresOptions::new("postgres://app@db.example.com/app?sslmode=require")
    ///     .tls(config);
    /// ```
    pub fn tls(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(std::sync::Arc::new(config));
        self
    }

    /// Connects with TLS, verifying the server against the public
    /// certificate authorities (Mozilla's list, as browsers do): what
    /// hosted PostgreSQL services with publicly signed certificates need.
    pub fn tls_public_roots(self) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        self.tls(config)
    }

    /// Whether what is due is decided by the server's clock (default: yes,
    /// unless the builder was given a clock of its own, such as a
    /// [`ManualClock`](crate::ManualClock) in tests). Hosts' clocks drift;
    /// the server's is one clock for all of them. Each instance measures
    /// how far its clock is from the server's at start and at every
    /// recovery pass, and translates: a job enqueued "in 60 s" on a host
    /// whose clock is 2 s fast still comes due 60 s later for every host.
    pub fn server_clock(mut self, yes: bool) -> Self {
        self.server_clock = Some(yes);
        self
    }

    /// The schema errands uses.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }
}

/// Whether `name` is a plain lower-case identifier PostgreSQL takes
/// unquoted (errands writes it into SQL, so nothing else is accepted).
pub(crate) fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
        && !name.starts_with("pg_")
}

/// Host, port and database of a configuration, for messages (never the
/// password).
pub(crate) fn target(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("(default)");
    format!("{}:{port}/{db}", hosts.join(","))
}

/// Parses the connection settings (a bad string is a configuration problem).
pub(crate) fn parse_config(options: &PostgresOptions) -> Result<tokio_postgres::Config, String> {
    let mut config = match &options.source {
        ConfigSource::Url(url) => url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| e.to_string())?,
        ConfigSource::Config(config) => (**config).clone(),
    };
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("errands");
    }
    // Statements are prepared once per connection and, after a few runs,
    // PostgreSQL plans them once (a generic plan): the claim's is the index
    // scan in `run_at, id` order it needs. Forcing a plan per run
    // (`plan_cache_mode=force_custom_plan`, tried against a feared scan)
    // cost the drain its planning time: 0.56x raw with it, 0.63-0.73x without.
    Ok(config)
}
