//! `[[melsec]]`: one Mitsubishi MELSEC PLC read over the MC protocol (SLMP), and which of its
//! devices become which machine's signals.
//!
//! ```toml
//! [[melsec]]
//! id = "press-3"
//! host = "192.168.3.39"
//! port = 5000                 # the SLMP/MC port opened in GX Works
//! family = "fx5"              # fx5, q, l, iqr (fx3 is refused: 1E frames only)
//! machine = "press-3"
//! field = [
//!   { signal = "run", address = "M100", type = "bool" },
//!   { signal = "strokes", address = "D200", type = "u32" },
//!   { signal = "mode", address = "D210" },
//! ]
//! ```
//!
//! Addresses are written as GX Works shows them, in the family's numbering (`X17` is octal on
//! an FX5, hexadecimal on a Q); the check parses each with the device's family and keeps the
//! result in the field, so the planner never parses text again. A profile's fields are read
//! and parsed once per numbering, and every device of that profile shares them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use super::address::{Address, Family, Kind, McType};
use super::frame::{self, Framing, MAX_BATCH_WORDS, Route};
use crate::config::{
    Checker, References, Seg, duration, join, key, not_registered, optional_duration,
    struct_fields, unknown_meter,
};
use crate::model::SignalType;
use crate::source::modbus::profile::profile_then_own;

/// `[[melsec]]`: one PLC, one TCP connection to its MC protocol port.
#[derive(Debug, Clone, Deserialize)]
pub struct MelsecDevice {
    /// Device id for logs, metrics and the agent's health line.
    pub id: String,
    /// The PLC's (or its Ethernet module's) IP address or host name.
    pub host: String,
    /// The TCP port opened for the MC protocol (SLMP) in GX Works.
    pub port: u16,
    /// The PLC family: `fx5` (FX5U/FX5UC/FX5UJ), `q`, `l` or `iqr`; `fx3` is refused with the
    /// reason (its Ethernet adapters speak 1E frames only).
    pub family: FamilyName,
    /// `3e` (default) or `4e` frames (4E adds a serial number pairing answer and request).
    #[serde(default)]
    pub frame: FrameName,
    /// Network number of the route (0: the connected station).
    #[serde(default)]
    pub network: u8,
    /// PC number of the route (0xFF: the connected station).
    #[serde(default = "default_pc")]
    pub pc: u8,
    /// Request destination module I/O number (0x03FF: the connected CPU; 0x03E0–0x03E3: CPU
    /// 1–4 of a multiple-CPU system).
    #[serde(default = "default_module_io")]
    pub module_io: u16,
    /// Request destination station number (0: the connected station).
    #[serde(default)]
    pub station: u8,
    /// How often the PLC is read; a field's own `poll` overrides it for that field.
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll: Duration,
    /// Time allowed for connecting and for each request.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Fields closer than this many words are read in one batch read, gap included.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Gather single scattered words and double words into random reads (command 0403)
    /// when that saves requests (default true; false for a PLC that refuses 0403).
    #[serde(default = "default_random_read")]
    pub random_read: bool,
    /// A device map from `profiles/<name>.toml` beside the config file, or one shipped with
    /// Shopfloor (`config/melsec-profiles/`). Its fields come first; the device's own add to it.
    #[serde(default)]
    pub profile: Option<String>,
    /// The machine that fields without `machine` or `meter` belong to.
    #[serde(default)]
    pub machine: Option<String>,
    /// The meter that fields without `machine` or `meter` belong to.
    #[serde(default)]
    pub meter: Option<String>,
    /// The device map: the profile's fields, then the device's own. Devices that use a
    /// profile (in the same numbering, FX or Q) and add no fields of their own share one list,
    /// so a hundred presses of one line hold their device map once.
    #[serde(default, rename = "field")]
    pub fields: Arc<[MelsecField]>,
}

/// The MELSEC profiles shipped with Shopfloor: (name, file text).
pub const BUILTIN: &[(&str, &str)] = &[(
    "fx5-press-line",
    include_str!("../../../config/melsec-profiles/fx5-press-line.toml"),
)];

/// A profile file: a description and the fields, without `machine` or `meter`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MelsecProfile {
    pub description: String,
    #[serde(default, rename = "field")]
    pub fields: Vec<MelsecField>,
}

