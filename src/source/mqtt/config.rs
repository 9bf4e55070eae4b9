//! `[[mqtt]]`: the brokers the agent reads machines' messages from, and their topic maps. The
//! connection settings are [`MqttConnection`]'s, shared with the uplink and the county ingest.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::DeTable;

use super::{mapping, payload::JsonPath, topic::Template};
use crate::common::mqtt::MqttConnection;
use crate::config::{
    Checker, Composite, References, Seg, composite, duration, join, key, not_registered,
};
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
    /// The topic map.
    #[serde(default, rename = "topic")]
    pub topics: Vec<MqttTopic>,
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

/// `[[mqtt]]`'s row in the section table: broker ids share the device namespace with the
/// Modbus devices (one health line each).
pub(crate) fn check_brokers(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    brokers: &mut [MqttBroker],
    refs: &References<'_>,
) {
    for (i, broker) in at.iter().zip(brokers.iter()) {
        let base = vec![key("mqtt"), Seg::Index(*i)];
        if !checker.claim("device", &broker.id) {
            let at = checker.span_of(root, &join(&base, &[key("id")]));
            checker.push(
                at,
                format!(
                    "mqtt broker id `{}` is already used by another broker or Modbus device",
                    broker.id
                ),
            );
        }
        check_broker(checker, root, &base, broker, refs);
    }
}

