//! CJ/T 188-2004 frames, master side and read only: the agent builds two requests, read data
//! (control 0x01) and, for commissioning, read address (0x03). There is no function here that
//! builds a write, a valve command, a price table or an address change, and the frame builder
//! is private to the two: "the agent never writes to a meter" (and never shuts a valve) holds
//! by what this module can say; [`is_read`] lets a test watching the wire prove it.
//!
//! Everything is pure: bytes in, bytes or errors out, no serial port.
//!
//! ```text
//! FE FE FE                    wake-up preamble (not part of the checksum)
//! 68 T A0 … A6                start, meter type, address (14 BCD digits, lowest byte first)
//! C  L                        control code, data length
//! DI0 DI1 SER …               data identifier, sequence number, data (no offset, unlike DL/T 645)
//! CS 16                       sum mod 256 of every byte from 68 to the data; end
//! ```
//!
//! The control code's bits: D7 direction (1 = the meter answers), D6 abnormal answer, D5–D0 the
//! function.

use std::fmt;

use crate::source::meterbus::frame::{self as shared, Framing};
pub use crate::source::meterbus::frame::{END, MAX_PREAMBLE, START, WAKE_UP};

/// What the agent sends before every request: meters on M-Bus and RS-485 need at least two
/// wake-up bytes; collectors commonly send three.
pub const PREAMBLE: [u8; 3] = [WAKE_UP; 3];
/// `68`, type, seven address bytes, control, length.
pub const HEADER: usize = 11;
/// The longest frame that can arrive.
pub const MAX_FRAME: usize = MAX_PREAMBLE + HEADER + 255 + 2;

/// Metering data: current cumulative flow (or heat), settlement-day figure, clock, status.
pub const DI_METERING: u16 = 0x901F;
/// The meter's address, answered to the wildcard address.
pub const DI_ADDRESS: u16 = 0x810A;

const READ_DATA: u8 = 0x01;
const READ_ADDRESS: u8 = 0x03;
const ANSWER: u8 = 0x80;
const ABNORMAL: u8 = 0x40;
const FUNCTION: u8 = 0x3F;

/// The meter type byte: which utility's meter, and so how its metering data is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MeterType(pub u8);

impl MeterType {
    pub const COLD_WATER: MeterType = MeterType(0x10);
    pub const HOT_WATER: MeterType = MeterType(0x11);
    pub const DRINKING_WATER: MeterType = MeterType(0x12);
    pub const RECLAIMED_WATER: MeterType = MeterType(0x13);
    pub const HEAT: MeterType = MeterType(0x20);
    pub const COOLING: MeterType = MeterType(0x21);
    pub const GAS: MeterType = MeterType(0x30);
    pub const OTHER: MeterType = MeterType(0x40);
    /// Any type: the meter answers whatever it is.
    pub const WILDCARD: MeterType = MeterType(0xAA);

    /// Reads a meter type as a config names it.
    pub fn parse(text: &str) -> Result<MeterType, String> {
        Ok(match text.trim() {
            "cold_water" => MeterType::COLD_WATER,
            "hot_water" => MeterType::HOT_WATER,
            "drinking_water" => MeterType::DRINKING_WATER,
            "reclaimed_water" => MeterType::RECLAIMED_WATER,
            "heat" => MeterType::HEAT,
            "cooling" => MeterType::COOLING,
            "gas" => MeterType::GAS,
            other => {
                return Err(format!(
                    "meter type {other:?}: one of cold_water, hot_water, drinking_water, \
                     reclaimed_water, heat, cooling, gas"
                ));
            }
        })
    }

    /// The family the type byte's high nibble names: 1x water, 2x heat, 3x gas, 4x other.
    pub fn is_heat(self) -> bool {
        self.0 >> 4 == 2
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            0x10 => "cold water meter (冷水水表)",
            0x11 => "hot water meter (生活热水水表)",
            0x12 => "drinking water meter (直饮水水表)",
            0x13 => "reclaimed water meter (中水水表)",
            0x20 => "heat meter, heating (热量表 计热量)",
            0x21 => "heat meter, cooling (热量表 计冷量)",
            0x30 => "gas meter (燃气表)",
            0x40 => "other meter (如电度表)",
            0x14..=0x19 => "water meter",
            0x22..=0x29 => "heat meter",
            0x31..=0x39 => "gas meter",
            _ => "meter of an unknown type",
        }
    }

    fn matches(self, answered: MeterType) -> bool {
        self == MeterType::WILDCARD || self == answered
    }
}

