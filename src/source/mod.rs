//! Southbound sources: Modbus devices, MQTT subscriptions and the simulator.
//!
//! Sources only produce [`Sample`]s and device health events. They know nothing of machine
//! states or indicators; that is the engine's business.

pub mod cjt188;
pub mod dial_in;
pub mod dlt645;
pub mod field_errors;
pub mod hj212;
pub mod melsec;
pub mod meterbus;
pub mod modbus;
pub mod mqtt;
pub mod number;
pub mod opcua;
pub mod s7;
