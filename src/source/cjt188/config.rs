//! `[[cjt188]]`: a bus of CJ/T 188 water (heat, gas) meters and what is read from each.
//!
//! ```toml
//! [[cjt188]]
//! id = "water-1"
//! tcp = "192.168.1.61:8899"      # or port = "/dev/ttyUSB1"
//! poll = "5m"
//!
//!   [[cjt188.meter]]
//!   address = "00000012345678"   # the fourteen digits on the meter
//!   type = "cold_water"
//!   meter = "water-main"         # the [[meter]] it feeds
//!   readings = ["volume_m3", "valve", "battery_low"]
//! ```
//!
//! The bus keys are [`crate::source::meterbus::config::Bus`]'s, read beside this section's
//! own (see `config::composite`).

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::DeTable;

use super::frame::{Address, DiOrder, MeterType};
use crate::config::{Checker, Composite, References, Seg, composite, key};
use crate::model::{Carrier, SignalType};
use crate::source::meterbus::config::{
    Bus, BusEntry, check_accounted, check_bus, check_carrier, meter_path, parsed,
};

/// `[[cjt188]]`: one M-Bus or RS-485 bus (or serial server) of CJ/T 188 meters.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self")]
pub struct Cjt188Bus {
    /// Bus id for logs.
    pub id: String,
    /// The port and line settings, at the top level of `[[cjt188]]` (see `[[dlt645]]`).
    #[serde(skip)]
    pub bus: Bus,
    /// `"as_written"` (default: the identifier 901F goes `90 1F`) or `"swapped"` (`1F 90`,
    /// which some makers' meters want). Answers are taken in either order.
    #[serde(default, deserialize_with = "di_order")]
    pub di_order: DiOrder,
    /// The meters on the bus.
    #[serde(default, rename = "meter")]
    pub meters: Vec<Cjt188Meter>,
}

impl Composite for Cjt188Bus {
    type Shared = Bus;
    fn own<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Cjt188Bus::deserialize(d)
    }
    fn with_shared(self, bus: Bus) -> Self {
        Cjt188Bus { bus, ..self }
    }
}

impl<'de> Deserialize<'de> for Cjt188Bus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        composite::deserialize(d)
    }
}

/// `[[cjt188.meter]]`: one meter on the bus.
#[derive(Debug, Clone, Deserialize)]
pub struct Cjt188Meter {
    /// The meter's address: the fourteen digits printed on it (表号), leading zeros may be
    /// left off.
    #[serde(deserialize_with = "address")]
    pub address: Address,
    /// `cold_water`, `hot_water`, `drinking_water`, `reclaimed_water`, `heat`, `cooling` or
    /// `gas`: the type byte the meter answers to, and its data's layout.
    #[serde(rename = "type", deserialize_with = "meter_type")]
    pub meter_type: MeterType,
    /// The `[[meter]]` the readings go to; also the device name in the health lines.
    pub meter: String,
    /// Which figures of the metering data (901F) become signals; default: all of the type's
    /// (see the README's table).
    #[serde(default)]
    pub readings: Option<Vec<String>>,
}

fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    parsed(d, Address::parse)
}

fn meter_type<'de, D: Deserializer<'de>>(d: D) -> Result<MeterType, D::Error> {
    parsed(d, MeterType::parse)
}

fn di_order<'de, D: Deserializer<'de>>(d: D) -> Result<DiOrder, D::Error> {
    parsed(d, |text| match text.trim() {
        "as_written" => Ok(DiOrder::AsWritten),
        "swapped" => Ok(DiOrder::Swapped),
        other => Err(format!("di_order {other:?}: \"as_written\" or \"swapped\"")),
    })
}

/// A water or gas meter's figures: (signal, type).
pub const FLOW_READINGS: &[(&str, SignalType)] = &[
    ("volume_m3", SignalType::Float),
    ("volume_settlement_m3", SignalType::Float),
    ("valve", SignalType::String),
    ("battery_low", SignalType::Bool),
];

/// A heat meter's figures.
pub const HEAT_READINGS: &[(&str, SignalType)] = &[
    ("heat_kwh", SignalType::Float),
    ("heat_settlement_kwh", SignalType::Float),
    ("heat_power_kw", SignalType::Float),
    ("flow_rate_m3h", SignalType::Float),
    ("volume_m3", SignalType::Float),
    ("supply_c", SignalType::Float),
    ("return_c", SignalType::Float),
    ("operating_h", SignalType::Float),
    ("valve", SignalType::String),
    ("battery_low", SignalType::Bool),
];

