//! DL/T 645 frames, master side and read only: the agent builds exactly three requests, read
//! data, read follow-up data and (for commissioning) read the communication address. There is
//! no function here that builds a write, a time broadcast, a freeze, a clear or a relay
//! command, and [`read_request`]'s siblings are the only callers of the frame builder: "the
//! agent never writes to a meter" holds by what this module can say, and [`is_read`] lets a
//! test watching the wire prove it.
//!
//! Everything is pure: bytes in, bytes or errors out, no serial port. Every length read from a
//! meter is checked against the bytes that are really there before it is used.
//!
//! ```text
//! FE FE FE FE                 wake-up preamble (0–4 bytes; not part of the checksum)
//! 68 A0 A1 A2 A3 A4 A5 68     start, address (12 BCD digits, lowest byte first), start again
//! C  L                        control code, data length
//! D0 … D(L-1)                 data, each byte + 0x33 on the wire
//! CS 16                       sum mod 256 of every byte from the first 68 to the data; end
//! ```
//!
//! The control code's bits: D7 direction (1 = the meter answers), D6 abnormal answer, D5
//! follow-up frames exist, D4–D0 the function.

use std::fmt;

use crate::source::meterbus::frame::{self as shared, Framing};
pub use crate::source::meterbus::frame::{END, MAX_PREAMBLE, START, WAKE_UP};

/// What the agent sends before every request: four wake-up bytes, as the standard shows.
pub const PREAMBLE: [u8; 4] = [WAKE_UP; 4];
/// Added to every data byte on the wire, so that a data field of zeros is not a line of
/// idle bits.
pub const DATA_OFFSET: u8 = 0x33;
/// `68`, six address bytes, `68`, control, length.
pub const HEADER: usize = 10;
/// The longest frame that can arrive: preamble, header, 255 data bytes, checksum and end.
pub const MAX_FRAME: usize = MAX_PREAMBLE + HEADER + 255 + 2;

/// Function codes (D4–D0) the agent sends. 2007: read data, read follow-up data, read the
/// communication address. 1997: read data, read follow-up data.
const READ_2007: u8 = 0x11;
const READ_FOLLOW_UP_2007: u8 = 0x12;
const READ_ADDRESS_2007: u8 = 0x13;
const READ_1997: u8 = 0x01;
const READ_FOLLOW_UP_1997: u8 = 0x02;
/// Control code bits.
const ANSWER: u8 = 0x80;
const ABNORMAL: u8 = 0x40;
const FOLLOW_UP: u8 = 0x20;
const FUNCTION: u8 = 0x1F;

/// Which edition of the standard a meter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edition {
    V2007,
    V1997,
}

impl fmt::Display for Edition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edition::V2007 => f.write_str("DL/T 645-2007"),
            Edition::V1997 => f.write_str("DL/T 645-1997"),
        }
    }
}

/// A meter's communication address: twelve BCD digits, as printed on the nameplate (often
/// the serial number's last twelve digits). Held in wire order, lowest byte first.
///
/// A byte of `AA` is a wildcard: a meter answers whatever stands there. All six `AA` reach
/// every meter on the bus, which is how [`read_address_request`] finds a single unknown
/// meter during commissioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address([u8; 6]);

impl Address {
    /// Every byte a wildcard: any single meter on the bus answers.
    pub const WILDCARD: Address = Address([0xAA; 6]);

    /// The address as it stands in a frame, lowest byte first.
    pub fn from_wire(bytes: [u8; 6]) -> Address {
        Address(bytes)
    }

    pub fn wire(self) -> [u8; 6] {
        self.0
    }

