//! A DL/T 645 meter on a bus: its readings asked one by one with the read-data command,
//! follow-up frames fetched while the meter says more data follows, answers checked and
//! decoded (see [`crate::source::meterbus`] for the bus task).

use std::sync::Arc;
use std::time::Duration;

use super::config::{Dlt645Bus, Reading};
use super::data;
use super::frame::{self, Address, DataId, Dlt645Error, MAX_FRAME};
use crate::model::Value;
use crate::source::meterbus::link::{Framed, Link};
use crate::source::meterbus::{BusMeter, Fault, Poll};

/// Follow-up frames fetched for one value at most: a meter that keeps saying "more" is
/// broken, and the bus is shared.
const MAX_FOLLOW_UPS: u8 = 16;

/// One meter with its readings planned.
#[derive(Debug)]
pub struct Meter {
    device: String,
    address: Address,
    readings: Vec<(Reading, Arc<str>)>,
}

/// The meters of one `[[dlt645]]` bus, ready for [`crate::source::meterbus::run`].
pub fn meters(bus: &Dlt645Bus) -> Vec<Meter> {
    bus.meters
        .iter()
        .map(|m| Meter {
            device: m.meter.clone(),
            address: m.address,
            readings: m
                .plan()
                .0
                .into_iter()
                .map(|r| {
                    let signal = Arc::from(r.signal.as_str());
                    (r, signal)
                })
                .collect(),
        })
        .collect()
}

/// What went wrong with an answer, as the bus task counts it; a refusal is not a fault but
/// an answer.
pub(crate) fn fault(e: Dlt645Error) -> Fault {
    match e {
        Dlt645Error::Checksum { .. } => Fault::Checksum(e.to_string()),
        Dlt645Error::WrongMeter { .. } => Fault::Address(e.to_string()),
        Dlt645Error::Malformed(_) | Dlt645Error::Refused { .. } => Fault::Protocol(e.to_string()),
    }
}

/// DL/T 645's frames on a bus.
pub(crate) struct Dlt645;

impl Framed for Dlt645 {
    type Error = Dlt645Error;
    const MAX_FRAME: usize = MAX_FRAME;
    fn frame_length(buf: &[u8]) -> Result<Option<usize>, Dlt645Error> {
        frame::frame_length(buf)
    }
    fn fault(e: Dlt645Error) -> Fault {
        fault(e)
    }
}

/// Reads one value, following up while the meter says more follows. `Ok(Err(code))` is the
/// meter's refusal.
pub(crate) async fn read_value(
    link: &mut Link,
    address: Address,
    id: DataId,
    timeout: Duration,
) -> Result<Result<Vec<u8>, Dlt645Error>, Fault> {
    let answer = link
        .exchange::<Dlt645>(&frame::read_request(address, id), timeout)
        .await?;
    let mut reply = match frame::read_reply(&answer, address, id) {
        Ok(r) => r,
        Err(e @ Dlt645Error::Refused { .. }) => return Ok(Err(e)),
        Err(e) => return Err(fault(e)),
    };
    let mut value = std::mem::take(&mut reply.value);
    let mut seq = 0u8;
    while reply.more {
        seq += 1;
        if seq > MAX_FOLLOW_UPS {
            return Err(Fault::Protocol(format!(
                "the meter announced more than {MAX_FOLLOW_UPS} follow-up frames for {id}"
            )));
        }
        let answer = link
            .exchange::<Dlt645>(&frame::read_follow_up_request(address, id, seq), timeout)
            .await?;
        reply = match frame::read_reply(&answer, address, id) {
            Ok(r) => r,
            Err(e @ Dlt645Error::Refused { .. }) => return Ok(Err(e)),
            Err(e) => return Err(fault(e)),
        };
        value.append(&mut reply.value);
    }
    Ok(Ok(value))
}

impl BusMeter for Meter {
    fn device(&self) -> &str {
        &self.device
    }

    fn address(&self) -> String {
        self.address.to_string()
    }

    async fn poll(&mut self, link: &mut Link, timeout: Duration) -> Result<Poll, Fault> {
        let mut poll = Poll::default();
        for (reading, signal) in &self.readings {
            poll.asked += 1;
            match read_value(link, self.address, reading.id, timeout).await? {
                Err(refusal) => {
                    if let Dlt645Error::Refused { code, .. } = refusal {
                        poll.refusal_code.get_or_insert(code);
                    }
                    poll.refused.push(format!("{}: {refusal}", reading.id));
                }
                Ok(bytes) => match data::decode(reading.format, &bytes) {
                    Ok(v) => poll.values.push((signal.clone(), Value::Float(v))),
                    Err(e) => poll.undecodable.push(format!("{}: {e}", reading.id)),
                },
            }
        }
        Ok(poll)
    }
}
