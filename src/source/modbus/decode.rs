//! Registers to values: pure functions, no I/O, tested against bytes worked out by hand.

use super::config::{ByteOrder, DataType, ModbusField};
use crate::model::Value;
use crate::source::number::{NumberError, Raw};

/// Why a field's registers could not be turned into a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("{ty:?} needs {needed} registers, got {got}")]
    TooShort {
        ty: DataType,
        needed: usize,
        got: usize,
    },
    #[error("value {0} is not a finite number")]
    NotFinite(f64),
    #[error("u64 value {0} does not fit the integer field type (i64)")]
    OutOfRange(u64),
}

/// Puts the bytes of `words` (as sent on the wire, each register big-endian) into big-endian
/// order `A B C D …` according to the declared order. [`decode`] does the same on the stack for
/// numbers; the test `stack_and_vec_orderings_agree` keeps the two in step.
fn ordered_bytes(words: &[u16], order: ByteOrder) -> Vec<u8> {
    let wire: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    match order {
        ByteOrder::ABCD => wire,
        // Little-endian: the wire holds D C B A.
        ByteOrder::DCBA => wire.into_iter().rev().collect(),
        // Bytes swapped inside each register: the wire holds B A D C.
        ByteOrder::BADC => wire
            .chunks_exact(2)
            .flat_map(|pair| [pair[1], pair[0]])
            .collect(),
        // Registers in reverse order: the wire holds C D A B.
        ByteOrder::CDAB => wire
            .chunks_exact(2)
            .rev()
            .flat_map(|pair| [pair[0], pair[1]])
            .collect(),
    }
}

/// What decoding needs of a field, and no more: a device task keeps one per field for as
/// long as it runs, so a large register map should not cost its whole config twice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Codec {
    pub ty: DataType,
    pub order: ByteOrder,
    pub bit: Option<u8>,
    pub scale: Option<f64>,
    pub offset: Option<f64>,
}

impl From<&ModbusField> for Codec {
    fn from(field: &ModbusField) -> Self {
        Codec {
            ty: field.data_type(),
            order: field.order,
            bit: field.bit,
            scale: field.scale,
            offset: field.offset,
        }
    }
}

impl Codec {
    /// Decodes the field from the registers the plan cut out for it.
    pub fn decode(&self, words: &[u16]) -> Result<Value, DecodeError> {
        decode(
            words,
            self.ty,
            self.order,
            self.bit,
            self.scale,
            self.offset,
        )
    }
}

/// Text from registers: the bytes in big-endian order after `order` (so `ABCD` is the usual
/// "first character in the high byte", and `BADC` the byte-swapped text some controllers
/// send), up to the first NUL, without trailing spaces. Bytes that are not UTF-8 become U+FFFD
/// rather than failing the field: a half-readable name is more use than none.
pub fn text(words: &[u16], order: ByteOrder) -> String {
    let bytes = ordered_bytes(words, order);
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
        .trim_end_matches(' ')
        .to_string()
}

