//! The MC protocol's (SLMP's) frames, client side and read only: 3E binary frames, and 4E
//! binary frames, which add a serial number that pairs each answer with its request. The
//! agent sends exactly two commands: batch read (0x0401, in word units 0x0000 or bit units
//! 0x0001) and random read (0x0403, word and double-word points). There is no function here
//! that builds a batch or random write, a remote RUN/STOP/RESET, a latch clear, a password
//! unlock or any other command: "the agent never writes to a machine" holds by what this
//! module can say, and [`command_of`] lets a test watching the wire check it.
//!
//! Everything is pure: bytes in, bytes or errors out, no socket. Every length read from a PLC
//! is checked against the bytes that are really there before it is used, and no answer
//! longer than [`MAX_FRAME`] is believed.
//!
//! Numbers are little-endian on the wire (binary code), unlike almost every other protocol
//! the agent speaks.
//!
//! ```text
//! request 3E  50 00 | NN PP II II SS | LL LL | TT TT | CC CC ss ss | payload
//!             subheader, route (network, PC, module I/O, station), request data length
//!             (from the monitoring timer to the end), monitoring timer (× 250 ms),
//!             command, subcommand
//! request 4E  54 00 QQ QQ 00 00 | route | LL LL | TT TT | CC CC ss ss | payload
//!             as 3E with a serial number QQ QQ after the subheader
//! answer  3E  D0 00 | route | LL LL | EE EE | data        (4E: D4 00 QQ QQ 00 00 | …)
//!             response data length (from the end code to the end), end code (0 = done)
//! ```

use std::fmt;
use std::ops::Range;

use super::address::{Device, Family, Kind, MAX_DEVICE_NUMBER};

/// Batch read's command code.
pub const CMD_BATCH_READ: u16 = 0x0401;
/// Random read's command code.
pub const CMD_RANDOM_READ: u16 = 0x0403;
/// Subcommand of batch and random read in word units (16 points of a bit device per word),
/// Q/L-compatible device specification (1-byte code, 3-byte number).
pub const SUB_WORDS: u16 = 0x0000;
/// Subcommand of batch read in bit units (one point each), Q/L-compatible specification.
pub const SUB_BITS: u16 = 0x0001;

/// Words one batch read may ask for (960 on Q, L, iQ-R and FX5 alike).
pub const MAX_BATCH_WORDS: u16 = 960;
/// Points one batch read in bit units may ask for on a Q, L or iQ-R CPU (binary code).
pub const MAX_BATCH_BITS_Q: u16 = 7168;
/// Points one batch read in bit units may ask for on an FX5 (binary code): half the Q's.
pub const MAX_BATCH_BITS_FX: u16 = 3584;
/// Word plus double-word points of one random read, as the Q and L CPUs' built-in Ethernet
/// ports take them. (The FX5's own limit is not confirmed here; an FX5 that takes fewer
/// answers 0xC051–0xC054, which names the planner.)
pub const MAX_RANDOM_POINTS: usize = 192;
/// The largest answer accepted from a PLC. The longest real one is a 4E answer to 7168
/// bits: 13 header bytes, the 2-byte end code and 3584 data bytes, 3599 in all; a peer
/// announcing more is not a PLC worth believing.
pub const MAX_FRAME: usize = 4096;
/// The monitoring timer the agent sends, in units of 250 ms: the PLC gives up on a request
/// it cannot finish in 1 s (0 would make it wait forever).
pub const DEFAULT_MONITOR_TIMER: u16 = 4;

const REQUEST_3E: [u8; 2] = [0x50, 0x00];
const REQUEST_4E: [u8; 2] = [0x54, 0x00];
const ANSWER_3E: [u8; 2] = [0xD0, 0x00];
const ANSWER_4E: [u8; 2] = [0xD4, 0x00];
/// What a PLC whose port is set to ASCII code answers with: the text "D0" or "D4".
const ASCII_ANSWERS: [[u8; 2]; 2] = [*b"D0", *b"D4"];

