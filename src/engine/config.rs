//! The engine's sections: `[[state_rules]]`, `[calendar]`, `[energy]`, `[value_added]` and
//! `[green]`, and their checks.

use std::path::PathBuf;
use std::time::Duration;

use jiff::civil::Date;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::{
    Checker, Machine, Meter, References, Section, Seg, Site, duration, join, key, not_registered,
    optional_duration, span_in, struct_fields,
};
use crate::model::{Carrier, State};

/// The engine's sections of the config: what it takes from the whole file.
#[derive(Debug, Clone)]
pub struct Sections<'a> {
    pub site: &'a Site,
    pub agent: &'a Agent,
    pub machines: &'a [Machine],
    pub meters: &'a [Meter],
    pub state_rules: &'a [StateRules],
    pub calendar: &'a Calendar,
    pub energy: &'a EnergyConfig,
    pub value_added: &'a ValueAdded,
    pub green: &'a Green,
    /// The ids of the devices (Modbus devices, then MQTT brokers) whose health is shown.
    pub devices: Vec<&'a str>,
}

/// `[agent]`
#[derive(Debug, Clone, Deserialize)]
pub struct Agent {
    /// Where the spool and the engine's saved state live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A machine with no valid data for this long becomes `offline`.
    #[serde(default = "default_offline_after", deserialize_with = "duration")]
    pub offline_after: Duration,
    /// A `machine_state` line is repeated this often even without a change, so a dashboard's
    /// "last value" query always finds one.
    #[serde(default = "default_heartbeat", deserialize_with = "duration")]
    pub heartbeat: Duration,
    /// Open window totals (`machine_time`, `fleet`, `energy`, `green`) are rewritten this
    /// often, and the engine's accumulators saved to the data directory.
    #[serde(default = "default_window_flush", deserialize_with = "duration")]
    pub window_flush: Duration,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            data_dir: default_data_dir(),
            offline_after: default_offline_after(),
            heartbeat: default_heartbeat(),
            window_flush: default_window_flush(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/shopfloor")
}
fn default_offline_after() -> Duration {
    Duration::from_secs(10)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(60)
}
fn default_window_flush() -> Duration {
    Duration::from_secs(60)
}

impl Section for Agent {}

/// `[[state_rules]]`: an ordered list of rules for some machines. The first rule whose
/// conditions all hold gives the state; when none holds, `default` does.
///
/// A rule set applies to the machines it names in `machines`, else to the machines whose kind it
/// names in `kinds`; a rule set naming neither applies to every other machine. A machine id
/// beats a kind, which beats the catch-all.
///
/// `C` is the condition: [`Condition`] in a loaded config; the section is first read with the
/// conditions as written, so that one condition without its operand is reported where it is and
/// does not hide the set's other mistakes (see the [`Section`] impl).
#[derive(Debug, Clone, Deserialize)]
pub struct StateRules<C = Condition> {
    #[serde(default)]
    pub machines: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The state when no rule holds.
    #[serde(default = "default_state")]
    pub default: State,
    /// A new state must hold this long before it is taken, against flapping signals.
    #[serde(default, deserialize_with = "duration")]
    pub min_duration: Duration,
    #[serde(default = "Vec::new", rename = "rule")]
    pub rules: Vec<Rule<C>>,
}

fn default_state() -> State {
    State::Idle
}

/// `[[state_rules.rule]]`
#[derive(Debug, Clone, Deserialize)]
pub struct Rule<C = Condition> {
    pub state: State,
    /// Conditions that must all hold.
    pub when: Vec<C>,
}

/// One condition on a signal. Booleans compare as 0 and 1.
///
/// - `{ signal = "spindle_rpm", op = ">", value = 0 }`: a comparison (`==`, `!=`, `>`, `>=`,
///   `<`, `<=`);
/// - `{ signal = "load_pct", op = "between", min = 5, max = 95 }`: a closed range;
/// - `{ signal = "status_word", op = "bit_set", bit = 3 }` (or `bit_clear`): one bit of an
///   integer;
/// - `{ signal = "parts", op = "changed_within", within = "90s" }`: the signal's value changed
///   within the given time before the sample, the usual way to tell a machine is producing from
///   its part counter alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub signal: String,
    /// What the operator tests, with exactly the operands it needs.
    pub test: Test,
}

