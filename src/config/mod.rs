//! Configuration: one TOML file that names the site, the enterprise's register of production
//! machines, the devices that feed them, the state rules and the outputs.
//!
//! Every option is documented here, beside the code that reads it; `config/shopfloor.toml` is a
//! complete commented example, and `README.md` carries the reference tables. Loading never stops
//! at the first mistake: [`load`] reports every problem it finds with file, line and column.

pub(crate) mod composite;
mod load;
pub mod profile;
mod secret;

/// Transition: these moved to [`crate::model`]; the re-export keeps `config::State` and the
/// others working until every user imports them from there.
pub use crate::model::{Sector, SignalType, State};
pub(crate) use load::{
    Checker, Seg, check_document, key, key_names, load_file, struct_fields, suggest,
    valid_host_port,
};
pub use load::{Diagnostics, Problem, default_output_name, load, load_profile_str, load_str};
pub use secret::{Secret, SecretError};

pub(crate) use composite::Composite;
// Moved by issue 14; re-exported here until the other lanes import them from their new homes.
pub use crate::common::mqtt::MqttTls;
pub use crate::sink::uplink::{UPLINK_OUTPUT, Uplink};
pub use crate::source::mqtt::config::{
    MqttBroker, MqttField, MqttProtocol, MqttTopic, PayloadFormat,
};

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    /// `[site]`: who and where this agent is.
    pub site: Site,
    /// `[agent]`: data directory, timings.
    #[serde(default)]
    pub agent: Agent,
    /// `[[machine]]`: the enterprise's register of production machines (生产设备台账), including
    /// machines that have no data source. The register is the denominator of the networking and
    /// CNC rates, so it must list every production machine, connected or not.
    #[serde(default, rename = "machine")]
    pub machines: Vec<Machine>,
    /// `[[meter]]`: energy and water meters.
    #[serde(default, rename = "meter")]
    pub meters: Vec<Meter>,
    /// `[[modbus]]`: Modbus devices and their register maps, with profiles already merged in.
    #[serde(default)]
    pub modbus: Vec<ModbusDevice>,
    /// `[[modbus_serial]]`: serial ports that Modbus RTU devices hang on.
    #[serde(default)]
    pub modbus_serial: Vec<ModbusSerial>,
    /// `[[mqtt]]`: MQTT brokers and the topics read from them.
    #[serde(default)]
    pub mqtt: Vec<MqttBroker>,
    /// `[[state_rules]]`: how machine states are derived from signals.
    #[serde(default)]
    pub state_rules: Vec<StateRules>,
    /// `[spool]`: the disk buffer between the engine and the outputs.
    #[serde(default)]
    pub spool: Spool,
    /// `[[influx]]`: InfluxDB-compatible stores (InfluxDB 1.x/2.x/3.x, VictoriaMetrics).
    #[serde(default)]
    pub influx: Vec<InfluxOutput>,
    /// `[[file]]`: line-protocol files, the local store of `shopfloor demo`.
    #[serde(default)]
    pub file: Vec<FileOutput>,
    /// `[calendar]`: shifts, breaks, holidays and planned maintenance.
    #[serde(default)]
    pub calendar: Calendar,
    /// `[energy]`: conversion to tonnes of standard coal.
    #[serde(default)]
    pub energy: EnergyConfig,
    /// `[value_added]`: how value added is estimated.
    #[serde(default)]
    pub value_added: ValueAdded,
    /// `[green]`: limits for the green-manufacturing alerts.
    #[serde(default)]
    pub green: Green,
    /// `[web]`: the local board, its API and `/metrics`.
    #[serde(default)]
    pub web: Web,
    /// `[uplink]`: the enterprise's `fleet` and `green` records published to the county's MQTT
    /// broker. Optional; without it the agent publishes nothing.
    #[serde(default)]
    pub uplink: Option<Uplink>,
}

