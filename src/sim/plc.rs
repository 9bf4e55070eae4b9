//! The simulated workshop served as PLCs: Siemens S7 over ISO-on-TCP and Mitsubishi MELSEC
//! over the MC protocol (SLMP, 3E and 4E binary frames). For benchmarks and for tests that
//! compare a PLC machine with a Modbus machine on the same timeline: the words are the ones
//! the Modbus simulator serves as holding registers ([`Workshop::machine_registers`], then the
//! filler up to [`Workshop::holding_registers`]).
//!
//! Where the words are:
//!
//! - **S7**: machine `n` (from 0) is data block `DB{n+1}`, word `a` at byte `2a`, big-endian as
//!   S7 stores it: `DB1.DBW0` is the first machine's run flag, `DB1.DBD8` its part count (the
//!   Modbus map's registers 4 and 5 as one DINT). The program text is kept as an S7 program
//!   keeps text, a `STRING[14]` at `DB1.DBB14`: its maximum length (14) and actual length, then
//!   the characters from byte 16 (the Modbus map's first 14). Other areas answer "object does
//!   not exist".
//! - **MC**: machine `n` is data registers `D{n·s}` to `D{n·s+s−1}` with `s` the holding
//!   registers per machine, little-endian words as MC sends them, laid out as a MELSEC program
//!   keeps them: the part count a 32-bit value low word first (`D{n·s+4}` low, `+5` high,
//!   what GX Works reads as the double word at `D{n·s+4}`), the program text two characters a
//!   word, the first in the low byte. Other devices answer end code 0xC056 (address out of
//!   range).
//!
//! Like the Modbus simulator, the servers are written against the bytes: they answer only
//! connection set-up and reads. Any other S7 job gets error class 0x81 (application), any
//! other MC command end code 0xC059 (command not supported): the agent never sends them, and
//! the tests that watch the wire would see it if it did.

use std::sync::Arc;

use jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::debug;

use super::workshop::{MACHINE_REGISTERS, Workshop};
use crate::shutdown::Shutdown;

/// Which PLC protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlcProtocol {
    S7,
    Melsec,
}

/// Word `index` of machine `machine` at `at`; `None` past the machine's registers or when the
/// workshop does not answer (a scripted one outside its script).
fn word(workshop: &Workshop, machine: usize, index: usize, at: Timestamp) -> Option<u16> {
    if index >= usize::from(workshop.holding_registers.max(MACHINE_REGISTERS))
        || !workshop.answers(at)
    {
        return None;
    }
    let regs = workshop.machine_registers(machine, at)?;
    Some(match regs.get(index) {
        Some(v) => *v,
        None => workshop.filler_register(machine, index as u16, at),
    })
}

/// Serves `workshop` in `protocol` on `listener` until shutdown, one task per connection.
pub async fn serve(
    listener: TcpListener,
    workshop: Arc<Workshop>,
    protocol: PlcProtocol,
    mut shutdown: Shutdown,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let _ = stream.set_nodelay(true);
        let (workshop, mut stop) = (workshop.clone(), shutdown.clone());
        tokio::spawn(async move {
            let served = async {
                match protocol {
                    PlcProtocol::S7 => serve_s7(stream, &workshop).await,
                    PlcProtocol::Melsec => serve_mc(stream, &workshop).await,
                }
            };
            tokio::select! {
                r = served => if let Err(e) = r {
                    debug!(%peer, error = %e, "PLC client gone");
                },
                _ = stop.wait() => {}
            }
        });
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

// ---------------------------------------------------------------------------------------
// S7

const S7_MAX_PDU: u16 = 960;

fn tpkt(body: &[u8]) -> Vec<u8> {
    let mut out = vec![3, 0];
    out.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An S7 ack-data answer in a COTP data TPDU.
fn s7_ack(pdu_ref: [u8; 2], error: [u8; 2], param: &[u8], data: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0xF0, 0x80, 0x32, 0x03, 0, 0, pdu_ref[0], pdu_ref[1]];
    body.extend_from_slice(&(param.len() as u16).to_be_bytes());
    body.extend_from_slice(&(data.len() as u16).to_be_bytes());
    body.extend_from_slice(&error);
    body.extend_from_slice(param);
    body.extend_from_slice(data);
    tpkt(&body)
}

async fn serve_s7<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    workshop: &Workshop,
) -> std::io::Result<()> {
    let mut pdu = S7_MAX_PDU;
    loop {
        let mut head = [0u8; 4];
        stream.read_exact(&mut head).await?;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if head[0] != 3 || !(7..=4096).contains(&len) {
            return Err(invalid("not a TPKT"));
        }
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).await?;
        let reply = s7_answer(workshop, &body, &mut pdu, Timestamp::now())?;
        stream.write_all(&reply).await?;
    }
}

