//! `[[s7]]`: one Siemens S7 PLC reached over ISO-on-TCP, and which of its addresses become
//! which machine's signals.
//!
//! ```toml
//! [[s7]]
//! id = "press-plc"
//! host = "192.168.1.30"
//! rack = 0
//! slot = 1                    # S7-1200/1500/200 SMART; S7-300: slot 2
//! machine = "press1"
//! field = [
//!   { signal = "run", address = "DB10.DBX0.0" },
//!   { signal = "strokes", address = "DB10.DBD2", type = "dint" },
//!   { signal = "pressure_bar", address = "DB10.DBW6", type = "int", scale = 0.1 },
//!   { signal = "program", address = "DB10.DBB20", type = "string", length = 16 },
//! ]
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::DeTable;

use super::address::{Address, S7Type, Width};
use super::frame::{self, MIN_PDU, REQUESTED_PDU};
use crate::config::{
    Checker, References, Section, Seg, duration, join, key, not_registered, optional_duration,
    struct_fields,
};
use crate::model::SignalType;
use crate::source::modbus::profile::profile_then_own;

/// `[[s7]]`: one PLC. The agent keeps one connection to it and reads its fields on schedule.
#[derive(Debug, Clone, Deserialize)]
pub struct S7Device {
    /// Device id for logs, health lines and metrics.
    pub id: String,
    /// The PLC's IP address or host name.
    pub host: String,
    /// ISO-on-TCP's port, 102; another only behind a port forward.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The CPU's rack (0 unless the CPU sits in an expansion rack of an S7-400).
    #[serde(default)]
    pub rack: Option<u8>,
    /// The CPU's slot: 2 on an S7-300, 1 on S7-1200/1500/200 SMART (the default), as the
    /// hardware configuration shows it.
    #[serde(default)]
    pub slot: Option<u8>,
    /// The agent's TSAP, instead of rack and slot, for a PLC whose connection is configured by
    /// TSAP (LOGO!, an S7-200 SMART with a configured connection): `"01.00"` or `0x0100`.
    #[serde(default, deserialize_with = "optional_tsap")]
    pub local_tsap: Option<u16>,
    /// The PLC's TSAP, with `local_tsap`.
    #[serde(default, deserialize_with = "optional_tsap")]
    pub remote_tsap: Option<u16>,
    /// The PDU size asked for at connection; the PLC grants this or less (240 on S7-200 SMART
    /// and S7-1200, 480 on S7-300, 960 on S7-1500), and the requests are planned to what it
    /// granted.
    #[serde(default = "default_pdu_size")]
    pub pdu_size: u16,
    /// How often the PLC is read; a field's own `poll` overrides it for that field.
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll: Duration,
    /// Time allowed for connecting and for each request.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Fields of one area closer than this many bytes are read in one item, gap included.
    #[serde(default = "default_max_gap")]
    pub max_gap: u32,
    /// An address map by name: `profiles/<name>.toml` beside the config file, else one shipped
    /// with Shopfloor (`config/profiles/s7/`). Its fields come first; the device's own add to it.
    #[serde(default)]
    pub profile: Option<String>,
    /// The machine that fields without `machine` belong to.
    #[serde(default)]
    pub machine: Option<String>,
    /// The address map: the profile's fields, then the device's own. Devices that use a
    /// profile and add no fields of their own share one list (the profile's).
    #[serde(default, rename = "field")]
    pub fields: Arc<[S7Field]>,
}

