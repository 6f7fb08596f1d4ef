//! What follows an attempt: done, retry after the backoff, dead, run again
//! later without counting (snooze, throttle), or cancelled. Plain
//! functions of the attempt's result, so the worker's task stays about
//! running the handler.

use std::time::Duration;

use crate::clock::ms_after;
use crate::config::JobConfig;
use crate::engine::Engine;
use crate::job::{Job, JobResult};
use crate::store::{ClaimedJob, Outcome};

/// How an attempt's handler ended, before errands decides what follows.
pub(super) enum Ran {
    /// The payload did not decode into `J`; the handler never ran.
    Undecodable(String),
    /// The handler's result, or the panic or timeout that ended it.
    Finished(Result<JobResult, Failure>),
}

/// What ended an attempt other than its handler's result.
pub(super) enum Failure {
    Panicked(String),
    TimedOut(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Panicked(message) => f.write_str(message),
            Failure::TimedOut(limit) => write!(f, "timed out after {limit:?}"),
        }
    }
}

/// The outcome of an attempt: done, retry after the backoff, dead, run
/// again later without counting (snooze, throttle), or cancelled (a
/// cancelled attempt that did not complete is never retried).
pub(super) fn decide<J: Job>(
    job: &ClaimedJob,
    config: &JobConfig,
    shared: &Engine,
    ran: Ran,
    cancelled: Option<String>,
) -> Outcome {
    if let Some(reason) = cancelled {
        if !matches!(ran, Ran::Finished(Ok(Ok(())))) {
            return Outcome::Cancelled { reason };
        }
    }
    let now = shared.clock.now_ms();
    if let Ran::Finished(Ok(Err(e))) = &ran {
        if let Some(later) = e.later() {
            return Outcome::Snooze {
                run_at: later.at(now).max(now),
            };
        }
    }
    match ran {
        Ran::Undecodable(e) => Outcome::Dead {
            error: bounded(format!(
                "payload could not be decoded as `{}`: {e}",
                J::KIND
            )),
        },
        Ran::Finished(Ok(Ok(()))) => Outcome::Completed,
        Ran::Finished(Ok(Err(e))) if e.is_permanent() => Outcome::Dead {
            error: bounded(e.message().to_string()),
        },
        Ran::Finished(Ok(Err(e))) => failed(job, config, shared, e.message().to_string()),
        Ran::Finished(Err(panic_or_timeout)) => {
            failed(job, config, shared, panic_or_timeout.to_string())
        }
    }
}

/// A failed attempt: retry after the backoff, or dead if it was the last.
fn failed(job: &ClaimedJob, config: &JobConfig, shared: &Engine, error: String) -> Outcome {
    let error = bounded(error);
    if job.attempt >= job.max_attempts {
        Outcome::Dead { error }
    } else {
        let delay = config.backoff.delay(job.attempt);
        Outcome::Retry {
            run_at: ms_after(shared.clock.now_ms(), delay),
            error,
        }
    }
}

/// The longest error message stored with a job. Errors are for people;
/// a megabyte of them in every retried row would bloat the table the
/// dispatchers scan (and, on a full disk, keep the outcome from fitting).
pub(crate) const MAX_ERROR_BYTES: usize = 8 * 1024;

/// `error`, cut at [`MAX_ERROR_BYTES`] on a character boundary and marked.
fn bounded(mut error: String) -> String {
    if error.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        let dropped = error.len() - cut;
        error.truncate(cut);
        error.push_str(&format!("… ({dropped} more bytes not stored)"));
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("short".into()), "short");
        let long = "é".repeat(MAX_ERROR_BYTES); // two bytes each
        let cut = bounded(long);
        assert!(cut.starts_with(&"é".repeat(MAX_ERROR_BYTES / 2)));
        assert!(cut.ends_with(&format!("({} more bytes not stored)", MAX_ERROR_BYTES)));
    }
}
