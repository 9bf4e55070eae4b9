//! Connections to Modbus devices: Modbus TCP, RTU frames over TCP, and RTU on a serial port.
//!
//! A [`ReadOnly`] is the only handle to an open connection, and it offers function codes 1–4
//! and nothing else: "the agent never writes to a machine" is a property of this type, not a
//! promise kept by its callers. Every operation carries its own timeout and turns every way of
//! failing into a [`PollFault`] that the health report can count by kind.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use super::config::{ModbusSerial, Parity, RegisterKind};

/// How to reach a connection's devices, with everything needed to open it.
#[derive(Debug, Clone)]
pub enum LinkSpec {
    Tcp(String),
    RtuOverTcp(String),
    Serial(ModbusSerial),
}

impl std::fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkSpec::Tcp(a) => write!(f, "tcp://{a}"),
            LinkSpec::RtuOverTcp(a) => write!(f, "rtu-over-tcp://{a}"),
            LinkSpec::Serial(s) => write!(
                f,
                "serial {} {} {}{}{}",
                s.port,
                s.baud,
                s.data_bits,
                match s.parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                },
                s.stop_bits
            ),
        }
    }
}

/// Why a poll failed, in the words the health report uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollFault {
    Resolve(String),
    Connect(String),
    Timeout,
    Transport(String),
    Protocol(String),
    /// An RTU answer whose checksum does not match its bytes (noise on the line, wiring,
    /// termination, or a baud rate or parity that differs from the device's).
    Crc(String),
}

impl PollFault {
    /// A short label for metrics and `agent` lines.
    pub fn kind(&self) -> &'static str {
        match self {
            PollFault::Resolve(_) => "resolve",
            PollFault::Connect(_) => "connect",
            PollFault::Timeout => "timeout",
            PollFault::Transport(_) => "transport",
            PollFault::Protocol(_) => "protocol",
            PollFault::Crc(_) => "crc",
        }
    }

    /// Whether the fault is the connection's rather than one device's: then every device on
    /// the connection is unreachable, not only the one whose turn it was.
    pub fn is_link_fault(&self) -> bool {
        matches!(self, PollFault::Resolve(_) | PollFault::Connect(_))
    }
}

impl std::fmt::Display for PollFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollFault::Resolve(e) => write!(f, "cannot resolve address: {e}"),
            PollFault::Connect(e) => write!(f, "cannot connect: {e}"),
            PollFault::Timeout => f.write_str("no answer within the timeout"),
            PollFault::Transport(e) => write!(f, "connection failed: {e}"),
            PollFault::Protocol(e) => write!(f, "protocol error: {e}"),
            PollFault::Crc(e) => write!(
                f,
                "CRC error: {e} (check the RS-485 wiring, termination and the baud rate and parity)"
            ),
        }
    }
}

/// An open connection that can only read.
pub struct ReadOnly {
    ctx: Context,
    /// Set when the peer closed its side of the connection: tokio-modbus reports that with
    /// whatever the last OS error was, which would put a misleading reason in the log.
    closed: Arc<AtomicBool>,
    /// RTU on a serial line: the silence to keep before each request.
    frame_gap: Option<Duration>,
    /// The device's `inter_request_delay`: silence kept before each request, on any link.
    delay: Option<Duration>,
    /// When the line last carried a frame (the end of the last answer or timeout).
    last_frame: Instant,
    /// RTU: a corrupt answer seen since the last request (what its checksum says), which
    /// tokio-modbus only logs before it waits out the timeout.
    bad_crc: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for ReadOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnly")
            .field("frame_gap", &self.frame_gap)
            .finish_non_exhaustive()
    }
}

