//! Plain aligned-column tables, like the Kafka command-line tools print, and the one-token cells
//! they and status lines share.

use kafka_ops_core::lag::GroupLag;

/// A table of text cells with a header row.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra cells are kept).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text: columns padded to their widest cell, two spaces apart.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == columns {
                    text.push_str(cell);
                } else {
                    text.push_str(&format!("{cell:<width$}  "));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A duration as one short token (`850ms`, `42s`, `3m05s`, `2h07m`, `8d04h`), for table cells.
pub fn compact_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 if duration.is_zero() => "0s".to_string(),
        0 => format!("{}ms", duration.as_millis()),
        1..=59 => format!("{secs}s"),
        60..=3_599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3_600..=86_399 => format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

/// A group's total lag as one token: the sum when every partition's lag is known, `>=N` when only
/// some are (partitions whose leader did not answer count nothing, so the sum is a lower bound),
/// `?` when none is.
pub fn lag_total_cell(lag: &GroupLag) -> String {
    if lag.is_complete() {
        lag.total_lag().to_string()
    } else if lag.partitions.iter().all(|row| row.lag.is_none()) {
        "?".into()
    } else {
        format!(">={}", lag.total_lag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_ops_core::lag::PartitionLag;
    use kafka_ops_core::{Offset, Timestamp, TopicPartition, Watermarks};
    use std::time::Duration;

    #[test]
    fn durations_are_single_tokens() {
        assert_eq!(compact_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(compact_duration(Duration::ZERO), "0s");
        assert_eq!(compact_duration(Duration::from_secs(42)), "42s");
        assert_eq!(compact_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(compact_duration(Duration::from_secs(7_620)), "2h07m");
        assert_eq!(
            compact_duration(Duration::from_secs(8 * 86_400 + 4 * 3_600 + 5)),
            "8d04h"
        );
    }

    #[test]
    fn columns_are_aligned() {
        let mut t = Table::new(["TOPIC", "LAG"]);
        t.row(["orders", "5"]);
        t.row(["a", "12345"]);
        assert_eq!(t.render(), "TOPIC   LAG\norders  5\na       12345\n");
    }

    fn known(partition: i32, committed: i64, end: i64) -> PartitionLag {
        let marks = Watermarks {
            low: Offset::ZERO,
            high: Offset::new(end).unwrap(),
        };
        PartitionLag::compute(
            &TopicPartition::new("orders", partition),
            Some(Offset::new(committed).unwrap()),
            Some(marks),
        )
    }

    #[test]
    fn a_lag_total_says_when_it_is_only_a_lower_bound() {
        let at = Timestamp::from_millis(0);
        let complete = GroupLag::new("g", at, vec![known(0, 5, 15), known(1, 0, 5)]);
        assert_eq!(lag_total_cell(&complete), "15");
        let unknown = PartitionLag::unknown(
            &TopicPartition::new("orders", 2),
            None,
            "leader not available",
        );
        let partial = GroupLag::new("g", at, vec![known(0, 5, 15), unknown.clone()]);
        assert_eq!(lag_total_cell(&partial), ">=10");
        let none_known = GroupLag::new("g", at, vec![unknown]);
        assert_eq!(lag_total_cell(&none_known), "?");
    }
}
