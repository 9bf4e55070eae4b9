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
        match self {
            // The spool's precision, on every line: no 128-bit division by 1.
            Precision::Ns => at.as_nanosecond(),
            _ => at.as_nanosecond().div_euclid(self.nanos()),
        }
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
        Self::with_prefix_for(prefix, 4)
    }

    /// [`LineBuilder::with_prefix`] with room for about `fields` fields, so that a line of many
    /// does not grow its buffer on the way.
    pub fn with_prefix_for(prefix: &str, fields: usize) -> Self {
        // A field is usually a short name and a number; then the timestamp's 20 characters.
        let mut buf = String::with_capacity(prefix.len() + 24 * fields.max(4) + 21);
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
            self.buf.push_str(itoa::Buffer::new().format(value));
            self.buf.push('i');
        }
        self
    }

    /// An unsigned integer field (`7u`).
    pub fn uint(mut self, key: &str, value: u64) -> Self {
        if self.field_key(key) {
            self.buf.push_str(itoa::Buffer::new().format(value));
            self.buf.push('u');
        }
        self
    }

    pub fn float(mut self, key: &str, value: f64) -> Self {
        if value.is_finite() && self.field_key(key) {
            push_float(&mut self.buf, value);
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
        if !value
            .bytes()
            .any(|b| matches!(b, b'"' | b'\\' | b'\n' | b'\r'))
        {
            // Nothing to escape (all four are ASCII, so no byte of another character is one).
            self.buf.push_str(value);
            self.buf.push('"');
            return self;
        }
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
        self.buf.push(' ');
        let stamp = precision.timestamp(at);
        let mut digits = itoa::Buffer::new();
        // 64 bits hold 1677–2262 in nanoseconds; their digits are quicker to find.
        self.buf.push_str(match i64::try_from(stamp) {
            Ok(stamp) => digits.format(stamp),
            Err(_) => digits.format(stamp),
        });
        Some(self.buf)
    }
}

/// Writes a finite float as `{:?}` does: the shortest text that parses back to the same f64,
/// always with a `.` or an exponent, so a whole float never reads back as an integer.
///
/// ryu finds the same shortest digits faster, with two differences, so it writes only where
/// neither applies and Debug writes the rest:
/// - Form. Debug writes `ddd.ddd` for ±0 and for 1e-4 <= |x| < 1e16, an exponent (`1e16`,
///   `5e-5`) outside. ryu is positional when the shortest decimal's magnitude kk (10^(kk-1) <=
///   value < 10^kk) is in -5 < kk <= 16, so it would write `0.00005`. Inside Debug's range ryu
///   is always positional: the f64 nearest 1e-4 has the shortest form `0.0001` (kk = -3),
///   anything larger has kk >= -3, and the largest f64 below 1e16 is 1e16 - 2, shortest form
///   `9999999999999998` (kk = 16).
/// - Ties. When two shortest candidates are equally near (1e15 + 0.25 lies halfway between
///   `…000.2` and `…000.3`), Debug takes the upper one and ryu the even one. Both candidates
///   lie within the float's rounding interval (half an ulp each way), so they are 10^k apart
///   with 10^k <= ulp, while a normal float is at least 2^52 ulps: the digits of either
///   candidate make a number of at least 2^52 - 1, 16 digits. Neither has a trailing zero (it
///   would have a shorter form). So a text of under 16 significant digits was no tie.
///
/// `floats_are_written_as_debug_writes_them` compares the two over the boundaries, ties and
/// random bit patterns.
fn push_float(buf: &mut String, value: f64) {
    let abs = value.abs();
    if abs == 0.0 || (1e-4..1e16).contains(&abs) {
        let mut ryu = ryu::Buffer::new();
        let text = ryu.format_finite(value);
        if significant_digits(text) < 16 {
            buf.push_str(text);
            return;
        }
    }
    let _ = write!(buf, "{value:?}");
}

/// The digits from the first non-zero one to the last non-zero one.
fn significant_digits(text: &str) -> usize {
    let (mut count, mut zeros, mut started) = (0, 0, false);
    for b in text.bytes() {
        match b {
            b'0' if started => zeros += 1,
            b'1'..=b'9' => {
                count += zeros + 1;
                zeros = 0;
                started = true;
            }
            _ => {}
        }
    }
    count
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
                out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
                if line.len() > text.len() {
                    out.push(b'\n');
                }
            }
            None => out.extend_from_slice(line),
        }
    }
    Cow::Owned(out)
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
    // Nearly every name is printable ASCII without a backslash or a special character of any
    // element (`,`, `=`, space): nothing in it is escaped, so it is written as it is.
    if text
        .bytes()
        .all(|b| matches!(b, b'!'..=b'~') && !matches!(b, b'\\' | b',' | b'='))
    {
        buf.push_str(text);
    } else {
        escape_each(buf, text, special);
    }
}

