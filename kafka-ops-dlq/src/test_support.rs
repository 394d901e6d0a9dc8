//! What the unit tests of several modules share.

use kafka_ops_core::Record;
use kafka_ops_core::handler::{Handler, HandlerError, Outcome, handler_fn};

/// A handler that processes records whose value is `fine` and fails the others with `error()`.
pub(crate) fn fine_or(error: fn() -> HandlerError) -> impl Handler {
    handler_fn(move |record: &Record<'_>| {
        let fine = record.value() == Some(&b"fine"[..]);
        async move {
            if fine {
                Ok(Outcome::Processed)
            } else {
                Err(error())
            }
        }
    })
}