/// The answer to one TPKT's body: a connection confirm, a Setup Communication or a Read Var
/// answer. Pure, so it is tested without a socket.
fn s7_answer(
    workshop: &Workshop,
    body: &[u8],
    pdu: &mut u16,
    at: Timestamp,
) -> std::io::Result<Vec<u8>> {
    match body.get(1).map(|c| c & 0xF0) {
        // Connection request: confirm, echoing its parameters (TSAPs, TPDU size).
        Some(0xE0) => {
            let params = body.get(7..).unwrap_or_default();
            let src = body.get(4..6).unwrap_or(&[0, 0]);
            let mut cc = vec![
                (6 + params.len()) as u8,
                0xD0,
                src[0],
                src[1],
                0x00,
                0x01,
                0x00,
            ];
            cc.extend_from_slice(params);
            Ok(tpkt(&cc))
        }
        Some(0xF0) => {
            let s7 = body.get(3..).ok_or_else(|| invalid("short data TPDU"))?;
            if s7.len() < 10 || s7[0] != 0x32 || s7[1] != 0x01 {
                return Err(invalid("not an S7 job"));
            }
            let pdu_ref = [s7[4], s7[5]];
            let param_len = usize::from(u16::from_be_bytes([s7[6], s7[7]]));
            let param = s7
                .get(10..10 + param_len)
                .ok_or_else(|| invalid("short S7 job"))?;
            match param.first() {
                Some(0xF0) if param.len() >= 8 => {
                    let asked = u16::from_be_bytes([param[6], param[7]]);
                    *pdu = asked.clamp(240, S7_MAX_PDU);
                    let [h, l] = pdu.to_be_bytes();
                    Ok(s7_ack(pdu_ref, [0, 0], &[0xF0, 0, 0, 1, 0, 1, h, l], &[]))
                }
                Some(0x04) => Ok(s7_read(workshop, pdu_ref, param, at)),
                // Anything else (a write, a PLC stop …): refused, never done.
                _ => Ok(s7_ack(
                    pdu_ref,
                    [0x81, 0x04],
                    &param[..1.min(param.len())],
                    &[],
                )),
            }
        }
        _ => Err(invalid("a COTP TPDU the simulator does not take")),
    }
}

/// The program text's STRING[n] in S7 words 7 to 14: n, with its header, fills them.
const S7_TEXT_MAX: u8 = 14;

/// Word `index` of machine `machine` as an S7 program keeps it (see the module's
/// documentation): the Modbus map's words, but for the program text, a STRING with its
/// two-byte header one word later.
fn s7_word(workshop: &Workshop, machine: usize, index: usize, at: Timestamp) -> Option<u16> {
    match index {
        7 => {
            let text: Vec<u8> = (7..7 + usize::from(S7_TEXT_MAX / 2))
                .map(|i| word(workshop, machine, i, at).map(u16::to_be_bytes))
                .collect::<Option<Vec<_>>>()?
                .concat();
            let len = text.iter().take_while(|b| **b != 0).count() as u8;
            Some(u16::from_be_bytes([S7_TEXT_MAX, len]))
        }
        8..=14 => word(workshop, machine, index - 1, at),
        _ => word(workshop, machine, index, at),
    }
}

