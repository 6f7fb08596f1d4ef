//! How a running attempt learns it was cancelled.
//!
//! One per attempt, shared by the worker (which sets it when the
//! dispatcher passes on a cancel) and the handler's [`JobContext`](crate::JobContext)
//! (which reads it: `ctx.is_cancelled()`, or awaits it: `ctx.cancelled()`).
//! Setting it wakes every waiter; a handler that does not stop within the
//! kind's grace period is aborted by the worker.

use std::sync::OnceLock;

use tokio::sync::Notify;

/// The cancellation of one attempt.
#[derive(Default)]
pub(crate) struct CancelSignal {
    reason: OnceLock<String>,
    notify: Notify,
}

impl CancelSignal {
    /// Cancels with `reason`; answers `false` if it was cancelled already.
    pub(crate) fn cancel(&self, reason: String) -> bool {
        let first = self.reason.set(reason).is_ok();
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    /// The reason, once cancelled.
    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    /// Resolves once cancelled (at once if it already is).
    pub(crate) async fn cancelled(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a cancel between the two is not
        // missed.
        notified.as_mut().enable();
        if self.reason.get().is_some() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[actix_rt::test]
    async fn waiters_wake_once_and_the_first_reason_stays() {
        let signal = Arc::new(CancelSignal::default());
        let waiter = {
            let signal = signal.clone();
            actix_rt::spawn(async move { signal.cancelled().await })
        };
        actix_rt::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(signal.cancel("first".into()));
        assert!(!signal.cancel("second".into()));
        waiter.await.unwrap();
        assert_eq!(signal.reason(), Some("first"));
        signal.cancelled().await; // already cancelled: at once
    }
}