    /// Reads the address the way the nameplate shows it: up to twelve decimal digits, highest
    /// first, zeros added in front (`123456` is `000000123456`); in the twelve-digit form a
    /// digit pair may be `AA` (a wildcard byte).
    pub fn parse(text: &str) -> Result<Address, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "meter address {text:?}: write the twelve digits from the meter's nameplate \
                 (e.g. 000012345678), or fewer digits for leading zeros"
            )
        };
        if text.is_empty() || text.len() > 12 || !text.is_ascii() {
            return Err(bad());
        }
        let padded = format!("{text:0>12}");
        let mut wire = [0u8; 6];
        for (i, pair) in padded.as_bytes().chunks_exact(2).enumerate() {
            let byte = match pair {
                [b'A' | b'a', b'A' | b'a'] if text.len() == 12 => 0xAA,
                [h @ b'0'..=b'9', l @ b'0'..=b'9'] => (h - b'0') << 4 | (l - b'0'),
                _ => return Err(bad()),
            };
            // The text is highest byte first; the wire lowest first.
            wire[5 - i] = byte;
        }
        Ok(Address(wire))
    }

    /// Whether a meter answering from `answered` is the one this address asked for: equal
    /// bytes, or a wildcard byte here.
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

/// A data identifier: four bytes DI3…DI0 in the 2007 edition (`02010100`, phase A voltage),
/// two bytes DI1 DI0 in the 1997 edition (`B611`, the same voltage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataId {
    V2007(u32),
    V1997(u16),
}

impl DataId {
    /// Reads an identifier as the standard's tables print it: eight hex digits for 2007, four
    /// for 1997.
    pub fn parse(text: &str) -> Result<DataId, String> {
        let text = text.trim();
        let hex = text.chars().all(|c| c.is_ascii_hexdigit());
        match (text.len(), hex) {
            (8, true) => u32::from_str_radix(text, 16)
                .map(DataId::V2007)
                .map_err(|e| e.to_string()),
            (4, true) => u16::from_str_radix(text, 16)
                .map(DataId::V1997)
                .map_err(|e| e.to_string()),
            _ => Err(format!(
                "data identifier {text:?}: write eight hex digits for a DL/T 645-2007 meter \
                 (00010000 forward active energy) or four for a 1997 meter (9010)"
            )),
        }
    }

    pub fn edition(self) -> Edition {
        match self {
            DataId::V2007(_) => Edition::V2007,
            DataId::V1997(_) => Edition::V1997,
        }
    }

    /// The identifier in wire order, DI0 first (before the 0x33 offset).
    pub fn wire(self) -> Vec<u8> {
        match self {
            DataId::V2007(di) => di.to_le_bytes().to_vec(),
            DataId::V1997(di) => di.to_le_bytes().to_vec(),
        }
    }
}

impl fmt::Display for DataId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataId::V2007(di) => write!(f, "{di:08X}"),
            DataId::V1997(di) => write!(f, "{di:04X}"),
        }
    }
}

/// What went wrong between the agent and a meter, in words an engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dlt645Error {
    /// Bytes that are not the DL/T 645 frame they should be.
    Malformed(String),
    /// The checksum disagrees with the bytes: interference on the line, or two meters
    /// answering at once.
    Checksum { sent: u8, computed: u8 },
    /// Another meter answered than the one asked.
    WrongMeter { asked: Address, answered: Address },
    /// The meter answered with an abnormal answer and its error byte.
    Refused { code: u8, edition: Edition },
}

impl Dlt645Error {
    fn malformed(what: impl Into<String>) -> Dlt645Error {
        Dlt645Error::Malformed(what.into())
    }

    /// The kind the device health counts the error under.
    pub fn kind(&self) -> &'static str {
        match self {
            Dlt645Error::Malformed(_) => "protocol",
            Dlt645Error::Checksum { .. } => "checksum",
            Dlt645Error::WrongMeter { .. } => "address",
            Dlt645Error::Refused { .. } => "refused",
        }
    }
}

