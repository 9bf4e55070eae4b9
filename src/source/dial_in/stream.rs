//! The byte stream of a dial-in DTU, taken apart without I/O: registration packets (注册包),
//! heartbeats (心跳包) and Modbus answers, in whatever order and however glued together the
//! DTU sends them.
//!
//! A DTU interleaves three kinds of bytes on one TCP stream: the registration it sends first
//! (and, on some models, before every packet), the heartbeat it sends every so often whatever
//! the line is doing (between frames, between a request and its answer, glued to the front or
//! the back of an answer in one TCP segment), and the answers of the devices behind it. RTU
//! frames carry no length, so the [`Splitter`] is told what answer it waits for ([`Expected`]:
//! unit, function and how many bytes a correct answer has) and takes an answer only where the
//! unit, function, length and CRC all agree. Everything else is a registration or heartbeat
//! (configured literals), bytes that cannot begin anything (dropped and reported as
//! [`SplitError::Garbage`], so the caller counts them), or the start of something still
//! arriving.
//!
//! Every input is bounded ([`Splitter::push`] refuses past `max_buffer`) and every way of
//! going wrong is an error value: this module never panics, which the `dial_in` fuzz target
//! checks.

/// How the agent frames requests to a DTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Transparent: RTU frames (unit, PDU, CRC) pass through the DTU as they are.
    Rtu,
    /// Modbus TCP (MBAP header, no CRC): the DTU converts to RTU on its serial side.
    Tcp,
}

/// The answer the splitter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub unit: u8,
    /// 1–4.
    pub function: u8,
    /// Registers or bits asked for.
    pub count: u16,
    /// Modbus TCP: the request's transaction id.
    pub transaction: u16,
}

impl Expected {
    /// The data bytes of a correct answer: bits packed eight to a byte, registers two bytes.
    pub fn data_len(&self) -> usize {
        match self.function {
            1 | 2 => usize::from(self.count).div_ceil(8),
            _ => 2 * usize::from(self.count),
        }
    }
}

/// One thing taken from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The configured heartbeat.
    Heartbeat,
    /// The configured registration, repeated (DTUs that prefix every packet).
    Registration,
    /// The expected answer's data bytes (after the byte count).
    Answer(Vec<u8>),
    /// The device refused the request with this exception code.
    Exception(u8),
}

/// Why bytes were refused. The splitter has dropped them already: the caller counts, logs and
/// goes on (or, for [`SplitError::Overflow`], closes the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error(
        "{len} bytes that are neither a heartbeat, a registration nor the expected answer (first bytes {})",
        hex(first)
    )]
    Garbage {
        len: usize,
        /// The first few of them, for the log.
        first: Vec<u8>,
    },
    #[error("more than {max} bytes buffered without a whole packet: connection closed")]
    Overflow { max: usize },
}

impl SplitError {
    /// A short label for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            SplitError::Garbage { .. } => "garbage",
            SplitError::Overflow { .. } => "overflow",
        }
    }
}

/// How many refused bytes an error keeps for the log.
const KEEP: usize = 16;

/// Takes a DTU's stream apart; see the module's documentation.
#[derive(Debug, Clone)]
pub struct Splitter {
    framing: Framing,
    heartbeat: Vec<u8>,
    registration: Vec<u8>,
    buf: Vec<u8>,
    max_buffer: usize,
}

impl Splitter {
    /// `heartbeat` and `registration` empty: none configured (a registration is only given
    /// when the DTU repeats it before every packet). `max_buffer` bounds what is held.
    pub fn new(
        framing: Framing,
        heartbeat: Vec<u8>,
        registration: Vec<u8>,
        max_buffer: usize,
    ) -> Splitter {
        Splitter {
            framing,
            heartbeat,
            registration,
            buf: Vec::new(),
            max_buffer,
        }
    }

