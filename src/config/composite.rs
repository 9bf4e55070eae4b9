//! Sections whose table holds the keys of a shared part beside their own: `[[mqtt]]`,
//! `[uplink]` and the ingest's `[broker]` each hold an MQTT connection's keys at their top level
//! (`common::mqtt::MqttConnection`).
//!
//! `#[serde(flatten)]` would say that in one attribute, but serde reads a flattened table into
//! a buffer without positions (a type error in it could no longer be located) and keeps the
//! keys nobody claims there (`serde_ignored` never sees them, so a misspelt key would pass in
//! silence). So [`Checker::composite`](super::Checker::composite) reads the table twice, once as
//! the shared part and once as the section's own keys, each straight from the positioned
//! document, and reports a key as unknown only when neither part knows it.
//!
//! A section opts in with `#[serde(remote = "Self")]` on its derive (which turns the derived
//! `Deserialize` into an inherent `deserialize` reading the own keys only, the shared field
//! `#[serde(skip)]`ped), an impl of [`Composite`], and `Deserialize` through [`deserialize`],
//! which keeps `toml::from_str::<Section>` working for tests and tools.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Mutex;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

/// A section made of a shared part and its own keys, both read from one table.
pub(crate) trait Composite: Sized + 'static {
    /// The shared part, read from the whole table.
    type Shared: DeserializeOwned + 'static;
    /// The section's own keys, the shared part left at its default (the derive's inherent
    /// `deserialize` under `#[serde(remote = "Self")]`).
    fn own<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
    /// Puts the shared part in.
    fn with_shared(self, shared: Self::Shared) -> Self;
}

/// A section's own keys, as a type the checker can deserialize.
pub(crate) struct Own<T>(pub T);

impl<'de, T: Composite> Deserialize<'de> for Own<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::own(d).map(Own)
    }
}

/// The whole section from any deserializer: the table is read once into a TOML value, then as
/// each part. Unknown keys are ignored here, as serde does by default; `check` reports them.
pub(crate) fn deserialize<'de, T: Composite, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let table = toml::Value::deserialize(d)?;
    let shared = T::Shared::deserialize(table.clone()).map_err(D::Error::custom)?;
    let own = T::own(table).map_err(D::Error::custom)?;
    Ok(own.with_shared(shared))
}

/// Every key a composite section takes (its own, then the shared part's), for "did you mean".
pub(crate) fn fields<T: Composite>() -> &'static [&'static str] {
    static FIELDS: Mutex<Option<HashMap<TypeId, &'static [&'static str]>>> = Mutex::new(None);
    let mut known = FIELDS.lock().unwrap_or_else(|e| e.into_inner());
    known
        .get_or_insert_with(HashMap::new)
        .entry(TypeId::of::<T>())
        .or_insert_with(|| {
            let mut all = super::struct_fields::<Own<T>>().to_vec();
            all.extend_from_slice(super::struct_fields::<T::Shared>());
            // Once per section type, for the life of the process.
            Box::leak(all.into_boxed_slice())
        })
}