/// The test a condition's operator makes on the signal's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    /// `==`, `!=`, `>`, `>=`, `<`, `<=` against a value.
    Compare(Compare, f64),
    /// `between`: `min` ≤ value ≤ `max`.
    Between { min: f64, max: f64 },
    /// `bit_set`: bit `n` (0–63) of an integer value is 1.
    BitSet(Bit),
    /// `bit_clear`: bit `n` of an integer value is 0.
    BitClear(Bit),
    /// `changed_within`: the value changed within this time before the evaluation.
    ChangedWithin(Duration),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Compare {
    /// Whether `x <op> value` holds.
    pub fn holds(self, x: f64, value: f64) -> bool {
        match self {
            Compare::Eq => x == value,
            Compare::Ne => x != value,
            Compare::Gt => x > value,
            Compare::Ge => x >= value,
            Compare::Lt => x < value,
            Compare::Le => x <= value,
        }
    }
}

/// A bit of a 64-bit integer: 0–63.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bit(u8);

impl Bit {
    pub fn new(n: u8) -> Option<Bit> {
        (n < 64).then_some(Bit(n))
    }

    /// Whether this bit of `x`, a whole number, is `set`.
    pub fn is(self, x: f64, set: bool) -> bool {
        x.fract() == 0.0 && ((x as i64 >> self.0) & 1 == 1) == set
    }
}

/// A condition as written: the operator and whichever operands were given.
#[derive(Debug, Clone, Deserialize)]
struct RawCondition {
    signal: String,
    op: Op,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    bit: Option<u8>,
    #[serde(default, deserialize_with = "optional_duration")]
    within: Option<Duration>,
}

impl TryFrom<RawCondition> for Condition {
    type Error = String;

