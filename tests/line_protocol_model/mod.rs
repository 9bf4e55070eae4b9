//! What the line-protocol encoder promises, written once for the property tests
//! (tests/line_protocol.rs) and the fuzz target (fuzz/fuzz_targets/encoder.rs): a line's
//! inputs, how to encode them, and the check that InfluxDB's own parser (the
//! `influxdb-line-protocol` crate) reads back what went in, changed only as the encoder's rules
//! in src/line_protocol/ say.

use influxdb_line_protocol::{FieldValue, parse_lines};
use jiff::Timestamp;
use shopfloor::line_protocol::{LineBuilder, Precision, tag_prefix};

/// What a name reads back as, by the encoder's documented rules (independent of its code).
pub fn expected_name(name: &str) -> String {
    name.trim_end_matches('\\')
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn expected_string(value: &str) -> String {
    value.replace(['\n', '\r'], " ")
}

#[derive(Debug, Clone)]
pub enum Field {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(String),
}

/// One line's inputs.
#[derive(Debug)]
pub struct Case {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, Field)>,
    pub at: Timestamp,
    pub precision: Precision,
}

/// Encodes a case with tags added one by one, or through a [`tag_prefix`].
pub fn encode(case: &Case, via_prefix: bool) -> Option<String> {
    let mut builder = if via_prefix {
        let tags: Vec<(&str, &str)> = case
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        LineBuilder::with_prefix(&tag_prefix(&case.measurement, &tags))
    } else {
        case.tags
            .iter()
            .fold(LineBuilder::new(&case.measurement), |b, (k, v)| b.tag(k, v))
    };
    for (key, value) in &case.fields {
        builder = match value {
            Field::Int(v) => builder.int(key, *v),
            Field::Uint(v) => builder.uint(key, *v),
            Field::Float(v) => builder.float(key, *v),
            Field::Bool(v) => builder.bool(key, *v),
            Field::Str(v) => builder.string(key, v),
        };
    }
    builder.finish_with(case.at, case.precision)
}

/// Checks one case; `Err` says what differed.
pub fn check(case: &Case, line: Option<String>) -> Result<(), String> {
    let measurement = expected_name(&case.measurement);
    let tags: Vec<(String, String)> = case
        .tags
        .iter()
        .map(|(k, v)| (expected_name(k), expected_name(v)))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect();
    let fields: Vec<(String, &Field)> = case
        .fields
        .iter()
        .map(|(k, v)| (expected_name(k), v))
        .filter(|(k, v)| !k.is_empty() && !matches!(v, Field::Float(f) if !f.is_finite()))
        .collect();
    let writable = !measurement.is_empty() && !measurement.starts_with('#') && !fields.is_empty();
    let Some(line) = line else {
        return if writable {
            Err("no line for a writable case".into())
        } else {
            Ok(())
        };
    };
    if !writable {
        return Err(format!("a line for an unwritable case: {line:?}"));
    }
    if line.contains('\n') {
        return Err(format!("line break inside the line: {line:?}"));
    }
    let parsed: Vec<_> = parse_lines(&line).collect();
    let [Ok(parsed)] = parsed.as_slice() else {
        return Err(format!("does not parse as one line: {parsed:?}"));
    };
    if parsed.series.measurement.as_str() != measurement {
        return Err(format!(
            "measurement {:?} != {measurement:?}",
            parsed.series.measurement.as_str()
        ));
    }
    let got_tags: Vec<(String, String)> = parsed
        .series
        .tag_set
        .iter()
        .flatten()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if got_tags != tags {
        return Err(format!("tags {got_tags:?} != {tags:?}"));
    }
    if parsed.field_set.len() != fields.len() {
        return Err(format!(
            "{} fields, expected {}",
            parsed.field_set.len(),
            fields.len()
        ));
    }
    for ((got_key, got), (key, want)) in parsed.field_set.iter().zip(&fields) {
        if got_key.as_str() != key {
            return Err(format!("field key {got_key:?} != {key:?}"));
        }
        let same = match (got, want) {
            (FieldValue::I64(a), Field::Int(b)) => a == b,
            (FieldValue::U64(a), Field::Uint(b)) => a == b,
            (FieldValue::F64(a), Field::Float(b)) => a.to_bits() == b.to_bits(),
            (FieldValue::Boolean(a), Field::Bool(b)) => a == b,
            (FieldValue::String(a), Field::Str(b)) => a.as_str() == expected_string(b),
            _ => false,
        };
        if !same {
            return Err(format!("field {key:?}: {got:?} != {want:?}"));
        }
    }
    let want_ts = case.precision.timestamp(case.at);
    if parsed.timestamp.map(i128::from) != Some(want_ts) {
        return Err(format!("timestamp {:?} != {want_ts}", parsed.timestamp));
    }
    Ok(())
}
