//! The wire to a bus of meters: an RS-485 port (tokio-serial) or a serial server's TCP port in
//! transparent mode, one request at a time, with the bus's silence between an answer and the
//! next request.
//!
//! [`Link::exchange`] writes what the protocol built (only read requests exist to be built)
//! and reads until the protocol's [`Framed::frame_length`] says the answer is whole, skipping
//! a few bytes of line noise before it and reading at most the longest frame there can be.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::config::{Bus, Parity};
use super::frame::noise_before_frame;
use super::{Fault, frame::MAX_PREAMBLE};

/// Anything a meter's bytes can come through.
trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// Bytes of noise skipped before an answer's first `FE` or `68` at most.
const NOISE: usize = MAX_PREAMBLE;

/// An open bus.
pub struct Link {
    io: Box<dyn Wire>,
    delay: Duration,
    quiet_since: Instant,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("delay", &self.delay).finish()
    }
}

/// Opens the bus: connects to the serial server, or opens the serial port with the line
/// settings.
pub async fn open(bus: &Bus) -> Result<Link, Fault> {
    let io: Box<dyn Wire> = match (&bus.tcp, &bus.port) {
        (Some(address), _) => {
            let stream = tokio::time::timeout(
                bus.timeout,
                tokio::net::TcpStream::connect(address.as_str()),
            )
            .await
            .map_err(|_| {
                Fault::Connect(format!(
                    "no connection to the serial server {address} within {:?}: check its \
                             address and that it is a TCP server in transparent mode",
                    bus.timeout
                ))
            })?
            .map_err(|e| {
                Fault::Connect(format!(
                    "cannot connect to the serial server {address}: {e}"
                ))
            })?;
            let _ = stream.set_nodelay(true);
            Box::new(stream)
        }
        (None, Some(port)) => Box::new(open_serial(bus, port)?),
        (None, None) => return Err(Fault::Connect("the bus has no port".into())),
    };
    Ok(Link {
        io,
        delay: bus.delay,
        quiet_since: Instant::now(),
    })
}

fn open_serial(bus: &Bus, port: &str) -> Result<tokio_serial::SerialStream, Fault> {
    use tokio_serial::{DataBits, SerialPortBuilderExt, StopBits};
    tokio_serial::new(port, bus.baud)
        .data_bits(match bus.data_bits {
            7 => DataBits::Seven,
            _ => DataBits::Eight,
        })
        .parity(match bus.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(match bus.stop_bits {
            2 => StopBits::Two,
            _ => StopBits::One,
        })
        .open_native_async()
        .map_err(|e| Fault::Connect(format!("cannot open {port}: {e}")))
}

/// A protocol's frames, as the link reads them.
pub trait Framed {
    type Error;
    /// The longest frame there can be, preamble included.
    const MAX_FRAME: usize;
    /// How long the frame at the start of the bytes is (`None`: not yet known), or that they
    /// are no frame.
    fn frame_length(buf: &[u8]) -> Result<Option<usize>, Self::Error>;
    /// The protocol's complaint as the bus task counts it.
    fn fault(e: Self::Error) -> Fault;
}

impl Link {
    /// Sends `request` after the bus's silence and reads one frame within `timeout`.
    pub async fn exchange<P: Framed>(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Fault> {
        tokio::time::sleep_until(self.quiet_since + self.delay).await;
        let result = self.exchange_now::<P>(request, timeout).await;
        self.quiet_since = Instant::now();
        result
    }

    async fn exchange_now<P: Framed>(
        &mut self,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Fault> {
        let transport = |e: std::io::Error| Fault::Transport(e.to_string());
        self.io.write_all(request).await.map_err(transport)?;
        self.io.flush().await.map_err(transport)?;
        let deadline = Instant::now() + timeout;
        let mut buf: Vec<u8> = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
        loop {
            let n = match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) if buf.is_empty() => return Err(Fault::Silent { timeout }),
                Err(_) => {
                    return Err(Fault::Cut {
                        got: buf.len(),
                        timeout,
                    });
                }
                Ok(Err(e)) => return Err(transport(e)),
                Ok(Ok(0)) => {
                    return Err(Fault::Transport(
                        "the serial server closed the connection".into(),
                    ));
                }
                Ok(Ok(n)) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some(skip) = noise_before_frame(&buf, NOISE) {
                buf.drain(..skip);
            } else if buf.len() < NOISE {
                continue;
            }
            match P::frame_length(&buf) {
                Err(e) => return Err(P::fault(e)),
                Ok(Some(total)) if buf.len() >= total => {
                    buf.truncate(total);
                    return Ok(buf);
                }
                Ok(_) if buf.len() >= P::MAX_FRAME => {
                    return Err(Fault::Protocol(format!(
                        "{} bytes without a whole frame",
                        buf.len()
                    )));
                }
                Ok(_) => {}
            }
        }
    }
}
