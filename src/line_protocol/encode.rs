//! The encoder: [`LineBuilder`] writes one line, escaping as the table in the module
//! documentation of [`crate::line_protocol`] says; [`rescale_timestamps`] turns a spooled body's
//! nanoseconds into an output's [`Precision`].

use std::borrow::Cow;
use std::fmt::Write as _;

use jiff::Timestamp;

use crate::model::Value;

/// The unit of a line's timestamp; also the `precision` query parameter of a write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Nanoseconds: what the spool holds, and what the stores default to.
    #[default]
    Ns,
    Us,
    Ms,
    S,
}

impl Precision {
    /// The value of the `precision` query parameter (v1 and v2 spell these four the same).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }

    /// Nanoseconds per unit.
    fn nanos(self) -> i128 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }

    /// `at` in this unit, rounded down (towards the past, also before 1970), so that a point
    /// never moves into a later second than the one it happened in. The stores take an `i64`,
    /// which in nanoseconds covers 1677–2262; jiff's wider range is written as it is and left
    /// to the store to reject.
    pub fn timestamp(self, at: Timestamp) -> i128 {
        at.as_nanosecond().div_euclid(self.nanos())
    }
}

/// Builds one line. Tags first, then fields, then [`LineBuilder::finish`] with the timestamp.
#[derive(Debug)]
pub struct LineBuilder {
    buf: String,
    fields: usize,
    /// False when the measurement cannot be written (empty, or a `#` that makes a comment).
    valid: bool,
}

impl LineBuilder {
    pub fn new(measurement: &str) -> Self {
        let mut buf = String::with_capacity(160);
        escape_name(&mut buf, measurement, MEASUREMENT_SPECIAL);
        let valid = !buf.is_empty() && !buf.starts_with('#');
        LineBuilder {
            buf,
            fields: 0,
            valid,
        }
    }

    /// Starts from a prefix made by [`tag_prefix`], for tag sets that repeat on every line.
    pub fn with_prefix(prefix: &str) -> Self {
        let mut buf = String::with_capacity(prefix.len() + 96);
        buf.push_str(prefix);
        let valid = !buf.is_empty() && !buf.starts_with([',', '#']);
        LineBuilder {
            buf,
            fields: 0,
            valid,
        }
    }

    pub fn tag(mut self, key: &str, value: &str) -> Self {
        push_tag(&mut self.buf, key, value);
        self
    }

    /// Writes the separator and the escaped key; false when the key is empty after escaping
    /// (the field is then left out).
    fn field_key(&mut self, key: &str) -> bool {
        let mark = self.buf.len();
        self.buf.push(if self.fields == 0 { ' ' } else { ',' });
        let before = self.buf.len();
        escape_name(&mut self.buf, key, KEY_SPECIAL);
        if self.buf.len() == before {
            self.buf.truncate(mark);
            return false;
        }
        self.buf.push('=');
        self.fields += 1;
        true
    }

    pub fn int(mut self, key: &str, value: i64) -> Self {
        if self.field_key(key) {
            let _ = write!(self.buf, "{value}i");
        }
        self
    }

    /// An unsigned integer field (`7u`).
    pub fn uint(mut self, key: &str, value: u64) -> Self {
        if self.field_key(key) {
            let _ = write!(self.buf, "{value}u");
        }
        self
    }

    pub fn float(mut self, key: &str, value: f64) -> Self {
        if value.is_finite() && self.field_key(key) {
            // Debug prints the shortest text that parses back to the same f64, and always
            // with a `.` or an exponent, so a whole float never reads back as an integer.
            let _ = write!(self.buf, "{value:?}");
        }
        self
    }

    pub fn bool(mut self, key: &str, value: bool) -> Self {
        if self.field_key(key) {
            self.buf.push_str(if value { "true" } else { "false" });
        }
        self
    }

    pub fn string(mut self, key: &str, value: &str) -> Self {
        if !self.field_key(key) {
            return self;
        }
        self.buf.push('"');
        for c in value.chars() {
            match c {
                '"' | '\\' => {
                    self.buf.push('\\');
                    self.buf.push(c);
                }
                '\n' | '\r' => self.buf.push(' '),
                c => self.buf.push(c),
            }
        }
        self.buf.push('"');
        self
    }