/// Opens a connection within `timeout`.
pub async fn open(spec: &LinkSpec, timeout: Duration) -> Result<ReadOnly, PollFault> {
    // The unit is set before every request; this one is never used.
    let slave = Slave(1);
    let closed = Arc::new(AtomicBool::new(false));
    let bad_crc = Arc::new(Mutex::new(None));
    let (ctx, frame_gap) = match spec {
        LinkSpec::Tcp(address) => {
            let stream = Watched::new(connect_tcp(address, timeout).await?, &closed, None);
            (tokio_modbus::client::tcp::attach_slave(stream, slave), None)
        }
        LinkSpec::RtuOverTcp(address) => {
            let stream = Watched::new(
                connect_tcp(address, timeout).await?,
                &closed,
                Some(&bad_crc),
            );
            (tokio_modbus::client::rtu::attach_slave(stream, slave), None)
        }
        LinkSpec::Serial(settings) => {
            let port = Watched::new(open_serial(settings)?, &closed, Some(&bad_crc));
            (
                tokio_modbus::client::rtu::attach_slave(port, slave),
                Some(settings.effective_frame_gap()),
            )
        }
    };
    Ok(ReadOnly {
        ctx,
        closed,
        frame_gap,
        delay: None,
        last_frame: Instant::now(),
        bad_crc,
    })
}

/// A connection over a transport that is already open, with TCP (MBAP) or RTU framing:
/// what [`open`] makes of a socket, for the fuzz targets' replayed byte streams.
pub(crate) fn attach<T>(transport: T, rtu: bool) -> ReadOnly
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + std::fmt::Debug + 'static,
{
    let slave = Slave(1);
    let closed = Arc::new(AtomicBool::new(false));
    let bad_crc = Arc::new(Mutex::new(None));
    let transport = Watched::new(transport, &closed, rtu.then_some(&bad_crc));
    let ctx = if rtu {
        tokio_modbus::client::rtu::attach_slave(transport, slave)
    } else {
        tokio_modbus::client::tcp::attach_slave(transport, slave)
    };
    ReadOnly {
        ctx,
        closed,
        frame_gap: None,
        delay: None,
        last_frame: Instant::now(),
        bad_crc,
    }
}

