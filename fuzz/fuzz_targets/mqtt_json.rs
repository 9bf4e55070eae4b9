//! Fuzzes JSON field-path extraction: a path the fuzzer writes (as a config would) is parsed
//! and read from a payload the fuzzer writes by the one-pass reader the source uses
//! (`Paths::read`), which must find exactly what a lookup in the parsed document finds
//! (`JsonPath::get`) and call a payload malformed exactly when serde_json does; and the
//! payload goes through the MQTT mapper of config/mqtt.toml on its JSON and text topics, as a
//! message from an IoT box would. Nothing may panic, and every value that comes out of the
//! mapper is finite.
//!
//! Input: byte 0 picks the topic; up to the first NUL is the path, the rest the payload.

#![no_main]

mod common;

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use shopfloor::source::mqtt::payload::{self, Found, JsonPath, Paths};

const TOPICS: [&str; 5] = [
    "shopfloor/sim/mq01/data",
    "shopfloor/sim/mq02/status",
    "shopfloor/sim/unknown/data",
    "shopfloor/sim/mq01/data/extra",
    "shopfloor/sim//data",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (path, body) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&[][..], rest),
    };
    if let Ok(path) = std::str::from_utf8(path)
        && let Ok(path) = JsonPath::parse(path)
    {
        let mut paths = Paths::default();
        let slot = paths.add(&path);
        let mut found = Vec::new();
        let read = paths.read(body, &mut found);
        let doc = serde_json::from_slice::<serde_json::Value>(body);
        assert_eq!(read.is_ok(), doc.is_ok(), "malformed by one reader only");
        if let Ok(doc) = doc {
            let expected = path.get(&doc).map(Found::of);
            assert_eq!(found[slot], expected, "{path:?}");
            if let Some(found) = &found[slot] {
                let _ = payload::from_found(found);
                let _ = payload::timestamp_of(found);
            }
        }
    }
    let mut mapper = common::mapper();
    let mut out = Vec::new();
    let arrival = Timestamp::from_second(1_800_000_000).unwrap_or_default();
    mapper.handle(
        TOPICS[usize::from(which) % TOPICS.len()],
        body,
        arrival,
        &mut out,
    );
    common::assert_finite(out);
});