impl Config {
    /// The register's machine ids and meter ids, as the sources look samples up against them.
    pub fn register_ids(
        &self,
    ) -> (
        std::collections::HashSet<std::sync::Arc<str>>,
        std::collections::HashSet<std::sync::Arc<str>>,
    ) {
        let machines = self.machines.iter().map(|m| m.id.as_str().into()).collect();
        let meters = self.meters.iter().map(|m| m.id.as_str().into()).collect();
        (machines, meters)
    }
}

/// `[web]`
#[derive(Debug, Clone, Deserialize)]
pub struct Web {
    /// Serve the board at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address to listen on. The default keeps the board on the gateway itself; to show it on
    /// the shop floor's network, listen on that interface and put it behind the plant's
    /// firewall: the board has no login.
    #[serde(default = "default_listen")]
    pub listen: std::net::SocketAddr,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            enabled: true,
            listen: default_listen(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
}

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

/// `[agent]`
#[derive(Debug, Clone, Deserialize)]
pub struct Agent {
    /// Where the spool and the engine's saved state live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A machine with no valid data for this long becomes `offline`.
    #[serde(default = "default_offline_after", deserialize_with = "duration")]
    pub offline_after: Duration,
    /// A `machine_state` line is repeated this often even without a change, so a dashboard's
    /// "last value" query always finds one.
    #[serde(default = "default_heartbeat", deserialize_with = "duration")]
    pub heartbeat: Duration,
    /// Open window totals (`machine_time`, `fleet`, `energy`, `green`) are rewritten this
    /// often, and the engine's accumulators saved to the data directory.
    #[serde(default = "default_window_flush", deserialize_with = "duration")]
    pub window_flush: Duration,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            data_dir: default_data_dir(),
            offline_after: default_offline_after(),
            heartbeat: default_heartbeat(),
            window_flush: default_window_flush(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/shopfloor")
}
fn default_offline_after() -> Duration {
    Duration::from_secs(10)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(60)
}
fn default_window_flush() -> Duration {
    Duration::from_secs(60)
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

/// `[[modbus]]`: one Modbus device (unit): an IoT box on a machine's controller, a PLC, a meter.
///
/// A device is reached in one of two ways: `address` (Modbus TCP, or RTU frames over TCP to a
/// serial server or DTU), or `serial` (the id of a `[[modbus_serial]]` port, RTU). Devices that
/// share an address and transport, or a serial port, share one connection: one task owns it and
/// sends their requests one at a time, as a gateway or an RS-485 line needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ModbusDevice {
    /// Device id for logs and health lines.
    pub id: String,
    /// `host:port` of a Modbus TCP device or of a serial server (port 502 by default).
    #[serde(default)]
    pub address: Option<String>,
    /// How frames travel to `address`: `tcp` (Modbus TCP, MBAP header) or `rtu_over_tcp` (RTU
    /// frames with CRC in a TCP stream, as transparent serial servers and DTUs forward them).
    #[serde(default)]
    pub transport: TcpTransport,
    /// The id of the `[[modbus_serial]]` port the device hangs on (instead of `address`).
    #[serde(default)]
    pub serial: Option<String>,
    /// Modbus unit id (slave id), 0–247.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// How often the device is read; a field's own `poll` overrides it for that field.
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll: Duration,
    /// Time allowed for connecting and for each request.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Whether `address` values in the register map count from 0 (protocol addresses, the
    /// default) or from 1 (as many vendor manuals print them: register 40001 is address 0).
    #[serde(default)]
    pub address_base: u16,
    /// Fields closer than this many registers are read in one request, gap included.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Upper bound on registers per request, for devices that cannot take the protocol's 125.
    #[serde(default = "default_max_registers")]
    pub max_registers: u16,
    /// Read every field with a request of its own: for devices that answer "illegal address"
    /// to any read that is not exactly one of their documented values.
    #[serde(default)]
    pub one_request_per_field: bool,
    /// A register map from `profiles/<name>.toml` beside the config file, or one shipped with
    /// Shopfloor (`config/profiles/`). Its fields come first; the device's own fields add to it.
    #[serde(default)]
    pub profile: Option<String>,
    /// The machine that fields without `machine` or `meter` belong to (a profile's fields
    /// never name one).
    #[serde(default)]
    pub machine: Option<String>,
    /// The meter that fields without `machine` or `meter` belong to.
    #[serde(default)]
    pub meter: Option<String>,
    /// The register map.
    #[serde(default, rename = "field")]
    pub fields: Vec<ModbusField>,
}

impl ModbusDevice {
    /// The connection this device is reached through. Devices with equal links share one.
    pub fn link(&self) -> Link {
        match (&self.serial, &self.address) {
            (Some(port), _) => Link::Serial(port.clone()),
            (None, Some(address)) => match self.transport {
                TcpTransport::Tcp => Link::Tcp(address.clone()),
                TcpTransport::RtuOverTcp => Link::RtuOverTcp(address.clone()),
            },
            (None, None) => Link::Tcp(String::new()),
        }
    }

