//! `[[modbus]]` and `[[modbus_serial]]`: the types the Modbus source reads, and their checks
//! (device profiles, their file and their merging are in `profile.rs`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_modbus::Slave;
use toml::Spanned;
use toml::de::DeTable;

use crate::config::{
    Checker, References, Section, Seg, duration, host_port_problem, join, key, not_registered,
    optional_duration, raw_ids, struct_fields, unknown_meter,
};
use crate::model::SignalType;

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
    /// `host:port` of a Modbus TCP device (port 502 unless set otherwise) or of a serial server.
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
    #[serde(default = "default_unit", deserialize_with = "unit_id")]
    pub unit: Slave,
    /// How often the device is read; a field's own `poll` overrides it for that field.
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll: Duration,
    /// Time allowed for connecting and for each request.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Silence kept between the end of one answer (or timeout) and the next request on the
    /// device's connection: for gateways, serial servers and DTUs that drop a request sent
    /// too soon after the last answer. Default: none (a serial line keeps its `frame_gap`).
    #[serde(default, deserialize_with = "optional_duration")]
    pub inter_request_delay: Option<Duration>,
    /// Whether `address` values in the register map count from 0 (protocol addresses, the
    /// default) or from 1 (as many vendor manuals print them: register 40001 is address 0).
    #[serde(default)]
    pub address_base: AddressBase,
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
    /// The register map: the profile's fields, then the device's own. Devices that use a
    /// profile and add no fields of their own share one list (the profile's), so a hundred
    /// boxes of one model hold its register map once.
    #[serde(default, rename = "field")]
    pub fields: Arc<[ModbusField]>,
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

    /// The machine (`true`) or meter (`false`) a field belongs to: its own, else the device's.
    /// `None` only in a config that did not pass the check.
    pub fn target_of<'a>(&'a self, field: &'a ModbusField) -> Option<(bool, &'a str)> {
        crate::source::field_target((&field.machine, &field.meter), (&self.machine, &self.meter))
    }
}

/// The Modbus source's sections of the config: what it takes from the whole file.
#[derive(Debug, Clone, Copy)]
pub struct Sections<'a> {
    /// `[[modbus]]`, with profiles merged in.
    pub devices: &'a [ModbusDevice],
    /// `[[modbus_serial]]`.
    pub serial: &'a [ModbusSerial],
}

/// The protocol's limit on registers in one read (function codes 3 and 4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// The protocol's limit on bits in one read (function codes 1 and 2).
pub const MAX_READ_BITS: u16 = 2000;

/// How a register map numbers its addresses: `address_base = 0` (protocol addresses, the
/// default) or `1` (as many vendor manuals print them: register 40001 is address 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressBase {
    #[default]
    Zero,
    One,
}

impl AddressBase {
    /// What is subtracted from a written address to get the protocol's.
    pub fn offset(self) -> u16 {
        match self {
            AddressBase::Zero => 0,
            AddressBase::One => 1,
        }
    }

    fn from_number<E: serde::de::Error>(n: i64, message: &str) -> Result<AddressBase, E> {
        match n {
            0 => Ok(AddressBase::Zero),
            1 => Ok(AddressBase::One),
            _ => Err(E::custom(message)),
        }
    }

    /// A profile's `address_base`, with the profile's wording.
    pub(super) fn in_profile<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<AddressBase, D::Error> {
        d.deserialize_any(AddressBaseVisitor("address_base is 0 or 1"))
    }
}

impl<'de> Deserialize<'de> for AddressBase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AddressBase, D::Error> {
        d.deserialize_any(AddressBaseVisitor(
            "address_base is 0 (protocol addresses) or 1 (manual numbering)",
        ))
    }
}