/// [`escape_name`] character by character.
fn escape_each(buf: &mut String, text: &str, special: &[char]) {
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

    /// The float's text as `float` writes it.
    fn float_text(x: f64) -> String {
        let mut buf = String::new();
        push_float(&mut buf, x);
        buf
    }

    #[test]
    fn floats_are_written_as_debug_writes_them() {
        let check = |x: f64| {
            if x.is_finite() {
                assert_eq!(
                    float_text(x),
                    format!("{x:?}"),
                    "bits {:#018x}",
                    x.to_bits()
                );
            }
        };
        let mut edges = vec![
            0.0,
            1.0,
            0.1,
            0.5,
            1200.0,
            8042.5,
            51.25,
            29.75,
            1e-4,
            1e-5,
            5e-5,
            1e15,
            1e16,
            1e17,
            9007199254740992.0,
            9999999999999998.0,
            123456789012345680.0,
            f64::MIN_POSITIVE,
            f64::MIN_POSITIVE / 3.0,
            f64::from_bits(1),
            f64::MAX,
            f64::EPSILON,
            1.0 / 3.0,
            2.0 / 3.0,
            0.1 + 0.2,
            // Halfway between two shortest candidates: Debug rounds up, ryu to even.
            1e15 + 0.25,
            1e15 + 0.75,
            2e14 + 0.125,
        ];
        for e in -330..=310 {
            edges.push(10f64.powi(e));
        }
        for x in edges.clone() {
            let (mut up, mut down) = (x, x);
            for _ in 0..4 {
                up = up.next_up();
                down = down.next_down();
                edges.extend([up, down]);
            }
        }
        // Ties: binades whose floats have 1, 2 or 3 binary fraction digits and 17 decimal ones.
        for n in 0..20_000u32 {
            let n = f64::from(n);
            for j in [1.0, 3.0] {
                edges.push(1e15 + n + j / 4.0);
                edges.push(4e15 + n + j / 2.0);
            }
            for j in [1.0, 3.0, 5.0, 7.0] {
                edges.push(6e14 + n + j / 8.0);
            }
        }
        for i in -100_000..=100_000 {
            edges.push(i as f64);
            edges.push(i as f64 / 100.0);
            edges.push(i as f64 * 0.25);
        }
        for x in edges {
            check(x);
            check(-x);
        }
        // Random bit patterns (xorshift64): every exponent, subnormals included.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..300_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            check(f64::from_bits(state));
        }
        // And random values inside the range ryu writes, where the shortcut matters.
        for _ in 0..300_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            check(10f64.powf(unit * 20.0 - 4.0) * if state & 1 == 0 { 1.0 } else { -1.0 });
        }
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        for v in [0, 1, -1, 9, 10, -10, 42, i64::MAX, i64::MIN, 1_700_000_000] {
            let line = LineBuilder::new("m").int("x", v).finish(ts()).unwrap();
            assert_eq!(line, format!("m x={v}i 1700000000000000000"));
        }
        for v in [0, 7, 10, u64::MAX] {
            let line = LineBuilder::new("m").uint("x", v).finish(ts()).unwrap();
            assert_eq!(line, format!("m x={v}u 1700000000000000000"));
        }
        let extremes = [Timestamp::MIN, Timestamp::MAX].map(|t| t.as_nanosecond());
        for ns in [0, 1, -1, -1_500_000_000, i64::MIN, i64::MAX]
            .map(i128::from)
            .into_iter()
            .chain(extremes)
        {
            let at = Timestamp::from_nanosecond(ns).unwrap();
            for p in [Precision::Ns, Precision::Us, Precision::Ms, Precision::S] {
                let line = LineBuilder::new("m")
                    .int("x", 1)
                    .finish_with(at, p)
                    .unwrap();
                assert_eq!(line, format!("m x=1i {}", p.timestamp(at)));
            }
        }
    }

    #[test]
    fn names_written_as_they_are_are_those_nothing_in_is_escaped() {
        // Random names from an alphabet of plain, special, control and non-ASCII characters.
        let alphabet = [
            'a', 'Z', '0', '_', '-', '.', '#', '~', '!', ',', '=', ' ', '\\', '\n', '\u{7f}', '温',
            'é',
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 7) as usize;
            let name: String = (0..len)
                .map(|i| alphabet[((state >> (8 + 6 * i)) % alphabet.len() as u64) as usize])
                .collect();
            for special in [MEASUREMENT_SPECIAL, KEY_SPECIAL] {
                let (mut fast, mut each) = (String::new(), String::new());
                escape_name(&mut fast, &name, special);
                escape_each(&mut each, &name, special);
                assert_eq!(fast, each, "{name:?}");
            }
        }
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
