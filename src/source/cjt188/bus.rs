//! A CJ/T 188 meter on a bus: its metering data (901F) asked with the read-data command,
//! the answer checked and decoded into the figures the config names (see
//! [`crate::source::meterbus`] for the bus task).

use std::sync::Arc;
use std::time::Duration;

use super::config::Cjt188Bus;
use super::data::{self, Valve};
use super::frame::{self, Address, Cjt188Error, DI_METERING, DiOrder, MAX_FRAME, MeterType};
use crate::model::Value;
use crate::source::meterbus::link::{Framed, Link};
use crate::source::meterbus::{BusMeter, Fault, Poll};

/// One meter.
#[derive(Debug)]
pub struct Meter {
    device: String,
    address: Address,
    meter_type: MeterType,
    order: DiOrder,
    /// The figures to deliver, by signal name.
    readings: Vec<Arc<str>>,
    /// The request's sequence number, one more each time.
    ser: u8,
}

/// The meters of one `[[cjt188]]` bus, ready for [`crate::source::meterbus::run`].
pub fn meters(bus: &Cjt188Bus) -> Vec<Meter> {
    bus.meters
        .iter()
        .map(|m| Meter {
            device: m.meter.clone(),
            address: m.address,
            meter_type: m.meter_type,
            order: bus.di_order,
            readings: m
                .offered()
                .iter()
                .filter(|(s, _)| m.reads(s))
                .map(|(s, _)| Arc::from(*s))
                .collect(),
            ser: 0,
        })
        .collect()
}

pub(crate) fn fault(e: Cjt188Error) -> Fault {
    match e {
        Cjt188Error::Checksum { .. } => Fault::Checksum(e.to_string()),
        Cjt188Error::WrongMeter { .. } => Fault::Address(e.to_string()),
        _ => Fault::Protocol(e.to_string()),
    }
}

/// CJ/T 188's frames on a bus.
pub(crate) struct Cjt188;

impl Framed for Cjt188 {
    type Error = Cjt188Error;
    const MAX_FRAME: usize = MAX_FRAME;
    fn frame_length(buf: &[u8]) -> Result<Option<usize>, Cjt188Error> {
        frame::frame_length(buf)
    }
    fn fault(e: Cjt188Error) -> Fault {
        fault(e)
    }
}

fn valve(v: Valve) -> &'static str {
    match v {
        Valve::Open => "open",
        Valve::Closed => "closed",
        Valve::Fault => "fault",
        Valve::Undefined => "undefined",
    }
}

/// Every figure of a metering answer by signal name, in the agent's base units (m³, kWh,
/// kW, m³/h).
pub fn figures(
    meter_type: MeterType,
    data: &[u8],
) -> Result<Vec<(&'static str, Value)>, data::DecodeError> {
    if meter_type.is_heat() {
        let r = data::heat_reading(data)?;
        Ok(vec![
            ("heat_kwh", Value::Float(r.current_heat.in_base())),
            (
                "heat_settlement_kwh",
                Value::Float(r.settlement_heat.in_base()),
            ),
            ("heat_power_kw", Value::Float(r.heat_power.in_base())),
            ("flow_rate_m3h", Value::Float(r.flow_rate.in_base())),
            ("volume_m3", Value::Float(r.volume.in_base())),
            ("supply_c", Value::Float(r.supply_c)),
            ("return_c", Value::Float(r.return_c)),
            ("operating_h", Value::Float(r.operating_hours)),
            ("valve", Value::Text(valve(r.status.valve).into())),
            ("battery_low", Value::Bool(r.status.battery_low)),
        ])
    } else {
        let r = data::flow_reading(data)?;
        Ok(vec![
            ("volume_m3", Value::Float(r.current.in_base())),
            ("volume_settlement_m3", Value::Float(r.settlement.in_base())),
            ("valve", Value::Text(valve(r.status.valve).into())),
            ("battery_low", Value::Bool(r.status.battery_low)),
        ])
    }
}

impl BusMeter for Meter {
    fn device(&self) -> &str {
        &self.device
    }

    fn address(&self) -> String {
        format!("{} {}", self.address, self.meter_type)
    }

    async fn poll(&mut self, link: &mut Link, timeout: Duration) -> Result<Poll, Fault> {
        self.ser = self.ser.wrapping_add(1);
        let request = frame::read_request(
            self.meter_type,
            self.address,
            DI_METERING,
            self.ser,
            self.order,
        );
        let answer = link.exchange::<Cjt188>(&request, timeout).await?;
        let mut poll = Poll {
            asked: 1,
            ..Poll::default()
        };
        match frame::read_reply(
            &answer,
            self.meter_type,
            self.address,
            DI_METERING,
            self.ser,
        ) {
            Err(e @ Cjt188Error::Refused { .. }) => poll.refused.push(e.to_string()),
            Err(e) => return Err(fault(e)),
            Ok(data) => match figures(self.meter_type, &data) {
                Ok(all) => {
                    for (name, value) in all {
                        if let Some(signal) = self.readings.iter().find(|s| &***s == name) {
                            poll.values.push((signal.clone(), value));
                        }
                    }
                }
                Err(e) => poll.undecodable.push(e.to_string()),
            },
        }
        Ok(poll)
    }
}
