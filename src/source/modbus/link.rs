//! Connections to Modbus devices: Modbus TCP, RTU frames over TCP, and RTU on a serial port.
//!
//! A [`ReadOnly`] is the only handle to an open connection, and it offers function codes 1–4
//! and nothing else: "the agent never writes to a machine" is a property of this type, not a
//! promise kept by its callers. Every operation carries its own timeout and turns every way of
//! failing into a [`PollFault`] that the health report can count by kind.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};

use crate::config::{ModbusSerial, Parity, RegisterKind};

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
    let (ctx, frame_gap) = match spec {
        LinkSpec::Tcp(address) => {
            let stream = connect_tcp(address, timeout).await?;
            (tokio_modbus::client::tcp::attach_slave(stream, slave), None)
        }
        LinkSpec::RtuOverTcp(address) => {
            let stream = connect_tcp(address, timeout).await?;
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
    let ctx = if rtu {
        tokio_modbus::client::rtu::attach_slave(transport, slave)
    } else {
        tokio_modbus::client::tcp::attach_slave(transport, slave)
    };
    ReadOnly {
        ctx,
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

/// The values of an answer, if it carries exactly what was asked for: `count` registers, or
/// at least `count` bits (bits come in whole bytes; the padding is dropped).
fn answer(response: Response, count: u16) -> Result<Vec<u16>, PollFault> {
    let wanted = usize::from(count);
    let short = |what: &str, got: usize| {
        PollFault::Protocol(format!(
            "the answer carries {got} {what} for the {wanted} asked for"
        ))
    };
    match response {
        Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => {
            if bits.len() < wanted {
                return Err(short("bits", bits.len()));
            }
            Ok(bits.into_iter().take(wanted).map(u16::from).collect())
        }
        Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
            if words.len() != wanted {
                return Err(short("registers", words.len()));
            }
            Ok(words)
        }
        // `call` checks the function code of the answer against the request's.
        _ => Err(PollFault::Protocol(
            "the answer is not one to a read request".into(),
        )),
    }
}

/// What one read brought back: registers (bits as 0 or 1), or the device's exception.
pub type ReadResult = Result<Vec<u16>, ExceptionCode>;

impl ReadOnly {
    /// Reads `count` registers or bits from `unit` within `timeout`. After any `Err` the
    /// connection must be dropped: a late answer could otherwise be read as the next one's.
    pub async fn read(
        &mut self,
        unit: u8,
        kind: RegisterKind,
        start: u16,
        count: u16,
        timeout: Duration,
    ) -> Result<ReadResult, PollFault> {
        if let Some(gap) = self.frame_gap {
            tokio::time::sleep_until(self.last_frame + gap).await;
        }
        self.ctx.set_slave(Slave(unit));
        let request = match kind {
            RegisterKind::Coil => Request::ReadCoils(start, count),
            RegisterKind::Discrete => Request::ReadDiscreteInputs(start, count),
            RegisterKind::Holding => Request::ReadHoldingRegisters(start, count),
            RegisterKind::Input => Request::ReadInputRegisters(start, count),
        };
        // `Client::call` rather than `Reader`'s read_* methods: those take an answer's size on
        // trust (a debug assertion, which panics in a debug build, and otherwise a short
        // vector), while an answer that does not carry what was asked for is a protocol error
        // of the device, to be counted and reported like any other.
        let read = self.ctx.call(request);
        let result = tokio::time::timeout(timeout, read).await;
        self.last_frame = Instant::now();
        match result {
            Err(_) => Err(PollFault::Timeout),
            Ok(Err(tokio_modbus::Error::Transport(e))) => Err(PollFault::Transport(e.to_string())),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Err(PollFault::Protocol(e.to_string())),
            Ok(Ok(Err(exception))) => Ok(Err(exception)),
            Ok(Ok(Ok(response))) => answer(response, count).map(Ok),
        }
    }
}