fn s7_read(workshop: &Workshop, pdu_ref: [u8; 2], param: &[u8], at: Timestamp) -> Vec<u8> {
    let count = usize::from(param.get(1).copied().unwrap_or(0));
    let mut data = Vec::new();
    for i in 0..count {
        let Some(item) = param.get(2 + 12 * i..2 + 12 * (i + 1)) else {
            break;
        };
        let (transport, n) = (item[3], usize::from(u16::from_be_bytes([item[4], item[5]])));
        let db = usize::from(u16::from_be_bytes([item[6], item[7]]));
        let (area, address) = (
            item[8],
            u32::from_be_bytes([0, item[9], item[10], item[11]]),
        );
        let byte = (address >> 3) as usize;
        // Data blocks only, read as bytes; a machine per block.
        let bytes: Option<Vec<u8>> = (area == 0x84 && transport == 0x02 && db >= 1)
            .then(|| {
                (byte..byte + n)
                    .map(|b| s7_word(workshop, db - 1, b / 2, at).map(|w| w.to_be_bytes()[b % 2]))
                    .collect()
            })
            .flatten();
        match bytes {
            Some(bytes) => {
                data.extend_from_slice(&[0xFF, 0x04]);
                data.extend_from_slice(&((bytes.len() * 8) as u16).to_be_bytes());
                data.extend_from_slice(&bytes);
                if i + 1 < count && bytes.len() % 2 == 1 {
                    data.push(0);
                }
            }
            // Object does not exist.
            None => data.extend_from_slice(&[0x0A, 0x00, 0x00, 0x00]),
        }
    }
    s7_ack(pdu_ref, [0, 0], &[0x04, count as u8], &data)
}

// ---------------------------------------------------------------------------------------
// MC (SLMP)

const MC_D: u8 = 0xA8;
const MC_END_OUT_OF_RANGE: u16 = 0xC056;
const MC_END_NOT_SUPPORTED: u16 = 0xC059;

async fn serve_mc<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    workshop: &Workshop,
) -> std::io::Result<()> {
    loop {
        let mut sub = [0u8; 2];
        stream.read_exact(&mut sub).await?;
        let serial = match sub {
            [0x50, 0x00] => None,
            [0x54, 0x00] => {
                let mut s = [0u8; 4];
                stream.read_exact(&mut s).await?;
                Some([s[0], s[1]])
            }
            _ => return Err(invalid("not a 3E or 4E binary request")),
        };
        let mut head = [0u8; 7];
        stream.read_exact(&mut head).await?;
        let len = usize::from(u16::from_le_bytes([head[5], head[6]]));
        if !(6..=2048).contains(&len) {
            return Err(invalid("request data length"));
        }
        let mut rest = vec![0u8; len];
        stream.read_exact(&mut rest).await?;
        let (end, data) = mc_answer(workshop, &rest[2..], Timestamp::now());
        let mut out = match serial {
            None => vec![0xD0, 0x00],
            Some([a, b]) => vec![0xD4, 0x00, a, b, 0, 0],
        };
        out.extend_from_slice(&head[..5]);
        out.extend_from_slice(&((2 + data.len()) as u16).to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&data);
        stream.write_all(&out).await?;
    }
}

/// Word `index` of machine `machine` as a MELSEC program keeps it (see the module's
/// documentation): the Modbus map's part count words swapped, its text bytes swapped.
fn mc_word(workshop: &Workshop, machine: usize, index: usize, at: Timestamp) -> Option<u16> {
    match index {
        4 => word(workshop, machine, 5, at),
        5 => word(workshop, machine, 4, at),
        7..=14 => word(workshop, machine, index, at).map(u16::swap_bytes),
        _ => word(workshop, machine, index, at),
    }
}

