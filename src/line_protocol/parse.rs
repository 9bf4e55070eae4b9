//! The parser: reads a line's series key (measurement and tags) back, for the county ingest,
//! which checks each line an enterprise sends against its topic before it reaches the county's
//! store. It reads what [`super::LineBuilder`] writes and what other line-protocol writers send:
//! backslash escapes in the key, double-quoted string fields.
//!
//! It checks the shape of the rest of the line (fields, then an integer timestamp) without
//! reading the field values: the store judges those.
//!
//! Two known differences from InfluxDB's own parser, which no name of [`super::contract`]
//! reaches (they are plain words): a `"` inside a field key is taken for the start of a
//! string, so the line is refused; and `\=` in a measurement is read as `=`, where InfluxDB
//! keeps the backslash. tests/line_protocol.rs checks that otherwise the measurement and tags
//! read here are the ones InfluxDB's parser reads, on the encoder's output.

/// The parts of a line that say what it is about: measurement and tags, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub measurement: String,
    /// In the order the line lists them.
    pub tags: Vec<(String, String)>,
}

impl Key {
    /// The value of tag `name`, if the line has it.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(t, _)| t == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a line-protocol line's series key (measurement and tags) off and checks that fields
/// and an integer timestamp follow. Backslash escapes are honoured in the key and double-quoted
/// strings in the fields, so a `,`, `=` or space inside them does not split.
pub fn parse_key(line: &str) -> Option<Key> {
    let bytes = line.as_bytes();
    // The key ends at the first unescaped space.
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b' ' {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
    }
    let key = line.get(..i)?;
    let rest = line.get(i + 1..)?;
    // The fields end at the first space outside a string.
    let fb = rest.as_bytes();
    let (mut j, mut quoted) = (0, false);
    while j < fb.len() && (quoted || fb[j] != b' ') {
        match fb[j] {
            b'\\' => j += 1,
            b'"' => quoted = !quoted,
            _ => {}
        }
        j += 1;
    }
    let fields = rest.get(..j)?;
    let timestamp = rest.get(j + 1..)?;
    if quoted || fields.is_empty() || !fields.contains('=') || timestamp.parse::<i64>().is_err() {
        return None;
    }
    let mut parts = split_unescaped(key, b',').into_iter();
    let measurement = unescape(parts.next()?);
    if measurement.is_empty() {
        return None;
    }
    let mut tags = Vec::new();
    for part in parts {
        let kv = split_unescaped(part, b'=');
        let [k, v] = kv[..] else { return None };
        tags.push((unescape(k), unescape(v)));
    }
    Some(Key { measurement, tags })
}

/// `text` split at every `at` that no backslash escapes; the parts keep their escapes.
pub fn split_unescaped(text: &str, at: u8) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == at {
            parts.push(&text[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    parts.push(text.get(start..).unwrap_or(""));
    parts
}

/// `text` with the escapes of a measurement, tag or field key removed (`\,`, `\=`, `\ ` and
/// `\\`); any other backslash stays as it is.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ (',' | '=' | ' ' | '\\'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_quoted_strings_do_not_split_a_line() {
        let line =
            r#"fleet,county=yong\ kang,sector=doors,enterprise=e\,01 note="a b, c=d",x=1i 17"#;
        let key = parse_key(line).unwrap();
        assert_eq!(key.measurement, "fleet");
        assert_eq!(
            key.tags,
            vec![
                ("county".to_string(), "yong kang".to_string()),
                ("sector".to_string(), "doors".to_string()),
                ("enterprise".to_string(), "e,01".to_string()),
            ]
        );
        assert!(parse_key(r#"fleet,a=b note="unterminated 17"#).is_none());
        assert!(parse_key("fleet,a=b x=1i notanumber").is_none());
        assert!(parse_key("fleet,a x=1i 17").is_none());
        assert!(parse_key("").is_none());
        assert!(parse_key("\\").is_none());
    }
}