/// The meaning of each bit of an abnormal answer's error byte, bit 0 first.
fn error_bits(edition: Edition) -> [Option<&'static str>; 8] {
    match edition {
        Edition::V2007 => [
            Some("other error"),
            Some(
                "no such data (the meter does not have this identifier: check it against the \
                 meter's manual, or read it with a 1997 identifier)",
            ),
            Some("password wrong or access not authorised"),
            Some("baud rate cannot be changed"),
            Some("too many annual time zones"),
            Some("too many daily time periods"),
            Some("too many tariffs"),
            None,
        ],
        Edition::V1997 => [
            Some("illegal data"),
            Some(
                "data identifier wrong (the meter does not have this identifier: check it \
                 against the meter's manual)",
            ),
            Some("password wrong"),
            None,
            Some("too many annual time zones"),
            Some("too many daily time periods"),
            Some("too many tariffs"),
            None,
        ],
    }
}

/// The reasons an error byte names, in words; an empty byte or unknown bits say so.
pub fn refusal_reasons(code: u8, edition: Edition) -> Vec<String> {
    let meanings = error_bits(edition);
    let mut out: Vec<String> = (0..8)
        .filter(|bit| code >> bit & 1 == 1)
        .map(|bit| match meanings[bit] {
            Some(m) => m.to_string(),
            None => format!("reserved bit {bit}"),
        })
        .collect();
    if out.is_empty() {
        out.push("no reason given".to_string());
    }
    out
}

impl fmt::Display for Dlt645Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dlt645Error::Malformed(what) => write!(f, "not a DL/T 645 answer: {what}"),
            Dlt645Error::Checksum { sent, computed } => write!(
                f,
                "checksum {sent:#04x} where the bytes add up to {computed:#04x}: interference \
                 on the RS-485 line (check the shield, the termination and the A/B wires) or \
                 two meters answering at once"
            ),
            Dlt645Error::WrongMeter { asked, answered } => write!(
                f,
                "meter {answered} answered where {asked} was asked: check the address on the \
                 meter's nameplate, or two meters on the bus share one address"
            ),
            Dlt645Error::Refused { code, edition } => write!(
                f,
                "the meter refused the read (error byte {code:#04x}, {edition}): {}",
                refusal_reasons(*code, *edition).join("; ")
            ),
        }
    }
}

impl std::error::Error for Dlt645Error {}

/// One frame with its data, the 0x33 offset taken off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub address: Address,
    pub control: u8,
    pub data: Vec<u8>,
}

/// The frame builder. Private: only the read requests below call it, so nothing else can go
/// on the wire.
fn frame(address: Address, control: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREAMBLE.len() + HEADER + data.len() + 2);
    out.extend_from_slice(&PREAMBLE);
    out.push(START);
    out.extend_from_slice(&address.wire());
    out.push(START);
    out.push(control);
    // Requests carry at most a data identifier and a sequence number: five bytes.
    out.push(data.len() as u8);
    out.extend(data.iter().map(|b| b.wrapping_add(DATA_OFFSET)));
    shared::seal(&mut out, PREAMBLE.len());
    out
}

/// Read data: the value of identifier `id` from the meter at `address` (control 0x11 in
/// 2007, 0x01 in 1997).
pub fn read_request(address: Address, id: DataId) -> Vec<u8> {
    let control = match id.edition() {
        Edition::V2007 => READ_2007,
        Edition::V1997 => READ_1997,
    };
    frame(address, control, &id.wire())
}

/// Read follow-up data: frame `seq` (1, 2, …) of a value too long for one frame, after an
/// answer with the follow-up bit set (control 0x12 with the identifier and the sequence
/// number in 2007, 0x02 with the identifier in 1997).
pub fn read_follow_up_request(address: Address, id: DataId, seq: u8) -> Vec<u8> {
    match id.edition() {
        Edition::V2007 => {
            let mut data = id.wire();
            data.push(seq);
            frame(address, READ_FOLLOW_UP_2007, &data)
        }
        Edition::V1997 => frame(address, READ_FOLLOW_UP_1997, &id.wire()),
    }
}

/// Read communication address (2007, control 0x13) to the wildcard address: the one meter on
/// the bus answers with its address. Only for commissioning with a single meter connected;
/// with several they all answer at once and the answer is garbled.
pub fn read_address_request() -> Vec<u8> {
    frame(Address::WILDCARD, READ_ADDRESS_2007, &[])
}