/// The end code and data for a command (command, subcommand, payload). Pure.
fn mc_answer(workshop: &Workshop, request: &[u8], at: Timestamp) -> (u16, Vec<u8>) {
    let stride = usize::from(workshop.holding_registers.max(MACHINE_REGISTERS));
    let d = |number: usize| mc_word(workshop, number / stride, number % stride, at);
    let le = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    let device = |b: &[u8]| (u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize, b[3]);
    if request.len() < 4 {
        return (MC_END_NOT_SUPPORTED, Vec::new());
    }
    let (command, sub, payload) = (le(&request[0..2]), le(&request[2..4]), &request[4..]);
    match (command, sub) {
        // Batch read in word units.
        (0x0401, 0x0000) if payload.len() == 6 => {
            let (start, code) = device(payload);
            let count = usize::from(le(&payload[4..6]));
            if code != MC_D {
                return (MC_END_OUT_OF_RANGE, Vec::new());
            }
            let words: Option<Vec<u16>> = (start..start + count).map(d).collect();
            match words {
                Some(words) => (0, words.iter().flat_map(|w| w.to_le_bytes()).collect()),
                None => (MC_END_OUT_OF_RANGE, Vec::new()),
            }
        }
        // Random read: words, then double words.
        (0x0403, 0x0000) if payload.len() >= 2 => {
            let (nw, nd) = (usize::from(payload[0]), usize::from(payload[1]));
            let points = &payload[2..];
            if points.len() != 4 * (nw + nd) {
                return (0xC061, Vec::new());
            }
            let mut out = Vec::new();
            for (i, p) in points.chunks_exact(4).enumerate() {
                let (number, code) = device(p);
                let span = if i < nw { 1 } else { 2 };
                for k in 0..span {
                    match (code == MC_D).then(|| d(number + k)).flatten() {
                        Some(w) => out.extend_from_slice(&w.to_le_bytes()),
                        None => return (MC_END_OUT_OF_RANGE, Vec::new()),
                    }
                }
            }
            (0, out)
        }
        _ => (MC_END_NOT_SUPPORTED, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::State;
    use crate::source::melsec::address::Device;
    use crate::source::melsec::frame::{
        BatchRead, Framing, RandomRead, Route, batch_read_reply, batch_read_request,
    };
    use crate::source::s7::address::Area;
    use crate::source::s7::frame::{
        ReadItem, read_reply, read_request, setup_reply, setup_request,
    };
    use jiff::SignedDuration;

    fn shop() -> Workshop {
        Workshop::generate(
            5,
            3,
            Timestamp::UNIX_EPOCH,
            1.0,
            SignedDuration::from_hours(1),
        )
    }

    /// The S7 client's own frames, answered by the simulator, give the Modbus registers:
    /// machine 2 is DB3, its part count (registers 4 and 5) the DINT at byte 8.
    #[test]
    fn s7_reads_give_the_machine_registers_of_the_modbus_map() {
        let shop = shop();
        let at = Timestamp::UNIX_EPOCH + SignedDuration::from_mins(20);
        let mut pdu = 0;
        let setup = setup_request(1, 960);
        let answer = s7_answer(&shop, &setup[4..], &mut pdu, at).unwrap();
        assert_eq!(setup_reply(&answer, 1).unwrap(), 960);

        let items = [
            ReadItem {
                area: Area::DataBlock(3),
                start: 0,
                count: 14,
            },
            ReadItem {
                area: Area::Flags,
                start: 0,
                count: 2,
            },
        ];
        let request = read_request(7, &items);
        let answer = s7_answer(&shop, &request[4..], &mut pdu, at).unwrap();
        let got = read_reply(&answer, 7, &items).unwrap();
        let data = &answer[got[0].clone().unwrap()];
        let regs = shop.machine_registers(2, at).unwrap();
        for (i, r) in regs[..7].iter().enumerate() {
            assert_eq!(
                u16::from_be_bytes([data[2 * i], data[2 * i + 1]]),
                *r,
                "word {i}"
            );
        }
        assert_eq!(got[1].as_ref().unwrap_err().code, 0x0A, "M is not served");
        let running = shop.state(2, at) == Some(State::Running);
        assert_eq!(data[1] == 1, running);
    }

    /// The program text is an S7 STRING[14] at byte 14: maximum and actual length, then the
    /// characters.
    #[test]
    fn s7_keeps_the_program_as_a_string() {
        let shop = shop();
        let at = Timestamp::UNIX_EPOCH + SignedDuration::from_mins(20);
        let bytes: Vec<u8> = (7..15)
            .flat_map(|i| s7_word(&shop, 2, i, at).unwrap().to_be_bytes())
            .collect();
        let program = shop.machines[2].program.as_bytes();
        assert_eq!(bytes[..2], [14, program.len() as u8]);
        assert_eq!(&bytes[2..2 + program.len()], program);
    }

    /// The MC client's own batch and random reads, answered by the simulator, give the same
    /// words: machine 1 starts at D{stride}.
    #[test]
    fn mc_reads_give_the_machine_registers_of_the_modbus_map() {
        let shop = shop();
        let at = Timestamp::UNIX_EPOCH + SignedDuration::from_mins(20);
        let stride = u32::from(shop.holding_registers.max(MACHINE_REGISTERS));
        let read = BatchRead::words(Device::D, stride, 7).unwrap();
        let request = batch_read_request(Framing::E3, &Route::LOCAL, 4, &read);
        // The simulator's loop strips the subheader, route, length and timer (11 bytes).
        let (end, data) = mc_answer(&shop, &request[11..], at);
        assert_eq!(end, 0);
        let regs = shop.machine_registers(1, at).unwrap();
        let words: Vec<u16> = data
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        // The part count low word first, as a MELSEC double word; the rest as Modbus serves it.
        let mut melsec = regs[..7].to_vec();
        melsec.swap(4, 5);
        assert_eq!(words, melsec);
        let mut frame = vec![0xD0, 0, 0, 0xFF, 0xFF, 0x03, 0];
        frame.extend_from_slice(&((2 + data.len()) as u16).to_le_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&data);
        assert!(batch_read_reply(Framing::E3, &frame, &read).is_ok());

        let random =
            RandomRead::new(vec![(Device::D, stride)], vec![(Device::D, stride + 4)]).unwrap();
        let request = crate::source::melsec::frame::random_read_request(
            Framing::E3,
            &Route::LOCAL,
            4,
            &random,
        );
        let (end, data) = mc_answer(&shop, &request[11..], at);
        assert_eq!((end, data.len()), (0, 6));
        let m = BatchRead::words(Device::M, 0, 1).unwrap();
        let request = batch_read_request(Framing::E3, &Route::LOCAL, 4, &m);
        assert_eq!(mc_answer(&shop, &request[11..], at).0, MC_END_OUT_OF_RANGE);
    }

    #[test]
    fn a_write_is_refused_by_both() {
        let shop = shop();
        let at = Timestamp::UNIX_EPOCH;
        // MC batch write (0x1401) of D0.
        let (end, _) = mc_answer(&shop, &[0x01, 0x14, 0, 0, 0, 0, 0, 0xA8, 1, 0, 0, 0], at);
        assert_eq!(end, MC_END_NOT_SUPPORTED);
        // S7 Write Var (0x05) job.
        let job = [
            0x02, 0xF0, 0x80, 0x32, 0x01, 0, 0, 0, 1, 0, 2, 0, 0, 0x05, 0x01,
        ];
        let mut pdu = 960;
        let answer = s7_answer(&shop, &job, &mut pdu, at).unwrap();
        assert_eq!(answer[4 + 3 + 10..4 + 3 + 12], [0x81, 0x04]);
    }
}