fn default_port() -> u16 {
    frame::ISO_TCP_PORT
}
fn default_pdu_size() -> u16 {
    REQUESTED_PDU
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_max_gap() -> u32 {
    16
}

/// The agent's own TSAP when rack and slot are given: a PG-type connection from "rack 0,
/// slot 0", what STEP 7 and snap7 use.
pub const DEFAULT_LOCAL_TSAP: u16 = 0x0100;

impl S7Device {
    /// The machine a field belongs to: its own, else the device's (empty only in a config that
    /// did not pass the check).
    pub fn machine_of<'a>(&'a self, field: &'a S7Field) -> &'a str {
        field
            .machine
            .as_deref()
            .or(self.machine.as_deref())
            .unwrap_or_default()
    }

    /// The two TSAPs of the COTP connection: the configured ones, else from rack and slot.
    pub fn tsaps(&self) -> (u16, u16) {
        match (self.local_tsap, self.remote_tsap) {
            (Some(l), Some(r)) => (l, r),
            _ => (
                DEFAULT_LOCAL_TSAP,
                frame::remote_tsap(self.rack.unwrap_or(0), self.slot.unwrap_or(1)),
            ),
        }
    }

    /// The poll interval of a field: its own, else the device's.
    pub fn poll_of(&self, field: &S7Field) -> Duration {
        field.poll.unwrap_or(self.poll)
    }

    /// `host:port`, for connecting and for messages.
    pub fn address(&self) -> String {
        if self.host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A TSAP as Siemens tools print it, `"10.00"` (two hex bytes), or a number (`0x1000`).
pub fn parse_tsap(text: &str) -> Result<u16, String> {
    let bad = || {
        format!(
            "TSAP `{text}` is two hexadecimal bytes as the PLC's connection shows them, e.g. \"01.00\" or \"20.00\""
        )
    };
    let (hi, lo) = text.trim().split_once('.').ok_or_else(bad)?;
    let byte = |s: &str| {
        (s.len() <= 2)
            .then(|| u8::from_str_radix(s, 16).ok())
            .flatten()
            .ok_or_else(bad)
    };
    Ok(u16::from_be_bytes([byte(hi)?, byte(lo)?]))
}

fn optional_tsap<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<u16>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a TSAP as \"01.00\" or a number 0–65535 (0x0100)")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Option<u16>, E> {
            parse_tsap(s).map(Some).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Option<u16>, E> {
            u16::try_from(n)
                .map(Some)
                .map_err(|_| E::custom("a TSAP is 0–65535 (0x0000–0xFFFF)"))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Option<u16>, E> {
            self.visit_i64(i64::try_from(n).unwrap_or(-1))
        }
    }
    d.deserialize_any(V)
}

/// The S7 profiles shipped with Shopfloor: (name, file text).
pub const BUILTIN: &[(&str, &str)] = &[(
    "press-line-s7-200-smart",
    include_str!("../../../config/profiles/s7/press-line-s7-200-smart.toml"),
)];

/// An S7 profile file: the address map of a PLC program used on many machines alike.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S7Profile {
    /// What the profile describes.
    pub description: String,
    /// Fields as in `[[s7.field]]`, without `machine`.
    #[serde(rename = "field")]
    pub fields: Arc<[S7Field]>,
}

/// Reads profile `name` (a file beside the config, else a shipped one).
pub fn load_profile(name: &str, dir: Option<&std::path::Path>) -> Result<S7Profile, String> {
    use crate::source::modbus::profile::find_in;
    let (source, text) = find_in(name, dir, BUILTIN)?;
    let file = match source {
        crate::source::modbus::profile::ProfileSource::File(p) => p.display().to_string(),
        _ => format!("<shipped>/config/profiles/s7/{name}.toml"),
    };
    let profile: S7Profile =
        toml::from_str(&text).map_err(|e| format!("profile `{name}` ({file}): {e}"))?;
    if let Some(f) = profile.fields.iter().find(|f| f.machine.is_some()) {
        return Err(format!(
            "profile `{name}` ({file}): field `{}` names a machine; the device using the profile names it",
            f.signal
        ));
    }
    Ok(profile)
}

/// `[[s7.field]]`: one signal at one PLC address.
#[derive(Debug, Clone, Deserialize)]
pub struct S7Field {
    /// The registered machine this signal belongs to (default: the device's, which the loader
    /// leaves to [`S7Device::machine_of`] so devices can share a profile's fields).
    #[serde(default)]
    pub machine: Option<String>,
    /// Signal name, the field key in the `signal` line; shared by every sample of the field.
    pub signal: Arc<str>,
    /// The address as TIA Portal or Micro/WIN SMART writes it: `DB10.DBX2.3`, `DB10.DBW4`,
    /// `MW20`, `I0.1`, `VD200`, `T5`, `C3`.
    #[serde(deserialize_with = "address")]
    pub address: Address,
    /// The S7 type; by default from the address: bool (X or bit), byte (B), int (W), dint (D),
    /// timer (T), counter (C).
    #[serde(rename = "type", default, deserialize_with = "optional_type")]
    pub data_type: Option<TypeName>,
    /// For `string` and `wstring`: the declared maximum length in characters (STRING[n]).
    #[serde(default)]
    pub length: Option<u16>,
    /// value × scale + offset. Setting either makes the field a float.
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    /// Read this field at its own interval.
    #[serde(default, deserialize_with = "optional_duration")]
    pub poll: Option<Duration>,
}

fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    let text = String::deserialize(d)?;
    Address::parse(&text).map_err(serde::de::Error::custom)
}

