//! Device profiles: register maps of device models, kept in `profiles/<name>.toml` beside the
//! config file, or shipped with Shopfloor (the files under `config/profiles/` are compiled in).
//!
//! A file beside the config wins over a shipped profile of the same name, so a site can correct
//! or extend a shipped map without waiting for a release.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::config::{
    AddressBase, MAX_READ_REGISTERS, ModbusDevice, ModbusField, Origin, field_rules,
};
use crate::config::{
    Checker, Diagnostics, References, Seg, check_document, join, key, key_names, raw_ids,
    struct_fields,
};

/// The profiles shipped with Shopfloor: (name, file text).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "cnc-iot-box",
        include_str!("../../../config/profiles/cnc-iot-box.toml"),
    ),
    (
        "eastron-sdm630",
        include_str!("../../../config/profiles/eastron-sdm630.toml"),
    ),
    (
        "carlo-gavazzi-em340",
        include_str!("../../../config/profiles/carlo-gavazzi-em340.toml"),
    ),
];

/// Where a profile's text came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    File(PathBuf),
    Builtin,
}

/// The text of profile `name`: `<config_dir>/profiles/<name>.toml` if it exists, else the
/// shipped one. The error says what was looked for and what exists.
pub fn find(
    name: &str,
    config_dir: Option<&Path>,
) -> Result<(ProfileSource, Cow<'static, str>), String> {
    find_in(name, config_dir, BUILTIN)
}