    pub fn value(self, key: &str, value: &Value) -> Self {
        match value {
            Value::Bool(b) => self.bool(key, *b),
            Value::Int(i) => self.int(key, *i),
            Value::Float(f) => self.float(key, *f),
            Value::Text(s) => self.string(key, s),
        }
    }

    /// How many fields were written; a line without fields is invalid and must not be sent.
    pub fn field_count(&self) -> usize {
        self.fields
    }

    /// The finished line with a nanosecond timestamp (no trailing newline), or `None` when it
    /// has no field or no valid measurement.
    pub fn finish(self, at: Timestamp) -> Option<String> {
        self.finish_with(at, Precision::Ns)
    }

    /// The finished line with its timestamp in `precision`.
    pub fn finish_with(mut self, at: Timestamp, precision: Precision) -> Option<String> {
        if self.fields == 0 || !self.valid {
            return None;
        }
        let _ = write!(self.buf, " {}", precision.timestamp(at));
        Some(self.buf)
    }
}

/// `measurement,k1=v1,k2=v2` for tags that repeat on every line of a kind.
pub fn tag_prefix(measurement: &str, tags: &[(&str, &str)]) -> String {
    let mut buf = String::new();
    escape_name(&mut buf, measurement, MEASUREMENT_SPECIAL);
    for (k, v) in tags {
        push_tag(&mut buf, k, v);
    }
    buf
}

/// Rewrites the nanosecond timestamps of a body (lines ending in `\n`, as the spool holds them)
/// into `precision`. A line whose last word is not a timestamp is passed on unchanged: the
/// store then judges it, and a rejection sends it to the dead-letter file like any bad line.
/// At nanoseconds, the spool's own precision, the body is passed on as it is, not copied.
pub fn rescale_timestamps(body: &[u8], precision: Precision) -> Cow<'_, [u8]> {
    if precision == Precision::Ns {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|b| *b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let rescaled = text.iter().rposition(|b| *b == b' ').and_then(|space| {
            let digits = std::str::from_utf8(&text[space + 1..]).ok()?;
            let ns: i64 = digits.parse().ok()?;
            Some((space, i128::from(ns).div_euclid(precision.nanos())))
        });
        match rescaled {
            Some((space, value)) => {
                out.extend_from_slice(&text[..=space]);
                let _ = write!(VecWriter(&mut out), "{value}");
                if line.len() > text.len() {
                    out.push(b'\n');
                }
            }
            None => out.extend_from_slice(line),
        }
    }
    Cow::Owned(out)
}

/// `fmt::Write` into a byte vector, to format integers without an intermediate String.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Characters a measurement name escapes.
const MEASUREMENT_SPECIAL: &[char] = &[',', ' '];
/// Characters tag keys, tag values and field keys escape.
const KEY_SPECIAL: &[char] = &[',', '=', ' '];

fn push_tag(buf: &mut String, key: &str, value: &str) {
    let mark = buf.len();
    buf.push(',');
    let key_start = buf.len();
    escape_name(buf, key, KEY_SPECIAL);
    let key_empty = buf.len() == key_start;
    buf.push('=');
    let value_start = buf.len();
    escape_name(buf, value, KEY_SPECIAL);
    if key_empty || buf.len() == value_start {
        buf.truncate(mark);
    }
}

