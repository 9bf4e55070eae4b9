//! Loading and checking a config file, reporting every problem at once.
//!
//! serde stops at the first error, which makes commissioning a slow loop of fix-one-run-again.
//! So the document is first parsed into a tree that keeps every value's position, then each
//! section, and each element of an array section, is deserialized on its own: a mistake in one
//! `[[modbus]]` does not hide a mistake in the next. Unknown keys are collected with
//! `serde_ignored` rather than `deny_unknown_fields`, so all of them are reported, not the first.
//! Last, the cross-references (a field naming an unregistered machine, overlapping registers, a
//! missing secret) are checked on whatever parsed.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::profile;
use super::{
    Config, DataType, InfluxApi, ModbusDevice, ModbusField, ModbusSerial, MqttBroker,
    PayloadFormat, Profile, RegisterKind, TcpTransport,
};
use crate::source::mqtt::{mapping, payload::JsonPath, topic::Template};

/// One problem in a config file, located by 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    load_file(path, load_str)
}

/// Reads a file and hands its text to `check`; a file that cannot be read is one problem at
/// line 0.
pub(crate) fn load_file<T>(
    path: &Path,
    check: impl FnOnce(&str, &str) -> Result<T, Diagnostics>,
) -> Result<T, Diagnostics> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => check(&text, &file),
        Err(e) => Err(Diagnostics {
            file,
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }],
        }),
    }
}

/// The keys a table at a path takes, for "did you mean" hints; `&[]` when there is no hint.
pub(crate) type KnownKeys = fn(&[Seg]) -> &'static [&'static str];

/// Checks a TOML document with the diagnostics of the agent's config, for the other files
/// Shopfloor reads (the county's targets and register): `check` deserializes the sections
/// through the [`Checker`] and adds its cross-checks; every problem comes back with its line
/// and column, and the value only when there was none.
pub(crate) fn check_document<T>(
    text: &str,
    file: &str,
    known: KnownKeys,
    check: impl FnOnce(&mut Checker<'_>, &Spanned<DeTable<'_>>) -> Option<T>,
) -> Result<T, Diagnostics> {
    let mut checker = Checker {
        text,
        problems: Vec::new(),
        dir: None,
        profile_doc: false,
        profiles: Default::default(),
        known: Some(known),
        signal_types: Default::default(),
    };
    let value = match DeTable::parse(text) {
        Ok(root) => check(&mut checker, &root),
        Err(e) => {
            checker.push(e.span().unwrap_or(0..0), e.message().trim_end().to_string());
            None
        }
    };
    checker.finish(value, file)
}

/// Checks config text; `file` names it in messages.
///
/// Profiles named by devices are looked up in `profiles/` beside `file`, then among the shipped
/// ones (see [`super::profile`]).
pub fn load_str(text: &str, file: &str) -> Result<Config, Diagnostics> {
    let dir = Path::new(file).parent();
    let mut checker = Checker {
        text,
        problems: Vec::new(),
        dir,
        profile_doc: false,
        profiles: Default::default(),
        known: None,
        signal_types: Default::default(),
    };
    let config = match DeTable::parse(text) {
        Ok(root) => checker.config(&root),
        Err(e) => {
            checker.push(e.span().unwrap_or(0..0), e.message().trim_end().to_string());
            None
        }
    };
    checker.finish(config, file)
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

pub(crate) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub(crate) struct Checker<'t> {
    text: &'t str,
    problems: Vec<Problem>,
    /// The config file's directory, where `profiles/` is looked for.
    dir: Option<&'t Path>,
    /// Checking a profile file rather than a config: other keys are known.
    profile_doc: bool,
    /// Profiles already read, by name: a hundred devices of one model read its file once.
    profiles: std::collections::HashMap<String, Profile>,
    /// The keys of another kind of document ([`check_document`]), for hints.
    known: Option<KnownKeys>,
    /// Signal name → its type in the `signal` line and where that was first declared
    /// ([`Checker::signal_type`]).
    signal_types: std::collections::HashMap<String, (super::SignalType, String)>,
}

/// Checks a profile's text; `file` names it in messages.
pub fn load_profile_str(text: &str, file: &str) -> Result<Profile, Diagnostics> {
    let mut checker = Checker {
        text,
        problems: Vec::new(),
        dir: None,
        profile_doc: true,
        profiles: Default::default(),
        known: None,
        signal_types: Default::default(),
    };
    let profile = match DeTable::parse(text) {
        Ok(root) => {
            let value = Spanned::new(root.span(), DeValue::Table(root.get_ref().clone()));
            checker.section::<Profile>(&value, Vec::new())
        }
        Err(e) => {
            checker.push(e.span().unwrap_or(0..0), e.message().trim_end().to_string());
            None
        }
    };
    if let Some(p) = &profile {
        let root = DeTable::parse(text).ok();
        let span_of = |path: &[Seg]| root.as_ref().map_or(0..0, |r| checker.span_of(r, path));
        let mut found = Vec::new();
        if p.address_base > 1 {
            found.push((
                span_of(&[key("address_base")]),
                "address_base is 0 or 1".to_string(),
            ));
        }
        if p.max_registers.is_some_and(|m| m == 0 || m > 125) {
            found.push((
                span_of(&[key("max_registers")]),
                "max_registers must be 1–125, the protocol's limit".to_string(),
            ));
        }
        for (j, field) in p.fields.iter().enumerate() {
            let mut field = field.clone();
            field.address_base = p.address_base;
            let here = |k: &str| span_of(&[key("field"), Seg::Index(j), key(k)]);
            if field.machine.is_some() || field.meter.is_some() {
                let k = if field.machine.is_some() {
                    "machine"
                } else {
                    "meter"
                };
                found.push((
                    here(k),
                    "a profile's fields name no machine or meter: the device that uses the profile does".to_string(),
                ));
            }
            for (k, message) in field_rules(&field) {
                found.push((here(k), message));
            }
        }
        for (span, message) in found {
            checker.push(span, message);
        }
    }
    checker.finish(profile, file)
}

/// Where a device's field came from after its profile was merged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The n-th `[[modbus.field]]` of the device.
    Own(usize),
    /// The n-th field of the device's profile.
    Profile(usize),
}

