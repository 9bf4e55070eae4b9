//! `[[dlt645]]`: a bus of DL/T 645 electricity meters and what is read from each.
//!
//! ```toml
//! [[dlt645]]
//! id = "dist-board-1"
//! port = "/dev/ttyUSB0"          # or tcp = "192.168.1.60:8899", a serial server
//! baud = 2400                    # 2400 8E1 is the 2007 edition's default
//! parity = "even"
//! poll = "60s"
//! timeout = "2s"
//! delay = "100ms"
//!
//!   [[dlt645.meter]]
//!   address = "000012345678"     # the twelve digits on the nameplate
//!   meter = "main"               # the [[meter]] it feeds
//!   readings = ["energy_active_import_kwh", "voltage_a_v", "power_active_kw"]
//!
//!   [[dlt645.meter.identifier]]  # any other identifier, with its format
//!   id = "02800008"
//!   signal = "clock_battery_v"
//!   format = "XX.XX"
//! ```
//!
//! The bus keys are [`crate::source::meterbus::config::Bus`]'s, read beside this section's
//! own (see `config::composite`).

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::DeTable;

use super::data::{self, Format};
use super::frame::{Address, DataId, Edition};
use crate::config::{Checker, Composite, References, Seg, composite, key};
use crate::model::{Carrier, SignalType};
use crate::source::meterbus::config::{
    Bus, BusEntry, check_accounted, check_bus, check_carrier, meter_path, parsed,
};

/// `[[dlt645]]`: one RS-485 bus (or serial server) of DL/T 645 meters.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self")]
pub struct Dlt645Bus {
    /// Bus id for logs.
    pub id: String,
    /// The port and the line settings: `port` or `tcp`, `baud`, `data_bits`, `parity`,
    /// `stop_bits`, `poll`, `timeout`, `delay`, at the top level of `[[dlt645]]`.
    #[serde(skip)]
    pub bus: Bus,
    /// The meters on the bus.
    #[serde(default, rename = "meter")]
    pub meters: Vec<Dlt645Meter>,
}

impl Composite for Dlt645Bus {
    type Shared = Bus;
    fn own<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Dlt645Bus::deserialize(d)
    }
    fn with_shared(self, bus: Bus) -> Self {
        Dlt645Bus { bus, ..self }
    }
}

impl<'de> Deserialize<'de> for Dlt645Bus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        composite::deserialize(d)
    }
}

/// `[[dlt645.meter]]`: one meter on the bus.
#[derive(Debug, Clone, Deserialize)]
pub struct Dlt645Meter {
    /// The meter's communication address: the twelve digits on its nameplate (通信地址, often
    /// the serial number's last twelve), leading zeros may be left off. `shopfloor probe`
    /// reads it from a meter alone on the bus.
    #[serde(deserialize_with = "address")]
    pub address: Address,
    /// The `[[meter]]` the readings go to; also the device name in the health lines.
    pub meter: String,
    /// `"2007"` (default) or `"1997"`: which edition's identifiers `readings` names.
    #[serde(default, deserialize_with = "edition")]
    pub edition: Option<Edition>,
    /// The common readings by name (`energy_active_import_kwh`, `voltage_a_v`, …; see the
    /// README's table) or by identifier (`"00010000"`, `"9010"`) when the table knows it.
    /// Default: forward active energy.
    #[serde(default = "default_readings")]
    pub readings: Vec<String>,
    /// Identifiers the table does not know, each with its format.
    #[serde(default, rename = "identifier")]
    pub identifiers: Vec<RawIdentifier>,
}

/// `[[dlt645.meter.identifier]]`: an identifier from the meter's manual.
#[derive(Debug, Clone, Deserialize)]
pub struct RawIdentifier {
    /// Eight hex digits (2007) or four (1997), as the standard's tables print it.
    #[serde(deserialize_with = "data_id")]
    pub id: DataId,
    /// The signal the value becomes.
    pub signal: String,
    /// The value's format as the standard writes it: `XXXXXX.XX` is four bytes with two
    /// decimals; the digits count must be even.
    #[serde(deserialize_with = "format")]
    pub format: (u8, u8),
    /// The highest bit is the sign (currents, powers, power factors).
    #[serde(default)]
    pub signed: bool,
}

