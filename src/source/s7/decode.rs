//! PLC bytes to values: pure functions, no I/O. Every S7 type is big-endian in the PLC's
//! memory; the value's type follows the field's declared type, never the bytes (a field keeps
//! one type forever in the store).

use super::address::S7Type;
use crate::model::Value;
use crate::source::number::{self, NumberError, Raw};

/// Why a field's bytes could not be turned into a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{ty} needs {needed} bytes, got {got}")]
    TooShort {
        ty: &'static str,
        needed: usize,
        got: usize,
    },
    #[error("value {0} is not a finite number")]
    NotFinite(f64),
    #[error("{0} value {1} does not fit the integer field type (i64)")]
    OutOfRange(&'static str, u64),
    #[error("{0} holds {1:#06x}, which is not BCD")]
    NotBcd(&'static str, u16),
    #[error("the string says it holds {len} characters, but has room for {room}")]
    StringLength { len: usize, room: usize },
}

/// The value of a field of type `ty` whose bytes start `bytes` (`bit` for a bool), scaled by
/// `scale` and shifted by `offset` when either is given (which makes it a float).
pub fn decode(
    ty: S7Type,
    bytes: &[u8],
    bit: u8,
    scale: Option<f64>,
    offset: Option<f64>,
) -> Result<Value, DecodeError> {
    use S7Type::*;
    let needed = match ty {
        // A string is read whole, but only its header and its actual characters must be there.
        String { .. } => 2,
        WString { .. } => 4,
        _ => ty.size() as usize,
    };
    if bytes.len() < needed {
        return Err(DecodeError::TooShort {
            ty: ty.name(),
            needed,
            got: bytes.len(),
        });
    }
    let be = |n: usize| -> u64 {
        bytes[..n]
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
    };
    let raw = match ty {
        Bool => return Ok(Value::Bool(bytes[0] >> (bit & 7) & 1 == 1)),
        Char => return Ok(Value::Text(char::from(bytes[0]).to_string())),
        String { .. } => return s7_string(bytes).map(Value::Text),
        WString { .. } => return s7_wstring(bytes).map(Value::Text),
        Byte | USInt => Raw::Int(i64::from(bytes[0])),
        SInt => Raw::Int(i64::from(bytes[0] as i8)),
        Word | UInt => Raw::Int(be(2) as i64),
        Int => Raw::Int(i64::from(be(2) as u16 as i16)),
        DWord | UDInt => Raw::Int(be(4) as i64),
        DInt | Time => Raw::Int(i64::from(be(4) as u32 as i32)),
        Real => Raw::Float(f64::from(f32::from_bits(be(4) as u32))),
        LReal => Raw::Float(f64::from_bits(be(8))),
        LInt => Raw::Int(be(8) as i64),
        ULInt | LWord => Raw::Unsigned(be(8)),
        S5Time | Timer => Raw::Int(s5time_ms(ty.name(), be(2) as u16)?),
        Counter => Raw::Int(i64::from(bcd3(ty.name(), be(2) as u16)?)),
    };
    number::value(raw, scale, offset).map_err(|e| match e {
        NumberError::NotFinite(x) => DecodeError::NotFinite(x),
        NumberError::OutOfRange(u) => DecodeError::OutOfRange(ty.name(), u),
    })
}

/// Three BCD digits in the low twelve bits.
fn bcd3(ty: &'static str, word: u16) -> Result<u16, DecodeError> {
    let digits = [word >> 8 & 0xF, word >> 4 & 0xF, word & 0xF];
    if digits.iter().any(|d| *d > 9) {
        return Err(DecodeError::NotBcd(ty, word));
    }
    Ok(digits[0] * 100 + digits[1] * 10 + digits[2])
}

/// S5TIME: bits 12–13 the time base (10 ms, 100 ms, 1 s, 10 s), bits 0–11 three BCD digits.
fn s5time_ms(ty: &'static str, word: u16) -> Result<i64, DecodeError> {
    let base = [10, 100, 1_000, 10_000][usize::from(word >> 12 & 0x3)];
    Ok(i64::from(bcd3(ty, word)?) * base)
}

/// STRING: maximum length, actual length, characters. The characters are taken as UTF-8 when
/// they are (a Chinese HMI may write UTF-8 into a STRING), else as Latin-1, byte for byte.
fn s7_string(bytes: &[u8]) -> Result<std::string::String, DecodeError> {
    let len = usize::from(bytes[1]);
    let room = usize::from(bytes[0]).min(bytes.len() - 2);
    if len > room {
        return Err(DecodeError::StringLength { len, room });
    }
    let chars = &bytes[2..2 + len];
    Ok(match std::str::from_utf8(chars) {
        Ok(s) => s.to_string(),
        Err(_) => chars.iter().map(|b| char::from(*b)).collect(),
    })
}

/// WSTRING: maximum and actual length in words, then UTF-16 big-endian characters; a broken
/// surrogate becomes U+FFFD.
fn s7_wstring(bytes: &[u8]) -> Result<std::string::String, DecodeError> {
    let max = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    let room = max.min((bytes.len() - 4) / 2);
    if len > room {
        return Err(DecodeError::StringLength { len, room });
    }
    let units = bytes[4..4 + 2 * len]
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]));
    Ok(char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use S7Type::*;

    fn v(ty: S7Type, bytes: &[u8]) -> Value {
        decode(ty, bytes, 0, None, None).unwrap_or_else(|e| panic!("{ty:?} {bytes:?}: {e}"))
    }

    #[test]
    fn numbers_are_big_endian_and_keep_their_sign() {
        assert_eq!(v(Byte, &[0xFE]), Value::Int(254));
        assert_eq!(v(SInt, &[0xFE]), Value::Int(-2));
        assert_eq!(v(Word, &[0xFF, 0xFE]), Value::Int(65534));
        assert_eq!(v(Int, &[0xFF, 0xFE]), Value::Int(-2));
        // 0x0001_0000 = 65536.
        assert_eq!(v(DWord, &[0, 1, 0, 0]), Value::Int(65536));
        assert_eq!(v(DInt, &[0xFF, 0xFF, 0xFF, 0xFF]), Value::Int(-1));
        // 0x42F6E979 is 123.456 as an IEEE 754 single: f32 123.456 → f64.
        assert_eq!(
            v(Real, &[0x42, 0xF6, 0xE9, 0x79]),
            Value::Float(f64::from(123.456f32))
        );
        assert_eq!(v(LReal, &(-1.5f64).to_be_bytes()), Value::Float(-1.5));
        assert_eq!(v(LInt, &(-7i64).to_be_bytes()), Value::Int(-7));
        assert_eq!(v(Time, &(-250i32).to_be_bytes()), Value::Int(-250));
    }

    #[test]
    fn a_bool_is_its_bit_of_the_byte() {
        // 0b0000_1000: bit 3 set.
        assert_eq!(decode(Bool, &[0x08], 3, None, None), Ok(Value::Bool(true)));
        assert_eq!(decode(Bool, &[0x08], 2, None, None), Ok(Value::Bool(false)));
    }

    #[test]
    fn timers_counters_and_s5time_are_bcd() {
        // S5TIME 0x2123: base 2 (1 s), digits 123 → 123 000 ms.
        assert_eq!(v(S5Time, &[0x21, 0x23]), Value::Int(123_000));
        // Base 0 (10 ms), 999 → 9 990 ms.
        assert_eq!(v(Timer, &[0x09, 0x99]), Value::Int(9_990));
        assert_eq!(v(Counter, &[0x00, 0x42]), Value::Int(42));
        assert_eq!(
            decode(Counter, &[0x00, 0x4A], 0, None, None),
            Err(DecodeError::NotBcd("counter", 0x004A))
        );
    }

    #[test]
    fn strings_use_their_actual_length_and_are_bounded_by_their_room() {
        // STRING[10] holding "AB".
        let s = [10, 2, b'A', b'B', 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(v(String { max: 10 }, &s), Value::Text("AB".into()));
        // UTF-8 "机" (E6 9C BA) in a STRING, and Latin-1 where the bytes are not UTF-8.
        assert_eq!(
            v(String { max: 4 }, &[4, 3, 0xE6, 0x9C, 0xBA, 0]),
            Value::Text("机".into())
        );
        assert_eq!(
            v(String { max: 2 }, &[2, 1, 0xE9, 0]),
            Value::Text("é".into())
        );
        // An actual length past the maximum or past the bytes read.
        assert!(matches!(
            decode(String { max: 2 }, &[2, 5, 1, 2], 0, None, None),
            Err(DecodeError::StringLength { len: 5, room: 2 })
        ));
        // WSTRING[4] holding "机床" (U+673A U+5E8A).
        let w = [0, 4, 0, 2, 0x67, 0x3A, 0x5E, 0x8A, 0, 0, 0, 0];
        assert_eq!(v(WString { max: 4 }, &w), Value::Text("机床".into()));
        assert!(decode(WString { max: 4 }, &[0, 4, 0, 9, 0, 0], 0, None, None).is_err());
    }

    #[test]
    fn scale_makes_a_float_and_bad_values_are_errors() {
        // 1234 × 0.1 + 5 = 128.4.
        let got = decode(Int, &[0x04, 0xD2], 0, Some(0.1), Some(5.0)).unwrap();
        assert!(
            matches!(got, Value::Float(x) if (x - 128.4).abs() < 1e-9),
            "{got:?}"
        );
        assert!(matches!(
            decode(Real, &[0x7F, 0xC0, 0, 0], 0, None, None),
            Err(DecodeError::NotFinite(_))
        ));
        assert!(matches!(
            decode(ULInt, &[0xFF; 8], 0, None, None),
            Err(DecodeError::OutOfRange("ulint", u64::MAX))
        ));
        assert!(matches!(
            decode(DInt, &[0, 0], 0, None, None),
            Err(DecodeError::TooShort {
                needed: 4,
                got: 2,
                ..
            })
        ));
    }
}
