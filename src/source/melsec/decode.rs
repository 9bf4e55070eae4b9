//! PLC words to values: pure functions, no I/O. In binary MC frames every word is
//! little-endian (low byte first), and a value longer than a word keeps its low word first
//! (D100 holds the low half of a 32-bit value, D101 the high half), so a value's bytes on the
//! wire are simply its little-endian bytes. The value's type follows the field's declared type,
//! never the bytes (a field keeps one type forever in the store).

use super::address::McType;
use crate::model::Value;
use crate::source::number::{NumberError, Raw};

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
    #[error("u64 value {0} does not fit the integer field type (i64)")]
    OutOfRange(u64),
    #[error("{points} points need {needed} bytes in bit units, the answer has {got}")]
    BitCount {
        points: usize,
        needed: usize,
        got: usize,
    },
    #[error("point {point} reads {nibble:#x}; in bit units a point is 0 or 1")]
    NotABit { point: usize, nibble: u8 },
}

/// The value of a field of type `ty` whose words start `bytes` (wire order), scaled by
/// `scale` and shifted by `offset` when either is given (which makes it a float). A bool is
/// bit `bit` (0–15) of the first word, or the word being non-zero without one; bools of bit
/// devices read in bit units come from [`bit_points`] instead.
pub fn decode(
    ty: McType,
    bytes: &[u8],
    bit: Option<u8>,
    scale: Option<f64>,
    offset: Option<f64>,
) -> Result<Value, DecodeError> {
    let needed = 2 * usize::from(ty.words());
    if bytes.len() < needed {
        return Err(DecodeError::TooShort {
            ty: ty.name(),
            needed,
            got: bytes.len(),
        });
    }
    let le = |n: usize| -> u64 {
        bytes[..n]
            .iter()
            .rev()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
    };
    let raw = match ty {
        McType::Bool => {
            let word = le(2) as u16;
            return Ok(Value::Bool(match bit {
                Some(bit) => word >> (bit & 15) & 1 == 1,
                None => word != 0,
            }));
        }
        McType::String { .. } => return Ok(Value::Text(text(&bytes[..needed]))),
        McType::I16 => Raw::Int(i64::from(le(2) as u16 as i16)),
        McType::U16 => Raw::Int(le(2) as i64),
        McType::I32 => Raw::Int(i64::from(le(4) as u32 as i32)),
        McType::U32 => Raw::Int(le(4) as i64),
        McType::F32 => Raw::Float(f64::from(f32::from_bits(le(4) as u32))),
        McType::I64 => Raw::Int(le(8) as i64),
        McType::U64 => Raw::Unsigned(le(8)),
        McType::F64 => Raw::Float(f64::from_bits(le(8))),
    };
    crate::source::number::value(raw, scale, offset).map_err(DecodeError::from)
}

impl From<NumberError> for DecodeError {
    fn from(e: NumberError) -> Self {
        match e {
            NumberError::NotFinite(x) => DecodeError::NotFinite(x),
            NumberError::OutOfRange(u) => DecodeError::OutOfRange(u),
        }
    }
}

/// Text from words: two characters per word, the first in the low byte, which is the order
/// they lie on the wire; up to the first NUL, without trailing spaces. Bytes that are not
/// UTF-8 (Shift-JIS or GBK from an HMI) become U+FFFD rather than failing the field: a
/// half-readable name is more use than none.
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
        .trim_end_matches(' ')
        .to_string()
}