impl fmt::Display for MeterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (type {:#04x})", self.name(), self.0)
    }
}

/// A meter's address: fourteen BCD digits as printed on the meter (the meter number, the
/// last four digits often the manufacturer's code), held in wire order, lowest byte first.
/// A byte of `AA` is a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address([u8; 7]);

impl Address {
    pub const WILDCARD: Address = Address([0xAA; 7]);

    pub fn from_wire(bytes: [u8; 7]) -> Address {
        Address(bytes)
    }

    pub fn wire(self) -> [u8; 7] {
        self.0
    }

    /// Up to fourteen decimal digits, highest first, zeros added in front; in the
    /// fourteen-digit form a digit pair may be `AA`.
    pub fn parse(text: &str) -> Result<Address, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "meter address {text:?}: write the fourteen digits printed on the meter \
                 (e.g. 00000012345678), or fewer digits for leading zeros"
            )
        };
        if text.is_empty() || text.len() > 14 || !text.is_ascii() {
            return Err(bad());
        }
        let padded = format!("{text:0>14}");
        let mut wire = [0u8; 7];
        for (i, pair) in padded.as_bytes().chunks_exact(2).enumerate() {
            wire[6 - i] = match pair {
                [b'A' | b'a', b'A' | b'a'] if text.len() == 14 => 0xAA,
                [h @ b'0'..=b'9', l @ b'0'..=b'9'] => ((h - b'0') << 4) | (l - b'0'),
                _ => return Err(bad()),
            };
        }
        Ok(Address(wire))
    }

    pub fn matches(self, answered: Address) -> bool {
        self.0
            .iter()
            .zip(answered.0)
            .all(|(asked, got)| *asked == 0xAA || *asked == got)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.iter().rev() {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

/// How the two identifier bytes go on the wire. Most meters and collectors send the
/// identifier as it is written, `90 1F`; some makers' meters want the low byte first, `1F 90`
/// (as DL/T 645 does it). Answers are accepted in either order, so only requests need the
/// setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiOrder {
    #[default]
    AsWritten,
    Swapped,
}

fn di_wire(di: u16, order: DiOrder) -> [u8; 2] {
    match order {
        DiOrder::AsWritten => di.to_be_bytes(),
        DiOrder::Swapped => di.to_le_bytes(),
    }
}

/// What went wrong between the agent and a meter, in words an engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cjt188Error {
    Malformed(String),
    Checksum {
        sent: u8,
        computed: u8,
    },
    WrongMeter {
        asked: String,
        answered: String,
    },
    /// An abnormal answer, with the status bytes when the meter sent them.
    Refused {
        status: Option<[u8; 2]>,
    },
    /// The answer carries another sequence number than the request: a late answer to an
    /// earlier request.
    Stale {
        asked: u8,
        answered: u8,
    },
}

impl Cjt188Error {
    fn malformed(what: impl Into<String>) -> Cjt188Error {
        Cjt188Error::Malformed(what.into())
    }

    /// The kind the device health counts the error under.
    pub fn kind(&self) -> &'static str {
        match self {
            Cjt188Error::Malformed(_) | Cjt188Error::Stale { .. } => "protocol",
            Cjt188Error::Checksum { .. } => "checksum",
            Cjt188Error::WrongMeter { .. } => "address",
            Cjt188Error::Refused { .. } => "refused",
        }
    }
}

impl fmt::Display for Cjt188Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cjt188Error::Malformed(what) => write!(f, "not a CJ/T 188 answer: {what}"),
            Cjt188Error::Checksum { sent, computed } => write!(
                f,
                "checksum {sent:#04x} where the bytes add up to {computed:#04x}: interference \
                 on the bus (check the wiring and the M-Bus or RS-485 converter) or two meters \
                 answering at once"
            ),
            Cjt188Error::WrongMeter { asked, answered } => write!(
                f,
                "{answered} answered where {asked} was asked: check the meter's address and \
                 type in the config against the meter"
            ),
            Cjt188Error::Refused { status } => {
                f.write_str("the meter refused the read (abnormal answer)")?;
                if let Some([st1, st2]) = status {
                    write!(f, ", status bytes {st1:#04x} {st2:#04x}")?;
                }
                f.write_str(
                    ": the meter does not have this data identifier, or wants it in the other \
                     byte order (set di_order = \"swapped\")",
                )
            }
            Cjt188Error::Stale { asked, answered } => write!(
                f,
                "an answer to request {answered} where request {asked} was sent: a late answer \
                 to an earlier request (raise the timeout)"
            ),
        }
    }
}