    /// The poll interval of a field: its own, else the device's.
    pub fn poll_of(&self, field: &ModbusField) -> Duration {
        field.poll.unwrap_or(self.poll)
    }
}

/// How a device is reached; equal links share one connection and one owner task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    /// Modbus TCP to `host:port`.
    Tcp(String),
    /// RTU frames over a TCP stream to `host:port`.
    RtuOverTcp(String),
    /// RTU on the `[[modbus_serial]]` port with this id.
    Serial(String),
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Tcp(a) => write!(f, "tcp {a}"),
            Link::RtuOverTcp(a) => write!(f, "rtu over tcp {a}"),
            Link::Serial(p) => write!(f, "serial {p}"),
        }
    }
}

/// Framing on a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpTransport {
    #[default]
    Tcp,
    RtuOverTcp,
}

fn default_unit() -> u8 {
    1
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_max_gap() -> u16 {
    8
}
fn default_max_registers() -> u16 {
    125
}

/// `[[modbus_serial]]`: an RS-485 (or RS-232) port that Modbus RTU devices hang on.
///
/// One task owns the port and sends one request at a time, leaving the line silent for
/// `frame_gap` between frames as RTU requires (the end of a frame is recognised by silence).
#[derive(Debug, Clone, Deserialize)]
pub struct ModbusSerial {
    /// The id devices name in `serial = "…"`.
    pub id: String,
    /// The serial device, e.g. `/dev/ttyUSB0` or `/dev/ttyS1`.
    pub port: String,
    /// Line speed in bit/s.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `none`, `even` or `odd`. The Modbus specification's default is `even`; most meters
    /// leave the factory with `none`, so check the device's display or manual.
    #[serde(default)]
    pub parity: Parity,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Silence kept on the line before each request. Default: 3.5 character times at `baud`
    /// (4 ms at 9600 8N1), and 1.75 ms above 19200 bit/s, as the RTU specification sets.
    #[serde(default, deserialize_with = "optional_duration")]
    pub frame_gap: Option<Duration>,
}

impl ModbusSerial {
    /// The silent interval before each request: `frame_gap`, else the specification's 3.5
    /// characters (1.75 ms above 19200 bit/s).
    pub fn effective_frame_gap(&self) -> Duration {
        if let Some(gap) = self.frame_gap {
            return gap;
        }
        if self.baud > 19_200 || self.baud == 0 {
            return Duration::from_micros(1750);
        }
        // A character is a start bit, the data bits, the parity bit if any, and the stop bits.
        let bits = 1
            + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits);
        Duration::from_secs_f64(3.5 * f64::from(bits) / f64::from(self.baud))
    }
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// `[[modbus.field]]`: one signal in a device's register map.
#[derive(Debug, Clone, Deserialize)]
pub struct ModbusField {
    /// The registered machine this signal belongs to (or use `meter`; default: the device's).
    #[serde(default)]
    pub machine: Option<String>,
    /// The meter this signal belongs to (or use `machine`; default: the device's).
    #[serde(default)]
    pub meter: Option<String>,
    /// Signal name, the field key in the `signal` line (e.g. `"spindle_rpm"`).
    pub signal: String,
    /// Which Modbus table: `coil`, `discrete`, `holding` or `input`.
    pub register: RegisterKind,
    /// Register or bit address, counted from `address_base`.
    pub address: u16,
    /// Value type; `bool` for coils and discrete inputs.
    #[serde(rename = "type", default)]
    pub data_type: Option<DataType>,
    /// For `type = "string"`: how many registers (two characters each) the text occupies.
    #[serde(default)]
    pub length: Option<u16>,
    /// Byte and word order of multi-byte values.
    #[serde(default)]
    pub order: ByteOrder,
    /// For a `bool` in a holding or input register: the bit, 0 (least significant) to 15.
    #[serde(default)]
    pub bit: Option<u8>,
    /// value × scale + offset. Setting either makes the field a float.
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    /// Poll this field at its own interval (e.g. energy counters every minute while states are
    /// read every second). Fields with the same interval form a group, planned together.
    #[serde(default, deserialize_with = "optional_duration")]
    pub poll: Option<Duration>,
    /// The numbering `address` is written in: the device's `address_base`, or the profile's for
    /// a field that came from a profile. Set by the loader.
    #[serde(skip)]
    pub address_base: u16,
}

impl ModbusField {
    /// The effective type: coils and discrete inputs are always bool, registers default to u16.
    pub fn data_type(&self) -> DataType {
        match self.register {
            RegisterKind::Coil | RegisterKind::Discrete => DataType::Bool,
            _ => self.data_type.unwrap_or(DataType::U16),
        }
    }

    /// Registers (or bits) the field occupies.
    pub fn registers(&self) -> u16 {
        match self.data_type() {
            DataType::String => self.length.unwrap_or(1),
            ty => ty.registers(),
        }
    }

    /// The type the field's value has in the `signal` line: what `decode::decode` makes of
    /// the registers.
    pub fn signal_type(&self) -> SignalType {
        match self.data_type() {
            DataType::Bool => SignalType::Bool,
            DataType::String => SignalType::String,
            DataType::F32 | DataType::F64 => SignalType::Float,
            _ if self.scale.is_some() || self.offset.is_some() => SignalType::Float,
            _ => SignalType::Int,
        }
    }

    /// The protocol (0-based) address of the field's first register, or `None` for address 0
    /// in 1-based numbering.
    pub fn protocol_address(&self) -> Option<u16> {
        self.address.checked_sub(self.address_base)
    }
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Function code 1.
    Coil,
    /// Function code 2.
    Discrete,
    /// Function code 3.
    Holding,
    /// Function code 4.
    Input,
}

impl RegisterKind {
    pub fn is_bit(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterKind::Coil => "coil",
            RegisterKind::Discrete => "discrete",
            RegisterKind::Holding => "holding",
            RegisterKind::Input => "input",
        }
    }

    /// The Modbus function code that reads this table.
    pub fn function_code(self) -> u8 {
        match self {
            RegisterKind::Coil => 1,
            RegisterKind::Discrete => 2,
            RegisterKind::Holding => 3,
            RegisterKind::Input => 4,
        }
    }

    /// The protocol's limit on one read of this table.
    pub fn protocol_limit(self) -> u16 {
        if self.is_bit() { 2000 } else { 125 }
    }
}

