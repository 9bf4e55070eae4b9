//! InfluxDB line protocol, written by hand: it is a few escaping rules, and owning them keeps
//! every byte that reaches the spool under our control (a batch must be resent byte for byte).
//!
//! `measurement,tag=value field=1i,text="a \"b\"" 1700000000000000000`
//!
//! Escaping: measurement names escape `,` and space; tag keys, tag values and field keys escape
//! `,`, `=` and space; string field values escape `"` and `\`. Line breaks cannot be escaped in
//! line protocol, so they become spaces. Empty tag values are left out (the store rejects them),
//! and non-finite floats are left out (they have no line-protocol form).

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::source::Value;

/// Builds one line. Tags first, then fields, then [`LineBuilder::finish`] with the timestamp.
#[derive(Debug)]
pub struct LineBuilder {
    buf: String,
    fields: usize,
}

impl LineBuilder {
    pub fn new(measurement: &str) -> Self {
        let mut buf = String::with_capacity(160);
        escape_into(&mut buf, measurement, &[',', ' ']);
        LineBuilder { buf, fields: 0 }
    }

    /// Starts from a prefix made by [`tag_prefix`], for tag sets that repeat on every line.
    pub fn with_prefix(prefix: &str) -> Self {
        let mut buf = String::with_capacity(prefix.len() + 96);
        buf.push_str(prefix);
        LineBuilder { buf, fields: 0 }
    }

    pub fn tag(mut self, key: &str, value: &str) -> Self {
        push_tag(&mut self.buf, key, value);
        self
    }

    fn field_key(&mut self, key: &str) {
        self.buf.push(if self.fields == 0 { ' ' } else { ',' });
        escape_into(&mut self.buf, key, &[',', '=', ' ']);
        self.buf.push('=');
        self.fields += 1;
    }

    pub fn int(mut self, key: &str, value: i64) -> Self {
        self.field_key(key);
        let _ = write!(self.buf, "{value}i");
        self
    }

    pub fn float(mut self, key: &str, value: f64) -> Self {
        if value.is_finite() {
            self.field_key(key);
            let _ = write!(self.buf, "{value:?}");
        }
        self
    }

    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.field_key(key);
        self.buf.push_str(if value { "true" } else { "false" });
        self
    }

    pub fn string(mut self, key: &str, value: &str) -> Self {
        self.field_key(key);
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

    /// The finished line (no trailing newline), or `None` when it has no field.
    pub fn finish(mut self, at: Timestamp) -> Option<String> {
        if self.fields == 0 {
            return None;
        }
        let _ = write!(self.buf, " {}", at.as_nanosecond());
        Some(self.buf)
    }
}

/// `measurement,k1=v1,k2=v2` for tags that repeat on every line of a kind.
pub fn tag_prefix(measurement: &str, tags: &[(&str, &str)]) -> String {
    let mut buf = String::new();
    escape_into(&mut buf, measurement, &[',', ' ']);
    for (k, v) in tags {
        push_tag(&mut buf, k, v);
    }
    buf
}

fn push_tag(buf: &mut String, key: &str, value: &str) {
    if key.is_empty() || value.is_empty() {
        return;
    }
    buf.push(',');
    escape_into(buf, key, &[',', '=', ' ']);
    buf.push('=');
    escape_into(buf, value, &[',', '=', ' ']);
}

fn escape_into(buf: &mut String, text: &str, special: &[char]) {
    for c in text.chars() {
        match c {
            '\n' | '\r' => buf.push(' '),
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
            .float("rpm", 1200.5)
            .float("whole", 3.0)
            .bool("run", true)
            .string("program", "O1234")
            .finish(ts())
            .unwrap();
        assert_eq!(
            line,
            "signal,machine=cnc01 parts=42i,rpm=1200.5,whole=3.0,run=true,program=\"O1234\" 1700000000000000000"
        );
    }

    #[test]
    fn special_characters_are_escaped_where_they_matter() {
        let line = LineBuilder::new("my meas,x")
            .tag("tag key", "a=b,c d")
            .string("field=key", "say \"hi\" \\ bye\nnext")
            .finish(ts())
            .unwrap();
        assert_eq!(
            line,
            r#"my\ meas\,x,tag\ key=a\=b\,c\ d field\=key="say \"hi\" \\ bye next" 1700000000000000000"#
        );
    }

    #[test]
    fn empty_tags_and_non_finite_floats_are_left_out() {
        let b = LineBuilder::new("m")
            .tag("empty", "")
            .float("nan", f64::NAN);
        assert_eq!(b.field_count(), 0);
        assert_eq!(b.finish(ts()), None);
        let line = LineBuilder::with_prefix(&tag_prefix("m", &[("a", "1"), ("b", "")]))
            .int("x", 1)
            .finish(ts())
            .unwrap();
        assert_eq!(line, "m,a=1 x=1i 1700000000000000000");
    }
}