/// Escapes a measurement, tag key, tag value or field key (see the module documentation).
fn escape_name(buf: &mut String, text: &str, special: &[char]) {
    let text = text.trim_end_matches('\\');
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_control() => buf.push_str("\\ "),
            '\\' => {
                buf.push('\\');
                // A backslash the parser would take as an escape: double it. The next
                // character cannot be absent, since trailing backslashes were trimmed.
                if chars
                    .peek()
                    .is_some_and(|n| *n == '\\' || special.contains(n) || n.is_control())
                {
                    buf.push('\\');
                }
            }
            c if special.contains(&c) => {
                buf.push('\\');
                buf.push(c);
            }
            c => buf.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    #[test]
    fn every_field_type_and_the_timestamp() {
        let line = LineBuilder::new("signal")
            .tag("machine", "cnc01")
            .int("parts", 42)
            .uint("count", u64::MAX)
            .float("rpm", 1200.5)
            .float("whole", 3.0)
            .bool("run", true)
            .string("program", "O1234")
            .finish(ts())
            .unwrap();
        assert_eq!(
            line,
            "signal,machine=cnc01 parts=42i,count=18446744073709551615u,rpm=1200.5,whole=3.0,run=true,program=\"O1234\" 1700000000000000000"
        );
    }

    #[test]
    fn special_characters_are_escaped_where_they_matter() {
        let line = LineBuilder::new("my meas,x=y")
            .tag("tag key", "a=b,c d")
            .string("field=key", "say \"hi\" \\ bye\nnext")
            .finish(ts())
            .unwrap();
        assert_eq!(
            line,
            r#"my\ meas\,x=y,tag\ key=a\=b\,c\ d field\=key="say \"hi\" \\ bye next" 1700000000000000000"#
        );
    }

    #[test]
    fn backslashes_in_names_are_doubled_only_where_the_parser_would_read_an_escape() {
        // `C:\data` keeps its lone backslash; `a\,b` needs `\\` then `\,`; `\\` becomes `\\\`
        // (an escaped backslash, then a literal one before `x`); a trailing `\` is removed.
        let line = LineBuilder::new("m")
            .tag("path", r"C:\data")
            .tag("odd", r"a\,b")
            .tag("two", r"\\x")
            .tag("end", r"v\")
            .int("f", 1)
            .finish(ts())
            .unwrap();
        assert_eq!(
            line,
            r"m,path=C:\data,odd=a\\\,b,two=\\\x,end=v f=1i 1700000000000000000"
        );
    }

    #[test]
    fn empty_tags_keys_and_non_finite_floats_are_left_out() {
        let b = LineBuilder::new("m")
            .tag("empty", "")
            .tag("", "x")
            .float("nan", f64::NAN)
            .int("", 3);
        assert_eq!(b.field_count(), 0);
        assert_eq!(b.finish(ts()), None);
        let line = LineBuilder::with_prefix(&tag_prefix("m", &[("a", "1"), ("b", "")]))
            .int("x", 1)
            .finish(ts())
            .unwrap();
        assert_eq!(line, "m,a=1 x=1i 1700000000000000000");
    }

    #[test]
    fn a_measurement_that_cannot_be_written_gives_no_line() {
        assert_eq!(LineBuilder::new("").int("x", 1).finish(ts()), None);
        assert_eq!(LineBuilder::new("#note").int("x", 1).finish(ts()), None);
        assert_eq!(LineBuilder::new("\\").int("x", 1).finish(ts()), None);
    }

    #[test]
    fn timestamps_in_each_precision_round_towards_the_past() {
        // 1_700_000_000.123_456_789 s
        let at = Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap();
        let stamp = |p| {
            LineBuilder::new("m")
                .int("x", 1)
                .finish_with(at, p)
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(stamp(Precision::Ns), "1700000000123456789");
        assert_eq!(stamp(Precision::Us), "1700000000123456");
        assert_eq!(stamp(Precision::Ms), "1700000000123");
        assert_eq!(stamp(Precision::S), "1700000000");
        // 0.5 s before 1970 is in second -1, not second 0.
        let before = Timestamp::from_nanosecond(-500_000_000).unwrap();
        assert_eq!(Precision::S.timestamp(before), -1);
    }

    #[test]
    fn a_spooled_body_is_rescaled_line_by_line() {
        let body = b"m x=1i 1700000000123456789\nm y=\"a b\" -1500000000\nbad line\n";
        assert_eq!(
            &*rescale_timestamps(body, Precision::Ms),
            b"m x=1i 1700000000123\nm y=\"a b\" -1500\nbad line\n"
        );
        assert!(matches!(
            rescale_timestamps(body, Precision::Ns),
            Cow::Borrowed(b) if b == body
        ));
    }
}