/// Register value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    /// Text of `length` registers, two characters per register (ASCII or UTF-8), as devices
    /// report program names, serial numbers and firmware versions. Trailing NULs and spaces
    /// are dropped.
    String,
}

impl DataType {
    /// Registers the type occupies (bits for a bool in a bit table). A string occupies its
    /// field's `length`; see [`ModbusField::registers`].
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::I16 | DataType::U16 | DataType::String => 1,
            DataType::I32 | DataType::U32 | DataType::F32 => 2,
            DataType::I64 | DataType::U64 | DataType::F64 => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::I16 => "i16",
            DataType::U16 => "u16",
            DataType::I32 => "i32",
            DataType::U32 => "u32",
            DataType::I64 => "i64",
            DataType::U64 => "u64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }
}

/// Byte order of a multi-register value, named by where the bytes of the big-endian value
/// `A B C D` land: `ABCD` big-endian, `DCBA` little-endian, `BADC` bytes swapped in each
/// register, `CDAB` registers swapped (the common "low word first" of many meters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ByteOrder {
    #[default]
    #[serde(alias = "abcd")]
    ABCD,
    #[serde(alias = "dcba")]
    DCBA,
    #[serde(alias = "badc")]
    BADC,
    #[serde(alias = "cdab")]
    CDAB,
}

