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

/// Whose signal a polled field is, `(true, machine)` or `(false, meter)`: the field's own
/// `machine` or `meter`, else its device's. A field without either keeps none, so devices can
/// share a profile's fields; `None` only for a config that failed its check.
pub fn field_target<'a>(
    (field_machine, field_meter): (&'a Option<String>, &'a Option<String>),
    (device_machine, device_meter): (&'a Option<String>, &'a Option<String>),
) -> Option<(bool, &'a str)> {
    match (field_machine, field_meter, device_machine, device_meter) {
        (Some(m), _, _, _) => Some((true, m)),
        (None, Some(m), _, _) => Some((false, m)),
        (None, None, Some(m), _) => Some((true, m)),
        (None, None, None, Some(m)) => Some((false, m)),
        (None, None, None, None) => None,
    }
}