async fn connect_tcp(address: &str, timeout: Duration) -> Result<TcpStream, PollFault> {
    let addr = resolve(address, timeout).await?;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| PollFault::Timeout)?
        .map_err(|e| PollFault::Connect(e.to_string()))?;
    // Requests are small and each waits for its answer: send them at once.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn resolve(address: &str, timeout: Duration) -> Result<SocketAddr, PollFault> {
    let lookup = tokio::net::lookup_host(address);
    let mut addrs = tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| PollFault::Resolve(format!("no answer for `{address}` within the timeout")))?
        .map_err(|e| PollFault::Resolve(format!("`{address}`: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| PollFault::Resolve(format!("`{address}` has no address")))
}

fn open_serial(s: &ModbusSerial) -> Result<tokio_serial::SerialStream, PollFault> {
    use tokio_serial::{DataBits, SerialPortBuilderExt, StopBits};
    let data_bits = match s.data_bits {
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let parity = match s.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = match s.stop_bits {
        2 => StopBits::Two,
        _ => StopBits::One,
    };
    tokio_serial::new(&s.port, s.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(|e| PollFault::Connect(format!("{}: {e}", s.port)))
}

/// What one read brought back: registers (bits as 0 or 1), or the device's exception.
pub type ReadResult = Result<Vec<u16>, ExceptionCode>;

impl ReadOnly {
    /// Keeps `delay` of silence before each following request (a device's
    /// `inter_request_delay`; `None`: only a serial line's frame gap).
    pub fn set_inter_request_delay(&mut self, delay: Option<Duration>) {
        self.delay = delay;
    }

    /// Reads `count` registers or bits from `unit` within `timeout`. After any `Err` the
    /// connection must be dropped: a late answer could otherwise be read as the next one's.
    pub async fn read(
        &mut self,
        unit: Slave,
        kind: RegisterKind,
        start: u16,
        count: u16,
        timeout: Duration,
    ) -> Result<ReadResult, PollFault> {
        let pause = match (self.frame_gap, self.delay) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(gap) = pause {
            tokio::time::sleep_until(self.last_frame + gap).await;
        }
        self.ctx.set_slave(unit);
        // Only the four read requests are ever built here: this is what keeps the type
        // read-only. `call` rather than tokio-modbus's `Reader` methods, because those only
        // `debug_assert` that the answer has as many values as asked for: a device that sends
        // fewer would panic the connection's task in a debug build and pass unnoticed in a
        // release build.
        let request = match kind {
            RegisterKind::Coil => Request::ReadCoils(start, count),
            RegisterKind::Discrete => Request::ReadDiscreteInputs(start, count),
            RegisterKind::Holding => Request::ReadHoldingRegisters(start, count),
            RegisterKind::Input => Request::ReadInputRegisters(start, count),
        };
        self.bad_crc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let result = tokio::time::timeout(timeout, self.ctx.call(request)).await;
        self.last_frame = Instant::now();
        // tokio-modbus's RTU decoder drops a corrupt answer a byte at a time looking for a
        // frame whose checksum holds, and so ends in a timeout or a protocol error: the answer
        // seen on the line says what really happened.
        if !matches!(result, Ok(Ok(_)))
            && let Some(e) = self
                .bad_crc
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        {
            return Err(PollFault::Crc(e));
        }
        match result {
            Err(_) => Err(PollFault::Timeout),
            Ok(Err(tokio_modbus::Error::Transport(e))) => Err(self.transport_fault(&e)),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(PollFault::Protocol(e.to_string())),
            Ok(Ok(Err(exception))) => Ok(Err(exception)),
            Ok(Ok(Ok(response))) => checked(response, count).map(Ok),
        }
    }

    /// A transport error in the words of what happened: the device hung up, it sent bytes
    /// that are not a Modbus frame (tokio-modbus's codec says `InvalidData`), or the
    /// connection itself failed.
    fn transport_fault(&self, e: &io::Error) -> PollFault {
        if self.closed.load(Ordering::Relaxed) {
            PollFault::Transport("the device closed the connection without answering".into())
        } else if e.kind() == io::ErrorKind::InvalidData {
            PollFault::Protocol(format!("not a Modbus answer: {e}"))
        } else {
            PollFault::Transport(e.to_string())
        }
    }
}

/// The values of an answer, if it has exactly as many as were asked for: registers come two
/// bytes each, bits packed eight to a byte (so the answer holds `count` rounded up to whole
/// bytes). Anything else is a protocol error rather than values shifted into the wrong fields.
fn checked(response: Response, count: u16) -> Result<Vec<u16>, PollFault> {
    let wrong = |got: String| {
        PollFault::Protocol(format!(
            "byte count does not match the quantity: asked for {count}, the answer holds {got}"
        ))
    };
    match response {
        Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => {
            let bytes = usize::from(count).div_ceil(8);
            if bits.len() != bytes * 8 {
                return Err(wrong(format!("{} bytes of bits", bits.len() / 8)));
            }
            Ok(bits
                .into_iter()
                .take(usize::from(count))
                .map(u16::from)
                .collect())
        }
        Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
            if words.len() != usize::from(count) {
                return Err(wrong(format!("{} registers", words.len())));
            }
            Ok(words)
        }
        // `call` checks that the answer's function code is the request's.
        other => Err(PollFault::Protocol(format!(
            "answer to a read is not a read: {other:?}"
        ))),
    }
}

/// A byte stream that notes when the peer closes it (a read of zero bytes), for Modbus TCP
/// checks each MBAP header as it arrives, and for RTU checks each answer's checksum.
#[derive(Debug)]
struct Watched<T> {
    inner: T,
    closed: Arc<AtomicBool>,
    mbap: Option<MbapHeaders>,
    rtu: Option<RtuAnswer>,
}

impl<T> Watched<T> {
    /// RTU framing when `bad_crc` is given (where a corrupt answer is noted), MBAP otherwise.
    fn new(
        inner: T,
        closed: &Arc<AtomicBool>,
        bad_crc: Option<&Arc<Mutex<Option<String>>>>,
    ) -> Self {
        Watched {
            inner,
            closed: closed.clone(),
            mbap: bad_crc.is_none().then(MbapHeaders::default),
            rtu: bad_crc.map(|b| RtuAnswer {
                bytes: Vec::new(),
                done: false,
                bad_crc: b.clone(),
            }),
        }
    }
}

/// CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF), sent low byte first.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for b in bytes {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The answer to one RTU read request, followed as it arrives: its length is known from its
/// function code (a read: unit, function, byte count, data, CRC; an exception: unit, function
/// with the high bit, code, CRC), so a complete answer's checksum can be checked without
/// waiting for the silence that ends a frame. Only watches: the bytes go on to tokio-modbus
/// unchanged. Anything else (another function code) is left to tokio-modbus.
#[derive(Debug)]
struct RtuAnswer {
    /// The answer's bytes so far (at most a read answer's 3 + 255 + 2).
    bytes: Vec<u8>,
    /// The answer is complete, or not one this can follow: the rest is not looked at.
    done: bool,
    bad_crc: Arc<Mutex<Option<String>>>,
}

impl RtuAnswer {
    /// A request went out: what follows is its answer.
    fn request_sent(&mut self) {
        self.bytes.clear();
        self.done = false;
    }

    fn take(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.done {
                return;
            }
            self.bytes.push(b);
            let length = match self.bytes[..] {
                [_, 0x81..=0x84, ..] => 5,
                [_, 1..=4, count, ..] => 3 + usize::from(count) + 2,
                [_, 1..=4] | [_] => continue,
                _ => {
                    self.done = true;
                    return;
                }
            };
            if self.bytes.len() == length {
                self.done = true;
                let (body, crc) = self.bytes.split_at(length - 2);
                let sent = u16::from_le_bytes([crc[0], crc[1]]);
                let computed = crc16(body);
                if sent != computed {
                    *self.bad_crc.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                        "the answer's checksum is 0x{sent:04X}, its {} bytes give 0x{computed:04X}",
                        body.len()
                    ));
                }
            }
        }
    }
}