impl std::error::Error for Cjt188Error {}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub meter_type: MeterType,
    pub address: Address,
    pub control: u8,
    pub data: Vec<u8>,
}

/// The frame builder. Private: only the two read requests call it.
fn frame(meter_type: MeterType, address: Address, control: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREAMBLE.len() + HEADER + data.len() + 2);
    out.extend_from_slice(&PREAMBLE);
    out.extend_from_slice(&[START, meter_type.0]);
    out.extend_from_slice(&address.wire());
    // Requests carry an identifier and a sequence number: three bytes.
    out.extend_from_slice(&[control, data.len() as u8]);
    out.extend_from_slice(data);
    shared::seal(&mut out, PREAMBLE.len());
    out
}

/// Read data (control 0x01): identifier `di` (usually [`DI_METERING`]) from the meter of type
/// `meter_type` at `address`, numbered `ser` so its answer can be told from a late one.
pub fn read_request(
    meter_type: MeterType,
    address: Address,
    di: u16,
    ser: u8,
    order: DiOrder,
) -> Vec<u8> {
    let [d0, d1] = di_wire(di, order);
    frame(meter_type, address, READ_DATA, &[d0, d1, ser])
}

/// Read address (control 0x03, identifier 810A) to the wildcard type and address: the one
/// meter on the bus answers with its type and address. Only for commissioning with a single
/// meter connected.
pub fn read_address_request(ser: u8, order: DiOrder) -> Vec<u8> {
    let [d0, d1] = di_wire(DI_ADDRESS, order);
    frame(
        MeterType::WILDCARD,
        Address::WILDCARD,
        READ_ADDRESS,
        &[d0, d1, ser],
    )
}

/// Whether `control` is one of the reads the agent sends.
pub fn is_read(control: u8) -> bool {
    matches!(control, READ_DATA | READ_ADDRESS)
}

/// The control code of the frame in `bytes`, after the preamble.
pub fn control_of(bytes: &[u8]) -> Option<u8> {
    let at = bytes.iter().position(|b| *b != WAKE_UP)?;
    bytes.get(at + 9).copied()
}

/// How many bytes from the start of `buf` the frame in it takes, preamble included, once the
/// header is there; `None` while more bytes are needed to know.
pub fn frame_length(buf: &[u8]) -> Result<Option<usize>, Cjt188Error> {
    Ok(shared::locate(buf, HEADER)
        .map_err(framing)?
        .map(|at| at.total))
}

/// The shared framing's complaint in CJ/T 188's words.
fn framing(f: Framing) -> Cjt188Error {
    match f {
        Framing::Preamble(n) => {
            Cjt188Error::malformed(format!("{n} wake-up bytes (0xFE) in a row"))
        }
        Framing::NotStart(byte) => Cjt188Error::malformed(format!(
            "byte {byte:#04x} where the frame's start 0x68 belongs: another protocol on the \
             bus, or the wrong baud rate or parity (CJ/T 188 meters usually run at 2400 baud, \
             8 data bits, even parity)"
        )),
        Framing::Length { got, total: 0 } => {
            Cjt188Error::malformed(format!("a frame cut short at {got} bytes"))
        }
        Framing::Length { got, total } => Cjt188Error::malformed(format!(
            "{got} bytes where the length byte makes a frame of {total}"
        )),
        Framing::Checksum { sent, computed } => Cjt188Error::Checksum { sent, computed },
        Framing::End(byte) => {
            Cjt188Error::malformed(format!("byte {byte:#04x} where the end 0x16 belongs"))
        }
    }
}