/// Profile `name`: `<config_dir>/profiles/<name>.toml` if it exists, else the shipped one;
/// its fields may not name a machine or meter (the device says whose they are).
pub fn profile(name: &str, config_dir: Option<&std::path::Path>) -> Result<MelsecProfile, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "profile name `{name}` may only hold letters, digits, `-` and `_`"
        ));
    }
    let local = config_dir.map(|dir| dir.join("profiles").join(format!("{name}.toml")));
    let (text, from) = match local.as_ref().map(std::fs::read_to_string) {
        Some(Ok(text)) => (
            text,
            local
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot read profile `{name}`: {e}"));
        }
        _ => match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => (text.to_string(), format!("shipped profile `{name}`")),
            None => {
                let shipped: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown MELSEC profile `{name}`: no profiles/{name}.toml beside the config, and Shopfloor ships {}",
                    shipped.join(", ")
                ));
            }
        },
    };
    let profile: MelsecProfile =
        toml::from_str(&text).map_err(|e| format!("{from}: {}", e.message()))?;
    if let Some(f) = profile
        .fields
        .iter()
        .find(|f| f.machine.is_some() || f.meter.is_some())
    {
        return Err(format!(
            "{from}: field `{}` names a machine or meter; a profile's fields belong to the device's",
            f.signal
        ));
    }
    Ok(profile)
}

fn default_pc() -> u8 {
    Route::LOCAL.pc
}
fn default_module_io() -> u16 {
    Route::LOCAL.module_io
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
fn default_random_read() -> bool {
    true
}

/// The families the config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FamilyName {
    Fx5,
    Fx3,
    Q,
    L,
    Iqr,
}

impl FamilyName {
    /// The family as the config writes it.
    pub fn name(self) -> &'static str {
        match self {
            FamilyName::Fx5 => "fx5",
            FamilyName::Fx3 => "fx3",
            FamilyName::Q => "q",
            FamilyName::L => "l",
            FamilyName::Iqr => "iqr",
        }
    }

    /// How the family numbers X and Y.
    pub fn family(self) -> Family {
        match self {
            FamilyName::Fx5 | FamilyName::Fx3 => Family::Fx,
            FamilyName::Q | FamilyName::L | FamilyName::Iqr => Family::Q,
        }
    }
}

/// 3E or 4E frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum FrameName {
    #[default]
    #[serde(rename = "3e", alias = "3E")]
    E3,
    #[serde(rename = "4e", alias = "4E")]
    E4,
}

impl MelsecDevice {
    /// `host:port`.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn family(&self) -> Family {
        self.family.family()
    }

    pub fn route(&self) -> Route {
        Route {
            network: self.network,
            pc: self.pc,
            module_io: self.module_io,
            station: self.station,
        }
    }

    /// The framing of the `n`-th request (4E frames number their requests).
    pub fn framing(&self, serial: u16) -> Framing {
        match self.frame {
            FrameName::E3 => Framing::E3,
            FrameName::E4 => Framing::E4 { serial },
        }
    }

    /// The poll interval of a field: its own, else the device's.
    pub fn poll_of(&self, field: &MelsecField) -> Duration {
        field.poll.unwrap_or(self.poll)
    }

    /// Whose signal a field is: `(true, machine)` or `(false, meter)`, the field's own, else
    /// the device's (the check leaves a field without `machine` or `meter` as it is, so that
    /// devices can share a profile's fields). `None` only for a config that failed its check.
    pub fn target_of<'a>(&'a self, field: &'a MelsecField) -> Option<(bool, &'a str)> {
        crate::source::field_target((&field.machine, &field.meter), (&self.machine, &self.meter))
    }
}

/// `[[melsec.field]]`: one signal read from a device of the PLC.
#[derive(Debug, Clone, Deserialize)]
pub struct MelsecField {
    /// The registered machine this signal belongs to (default: the device's, which the check
    /// leaves to [`MelsecDevice::target_of`] so devices can share a profile's fields).
    #[serde(default)]
    pub machine: Option<String>,
    /// The meter this signal belongs to (default: the device's).
    #[serde(default)]
    pub meter: Option<String>,
    /// Signal name, the field key in the `signal` line; shared by every sample of the field.
    pub signal: Arc<str>,
    /// The device as GX Works writes it: `D100`, `D100.3`, `M10`, `X17`, `ZR1000`, `TN5`, `CN3`.
    pub address: String,
    /// `bool`, `i16`, `u16`, `i32`, `u32`, `f32`, `i64`, `u64`, `f64` or `string`; default
    /// `bool` for a bit device or a bit of a word, else `u16`.
    #[serde(rename = "type", default)]
    pub data_type: Option<TypeName>,
    /// For `type = "string"`: how many words (two characters each) the text occupies.
    #[serde(default)]
    pub length: Option<u16>,
    /// value × scale + offset. Setting either makes the field a float.
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    /// Poll this field at its own interval.
    #[serde(default, deserialize_with = "optional_duration")]
    pub poll: Option<Duration>,
    /// The parsed address, set by the check with the device's family (once per profile and
    /// numbering for a profile's fields).
    #[serde(skip)]
    pub parsed: Option<Address>,
}

