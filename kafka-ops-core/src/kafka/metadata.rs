//! Metadata asks that answer while a broker restarts: every client of the adapter (the cluster
//! queries, the reader, the producer) reads metadata through here.
//!
//! librdkafka sends an application's metadata request to one broker it believes is up and, when
//! that broker's connection drops (it was just stopped), keeps retrying the request there for
//! up to about a second (on the mock cluster: a bound of 600 ms ran out in 1 to 6 rounds of 20,
//! one of 1 s or more in none). Each ask here therefore gets half the bound and, when that
//! times out, a second ask gets what is left, which librdkafka sends to a broker that is up:
//! short bounds (a health probe's) answer too.

use std::time::{Duration, Instant};

use rdkafka::client::{Client, ClientContext};
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

use crate::class::KafkaCode;
use crate::error::Error;
use crate::kafka::kafka_error;

const OPERATION: &str = "fetch metadata";

/// The metadata of every topic. Never of a named one: asking for a named topic can make a
/// broker with auto-creation enabled create it, which a monitoring call must never do.
pub(crate) fn all_topics<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<Metadata, Error> {
    ask(client, None, timeout)
}

/// The partition count of `topic`; `None` when the cluster does not have it.
pub(crate) fn partition_count<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, Error> {
    let metadata = ask(client, Some(topic), timeout)?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    Ok(i32::try_from(count).ok().filter(|count| *count > 0))
}

fn ask<C: ClientContext>(
    client: &Client<C>,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<Metadata, Error> {
    ask_twice(OPERATION, timeout, |bound| {
        client.fetch_metadata(topic, bound).map_err(|e| {
            if matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::OperationTimedOut)
            ) {
                Error::Timeout {
                    operation: OPERATION,
                    timeout: bound,
                }
            } else {
                kafka_error(OPERATION, e)
            }
        })
    })
}

/// Runs `ask` with half of `timeout`, and once more with what is left when that timed out or
/// found no broker to ask (librdkafka's `_TRANSPORT`: within half the bound no connection was
/// up, which the whole bound might have seen); a timeout then reports the whole bound as
/// `operation`'s.
fn ask_twice<T>(
    operation: &'static str,
    timeout: Duration,
    mut ask: impl FnMut(Duration) -> Result<T, Error>,
) -> Result<T, Error> {
    let started = Instant::now();
    match ask(timeout / 2) {
        Err(
            Error::Timeout { .. }
            | Error::Kafka {
                code: Some(KafkaCode::BROKER_TRANSPORT_FAILURE),
                ..
            },
        ) => ask(timeout.saturating_sub(started.elapsed())).map_err(|error| match error {
            Error::Timeout { .. } => Error::Timeout { operation, timeout },
            other => other,
        }),
        answer => answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed_out(bound: Duration) -> Error {
        Error::Timeout {
            operation: "fetch metadata",
            timeout: bound,
        }
    }

    #[test]
    fn an_answer_within_half_the_bound_is_asked_once() {
        let mut bounds = Vec::new();
        let answer = ask_twice("fetch metadata", Duration::from_secs(4), |bound| {
            bounds.push(bound);
            Ok::<_, Error>(7)
        });
        assert_eq!(answer.unwrap(), 7);
        assert_eq!(bounds, [Duration::from_secs(2)]);
    }

    #[test]
    fn a_timed_out_ask_is_asked_again_within_what_is_left() {
        let mut bounds = Vec::new();
        let answer = ask_twice("fetch metadata", Duration::from_secs(4), |bound| {
            bounds.push(bound);
            if bounds.len() == 1 {
                Err(timed_out(bound))
            } else {
                Ok(7)
            }
        });
        assert_eq!(answer.unwrap(), 7);
        assert_eq!(bounds.len(), 2);
        assert_eq!(bounds[0], Duration::from_secs(2));
        assert!(bounds[1] <= Duration::from_secs(4) && bounds[1] > Duration::from_secs(3));
    }

    #[test]
    fn two_timeouts_report_the_whole_bound() {
        let mut asks = 0;
        let error = ask_twice("describe", Duration::from_secs(4), |bound| {
            asks += 1;
            Err::<(), _>(timed_out(bound))
        })
        .unwrap_err();
        assert_eq!(asks, 2);
        assert!(
            matches!(error, Error::Timeout { operation: "describe", timeout } if timeout == Duration::from_secs(4)),
            "{error:?}"
        );
    }

    #[test]
    fn no_broker_to_ask_is_asked_again_within_what_is_left() {
        let mut bounds = Vec::new();
        let answer = ask_twice("fetch metadata", Duration::from_secs(4), |bound| {
            bounds.push(bound);
            if bounds.len() == 1 {
                Err(Error::Kafka {
                    operation: "fetch metadata",
                    code: Some(KafkaCode::BROKER_TRANSPORT_FAILURE),
                    source: "no connection".into(),
                })
            } else {
                Ok(7)
            }
        });
        assert_eq!(answer.unwrap(), 7);
        assert_eq!(bounds.len(), 2);
    }

    #[test]
    fn other_errors_are_not_asked_again() {
        let mut asks = 0;
        let error = ask_twice("fetch metadata", Duration::from_secs(4), |_| {
            asks += 1;
            Err::<(), _>(Error::InvalidInput("no".into()))
        })
        .unwrap_err();
        assert_eq!(asks, 1);
        assert!(matches!(error, Error::InvalidInput(_)), "{error:?}");
    }
}
