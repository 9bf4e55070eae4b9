//! Payloads as values: JSON paths, plain text, timestamps, and the conversion of whatever
//! arrived into the type a signal was declared with.
//!
//! The conversion is where "a field keeps one type forever" is kept: the store rejects a whole
//! batch when a field changes type, so a value that cannot be converted exactly is refused here
//! (and counted by the caller) rather than written as something else.

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use serde::de;
use serde_json::Value as Json;

use crate::model::SignalType;
use crate::model::Value;

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A path into a JSON document: `spindle.rpm`, `axes[0].load`, `[2]`, `status.alarms[0]`.
/// Keys are separated by dots and array elements taken with `[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let mut steps = Vec::new();
        let bad = |why: &str| format!("path `{text}`: {why}");
        if text.is_empty() {
            return Err(bad("empty"));
        }
        for (i, part) in text.split('.').enumerate() {
            let (key, mut indexes) = match part.find('[') {
                Some(at) => part.split_at(at),
                None => (part, ""),
            };
            if key.is_empty() && (i > 0 || indexes.is_empty()) {
                return Err(bad("an empty key (two dots, or a dot at an end)"));
            }
            if !key.is_empty() {
                steps.push(Step::Key(key.to_string()));
            }
            while !indexes.is_empty() {
                let close = indexes.find(']').ok_or_else(|| bad("`[` without `]`"))?;
                let index = indexes[1..close]
                    .parse()
                    .map_err(|_| bad("an array index is a whole number, like [0]"))?;
                steps.push(Step::Index(index));
                indexes = &indexes[close + 1..];
                if !indexes.is_empty() && !indexes.starts_with('[') {
                    return Err(bad("write a key after an index with a dot: `a[0].b`"));
                }
            }
        }
        Ok(JsonPath { steps })
    }

    /// The value at the path, if the document has one there.
    pub fn get<'j>(&self, doc: &'j Json) -> Option<&'j Json> {
        self.steps.iter().try_fold(doc, |node, step| match step {
            Step::Key(k) => node.get(k.as_str()),
            Step::Index(i) => node.get(*i),
        })
    }
}

/// A JSON value found at a path, as [`Paths::read`] keeps it: a scalar (text borrowed from the
/// payload where it has no escapes), or only the kind of a container.
#[derive(Debug, Clone, PartialEq)]
pub enum Found<'a> {
    Null,
    Bool(bool),
    /// A whole number that fits an `i64`.
    Int(i64),
    /// Any other number (a fraction, or a whole number past `i64`).
    Float(f64),
    Text(Cow<'a, str>),
    Array,
    Object,
}

impl<'a> Found<'a> {
    /// What a `serde_json::Value` holds, in the same terms.
    pub fn of(j: &'a Json) -> Found<'a> {
        match j {
            Json::Null => Found::Null,
            Json::Bool(b) => Found::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Found::Int(i),
                None => Found::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Found::Text(Cow::Borrowed(s)),
            Json::Array(_) => Found::Array,
            Json::Object(_) => Found::Object,
        }
    }
}

/// One node of [`Paths`]: the slot of the path that ends here, and the steps that go on.
#[derive(Debug, Clone, Default)]
struct PathNode {
    slot: Option<usize>,
    keys: Vec<(String, usize)>,
    indexes: Vec<(usize, usize)>,
    /// Every slot at or below this node, emptied when a duplicate key enters it again (the
    /// last of duplicate keys counts, as in a `serde_json::Value`).
    below: Vec<usize>,
}

/// The JSON paths of one topic mapping as a tree, so that a payload is read in one pass that
/// keeps only the values at those paths: no `serde_json::Value` tree (some 25 allocations for
/// a message of ten fields) per message. Everything else in the payload is still parsed and
/// checked as JSON (with serde_json's nesting limit of 128), so a payload is malformed exactly
/// when it is for `serde_json::from_slice`, and a path finds exactly what [`JsonPath::get`]
/// finds in the parsed document.
#[derive(Debug, Clone)]
pub struct Paths {
    nodes: Vec<PathNode>,
    slots: usize,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            nodes: vec![PathNode::default()],
            slots: 0,
        }
    }
}