/// Whether `control` is one of the read functions the agent sends: what a test watching the
/// wire checks every request against.
pub fn is_read(control: u8) -> bool {
    matches!(
        control,
        READ_2007 | READ_FOLLOW_UP_2007 | READ_ADDRESS_2007 | READ_1997 | READ_FOLLOW_UP_1997
    )
}

/// The control code of the frame in `bytes`, after the preamble, if the header is there.
pub fn control_of(bytes: &[u8]) -> Option<u8> {
    let at = bytes.iter().position(|b| *b != WAKE_UP)?;
    bytes.get(at + 8).copied()
}

/// How many bytes from the start of `buf` the frame in it takes, preamble included, once the
/// header is there; `None` while more bytes are needed to know. What a serial reader calls
/// after each read to know when to stop.
pub fn frame_length(buf: &[u8]) -> Result<Option<usize>, Dlt645Error> {
    let Some(at) = shared::locate(buf, HEADER).map_err(framing)? else {
        return Ok(None);
    };
    // The second start byte stands before the length byte, so it is there too.
    let second = buf[at.preamble + 7];
    if second != START {
        return Err(Dlt645Error::malformed(format!(
            "byte {second:#04x} where the second start 0x68 belongs"
        )));
    }
    Ok(Some(at.total))
}

/// The shared framing's complaint in DL/T 645's words.
fn framing(f: Framing) -> Dlt645Error {
    match f {
        Framing::Preamble(n) => Dlt645Error::malformed(format!(
            "{n} wake-up bytes (0xFE) in a row; a meter sends at most 4"
        )),
        Framing::NotStart(byte) => Dlt645Error::malformed(format!(
            "byte {byte:#04x} where the frame's start 0x68 belongs: another protocol on the \
             bus, or the wrong baud rate or parity (DL/T 645-2007 meters default to 2400 \
             baud, 8 data bits, even parity, 1 stop bit)"
        )),
        Framing::Length { got, total: 0 } => {
            Dlt645Error::malformed(format!("a frame cut short at {got} bytes"))
        }
        Framing::Length { got, total } => Dlt645Error::malformed(format!(
            "{got} bytes where the length byte makes a frame of {total}"
        )),
        Framing::Checksum { sent, computed } => Dlt645Error::Checksum { sent, computed },
        Framing::End(byte) => {
            Dlt645Error::malformed(format!("byte {byte:#04x} where the end 0x16 belongs"))
        }
    }
}

/// Checks one whole frame (preamble allowed, nothing after it) and takes it apart.
pub fn parse(bytes: &[u8]) -> Result<Frame, Dlt645Error> {
    // The second start byte first: a frame without it is not DL/T 645, whatever its sum.
    frame_length(bytes)?;
    let body = shared::body(bytes, HEADER).map_err(framing)?;
    let mut address = [0u8; 6];
    address.copy_from_slice(&body[1..7]);
    Ok(Frame {
        address: Address(address),
        control: body[8],
        data: body[HEADER..]
            .iter()
            .map(|b| b.wrapping_sub(DATA_OFFSET))
            .collect(),
    })
}

/// A meter's normal answer to a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The value's bytes, the identifier and sequence number taken off: what [`super::data`]
    /// decodes.
    pub value: Vec<u8>,
    /// The meter has more frames of this value: ask for them with
    /// [`read_follow_up_request`].
    pub more: bool,
    /// The sequence number a 2007 follow-up answer carries.
    pub seq: Option<u8>,
}