/// A type as the config writes it, before a string's length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeName(S7Type);

const TYPE_NAMES: &str = "bool, byte, char, sint, usint, word, int, uint, dword, dint, udint, \
                          real, lreal, lint, ulint, lword, string, wstring, s5time, time, timer, counter";

fn optional_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TypeName>, D::Error> {
    use S7Type::*;
    let text = std::string::String::deserialize(d)?;
    let all = [
        Bool,
        Byte,
        Char,
        SInt,
        USInt,
        Word,
        Int,
        UInt,
        DWord,
        DInt,
        UDInt,
        Real,
        LReal,
        LInt,
        ULInt,
        LWord,
        String { max: 0 },
        WString { max: 0 },
        S5Time,
        Time,
        Timer,
        Counter,
    ];
    let lower = text.trim().to_ascii_lowercase();
    all.into_iter()
        .find(|t| t.name() == lower)
        .map(|t| Some(TypeName(t)))
        .ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not an S7 type: write {TYPE_NAMES}"))
        })
}

/// A STRING's default maximum in TIA Portal: STRING is STRING[254].
const DEFAULT_STRING_LENGTH: u16 = 254;

impl S7Field {
    /// The effective type: the written one (with its length), else the address's natural one.
    pub fn s7_type(&self) -> S7Type {
        let length = self.length.unwrap_or(DEFAULT_STRING_LENGTH);
        match self.data_type.map(|t| t.0) {
            Some(S7Type::String { .. }) => S7Type::String {
                max: u8::try_from(length).unwrap_or(u8::MAX),
            },
            Some(S7Type::WString { .. }) => S7Type::WString { max: length },
            Some(t) => t,
            None => match (self.address.width, self.address.area) {
                (Width::Bit(_), _) => S7Type::Bool,
                (Width::Byte, _) => S7Type::Byte,
                (Width::Word, _) => S7Type::Int,
                (Width::DoubleWord, _) => S7Type::DInt,
                (Width::Element, super::address::Area::Timers) => S7Type::Timer,
                (Width::Element, _) => S7Type::Counter,
            },
        }
    }

    /// Bytes the field occupies in its area (2 per timer or counter element).
    pub fn bytes(&self) -> u32 {
        self.s7_type().size()
    }

    /// The type the field's value has in the `signal` line.
    pub fn signal_type(&self) -> SignalType {
        use S7Type::*;
        match self.s7_type() {
            Bool => SignalType::Bool,
            Char | String { .. } | WString { .. } => SignalType::String,
            Real | LReal => SignalType::Float,
            _ if self.scale.is_some() || self.offset.is_some() => SignalType::Float,
            _ => SignalType::Int,
        }
    }

