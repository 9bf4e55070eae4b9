//! Fuzzes the dial-in stream splitter (`source::dial_in::stream`): a DTU's bytes, with
//! registrations, heartbeats and Modbus answers interleaved and glued, arriving in chunks of
//! any size, and the registration matcher (literals, a prefix and a pattern) on the first
//! bytes of a connection.
//!
//! Input: a framing and an expected answer (unit, function, count) from the first bytes, then
//! a script of pieces: heartbeat, registration, a correct answer (RTU with its CRC, or Modbus
//! TCP) with data from the input, an exception, or raw bytes; each piece is sent in chunks
//! whose sizes also come from the input.
//!
//! Nothing may panic, and the buffer never holds more than its bound. When the script has no
//! raw bytes, every answer and exception comes out, in order, with its data, every heartbeat
//! and registration is taken out (a trailing one that could also begin the answer is held
//! until no answer is expected), and no byte is refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

use shopfloor::source::dial_in::stream::{
    Expected, Framing, Identified, Identity, Pattern, Piece, Splitter, crc16, identify,
};

const HEARTBEATS: [&[u8]; 3] = [b"www.usr.cn", &[0xfe], b"HB"];
const REGISTRATION: &[u8] = b"868626041234567";
const MAX: usize = 4096;
/// A registration pattern (`registration_regex`), compiled once.
static PATTERN: LazyLock<Pattern> =
    LazyLock::new(|| Pattern::new("^USR[0-9]{4,6}").expect("a good pattern"));

/// A correct answer to `e` carrying `data` (cut or padded to the expected length), or an
/// exception with `code`.
fn answer(framing: Framing, e: &Expected, data: &[u8], exception: Option<u8>) -> Vec<u8> {
    let pdu: Vec<u8> = match exception {
        Some(code) => vec![e.function | 0x80, code],
        None => {
            let mut d: Vec<u8> = data.iter().copied().take(e.data_len()).collect();
            d.resize(e.data_len(), 0);
            let mut pdu = vec![e.function, d.len() as u8];
            pdu.extend(d);
            pdu
        }
    };
    match framing {
        Framing::Rtu => {
            let mut f = vec![e.unit];
            f.extend(&pdu);
            let crc = crc16(&f);
            f.extend(crc.to_le_bytes());
            f
        }
        Framing::Tcp => {
            let mut f = e.transaction.to_be_bytes().to_vec();
            f.extend([0, 0]);
            f.extend(((pdu.len() + 1) as u16).to_be_bytes());
            f.push(e.unit);
            f.extend(&pdu);
            f
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, unit, function, count, rest @ ..] = data else {
        return;
    };
    let framing = if mode & 1 == 0 { Framing::Rtu } else { Framing::Tcp };
    let heartbeat = HEARTBEATS[usize::from(mode >> 1) % 3];
    let repeated = mode & 0x40 != 0;
    let registration = if repeated { REGISTRATION.to_vec() } else { Vec::new() };
    let e = Expected {
        unit: (unit % 247) + 1,
        function: (function % 4) + 1,
        count: u16::from(*count % 125) + 1,
        transaction: u16::from(*unit) << 8 | u16::from(*count),
    };

    // The script.
    let mut stream: Vec<u8> = Vec::new();
    let mut want: Vec<Piece> = Vec::new();
    let mut raw = false;
    let mut chunks: Vec<usize> = Vec::new();
    let mut input = rest.iter();
    while let Some(&op) = input.next() {
        chunks.push(usize::from(op >> 3) + 1);
        match op & 7 {
            0 | 1 => stream.extend(heartbeat),
            2 if repeated => stream.extend(REGISTRATION),
            3 | 4 => {
                let take = usize::from(input.next().copied().unwrap_or(0));
                let bytes: Vec<u8> = input.by_ref().take(take).copied().collect();
                stream.extend(answer(framing, &e, &bytes, None));
                let mut d = bytes;
                d.truncate(e.data_len());
                d.resize(e.data_len(), 0);
                want.push(Piece::Answer(d));
            }
            5 => {
                let code = input.next().copied().unwrap_or(2);
                stream.extend(answer(framing, &e, &[], Some(code)));
                want.push(Piece::Exception(code));
            }
            _ => {
                let take = usize::from(input.next().copied().unwrap_or(0) % 16);
                stream.extend(input.by_ref().take(take));
                raw = raw || take > 0;
            }
        }
    }

    // Fed in chunks, taking pieces out after each as the DTU task does.
    let mut s = Splitter::new(framing, heartbeat.to_vec(), registration, MAX);
    let mut got = Vec::new();
    let mut refused = 0usize;
    let mut at = 0;
    let mut sizes = chunks.iter().cycle();
    while at < stream.len() {
        let n = (*sizes.next().unwrap_or(&1)).min(stream.len() - at);
        if s.push(&stream[at..at + n]).is_err() {
            refused += 1;
        }
        at += n;
        loop {
            match s.next(Some(&e)) {
                Ok(None) => break,
                Ok(Some(Piece::Heartbeat | Piece::Registration)) => {}
                Ok(Some(p)) => got.push(p),
                Err(_) => refused += 1,
            }
            assert!(s.buffered() <= MAX);
        }
    }
    if !raw && stream.len() <= MAX {
        assert_eq!(refused, 0, "a clean stream had bytes refused");
        assert_eq!(got, want);
        // What is still held could have begun the answer (a one-byte heartbeat `fe` and a
        // transaction id 0xfe00): with no answer expected, it is heartbeats and nothing else.
        loop {
            match s.next(None) {
                Ok(None) => break,
                Ok(Some(Piece::Heartbeat | Piece::Registration)) => {}
                other => panic!("left over from a clean stream: {other:?}"),
            }
        }
        assert_eq!(s.buffered(), 0);
    }

    // The registration matcher on the same bytes, as first bytes of a connection.
    let ids = [
        Identity::Exact(REGISTRATION.to_vec()),
        Identity::Exact(heartbeat.to_vec()),
        Identity::Prefix(b"USR-".to_vec()),
        Identity::Regex(PATTERN.clone()),
    ];
    for final_bytes in [false, true] {
        // A registration is never longer than the bytes it was found in.
        if let Identified::Dtu { len, .. } = identify(&ids, rest, final_bytes) {
            assert!(len <= rest.len());
        }
    }
});
