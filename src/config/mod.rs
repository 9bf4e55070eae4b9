//! Configuration: one TOML file that names the site, the enterprise's register of production
//! machines, the devices that feed them, the state rules and the outputs.
//!
//! Every option is documented here, beside the code that reads it; `config/shopfloor.toml` is a
//! complete commented example, and `README.md` carries the reference tables. Loading never stops
//! at the first mistake: [`load`] reports every problem it finds with file, line and column.

mod load;
pub mod profile;
mod secret;

pub use load::{Diagnostics, Problem, default_output_name, load, load_profile_str, load_str};
pub use secret::{Secret, SecretError};

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

/// The programme's seven sectors of the metal-products industry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            data_dir: default_data_dir(),
            offline_after: default_offline_after(),
            heartbeat: default_heartbeat(),
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
}

fn default_scope() -> String {
    "site".to_string()
}

/// Energy carriers and water.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

/// Machine states after ISO 22400-2's time model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, PartialOrd, Ord)]
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
        f.write_str(self.as_str())
    }
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

/// `{ signal = "spindle_rpm", op = ">", value = 0 }`. Booleans compare as 0 and 1.
#[derive(Debug, Clone, Deserialize)]
pub struct Condition {
    pub signal: String,
    pub op: Op,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Op {
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

/// `[spool]`: the crash-safe disk queue every record passes through.
#[derive(Debug, Clone, Deserialize)]
pub struct Spool {
    /// Spool file; default `<data_dir>/spool.db`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Past this size the oldest records are dropped and counted.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// `"normal"` (default: survives a crash of the agent, may lose the last second of records
    /// on power loss) or `"full"` (syncs every append; much slower).
    #[serde(default)]
    pub sync: crate::sink::spool::SyncPolicy,
}

impl Default for Spool {
    fn default() -> Self {
        Spool {
            path: None,
            max_bytes: default_spool_max_bytes(),
            sync: Default::default(),
        }
    }
}

fn default_spool_max_bytes() -> u64 {
    1 << 30
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
    /// Lines per write request.
    #[serde(default = "default_batch_lines")]
    pub batch_lines: usize,
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_batch_lines() -> usize {
    5000
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

/// Reads a duration written as `"500ms"`, `"1s"`, `"5m"`, `"2h"` or `"7d"`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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

/// An optional duration (`poll` of a field, `frame_gap`).
fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
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
