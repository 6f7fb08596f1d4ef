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
    /// Progress as the handler has made it.
    saved: Saved,
    /// Progress as last known to be in the database (loaded at the start,
    /// or written by a checkpoint or transaction that committed). A
    /// transaction that rolls back goes back to this.
    committed: Saved,
    /// `saved` changed since last taken for writing.
    dirty: bool,
    /// Steps whose closure is running now.
    running: Vec<String>,
}

/// Progress taken for writing: the bytes to store, and what they encode
/// (to record as committed once the write commits).
pub(crate) struct Snapshot {
    pub bytes: Vec<u8>,
    saved: Saved,
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
                committed: saved.clone(),
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

    /// Marks `name` as running. Errors if a step of that name is already
    /// running (two concurrent steps with one name would share a cursor).
    pub(crate) fn begin(&self, name: &str) -> Result<(), String> {
        let mut state = self.lock();
        if state.running.iter().any(|n| n == name) {
            return Err(format!(
                "step `{name}` is already running; concurrent steps need distinct names"
            ));
        }
        state.running.push(name.to_string());
        Ok(())
    }

    /// Records `name` as finished with `output`.
    pub(crate) fn finish(&self, name: &str, output: Option<Vec<u8>>) {
        let mut state = self.lock();
        state.running.retain(|n| n != name);
        let step = state.saved.steps.entry(name.to_string()).or_default();
        step.done = true;
        step.output = output;
        step.cursor = None;
        state.dirty = true;
    }

    /// Leaves the running step `name` without finishing it (it failed).
    pub(crate) fn abandon(&self, name: &str) {
        self.lock().running.retain(|n| n != name);
    }

    /// Records the cursor of the running step `name`. Errors if that step
    /// is not running (its [`Cursor`](crate::Cursor) outlived the step).
    pub(crate) fn set_cursor(&self, name: &str, cursor: Vec<u8>) -> Result<(), String> {
        let mut state = self.lock();
        if !state.running.iter().any(|n| n == name) {
            return Err(format!(
                "the cursor of step `{name}` was set after the step ended"
            ));
        }
        state
            .saved
            .steps
            .entry(name.to_string())
            .or_default()
            .cursor = Some(cursor);
        state.dirty = true;
        Ok(())
    }

    /// The progress to write if it changed since last taken, marking it
    /// clean. Call [`Progress::mark_dirty`] if writing it then fails, and
    /// [`Progress::committed`] once it commits.
    pub(crate) fn take_if_dirty(&self) -> Option<Snapshot> {
        let mut state = self.lock();
        if !state.dirty {
            return None;
        }
        state.dirty = false;
        snapshot(&state.saved)
    }

    /// The progress to write, changed or not, marking it clean.
    pub(crate) fn take(&self) -> Option<Snapshot> {
        let mut state = self.lock();
        state.dirty = false;
        snapshot(&state.saved)
    }

    /// `snapshot` is now in the database.
    pub(crate) fn committed(&self, snapshot: Snapshot) {
        self.lock().committed = snapshot.saved;
    }

    /// Writing the progress failed: it must be written again later.
    pub(crate) fn mark_dirty(&self) {
        self.lock().dirty = true;
    }

    /// A transaction that would have saved the progress rolled back: forget
    /// everything not yet committed (cursors set for that transaction
    /// included), so no later write can claim work the rollback undid.
    pub(crate) fn roll_back(&self) {
        let mut state = self.lock();
        state.saved = state.committed.clone();
        state.dirty = false;
    }
}

fn snapshot(saved: &Saved) -> Option<Snapshot> {
    match codec::encode(saved) {
        Ok(bytes) => Some(Snapshot {
            bytes,
            saved: saved.clone(),
        }),
        Err(e) => {
            log::error!("errands: could not encode job progress: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_cursors_survive_a_round_trip() {
        let p = Progress::default();
        p.begin("a").unwrap();
        p.finish("a", Some(vec![1, 2]));
        p.begin("b").unwrap();
        p.set_cursor("b", vec![9]).unwrap();
        let bytes = p.take_if_dirty().unwrap().bytes;
        assert!(p.take_if_dirty().is_none(), "clean after take");

        let back = Progress::from_checkpoint(1, Some(&bytes));
        assert_eq!(back.finished_output("a"), Some(Some(vec![1, 2])));
        assert_eq!(back.finished_output("b"), None);
        assert_eq!(back.cursor("b"), Some(vec![9]));
        assert!(back.set_cursor("b", vec![1]).is_err(), "step b not running");
        let garbage = Progress::from_checkpoint(1, Some(&[7, 7, 7]));
        assert_eq!(garbage.finished_output("a"), None);
    }

    #[test]
    fn a_rollback_forgets_what_was_not_committed() {
        let p = Progress::default();
        p.begin("a").unwrap();
        p.set_cursor("a", vec![1]).unwrap();
        let first = p.take().unwrap();
        p.committed(first);
        p.set_cursor("a", vec![2]).unwrap();
        let _second = p.take().unwrap(); // its transaction rolls back
        p.roll_back();
        assert_eq!(p.cursor("a"), Some(vec![1]));
        assert!(p.take_if_dirty().is_none());
    }

    #[test]
    fn concurrent_steps_keep_their_own_cursors() {
        let p = Progress::default();
        p.begin("a").unwrap();
        p.begin("b").unwrap();
        assert!(p.begin("a").is_err(), "one name runs once at a time");
        p.set_cursor("a", vec![7]).unwrap();
        p.set_cursor("b", vec![8]).unwrap();
        assert_eq!(p.cursor("a"), Some(vec![7]));
        assert_eq!(p.cursor("b"), Some(vec![8]));
    }
}