/// Checks one whole frame (preamble allowed, nothing after it) and takes it apart.
pub fn parse(bytes: &[u8]) -> Result<Frame, Cjt188Error> {
    let body = shared::body(bytes, HEADER).map_err(framing)?;
    let mut address = [0u8; 7];
    address.copy_from_slice(&body[2..9]);
    Ok(Frame {
        meter_type: MeterType(body[1]),
        address: Address(address),
        control: body[9],
        data: body[HEADER..].to_vec(),
    })
}

/// Checks an answer against what was asked (checksum, type, address, function, identifier in
/// either byte order, sequence number) and hands back the data after the identifier and
/// sequence number, or the meter's refusal.
pub fn read_reply(
    bytes: &[u8],
    meter_type: MeterType,
    address: Address,
    di: u16,
    ser: u8,
) -> Result<Vec<u8>, Cjt188Error> {
    let f = parse(bytes)?;
    check_answer(&f, meter_type, address, READ_DATA)?;
    answer_data(&f, di, ser)
}

/// The type and address in the one meter's answer to [`read_address_request`].
pub fn address_reply(bytes: &[u8], ser: u8) -> Result<(MeterType, Address), Cjt188Error> {
    let f = parse(bytes)?;
    check_answer(&f, MeterType::WILDCARD, Address::WILDCARD, READ_ADDRESS)?;
    answer_data(&f, DI_ADDRESS, ser)?;
    Ok((f.meter_type, f.address))
}

fn check_answer(
    f: &Frame,
    meter_type: MeterType,
    address: Address,
    function: u8,
) -> Result<(), Cjt188Error> {
    if f.control & ANSWER == 0 {
        return Err(Cjt188Error::malformed(format!(
            "a request (control {:#04x}), not an answer: the converter echoes what the agent \
             sends (switch its echo off) or another master is on the bus",
            f.control
        )));
    }
    if !meter_type.matches(f.meter_type) || !address.matches(f.address) {
        return Err(Cjt188Error::WrongMeter {
            asked: format!("meter {address}, {meter_type}"),
            answered: format!("meter {}, {}", f.address, f.meter_type),
        });
    }
    if f.control & FUNCTION != function {
        return Err(Cjt188Error::malformed(format!(
            "an answer to function {:#04x}, the agent asked {function:#04x}",
            f.control & FUNCTION
        )));
    }
    if f.control & ABNORMAL != 0 {
        // SER and the two status bytes, when the meter sends them.
        let status = f.data.get(1..3).map(|s| [s[0], s[1]]);
        return Err(Cjt188Error::Refused { status });
    }
    Ok(())
}