/// 3E or 4E framing; a 4E frame carries the serial number its answer must echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    E3,
    E4 { serial: u16 },
}

impl Framing {
    /// Bytes before the response data length field's count begins: the subheader (and the
    /// serial), the route and the length itself.
    pub fn answer_header(self) -> usize {
        match self {
            Framing::E3 => 9,
            Framing::E4 { .. } => 13,
        }
    }

    fn request_prefix(self) -> Vec<u8> {
        match self {
            Framing::E3 => REQUEST_3E.to_vec(),
            Framing::E4 { serial } => {
                let [lo, hi] = serial.to_le_bytes();
                vec![REQUEST_4E[0], REQUEST_4E[1], lo, hi, 0, 0]
            }
        }
    }
}

/// Which station a request goes to. [`Route::LOCAL`] is the CPU the agent is connected to;
/// the other values reach a CPU through it over a MELSEC network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub network: u8,
    pub pc: u8,
    /// 0x03FF: the host CPU (0x03E0–0x03E3 address CPUs 1–4 of a multiple-CPU system).
    pub module_io: u16,
    pub station: u8,
}

impl Route {
    /// The connected CPU itself: network 0, PC 0xFF, module I/O 0x03FF, station 0.
    pub const LOCAL: Route = Route {
        network: 0,
        pc: 0xFF,
        module_io: 0x03FF,
        station: 0,
    };

    fn bytes(&self) -> [u8; 5] {
        let [lo, hi] = self.module_io.to_le_bytes();
        [self.network, self.pc, lo, hi, self.station]
    }
}

/// What went wrong between the agent and the PLC, in words an engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McError {
    /// Bytes that are not the MC answer they should be.
    Malformed(String),
    /// The PLC answered with a non-zero end code.
    EndCode(u16),
}

impl McError {
    fn malformed(what: impl Into<String>) -> McError {
        McError::Malformed(what.into())
    }

    /// The kind the device health counts the error under.
    pub fn kind(&self) -> &'static str {
        match self {
            McError::Malformed(_) => "protocol",
            McError::EndCode(_) => "refused",
        }
    }
}