/// Decodes one value from its registers. `bit` picks one bit of a register for a bool; a
/// string takes all of `words`. Integers stay integers unless `scale` or `offset` is given,
/// which makes a float: a field keeps one type forever in the store, so the type follows the
/// config, never the value.
pub fn decode(
    words: &[u16],
    ty: DataType,
    order: ByteOrder,
    bit: Option<u8>,
    scale: Option<f64>,
    offset: Option<f64>,
) -> Result<Value, DecodeError> {
    let needed = usize::from(ty.registers());
    if words.len() < needed {
        return Err(DecodeError::TooShort {
            ty,
            needed,
            got: words.len(),
        });
    }
    if ty == DataType::String {
        return Ok(Value::Text(text(words, order)));
    }
    // Numbers are at most four registers: order them on the stack, not in a Vec (this runs
    // for every value of every poll).
    let mut b = [0u8; 8];
    let n = 2 * needed;
    for (i, w) in words[..needed].iter().enumerate() {
        b[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
    }
    match order {
        ByteOrder::ABCD => {}
        ByteOrder::DCBA => b[..n].reverse(),
        ByteOrder::BADC => b[..n].chunks_exact_mut(2).for_each(|pair| pair.swap(0, 1)),
        ByteOrder::CDAB => {
            // Reverse the registers: reverse all bytes, then swap each pair back.
            b[..n].reverse();
            b[..n].chunks_exact_mut(2).for_each(|pair| pair.swap(0, 1));
        }
    }
    let raw = match ty {
        DataType::String => unreachable!("strings return above"),
        DataType::Bool => {
            let word = u16::from_be_bytes([b[0], b[1]]);
            return Ok(Value::Bool(match bit {
                Some(bit) => word >> (bit & 15) & 1 == 1,
                None => word != 0,
            }));
        }
        DataType::I16 => Raw::Int(i64::from(i16::from_be_bytes([b[0], b[1]]))),
        DataType::U16 => Raw::Int(i64::from(u16::from_be_bytes([b[0], b[1]]))),
        DataType::I32 => Raw::Int(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::U32 => Raw::Int(i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::F32 => Raw::Float(f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        DataType::I64 => Raw::Int(i64::from_be_bytes(b)),
        DataType::U64 => Raw::Unsigned(u64::from_be_bytes(b)),
        DataType::F64 => Raw::Float(f64::from_be_bytes(b)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use ByteOrder::*;
    use DataType::*;

    fn d(words: &[u16], ty: DataType, order: ByteOrder) -> Value {
        decode(words, ty, order, None, None, None).unwrap()
    }

    #[test]
    fn u32_in_every_byte_order() {
        // 0x12345678 = 305419896. Bytes A=12 B=34 C=56 D=78.
        // ABCD on the wire: 1234 5678; CDAB: 5678 1234; BADC: 3412 7856; DCBA: 7856 3412.
        assert_eq!(d(&[0x1234, 0x5678], U32, ABCD), Value::Int(305_419_896));
        assert_eq!(d(&[0x5678, 0x1234], U32, CDAB), Value::Int(305_419_896));
        assert_eq!(d(&[0x3412, 0x7856], U32, BADC), Value::Int(305_419_896));
        assert_eq!(d(&[0x7856, 0x3412], U32, DCBA), Value::Int(305_419_896));
    }

    #[test]
    fn f32_in_every_byte_order() {
        // 123.456f32 = 0x42F6E979: A=42 B=F6 C=E9 D=79.
        let expect = Value::Float(f64::from(123.456f32));
        assert_eq!(d(&[0x42F6, 0xE979], F32, ABCD), expect);
        assert_eq!(d(&[0xE979, 0x42F6], F32, CDAB), expect);
        assert_eq!(d(&[0xF642, 0x79E9], F32, BADC), expect);
        assert_eq!(d(&[0x79E9, 0xF642], F32, DCBA), expect);
    }

    #[test]
    fn sixty_four_bit_types_in_every_byte_order() {
        // 1.0f64 = 0x3FF0_0000_0000_0000.
        assert_eq!(d(&[0x3FF0, 0, 0, 0], F64, ABCD), Value::Float(1.0));
        assert_eq!(d(&[0, 0, 0, 0xF03F], F64, DCBA), Value::Float(1.0));
        assert_eq!(d(&[0xF03F, 0, 0, 0], F64, BADC), Value::Float(1.0));
        assert_eq!(d(&[0, 0, 0, 0x3FF0], F64, CDAB), Value::Float(1.0));
        // -2 as i64 = 0xFFFF_FFFF_FFFF_FFFE.
        assert_eq!(
            d(&[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], I64, ABCD),
            Value::Int(-2)
        );
        assert_eq!(
            d(&[0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], I64, CDAB),
            Value::Int(-2)
        );
        // 2^40 + 5 as u64 = 0x0000_0100_0000_0005.
        assert_eq!(d(&[0, 0x0100, 0, 5], U64, ABCD), Value::Int((1 << 40) + 5));
    }

    #[test]
    fn u64_beyond_i64_is_an_error_not_a_wrapped_number() {
        let err = decode(&[0xFFFF; 4], U64, ABCD, None, None, None).unwrap_err();
        assert_eq!(err, DecodeError::OutOfRange(u64::MAX));
    }

    #[test]
    fn sixteen_bit_types_and_byte_swap() {
        // 0xFF38 = -200 as i16, 65336 as u16; BADC/DCBA swap the two bytes: 0x38FF on the wire.
        assert_eq!(d(&[0xFF38], I16, ABCD), Value::Int(-200));
        assert_eq!(d(&[0xFF38], U16, CDAB), Value::Int(65336));
        assert_eq!(d(&[0x38FF], I16, BADC), Value::Int(-200));
        assert_eq!(d(&[0x38FF], I16, DCBA), Value::Int(-200));
    }

    #[test]
    fn bits_of_a_register() {
        // 0b0000_0000_0010_0001: bits 0 and 5 set.
        let word = [0x0021];
        let bit = |n| decode(&word, Bool, ABCD, Some(n), None, None).unwrap();
        assert_eq!(bit(0), Value::Bool(true));
        assert_eq!(bit(1), Value::Bool(false));
        assert_eq!(bit(5), Value::Bool(true));
        assert_eq!(bit(15), Value::Bool(false));
    }

    #[test]
    fn scale_and_offset_make_a_float() {
        // Energy counter in 0.01 kWh: 0x0001_86A0 = 100000 → 1000.00 kWh.
        let v = decode(&[0x0001, 0x86A0], U32, ABCD, None, Some(0.01), None).unwrap();
        assert_eq!(v, Value::Float(1000.0));
        // Temperature in 0.1 °C with -40 offset: 650 × 0.1 − 40 = 25.0.
        let v = decode(&[650], U16, ABCD, None, Some(0.1), Some(-40.0)).unwrap();
        assert_eq!(v, Value::Float(25.0));
    }

    #[test]
    fn stack_and_vec_orderings_agree() {
        let words = [0x0102, 0x0304, 0x0506, 0x0708];
        for order in ByteOrder::ALL {
            let v = ordered_bytes(&words, order);
            let expect = u64::from_be_bytes(v.try_into().unwrap());
            assert_eq!(
                d(&words, U64, order),
                Value::Int(expect as i64),
                "{order:?}"
            );
        }
        // CDAB of four registers is the registers reversed: 0708 0506 0304 0102.
        assert_eq!(d(&words, U64, CDAB), Value::Int(0x0708_0506_0304_0102));
    }

    #[test]
    fn strings_in_every_byte_order() {
        // "O1001" + NUL: bytes 4F 31 30 30 31 00 (then padding 00 00).
        // ABCD (first character in the high byte): 4F31 3030 3100 0000.
        let s = |w: &[u16], o| d(w, String, o);
        let text = Value::Text("O1001".into());
        assert_eq!(s(&[0x4F31, 0x3030, 0x3100, 0x0000], ABCD), text);
        // BADC swaps the bytes in each register: 314F 3030 0031 0000.
        assert_eq!(s(&[0x314F, 0x3030, 0x0031, 0x0000], BADC), text);
        // CDAB reverses the register order: 0000 3100 3030 4F31.
        assert_eq!(s(&[0x0000, 0x3100, 0x3030, 0x4F31], CDAB), text);
        // DCBA reverses every byte: 0000 0031 3030 314F.
        assert_eq!(s(&[0x0000, 0x0031, 0x3030, 0x314F], DCBA), text);
    }

    #[test]
    fn strings_drop_trailing_spaces_and_keep_bad_bytes_visible() {
        // "AB  " space-padded: 4142 2020 → "AB".
        assert_eq!(d(&[0x4142, 0x2020], String, ABCD), Value::Text("AB".into()));
        // 0xFF is not UTF-8: it shows as U+FFFD instead of losing the field.
        assert_eq!(d(&[0x41FF], String, ABCD), Value::Text("A\u{FFFD}".into()));
        // A NUL first ends the text at once: 0x0041 is NUL, 'A'.
        assert_eq!(
            d(&[0x0041], String, ABCD),
            Value::Text(std::string::String::new())
        );
    }

    #[test]
    fn nan_and_short_input_are_errors() {
        // 0x7FC00000 is a quiet NaN.
        assert!(matches!(
            decode(&[0x7FC0, 0], F32, ABCD, None, None, None),
            Err(DecodeError::NotFinite(_))
        ));
        assert_eq!(
            decode(&[1], U32, ABCD, None, None, None),
            Err(DecodeError::TooShort {
                ty: U32,
                needed: 2,
                got: 1
            })
        );
    }
}
