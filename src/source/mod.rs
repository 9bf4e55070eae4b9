//! Southbound sources: Modbus devices, MQTT subscriptions and the simulator.
//!
//! Sources only produce [`Sample`]s and device health events. They know nothing of machine
//! states or indicators; that is the engine's business.

pub mod cjt188;
pub mod dlt645;
pub mod hj212;
pub mod modbus;
pub mod mqtt;
pub mod s7;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Machine(Arc<str>),
    Meter(Arc<str>),
}

/// One reading of one signal.
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
    /// The target is gone now, not after `offline_after` of silence: its Last Will arrived, or
    /// a Sparkplug NDEATH/DDEATH. The engine makes a machine offline stamped `at`.
    Offline {
        target: Target,
        at: Timestamp,
        reason: String,
    },
}
