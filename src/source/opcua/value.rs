//! From what an OPC UA server answers (a `DataValue`: variant, status code, timestamps) to a
//! signal's [`Value`], its quality and its timestamp. Pure: no session, no clock of its own.
//!
//! # Types
//!
//! Each node is mapped to a signal with a declared type (`float`, `int`, `bool`, `string`), the
//! type its field keeps in the store forever, as for Modbus and MQTT. A variant is converted to
//! it when that is exact, and is otherwise refused (counted as a bad value, never written):
//!
//! | declared | accepted variants |
//! |---|---|
//! | `float` | every numeric type (SByte … UInt64, Float, Double), Boolean as 0/1; not NaN or ±∞ |
//! | `int` | every integer type (UInt64 above 2⁶³−1 is refused), Boolean as 0/1, a Float or Double that is a whole number in range, DateTime as Unix milliseconds |
//! | `bool` | Boolean, an integer that is 0 or 1 |
//! | `string` | String, LocalizedText (its text), QualifiedName (its name), DateTime (RFC 3339, UTC), Guid, NodeId, StatusCode (its name), and numbers and Booleans as their text |
//!
//! A Float is widened with `f64::from`, as the Modbus source does for `f32` registers.
//!
//! # Arrays
//!
//! An array node maps element by element: one `[[opcua.group.node]]` per element, naming it
//! with `index` (0-based; for a multi-dimensional array, the index into the values in the
//! order the server sends them, the last dimension fastest). Chosen over a rule that names
//! every element (`axis_load_{i}`) because a field is forever: a rule would make new fields
//! appear whenever the server's array grows, and would write elements nobody mapped. An array
//! without `index`, or an index past the end, is refused.
//!
//! # Status codes
//!
//! - **Good**: the value is written.
//! - **Uncertain** (e.g. `UncertainLastUsableValue`, `UncertainSensorNotAccurate`): the value is
//!   written, with [`Quality::Uncertain`]; the source adds a `<signal>_quality = "uncertain"`
//!   string field beside it (see the module doc of [`super`] for the contract extension).
//! - **Bad** (`BadNodeIdUnknown`, `BadCommunicationError`, `BadWaitingForInitialData`, …):
//!   refused as [`ValueError::Bad`]; the source counts it and writes nothing, so a bad value
//!   never looks like a good one and a missing value stays missing.
//!
//! # Timestamps
//!
//! The source timestamp (when the value changed at its origin) when the server sends one, else
//! the server timestamp, else the time the agent received the value. Controllers with an unset
//! clock are common (an S7's default date, a CNC set to local time as if it were UTC), so a
//! timestamp further than `max_skew` from the agent's clock is replaced by the next choice,
//! and the source counts it. Picoseconds are ignored (the store keeps nanoseconds at best and
//! the pipeline stamps in milliseconds or coarser).

use std::time::Duration;

use jiff::Timestamp;
use opcua::types::{DataValue, DateTime, StatusCode, Variant};

use crate::model::{SignalType, Value};

/// How sure the server is of a value. Bad values never get this far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    Uncertain,
}

/// Which of a value's timestamps was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    Source,
    Server,
    /// Neither came, or both were too far from the agent's clock.
    Received,
}

/// One value ready to become a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub value: Value,
    pub quality: Quality,
    pub at: Timestamp,
    pub time_source: TimeSource,
    /// A timestamp came but was further than `max_skew` from the agent's clock.
    pub skewed: bool,
}

/// Why a value is not written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("the server says the value is bad ({0})")]
    Bad(StatusCode),
    #[error("the server sent no value")]
    NoValue,
    #[error("the node holds an array of {len}: name one element with `index`")]
    ArrayWithoutIndex { len: usize },
    #[error("`index = {index}` is past the end of the node's array of {len}")]
    IndexPastEnd { index: u32, len: usize },
    #[error("`index` is set but the node holds a single {0}, not an array")]
    NotAnArray(&'static str),
    #[error("a {found} cannot be written as {}", .wanted.with_article())]
    Mismatch {
        found: &'static str,
        wanted: SignalType,
    },
    #[error("{value} is out of range for an integer field")]
    OutOfRange { value: String },
    #[error("the value is not a finite number ({0})")]
    NotFinite(f64),
}

