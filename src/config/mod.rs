//! Configuration: the generic part of reading the TOML files Shopfloor reads, and the register.
//!
//! Each section's types and checks live beside the code that uses them (`source/modbus/config.rs`,
//! `engine/config.rs`, `sink/config.rs`, `web/config.rs`); the agent's whole-file `Config` and
//! its one table of sections are in `agent::config`. Here: the reading with positions
//! ([`Checker`]), [`Diagnostics`], did-you-mean, durations, [`Secret`], the section mechanism
//! and the register (`[site]`, `[[machine]]`, `[[meter]]`) that the other sections refer to.
//! Loading never stops at the first mistake: every problem is reported with file, line and
//! column.

mod load;
mod register;
mod secret;
mod section;

pub(crate) use load::{
    BrokerLink, Checker, Seg, check_document, check_document_in, check_mqtt_brokers, join, key,
    key_names, load_file, not_registered, raw_ids, struct_fields, suggest, topic_level_problem,
    unknown_meter, valid_host_port,
};
pub use load::{Diagnostics, Problem};
pub(crate) use register::{check_machines, check_meters, check_site};
pub use secret::{Secret, SecretError};
pub(crate) use section::{CheckMany, CheckOne, References, Section, sections, unchecked};

// Transition (issue 14): the old paths of the section types that moved to their owners, so
// that files outside the config lane compile unchanged. The lead removes these after merging.
pub use crate::agent::config::{Config, load, load_str};
pub use crate::engine::config::{
    Agent, Break, Calendar, Condition, Declared, ElectricityMethod, EnergyConfig, Green,
    Maintenance, Op, Rule, Shift, StateRules, ValueAdded, ValueAddedMethod, Weekday,
};
pub use crate::sink::config::{
    FileOutput, InfluxApi, InfluxOutput, Spool, UPLINK_OUTPUT, Uplink, default_output_name,
    default_topic_prefix, default_uplink_measurements,
};
pub use crate::source::modbus::config::{
    ByteOrder, DataType, Link, ModbusDevice, ModbusField, ModbusSerial, Parity, Profile,
    RegisterKind, TcpTransport, load_profile_str,
};
pub use crate::source::modbus::profile;
pub use crate::web::config::Web;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `[site]`
#[derive(Debug, Clone, Deserialize)]
pub struct Site {
    /// County code or name, the first tag on every line (e.g. `"yongkang"`).
    pub county: String,
    /// The enterprise's sector in the programme.
    pub sector: Sector,
    /// The enterprise's id, unique in the county (e.g. its unified social credit code).
    pub enterprise: String,
    /// The enterprise's name, for people.
    #[serde(default)]
    pub name: String,
    /// IANA time zone for shift, day and month boundaries. Timestamps stay UTC.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

impl Default for Site {
    fn default() -> Self {
        Site {
            county: String::new(),
            sector: Sector::Other,
            enterprise: String::new(),
            name: String::new(),
            timezone: default_timezone(),
        }
    }
}

fn default_timezone() -> String {
    "Asia/Shanghai".to_string()
}

/// The programme's seven sectors of the metal-products industry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Sector {
    /// 门业
    Doors,
    /// 杯业 (vacuum cups)
    Cups,
    /// 炊具
    Cookware,
    /// 电动工具
    PowerTools,
    /// 休闲器具
    Leisure,
    /// 铸造
    Castings,
    Other,
}

impl Sector {
    /// Every sector, in the programme's order.
    pub const ALL: [Sector; 7] = [
        Sector::Doors,
        Sector::Cups,
        Sector::Cookware,
        Sector::PowerTools,
        Sector::Leisure,
        Sector::Castings,
        Sector::Other,
    ];

    /// The sector whose [`Sector::as_str`] is `name`.
    pub fn parse(name: &str) -> Option<Sector> {
        Sector::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sector::Doors => "doors",
            Sector::Cups => "cups",
            Sector::Cookware => "cookware",
            Sector::PowerTools => "power_tools",
            Sector::Leisure => "leisure",
            Sector::Castings => "castings",
            Sector::Other => "other",
        }
    }
}