    /// Bytes held, not yet taken apart.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Forgets what is held (before a request after a timeout: a late answer must not be
    /// taken as the next one's). Returns how many bytes were dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.buf.len();
        self.buf.clear();
        n
    }

    /// Adds received bytes. Past `max_buffer` they are refused and the buffer is emptied.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SplitError> {
        if self.buf.len().saturating_add(bytes.len()) > self.max_buffer {
            self.buf.clear();
            return Err(SplitError::Overflow {
                max: self.max_buffer,
            });
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next piece, `Ok(None)` when what is held may still become one (or nothing is held),
    /// or an error for bytes that cannot (already dropped; call again for what follows).
    pub fn next(&mut self, expected: Option<&Expected>) -> Result<Option<Piece>, SplitError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        // The expected answer first: its unit, function, length and CRC (or MBAP header) are
        // strong evidence, and a heartbeat may well share its first byte (a one-byte
        // heartbeat `fe` and a Modbus TCP transaction id 0xFE12). While it may still be
        // arriving, wait: what follows decides, and the answer is due.
        if let Some(expected) = expected {
            match self.answer_at(0, expected) {
                Start::Whole => return Ok(self.take_answer(expected)),
                Start::Partial => return Ok(None),
                Start::No => {}
            }
        }
        let mut partial = false;
        for (literal, piece) in [
            (&self.heartbeat, Piece::Heartbeat),
            (&self.registration, Piece::Registration),
        ] {
            match starts(&self.buf, literal) {
                Start::Whole => {
                    let n = literal.len();
                    self.buf.drain(..n);
                    return Ok(Some(piece));
                }
                Start::Partial => partial = true,
                Start::No => {}
            }
        }
        if partial {
            return Ok(None);
        }
        // Nothing begins here: drop up to the next place where something could.
        let skip = (1..self.buf.len())
            .find(|&at| self.could_begin(at, expected))
            .unwrap_or(self.buf.len());
        let first = self.buf[..skip.min(KEEP)].to_vec();
        self.buf.drain(..skip);
        Err(SplitError::Garbage { len: skip, first })
    }

    /// Whether a heartbeat, a registration or the expected answer could begin at `at`.
    fn could_begin(&self, at: usize, expected: Option<&Expected>) -> bool {
        let rest = &self.buf[at..];
        starts(rest, &self.heartbeat) != Start::No
            || starts(rest, &self.registration) != Start::No
            || expected.is_some_and(|e| self.answer_at(at, e) != Start::No)
    }

    /// Whether the expected answer (or an exception to it) is at `at`: whole, with a good
    /// CRC, or its beginning.
    fn answer_at(&self, at: usize, e: &Expected) -> Start {
        let b = &self.buf[at..];
        let data = e.data_len();
        match self.framing {
            Framing::Rtu => {
                // unit, function, byte count, data, CRC (2); exception: unit, function|0x80,
                // code, CRC.
                let ok_len = 3 + data + 2;
                let exception = b.get(1) == Some(&(e.function | 0x80));
                let (want, head): (usize, &[u8]) = if exception {
                    (5, &[e.unit, e.function | 0x80])
                } else if data <= 250 {
                    (ok_len, &[e.unit, e.function, data as u8])
                } else {
                    return Start::No;
                };
                let shown = b.len().min(head.len());
                if b[..shown] != head[..shown] {
                    return Start::No;
                }
                if b.len() < want {
                    return Start::Partial;
                }
                if crc16(&b[..want - 2]).to_le_bytes() == [b[want - 2], b[want - 1]] {
                    Start::Whole
                } else {
                    Start::No
                }
            }
            Framing::Tcp => {
                // transaction (2), protocol 0 (2), length (2), unit, function, byte count, data;
                // or an exception. Which one is only known at byte 7, and the length field
                // (byte 5) differs before it: the beginning of either is a beginning.
                let normal = tcp_answer_at(b, e, false);
                let exception = tcp_answer_at(b, e, true);
                match (normal, exception) {
                    (Start::Whole, _) | (_, Start::Whole) => Start::Whole,
                    (Start::Partial, _) | (_, Start::Partial) => Start::Partial,
                    _ => Start::No,
                }
            }
        }
    }

    /// Takes the whole answer that [`Splitter::answer_at`] found at 0.
    fn take_answer(&mut self, e: &Expected) -> Option<Piece> {
        let (skip, exception_at) = match self.framing {
            Framing::Rtu => (3, 1),
            Framing::Tcp => (9, 7),
        };
        let exception = self.buf.get(exception_at) == Some(&(e.function | 0x80));
        let (total, piece) = if exception {
            let code = self.buf.get(exception_at + 1).copied()?;
            let total = match self.framing {
                Framing::Rtu => 5,
                Framing::Tcp => 9,
            };
            (total, Piece::Exception(code))
        } else {
            let data = e.data_len();
            let total = skip
                + data
                + match self.framing {
                    Framing::Rtu => 2,
                    Framing::Tcp => 0,
                };
            let bytes = self.buf.get(skip..skip + data)?.to_vec();
            (total, Piece::Answer(bytes))
        };
        if total > self.buf.len() {
            return None;
        }
        self.buf.drain(..total);
        Some(piece)
    }
}