/// Checks a frame against what was asked (its checksum, the meter's address, the answer's
/// function and the echoed identifier) and hands back the value's bytes or the meter's
/// refusal. Takes the answer to [`read_request`] and to [`read_follow_up_request`].
pub fn read_reply(bytes: &[u8], asked: Address, id: DataId) -> Result<Reply, Dlt645Error> {
    let f = parse(bytes)?;
    let (read, follow_up) = match id.edition() {
        Edition::V2007 => (READ_2007, READ_FOLLOW_UP_2007),
        Edition::V1997 => (READ_1997, READ_FOLLOW_UP_1997),
    };
    check_answer(&f, asked, &[read, follow_up], id.edition())?;
    let function = f.control & FUNCTION;
    let di = id.wire();
    let Some(rest) = f.data.strip_prefix(&di[..]) else {
        let echoed = f.data.get(..di.len()).map(|d| {
            d.iter()
                .rev()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        });
        return Err(Dlt645Error::malformed(match echoed {
            Some(e) => format!("an answer for identifier {e}, {id} was asked"),
            None => format!(
                "an answer of {} data bytes, too short for identifier {id}",
                f.data.len()
            ),
        }));
    };
    let (value, seq) = if function == READ_FOLLOW_UP_2007 {
        match rest.split_last() {
            Some((seq, value)) => (value.to_vec(), Some(*seq)),
            None => {
                return Err(Dlt645Error::malformed(
                    "a follow-up answer without its sequence number",
                ));
            }
        }
    } else {
        (rest.to_vec(), None)
    };
    Ok(Reply {
        value,
        more: f.control & FOLLOW_UP != 0,
        seq,
    })
}

/// The address in the one meter's answer to [`read_address_request`].
pub fn address_reply(bytes: &[u8]) -> Result<Address, Dlt645Error> {
    let f = parse(bytes)?;
    check_answer(&f, Address::WILDCARD, &[READ_ADDRESS_2007], Edition::V2007)?;
    let data: [u8; 6] = f.data.as_slice().try_into().map_err(|_| {
        Dlt645Error::malformed(format!(
            "an address answer of {} data bytes (6 expected)",
            f.data.len()
        ))
    })?;
    let address = Address(data);
    if address != f.address {
        return Err(Dlt645Error::malformed(format!(
            "the answer names address {address} but comes from {}",
            f.address
        )));
    }
    Ok(address)
}

