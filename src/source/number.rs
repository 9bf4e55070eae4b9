//! The last step of every protocol's decoding: a number as the device held it becomes the
//! field's value. Scaled or offset when the field says so (which makes it a float, since a
//! field keeps one type forever in the store), never a NaN or an infinity (the store refuses
//! them), and never a u64 wrapped into the store's i64.

use crate::model::Value;

/// A number as a device held it, before the field's scale and offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw {
    Int(i64),
    Unsigned(u64),
    Float(f64),
}

/// Why a number cannot be a field's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumberError {
    /// NaN or an infinity, read or made by the scale.
    NotFinite(f64),
    /// An unsigned value above i64's range.
    OutOfRange(u64),
}

/// `raw × scale + offset` as a float when either is given; else the number as it is.
pub fn value(raw: Raw, scale: Option<f64>, offset: Option<f64>) -> Result<Value, NumberError> {
    if scale.is_some() || offset.is_some() {
        let x = match raw {
            Raw::Int(i) => i as f64,
            Raw::Unsigned(u) => u as f64,
            Raw::Float(f) => f,
        };
        return finite(x * scale.unwrap_or(1.0) + offset.unwrap_or(0.0));
    }
    match raw {
        Raw::Int(i) => Ok(Value::Int(i)),
        Raw::Unsigned(u) => i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| NumberError::OutOfRange(u)),
        Raw::Float(f) => finite(f),
    }
}

fn finite(x: f64) -> Result<Value, NumberError> {
    if x.is_finite() {
        Ok(Value::Float(x))
    } else {
        Err(NumberError::NotFinite(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_makes_a_float_and_bad_numbers_are_refused() {
        // 1234 × 0.1 + 5 = 128.4.
        assert!(
            matches!(value(Raw::Int(1234), Some(0.1), Some(5.0)), Ok(Value::Float(x)) if (x - 128.4).abs() < 1e-9)
        );
        assert_eq!(value(Raw::Int(-7), None, None), Ok(Value::Int(-7)));
        assert_eq!(
            value(Raw::Unsigned(u64::MAX), None, None),
            Err(NumberError::OutOfRange(u64::MAX))
        );
        assert!(matches!(
            value(Raw::Float(f64::NAN), None, None),
            Err(NumberError::NotFinite(_))
        ));
        // A finite value scaled past f64's range is refused too.
        assert!(matches!(
            value(Raw::Float(1e308), Some(10.0), None),
            Err(NumberError::NotFinite(_))
        ));
    }
}
