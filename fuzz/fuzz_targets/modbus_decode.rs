//! Fuzzes register decoding: any registers, in any data type, byte order, bit, scale and
//! offset the config can name, through `decode::decode` (what every poll runs), `decode::text`
//! and the table `shopfloor probe` prints of whatever a device answered. Nothing may panic; a
//! float that comes out is finite (the store takes no NaN or infinity), and a decoded number
//! has the type the config says, whatever the registers hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor::model::Value;
use shopfloor::source::modbus::config::{ByteOrder, DataType, RegisterKind};
use shopfloor::source::modbus::{decode, probe};

const TYPES: [DataType; 10] = [
    DataType::Bool,
    DataType::I16,
    DataType::U16,
    DataType::I32,
    DataType::U32,
    DataType::I64,
    DataType::U64,
    DataType::F32,
    DataType::F64,
    DataType::String,
];
const ORDERS: [ByteOrder; 4] = [
    ByteOrder::ABCD,
    ByteOrder::DCBA,
    ByteOrder::BADC,
    ByteOrder::CDAB,
];
const KINDS: [RegisterKind; 4] = [
    RegisterKind::Coil,
    RegisterKind::Discrete,
    RegisterKind::Holding,
    RegisterKind::Input,
];

fn f64_at(data: &[u8], at: usize) -> Option<f64> {
    let bytes: [u8; 8] = data.get(at..at + 8)?.try_into().ok()?;
    Some(f64::from_le_bytes(bytes))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let ty = TYPES[usize::from(data[0]) % TYPES.len()];
    let order = ORDERS[usize::from(data[1]) % ORDERS.len()];
    let flags = data[2];
    let bit = (flags & 1 == 1).then_some(data[3]);
    let mut rest = &data[4..];
    let scale = if flags & 2 == 2 {
        let s = f64_at(rest, 0);
        rest = rest.get(8..).unwrap_or_default();
        s
    } else {
        None
    };
    let offset = if flags & 4 == 4 {
        let o = f64_at(rest, 0);
        rest = rest.get(8..).unwrap_or_default();
        o
    } else {
        None
    };
    let words: Vec<u16> = rest
        .chunks_exact(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect();

    match decode::decode(&words, ty, order, bit, scale, offset) {
        Ok(Value::Float(x)) => {
            assert!(x.is_finite(), "decoded a non-finite float {x}");
            assert!(
                scale.is_some() || offset.is_some() || matches!(ty, DataType::F32 | DataType::F64),
                "{ty:?} without scale or offset decoded as a float"
            );
        }
        Ok(Value::Int(_)) => assert!(
            scale.is_none() && offset.is_none(),
            "{ty:?} with scale or offset stayed an integer"
        ),
        Ok(Value::Bool(_)) => assert_eq!(ty, DataType::Bool),
        Ok(Value::Text(_)) => assert_eq!(ty, DataType::String),
        Err(_) => {}
    }
    let _ = decode::text(&words, order);
    let kind = KINDS[usize::from(flags >> 4) % KINDS.len()];
    let first = u32::from(u16::from_be_bytes([data[3], data[2]])) + u32::from(flags >> 7);
    let words: Vec<u16> = if kind.is_bit() {
        words.iter().map(|w| w & 1).collect()
    } else {
        words
    };
    let _ = probe::table(kind, first, &words);
});