impl Paths {
    /// Adds a path; the index of its slot in what [`Paths::read`] fills. The same path twice
    /// has one slot.
    pub fn add(&mut self, path: &JsonPath) -> usize {
        let mut node = 0;
        let mut trail = vec![0];
        for step in &path.steps {
            let next = match step {
                Step::Key(k) => self.nodes[node]
                    .keys
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|c| c.1),
                Step::Index(i) => self.nodes[node]
                    .indexes
                    .iter()
                    .find(|(at, _)| at == i)
                    .map(|c| c.1),
            };
            node = match next {
                Some(child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(PathNode::default());
                    match step {
                        Step::Key(k) => self.nodes[node].keys.push((k.clone(), child)),
                        Step::Index(i) => self.nodes[node].indexes.push((*i, child)),
                    }
                    child
                }
            };
            trail.push(node);
        }
        if let Some(slot) = self.nodes[node].slot {
            return slot;
        }
        let slot = self.slots;
        self.slots += 1;
        self.nodes[node].slot = Some(slot);
        for n in trail {
            self.nodes[n].below.push(slot);
        }
        slot
    }

    /// Parses `payload` as JSON and sets `found` (one entry per slot, `None` where the
    /// document has nothing) to the values at the paths.
    pub fn read<'p>(
        &self,
        payload: &'p [u8],
        found: &mut Vec<Option<Found<'p>>>,
    ) -> Result<(), serde_json::Error> {
        found.clear();
        found.resize(self.slots, None);
        // UTF-8 checked once for the whole payload rather than string by string, as reading
        // bytes does. A payload that is not UTF-8 is not JSON either way (outside strings
        // JSON is ASCII); it is read as bytes all the same, for serde_json's own error.
        match std::str::from_utf8(payload) {
            Ok(text) => self.read_with(serde_json::Deserializer::from_str(text), found),
            Err(_) => self.read_with(serde_json::Deserializer::from_slice(payload), found),
        }
    }

    fn read_with<'p, R: serde_json::de::Read<'p>>(
        &self,
        mut de: serde_json::Deserializer<R>,
        found: &mut Vec<Option<Found<'p>>>,
    ) -> Result<(), serde_json::Error> {
        de::DeserializeSeed::deserialize(
            Walk {
                paths: self,
                node: 0,
                found,
            },
            &mut de,
        )?;
        de.end()
    }
}

/// Reads one JSON value at a node of [`Paths`].
struct Walk<'t, 'f, 'p> {
    paths: &'t Paths,
    node: usize,
    found: &'f mut Vec<Option<Found<'p>>>,
}

impl<'t, 'f, 'p> Walk<'t, 'f, 'p> {
    fn at(&self) -> &'t PathNode {
        &self.paths.nodes[self.node]
    }

    fn set(self, value: Found<'p>) {
        if let Some(slot) = self.paths.nodes[self.node].slot {
            self.found[slot] = Some(value);
        }
    }

    fn child(&mut self, node: usize) -> Walk<'t, '_, 'p> {
        for slot in &self.paths.nodes[node].below {
            self.found[*slot] = None;
        }
        Walk {
            paths: self.paths,
            node,
            found: self.found,
        }
    }
}

impl<'de> de::DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.set(Found::Null);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.set(Found::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.set(Found::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.set(match i64::try_from(v) {
            Ok(i) => Found::Int(i),
            Err(_) => Found::Float(v as f64),
        });
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.set(Found::Float(v));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        if self.at().slot.is_some() {
            self.set(Found::Text(Cow::Borrowed(v)));
        }
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if self.at().slot.is_some() {
            self.set(Found::Text(Cow::Owned(v.to_string())));
        }
        Ok(())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if let Some(slot) = self.at().slot {
            self.found[slot] = Some(Found::Array);
        }
        let mut index = 0;
        loop {
            let child = self.at().indexes.iter().find(|(i, _)| *i == index);
            let more = match child {
                Some(&(_, node)) => seq.next_element_seed(self.child(node))?.is_some(),
                None => seq.next_element::<Skip>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        if let Some(slot) = self.at().slot {
            self.found[slot] = Some(Found::Object);
        }
        while let Some(child) = map.next_key_seed(Key(self.at()))? {
            match child {
                Some(node) => map.next_value_seed(self.child(node))?,
                None => map.next_value::<Skip>().map(drop)?,
            }
        }
        Ok(())
    }
}