/// [`find`] among another source's shipped profiles (`source::s7`'s).
pub fn find_in(
    name: &str,
    config_dir: Option<&Path>,
    builtin: &[(&str, &'static str)],
) -> Result<(ProfileSource, Cow<'static, str>), String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "profile name `{name}` may only hold letters, digits, `-` and `_`"
        ));
    }
    let local = config_dir.map(|dir| dir.join("profiles").join(format!("{name}.toml")));
    if let Some(path) = &local {
        match std::fs::read_to_string(path) {
            Ok(text) => return Ok((ProfileSource::File(path.clone()), Cow::Owned(text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    if let Some((_, text)) = builtin.iter().find(|(n, _)| *n == name) {
        return Ok((ProfileSource::Builtin, Cow::Borrowed(text)));
    }
    let shipped: Vec<&str> = builtin.iter().map(|(n, _)| *n).collect();
    let looked = local
        .map(|p| format!("{} does not exist, and ", p.display()))
        .unwrap_or_default();
    Err(format!(
        "unknown profile `{name}`: {looked}Shopfloor ships {}",
        shipped.join(", ")
    ))
}

impl ProfileSource {
    /// How a message names the profile's file.
    pub fn describe(&self, name: &str) -> String {
        match self {
            ProfileSource::File(p) => p.display().to_string(),
            ProfileSource::Builtin => format!("<shipped>/config/profiles/{name}.toml"),
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
    #[serde(default, deserialize_with = "AddressBase::in_profile")]
    pub address_base: AddressBase,
    /// The most registers the model answers in one request.
    #[serde(default)]
    pub max_registers: Option<u16>,
    /// The widest hole the model lets a request span.
    #[serde(default)]
    pub max_gap: Option<u16>,
    /// The model only answers reads of exactly one documented value.
    #[serde(default)]
    pub one_request_per_field: bool,
    /// The register map; once loaded, each field's `address_base` is the profile's, and every
    /// device that uses the profile without fields of its own shares this list.
    #[serde(default, rename = "field")]
    pub fields: Arc<[ModbusField]>,
}

/// Checks a profile's text; `file` names it in messages.
pub fn load_profile_str(text: &str, file: &str) -> Result<Profile, Diagnostics> {
    check_document(text, file, profile_keys, check_profile)
}

/// The keys of a profile's tables, for hints.
fn profile_keys(path: &[Seg]) -> &'static [&'static str] {
    match key_names(path).as_slice() {
        ["field"] => struct_fields::<ModbusField>(),
        _ => struct_fields::<Profile>(),
    }
}

fn check_profile(checker: &mut Checker<'_>, root: &Spanned<DeTable<'_>>) -> Option<Profile> {
    let value = Spanned::new(root.span(), DeValue::Table(root.get_ref().clone()));
    let profile = checker.section::<Profile>(&value, Vec::new());
    if let Some(p) = &profile {
        let span_of = |path: &[Seg]| checker.span_of(root, path);
        let mut found = Vec::new();
        if p.max_registers
            .is_some_and(|m| m == 0 || m > MAX_READ_REGISTERS)
        {
            found.push((
                span_of(&[key("max_registers")]),
                format!("max_registers must be 1–{MAX_READ_REGISTERS}, the protocol's limit"),
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
    profile
}

/// `[[modbus]]`'s row: merges each device's profile in, then checks the device and its map.
pub(crate) fn check_devices(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    devices: &mut [ModbusDevice],
    refs: &References<'_>,
) {
    let serial_ids = raw_ids(root, "modbus_serial");
    let serial_ports: HashSet<&str> = serial_ids.iter().map(String::as_str).collect();
    for (i, device) in at.iter().zip(devices.iter_mut()) {
        let base = vec![key("modbus"), Seg::Index(*i)];
        if !checker.claim("device", &device.id) {
            let at = checker.span_of(root, &join(&base, &[key("id")]));
            checker.push(
                at,
                format!("modbus device id `{}` is used twice", device.id),
            );
        }
        let origins = checker.merge_profile(root, &base, device);
        checker.modbus_device(root, &base, device, &origins, refs, &serial_ports);
    }
}

/// `fields` with their addresses counted from `base`.
fn counted_from(fields: &[ModbusField], base: AddressBase) -> Arc<[ModbusField]> {
    fields
        .iter()
        .map(|f| ModbusField {
            address_base: base,
            ..f.clone()
        })
        .collect()
}

/// A device's register map: its profile's fields, then its own. A device without fields of
/// its own shares the profile's list (a reference count), so devices of one model hold it once.
pub fn profile_then_own<T: Clone>(profile: Arc<[T]>, own: &[T]) -> Arc<[T]> {
    if own.is_empty() {
        profile
    } else {
        profile.iter().chain(own).cloned().collect()
    }
}

impl Checker<'_> {
    /// Merges a device's profile into it. Returns where each resulting field came from, so
    /// later problems point at the right place.
    pub(crate) fn merge_profile(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        device: &mut ModbusDevice,
    ) -> Vec<Origin> {
        let own: Vec<Origin> = (0..device.fields.len()).map(Origin::Own).collect();
        if device
            .fields
            .iter()
            .any(|f| f.address_base != device.address_base)
        {
            device.fields = counted_from(&device.fields, device.address_base);
        }
        let Some(name) = device.profile.clone() else {
            return own;
        };
        let at = self.span_of(root, &join(base, &[key("profile")]));
        // Read once per config; every device of the profile gets the same fields (a reference
        // count, not a copy) unless it adds fields of its own.
        let parsed = match self.remembered::<Profile>(&name) {
            Some(p) => p,
            None => match self.read_profile(&name, &device.id, at) {
                Some(mut p) => {
                    p.fields = counted_from(&p.fields, p.address_base);
                    self.remember(name.clone(), p.clone());
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
        let mut origins: Vec<Origin> = (0..parsed.fields.len()).map(Origin::Profile).collect();
        origins.extend(own);
        device.fields = profile_then_own(parsed.fields, &device.fields);
        origins
    }

    /// Finds and parses profile `name` for `device`; problems are reported at `at`, the
    /// device's `profile` key, naming the profile's own file, line and column.
    fn read_profile(&mut self, name: &str, device: &str, at: Range<usize>) -> Option<Profile> {
        let (source, text) = match find(name, self.dir()) {
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_profile_counts_its_addresses_from_zero_or_one() {
        let d = load_profile_str("address_base = 7\n", "p.toml").unwrap_err();
        assert!(
            d.to_string()
                .contains("p.toml:1:16: in the profile: address_base is 0 or 1"),
            "{d}"
        );
    }

    #[test]
    fn every_shipped_profile_parses() {
        // Every file under config/profiles/ is shipped (compiled in), and parses.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
        // (Sub-folders hold other sources' profiles: `s7/`.)
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        files.sort();
        let mut shipped: Vec<String> = BUILTIN.iter().map(|(n, _)| format!("{n}.toml")).collect();
        shipped.sort();
        assert_eq!(files, shipped);
        for (name, text) in BUILTIN {
            let p = load_profile_str(text, name).unwrap_or_else(|d| panic!("{d}"));
            assert!(!p.fields.is_empty(), "{name}");
            assert!(!p.description.is_empty(), "{name}");
        }
    }
}
