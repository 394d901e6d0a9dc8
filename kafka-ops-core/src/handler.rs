//! The record handler abstraction and how layers wrap it.
//!
//! A [`Handler`] processes one record. Cross-cutting behaviour (skip duplicates, retry with
//! backoff, break the circuit, dead-letter what is given up on) comes from [`Layer`]s that wrap a
//! handler in another handler, the way tower layers wrap services:
//!
//! ```
//! use kafka_ops_core::handler::{handler_fn, Handler, HandlerBuilder, HandlerError, Layer, Outcome};
//! use kafka_ops_core::{Offset, Record};
//! use async_trait::async_trait;
//!
//! /// A layer that turns permanent failures into skips (a stand-in for a DLQ layer).
//! struct SkipPermanent;
//! struct SkipPermanentHandler<H>(H);
//!
//! impl<H: Handler> Layer<H> for SkipPermanent {
//!     type Handler = SkipPermanentHandler<H>;
//!     fn layer(&self, inner: H) -> Self::Handler { SkipPermanentHandler(inner) }
//! }
//!
//! #[async_trait]
//! impl<H: Handler> Handler for SkipPermanentHandler<H> {
//!     async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
//!         match self.0.handle(record).await {
//!             Err(e) if !e.class().is_retryable() => Ok(Outcome::Skipped),
//!             other => other,
//!         }
//!     }
//! }
//!
//! let handler = HandlerBuilder::new()
//!     .layer(SkipPermanent)
//!     .handler(handler_fn(|record: &Record<'_>| {
//!         let valid = record.value_str().is_ok();
//!         async move {
//!             if valid { Ok(Outcome::Processed) } else { Err(HandlerError::permanent("not UTF-8")) }
//!         }
//!     }));
//!
//! let bad = Record::new("t", 0, Offset::ZERO).with_value(vec![0xff]);
//! let outcome = tokio::runtime::Runtime::new().unwrap().block_on(handler.handle(&bad));
//! assert_eq!(outcome.unwrap(), Outcome::Skipped);
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::class::{BoxError, ErrorClass};
use crate::record::Record;
use crate::types::{Offset, Timestamp, TopicPartition};

/// What happened to a record that was handled without error. The driver commits past a record
/// whatever its outcome; the outcome feeds counters and logs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The record was processed.
    #[default]
    Processed,
    /// The record was a duplicate of one already processed.
    Duplicate,
    /// The record was handed to a retry topic.
    Retried,
    /// The record was written to a dead-letter topic.
    DeadLettered,
    /// The record was deliberately skipped.
    Skipped,
}

impl Outcome {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Duplicate => "duplicate",
            Outcome::Retried => "retried",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Skipped => "skipped",
        }
    }
}

/// What the layer that gave up on a record wants done with it.
///
/// Layers compose through this: a retry policy decides, a dead-letter layer outside it routes,
/// and the driver honours what reaches it. [`Disposition::Undecided`] leaves the choice to the
/// outer layers, which decide from the error's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Disposition {
    /// No decision: outer layers decide from the error class. The driver stops.
    #[default]
    Undecided,
    /// Hand the record to a non-blocking retry tier. The driver stops if nothing did.
    RetryLater,
    /// Route the record to the dead-letter topic now. The driver stops if nothing did.
    DeadLetter,
    /// Skip the record: the driver commits past it and counts it skipped.
    Skip,
    /// Stop the consumer without committing past the record.
    Stop,
    /// Run the record again no earlier than this time. The driver keeps the record (it stays
    /// uncommitted) and, with per-partition ordering, holds the rest of its partition behind it;
    /// other partitions go on, and the poll loop neither sleeps nor spins meanwhile.
    RedeliverAt(Timestamp),
}

/// Why a handler failed: the cause, its class, what should happen next, and the retry history
/// the layers recorded.
pub struct HandlerError {
    class: ErrorClass,
    source: BoxError,
    disposition: Disposition,
    attempts: u32,
    first_failed_at: Option<Timestamp>,
    last_failed_at: Option<Timestamp>,
}

impl HandlerError {
    /// An error of the given class.
    pub fn new(class: ErrorClass, source: impl Into<BoxError>) -> Self {
        HandlerError {
            class,
            source: source.into(),
            disposition: Disposition::Undecided,
            attempts: 1,
            first_failed_at: None,
            last_failed_at: None,
        }
    }