/// What is wrong with a field on its own, whichever device it is on: (key, message).
fn field_rules(field: &ModbusField) -> Vec<(&'static str, String)> {
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
        (DataType::String, Some(n)) if n == 0 || n > 125 => found.push((
            "length",
            "length is 1–125 registers (one request's worth)".to_string(),
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

/// The smallest dead-letter bound `check` takes: one rejected batch's reason and a few lines.
const MIN_DEAD_LETTER_BYTES: u64 = 4096;

const SECTIONS: &[&str] = &[
    "site",
    "agent",
    "machine",
    "meter",
    "modbus",
    "modbus_serial",
    "mqtt",
    "state_rules",
    "spool",
    "influx",
    "file",
    "calendar",
    "energy",
    "value_added",
    "green",
    "web",
    "uplink",
];

impl Checker<'_> {
    /// The parsed document if nothing was wrong with it, else every problem in file order.
    fn finish<T>(self, parsed: Option<T>, file: &str) -> Result<T, Diagnostics> {
        match parsed {
            Some(parsed) if self.problems.is_empty() => Ok(parsed),
            _ => {
                let mut problems = self.problems;
                problems.sort_by_key(|p| (p.line, p.column));
                problems.dedup();
                Err(Diagnostics {
                    file: file.to_string(),
                    problems,
                })
            }
        }
    }

    pub(crate) fn push(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_column(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            message,
        });
    }

    fn config(&mut self, root: &Spanned<DeTable<'_>>) -> Option<Config> {
        let mut config = Config::default();
        let mut site_seen = false;
        // Document indices of the elements that parsed, for locating later problems.
        let mut modbus_at = Vec::new();
        let mut mqtt_at = Vec::new();
        let mut rules_at = Vec::new();
        let mut influx_at = Vec::new();
        let mut meter_at = Vec::new();
        let mut serial_at = Vec::new();
        let mut file_at = Vec::new();
        let mut spool_seen = false;
        for (name, value) in root.get_ref().iter() {
            let name_str: &str = name.get_ref();
            match name_str {
                "site" => {
                    if let Some(site) = self.section(value, vec![key("site")]) {
                        config.site = site;
                    }
                    site_seen = true;
                }
                "agent" => {
                    if let Some(agent) = self.section(value, vec![key("agent")]) {
                        config.agent = agent;
                    }
                }
                "spool" => {
                    if let Some(spool) = self.section(value, vec![key("spool")]) {
                        config.spool = spool;
                        spool_seen = true;
                    }
                }
                "machine" => config.machines = strip(self.array(value, "machine")),
                "meter" => {
                    (meter_at, config.meters) = self.array(value, "meter").into_iter().unzip()
                }
                "modbus" => {
                    (modbus_at, config.modbus) = self.array(value, "modbus").into_iter().unzip()
                }
                "modbus_serial" => {
                    (serial_at, config.modbus_serial) =
                        self.array(value, "modbus_serial").into_iter().unzip()
                }
                "mqtt" => {
                    (mqtt_at, config.mqtt) = self.composite_array(value, "mqtt").into_iter().unzip()
                }
                "state_rules" => {
                    (rules_at, config.state_rules) =
                        self.array(value, "state_rules").into_iter().unzip()
                }
                "influx" => {
                    (influx_at, config.influx) = self.array(value, "influx").into_iter().unzip()
                }
                "file" => (file_at, config.file) = self.array(value, "file").into_iter().unzip(),
                "calendar" => {
                    if let Some(calendar) = self.section(value, vec![key("calendar")]) {
                        config.calendar = calendar;
                    }
                }
                "energy" => {
                    if let Some(energy) = self.section(value, vec![key("energy")]) {
                        config.energy = energy;
                    }
                }
                "value_added" => {
                    if let Some(va) = self.section(value, vec![key("value_added")]) {
                        config.value_added = va;
                    }
                }
                "green" => {
                    if let Some(green) = self.section(value, vec![key("green")]) {
                        config.green = green;
                    }
                }
                "web" => {
                    if let Some(web) = self.section(value, vec![key("web")]) {
                        config.web = web;
                    }
                }
                "uplink" => config.uplink = self.composite(value, vec![key("uplink")]),
                other => {
                    let hint = suggest(other, SECTIONS)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    self.push(
                        name.span(),
                        format!(
                            "unknown section `{other}`{hint}; the sections are: {}",
                            SECTIONS.join(", ")
                        ),
                    );
                }
            }
        }
        if !site_seen {
            self.push(
                0..0,
                "missing [site]: every config names its county, sector and enterprise".to_string(),
            );
            return None;
        }
        let raw_machine_ids = raw_ids(root, "machine");
        let raw_meter_ids = raw_ids(root, "meter");
        let raw_serial_ids = raw_ids(root, "modbus_serial");
        let refs = References {
            machines: raw_machine_ids.iter().map(String::as_str).collect(),
            meters: raw_meter_ids.iter().map(String::as_str).collect(),
            kinds: config.machines.iter().map(|m| m.kind.as_str()).collect(),
            serial_ports: raw_serial_ids.iter().map(String::as_str).collect(),
        };
        self.site(root, &config);
        self.unique_ids(root, "machine", &raw_machine_ids);
        self.unique_ids(root, "meter", &raw_meter_ids);
        for (i, meter) in meter_at.iter().zip(&config.meters) {
            if meter.scope != "site" && !refs.machines.contains(meter.scope.as_str()) {
                let at = self.span_of(root, &[key("meter"), Seg::Index(*i), key("scope")]);
                self.push(
                    at,
                    format!(
                        "meter `{}` has scope `{}`, which is neither \"site\" nor a registered machine",
                        meter.id, meter.scope
                    ),
                );
            }
        }
        self.unique_ids(root, "modbus_serial", &raw_serial_ids);
        for (i, port) in serial_at.iter().zip(&config.modbus_serial) {
            self.modbus_serial(root, &[key("modbus_serial"), Seg::Index(*i)], port);
        }
        let mut device_ids = HashSet::new();
        for (i, device) in modbus_at.iter().zip(config.modbus.iter_mut()) {
            let base = vec![key("modbus"), Seg::Index(*i)];
            if !device_ids.insert(device.id.clone()) {
                let at = self.span_of(root, &join(&base, &[key("id")]));
                self.push(
                    at,
                    format!("modbus device id `{}` is used twice", device.id),
                );
            }
            let origins = self.merge_profile(root, &base, device);
            self.modbus_device(root, &base, device, &origins, &refs);
        }
        for (i, broker) in mqtt_at.iter().zip(&config.mqtt) {
            let base = vec![key("mqtt"), Seg::Index(*i)];
            if !device_ids.insert(broker.id.clone()) {
                let at = self.span_of(root, &join(&base, &[key("id")]));
                self.push(
                    at,
                    format!(
                        "mqtt broker id `{}` is already used by another broker or Modbus device",
                        broker.id
                    ),
                );
            }
            self.mqtt_broker(root, &base, broker, &refs);
        }
        for (i, rules) in rules_at.iter().zip(&config.state_rules) {
            let base = vec![key("state_rules"), Seg::Index(*i)];
            for (j, machine) in rules.machines.iter().enumerate() {
                if !refs.machines.contains(machine.as_str()) {
                    let at = self.span_of(root, &join(&base, &[key("machines"), Seg::Index(j)]));
                    self.push(at, not_registered("state rules name machine", machine));
                }
            }
            for (j, rule) in rules.rules.iter().enumerate() {
                for (k, condition) in rule.when.iter().enumerate() {
                    if let Some(what) = condition.missing() {
                        let at = self.span_of(
                            root,
                            &join(
                                &base,
                                &[key("rule"), Seg::Index(j), key("when"), Seg::Index(k)],
                            ),
                        );
                        self.push(
                            at,
                            format!(
                                "condition on `{}` with op {:?} needs {what}",
                                condition.signal, condition.op
                            ),
                        );
                    }
                }
            }
            for (j, kind) in rules.kinds.iter().enumerate() {
                if !refs.kinds.contains(kind.as_str()) {
                    let at = self.span_of(root, &join(&base, &[key("kinds"), Seg::Index(j)]));
                    self.push(
                        at,
                        format!("no registered machine has kind `{kind}`; check the spelling against the [[machine]] kinds"),
                    );
                }
            }
        }
        self.indicators(root, &config, &refs);
        let mut output_names = HashSet::new();
        for (n, (i, output)) in influx_at.iter().zip(&config.influx).enumerate() {
            let base = vec![key("influx"), Seg::Index(*i)];
            let name = output
                .name
                .clone()
                .unwrap_or_else(|| default_output_name("influx", n));
            if !output_names.insert(name.clone()) {
                let at = self.span_of(root, &join(&base, &[key("name")]));
                self.push(at, format!("output name `{name}` is used twice"));
            }
            self.influx(root, &base, output);
        }
        // Every output has a cursor in the spool under its name, so names are unique across
        // kinds too.
        for (n, (i, output)) in file_at.iter().zip(&config.file).enumerate() {
            let name = output
                .name
                .clone()
                .unwrap_or_else(|| default_output_name("file", n));
            if !output_names.insert(name.clone()) {
                let at = self.span_of(root, &[key("file"), Seg::Index(*i), key("name")]);
                self.push(at, format!("output name `{name}` is used twice"));
            }
        }
        if let Some(uplink) = &config.uplink {
            if !output_names.insert(super::UPLINK_OUTPUT.to_string()) {
                let at = self.span_of(root, &[key("uplink")]);
                self.push(
                    at,
                    format!(
                        "output name `{}` is the uplink's: rename the other output",
                        super::UPLINK_OUTPUT
                    ),
                );
            }
            uplink.check(self, root);
        }
        if spool_seen {
            self.spool(root, &config.spool);
        }
        Some(config)
    }

    /// Deserializes one section, reporting unknown keys and the first type error in it.
    pub(crate) fn section<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: Vec<Seg>,
    ) -> Option<T> {
        let (result, unknown) = self.read::<T>(value, &path);
        for rel in unknown {
            self.unknown_key(value, &path, rel);
        }
        result
    }

    /// Deserializes a section that holds a shared part's keys beside its own (see
    /// [`super::composite`]): the table is read once as each part, both with positions, and a
    /// key is unknown only when neither part knows it.
    pub(crate) fn composite<T: super::Composite>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: Vec<Seg>,
    ) -> Option<T> {
        let (shared, in_shared) = self.read::<T::Shared>(value, &path);
        let (own, in_own) = self.read::<super::composite::Own<T>>(value, &path);
        // A key at the top is unknown when neither part takes it. It is looked up in the
        // table itself: each part stops at its first type error, and the table's keys do not
        // come in document order, so neither part's list of ignored keys is complete.
        let own_keys = struct_fields::<super::composite::Own<T>>();
        let shared_keys = struct_fields::<T::Shared>();
        let mut unknown: Vec<Vec<Seg>> = value
            .get_ref()
            .as_table()
            .into_iter()
            .flat_map(|t| t.iter())
            .map(|(k, _)| k.get_ref().as_ref() as &str)
            .filter(|k| !own_keys.contains(k) && !shared_keys.contains(k))
            .map(|k| vec![key(k)])
            .collect();
        // Below the top, each part reports the keys it does not take in its own tables (`tls`,
        // `topic`); the other part ignores those tables whole.
        for (paths, mine) in [(&in_shared, shared_keys), (&in_own, own_keys)] {
            for p in paths {
                if p.len() > 1
                    && matches!(p.first(), Some(Seg::Key(k)) if mine.contains(&k.as_str()))
                {
                    unknown.push(p.clone());
                }
            }
        }
        for rel in unknown {
            self.unknown_key(value, &path, rel);
        }
        Some(own?.0.with_shared(shared?))
    }

    /// Deserializes `value` as `T`, reporting its first type error; returns the paths (under
    /// `value`) of the keys `T` does not take.
    fn read<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &[Seg],
    ) -> (Option<T>, Vec<Vec<Seg>>) {
        let mut unknown = Vec::new();
        let result = serde_ignored::deserialize(ValueDeserializer::from(value.clone()), |p| {
            unknown.push(ignored_path(&p))
        });
        let result = match result {
            Ok(v) => Some(v),
            Err(e) => {
                let table = table_name(path);
                self.push(
                    e.span().unwrap_or_else(|| value.span()),
                    format!("in {table}: {}", e.message().trim_end()),
                );
                None
            }
        };
        (result, unknown)
    }

    /// Reports the key at `rel` under the section at `path`, with a "did you mean".
    fn unknown_key(&mut self, value: &Spanned<DeValue<'_>>, path: &[Seg], rel: Vec<Seg>) {
        let full = join(path, &rel);
        let span = key_span(value, &rel).unwrap_or_else(|| value.span());
        let name = match full.last() {
            Some(Seg::Key(k)) => k.clone(),
            _ => String::new(),
        };
        let table = table_name(&full[..full.len().saturating_sub(1)]);
        let parent = &full[..full.len().saturating_sub(1)];
        let known = match self.known {
            Some(known) => known(parent),
            None => known_keys(parent, self.profile_doc),
        };
        let hint = suggest(&name, known)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        self.push(span, format!("unknown key `{name}` in {table}{hint}"));
    }

    /// Deserializes each element of an array of tables on its own.
    pub(crate) fn array<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        name: &str,
    ) -> Vec<(usize, T)> {
        self.array_with(value, name, Self::section)
    }

    /// [`Checker::array`] of a composite section ([`Checker::composite`]).
    pub(crate) fn composite_array<T: super::Composite>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        name: &str,
    ) -> Vec<(usize, T)> {
        self.array_with(value, name, Self::composite)
    }

    fn array_with<T>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        name: &str,
        mut read: impl FnMut(&mut Self, &Spanned<DeValue<'_>>, Vec<Seg>) -> Option<T>,
    ) -> Vec<(usize, T)> {
        let Some(items) = value.get_ref().as_array() else {
            self.push(
                value.span(),
                format!("`{name}` must be an array of tables: write [[{name}]]"),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                read(self, item, vec![key(name), Seg::Index(i)]).map(|v| (i, v))
            })
            .collect()
    }

    pub(crate) fn span_of(&self, root: &Spanned<DeTable<'_>>, path: &[Seg]) -> Range<usize> {
        // Walk as deep as the path goes; a missing key points at its table.
        let mut span = root.span();
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
        for seg in path {
            let next = match (seg, table, array) {
                (Seg::Key(k), Some(t), _) => t
                    .iter()
                    .find(|(name, _)| name.get_ref().as_ref() as &str == k.as_str())
                    .map(|(_, v)| v),
                (Seg::Index(i), _, Some(a)) => a.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = next.span();
            table = next.get_ref().as_table();
            array = next.get_ref().as_array().map(|a| a.as_ref());
        }
        span
    }

    fn site(&mut self, root: &Spanned<DeTable<'_>>, config: &Config) {
        let site = &config.site;
        for (field, value) in [("county", &site.county), ("enterprise", &site.enterprise)] {
            if value.trim().is_empty() {
                let at = self.span_of(root, &[key("site"), key(field)]);
                self.push(at, format!("[site] `{field}` must not be empty"));
            }
        }
        if jiff::tz::TimeZone::get(&site.timezone).is_err() {
            let at = self.span_of(root, &[key("site"), key("timezone")]);
            self.push(
                at,
                format!(
                    "unknown time zone `{}`: use an IANA name such as \"Asia/Shanghai\"",
                    site.timezone
                ),
            );
        }
    }

    fn unique_ids(&mut self, root: &Spanned<DeTable<'_>>, section: &str, ids: &[String]) {
        let mut seen = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if id.is_empty() || !seen.insert(id) {
                let at = self.span_of(root, &[key(section), Seg::Index(i), key("id")]);
                let what = if id.is_empty() { "empty" } else { "used twice" };
                self.push(at, format!("[[{section}]] id `{id}` is {what}"));
            }
        }
    }

    /// Merges a device's profile into it. Returns where each resulting field came from, so
    /// later problems point at the right place.
    fn merge_profile(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        device: &mut ModbusDevice,
    ) -> Vec<Origin> {
        let own: Vec<Origin> = (0..device.fields.len()).map(Origin::Own).collect();
        for f in &mut device.fields {
            f.address_base = device.address_base;
        }
        let Some(name) = device.profile.clone() else {
            return own;
        };
        let at = self.span_of(root, &join(base, &[key("profile")]));
        let parsed = match self.profiles.get(&name) {
            Some(p) => p.clone(),
            None => match self.read_profile(&name, &device.id, at) {
                Some(p) => {
                    self.profiles.insert(name.clone(), p.clone());
                    p
                }
                None => return own,
            },
        };
        if let Some(limit) = parsed.max_registers {
            device.max_registers = device.max_registers.min(limit);
        }
        if let Some(gap) = parsed.max_gap {
            device.max_gap = device.max_gap.min(gap);
        }
        device.one_request_per_field |= parsed.one_request_per_field;
        let mut fields: Vec<ModbusField> = parsed
            .fields
            .into_iter()
            .map(|mut f| {
                f.address_base = parsed.address_base;
                f
            })
            .collect();
        let mut origins: Vec<Origin> = (0..fields.len()).map(Origin::Profile).collect();
        fields.append(&mut device.fields);
        origins.extend(own);
        device.fields = fields;
        origins
    }

    /// Finds and parses profile `name` for `device`; problems are reported at `at`, the
    /// device's `profile` key, naming the profile's own file, line and column.
    fn read_profile(&mut self, name: &str, device: &str, at: Range<usize>) -> Option<Profile> {
        let (source, text) = match profile::find(name, self.dir) {
            Ok(found) => found,
            Err(message) => {
                self.push(at, format!("modbus device `{device}`: {message}"));
                return None;
            }
        };
        let file = source.describe(name);
        match load_profile_str(&text, &file) {
            Ok(p) => Some(p),
            Err(diagnostics) => {
                for p in diagnostics.problems {
                    self.push(
                        at.clone(),
                        format!(
                            "profile `{name}` ({file}:{}:{}): {}",
                            p.line, p.column, p.message
                        ),
                    );
                }
                None
            }
        }
    }

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

    fn modbus_device(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        device: &mut ModbusDevice,
        origins: &[Origin],
        refs: &References<'_>,
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
                if !valid_host_port(address) {
                    let span = at(self, &[key("address")]);
                    self.push(
                        span,
                        format!(
                            "modbus device `{id}`: address `{address}` is not host:port (e.g. \"192.168.1.20:502\")"
                        ),
                    );
                }
            }
            (None, Some(port)) => {
                if !refs.serial_ports.contains(port.as_str()) {
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
        let unit_ok = if rtu {
            (1..=247).contains(&device.unit)
        } else {
            device.unit <= 247 || device.unit == 255
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
                    device.unit
                ),
            );
        }
        if device.address_base > 1 {
            let span = at(self, &[key("address_base")]);
            self.push(
                span,
                "address_base is 0 (protocol addresses) or 1 (manual numbering)".to_string(),
            );
        }
        if device.max_registers == 0 || device.max_registers > 125 {
            let span = at(self, &[key("max_registers")]);
            self.push(
                span,
                "max_registers must be 1–125, the protocol's limit".to_string(),
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
        for (j, field) in device.fields.iter_mut().enumerate() {
            let own = matches!(origins.get(j), Some(Origin::Own(_)));
            if own {
                for (k, message) in field_rules(field) {
                    let span = field_span(self, j, k);
                    self.push(span, message);
                }
            }
            match (&field.machine, &field.meter, &default_target) {
                (Some(m), None, _) => {
                    if !refs.machines.contains(m.as_str()) {
                        let span = field_span(self, j, "machine");
                        self.push(span, not_registered("field names machine", m));
                    }
                }
                (None, Some(m), _) => {
                    if !refs.meters.contains(m.as_str()) {
                        let span = field_span(self, j, "meter");
                        self.push(span, unknown_meter("field names meter", m));
                    }
                }
                (None, None, Some((true, m))) => field.machine = Some(m.clone()),
                (None, None, Some((false, m))) => field.meter = Some(m.clone()),
                (None, None, None) if !own => profile_without_target = true,
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
            }
            let target = match (&field.machine, &field.meter) {
                (Some(m), _) => format!("machine {m}"),
                (None, Some(m)) => format!("meter {m}"),
                (None, None) => String::new(),
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

    /// The calendar, meters and value added: what the indicators need to be computable.
    fn indicators(&mut self, root: &Spanned<DeTable<'_>>, config: &Config, refs: &References<'_>) {
        for (i, shift) in config.calendar.shifts.iter().enumerate() {
            let at = |s: &Self, k: &str| {
                s.span_of(
                    root,
                    &[key("calendar"), key("shift"), Seg::Index(i), key(k)],
                )
            };
            if shift.days.is_empty() {
                let span = at(self, "days");
                self.push(span, format!("shift `{}` has no days: list the weekdays it starts on, e.g. [\"mon\", \"tue\"]", shift.name));
            }
            if shift.start == shift.end {
                let span = at(self, "end");
                self.push(
                    span,
                    format!(
                        "shift `{}` ends when it starts; a 24-hour shift is written as two shifts",
                        shift.name
                    ),
                );
            }
            for (j, b) in shift.breaks.iter().enumerate() {
                if !crate::engine::calendar::break_within(shift, b) {
                    let span = self.span_of(
                        root,
                        &[
                            key("calendar"),
                            key("shift"),
                            Seg::Index(i),
                            key("breaks"),
                            Seg::Index(j),
                        ],
                    );
                    self.push(
                        span,
                        format!(
                            "a break of shift `{}` lies outside the shift or ends before it starts",
                            shift.name
                        ),
                    );
                }
            }
        }
        for (i, m) in config.calendar.maintenance.iter().enumerate() {
            let base = [key("calendar"), key("maintenance"), Seg::Index(i)];
            if m.end <= m.start {
                let span = self.span_of(root, &join(&base, &[key("end")]));
                self.push(
                    span,
                    "a maintenance window must end after it starts".to_string(),
                );
            }
            for (j, machine) in m.machines.iter().enumerate() {
                if !refs.machines.contains(machine.as_str()) {
                    let span = self.span_of(root, &join(&base, &[key("machines"), Seg::Index(j)]));
                    self.push(span, not_registered("maintenance names machine", machine));
                }
            }
        }
        for (carrier, factor) in &config.energy.kgce_per_unit {
            if !(factor.is_finite() && *factor > 0.0) {
                let span = self.span_of(
                    root,
                    &[key("energy"), key("kgce_per_unit"), key(carrier.as_str())],
                );
                self.push(
                    span,
                    format!(
                        "kgce_per_unit for {} must be a positive number",
                        carrier.as_str()
                    ),
                );
            }
        }
        let va = &config.value_added;
        let va_at = |s: &Self, k: &str| s.span_of(root, &[key("value_added"), key(k)]);
        match va.method {
            super::ValueAddedMethod::Parts => {
                let any = config
                    .machines
                    .iter()
                    .any(|m| m.value_added_per_part.is_some());
                if !any && config.meters.iter().any(|m| m.signal.is_some()) {
                    let span = va_at(self, "method");
                    self.push(span, "value added by parts needs `value_added_per_part` on the machine that finishes the product (or choose method = \"declared\")".to_string());
                }
            }
            super::ValueAddedMethod::GrossOutput => {
                if !va.rate.is_some_and(|r| r > 0.0 && r <= 1.0) {
                    let span = va_at(self, "rate");
                    self.push(span, "method = \"gross_output\" needs `rate`, the value-added share of gross output, between 0 and 1".to_string());
                }
                if !config
                    .machines
                    .iter()
                    .any(|m| m.gross_output_per_part.is_some())
                {
                    let span = va_at(self, "method");
                    self.push(span, "method = \"gross_output\" needs `gross_output_per_part` on the machine that finishes the product".to_string());
                }
            }
            // Declared figures may arrive later, in the file or through the board's API.
            super::ValueAddedMethod::Declared => {}
        }
        for (i, d) in va.declared.iter().enumerate() {
            if crate::engine::green::parse_period(&d.period).is_none() {
                let span = self.span_of(
                    root,
                    &[
                        key("value_added"),
                        key("declared"),
                        Seg::Index(i),
                        key("period"),
                    ],
                );
                self.push(
                    span,
                    format!(
                        "period `{}` is neither a month (\"2026-11\") nor a day (\"2026-11-30\")",
                        d.period
                    ),
                );
            }
        }
        for (i, meter) in config.meters.iter().enumerate() {
            if meter.rollover.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                let span = self.span_of(root, &[key("meter"), Seg::Index(i), key("rollover")]);
                self.push(span, "rollover must be a positive number".to_string());
            }
        }
    }

    fn mqtt_broker(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        broker: &MqttBroker,
        refs: &References<'_>,
    ) {
        let at = |s: &Self, rest: &[Seg]| s.span_of(root, &join(base, rest));
        let name = &broker.id;
        broker
            .connection
            .check(self, root, base, &format!("mqtt broker `{name}`"));
        if broker.topics.is_empty() {
            let span = at(self, &[key("id")]);
            self.push(
                span,
                format!(
                    "mqtt broker `{name}` has no [[mqtt.topic]]: it would subscribe to nothing"
                ),
            );
        }
        // (target template, signal) → declared type, across the broker's topics.
        let mut types: BTreeMap<(String, String), super::SignalType> = BTreeMap::new();
        for (j, topic) in broker.topics.iter().enumerate() {
            let tpath = [key("topic"), Seg::Index(j)];
            let here = |s: &Self, k: &str| at(s, &join(&tpath, &[key(k)]));
            let names = match mapping::compile(topic) {
                Ok((_, names)) => names,
                Err(e) => {
                    let span = here(self, "pattern");
                    self.push(span, format!("pattern `{}`: {e}", topic.pattern));
                    continue;
                }
            };
            if topic.format == PayloadFormat::Sparkplug && !topic.pattern.starts_with("spBv1.0/") {
                let span = here(self, "pattern");
                self.push(
                    span,
                    "a sparkplug topic pattern starts with `spBv1.0/` (e.g. \"spBv1.0/shop1/#\")"
                        .into(),
                );
            }
            let (target_key, target_text, registered, what) = match (&topic.machine, &topic.meter) {
                (Some(_), Some(_)) => {
                    let span = here(self, "meter");
                    self.push(
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
                    let span = here(self, target_key);
                    self.push(span, format!("{what}: {e}"));
                }
                Ok(t) => {
                    if let Some(id) = t.fixed()
                        && !registered.contains(id)
                    {
                        let span = here(self, target_key);
                        self.push(span, not_registered(&format!("topic names {what}"), id));
                    }
                    for capture in t.capture_names() {
                        if !names.iter().any(|n| n == capture) {
                            let span = here(self, target_key);
                            let hint = if target_key == "pattern" {
                                format!(
                                    "; write `{what} = \"...\"` or capture it with `{{{capture}}}` in the pattern"
                                )
                            } else {
                                String::new()
                            };
                            self.push(
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
                let span = here(self, "timestamp");
                if topic.format != PayloadFormat::Json {
                    self.push(
                        span,
                        "`timestamp` is a JSON path; text messages are stamped on arrival and \
                         Sparkplug payloads carry their own"
                            .into(),
                    );
                } else if let Err(e) = JsonPath::parse(ts) {
                    self.push(span, e);
                }
            }
            if topic.offline_payload.is_some() && topic.format == PayloadFormat::Sparkplug {
                let span = here(self, "offline_payload");
                self.push(
                    span,
                    "Sparkplug machines go offline on NDEATH/DDEATH; `offline_payload` is for JSON and text topics".into(),
                );
            }
            if topic.fields.is_empty() && topic.offline_payload.is_none() {
                let span = here(self, "pattern");
                self.push(
                    span,
                    "this topic has no `field` (and no `offline_payload`): its messages would deliver nothing".into(),
                );
            }
            if topic.format == PayloadFormat::Text && topic.fields.len() > 1 {
                let span = at(self, &join(&tpath, &[key("field"), Seg::Index(1)]));
                self.push(
                    span,
                    "a text message carries one value: map one `field` per topic".into(),
                );
            }
            let mut signals = HashSet::new();
            for (k, field) in topic.fields.iter().enumerate() {
                let fpath = join(&tpath, &[key("field"), Seg::Index(k)]);
                let fhere = |s: &Self, name: &str| at(s, &join(&fpath, &[key(name)]));
                if !signals.insert(field.signal.as_str()) {
                    let span = fhere(self, "signal");
                    self.push(
                        span,
                        format!("signal `{}` is mapped twice in this topic", field.signal),
                    );
                }
                match Template::parse(&field.signal) {
                    Err(e) => {
                        let span = fhere(self, "signal");
                        self.push(span, format!("signal: {e}"));
                    }
                    Ok(t) => {
                        for capture in t.capture_names() {
                            if !names.iter().any(|n| n == capture) {
                                let span = fhere(self, "signal");
                                self.push(
                                    span,
                                    format!("signal `{}` uses `{{{capture}}}`, which the pattern does not capture", field.signal),
                                );
                            }
                        }
                        if t.capture_names().next().is_none() {
                            let here = || format!("mqtt broker `{name}` topic `{}`", topic.pattern);
                            if let Some(clash) =
                                self.signal_type_clash(&field.signal, field.value_type, here)
                            {
                                let span = fhere(self, "type");
                                self.push(span, clash);
                            }
                        }
                    }
                }
                match (topic.format, &field.path) {
                    (PayloadFormat::Text, Some(_)) => {
                        let span = fhere(self, "path");
                        self.push(span, "a text message has no paths: leave out `path`".into());
                    }
                    (PayloadFormat::Json, path) => {
                        if let Err(e) = JsonPath::parse(path.as_deref().unwrap_or(&field.signal)) {
                            let span = fhere(self, if path.is_some() { "path" } else { "signal" });
                            self.push(span, e);
                        }
                    }
                    _ => {}
                }
                // A name without captures is checked across the whole config above; one
                // made from captures is known only per target and topic pattern.
                let templated = Template::parse(&field.signal)
                    .is_ok_and(|t| t.capture_names().next().is_some());
                let declared = (target_text.clone(), field.signal.clone());
                match types.get(&declared) {
                    Some(t) if templated && *t != field.value_type => {
                        let span = fhere(self, "type");
                        self.push(
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

    /// A field of the `signal` line keeps one type across every machine and meter: InfluxDB
    /// types a field per measurement, not per series, and refuses every line that brings it
    /// with another type (they would end in the dead-letter file). The first declaration of
    /// a name sets its type, with `here` saying where; a later one of another type gets the
    /// problem's message back. `here` runs only for a first declaration, so a register of
    /// 100 000 devices of one profile costs a lookup a field.
    fn signal_type_clash(
        &mut self,
        signal: &str,
        ty: super::SignalType,
        here: impl FnOnce() -> String,
    ) -> Option<String> {
        match self.signal_types.get(signal) {
            Some((first, there)) if *first != ty => Some(format!(
                "signal `{signal}` is {} here but {} in {there}: the store keeps one type per field of `signal` across all machines and meters, and refuses the lines of the other type (rename one, or make the types agree: `scale` makes a register a float)",
                ty.with_article(),
                first.with_article()
            )),
            Some(_) => None,
            None => {
                self.signal_types.insert(signal.to_string(), (ty, here()));
                None
            }
        }
    }

    pub(crate) fn influx(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        output: &super::InfluxOutput,
    ) {
        let at = |s: &Self, k: &str| s.span_of(root, &join(base, &[key(k)]));
        match reqwest::Url::parse(&output.url) {
            // Credentials in the URL would be a secret in the config text, and every error
            // message that names the URL (reqwest's among them) would print them.
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                let span = at(self, "url");
                self.push(
                    span,
                    format!(
                        "url `{}` carries credentials: a secret is never written in the config; \
                         remove them and use `username` and `password = {{ env = \"VARIABLE\" }}` \
                         (api v1) or `token = {{ env = \"VARIABLE\" }}` (v2)",
                        without_credentials(url)
                    ),
                );
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                let span = at(self, "url");
                self.push(
                    span,
                    format!("url `{}` is not an http:// or https:// URL", output.url),
                );
            }
        }
        let required: &[(&str, bool)] = match output.api {
            InfluxApi::V2 => &[
                ("bucket", output.bucket.is_some()),
                ("org", output.org.is_some()),
            ],
            InfluxApi::V1 => &[("database", output.database.is_some())],
        };
        for (name, present) in required {
            if !present {
                let span = at(self, "api");
                let api = if output.api == InfluxApi::V2 {
                    "v2"
                } else {
                    "v1"
                };
                self.push(
                    span,
                    format!("[[influx]] with api = \"{api}\" needs `{name}`"),
                );
            }
        }
        for (name, secret) in [("token", &output.token), ("password", &output.password)] {
            if let Some(Err(e)) = secret.as_ref().map(|s| s.resolve()) {
                let span = at(self, name);
                self.push(span, format!("{name}: {e}"));
            }
        }
        if output.batch_lines == 0 {
            let span = at(self, "batch_lines");
            self.push(span, "batch_lines must be at least 1".to_string());
        }
        if output.retry_max.is_zero() {
            let span = at(self, "retry_max");
            self.push(
                span,
                "retry_max must be longer than zero: it bounds the wait between retries"
                    .to_string(),
            );
        }
        if output.timeout.is_zero() {
            let span = at(self, "timeout");
            self.push(span, "timeout must be longer than zero".to_string());
        }
        if output.dead_letter_max_bytes < MIN_DEAD_LETTER_BYTES {
            let span = at(self, "dead_letter_max_bytes");
            self.push(
                span,
                format!(
                    "dead_letter_max_bytes must be at least {MIN_DEAD_LETTER_BYTES}: it keeps the rejected lines for a person to read"
                ),
            );
        }
    }

    pub(crate) fn spool(&mut self, root: &Spanned<DeTable<'_>>, spool: &super::Spool) {
        let at = |s: &Self, k: &str| s.span_of(root, &[key("spool"), key(k)]);
        if spool.max_bytes == 0 {
            let span = at(self, "max_bytes");
            self.push(
                span,
                "max_bytes must be more than 0: it is how much the spool keeps while the store is unreachable"
                    .to_string(),
            );
        }
        if spool.sync_interval.is_zero() {
            let span = at(self, "sync_interval");
            self.push(
                span,
                "sync_interval must be longer than zero (write sync = \"full\" to sync every append)"
                    .to_string(),
            );
        }
    }
}

/// Registers a field occupies: start, end (exclusive), bit, and the field's index.
type Occupied = (u32, u32, Option<u8>, usize);

/// The ids things can refer to. Raw ids are read from the document so that a machine whose own
/// entry has a mistake does not also make every reference to it an error.
struct References<'a> {
    machines: HashSet<&'a str>,
    meters: HashSet<&'a str>,
    kinds: HashSet<&'a str>,
    serial_ports: HashSet<&'a str>,
}

/// The name the n-th output of a type gets when it has none.
pub fn default_output_name(kind: &str, n: usize) -> String {
    if n == 0 {
        kind.to_string()
    } else {
        format!("{kind}{}", n + 1)
    }
}

fn not_registered(what: &str, id: &str) -> String {
    format!(
        "{what} `{id}`, which is not in the register: add a [[machine]] with id = \"{id}\" or fix the id"
    )
}

fn unknown_meter(what: &str, id: &str) -> String {
    format!("{what} `{id}`, which is not in any [[meter]]: add it there or fix the id")
}

fn raw_ids(root: &Spanned<DeTable<'_>>, section: &str) -> Vec<String> {
    let Some((_, value)) = root
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() as &str == section)
    else {
        return Vec::new();
    };
    let Some(items) = value.get_ref().as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            item.get_ref()
                .as_table()
                .and_then(|t| t.iter().find(|(k, _)| k.get_ref().as_ref() as &str == "id"))
                .and_then(|(_, v)| v.get_ref().as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn strip<T>(items: Vec<(usize, T)>) -> Vec<T> {
    items.into_iter().map(|(_, v)| v).collect()
}

fn join(base: &[Seg], rest: &[Seg]) -> Vec<Seg> {
    base.iter().chain(rest).cloned().collect()
}

/// The URL as a diagnostic may show it: user and password replaced by `***`.
fn without_credentials(mut url: reqwest::Url) -> String {
    let _ = url.set_username("***");
    let _ = url.set_password(None);
    url.to_string()
}

pub(crate) fn valid_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// The path serde_ignored reports, as segments. `Some` and newtype wrappers add no step.
fn ignored_path(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    match path {
        serde_ignored::Path::Root => Vec::new(),
        serde_ignored::Path::Seq { parent, index } => {
            let mut p = ignored_path(parent);
            p.push(Seg::Index(*index));
            p
        }
        serde_ignored::Path::Map { parent, key } => {
            let mut p = ignored_path(parent);
            p.push(Seg::Key(key.clone()));
            p
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// The span of the key at the end of `path` inside `value`.
fn key_span(value: &Spanned<DeValue<'_>>, path: &[Seg]) -> Option<Range<usize>> {
    let (last, parents) = path.split_last()?;
    let mut node = value;
    for seg in parents {
        node = match seg {
            Seg::Key(k) => node
                .get_ref()
                .as_table()?
                .iter()
                .find(|(name, _)| name.get_ref().as_ref() as &str == k.as_str())
                .map(|(_, v)| v)?,
            Seg::Index(i) => node.get_ref().as_array()?.as_ref().get(*i)?,
        };
    }
    match last {
        Seg::Key(k) => node
            .get_ref()
            .as_table()?
            .iter()
            .find(|(name, _)| name.get_ref().as_ref() as &str == k.as_str())
            .map(|(name, _)| name.span()),
        Seg::Index(i) => node
            .get_ref()
            .as_array()?
            .as_ref()
            .get(*i)
            .map(|v| v.span()),
    }
}

/// How a user writes the table at `path`: `[site]`, `[[modbus]] #2`, `[[modbus.field]] #3 of [[modbus]] #1`.
fn table_name(path: &[Seg]) -> String {
    let mut names = Vec::new();
    let mut numbers = Vec::new();
    for seg in path {
        match seg {
            Seg::Key(k) => names.push(k.as_str()),
            Seg::Index(i) => numbers.push(i + 1),
        }
    }
    let dotted = names.join(".");
    if names.is_empty() {
        return "the profile".to_string();
    }
    if numbers.is_empty() {
        format!("[{dotted}]")
    } else {
        let mut text = format!("[[{dotted}]] #{}", numbers.last().copied().unwrap_or(0));
        if numbers.len() > 1 {
            text.push_str(&format!(" of [[{}]] #{}", names[0], numbers[0]));
        }
        text
    }
}

/// The table names along a path into the document, array indices left out.
pub(crate) fn key_names(path: &[Seg]) -> Vec<&str> {
    path.iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect()
}

/// The keys a table at `path` takes, for "did you mean" hints.
fn known_keys(path: &[Seg], profile: bool) -> &'static [&'static str] {
    let names = key_names(path);
    if profile {
        return match names.as_slice() {
            ["field"] => struct_fields::<super::ModbusField>(),
            _ => struct_fields::<Profile>(),
        };
    }
    match names.as_slice() {
        ["site"] => struct_fields::<super::Site>(),
        ["agent"] => struct_fields::<super::Agent>(),
        ["machine"] => struct_fields::<super::Machine>(),
        ["meter"] => struct_fields::<super::Meter>(),
        ["modbus"] => struct_fields::<super::ModbusDevice>(),
        ["modbus", "field"] => struct_fields::<super::ModbusField>(),
        ["modbus_serial"] => struct_fields::<super::ModbusSerial>(),
        ["mqtt"] => super::composite::fields::<super::MqttBroker>(),
        ["mqtt", "tls"] => struct_fields::<super::MqttTls>(),
        ["mqtt", "topic"] => struct_fields::<super::MqttTopic>(),
        ["mqtt", "topic", "field"] => struct_fields::<super::MqttField>(),
        ["state_rules"] => struct_fields::<super::StateRules>(),
        ["state_rules", "rule"] => struct_fields::<super::Rule>(),
        ["state_rules", "rule", "when"] => struct_fields::<super::Condition>(),
        ["spool"] => struct_fields::<super::Spool>(),
        ["influx"] => struct_fields::<super::InfluxOutput>(),
        ["file"] => struct_fields::<super::FileOutput>(),
        ["calendar"] => struct_fields::<super::Calendar>(),
        ["calendar", "shift"] => struct_fields::<super::Shift>(),
        ["calendar", "shift", "breaks"] => struct_fields::<super::Break>(),
        ["calendar", "maintenance"] => struct_fields::<super::Maintenance>(),
        ["energy"] => struct_fields::<super::EnergyConfig>(),
        ["value_added"] => struct_fields::<super::ValueAdded>(),
        ["value_added", "declared"] => struct_fields::<super::Declared>(),
        ["green"] => struct_fields::<super::Green>(),
        ["web"] => struct_fields::<super::Web>(),
        ["uplink"] => super::composite::fields::<super::Uplink>(),
        ["uplink", "tls"] => struct_fields::<super::MqttTls>(),
        _ => &[],
    }
}

/// The field names serde derived for a struct, read by asking it to deserialize from a
/// deserializer that only records the names it is offered.
pub(crate) fn struct_fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Names(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Names {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut names = Names(None);
    let _ = T::deserialize(&mut names);
    names.0.unwrap_or(&[])
}

/// The closest candidate within two edits, if any.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[meter]]
id = "main"
carrier = "electricity"
"#;

    #[test]
    fn a_good_mqtt_section_loads() {
        let text = r#"
[[mqtt]]
id = "plant"
address = "127.0.0.1:1883"
protocol = "5"
keepalive = "20s"

  [[mqtt.topic]]
  pattern = "plant/{machine}/data"
  timestamp = "ts"
  field = [{ signal = "spindle_rpm", path = "spindle.rpm" }, { signal = "parts", type = "int" }]

  [[mqtt.topic]]
  pattern = "spBv1.0/shop1/#"
  format = "sparkplug"
  field = [{ signal = "run", path = "Running", type = "bool" }]
"#;
        // That it loads, with no problem, is also the config case of the same name
        // (tests/config_cases/); here, what it reads.
        let cfg = load_str(&format!("{BASE}{text}"), "t.toml").unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.mqtt[0].protocol, super::super::MqttProtocol::V5);
        assert_eq!(cfg.mqtt[0].max_packet_size(), 256 * 1024);
        assert!(!cfg.mqtt[0].clean_session);
    }
}

/// `[spool]` and `[[influx]]`: store-and-forward settings.
#[cfg(test)]
mod store_forward_tests {
    use super::*;

    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n";

    #[test]
    fn store_and_forward_settings_are_read_with_their_defaults() {
        let cfg = load_str(
            &format!("{SITE}[spool]\nmax_age = \"2d\"\n[[influx]]\nurl = \"http://h:8086\"\napi = \"v1\"\ndatabase = \"d\"\nprecision = \"ms\"\ngzip = false\n"),
            "t.toml",
        )
        .unwrap();
        let limits = cfg.spool.limits();
        assert_eq!(
            limits.max_age,
            Some(std::time::Duration::from_secs(2 * 86_400))
        );
        assert_eq!(cfg.spool.sync_interval, std::time::Duration::from_secs(1));
        let out = &cfg.influx[0];
        assert_eq!(out.precision, crate::sink::line_protocol::Precision::Ms);
        assert!(!out.gzip);
        assert_eq!(out.flush_interval, std::time::Duration::from_secs(1));
        assert_eq!(out.retry_max, std::time::Duration::from_secs(60));
        // "0s" turns the age bound off.
        let cfg = load_str(&format!("{SITE}[spool]\nmax_age = \"0s\"\n"), "t.toml").unwrap();
        assert_eq!(cfg.spool.limits().max_age, None);
    }
}

/// Modbus sections: devices, serial ports and profiles.
#[cfg(test)]
mod modbus_tests {
    use super::*;

    const SITE: &str = r#"[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[meter]]
id = "main"
carrier = "electricity"
"#;

    #[test]
    fn every_shipped_profile_parses() {
        // Every file under config/profiles/ is shipped (compiled in), and parses.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        files.sort();
        let mut shipped: Vec<String> = profile::BUILTIN
            .iter()
            .map(|(n, _)| format!("{n}.toml"))
            .collect();
        shipped.sort();
        assert_eq!(files, shipped);
        for (name, text) in profile::BUILTIN {
            let p = load_profile_str(text, name).unwrap_or_else(|d| panic!("{d}"));
            assert!(!p.fields.is_empty(), "{name}");
            assert!(!p.description.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_profile_fills_the_device_and_its_fields_belong_to_the_device_machine() {
        // `address_base` is not a field key, the device's own fields use the device's base: the
        // config case of the same name (tests/config_cases/). Here, what the profile fills in.
        let text = format!(
            "{SITE}\n[[modbus]]\nid = \"box\"\naddress = \"h:502\"\naddress_base = 1\nprofile = \"cnc-iot-box\"\nmachine = \"cnc01\"\nfield = [{{ signal = \"feed\", register = \"holding\", address = 41 }}]\n"
        );
        let cfg = load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        let d = &cfg.modbus[0];
        // Seven profile fields, then the device's own.
        assert_eq!(d.fields.len(), 8);
        assert!(
            d.fields
                .iter()
                .all(|f| f.machine.as_deref() == Some("cnc01"))
        );
        let program = d.fields.iter().find(|f| f.signal == "program").unwrap();
        assert_eq!(
            (program.registers(), program.protocol_address()),
            (8, Some(7))
        );
        // The device counts from 1, the profile from 0: each field keeps its own numbering.
        let feed = d.fields.last().unwrap();
        assert_eq!(feed.protocol_address(), Some(40));
    }

    #[test]
    fn a_serial_line_keeps_three_and_a_half_characters_of_silence() {
        let mut port: ModbusSerial = toml::from_str("id = \"l\"\nport = \"/dev/ttyS0\"").unwrap();
        // 9600 8N1: 10 bits a character; 3.5 × 10 / 9600 s = 3.6458 ms.
        assert_eq!(port.effective_frame_gap().as_micros(), 3645);
        // 19200 8E1: 11 bits; 3.5 × 11 / 19200 s = 2.0052 ms.
        port.baud = 19_200;
        port.parity = super::super::Parity::Even;
        assert_eq!(port.effective_frame_gap().as_micros(), 2005);
        // Above 19200 the specification fixes 1.75 ms.
        port.baud = 115_200;
        assert_eq!(port.effective_frame_gap().as_micros(), 1750);
        port.frame_gap = Some(std::time::Duration::from_millis(10));
        assert_eq!(port.effective_frame_gap().as_millis(), 10);
    }
}
