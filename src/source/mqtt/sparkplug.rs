//! Sparkplug B: topics, and the protobuf `Payload` its edge nodes publish.
//!
//! The protobuf code is written by hand rather than generated with prost. Sparkplug needs two
//! messages (`Payload` and `Payload.Metric`) and of those about a dozen scalar fields; the
//! protobuf wire format for them is four encodings (varint, 32-bit, 64-bit, length-delimited)
//! and fits in the two hundred lines below, encoder for the simulator included. prost would
//! add a proc-macro crate and a build-time or committed generated module for the same result,
//! and its generated types would still need the Sparkplug rules (datatypes, aliases) on top.
//! Field numbers follow `sparkplug_b.proto` of the Eclipse Tahu project (Sparkplug 3.0);
//! unknown fields are skipped, so data sets, templates and properties do no harm.
//!
//! Topic namespace: `spBv1.0/<group>/<type>/<edge node>[/<device>]`.

use std::fmt;

use crate::model::Value;

/// The first level of every Sparkplug B topic.
pub const NAMESPACE: &str = "spBv1.0";

/// Sparkplug message types the source acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    /// Commands and anything else: not the source's business.
    Other,
}

/// A parsed Sparkplug topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic<'t> {
    pub group: &'t str,
    pub kind: MessageType,
    pub node: &'t str,
    /// Empty for node-level messages.
    pub device: &'t str,
}

/// Splits a Sparkplug B topic; `None` for anything else (including the host `STATE` topic).
pub fn parse_topic(topic: &str) -> Option<Topic<'_>> {
    let mut parts = topic.split('/');
    if parts.next()? != NAMESPACE {
        return None;
    }
    let group = parts.next()?;
    let kind = match parts.next()? {
        "NBIRTH" => MessageType::NBirth,
        "NDEATH" => MessageType::NDeath,
        "DBIRTH" => MessageType::DBirth,
        "DDEATH" => MessageType::DDeath,
        "NDATA" => MessageType::NData,
        "DDATA" => MessageType::DData,
        _ => MessageType::Other,
    };
    let node = parts.next()?;
    let device = parts.next().unwrap_or("");
    if parts.next().is_some() {
        return None;
    }
    Some(Topic {
        group,
        kind,
        node,
        device,
    })
}

/// Sparkplug B metric datatypes (the `DataType` enum of the specification).
pub mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT8: u32 = 5;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const DATETIME: u32 = 13;
    pub const TEXT: u32 = 14;
    pub const UUID: u32 = 15;
}

/// The value fields of a metric as they are on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Int(u32),
    Long(u64),
    Float(f32),
    Double(f64),
    Bool(bool),
    String(String),
}

/// `Payload.Metric`, the fields the source uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metric {
    pub name: Option<String>,
    pub alias: Option<u64>,
    pub timestamp: Option<u64>,
    /// 0 when the message leaves it out (DATA messages may: the birth declared it).
    pub datatype: u32,
    pub is_null: bool,
    pub value: Option<Raw>,
}

/// `Payload`, the fields the source uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// Milliseconds since the epoch.
    pub timestamp: Option<u64>,
    pub metrics: Vec<Metric>,
    pub seq: Option<u64>,
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(&'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a Sparkplug B payload: {}", self.0)
    }
}

/// Reads protobuf fields from a byte slice.
struct Reader<'b> {
    buf: &'b [u8],
}

/// A field's value as the wire gives it.
enum Wire<'b> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'b [u8]),
    Fixed32(u32),
}

impl<'b> Reader<'b> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self
                .buf
                .split_first()
                .ok_or(DecodeError("truncated varint"))?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError("varint longer than ten bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("field runs past the end"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Wire<'b>)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(
                self.take(8)?
                    .try_into()
                    .map_err(|_| DecodeError("fixed64"))?,
            )),
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| DecodeError("length out of range"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(
                self.take(4)?
                    .try_into()
                    .map_err(|_| DecodeError("fixed32"))?,
            )),
            _ => return Err(DecodeError("unsupported wire type")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn text(bytes: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("text is not UTF-8"))
}

/// Decodes a Sparkplug B payload.
pub fn decode(bytes: &[u8]) -> Result<Payload, DecodeError> {
    let mut payload = Payload::default();
    let mut r = Reader { buf: bytes };
    while let Some((number, wire)) = r.field()? {
        match (number, wire) {
            (1, Wire::Varint(v)) => payload.timestamp = Some(v),
            (2, Wire::Bytes(b)) => payload.metrics.push(decode_metric(b)?),
            (3, Wire::Varint(v)) => payload.seq = Some(v),
            (1..=3, _) => return Err(DecodeError("a payload field has the wrong wire type")),
            _ => {}
        }
    }
    Ok(payload)
}