struct AddressBaseVisitor(&'static str);

impl serde::de::Visitor<'_> for AddressBaseVisitor {
    type Value = AddressBase;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<AddressBase, E> {
        AddressBase::from_number(n, self.0)
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<AddressBase, E> {
        AddressBase::from_number(i64::try_from(n).unwrap_or(i64::MAX), self.0)
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

fn default_unit() -> Slave {
    Slave::min_device()
}

/// A unit id as written: a number 0–255 (which ones a device may use is checked with its link).
fn unit_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Slave, D::Error> {
    let n = i64::deserialize(d)?;
    u8::try_from(n).map(Slave).map_err(|_| {
        serde::de::Error::custom(format!(
            "unit {n}: a unit id is 0–247 on a serial line (255 for a Modbus TCP device that is not a gateway)"
        ))
    })
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
    MAX_READ_REGISTERS
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
    /// The registered machine this signal belongs to (or use `meter`; default: the device's,
    /// which the loader leaves to [`ModbusDevice::target_of`] so devices can share a profile's
    /// fields).
    #[serde(default)]
    pub machine: Option<String>,
    /// The meter this signal belongs to (or use `machine`; default: the device's).
    #[serde(default)]
    pub meter: Option<String>,
    /// Signal name, the field key in the `signal` line (e.g. `"spindle_rpm"`); shared by every
    /// sample of the field.
    pub signal: Arc<str>,
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
    pub address_base: AddressBase,
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
        self.address.checked_sub(self.address_base.offset())
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
        if self.is_bit() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        }
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

/// Where a device's field came from after its profile was merged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The n-th `[[modbus.field]]` of the device.
    Own(usize),
    /// The n-th field of the device's profile.
    Profile(usize),
}

/// What is wrong with a field on its own, whichever device it is on: (key, message).
pub(super) fn field_rules(field: &ModbusField) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    let ty = field.data_type();
    if field.register.is_bit() && field.data_type.is_some_and(|t| t != DataType::Bool) {
        found.push((
            "type",
            "coils and discrete inputs hold bits: leave out `type` or write \"bool\"".to_string(),
        ));
    }
    if !field.register.is_bit() && ty == DataType::Bool && field.bit.is_none() {
        found.push((
            "type",
            "a bool in a register needs `bit` (0–15)".to_string(),
        ));
    }
    if let Some(bit) = field.bit
        && (bit > 15 || field.register.is_bit() || ty != DataType::Bool)
    {
        found.push((
            "bit",
            "`bit` (0–15) goes with type \"bool\" in a holding or input register".to_string(),
        ));
    }
    match (ty, field.length) {
        (DataType::String, None) => found.push((
            "type",
            "a string needs `length`, the number of registers it occupies (two characters each)"
                .to_string(),
        )),
        (DataType::String, Some(n)) if n == 0 || n > MAX_READ_REGISTERS => found.push((
            "length",
            format!("length is 1–{MAX_READ_REGISTERS} registers (one request's worth)"),
        )),
        (DataType::String, Some(_)) => {
            if field.scale.is_some() || field.offset.is_some() {
                found.push(("scale", "a string has no scale or offset".to_string()));
            }
        }
        (_, Some(_)) => found.push((
            "length",
            "`length` goes with type \"string\"; other types have a fixed size".to_string(),
        )),
        (_, None) => {}
    }
    if field.poll.is_some_and(|p| p.is_zero()) {
        found.push(("poll", "poll must be longer than zero".to_string()));
    }
    match field.protocol_address() {
        None => found.push((
            "address",
            "address 0 does not exist when address_base = 1".to_string(),
        )),
        Some(start) => {
            if u32::from(start) + u32::from(field.registers()) > 65536 {
                found.push((
                    "address",
                    "the value runs past the last register (65535)".to_string(),
                ));
            }
        }
    }
    found
}

impl Checker<'_> {
    fn modbus_serial(&mut self, root: &Spanned<DeTable<'_>>, base: &[Seg], port: &ModbusSerial) {
        let at = |s: &Self, k: &str| s.span_of(root, &join(base, &[key(k)]));
        let mut problems = Vec::new();
        if port.port.trim().is_empty() {
            problems.push((
                "port",
                "`port` names the serial device, e.g. \"/dev/ttyUSB0\"".to_string(),
            ));
        }
        if port.baud == 0 {
            problems.push(("baud", "baud must be above 0 (e.g. 9600)".to_string()));
        }
        if !(7..=8).contains(&port.data_bits) {
            problems.push(("data_bits", "data_bits is 7 or 8".to_string()));
        }
        if !(1..=2).contains(&port.stop_bits) {
            problems.push(("stop_bits", "stop_bits is 1 or 2".to_string()));
        }
        for (k, message) in problems {
            let span = at(self, k);
            self.push(span, format!("[[modbus_serial]] `{}`: {message}", port.id));
        }
    }

    pub(super) fn modbus_device(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        device: &mut ModbusDevice,
        origins: &[Origin],
        refs: &References<'_>,
        serial_ports: &HashSet<&str>,
    ) {
        let at = |s: &Self, rest: &[Seg]| s.span_of(root, &join(base, rest));
        let id = device.id.clone();
        match (&device.address, &device.serial) {
            (Some(_), Some(_)) | (None, None) => {
                let span = at(self, &[]);
                self.push(
                    span,
                    format!(
                        "modbus device `{id}` needs exactly one of `address` (\"host:port\", Modbus TCP or RTU over TCP) or `serial` (the id of a [[modbus_serial]])"
                    ),
                );
            }
            (Some(address), None) => {
                if let Some(problem) = host_port_problem(address, 502) {
                    let span = at(self, &[key("address")]);
                    self.push(span, format!("modbus device `{id}`: address {problem}"));
                }
            }
            (None, Some(port)) => {
                if !serial_ports.contains(port.as_str()) {
                    let span = at(self, &[key("serial")]);
                    self.push(
                        span,
                        format!(
                            "modbus device `{id}` names serial port `{port}`, which is not a [[modbus_serial]] id"
                        ),
                    );
                }
                if device.transport != TcpTransport::Tcp {
                    let span = at(self, &[key("transport")]);
                    self.push(
                        span,
                        "`transport` goes with `address`; a device on `serial` always speaks RTU"
                            .to_string(),
                    );
                }
            }
        }
        // RTU has no unit 0 that answers (it is the broadcast address); Modbus TCP devices
        // that ignore the unit id commonly expect 0 or 255.
        let rtu = device.serial.is_some() || device.transport == TcpTransport::RtuOverTcp;
        self.modbus_map(root, base, device, origins, refs, rtu);
    }

    /// The checks of a device's unit, limits, timing, machine or meter and register map,
    /// wherever the device hangs (`[[modbus]]`, or behind a dial-in DTU). `rtu`: the device
    /// is reached with RTU framing, where unit 0 is broadcast.
    pub(crate) fn modbus_map(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        device: &mut ModbusDevice,
        origins: &[Origin],
        refs: &References<'_>,
        rtu: bool,
    ) {
        let at = |s: &Self, rest: &[Seg]| s.span_of(root, &join(base, rest));
        let id = device.id.clone();
        let unit_ok = if rtu {
            device.unit.is_single_device()
        } else {
            !device.unit.is_reserved() || device.unit == Slave::tcp_device()
        };
        if !unit_ok {
            let span = at(self, &[key("unit")]);
            let range = if rtu {
                "1–247 on RTU (0 is broadcast, which no device answers)"
            } else {
                "0–247, or 255"
            };
            self.push(
                span,
                format!(
                    "modbus device `{id}`: unit {} is not in {range}",
                    device.unit.0
                ),
            );
        }
        if device.max_registers == 0 || device.max_registers > MAX_READ_REGISTERS {
            let span = at(self, &[key("max_registers")]);
            self.push(
                span,
                format!("max_registers must be 1–{MAX_READ_REGISTERS}, the protocol's limit"),
            );
        }
        if device.poll.is_zero() || device.timeout.is_zero() {
            let span = at(self, &[key("poll")]);
            self.push(
                span,
                format!("modbus device `{id}`: poll and timeout must be longer than zero"),
            );
        }
        let default_target = match (&device.machine, &device.meter) {
            (Some(_), Some(_)) => {
                let span = at(self, &[key("meter")]);
                self.push(
                    span,
                    format!("modbus device `{id}` names both a machine and a meter; its fields can only default to one"),
                );
                None
            }
            (Some(m), None) => {
                if !refs.machines.contains(m.as_str()) {
                    let span = at(self, &[key("machine")]);
                    self.push(span, not_registered("device names machine", m));
                }
                Some((true, m.clone()))
            }
            (None, Some(m)) => {
                if !refs.meters.contains(m.as_str()) {
                    let span = at(self, &[key("meter")]);
                    self.push(span, unknown_meter("device names meter", m));
                }
                Some((false, m.clone()))
            }
            (None, None) => None,
        };
        // Where a problem with field j is reported: its own key for the device's fields, the
        // `profile` key for a profile's.
        let field_span = |s: &Self, j: usize, k: &str| match origins.get(j) {
            Some(Origin::Own(n)) => at(s, &[key("field"), Seg::Index(*n), key(k)]),
            _ => at(s, &[key("profile")]),
        };
        let mut occupied: BTreeMap<RegisterKind, Vec<Occupied>> = BTreeMap::new();
        let mut signals = HashSet::new();
        let mut profile_without_target = false;
        for (j, field) in device.fields.iter().enumerate() {
            let own = matches!(origins.get(j), Some(Origin::Own(_)));
            if own {
                for (k, message) in field_rules(field) {
                    let span = field_span(self, j, k);
                    self.push(span, message);
                }
            }
            // A field without `machine` or `meter` keeps none: it belongs to the device's
            // (`ModbusDevice::target_of`), so devices of one profile can share its fields.
            let resolved = match (&field.machine, &field.meter, &default_target) {
                (Some(m), None, _) => {
                    if !refs.machines.contains(m.as_str()) {
                        let span = field_span(self, j, "machine");
                        self.push(span, not_registered("field names machine", m));
                    }
                    Some((true, m.as_str()))
                }
                (None, Some(m), _) => {
                    if !refs.meters.contains(m.as_str()) {
                        let span = field_span(self, j, "meter");
                        self.push(span, unknown_meter("field names meter", m));
                    }
                    Some((false, m.as_str()))
                }
                (None, None, Some((machine, m))) => Some((*machine, m.as_str())),
                (None, None, None) if !own => {
                    profile_without_target = true;
                    None
                }
                _ => {
                    let span = match origins.get(j) {
                        Some(Origin::Own(n)) => at(self, &[key("field"), Seg::Index(*n)]),
                        _ => at(self, &[key("profile")]),
                    };
                    self.push(
                        span,
                        format!(
                            "field `{}` needs exactly one of `machine` or `meter` (or the device's `machine` or `meter`)",
                            field.signal
                        ),
                    );
                    continue;
                }
            };
            let target = match resolved {
                Some((true, m)) => format!("machine {m}"),
                Some((false, m)) => format!("meter {m}"),
                None => String::new(),
            };
            if !signals.insert((target.clone(), field.signal.clone())) {
                let span = field_span(self, j, "signal");
                self.push(
                    span,
                    format!("signal `{}` of {target} is mapped twice", field.signal),
                );
            }
            let here = || match (origins.get(j), &device.profile) {
                (Some(Origin::Own(_)), _) | (_, None) => format!("modbus device `{id}`"),
                (_, Some(profile)) => format!("modbus device `{id}` (profile `{profile}`)"),
            };
            if let Some(clash) = self.signal_type_clash(&field.signal, field.signal_type(), here) {
                let span = field_span(self, j, "signal");
                self.push(span, clash);
            }
            let Some(start) = field.protocol_address() else {
                continue;
            };
            let start = u32::from(start);
            let end = start + u32::from(field.registers());
            occupied
                .entry(field.register)
                .or_default()
                .push((start, end, field.bit, j));
        }
        if profile_without_target {
            let span = at(self, &[key("profile")]);
            self.push(
                span,
                format!(
                    "modbus device `{id}`: the fields of profile `{}` belong to no machine or meter: add `machine = \"…\"` or `meter = \"…\"` to the device",
                    device.profile.as_deref().unwrap_or_default()
                ),
            );
        }
        for (kind, mut ranges) in occupied {
            ranges.sort_unstable();
            for pair in ranges.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let same_register_bits =
                    a.0 == b.0 && a.1 == b.1 && a.2.is_some() && b.2.is_some() && a.2 != b.2;
                if b.0 < a.1 && !same_register_bits {
                    let span = field_span(self, b.3, "address");
                    self.push(
                        span,
                        format!(
                            "{} registers of field `{}` overlap field `{}`: check the addresses and types",
                            kind.as_str(),
                            device.fields[b.3].signal,
                            device.fields[a.3].signal
                        ),
                    );
                }
            }
        }
    }
}

