//! Fuzzes what the meter sources do with a meter's bytes, for DL/T 645 (2007 and 1997) and
//! CJ/T 188: the serial stream cut into frames by their length (wake-up bytes, the two 0x68,
//! the length byte, as the bus reader does), each frame's checksum and structure, the answer
//! checked against what was asked (address, function, identifier, sequence number), and the
//! value decoded: every named DL/T 645 identifier's BCD format, alone and as a block, and a
//! CJ/T 188 water or heat meter's metering data.
//! Nothing may panic; a frame never claims more than the bytes it was cut from; a value
//! that decodes is finite and decodes from what encoding it gives back.
//!
//! Input: a selector byte (protocol and which identifier), then the bytes on the bus.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor::source::cjt188::data::{flow_reading, heat_reading};
use shopfloor::source::cjt188::frame::{self as cjt, DI_METERING, MeterType};
use shopfloor::source::dlt645::data::{IDENTIFIERS, decode, decode_block, encode};
use shopfloor::source::dlt645::frame::{self as dlt, Address};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bus)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let id = &IDENTIFIERS[usize::from(selector >> 1) % IDENTIFIERS.len()];
        let mut rest = bus;
        while let Ok(Some(len)) = dlt::frame_length(rest) {
            if len == 0 || rest.len() < len {
                break;
            }
            let frame = &rest[..len];
            if let Ok(f) = dlt::parse(frame) {
                // Asked of the meter that answered, and of another one.
                for asked in [f.address, Address::from_wire([0x11; 6])] {
                    if let Ok(reply) = dlt::read_reply(frame, asked, id.id) {
                        assert!(reply.value.len() <= frame.len());
                        if let Ok(x) = decode(id.format, &reply.value) {
                            assert!(x.is_finite());
                            let again = encode(id.format, x).expect("a decoded value encodes");
                            assert_eq!(decode(id.format, &again).ok(), Some(x));
                        }
                        if let Ok(xs) = decode_block(id.format, &reply.value) {
                            assert!(xs.iter().all(|x| x.is_finite()));
                        }
                    }
                }
                let _ = dlt::address_reply(frame);
            }
            rest = &rest[len..];
        }
    } else {
        let ser = selector >> 1;
        let mut rest = bus;
        while let Ok(Some(len)) = cjt::frame_length(rest) {
            if len == 0 || rest.len() < len {
                break;
            }
            let frame = &rest[..len];
            if let Ok(f) = cjt::parse(frame) {
                for meter_type in [f.meter_type, MeterType::COLD_WATER, MeterType::HEAT] {
                    if let Ok(data) = cjt::read_reply(frame, meter_type, f.address, DI_METERING, ser)
                    {
                        assert!(data.len() <= frame.len());
                        if let Ok(r) = flow_reading(&data) {
                            assert!(r.current.in_base().is_finite());
                            assert!(r.settlement.in_base().is_finite());
                        }
                        if let Ok(r) = heat_reading(&data) {
                            assert!(r.volume.in_base().is_finite());
                            assert!(r.supply_c.is_finite() && r.return_c.is_finite());
                        }
                    }
                }
                let _ = cjt::address_reply(frame, ser);
            }
            rest = &rest[len..];
        }
    }
});
