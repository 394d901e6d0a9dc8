//! The Prometheus text exposition format (version 0.0.4), written by hand: the exporter's series
//! come and go with the cluster's groups, so they are rendered from a snapshot on each scrape
//! instead of living in a process-wide registry that never forgets a label set.

use std::fmt::Write;

/// The `Content-Type` of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family's `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (resets when the exporter restarts).
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// A sample value: offsets and counts print as integers, durations as decimals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    /// An integer (offsets, lags, counts).
    Int(i128),
    /// A decimal (seconds, rates).
    Float(f64),
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(i128::from(value))
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(i128::from(value))
    }
}

impl From<usize> for Value {
    fn from(value: usize) -> Self {
        Value::Int(i128::try_from(value).unwrap_or(i128::MAX))
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(i128::from(u8::from(value)))
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

/// Builds one exposition: families in order, each with its `# HELP` and `# TYPE` lines before
/// its samples, as the format requires.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family. Its samples must follow before the next family starts.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the current family.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_label_value_into(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = match value.into() {
            Value::Int(v) => writeln!(self.text, " {v}"),
            Value::Float(v) if v.is_nan() => writeln!(self.text, " NaN"),
            Value::Float(v) if v.is_infinite() => {
                writeln!(self.text, " {}Inf", if v > 0.0 { '+' } else { '-' })
            }
            Value::Float(v) => writeln!(self.text, " {v}"),
        };
    }

    /// A family of one unlabelled sample.
    pub(crate) fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text so far.
    pub(crate) fn finish(self) -> String {
        self.text
    }
}

/// A label value as the format wants it between double quotes: backslash, double quote and line
/// feed escaped (`\\`, `\"`, `\n`); everything else, any UTF-8, as it is.
fn escape_label_value_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

/// A `# HELP` text: backslash and line feed escaped (double quotes are fine there).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_render_exactly() {
        let mut text = Exposition::default();
        text.family("kafka_consumergroup_lag", Kind::Gauge, "Offset lag.");
        text.sample(
            "kafka_consumergroup_lag",
            &[
                ("group", "billing"),
                ("topic", "orders"),
                ("partition", "0"),
            ],
            15u64,
        );
        text.family("x_seconds", Kind::Counter, "Two\nlines \\ and \"quotes\".");
        text.sample("x_seconds", &[], 1.5);
        text.sample("x_seconds", &[("a", "b")], 2.0);
        text.sample("x_seconds", &[("a", "c")], f64::INFINITY);
        text.sample("x_seconds", &[("a", "d")], f64::NAN);
        assert_eq!(
            text.finish(),
            "# HELP kafka_consumergroup_lag Offset lag.\n\
             # TYPE kafka_consumergroup_lag gauge\n\
             kafka_consumergroup_lag{group=\"billing\",topic=\"orders\",partition=\"0\"} 15\n\
             # HELP x_seconds Two\\nlines \\\\ and \"quotes\".\n\
             # TYPE x_seconds counter\n\
             x_seconds 1.5\n\
             x_seconds{a=\"b\"} 2\n\
             x_seconds{a=\"c\"} +Inf\n\
             x_seconds{a=\"d\"} NaN\n"
        );
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline_only() {
        let mut text = Exposition::default();
        text.sample("m", &[("group", "a\\b\"c\nd\te é{},=")], Value::Int(-1));
        assert_eq!(text.finish(), "m{group=\"a\\\\b\\\"c\\nd\te é{},=\"} -1\n");
    }

    proptest::proptest! {
        /// Whatever a group is called, the sample stays on one line and unescaping the quoted
        /// value gives the name back.
        #[test]
        fn any_label_value_round_trips(value in "\\PC*|[\\\\\"\n]{0,8}") {
            let mut text = Exposition::default();
            text.sample("m", &[("group", &value)], 1u64);
            let line = text.finish();
            proptest::prop_assert_eq!(line.matches('\n').count(), 1);
            let quoted = line
                .strip_prefix("m{group=\"")
                .and_then(|rest| rest.strip_suffix("\"} 1\n"))
                .unwrap();
            let mut unescaped = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => unescaped.push('\n'),
                        Some(other) => unescaped.push(other),
                        None => proptest::prop_assert!(false, "dangling backslash"),
                    }
                } else {
                    proptest::prop_assert!(c != '"' && c != '\n', "unescaped {c:?}");
                    unescaped.push(c);
                }
            }
            proptest::prop_assert_eq!(unescaped, value);
        }
    }
}