impl ByteOrder {
    pub const ALL: [ByteOrder; 4] = [
        ByteOrder::ABCD,
        ByteOrder::CDAB,
        ByteOrder::BADC,
        ByteOrder::DCBA,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ByteOrder::ABCD => "ABCD",
            ByteOrder::DCBA => "DCBA",
            ByteOrder::BADC => "BADC",
            ByteOrder::CDAB => "CDAB",
        }
    }
}

/// A device profile (`config/profiles/<name>.toml`): the register map of one device model,
/// written once and used by name from every `[[modbus]]` of that model.
///
/// A profile's fields name no machine or meter; the device that uses the profile says which
/// one they belong to. Limits in a profile describe what the model can take, so a device gets
/// the tighter of its own and its profile's.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Profile {
    /// What the profile describes, for `check --plan` and for people.
    #[serde(default)]
    pub description: String,
    /// The numbering of the addresses below: 0 (protocol addresses) or 1 (manual numbering).
    #[serde(default)]
    pub address_base: u16,
    /// The most registers the model answers in one request.
    #[serde(default)]
    pub max_registers: Option<u16>,
    /// The widest hole the model lets a request span.
    #[serde(default)]
    pub max_gap: Option<u16>,
    /// The model only answers reads of exactly one documented value.
    #[serde(default)]
    pub one_request_per_field: bool,
    #[serde(default, rename = "field")]
    pub fields: Vec<ModbusField>,
}

/// `[[state_rules]]`: an ordered list of rules for some machines. The first rule whose
/// conditions all hold gives the state; when none holds, `default` does.
///
/// A rule set applies to the machines it names in `machines`, else to the machines whose kind it
/// names in `kinds`; a rule set naming neither applies to every other machine. A machine id
/// beats a kind, which beats the catch-all.
#[derive(Debug, Clone, Deserialize)]
pub struct StateRules {
    #[serde(default)]
    pub machines: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The state when no rule holds.
    #[serde(default = "default_state")]
    pub default: State,
    /// A new state must hold this long before it is taken, against flapping signals.
    #[serde(default, deserialize_with = "duration")]
    pub min_duration: Duration,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

fn default_state() -> State {
    State::Idle
}

/// `[[state_rules.rule]]`
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    pub state: State,
    /// Conditions that must all hold.
    pub when: Vec<Condition>,
}

/// One condition on a signal. Booleans compare as 0 and 1.
///
/// - `{ signal = "spindle_rpm", op = ">", value = 0 }`: a comparison (`==`, `!=`, `>`, `>=`,
///   `<`, `<=`);
/// - `{ signal = "load_pct", op = "between", min = 5, max = 95 }`: a closed range;
/// - `{ signal = "status_word", op = "bit_set", bit = 3 }` (or `bit_clear`): one bit of an
///   integer;
/// - `{ signal = "parts", op = "changed_within", within = "90s" }`: the signal's value changed
///   within the given time before the sample, the usual way to tell a machine is producing from
///   its part counter alone.
#[derive(Debug, Clone, Deserialize)]
pub struct Condition {
    pub signal: String,
    pub op: Op,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub bit: Option<u8>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub within: Option<Duration>,
}