fn answer_data(f: &Frame, di: u16, ser: u8) -> Result<Vec<u8>, Cjt188Error> {
    let head = f.data.get(..3).ok_or_else(|| {
        Cjt188Error::malformed(format!(
            "an answer of {} data bytes, too short for an identifier and a sequence number",
            f.data.len()
        ))
    })?;
    let got = [head[0], head[1]];
    if got != di.to_be_bytes() && got != di.to_le_bytes() {
        return Err(Cjt188Error::malformed(format!(
            "an answer for identifier {:02X}{:02X}, {di:04X} was asked",
            got[0], got[1]
        )));
    }
    if head[2] != ser {
        return Err(Cjt188Error::Stale {
            asked: ser,
            answered: head[2],
        });
    }
    Ok(f.data[3..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::meterbus::frame::checksum as sum;

    fn answer(t: MeterType, a: Address, control: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![WAKE_UP, WAKE_UP, START, t.0];
        out.extend_from_slice(&a.wire());
        out.extend_from_slice(&[control, data.len() as u8]);
        out.extend_from_slice(data);
        let cs = sum(&out[2..]);
        out.extend_from_slice(&[cs, END]);
        out
    }

    fn meter() -> Address {
        Address::parse("12").unwrap()
    }

    #[test]
    fn addresses_read_as_printed_and_go_lowest_byte_first() {
        let a = Address::parse("00000012345678").unwrap();
        assert_eq!(a.wire(), [0x78, 0x56, 0x34, 0x12, 0, 0, 0]);
        assert_eq!(a.to_string(), "00000012345678");
        assert_eq!(Address::parse("12345678"), Ok(a));
        assert_eq!(Address::parse("AAAAAAAAAAAAAA"), Ok(Address::WILDCARD));
        assert!(Address::parse("AAAAAAAAAA5678").unwrap().matches(a));
        for bad in ["", "123456789012345", "0000001234567A", "AA"] {
            assert!(
                Address::parse(bad).unwrap_err().contains("fourteen"),
                "{bad:?}"
            );
        }
        assert_eq!(MeterType::parse("cold_water"), Ok(MeterType::COLD_WATER));
        assert!(MeterType::parse("water").is_err());
        assert!(MeterType::HEAT.is_heat() && !MeterType::GAS.is_heat());
    }

    #[test]
    fn the_read_request_is_the_collectors_frame() {
        // Cold water meter 00000000000012, read 901F, SER 0, as collectors send it:
        // FE FE FE 68 10 12 00 00 00 00 00 00 01 03 90 1F 00 3D 16.
        // Checksum: 0x68 + 0x10 + 0x12 + 0x01 + 0x03 + 0x90 + 0x1F + 0x00
        //         = 104 + 16 + 18 + 1 + 3 + 144 + 31 = 317 = 0x13D → 0x3D.
        let req = read_request(
            MeterType::COLD_WATER,
            meter(),
            DI_METERING,
            0,
            DiOrder::AsWritten,
        );
        assert_eq!(
            req,
            [
                0xFE, 0xFE, 0xFE, 0x68, 0x10, 0x12, 0, 0, 0, 0, 0, 0, 0x01, 0x03, 0x90, 0x1F, 0x00,
                0x3D, 0x16
            ]
        );
        // Swapped: 1F 90, the same sum.
        let swapped = read_request(
            MeterType::COLD_WATER,
            meter(),
            DI_METERING,
            0,
            DiOrder::Swapped,
        );
        assert_eq!(swapped[14..], [0x1F, 0x90, 0x00, 0x3D, 0x16]);
        // Read address: type AA, address AA × 7, 03, 03, 81 0A SER.
        // 0x68 + 8 × 0xAA + 0x03 + 0x03 + 0x81 + 0x0A + 0x00 = 104 + 1360 + 6 + 139 = 1609
        // = 0x649 → 0x49.
        let find = read_address_request(0, DiOrder::AsWritten);
        assert_eq!(
            find[3..],
            [
                0x68, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0x03, 0x03, 0x81, 0x0A, 0x00,
                0x49, 0x16
            ]
        );
    }

    #[test]
    fn the_agent_sends_only_reads() {
        for req in [
            read_request(MeterType::GAS, meter(), DI_METERING, 7, DiOrder::AsWritten),
            read_address_request(1, DiOrder::Swapped),
        ] {
            assert!(is_read(control_of(&req).unwrap()));
            assert_eq!(frame_length(&req), Ok(Some(req.len())));
        }
        // Write data 0x04, write address 0x15, valve and sync 0x16 are not reads.
        for control in [0x04, 0x15, 0x16, 0x81] {
            assert!(!is_read(control), "{control:#04x}");
        }
    }

    #[test]
    fn an_answer_hands_back_the_data_in_either_identifier_order() {
        let t = MeterType::COLD_WATER;
        for di in [[0x90, 0x1F], [0x1F, 0x90]] {
            let frame = answer(t, meter(), 0x81, &[di[0], di[1], 5, 0xAB, 0xCD]);
            assert_eq!(
                read_reply(&frame, t, meter(), DI_METERING, 5),
                Ok(vec![0xAB, 0xCD])
            );
        }
        // A wildcard type takes any meter's answer.
        let frame = answer(MeterType::GAS, meter(), 0x81, &[0x90, 0x1F, 5]);
        assert!(read_reply(&frame, MeterType::WILDCARD, meter(), DI_METERING, 5).is_ok());
    }

    #[test]
    fn refusals_stale_answers_and_other_meters_are_named() {
        let t = MeterType::COLD_WATER;
        // 0xC1: abnormal, SER and status 04 00 (battery low).
        let e = read_reply(
            &answer(t, meter(), 0xC1, &[5, 0x04, 0x00]),
            t,
            meter(),
            DI_METERING,
            5,
        )
        .unwrap_err();
        assert_eq!(
            e,
            Cjt188Error::Refused {
                status: Some([0x04, 0x00])
            }
        );
        assert!(e.to_string().contains("swapped"), "{e}");
        assert!(read_reply(&answer(t, meter(), 0xC1, &[]), t, meter(), DI_METERING, 5).is_err());
        let e = read_reply(
            &answer(t, meter(), 0x81, &[0x90, 0x1F, 4]),
            t,
            meter(),
            DI_METERING,
            5,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                Cjt188Error::Stale {
                    asked: 5,
                    answered: 4
                }
            ),
            "{e}"
        );
        let other = Address::parse("13").unwrap();
        let e = read_reply(
            &answer(t, other, 0x81, &[0x90, 0x1F, 5]),
            t,
            meter(),
            DI_METERING,
            5,
        )
        .unwrap_err();
        assert_eq!(e.kind(), "address");
        assert!(e.to_string().contains("00000000000013"), "{e}");
        // A heat meter where a water meter was configured.
        let e = read_reply(
            &answer(MeterType::HEAT, meter(), 0x81, &[0x90, 0x1F, 5]),
            t,
            meter(),
            DI_METERING,
            5,
        )
        .unwrap_err();
        assert!(e.to_string().contains("heat meter"), "{e}");
        let e = read_reply(
            &answer(t, meter(), 0x81, &[0xD1, 0x20, 5]),
            t,
            meter(),
            DI_METERING,
            5,
        )
        .unwrap_err();
        assert!(e.to_string().contains("D120"), "{e}");
        let e = read_reply(
            &read_request(t, meter(), DI_METERING, 5, DiOrder::AsWritten),
            t,
            meter(),
            DI_METERING,
            5,
        )
        .unwrap_err();
        assert!(e.to_string().contains("echo"), "{e}");
    }

    #[test]
    fn the_address_answer_names_type_and_meter() {
        let a = Address::parse("20260000001234").unwrap();
        let frame = answer(MeterType::HOT_WATER, a, 0x83, &[0x81, 0x0A, 1]);
        assert_eq!(address_reply(&frame, 1), Ok((MeterType::HOT_WATER, a)));
        assert!(
            address_reply(&answer(MeterType::HOT_WATER, a, 0x81, &[0x81, 0x0A, 1]), 1).is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_the_reader_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let _ = frame_length(&bytes);
            let _ = read_reply(&bytes, MeterType::COLD_WATER, meter(), DI_METERING, 0);
            let _ = address_reply(&bytes, 0);
        }

        #[test]
        fn no_answer_with_a_good_checksum_makes_the_reader_panic(
            t in proptest::num::u8::ANY,
            control in proptest::num::u8::ANY,
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..60),
        ) {
            let frame = answer(MeterType(t), meter(), control, &data);
            if let Ok(data) = read_reply(&frame, MeterType::WILDCARD, meter(), DI_METERING, 0) {
                let _ = super::super::data::flow_reading(&data);
                let _ = super::super::data::heat_reading(&data);
            }
            let _ = address_reply(&frame, 0);
        }
    }

    #[test]
    fn every_malformed_frame_is_an_error_not_a_panic() {
        let t = MeterType::COLD_WATER;
        let good = answer(t, meter(), 0x81, &[0x90, 0x1F, 0, 1, 2, 3]);
        let mut bad = good.clone();
        bad[15] ^= 0x10;
        assert_eq!(
            read_reply(&bad, t, meter(), DI_METERING, 0)
                .unwrap_err()
                .kind(),
            "checksum"
        );
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = 0;
        assert!(read_reply(&bad, t, meter(), DI_METERING, 0).is_err());
        let mut lying = good.clone();
        lying[12] = 0xFF;
        assert!(read_reply(&lying, t, meter(), DI_METERING, 0).is_err());
        let mut long = good.clone();
        long.push(0x16);
        assert!(read_reply(&long, t, meter(), DI_METERING, 0).is_err());
        for n in 0..good.len() {
            assert!(
                read_reply(&good[..n], t, meter(), DI_METERING, 0).is_err(),
                "{n}"
            );
        }
        assert!(frame_length(&[0xFE; 20]).is_err());
        assert!(
            frame_length(&[0x10])
                .unwrap_err()
                .to_string()
                .contains("parity")
        );
        assert_eq!(frame_length(&[0xFE, 0x68, 0x10]), Ok(None));
    }
}
