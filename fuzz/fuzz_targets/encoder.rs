//! Fuzzes the line-protocol encoder: any names, values and timestamp the fuzzer makes up are
//! encoded; the encoder must not panic, must never put a line break inside a line, and what it
//! writes must parse back (with InfluxDB's own parser) to the names and values that went in,
//! changed only as the encoder's rules say (see src/sink/line_protocol.rs).
//!
//! The input is read as a little program: each step takes a byte that says what to add (tag,
//! or a field of some type) and a length-prefixed piece of text. tests/line_protocol.rs checks
//! the same properties with random lines on every `cargo test`.

#![no_main]

use influxdb_line_protocol::{FieldValue, parse_lines};
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use shopfloor::sink::line_protocol::{LineBuilder, Precision};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| (acc << 8) | u64::from(self.byte().unwrap_or(0)))
    }
    fn text(&mut self) -> String {
        let len = usize::from(self.byte().unwrap_or(0) % 24).min(self.0.len());
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(text).into_owned()
    }
}

fn name(text: &str) -> String {
    text.trim_end_matches('\\')
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

enum Want {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(String),
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let measurement = input.text();
    let mut builder = LineBuilder::new(&measurement);
    let mut tags = Vec::new();
    let mut fields: Vec<(String, Want)> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let mut tag_keys = std::collections::HashSet::new();
    while let Some(op) = input.byte() {
        let key = input.text();
        let n = input.u64();
        // Duplicate keys are the caller's business (the engine never makes them); skip them so
        // the comparison below stays one to one.
        if op % 6 == 0 {
            let value = input.text();
            if tag_keys.insert(name(&key)) {
                builder = builder.tag(&key, &value);
                tags.push((name(&key), name(&value)));
            }
            continue;
        }
        if !keys.insert(name(&key)) {
            continue;
        }
        let want = match op % 6 {
            1 => {
                builder = builder.int(&key, n as i64);
                Want::Int(n as i64)
            }
            2 => {
                builder = builder.uint(&key, n);
                Want::Uint(n)
            }
            3 => {
                builder = builder.float(&key, f64::from_bits(n));
                Want::Float(f64::from_bits(n))
            }
            4 => {
                builder = builder.bool(&key, n & 1 == 1);
                Want::Bool(n & 1 == 1)
            }
            _ => {
                let value = input.text();
                builder = builder.string(&key, &value);
                Want::Str(value.replace(['\n', '\r'], " "))
            }
        };
        fields.push((name(&key), want));
    }
    let at = Timestamp::from_nanosecond(i128::from(input.u64() as i64)).unwrap_or_default();
    let Some(line) = builder.finish_with(at, Precision::Ns) else {
        return;
    };
    assert!(!line.contains('\n'), "{line:?}");
    let tags: Vec<_> = tags
        .into_iter()
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect();
    let fields: Vec<_> = fields
        .into_iter()
        .filter(|(k, v)| !k.is_empty() && !matches!(v, Want::Float(f) if !f.is_finite()))
        .collect();
    let parsed: Vec<_> = parse_lines(&line).collect();
    let [Ok(parsed)] = parsed.as_slice() else {
        panic!("{line:?} does not parse as one line: {parsed:?}");
    };
    assert_eq!(parsed.series.measurement.as_str(), name(&measurement));
    let got_tags: Vec<(String, String)> = parsed
        .series
        .tag_set
        .iter()
        .flatten()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got_tags, tags, "{line:?}");
    assert_eq!(parsed.field_set.len(), fields.len(), "{line:?}");
    for ((got_key, got), (key, want)) in parsed.field_set.iter().zip(&fields) {
        assert_eq!(got_key.as_str(), key, "{line:?}");
        let same = match (got, want) {
            (FieldValue::I64(a), Want::Int(b)) => a == b,
            (FieldValue::U64(a), Want::Uint(b)) => a == b,
            (FieldValue::F64(a), Want::Float(b)) => a.to_bits() == b.to_bits(),
            (FieldValue::Boolean(a), Want::Bool(b)) => a == b,
            (FieldValue::String(a), Want::Str(b)) => a.as_str() == b,
            _ => false,
        };
        assert!(same, "{line:?}: field {key:?} read back as {got:?}");
    }
    assert_eq!(parsed.timestamp.map(i128::from), Some(at.as_nanosecond()));
});
