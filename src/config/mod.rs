//! Configuration: the generic part of reading the TOML files Shopfloor reads, and the register.
//!
//! Each section's types and checks live beside the code that uses them (`source/modbus/config.rs`,
//! `engine/config.rs`, `sink/config.rs`, `web/config.rs`); the agent's whole-file `Config` and
//! its one table of sections are in `agent::config`. Here: the reading with positions
//! ([`Checker`]), [`Diagnostics`], did-you-mean, durations, [`Secret`], the section mechanism
//! and the register (`[site]`, `[[machine]]`, `[[meter]]`) that the other sections refer to.
//! Loading never stops at the first mistake: every problem is reported with file, line and
//! column.

mod deliveries;
mod load;
mod register;
mod secret;
mod section;

pub(crate) mod composite;

pub(crate) use composite::Composite;
pub(crate) use deliveries::{Deliveries, To, Verdict};
pub(crate) use load::{
    Checker, SecretOf, Seg, check_document, check_document_in, check_document_resolving,
    check_document_warned, host_port_problem, join, key, key_names, load_file, not_registered,
    raw_ids, span_in, struct_fields, suggest, unknown_meter,
};
pub use load::{Diagnostics, Problem, Secrets};
pub(crate) use register::{check_machines, check_meters, check_site};
pub use secret::{Secret, SecretError};
pub(crate) use section::{CheckMany, CheckOne, References, Section, sections, unchecked};

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::model::{Carrier, Sector};

/// `[site]`
#[derive(Debug, Clone, Deserialize)]
pub struct Site {
    /// County code or name, the first tag on every line (e.g. `"wuyi"`).
    pub county: String,
    /// The enterprise's sector in the programme.
    pub sector: Sector,
    /// The enterprise's id, unique in the county (e.g. its unified social credit code).
    pub enterprise: String,
    /// The enterprise's name, for people.
    #[serde(default)]
    pub name: String,
    /// IANA time zone for shift, day and month boundaries. Timestamps stay UTC.
    #[serde(default = "default_timezone", deserialize_with = "timezone")]
    pub timezone: String,
}

impl Default for Site {
    fn default() -> Self {
        Site {
            county: String::new(),
            sector: Sector::Other,
            enterprise: String::new(),
            name: String::new(),
            timezone: default_timezone(),
        }
    }
}

/// An IANA time zone name that the time zone database knows. Read as a type, not checked
/// afterwards, so that a misspelt zone is reported even when another key of `[site]` is wrong.
fn timezone<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    match jiff::tz::TimeZone::get(&name) {
        Ok(_) => Ok(name),
        Err(_) => Err(serde::de::Error::custom(format!(
            "unknown time zone `{name}`: use an IANA name such as \"Asia/Shanghai\""
        ))),
    }
}

fn default_timezone() -> String {
    "Asia/Shanghai".to_string()
}

/// `[[machine]]`: one production machine in the enterprise's register.
#[derive(Debug, Clone, Deserialize)]
pub struct Machine {
    /// Short id used in tags and references (e.g. `"cnc01"`).
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// What sort of machine (`"machining_centre"`, `"lathe"`, `"press"`, …); state rules can
    /// be chosen by kind. [`ROBOT_KIND`] marks an industrial robot (工业机器人), which the
    /// county counts as a robot in service.
    pub kind: String,
    /// A numerically controlled machine (数控设备): counts toward the CNC rate.
    pub cnc: bool,
    /// A digital machine (数字化设备) that can deliver data. Defaults to `cnc`.
    #[serde(default)]
    pub digital: Option<bool>,
    /// The signal that carries the machine's cumulative count of parts made.
    #[serde(default)]
    pub parts_signal: Option<String>,
    /// The signal that carries the cumulative count of good parts (or use `reject_signal`).
    #[serde(default)]
    pub good_signal: Option<String>,
    /// The signal that carries the cumulative count of rejected parts; good = total − rejects.
    #[serde(default)]
    pub reject_signal: Option<String>,
    /// Ideal cycle time of one part, for effectiveness (performance) and OEE.
    #[serde(default, deserialize_with = "optional_duration")]
    pub ideal_cycle: Option<Duration>,
    /// Value added per good part in CNY, for `[value_added] method = "parts"`. Give it only on
    /// the machine that finishes the product, or parts are counted once per process step.
    #[serde(default)]
    pub value_added_per_part: Option<f64>,
    /// Gross output value per good part in CNY, for `method = "gross_output"`.
    #[serde(default)]
    pub gross_output_per_part: Option<f64>,
}