/// Ticks (100 ns) from 1601-01-01, OPC UA's epoch, to 1970-01-01.
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// An OPC UA DateTime as a UTC timestamp; `None` for the null DateTime (OPC UA's "no time",
/// tick 0) and for times jiff cannot hold.
pub fn timestamp_of(t: &DateTime) -> Option<Timestamp> {
    let ticks = t.checked_ticks();
    if ticks <= 0 || ticks == i64::MAX {
        return None;
    }
    let since_unix = i128::from(ticks - UNIX_EPOCH_TICKS) * 100;
    Timestamp::from_nanosecond(since_unix).ok()
}

/// The whole mapping of one data value: status, timestamp, variant, element and type.
pub fn reading(
    dv: &DataValue,
    index: Option<u32>,
    want: SignalType,
    received: Timestamp,
    max_skew: Duration,
) -> Result<Reading, ValueError> {
    let status = dv.status.unwrap_or(StatusCode::Good);
    if status.is_bad() {
        return Err(ValueError::Bad(status));
    }
    let quality = if status.is_uncertain() {
        Quality::Uncertain
    } else {
        Quality::Good
    };
    let variant = dv.value.as_ref().ok_or(ValueError::NoValue)?;
    let value = convert(variant, index, want)?;
    let (at, time_source, skewed) = pick_timestamp(dv, received, max_skew);
    Ok(Reading {
        value,
        quality,
        at,
        time_source,
        skewed,
    })
}

/// Source timestamp, else server timestamp, else `received`; a timestamp further than
/// `max_skew` from `received` is passed over (and reported as skewed).
pub fn pick_timestamp(
    dv: &DataValue,
    received: Timestamp,
    max_skew: Duration,
) -> (Timestamp, TimeSource, bool) {
    let mut skewed = false;
    for (t, source) in [
        (dv.source_timestamp.as_ref(), TimeSource::Source),
        (dv.server_timestamp.as_ref(), TimeSource::Server),
    ] {
        let Some(at) = t.and_then(timestamp_of) else {
            continue;
        };
        let off = received.duration_since(at).unsigned_abs();
        if off <= max_skew {
            return (at, source, skewed);
        }
        skewed = true;
    }
    (received, TimeSource::Received, skewed)
}

/// A variant (or, with `index`, one element of an array variant) as a value of type `want`.
pub fn convert(
    variant: &Variant,
    index: Option<u32>,
    want: SignalType,
) -> Result<Value, ValueError> {
    let scalar = element(variant, index, 0)?;
    scalar_to(scalar, want)
}

fn element(variant: &Variant, index: Option<u32>, depth: u8) -> Result<&Variant, ValueError> {
    match (variant, index) {
        // A variant inside a variant (allowed by the encoding): look inside, a few levels deep.
        (Variant::Variant(inner), _) if depth < 4 => element(inner, index, depth + 1),
        (Variant::Array(a), None) => Err(ValueError::ArrayWithoutIndex {
            len: a.values.len(),
        }),
        (Variant::Array(a), Some(i)) => {
            let v = usize::try_from(i)
                .ok()
                .and_then(|i| a.values.get(i))
                .ok_or(ValueError::IndexPastEnd {
                    index: i,
                    len: a.values.len(),
                })?;
            match v {
                Variant::Array(_) => Err(ValueError::Mismatch {
                    found: "nested array",
                    wanted: SignalType::String,
                }),
                Variant::Variant(inner) if depth < 4 => element(inner, None, depth + 1),
                v => Ok(v),
            }
        }
        (Variant::Empty, _) => Err(ValueError::NoValue),
        (v, Some(_)) => Err(ValueError::NotAnArray(type_name(v))),
        (v, None) => Ok(v),
    }
}

/// The OPC UA name of a variant's type, for messages.
pub fn type_name(v: &Variant) -> &'static str {
    match v {
        Variant::Empty => "null",
        Variant::Boolean(_) => "Boolean",
        Variant::SByte(_) => "SByte",
        Variant::Byte(_) => "Byte",
        Variant::Int16(_) => "Int16",
        Variant::UInt16(_) => "UInt16",
        Variant::Int32(_) => "Int32",
        Variant::UInt32(_) => "UInt32",
        Variant::Int64(_) => "Int64",
        Variant::UInt64(_) => "UInt64",
        Variant::Float(_) => "Float",
        Variant::Double(_) => "Double",
        Variant::String(_) => "String",
        Variant::DateTime(_) => "DateTime",
        Variant::Guid(_) => "Guid",
        Variant::StatusCode(_) => "StatusCode",
        Variant::ByteString(_) => "ByteString",
        Variant::XmlElement(_) => "XmlElement",
        Variant::QualifiedName(_) => "QualifiedName",
        Variant::LocalizedText(_) => "LocalizedText",
        Variant::NodeId(_) => "NodeId",
        Variant::ExpandedNodeId(_) => "ExpandedNodeId",
        Variant::ExtensionObject(_) => "ExtensionObject (structure)",
        Variant::Variant(_) => "Variant",
        Variant::DataValue(_) => "DataValue",
        Variant::DiagnosticInfo(_) => "DiagnosticInfo",
        Variant::Array(_) => "array",
    }
}

