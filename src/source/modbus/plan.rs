//! Request planning: which reads fetch a device's register map in as few requests as the
//! protocol and the device allow.
//!
//! Fields of one table that lie close together are read in one request, the gap between them
//! included, as long as the request stays within the protocol's limit ([`MAX_READ_REGISTERS`]
//! registers, [`MAX_READ_BITS`] bits) and the device's own `max_registers`. Fewer requests
//! means less time on a slow serial bus and less load on a PLC; a gap larger than `max_gap` is
//! not worth reading (and some devices answer "illegal address" for holes in their map), so it
//! splits the request. A device with
//! `one_request_per_field` gets exactly one request per field, for devices that refuse
//! anything else.
//!
//! Fields with their own `poll` interval form groups; each group is planned on its own, so a
//! request never mixes fields read at different rates.

use std::fmt;
use std::time::Duration;

use super::config::{ModbusDevice, RegisterKind};
#[cfg(doc)]
use crate::source::modbus::config::{MAX_READ_BITS, MAX_READ_REGISTERS};

/// The requests for the fields that share one poll interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollGroup {
    pub poll: Duration,
    pub requests: Vec<ReadRequest>,
}

/// One read request and the fields it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub kind: RegisterKind,
    /// Protocol address of the first register or bit.
    pub start: u16,
    pub count: u16,
    pub fields: Vec<PlannedField>,
}

/// Where a field sits inside a request's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedField {
    /// Index into the device's `fields`.
    pub index: usize,
    /// Offset of the field's first register (or bit) in the answer.
    pub offset: u16,
    /// Registers (or bits) the field occupies.
    pub len: u16,
}

impl fmt::Display for ReadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fc {} {} {}..{} ({} {}, {} field{})",
            self.kind.function_code(),
            self.kind.as_str(),
            self.start,
            u32::from(self.start) + u32::from(self.count) - 1,
            self.count,
            if self.kind.is_bit() {
                "bits"
            } else {
                "registers"
            },
            self.fields.len(),
            if self.fields.len() == 1 { "" } else { "s" },
        )
    }
}

/// Plans the reads for a device whose config passed `check`: one group per poll interval,
/// shortest interval first.
pub fn plan(device: &ModbusDevice) -> Vec<PollGroup> {
    let mut polls: Vec<Duration> = device.fields.iter().map(|f| device.poll_of(f)).collect();
    polls.sort_unstable();
    polls.dedup();
    polls
        .into_iter()
        .map(|poll| PollGroup {
            poll,
            requests: plan_fields(device, |i| device.poll_of(&device.fields[i]) == poll),
        })
        .collect()
}