/// `[[machine]]`: one production machine in the enterprise's register.
#[derive(Debug, Clone, Deserialize)]
pub struct Machine {
    /// Short id used in tags and references (e.g. `"cnc01"`).
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// What sort of machine (`"machining_centre"`, `"lathe"`, `"press"`, …); state rules can
    /// be chosen by kind.
    pub kind: String,
    /// A numerically controlled machine (数控设备): counts toward the CNC rate.
    pub cnc: bool,
    /// A digital machine (数字化设备) that can deliver data. Defaults to `cnc`.
    #[serde(default)]
    pub digital: Option<bool>,
    /// The signal that carries the machine's cumulative count of parts made.
    #[serde(default)]
    pub parts_signal: Option<String>,
    /// The signal that carries the cumulative count of good parts (or use `reject_signal`).
    #[serde(default)]
    pub good_signal: Option<String>,
    /// The signal that carries the cumulative count of rejected parts; good = total − rejects.
    #[serde(default)]
    pub reject_signal: Option<String>,
    /// Ideal cycle time of one part, for effectiveness (performance) and OEE.
    #[serde(default, deserialize_with = "optional_duration")]
    pub ideal_cycle: Option<Duration>,
    /// Value added per good part in CNY, for `[value_added] method = "parts"`. Give it only on
    /// the machine that finishes the product, or parts are counted once per process step.
    #[serde(default)]
    pub value_added_per_part: Option<f64>,
    /// Gross output value per good part in CNY, for `method = "gross_output"`.
    #[serde(default)]
    pub gross_output_per_part: Option<f64>,
}

impl Machine {
    pub fn is_digital(&self) -> bool {
        self.digital.unwrap_or(self.cnc)
    }
}

/// `[[meter]]`: an energy or water meter.
#[derive(Debug, Clone, Deserialize)]
pub struct Meter {
    pub id: String,
    /// What the meter measures.
    pub carrier: Carrier,
    /// `"site"` (default) or the id of the machine the meter belongs to.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// The signal with the meter's reading. Without it the meter's signals are written but no
    /// energy is accounted.
    #[serde(default)]
    pub signal: Option<String>,
    /// Whether `signal` is a cumulative `counter` (kWh, m³, t …) or a rate (`power`: kW, m³/h …)
    /// that is integrated over time.
    #[serde(default)]
    pub reading: Reading,
    /// The unit of the counter (or the unit per hour of a rate). Defaults to the carrier's
    /// usual unit: kWh, m3, t, kg or GJ.
    #[serde(default)]
    pub unit: Option<String>,
    /// The value at which the counter rolls over to zero (e.g. 99999999.9 for an 8+1 digit
    /// register); without it a falling counter is taken as a reset.
    #[serde(default)]
    pub rollover: Option<f64>,
}

/// How a meter's reading is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// A cumulative counter: consumption is the difference between readings.
    #[default]
    Counter,
    /// A rate per hour (kW for electricity): consumption is its integral over time.
    Power,
}

fn default_scope() -> String {
    "site".to_string()
}

/// Energy carriers and water.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Carrier {
    Electricity,
    NaturalGas,
    Water,
    Diesel,
    Lpg,
    Steam,
    Heat,
}

impl Carrier {
    /// The unit a meter of this carrier counts in unless the config says otherwise.
    pub fn default_unit(self) -> &'static str {
        match self {
            Carrier::Electricity => "kWh",
            Carrier::NaturalGas => "m3",
            Carrier::Water | Carrier::Steam => "t",
            Carrier::Diesel | Carrier::Lpg => "kg",
            Carrier::Heat => "GJ",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Electricity => "electricity",
            Carrier::NaturalGas => "natural_gas",
            Carrier::Water => "water",
            Carrier::Diesel => "diesel",
            Carrier::Lpg => "lpg",
            Carrier::Steam => "steam",
            Carrier::Heat => "heat",
        }
    }
}