/// The variant as an integer when it is one of the integer types or a Boolean.
fn integer(v: &Variant) -> Option<i128> {
    Some(match v {
        Variant::Boolean(b) => i128::from(*b),
        Variant::SByte(x) => i128::from(*x),
        Variant::Byte(x) => i128::from(*x),
        Variant::Int16(x) => i128::from(*x),
        Variant::UInt16(x) => i128::from(*x),
        Variant::Int32(x) => i128::from(*x),
        Variant::UInt32(x) => i128::from(*x),
        Variant::Int64(x) => i128::from(*x),
        Variant::UInt64(x) => i128::from(*x),
        _ => return None,
    })
}

fn float(v: &Variant) -> Option<f64> {
    match v {
        Variant::Float(x) => Some(f64::from(*x)),
        Variant::Double(x) => Some(*x),
        _ => None,
    }
}

fn text(s: &opcua::types::UAString) -> Result<Value, ValueError> {
    s.value()
        .as_ref()
        .map(|s| Value::Text(s.clone()))
        .ok_or(ValueError::NoValue)
}

fn scalar_to(v: &Variant, want: SignalType) -> Result<Value, ValueError> {
    let mismatch = || ValueError::Mismatch {
        found: type_name(v),
        wanted: want,
    };
    match want {
        SignalType::Float => {
            let x = float(v)
                .or_else(|| integer(v).map(|i| i as f64))
                .ok_or_else(mismatch)?;
            if x.is_finite() {
                Ok(Value::Float(x))
            } else {
                Err(ValueError::NotFinite(x))
            }
        }
        SignalType::Int => {
            if let Some(i) = integer(v) {
                return i64::try_from(i)
                    .map(Value::Int)
                    .map_err(|_| ValueError::OutOfRange {
                        value: i.to_string(),
                    });
            }
            if let Some(x) = float(v) {
                // Exactly representable whole numbers only: 2⁶³ itself is out of range.
                if x.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&x)
                {
                    return Ok(Value::Int(x as i64));
                }
                return Err(if x.is_finite() && x.fract() == 0.0 {
                    ValueError::OutOfRange {
                        value: x.to_string(),
                    }
                } else {
                    mismatch()
                });
            }
            if let Variant::DateTime(t) = v {
                return timestamp_of(t)
                    .map(|t| Value::Int(t.as_millisecond()))
                    .ok_or(ValueError::NoValue);
            }
            Err(mismatch())
        }
        SignalType::Bool => match v {
            Variant::Boolean(b) => Ok(Value::Bool(*b)),
            v => match integer(v) {
                Some(0) => Ok(Value::Bool(false)),
                Some(1) => Ok(Value::Bool(true)),
                _ => Err(mismatch()),
            },
        },
        SignalType::String => match v {
            Variant::String(s) => text(s),
            Variant::LocalizedText(t) => text(&t.text),
            Variant::QualifiedName(q) => text(&q.name),
            Variant::DateTime(t) => timestamp_of(t)
                .map(|t| Value::Text(t.to_string()))
                .ok_or(ValueError::NoValue),
            Variant::Guid(g) => Ok(Value::Text(g.to_string())),
            Variant::NodeId(n) => Ok(Value::Text(n.to_string())),
            Variant::StatusCode(s) => Ok(Value::Text(s.to_string())),
            Variant::Boolean(b) => Ok(Value::Text(b.to_string())),
            v => {
                if let Some(i) = integer(v) {
                    Ok(Value::Text(i.to_string()))
                } else if let Some(x) = float(v) {
                    Ok(Value::Text(x.to_string()))
                } else {
                    Err(mismatch())
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua::types::{Array, LocalizedText, VariantScalarTypeId};

    fn ok(v: Variant, want: SignalType) -> Value {
        convert(&v, None, want).unwrap_or_else(|e| panic!("{v:?} as {want:?}: {e}"))
    }

    fn refused(v: Variant, want: SignalType) -> String {
        convert(&v, None, want)
            .map(|x| panic!("{v:?} as {want:?} gave {x:?}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn every_built_in_number_becomes_an_int_and_a_float() {
        let cases: Vec<(Variant, i64)> = vec![
            (Variant::SByte(-128), -128),
            (Variant::Byte(255), 255),
            (Variant::Int16(-32768), -32768),
            (Variant::UInt16(65535), 65535),
            (Variant::Int32(i32::MIN), i64::from(i32::MIN)),
            (Variant::UInt32(u32::MAX), i64::from(u32::MAX)),
            (Variant::Int64(i64::MIN), i64::MIN),
            (Variant::UInt64(i64::MAX as u64), i64::MAX),
            (Variant::Boolean(true), 1),
            (Variant::Float(-3.0), -3),
            (Variant::Double(1e15), 1_000_000_000_000_000),
        ];
        for (v, i) in cases {
            assert_eq!(ok(v.clone(), SignalType::Int), Value::Int(i), "{v:?}");
            assert_eq!(
                ok(v.clone(), SignalType::Float),
                Value::Float(i as f64),
                "{v:?}"
            );
        }
        assert_eq!(
            ok(Variant::Float(123.456), SignalType::Float),
            Value::Float(f64::from(123.456f32))
        );
        assert_eq!(
            ok(Variant::Double(0.1), SignalType::Float),
            Value::Float(0.1)
        );
    }

    #[test]
    fn what_would_not_be_exact_is_refused() {
        assert!(refused(Variant::UInt64(u64::MAX), SignalType::Int).contains("out of range"));
        assert!(refused(Variant::Double(2.5), SignalType::Int).contains("Double cannot be"));
        assert!(refused(Variant::Double(1e19), SignalType::Int).contains("out of range"));
        assert!(
            refused(Variant::Double(9.223_372_036_854_776e18), SignalType::Int)
                .contains("out of range")
        );
        assert!(refused(Variant::Double(f64::NAN), SignalType::Float).contains("finite"));
        assert!(refused(Variant::Float(f32::INFINITY), SignalType::Float).contains("finite"));
        assert!(refused(Variant::Double(f64::NAN), SignalType::Int).contains("Double"));
        assert!(refused(Variant::Int16(2), SignalType::Bool).contains("as a bool"));
        assert!(refused(Variant::from("x"), SignalType::Float).contains("String cannot be"));
        assert!(
            refused(Variant::ByteString(vec![1u8].into()), SignalType::String)
                .contains("ByteString")
        );
        assert!(refused(Variant::Empty, SignalType::Int).contains("no value"));
    }

    #[test]
    fn booleans_strings_and_text() {
        assert_eq!(
            ok(Variant::Boolean(false), SignalType::Bool),
            Value::Bool(false)
        );
        assert_eq!(ok(Variant::Byte(1), SignalType::Bool), Value::Bool(true));
        assert_eq!(
            ok(Variant::from("AUTO 运行"), SignalType::String),
            Value::Text("AUTO 运行".into())
        );
        assert_eq!(
            ok(
                Variant::LocalizedText(Box::new(LocalizedText::new("en", "Ready"))),
                SignalType::String
            ),
            Value::Text("Ready".into())
        );
        assert_eq!(
            ok(Variant::Int32(-7), SignalType::String),
            Value::Text("-7".into())
        );
        assert_eq!(
            ok(Variant::Boolean(true), SignalType::String),
            Value::Text("true".into())
        );
        assert_eq!(
            ok(
                Variant::StatusCode(StatusCode::BadTimeout),
                SignalType::String
            ),
            Value::Text("BadTimeout".into())
        );
        assert!(
            refused(
                Variant::String(opcua::types::UAString::null()),
                SignalType::String
            )
            .contains("no value")
        );
    }

    #[test]
    fn a_date_time_is_unix_milliseconds_or_rfc3339_text() {
        let t = DateTime::ymd_hms(2026, 12, 6, 8, 30, 15);
        assert_eq!(
            ok(Variant::DateTime(Box::new(t)), SignalType::Int),
            // 2026-12-06T08:30:15Z
            Value::Int(
                "2026-12-06T08:30:15Z"
                    .parse::<Timestamp>()
                    .unwrap()
                    .as_millisecond()
            )
        );
        assert_eq!(
            ok(Variant::DateTime(Box::new(t)), SignalType::String),
            Value::Text("2026-12-06T08:30:15Z".into())
        );
        assert!(
            refused(
                Variant::DateTime(Box::new(DateTime::null())),
                SignalType::Int
            )
            .contains("no value")
        );
    }

    fn array(values: Vec<Variant>) -> Variant {
        let t = match values.first() {
            Some(Variant::Double(_)) => VariantScalarTypeId::Double,
            _ => VariantScalarTypeId::Int32,
        };
        Variant::Array(Box::new(Array::new(t, values).unwrap()))
    }

    #[test]
    fn an_array_maps_only_the_named_element() {
        let a = array(vec![
            Variant::Double(1.5),
            Variant::Double(2.5),
            Variant::Double(3.5),
        ]);
        assert_eq!(
            convert(&a, Some(2), SignalType::Float),
            Ok(Value::Float(3.5))
        );
        assert_eq!(
            convert(&a, Some(0), SignalType::Float),
            Ok(Value::Float(1.5))
        );
        let e = convert(&a, None, SignalType::Float)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("array of 3: name one element with `index`"),
            "{e}"
        );
        let e = convert(&a, Some(3), SignalType::Float)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`index = 3` is past the end of the node's array of 3"),
            "{e}"
        );
        let e = convert(&Variant::Int32(1), Some(0), SignalType::Int)
            .unwrap_err()
            .to_string();
        assert!(e.contains("single Int32, not an array"), "{e}");
    }

    fn dv(v: Variant, status: Option<StatusCode>) -> DataValue {
        DataValue {
            value: Some(v),
            status,
            ..Default::default()
        }
    }

    const SKEW: Duration = Duration::from_secs(600);

    #[test]
    fn good_is_written_uncertain_is_marked_bad_is_refused() {
        let now: Timestamp = "2026-12-06T08:00:00Z".parse().unwrap();
        let r = reading(
            &dv(Variant::Int32(5), None),
            None,
            SignalType::Int,
            now,
            SKEW,
        )
        .unwrap();
        assert_eq!((r.value, r.quality), (Value::Int(5), Quality::Good));
        let r = reading(
            &dv(
                Variant::Int32(5),
                Some(StatusCode::UncertainLastUsableValue),
            ),
            None,
            SignalType::Int,
            now,
            SKEW,
        )
        .unwrap();
        assert_eq!((r.value, r.quality), (Value::Int(5), Quality::Uncertain));
        let e = reading(
            &dv(Variant::Int32(5), Some(StatusCode::BadCommunicationError)),
            None,
            SignalType::Int,
            now,
            SKEW,
        )
        .unwrap_err();
        assert_eq!(e, ValueError::Bad(StatusCode::BadCommunicationError));
        assert!(e.to_string().contains("BadCommunicationError"), "{e}");
    }

    #[test]
    fn the_source_timestamp_wins_then_the_server_then_arrival() {
        let now: Timestamp = "2026-12-06T08:00:00Z".parse().unwrap();
        let source = DateTime::ymd_hms(2026, 12, 6, 7, 59, 58);
        let server = DateTime::ymd_hms(2026, 12, 6, 7, 59, 59);
        let mut d = dv(Variant::Int32(1), None);
        d.source_timestamp = Some(source);
        d.server_timestamp = Some(server);
        let (at, from, skewed) = pick_timestamp(&d, now, SKEW);
        assert_eq!(
            (at.to_string().as_str(), from, skewed),
            ("2026-12-06T07:59:58Z", TimeSource::Source, false)
        );
        d.source_timestamp = None;
        let (at, from, _) = pick_timestamp(&d, now, SKEW);
        assert_eq!(
            (at.to_string().as_str(), from),
            ("2026-12-06T07:59:59Z", TimeSource::Server)
        );
        d.server_timestamp = None;
        assert_eq!(
            pick_timestamp(&d, now, SKEW),
            (now, TimeSource::Received, false)
        );
        // A PLC whose clock was never set: its source timestamp is passed over.
        d.source_timestamp = Some(DateTime::ymd_hms(2012, 1, 1, 0, 0, 0));
        d.server_timestamp = Some(server);
        let (at, from, skewed) = pick_timestamp(&d, now, SKEW);
        assert_eq!(
            (at.to_string().as_str(), from, skewed),
            ("2026-12-06T07:59:59Z", TimeSource::Server, true)
        );
        // OPC UA's null DateTime means "no timestamp", not 1601.
        d.source_timestamp = Some(DateTime::null());
        d.server_timestamp = None;
        assert_eq!(
            pick_timestamp(&d, now, SKEW),
            (now, TimeSource::Received, false)
        );
    }
}
