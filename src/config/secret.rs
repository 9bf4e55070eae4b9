//! Secrets (tokens, passwords) are named in the config, never written in it: the config says
//! where to find them, an environment variable or a file, so the config can be shared, committed
//! and shown on a screen without leaking anything.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Where a secret lives: `{ env = "INFLUX_TOKEN" }` or `{ file = "/etc/shopfloor/token" }`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "environment variable `{0}` is not set or is empty: export it before starting the agent"
    )]
    EnvMissing(String),
    #[error("secret file `{path}` cannot be read ({source}): check the path and its permissions")]
    FileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file `{0}` is empty")]
    FileEmpty(PathBuf),
}

impl Secret {
    /// Reads the secret now. A trailing newline in a file is not part of the secret.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Secret::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(SecretError::EnvMissing(name.clone())),
            },
            Secret::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    SecretError::FileUnreadable {
                        path: path.clone(),
                        source,
                    }
                })?;
                let value = text.trim_end_matches(['\n', '\r']).to_string();
                if value.is_empty() {
                    return Err(SecretError::FileEmpty(path.clone()));
                }
                Ok(value)
            }
        }
    }
}

/// Never prints the secret, only where it comes from.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Env(name) => write!(f, "Secret(env {name})"),
            Secret::File(path) => write!(f, "Secret(file {})", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

const SECRET_HELP: &str = "a secret is never written in the config: write { env = \"VARIABLE\" } \
                           or { file = \"/path/to/secret\" }";

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("{ env = \"VARIABLE\" } or { file = \"/path\" }")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Secret, E> {
        Err(E::custom(SECRET_HELP))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let secret = match key.as_str() {
                "env" => Secret::Env(map.next_value()?),
                "file" => Secret::File(map.next_value()?),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{other}` in a secret: {SECRET_HELP}"
                    )));
                }
            };
            if found.replace(secret).is_some() {
                return Err(de::Error::custom(
                    "a secret takes one of `env` or `file`, not both",
                ));
            }
        }
        found.ok_or_else(|| de::Error::custom(SECRET_HELP))
    }
}
