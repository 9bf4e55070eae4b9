//! The shared vocabulary of the pipeline, on the ground floor: what sources deliver ([`Value`],
//! [`Target`], [`Sample`], [`SourceEvent`]), what the engine derives ([`State`]), and the
//! register's words every stage uses ([`Sector`], [`SignalType`]).
//!
//! Plain data with no behaviour beyond naming itself: everything above (config, sources, engine,
//! sinks, county) may import it, and it imports nothing of theirs. The types that a config file
//! names carry serde's `Deserialize`, so the config reads them directly.

use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;

/// A typed signal value as it came from a device, after decoding and scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    /// The value as a number for rule comparisons: booleans are 0 and 1, text has no number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// What a sample describes: a production machine in the register, or an energy or water meter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Machine(Arc<str>),
    Meter(Arc<str>),
}

/// One reading (采集数据) of one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub target: Target,
    pub signal: Arc<str>,
    pub value: Value,
    /// When the source read the value, in UTC.
    pub at: Timestamp,
}

/// What a source tells the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// The values one poll or one message delivered. All share one timestamp per target.
    Samples(Vec<Sample>),
    /// A device answered after having been down (or for the first time).
    DeviceUp { device: Arc<str>, at: Timestamp },
    /// A device stopped answering; `reason` says why in words an engineer can act on.
    DeviceDown {
        device: Arc<str>,
        at: Timestamp,
        reason: String,
    },
    /// A device that answers but delivers nothing: every request it was sent got an exception
    /// (`reason` says which), or, with `None`, it delivers data again.
    DeviceDegraded {
        device: Arc<str>,
        at: Timestamp,
        reason: Option<String>,
    },
    /// The target is gone now, not after `offline_after` of silence: its Last Will arrived, or
    /// a Sparkplug NDEATH/DDEATH. The engine makes a machine offline stamped `at`.
    Offline {
        target: Target,
        at: Timestamp,
        reason: String,
    },
    /// The source still hears the device that feeds these targets at `at`, and their values
    /// have not changed: a report-by-exception source (an OPC UA subscription, a polled read
    /// whose values stand still) says so, so that a machine whose signals hold still is not
    /// taken for silent. A machine offline by silence whose values are known comes back in
    /// the state they imply, stamped `at`; one that has no values yet, or that a source said
    /// is gone (`Offline`), comes back with its next sample.
    Alive { targets: Vec<Target>, at: Timestamp },
    /// One record of a pollution-source outlet's data logger (minute, hourly, daily or
    /// real-time data), from a logger that proved its MN and password.
    Outlet(OutletRecord),
    /// Fields of a device that answers whose reads failed in one poll (an exception, a short
    /// answer, a value that does not decode): they deliver nothing while the device is up. A
    /// field delivers again with its next sample.
    FieldErrors {
        device: Arc<str>,
        at: Timestamp,
        errors: Vec<FieldError>,
    },
}

/// Why one configured field delivered no value in a poll.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub target: Target,
    pub signal: Arc<str>,
    /// `exception`, `short` (the answer held fewer registers than the field needs) or
    /// `decode`: the `kind` label of the per-field error counter.
    pub kind: &'static str,
    /// In words, e.g. "exception: Illegal data address (request holding 900+2)".
    pub error: String,
}

/// One record of an outlet's data logger (数采仪): the values of one data time, each pollutant
/// with its data flag. The source fills in what the protocol says; the engine writes the
/// `outlet` lines, judges the limits and sums the discharge.
#[derive(Debug, Clone, PartialEq)]
pub struct OutletRecord {
    /// The outlet's id (排污口编号).
    pub outlet: Arc<str>,
    /// The outlet's name for the board.
    pub name: Arc<str>,
    /// `wastewater` or `exhaust`.
    pub kind: &'static str,
    /// The data's period.
    pub period: OutletPeriod,
    /// The protocol's command number of the data (HJ 212: 2011, 2051, 2061, 2031).
    pub cn: u16,
    /// The data time (the period's start), in UTC.
    pub at: Timestamp,
    pub values: Vec<OutletValue>,
    /// For a wastewater outlet: the volume discharged in the period, m³ (= t), when the record
    /// carries the flow's total.
    pub discharged_m3: Option<f64>,
}

/// The period of an outlet record's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutletPeriod {
    RealTime,
    Minute,
    Hour,
    Day,
}

impl OutletPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            OutletPeriod::RealTime => "rtd",
            OutletPeriod::Minute => "minute",
            OutletPeriod::Hour => "hour",
            OutletPeriod::Day => "day",
        }
    }
}

