//! # errands
//!
//! Durable background jobs for actix and actix-web. A handler hands off
//! work and returns; errands keeps the job on disk (one SQLite file, nothing
//! to install), runs it on typed worker actors with per-kind concurrency
//! limits, retries failures with backoff, survives `kill -9`, and tells you
//! what happened. PostgreSQL ([`Builder::postgres`]) serves several hosts
//! sharing one queue through the same API.
//!
//! ```no_run
//! use errands::{Errands, Job, JobConfig, JobContext, JobResult};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail { to: String }
//!
//! impl Job for SendEmail {
//!     const KIND: &'static str = "send_email";
//!     async fn run(self, ctx: JobContext) -> JobResult {
//!         println!("sending to {} (attempt {})", self.to, ctx.attempt());
//!         Ok(())
//!     }
//! }
//!
//! #[actix_rt::main]
//! async fn main() -> errands::Result<()> {
//!     let errands = Errands::builder()
//!         .sqlite("jobs.db")
//!         .register_with::<SendEmail>(JobConfig::new().concurrency(8))
//!         .start()
//!         .await?;
//!     let id = errands.enqueue(SendEmail { to: "a@example.com".into() }).await?;
//!     errands.enqueue_in(SendEmail { to: "b@example.com".into() }, Duration::from_secs(60)).await?;
//!     println!("enqueued job {id}");
//!     errands.shutdown(Duration::from_secs(10)).await
//! }
//! ```
//!
//! While it runs, operators turn the knobs: [`Errands::set_concurrency`],
//! [`Errands::pause`] and [`Errands::resume`], [`Errands::cancel`] (a
//! running handler sees [`JobContext::cancelled`]), and
//! [`Errands::controls`] to see what is in force; handlers can
//! [`JobError::snooze`] or [`JobError::throttle`] their kind, and
//! [`JobConfig::rate_limit`] and [`JobConfig::adaptive`] shape a kind's pace.
//!
//! See the README for guarantees (at-least-once, crash recovery, what
//! `synchronous` promises) and the design.

#![warn(missing_docs)]

mod actors;
mod builder;
mod cancel_signal;
mod client;
mod clock;
mod codec;
mod config;
mod config_problem;
mod context;
mod control;
mod engine;
mod error;
mod events;
mod inspect;
mod job;
mod kind_controls;
mod progress;
mod signals;
mod steps;
mod store;
mod store_error;
mod transactional;

pub use builder::{Builder, QueueConfig};
pub use client::{EnqueueOptions, Errands};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Backoff, JobConfig, DEFAULT_CANCEL_GRACE, MIN_DEFAULT_PREFETCH};
pub use config_problem::{ConfigProblem, MAX_BUSY_TIMEOUT, MAX_CONCURRENCY, MAX_EVENT_CAPACITY};
pub use context::JobContext;
pub use control::Cancellation;
pub use error::{Error, Result};
pub use events::{Event, Events, EventsError};
pub use inspect::{Counts, JobInfo, JobState, JobStatus};
pub use job::{Job, JobError, JobResult};
pub use kind_controls::KindControls;
pub use steps::Cursor;
pub use store::postgres::{PostgresOptions, DEFAULT_PG_SCHEMA};
pub use store::sqlite::{SqliteOptions, Synchronous};
pub use store_error::{StoreError, StoreErrorKind};

/// The rusqlite version errands uses, for [`JobContext::transaction`].
pub use rusqlite;
/// The rustls version errands uses, for [`PostgresOptions::tls`].
pub use rustls;
/// The tokio-postgres version errands uses, for
/// [`JobContext::pg_transaction`] and [`PostgresOptions::from_config`].
pub use tokio_postgres;
/// The public certificate authorities, for building a
/// [`PostgresOptions::tls`] configuration.
pub use webpki_roots;

/// Every Rust block in the README is compiled (and, unless marked `no_run`,
/// run) by `cargo test`, so the code a newcomer pastes works as shown.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