/// The value types as the config names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeName {
    Bool,
    I16,
    U16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
    String,
}

impl MelsecField {
    /// The field's value type, once its address is parsed: its `type`, else bool for a bit
    /// device or a bit of a word and u16 for a word.
    pub fn mc_type(&self) -> McType {
        let default = match self.parsed {
            Some(a) if a.device.kind() == Kind::Bit || a.bit.is_some() => TypeName::Bool,
            _ => TypeName::U16,
        };
        match self.data_type.unwrap_or(default) {
            TypeName::Bool => McType::Bool,
            TypeName::I16 => McType::I16,
            TypeName::U16 => McType::U16,
            TypeName::I32 => McType::I32,
            TypeName::U32 => McType::U32,
            TypeName::F32 => McType::F32,
            TypeName::I64 => McType::I64,
            TypeName::U64 => McType::U64,
            TypeName::F64 => McType::F64,
            TypeName::String => McType::String {
                words: self.length.unwrap_or(1),
            },
        }
    }

    /// The type the value has in the `signal` line.
    pub fn signal_type(&self) -> SignalType {
        match self.mc_type() {
            McType::Bool => SignalType::Bool,
            McType::String { .. } => SignalType::String,
            McType::F32 | McType::F64 => SignalType::Float,
            _ if self.scale.is_some() || self.offset.is_some() => SignalType::Float,
            _ => SignalType::Int,
        }
    }
}

impl crate::config::Section for MelsecDevice {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        match path {
            [] => struct_fields::<MelsecDevice>(),
            ["field"] => struct_fields::<MelsecField>(),
            _ => &[],
        }
    }
}

/// What is wrong with one field on its own, by key: [`field_rules`]' findings.
type Findings = Vec<(&'static str, String)>;

/// A profile's fields with their addresses parsed in one numbering, and what is wrong with each
/// (reported for every device that uses the profile): read once per config and numbering.
#[derive(Clone)]
struct ParsedProfile {
    fields: Arc<[MelsecField]>,
    findings: Arc<[Findings]>,
}

impl ParsedProfile {
    fn parse(profile: MelsecProfile, family: Family) -> ParsedProfile {
        let mut fields = profile.fields;
        let findings: Vec<Findings> = fields.iter_mut().map(|f| field_rules(f, family)).collect();
        ParsedProfile {
            fields: fields.into(),
            findings: findings.into(),
        }
    }
}

/// What is wrong with one field on its own (address, type, length, scale), by key.
fn field_rules(field: &mut MelsecField, family: Family) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    match Address::parse(&field.address, family) {
        Ok(a) => field.parsed = Some(a),
        Err(e) => {
            found.push(("address", e.to_string()));
            return found;
        }
    }
    let ty = field.mc_type();
    if let Some(Err(e)) = field.parsed.map(|a| a.fits(ty)) {
        found.push(("type", e));
    }
    match (ty, field.length) {
        (McType::String { .. }, None) => found.push((
            "type",
            "a string needs `length`, the number of words it occupies (two characters each)"
                .to_string(),
        )),
        (McType::String { words }, Some(_)) if words == 0 || words > MAX_BATCH_WORDS => {
            found.push((
                "length",
                format!("length is 1–{MAX_BATCH_WORDS} words (one batch read's worth)"),
            ))
        }
        (McType::String { .. }, Some(_)) => {}
        (_, Some(_)) => found.push((
            "length",
            "`length` goes with type \"string\"; other types have a fixed size".to_string(),
        )),
        (_, None) => {}
    }
    if matches!(ty, McType::String { .. } | McType::Bool)
        && (field.scale.is_some() || field.offset.is_some())
    {
        found.push(("scale", format!("a {} has no scale or offset", ty.name())));
    }
    if field.poll.is_some_and(|p| p.is_zero()) {
        found.push(("poll", "poll must be longer than zero".to_string()));
    }
    found
}