/// The machine kind of an industrial robot (工业机器人): the agent writes how many machines of
/// this kind its register holds (`fleet` field `machines_robot`), and the county counts them
/// as robots in service instead of the count declared in its register.
pub const ROBOT_KIND: &str = "robot";

impl Machine {
    pub fn is_digital(&self) -> bool {
        self.digital.unwrap_or(self.cnc)
    }

    /// An industrial robot: `kind = "robot"`.
    pub fn is_robot(&self) -> bool {
        self.kind == ROBOT_KIND
    }
}

/// `[[meter]]`: an energy or water meter.
#[derive(Debug, Clone, Deserialize)]
pub struct Meter {
    pub id: String,
    /// What the meter measures.
    pub carrier: Carrier,
    /// `"site"` (default) or the id of the machine the meter belongs to.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// The signal with the meter's reading. Without it the meter's signals are written but no
    /// energy is accounted.
    #[serde(default)]
    pub signal: Option<String>,
    /// Whether `signal` is a cumulative `counter` (kWh, m³, t …) or a rate (`power`: kW, m³/h …)
    /// that is integrated over time.
    #[serde(default)]
    pub reading: Reading,
    /// The unit of the counter (or the unit per hour of a rate). Defaults to the carrier's
    /// usual unit: kWh, m3, t, kg or GJ.
    #[serde(default)]
    pub unit: Option<String>,
    /// The counter's modulus, in `unit`: the count at which it reads zero again, one step
    /// above the largest value it shows (1000000.0 for a register that counts to 999999.99,
    /// 100000000.0 for an 8+1 digit register showing 99999999.9). A falling counter is a
    /// rollover when the consumption that implies is plausible (see `max_rate`), a reset
    /// otherwise; without `rollover` it is always a reset.
    #[serde(default)]
    pub rollover: Option<f64>,
    /// The meter's rated maximum, in `unit` per hour (kW for kWh, m3/h for m3): a wrap that
    /// would imply more than this since the last change of the reading is taken as a reset.
    /// Without it the recent rate (twice it) is the bound.
    #[serde(default)]
    pub max_rate: Option<f64>,
}

/// How a meter's reading is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// A cumulative counter: consumption is the difference between readings.
    #[default]
    Counter,
    /// A rate per hour (kW for electricity): consumption is its integral over time.
    Power,
}

fn default_scope() -> String {
    "site".to_string()
}

impl Section for Site {}
impl Section for Machine {}
impl Section for Meter {}
/// An optional duration.
pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Reads a duration written as `"500ms"`, `"1s"`, `"5m"`, `"2h"` or `"7d"`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl serde::de::Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"500ms\", \"10s\" or \"5m\"")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit: write \"{n}s\" for seconds or \"{n}ms\" for milliseconds"
            )))
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit: write \"{n}s\" for seconds"
            )))
        }
    }
    d.deserialize_any(DurationVisitor)
}

/// Parses `"<number><unit>"` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        format!("`{text}` is not a duration: write a number and a unit, like \"500ms\", \"10s\" or \"5m\"")
    })?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        "" => {
            return Err(format!(
                "`{text}` has no unit: write \"{text}s\" for seconds"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m, h or d"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("10 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("fast")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
