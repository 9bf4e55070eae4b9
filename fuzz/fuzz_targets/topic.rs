//! Fuzzes topic matching: a pattern and a topic the fuzzer writes. A pattern that parses must
//! match exactly the topics its MQTT subscription filter matches (checked against the matching
//! rules of MQTT 3.1.1 §4.7, written out again here), with one capture per `{name}`, each a
//! whole level of the topic; templates render only from captures they have.
//!
//! Input: pattern, NUL, topic, NUL, template.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor::source::mqtt::topic::{Pattern, Template};

/// MQTT 3.1.1 §4.7: `+` is one level, `#` the rest (and the parent level), and wildcards
/// at the first level do not match topics that begin with `$`.
fn filter_matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && matches!(f[0], "+" | "#") {
        return false;
    }
    let mut i = 0;
    loop {
        match (f.get(i), t.get(i)) {
            (Some(&"#"), _) => return true,
            (Some(&"+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
        i += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let (Some(pattern), Some(topic)) = (parts.next(), parts.next()) else {
        return;
    };
    let template = parts.next();
    let Ok(p) = Pattern::parse(pattern) else {
        return;
    };
    assert_eq!(
        Pattern::parse(p.filter()).map(|q| q.filter().to_string()),
        Ok(p.filter().to_string())
    );
    let captures = p.matches(topic);
    assert_eq!(
        captures.is_some(),
        filter_matches(p.filter(), topic),
        "pattern {pattern:?} (filter {:?}) and topic {topic:?} disagree",
        p.filter()
    );
    if let Some(captures) = &captures {
        let names: Vec<&str> = p.capture_names().collect();
        assert_eq!(captures.iter().map(|c| c.0).collect::<Vec<_>>(), names);
        let levels: Vec<&str> = topic.split('/').collect();
        for (_, value) in captures {
            assert!(
                levels.contains(value),
                "capture {value:?} is not a level of {topic:?}"
            );
        }
        if let Some(Ok(t)) = template.map(Template::parse)
            && let Some(rendered) = t.render(captures)
        {
            for name in t.capture_names() {
                assert!(
                    captures.iter().any(|c| c.0 == name),
                    "rendered without {name}"
                );
            }
            assert!(!rendered.is_empty());
        }
    }
});