fn check_broker(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    base: &[Seg],
    broker: &MqttBroker,
    refs: &References<'_>,
) {
    let at = |s: &Checker<'_>, rest: &[Seg]| s.span_of(root, &join(base, rest));
    let name = &broker.id;
    broker
        .connection
        .check(checker, root, base, &format!("mqtt broker `{name}`"));
    if broker.topics.is_empty() {
        let span = at(checker, &[key("id")]);
        checker.push(
            span,
            format!("mqtt broker `{name}` has no [[mqtt.topic]]: it would subscribe to nothing"),
        );
    }
    // (target template, signal) → declared type, across the broker's topics.
    let mut types: BTreeMap<(String, String), SignalType> = BTreeMap::new();
    for (j, topic) in broker.topics.iter().enumerate() {
        let tpath = [key("topic"), Seg::Index(j)];
        let here = |s: &Checker<'_>, k: &str| at(s, &join(&tpath, &[key(k)]));
        let names = match mapping::compile(topic) {
            Ok((_, names)) => names,
            Err(e) => {
                let span = here(checker, "pattern");
                checker.push(span, format!("pattern `{}`: {e}", topic.pattern));
                continue;
            }
        };
        if topic.format == PayloadFormat::Sparkplug && !topic.pattern.starts_with("spBv1.0/") {
            let span = here(checker, "pattern");
            checker.push(
                span,
                "a sparkplug topic pattern starts with `spBv1.0/` (e.g. \"spBv1.0/shop1/#\")"
                    .into(),
            );
        }
        let (target_key, target_text, registered, what) = match (&topic.machine, &topic.meter) {
            (Some(_), Some(_)) => {
                let span = here(checker, "meter");
                checker.push(
                    span,
                    "a topic names a `machine` or a `meter`, not both".into(),
                );
                continue;
            }
            (_, Some(m)) => ("meter", m.clone(), &refs.meters, "meter"),
            (Some(m), None) => ("machine", m.clone(), &refs.machines, "machine"),
            (None, None) => (
                "pattern",
                mapping::default_machine(topic.format).to_string(),
                &refs.machines,
                "machine",
            ),
        };
        match Template::parse(&target_text) {
            Err(e) => {
                let span = here(checker, target_key);
                checker.push(span, format!("{what}: {e}"));
            }
            Ok(t) => {
                if let Some(id) = t.fixed()
                    && !registered.contains(id)
                {
                    let span = here(checker, target_key);
                    checker.push(span, not_registered(&format!("topic names {what}"), id));
                }
                for capture in t.capture_names() {
                    if !names.iter().any(|n| n == capture) {
                        let span = here(checker, target_key);
                        let hint = if target_key == "pattern" {
                            format!(
                                "; write `{what} = \"...\"` or capture it with `{{{capture}}}` in the pattern"
                            )
                        } else {
                            String::new()
                        };
                        checker.push(
                            span,
                            format!(
                                "{what} `{target_text}` uses `{{{capture}}}`, which the pattern does not capture{hint}"
                            ),
                        );
                    }
                }
            }
        }
        if let Some(ts) = &topic.timestamp {
            let span = here(checker, "timestamp");
            if topic.format != PayloadFormat::Json {
                checker.push(
                    span,
                    "`timestamp` is a JSON path; text messages are stamped on arrival and \
                     Sparkplug payloads carry their own"
                        .into(),
                );
            } else if let Err(e) = JsonPath::parse(ts) {
                checker.push(span, e);
            }
        }
        if topic.offline_payload.is_some() && topic.format == PayloadFormat::Sparkplug {
            let span = here(checker, "offline_payload");
            checker.push(
                span,
                "Sparkplug machines go offline on NDEATH/DDEATH; `offline_payload` is for JSON and text topics".into(),
            );
        }
        if topic.fields.is_empty() && topic.offline_payload.is_none() {
            let span = here(checker, "pattern");
            checker.push(
                span,
                "this topic has no `field` (and no `offline_payload`): its messages would deliver nothing".into(),
            );
        }
        if topic.format == PayloadFormat::Text && topic.fields.len() > 1 {
            let span = at(checker, &join(&tpath, &[key("field"), Seg::Index(1)]));
            checker.push(
                span,
                "a text message carries one value: map one `field` per topic".into(),
            );
        }
        let mut signals = HashSet::new();
        for (k, field) in topic.fields.iter().enumerate() {
            let fpath = join(&tpath, &[key("field"), Seg::Index(k)]);
            let fhere = |s: &Checker<'_>, name: &str| at(s, &join(&fpath, &[key(name)]));
            if !signals.insert(field.signal.as_str()) {
                let span = fhere(checker, "signal");
                checker.push(
                    span,
                    format!("signal `{}` is mapped twice in this topic", field.signal),
                );
            }
            match Template::parse(&field.signal) {
                Err(e) => {
                    let span = fhere(checker, "signal");
                    checker.push(span, format!("signal: {e}"));
                }
                Ok(t) => {
                    for capture in t.capture_names() {
                        if !names.iter().any(|n| n == capture) {
                            let span = fhere(checker, "signal");
                            checker.push(
                                span,
                                format!("signal `{}` uses `{{{capture}}}`, which the pattern does not capture", field.signal),
                            );
                        }
                    }
                    if t.capture_names().next().is_none() {
                        let here = || format!("mqtt broker `{name}` topic `{}`", topic.pattern);
                        if let Some(clash) =
                            checker.signal_type_clash(&field.signal, field.value_type, here)
                        {
                            let span = fhere(checker, "type");
                            checker.push(span, clash);
                        }
                    }
                }
            }
            match (topic.format, &field.path) {
                (PayloadFormat::Text, Some(_)) => {
                    let span = fhere(checker, "path");
                    checker.push(span, "a text message has no paths: leave out `path`".into());
                }
                (PayloadFormat::Json, path) => {
                    if let Err(e) = JsonPath::parse(path.as_deref().unwrap_or(&field.signal)) {
                        let span = fhere(checker, if path.is_some() { "path" } else { "signal" });
                        checker.push(span, e);
                    }
                }
                _ => {}
            }
            // A name without captures is checked across the whole config above; one
            // made from captures is known only per target and topic pattern.
            let templated =
                Template::parse(&field.signal).is_ok_and(|t| t.capture_names().next().is_some());
            let declared = (target_text.clone(), field.signal.clone());
            match types.get(&declared) {
                Some(t) if templated && *t != field.value_type => {
                    let span = fhere(checker, "type");
                    checker.push(
                        span,
                        format!(
                            "signal `{}` of {what} `{target_text}` is declared with another type in an earlier topic: a field keeps one type forever",
                            field.signal
                        ),
                    );
                }
                _ => {
                    types.insert(declared, field.value_type);
                }
            }
        }
    }
}
