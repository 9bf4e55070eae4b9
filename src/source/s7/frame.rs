//! The S7 protocol's frames, client side and read only: ISO-on-TCP (RFC 1006 TPKT around ISO
//! 8073 COTP) carrying S7comm, of which the agent sends exactly three things: the COTP connect
//! request, Setup Communication, and Read Var. There is no function here that builds a write,
//! a block upload, a PLC stop or any other job: "the agent never writes to a machine" holds by
//! what this module can say.
//!
//! Everything is pure: bytes in, bytes or errors out, no socket. Every length read from a PLC
//! is checked against the bytes that are really there before it is used.
//!
//! ```text
//! TPKT   03 00 LL LL                       version 3, total length (RFC 1006)
//! COTP   02 F0 80                          data TPDU, last unit (ISO 8073 class 0)
//! S7     32 RR 00 00 PP PP pp pp dd dd     protocol id, ROSCTR (1 job, 3 ack data),
//!        [ec ee]                           PDU reference, parameter and data lengths,
//!                                          error class and code in an ack
//! ```

use std::fmt;
use std::ops::Range;

use super::address::Area;

/// ISO-on-TCP's port.
pub const ISO_TCP_PORT: u16 = 102;
/// TPKT header: version, reserved, length.
pub const TPKT_HEADER: usize = 4;
/// The largest TPKT accepted from a PLC. CPUs negotiate PDUs of 240 (S7-200 SMART, S7-1200)
/// to 960 bytes (S7-1500); a peer announcing more is not a PLC worth believing.
pub const MAX_TPKT: usize = 4096;
/// The PDU size the agent asks for; the PLC answers with what it takes (never more).
pub const REQUESTED_PDU: u16 = 960;
/// The smallest PDU any S7 CPU offers.
pub const MIN_PDU: u16 = 240;
/// Items in one Read Var job at most: what S7-300/400 CPUs accept (snap7's limit too).
pub const MAX_ITEMS: usize = 20;

/// Setup Communication's function code.
pub const FN_SETUP: u8 = 0xF0;
/// Read Var's function code.
pub const FN_READ: u8 = 0x04;

const COTP_DT: [u8; 3] = [0x02, 0xF0, 0x80];
const COTP_CR: u8 = 0xE0;
const COTP_CC: u8 = 0xD0;
const COTP_DR: u8 = 0x80;
const COTP_ER: u8 = 0x70;
const S7_ID: u8 = 0x32;
const ROSCTR_JOB: u8 = 0x01;
const ROSCTR_ACK: u8 = 0x02;
const ROSCTR_ACK_DATA: u8 = 0x03;
/// Byte offset of the S7 header in a data TPKT.
const S7_AT: usize = TPKT_HEADER + COTP_DT.len();
/// An ack-data header: the job's ten bytes and the error class and code.
const ACK_HEADER: usize = 12;
/// Read Var request item: 12 bytes of S7 ANY pointer.
const REQUEST_ITEM: usize = 12;
/// Read Var reply item header: return code, transport size, length.
const REPLY_ITEM: usize = 4;

/// What went wrong between the agent and the PLC, in words an engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S7Error {
    /// Bytes that are not the S7 frame they should be.
    Malformed(String),
    /// The PLC refused the ISO connection: wrong rack, slot or TSAP.
    Refused(String),
    /// The PLC answered a job with an error class and code.
    Job { class: u8, code: u8 },
}

impl S7Error {
    fn malformed(what: impl Into<String>) -> S7Error {
        S7Error::Malformed(what.into())
    }

    /// The kind the device health counts the error under.
    pub fn kind(&self) -> &'static str {
        match self {
            S7Error::Malformed(_) => "protocol",
            S7Error::Refused(_) | S7Error::Job { .. } => "refused",
        }
    }
}