fn default_readings() -> Vec<String> {
    vec!["energy_active_import_kwh".to_string()]
}

fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    parsed(d, Address::parse)
}

fn data_id<'de, D: Deserializer<'de>>(d: D) -> Result<DataId, D::Error> {
    parsed(d, DataId::parse)
}

fn edition<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Edition>, D::Error> {
    parsed(d, |text| match text.trim() {
        "2007" => Ok(Edition::V2007),
        "1997" => Ok(Edition::V1997),
        other => Err(format!(
            "edition {other:?}: \"2007\" (DL/T 645-2007) or \"1997\" (DL/T 645-1997)"
        )),
    })
    .map(Some)
}

/// `XXXXXX.XX` → (4 bytes, 2 decimals).
fn format<'de, D: Deserializer<'de>>(d: D) -> Result<(u8, u8), D::Error> {
    parsed(d, parse_format)
}

pub fn parse_format(text: &str) -> Result<(u8, u8), String> {
    let bad = || {
        format!(
            "format {text:?}: write the standard's pattern, an even number of X with a point \
             where the decimals start (XXXXXX.XX, XXX.X, XX.XXXX), at most 16 digits"
        )
    };
    let (whole, decimals) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let x = |s: &str| s.chars().all(|c| c == 'X');
    let digits = whole.len() + decimals.len();
    if !x(whole) || !x(decimals) || digits == 0 || digits % 2 != 0 || digits > 16 {
        return Err(bad());
    }
    Ok(((digits / 2) as u8, decimals.len() as u8))
}

/// One value a meter is asked for: its identifier, the signal it becomes and how it is packed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub id: DataId,
    pub signal: String,
    pub format: Format,
}

impl Dlt645Meter {
    pub fn edition(&self) -> Edition {
        self.edition.unwrap_or(Edition::V2007)
    }

    /// The readings to ask for, in order, or what is wrong with each: (index into
    /// `readings`, message).
    pub fn plan(&self) -> (Vec<Reading>, Vec<(usize, String)>) {
        let edition = self.edition();
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (n, name) in self.readings.iter().enumerate() {
            let by_name = data::IDENTIFIERS
                .iter()
                .find(|i| i.signal == name && i.id.edition() == edition);
            let by_id = DataId::parse(name).ok().and_then(data::identifier);
            match by_name.or(by_id) {
                Some(i) => out.push(Reading {
                    id: i.id,
                    signal: i.signal.to_string(),
                    format: i.format,
                }),
                None => problems.push((n, unknown_reading(name, edition))),
            }
        }
        for raw in &self.identifiers {
            out.push(Reading {
                id: raw.id,
                signal: raw.signal.clone(),
                format: Format::new(raw.format.0, raw.format.1, raw.signed),
            });
        }
        (out, problems)
    }
}

fn unknown_reading(name: &str, edition: Edition) -> String {
    let known: Vec<&str> = data::IDENTIFIERS
        .iter()
        .filter(|i| i.id.edition() == edition)
        .map(|i| i.signal)
        .collect();
    let hint = crate::config::suggest(name, &known)
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    format!(
        "reading `{name}` is not a common {edition} identifier: {hint}name one of {}, or \
         give it as a [[dlt645.meter.identifier]] with its format",
        known.join(", ")
    )
}