/// Registers a field occupies: start, end (exclusive), bit, and the field's index.
type Occupied = (u32, u32, Option<u8>, usize);

impl Section for ModbusDevice {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        match path {
            [] => struct_fields::<ModbusDevice>(),
            ["field"] => struct_fields::<ModbusField>(),
            _ => &[],
        }
    }
}
impl Section for ModbusSerial {}

/// `[[modbus_serial]]`'s row in the section table.
pub(crate) fn check_serial_ports(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    ports: &mut [ModbusSerial],
    _: &References<'_>,
) {
    checker.unique_ids(root, "modbus_serial", &raw_ids(root, "modbus_serial"));
    for (i, port) in at.iter().zip(ports.iter()) {
        checker.modbus_serial(root, &[key("modbus_serial"), Seg::Index(*i)], port);
    }
}

/// What the device's register map delivers (its profile merged in, each field's machine or
/// meter resolved by the check), for the check that every signal a state rule, meter or part
/// counter names comes from somewhere.
pub(crate) fn deliveries(device: &ModbusDevice, out: &mut crate::config::Deliveries) {
    for field in device.fields.iter() {
        out.field(
            (field.machine.as_deref(), field.meter.as_deref()),
            (device.machine.as_deref(), device.meter.as_deref()),
            &field.signal,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::load_str;

    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n[[meter]]\nid = \"m\"\ncarrier = \"electricity\"\n";

    #[test]
    fn the_address_base_is_zero_or_one() {
        let device = |base: &str| {
            format!(
                "{SITE}[[modbus]]\nid = \"d\"\naddress = \"h:502\"\nmeter = \"m\"\naddress_base = {base}\nfield = [{{ signal = \"e\", register = \"input\", address = 1 }}]\n"
            )
        };
        let cfg = load_str(&device("1"), "t.toml").unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.modbus[0].address_base, AddressBase::One);
        assert_eq!(cfg.modbus[0].fields[0].protocol_address(), Some(0));
        let d = load_str(&device("2"), "t.toml").unwrap_err();
        assert_eq!(d.problems.len(), 1, "{d}");
        assert_eq!((d.problems[0].line, d.problems[0].column), (12, 16), "{d}");
        assert!(
            d.problems[0]
                .message
                .contains("address_base is 0 (protocol addresses) or 1 (manual numbering)"),
            "{d}"
        );
    }

    #[test]
    fn a_serial_line_keeps_three_and_a_half_characters_of_silence() {
        let mut port: ModbusSerial = toml::from_str("id = \"l\"\nport = \"/dev/ttyS0\"").unwrap();
        // 9600 8N1: 10 bits a character; 3.5 × 10 / 9600 s = 3.6458 ms.
        assert_eq!(port.effective_frame_gap().as_micros(), 3645);
        // 19200 8E1: 11 bits; 3.5 × 11 / 19200 s = 2.0052 ms.
        port.baud = 19_200;
        port.parity = Parity::Even;
        assert_eq!(port.effective_frame_gap().as_micros(), 2005);
        // Above 19200 the specification fixes 1.75 ms.
        port.baud = 115_200;
        assert_eq!(port.effective_frame_gap().as_micros(), 1750);
        port.frame_gap = Some(std::time::Duration::from_millis(10));
        assert_eq!(port.effective_frame_gap().as_millis(), 10);
    }
}