impl fmt::Display for S7Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S7Error::Malformed(what) => write!(f, "not an S7 answer: {what}"),
            S7Error::Refused(what) => write!(
                f,
                "the PLC refused the connection ({what}): check rack and slot (S7-300: rack 0 \
                 slot 2; S7-1200, S7-1500, S7-200 SMART: rack 0 slot 1) or, for LOGO! and \
                 S7-200 SMART connections configured by TSAP, local_tsap and remote_tsap as set \
                 in the PLC's connection"
            ),
            S7Error::Job { class, code } => {
                write!(f, "the PLC answered error {class:#04x}/{code:#04x}")?;
                match (class, code) {
                    (0x81, 0x04) => f.write_str(
                        ": the CPU does not allow this access. On an S7-1200/1500, tick \
                         \"Permit access with PUT/GET communication from remote partner\" under \
                         the CPU's Properties → Protection & Security → Connection mechanisms in \
                         TIA Portal, and download the hardware configuration",
                    ),
                    (0x85, 0x00) => f.write_str(
                        ": the request was larger than the negotiated PDU (a bug: please report it)",
                    ),
                    (0xD6, _) | (0xD2, _) => f.write_str(": the CPU's protection level forbids reading; enter the read password level or lower the protection"),
                    _ => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for S7Error {}

/// Why one item of a Read Var was refused while the others may have been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemError {
    pub code: u8,
    pub area: Area,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let db = matches!(self.area, Area::DataBlock(_));
        match self.code {
            0x01 => f.write_str("hardware fault in the PLC"),
            0x03 => write!(f, "access to {} is not allowed", self.area),
            0x05 if db => write!(
                f,
                "address out of range in {}: the block is shorter than the address, or it has \
                 \"Optimized block access\" ticked (S7-1200/1500: untick it in the block's \
                 Properties → Attributes in TIA Portal, compile and download)",
                self.area
            ),
            0x05 => write!(f, "address out of range in {}", self.area),
            0x06 | 0x07 => write!(
                f,
                "the PLC does not support this data type in {}",
                self.area
            ),
            0x0A if db => write!(
                f,
                "{} does not exist in the PLC, or it is an optimized block (untick \"Optimized \
                 block access\" in its properties)",
                self.area
            ),
            0x0A => write!(f, "{} does not exist in the PLC", self.area),
            code => write!(
                f,
                "the PLC refused the item in {} (return code {code:#04x})",
                self.area
            ),
        }
    }
}

impl std::error::Error for ItemError {}