    /// A failure worth retrying.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorClass::Transient, source)
    }

    /// A failure that will repeat for this record.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorClass::Permanent, source)
    }

    /// A failure after which the consumer must stop.
    pub fn fatal(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorClass::Fatal, source)
    }

    /// The class.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The same error with another class (for layers that reclassify).
    pub fn with_class(mut self, class: ErrorClass) -> Self {
        self.class = class;
        self
    }

    /// What should happen to the record.
    pub fn disposition(&self) -> Disposition {
        self.disposition
    }

    /// The same error with a decision about the record.
    pub fn with_disposition(mut self, disposition: Disposition) -> Self {
        self.disposition = disposition;
        self
    }

    /// How many attempts were made before this error was returned (1 unless a retry layer said so).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Records the number of attempts made.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// When the first and the last failed attempts happened, when a layer recorded them.
    pub fn failure_times(&self) -> (Option<Timestamp>, Option<Timestamp>) {
        (self.first_failed_at, self.last_failed_at)
    }

    /// Records when the first and last failed attempts happened.
    pub fn with_failure_times(mut self, first: Timestamp, last: Timestamp) -> Self {
        self.first_failed_at = Some(first);
        self.last_failed_at = Some(last);
        self
    }

    /// The underlying error.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The underlying error, if it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.source.downcast_ref::<T>()
    }

    /// The underlying error, owned.
    pub fn into_cause(self) -> BoxError {
        self.source
    }

    /// The messages of the cause chain, outermost first, at most `limit` of them.
    pub fn cause_chain(&self, limit: usize) -> Vec<String> {
        let mut chain = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*self.source);
        while let Some(error) = next {
            if chain.len() == limit {
                break;
            }
            chain.push(error.to_string());
            next = error.source();
        }
        chain
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("class", &self.class)
            .field("source", &self.source)
            .field("disposition", &self.disposition)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.class, self.source)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Processes one record.
///
/// Return `Ok` when the record is done (processed, skipped, dead-lettered): the driver may commit
/// past it. Return `Err` when it is not: unless a layer recovers, the driver stops without
/// committing past the record, so nothing is lost.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles `record`.
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError>;
}

#[async_trait]
impl<H: Handler + ?Sized> Handler for Arc<H> {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        (**self).handle(record).await
    }
}

#[async_trait]
impl<H: Handler + ?Sized> Handler for Box<H> {
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        (**self).handle(record).await
    }
}

/// The record a consumer stopped on: its handler failed, nothing in the stack recovered the
/// failure, so the consumer committed everything before it and stopped (a poison record, until
/// someone dead-letters or fixes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedOn {
    /// The consumer group.
    pub group: String,
    /// Where the record is.
    pub partition: TopicPartition,
    /// Its offset (the group's committed offset stays at it).
    pub offset: Offset,
    /// The failure's class.
    pub class: ErrorClass,
    /// The failure's message.
    pub error: String,
}

/// What layers and operators may ask of the consumer they run in: implemented by the driver's
/// `kafka::driver::DriverHandle` (feature `kafka`); mock it in unit tests.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait ConsumerControl: Send + Sync {
    /// Stop fetching on every assigned partition; the group membership stays alive.
    fn pause(&self);
    /// Resume fetching after [`pause`](Self::pause).
    fn resume(&self);
    /// Whether fetching is paused.
    fn is_paused(&self) -> bool;
    /// Stop the consumer gracefully (finish in-flight records, commit, leave the group).
    fn shutdown(&self);
    /// The record the consumer stopped on, while its last run ended on an unrecovered handler
    /// failure (cleared when it runs again).
    fn stopped_on(&self) -> Option<StoppedOn> {
        None
    }
}

/// A boxed handler, for stacks assembled at run time.
pub type BoxHandler = Box<dyn Handler>;

/// The message a caught panic carried (`panic!("...")` with a literal or a formatted string),
/// for reporting a panicking handler or probe as an error instead of losing it.
///
/// ```
/// let caught = std::panic::catch_unwind(|| panic!("bad {}", 7)).unwrap_err();
/// assert_eq!(kafka_ops_core::handler::panic_message(caught.as_ref()), "bad 7");
/// ```
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Wraps a handler in another handler.
pub trait Layer<H> {
    /// The wrapped handler.
    type Handler: Handler;
    /// Wraps `inner`.
    fn layer(&self, inner: H) -> Self::Handler;
}

/// The layer that adds nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<H: Handler> Layer<H> for Identity {
    type Handler = H;
    fn layer(&self, inner: H) -> H {
        inner
    }
}