    /// What is wrong with the field on its own: (key, message).
    fn rules(&self) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        let ty = self.s7_type();
        if let Err(e) = self.address.fits(ty) {
            found.push(("type", e));
        }
        let text = matches!(ty, S7Type::String { .. } | S7Type::WString { .. });
        // A field is read in one item, and the smallest PDU (240) carries 222 bytes of data.
        let room = u32::from(frame::max_item_bytes(MIN_PDU));
        match (text, self.length) {
            (false, Some(_)) => found.push((
                "length",
                "`length` goes with type \"string\" or \"wstring\"".to_string(),
            )),
            (true, Some(0)) => found.push(("length", "length is at least 1".to_string())),
            _ => {}
        }
        if ty.size() > room {
            found.push((
                "length",
                format!(
                    "a {} of {} bytes does not fit one read of the smallest PDU ({room} bytes): \
                     give `length` the declared length (STRING[n]: at most {}, WSTRING[n]: at \
                     most {})",
                    ty.name(),
                    ty.size(),
                    room - 2,
                    (room - 4) / 2
                ),
            ));
        }
        let no_scale = text || matches!(ty, S7Type::Bool | S7Type::Char);
        if no_scale && (self.scale.is_some() || self.offset.is_some()) {
            found.push(("scale", format!("a {} has no scale or offset", ty.name())));
        }
        if self.poll.is_some_and(|p| p.is_zero()) {
            found.push(("poll", "poll must be longer than zero".to_string()));
        }
        found
    }
}

impl Section for S7Device {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        match path {
            [] => struct_fields::<S7Device>(),
            ["field"] => struct_fields::<S7Field>(),
            _ => &[],
        }
    }
}

/// `[[s7]]`'s row in the section table: each device's own checks, its id in the device
/// namespace, its machines against the register, and its signals' types against every other
/// source's.
pub(crate) fn check_devices(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    devices: &mut [S7Device],
    refs: &References<'_>,
) {
    for (i, device) in at.iter().zip(devices.iter_mut()) {
        checker.s7_device(root, &[key("s7"), Seg::Index(*i)], device, refs);
    }
}