/// Whether `b` begins with a Modbus TCP answer to `e` (or, with `exception`, an exception
/// answer): whole, or its beginning.
fn tcp_answer_at(b: &[u8], e: &Expected, exception: bool) -> Start {
    let data = e.data_len();
    if !exception && data > 250 {
        return Start::No;
    }
    let pdu = if exception { 2 } else { 2 + data };
    let length = (1 + pdu) as u16;
    let t = e.transaction.to_be_bytes();
    let l = length.to_be_bytes();
    let mut head = vec![t[0], t[1], 0, 0, l[0], l[1], e.unit];
    if exception {
        head.push(e.function | 0x80);
    } else {
        head.extend([e.function, data as u8]);
    }
    let shown = b.len().min(head.len());
    if b[..shown] != head[..shown] {
        Start::No
    } else if b.len() < 6 + usize::from(length) {
        Start::Partial
    } else {
        Start::Whole
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Whole,
    Partial,
    No,
}

/// Whether `bytes` begins with `literal` (whole), is its beginning (partial), or neither. An
/// empty literal never matches.
fn starts(bytes: &[u8], literal: &[u8]) -> Start {
    if literal.is_empty() {
        Start::No
    } else if bytes.starts_with(literal) {
        Start::Whole
    } else if literal.starts_with(bytes) {
        Start::Partial
    } else {
        Start::No
    }
}

/// A read request (function codes 1–4 only: the wire cannot carry anything else from here)
/// as the DTU is sent it.
pub fn request(framing: Framing, e: &Expected, start: u16) -> Vec<u8> {
    let function = e.function.clamp(1, 4);
    let [sh, sl] = start.to_be_bytes();
    let [ch, cl] = e.count.to_be_bytes();
    let pdu = [function, sh, sl, ch, cl];
    match framing {
        Framing::Rtu => {
            let mut frame = Vec::with_capacity(8);
            frame.push(e.unit);
            frame.extend(pdu);
            let crc = crc16(&frame);
            frame.extend(crc.to_le_bytes());
            frame
        }
        Framing::Tcp => {
            let mut frame = Vec::with_capacity(12);
            frame.extend(e.transaction.to_be_bytes());
            frame.extend([0, 0, 0, 6, e.unit]);
            frame.extend(pdu);
            frame
        }
    }
}

/// The Modbus RTU CRC, the one the Modbus source checks answers with.
pub use crate::source::modbus::link::crc16;

/// Bytes as hex pairs, `31 32 0d`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes as text, with `.` for what is not printable ASCII.
pub fn ascii(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect()
}

/// How a DTU is recognised by the first bytes of its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The registration is exactly these bytes.
    Exact(Vec<u8>),
    /// The registration is the first packet, and it begins with these bytes.
    Prefix(Vec<u8>),
    /// The registration is what this pattern matches at the first byte.
    Regex(Pattern),
}