/// The largest MBAP length: the unit id and a PDU of at most 253 bytes.
const MBAP_MAX_LENGTH: u16 = 254;

/// Follows the MBAP frames of a Modbus TCP byte stream and refuses a header that no Modbus
/// server sends: a protocol id other than 0, or a length of 0 or over 254. tokio-modbus checks
/// the protocol id only once the whole frame is in, and waits for as many bytes as the length
/// field says: garbage (an HTTP or Telnet banner, another protocol on port 502) would be
/// read as a frame of up to 65 535 bytes that never comes, and fail as a timeout after the
/// full timeout. Refused here, it fails at once as a protocol error.
#[derive(Debug, Default)]
struct MbapHeaders {
    /// Transaction id (2), protocol id (2) and length (2) of the frame being read.
    header: [u8; 6],
    have: usize,
    /// Bytes of the current frame still to pass after its header (unit id and PDU).
    rest: usize,
}

impl MbapHeaders {
    /// Takes bytes read from the stream; an error names the first wrong header field.
    fn take(&mut self, bytes: &[u8]) -> Result<(), String> {
        for &b in bytes {
            if self.rest > 0 {
                self.rest -= 1;
                continue;
            }
            self.header[self.have] = b;
            self.have += 1;
            if self.have == 4 {
                let protocol = u16::from_be_bytes([self.header[2], self.header[3]]);
                if protocol != 0 {
                    return Err(format!(
                        "protocol id {protocol} in the MBAP header, not 0 (header bytes {:02x?})",
                        &self.header[..4]
                    ));
                }
            } else if self.have == 6 {
                let length = u16::from_be_bytes([self.header[4], self.header[5]]);
                if length == 0 || length > MBAP_MAX_LENGTH {
                    return Err(format!(
                        "length {length} in the MBAP header, outside 1..={MBAP_MAX_LENGTH}"
                    ));
                }
                self.rest = usize::from(length);
                self.have = 0;
            }
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            if room && buf.filled().len() == before {
                self.closed.store(true, Ordering::Relaxed);
            }
            if let Some(mbap) = self.mbap.as_mut()
                && let Err(e) = mbap.take(&buf.filled()[before..])
            {
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            if let Some(rtu) = self.rtu.as_mut() {
                rtu.take(&buf.filled()[before..]);
            }
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Requests are written whole by tokio-modbus's framed writer: the bytes read after
        // one are its answer.
        if let Some(rtu) = self.rtu.as_mut() {
            rtu.request_sent();
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_more_or_fewer_values_than_asked_is_a_protocol_error() {
        // Three registers asked for: exactly three pass, two or four do not.
        let ok = checked(Response::ReadHoldingRegisters(vec![1, 2, 3]), 3);
        assert_eq!(ok, Ok(vec![1, 2, 3]));
        for words in [vec![1, 2], vec![1, 2, 3, 4]] {
            let err = checked(Response::ReadInputRegisters(words), 3).unwrap_err();
            assert_eq!(err.kind(), "protocol", "{err}");
        }
        // Ten coils come in two bytes (16 bits); the six padding bits are cut off.
        let bits = checked(Response::ReadCoils(vec![true; 16]), 10);
        assert_eq!(bits, Ok(vec![1; 10]));
        // One byte (8 bits) cannot hold ten; three bytes are one too many.
        for n in [8, 24] {
            let err = checked(Response::ReadDiscreteInputs(vec![false; n]), 10).unwrap_err();
            assert!(err.to_string().contains("asked for 10"), "{err}");
        }
    }

    #[test]
    fn rtu_answers_are_checked_against_their_checksum_as_they_arrive() {
        let answer = |bytes: &[u8], pieces: usize| {
            let bad = Arc::new(Mutex::new(None));
            let mut a = RtuAnswer {
                bytes: Vec::new(),
                done: false,
                bad_crc: bad.clone(),
            };
            a.request_sent();
            for piece in bytes.chunks(pieces) {
                a.take(piece);
            }
            bad.lock().unwrap().take()
        };
        // Unit 1, function 3, byte count 4, registers 1000 and 1001, CRC low byte first.
        let mut honest = vec![1, 3, 4, 0x03, 0xE8, 0x03, 0xE9];
        honest.extend_from_slice(&crc16(&honest).to_le_bytes());
        assert_eq!(answer(&honest, 1), None);
        assert_eq!(answer(&honest, 3), None);
        // The same with the checksum's bits flipped (as a noisy line would): noted, with
        // both checksums.
        let mut corrupt = honest.clone();
        let n = corrupt.len();
        corrupt[n - 1] ^= 0xFF;
        corrupt[n - 2] ^= 0xFF;
        let sent = u16::from_le_bytes([corrupt[n - 2], corrupt[n - 1]]);
        let e = answer(&corrupt, 2).expect("a CRC error");
        assert!(
            e.contains(&format!("0x{sent:04X}"))
                && e.contains(&format!("0x{:04X}", crc16(&honest[..n - 2]))),
            "{e}"
        );
        // An exception answer is five bytes: unit, 0x83, code 2, CRC.
        let mut exception = vec![1, 0x83, 2];
        exception.extend_from_slice(&crc16(&exception).to_le_bytes());
        assert_eq!(answer(&exception, 1), None);
        exception[4] ^= 1;
        assert!(answer(&exception, 1).is_some());
        // An answer announcing 255 bytes and stopping is incomplete: not a CRC error (it ends
        // as a timeout); a function code that no read answers with is left to tokio-modbus.
        assert_eq!(answer(&[1, 3, 0xFF, 0x03, 0xE8], 1), None);
        assert_eq!(answer(&[1, 0x10, 0, 1, 0, 2, 0, 0], 1), None);
        // CRC-16/MODBUS of the reference example 01 03 00 00 00 02: C4 0B, low byte first.
        assert_eq!(crc16(&[1, 3, 0, 0, 0, 2]), 0x0BC4);
    }

    #[test]
    fn mbap_headers_are_checked_as_they_arrive() {
        // Two honest answers (transaction 1 and 2, protocol 0, length 7: unit, function 3,
        // byte count 4, two registers), fed in awkward pieces: all pass.
        let frame = |t: u8| [0, t, 0, 0, 0, 7, 1, 3, 4, 0x03, 0xE8, 0x03, 0xE9];
        let stream: Vec<u8> = frame(1).iter().chain(&frame(2)).copied().collect();
        let mut m = MbapHeaders::default();
        for piece in stream.chunks(5) {
            assert_eq!(m.take(piece), Ok(()));
        }
        // Protocol id 1 is refused at its fourth byte, before the length is even read.
        let mut m = MbapHeaders::default();
        let e = m.take(&[0, 1, 0, 1]).unwrap_err();
        assert!(e.contains("protocol id 1"), "{e}");
        // An HTTP answer: "TP" (0x5450) where the protocol id goes.
        let e = MbapHeaders::default()
            .take(b"HTTP/1.1 400 Bad Request\r\n")
            .unwrap_err();
        assert!(e.contains("protocol id 21584"), "{e}");
        // A length of 65 535 or 0 is no Modbus frame either.
        for length in [[0xFF, 0xFF], [0, 0]] {
            let mut m = MbapHeaders::default();
            let e = m.take(&[0, 1, 0, 0, length[0], length[1]]).unwrap_err();
            assert!(e.contains("in the MBAP header, outside 1..=254"), "{e}");
        }
    }
}