/// `[[melsec]]`'s row in the section table: each device's own checks, its id in the device
/// namespace, its machines and meters against the register, and its signals' types against
/// every other source's.
pub(crate) fn check_devices(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    devices: &mut [MelsecDevice],
    refs: &References<'_>,
) {
    for (i, device) in at.iter().zip(devices.iter_mut()) {
        checker.melsec_device(root, &[key("melsec"), Seg::Index(*i)], device, refs);
    }
}

impl Checker<'_> {
    fn melsec_device(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        device: &mut MelsecDevice,
        refs: &References<'_>,
    ) {
        let at = |s: &Self, rest: &[Seg]| s.span_of(root, &join(base, rest));
        let id = device.id.clone();
        let family = device.family();
        // The device's own fields, parsed in its numbering (in place: the list is the device's
        // alone until a profile is put in front of it).
        let own_findings: Vec<Findings> = Arc::make_mut(&mut device.fields)
            .iter_mut()
            .map(|f| field_rules(f, family))
            .collect();
        // A profile's fields come first; problems with them are reported at `profile`.
        let mut from_profile = 0;
        let mut profile_findings: Arc<[Findings]> = Arc::new([]);
        if let Some(name) = device.profile.clone() {
            // Read and parsed once per config and numbering; every device of the profile gets
            // the same fields (a reference count, not a copy) unless it adds fields of its own.
            let memo = format!("melsec profile {name} {family:?}");
            let parsed = match self.remembered::<ParsedProfile>(&memo) {
                Some(p) => Ok(p),
                None => profile(&name, self.dir()).map(|p| ParsedProfile::parse(p, family)),
            };
            match parsed {
                Ok(p) => {
                    self.remember(memo, p.clone());
                    from_profile = p.fields.len();
                    device.fields = profile_then_own(p.fields, &device.fields);
                    profile_findings = p.findings;
                }
                Err(e) => {
                    let span = at(self, &[key("profile")]);
                    self.push(span, format!("melsec device `{id}`: {e}"));
                }
            }
        }
        if !self.claim("device", &id) {
            let span = at(self, &[key("id")]);
            self.push(
                span,
                format!(
                    "melsec device id `{id}` is already used by another device, server or broker"
                ),
            );
        }
        if device.host.trim().is_empty() {
            let span = at(self, &[key("host")]);
            self.push(
                span,
                format!("melsec device `{id}`: `host` names the PLC, e.g. \"192.168.3.39\""),
            );
        }
        if device.port == 0 {
            let span = at(self, &[key("port")]);
            self.push(
                span,
                format!(
                    "melsec device `{id}`: port 0; give the port opened for the MC protocol \
                     (SLMP) in GX Works, e.g. 5000"
                ),
            );
        }
        if device.family == FamilyName::Fx3 {
            let span = at(self, &[key("family")]);
            self.push(
                span,
                format!(
                    "melsec device `{id}`: an FX3U/FX3G's Ethernet adapter (FX3U-ENET-ADP, \
                     FX3U-ENET-L) speaks MC protocol 1E frames only, which the agent does not \
                     speak; read it through an FX5 or Q CPU, or over Modbus TCP if the adapter \
                     offers it"
                ),
            );
        }
        if device.poll.is_zero() || device.timeout.is_zero() {
            let span = at(self, &[key("poll")]);
            self.push(
                span,
                format!("melsec device `{id}`: poll and timeout must be longer than zero"),
            );
        }
        // The monitoring timer counts 250 ms units in 16 bits.
        if device.timeout > Duration::from_secs(3600) {
            let span = at(self, &[key("timeout")]);
            self.push(span, format!("melsec device `{id}`: timeout is at most 1h"));
        }
        let default_target = match (&device.machine, &device.meter) {
            (Some(_), Some(_)) => {
                let span = at(self, &[key("meter")]);
                self.push(
                    span,
                    format!(
                        "melsec device `{id}` names both a machine and a meter; its fields can only default to one"
                    ),
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
        if device.fields.is_empty() {
            let span = at(self, &[key("id")]);
            self.push(
                span,
                format!("melsec device `{id}` has no [[melsec.field]]: it would read nothing"),
            );
        }
        let field_span = |s: &Self, j: usize, k: &str| match j.checked_sub(from_profile) {
            Some(n) => at(s, &[key("field"), Seg::Index(n), key(k)]),
            None => at(s, &[key("profile")]),
        };
        let mut signals = HashSet::new();
        for (j, field) in device.fields.iter().enumerate() {
            let found = match j.checked_sub(from_profile) {
                Some(n) => &own_findings[n],
                None => &profile_findings[j],
            };
            for (k, message) in found {
                let span = field_span(self, j, k);
                self.push(span, format!("melsec device `{id}`: {message}"));
            }
            // A field without `machine` or `meter` keeps none: it belongs to the device's
            // (`MelsecDevice::target_of`), so devices of one profile can share its fields.
            let target = match (&field.machine, &field.meter, &default_target) {
                (Some(m), None, _) => {
                    if !refs.machines.contains(m.as_str()) {
                        let span = field_span(self, j, "machine");
                        self.push(span, not_registered("field names machine", m));
                    }
                    format!("machine {m}")
                }
                (None, Some(m), _) => {
                    if !refs.meters.contains(m.as_str()) {
                        let span = field_span(self, j, "meter");
                        self.push(span, unknown_meter("field names meter", m));
                    }
                    format!("meter {m}")
                }
                (None, None, Some((true, m))) => format!("machine {m}"),
                (None, None, Some((false, m))) => format!("meter {m}"),
                _ => {
                    let span = field_span(self, j, "signal");
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
            if !signals.insert((target.clone(), field.signal.clone())) {
                let span = field_span(self, j, "signal");
                self.push(
                    span,
                    format!("signal `{}` of {target} is mapped twice", field.signal),
                );
            }
            if field.parsed.is_none() {
                continue;
            }
            let here = || format!("melsec device `{id}`");
            if let Some(clash) = self.signal_type_clash(&field.signal, field.signal_type(), here) {
                let span = field_span(self, j, "signal");
                self.push(span, clash);
            }
        }
    }
}

/// The end code's words, for errors that come back from the PLC.
pub fn end_code_words(code: u16) -> String {
    frame::McError::EndCode(code).to_string()
}

/// What the PLC's fields deliver (profile merged in), for the check that every signal a
/// state rule, meter or part counter names comes from somewhere.
pub(crate) fn deliveries(device: &MelsecDevice, out: &mut crate::config::Deliveries) {
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
    use super::Family;
    use crate::agent::config::load_str;

    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n[[machine]]\nid = \"p1\"\nkind = \"press\"\ncnc = false\n";

    #[test]
    fn addresses_are_read_in_the_family_numbering_and_types_default_from_the_device() {
        let text = format!(
            "{SITE}[[melsec]]\nid = \"plc\"\nhost = \"10.0.0.5\"\nport = 5000\nfamily = \"fx5\"\nmachine = \"p1\"\nfield = [\n  {{ signal = \"door\", address = \"X17\" }},\n  {{ signal = \"mode\", address = \"D10\" }},\n  {{ signal = \"strokes\", address = \"D200\", type = \"u32\" }},\n]\n"
        );
        let cfg = load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        let d = &cfg.melsec[0];
        // X17 on an FX is octal: input 15.
        assert_eq!(d.fields[0].parsed.unwrap().number, 15);
        assert_eq!(d.fields[0].mc_type().name(), "bool");
        assert_eq!(d.fields[1].mc_type().name(), "u16");
        assert_eq!(d.fields[2].mc_type().name(), "u32");
        // The device's machine is the field's, resolved where it is used, not copied in.
        assert_eq!(d.fields[2].machine, None);
        assert_eq!(d.target_of(&d.fields[2]), Some((true, "p1")));
        assert_eq!(d.route(), super::Route::LOCAL);
        // The same text on a Q is hexadecimal: input 23.
        let q = text.replace("\"fx5\"", "\"q\"");
        let cfg = load_str(&q, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.melsec[0].fields[0].parsed.unwrap().number, 0x17);
    }

    #[test]
    fn devices_of_one_profile_share_its_fields_parsed_once_per_numbering() {
        let machines: String = (2..=4)
            .map(|i| format!("[[machine]]\nid = \"p{i}\"\nkind = \"press\"\ncnc = false\n"))
            .collect();
        let plc = |id: &str, family: &str, machine: &str, extra: &str| {
            format!(
                "[[melsec]]\nid = \"{id}\"\nhost = \"10.0.0.5\"\nport = 5000\nfamily = \"{family}\"\nprofile = \"fx5-press-line\"\nmachine = \"{machine}\"\n{extra}"
            )
        };
        let text = [
            format!("{SITE}{machines}"),
            plc("a", "fx5", "p1", ""),
            plc("b", "fx5", "p2", ""),
            plc(
                "c",
                "fx5",
                "p3",
                "field = [{ signal = \"door\", address = \"X17\" }]\n",
            ),
            plc("d", "q", "p4", ""),
        ]
        .concat();
        let cfg = load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        let [a, b, c, d] = &cfg.melsec[..] else {
            panic!("four devices")
        };
        let profile = super::profile("fx5-press-line", None).unwrap().fields;
        // Two devices of the profile in one numbering hold one list, not a copy each.
        assert!(std::sync::Arc::ptr_eq(&a.fields, &b.fields));
        assert_eq!(a.fields.len(), profile.len());
        assert!(a.fields.iter().all(|f| f.parsed.is_some()));
        // Each still delivers to its own machine.
        assert_eq!(a.target_of(&a.fields[0]), Some((true, "p1")));
        assert_eq!(b.target_of(&b.fields[0]), Some((true, "p2")));
        // A device with a field of its own gets the profile's fields, then its own.
        assert!(!std::sync::Arc::ptr_eq(&a.fields, &c.fields));
        assert_eq!(c.fields.len(), profile.len() + 1);
        let signals: Vec<&str> = c.fields.iter().map(|f| &*f.signal).collect();
        let want: Vec<&str> = profile.iter().map(|f| &*f.signal).chain(["door"]).collect();
        assert_eq!(signals, want);
        // X17 on an FX is octal: input 15.
        assert_eq!(c.fields[profile.len()].parsed.unwrap().number, 15);
        // On a Q the profile is parsed in Q numbering: a list of its own.
        assert!(!std::sync::Arc::ptr_eq(&a.fields, &d.fields));
        assert!(
            d.fields
                .iter()
                .all(|f| f.parsed.unwrap().family == Family::Q)
        );
        assert!(
            a.fields
                .iter()
                .all(|f| f.parsed.unwrap().family == Family::Fx)
        );
    }

    #[test]
    fn a_profile_field_s_mistake_is_reported_for_every_device_that_uses_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("profiles")).unwrap();
        std::fs::write(
            dir.path().join("profiles/bad.toml"),
            "description = \"x\"\n[[field]]\nsignal = \"door\"\naddress = \"X18\"\n",
        )
        .unwrap();
        let plc = |id: &str, family: &str| {
            format!(
                "[[melsec]]\nid = \"{id}\"\nhost = \"h\"\nport = 5000\nfamily = \"{family}\"\nprofile = \"bad\"\nmachine = \"p1\"\n"
            )
        };
        let text = [
            SITE.to_string(),
            plc("a", "fx5"),
            plc("b", "fx5"),
            plc("c", "q"),
        ]
        .concat();
        let path = dir.path().join("shopfloor.toml");
        std::fs::write(&path, text).unwrap();
        let d = crate::agent::config::load(&path).unwrap_err();
        let all = d.to_string();
        // X18 is no octal number: wrong on both FX5s, right on the Q.
        assert_eq!(d.problems.len(), 2, "{all}");
        for id in ["a", "b"] {
            let needle = format!("melsec device `{id}`: `X18` is not a MELSEC address: X on an FX");
            assert!(all.contains(&needle), "{needle}: {all}");
        }
    }

    #[test]
    fn every_shipped_profile_is_listed_and_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/melsec-profiles");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        files.sort();
        let mut shipped: Vec<String> = super::BUILTIN
            .iter()
            .map(|(n, _)| format!("{n}.toml"))
            .collect();
        shipped.sort();
        assert_eq!(files, shipped);
        for (name, _) in super::BUILTIN {
            let p = super::profile(name, None).unwrap_or_else(|e| panic!("{e}"));
            assert!(!p.fields.is_empty() && !p.description.is_empty(), "{name}");
        }
    }

    #[test]
    fn wrong_addresses_types_and_families_are_each_reported() {
        let text = format!(
            "{SITE}[[melsec]]\nid = \"plc\"\nhost = \"10.0.0.5\"\nport = 5000\nfamily = \"fx3\"\nmachine = \"p1\"\nfield = [\n  {{ signal = \"a\", address = \"X18\" }},\n  {{ signal = \"b\", address = \"M0\", type = \"u16\" }},\n  {{ signal = \"c\", address = \"D0\", type = \"string\" }},\n  {{ signal = \"d\", address = \"D4\", machine = \"nope\" }},\n]\n"
        );
        let d = load_str(&text, "t.toml").unwrap_err();
        let all = d.to_string();
        assert_eq!(d.problems.len(), 5, "{all}");
        for needle in [
            "1E frames only",
            "X on an FX is numbered in octal",
            "type u16 does not fit address M0",
            "a string needs `length`",
            "field names machine `nope`",
        ] {
            assert!(all.contains(needle), "{needle}: {all}");
        }
    }
}