impl fmt::Display for McError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McError::Malformed(what) => write!(f, "not an MC protocol answer: {what}"),
            McError::EndCode(code) => {
                write!(f, "the PLC answered end code {code:#06X}")?;
                match code {
                    0xC050 => f.write_str(
                        ": its open port is set to ASCII code. In GX Works set the port's \
                         \"Communication Data Code\" to Binary (Ethernet port / open settings), \
                         write the parameters and reset the CPU",
                    ),
                    0xC051..=0xC054 => f.write_str(
                        ": the number of points read is more than the PLC takes in one \
                         request (a bug in the agent's request planning: please report it)",
                    ),
                    0xC056 => f.write_str(
                        ": the read goes past the last device the PLC has. Check the address \
                         against the device sizes in the PLC's parameters (GX Works: \
                         parameter → device settings)",
                    ),
                    0xC059 => f.write_str(
                        ": the PLC does not support this command. It takes 3E/4E frames only \
                         on an FX5, Q, L or iQ-R CPU's Ethernet port (an FX3U's Ethernet \
                         adapter speaks 1E frames only); check that the connection's port is \
                         an MC protocol / SLMP port",
                    ),
                    0xC05B => f.write_str(
                        ": the CPU cannot read this device (it does not have it: ZR or R on a \
                         CPU without file registers, for example)",
                    ),
                    0xC05C => f.write_str(
                        ": the request is wrong for this device (a word device read in bit \
                         units, or a contact read in word units: a bug in the agent, please \
                         report it)",
                    ),
                    0xC05F => f.write_str(
                        ": this CPU cannot execute the request. Check the route: network \
                         number, PC number and module I/O number (0x03FF for the connected \
                         CPU)",
                    ),
                    0xC061 => f.write_str(
                        ": the request's length did not match its content (a bug in the \
                         agent: please report it)",
                    ),
                    0x4000..=0x4FFF => f.write_str(
                        ": an error the CPU module detected; look the code up in the CPU's \
                         user's manual (hardware design, maintenance and inspection)",
                    ),
                    _ => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for McError {}

/// One batch read: `points` consecutive devices from `start`, in word units (`words` words;
/// for a bit device each word holds 16 points) or bit units (one point each). Built only
/// through its constructors, which keep it within what a PLC accepts in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRead {
    device: Device,
    start: u32,
    count: u16,
    bits: bool,
}

impl BatchRead {
    /// `words` words from `start`: words of a word device, or 16-point groups of a bit
    /// device (`M0` with 2 words is M0–M31). A planner should start a bit device's word read
    /// at a multiple of 16, as the MC reference's examples do: some servers (virtual-plc
    /// among them) refuse any other start.
    pub fn words(device: Device, start: u32, words: u16) -> Result<BatchRead, String> {
        if device.is_contact() {
            return Err(format!(
                "{device} (a contact) cannot be read in word units; read it in bit units"
            ));
        }
        if !(1..=MAX_BATCH_WORDS).contains(&words) {
            return Err(format!(
                "a batch read takes 1 to {MAX_BATCH_WORDS} words, not {words}"
            ));
        }
        let span = match device.kind() {
            Kind::Word => u32::from(words),
            Kind::Bit => 16 * u32::from(words),
        };
        within(device, start, span)?;
        Ok(BatchRead {
            device,
            start,
            count: words,
            bits: false,
        })
    }

    /// `points` points of a bit device from `start`, one point each.
    pub fn bits(
        device: Device,
        start: u32,
        points: u16,
        family: Family,
    ) -> Result<BatchRead, String> {
        if device.kind() != Kind::Bit {
            return Err(format!(
                "{device} is a word device: it is read in word units"
            ));
        }
        let max = match family {
            Family::Fx => MAX_BATCH_BITS_FX,
            Family::Q => MAX_BATCH_BITS_Q,
        };
        if !(1..=max).contains(&points) {
            return Err(format!(
                "a batch read in bit units takes 1 to {max} points on this PLC, not {points}"
            ));
        }
        within(device, start, u32::from(points))?;
        Ok(BatchRead {
            device,
            start,
            count: points,
            bits: true,
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn start(&self) -> u32 {
        self.start
    }

    /// Words (word units) or points (bit units) asked for.
    pub fn count(&self) -> u16 {
        self.count
    }

    pub fn in_bits(&self) -> bool {
        self.bits
    }

    /// Bytes of data the answer carries: two per word, or one per two points (four bits
    /// each, the first point in the high nibble).
    pub fn reply_bytes(&self) -> usize {
        if self.bits {
            usize::from(self.count).div_ceil(2)
        } else {
            2 * usize::from(self.count)
        }
    }
}

fn within(device: Device, start: u32, span: u32) -> Result<(), String> {
    if start
        .checked_add(span - 1)
        .is_none_or(|last| last > MAX_DEVICE_NUMBER)
    {
        return Err(format!(
            "{device} from {start} for {span} points goes past device number {MAX_DEVICE_NUMBER}"
        ));
    }
    Ok(())
}

/// One random read: scattered word points (one word each) and double-word points (two
/// words each, low word first), in that order in the answer. A bit device's point is 16
/// (word) or 32 (double word) of its points from the number given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomRead {
    words: Vec<(Device, u32)>,
    dwords: Vec<(Device, u32)>,
}

impl RandomRead {
    pub fn new(
        words: Vec<(Device, u32)>,
        dwords: Vec<(Device, u32)>,
    ) -> Result<RandomRead, String> {
        let total = words.len() + dwords.len();
        if total == 0 || total > MAX_RANDOM_POINTS {
            return Err(format!(
                "a random read takes 1 to {MAX_RANDOM_POINTS} points, not {total}"
            ));
        }
        for (device, number) in words.iter().chain(&dwords) {
            if device.is_contact() {
                return Err(format!(
                    "{device} (a contact) cannot be read by a random read; read it in bit units"
                ));
            }
            if *number > MAX_DEVICE_NUMBER {
                return Err(format!(
                    "{device}{number} is past device number {MAX_DEVICE_NUMBER}"
                ));
            }
        }
        Ok(RandomRead { words, dwords })
    }

    pub fn words(&self) -> &[(Device, u32)] {
        &self.words
    }

    pub fn dwords(&self) -> &[(Device, u32)] {
        &self.dwords
    }

    /// Bytes of data the answer carries: the words, then the double words.
    pub fn reply_bytes(&self) -> usize {
        2 * self.words.len() + 4 * self.dwords.len()
    }
}

/// A device as a request names it: the number in three bytes, low first, then the code.
fn device_bytes(device: Device, number: u32) -> [u8; 4] {
    let [a, b, c, _] = number.to_le_bytes();
    [a, b, c, device.code()]
}

/// A request frame around `command`, `subcommand` and `payload`.
fn request(
    framing: Framing,
    route: &Route,
    timer: u16,
    command: u16,
    subcommand: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = framing.request_prefix();
    out.extend_from_slice(&route.bytes());
    // The request data length counts the timer, the command, the subcommand and the payload.
    let len = (2 + 2 + 2 + payload.len()) as u16;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&timer.to_le_bytes());
    out.extend_from_slice(&command.to_le_bytes());
    out.extend_from_slice(&subcommand.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Batch read (0x0401) for `read`.
pub fn batch_read_request(
    framing: Framing,
    route: &Route,
    timer: u16,
    read: &BatchRead,
) -> Vec<u8> {
    let mut payload = device_bytes(read.device, read.start).to_vec();
    payload.extend_from_slice(&read.count.to_le_bytes());
    let sub = if read.bits { SUB_BITS } else { SUB_WORDS };
    request(framing, route, timer, CMD_BATCH_READ, sub, &payload)
}

/// Random read (0x0403, word units) for `read`.
pub fn random_read_request(
    framing: Framing,
    route: &Route,
    timer: u16,
    read: &RandomRead,
) -> Vec<u8> {
    // Both counts fit a byte: RandomRead keeps the total at 192 or fewer.
    let mut payload = vec![read.words.len() as u8, read.dwords.len() as u8];
    for (device, number) in read.words.iter().chain(&read.dwords) {
        payload.extend_from_slice(&device_bytes(*device, *number));
    }
    request(framing, route, timer, CMD_RANDOM_READ, SUB_WORDS, &payload)
}

/// The command and subcommand a request frame carries, if it is a 3E or 4E request: what a
/// test watching the wire checks against [`CMD_BATCH_READ`] and [`CMD_RANDOM_READ`].
pub fn command_of(frame: &[u8]) -> Option<(u16, u16)> {
    let at = match frame.get(..2)? {
        s if s == REQUEST_3E => 11,
        s if s == REQUEST_4E => 15,
        _ => return None,
    };
    let b = frame.get(at..at + 4)?;
    Some((
        u16::from_le_bytes([b[0], b[1]]),
        u16::from_le_bytes([b[2], b[3]]),
    ))
}

/// The total length of the answer whose first [`Framing::answer_header`] bytes are `head`,
/// checked: the right subheader (and serial number), room for an end code, at most
/// [`MAX_FRAME`]. What a reader calls before it reads the rest.
pub fn answer_length(framing: Framing, head: &[u8]) -> Result<usize, McError> {
    let header = framing.answer_header();
    let head = head
        .get(..header)
        .ok_or_else(|| McError::malformed(format!("{} bytes of an answer header", head.len())))?;
    let sub = [head[0], head[1]];
    if ASCII_ANSWERS.contains(&sub) {
        return Err(McError::malformed(
            "the PLC answers in ASCII code. In GX Works set the open port's \"Communication \
             Data Code\" to Binary, write the parameters and reset the CPU",
        ));
    }
    match framing {
        Framing::E3 if sub != ANSWER_3E => {
            return Err(McError::malformed(format!(
                "subheader {:02X} {:02X} where a 3E answer has D0 00",
                sub[0], sub[1]
            )));
        }
        Framing::E4 { serial } => {
            if sub != ANSWER_4E {
                return Err(McError::malformed(format!(
                    "subheader {:02X} {:02X} where a 4E answer has D4 00",
                    sub[0], sub[1]
                )));
            }
            let answered = u16::from_le_bytes([head[2], head[3]]);
            if answered != serial {
                return Err(McError::malformed(format!(
                    "the answer is to request {answered}, the agent asked {serial}"
                )));
            }
        }
        Framing::E3 => {}
    }
    let len = usize::from(u16::from_le_bytes([head[header - 2], head[header - 1]]));
    let total = header + len;
    if len < 2 || total > MAX_FRAME {
        return Err(McError::malformed(format!(
            "a response data length of {len} (2–{} expected)",
            MAX_FRAME - header
        )));
    }
    Ok(total)
}

/// The data of a whole answer, as a range into `frame`, after the header, the length and
/// the end code are checked.
pub fn answer_data(framing: Framing, frame: &[u8]) -> Result<Range<usize>, McError> {
    let total = answer_length(framing, frame)?;
    if frame.len() != total {
        return Err(McError::malformed(format!(
            "{} bytes where the header announces {total}",
            frame.len()
        )));
    }
    let at = framing.answer_header();
    let code = u16::from_le_bytes([frame[at], frame[at + 1]]);
    if code != 0 {
        return Err(McError::EndCode(code));
    }
    Ok(at + 2..total)
}

/// The data of an answer to `read`, as a range into `frame`: exactly the bytes it asked for.
pub fn batch_read_reply(
    framing: Framing,
    frame: &[u8],
    read: &BatchRead,
) -> Result<Range<usize>, McError> {
    exact(answer_data(framing, frame)?, read.reply_bytes())
}

/// The data of an answer to `read`: the words, then the double words.
pub fn random_read_reply(
    framing: Framing,
    frame: &[u8],
    read: &RandomRead,
) -> Result<Range<usize>, McError> {
    exact(answer_data(framing, frame)?, read.reply_bytes())
}

fn exact(data: Range<usize>, asked: usize) -> Result<Range<usize>, McError> {
    if data.len() != asked {
        return Err(McError::malformed(format!(
            "{} data bytes where {asked} were asked for",
            data.len()
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a PLC sends it: 3E or 4E header, local route, length, end code, data.
    fn answer(framing: Framing, code: u16, data: &[u8]) -> Vec<u8> {
        let mut out = match framing {
            Framing::E3 => ANSWER_3E.to_vec(),
            Framing::E4 { serial } => {
                let [lo, hi] = serial.to_le_bytes();
                vec![0xD4, 0x00, lo, hi, 0, 0]
            }
        };
        out.extend_from_slice(&Route::LOCAL.bytes());
        out.extend_from_slice(&((2 + data.len()) as u16).to_le_bytes());
        out.extend_from_slice(&code.to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn a_3e_batch_read_of_three_words_is_byte_for_byte_the_reference_frame() {
        // D100, 3 words, monitoring timer 0x0010 (16 × 250 ms = 4 s). Request data length:
        // timer 2 + command 2 + subcommand 2 + device 4 + count 2 = 12 = 0x0C.
        // D100 = 0x000064, code 0xA8.
        let read = BatchRead::words(Device::D, 100, 3).unwrap();
        let req = batch_read_request(Framing::E3, &Route::LOCAL, 0x0010, &read);
        assert_eq!(
            req,
            [
                0x50, 0x00, 0x00, 0xFF, 0xFF, 0x03, 0x00, 0x0C, 0x00, 0x10, 0x00, 0x01, 0x04, 0x00,
                0x00, 0x64, 0x00, 0x00, 0xA8, 0x03, 0x00
            ]
        );
        assert_eq!(command_of(&req), Some((CMD_BATCH_READ, SUB_WORDS)));
    }

    #[test]
    fn the_references_d350_example_reads_back() {
        // The MC protocol reference's word-unit example: head device D350 (0x00015E), code
        // A8, 2 points; the PLC answers AB 56 0F 17: D350 = 0x56AB = 22187, D351 = 0x170F.
        let read = BatchRead::words(Device::D, 350, 2).unwrap();
        let req = batch_read_request(Framing::E3, &Route::LOCAL, 4, &read);
        assert_eq!(&req[15..], &[0x5E, 0x01, 0x00, 0xA8, 0x02, 0x00]);
        let frame = answer(Framing::E3, 0, &[0xAB, 0x56, 0x0F, 0x17]);
        // D0 00 00 FF FF 03 00, length 2 + 4 = 6, end code 0, data at 11.
        assert_eq!(&frame[..11], &[0xD0, 0, 0, 0xFF, 0xFF, 0x03, 0, 6, 0, 0, 0]);
        let data = batch_read_reply(Framing::E3, &frame, &read).unwrap();
        assert_eq!(data, 11..15);
        assert_eq!(
            u16::from_le_bytes([frame[data.start], frame[data.start + 1]]),
            22187
        );
    }

    #[test]
    fn bit_units_use_subcommand_1_and_half_a_byte_per_point() {
        // M100, 8 points: M100 = 0x64, code 0x90; 8 points answer in 4 bytes.
        let read = BatchRead::bits(Device::M, 100, 8, Family::Fx).unwrap();
        let req = batch_read_request(Framing::E3, &Route::LOCAL, 4, &read);
        assert_eq!(command_of(&req), Some((CMD_BATCH_READ, SUB_BITS)));
        assert_eq!(&req[15..], &[0x64, 0, 0, 0x90, 8, 0]);
        assert_eq!(read.reply_bytes(), 4);
        // An odd count rounds up: 7 points in 4 bytes, the last low nibble unused.
        assert_eq!(
            BatchRead::bits(Device::X, 0, 7, Family::Q)
                .unwrap()
                .reply_bytes(),
            4
        );
    }

    #[test]
    fn a_4e_request_carries_its_serial_and_the_answer_must_echo_it() {
        let read = BatchRead::words(Device::W, 0x1A, 1).unwrap();
        let req = batch_read_request(Framing::E4 { serial: 0x1234 }, &Route::LOCAL, 4, &read);
        // 54 00, serial 0x1234 low first, 00 00, then the 3E layout.
        assert_eq!(&req[..6], &[0x54, 0x00, 0x34, 0x12, 0, 0]);
        assert_eq!(&req[19..], &[0x1A, 0, 0, 0xB4, 1, 0]);
        assert_eq!(command_of(&req), Some((CMD_BATCH_READ, SUB_WORDS)));
        let ok = answer(Framing::E4 { serial: 0x1234 }, 0, &[0x2A, 0x00]);
        assert_eq!(
            batch_read_reply(Framing::E4 { serial: 0x1234 }, &ok, &read),
            Ok(15..17)
        );
        let e = batch_read_reply(Framing::E4 { serial: 0x1235 }, &ok, &read).unwrap_err();
        assert_eq!(e.kind(), "protocol");
        assert!(e.to_string().contains("request 4660"), "{e}");
    }

    #[test]
    fn a_random_read_lists_words_then_double_words() {
        // D0 and TN5 as words, D100 as a double word: counts 2 and 1.
        let read = RandomRead::new(
            vec![(Device::D, 0), (Device::TN, 5)],
            vec![(Device::D, 100)],
        )
        .unwrap();
        let req = random_read_request(Framing::E3, &Route::LOCAL, 4, &read);
        assert_eq!(command_of(&req), Some((CMD_RANDOM_READ, SUB_WORDS)));
        // Length: 2 + 2 + 2 + counts 2 + 3 devices × 4 = 20.
        assert_eq!(&req[7..9], &[20, 0]);
        assert_eq!(
            &req[15..],
            &[2, 1, 0, 0, 0, 0xA8, 5, 0, 0, 0xC2, 100, 0, 0, 0xA8]
        );
        // The answer: 2 words and 1 double word = 8 bytes.
        let frame = answer(Framing::E3, 0, &[1, 0, 2, 0, 3, 0, 4, 0]);
        assert_eq!(random_read_reply(Framing::E3, &frame, &read), Ok(11..19));
    }

    #[test]
    fn every_request_the_agent_can_build_is_a_read() {
        let frames = [Framing::E3, Framing::E4 { serial: 7 }];
        let mut requests = Vec::new();
        for framing in frames {
            for device in Device::ALL {
                if let Ok(read) = BatchRead::words(device, 0, 1) {
                    requests.push(batch_read_request(framing, &Route::LOCAL, 4, &read));
                }
                if let Ok(read) = BatchRead::bits(device, 0, 1, Family::Q) {
                    requests.push(batch_read_request(framing, &Route::LOCAL, 4, &read));
                }
                if let Ok(read) = RandomRead::new(vec![(device, 0)], vec![(device, 2)]) {
                    requests.push(random_read_request(framing, &Route::LOCAL, 4, &read));
                }
            }
        }
        // 19 devices: 17 read in words, 11 in bits, 17 at random; twice (3E and 4E).
        assert_eq!(requests.len(), 2 * (17 + 11 + 17));
        for req in &requests {
            let (command, sub) = command_of(req).expect("a 3E or 4E request");
            assert!(
                matches!(
                    (command, sub),
                    (CMD_BATCH_READ, SUB_WORDS | SUB_BITS) | (CMD_RANDOM_READ, SUB_WORDS)
                ),
                "{command:#06X}/{sub:#06X} in {req:02X?}"
            );
        }
        // Anything else on the wire is not a request of ours at all.
        assert_eq!(command_of(&[0xD0, 0x00, 0, 0xFF]), None);
    }

    #[test]
    fn requests_outside_what_a_plc_takes_cannot_be_built() {
        assert!(BatchRead::words(Device::D, 0, 960).is_ok());
        assert!(BatchRead::words(Device::D, 0, 961).is_err());
        assert!(BatchRead::words(Device::D, 0, 0).is_err());
        assert!(BatchRead::bits(Device::M, 0, 7168, Family::Q).is_ok());
        assert!(BatchRead::bits(Device::M, 0, 7168, Family::Fx).is_err());
        assert!(BatchRead::bits(Device::M, 0, 3584, Family::Fx).is_ok());
        let e = BatchRead::bits(Device::D, 0, 1, Family::Q).unwrap_err();
        assert!(e.contains("word device"), "{e}");
        let e = BatchRead::words(Device::TS, 0, 1).unwrap_err();
        assert!(e.contains("bit units"), "{e}");
        // D16777214 for 2 words ends at 16777215: fine; for 3 it runs past the 3-byte number.
        assert!(BatchRead::words(Device::D, 0xFF_FFFE, 2).is_ok());
        assert!(BatchRead::words(Device::D, 0xFF_FFFE, 3).is_err());
        // M from 0xFFFFF0 in one word spans 16 points: up to 0xFFFFFF.
        assert!(BatchRead::words(Device::M, 0xFF_FFF0, 1).is_ok());
        assert!(BatchRead::words(Device::M, 0xFF_FFF1, 1).is_err());
        assert!(BatchRead::words(Device::M, u32::MAX, 1).is_err());
        assert!(RandomRead::new(vec![], vec![]).is_err());
        assert!(RandomRead::new(vec![(Device::D, 0); 96], vec![(Device::D, 0); 96]).is_ok());
        assert!(RandomRead::new(vec![(Device::D, 0); 193], vec![]).is_err());
        assert!(RandomRead::new(vec![(Device::CS, 0)], vec![]).is_err());
        assert!(RandomRead::new(vec![(Device::D, 1 << 24)], vec![]).is_err());
    }

    #[test]
    fn end_codes_are_explained() {
        let read = BatchRead::words(Device::D, 0, 1).unwrap();
        // An error answer: end code, then 9 bytes of error information (route, command,
        // subcommand of the failed request).
        let info = [0, 0xFF, 0xFF, 0x03, 0, 0x01, 0x04, 0, 0];
        for (code, words) in [
            (0xC050, "Binary"),
            (0xC051, "planning"),
            (0xC054, "planning"),
            (0xC056, "device sizes"),
            (0xC059, "1E frames"),
            (0xC05B, "file registers"),
            (0xC05F, "module I/O"),
            (0x4031, "user's manual"),
        ] {
            let frame = answer(Framing::E3, code, &info);
            let e = batch_read_reply(Framing::E3, &frame, &read).unwrap_err();
            assert_eq!(e, McError::EndCode(code));
            assert_eq!(e.kind(), "refused");
            assert!(e.to_string().contains(words), "{code:#06X}: {e}");
        }
        assert_eq!(
            McError::EndCode(0xC0FF).to_string(),
            "the PLC answered end code 0xC0FF"
        );
    }

    #[test]
    fn an_ascii_answer_says_to_switch_the_port_to_binary() {
        // A port set to ASCII answers in text: "D00000FF03FF00…".
        let frame = b"D00000FF03FF000018C050";
        let e = answer_length(Framing::E3, frame).unwrap_err();
        assert_eq!(e.kind(), "protocol");
        assert!(e.to_string().contains("Binary"), "{e}");
    }

    #[test]
    fn lying_lengths_are_protocol_errors_not_panics() {
        let read = BatchRead::words(Device::D, 0, 2).unwrap();
        let good = answer(Framing::E3, 0, &[1, 0, 2, 0]);
        assert_eq!(batch_read_reply(Framing::E3, &good, &read), Ok(11..15));
        let mut cases: Vec<Vec<u8>> = vec![
            // Two bytes where four were asked.
            answer(Framing::E3, 0, &[1, 0]),
            // Six where four were asked.
            answer(Framing::E3, 0, &[1, 0, 2, 0, 3, 0]),
            // Cut short: the header says 6, 3 follow.
            good[..14].to_vec(),
            // Longer than the header says.
            [&good[..], &[0]].concat(),
            // A header cut short, and nothing at all.
            good[..5].to_vec(),
            vec![],
            // A 4E answer where a 3E one belongs.
            answer(Framing::E4 { serial: 0 }, 0, &[1, 0, 2, 0]),
        ];
        // A length of 0 (no room for the end code), and one past MAX_FRAME.
        let mut zero = good.clone();
        zero[7..9].copy_from_slice(&0u16.to_le_bytes());
        cases.push(zero);
        let mut huge = good.clone();
        huge[7..9].copy_from_slice(&0xFFFFu16.to_le_bytes());
        cases.push(huge);
        for frame in &cases {
            let e = batch_read_reply(Framing::E3, frame, &read).unwrap_err();
            assert_eq!(e.kind(), "protocol", "{frame:02X?}: {e}");
        }
        // The largest real answer is accepted by the length check: 7168 bits in 3584 bytes.
        let bits = BatchRead::bits(Device::M, 0, 7168, Family::Q).unwrap();
        let big = answer(Framing::E4 { serial: 1 }, 0, &vec![0x10; 3584]);
        assert!(big.len() <= MAX_FRAME);
        assert_eq!(
            batch_read_reply(Framing::E4 { serial: 1 }, &big, &bits).map(|r| r.len()),
            Ok(3584)
        );
    }
}