impl Checker<'_> {
    fn s7_device(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        device: &mut S7Device,
        refs: &References<'_>,
    ) {
        let at = |s: &Self, rest: &[Seg]| s.span_of(root, &join(base, rest));
        let id = device.id.clone();
        // A profile's fields come first; problems with them are reported at `profile`.
        let mut from_profile = 0;
        if let Some(name) = device.profile.clone() {
            let memo = format!("s7 profile {name}");
            let loaded = match self.remembered::<S7Profile>(&memo) {
                Some(p) => Ok(p),
                None => load_profile(&name, self.dir()),
            };
            match loaded {
                Ok(profile) => {
                    // Read once per config; every device of the profile gets the same fields
                    // (a reference count, not a copy) unless it adds fields of its own.
                    self.remember(memo, profile.clone());
                    from_profile = profile.fields.len();
                    device.fields = profile_then_own(profile.fields, &device.fields);
                }
                Err(message) => {
                    let span = at(self, &[key("profile")]);
                    self.push(span, format!("s7 device `{id}`: {message}"));
                }
            }
        }
        let push = |s: &mut Self, rest: &[Seg], message: String| {
            let span = at(s, rest);
            s.push(span, message);
        };
        if !self.claim("device", &id) {
            push(
                self,
                &[key("id")],
                format!("s7 device id `{id}` is already used by another device, server or broker"),
            );
        }
        if device.host.trim().is_empty() || device.host.contains(['/', ' ']) {
            push(
                self,
                &[key("host")],
                format!(
                    "s7 device `{id}`: host `{}` is not an IP address or host name (e.g. \"192.168.1.30\")",
                    device.host
                ),
            );
        }
        if device.host.contains(':') && device.host.parse::<std::net::Ipv6Addr>().is_err() {
            push(
                self,
                &[key("host")],
                format!(
                    "s7 device `{id}`: host `{}` is not an IP address or host name: write the port apart, as `port` (102 by default)",
                    device.host
                ),
            );
        }
        if device.port == 0 {
            push(
                self,
                &[key("port")],
                "port is 1–65535 (ISO-on-TCP: 102)".into(),
            );
        }
        let by_tsap = device.local_tsap.is_some() || device.remote_tsap.is_some();
        if by_tsap && (device.local_tsap.is_none() || device.remote_tsap.is_none()) {
            let k = if device.local_tsap.is_none() {
                "remote_tsap"
            } else {
                "local_tsap"
            };
            push(
                self,
                &[key(k)],
                format!("s7 device `{id}`: local_tsap and remote_tsap go together"),
            );
        }
        if by_tsap && (device.rack.is_some() || device.slot.is_some()) {
            let k = if device.rack.is_some() {
                "rack"
            } else {
                "slot"
            };
            push(
                self,
                &[key(k)],
                format!(
                    "s7 device `{id}`: give rack and slot, or local_tsap and remote_tsap, not both (rack and slot make the remote TSAP)"
                ),
            );
        }
        if device.rack.is_some_and(|r| r > 7) {
            push(self, &[key("rack")], "rack is 0–7".into());
        }
        if device.slot.is_some_and(|s| s > 31) {
            push(self, &[key("slot")], "slot is 0–31".into());
        }
        if !(MIN_PDU..=REQUESTED_PDU).contains(&device.pdu_size) {
            push(
                self,
                &[key("pdu_size")],
                format!(
                    "pdu_size is {MIN_PDU}–{REQUESTED_PDU} bytes (the PLC grants what it can of it)"
                ),
            );
        }
        if device.poll.is_zero() || device.timeout.is_zero() {
            push(
                self,
                &[key("poll")],
                format!("s7 device `{id}`: poll and timeout must be longer than zero"),
            );
        }
        if let Some(m) = &device.machine
            && !refs.machines.contains(m.as_str())
        {
            push(
                self,
                &[key("machine")],
                not_registered("device names machine", m),
            );
        }
        let mut signals = HashSet::new();
        for (j, field) in device.fields.iter().enumerate() {
            let here = |k: &str| {
                if j < from_profile {
                    vec![key("profile")]
                } else {
                    vec![key("field"), Seg::Index(j - from_profile), key(k)]
                }
            };
            for (k, message) in field.rules() {
                push(self, &here(k), message);
            }
            // A field without `machine` keeps none: it belongs to the device's
            // (`S7Device::machine_of`), so devices of one profile can share its fields.
            let machine = match (&field.machine, &device.machine) {
                (Some(m), _) => {
                    if !refs.machines.contains(m.as_str()) {
                        push(
                            self,
                            &here("machine"),
                            not_registered("field names machine", m),
                        );
                    }
                    m.clone()
                }
                (None, Some(m)) => m.clone(),
                (None, None) => {
                    push(
                        self,
                        &here("signal"),
                        format!(
                            "field `{}` belongs to no machine: set `machine` on the [[s7]] device or on the field",
                            field.signal
                        ),
                    );
                    continue;
                }
            };
            if !signals.insert((machine.clone(), field.signal.clone())) {
                push(
                    self,
                    &here("signal"),
                    format!(
                        "signal `{}` of machine {machine} is mapped twice",
                        field.signal
                    ),
                );
            }
            let ty = field.signal_type();
            let signal = field.signal.clone();
            let address = field.address;
            if let Some(clash) =
                self.signal_type_clash(&signal, ty, || format!("s7 device `{id}` {address}"))
            {
                push(self, &here("signal"), clash);
            }
        }
    }
}