/// The points of an answer in bit units: four bits per point, two points per byte, the
/// first point in the high nibble; an odd count leaves the last low nibble unused. A nibble
/// other than 0 or 1 is a lying answer, not a point.
pub fn bit_points(bytes: &[u8], points: usize) -> Result<Vec<bool>, DecodeError> {
    let needed = points.div_ceil(2);
    if bytes.len() != needed {
        return Err(DecodeError::BitCount {
            points,
            needed,
            got: bytes.len(),
        });
    }
    (0..points)
        .map(|point| {
            let byte = bytes[point / 2];
            let nibble = if point % 2 == 0 {
                byte >> 4
            } else {
                byte & 0x0F
            };
            match nibble {
                0 => Ok(false),
                1 => Ok(true),
                nibble => Err(DecodeError::NotABit { point, nibble }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use McType::*;

    fn v(ty: McType, bytes: &[u8]) -> Value {
        decode(ty, bytes, None, None, None).unwrap_or_else(|e| panic!("{ty:?} {bytes:?}: {e}"))
    }

    #[test]
    fn words_are_little_endian_and_keep_their_sign() {
        // D350 in the reference's example: AB 56 → 0x56AB = 22187.
        assert_eq!(v(U16, &[0xAB, 0x56]), Value::Int(22187));
        // FE FF → 0xFFFE: 65534 unsigned, −2 signed.
        assert_eq!(v(U16, &[0xFE, 0xFF]), Value::Int(65534));
        assert_eq!(v(I16, &[0xFE, 0xFF]), Value::Int(-2));
    }

    #[test]
    fn two_word_values_are_low_word_first() {
        // 100000 = 0x0001_86A0: D100 = 0x86A0 (A0 86), D101 = 0x0001 (01 00).
        assert_eq!(v(I32, &[0xA0, 0x86, 0x01, 0x00]), Value::Int(100_000));
        assert_eq!(v(U32, &[0xFF, 0xFF, 0xFF, 0xFF]), Value::Int(4_294_967_295));
        assert_eq!(v(I32, &[0xFF, 0xFF, 0xFF, 0xFF]), Value::Int(-1));
        // 123.456 as an IEEE 754 single is 0x42F6E979: low word E979 (79 E9), high 42F6 (F6 42).
        assert_eq!(
            v(F32, &[0x79, 0xE9, 0xF6, 0x42]),
            Value::Float(f64::from(123.456f32))
        );
    }

    #[test]
    fn four_word_values_are_low_word_first() {
        // −1.5 as a double is 0xBFF8_0000_0000_0000: little-endian bytes 00 … F8 BF.
        assert_eq!(v(F64, &[0, 0, 0, 0, 0, 0, 0xF8, 0xBF]), Value::Float(-1.5));
        // 2^32 + 7 = 0x0000_0001_0000_0007.
        assert_eq!(v(I64, &[7, 0, 0, 0, 1, 0, 0, 0]), Value::Int(4_294_967_303));
        assert_eq!(
            v(I64, &[0xF9, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Value::Int(-7)
        );
        assert_eq!(
            decode(U64, &[0xFF; 8], None, None, None),
            Err(DecodeError::OutOfRange(u64::MAX))
        );
    }

    #[test]
    fn a_bool_is_its_bit_of_the_word() {
        // The reference's bit-device-in-word-units example: 32 points from M16 answer
        // 12 AB CD 34. The first word is 0xAB12: M16 is b0 (0), M17 b1 (1), M20 b4 (1),
        // M24 b8 (0xAB bit 0 = 1), M31 b15 (0xAB bit 7 = 1).
        let data = [0x12, 0xAB, 0xCD, 0x34];
        let bit = |n| decode(Bool, &data, Some(n), None, None).unwrap();
        assert_eq!(bit(0), Value::Bool(false));
        assert_eq!(bit(1), Value::Bool(true));
        assert_eq!(bit(4), Value::Bool(true));
        assert_eq!(bit(8), Value::Bool(true));
        assert_eq!(bit(15), Value::Bool(true));
        assert_eq!(bit(14), Value::Bool(false));
        // D100.3 of a word 0x0008.
        assert_eq!(
            decode(Bool, &[0x08, 0x00], Some(3), None, None),
            Ok(Value::Bool(true))
        );
        assert_eq!(v(Bool, &[0, 0]), Value::Bool(false));
    }

    #[test]
    fn bit_units_are_nibbles_high_first() {
        // The FX3U-ENET-ADP manual's example, same nibble order as 3E: M100–M107 answer
        // 10 10 01 10: M100 on, M101 off, M102 on, M103 off, M104 off, M105 on, M106 on,
        // M107 off.
        assert_eq!(
            bit_points(&[0x10, 0x10, 0x01, 0x10], 8),
            Ok(vec![true, false, true, false, false, true, true, false])
        );
        // Three points in two bytes; the last low nibble is padding.
        assert_eq!(bit_points(&[0x01, 0x10], 3), Ok(vec![false, true, true]));
        assert_eq!(
            bit_points(&[0x01], 3),
            Err(DecodeError::BitCount {
                points: 3,
                needed: 2,
                got: 1
            })
        );
        assert_eq!(
            bit_points(&[0x13], 2),
            Err(DecodeError::NotABit {
                point: 1,
                nibble: 3
            })
        );
        assert_eq!(bit_points(&[], 0), Ok(vec![]));
    }

    #[test]
    fn strings_are_two_characters_a_word_low_byte_first() {
        // "AB12" in D0–D1: D0 = 0x4241 ('A' low, 'B' high), D1 = 0x3231.
        assert_eq!(v(String { words: 2 }, b"AB12"), Value::Text("AB12".into()));
        // Stops at the first NUL and drops trailing spaces.
        assert_eq!(
            v(String { words: 3 }, &[b'O', b'K', b' ', b' ', 0, b'x']),
            Value::Text("OK".into())
        );
        // UTF-8 "机" (E6 9C BA) survives; a broken byte becomes U+FFFD.
        assert_eq!(
            v(String { words: 2 }, &[0xE6, 0x9C, 0xBA, 0]),
            Value::Text("机".into())
        );
        assert_eq!(
            v(String { words: 1 }, &[0xFF, b'A']),
            Value::Text("\u{FFFD}A".into())
        );
        assert!(matches!(
            decode(String { words: 4 }, &[b'A'; 6], None, None, None),
            Err(DecodeError::TooShort {
                needed: 8,
                got: 6,
                ..
            })
        ));
    }

    #[test]
    fn scale_makes_a_float_and_bad_values_are_errors() {
        // 1234 × 0.1 + 5 = 128.4; 1234 = 0x04D2 → D2 04.
        let got = decode(I16, &[0xD2, 0x04], None, Some(0.1), Some(5.0)).unwrap();
        assert!(
            matches!(got, Value::Float(x) if (x - 128.4).abs() < 1e-9),
            "{got:?}"
        );
        // A NaN single: 0x7FC00000 → 00 00 C0 7F.
        assert!(matches!(
            decode(F32, &[0, 0, 0xC0, 0x7F], None, None, None),
            Err(DecodeError::NotFinite(_))
        ));
        assert!(matches!(
            decode(I32, &[0, 0], None, None, None),
            Err(DecodeError::TooShort {
                needed: 4,
                got: 2,
                ..
            })
        ));
        // No input panics: every type over every short slice.
        for ty in [
            Bool,
            I16,
            U16,
            I32,
            U32,
            F32,
            I64,
            U64,
            F64,
            String { words: 3 },
        ] {
            for n in 0..8 {
                let _ = decode(ty, &[0xFF; 8][..n], Some(15), None, None);
            }
        }
    }
}
