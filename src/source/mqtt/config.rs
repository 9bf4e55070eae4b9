//! `[[mqtt]]`: the brokers the agent reads machines' messages from, and their topic maps. The
//! connection settings are [`MqttConnection`]'s, shared with the uplink and the county ingest.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::common::mqtt::MqttConnection;
use crate::config::{Composite, composite, duration};
use crate::model::SignalType;

/// `[[mqtt]]`: an MQTT broker that machines, IoT boxes or PLC gateways publish to. The agent
/// subscribes to every `[[mqtt.topic]]` pattern with QoS 1 and keeps one connection per broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self")]
pub struct MqttBroker {
    /// Broker id for logs, metrics and the agent's health line.
    pub id: String,
    /// The connection: `address`, `client_id` (default `shopfloor-<enterprise>-<id>`),
    /// `username`, `password`, `tls`, `keepalive`, `max_backoff`, `max_packet_size` (default
    /// 256 KiB: messages whose payload is larger are counted as oversized and dropped, never
    /// decoded; the client reads packets up to four times this, at least 1 MiB, so that it can
    /// name the topic and acknowledge the message; see `source::mqtt`). Its keys sit at the top
    /// level of `[[mqtt]]`; see [`crate::common::mqtt`].
    #[serde(skip)]
    pub connection: MqttConnection,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// `false` (default) asks the broker for a persistent session; `true` starts afresh on every
    /// connection and loses what was published while the agent was away.
    #[serde(default)]
    pub clean_session: bool,
    /// A message whose own timestamp is further than this from the agent's clock (either way)
    /// is counted as bad and dropped: a box with a wrong clock would put data in the wrong
    /// shift. Raise it for boxes that replay a buffer after an outage.
    #[serde(default = "default_max_timestamp_skew", deserialize_with = "duration")]
    pub max_timestamp_skew: Duration,
    /// The number of unacknowledged QoS 1 messages the broker sends this client before it
    /// waits for acknowledgements (Mosquitto's `max_inflight_messages`, 20 by default), as far
    /// as the agent knows at the start. At low rates the agent reads in rounds of about four
    /// fifths of it (see `source::mqtt`, "Reading in rounds"), and raises it to what the broker
    /// shows ("The broker's window, learned"); it is never lowered, so it must not be set above
    /// the broker's real window.
    #[serde(default = "default_inflight_window")]
    pub inflight_window: u16,
    /// The longest pause between two rounds at low rates: how much later a message may be read
    /// so that it is read with others. The broker keeps the message until it is read and
    /// acknowledged, so a longer linger costs latency, never data.
    #[serde(default = "default_linger", deserialize_with = "duration")]
    pub linger: Duration,
    /// The topic map.
    #[serde(default, rename = "topic")]
    pub topics: Vec<MqttTopic>,
}

/// `[[mqtt]] inflight_window` when the config gives none: Mosquitto's default.
pub const DEFAULT_INFLIGHT_WINDOW: u16 = 20;
/// `[[mqtt]] linger` when the config gives none: well inside the engine's one-second batches
/// and the writers' one-second flush, and long enough for rounds of about 100 messages at 1,000 a
/// second where the broker's window allows (issue 21).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);
/// The longest `linger` the config accepts.
pub const MAX_LINGER: Duration = Duration::from_secs(1);

fn default_inflight_window() -> u16 {
    DEFAULT_INFLIGHT_WINDOW
}

fn default_linger() -> Duration {
    DEFAULT_LINGER
}

/// `[[mqtt]] max_packet_size` when the config gives none.
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 256 * 1024;

impl MqttBroker {
    /// The payload size above which a message is counted as oversized and dropped.
    pub fn max_packet_size(&self) -> u32 {
        self.connection
            .max_packet_size
            .unwrap_or(DEFAULT_MAX_PACKET_SIZE)
    }
}

impl Composite for MqttBroker {
    type Shared = MqttConnection;
    fn own<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MqttBroker::deserialize(d)
    }
    fn with_shared(self, connection: MqttConnection) -> Self {
        MqttBroker { connection, ..self }
    }
}

impl<'de> Deserialize<'de> for MqttBroker {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        composite::deserialize(d)
    }
}

fn default_max_timestamp_skew() -> Duration {
    Duration::from_secs(600)
}

/// The MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum MqttProtocol {
    #[default]
    #[serde(rename = "3.1.1", alias = "v3.1.1", alias = "4")]
    V311,
    #[serde(rename = "5", alias = "v5", alias = "5.0")]
    V5,
}

/// `[[mqtt.topic]]`: which messages belong to which machine, and how their payloads map to
/// signals.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttTopic {
    /// A topic filter with named captures: `plant/{machine}/data`. `{name}` matches one level
    /// like `+` and keeps its text for `machine`, `meter` and `signal`; `+` and a final `#` are
    /// the usual MQTT wildcards.
    pub pattern: String,
    /// `json` (default), `text` (one value per message) or `sparkplug` (Sparkplug B).
    #[serde(default)]
    pub format: PayloadFormat,
    /// The registered machine the messages belong to: fixed (`"cnc01"`) or built from captures
    /// (`"{machine}"`, `"cnc{n}"`). Default `"{machine}"`, or `"{device}"` for Sparkplug, whose
    /// topics give `{group}`, `{node}` and `{device}`.
    #[serde(default)]
    pub machine: Option<String>,
    /// The meter the messages belong to, instead of a machine.
    #[serde(default)]
    pub meter: Option<String>,
    /// JSON only: the path of the message's timestamp (epoch seconds or milliseconds, or an
    /// RFC 3339 text). Without it, or when a message lacks it, the arrival time is used.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// A payload that means "the machine is gone" (the Last Will its box registered with the
    /// broker, e.g. `"offline"`): the machine becomes offline at once.
    #[serde(default)]
    pub offline_payload: Option<String>,
    /// The signals taken from each message.
    #[serde(default, rename = "field")]
    pub fields: Vec<MqttField>,
}

/// How a message's payload is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    #[default]
    Json,
    Text,
    Sparkplug,
}

/// `[[mqtt.topic.field]]`: one signal of a message.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttField {
    /// Signal name, the field key in the `signal` line; may use the pattern's captures.
    pub signal: String,
    /// JSON: the path to the value (`spindle.rpm`, `axes[0].load`); Sparkplug: the metric name.
    /// Not used for text.
    #[serde(default)]
    pub path: Option<String>,
    /// The type written to the store. A value that arrives as another type is converted when
    /// that is exact (`"12.5"` → 12.5, `true` → 1), otherwise the value is counted as bad and
    /// left out: a field keeps one type forever.
    #[serde(rename = "type", default)]
    pub value_type: SignalType,
}

impl crate::config::Section for MqttBroker {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        use crate::config::struct_fields;
        match path {
            [] => composite::fields::<MqttBroker>(),
            ["tls"] => struct_fields::<crate::common::mqtt::MqttTls>(),
            ["topic"] => struct_fields::<MqttTopic>(),
            ["topic", "field"] => struct_fields::<MqttField>(),
            _ => &[],
        }
    }

    fn read(
        checker: &mut crate::config::Checker<'_>,
        value: &toml::Spanned<toml::de::DeValue<'_>>,
        path: Vec<crate::config::Seg>,
    ) -> Option<Self> {
        checker.composite(value, path)
    }
}