/// `[[mqtt]]`: an MQTT broker that machines, IoT boxes or PLC gateways publish to. The agent
/// subscribes to every `[[mqtt.topic]]` pattern with QoS 1 and keeps one connection per broker.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttBroker {
    /// Broker id for logs, metrics and the agent's health line.
    pub id: String,
    /// `host:port` of the broker (1883 plain, 8883 TLS by convention). With TLS the host must be
    /// the name (or IP address) the broker's certificate was issued for.
    pub address: String,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// The client id; fixed, so that the broker keeps the agent's session (its subscriptions and
    /// the QoS 1 messages queued while the agent is away) across reconnections and restarts.
    /// Default `shopfloor-<enterprise>-<id>`. Two agents must never share one.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `false` (default) asks the broker for a persistent session; `true` starts afresh on every
    /// connection and loses what was published while the agent was away.
    #[serde(default)]
    pub clean_session: bool,
    /// How often the agent pings an idle connection; the broker drops a client that stays
    /// silent for one and a half times this.
    #[serde(default = "default_keepalive", deserialize_with = "duration")]
    pub keepalive: Duration,
    /// The longest wait between two connection attempts; the wait doubles from one second up to
    /// this after each failure.
    #[serde(default = "default_mqtt_max_backoff", deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// User name for the broker.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, `{ env = "VAR" }` or `{ file = "/path" }`; needs `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS; without this table the connection is plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTls>,
    /// Messages whose payload is larger than this many bytes are counted as oversized and
    /// dropped, never decoded. The client reads packets up to four times this (at least 1 MiB)
    /// so that it can name the topic and acknowledge the message; see `source::mqtt`.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// A message whose own timestamp is further than this from the agent's clock (either way)
    /// is counted as bad and dropped: a box with a wrong clock would put data in the wrong
    /// shift. Raise it for boxes that replay a buffer after an outage.
    #[serde(default = "default_max_timestamp_skew", deserialize_with = "duration")]
    pub max_timestamp_skew: Duration,
    /// The topic map.
    #[serde(default, rename = "topic")]
    pub topics: Vec<MqttTopic>,
}

pub(crate) fn default_keepalive() -> Duration {
    Duration::from_secs(30)
}
pub(crate) fn default_mqtt_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_max_packet_size() -> usize {
    256 * 1024
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

/// `[mqtt.tls]`: TLS to the broker. The certificates are PEM files.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttTls {
    /// The CA certificate(s) the broker's certificate must chain to. For a broker with a public
    /// certificate, point it at the system bundle (`/etc/ssl/certs/ca-certificates.crt`).
    pub ca_file: PathBuf,
    /// The agent's own certificate, for brokers that require client certificates; needs
    /// `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
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

/// The declared type of an MQTT signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalType {
    #[default]
    Float,
    Int,
    Bool,
    String,
}

impl SignalType {
    /// For messages: "a float", "an integer", …
    pub fn with_article(self) -> &'static str {
        match self {
            SignalType::Float => "a float",
            SignalType::Int => "an integer",
            SignalType::Bool => "a bool",
            SignalType::String => "a string",
        }
    }
}

impl Section for Site {}
impl Section for Machine {}
impl Section for Meter {}
impl Section for MqttBroker {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        match path {
            [] => struct_fields::<MqttBroker>(),
            ["tls"] => struct_fields::<MqttTls>(),
            ["topic"] => struct_fields::<MqttTopic>(),
            ["topic", "field"] => struct_fields::<MqttField>(),
            _ => &[],
        }
    }
}

/// Machine states after ISO 22400-2's time model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Actual production time (APT).
    Running,
    /// Setup and changeover.
    Setup,
    /// Powered, ready, not producing.
    Idle,
    /// Unplanned delay: a fault or alarm.
    Alarm,
    /// Switched off or stopped by the operator.
    Stopped,
    /// No valid data: the machine or its data path is down.
    Offline,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Running,
        State::Setup,
        State::Idle,
        State::Alarm,
        State::Stopped,
        State::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Setup => "setup",
            State::Idle => "idle",
            State::Alarm => "alarm",
            State::Stopped => "stopped",
            State::Offline => "offline",
        }
    }

    /// The integer written as `machine_state.code`, stable forever: dashboards map colours on it.
    pub fn code(self) -> i64 {
        match self {
            State::Offline => 0,
            State::Running => 1,
            State::Setup => 2,
            State::Idle => 3,
            State::Alarm => 4,
            State::Stopped => 5,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An optional duration.
pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Reads a duration written as `"500ms"`, `"1s"`, `"5m"`, `"2h"` or `"7d"`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl serde::de::Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"500ms\", \"10s\" or \"5m\"")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit: write \"{n}s\" for seconds or \"{n}ms\" for milliseconds"
            )))
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit: write \"{n}s\" for seconds"
            )))
        }
    }
    d.deserialize_any(DurationVisitor)
}

/// Parses `"<number><unit>"` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        format!("`{text}` is not a duration: write a number and a unit, like \"500ms\", \"10s\" or \"5m\"")
    })?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        "" => {
            return Err(format!(
                "`{text}` has no unit: write \"{text}s\" for seconds"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m, h or d"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("10 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("fast")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
