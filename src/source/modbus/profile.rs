//! Device profiles: register maps of device models, kept in `profiles/<name>.toml` beside the
//! config file, or shipped with Shopfloor (the files under `config/profiles/` are compiled in).
//!
//! A file beside the config wins over a shipped profile of the same name, so a site can correct
//! or extend a shipped map without waiting for a release.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

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
    if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) {
        return Ok((ProfileSource::Builtin, Cow::Borrowed(text)));
    }
    let shipped: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
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