/// A registration known by a regular expression (`registration_regex`), for DTUs whose
/// registration varies in a known shape (`USR` and six digits).
///
/// It is matched **anchored at the connection's first byte** (as if it began with `^`, which
/// may be written or not), against bytes, not text: `\x7e` is the byte 0x7E, and `\d`, `\w`
/// and `.` are ASCII. The registration is the longest run of first bytes the pattern matches
/// (leftmost-first, as the `regex` crate): what follows goes to the stream, as after any
/// registration. `$` means "the bytes received end here". While no match has been found but
/// more bytes could still make one, the listener waits for them, within
/// `registration_timeout`; at most [`Pattern::WINDOW`] bytes are looked at, like the longest
/// literal registration. Bytes that can begin no match close the connection at once, as an
/// unknown registration.
///
/// The pattern runs as a lazy DFA (regex-automata's, the engine of the `regex` crate), which
/// can tell "no match yet" from "can never match" after each byte: a plain `is_match` cannot.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    dfa: std::sync::Arc<regex_automata::hybrid::dfa::DFA>,
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pattern").field(&self.text).finish()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.text == other.text
    }
}
impl Eq for Pattern {}

impl Pattern {
    /// The most first bytes a pattern is matched against.
    pub const WINDOW: usize = 128;
    /// The longest pattern taken, in characters.
    pub const MAX_LEN: usize = 256;

    /// Compiles `text`, or says in words why it cannot be a registration pattern.
    pub fn new(text: &str) -> Result<Pattern, String> {
        use regex_automata::{hybrid::dfa::DFA, nfa::thompson, util::syntax};
        if text.is_empty() || text.chars().count() > Self::MAX_LEN {
            return Err(format!(
                "a registration pattern is 1–{} characters",
                Self::MAX_LEN
            ));
        }
        let dfa = DFA::builder()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .thompson(
                thompson::Config::new()
                    .utf8(false)
                    .nfa_size_limit(Some(1 << 20)),
            )
            .configure(DFA::config().cache_capacity(1 << 20))
            .build(text)
            .map_err(|e| {
                // The words are in the deepest source (a parse error's last line says what is
                // wrong; the lines before it draw the pattern).
                let mut deepest: &dyn std::error::Error = &e;
                while let Some(source) = deepest.source() {
                    deepest = source;
                }
                let words = deepest.to_string();
                let detail = words
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default()
                    .trim()
                    .trim_start_matches("error: ")
                    .to_string();
                format!("`{text}` is not a usable regular expression: {detail}")
            })?;
        let pattern = Pattern {
            text: text.to_string(),
            dfa: std::sync::Arc::new(dfa),
        };
        if pattern.test(b"").0 == Start::Whole {
            return Err(format!(
                "`{text}` matches no bytes at all: a registration is at least one byte"
            ));
        }
        Ok(pattern)
    }