impl Cjt188Meter {
    /// The figures this meter's type offers.
    pub fn offered(&self) -> &'static [(&'static str, SignalType)] {
        if self.meter_type.is_heat() {
            HEAT_READINGS
        } else {
            FLOW_READINGS
        }
    }

    /// The `[[meter]]` carriers this meter's figures can be accounted as: water meters water,
    /// heat meters heat, gas meters natural gas.
    pub fn carriers(&self) -> &'static [Carrier] {
        match self.meter_type.0 >> 4 {
            1 => &[Carrier::Water],
            2 => &[Carrier::Heat],
            3 => &[Carrier::NaturalGas],
            _ => &[
                Carrier::Water,
                Carrier::Heat,
                Carrier::NaturalGas,
                Carrier::Electricity,
            ],
        }
    }

    /// Whether `signal` is read from this meter.
    pub fn reads(&self, signal: &str) -> bool {
        match &self.readings {
            Some(list) => list.iter().any(|r| r == signal),
            None => self.offered().iter().any(|(s, _)| *s == signal),
        }
    }
}

impl crate::config::Section for Cjt188Bus {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        use crate::config::struct_fields;
        match path {
            [] => composite::fields::<Cjt188Bus>(),
            ["meter"] => struct_fields::<Cjt188Meter>(),
            _ => &[],
        }
    }

    fn read(
        checker: &mut Checker<'_>,
        value: &Spanned<toml::de::DeValue<'_>>,
        path: Vec<Seg>,
    ) -> Option<Self> {
        checker.composite(value, path)
    }
}

/// `[[cjt188]]`'s row in the section table: the bus, each meter in the register, each reading
/// one its type offers, each signal of one type across the store.
pub(crate) fn check_buses(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    buses: &mut [Cjt188Bus],
    refs: &References<'_>,
) {
    for (i, bus) in at.iter().zip(buses.iter()) {
        let entry = BusEntry {
            section: "cjt188",
            index: *i,
            id: &bus.id,
            bus: &bus.bus,
            meters: bus.meters.iter().map(|m| m.meter.as_str()).collect(),
        };
        check_bus(checker, root, entry, &refs.meters);
        for (n, meter) in bus.meters.iter().enumerate() {
            let path = |rel: &[Seg]| meter_path("cjt188", *i, n, rel);
            let offered = meter.offered();
            let names: Vec<&str> = offered.iter().map(|(s, _)| *s).collect();
            for (r, name) in meter.readings.iter().flatten().enumerate() {
                if !names.contains(&name.as_str()) {
                    let span = checker.span_of(root, &path(&[key("readings"), Seg::Index(r)]));
                    let hint = crate::config::suggest(name, &names)
                        .map(|s| format!("did you mean `{s}`? "))
                        .unwrap_or_default();
                    checker.push(
                        span,
                        format!(
                            "a {} offers no reading `{name}`: {hint}it offers {}",
                            meter.meter_type.name(),
                            names.join(", ")
                        ),
                    );
                }
            }
            for (signal, ty) in offered.iter().filter(|(s, _)| meter.reads(s)) {
                let what = || format!("[[cjt188.meter]] {}", meter.address);
                if let Some(clash) = checker.signal_type_clash(signal, *ty, what) {
                    let span = checker.span_of(root, &path(&[key("readings")]));
                    checker.push(span, clash);
                }
            }
            check_carrier(
                checker,
                root,
                refs,
                &meter.meter,
                meter.carriers(),
                meter.meter_type.name(),
                &path(&[key("meter")]),
            );
            let offers = format!("a {} offers {}", meter.meter_type.name(), names.join(", "));
            check_accounted(
                checker,
                root,
                refs,
                &meter.meter,
                &|signal: &str| meter.reads(signal),
                &offers,
                &path(&[key("meter")]),
            );
        }
    }
}

/// What the bus's meters deliver, for the check that every signal a `[[meter]]` names comes
/// from somewhere.
pub(crate) fn deliveries(bus: &Cjt188Bus, out: &mut crate::config::Deliveries) {
    for meter in &bus.meters {
        for (signal, _) in meter.offered().iter().filter(|(s, _)| meter.reads(s)) {
            out.signal(crate::config::To::Meter(&meter.meter), signal);
        }
    }
}