fn decode_metric(bytes: &[u8]) -> Result<Metric, DecodeError> {
    let mut m = Metric::default();
    let mut r = Reader { buf: bytes };
    while let Some((number, wire)) = r.field()? {
        match (number, wire) {
            (1, Wire::Bytes(b)) => m.name = Some(text(b)?),
            (2, Wire::Varint(v)) => m.alias = Some(v),
            (3, Wire::Varint(v)) => m.timestamp = Some(v),
            (4, Wire::Varint(v)) => m.datatype = u32::try_from(v).unwrap_or(0),
            (7, Wire::Varint(v)) => m.is_null = v != 0,
            (10, Wire::Varint(v)) => m.value = Some(Raw::Int(v as u32)),
            (11, Wire::Varint(v)) => m.value = Some(Raw::Long(v)),
            (12, Wire::Fixed32(v)) => m.value = Some(Raw::Float(f32::from_bits(v))),
            (13, Wire::Fixed64(v)) => m.value = Some(Raw::Double(f64::from_bits(v))),
            (14, Wire::Varint(v)) => m.value = Some(Raw::Bool(v != 0)),
            (15, Wire::Bytes(b)) => m.value = Some(Raw::String(text(b)?)),
            (1..=4 | 7 | 10..=15, _) => {
                return Err(DecodeError("a metric field has the wrong wire type"));
            }
            _ => {}
        }
    }
    Ok(m)
}

/// A metric's value as a signal value, read according to its datatype (`datatype` is the one
/// the message gives, or the one its birth declared). Signed integers of 8 to 32 bits travel as
/// two's complement in the unsigned 32-bit field. `None` for null metrics and datatypes that are
/// not single values (data sets, templates, bytes, arrays).
pub fn value(raw: &Raw, datatype: u32) -> Option<Value> {
    use datatype::*;
    Some(match (datatype, raw) {
        (INT8, Raw::Int(v)) => Value::Int(i64::from(*v as u8 as i8)),
        (INT16, Raw::Int(v)) => Value::Int(i64::from(*v as u16 as i16)),
        (INT32, Raw::Int(v)) => Value::Int(i64::from(*v as i32)),
        (INT64, Raw::Long(v)) => Value::Int(*v as i64),
        (UINT64, Raw::Long(v)) => match i64::try_from(*v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(*v as f64),
        },
        (DATETIME, Raw::Long(v)) => Value::Int(*v as i64),
        (_, Raw::Int(v)) => Value::Int(i64::from(*v)),
        (_, Raw::Long(v)) => Value::Int(*v as i64),
        (_, Raw::Float(v)) => Value::Float(f64::from(*v)),
        (_, Raw::Double(v)) => Value::Float(*v),
        (_, Raw::Bool(v)) => Value::Bool(*v),
        (_, Raw::String(v)) => Value::Text(v.clone()),
    })
}

/// Encodes a payload, for the simulator's edge node and for tests.
pub fn encode(payload: &Payload) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + payload.metrics.len() * 32);
    if let Some(t) = payload.timestamp {
        put_varint_field(&mut out, 1, t);
    }
    let mut metric = Vec::with_capacity(64);
    for m in &payload.metrics {
        metric.clear();
        encode_metric(&mut metric, m);
        put_key(&mut out, 2, 2);
        put_varint(&mut out, metric.len() as u64);
        out.extend_from_slice(&metric);
    }
    if let Some(seq) = payload.seq {
        put_varint_field(&mut out, 3, seq);
    }
    out
}

