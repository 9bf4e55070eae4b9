//! Fuzzes what the OPC UA source does itself with server data and config text: node id
//! parsing (any text; what parses prints a canonical form that parses back to the same
//! address) and the mapping of a server's variants to values (any variant of the built-in
//! scalar types, arrays of them, nested variants, any status code and timestamps, any index
//! and declared type). Nothing may panic; a float that comes out is finite; a value has the
//! declared type; a Bad status never becomes a value.
//!
//! Input: selector byte, then either node id text (selector even) or a variant description.
//!
//! Run so far (2026-12-06, the instrumented build of fuzz/Cargo.toml, 2 shared cores): 180,000
//! runs to the first crash (`b==` parsed to an empty opaque id that printed as the refused
//! `b=`; fixed, input in regressions/opcua), then 3.7 M runs in 300 s without one; on
//! 2026-12-07 the release build of fuzz/Cargo.toml's comment ran 10 M in 33 s without a crash
//! (docs/RELIABILITY.md, fifth round).

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use opcua::types::{Array, DataValue, DateTime, StatusCode, Variant, VariantScalarTypeId};
use shopfloor::model::{SignalType, Value};
use shopfloor::source::opcua::node_id::NodeAddress;
use shopfloor::source::opcua::value::{ValueError, reading};

const TYPES: [SignalType; 4] = [
    SignalType::Float,
    SignalType::Int,
    SignalType::Bool,
    SignalType::String,
];

/// Reads variants out of the fuzzer's bytes: one byte picks the type, the next bytes its value.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, b) in self.0.iter().take(N).enumerate() {
            out[i] = *b;
        }
        self.0 = &self.0[N.min(self.0.len())..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn variant(&mut self, depth: u8) -> Variant {
        match self.u8() % 17 {
            0 => Variant::Empty,
            1 => Variant::Boolean(self.u8() & 1 == 1),
            2 => Variant::SByte(i8::from_le_bytes(self.take())),
            3 => Variant::Byte(self.u8()),
            4 => Variant::Int16(i16::from_le_bytes(self.take())),
            5 => Variant::UInt16(u16::from_le_bytes(self.take())),
            6 => Variant::Int32(i32::from_le_bytes(self.take())),
            7 => Variant::UInt32(u32::from_le_bytes(self.take())),
            8 => Variant::Int64(i64::from_le_bytes(self.take())),
            9 => Variant::UInt64(u64::from_le_bytes(self.take())),
            10 => Variant::Float(f32::from_le_bytes(self.take())),
            11 => Variant::Double(f64::from_le_bytes(self.take())),
            12 => {
                let n = usize::from(self.u8() % 16);
                let text = String::from_utf8_lossy(&self.0[..n.min(self.0.len())]).into_owned();
                self.0 = &self.0[n.min(self.0.len())..];
                Variant::from(text)
            }
            13 => Variant::DateTime(Box::new(DateTime::from(i64::from_le_bytes(self.take())))),
            14 => Variant::StatusCode(StatusCode::from(u32::from_le_bytes(self.take()))),
            15 if depth < 3 => Variant::Variant(Box::new(self.variant(depth + 1))),
            _ if depth < 3 => {
                let n = self.u8() % 8;
                let values: Vec<Variant> = (0..n).map(|_| Variant::Double(f64::from_le_bytes(self.take()))).collect();
                match Array::new(VariantScalarTypeId::Double, values) {
                    Ok(a) => Variant::Array(Box::new(a)),
                    Err(_) => Variant::Empty,
                }
            }
            _ => Variant::Empty,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Ok(address) = NodeAddress::parse(&text) {
            let canonical = address.to_string();
            assert_eq!(NodeAddress::parse(&canonical).as_ref(), Ok(&address), "{canonical}");
        }
        return;
    }
    let mut b = Bytes(rest);
    let want = TYPES[usize::from(selector >> 1) % TYPES.len()];
    let index = match b.u8() {
        0..=127 => None,
        i => Some(u32::from(i - 128)),
    };
    let status = StatusCode::from(u32::from_le_bytes(b.take()));
    let source = DateTime::from(i64::from_le_bytes(b.take()));
    let value = b.variant(0);
    let dv = DataValue {
        value: Some(value),
        status: Some(status),
        source_timestamp: Some(source),
        ..Default::default()
    };
    let now = jiff::Timestamp::now();
    match reading(&dv, index, want, now, Duration::from_secs(600)) {
        Ok(r) => {
            assert!(!status.is_bad());
            match (&r.value, want) {
                (Value::Float(x), SignalType::Float) => assert!(x.is_finite()),
                (Value::Int(_), SignalType::Int)
                | (Value::Bool(_), SignalType::Bool)
                | (Value::Text(_), SignalType::String) => {}
                (v, t) => panic!("{v:?} for a {t:?} signal"),
            }
        }
        Err(ValueError::Bad(s)) => assert!(s.is_bad()),
        Err(_) => {}
    }
});