/// An answer's direction, address and function, and its refusal if it is one.
fn check_answer(
    f: &Frame,
    asked: Address,
    functions: &[u8],
    edition: Edition,
) -> Result<(), Dlt645Error> {
    if f.control & ANSWER == 0 {
        return Err(Dlt645Error::malformed(format!(
            "a request (control {:#04x}), not an answer: the RS-485 adapter echoes what the \
             agent sends (switch its echo off) or another master is on the bus",
            f.control
        )));
    }
    if !asked.matches(f.address) {
        return Err(Dlt645Error::WrongMeter {
            asked,
            answered: f.address,
        });
    }
    let function = f.control & FUNCTION;
    if !functions.contains(&function) {
        return Err(Dlt645Error::malformed(format!(
            "an answer to function {function:#04x}, the agent asked {:#04x}",
            functions[0]
        )));
    }
    if f.control & ABNORMAL != 0 {
        let code = *f
            .data
            .first()
            .ok_or_else(|| Dlt645Error::malformed("an abnormal answer without its error byte"))?;
        return Err(Dlt645Error::Refused { code, edition });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::meterbus::frame::checksum as sum;

    /// A meter's answer: header, data with the offset added, checksum and end, after two
    /// wake-up bytes.
    fn answer(address: Address, control: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![WAKE_UP, WAKE_UP, START];
        out.extend_from_slice(&address.wire());
        out.extend_from_slice(&[START, control, data.len() as u8]);
        out.extend(data.iter().map(|b| b.wrapping_add(DATA_OFFSET)));
        let cs = sum(&out[2..]);
        out.extend_from_slice(&[cs, END]);
        out
    }

    fn meter() -> Address {
        Address::parse("000012345678").unwrap()
    }

    #[test]
    fn addresses_read_as_on_the_nameplate_and_go_lowest_byte_first() {
        let a = meter();
        assert_eq!(a.wire(), [0x78, 0x56, 0x34, 0x12, 0x00, 0x00]);
        assert_eq!(a.to_string(), "000012345678");
        assert_eq!(
            Address::parse("12345678"),
            Ok(a),
            "leading zeros may be left off"
        );
        assert_eq!(Address::parse("AAAAAAAAAAAA"), Ok(Address::WILDCARD));
        // A wildcard byte matches any answering meter there; the other bytes must agree.
        let partial = Address::parse("AAAA12345678").unwrap();
        assert!(partial.matches(a));
        assert!(!partial.matches(Address::parse("000012345679").unwrap()));
        for bad in [
            "",
            "1234567890123",
            "00001234567A",
            "AA12",
            "00001234 678",
            "一二",
        ] {
            let e = Address::parse(bad).unwrap_err();
            assert!(e.contains("nameplate"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn identifiers_say_their_edition_by_their_length() {
        assert_eq!(DataId::parse("02010100"), Ok(DataId::V2007(0x0201_0100)));
        assert_eq!(DataId::parse("B611"), Ok(DataId::V1997(0xB611)));
        assert_eq!(DataId::V2007(0x0201_0100).wire(), [0x00, 0x01, 0x01, 0x02]);
        assert_eq!(DataId::V2007(0x0001_0000).to_string(), "00010000");
        for bad in ["0201010", "G2010100", "", "+2010100"] {
            assert!(DataId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_broadcast_address_read_is_the_standards_example() {
        // The well-known frame: FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16.
        // Checksum: 0x68 + 6 × 0xAA + 0x68 + 0x13 + 0x00 = 104 + 1020 + 104 + 19 = 1247
        // = 0x4DF → 0xDF.
        assert_eq!(
            read_address_request(),
            [
                0xFE, 0xFE, 0xFE, 0xFE, 0x68, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0x68, 0x13, 0x00,
                0xDF, 0x16
            ]
        );
    }

    #[test]
    fn a_read_request_carries_the_identifier_lowest_byte_first_plus_0x33() {
        // Forward active total energy 00 01 00 00 from meter 000012345678.
        // Data on the wire: DI0..DI3 = 00 00 01 00, + 0x33 → 33 33 34 33.
        // Checksum: 0x68 + (0x78 + 0x56 + 0x34 + 0x12) + 0x68 + 0x11 + 0x04
        //         + (0x33 + 0x33 + 0x34 + 0x33)
        //         = 104 + 276 + 104 + 17 + 4 + 205 = 710 = 0x2C6 → 0xC6.
        let req = read_request(meter(), DataId::V2007(0x0001_0000));
        assert_eq!(
            req[4..],
            [
                0x68, 0x78, 0x56, 0x34, 0x12, 0x00, 0x00, 0x68, 0x11, 0x04, 0x33, 0x33, 0x34, 0x33,
                0xC6, 0x16
            ]
        );
        // The 1997 read of 9010: control 0x01, DI0 DI1 = 10 90 → 43 C3.
        // Checksum: 104 + 276 + 104 + 0x01 + 0x02 + 0x43 + 0xC3 = 749 = 0x2ED → 0xED.
        // Both frames are byte for byte what the `dlt645` package (PyPI, 3.2.0) builds with
        // DLT645Protocol.build_frame for the same address, control and identifier.
        let old = read_request(meter(), DataId::V1997(0x9010));
        assert_eq!(old[12..18], [0x01, 0x02, 0x43, 0xC3, 0xED, 0x16]);
        assert_eq!(parse(&old).unwrap().data, [0x10, 0x90]);
    }

    #[test]
    fn the_agent_sends_only_read_functions() {
        let id = DataId::V2007(0x0203_0000);
        for req in [
            read_request(meter(), id),
            read_request(meter(), DataId::V1997(0xB630)),
            read_follow_up_request(meter(), id, 1),
            read_follow_up_request(meter(), DataId::V1997(0xB630), 1),
            read_address_request(),
        ] {
            let control = control_of(&req).unwrap();
            assert!(is_read(control), "{control:#04x}");
            assert_eq!(frame_length(&req), Ok(Some(req.len())));
        }
        // Write data (0x14), broadcast time (0x08), relay control (0x1C) are not reads.
        for control in [0x14, 0x08, 0x1C, 0x15, 0x1A, 0x91] {
            assert!(!is_read(control), "{control:#04x}");
        }
    }

    #[test]
    fn a_normal_answer_gives_the_value_bytes() {
        // 0x91 with DI 00 01 00 00 and 12345678 (BCD, lowest byte first: 78 56 34 12), i.e.
        // 123456.78 kWh in XXXXXX.XX.
        let id = DataId::V2007(0x0001_0000);
        let frame = answer(meter(), 0x91, &[0, 0, 1, 0, 0x78, 0x56, 0x34, 0x12]);
        let reply = read_reply(&frame, meter(), id).unwrap();
        assert_eq!(reply.value, [0x78, 0x56, 0x34, 0x12]);
        assert!(!reply.more);
        assert_eq!(reply.seq, None);
        // Without a preamble too.
        assert_eq!(read_reply(&frame[2..], meter(), id), Ok(reply));
    }

    #[test]
    fn follow_up_frames_are_flagged_and_numbered() {
        let id = DataId::V2007(0x0001_FF00);
        // 0xB1: more frames follow.
        let first = answer(meter(), 0xB1, &[0, 0xFF, 1, 0, 0x11, 0x22]);
        assert!(read_reply(&first, meter(), id).unwrap().more);
        // Follow-up request: control 0x12, DI + SEQ 1.
        let req = read_follow_up_request(meter(), id, 1);
        let f = parse(&req).unwrap();
        assert_eq!((f.control, f.data), (0x12, vec![0, 0xFF, 1, 0, 1]));
        // Its last answer: 0x92, DI, value, SEQ.
        let last = answer(meter(), 0x92, &[0, 0xFF, 1, 0, 0x33, 0x44, 1]);
        let reply = read_reply(&last, meter(), id).unwrap();
        assert_eq!(
            reply,
            Reply {
                value: vec![0x33, 0x44],
                more: false,
                seq: Some(1)
            }
        );
        assert!(read_reply(&answer(meter(), 0x92, &[0, 0xFF, 1, 0]), meter(), id).is_err());
    }

    #[test]
    fn an_abnormal_answer_explains_its_error_byte() {
        let id = DataId::V2007(0x0280_0002);
        // 0xD1 with ERR 0x02: no such data.
        let e = read_reply(&answer(meter(), 0xD1, &[0x02]), meter(), id).unwrap_err();
        assert_eq!(
            e,
            Dlt645Error::Refused {
                code: 2,
                edition: Edition::V2007
            }
        );
        assert!(
            e.to_string().contains("does not have this identifier"),
            "{e}"
        );
        // 0x05 = bits 0 and 2: other error and password.
        let e = read_reply(&answer(meter(), 0xD1, &[0x05]), meter(), id).unwrap_err();
        assert!(e.to_string().contains("other error; password"), "{e}");
        // A 1997 refusal (0xC1), bit 1: identifier wrong.
        let e = read_reply(
            &answer(meter(), 0xC1, &[0x02]),
            meter(),
            DataId::V1997(0xB611),
        )
        .unwrap_err();
        assert!(e.to_string().contains("DL/T 645-1997"), "{e}");
        assert!(e.to_string().contains("data identifier wrong"), "{e}");
        assert_eq!(refusal_reasons(0x80, Edition::V2007), ["reserved bit 7"]);
        assert_eq!(refusal_reasons(0, Edition::V2007), ["no reason given"]);
        assert!(read_reply(&answer(meter(), 0xD1, &[]), meter(), id).is_err());
    }

    #[test]
    fn another_meter_an_echo_or_another_identifier_is_not_the_answer() {
        let id = DataId::V2007(0x0201_0100);
        let other = Address::parse("000012345679").unwrap();
        let e =
            read_reply(&answer(other, 0x91, &[0, 1, 1, 2, 0x20, 0x22]), meter(), id).unwrap_err();
        assert_eq!(e.kind(), "address");
        assert!(e.to_string().contains("000012345679 answered"), "{e}");
        // The request itself read back (a half-duplex adapter's echo).
        let e = read_reply(&read_request(meter(), id), meter(), id).unwrap_err();
        assert!(e.to_string().contains("echo"), "{e}");
        // An answer for phase B's voltage.
        let e = read_reply(
            &answer(meter(), 0x91, &[0, 2, 1, 2, 0x20, 0x22]),
            meter(),
            id,
        )
        .unwrap_err();
        assert!(e.to_string().contains("02010200"), "{e}");
        // An answer to read-address where read-data was asked.
        let e = read_reply(&answer(meter(), 0x93, &[0x78, 0x56]), meter(), id).unwrap_err();
        assert_eq!(e.kind(), "protocol");
    }

    #[test]
    fn the_address_answer_names_the_meter() {
        let a = meter();
        let frame = answer(a, 0x93, &a.wire());
        assert_eq!(address_reply(&frame), Ok(a));
        assert!(address_reply(&answer(a, 0x93, &[0x78])).is_err());
        assert!(address_reply(&answer(a, 0x93, &Address::WILDCARD.wire())).is_err());
    }

    proptest::proptest! {
        #[test]
        fn no_bytes_make_the_reader_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let _ = frame_length(&bytes);
            let _ = parse(&bytes);
            let _ = read_reply(&bytes, meter(), DataId::V2007(0x0001_0000));
            let _ = address_reply(&bytes);
        }

        #[test]
        fn no_answer_with_a_good_checksum_makes_the_reader_panic(
            control in proptest::num::u8::ANY,
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        ) {
            let frame = answer(meter(), control, &data);
            let _ = read_reply(&frame, meter(), DataId::V2007(0x0001_0000));
            let _ = read_reply(&frame, meter(), DataId::V1997(0x9010));
            let _ = address_reply(&frame);
        }
    }

    #[test]
    fn every_malformed_frame_is_an_error_not_a_panic() {
        let id = DataId::V2007(0x0001_0000);
        let good = answer(meter(), 0x91, &[0, 0, 1, 0, 0x78, 0x56, 0x34, 0x12]);
        // Checksum: one data bit flipped.
        let mut bad = good.clone();
        bad[14] ^= 0x01;
        let e = read_reply(&bad, meter(), id).unwrap_err();
        assert_eq!(e.kind(), "checksum", "{e}");
        assert!(e.to_string().contains("termination"), "{e}");
        // The end byte.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = 0x17;
        assert_eq!(
            read_reply(&bad, meter(), id).unwrap_err().kind(),
            "protocol"
        );
        // The second start byte.
        let mut bad = good.clone();
        bad[9] = 0x69;
        assert!(read_reply(&bad, meter(), id).is_err());
        // Trailing bytes, missing bytes, a length byte that lies.
        let mut long = good.clone();
        long.push(0);
        assert!(read_reply(&long, meter(), id).is_err());
        let mut lying = good.clone();
        lying[11] = 0xFF;
        assert!(read_reply(&lying, meter(), id).is_err());
        // Every prefix of a good frame, and noise.
        for n in 0..good.len() {
            assert!(read_reply(&good[..n], meter(), id).is_err(), "{n} bytes");
        }
        assert!(frame_length(&[0x00, 0x68]).is_err());
        assert!(frame_length(&[0xFE; 17]).is_err());
        assert_eq!(frame_length(&[0xFE; 4]), Ok(None));
        assert_eq!(frame_length(&good[..11]), Ok(None));
        let e = frame_length(&[0x01, 0x03, 0x00]).unwrap_err();
        assert!(e.to_string().contains("baud rate"), "{e}");
    }
}
