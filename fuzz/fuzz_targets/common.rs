//! What the MQTT targets share: the mapper of config/mqtt.toml (JSON IoT boxes, a text
//! status topic with a Last Will, a Sparkplug B edge node), as `shopfloor run` builds it.

use std::sync::OnceLock;

use shopfloor::agent::config::Config;
use shopfloor::metrics::Metrics;
use shopfloor::model::{SourceEvent, Value};
use shopfloor::source::mqtt::Mapper;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        shopfloor::agent::config::load_str(
            include_str!("../../config/mqtt.toml"),
            "config/mqtt.toml",
        )
        .unwrap_or_else(|d| panic!("config/mqtt.toml does not load: {d}"))
    })
}

/// A fresh mapper, so that no input depends on what an earlier one left behind.
pub fn mapper() -> Mapper {
    let config = config();
    let (machines, meters) = config.register_ids();
    Mapper::new(&config.mqtt[0], machines, meters, Metrics::new())
        .unwrap_or_else(|e| panic!("config/mqtt.toml's mapper: {e}"))
}

/// The store takes no NaN or infinity: every value the mapper lets through must be finite.
pub fn assert_finite(events: Vec<SourceEvent>) {
    for event in events {
        if let SourceEvent::Samples(samples) = event {
            for s in samples {
                if let Value::Float(x) = s.value {
                    assert!(x.is_finite(), "{}: non-finite {x}", s.signal);
                }
            }
        }
    }
}