/// Two layers: `outer` wraps what `inner` produces.
#[derive(Debug, Clone)]
pub struct Stack<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<H, Inner, Outer> Layer<H> for Stack<Inner, Outer>
where
    Inner: Layer<H>,
    Outer: Layer<Inner::Handler>,
{
    type Handler = Outer::Handler;
    fn layer(&self, handler: H) -> Self::Handler {
        self.outer.layer(self.inner.layer(handler))
    }
}

/// Builds a handler stack. Layers added first are outermost: they see each record first.
#[derive(Debug, Clone)]
pub struct HandlerBuilder<L> {
    layers: L,
}

impl HandlerBuilder<Identity> {
    /// An empty stack.
    pub fn new() -> Self {
        HandlerBuilder { layers: Identity }
    }
}

impl Default for HandlerBuilder<Identity> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L> HandlerBuilder<L> {
    /// Adds a layer inside the ones already added.
    pub fn layer<T>(self, layer: T) -> HandlerBuilder<Stack<T, L>> {
        HandlerBuilder {
            layers: Stack {
                inner: layer,
                outer: self.layers,
            },
        }
    }

    /// Wraps `handler` in every layer.
    pub fn handler<H>(self, handler: H) -> L::Handler
    where
        L: Layer<H>,
    {
        self.layers.layer(handler)
    }
}

/// A handler made from a closure. The closure reads what it needs from the borrowed record and
/// returns a future that owns its data.
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(&Record<'_>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, HandlerError>> + Send + 'static,
{
    HandlerFn(f)
}

/// See [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F>(F);

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFn")
    }
}

#[async_trait]
impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(&Record<'_>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, HandlerError>> + Send + 'static,
{
    async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
        (self.0)(record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Offset;
    use std::sync::Mutex;

    #[derive(Debug, thiserror::Error)]
    #[error("database unavailable")]
    struct DbDown(#[source] std::io::Error);

    #[test]
    fn errors_keep_class_chain_and_history() {
        let e = HandlerError::transient(DbDown(std::io::Error::other("connection refused")))
            .with_attempts(3)
            .with_failure_times(Timestamp::from_millis(1), Timestamp::from_millis(9));
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(e.attempts(), 3);
        assert_eq!(
            e.cause_chain(5),
            vec!["database unavailable", "connection refused"]
        );
        assert_eq!(e.cause_chain(1).len(), 1);
        assert!(e.downcast_ref::<DbDown>().is_some());
        assert_eq!(e.to_string(), "transient error: database unavailable");
        assert_eq!(
            e.failure_times(),
            (
                Some(Timestamp::from_millis(1)),
                Some(Timestamp::from_millis(9))
            )
        );
        let fatal = e.with_class(ErrorClass::Fatal);
        assert_eq!(fatal.class(), ErrorClass::Fatal);
        assert_eq!(HandlerError::permanent("x").with_attempts(0).attempts(), 1);
        let routed = HandlerError::permanent("bad").with_disposition(Disposition::DeadLetter);
        assert_eq!(routed.disposition(), Disposition::DeadLetter);
        assert_eq!(
            HandlerError::transient("x").disposition(),
            Disposition::Undecided
        );
    }

    struct Tag(&'static str, Arc<Mutex<Vec<&'static str>>>);
    struct Tagged<H>(H, &'static str, Arc<Mutex<Vec<&'static str>>>);
    impl<H: Handler> Layer<H> for Tag {
        type Handler = Tagged<H>;
        fn layer(&self, inner: H) -> Tagged<H> {
            Tagged(inner, self.0, self.1.clone())
        }
    }
    #[async_trait]
    impl<H: Handler> Handler for Tagged<H> {
        async fn handle(&self, record: &Record<'_>) -> Result<Outcome, HandlerError> {
            self.2.lock().unwrap().push(self.1);
            self.0.handle(record).await
        }
    }

    #[tokio::test]
    async fn layers_added_first_run_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let inner_log = log.clone();
        let handler = HandlerBuilder::new()
            .layer(Tag("outer", log.clone()))
            .layer(Tag("inner", log.clone()))
            .handler(handler_fn(move |_record: &Record<'_>| {
                inner_log.lock().unwrap().push("handler");
                async { Ok(Outcome::Processed) }
            }));
        let record = Record::new("t", 0, Offset::ZERO);
        assert_eq!(handler.handle(&record).await.unwrap(), Outcome::Processed);
        assert_eq!(*log.lock().unwrap(), vec!["outer", "inner", "handler"]);
        // Boxed and shared handlers are handlers too.
        let boxed: BoxHandler = Box::new(handler);
        let shared = Arc::new(boxed);
        shared.handle(&record).await.unwrap();
        assert_eq!(log.lock().unwrap().len(), 6);
    }
}