impl Condition {
    /// What the operator needs, when something is missing: for `check`.
    pub fn missing(&self) -> Option<&'static str> {
        match self.op {
            Op::Between if self.min.is_none() || self.max.is_none() => Some("`min` and `max`"),
            Op::BitSet | Op::BitClear if self.bit.is_none_or(|b| b > 63) => Some("`bit` (0–63)"),
            Op::ChangedWithin if self.within.is_none() => Some("`within` (a duration)"),
            Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le if self.value.is_none() => {
                Some("`value`")
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Op {
    #[serde(rename = "between")]
    Between,
    #[serde(rename = "bit_set")]
    BitSet,
    #[serde(rename = "bit_clear")]
    BitClear,
    #[serde(rename = "changed_within")]
    ChangedWithin,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

/// `[spool]`: the crash-safe disk queue every record passes through. What the bounds and the
/// sync policies guarantee is explained in `sink::spool`.
#[derive(Debug, Clone, Deserialize)]
pub struct Spool {
    /// Spool file; default `<data_dir>/spool.db`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Byte bound: past this many bytes of records waiting, the oldest are dropped and counted
    /// (log, `/metrics`, the `agent` line). Default 1 GiB.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// Age bound: records waiting longer than this are dropped and counted as expired.
    /// Default 30 days; `"0s"` turns the age bound off.
    #[serde(default = "default_spool_max_age", deserialize_with = "duration")]
    pub max_age: Duration,
    /// `"normal"` (default: survives a crash of the agent; on power loss may lose the records
    /// of the last `sync_interval`) or `"full"` (syncs every append; nothing committed is
    /// lost, at one disk sync per append).
    #[serde(default)]
    pub sync: crate::sink::spool::SyncPolicy,
    /// With `sync = "normal"`: how often the spool's log is synced to disk. Default `"1s"`.
    #[serde(default = "default_spool_sync_interval", deserialize_with = "duration")]
    pub sync_interval: Duration,
}

impl Default for Spool {
    fn default() -> Self {
        Spool {
            path: None,
            max_bytes: default_spool_max_bytes(),
            max_age: default_spool_max_age(),
            sync: Default::default(),
            sync_interval: default_spool_sync_interval(),
        }
    }
}

impl Spool {
    /// The bounds and sync policy the spool runs with.
    pub fn limits(&self) -> crate::sink::spool::Limits {
        crate::sink::spool::Limits {
            max_bytes: self.max_bytes,
            max_age: Some(self.max_age).filter(|a| !a.is_zero()),
            sync: self.sync,
        }
    }
}

fn default_spool_max_bytes() -> u64 {
    1 << 30
}
fn default_spool_max_age() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_spool_sync_interval() -> Duration {
    Duration::from_secs(1)
}

/// `[[influx]]`: an InfluxDB-compatible store.
#[derive(Debug, Clone, Deserialize)]
pub struct InfluxOutput {
    /// Name in logs and health lines; default `"influx"`, then `"influx2"`, … for more.
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// `v2` (`/api/v2/write`: InfluxDB 2.x and 3.x, VictoriaMetrics) or `v1` (`/write`).
    #[serde(default)]
    pub api: InfluxApi,
    /// v2: organisation.
    #[serde(default)]
    pub org: Option<String>,
    /// v2: bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// v2: API token, `{ env = "VAR" }` or `{ file = "/path" }`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// v1: database.
    #[serde(default)]
    pub database: Option<String>,
    /// v1: retention policy (default: the database's default).
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// v1: user name.
    #[serde(default)]
    pub username: Option<String>,
    /// v1: password, `{ env = "VAR" }` or `{ file = "/path" }`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Timeout of one write request.
    #[serde(default = "default_write_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Lines per write request at most. Default 5000.
    #[serde(default = "default_batch_lines")]
    pub batch_lines: usize,
    /// A request with fewer than `batch_lines` lines waits until this long after the previous
    /// one, so a quiet agent sends about one request per interval. Default `"1s"`.
    #[serde(default = "default_flush_interval", deserialize_with = "duration")]
    pub flush_interval: Duration,
    /// Compress request bodies with gzip. Default true; turn off only for a store or proxy
    /// that cannot take `Content-Encoding: gzip`.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Timestamp precision sent to the store: `"ns"` (default), `"us"`, `"ms"` or `"s"`.
    /// Coarser precision is rounded down and makes points within the same unit overwrite
    /// each other; use it only for a store that wants it.
    #[serde(default)]
    pub precision: crate::line_protocol::Precision,
    /// The longest wait between retries of a failing store (back-off doubles from 0.5 s up to
    /// this, with up to 25 % jitter). Default `"60s"`.
    #[serde(default = "default_retry_max", deserialize_with = "duration")]
    pub retry_max: Duration,
    /// Bound of the dead-letter file (`<data_dir>/dead-letter-<name>.lp`, the lines the
    /// store rejected), in bytes. At the bound the file becomes `<file>.1`, replacing the
    /// previous one, whose lines are deleted and counted. Default 16 MiB.
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: u64,
}

impl InfluxOutput {
    /// The writer's batching and retry settings, with the dead-letter file in `dir`.
    pub fn writer_options(&self, name: &str, dir: &std::path::Path) -> crate::sink::WriterOptions {
        crate::sink::WriterOptions {
            batch_lines: self.batch_lines,
            flush_interval: self.flush_interval,
            retry_max: self.retry_max,
            dead_letter_max_bytes: self.dead_letter_max_bytes,
            ..crate::sink::WriterOptions::new(name, dir)
        }
    }
}

pub(crate) fn default_write_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(crate) fn default_batch_lines() -> usize {
    5000
}
pub(crate) fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_dead_letter_max_bytes() -> u64 {
    crate::sink::DEAD_LETTER_MAX_BYTES
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InfluxApi {
    V1,
    #[default]
    V2,
}

/// `[[file]]`: appends line protocol to a file.
#[derive(Debug, Clone, Deserialize)]
pub struct FileOutput {
    #[serde(default)]
    pub name: Option<String>,
    pub path: PathBuf,
}

/// `[calendar]`: when the enterprise plans to work. Without any shift every hour is planned
/// busy time (a 24/7 plant).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Calendar {
    #[serde(default, rename = "shift")]
    pub shifts: Vec<Shift>,
    /// Dates (local, `"2026-10-01"`) without any shift: public holidays, plant closures.
    #[serde(default)]
    pub holidays: Vec<jiff::civil::Date>,
    /// Dates that are worked with Monday's shifts although their weekday has none (the make-up
    /// working days of Chinese public holidays, 调休).
    #[serde(default)]
    pub workdays: Vec<jiff::civil::Date>,
    /// Planned maintenance: planned downtime, not counted in planned busy time.
    #[serde(default, rename = "maintenance")]
    pub maintenance: Vec<Maintenance>,
}

/// `[[calendar.shift]]`
#[derive(Debug, Clone, Deserialize)]
pub struct Shift {
    /// Shift name, the `shift` tag of shift windows (e.g. `"day"`, `"night"`).
    pub name: String,
    /// Weekdays the shift starts on: `"mon"` … `"sun"`.
    pub days: Vec<Weekday>,
    /// Local start time, `"08:00"`.
    pub start: jiff::civil::Time,
    /// Local end time; an end at or before the start means the shift ends the next day.
    pub end: jiff::civil::Time,
    /// Breaks inside the shift: not planned operation time.
    #[serde(default)]
    pub breaks: Vec<Break>,
}

/// A break, `{ start = "12:00", end = "12:30" }`, in local time.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Break {
    pub start: jiff::civil::Time,
    pub end: jiff::civil::Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub fn to_jiff(self) -> jiff::civil::Weekday {
        match self {
            Weekday::Mon => jiff::civil::Weekday::Monday,
            Weekday::Tue => jiff::civil::Weekday::Tuesday,
            Weekday::Wed => jiff::civil::Weekday::Wednesday,
            Weekday::Thu => jiff::civil::Weekday::Thursday,
            Weekday::Fri => jiff::civil::Weekday::Friday,
            Weekday::Sat => jiff::civil::Weekday::Saturday,
            Weekday::Sun => jiff::civil::Weekday::Sunday,
        }
    }
}

/// `[[calendar.maintenance]]`: a planned maintenance window in local time.
#[derive(Debug, Clone, Deserialize)]
pub struct Maintenance {
    /// Machines under maintenance; empty means all.
    #[serde(default)]
    pub machines: Vec<String>,
    pub start: jiff::civil::DateTime,
    pub end: jiff::civil::DateTime,
    #[serde(default)]
    pub reason: String,
}

/// `[energy]`
#[derive(Debug, Clone, Deserialize)]
pub struct EnergyConfig {
    /// How electricity becomes standard coal: `calorific` (当量值, 0.1229 kgce/kWh, the
    /// default) or `equivalent` (等价值, the coal burnt to generate a kWh).
    #[serde(default)]
    pub electricity_method: ElectricityMethod,
    /// kgce per kWh under the equivalent method: the year's published coal consumption of
    /// thermal power supply.
    #[serde(default = "default_equivalent")]
    pub electricity_equivalent_kgce_per_kwh: f64,
    /// Site-specific coefficients in kgce per unit, e.g. `{ natural_gas = 1.1 }` for a gas
    /// whose measured calorific value is known; the GB/T 2589-2020 table is the default.
    #[serde(default)]
    pub kgce_per_unit: std::collections::BTreeMap<Carrier, f64>,
    /// Readings of a counter further apart than this are a gap: the consumption across it is
    /// spread evenly over the gap and the gap is reported.
    #[serde(default = "default_meter_gap", deserialize_with = "duration")]
    pub max_gap: Duration,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        EnergyConfig {
            electricity_method: ElectricityMethod::default(),
            electricity_equivalent_kgce_per_kwh: default_equivalent(),
            kgce_per_unit: Default::default(),
            max_gap: default_meter_gap(),
        }
    }
}

fn default_equivalent() -> f64 {
    0.3
}
fn default_meter_gap() -> Duration {
    Duration::from_secs(900)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectricityMethod {
    #[default]
    Calorific,
    Equivalent,
}

impl ElectricityMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ElectricityMethod::Calorific => "calorific",
            ElectricityMethod::Equivalent => "equivalent",
        }
    }
}