/// A key of an object at a node of [`Paths`]: the node it leads to, if any.
struct Key<'t>(&'t PathNode);

impl<'de> de::DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> de::Visitor<'de> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.keys.iter().find(|(k, _)| k == v).map(|(_, n)| *n))
    }
}

/// A JSON value no path leads into: parsed (through `deserialize_any`, so serde_json's
/// nesting limit applies as it does to a `Value`) and forgotten, without allocating.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> de::Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// The value has a type that does not convert exactly to the declared one.
    WrongType { declared: SignalType, got: String },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::WrongType { declared, got } => {
                write!(f, "declared {}, got {got}", type_name(*declared))
            }
        }
    }
}

pub fn type_name(t: SignalType) -> &'static str {
    match t {
        SignalType::Float => "float",
        SignalType::Int => "int",
        SignalType::Bool => "bool",
        SignalType::String => "string",
    }
}

fn wrong(declared: SignalType, got: impl fmt::Display) -> Refused {
    let mut got = got.to_string();
    if got.len() > 40 {
        let cut = (0..=40)
            .rev()
            .find(|i| got.is_char_boundary(*i))
            .unwrap_or(0);
        got.truncate(cut);
        got.push('…');
    }
    Refused::WrongType { declared, got }
}

/// Converts a decoded value to the declared type: numbers written as text are read, booleans
/// are 0 and 1 for numbers, and an integer must be whole. Anything else is refused.
pub fn coerce(value: Value, declared: SignalType) -> Result<Value, Refused> {
    match (declared, value) {
        (SignalType::Float, Value::Float(x)) if x.is_finite() => Ok(Value::Float(x)),
        (SignalType::Float, Value::Int(i)) => Ok(Value::Float(i as f64)),
        (SignalType::Float, Value::Bool(b)) => Ok(Value::Float(f64::from(u8::from(b)))),
        (SignalType::Float, Value::Text(s)) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::Float(x)),
            _ => Err(wrong(declared, format_args!("{s:?}"))),
        },
        (SignalType::Int, Value::Int(i)) => Ok(Value::Int(i)),
        (SignalType::Int, Value::Float(x)) => whole(x).ok_or_else(|| wrong(declared, x)),
        (SignalType::Int, Value::Bool(b)) => Ok(Value::Int(i64::from(b))),
        (SignalType::Int, Value::Text(s)) => {
            let t = s.trim();
            t.parse::<i64>()
                .map(Value::Int)
                .ok()
                .or_else(|| t.parse::<f64>().ok().and_then(whole))
                .ok_or_else(|| wrong(declared, format_args!("{s:?}")))
        }
        (SignalType::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
        (SignalType::Bool, Value::Int(i)) if i == 0 || i == 1 => Ok(Value::Bool(i == 1)),
        (SignalType::Bool, Value::Float(x)) if x == 0.0 || x == 1.0 => Ok(Value::Bool(x == 1.0)),
        (SignalType::Bool, Value::Text(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "1" => Ok(Value::Bool(true)),
            "false" | "off" | "0" => Ok(Value::Bool(false)),
            _ => Err(wrong(declared, format_args!("{s:?}"))),
        },
        (SignalType::String, Value::Text(s)) => Ok(Value::Text(s)),
        (SignalType::String, other) => Ok(Value::Text(match other {
            Value::Float(x) => format!("{x}"),
            v => v.to_string(),
        })),
        (_, other) => Err(wrong(declared, other)),
    }
}