    /// The pattern as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the first bytes match: whole (with the match's length), partial (no match yet,
    /// more bytes could make one) or no.
    fn test(&self, first: &[u8]) -> (Start, usize) {
        use regex_automata::{Anchored, Input};
        let dfa = &*self.dfa;
        let mut cache = dfa.create_cache();
        let window = &first[..first.len().min(Self::WINDOW)];
        let input = Input::new(window).anchored(Anchored::Yes);
        let Ok(mut state) = dfa.start_state_forward(&mut cache, &input) else {
            return (Start::No, 0);
        };
        let mut matched = None;
        for (at, &byte) in window.iter().enumerate() {
            state = match dfa.next_state(&mut cache, state, byte) {
                Ok(s) => s,
                Err(_) => return (Start::No, 0),
            };
            // A DFA reports a match one byte late: this one ended before `at`.
            if state.is_match() {
                matched = Some(at);
            }
            if state.is_dead() || state.is_quit() {
                return matched.map_or((Start::No, 0), |len| (Start::Whole, len));
            }
        }
        if dfa
            .next_eoi_state(&mut cache, state)
            .is_ok_and(|s| s.is_match())
        {
            matched = Some(window.len());
        }
        match matched {
            Some(len) => (Start::Whole, len),
            None if first.len() >= Self::WINDOW => (Start::No, 0),
            None => (Start::Partial, 0),
        }
    }
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identified {
    /// DTU `index`, whose registration is the first `len` bytes.
    Dtu { index: usize, len: usize },
    /// Some DTU's registration may still be arriving.
    NeedMore,
    /// No configured DTU begins like this.
    Unknown,
}

/// Matches the first bytes of a connection against the DTUs' identities. The longest whole
/// match wins (so `ABC` is not taken for a DTU registered as `AB`; for a prefix its own
/// length counts, for a pattern its match's; on a tie the DTU configured first); a prefix
/// identity takes all of `first`, the whole first packet. `final_bytes`: nothing more will
/// come (the registration timeout has passed), so a whole match is taken even if a longer one
/// could still have arrived.
pub fn identify(identities: &[Identity], first: &[u8], final_bytes: bool) -> Identified {
    // (index, length that ranks the match, bytes taken as the registration)
    let mut best: Option<(usize, usize, usize)> = None;
    let mut more = false;
    for (index, identity) in identities.iter().enumerate() {
        let (start, rank, taken) = match identity {
            Identity::Exact(b) => (starts(first, b), b.len(), b.len()),
            Identity::Prefix(p) => (starts(first, p), p.len(), first.len()),
            Identity::Regex(r) => {
                let (start, len) = r.test(first);
                (start, len, len)
            }
        };
        match start {
            Start::Whole => {
                if best.is_none_or(|(_, ranked, _)| rank > ranked) {
                    best = Some((index, rank, taken));
                }
            }
            Start::Partial => more = true,
            Start::No => {}
        }
    }
    let best = best.map(|(index, _, len)| (index, len));
    let more = more && !final_bytes;
    match (best, more) {
        // A longer registration may still be arriving that this one is the beginning of.
        (Some(_), true) => Identified::NeedMore,
        (Some((index, len)), false) => Identified::Dtu { index, len },
        (None, true) => Identified::NeedMore,
        (None, false) => Identified::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtu_answer(unit: u8, data: &[u8]) -> Vec<u8> {
        let mut f = vec![unit, 3, data.len() as u8];
        f.extend(data);
        let crc = crc16(&f);
        f.extend(crc.to_le_bytes());
        f
    }

    fn expected(count: u16) -> Expected {
        Expected {
            unit: 1,
            function: 3,
            count,
            transaction: 0,
        }
    }

    fn all(s: &mut Splitter, e: Option<&Expected>) -> Vec<Result<Piece, String>> {
        let mut out = Vec::new();
        loop {
            match s.next(e) {
                Ok(Some(p)) => out.push(Ok(p)),
                Ok(None) => return out,
                Err(e) => out.push(Err(e.kind().to_string())),
            }
        }
    }

    #[test]
    fn the_crc_is_the_modbus_one() {
        // The specification's example: 01 03 00 00 00 0a → CRC c5 cd (sent low byte first).
        let frame = request(Framing::Rtu, &expected(10), 0);
        assert_eq!(frame, vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x0a, 0xc5, 0xcd]);
    }

    #[test]
    fn heartbeats_are_taken_out_wherever_they_are_glued() {
        let hb = b"HB".to_vec();
        let reg = b"860000000000001".to_vec();
        let e = expected(2);
        let answer = rtu_answer(1, &[0, 7, 0, 9]);
        let mut s = Splitter::new(Framing::Rtu, hb.clone(), reg.clone(), 1024);
        // Registration, heartbeat glued to the front, the answer, a heartbeat glued behind.
        let mut bytes = reg.clone();
        bytes.extend(&hb);
        bytes.extend(&answer);
        bytes.extend(&hb);
        s.push(&bytes).unwrap();
        assert_eq!(
            all(&mut s, Some(&e)),
            vec![
                Ok(Piece::Registration),
                Ok(Piece::Heartbeat),
                Ok(Piece::Answer(vec![0, 7, 0, 9])),
                Ok(Piece::Heartbeat),
            ]
        );
        // The answer a byte at a time, with a heartbeat in the middle of nothing.
        for b in answer.iter().take(4) {
            s.push(&[*b]).unwrap();
            assert_eq!(s.next(Some(&e)), Ok(None));
        }
        s.push(&answer[4..]).unwrap();
        assert_eq!(s.next(Some(&e)), Ok(Some(Piece::Answer(vec![0, 7, 0, 9]))));
    }

    #[test]
    fn a_bad_crc_or_a_stray_answer_is_garbage_not_data() {
        let e = expected(1);
        let mut bad = rtu_answer(1, &[0, 5]);
        bad[4] ^= 1;
        let mut s = Splitter::new(Framing::Rtu, b"HB".to_vec(), Vec::new(), 1024);
        s.push(&bad).unwrap();
        let got = all(&mut s, Some(&e));
        assert!(got.iter().all(|p| p.is_err()), "{got:?}");
        assert_eq!(s.buffered(), 0);
        // An answer while none is expected (a late one) is dropped too.
        s.push(&rtu_answer(1, &[0, 5])).unwrap();
        assert!(all(&mut s, None).iter().all(|p| p.is_err()));
    }

    #[test]
    fn an_exception_and_a_tcp_answer_are_recognised() {
        let e = expected(1);
        let mut ex = vec![1, 0x83, 2];
        let crc = crc16(&ex);
        ex.extend(crc.to_le_bytes());
        let mut s = Splitter::new(Framing::Rtu, Vec::new(), Vec::new(), 64);
        s.push(&ex).unwrap();
        assert_eq!(s.next(Some(&e)), Ok(Some(Piece::Exception(2))));
        let e = Expected {
            transaction: 7,
            ..expected(1)
        };
        let mut s = Splitter::new(Framing::Tcp, b"HB".to_vec(), Vec::new(), 64);
        s.push(&[b'H', b'B', 0, 7, 0, 0, 0, 5, 1, 3, 2, 0x12, 0x34, b'H'])
            .unwrap();
        assert_eq!(s.next(Some(&e)), Ok(Some(Piece::Heartbeat)));
        assert_eq!(s.next(Some(&e)), Ok(Some(Piece::Answer(vec![0x12, 0x34]))));
        assert_eq!(s.next(Some(&e)), Ok(None));
        assert_eq!(s.buffered(), 1);
    }

    #[test]
    fn a_heartbeat_that_begins_like_the_answer_does_not_cut_it() {
        // A one-byte heartbeat fe, and a Modbus TCP answer whose transaction id is 0xfe12.
        let e = Expected {
            transaction: 0xfe12,
            ..expected(1)
        };
        let mut s = Splitter::new(Framing::Tcp, vec![0xfe], Vec::new(), 64);
        s.push(&[0xfe]).unwrap();
        assert_eq!(s.next(Some(&e)), Ok(None));
        s.push(&[0x12, 0, 0, 0, 5, 1, 3, 2, 0, 9, 0xfe]).unwrap();
        assert_eq!(s.next(Some(&e)), Ok(Some(Piece::Answer(vec![0, 9]))));
        assert_eq!(s.next(None), Ok(Some(Piece::Heartbeat)));
        // A heartbeat glued in front is still taken off: fe fe 12 … is a heartbeat, then the
        // answer.
        s.push(&[0xfe, 0xfe, 0x12, 0, 0, 0, 5, 1, 3, 2, 0, 7])
            .unwrap();
        assert_eq!(s.next(Some(&e)), Ok(Some(Piece::Heartbeat)));
        assert_eq!(s.next(Some(&e)), Ok(Some(Piece::Answer(vec![0, 7]))));
    }

    /// Found by the dial_in fuzz target: a Modbus TCP exception arriving three bytes at a time
    /// was refused as garbage once its length field (3, not the normal answer's 4) arrived,
    /// before the function byte that says it is an exception.
    #[test]
    fn a_tcp_exception_arriving_in_pieces_is_an_exception() {
        let e = Expected {
            unit: 2,
            function: 1,
            count: 1,
            transaction: 0x0100,
        };
        let mut s = Splitter::new(Framing::Tcp, vec![0xfe], Vec::new(), 64);
        for chunk in [&[1u8, 0, 0][..], &[0, 0, 3], &[2, 0x81, 2]] {
            s.push(chunk).unwrap();
            if chunk[1] != 0x81 {
                assert_eq!(s.next(Some(&e)), Ok(None));
            }
        }
        assert_eq!(s.next(Some(&e)), Ok(Some(Piece::Exception(2))));
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut s = Splitter::new(Framing::Rtu, Vec::new(), Vec::new(), 8);
        assert_eq!(s.push(&[0; 8]), Ok(()));
        assert_eq!(s.push(&[0]), Err(SplitError::Overflow { max: 8 }));
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn identities_match_exactly_longest_first_or_by_prefix() {
        let ids = vec![
            Identity::Exact(b"AB".to_vec()),
            Identity::Exact(b"ABC".to_vec()),
            Identity::Prefix(b"USR-".to_vec()),
        ];
        assert_eq!(identify(&ids, b"A", false), Identified::NeedMore);
        assert_eq!(identify(&ids, b"AB", false), Identified::NeedMore);
        assert_eq!(
            identify(&ids, b"ABC\x01\x03", false),
            Identified::Dtu { index: 1, len: 3 }
        );
        assert_eq!(
            identify(&ids, b"ABX", false),
            Identified::Dtu { index: 0, len: 2 }
        );
        assert_eq!(
            identify(&ids, b"USR-0042", false),
            Identified::Dtu { index: 2, len: 8 }
        );
        assert_eq!(
            identify(&ids, b"GET / HTTP/1.1", false),
            Identified::Unknown
        );
    }

    #[test]
    fn a_pattern_matches_from_the_first_byte_and_waits_while_it_still_could() {
        let usr = Pattern::new("USR[0-9]{6}").expect("a pattern");
        let binary = Pattern::new(r"^\x7e\x01.{2}").expect("a pattern");
        let ids = vec![Identity::Regex(usr), Identity::Regex(binary)];
        // Could still become `USR` and six digits: wait.
        assert_eq!(identify(&ids, b"US", false), Identified::NeedMore);
        assert_eq!(identify(&ids, b"USR12", false), Identified::NeedMore);
        // The match is the registration; a heartbeat glued after it stays in the stream.
        assert_eq!(
            identify(&ids, b"USR123456www.usr.cn", false),
            Identified::Dtu { index: 0, len: 9 }
        );
        // Anchored: the same bytes later in the packet are not a registration.
        assert_eq!(identify(&ids, b"xUSR123456", false), Identified::Unknown);
        assert_eq!(identify(&ids, b"USRx", false), Identified::Unknown);
        // Bytes, not text: 7e 01 and any two bytes, 0xff among them.
        assert_eq!(
            identify(&ids, b"\x7e\x01\xff\x00\x03", false),
            Identified::Dtu { index: 1, len: 4 }
        );
        // At most WINDOW bytes are looked at: a pattern that could still match after them is
        // given up.
        let long = vec![Identity::Regex(Pattern::new("A+B").expect("a pattern"))];
        assert_eq!(identify(&long, &[b'A'; 100], false), Identified::NeedMore);
        assert_eq!(
            identify(&long, &[b'A'; Pattern::WINDOW], false),
            Identified::Unknown
        );
    }

    #[test]
    fn a_pattern_that_cannot_be_a_registration_is_refused_in_words() {
        let err = Pattern::new("USR[0-9").expect_err("unclosed class");
        assert!(err.contains("unclosed character class"), "{err}");
        let err = Pattern::new("x*").expect_err("matches nothing");
        assert!(err.contains("matches no bytes at all"), "{err}");
        assert!(Pattern::new("").is_err());
    }
}