fn encode_metric(out: &mut Vec<u8>, m: &Metric) {
    if let Some(name) = &m.name {
        put_bytes_field(out, 1, name.as_bytes());
    }
    if let Some(alias) = m.alias {
        put_varint_field(out, 2, alias);
    }
    if let Some(t) = m.timestamp {
        put_varint_field(out, 3, t);
    }
    if m.datatype != 0 {
        put_varint_field(out, 4, u64::from(m.datatype));
    }
    if m.is_null {
        put_varint_field(out, 7, 1);
    }
    match &m.value {
        Some(Raw::Int(v)) => put_varint_field(out, 10, u64::from(*v)),
        Some(Raw::Long(v)) => put_varint_field(out, 11, *v),
        Some(Raw::Float(v)) => {
            put_key(out, 12, 5);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Some(Raw::Double(v)) => {
            put_key(out, 13, 1);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Some(Raw::Bool(v)) => put_varint_field(out, 14, u64::from(*v)),
        Some(Raw::String(v)) => put_bytes_field(out, 15, v.as_bytes()),
        None => {}
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, number: u64, wire: u64) {
    put_varint(out, (number << 3) | wire);
}

fn put_varint_field(out: &mut Vec<u8>, number: u64, v: u64) {
    put_key(out, number, 0);
    put_varint(out, v);
}

fn put_bytes_field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_key(out, number, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_split_into_group_type_node_and_device() {
        assert_eq!(
            parse_topic("spBv1.0/shop1/DDATA/edge1/cnc03"),
            Some(Topic {
                group: "shop1",
                kind: MessageType::DData,
                node: "edge1",
                device: "cnc03"
            })
        );
        let node = parse_topic("spBv1.0/shop1/NDEATH/edge1").unwrap();
        assert_eq!((node.kind, node.device), (MessageType::NDeath, ""));
        assert_eq!(
            parse_topic("spBv1.0/shop1/NCMD/edge1").map(|t| t.kind),
            Some(MessageType::Other)
        );
        assert_eq!(parse_topic("spBv1.0/STATE/host"), None);
        assert_eq!(parse_topic("plant/cnc03/data"), None);
        assert_eq!(parse_topic("spBv1.0/g/DDATA/n/d/extra"), None);
    }

    /// Bytes written out by hand from the protobuf encoding rules, so the decoder is checked
    /// against the format and not only against our own encoder.
    #[test]
    fn decodes_a_payload_written_by_hand() {
        let bytes = [
            0x08, 0xE8, 0x07, // 1: timestamp = 1000 (varint 0xE8 0x07)
            0x12, 0x0B, // 2: metric, 11 bytes
            0x0A, 0x03, b'r', b'p', b'm', // 1: name "rpm"
            0x10, 0x05, // 2: alias 5
            0x20, 0x03, // 4: datatype Int32
            0x50, 0x7B, // 10: int_value 123
            0x12, 0x09, // 2: metric, 9 bytes
            0x10, 0x06, // 2: alias 6
            0x65, 0x00, 0x00, 0x20, 0x41, // 12: float_value 10.0 (0x41200000 little-endian)
            0x70,
            0x01, // 14: boolean_value true (wrong for a float, last value wins on the wire)
            0x18, 0x2A, // 3: seq 42
            0xA2, 0x06, 0x01, 0x00, // 100: unknown length-delimited field, skipped
        ];
        let p = decode(&bytes).unwrap();
        assert_eq!(p.timestamp, Some(1000));
        assert_eq!(p.seq, Some(42));
        assert_eq!(p.metrics.len(), 2);
        assert_eq!(p.metrics[0].name.as_deref(), Some("rpm"));
        assert_eq!(p.metrics[0].alias, Some(5));
        assert_eq!(p.metrics[0].value, Some(Raw::Int(123)));
        assert_eq!(p.metrics[1].alias, Some(6));
        assert_eq!(p.metrics[1].value, Some(Raw::Bool(true)));
    }

    #[test]
    fn encode_then_decode_gives_the_payload_back() {
        let p = Payload {
            timestamp: Some(1_714_521_600_000),
            seq: Some(255),
            metrics: vec![
                Metric {
                    name: Some("Spindle/RPM".into()),
                    alias: Some(1),
                    datatype: datatype::DOUBLE,
                    value: Some(Raw::Double(8000.5)),
                    ..Metric::default()
                },
                Metric {
                    alias: Some(300),
                    timestamp: Some(1_714_521_600_123),
                    datatype: datatype::STRING,
                    value: Some(Raw::String("O1234".into())),
                    ..Metric::default()
                },
                Metric {
                    name: Some("Alarm".into()),
                    datatype: datatype::INT16,
                    is_null: true,
                    ..Metric::default()
                },
            ],
        };
        assert_eq!(decode(&encode(&p)), Ok(p));
    }

    #[test]
    fn broken_payloads_are_errors_not_panics() {
        assert!(decode(&[0x08]).is_err(), "truncated varint");
        assert!(decode(&[0x12, 0x05, 0x0A]).is_err(), "length past the end");
        assert!(decode(&[0x0B]).is_err(), "wire type 3 (groups)");
        assert!(decode(&[0x0A, 0x00]).is_err(), "timestamp as bytes");
        assert!(decode(&[0xFF; 11]).is_err(), "endless varint");
        assert!(decode(b"{\"rpm\": 1}").is_err(), "JSON is not Sparkplug");
        assert_eq!(decode(&[]), Ok(Payload::default()));
    }

    #[test]
    fn signed_integers_are_read_by_datatype() {
        use datatype::*;
        // -2 as Int8 may travel as 0xFE or as the 32-bit 0xFFFFFFFE: both read -2.
        assert_eq!(value(&Raw::Int(0xFE), INT8), Some(Value::Int(-2)));
        assert_eq!(value(&Raw::Int(0xFFFF_FFFE), INT8), Some(Value::Int(-2)));
        assert_eq!(value(&Raw::Int(0xFFFF_FFFE), INT16), Some(Value::Int(-2)));
        assert_eq!(value(&Raw::Int(0xFFFF_FFFE), INT32), Some(Value::Int(-2)));
        assert_eq!(
            value(&Raw::Int(0xFFFF_FFFE), UINT32),
            Some(Value::Int(4_294_967_294))
        );
        assert_eq!(value(&Raw::Long(u64::MAX), INT64), Some(Value::Int(-1)));
        assert_eq!(
            value(&Raw::Long(u64::MAX), UINT64),
            Some(Value::Float(u64::MAX as f64))
        );
        assert_eq!(value(&Raw::Float(1.5), FLOAT), Some(Value::Float(1.5)));
        assert_eq!(value(&Raw::Bool(true), 0), Some(Value::Bool(true)));
    }
}