    fn try_from(raw: RawCondition) -> Result<Condition, String> {
        let compare = |c: Compare| raw.value.map(|v| Test::Compare(c, v));
        let test = match raw.op {
            Op::Between => raw
                .min
                .zip(raw.max)
                .map(|(min, max)| Test::Between { min, max }),
            Op::BitSet => raw.bit.and_then(Bit::new).map(Test::BitSet),
            Op::BitClear => raw.bit.and_then(Bit::new).map(Test::BitClear),
            Op::ChangedWithin => raw.within.map(Test::ChangedWithin),
            Op::Eq => compare(Compare::Eq),
            Op::Ne => compare(Compare::Ne),
            Op::Gt => compare(Compare::Gt),
            Op::Ge => compare(Compare::Ge),
            Op::Lt => compare(Compare::Lt),
            Op::Le => compare(Compare::Le),
        };
        let what = match raw.op {
            Op::Between => "`min` and `max`",
            Op::BitSet | Op::BitClear => "`bit` (0–63)",
            Op::ChangedWithin => "`within` (a duration)",
            _ => "`value`",
        };
        match test {
            Some(test) => Ok(Condition {
                signal: raw.signal,
                test,
            }),
            None => Err(format!(
                "condition on `{}` with op {:?} needs {what}",
                raw.signal, raw.op
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Condition {
    /// A `RawCondition` made into a condition inside the table's own visit, so that an error
    /// points at the condition rather than at the list it is in.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Condition, D::Error> {
        struct ConditionVisitor;
        impl<'de> serde::de::Visitor<'de> for ConditionVisitor {
            type Value = Condition;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("struct Condition")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Condition, A::Error> {
                let raw =
                    RawCondition::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Condition::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_struct(
            "Condition",
            struct_fields::<RawCondition>(),
            ConditionVisitor,
        )
    }
}

/// The operators as written in `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Op {
    #[serde(rename = "between")]
    Between,
    #[serde(rename = "bit_set")]
    BitSet,
    #[serde(rename = "bit_clear")]
    BitClear,
    #[serde(rename = "changed_within")]
    ChangedWithin,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

/// `[calendar]`: when the enterprise plans to work. Without any shift every hour is planned
/// busy time (a 24/7 plant).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Calendar {
    #[serde(default, rename = "shift")]
    pub shifts: Vec<Shift>,
    /// Dates (local, `"2026-10-01"`) without any shift: public holidays, plant closures.
    #[serde(default)]
    pub holidays: Vec<jiff::civil::Date>,
    /// Dates that are worked with Monday's shifts although their weekday has none (the make-up
    /// working days of Chinese public holidays, 调休).
    #[serde(default)]
    pub workdays: Vec<jiff::civil::Date>,
    /// Planned maintenance: planned downtime, not counted in planned busy time.
    #[serde(default, rename = "maintenance")]
    pub maintenance: Vec<Maintenance>,
}

/// `[[calendar.shift]]`
#[derive(Debug, Clone, Deserialize)]
pub struct Shift {
    /// Shift name, the `shift` tag of shift windows (e.g. `"day"`, `"night"`).
    pub name: String,
    /// Weekdays the shift starts on: `"mon"` … `"sun"`.
    pub days: Vec<Weekday>,
    /// Local start time, `"08:00"`.
    pub start: jiff::civil::Time,
    /// Local end time; an end at or before the start means the shift ends the next day.
    pub end: jiff::civil::Time,
    /// Breaks inside the shift: not planned operation time.
    #[serde(default)]
    pub breaks: Vec<Break>,
}

/// A break, `{ start = "12:00", end = "12:30" }`, in local time.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Break {
    pub start: jiff::civil::Time,
    pub end: jiff::civil::Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub fn to_jiff(self) -> jiff::civil::Weekday {
        match self {
            Weekday::Mon => jiff::civil::Weekday::Monday,
            Weekday::Tue => jiff::civil::Weekday::Tuesday,
            Weekday::Wed => jiff::civil::Weekday::Wednesday,
            Weekday::Thu => jiff::civil::Weekday::Thursday,
            Weekday::Fri => jiff::civil::Weekday::Friday,
            Weekday::Sat => jiff::civil::Weekday::Saturday,
            Weekday::Sun => jiff::civil::Weekday::Sunday,
        }
    }
}

/// `[[calendar.maintenance]]`: a planned maintenance window in local time.
#[derive(Debug, Clone, Deserialize)]
pub struct Maintenance {
    /// Machines under maintenance; empty means all.
    #[serde(default)]
    pub machines: Vec<String>,
    pub start: jiff::civil::DateTime,
    pub end: jiff::civil::DateTime,
    #[serde(default)]
    pub reason: String,
}

/// `[energy]`
#[derive(Debug, Clone, Deserialize)]
pub struct EnergyConfig {
    /// How electricity becomes standard coal: `calorific` (当量值, 0.1229 kgce/kWh, the
    /// default) or `equivalent` (等价值, the coal burnt to generate a kWh).
    #[serde(default)]
    pub electricity_method: ElectricityMethod,
    /// kgce per kWh under the equivalent method: the year's published coal consumption of
    /// thermal power supply.
    #[serde(default = "default_equivalent")]
    pub electricity_equivalent_kgce_per_kwh: f64,
    /// Site-specific coefficients in kgce per unit, e.g. `{ natural_gas = 1.1 }` for a gas
    /// whose measured calorific value is known; the GB/T 2589-2020 table is the default.
    #[serde(default)]
    pub kgce_per_unit: std::collections::BTreeMap<Carrier, f64>,
    /// Readings of a counter further apart than this are a gap: the consumption across it is
    /// spread evenly over the gap and the gap is reported.
    #[serde(default = "default_meter_gap", deserialize_with = "duration")]
    pub max_gap: Duration,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        EnergyConfig {
            electricity_method: ElectricityMethod::default(),
            electricity_equivalent_kgce_per_kwh: default_equivalent(),
            kgce_per_unit: Default::default(),
            max_gap: default_meter_gap(),
        }
    }
}

fn default_equivalent() -> f64 {
    0.3
}
fn default_meter_gap() -> Duration {
    Duration::from_secs(900)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectricityMethod {
    #[default]
    Calorific,
    Equivalent,
}

impl ElectricityMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ElectricityMethod::Calorific => "calorific",
            ElectricityMethod::Equivalent => "equivalent",
        }
    }
}

/// `[value_added]`: value added (工业增加值) is an estimate at the edge, always written with its
/// method.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ValueAdded {
    /// Where value added comes from. Unset, it is `parts` when a machine has
    /// `value_added_per_part`, else `none` (the check settles it; read it with
    /// [`ValueAdded::method`]).
    #[serde(default)]
    pub method: Option<ValueAddedMethod>,
    /// For `gross_output`: value added as a share of gross output (e.g. 0.22).
    #[serde(default)]
    pub rate: Option<f64>,
    /// For `declared`: figures for periods, `{ period = "2026-11", value_10k_cny = 850.0 }`
    /// (a month) or `{ period = "2026-11-30", value_10k_cny = 30.5 }` (a day).
    #[serde(default)]
    pub declared: Vec<Declared>,
    /// For `declared`: a file of `[[declared]]` entries in the same form, re-read when it
    /// changes, so the finance office can drop in figures without touching the config; the
    /// board's `POST /api/value-added` writes here too. Default `<data_dir>/value-added.toml`.
    #[serde(default)]
    pub declared_file: Option<PathBuf>,
}

