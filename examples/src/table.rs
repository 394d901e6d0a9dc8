//! Plain aligned-column tables, like the Kafka command-line tools print.

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

#[cfg(test)]
mod tests {
    use super::*;
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
}
