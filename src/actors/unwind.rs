//! Turning a panicking handler into a failed attempt.
//!
//! A panic that escaped into an actix handler would kill the actor (and
//! actix's Supervisor would not bring it back), so each attempt's future is
//! polled inside `catch_unwind`: the panic ends that attempt, with its
//! message as the error, and nothing else.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future that resolves to `Err(message)` if the inner future panics.
pub(crate) struct CatchUnwind<F: Future + Unpin>(pub F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(panic_message(payload))),
        }
    }
}

pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string value".to_string()
    };
    format!("panicked: {text}")
}
