//! How much of something an anomaly touches.

use serde::{Deserialize, Serialize};

/// `affected` of `total` things (brokers, partitions, consumers): what a health check or an
/// anomaly reports so that escalation can weigh it ("2 of 3 brokers down" is not "1 of 300
/// partitions under-replicated").
///
/// ```
/// use kafka_ops_core::Extent;
///
/// let down = Extent::new(1, 3);
/// assert_eq!(down.share(), 1.0 / 3.0);
/// assert_eq!(Extent::new(0, 0).share(), 0.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Extent {
    /// Affected things.
    pub affected: usize,
    /// Of how many.
    pub total: usize,
}

impl Extent {
    /// `affected` of `total`.
    pub fn new(affected: usize, total: usize) -> Self {
        Extent { affected, total }
    }

    /// The affected share, from 0 to 1 (0 when there is nothing to count).
    pub fn share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.affected as f64 / self.total as f64
        }
    }
}