/// What the PLC's fields deliver (profile merged in), for the check that every signal a
/// state rule or part counter names comes from somewhere.
pub(crate) fn deliveries(device: &S7Device, out: &mut crate::config::Deliveries) {
    for field in device.fields.iter() {
        out.field(
            (field.machine.as_deref(), None),
            (device.machine.as_deref(), None),
            &field.signal,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::load_str;

    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n[[machine]]\nid = \"p1\"\nkind = \"press\"\ncnc = false\n";

    fn problems(device: &str) -> Vec<String> {
        match load_str(&format!("{SITE}{device}"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(d) => d.problems.iter().map(|p| p.message.clone()).collect(),
        }
    }

    #[test]
    fn a_good_device_reads_with_its_defaults() {
        let text = format!(
            "{SITE}[[s7]]\nid = \"plc\"\nhost = \"10.0.0.5\"\nmachine = \"p1\"\nfield = [\n  {{ signal = \"run\", address = \"DB10.DBX0.0\" }},\n  {{ signal = \"strokes\", address = \"DB10.DBD2\", type = \"udint\" }},\n  {{ signal = \"p\", address = \"MW20\", scale = 0.1 }},\n  {{ signal = \"prog\", address = \"VB100\", type = \"string\", length = 16 }},\n]\n"
        );
        let cfg = load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        let d = &cfg.s7[0];
        assert_eq!((d.port, d.pdu_size), (102, 960));
        assert_eq!(d.tsaps(), (0x0100, 0x0101), "rack 0 slot 1 by default");
        assert_eq!(d.address(), "10.0.0.5:102");
        let f = &d.fields;
        assert_eq!(f[0].s7_type(), S7Type::Bool);
        assert_eq!(d.machine_of(&f[0]), "p1");
        assert_eq!(f[1].s7_type(), S7Type::UDInt);
        assert_eq!(f[2].s7_type(), S7Type::Int);
        assert_eq!(f[2].signal_type(), SignalType::Float);
        assert_eq!(f[3].s7_type(), S7Type::String { max: 16 });
        assert_eq!(f[3].bytes(), 18);
    }

    #[test]
    fn tsaps_are_read_as_siemens_prints_them() {
        assert_eq!(parse_tsap("10.00"), Ok(0x1000));
        assert_eq!(parse_tsap("03.01"), Ok(0x0301));
        assert!(parse_tsap("1000").unwrap_err().contains("\"01.00\""));
        assert!(parse_tsap("1.G0").is_err());
        let text = format!(
            "{SITE}[[s7]]\nid = \"logo\"\nhost = \"h\"\nlocal_tsap = \"01.00\"\nremote_tsap = 0x2000\nmachine = \"p1\"\nfield = [{{ signal = \"q\", address = \"Q0.0\" }}]\n"
        );
        let cfg = load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.s7[0].tsaps(), (0x0100, 0x2000));
    }

    #[test]
    fn every_mistake_is_named() {
        let got = problems(
            "[[s7]]\nid = \"plc\"\nhost = \"\"\nrack = 9\nslot = 1\nlocal_tsap = \"01.00\"\npdu_size = 100\nmachine = \"nope\"\nfield = [\n  { signal = \"a\", address = \"DB1.DBW0\", type = \"real\" },\n  { signal = \"b\", address = \"DB1.DBB2\", type = \"string\" },\n  { signal = \"c\", address = \"M0.0\", scale = 2.0, length = 3 },\n  { signal = \"a\", address = \"MW2\", machine = \"p1\" },\n]\n",
        );
        let want = [
            "s7 device `plc`: host `` is not an IP address or host name (e.g. \"192.168.1.30\")",
            "s7 device `plc`: local_tsap and remote_tsap go together",
            "s7 device `plc`: give rack and slot, or local_tsap and remote_tsap, not both (rack and slot make the remote TSAP)",
            "rack is 0–7",
            "pdu_size is 240–960 bytes (the PLC grants what it can of it)",
            "device names machine `nope`, which is not in the register: add a [[machine]] with id = \"nope\" or fix the id",
            "type real does not fit address DB1.DBW0: a four-byte type needs a D address such as DB1.DBD0 or MD0",
            "a string of 256 bytes does not fit one read of the smallest PDU (222 bytes): give `length` the declared length (STRING[n]: at most 220, WSTRING[n]: at most 109)",
            "`length` goes with type \"string\" or \"wstring\"",
            "a bool has no scale or offset",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
        }
        let bad = problems(
            "[[s7]]\nid = \"plc\"\nhost = \"h\"\nmachine = \"p1\"\nfield = [{ signal = \"a\", address = \"DB1.W0\" }]\n",
        );
        assert!(bad[0].contains("after `DBn.` comes DBX"), "{bad:?}");
        let bad = problems(
            "[[s7]]\nid = \"plc\"\nhost = \"h\"\nmachine = \"p1\"\nfield = [{ signal = \"a\", address = \"DB1.DBW0\", type = \"short\" }]\n",
        );
        assert!(bad[0].contains("`short` is not an S7 type"), "{bad:?}");
    }

    #[test]
    fn a_profile_brings_its_fields_first_and_its_mistakes_are_named() {
        let text = format!(
            "{SITE}[[s7]]\nid = \"plc\"\nhost = \"h\"\nprofile = \"press-line-s7-200-smart\"\nmachine = \"p1\"\nfield = [{{ signal = \"die_temp\", address = \"VW120\" }}]\n"
        );
        let cfg = load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        let signals: Vec<(&str, String)> = cfg.s7[0]
            .fields
            .iter()
            .map(|f| (&*f.signal, f.address.to_string()))
            .collect();
        assert_eq!(
            signals,
            [
                ("run", "DB1.DBX100.0".to_string()),
                ("fault", "DB1.DBX100.1".to_string()),
                ("strokes", "DB1.DBD102".to_string()),
                ("mode", "DB1.DBW106".to_string()),
                ("die_temp", "DB1.DBW120".to_string()),
            ]
        );
        assert!(
            cfg.s7[0]
                .fields
                .iter()
                .all(|f| cfg.s7[0].machine_of(f) == "p1")
        );
        let got = problems(
            "[[s7]]\nid = \"plc\"\nhost = \"h\"\nprofile = \"press-line\"\nmachine = \"p1\"\n",
        );
        assert!(
            got[0].contains("unknown profile `press-line`")
                && got[0].contains("press-line-s7-200-smart"),
            "{got:?}"
        );
        let got =
            problems("[[s7]]\nid = \"plc\"\nhost = \"h\"\nprofile = \"press-line-s7-200-smart\"\n");
        assert!(
            got[0].contains("field `run` belongs to no machine"),
            "{got:?}"
        );
    }

    #[test]
    fn every_shipped_profile_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles/s7");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        files.sort();
        let shipped: Vec<String> = BUILTIN.iter().map(|(n, _)| format!("{n}.toml")).collect();
        assert_eq!(files, shipped);
        for (name, _) in BUILTIN {
            let p = load_profile(name, None).unwrap_or_else(|e| panic!("{e}"));
            assert!(!p.fields.is_empty() && !p.description.is_empty(), "{name}");
            for f in p.fields.iter() {
                assert_eq!(f.rules(), Vec::new(), "{name} {}", f.signal);
            }
        }
    }

    #[test]
    fn a_signal_keeps_one_type_across_devices() {
        let got = problems(
            "[[s7]]\nid = \"a\"\nhost = \"h\"\nmachine = \"p1\"\nfield = [{ signal = \"x\", address = \"DB1.DBD0\", type = \"real\" }]\n[[s7]]\nid = \"b\"\nhost = \"h2\"\nmachine = \"p1\"\nfield = [{ signal = \"x\", address = \"MW0\" }]\n",
        );
        assert!(
            got.iter().any(|g| g
                .contains("signal `x` is an integer here but a float in s7 device `a` DB1.DBD0")),
            "{got:#?}"
        );
        let dup = problems(
            "[[s7]]\nid = \"a\"\nhost = \"h\"\nmachine = \"p1\"\nfield = [{ signal = \"x\", address = \"MW0\" }]\n[[s7]]\nid = \"a\"\nhost = \"h2\"\nmachine = \"p1\"\nfield = [{ signal = \"y\", address = \"MW0\" }]\n",
        );
        assert!(
            dup.iter().any(|g| g.contains("id `a` is already used")),
            "{dup:#?}"
        );
    }
}
