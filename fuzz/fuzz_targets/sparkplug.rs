//! Fuzzes Sparkplug B: any bytes through the payload decoder, which must not panic; what it
//! decodes must encode and decode back to the same payload (the simulator's edge node uses the
//! encoder); and a sequence of messages on an edge node's topics (births that declare aliases,
//! data that uses them, deaths) goes through the mapper of config/mqtt.toml.
//!
//! Input: messages, each a topic byte, a length byte and that many payload bytes.

#![no_main]

mod common;

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use shopfloor::source::mqtt::sparkplug;

const TOPICS: [&str; 8] = [
    "spBv1.0/shopfloor-sim/NBIRTH/edge",
    "spBv1.0/shopfloor-sim/DBIRTH/edge/sp01",
    "spBv1.0/shopfloor-sim/DDATA/edge/sp01",
    "spBv1.0/shopfloor-sim/NDATA/edge",
    "spBv1.0/shopfloor-sim/DDATA/edge/sp02",
    "spBv1.0/shopfloor-sim/DDEATH/edge/sp01",
    "spBv1.0/shopfloor-sim/NDEATH/edge",
    "spBv1.0/shopfloor-sim/STATE/edge",
];

fuzz_target!(|data: &[u8]| {
    let mut mapper = common::mapper();
    let mut rest = data;
    let mut out = Vec::new();
    let arrival = Timestamp::from_second(1_800_000_000).unwrap_or_default();
    while let [topic, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let payload = &tail[..len];
        rest = &tail[len..];
        if let Ok(decoded) = sparkplug::decode(payload) {
            let again = sparkplug::decode(&sparkplug::encode(&decoded));
            // Debug, not ==: a NaN metric is the same payload but not equal to itself.
            assert_eq!(
                format!("{again:?}"),
                format!("{:?}", Ok::<_, sparkplug::DecodeError>(decoded)),
                "encode then decode changed the payload"
            );
        }
        mapper.handle(
            TOPICS[usize::from(*topic) % TOPICS.len()],
            payload,
            arrival,
            &mut out,
        );
    }
    common::assert_finite(out);
});