fn whole(x: f64) -> Option<Value> {
    (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(Value::Int(x as i64))
}

/// A JSON scalar as a value; objects, arrays and null are not values of a signal.
pub fn from_json(j: &Json) -> Result<Value, String> {
    from_found(&Found::of(j))
}

/// A scalar found at a path as a value; objects, arrays and null are not values of a signal.
pub fn from_found(found: &Found<'_>) -> Result<Value, String> {
    match found {
        Found::Bool(b) => Ok(Value::Bool(*b)),
        Found::Int(i) => Ok(Value::Int(*i)),
        Found::Float(x) => Ok(Value::Float(*x)),
        Found::Text(s) => Ok(Value::Text(s.to_string())),
        Found::Null => Err("null".into()),
        Found::Array => Err("an array".into()),
        Found::Object => Err("an object".into()),
    }
}

/// A plain-text payload as a value: `true`/`false`, an integer, a number, or else the text.
pub fn from_text(text: &str) -> Value {
    let t = text.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Value::Int(i);
    }
    if let Ok(x) = t.parse::<f64>() {
        return Value::Float(x);
    }
    match t {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::Text(t.to_string()),
    }
}

/// Epoch numbers at or above this are milliseconds: 1e11 seconds is the year 5138, 1e11
/// milliseconds is March 1973, so every plausible timestamp is unambiguous.
const MILLIS_FROM: f64 = 1e11;

/// A timestamp from JSON: epoch seconds or milliseconds (integer or fractional, also written
/// as text), or RFC 3339 text with an offset (`2024-05-01T08:00:00+08:00`).
pub fn timestamp(j: &Json) -> Result<Timestamp, String> {
    timestamp_of(&Found::of(j))
}

/// Epoch numbers from this far from zero are not times (they are past what `f64` holds
/// exactly, and far past the year 9999 in any unit).
const EPOCH_LIMIT: f64 = 9.0e15;

/// An epoch number in seconds or milliseconds (see [`MILLIS_FROM`]) as a timestamp.
fn epoch(x: f64) -> Result<Timestamp, String> {
    // Whole units and the fraction apart: seconds × 1e9 as one f64 would lose the last few
    // hundred nanoseconds. The fraction is kept to the microsecond, which is what a decimal
    // fraction of a second survives binary floating point with.
    if !x.is_finite() || x.abs() >= EPOCH_LIMIT {
        return Err(format!("{x} is not a time"));
    }
    let unit: i128 = if x.abs() >= MILLIS_FROM {
        1_000_000
    } else {
        1_000_000_000
    };
    let whole = x.trunc();
    let micros = ((x - whole) * (unit / 1000) as f64).round() as i128;
    let nanos = whole as i128 * unit + micros * 1000;
    Timestamp::from_nanosecond(nanos).map_err(|e| format!("{x} is out of range ({e})"))
}

/// [`epoch`] of a whole number, the common case (`"ts": 1714521600000`), without its 128-bit
/// arithmetic: the same instant, or else [`epoch`]'s own answer.
fn epoch_whole(i: i64) -> Result<Timestamp, String> {
    // Below EPOCH_LIMIT (< 2^53) an i64 is exactly its f64, so the comparisons are epoch's.
    if i.unsigned_abs() as f64 >= EPOCH_LIMIT {
        return epoch(i as f64);
    }
    let at = if i.unsigned_abs() as f64 >= MILLIS_FROM {
        Timestamp::from_millisecond(i)
    } else {
        Timestamp::from_second(i)
    };
    at.or_else(|_| epoch(i as f64))
}