impl ValueAdded {
    /// The method in force: as configured, or as the check settled an unset one; `none`
    /// before the check.
    pub fn method(&self) -> ValueAddedMethod {
        self.method.unwrap_or(ValueAddedMethod::NoSource)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueAddedMethod {
    /// No value-added source (a meter-only site): value added and the intensities are not
    /// measured, never 0.
    #[serde(rename = "none")]
    NoSource,
    /// Good parts × each machine's `value_added_per_part`.
    Parts,
    /// Good parts × `gross_output_per_part` × `rate`.
    GrossOutput,
    /// Figures declared per period.
    Declared,
}

impl ValueAddedMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueAddedMethod::NoSource => "none",
            ValueAddedMethod::Parts => "parts",
            ValueAddedMethod::GrossOutput => "gross_output",
            ValueAddedMethod::Declared => "declared",
        }
    }
}

/// A declared value added for a month (`"2026-11"`) or a day (`"2026-11-30"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Declared {
    pub period: String,
    pub value_10k_cny: f64,
}

/// `[green]`: limits that raise an alert when a closed window exceeds them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Green {
    /// Energy intensity limit, tce per 10k CNY of value added (e.g. the year's target 0.43).
    #[serde(default)]
    pub tce_per_10k_cny_limit: Option<f64>,
    /// Water intensity limit, t per 10k CNY.
    #[serde(default)]
    pub water_t_per_10k_cny_limit: Option<f64>,
    /// Wastewater intensity limit, t per 10k CNY (the programme's target: 3.8 in 2022).
    #[serde(default)]
    pub wastewater_t_per_10k_cny_limit: Option<f64>,
}

/// A period a value added is declared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Month { year: i16, month: i8 },
    Day(Date),
}

/// `"2026-11"` is a month, `"2026-11-30"` a day.
pub fn parse_period(text: &str) -> Option<Period> {
    let text = text.trim();
    if let Ok(day) = text.parse::<Date>() {
        return Some(Period::Day(day));
    }
    let (y, m) = text.split_once('-')?;
    let (year, month) = (y.parse::<i16>().ok()?, m.parse::<i8>().ok()?);
    // Validates the month: the first of it must exist.
    Date::new(year, month, 1).ok()?;
    Some(Period::Month { year, month })
}

/// Whether a break lies inside its shift (both read on the shift's own 24-hour clock).
pub fn break_within(shift: &Shift, b: &Break) -> bool {
    let day = 86_400;
    let since_start = |t: jiff::civil::Time| (secs(t) - secs(shift.start)).rem_euclid(day);
    let length = match since_start(shift.end) {
        0 => day,
        n => n,
    };
    let (bs, be) = (since_start(b.start), since_start(b.end));
    let be = if be == 0 { day } else { be };
    bs < be && be <= length
}

fn secs(t: jiff::civil::Time) -> i64 {
    i64::from(t.hour()) * 3600 + i64::from(t.minute()) * 60 + i64::from(t.second())
}