/// `[value_added]`: value added (工业增加值) is an estimate at the edge, always written with its
/// method.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ValueAdded {
    #[serde(default)]
    pub method: ValueAddedMethod,
    /// For `gross_output`: value added as a share of gross output (e.g. 0.22).
    #[serde(default)]
    pub rate: Option<f64>,
    /// For `declared`: figures for periods, `{ period = "2026-11", value_10k_cny = 850.0 }`
    /// (a month) or `{ period = "2026-11-30", value_10k_cny = 30.5 }` (a day).
    #[serde(default)]
    pub declared: Vec<Declared>,
    /// For `declared`: a file of `[[declared]]` entries in the same form, re-read when it
    /// changes, so the finance office can drop in figures without touching the config; the
    /// board's `POST /api/value-added` writes here too. Default `<data_dir>/value-added.toml`.
    #[serde(default)]
    pub declared_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueAddedMethod {
    /// Good parts × each machine's `value_added_per_part`.
    #[default]
    Parts,
    /// Good parts × `gross_output_per_part` × `rate`.
    GrossOutput,
    /// Figures declared per period.
    Declared,
}

impl ValueAddedMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueAddedMethod::Parts => "parts",
            ValueAddedMethod::GrossOutput => "gross_output",
            ValueAddedMethod::Declared => "declared",
        }
    }
}

/// A declared value added for a month (`"2026-11"`) or a day (`"2026-11-30"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Declared {
    pub period: String,
    pub value_10k_cny: f64,
}

/// `[green]`: limits that raise an alert when a closed window exceeds them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Green {
    /// Energy intensity limit, tce per 10k CNY of value added (e.g. the year's target 0.43).
    #[serde(default)]
    pub tce_per_10k_cny_limit: Option<f64>,
    /// Water intensity limit, t per 10k CNY.
    #[serde(default)]
    pub water_t_per_10k_cny_limit: Option<f64>,
}

/// An optional duration.
fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
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