impl crate::config::Section for Dlt645Bus {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        use crate::config::struct_fields;
        match path {
            [] => composite::fields::<Dlt645Bus>(),
            ["meter"] => struct_fields::<Dlt645Meter>(),
            ["meter", "identifier"] => struct_fields::<RawIdentifier>(),
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

/// `[[dlt645]]`'s row in the section table: the bus, each meter in the register, each reading
/// known (or given with its format), one edition per meter, each signal once and a float.
pub(crate) fn check_buses(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    buses: &mut [Dlt645Bus],
    refs: &References<'_>,
) {
    for (i, bus) in at.iter().zip(buses.iter()) {
        let entry = BusEntry {
            section: "dlt645",
            index: *i,
            id: &bus.id,
            bus: &bus.bus,
            meters: bus.meters.iter().map(|m| m.meter.as_str()).collect(),
        };
        check_bus(checker, root, entry, &refs.meters);
        for (n, meter) in bus.meters.iter().enumerate() {
            let here = |rel: &[Seg]| meter_path("dlt645", *i, n, rel);
            let (plan, problems) = meter.plan();
            for (r, message) in problems {
                let span = checker.span_of(root, &here(&[key("readings"), Seg::Index(r)]));
                checker.push(span, message);
            }
            for (r, raw) in meter.identifiers.iter().enumerate() {
                if raw.id.edition() != meter.edition() && meter.edition.is_some() {
                    let span = checker
                        .span_of(root, &here(&[key("identifier"), Seg::Index(r), key("id")]));
                    checker.push(
                        span,
                        format!(
                            "identifier {} is {}, the meter is set to {}",
                            raw.id,
                            raw.id.edition(),
                            meter.edition()
                        ),
                    );
                }
            }
            let mut seen = std::collections::HashSet::new();
            for reading in &plan {
                let span = checker.span_of(root, &here(&[key("readings")]));
                if !seen.insert(reading.signal.as_str()) {
                    checker.push(
                        span,
                        format!(
                            "signal `{}` is read twice from meter {}",
                            reading.signal, meter.address
                        ),
                    );
                    continue;
                }
                let what = || format!("[[dlt645.meter]] {}", meter.address);
                if let Some(clash) =
                    checker.signal_type_clash(&reading.signal, SignalType::Float, what)
                {
                    checker.push(span, clash);
                }
            }
            check_carrier(
                checker,
                root,
                refs,
                &meter.meter,
                &[Carrier::Electricity],
                "DL/T 645 meter",
                &here(&[key("meter")]),
            );
            let reads = |signal: &str| plan.iter().any(|r| r.signal == signal);
            check_accounted(
                checker,
                root,
                refs,
                &meter.meter,
                &reads,
                "a common identifier's name, or a [[dlt645.meter.identifier]]",
                &here(&[key("meter")]),
            );
        }
    }
}

/// What the bus's meters deliver, for the check that every signal a `[[meter]]` names comes
/// from somewhere.
pub(crate) fn deliveries(bus: &Dlt645Bus, out: &mut crate::config::Deliveries) {
    for meter in &bus.meters {
        for reading in meter.plan().0 {
            out.signal(crate::config::To::Meter(&meter.meter), &reading.signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_as_the_standard_prints_them() {
        assert_eq!(parse_format("XXXXXX.XX"), Ok((4, 2)));
        assert_eq!(parse_format("XXX.X"), Ok((2, 1)));
        assert_eq!(parse_format("XXXX"), Ok((2, 0)));
        for bad in ["XXX", "XX.X", "", "NN.NN", "X".repeat(18).as_str()] {
            assert!(parse_format(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn readings_are_found_by_name_in_the_meters_edition_or_by_identifier() {
        let meter = |edition: Option<Edition>, readings: &[&str]| Dlt645Meter {
            address: Address::parse("1").unwrap(),
            meter: "m".into(),
            edition,
            readings: readings.iter().map(|s| s.to_string()).collect(),
            identifiers: vec![],
        };
        let (plan, problems) = meter(
            None,
            &["energy_active_import_kwh", "02010100", "voltag_a_v"],
        )
        .plan();
        assert_eq!(plan[0].id, DataId::V2007(0x0001_0000));
        assert_eq!(plan[1].signal, "voltage_a_v");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].1.contains("did you mean `voltage_a_v`"),
            "{problems:?}"
        );
        // The same name in a 1997 meter is the 1997 identifier.
        let (plan, _) = meter(Some(Edition::V1997), &["energy_active_import_kwh"]).plan();
        assert_eq!(plan[0].id, DataId::V1997(0x9010));
    }
}
