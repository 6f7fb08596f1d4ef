//! When writes fail: a full database (outcomes go one request at a time,
//! completions first, so one outcome that cannot fit holds back nothing
//! else) and any other failure (keep the outcomes, pause, try again with a
//! longer pause each time; give up only when the store is gone for good or
//! the shutdown deadline passed).

use std::time::Duration;

use actix::prelude::*;

use super::report;
use super::slots::PendingOutcome;
use super::Dispatcher;
use crate::store::Outcome;

impl Dispatcher {
    /// After the database was found full: one request at a time, without
    /// claims, completions first (their deletes free space), then each other
    /// outcome on its own, so that one outcome that cannot fit holds back
    /// nothing else. SQLite may undo a whole transaction on `SQLITE_FULL`,
    /// not just the statement, so the split has to happen here.
    pub(super) fn send_isolated(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.in_flight > 0 || self.pending.is_empty() {
            // Marks alone only once due (a request without them would
            // carry nothing, and be sent again at its answer).
            if !self.marks.is_empty() && self.in_flight == 0 {
                if !self.marks_due {
                    self.arm_mark_timer(ctx);
                    return false;
                }
                self.send(Vec::new(), Vec::new(), ctx);
                return true;
            }
            if self.pending.is_empty() && self.in_flight == 0 {
                self.isolating = false;
            }
            return false;
        }
        let completions: Vec<usize> = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.finished.outcome, Outcome::Completed))
            .map(|(i, _)| i)
            .collect();
        let outcomes = if completions.is_empty() {
            vec![self.pending.remove(0)]
        } else {
            report::take_indexes(&mut self.pending, &completions)
        };
        self.send(outcomes, Vec::new(), ctx);
        true
    }

    /// Outcomes that could not be written: keep them (first, in order) and
    /// try again after a pause, longer each time. Given up instead when the
    /// store is gone for good, or at shutdown once the deadline passed.
    pub(super) fn retry_later(
        &mut self,
        outcomes: Vec<PendingOutcome>,
        why: &str,
        store_gone: bool,
        ctx: &mut Context<Self>,
    ) {
        let deadline_passed = self.draining.as_ref().is_some_and(|d| d.deadline_passed);
        if store_gone || deadline_passed {
            // Start marks go too: those jobs read as claimed, and the next
            // start gives them their attempt back.
            self.marks.clear();
            let ids: Vec<i64> = outcomes.iter().map(|p| p.finished.id).collect();
            log::error!(
                "errands: queue `{}`: giving up writing the outcomes of jobs {ids:?} ({why}); \
                 they stay running under this instance until the next start recovers them",
                self.queue
            );
            self.finish_drain_if_idle();
            return;
        }
        let pause = self.write_backoff.map_or(Duration::from_millis(50), |d| {
            (d * 2).min(Duration::from_secs(5))
        });
        log::error!(
            "errands: queue `{}`: could not write outcomes or claim jobs ({why}); retrying in {pause:?}",
            self.queue
        );
        self.write_backoff = Some(pause);
        let later = std::mem::take(&mut self.pending);
        self.pending = outcomes;
        self.pending.extend(later);
        if !self.paused {
            self.paused = true;
            ctx.run_later(pause, |act, ctx| {
                act.paused = false;
                act.pump(ctx);
            });
        }
    }
}