/// The length of the TPKT whose header is `header`, checked: version 3, room for a COTP
/// header, at most [`MAX_TPKT`].
pub fn tpkt_length(header: &[u8; TPKT_HEADER]) -> Result<usize, S7Error> {
    if header[0] != 3 || header[1] != 0 {
        return Err(S7Error::malformed(format!(
            "TPKT version {} (RFC 1006 says 3)",
            header[0]
        )));
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if !(TPKT_HEADER + 3..=MAX_TPKT).contains(&len) {
        return Err(S7Error::malformed(format!(
            "TPKT length {len} (7–{MAX_TPKT} expected)"
        )));
    }
    Ok(len)
}

fn tpkt(body: &[u8]) -> Vec<u8> {
    let len = (TPKT_HEADER + body.len()) as u16;
    let mut out = Vec::with_capacity(usize::from(len));
    out.extend_from_slice(&[3, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The TSAP of a CPU's S7 basic communication at `rack` and `slot`, as a PG connection
/// (connection type 1).
pub fn remote_tsap(rack: u8, slot: u8) -> u16 {
    0x0100 | u16::from(rack & 0x07) << 5 | u16::from(slot & 0x1F)
}

/// The COTP connection request (CR) with the two TSAPs and a 1024-byte TPDU.
pub fn connect_request(local_tsap: u16, remote_tsap: u16) -> Vec<u8> {
    let [lh, ll] = local_tsap.to_be_bytes();
    let [rh, rl] = remote_tsap.to_be_bytes();
    tpkt(&[
        17, COTP_CR, 0x00, 0x00, 0x00, 0x01, 0x00, // LI, CR, dst ref, src ref, class 0
        0xC1, 2, lh, ll, // calling TSAP
        0xC2, 2, rh, rl, // called TSAP
        0xC0, 1, 0x0A, // TPDU size 2^10
    ])
}

/// Checks the answer to [`connect_request`]: a connection confirm (CC).
pub fn check_connect_confirm(frame: &[u8]) -> Result<(), S7Error> {
    let code = *frame
        .get(TPKT_HEADER + 1)
        .ok_or_else(|| S7Error::malformed("a COTP answer of no length"))?;
    match code & 0xF0 {
        COTP_CC => Ok(()),
        COTP_DR => Err(S7Error::Refused(format!(
            "COTP disconnect request, reason {:#04x}",
            frame.get(TPKT_HEADER + 6).copied().unwrap_or(0)
        ))),
        COTP_ER => Err(S7Error::Refused("COTP error TPDU".to_string())),
        other => Err(S7Error::malformed(format!(
            "COTP TPDU {other:#04x} where a connection confirm belongs"
        ))),
    }
}

/// An S7 job in a COTP data TPDU.
fn job(pdu_ref: u16, param: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(COTP_DT.len() + 10 + param.len());
    body.extend_from_slice(&COTP_DT);
    body.extend_from_slice(&[S7_ID, ROSCTR_JOB, 0, 0]);
    body.extend_from_slice(&pdu_ref.to_be_bytes());
    body.extend_from_slice(&(param.len() as u16).to_be_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(param);
    tpkt(&body)
}

/// Setup Communication: one job at a time each way, asking for a `pdu`-byte PDU.
pub fn setup_request(pdu_ref: u16, pdu: u16) -> Vec<u8> {
    let [ph, pl] = pdu.to_be_bytes();
    job(pdu_ref, &[FN_SETUP, 0x00, 0x00, 0x01, 0x00, 0x01, ph, pl])
}

/// The function code of the job a data TPKT carries, if it is one: what a test watching the
/// wire checks against [`FN_SETUP`] and [`FN_READ`].
pub fn job_function(frame: &[u8]) -> Option<u8> {
    let s7 = frame.get(S7_AT..)?;
    (s7.first() == Some(&S7_ID) && s7.get(1) == Some(&ROSCTR_JOB))
        .then(|| s7.get(10).copied())
        .flatten()
}

/// An ack-data answer's parameter and data, after the header and the PDU reference are
/// checked.
fn ack(frame: &[u8], pdu_ref: u16, function: u8) -> Result<(&[u8], &[u8]), S7Error> {
    if frame.get(TPKT_HEADER..S7_AT) != Some(&COTP_DT[..]) {
        return Err(S7Error::malformed("not a COTP data TPDU"));
    }
    let s7 = &frame[S7_AT..];
    let header = s7
        .get(..ACK_HEADER)
        .ok_or_else(|| S7Error::malformed("an S7 header cut short"))?;
    if header[0] != S7_ID {
        return Err(S7Error::malformed(format!(
            "protocol id {:#04x} (S7 is 0x32)",
            header[0]
        )));
    }
    // Some CPUs refuse a job with a bare ack (no data) that carries the error class and code.
    if header[1] == ROSCTR_ACK && (header[10] != 0 || header[11] != 0) {
        return Err(S7Error::Job {
            class: header[10],
            code: header[11],
        });
    }
    if header[1] != ROSCTR_ACK_DATA {
        return Err(S7Error::malformed(format!(
            "message type {} where an ack with data belongs",
            header[1]
        )));
    }
    let answered = u16::from_be_bytes([header[4], header[5]]);
    if answered != pdu_ref {
        return Err(S7Error::malformed(format!(
            "the answer is to request {answered}, the agent asked {pdu_ref}"
        )));
    }
    if header[10] != 0 || header[11] != 0 {
        return Err(S7Error::Job {
            class: header[10],
            code: header[11],
        });
    }
    let param_len = usize::from(u16::from_be_bytes([header[6], header[7]]));
    let data_len = usize::from(u16::from_be_bytes([header[8], header[9]]));
    let rest = &s7[ACK_HEADER..];
    if rest.len() != param_len + data_len {
        return Err(S7Error::malformed(format!(
            "{} bytes after the header, the header announces {}",
            rest.len(),
            param_len + data_len
        )));
    }
    let (param, data) = rest.split_at(param_len);
    if param.first() != Some(&function) {
        return Err(S7Error::malformed(format!(
            "an answer to function {:#04x}, the agent asked {function:#04x}",
            param.first().copied().unwrap_or(0)
        )));
    }
    Ok((param, data))
}

/// The PDU size the PLC granted in its answer to [`setup_request`].
pub fn setup_reply(frame: &[u8], pdu_ref: u16) -> Result<u16, S7Error> {
    let (param, _) = ack(frame, pdu_ref, FN_SETUP)?;
    let pdu = param
        .get(6..8)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| S7Error::malformed("a Setup Communication answer cut short"))?;
    if pdu < MIN_PDU {
        return Err(S7Error::malformed(format!(
            "a PDU of {pdu} bytes (every S7 CPU offers {MIN_PDU} or more)"
        )));
    }
    Ok(pdu)
}

/// One item of a Read Var: `count` bytes from `start` of an area, or `count` timer or
/// counter elements from element `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadItem {
    pub area: Area,
    pub start: u32,
    pub count: u16,
}

impl ReadItem {
    /// Bytes the answer carries for this item.
    pub fn reply_bytes(&self) -> usize {
        if self.area.is_element_area() {
            2 * usize::from(self.count)
        } else {
            usize::from(self.count)
        }
    }
}

/// The bytes one item costs in the request and in the reply, padding included.
pub fn item_cost(item: &ReadItem) -> (usize, usize) {
    let data = item.reply_bytes();
    (REQUEST_ITEM, REPLY_ITEM + data + data % 2)
}

/// Whether `items` fit one Read Var within a PDU of `pdu` bytes both ways.
pub fn fits(items: &[ReadItem], pdu: u16) -> bool {
    let pdu = usize::from(pdu);
    let (request, reply) = items
        .iter()
        .map(item_cost)
        .fold((10 + 2, ACK_HEADER + 2), |(q, r), (iq, ir)| {
            (q + iq, r + ir)
        });
    !items.is_empty() && items.len() <= MAX_ITEMS && request <= pdu && reply <= pdu
}

/// The largest byte count one item may ask for alone within a PDU of `pdu` bytes.
pub fn max_item_bytes(pdu: u16) -> u16 {
    // Reply: ack header, function and count, one item header; an even length.
    (usize::from(pdu).saturating_sub(ACK_HEADER + 2 + REPLY_ITEM) & !1) as u16
}

/// Read Var for `items` (which must [`fits`] the PDU: the planner's job).
pub fn read_request(pdu_ref: u16, items: &[ReadItem]) -> Vec<u8> {
    let mut param = Vec::with_capacity(2 + REQUEST_ITEM * items.len());
    param.extend_from_slice(&[FN_READ, items.len() as u8]);
    for item in items {
        // Timers and counters are addressed by element and read in their own transport
        // size; everything else as bytes at a bit address (byte × 8).
        let (transport, address) = match item.area {
            Area::Timers => (0x1D, item.start),
            Area::Counters => (0x1C, item.start),
            _ => (0x02, item.start << 3),
        };
        let [_, a2, a1, a0] = address.to_be_bytes();
        param.extend_from_slice(&[0x12, 0x0A, 0x10, transport]);
        param.extend_from_slice(&item.count.to_be_bytes());
        param.extend_from_slice(&item.area.db().to_be_bytes());
        param.extend_from_slice(&[item.area.code(), a2, a1, a0]);
    }
    job(pdu_ref, &param)
}

/// The data of each item of a Read Var answer, as ranges into `frame`, or the item's error.
pub fn read_reply(
    frame: &[u8],
    pdu_ref: u16,
    items: &[ReadItem],
) -> Result<Vec<Result<Range<usize>, ItemError>>, S7Error> {
    let (param, data) = ack(frame, pdu_ref, FN_READ)?;
    let count = usize::from(param.get(1).copied().unwrap_or(0));
    if count != items.len() {
        return Err(S7Error::malformed(format!(
            "{count} items in the answer, {} asked",
            items.len()
        )));
    }
    let base = frame.len() - data.len();
    let mut at = 0;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let head = data
            .get(at..at + REPLY_ITEM)
            .ok_or_else(|| S7Error::malformed(format!("item {} cut short", i + 1)))?;
        let (code, transport) = (head[0], head[1]);
        let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
        at += REPLY_ITEM;
        if code != 0xFF {
            // A refused item carries no data (transport 0, length 0) but its header.
            out.push(Err(ItemError {
                code,
                area: item.area,
            }));
            continue;
        }
        // BIT, BYTE/WORD/DWORD and INTEGER lengths count bits; the others bytes.
        let bytes = match transport {
            0x03..=0x05 => length.div_ceil(8),
            _ => length,
        };
        if bytes != item.reply_bytes() {
            return Err(S7Error::malformed(format!(
                "item {} has {bytes} bytes, {} asked",
                i + 1,
                item.reply_bytes()
            )));
        }
        if at + bytes > data.len() {
            return Err(S7Error::malformed(format!("item {} cut short", i + 1)));
        }
        out.push(Ok(base + at..base + at + bytes));
        at += bytes;
        // Every item but the last is padded to an even length.
        if i + 1 < items.len() {
            at += bytes % 2;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ack-data answer to `function` with `param` and `data`, as a PLC sends it.
    fn answer(pdu_ref: u16, error: [u8; 2], param: &[u8], data: &[u8]) -> Vec<u8> {
        let mut body = COTP_DT.to_vec();
        body.extend_from_slice(&[S7_ID, ROSCTR_ACK_DATA, 0, 0]);
        body.extend_from_slice(&pdu_ref.to_be_bytes());
        body.extend_from_slice(&(param.len() as u16).to_be_bytes());
        body.extend_from_slice(&(data.len() as u16).to_be_bytes());
        body.extend_from_slice(&error);
        body.extend_from_slice(param);
        body.extend_from_slice(data);
        tpkt(&body)
    }

    #[test]
    fn the_connect_request_carries_both_tsaps_in_rfc_1006_framing() {
        // Rack 0, slot 2 (an S7-300): TSAP 0x0102.
        let cr = connect_request(0x0100, remote_tsap(0, 2));
        assert_eq!(
            cr,
            [
                3, 0, 0, 22, 17, 0xE0, 0, 0, 0, 1, 0, 0xC1, 2, 1, 0, 0xC2, 2, 1, 2, 0xC0, 1, 0x0A
            ]
        );
        assert_eq!(tpkt_length(&[3, 0, 0, 22]), Ok(22));
        // Rack 1, slot 3: 0x0100 | 1 << 5 | 3.
        assert_eq!(remote_tsap(1, 3), 0x0123);
    }

    #[test]
    fn a_refused_connection_names_rack_slot_and_tsap() {
        let dr = tpkt(&[6, 0x80, 0, 1, 0, 0, 0x81]);
        let e = check_connect_confirm(&dr).unwrap_err();
        assert_eq!(e.kind(), "refused");
        assert!(e.to_string().contains("rack and slot"), "{e}");
        assert!(check_connect_confirm(&tpkt(&[6, 0xD0, 0, 1, 0, 1, 0])).is_ok());
        assert_eq!(
            check_connect_confirm(&[3, 0, 0, 4]).unwrap_err().kind(),
            "protocol"
        );
    }

    #[test]
    fn setup_asks_for_a_pdu_and_reads_what_the_plc_grants() {
        let req = setup_request(7, 960);
        assert_eq!(job_function(&req), Some(FN_SETUP));
        assert_eq!(&req[req.len() - 8..], &[0xF0, 0, 0, 1, 0, 1, 0x03, 0xC0]);
        let granted = answer(7, [0, 0], &[0xF0, 0, 0, 1, 0, 1, 0x00, 0xF0], &[]);
        assert_eq!(setup_reply(&granted, 7), Ok(240));
        // An answer to another request, or a PDU no CPU offers, is refused.
        assert_eq!(setup_reply(&granted, 8).unwrap_err().kind(), "protocol");
        let tiny = answer(7, [0, 0], &[0xF0, 0, 0, 1, 0, 1, 0x00, 0x10], &[]);
        assert_eq!(setup_reply(&tiny, 7).unwrap_err().kind(), "protocol");
    }

    #[test]
    fn put_get_switched_off_is_explained() {
        let refused = answer(1, [0x81, 0x04], &[0x04, 0], &[]);
        let items = [ReadItem {
            area: Area::DataBlock(1),
            start: 0,
            count: 2,
        }];
        let e = read_reply(&refused, 1, &items).unwrap_err();
        assert_eq!(
            e,
            S7Error::Job {
                class: 0x81,
                code: 0x04
            }
        );
        assert!(e.to_string().contains("PUT/GET"), "{e}");
        // The same refusal in a bare ack (message type 2) is the same error.
        let mut bare = refused.clone();
        bare[S7_AT + 1] = ROSCTR_ACK;
        assert_eq!(
            read_reply(&bare, 1, &items).unwrap_err(),
            S7Error::Job {
                class: 0x81,
                code: 0x04
            }
        );
    }

    #[test]
    fn read_var_addresses_bytes_in_bits_and_timers_by_element() {
        let items = [
            ReadItem {
                area: Area::DataBlock(10),
                start: 4,
                count: 6,
            },
            ReadItem {
                area: Area::Timers,
                start: 5,
                count: 1,
            },
        ];
        let req = read_request(3, &items);
        assert_eq!(job_function(&req), Some(FN_READ));
        let param = &req[S7_AT + 10..];
        assert_eq!(param[..2], [0x04, 2]);
        // DB10, 6 bytes from byte 4: bit address 32 = 0x000020.
        assert_eq!(
            param[2..14],
            [0x12, 0x0A, 0x10, 0x02, 0, 6, 0, 10, 0x84, 0, 0, 0x20]
        );
        // Timer 5: element address 5, transport 0x1D, area 0x1D.
        assert_eq!(
            param[14..26],
            [0x12, 0x0A, 0x10, 0x1D, 0, 1, 0, 0, 0x1D, 0, 0, 5]
        );
    }

    #[test]
    fn a_read_answer_is_split_into_items_with_padding_and_refusals() {
        let items = [
            ReadItem {
                area: Area::Flags,
                start: 0,
                count: 3,
            },
            ReadItem {
                area: Area::DataBlock(99),
                start: 0,
                count: 2,
            },
            ReadItem {
                area: Area::Inputs,
                start: 0,
                count: 2,
            },
        ];
        // Item 1: 3 bytes (24 bits in transport BYTE) and a pad byte; item 2 refused with
        // "object does not exist"; item 3: 2 bytes as an octet string.
        let data = [
            0xFF, 0x04, 0, 24, 1, 2, 3, 0, //
            0x0A, 0x00, 0, 0, //
            0xFF, 0x09, 0, 2, 0xAB, 0xCD,
        ];
        let frame = answer(9, [0, 0], &[0x04, 3], &data);
        let parts = read_reply(&frame, 9, &items).unwrap();
        assert_eq!(&frame[parts[0].clone().unwrap()], &[1, 2, 3]);
        let refused = parts[1].clone().unwrap_err();
        assert!(
            refused.to_string().contains("DB99 does not exist"),
            "{refused}"
        );
        assert!(refused.to_string().contains("Optimized block access"));
        assert_eq!(&frame[parts[2].clone().unwrap()], &[0xAB, 0xCD]);
    }

    #[test]
    fn lying_lengths_are_protocol_errors_not_panics() {
        let items = [ReadItem {
            area: Area::Flags,
            start: 0,
            count: 4,
        }];
        for data in [
            &[0xFF, 0x04, 0, 32, 1, 2][..],      // announces 4 bytes, carries 2
            &[0xFF, 0x04, 0, 16, 1, 2][..],      // 2 bytes where 4 were asked
            &[0xFF, 0x04][..],                   // a header cut short
            &[0xFF, 0x04, 0xFF, 0xFF, 0, 0][..], // 8191 bytes announced
        ] {
            let frame = answer(1, [0, 0], &[0x04, 1], data);
            let e = read_reply(&frame, 1, &items).unwrap_err();
            assert_eq!(e.kind(), "protocol", "{data:?}: {e}");
        }
        // A header whose lengths disagree with the frame.
        let mut frame = answer(1, [0, 0], &[0x04, 1], &[0xFF, 0x04, 0, 32, 1, 2, 3, 4]);
        frame[S7_AT + 9] = 200;
        assert_eq!(
            read_reply(&frame, 1, &items).unwrap_err().kind(),
            "protocol"
        );
        assert!(tpkt_length(&[3, 0, 0xFF, 0xFF]).is_err());
        assert!(tpkt_length(&[4, 0, 0, 20]).is_err());
        assert!(tpkt_length(&[3, 0, 0, 3]).is_err());
    }

    #[test]
    fn the_pdu_bounds_requests_and_replies() {
        let item = |count| ReadItem {
            area: Area::DataBlock(1),
            start: 0,
            count,
        };
        // 240-byte PDU: one item of at most 240 − 12 − 2 − 4 = 222 bytes.
        assert_eq!(max_item_bytes(240), 222);
        assert!(fits(&[item(222)], 240));
        assert!(!fits(&[item(224)], 240));
        // Twenty one-word items: request 12 + 20 × 12 = 252 > 240, so not in one job.
        assert!(!fits(&vec![item(2); 20], 240));
        // Eighteen: request 12 + 216 = 228; reply 14 + 18 × 6 = 122.
        assert!(fits(&vec![item(2); 18], 240));
        assert!(!fits(&vec![item(2); 21], 960), "at most twenty items");
        assert!(!fits(&[], 960));
    }
}