/// Plans the reads for the fields that `take` selects (by index).
fn plan_fields(device: &ModbusDevice, take: impl Fn(usize) -> bool) -> Vec<ReadRequest> {
    let mut spots: Vec<(RegisterKind, u32, u32, usize)> = device
        .fields
        .iter()
        .enumerate()
        .filter(|(i, _)| take(*i))
        .map(|(i, f)| {
            let start = u32::from(f.protocol_address().unwrap_or(0));
            (f.register, start, u32::from(f.registers()), i)
        })
        .collect();
    spots.sort_unstable();

    let mut requests: Vec<ReadRequest> = Vec::new();
    for (kind, start, len, index) in spots {
        let (limit, gap) = if kind.is_bit() {
            (
                u32::from(kind.protocol_limit()),
                u32::from(device.max_gap) * 16,
            )
        } else {
            (
                u32::from(device.max_registers.clamp(1, kind.protocol_limit())),
                u32::from(device.max_gap),
            )
        };
        let end = start + len;
        let merged = match requests.last_mut() {
            Some(req) if req.kind == kind && !device.one_request_per_field => {
                let req_start = u32::from(req.start);
                let req_end = req_start + u32::from(req.count);
                let new_end = end.max(req_end);
                if start <= req_end + gap && new_end - req_start <= limit {
                    req.count = (new_end - req_start) as u16;
                    req.fields.push(PlannedField {
                        index,
                        offset: (start - req_start) as u16,
                        len: len as u16,
                    });
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if !merged {
            requests.push(ReadRequest {
                kind,
                start: start as u16,
                count: len as u16,
                fields: vec![PlannedField {
                    index,
                    offset: 0,
                    len: len as u16,
                }],
            });
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::modbus::config::{AddressBase, MAX_READ_REGISTERS};
    use crate::source::modbus::config::{ByteOrder, DataType, ModbusField};
    use std::time::Duration;

    fn field(register: RegisterKind, address: u16, ty: DataType) -> ModbusField {
        ModbusField {
            machine: Some("m".into()),
            meter: None,
            signal: format!("s{address}").into(),
            register,
            address,
            data_type: Some(ty),
            order: ByteOrder::ABCD,
            bit: None,
            scale: None,
            offset: None,
            length: None,
            poll: None,
            address_base: AddressBase::Zero,
        }
    }

    fn device(fields: Vec<ModbusField>, max_gap: u16, max_registers: u16) -> ModbusDevice {
        ModbusDevice {
            id: "d".into(),
            address: Some("127.0.0.1:502".into()),
            transport: Default::default(),
            serial: None,
            unit: tokio_modbus::Slave(1),
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            inter_request_delay: None,
            address_base: AddressBase::Zero,
            max_gap,
            max_registers,
            one_request_per_field: false,
            profile: None,
            machine: None,
            meter: None,
            fields: fields.into(),
        }
    }

    /// The single group of a device whose fields all share the device's interval.
    fn requests(d: &ModbusDevice) -> Vec<ReadRequest> {
        let groups = plan(d);
        assert_eq!(groups.len(), 1);
        groups.into_iter().next().unwrap().requests
    }

    #[test]
    fn adjacent_and_near_fields_merge_far_ones_split() {
        use DataType::*;
        use RegisterKind::*;
        // 0 (u16), 1–2 (u32), gap of 3 (3,4,5), 6 (u16) → one request 0..6 with max_gap 3;
        // 20 is 13 past the end → second request; input registers never merge with holding.
        let d = device(
            vec![
                field(Holding, 1, U32),
                field(Holding, 0, U16),
                field(Holding, 6, U16),
                field(Holding, 20, F32),
                field(Input, 0, U16),
            ],
            3,
            MAX_READ_REGISTERS,
        );
        let plan = requests(&d);
        let shape: Vec<_> = plan.iter().map(|r| (r.kind, r.start, r.count)).collect();
        assert_eq!(
            shape,
            vec![(Holding, 0, 7), (Holding, 20, 2), (Input, 0, 1)]
        );
        // Field 0 (address 1, u32) sits at offset 1 of the first request.
        assert!(plan[0].fields.contains(&PlannedField {
            index: 0,
            offset: 1,
            len: 2
        }));
    }

    #[test]
    fn requests_respect_the_device_limit() {
        // Ten u32 at 0,2,…,18 = 20 registers; at most 8 per request → 8 + 8 + 4.
        let fields = (0..10)
            .map(|i| field(RegisterKind::Holding, i * 2, DataType::U32))
            .collect();
        let plan = requests(&device(fields, 0, 8));
        let counts: Vec<u16> = plan.iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![8, 8, 4]);
    }

    #[test]
    fn one_based_addresses_are_shifted() {
        let mut f = field(RegisterKind::Holding, 40, DataType::U16);
        f.address_base = AddressBase::One;
        assert_eq!(
            requests(&device(vec![f], 0, MAX_READ_REGISTERS))[0].start,
            39
        );
    }

    #[test]
    fn one_request_per_field_never_merges() {
        use DataType::*;
        use RegisterKind::*;
        // 0 (u16) and 1–2 (u32) would merge into one read of 3; here they stay two reads.
        let mut d = device(
            vec![field(Holding, 0, U16), field(Holding, 1, U32)],
            8,
            MAX_READ_REGISTERS,
        );
        d.one_request_per_field = true;
        let shape: Vec<_> = requests(&d).iter().map(|r| (r.start, r.count)).collect();
        assert_eq!(shape, vec![(0, 1), (1, 2)]);
    }

    #[test]
    fn fields_with_their_own_interval_are_planned_apart() {
        use DataType::*;
        use RegisterKind::*;
        // Registers 0 and 1 are adjacent, but 1 is read every minute: two groups, and the
        // 1 s group is first.
        let mut slow = field(Holding, 1, U16);
        slow.poll = Some(Duration::from_secs(60));
        let d = device(vec![slow, field(Holding, 0, U16)], 8, MAX_READ_REGISTERS);
        let groups = plan(&d);
        let shape: Vec<_> = groups
            .iter()
            .map(|g| (g.poll.as_secs(), g.requests[0].start, g.requests[0].count))
            .collect();
        assert_eq!(shape, vec![(1, 0, 1), (60, 1, 1)]);
        // The slow group's one field is the device's field 0.
        assert_eq!(groups[1].requests[0].fields[0].index, 0);
    }

    #[test]
    fn a_string_occupies_its_length() {
        // A 8-register string at 7 after a u16 at 6: one read of 6..=14 (9 registers).
        let mut text = field(RegisterKind::Holding, 7, DataType::String);
        text.length = Some(8);
        let d = device(
            vec![field(RegisterKind::Holding, 6, DataType::U16), text],
            0,
            MAX_READ_REGISTERS,
        );
        let r = &requests(&d)[0];
        assert_eq!((r.start, r.count), (6, 9));
        assert!(r.fields.contains(&PlannedField {
            index: 1,
            offset: 1,
            len: 8
        }));
    }
}