/// One pollutant's values in an outlet record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutletValue {
    /// The pollutant's signal name (`cod`, `wastewater_flow`).
    pub pollutant: Arc<str>,
    /// The unit of its concentration or rate (`mg/L`, `L/s`); empty for pH.
    pub unit: Arc<str>,
    pub rtd: Option<f64>,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The total over the period (volume or mass).
    pub cou: Option<f64>,
    /// Exhaust concentrations converted to the reference oxygen content (折算浓度), which
    /// emission limits are stated against: real-time, average, minimum, maximum.
    pub zs_rtd: Option<f64>,
    pub zs_avg: Option<f64>,
    pub zs_min: Option<f64>,
    pub zs_max: Option<f64>,
    /// The data flag as the logger sent it (HJ 212: N, F, M, S, D, C, T, B).
    pub flag: Option<&'static str>,
    /// Whether the value may raise an alert: false when the flag says the analyser was not
    /// measuring the discharge (maintenance, calibration, fault, stopped …).
    pub may_alert: bool,
    /// The concentration limit of this outlet and pollutant, when configured.
    pub limit: Option<f64>,
}

/// Machine states (设备状态) after ISO 22400-2's time model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// 运行: actual production time (APT).
    Running,
    /// 调机: setup and changeover.
    Setup,
    /// 待机: powered, ready, not producing.
    Idle,
    /// 报警: unplanned delay, a fault or alarm.
    Alarm,
    /// 停机: switched off or stopped by the operator.
    Stopped,
    /// 离线: no valid data, the machine or its data path is down.
    Offline,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Running,
        State::Setup,
        State::Idle,
        State::Alarm,
        State::Stopped,
        State::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Setup => "setup",
            State::Idle => "idle",
            State::Alarm => "alarm",
            State::Stopped => "stopped",
            State::Offline => "offline",
        }
    }

    /// The integer written as `machine_state.code`, stable forever: dashboards map colours on it.
    pub fn code(self) -> i64 {
        match self {
            State::Offline => 0,
            State::Running => 1,
            State::Setup => 2,
            State::Idle => 3,
            State::Alarm => 4,
            State::Stopped => 5,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The declared type of an MQTT signal (`type` of a `[[mqtt.topic.field]]`): the type its field
/// keeps in the store forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalType {
    #[default]
    Float,
    Int,
    Bool,
    String,
}

impl SignalType {
    /// For messages: "a float", "an integer", …
    pub fn with_article(self) -> &'static str {
        match self {
            SignalType::Float => "a float",
            SignalType::Int => "an integer",
            SignalType::Bool => "a bool",
            SignalType::String => "a string",
        }
    }
}

/// The programme's seven sectors (行业) of the metal-products industry. Written as the `sector`
/// tag of every line ([`crate::line_protocol::contract::TAG_SECTOR`]) and read back by the county.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Sector {
    /// 门业
    Doors,
    /// 杯业 (vacuum cups)
    Cups,
    /// 炊具
    Cookware,
    /// 电动工具
    PowerTools,
    /// 休闲器具
    Leisure,
    /// 铸造
    Castings,
    Other,
}

impl Sector {
    /// Every sector, in the programme's order.
    pub const ALL: [Sector; 7] = [
        Sector::Doors,
        Sector::Cups,
        Sector::Cookware,
        Sector::PowerTools,
        Sector::Leisure,
        Sector::Castings,
        Sector::Other,
    ];

    /// The sector whose [`Sector::as_str`] is `name`.
    pub fn parse(name: &str) -> Option<Sector> {
        Sector::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sector::Doors => "doors",
            Sector::Cups => "cups",
            Sector::Cookware => "cookware",
            Sector::PowerTools => "power_tools",
            Sector::Leisure => "leisure",
            Sector::Castings => "castings",
            Sector::Other => "other",
        }
    }
}

/// Energy carriers and water.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Carrier {
    Electricity,
    NaturalGas,
    Water,
    Diesel,
    Lpg,
    Steam,
    Heat,
}

impl Carrier {
    /// The unit a meter of this carrier counts in unless the config says otherwise.
    pub fn default_unit(self) -> &'static str {
        match self {
            Carrier::Electricity => "kWh",
            Carrier::NaturalGas => "m3",
            Carrier::Water | Carrier::Steam => "t",
            Carrier::Diesel | Carrier::Lpg => "kg",
            Carrier::Heat => "GJ",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Electricity => "electricity",
            Carrier::NaturalGas => "natural_gas",
            Carrier::Water => "water",
            Carrier::Diesel => "diesel",
            Carrier::Lpg => "lpg",
            Carrier::Steam => "steam",
            Carrier::Heat => "heat",
        }
    }
}