impl Checker<'_> {
    /// Shifts, breaks and maintenance windows that the time model can use.
    fn calendar(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        calendar: &Calendar,
        refs: &References<'_>,
    ) {
        for (i, shift) in calendar.shifts.iter().enumerate() {
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
                if !break_within(shift, b) {
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
        for (i, m) in calendar.maintenance.iter().enumerate() {
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
    }

    fn energy(&mut self, root: &Spanned<DeTable<'_>>, energy: &EnergyConfig) {
        for (carrier, factor) in &energy.kgce_per_unit {
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
    }

    /// What the chosen value-added method needs from the register.
    fn value_added(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        va: &mut ValueAdded,
        refs: &References<'_>,
    ) {
        let va_at = |s: &Self, k: &str| s.span_of(root, &[key("value_added"), key(k)]);
        // Unset: value added by parts where the register prices parts, else no source (a
        // meter-only site), so an absent table asks for nothing.
        let Some(method) = va.method else {
            let priced = refs
                .machine_list
                .iter()
                .any(|m| m.value_added_per_part.is_some());
            va.method = Some(if priced {
                ValueAddedMethod::Parts
            } else {
                ValueAddedMethod::NoSource
            });
            self.value_added_declared(root, va);
            return;
        };
        match method {
            ValueAddedMethod::NoSource => {}
            ValueAddedMethod::Parts => {
                let any = refs
                    .machine_list
                    .iter()
                    .any(|m| m.value_added_per_part.is_some());
                if !any && refs.meter_list.iter().any(|m| m.signal.is_some()) {
                    let span = va_at(self, "method");
                    self.push(span, "value added by parts needs `value_added_per_part` on the machine that finishes the product (or choose method = \"declared\", or \"none\" for no value-added source)".to_string());
                }
            }
            ValueAddedMethod::GrossOutput => {
                if !va.rate.is_some_and(|r| r > 0.0 && r <= 1.0) {
                    let span = va_at(self, "rate");
                    self.push(span, "method = \"gross_output\" needs `rate`, the value-added share of gross output, between 0 and 1".to_string());
                }
                if !refs
                    .machine_list
                    .iter()
                    .any(|m| m.gross_output_per_part.is_some())
                {
                    let span = va_at(self, "method");
                    self.push(span, "method = \"gross_output\" needs `gross_output_per_part` on the machine that finishes the product".to_string());
                }
            }
            // Declared figures may arrive later, in the file or through the board's API.
            ValueAddedMethod::Declared => {}
        }
        self.value_added_declared(root, va);
    }

    /// The declared figures' periods.
    fn value_added_declared(&mut self, root: &Spanned<DeTable<'_>>, va: &ValueAdded) {
        for (i, d) in va.declared.iter().enumerate() {
            if parse_period(&d.period).is_none() {
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
    }
}

impl Section for StateRules {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        match path {
            [] => struct_fields::<StateRules>(),
            ["rule"] => struct_fields::<Rule>(),
            ["rule", "when"] => struct_fields::<Condition>(),
            _ => &[],
        }
    }

    /// Reads the set with its conditions as written, then makes each a [`Condition`]: one that
    /// lacks what its operator needs is reported at its own place and left out, and the set's
    /// other mistakes (an unregistered machine, a misspelt kind, the next condition) are still
    /// found. The config does not load while any problem stands.
    fn read(
        checker: &mut Checker<'_>,
        value: &Spanned<DeValue<'_>>,
        path: Vec<Seg>,
    ) -> Option<Self> {
        let written: StateRules<RawCondition> = checker.section(value, path)?;
        let mut rules = Vec::with_capacity(written.rules.len());
        for (j, rule) in written.rules.into_iter().enumerate() {
            let mut when = Vec::with_capacity(rule.when.len());
            for (k, raw) in rule.when.into_iter().enumerate() {
                match Condition::try_from(raw) {
                    Ok(condition) => when.push(condition),
                    Err(message) => {
                        let at = [key("rule"), Seg::Index(j), key("when"), Seg::Index(k)];
                        checker.push(span_in(value, &at), message);
                    }
                }
            }
            rules.push(Rule {
                state: rule.state,
                when,
            });
        }
        Some(StateRules {
            machines: written.machines,
            kinds: written.kinds,
            default: written.default,
            min_duration: written.min_duration,
            rules,
        })
    }
}
impl Section for Calendar {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        match path {
            [] => struct_fields::<Calendar>(),
            ["shift"] => struct_fields::<Shift>(),
            ["shift", "breaks"] => struct_fields::<Break>(),
            ["maintenance"] => struct_fields::<Maintenance>(),
            _ => &[],
        }
    }
}
impl Section for EnergyConfig {}
impl Section for ValueAdded {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        match path {
            [] => struct_fields::<ValueAdded>(),
            ["declared"] => struct_fields::<Declared>(),
            _ => &[],
        }
    }
}
impl Section for Green {}

/// `[[state_rules]]`'s row in the section table: the machines and kinds named are registered.
/// (A condition without what its operator needs is reported as the section is read.)
pub(crate) fn check_state_rules(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    rule_sets: &mut [StateRules],
    refs: &References<'_>,
) {
    for (i, rules) in at.iter().zip(rule_sets.iter()) {
        let base = vec![key("state_rules"), Seg::Index(*i)];
        for (j, machine) in rules.machines.iter().enumerate() {
            if !refs.machines.contains(machine.as_str()) {
                let at = checker.span_of(root, &join(&base, &[key("machines"), Seg::Index(j)]));
                checker.push(at, not_registered("state rules name machine", machine));
            }
        }
        for (j, kind) in rules.kinds.iter().enumerate() {
            if !refs.kinds.contains(kind.as_str()) {
                let at = checker.span_of(root, &join(&base, &[key("kinds"), Seg::Index(j)]));
                checker.push(
                    at,
                    format!("no registered machine has kind `{kind}`; check the spelling against the [[machine]] kinds"),
                );
            }
        }
    }
}

/// `[calendar]`'s row.
pub(crate) fn check_calendar(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    calendar: &mut Calendar,
    refs: &References<'_>,
) {
    checker.calendar(root, calendar, refs);
}

/// `[energy]`'s row.
pub(crate) fn check_energy(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    energy: &mut EnergyConfig,
    _: &References<'_>,
) {
    checker.energy(root, energy);
}

/// `[value_added]`'s row.
pub(crate) fn check_value_added(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    va: &mut ValueAdded,
    refs: &References<'_>,
) {
    checker.value_added(root, va, refs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::load_str;

    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n";

    fn conditions(when: &str) -> Result<Vec<Condition>, crate::config::Diagnostics> {
        let text =
            format!("{SITE}[[state_rules]]\nrule = [{{ state = \"running\", when = [{when}] }}]\n");
        load_str(&text, "t.toml").map(|c| c.state_rules[0].rules[0].when.clone())
    }

    #[test]
    fn each_operator_takes_exactly_its_operands() {
        let got = conditions(
            r#"{ signal = "a", op = ">=", value = 2 }, { signal = "b", op = "between", min = 5, max = 95 },
               { signal = "c", op = "bit_clear", bit = 63 }, { signal = "d", op = "changed_within", within = "90s" }"#,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let tests: Vec<Test> = got.iter().map(|c| c.test).collect();
        assert_eq!(
            tests,
            vec![
                Test::Compare(Compare::Ge, 2.0),
                Test::Between {
                    min: 5.0,
                    max: 95.0
                },
                Test::BitClear(Bit::new(63).unwrap()),
                Test::ChangedWithin(Duration::from_secs(90)),
            ]
        );
    }

    #[test]
    fn a_condition_without_its_operands_is_reported_where_it_is_written() {
        for (when, needs) in [
            (r#"{ signal = "run", op = ">" }"#, "op Gt needs `value`"),
            (
                r#"{ signal = "run", op = "between", min = 1 }"#,
                "op Between needs `min` and `max`",
            ),
            (
                r#"{ signal = "run", op = "bit_set", bit = 64 }"#,
                "op BitSet needs `bit` (0–63)",
            ),
            (
                r#"{ signal = "run", op = "changed_within" }"#,
                "op ChangedWithin needs `within` (a duration)",
            ),
        ] {
            let d = conditions(when).unwrap_err();
            assert_eq!(d.problems.len(), 1, "{d}");
            let p = &d.problems[0];
            // The condition's table on line 6.
            let line = format!("rule = [{{ state = \"running\", when = [{when}] }}]");
            let column = line.find("{ signal").unwrap() + 1;
            assert_eq!((p.line, p.column), (6, column), "{d}");
            assert!(
                p.message
                    .contains(&format!("condition on `run` with {needs}")),
                "{d}"
            );
        }
    }

    const METER: &str = "[[meter]]\nid = \"main\"\ncarrier = \"electricity\"\nsignal = \"kwh\"\n";

    #[test]
    fn without_a_value_added_table_a_meter_only_site_has_no_value_added_source() {
        let c = load_str(&format!("{SITE}{METER}"), "t.toml").unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(c.value_added.method(), ValueAddedMethod::NoSource);
        assert_eq!(c.value_added.method().as_str(), "none");
    }

    #[test]
    fn without_a_method_a_priced_part_means_value_added_by_parts() {
        let machine = "[[machine]]\nid = \"cnc01\"\nkind = \"lathe\"\ncnc = true\nvalue_added_per_part = 5.0\n";
        let c = load_str(&format!("{SITE}{machine}{METER}"), "t.toml")
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(c.value_added.method(), ValueAddedMethod::Parts);
    }

    #[test]
    fn parts_chosen_without_a_priced_part_is_reported_at_the_method() {
        // Line 10, column 10: four lines of [site], four of the meter, the table header, then
        // `method = "parts"`, whose value starts at column 10.
        let text = format!("{SITE}{METER}[value_added]\nmethod = \"parts\"\n");
        let d = load_str(&text, "t.toml").unwrap_err().to_string();
        assert!(
            d.contains("t.toml:10:10: value added by parts needs"),
            "{d}"
        );
        assert!(d.contains("\"none\""), "{d}");
    }
}
