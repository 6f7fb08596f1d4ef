//! A resumable job's saved progress: which steps finished (with their
//! outputs) and the cursor of each step in progress.
//!
//! Progress lives in memory during an attempt, shared by the handler's
//! [`JobContext`](crate::JobContext) and the worker running it, and is
//! written to the job's row (the `checkpoint` column) when a step finishes,
//! when the handler asks, inside `ctx.transaction`, and when the attempt
//! ends however it ends. Step names not used by the current code are kept
//! but ignored, so a deploy that renames steps does not break old jobs.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::codec;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Step {
    done: bool,
    output: Option<Vec<u8>>,
    cursor: Option<Vec<u8>>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Saved {
    steps: BTreeMap<String, Step>,
}

#[derive(Default)]
struct State {
    saved: Saved,
    /// Changed since last written.
    dirty: bool,
    /// The step whose closure is running, for `set_cursor`.
    current: Option<String>,
}

/// The progress of one attempt, shared between handler and worker.
#[derive(Default)]
pub(crate) struct Progress {
    state: Mutex<State>,
}

impl Progress {
    /// Progress read from a row's checkpoint. An unreadable checkpoint is
    /// dropped with a warning: the job starts over, which at-least-once
    /// semantics allow, rather than dying.
    pub(crate) fn from_checkpoint(id: i64, bytes: Option<&[u8]>) -> Progress {
        let saved = match bytes {
            None => Saved::default(),
            Some(bytes) => codec::decode::<Saved>(bytes).unwrap_or_else(|e| {
                log::warn!("errands: job {id}: ignoring unreadable checkpoint ({e})");
                Saved::default()
            }),
        };
        Progress {
            state: Mutex::new(State {
                saved,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler may poison the lock; the progress is still
        // the best record of what finished.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The saved output of `name` if it finished.
    pub(crate) fn finished_output(&self, name: &str) -> Option<Option<Vec<u8>>> {
        let state = self.lock();
        state
            .saved
            .steps
            .get(name)
            .filter(|s| s.done)
            .map(|s| s.output.clone())
    }

    /// The saved cursor of `name`, if any.
    pub(crate) fn cursor(&self, name: &str) -> Option<Vec<u8>> {
        self.lock()
            .saved
            .steps
            .get(name)
            .and_then(|s| s.cursor.clone())
    }

    /// Marks `name` as the running step.
    pub(crate) fn begin(&self, name: &str) {
        self.lock().current = Some(name.to_string());
    }

    /// Records `name` as finished with `output`.
    pub(crate) fn finish(&self, name: &str, output: Option<Vec<u8>>) {
        let mut state = self.lock();
        state.current = None;
        let step = state.saved.steps.entry(name.to_string()).or_default();
        step.done = true;
        step.output = output;
        step.cursor = None;
        state.dirty = true;
    }

    /// Leaves the running step without finishing it (it failed).
    pub(crate) fn abandon(&self) {
        self.lock().current = None;
    }

    /// Records the running step's cursor. Errors if no step is running.
    pub(crate) fn set_cursor(&self, cursor: Vec<u8>) -> Result<(), String> {
        let mut state = self.lock();
        let Some(name) = state.current.clone() else {
            return Err("set_cursor called outside ctx.step_cursor".to_string());
        };
        state.saved.steps.entry(name).or_default().cursor = Some(cursor);
        state.dirty = true;
        Ok(())
    }

    /// The encoded progress if it changed since last taken, marking it
    /// clean. Call [`Progress::mark_dirty`] if writing it then fails.
    pub(crate) fn take_if_dirty(&self) -> Option<Vec<u8>> {
        let mut state = self.lock();
        if !state.dirty {
            return None;
        }
        state.dirty = false;
        match codec::encode(&state.saved) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                log::error!("errands: could not encode job progress: {e}");
                None
            }
        }
    }

    /// The encoded progress, changed or not, marking it clean.
    pub(crate) fn take(&self) -> Vec<u8> {
        let mut state = self.lock();
        state.dirty = false;
        codec::encode(&state.saved).unwrap_or_default()
    }

    /// Writing the progress failed: it must be written again later.
    pub(crate) fn mark_dirty(&self) {
        self.lock().dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_cursors_survive_a_round_trip() {
        let p = Progress::default();
        p.begin("a");
        p.finish("a", Some(vec![1, 2]));
        p.begin("b");
        p.set_cursor(vec![9]).unwrap();
        let bytes = p.take_if_dirty().unwrap();
        assert!(p.take_if_dirty().is_none(), "clean after take");

        let back = Progress::from_checkpoint(1, Some(&bytes));
        assert_eq!(back.finished_output("a"), Some(Some(vec![1, 2])));
        assert_eq!(back.finished_output("b"), None);
        assert_eq!(back.cursor("b"), Some(vec![9]));
        assert!(back.set_cursor(vec![1]).is_err(), "no step running");
        let garbage = Progress::from_checkpoint(1, Some(&[7, 7, 7]));
        assert_eq!(garbage.finished_output("a"), None);
    }
}