/// [`timestamp`] of a value found at a path.
pub fn timestamp_of(found: &Found<'_>) -> Result<Timestamp, String> {
    match found {
        Found::Int(i) => epoch_whole(*i),
        Found::Float(x) => epoch(*x),
        Found::Text(s) => match s.trim().parse::<f64>() {
            Ok(x) => epoch(x),
            Err(_) => s.trim().parse::<Timestamp>().map_err(|e| {
                format!("{s:?} is neither epoch seconds or milliseconds nor RFC 3339 ({e})")
            }),
        },
        Found::Bool(b) => Err(format!("{b} is not a time")),
        Found::Null => Err("null is not a time".into()),
        Found::Array => Err("an array is not a time".into()),
        Found::Object => Err("an object is not a time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> JsonPath {
        JsonPath::parse(p).unwrap()
    }

    #[test]
    fn paths_reach_into_nested_objects_and_arrays() {
        let doc = json!({
            "spindle": { "rpm": 8000, "load": 41.5 },
            "axes": [ { "name": "X", "temp": 31.2 }, { "name": "Y", "temp": 30.9 } ],
            "alarms": [[7, 9]],
            "a.b": 1
        });
        assert_eq!(path("spindle.rpm").get(&doc), Some(&json!(8000)));
        assert_eq!(path("axes[1].temp").get(&doc), Some(&json!(30.9)));
        assert_eq!(path("alarms[0][1]").get(&doc), Some(&json!(9)));
        assert_eq!(path("axes[2].temp").get(&doc), None);
        assert_eq!(path("spindle.rpm.x").get(&doc), None);
        assert_eq!(path("[0]").get(&json!([5])), Some(&json!(5)));
        for bad in ["", "a..b", "a.", "a[x]", "a[0", "a[0]b"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_read_in_one_pass_find_what_a_parsed_document_has() {
        let texts = [
            "spindle.rpm",
            "spindle",
            "axes[1].temp",
            "axes[0].name",
            "alarms[0][1]",
            "alarms",
            "[0]",
            "a.b",
            "name",
            "big",
            "spindle.rpm",
        ];
        let mut paths = Paths::default();
        let parsed: Vec<JsonPath> = texts.iter().map(|t| path(t)).collect();
        let slots: Vec<usize> = parsed.iter().map(|p| paths.add(p)).collect();
        assert_eq!(slots[0], slots[10], "one slot for one path");
        let docs = [
            r#"{"spindle": {"rpm": 8000, "load": 41.5}, "axes": [{"name": "X", "temp": 31.2},
                {"name": "Y\u00e9\n", "temp": -30.9}], "alarms": [[7, 9]], "a.b": 1,
                "a": {"b": true}, "name": null, "big": 18446744073709551615, "x": {"y": [1, {}]}}"#,
            // Duplicate keys: the last one counts, with all that is below it.
            r#"{"spindle": {"rpm": 1, "load": 2}, "spindle": {"load": 3}, "name": "a", "name": "b"}"#,
            r#"{"spindle": 5, "axes": {"1": {"temp": 1}}, "alarms": [1, [2, 3, 4]]}"#,
            r#"[7, {"a": 1}]"#,
            r#""text""#,
            "12.5e3",
            r#"{"spindle": {"rpm": "8000"}, "axes": [1, {"temp": [], "name": {}}]}"#,
        ];
        let mut found = Vec::new();
        for doc in docs {
            let value: Json = serde_json::from_str(doc).unwrap();
            paths.read(doc.as_bytes(), &mut found).unwrap();
            for (p, slot) in parsed.iter().zip(&slots) {
                assert_eq!(found[*slot], p.get(&value).map(Found::of), "{p:?} in {doc}");
            }
        }
        // Malformed exactly when serde_json says so, nesting limit included.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let deep_aside = format!(r#"{{"spindle": {{"rpm": 1}}, "x": {deep}}}"#);
        for bad in [
            "",
            "{",
            r#"{"spindle": }"#,
            r#"{"a": 1} x"#,
            "[1,]",
            "nul",
            deep.as_str(),
            deep_aside.as_str(),
        ] {
            assert!(serde_json::from_str::<Json>(bad).is_err(), "{bad}");
            assert!(paths.read(bad.as_bytes(), &mut found).is_err(), "{bad}");
        }
        let not_utf8 = b"{\"x\": \"\xff\"}";
        assert!(serde_json::from_slice::<Json>(not_utf8).is_err());
        assert!(paths.read(not_utf8, &mut found).is_err());
    }

    #[test]
    fn payloads_read_as_text_find_and_fail_as_read_as_bytes() {
        let mut paths = Paths::default();
        for p in [
            "spindle.rpm",
            "nc.program",
            "axes.temps[1]",
            "a\"b",
            "é.x",
            "ts",
        ] {
            paths.add(&path(p));
        }
        let docs: [&[u8]; 17] = [
            br#"{"ts":1765000000000,"spindle":{"rpm":8042.5},"axes":{"temps":[31.5,30.25]},"nc":{"program":"O0042"}}"#,
            // Escaped keys and values: the key as decoded is what a path names.
            br#"{"sp\u0069ndle": {"rpm": 1}, "nc": {"pro\u0067ram": "a\nb\u00e9\"", "x": "\ud83d\ude00"}}"#,
            r#"{"a\"b": 1, "\u00e9": {"x": "\u00e9"}, "é": {"x": "é"}}"#.as_bytes(),
            // Duplicate keys, nested arrays, wrong kinds, missing fields.
            br#"{"spindle": {"rpm": 1}, "spindle": {}, "axes": {"temps": [[1], [2, [3]]]}}"#,
            br#"{"spindle": [1, 2], "nc": {"program": {"a": [{}]}}, "axes": {"temps": {"1": 2}}}"#,
            br#"{"ts": null, "spindle": {"rpm": -0.0e-3}, "axes": {"temps": [1, 18446744073709551616]}}"#,
            b"[]",
            b"  \"text\"  ",
            // Not JSON: each fails with the same error both ways.
            b"",
            br#"{"spindle": {"rpm": 1e400}}"#,
            br#"{"nc": {"program": "\ud800"}}"#,
            br#"{"nc": {"program": "a"#,
            b"{\"x\": \"tab\tin text\"}",
            // Not UTF-8: inside a string, in a key, outside any string.
            b"{\"nc\": {\"program\": \"\xff\"}}",
            b"{\"\xc3\": 1}",
            b"{\"ts\": 1, \xe9}",
            b"{\"ts\": 1} \xff",
        ];
        let (mut text, mut bytes) = (Vec::new(), Vec::new());
        for doc in docs {
            let as_text = paths.read(doc, &mut text).map_err(|e| e.to_string());
            bytes.clear();
            bytes.resize(paths.slots, None);
            let as_bytes = paths
                .read_with(serde_json::Deserializer::from_slice(doc), &mut bytes)
                .map_err(|e| e.to_string());
            let shown = String::from_utf8_lossy(doc);
            assert_eq!(as_text, as_bytes, "{shown}");
            assert_eq!(
                as_text.is_ok(),
                serde_json::from_slice::<Json>(doc).is_ok(),
                "{shown}"
            );
            if as_text.is_ok() {
                assert_eq!(text, bytes, "{shown}");
            }
        }
        // The escapes were decoded into the value found.
        paths.read(docs[1], &mut text).unwrap();
        assert!(text.contains(&Some(Found::Text("a\nbé\"".into()))));
    }

    #[test]
    fn values_convert_to_the_declared_type_only_when_exact() {
        use SignalType::*;
        let ok = |v: Value, t| coerce(v, t).unwrap();
        assert_eq!(ok(Value::Int(3), Float), Value::Float(3.0));
        assert_eq!(ok(Value::Text(" 12.5 ".into()), Float), Value::Float(12.5));
        assert_eq!(ok(Value::Bool(true), Float), Value::Float(1.0));
        assert_eq!(ok(Value::Float(42.0), Int), Value::Int(42));
        assert_eq!(ok(Value::Text("42".into()), Int), Value::Int(42));
        assert_eq!(ok(Value::Text("42.0".into()), Int), Value::Int(42));
        assert_eq!(ok(Value::Bool(true), Int), Value::Int(1));
        assert_eq!(ok(Value::Int(0), Bool), Value::Bool(false));
        assert_eq!(ok(Value::Text("ON".into()), Bool), Value::Bool(true));
        assert_eq!(ok(Value::Int(7), String), Value::Text("7".into()));
        assert_eq!(ok(Value::Float(7.5), String), Value::Text("7.5".into()));
        assert_eq!(ok(Value::Bool(false), String), Value::Text("false".into()));
        // Refused: a number must never arrive as a string, nor an integer as a fraction.
        for (v, t) in [
            (Value::Text("fast".into()), Float),
            (Value::Float(f64::NAN), Float),
            (Value::Float(12.5), Int),
            (Value::Text("12.5".into()), Int),
            (Value::Int(2), Bool),
            (Value::Text("maybe".into()), Bool),
        ] {
            assert!(
                matches!(coerce(v.clone(), t), Err(Refused::WrongType { .. })),
                "{v:?} as {t:?}"
            );
        }
    }

    #[test]
    fn json_scalars_and_plain_text_become_values() {
        assert_eq!(from_json(&json!(5)), Ok(Value::Int(5)));
        assert_eq!(from_json(&json!(5.5)), Ok(Value::Float(5.5)));
        assert_eq!(from_json(&json!(true)), Ok(Value::Bool(true)));
        assert_eq!(from_json(&json!("x")), Ok(Value::Text("x".into())));
        assert!(from_json(&json!(null)).is_err());
        assert!(from_json(&json!({"a": 1})).is_err());
        assert_eq!(from_text(" 8000\n"), Value::Int(8000));
        assert_eq!(from_text("-1.25"), Value::Float(-1.25));
        assert_eq!(from_text("true"), Value::Bool(true));
        assert_eq!(from_text("RUNNING"), Value::Text("RUNNING".into()));
    }

    #[test]
    fn whole_epoch_numbers_are_the_instants_of_the_general_conversion() {
        let (max_s, min_s) = (Timestamp::MAX.as_second(), Timestamp::MIN.as_second());
        let (max_ms, min_ms) = (
            Timestamp::MAX.as_millisecond(),
            Timestamp::MIN.as_millisecond(),
        );
        let mut whole = vec![
            0,
            1,
            1_714_521_600,
            1_714_521_600_000,
            99_999_999_999,
            100_000_000_000,
            8_999_999_999_999_999,
            9_000_000_000_000_000,
            9_000_000_000_000_001,
            i64::MAX,
            i64::MIN,
            max_s,
            min_s,
            max_ms,
            min_ms,
        ];
        whole.extend(
            whole
                .clone()
                .iter()
                .flat_map(|i| [i.saturating_add(1), i.saturating_sub(1), i.saturating_neg()]),
        );
        for i in whole {
            assert_eq!(epoch_whole(i), epoch(i as f64), "{i}");
        }
    }

    #[test]
    fn timestamps_in_seconds_milliseconds_and_rfc3339() {
        let at = Timestamp::from_second(1_714_521_600).unwrap(); // 2024-05-01T00:00:00Z
        assert_eq!(timestamp(&json!(1_714_521_600)), Ok(at));
        assert_eq!(timestamp(&json!(1_714_521_600_000u64)), Ok(at));
        assert_eq!(timestamp(&json!("1714521600000")), Ok(at));
        assert_eq!(
            timestamp(&json!(1_714_521_600.25)),
            Ok(at + jiff::SignedDuration::from_millis(250))
        );
        assert_eq!(timestamp(&json!("2024-05-01T08:00:00+08:00")), Ok(at));
        assert_eq!(timestamp(&json!("2024-05-01T00:00:00Z")), Ok(at));
        assert!(timestamp(&json!("yesterday")).is_err());
        assert!(
            timestamp(&json!("2024-05-01 08:00")).is_err(),
            "no offset: ambiguous"
        );
        assert!(timestamp(&json!(true)).is_err());
        assert!(timestamp(&json!(1e300)).is_err());
    }
}
