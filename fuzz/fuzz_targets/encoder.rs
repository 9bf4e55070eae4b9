//! Fuzzes the line-protocol encoder: any names, values, timestamp and precision the fuzzer
//! makes up are encoded; the encoder must not panic, must never put a line break inside a
//! line, and what it writes must parse back (with InfluxDB's own parser) to what went in,
//! changed only as the encoder's rules say. The check is the one the property tests use
//! (tests/line_protocol_model), which run on every `cargo test`.
//!
//! The input is read as a little program: each step takes a byte that says what to add (a
//! tag, or a field of some type), a length-prefixed key and a value.

#![no_main]

#[path = "../../tests/line_protocol_model/mod.rs"]
mod line_protocol_model;

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use line_protocol_model::{Case, Field, check, encode};
use shopfloor::line_protocol::Precision;

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

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let measurement = input.text();
    let precision = [Precision::Ns, Precision::Us, Precision::Ms, Precision::S]
        [usize::from(input.byte().unwrap_or(0) % 4)];
    let mut tags = Vec::new();
    let mut fields = Vec::new();
    while let Some(op) = input.byte() {
        let key = input.text();
        let n = input.u64();
        match op % 6 {
            0 => tags.push((key, input.text())),
            1 => fields.push((key, Field::Int(n as i64))),
            2 => fields.push((key, Field::Uint(n))),
            3 => fields.push((key, Field::Float(f64::from_bits(n)))),
            4 => fields.push((key, Field::Bool(n & 1 == 1))),
            _ => fields.push((key, Field::Str(input.text()))),
        }
    }
    // Within the i64 nanoseconds the stores take (1677–2262).
    let at = Timestamp::from_nanosecond(i128::from(input.u64() as i64)).unwrap_or_default();
    let case = Case {
        measurement,
        tags,
        fields,
        at,
        precision,
    };
    for via_prefix in [false, true] {
        let line = encode(&case, via_prefix);
        if let Err(why) = check(&case, line.clone()) {
            panic!("{why}\ncase: {case:?}\nline: {line:?}");
        }
    }
});
