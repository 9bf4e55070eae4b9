//! Connections to Modbus devices: Modbus TCP, RTU frames over TCP, and RTU on a serial port.
//!
//! A [`ReadOnly`] is the only handle to an open connection, and it offers function codes 1–4
//! and nothing else: "the agent never writes to a machine" is a property of this type, not a
//! promise kept by its callers. Every operation carries its own timeout and turns every way of
//! failing into a [`PollFault`] that the health report can count by kind.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// When the line last carried a frame (the end of the last answer or timeout).
    last_frame: Instant,
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
    let watch = |inner| Watched {
        inner,
        closed: closed.clone(),
    };
    let (ctx, frame_gap) = match spec {
        LinkSpec::Tcp(address) => {
            let stream = watch(connect_tcp(address, timeout).await?);
            (tokio_modbus::client::tcp::attach_slave(stream, slave), None)
        }
        LinkSpec::RtuOverTcp(address) => {
            let stream = watch(connect_tcp(address, timeout).await?);
            (tokio_modbus::client::rtu::attach_slave(stream, slave), None)
        }
        LinkSpec::Serial(settings) => {
            let port = open_serial(settings)?;
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
        last_frame: Instant::now(),
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
    let transport = Watched {
        inner: transport,
        closed: closed.clone(),
    };
    let ctx = if rtu {
        tokio_modbus::client::rtu::attach_slave(transport, slave)
    } else {
        tokio_modbus::client::tcp::attach_slave(transport, slave)
    };
    ReadOnly {
        ctx,
        closed,
        frame_gap: None,
        last_frame: Instant::now(),
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
        .map_err(|e| PollFault::Resolve(e.to_string()))?;
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
        if let Some(gap) = self.frame_gap {
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
        let result = tokio::time::timeout(timeout, self.ctx.call(request)).await;
        self.last_frame = Instant::now();
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

/// A byte stream that notes when the peer closes it (a read of zero bytes).
#[derive(Debug)]
struct Watched<T> {
    inner: T,
    closed: Arc<AtomicBool>,
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
        if let Poll::Ready(Ok(())) = poll
            && room
            && buf.filled().len() == before
        {
            self.closed.store(true, Ordering::Relaxed);
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
}
