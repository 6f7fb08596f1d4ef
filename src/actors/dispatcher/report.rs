//! What the dispatcher says about outcomes once they are committed: an
//! event for subscribers and a log line for failures.

use crate::clock::ms_to_system_time;
use crate::events::Event;
use crate::store::Outcome;

use super::slots::PendingOutcome;

/// The event for a committed outcome.
pub(super) fn event(p: &PendingOutcome) -> Event {
    let (id, kind, attempt) = (p.finished.id, p.kind, p.finished.attempt);
    match &p.finished.outcome {
        Outcome::Completed => Event::Completed { id, kind, attempt },
        Outcome::Retry { run_at, error } => Event::Retrying {
            id,
            kind,
            attempt,
            error: error.clone(),
            run_at: ms_to_system_time(*run_at),
        },
        Outcome::Dead { error } => Event::Dead {
            id,
            kind,
            attempt,
            error: error.clone(),
        },
        Outcome::Released { started, .. } => Event::Released {
            id,
            kind,
            started: *started,
        },
        Outcome::Cancelled { reason } => Event::Cancelled {
            id,
            kind,
            attempt,
            reason: reason.clone(),
        },
        Outcome::Snooze { run_at } => Event::Snoozed {
            id,
            kind,
            attempt,
            run_at: ms_to_system_time(*run_at),
        },
    }
}

/// Removes the outcomes at `indexes` from `outcomes` and returns them, in order.
pub(super) fn take_indexes(
    outcomes: &mut Vec<PendingOutcome>,
    indexes: &[usize],
) -> Vec<PendingOutcome> {
    if indexes.is_empty() {
        return Vec::new();
    }
    let mut taken = Vec::with_capacity(indexes.len());
    let mut kept = Vec::with_capacity(outcomes.len() - indexes.len());
    for (i, outcome) in outcomes.drain(..).enumerate() {
        if indexes.contains(&i) {
            taken.push(outcome);
        } else {
            kept.push(outcome);
        }
    }
    *outcomes = kept;
    taken
}

/// Failed attempts at `warn`, dead jobs at `error`, once committed. The
/// macros check the level first: nothing is formatted when it is off.
pub(super) fn log(queue: &str, p: &PendingOutcome) {
    let (id, kind, attempt) = (p.finished.id, p.kind, p.finished.attempt);
    match &p.finished.outcome {
        Outcome::Retry { run_at, error } => log::warn!(
            "errands: job {id} (kind `{kind}`, queue `{queue}`) failed attempt {attempt} of {}: {error}; next attempt at {}",
            p.max_attempts,
            crate::clock::rfc3339(*run_at)
        ),
        Outcome::Dead { error } => log::error!(
            "errands: job {id} (kind `{kind}`, queue `{queue}`) is dead after attempt {attempt} of {}: {error}",
            p.max_attempts
        ),
        _ => {}
    }
}
